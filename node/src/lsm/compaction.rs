//! Compaction: the filter hook, and (in the rest of this module) the policies and the merge.

use super::key::ColumnFamily;

/// What a [`CompactionFilter`] decides for an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterDecision {
    /// Keep the entry.
    Keep,
    /// Drop the entry (older versions of the same key are dropped with it).
    Remove,
}

/// A hook that sees every value a compaction rewrites and may drop it. MVCC garbage
/// collection plugs in here: it drops versions older than the GC safe point.
///
/// The filter only sees entries that no open snapshot can read, so dropping one never
/// changes what a snapshot sees. It must be deterministic for a given key and value within
/// one compaction, and cheap: it runs on the compaction thread for every entry.
///
/// A filter whose decision depends on the entries before it (MVCC GC: "a newer version of
/// this key was already seen") returns a per-compaction [`CompactionFilterState`] from
/// [`start`](CompactionFilter::start); the merge then calls that state, in key order, instead
/// of [`filter`](CompactionFilter::filter).
pub trait CompactionFilter: Send + Sync {
    /// Decides whether to keep `key` (without its column family prefix) with `value`.
    fn filter(&self, cf: ColumnFamily, key: &[u8], value: &[u8]) -> FilterDecision;

    /// Called once at the start of every compaction. `Some` state replaces
    /// [`filter`](CompactionFilter::filter) for that compaction. The default is stateless.
    fn start(&self) -> Option<Box<dyn CompactionFilterState>> {
        None
    }
}

/// The state of a [`CompactionFilter`] over one compaction. It is called for the entries
/// the filter may see, in the merge's order (column family, then key ascending); entries a
/// snapshot can read are not shown, so it sees a subsequence of the compaction's input, and
/// a compaction's input is itself only part of the database.
pub trait CompactionFilterState: Send + std::fmt::Debug {
    /// Decides whether to keep `key` (without its column family prefix) with `value`.
    fn filter(&mut self, cf: ColumnFamily, key: &[u8], value: &[u8]) -> FilterDecision;
}

// ---------------------------------------------------------------------------------------
// Picking: a pure function of the version, the options and the open snapshots.
// ---------------------------------------------------------------------------------------

use std::sync::Arc;

use super::error::Result;
use super::iterator::InternalIterator;
use super::key::{kind_of, seq_of, user_part, SeqNo, ValueKind};
use super::options::{CompactionStyle, Options};
use super::range_del::{RangeTombstone, TombstoneSet};
use super::table::{TableBuilder, TableOptions, TableSummary};
use super::version::{FileMeta, Version};

/// Size-tiered: merge everything when the newer runs add up to this percentage of the
/// oldest (bounds space amplification).
const MAX_SIZE_AMP_PERCENT: u64 = 200;

/// What a compaction should do.
#[derive(Debug, Clone, PartialEq)]
pub enum CompactionTask {
    /// Remove files that range tombstones cover entirely and retire tombstones that no
    /// longer cover anything older than themselves. No data is rewritten.
    Drop {
        /// Files to delete, with their levels.
        files: Vec<(usize, Arc<FileMeta>)>,
        /// Range tombstones to retire, by sequence number.
        tombstones: Vec<SeqNo>,
    },
    /// Move one file to the next level unchanged (nothing overlaps it there).
    Move {
        /// The file's level.
        from_level: usize,
        /// The file.
        file: Arc<FileMeta>,
    },
    /// Merge the inputs into new files at `output_level`.
    Merge(MergeTask),
}

/// A merge of input files into new files.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeTask {
    /// Input files, with their levels, newest data first.
    pub inputs: Vec<(usize, Arc<FileMeta>)>,
    /// Where the outputs go.
    pub output_level: usize,
    /// No file outside the inputs can hold an older version of a key in the inputs' range,
    /// so point tombstones may be dropped.
    pub bottommost: bool,
    /// Split outputs at this size (at key boundaries); `u64::MAX` writes one file.
    pub target_file_size: u64,
    /// Why the task was picked (for logs).
    pub reason: String,
}

