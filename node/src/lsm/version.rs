//! Versions and the manifest.
//!
//! A [`Version`] is an immutable picture of the SSTables that make up the tree (per level)
//! and of the flushed range tombstones. Flushes and compactions never modify a version; they
//! describe their result as a [`VersionEdit`] (files added, files deleted, tombstones added or
//! retired, counters), append the edit to the manifest with an fsync, and only then install
//! the version the edit produces. Each version carries a *generation* in log order, so the
//! engine installs only a version newer than the visible one even when the threads that
//! logged two edits install them in the other order. A failed manifest fsync leaves the edit
//! possibly durable and *poisons* the set: it logs nothing more until a reopen settles what
//! the manifest holds. Readers hold an `Arc<Version>`, so files they may still read stay in
//! place until the last reader lets go.
//!
//! The manifest is a record log (see [`super::log`]) of edits; `CURRENT` names the live
//! manifest. Opening replays the edits into a version. Each open writes a fresh manifest
//! holding one snapshot edit, and so does a manifest that grows past a few MiB, so replay
//! stays short. `CURRENT` is replaced atomically (write temp, fsync, fsync dir,
//! rename, fsync dir).
//!
//! ```text
//!   edit := field*
//!   field := 1 log_number | 2 next_file_number | 3 last_seq          (varints)
//!          | 4 level id size smallest:lp largest:lp smallest_seq largest_seq entries deletions
//!          | 5 level id                                               (file deleted)
//!          | 6 seq start:lp end:lp                                    (range tombstone added)
//!          | 7 seq                                                    (range tombstone retired)
//! ```

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::coding::{put_length_prefixed, put_varint, Decoder};
use super::error::{Error, IoContext, Result};
use super::key::{compare_internal, user_part, SeqNo};
use super::log::{read_log, LogEnd, LogWriter};
use super::range_del::RangeTombstone;

/// Roll the manifest over to a fresh snapshot past this size.
const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// Metadata of one SSTable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    /// File number (`NNNNNN.sst`).
    pub id: u64,
    /// Size in bytes.
    pub size: u64,
    /// Smallest internal key.
    pub smallest: Vec<u8>,
    /// Largest internal key.
    pub largest: Vec<u8>,
    /// Smallest sequence number of any entry.
    pub smallest_seq: SeqNo,
    /// Largest sequence number of any entry.
    pub largest_seq: SeqNo,
    /// Number of entries.
    pub num_entries: u64,
    /// Number of point tombstones.
    pub num_deletions: u64,
}

impl FileMeta {
    /// Smallest engine key.
    pub fn smallest_user(&self) -> &[u8] {
        user_part(&self.smallest)
    }

    /// Largest engine key.
    pub fn largest_user(&self) -> &[u8] {
        user_part(&self.largest)
    }

    /// Whether the file's key range intersects `[start, end]` (engine keys, inclusive;
    /// `None` is unbounded).
    pub fn overlaps(&self, start: Option<&[u8]>, end: Option<&[u8]>) -> bool {
        start.is_none_or(|s| self.largest_user() >= s)
            && end.is_none_or(|e| self.smallest_user() <= e)
    }
}

/// The set of SSTables and flushed range tombstones at one point in time.
#[derive(Debug, Clone, Default)]
pub struct Version {
    /// `levels[0]` holds overlapping files, newest first; deeper levels hold files sorted by
    /// key with disjoint ranges.
    pub levels: Vec<Vec<Arc<FileMeta>>>,
    /// Flushed range tombstones.
    pub range_dels: Vec<RangeTombstone>,
    /// How many edits this version set had logged when it made this version: a later logged
    /// version has a larger number (see [`VersionSet::log_and_apply`]).
    generation: u64,
}

impl Version {
    /// An empty version with `num_levels` levels.
    pub fn new(num_levels: usize) -> Self {
        Version {
            levels: vec![Vec::new(); num_levels.max(1)],
            range_dels: Vec::new(),
            generation: 0,
        }
    }

