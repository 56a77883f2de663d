//! Reading MVCC data at a timestamp, over one consistent engine snapshot.
//!
//! Scans fill a [`ScanPage`] under a [`ScanLimit`] (pairs and bytes). The limit is checked
//! before a value is loaded, so a scan over many large values holds at most the byte budget
//! plus one pair in memory, however large the range, and the page says exactly whether more
//! pairs remain.

use crate::lsm::key::prefix_successor;
use crate::lsm::{ColumnFamily, Db, IterOptions, ReadOptions, SeqNo};

use super::key::{
    decode_bytes, decode_versioned_key, lock_key, prefix_reads_enabled, versioned_key,
};
use super::record::{Lock, LockKind, Write, WriteKind};
use super::{LockInfo, MvccError, Result, Timestamp};

/// What the `write` family says about transaction `start_ts` on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnCommitRecord {
    /// The transaction committed the key at `commit_ts`.
    Committed {
        /// The commit timestamp.
        commit_ts: Timestamp,
        /// The commit record.
        write: Write,
    },
    /// The transaction was rolled back on the key.
    RolledBack,
    /// No record: the transaction neither committed nor rolled back the key (yet).
    None,
}

/// How much one scan page may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanLimit {
    /// The most pairs.
    pub pairs: usize,
    /// The byte budget (keys plus values): no pair is added once the page holds this many
    /// bytes, but a page always holds at least one pair if any is in range.
    pub bytes: usize,
}

impl ScanLimit {
    /// At most `pairs` pairs, whatever their size.
    pub fn pairs(pairs: usize) -> ScanLimit {
        ScanLimit {
            pairs,
            bytes: usize::MAX,
        }
    }

    /// Whether a page of `pairs` pairs and `bytes` bytes has room for another pair.
    pub fn has_room(&self, pairs: usize, bytes: usize) -> bool {
        pairs < self.pairs && (pairs == 0 || bytes < self.bytes)
    }
}

/// One page of a scan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanPage {
    /// The pairs, in scan order.
    pub pairs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Whether the range holds more pairs beyond the last one (the scan stopped at its
    /// limit or byte budget). Continue ascending from the last key's successor
    /// (`last + [0]`), descending with the last key as the exclusive end.
    pub more: bool,
}

/// A page being filled under a [`ScanLimit`].
struct PageBuilder {
    page: ScanPage,
    bytes: usize,
    limit: ScanLimit,
}

impl PageBuilder {
    /// Offers `key` with its newest data record: a Put is added (its value read through
    /// `load` unless inline) if the page has room. Returns `false` once the page is full,
    /// with `more` set: a visible key was left out, and its value was not read.
    fn offer(
        &mut self,
        key: Vec<u8>,
        write: Option<Write>,
        load: impl FnOnce(&[u8], Timestamp) -> Result<Vec<u8>>,
    ) -> Result<bool> {
        let Some(w) = write.filter(|w| w.kind == WriteKind::Put) else {
            return Ok(true);
        };
        if !self.limit.has_room(self.page.pairs.len(), self.bytes) {
            self.page.more = true;
            return Ok(false);
        }
        let value = match w.short_value {
            Some(v) => v,
            None => load(&key, w.start_ts)?,
        };
        self.bytes = self.bytes.saturating_add(key.len() + value.len());
        self.page.pairs.push((key, value));
        Ok(true)
    }
}

/// Reads locks, commit records and values at timestamps, from one engine snapshot.
#[derive(Debug)]
pub struct MvccReader<'a> {
    db: &'a Db,
    snapshot: Option<SeqNo>,
}

fn corrupt(key: &[u8], reason: impl Into<String>) -> MvccError {
    MvccError::Corrupt {
        key: key.to_vec(),
        reason: reason.into(),
    }
}

impl<'a> MvccReader<'a> {
    /// A reader of `db` at the engine snapshot `snapshot` (the latest state if `None`).
    pub fn new(db: &'a Db, snapshot: Option<SeqNo>) -> Self {
        MvccReader { db, snapshot }
    }