/// The index of the first snapshot `>= seq`: entries with equal stripes are seen by exactly
/// the same snapshots.
fn stripe(snapshots: &[SeqNo], seq: SeqNo) -> usize {
    snapshots.partition_point(|s| *s < seq)
}

/// Target size of a level under leveled compaction.
pub fn level_target(options: &Options, level: usize) -> u64 {
    let mut target = options.level1_size.max(1);
    for _ in 1..level {
        target = target.saturating_mul(options.level_size_multiplier.max(2));
    }
    target
}

/// Picks the next compaction, if any is needed. `snapshots` are the open snapshots, sorted.
pub fn pick(version: &Version, options: &Options, snapshots: &[SeqNo]) -> Option<CompactionTask> {
    if let Some(task) = pick_drop(version, snapshots) {
        return Some(task);
    }
    match options.compaction_style {
        CompactionStyle::Leveled => pick_leveled(version, options),
        CompactionStyle::SizeTiered => pick_tiered(version, options),
    }
}

/// Score of each level (>= 1.0 means it needs compaction), for statistics and picking.
pub fn level_scores(version: &Version, options: &Options) -> Vec<f64> {
    let n = version.levels.len();
    (0..n)
        .map(|level| {
            if level == 0 {
                version.levels[0].len() as f64 / options.level0_compaction_trigger.max(1) as f64
            } else if level + 1 == n {
                0.0 // the last level has nowhere to go
            } else {
                version.level_bytes(level) as f64 / level_target(options, level) as f64
            }
        })
        .collect()
}

fn pick_drop(version: &Version, snapshots: &[SeqNo]) -> Option<CompactionTask> {
    let mut files = Vec::new();
    for (level, f) in version.files() {
        let covered = version.range_dels.iter().any(|t| {
            t.start.as_slice() <= f.smallest_user()
                && f.largest_user() < t.end.as_slice()
                && t.seq > f.largest_seq
                && stripe(snapshots, f.smallest_seq) == stripe(snapshots, t.seq)
        });
        if covered {
            files.push((level, Arc::clone(f)));
        }
    }
    let tombstones: Vec<SeqNo> = version
        .range_dels
        .iter()
        .filter(|t| {
            !version.files().any(|(_, f)| {
                !files.iter().any(|(_, d)| d.id == f.id)
                    && t.overlaps(f.smallest_user(), f.largest_user())
                    && f.smallest_seq < t.seq
            })
        })
        .map(|t| t.seq)
        .collect();
    (!files.is_empty() || !tombstones.is_empty())
        .then_some(CompactionTask::Drop { files, tombstones })
}

/// The engine-key range `[smallest, largest]` the files cover together.
pub(crate) fn key_range(files: &[(usize, Arc<FileMeta>)]) -> (Vec<u8>, Vec<u8>) {
    let lo = files
        .iter()
        .map(|(_, f)| f.smallest_user())
        .min()
        .unwrap_or_default()
        .to_vec();
    let hi = files
        .iter()
        .map(|(_, f)| f.largest_user())
        .max()
        .unwrap_or_default()
        .to_vec();
    (lo, hi)
}

/// Whether no file below `output_level` overlaps `[lo, hi]`: a merge writing there whose
/// inputs span `[lo, hi]` (all of them, next-level files included) is then the last word on
/// every key it holds, and may drop point tombstones.
pub(crate) fn is_bottommost(version: &Version, output_level: usize, lo: &[u8], hi: &[u8]) -> bool {
    (output_level + 1..version.levels.len())
        .all(|l| version.overlapping(l, Some(lo), Some(hi)).is_empty())
}