    /// The version's place in the order edits were logged: of two versions from one version
    /// set, the one with the larger generation holds every edit of the other.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Every file, shallowest level first.
    pub fn files(&self) -> impl Iterator<Item = (usize, &Arc<FileMeta>)> {
        self.levels
            .iter()
            .enumerate()
            .flat_map(|(l, files)| files.iter().map(move |f| (l, f)))
    }

    /// Total bytes in a level.
    pub fn level_bytes(&self, level: usize) -> u64 {
        self.levels
            .get(level)
            .map_or(0, |fs| fs.iter().map(|f| f.size).sum())
    }

    /// Total bytes of all SSTables.
    pub fn total_bytes(&self) -> u64 {
        self.files().map(|(_, f)| f.size).sum()
    }

    /// Files of `level` overlapping `[start, end]` (engine keys, inclusive).
    pub fn overlapping(
        &self,
        level: usize,
        start: Option<&[u8]>,
        end: Option<&[u8]>,
    ) -> Vec<Arc<FileMeta>> {
        self.levels.get(level).map_or_else(Vec::new, |fs| {
            fs.iter()
                .filter(|f| f.overlaps(start, end))
                .cloned()
                .collect()
        })
    }

    /// Files of a sorted level (>= 1) that may contain `engine_key`: at most one.
    pub fn file_for_key(&self, level: usize, engine_key: &[u8]) -> Option<&Arc<FileMeta>> {
        let files = self.levels.get(level)?;
        let i = files.partition_point(|f| f.largest_user() < engine_key);
        files.get(i).filter(|f| f.smallest_user() <= engine_key)
    }

    /// The deepest level holding any file, or 0.
    pub fn deepest_nonempty_level(&self) -> usize {
        self.levels.iter().rposition(|l| !l.is_empty()).unwrap_or(0)
    }

    fn apply(&self, edit: &VersionEdit) -> std::result::Result<Version, String> {
        let mut v = self.clone();
        for (level, id) in &edit.deleted_files {
            let files = v
                .levels
                .get_mut(*level)
                .ok_or_else(|| format!("edit names level {level}"))?;
            let before = files.len();
            files.retain(|f| f.id != *id);
            if files.len() == before {
                return Err(format!("edit deletes file {id} not in level {level}"));
            }
        }
        for (level, meta) in &edit.new_files {
            let files = v
                .levels
                .get_mut(*level)
                .ok_or_else(|| format!("edit names level {level}"))?;
            files.push(Arc::new(meta.clone()));
        }
        for (level, files) in v.levels.iter_mut().enumerate() {
            if level == 0 {
                files.sort_by(|a, b| b.largest_seq.cmp(&a.largest_seq).then(b.id.cmp(&a.id)));
            } else {
                files.sort_by(|a, b| compare_internal(&a.smallest, &b.smallest));
            }
        }
        v.range_dels
            .retain(|t| !edit.deleted_range_dels.contains(&t.seq));
        v.range_dels.extend(edit.new_range_dels.iter().cloned());
        Ok(v)
    }
}

/// A change to the version, as recorded in the manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionEdit {
    /// WAL files numbered below this are no longer needed.
    pub log_number: Option<u64>,
    /// Next unused file number.
    pub next_file_number: Option<u64>,
    /// Largest sequence number made durable in SSTables.
    pub last_seq: Option<SeqNo>,
    /// Files added, with their level.
    pub new_files: Vec<(usize, FileMeta)>,
    /// Files removed, by level and id.
    pub deleted_files: Vec<(usize, u64)>,
    /// Range tombstones added.
    pub new_range_dels: Vec<RangeTombstone>,
    /// Range tombstones retired, by sequence number.
    pub deleted_range_dels: Vec<SeqNo>,
}

