//! Open-time recovery: the manifest, then the WALs it does not cover.
//!
//! [`recover`] replays the manifest into a version set (or starts a new one), replays every
//! WAL not yet flushed into one memtable, flushes what it replayed to L0, creates the WAL of
//! the first memtable, syncs the directory, and writes a fresh manifest holding the whole
//! state, so replay stays short across restarts.
//!
//! Damage in a WAL: in the last one, a torn or corrupt record with nothing valid after it is
//! a torn append and is truncated; one followed by a valid record is damage in the middle of
//! the log, and like damage in an earlier WAL it is [`Error::Corruption`] naming the file
//! and offset, with nothing changed on disk (decisions D6 and D16).

use std::fs;
use std::path::Path;
use std::sync::Arc;

use crate::lsm::batch::{DecodedBatch, HEADER_LEN as BATCH_HEADER_LEN};
use crate::lsm::coding::{read_u32, read_u64};
use crate::lsm::error::{Error, IoContext, Result};
use crate::lsm::key::{SeqNo, MAX_SEQ};
use crate::lsm::log::{parse_log, record_at, LogEnd, LogWriter, HEADER_LEN};
use crate::lsm::memtable::Memtable;
use crate::lsm::options::Options;
use crate::lsm::stats::Counters;
use crate::lsm::table::TableOptions;
use crate::lsm::version::{sync_dir, wal_file_name, VersionEdit, VersionSet};

use super::files::{list_dir, parse_numbered};
use super::flush::flush_memtable;
use super::write::apply_to_memtable;

/// What recovery hands to the engine it opens.
pub(super) struct Recovered {
    pub(super) versions: VersionSet,
    /// The WAL of the first memtable (`None` when the WAL is off).
    pub(super) wal: Option<LogWriter>,
    /// Its number (0 when the WAL is off).
    pub(super) wal_number: u64,
    /// The last sequence number recovered.
    pub(super) last_seq: SeqNo,
}

/// Recovers the state in `dir` (see the module comment). The caller holds the `LOCK` file.
pub(super) fn recover(
    dir: &Path,
    options: &Options,
    table_options: &TableOptions,
    counters: &Counters,
) -> Result<Recovered> {
    let mut versions = if dir.join("CURRENT").exists() {
        VersionSet::recover(dir, options.num_levels)?
    } else {
        let mut vs = VersionSet::new(dir, options.num_levels);
        vs.write_new_manifest()?;
        vs
    };
    // Replay the WALs that were not flushed, into one memtable, then flush it.
    let names = list_dir(dir)?;
    let mut wals: Vec<u64> = names
        .iter()
        .filter_map(|n| parse_numbered(n, ".log"))
        .filter(|n| *n >= versions.log_number)
        .collect();
    wals.sort_unstable();
    // WAL numbers are handed out without a manifest record, so the recorded next file
    // number can be at or below a WAL found here. The WAL created below must not reuse
    // (and truncate) one of them: until the new manifest is durable, a crash replays them.
    if let Some(&newest) = wals.last() {
        versions.next_file_number = versions.next_file_number.max(newest + 1);
    }
    let recovered = Arc::new(Memtable::new(0));
    let mut max_seq = versions.last_seq;
    for (i, &number) in wals.iter().enumerate() {
        let path = wal_file_name(dir, number);
        let data = fs::read(&path).context(|| format!("reading log {}", path.display()))?;
        let contents = parse_log(&data);
        let is_last = i + 1 == wals.len();
        let mut good_len = contents.valid_len;
        let mut damage = match &contents.end {
            LogEnd::Clean => None,
            LogEnd::Torn { offset } => Some((*offset, "torn record".to_string())),
            LogEnd::Corrupt { offset, reason } => Some((*offset, reason.clone())),
        };
        for (offset, record) in &contents.records {
            let Some(batch) = DecodedBatch::decode(record) else {
                good_len = *offset;
                damage = Some((*offset, "undecodable write batch".to_string()));
                break;
            };
            apply_to_memtable(&recovered, &batch);
            max_seq = max_seq.max(batch.first_seq + u64::from(batch.count).saturating_sub(1));
        }
        if let Some((offset, reason)) = damage {
            if !is_last {
                return Err(Error::corruption(
                    &path,
                    offset,
                    format!("{reason} in a WAL that is not the last"),
                ));
            }
            // A torn append leaves nothing valid after it; a valid record after the damage
            // means the damage is in the middle, and cutting there would drop writes that
            // may have been acknowledged as synced (decision D16).
            if let Some(next) = valid_batch_after(&data, offset, max_seq) {
                return Err(Error::corruption(
                    &path,
                    offset,
                    format!(
                        "{reason} in the last WAL, followed by a valid record at offset {next}"
                    ),
                ));
            }
            tracing::warn!(wal = %path.display(), offset, %reason, "truncating the damaged tail of the WAL");
            drop(LogWriter::reopen_truncated(&path, good_len)?);
        }
    }
    versions.last_seq = max_seq;

    let mut edit = VersionEdit::default();
    if !recovered.is_empty() {
        let snapshots = Vec::new();
        let tombstones = recovered.range_dels();
        let files = flush_memtable(
            &recovered,
            dir,
            &mut || versions.new_file_number(),
            table_options,
            snapshots,
        )?;
        for (_, meta) in &files {
            Counters::add(&counters.flush_bytes_written, meta.size);
        }
        edit.new_files = files;
        edit.new_range_dels = tombstones;
    }
    let wal_number = if options.wal {
        versions.new_file_number()
    } else {
        0
    };
    edit.log_number = Some(if options.wal {
        wal_number
    } else {
        versions.next_file_number
    });
    edit.last_seq = Some(max_seq);
    let wal = if options.wal {
        Some(LogWriter::create(&wal_file_name(dir, wal_number))?)
    } else {
        None
    };
    // The tables just flushed and the new WAL must be durable, names included, before the
    // edit that names them.
    sync_dir(dir)?;
    // The recovered version set has no open manifest, so this writes a fresh one holding
    // the whole state: replay stays short across restarts.
    versions.log_and_apply(edit)?;
    Ok(Recovered {
        versions,
        wal,
        wal_number,
        last_seq: max_seq,
    })
}

/// The offset of the first valid WAL record that starts after `damage`, if any: a complete
/// record with a good checksum holding a well-formed batch whose sequence numbers follow
/// `last_seq`. Candidates are screened by their batch header first (a length that fits in
/// the file, a sequence number past `last_seq`), so random bytes after a torn tail almost
/// never cost a checksum, and a chance checksum match in garbage must also decode as a batch.
///
/// The sequence number is bounded only by the largest an internal key can hold: batches
/// written without the WAL take numbers too, so the next logged record may start any
/// distance past the last one replayed.
fn valid_batch_after(data: &[u8], damage: u64, last_seq: SeqNo) -> Option<u64> {
    let start = usize::try_from(damage).ok()?.checked_add(1)?;
    let max_seq = MAX_SEQ;
    (start..data.len()).find_map(|pos| {
        let len = read_u32(data, pos + 4)? as usize;
        if len < BATCH_HEADER_LEN || len > data.len() - pos - HEADER_LEN {
            return None;
        }
        let first_seq = read_u64(data, pos + HEADER_LEN)?;
        if first_seq <= last_seq || first_seq > max_seq {
            return None;
        }
        let payload = record_at(data, pos)?;
        DecodedBatch::decode(payload).map(|_| pos as u64)
    })
}