fn pick_leveled(version: &Version, options: &Options) -> Option<CompactionTask> {
    let scores = level_scores(version, options);
    let (level, score) = scores
        .iter()
        .copied()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(&b.1))?;
    if score < 1.0 {
        return None;
    }
    let output_level = level + 1;
    let mut inputs: Vec<(usize, Arc<FileMeta>)>;
    if level == 0 {
        inputs = version.levels[0]
            .iter()
            .map(|f| (0, Arc::clone(f)))
            .collect();
    } else {
        // The file whose rewrite costs least per byte moved: smallest overlap with the next
        // level relative to its own size.
        let file = version.levels[level].iter().min_by_key(|f| {
            let overlap: u64 = version
                .overlapping(
                    output_level,
                    Some(f.smallest_user()),
                    Some(f.largest_user()),
                )
                .iter()
                .map(|o| o.size)
                .sum();
            overlap.saturating_mul(1024) / f.size.max(1)
        })?;
        inputs = vec![(level, Arc::clone(file))];
    }
    let (lo, hi) = key_range(&inputs);
    let next = version.overlapping(output_level, Some(&lo), Some(&hi));
    if next.is_empty()
        && inputs.len() == 1
        && !version.range_dels.iter().any(|t| t.overlaps(&lo, &hi))
    {
        let (from_level, file) = inputs.remove(0);
        return Some(CompactionTask::Move { from_level, file });
    }
    inputs.extend(next.into_iter().map(|f| (output_level, f)));
    let (lo, hi) = key_range(&inputs);
    Some(CompactionTask::Merge(MergeTask {
        bottommost: is_bottommost(version, output_level, &lo, &hi),
        inputs,
        output_level,
        target_file_size: options.target_file_size,
        reason: format!("L{level} score {score:.2}"),
    }))
}

fn pick_tiered(version: &Version, options: &Options) -> Option<CompactionTask> {
    let runs = &version.levels[0];
    let trigger = options.level0_compaction_trigger.max(2);
    if runs.len() < 2 {
        return None;
    }
    let merge = |chosen: &[Arc<FileMeta>], reason: String| {
        let inputs: Vec<(usize, Arc<FileMeta>)> =
            chosen.iter().map(|f| (0, Arc::clone(f))).collect();
        Some(CompactionTask::Merge(MergeTask {
            bottommost: chosen.len() == runs.len()
                || chosen.last().map(|f| f.id) == runs.last().map(|f| f.id),
            inputs,
            output_level: 0,
            target_file_size: u64::MAX,
            reason,
        }))
    };
    // Space amplification: newer runs together as large as MAX_SIZE_AMP x the oldest.
    let oldest = runs.last().map_or(0, |f| f.size);
    let newer: u64 = runs.iter().rev().skip(1).map(|f| f.size).sum();
    if runs.len() >= trigger
        && newer.saturating_mul(100) >= oldest.saturating_mul(MAX_SIZE_AMP_PERCENT)
    {
        return merge(runs, format!("space amplification {newer}/{oldest}"));
    }
    if runs.len() < trigger {
        return None;
    }
    // Similar sizes: from each starting run, extend while the next (older) run is not much
    // larger than what is already chosen.
    for start in 0..runs.len() {
        let mut total = runs[start].size;
        let mut end = start + 1;
        while end < runs.len()
            && runs[end].size.saturating_mul(100)
                <= total.saturating_mul(100 + options.size_tiered_ratio_percent)
        {
            total += runs[end].size;
            end += 1;
        }
        if end - start >= 2 && end - start >= trigger.min(runs.len()) / 2 {
            return merge(&runs[start..end], format!("{} similar runs", end - start));
        }
    }
    // No similar group: merge the newest runs to bring the count back under the trigger.
    let k = (runs.len() + 2 - trigger).clamp(2, runs.len());
    merge(&runs[..k], format!("{} runs over trigger", runs.len()))
}

// ---------------------------------------------------------------------------------------
// Merging: one pass over a sorted stream, deciding for each entry whether it survives.
// ---------------------------------------------------------------------------------------

/// What the merge needs to know to drop entries safely.
#[derive(Clone)]
pub struct GcContext {
    /// Open snapshots, sorted ascending.
    pub snapshots: Vec<SeqNo>,
    /// Range tombstones (all of them, at the latest sequence).
    pub tombstones: TombstoneSet,
    /// Whether no older version of any key can exist outside the inputs.
    pub bottommost: bool,
    /// The compaction filter, if configured (not used for flushes).
    pub filter: Option<Arc<dyn CompactionFilter>>,
}