    fn read_options(&self) -> ReadOptions {
        ReadOptions {
            snapshot: self.snapshot,
            ..ReadOptions::default()
        }
    }

    /// The lock on `key`, if any.
    pub fn load_lock(&self, key: &[u8]) -> Result<Option<Lock>> {
        match self
            .db
            .get(ColumnFamily::Lock, &lock_key(key), &self.read_options())?
        {
            Some(bytes) => Lock::decode(&bytes)
                .map(Some)
                .ok_or_else(|| corrupt(key, "undecodable lock")),
            None => Ok(None),
        }
    }

    /// Commit records of `key` from `newest` down to `oldest` (inclusive), newest first,
    /// calling `visit` until it returns `false`.
    pub fn scan_writes(
        &self,
        key: &[u8],
        newest: Timestamp,
        oldest: Timestamp,
        mut visit: impl FnMut(Timestamp, Write) -> bool,
    ) -> Result<()> {
        let lower = versioned_key(key, newest);
        let last = versioned_key(key, oldest);
        let upper = prefix_successor(&last);
        let opts = IterOptions {
            lower_bound: Some(lower.clone()),
            upper_bound: upper,
            snapshot: self.snapshot,
            fill_cache: true,
        };
        // A prefix read skips the tables whose prefix filter lacks the key.
        let mut it = if prefix_reads_enabled(self.db) {
            self.db.prefix_iter(ColumnFamily::Write, &lower, opts)?
        } else {
            self.db.iter(ColumnFamily::Write, opts)?
        };
        it.seek_to_first()?;
        while it.valid() {
            let (k, commit_ts) = decode_versioned_key(it.key())
                .ok_or_else(|| corrupt(it.key(), "undecodable write key"))?;
            if k != key || commit_ts < oldest {
                break;
            }
            let write = Write::decode(it.value())
                .ok_or_else(|| corrupt(key, "undecodable write record"))?;
            if !visit(commit_ts, write) {
                break;
            }
            it.next()?;
        }
        Ok(())
    }

    /// The newest commit record of `key` at or below `ts`.
    pub fn seek_write(&self, key: &[u8], ts: Timestamp) -> Result<Option<(Timestamp, Write)>> {
        let mut found = None;
        self.scan_writes(key, ts, 0, |commit_ts, write| {
            found = Some((commit_ts, write));
            false
        })?;
        Ok(found)
    }

    /// The newest *data* record (Put or Delete) of `key` at or below `ts`, skipping Lock
    /// and Rollback records.
    pub fn seek_data_write(&self, key: &[u8], ts: Timestamp) -> Result<Option<(Timestamp, Write)>> {
        let mut found = None;
        self.scan_writes(key, ts, 0, |commit_ts, write| match write.kind {
            WriteKind::Put | WriteKind::Delete => {
                found = Some((commit_ts, write));
                false
            }
            WriteKind::Lock | WriteKind::Rollback => true,
        })?;
        Ok(found)
    }

    /// The value written by transaction `start_ts` (from the `default` family).
    pub fn load_value(&self, key: &[u8], start_ts: Timestamp) -> Result<Vec<u8>> {
        self.db
            .get(
                ColumnFamily::Default,
                &versioned_key(key, start_ts),
                &self.read_options(),
            )?
            .ok_or_else(|| corrupt(key, format!("value of transaction {start_ts} is missing")))
    }

    /// The value of `key` at `ts`. A lock of a transaction that started at or before `ts`
    /// (and writes the key) is an error: that transaction may still commit below `ts`.
    /// Locks of transactions in `bypass` (the reader's own) are ignored.
    pub fn get(&self, key: &[u8], ts: Timestamp, bypass: &[Timestamp]) -> Result<Option<Vec<u8>>> {
        if let Some(lock) = self.load_lock(key)? {
            if lock.start_ts <= ts
                && lock.kind != LockKind::Lock
                && !bypass.contains(&lock.start_ts)
            {
                return Err(MvccError::KeyIsLocked(LockInfo::new(key, &lock)));
            }
        }
        self.get_committed(key, ts)
    }