impl VersionEdit {
    /// Encodes the edit.
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        let num = |buf: &mut Vec<u8>, tag: u64, v: Option<u64>| {
            if let Some(v) = v {
                put_varint(buf, tag);
                put_varint(buf, v);
            }
        };
        num(&mut buf, 1, self.log_number);
        num(&mut buf, 2, self.next_file_number);
        num(&mut buf, 3, self.last_seq);
        for (level, f) in &self.new_files {
            put_varint(&mut buf, 4);
            for v in [*level as u64, f.id, f.size] {
                put_varint(&mut buf, v);
            }
            put_length_prefixed(&mut buf, &f.smallest);
            put_length_prefixed(&mut buf, &f.largest);
            for v in [
                f.smallest_seq,
                f.largest_seq,
                f.num_entries,
                f.num_deletions,
            ] {
                put_varint(&mut buf, v);
            }
        }
        for (level, id) in &self.deleted_files {
            put_varint(&mut buf, 5);
            put_varint(&mut buf, *level as u64);
            put_varint(&mut buf, *id);
        }
        for t in &self.new_range_dels {
            put_varint(&mut buf, 6);
            t.encode_into(&mut buf);
        }
        for seq in &self.deleted_range_dels {
            put_varint(&mut buf, 7);
            put_varint(&mut buf, *seq);
        }
        buf
    }

    /// Decodes an edit; `None` if malformed.
    pub fn decode(data: &[u8]) -> Option<VersionEdit> {
        let mut d = Decoder::new(data);
        let mut e = VersionEdit::default();
        while !d.is_empty() {
            match d.varint()? {
                1 => e.log_number = Some(d.varint()?),
                2 => e.next_file_number = Some(d.varint()?),
                3 => e.last_seq = Some(d.varint()?),
                4 => {
                    let level = usize::try_from(d.varint()?).ok()?;
                    let id = d.varint()?;
                    let size = d.varint()?;
                    let smallest = d.length_prefixed()?.to_vec();
                    let largest = d.length_prefixed()?.to_vec();
                    let meta = FileMeta {
                        id,
                        size,
                        smallest,
                        largest,
                        smallest_seq: d.varint()?,
                        largest_seq: d.varint()?,
                        num_entries: d.varint()?,
                        num_deletions: d.varint()?,
                    };
                    e.new_files.push((level, meta));
                }
                5 => {
                    let level = usize::try_from(d.varint()?).ok()?;
                    e.deleted_files.push((level, d.varint()?));
                }
                6 => e.new_range_dels.push(RangeTombstone::decode_from(&mut d)?),
                7 => e.deleted_range_dels.push(d.varint()?),
                _ => return None,
            }
        }
        Some(e)
    }
}

/// Name of the manifest with number `n`.
pub fn manifest_file_name(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("MANIFEST-{n:06}"))
}

/// Name of the WAL with number `n`.
pub fn wal_file_name(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:06}.log"))
}

/// Fsyncs a directory so that renames and creations in it are durable.
///
/// POSIX makes a new file's name durable only once its directory is synced (syncing the file
/// itself is not enough), so every file that acknowledged data will depend on is followed by
/// this before the dependency is created: a new WAL before it takes writes, new SSTables
/// before the manifest edit that names them, a new manifest before `CURRENT` names it, and
/// `CURRENT`'s rename before the new manifest is used.
pub fn sync_dir(dir: &Path) -> Result<()> {
    fail::fail_point!("lsm::sync_dir", |_| Err(Error::io(
        format!("syncing directory {}", dir.display()),
        std::io::Error::other("injected directory sync failure"),
    )));
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .context(|| format!("syncing directory {}", dir.display()))
}

/// What [`VersionSet::log_and_apply`] made of an edit.
#[derive(Debug)]
pub struct Applied {
    /// The version the edit produced. Install it only if its generation is newer than the
    /// installed version's: edits are logged in one order, but the threads that logged them
    /// may install in another.
    pub version: Arc<Version>,
    /// The files the edit removed from the version (deleted and not added back), to delete
    /// once no reader holds them.
    pub removed: Vec<Arc<FileMeta>>,
}

/// The persistent state of the tree: the current version, the manifest, and the counters.
#[derive(Debug)]
pub struct VersionSet {
    dir: PathBuf,
    current: Arc<Version>,
    manifest: Option<LogWriter>,
    manifest_number: u64,
    /// Set when a manifest fsync failed: the edit may or may not be durable, so every file
    /// it names must stay, and no further edit is logged until a reopen settles the question.
    poisoned: Option<String>,
    num_levels: usize,
    /// Next unused file number (SSTables, WALs, manifests share one sequence).
    pub next_file_number: u64,
    /// Largest sequence number durable in SSTables.
    pub last_seq: SeqNo,
    /// WAL files numbered below this have been flushed and may be deleted.
    pub log_number: u64,
}