impl std::fmt::Debug for GcContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcContext")
            .field("snapshots", &self.snapshots)
            .field("bottommost", &self.bottommost)
            .finish_non_exhaustive()
    }
}

impl GcContext {
    /// A context for `tombstones` with the given snapshots.
    pub fn new(snapshots: Vec<SeqNo>, tombstones: &[RangeTombstone], bottommost: bool) -> Self {
        GcContext {
            snapshots,
            tombstones: TombstoneSet::new(tombstones, super::key::MAX_SEQ),
            bottommost,
            filter: None,
        }
    }
}

/// Counters of one merge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergeStats {
    /// Entries read.
    pub entries_in: u64,
    /// Entries written.
    pub entries_out: u64,
    /// Entries dropped because a newer version hid them from every snapshot.
    pub dropped_shadowed: u64,
    /// Entries dropped under a range tombstone.
    pub dropped_range_deleted: u64,
    /// Point tombstones dropped at the bottom.
    pub dropped_tombstones: u64,
    /// Entries removed by the compaction filter.
    pub filtered: u64,
}

/// Decides, entry by entry, what a flush or compaction keeps.
#[derive(Debug)]
pub struct GcDecider {
    ctx: GcContext,
    /// The filter's per-compaction state, if it keeps one.
    filter_state: Option<Box<dyn CompactionFilterState>>,
    prev_key: Vec<u8>,
    has_prev: bool,
    last_stripe: Option<usize>,
    /// Counters.
    pub stats: MergeStats,
}

/// What to write for an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emit {
    /// Drop it.
    Drop,
    /// Write it as it is.
    Keep,
    /// Write a point tombstone in its place (the filter removed a value).
    AsDelete,
}

impl GcDecider {
    /// A decider for one merge.
    pub fn new(ctx: GcContext) -> Self {
        let filter_state = ctx.filter.as_ref().and_then(|f| f.start());
        GcDecider {
            ctx,
            filter_state,
            prev_key: Vec::new(),
            has_prev: false,
            last_stripe: None,
            stats: MergeStats::default(),
        }
    }

    /// Decides for the next entry of the sorted stream.
    pub fn decide(&mut self, ikey: &[u8], value: &[u8]) -> Emit {
        self.stats.entries_in += 1;
        let ukey = user_part(ikey);
        let seq = seq_of(ikey);
        if !self.has_prev || self.prev_key.as_slice() != ukey {
            self.prev_key.clear();
            self.prev_key.extend_from_slice(ukey);
            self.has_prev = true;
            self.last_stripe = None;
        }
        let snaps = &self.ctx.snapshots;
        let st = stripe(snaps, seq);
        if self.last_stripe == Some(st) {
            self.stats.dropped_shadowed += 1;
            return Emit::Drop;
        }
        self.last_stripe = Some(st);
        if let Some(tseq) = self.ctx.tombstones.covering_seq(ukey) {
            if tseq > seq && stripe(snaps, tseq) == st {
                self.stats.dropped_range_deleted += 1;
                return Emit::Drop;
            }
        }
        let mut kind = kind_of(ikey).unwrap_or(ValueKind::Put);
        let mut emit = Emit::Keep;
        if kind == ValueKind::Put && st == snaps.len() {
            if let Some(filter) = &self.ctx.filter {
                let split = ukey.split_first();
                let cf = split.and_then(|(id, key)| Some((ColumnFamily::from_id(*id)?, key)));
                if let Some((cf, key)) = cf {
                    let decision = match self.filter_state.as_mut() {
                        Some(state) => state.filter(cf, key, value),
                        None => filter.filter(cf, key, value),
                    };
                    if decision == FilterDecision::Remove {
                        self.stats.filtered += 1;
                        kind = ValueKind::Delete;
                        emit = Emit::AsDelete;
                    }
                }
            }
        }
        if kind == ValueKind::Delete && self.ctx.bottommost && st == 0 {
            self.stats.dropped_tombstones += 1;
            return Emit::Drop;
        }
        self.stats.entries_out += 1;
        emit
    }

