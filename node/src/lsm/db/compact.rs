//! Compaction scheduling, running and installing, and manual compaction.
//!
//! One background thread runs the compactions [`compaction::pick`] chooses, one at a time
//! under `compaction_lock`; [`Db::compact_range`](super::Db::compact_range) takes the same
//! lock and pushes a key range down to the last level. The picker and the merge itself live
//! in [`compaction`]; this file turns tasks into version edits and installs them.

use std::collections::BTreeMap;
use std::fs;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::lsm::compaction::{
    self, file_meta, write_run, CompactionTask, GcContext, GcDecider, MergeTask,
};
use crate::lsm::db_iter::LevelIterator;
use crate::lsm::error::Result;
use crate::lsm::iterator::{InternalIterator, MergingIterator};
use crate::lsm::options::CompactionStyle;
use crate::lsm::stats::Counters;
use crate::lsm::table::table_file_name;
use crate::lsm::version::{sync_dir, FileMeta, VersionEdit};

use super::{Inner, MAX_BACKOFF};

impl Inner {
    pub(super) fn compaction_loop(&self) {
        let mut backoff = Duration::from_millis(10);
        loop {
            if self.shutting_down.load(Ordering::Acquire) {
                return;
            }
            let task = {
                let _guard = self.compaction_lock.lock();
                let version = self.state.lock().version.clone();
                let task = compaction::pick(&version, &self.options, &self.snapshot_list());
                // Holding this version would keep the task's inputs from being purged.
                drop(version);
                match task {
                    Some(task) => {
                        fail::fail_point!("lsm::compact::before_run");
                        self.state.lock().compacting = true;
                        let r = self.run_compaction(task);
                        self.state.lock().compacting = false;
                        self.bg_cv.notify_all();
                        Some(r)
                    }
                    None => None,
                }
            };
            match task {
                None => {
                    // Idle: files replaced while a reader held them can go now.
                    self.purge_obsolete();
                    let mut st = self.state.lock();
                    if !self.shutting_down.load(Ordering::Acquire) {
                        self.bg_cv.wait_for(&mut st, Duration::from_millis(200));
                    }
                }
                Some(Ok(())) => {
                    backoff = Duration::from_millis(10);
                    self.state.lock().compaction_error = None;
                }
                Some(Err(e)) => {
                    Counters::add(&self.counters.background_errors, 1);
                    self.state.lock().compaction_error = Some(e.clone());
                    self.bg_cv.notify_all();
                    tracing::error!(error = %e, "compaction failed; retrying");
                    self.sleep_unless_shutdown(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Runs one task and installs its result. The caller holds `compaction_lock`.
    fn run_compaction(&self, task: CompactionTask) -> Result<()> {
        self.check_manifest()?;
        let edit = match task {
            CompactionTask::Drop { files, tombstones } => {
                Counters::add(&self.counters.files_dropped, files.len() as u64);
                VersionEdit {
                    deleted_files: files.iter().map(|(l, f)| (*l, f.id)).collect(),
                    deleted_range_dels: tombstones,
                    ..VersionEdit::default()
                }
            }
            CompactionTask::Move { from_level, file } => {
                Counters::add(&self.counters.trivial_moves, 1);
                VersionEdit {
                    deleted_files: vec![(from_level, file.id)],
                    new_files: vec![(from_level + 1, (*file).clone())],
                    ..VersionEdit::default()
                }
            }
            CompactionTask::Merge(task) => self.merge(&task)?,
        };
        let applied = {
            let mut versions = self.versions.lock();
            match versions.log_and_apply(edit.clone()) {
                Ok(applied) => applied,
                Err(e) => {
                    // A trivial move re-adds a file the version already holds: never garbage.
                    let new_files: Vec<u64> = edit
                        .new_files
                        .iter()
                        .map(|(_, f)| f.id)
                        .filter(|id| !edit.deleted_files.iter().any(|(_, d)| d == id))
                        .collect();
                    self.edit_failed(&versions, &new_files);
                    return Err(e);
                }
            }
        };
        fail::fail_point!("lsm::compact::before_install");
        let mut st = self.state.lock();
        // A flush that logged after this compaction may have installed already: its version
        // holds this compaction's result too, and stays.
        let old = st.install_version(applied.version);
        // The files the edit removed leave every version from here on, installed or not.
        st.obsolete.extend(applied.removed);
        st.install_super_version();
        drop(st);
        drop(old);
        self.bg_cv.notify_all();
        self.purge_obsolete();
        Ok(())
    }

    fn merge(&self, task: &MergeTask) -> Result<VersionEdit> {
        // L0 files overlap: one iterator each. A deeper level's inputs are disjoint: one
        // concatenating iterator per level.
        let mut children: Vec<Box<dyn InternalIterator>> = Vec::new();
        let mut by_level: BTreeMap<usize, Vec<Arc<FileMeta>>> = BTreeMap::new();
        for (level, f) in &task.inputs {
            if *level == 0 {
                let table = self.table_cache.get(f.id, f.size)?;
                children.push(Box::new(table.iter(false)));
            } else {
                by_level.entry(*level).or_default().push(Arc::clone(f));
            }
        }
        for (_, mut files) in by_level {
            files.sort_by(|a, b| crate::lsm::key::compare_internal(&a.smallest, &b.smallest));
            children.push(Box::new(LevelIterator::new(
                files,
                Arc::clone(&self.table_cache),
                false,
            )));
        }
        let mut iter = MergingIterator::new(children);
        let tombstones = self.state.lock().version.range_dels.clone();
        let mut ctx = GcContext::new(self.snapshot_list(), &tombstones, task.bottommost);
        ctx.filter = self.options.compaction_filter.clone();
        let mut decider = GcDecider::new(ctx);
        let mut new_file = || {
            let id = self.versions.lock().new_file_number();
            (id, table_file_name(&self.dir, id))
        };
        let bytes_in: u64 = task.inputs.iter().map(|(_, f)| f.size).sum();
        let outputs = write_run(
            &mut iter,
            &mut decider,
            &self.table_options,
            task.target_file_size,
            &mut new_file,
        )?;
        if !outputs.is_empty() {
            // The edit names the outputs; their names must survive a crash first.
            if let Err(e) = sync_dir(&self.dir) {
                for (id, _) in &outputs {
                    let _ = fs::remove_file(table_file_name(&self.dir, *id));
                }
                return Err(e);
            }
        }
        let bytes_out: u64 = outputs.iter().map(|(_, s)| s.file_size).sum();
        Counters::add(&self.counters.compaction_bytes_read, bytes_in);
        Counters::add(&self.counters.compaction_bytes_written, bytes_out);
        Counters::add(&self.counters.compactions, 1);
        tracing::debug!(reason = %task.reason, inputs = task.inputs.len(), outputs = outputs.len(), bytes_in, bytes_out, "compaction");
        Ok(VersionEdit {
            deleted_files: task.inputs.iter().map(|(l, f)| (*l, f.id)).collect(),
            new_files: outputs
                .iter()
                .map(|(id, s)| (task.output_level, file_meta(*id, s)))
                .collect(),
            ..VersionEdit::default()
        })
    }

    /// Deletes files and retires tombstones that range deletions made removable.
    fn drop_covered_files(&self) -> Result<()> {
        let version = self.state.lock().version.clone();
        if let Some(task @ CompactionTask::Drop { .. }) =
            compaction::pick(&version, &self.options, &self.snapshot_list())
        {
            self.run_compaction(task)?;
        }
        Ok(())
    }

    pub(super) fn compact_range(&self, lo: &[u8], hi: &[u8]) -> Result<()> {
        let _guard = self.compaction_lock.lock();
        // Whole files under range tombstones go first, without being rewritten.
        self.drop_covered_files()?;
        let mut touched_bottom = false;
        let num_levels = self.options.num_levels;
        let levels: Vec<usize> = match self.options.compaction_style {
            CompactionStyle::Leveled => (0..num_levels - 1).collect(),
            CompactionStyle::SizeTiered => vec![0],
        };
        for level in levels {
            let version = self.state.lock().version.clone();
            let deepest = version.deepest_nonempty_level();
            let task = match self.options.compaction_style {
                CompactionStyle::SizeTiered => {
                    if version.levels[0].is_empty() {
                        break;
                    }
                    touched_bottom = true;
                    MergeTask {
                        inputs: version.levels[0]
                            .iter()
                            .map(|f| (0, Arc::clone(f)))
                            .collect(),
                        output_level: 0,
                        bottommost: true,
                        target_file_size: u64::MAX,
                        reason: "manual compaction".into(),
                    }
                }
                CompactionStyle::Leveled => {
                    if level > deepest {
                        break;
                    }
                    let mut inputs: Vec<(usize, Arc<FileMeta>)> = if level == 0 {
                        version.levels[0]
                            .iter()
                            .map(|f| (0, Arc::clone(f)))
                            .collect()
                    } else {
                        version
                            .overlapping(level, Some(lo), Some(hi))
                            .into_iter()
                            .map(|f| (level, f))
                            .collect()
                    };
                    if inputs.is_empty() {
                        continue;
                    }
                    let (min, max) = compaction::key_range(&inputs);
                    inputs.extend(
                        version
                            .overlapping(level + 1, Some(&min), Some(&max))
                            .into_iter()
                            .map(|f| (level + 1, f)),
                    );
                    // The next level's files may reach past this level's inputs, and their
                    // tombstones too may hide older versions deeper down: the merge is
                    // bottommost only if nothing below overlaps the whole input.
                    let (min, max) = compaction::key_range(&inputs);
                    let bottommost = compaction::is_bottommost(&version, level + 1, &min, &max);
                    touched_bottom |= bottommost;
                    MergeTask {
                        inputs,
                        output_level: level + 1,
                        bottommost,
                        target_file_size: self.options.target_file_size,
                        reason: "manual compaction".into(),
                    }
                }
            };
            self.state.lock().compacting = true;
            let r = self.run_compaction(CompactionTask::Merge(task));
            self.state.lock().compacting = false;
            r?;
        }
        if !touched_bottom && self.options.compaction_style == CompactionStyle::Leveled {
            // Everything already sat in the last level: rewrite it in place so tombstones
            // and the compaction filter take effect.
            let version = self.state.lock().version.clone();
            let last = version.deepest_nonempty_level();
            let inputs: Vec<_> = version
                .overlapping(last, Some(lo), Some(hi))
                .into_iter()
                .map(|f| (last, f))
                .collect();
            if !inputs.is_empty() {
                let task = MergeTask {
                    inputs,
                    output_level: last,
                    bottommost: true,
                    target_file_size: self.options.target_file_size,
                    reason: "manual compaction of the last level".into(),
                };
                self.run_compaction(CompactionTask::Merge(task))?;
            }
        }
        self.drop_covered_files()?;
        // The versions this loop held kept the inputs of its last compaction from being
        // deleted when it was installed; delete them now rather than at the next compaction.
        self.purge_obsolete();
        self.bg_cv.notify_all();
        Ok(())
    }
}