impl VersionSet {
    /// State of a new, empty database. Call [`VersionSet::write_new_manifest`] to persist it.
    pub fn new(dir: &Path, num_levels: usize) -> VersionSet {
        VersionSet {
            dir: dir.to_path_buf(),
            current: Arc::new(Version::new(num_levels)),
            manifest: None,
            manifest_number: 0,
            poisoned: None,
            num_levels,
            next_file_number: 1,
            last_seq: 0,
            log_number: 0,
        }
    }

    /// Recovers the state recorded by `CURRENT` and its manifest.
    pub fn recover(dir: &Path, num_levels: usize) -> Result<VersionSet> {
        let current_path = dir.join("CURRENT");
        let name = fs::read_to_string(&current_path)
            .context(|| format!("reading {}", current_path.display()))?;
        let name = name.trim_end_matches('\n');
        let Some(number) = name
            .strip_prefix("MANIFEST-")
            .and_then(|n| n.parse::<u64>().ok())
        else {
            return Err(Error::corruption(
                &current_path,
                0,
                format!("CURRENT names {name:?}, not a manifest"),
            ));
        };
        let path = manifest_file_name(dir, number);
        let contents = read_log(&path)?;
        if let LogEnd::Corrupt { offset, reason } = &contents.end {
            return Err(Error::corruption(&path, *offset, reason.clone()));
        }
        let mut vs = VersionSet::new(dir, num_levels);
        vs.manifest_number = number;
        let mut version = Version::new(num_levels);
        for (offset, record) in &contents.records {
            let edit = VersionEdit::decode(record)
                .ok_or_else(|| Error::corruption(&path, *offset, "undecodable version edit"))?;
            if let Some((level, _)) = edit.new_files.iter().find(|(l, _)| *l >= num_levels) {
                return Err(Error::corruption(
                    &path,
                    *offset,
                    format!("file at level {level}, but the engine is configured with {num_levels} levels"),
                ));
            }
            version = version
                .apply(&edit)
                .map_err(|reason| Error::corruption(&path, *offset, reason))?;
            vs.absorb_counters(&edit);
        }
        if contents.records.is_empty() {
            return Err(Error::corruption(
                &path,
                0,
                "manifest holds no version edit",
            ));
        }
        vs.next_file_number = vs.next_file_number.max(number + 1);
        vs.current = Arc::new(version);
        Ok(vs)
    }

    fn absorb_counters(&mut self, edit: &VersionEdit) {
        if let Some(n) = edit.log_number {
            self.log_number = self.log_number.max(n);
        }
        if let Some(n) = edit.next_file_number {
            self.next_file_number = self.next_file_number.max(n);
        }
        if let Some(s) = edit.last_seq {
            self.last_seq = self.last_seq.max(s);
        }
        for (_, f) in &edit.new_files {
            self.next_file_number = self.next_file_number.max(f.id + 1);
        }
    }

    /// The current version.
    pub fn current(&self) -> Arc<Version> {
        Arc::clone(&self.current)
    }

    /// Number of the live manifest.
    pub fn manifest_number(&self) -> u64 {
        self.manifest_number
    }

    /// Number of levels.
    pub fn num_levels(&self) -> usize {
        self.num_levels
    }

    /// Reserves a new file number.
    pub fn new_file_number(&mut self) -> u64 {
        let n = self.next_file_number;
        self.next_file_number += 1;
        n
    }