    /// The committed value of `key` at `ts`, ignoring locks.
    pub fn get_committed(&self, key: &[u8], ts: Timestamp) -> Result<Option<Vec<u8>>> {
        match self.seek_data_write(key, ts)? {
            Some((_, write)) if write.kind == WriteKind::Put => match write.short_value {
                Some(v) => Ok(Some(v)),
                None => self.load_value(key, write.start_ts).map(Some),
            },
            _ => Ok(None),
        }
    }

    /// What transaction `start_ts` left on `key`: a commit, a rollback, or nothing.
    pub fn txn_commit_record(&self, key: &[u8], start_ts: Timestamp) -> Result<TxnCommitRecord> {
        let mut record = TxnCommitRecord::None;
        self.scan_writes(key, Timestamp::MAX, start_ts, |commit_ts, write| {
            if write.start_ts != start_ts {
                return true;
            }
            record = if write.kind == WriteKind::Rollback {
                TxnCommitRecord::RolledBack
            } else {
                TxnCommitRecord::Committed { commit_ts, write }
            };
            false
        })?;
        Ok(record)
    }

    /// Up to `limit` key/value pairs of `[start, end)` (`end` unbounded if `None`) visible at
    /// `ts`, ascending or descending; [`MvccReader::scan_page`] without a byte budget.
    pub fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
        ts: Timestamp,
        reverse: bool,
        bypass: &[Timestamp],
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.scan_page(start, end, ScanLimit::pairs(limit), ts, reverse, bypass)
            .map(|page| page.pairs)
    }

    /// The pairs of `[start, end)` (`end` unbounded if `None`) visible at `ts`, ascending or
    /// descending, up to `limit`. A lock in the part of the range the page covers, of a
    /// transaction that started at or before `ts` (and is not in `bypass`), is `KeyIsLocked`.
    ///
    /// The budget is checked *before* a value is read: once the page holds `limit.pairs`
    /// pairs or `limit.bytes` bytes, the next visible key ends the page with `more` set and
    /// its value is never loaded. So a page holds at most `limit.bytes` plus one pair, and
    /// `more` is exact: it is set only when a visible pair beyond the page exists.
    pub fn scan_page(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: ScanLimit,
        ts: Timestamp,
        reverse: bool,
        bypass: &[Timestamp],
    ) -> Result<ScanPage> {
        let lower = lock_key(start);
        let upper = end.map(lock_key);
        let mut it = self.db.iter(
            ColumnFamily::Write,
            IterOptions {
                lower_bound: Some(lower.clone()),
                upper_bound: upper.clone(),
                snapshot: self.snapshot,
                fill_cache: true,
            },
        )?;
        let mut page = PageBuilder {
            page: ScanPage::default(),
            bytes: 0,
            limit,
        };
        // The newest data record at or below `ts` of the key being walked.
        let mut current: Option<(Vec<u8>, Option<Write>)> = None;
        if reverse {
            it.seek_to_last()?;
        } else {
            it.seek_to_first()?;
        }
        let mut full = false;
        while it.valid() {
            let (key, commit_ts) = decode_versioned_key(it.key())
                .ok_or_else(|| corrupt(it.key(), "undecodable write key"))?;
            if current.as_ref().is_some_and(|(k, _)| *k != key) {
                if let Some((k, w)) = current.take() {
                    if !page.offer(k, w, |k, start_ts| self.load_value(k, start_ts))? {
                        full = true;
                        break;
                    }
                }
            }
            let entry = current.get_or_insert_with(|| (key.clone(), None));
            if commit_ts <= ts {
                let write = Write::decode(it.value())
                    .ok_or_else(|| corrupt(&key, "undecodable write record"))?;
                if matches!(write.kind, WriteKind::Put | WriteKind::Delete) {
                    // Forward, versions come newest first: keep the first one. Reverse,
                    // oldest first: keep overwriting.
                    if reverse || entry.1.is_none() {
                        entry.1 = Some(write);
                    }
                }
            }
            if reverse {
                it.prev()?;
            } else {
                it.next()?;
            }
        }
        if !full {
            if let Some((k, w)) = current.take() {
                page.offer(k, w, |k, start_ts| self.load_value(k, start_ts))?;
            }
        }
        let page = page.page;
        // Locks in the part of the range the page covers: up to its last key when it
        // stopped early, else all of it.
        let (lock_lower, lock_upper) = match (page.more, page.pairs.last()) {
            (true, Some((last, _))) if reverse => (Some(lock_key(last)), upper),
            (true, Some((last, _))) => (Some(lower), prefix_successor(&lock_key(last))),
            _ => (Some(lower), upper),
        };
        let mut blocking = None;
        self.scan_locks(lock_lower, lock_upper, |key, lock| {
            if lock.start_ts <= ts
                && lock.kind != LockKind::Lock
                && !bypass.contains(&lock.start_ts)
            {
                blocking = Some(LockInfo::new(key, &lock));
                return false;
            }
            true
        })?;
        if let Some(info) = blocking {
            return Err(MvccError::KeyIsLocked(info));
        }
        Ok(page)
    }

    /// The first data change (Put or Delete) in `[start, end)` committed after `since` by a
    /// transaction other than `since`'s, if any.
    pub fn first_change_since(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        since: Timestamp,
    ) -> Result<Option<(Vec<u8>, Write, Timestamp)>> {
        let mut it = self.db.iter(
            ColumnFamily::Write,
            IterOptions {
                lower_bound: Some(lock_key(start)),
                upper_bound: end.map(lock_key),
                snapshot: self.snapshot,
                fill_cache: true,
            },
        )?;
        it.seek_to_first()?;
        while it.valid() {
            let (key, commit_ts) = decode_versioned_key(it.key())
                .ok_or_else(|| corrupt(it.key(), "undecodable write key"))?;
            if commit_ts > since {
                let write = Write::decode(it.value())
                    .ok_or_else(|| corrupt(&key, "undecodable write record"))?;
                if matches!(write.kind, WriteKind::Put | WriteKind::Delete)
                    && write.start_ts != since
                {
                    return Ok(Some((key, write, commit_ts)));
                }
                it.next()?;
            } else {
                // Versions are newest first: skip the rest of this key.
                let next_key = prefix_successor(&lock_key(&key));
                match next_key {
                    Some(k) => it.seek(&k)?,
                    None => break,
                }
            }
        }
        Ok(None)
    }

    /// The first lock in `[start, end)` held by a transaction other than `owner`, if any.
    pub fn first_foreign_lock(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        owner: Timestamp,
    ) -> Result<Option<(Vec<u8>, Lock)>> {
        let mut found = None;
        self.scan_locks(Some(lock_key(start)), end.map(lock_key), |key, lock| {
            if lock.start_ts != owner {
                found = Some((key.to_vec(), lock));
                return false;
            }
            true
        })?;
        Ok(found)
    }

    /// Visits the locks between the encoded bounds `[lower, upper)` in key order, with their
    /// decoded keys, until `visit` returns `false`.
    pub(crate) fn scan_locks(
        &self,
        lower: Option<Vec<u8>>,
        upper: Option<Vec<u8>>,
        mut visit: impl FnMut(&[u8], Lock) -> bool,
    ) -> Result<()> {
        let mut locks = self.db.iter(
            ColumnFamily::Lock,
            IterOptions {
                lower_bound: lower,
                upper_bound: upper,
                snapshot: self.snapshot,
                fill_cache: true,
            },
        )?;
        locks.seek_to_first()?;
        while locks.valid() {
            let (key, _) = decode_bytes(locks.key())
                .ok_or_else(|| corrupt(locks.key(), "undecodable lock key"))?;
            let lock =
                Lock::decode(locks.value()).ok_or_else(|| corrupt(&key, "undecodable lock"))?;
            if !visit(&key, lock) {
                break;
            }
            locks.next()?;
        }
        Ok(())
    }
}
