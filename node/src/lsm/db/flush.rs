//! Flushing immutable memtables to L0, oldest first.
//!
//! One background thread (or the writer itself when background work is off) writes the
//! oldest immutable memtable to an L0 SSTable, logs the edit that adds it and advances the
//! WAL horizon, installs the new version and deletes the memtable's WAL. A flush failure
//! (for example a full disk) puts the engine in a read-only state (writes return
//! [`Error::Background`]) while the thread retries with backoff; a later success clears it.

use std::fs;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::lsm::compaction::{file_meta, write_run, GcContext, GcDecider};
use crate::lsm::error::{Error, Result};
use crate::lsm::key::SeqNo;
use crate::lsm::memtable::Memtable;
use crate::lsm::stats::Counters;
use crate::lsm::table::{table_file_name, TableOptions};
use crate::lsm::version::{sync_dir, wal_file_name, FileMeta, Version, VersionEdit};

use super::{Inner, MAX_BACKOFF};

/// Writes a memtable to (at most) one L0 file.
pub(super) fn flush_memtable(
    mem: &Arc<Memtable>,
    dir: &Path,
    new_file_number: &mut dyn FnMut() -> u64,
    table_options: &TableOptions,
    snapshots: Vec<SeqNo>,
) -> Result<Vec<(usize, FileMeta)>> {
    let mut iter = mem.borrowed_iter();
    let mut decider = GcDecider::new(GcContext::new(snapshots, &mem.range_dels(), false));
    let mut new_file = || {
        let id = new_file_number();
        (id, table_file_name(dir, id))
    };
    let outputs = write_run(
        &mut iter,
        &mut decider,
        table_options,
        u64::MAX,
        &mut new_file,
    )?;
    Ok(outputs
        .iter()
        .map(|(id, s)| (0, file_meta(*id, s)))
        .collect())
}

impl Inner {
    /// Flushes the oldest immutable memtable, if any. Returns whether one was flushed.
    fn flush_one(&self) -> Result<bool> {
        let _guard = self.flush_lock.lock();
        let (imm, next_wal) = {
            let mut st = self.state.lock();
            let Some(imm) = st.imms.front().cloned() else {
                return Ok(false);
            };
            st.flushing = true;
            let next_wal = st
                .imms
                .get(1)
                .map_or(st.mem.wal_number(), |m| m.wal_number());
            (imm, next_wal)
        };
        let result = (|| -> Result<Arc<Version>> {
            self.check_manifest()?;
            fail::fail_point!("lsm::flush::before_write", |_| Err(Error::io(
                "writing a flushed table",
                std::io::Error::other("injected flush failure"),
            )));
            let snapshots = self.snapshot_list();
            let files = flush_memtable(
                &imm,
                &self.dir,
                &mut || self.versions.lock().new_file_number(),
                &self.table_options,
                snapshots,
            )?;
            if !files.is_empty() {
                // The edit below names the new table; its name must survive a crash first.
                if let Err(e) = sync_dir(&self.dir) {
                    for (_, f) in &files {
                        let _ = fs::remove_file(table_file_name(&self.dir, f.id));
                    }
                    return Err(e);
                }
            }
            let mut versions = self.versions.lock();
            let bytes: u64 = files.iter().map(|(_, f)| f.size).sum();
            let edit = VersionEdit {
                log_number: self.options.wal.then_some(next_wal),
                last_seq: imm.seq_range().map(|(_, hi)| hi),
                new_range_dels: imm.range_dels(),
                new_files: files.clone(),
                ..VersionEdit::default()
            };
            match versions.log_and_apply(edit) {
                Ok(applied) => {
                    // The edit is durable: everything the memtable held survives a crash,
                    // logged or not.
                    if let Some((_, hi)) = imm.seq_range() {
                        self.flushed_seq.fetch_max(hi, Ordering::AcqRel);
                    }
                    Counters::add(&self.counters.flush_bytes_written, bytes);
                    Counters::add(&self.counters.flushes, 1);
                    Ok(applied.version)
                }
                Err(e) => {
                    let ids: Vec<u64> = files.iter().map(|(_, f)| f.id).collect();
                    self.edit_failed(&versions, &ids);
                    Err(e)
                }
            }
        })();
        if result.is_ok() {
            fail::fail_point!("lsm::flush::before_install");
        }
        let mut st = self.state.lock();
        st.flushing = false;
        match result {
            Ok(version) => {
                // A compaction that logged after this flush may have installed already; its
                // version holds this flush's table too.
                let old = st.install_version(version);
                st.imms.pop_front();
                st.install_super_version();
                if matches!(
                    st.bg_error,
                    Some(Error::NoSpace { .. }) | Some(Error::Io { .. })
                ) {
                    st.bg_error = None;
                }
                drop(st);
                drop(old);
                if self.options.wal && imm.wal_number() != 0 {
                    let _ = fs::remove_file(wal_file_name(&self.dir, imm.wal_number()));
                }
                self.bg_cv.notify_all();
                Ok(true)
            }
            Err(e) => {
                drop(st);
                Err(e)
            }
        }
    }

    /// Flushes every immutable memtable, on this thread.
    pub(super) fn flush_all_pending(&self) -> Result<()> {
        loop {
            match self.flush_one() {
                Ok(true) => continue,
                Ok(false) => return Ok(()),
                Err(e) => {
                    self.set_bg_error(e.clone());
                    return Err(e);
                }
            }
        }
    }

    pub(super) fn flush_loop(&self) {
        let mut backoff = Duration::from_millis(10);
        loop {
            {
                let mut st = self.state.lock();
                while st.imms.is_empty() && !self.shutting_down.load(Ordering::Acquire) {
                    self.bg_cv.wait_for(&mut st, Duration::from_millis(200));
                }
            }
            if self.shutting_down.load(Ordering::Acquire) {
                return;
            }
            match self.flush_one() {
                Ok(_) => backoff = Duration::from_millis(10),
                Err(e) => {
                    tracing::error!(error = %e, "memtable flush failed; retrying");
                    self.set_bg_error(e);
                    self.sleep_unless_shutdown(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}