    /// Starts a new manifest holding the whole current state, and points `CURRENT` at it.
    pub fn write_new_manifest(&mut self) -> Result<()> {
        let number = self.new_file_number();
        let path = manifest_file_name(&self.dir, number);
        let mut snapshot = VersionEdit {
            log_number: Some(self.log_number),
            next_file_number: Some(self.next_file_number),
            last_seq: Some(self.last_seq),
            new_range_dels: self.current.range_dels.clone(),
            ..VersionEdit::default()
        };
        for (level, f) in self.current.files() {
            snapshot.new_files.push((level, (**f).clone()));
        }
        let mut writer = LogWriter::create(&path)?;
        writer.append([snapshot.encode().as_slice()])?;
        writer.sync()?;
        let tmp = self.dir.join(format!("{number:06}.dbtmp"));
        let write_temp = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(format!("MANIFEST-{number:06}\n").as_bytes())?;
            f.sync_all()
        };
        // The new manifest's name (and those of the SSTables it lists) must be durable before
        // `CURRENT` names it, or a crash could leave `CURRENT` naming a file that is gone.
        let prepared = write_temp()
            .map_err(|e| Error::io("writing a new CURRENT", e))
            .and_then(|()| sync_dir(&self.dir));
        if let Err(e) = prepared {
            let _ = fs::remove_file(&tmp);
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        fail::fail_point!("lsm::current::before_rename");
        if let Err(e) = fs::rename(&tmp, self.dir.join("CURRENT")) {
            let _ = fs::remove_file(&tmp);
            let _ = fs::remove_file(&path);
            return Err(Error::io("installing a new CURRENT", e));
        }
        // Until the rename is durable a crash may still find the old `CURRENT`, which names the
        // old manifest: it must not be deleted (below) nor the new one relied on before this.
        sync_dir(&self.dir)?;
        let old = self.manifest_number;
        self.manifest = Some(writer);
        self.manifest_number = number;
        if old != 0 {
            let _ = fs::remove_file(manifest_file_name(&self.dir, old));
        }
        Ok(())
    }

    /// Whether a manifest fsync failed, leaving an edit that may or may not be durable. While
    /// it is, [`VersionSet::log_and_apply`] refuses every edit and the caller must delete none
    /// of the files an edit named: only a reopen, which reads what the manifest really holds,
    /// settles which of them the tree needs.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    /// Durably records `edit` and returns the version it produces, which becomes this set's
    /// current version. On error the current version does not change; if the manifest's
    /// fsync failed the set is also poisoned (see [`VersionSet::is_poisoned`]).
    ///
    /// Every file the edit adds must already be durable, name included (see [`sync_dir`]).
    pub fn log_and_apply(&mut self, mut edit: VersionEdit) -> Result<Applied> {
        if let Some(reason) = &self.poisoned {
            return Err(Error::Background(format!(
                "{reason}; the manifest accepts no edit until the engine is reopened"
            )));
        }
        if let Some(n) = edit.log_number {
            debug_assert!(n >= self.log_number);
        }
        edit.next_file_number = Some(self.next_file_number);
        let mut new_version = self.current.apply(&edit).map_err(|reason| {
            Error::InvalidArgument(format!("inconsistent version edit: {reason}"))
        })?;
        new_version.generation = self.current.generation + 1;
        let removed: Vec<Arc<FileMeta>> = self
            .current
            .files()
            .filter(|(_, f)| edit.deleted_files.iter().any(|(_, id)| *id == f.id))
            .filter(|(_, f)| !new_version.files().any(|(_, g)| g.id == f.id))
            .map(|(_, f)| Arc::clone(f))
            .collect();
        let new_version = Arc::new(new_version);
        if self
            .manifest
            .as_ref()
            .is_none_or(|m| m.len() > MAX_MANIFEST_BYTES)
        {
            // Write a fresh manifest that already contains this edit's result. Its failures
            // are never ambiguous: until `CURRENT` names the new manifest the old one rules.
            let saved = (self.current.clone(), self.log_number, self.last_seq);
            self.current = Arc::clone(&new_version);
            self.absorb_counters(&edit);
            if let Err(e) = self.write_new_manifest() {
                (self.current, self.log_number, self.last_seq) = saved;
                return Err(e);
            }
            return Ok(Applied {
                version: new_version,
                removed,
            });
        }
        let Some(manifest) = self.manifest.as_mut() else {
            return Err(Error::Closed);
        };
        fail::fail_point!("lsm::manifest::before_append");
        manifest.append([edit.encode().as_slice()])?;
        if let Err(e) = sync_manifest(manifest) {
            // The edit may or may not be durable. Deleting a file it names could break the
            // tree a crash recovers; using it could build on an edit a crash forgets.
            self.poisoned = Some(format!("manifest sync failed: {e}"));
            self.manifest = None;
            return Err(e);
        }
        self.current = Arc::clone(&new_version);
        self.absorb_counters(&edit);
        Ok(Applied {
            version: new_version,
            removed,
        })
    }
}