    /// Whether the last decided entry began a new engine key (outputs split only there).
    pub fn current_key(&self) -> &[u8] {
        &self.prev_key
    }
}

/// Merges a sorted stream into SSTables, applying [`GcDecider`]. `new_file` allocates a file
/// number and returns its path; outputs are split at `target_file_size` between keys.
/// Returns the files written, with their summaries. On error, files already written are
/// removed.
pub fn write_run(
    iter: &mut dyn InternalIterator,
    decider: &mut GcDecider,
    table_options: &TableOptions,
    target_file_size: u64,
    new_file: &mut dyn FnMut() -> (u64, std::path::PathBuf),
) -> Result<Vec<(u64, TableSummary)>> {
    let mut outputs: Vec<(u64, std::path::PathBuf, TableSummary)> = Vec::new();
    let result = (|| -> Result<()> {
        let mut builder: Option<(u64, std::path::PathBuf, TableBuilder)> = None;
        let mut last_key: Vec<u8> = Vec::new();
        let mut tomb = Vec::new();
        iter.seek_to_first()?;
        while iter.valid() {
            let ikey = iter.key();
            let emit = decider.decide(ikey, iter.value());
            if emit != Emit::Drop {
                let ukey = user_part(ikey);
                if let Some((_, _, b)) = &builder {
                    if b.estimated_file_size() >= target_file_size && ukey != last_key.as_slice() {
                        if let Some((id, path, b)) = builder.take() {
                            let summary = b.finish()?;
                            outputs.push((id, path, summary));
                        }
                    }
                }
                if builder.is_none() {
                    let (id, path) = new_file();
                    let b = TableBuilder::new(&path, table_options.clone());
                    match b {
                        Ok(b) => builder = Some((id, path, b)),
                        Err(e) => {
                            let _ = std::fs::remove_file(&path);
                            return Err(e);
                        }
                    }
                }
                if let Some((_, _, b)) = builder.as_mut() {
                    if emit == Emit::AsDelete {
                        tomb.clear();
                        super::key::put_internal_key(
                            &mut tomb,
                            ukey,
                            seq_of(ikey),
                            ValueKind::Delete,
                        );
                        b.add(&tomb, &[])?;
                    } else {
                        b.add(ikey, iter.value())?;
                    }
                }
                last_key.clear();
                last_key.extend_from_slice(ukey);
            }
            iter.next()?;
        }
        if let Some((id, path, b)) = builder.take() {
            let summary = b.finish()?;
            outputs.push((id, path, summary));
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(outputs.into_iter().map(|(id, _, s)| (id, s)).collect()),
        Err(e) => {
            for (_, path, _) in &outputs {
                let _ = std::fs::remove_file(path);
            }
            Err(e)
        }
    }
}

/// Metadata of a file written by [`write_run`].
pub fn file_meta(id: u64, s: &TableSummary) -> FileMeta {
    FileMeta {
        id,
        size: s.file_size,
        smallest: s.smallest_key.clone(),
        largest: s.largest_key.clone(),
        smallest_seq: s.smallest_seq,
        largest_seq: s.largest_seq,
        num_entries: s.num_entries,
        num_deletions: s.num_deletions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsm::key::internal_key;

    fn decide_all(ctx: GcContext, entries: &[(&str, SeqNo, ValueKind)]) -> Vec<(String, SeqNo)> {
        let mut d = GcDecider::new(ctx);
        entries
            .iter()
            .filter(|(k, s, kind)| {
                d.decide(&internal_key(k.as_bytes(), *s, *kind), b"v") != Emit::Drop
            })
            .map(|(k, s, _)| (k.to_string(), *s))
            .collect()
    }

    #[test]
    fn snapshots_keep_old_versions() {
        use ValueKind::*;
        let entries = [
            ("a", 9, Put),
            ("a", 7, Put),
            ("a", 4, Put),
            ("a", 2, Put),
            ("b", 3, Delete),
            ("b", 1, Put),
        ];
        // No snapshots, not bottommost: newest of each key only (the tombstone stays).
        let kept = decide_all(GcContext::new(vec![], &[], false), &entries);
        assert_eq!(kept, vec![("a".into(), 9), ("b".into(), 3)]);
        // Bottommost: the tombstone and what it hides go.
        let kept = decide_all(GcContext::new(vec![], &[], true), &entries);
        assert_eq!(kept, vec![("a".into(), 9)]);
        // A snapshot at 5 keeps a@4 (what it reads); it sees b deleted, as does everyone, so
        // b's tombstone and value both go.
        let kept = decide_all(GcContext::new(vec![5], &[], true), &entries);
        assert_eq!(kept, vec![("a".into(), 9), ("a".into(), 4)]);
        // A snapshot at 2 keeps b@1 and therefore the tombstone above it.
        let kept = decide_all(GcContext::new(vec![2], &[], true), &entries);
        assert_eq!(
            kept,
            vec![
                ("a".into(), 9),
                ("a".into(), 2),
                ("b".into(), 3),
                ("b".into(), 1)
            ]
        );
    }

    #[test]
    fn range_tombstones_drop_covered_entries_unless_a_snapshot_sees_them() {
        use ValueKind::*;
        let ts = [RangeTombstone {
            start: b"a".to_vec(),
            end: b"c".to_vec(),
            seq: 5,
        }];
        let entries = [("a", 3, Put), ("b", 6, Put), ("b", 2, Put), ("c", 1, Put)];
        let kept = decide_all(GcContext::new(vec![], &ts, false), &entries);
        assert_eq!(kept, vec![("b".into(), 6), ("c".into(), 1)]);
        let kept = decide_all(GcContext::new(vec![4], &ts, false), &entries);
        assert_eq!(
            kept,
            vec![
                ("a".into(), 3),
                ("b".into(), 6),
                ("b".into(), 2),
                ("c".into(), 1)
            ]
        );
    }

    struct DropOdd;
    impl CompactionFilter for DropOdd {
        fn filter(&self, _: ColumnFamily, _: &[u8], value: &[u8]) -> FilterDecision {
            if value == b"odd" {
                FilterDecision::Remove
            } else {
                FilterDecision::Keep
            }
        }
    }

    #[test]
    fn filter_turns_values_into_tombstones_only_when_no_snapshot_sees_them() {
        let mut ctx = GcContext::new(vec![], &[], false);
        ctx.filter = Some(Arc::new(DropOdd));
        let mut d = GcDecider::new(ctx.clone());
        assert_eq!(
            d.decide(&internal_key(b"\0k", 5, ValueKind::Put), b"odd"),
            Emit::AsDelete
        );
        assert_eq!(
            d.decide(&internal_key(b"\0k", 3, ValueKind::Put), b"even"),
            Emit::Drop
        );
        ctx.snapshots = vec![6];
        let mut d = GcDecider::new(ctx);
        assert_eq!(
            d.decide(&internal_key(b"\0k", 5, ValueKind::Put), b"odd"),
            Emit::Keep
        );
    }

    /// Keeps the first entry a compaction shows it and removes the rest.
    struct KeepFirst;
    #[derive(Debug)]
    struct KeepFirstState(usize);
    impl CompactionFilter for KeepFirst {
        fn filter(&self, _: ColumnFamily, _: &[u8], _: &[u8]) -> FilterDecision {
            unreachable!("the state decides")
        }
        fn start(&self) -> Option<Box<dyn CompactionFilterState>> {
            Some(Box::new(KeepFirstState(0)))
        }
    }
    impl CompactionFilterState for KeepFirstState {
        fn filter(&mut self, _: ColumnFamily, _: &[u8], _: &[u8]) -> FilterDecision {
            self.0 += 1;
            if self.0 == 1 {
                FilterDecision::Keep
            } else {
                FilterDecision::Remove
            }
        }
    }

    #[test]
    fn a_stateful_filter_gets_fresh_state_per_compaction_and_sees_entries_in_order() {
        let mut ctx = GcContext::new(vec![], &[], false);
        ctx.filter = Some(Arc::new(KeepFirst));
        for _ in 0..2 {
            let mut d = GcDecider::new(ctx.clone());
            let emits: Vec<Emit> = [b"\0a", b"\0b", b"\0c"]
                .iter()
                .map(|k| d.decide(&internal_key(*k, 5, ValueKind::Put), b"v"))
                .collect();
            assert_eq!(emits, vec![Emit::Keep, Emit::AsDelete, Emit::AsDelete]);
        }
        // Entries a snapshot sees are not shown to the state.
        ctx.snapshots = vec![6];
        let mut d = GcDecider::new(ctx);
        assert_eq!(
            d.decide(&internal_key(b"\0a", 5, ValueKind::Put), b"v"),
            Emit::Keep
        );
        assert_eq!(
            d.decide(&internal_key(b"\0b", 7, ValueKind::Put), b"v"),
            Emit::Keep
        );
        assert_eq!(
            d.decide(&internal_key(b"\0c", 7, ValueKind::Put), b"v"),
            Emit::AsDelete
        );
    }

    fn meta(id: u64, lo: &str, hi: &str, size: u64, seq: SeqNo) -> Arc<FileMeta> {
        Arc::new(crate::lsm::version::test_file(id, lo, hi, size, seq))
    }

    #[test]
    fn leveled_picks_l0_then_moves_trivially() {
        let options = Options::small_for_tests();
        let mut v = Version::new(4);
        v.levels[0] = vec![meta(2, "a", "m", 100, 2), meta(1, "n", "z", 100, 1)];
        match pick(&v, &options, &[]) {
            Some(CompactionTask::Merge(t)) => {
                assert_eq!(t.output_level, 1);
                assert_eq!(t.inputs.len(), 2);
                assert!(t.bottommost);
            }
            other => panic!("unexpected {other:?}"),
        }
        let mut v = Version::new(4);
        v.levels[0] = vec![meta(2, "a", "m", 100, 2), meta(1, "n", "z", 100, 1)];
        v.levels[1] = vec![meta(3, "b", "c", 1 << 20, 1)];
        v.levels[0].truncate(1);
        // One L0 file under the trigger: nothing to do for L0, but L1 is over its target.
        match pick(&v, &options, &[]) {
            Some(CompactionTask::Move {
                from_level: 1,
                file,
            }) => assert_eq!(file.id, 3),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn tiered_merges_similar_runs_and_bounds_space() {
        let options = Options {
            compaction_style: CompactionStyle::SizeTiered,
            level0_compaction_trigger: 3,
            ..Options::small_for_tests()
        };
        let mut v = Version::new(4);
        v.levels[0] = vec![
            meta(4, "a", "z", 10, 4),
            meta(3, "a", "z", 10, 3),
            meta(2, "a", "z", 11, 2),
            meta(1, "a", "z", 1000, 1),
        ];
        match pick(&v, &options, &[]) {
            Some(CompactionTask::Merge(t)) => {
                assert_eq!(
                    t.inputs.iter().map(|(_, f)| f.id).collect::<Vec<_>>(),
                    vec![4, 3, 2]
                );
                assert!(!t.bottommost);
                assert_eq!(t.output_level, 0);
            }
            other => panic!("unexpected {other:?}"),
        }
        v.levels[0] = vec![meta(2, "a", "z", 10, 2)];
        assert_eq!(pick(&v, &options, &[]), None);
    }

    #[test]
    fn covered_files_are_dropped_and_tombstones_retired() {
        let options = Options::small_for_tests();
        let mut v = Version::new(4);
        v.levels[1] = vec![meta(1, "b", "c", 100, 3), meta(2, "x", "y", 100, 3)];
        v.range_dels = vec![RangeTombstone {
            start: b"a".to_vec(),
            end: b"d".to_vec(),
            seq: 10,
        }];
        match pick(&v, &options, &[]) {
            Some(CompactionTask::Drop { files, tombstones }) => {
                assert_eq!(files.len(), 1);
                assert_eq!(files[0].1.id, 1);
                assert_eq!(tombstones, vec![10]);
            }
            other => panic!("unexpected {other:?}"),
        }
        // A snapshot between the file and the tombstone protects the file.
        match pick(&v, &options, &[5]) {
            None => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}