/// Fsyncs the manifest after an append (a failpoint can fail it after the append).
fn sync_manifest(manifest: &mut LogWriter) -> Result<()> {
    fail::fail_point!("lsm::manifest::sync", |_| Err(Error::io(
        "syncing the manifest",
        std::io::Error::other("injected manifest sync failure"),
    )));
    manifest.sync()
}

/// A one-entry file spanning `[lo, hi]` at `seq`, for tests of versions and pickers.
#[cfg(test)]
pub(crate) fn test_file(id: u64, lo: &str, hi: &str, size: u64, seq: SeqNo) -> FileMeta {
    use super::key::{internal_key, ValueKind};
    FileMeta {
        id,
        size,
        smallest: internal_key(lo.as_bytes(), seq, ValueKind::Put),
        largest: internal_key(hi.as_bytes(), seq, ValueKind::Put),
        smallest_seq: seq,
        largest_seq: seq,
        num_entries: 1,
        num_deletions: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: u64, lo: &str, hi: &str, seq: SeqNo) -> FileMeta {
        test_file(id, lo, hi, 100, seq)
    }

    #[test]
    fn edit_roundtrips() {
        let e = VersionEdit {
            log_number: Some(3),
            next_file_number: Some(9),
            last_seq: Some(77),
            new_files: vec![(1, meta(4, "a", "c", 5))],
            deleted_files: vec![(0, 2)],
            new_range_dels: vec![RangeTombstone {
                start: b"a".to_vec(),
                end: b"b".to_vec(),
                seq: 6,
            }],
            deleted_range_dels: vec![4],
        };
        assert_eq!(VersionEdit::decode(&e.encode()), Some(e));
        assert_eq!(VersionEdit::decode(&[99]), None);
    }

    #[test]
    fn manifest_survives_reopen_and_rolls() {
        let dir = tempfile::tempdir().unwrap();
        let mut vs = VersionSet::new(dir.path(), 3);
        vs.write_new_manifest().unwrap();
        let id = vs.new_file_number();
        vs.log_and_apply(VersionEdit {
            new_files: vec![(0, meta(id, "a", "k", 1))],
            last_seq: Some(1),
            ..Default::default()
        })
        .unwrap();
        let id2 = vs.new_file_number();
        vs.log_and_apply(VersionEdit {
            new_files: vec![(1, meta(id2, "a", "k", 1))],
            deleted_files: vec![(0, id)],
            ..Default::default()
        })
        .unwrap();
        let vs2 = VersionSet::recover(dir.path(), 3).unwrap();
        assert_eq!(vs2.current().levels[1].len(), 1);
        assert!(vs2.current().levels[0].is_empty());
        assert_eq!(vs2.last_seq, 1);
        assert!(vs2.next_file_number > id2);

        // Deleting a file that is not there is refused and changes nothing.
        let mut vs3 = vs2;
        vs3.write_new_manifest().unwrap();
        assert!(vs3
            .log_and_apply(VersionEdit {
                deleted_files: vec![(0, 999)],
                ..Default::default()
            })
            .is_err());
        assert_eq!(
            VersionSet::recover(dir.path(), 3).unwrap().current().levels[1].len(),
            1
        );
    }

    #[test]
    fn level_lookup_by_key() {
        let mut v = Version::new(2);
        v.levels[1] = vec![
            Arc::new(meta(1, "a", "c", 1)),
            Arc::new(meta(2, "e", "g", 1)),
        ];
        assert_eq!(v.file_for_key(1, b"b").map(|f| f.id), Some(1));
        assert_eq!(v.file_for_key(1, b"d").map(|f| f.id), None);
        assert_eq!(v.file_for_key(1, b"g").map(|f| f.id), Some(2));
        assert_eq!(v.file_for_key(1, b"h").map(|f| f.id), None);
    }
}
