//! The write path: group commit and memtable rotation.
//!
//! Writers queue up; the writer at the head of the queue becomes the *leader* and commits a
//! group of queued batches: it makes room (rotating the memtable, or stalling when flushes or
//! L0 fall behind), assigns consecutive sequence numbers, appends the group's logged batches
//! to the WAL with one write and — if any writer asked for it — one fsync, inserts every
//! entry into the memtable, and only then publishes the new last sequence number, so readers
//! see whole batches. Followers wait and return the leader's result.
//!
//! A batch written with `disable_wal` takes its sequence numbers in the same order but skips
//! the WAL append: it lives only in the memtable until a flush. The WAL therefore holds the
//! logged batches with gaps in their sequence numbers, and recovery, which replays them with
//! their own numbers and starts after the largest number it saw or the manifest recorded,
//! never reuses a number a surviving entry has.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::lsm::batch::{BatchOp, DecodedBatch, WriteBatch};
use crate::lsm::error::{Error, Result};
use crate::lsm::key::{engine_key, SeqNo, ValueKind};
use crate::lsm::log::LogWriter;
use crate::lsm::memtable::Memtable;
use crate::lsm::range_del::RangeTombstone;
use crate::lsm::stats::Counters;
use crate::lsm::version::{sync_dir, wal_file_name};

use super::Inner;

/// Most bytes one group commit gathers.
const MAX_GROUP_BYTES: usize = 1 << 20;

/// A writer waiting in the group-commit queue.
#[derive(Debug)]
pub(super) struct Writer {
    batch: Mutex<Option<WriteBatch>>,
    sync: bool,
    /// Append the batch to the WAL (false: `WriteOptions::disable_wal`).
    logged: bool,
    /// Rotate the memtable instead of writing (used by `flush`).
    rotate: bool,
    done: Mutex<Option<Result<SeqNo>>>,
}

/// Inserts one batch operation into a memtable.
fn apply_op(mem: &Memtable, op: std::result::Result<BatchOp<'_>, ()>, seq: SeqNo) {
    match op {
        Ok(BatchOp::Put { cf, key, value }) => mem.insert_cf(cf, key, seq, ValueKind::Put, value),
        Ok(BatchOp::Delete { cf, key }) => mem.insert_cf(cf, key, seq, ValueKind::Delete, &[]),
        Ok(BatchOp::DeleteRange { cf, start, end }) => mem.add_range_del(RangeTombstone {
            start: engine_key(cf, start),
            end: engine_key(cf, end),
            seq,
        }),
        // The family's keys all sort before the next family's id byte.
        Ok(BatchOp::DeleteFrom { cf, start }) => mem.add_range_del(RangeTombstone {
            start: engine_key(cf, start),
            end: vec![cf.id() + 1],
            seq,
        }),
        // Batches are validated before they are applied (built by `WriteBatch`, or checked by
        // `DecodedBatch::decode` on replay), so this cannot happen.
        Err(()) => {}
    }
}

/// Inserts a decoded WAL batch into a memtable.
pub(super) fn apply_to_memtable(mem: &Memtable, batch: &DecodedBatch<'_>) {
    for (i, op) in batch.ops().enumerate() {
        apply_op(mem, op, batch.first_seq + i as u64);
    }
}

impl Inner {
    /// Commits `batch` (or rotates the memtable) through the group-commit queue.
    ///
    /// A writer that finds the queue empty leads at once and never allocates a waiter; one
    /// that finds it busy queues an [`Writer`] and either receives its result from a leader
    /// or becomes the leader when it reaches the front.
    pub(super) fn commit(
        &self,
        batch: Option<WriteBatch>,
        sync: bool,
        logged: bool,
        rotate: bool,
    ) -> Result<SeqNo> {
        let mut queue = self.queue.lock();
        let (mut batch, me) = if queue.is_empty() {
            queue.push_back(None);
            (batch, None)
        } else {
            let me = Arc::new(Writer {
                batch: Mutex::new(batch),
                sync,
                logged,
                rotate,
                done: Mutex::new(None),
            });
            queue.push_back(Some(Arc::clone(&me)));
            loop {
                if let Some(result) = me.done.lock().take() {
                    return result;
                }
                if queue
                    .front()
                    .is_some_and(|w| w.as_ref().is_some_and(|w| Arc::ptr_eq(w, &me)))
                {
                    break;
                }
                self.queue_cv.wait(&mut queue);
            }
            let batch = me.batch.lock().take();
            (batch, Some(me))
        };
        // Leader: gather the batches of the writers queued behind (a rotation goes alone).
        let mut scratch = self.leader_scratch.lock();
        scratch.clear();
        let mut followers = 0;
        let mut group_sync = sync;
        if !rotate {
            let mut bytes = batch.as_ref().map_or(0, WriteBatch::encoded_len);
            if let Some(b) = batch.take() {
                scratch.push((b, logged));
            }
            for w in queue.iter().skip(1).flatten() {
                if w.rotate || bytes >= MAX_GROUP_BYTES {
                    break;
                }
                if let Some(b) = w.batch.lock().take() {
                    bytes += b.encoded_len();
                    scratch.push((b, w.logged));
                }
                group_sync |= w.sync;
                followers += 1;
            }
        }
        drop(queue);

        let result = if rotate {
            self.rotate_memtable(true)
                .map(|_| self.last_seq.load(Ordering::Acquire))
        } else {
            self.commit_group(&mut scratch, group_sync)
        };
        scratch.clear();
        drop(scratch);

        let mut queue = self.queue.lock();
        if let Some(front) = queue.pop_front() {
            debug_assert!(match (&front, &me) {
                (Some(f), Some(m)) => Arc::ptr_eq(f, m),
                (None, None) => true,
                _ => false,
            });
        }
        for _ in 0..followers {
            if let Some(Some(w)) = queue.pop_front() {
                *w.done.lock() = Some(result.clone());
            }
        }
        drop(queue);
        self.queue_cv.notify_all();
        result
    }

    /// Commits a group of `(batch, logged)`: every batch gets its sequence numbers and goes
    /// into the memtable; only the logged ones go to the WAL.
    fn commit_group(&self, batches: &mut [(WriteBatch, bool)], sync: bool) -> Result<SeqNo> {
        let total: usize = batches.iter().map(|(b, _)| b.encoded_len()).sum();
        let mem = self.make_room_for_write(total)?;
        let first = self.last_seq.load(Ordering::Acquire) + 1;
        let mut next = first;
        for (b, _) in batches.iter_mut() {
            b.encode_with_seq(next);
            next += b.len() as u64;
        }
        let last = next - 1;
        let any_logged = batches.iter().any(|(_, logged)| *logged);
        if self.options.wal && any_logged {
            let mut wal = self.wal.lock();
            let Some(log) = wal.as_mut() else {
                return Err(Error::Closed);
            };
            fail::fail_point!("lsm::wal::before_append");
            let logged = || batches.iter().filter(|(_, l)| *l).map(|(b, _)| b);
            log.append(logged().map(WriteBatch::encoded))?;
            let bytes: usize = logged()
                .map(|b| b.encoded_len() + crate::lsm::log::HEADER_LEN)
                .sum();
            Counters::add(&self.counters.wal_bytes_written, bytes as u64);
            if sync {
                if let Err(e) = sync_wal(log, "lsm::wal::sync") {
                    // The group may or may not be durable: refuse further writes (until the
                    // engine is reopened) rather than risk acknowledging a later write whose
                    // predecessor vanishes.
                    self.set_bg_error(Error::Background(format!("WAL sync failed: {e}")));
                    return Err(e);
                }
                Counters::add(&self.counters.wal_syncs, 1);
            }
        }
        let mut seq = first;
        for (b, _) in batches.iter() {
            for op in b.ops() {
                apply_op(&mem, op, seq);
                seq += 1;
            }
        }
        for (b, _) in batches.iter() {
            Counters::add(&self.counters.user_bytes_written, b.user_bytes());
        }
        Counters::add(&self.counters.batches_written, batches.len() as u64);
        Counters::add(&self.counters.write_groups, 1);
        self.last_seq.store(last, Ordering::Release);
        Ok(last)
    }

    /// Returns the memtable to write into, rotating it or stalling as needed. Only the write
    /// leader calls this.
    fn make_room_for_write(&self, bytes: usize) -> Result<Arc<Memtable>> {
        let mut slowed = false;
        let mut stall_start: Option<Instant> = None;
        let result = loop {
            let mut st = self.state.lock();
            if let Some(e) = &st.bg_error {
                break Err(Error::Background(e.to_string()));
            }
            self.check_open()?;
            let l0 = st.version.levels[0].len();
            let o = &self.options;
            if o.background_work && !slowed && l0 >= o.level0_slowdown_trigger {
                // Slow down a little per write before L0 reaches the hard stop.
                drop(st);
                Counters::add(&self.counters.write_stalls, 1);
                std::thread::sleep(Duration::from_millis(1));
                Counters::add(&self.counters.write_stall_micros, 1000);
                slowed = true;
                continue;
            }
            if st.mem.approximate_size() + bytes <= o.memtable_size || st.mem.is_empty() {
                break Ok(Arc::clone(&st.mem));
            }
            let must_wait = st.imms.len() >= o.max_immutable_memtables.max(1)
                || (o.background_work && l0 >= o.level0_stop_trigger);
            if must_wait {
                if !o.background_work {
                    drop(st);
                    self.flush_all_pending()?;
                    continue;
                }
                if stall_start.is_none() {
                    Counters::add(&self.counters.write_stalls, 1);
                    stall_start = Some(Instant::now());
                }
                self.bg_cv.wait_for(&mut st, Duration::from_millis(100));
                continue;
            }
            drop(st);
            self.rotate_memtable(false)?;
        };
        if let Some(t) = stall_start {
            Counters::add(
                &self.counters.write_stall_micros,
                t.elapsed().as_micros() as u64,
            );
        }
        result
    }

    /// Freezes the active memtable and starts a new one (with a new WAL). Only the write
    /// leader calls this.
    pub(super) fn rotate_memtable(&self, wait_for_room: bool) -> Result<()> {
        if wait_for_room {
            // `flush` rotates even a small memtable, but must respect the immutable limit.
            loop {
                let mut st = self.state.lock();
                if st.mem.is_empty() {
                    return Ok(());
                }
                if st.imms.len() < self.options.max_immutable_memtables.max(1) {
                    break;
                }
                if !self.options.background_work {
                    drop(st);
                    self.flush_all_pending()?;
                    continue;
                }
                if let Some(e) = &st.bg_error {
                    return Err(Error::Background(e.to_string()));
                }
                self.bg_cv.wait_for(&mut st, Duration::from_millis(100));
            }
        }
        let wal_number = if self.options.wal {
            let number = self.versions.lock().new_file_number();
            let path = wal_file_name(&self.dir, number);
            let writer = LogWriter::create(&path)?;
            // Synced writes will be acknowledged from the new WAL: its name must be durable
            // before the first of them. Nothing depends on it yet, so a failure is not fatal.
            if let Err(e) = sync_dir(&self.dir) {
                drop(writer);
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
            let mut wal = self.wal.lock();
            if let Some(old) = wal.as_mut() {
                // The old WAL stays until its memtable is flushed; make its tail durable so
                // that recovery never finds a gap before the new file. A failure leaves that
                // tail's durability unknown, exactly like a failed group-commit fsync: refuse
                // every later write until reopen, or a later synced write could be
                // acknowledged and survive a crash that loses this tail before it.
                if let Err(e) = sync_wal(old, "lsm::wal::rotate_sync") {
                    drop(wal);
                    drop(writer);
                    let _ = std::fs::remove_file(&path);
                    self.set_bg_error(Error::Background(format!(
                        "WAL sync failed at memtable rotation: {e}"
                    )));
                    return Err(e);
                }
            }
            *wal = Some(writer);
            number
        } else {
            0
        };
        let mut st = self.state.lock();
        let old = std::mem::replace(&mut st.mem, Arc::new(Memtable::new(wal_number)));
        st.imms.push_back(old);
        st.install_super_version();
        drop(st);
        self.bg_cv.notify_all();
        Ok(())
    }
}

/// Fsyncs a WAL; the failpoint `point` can fail it (after a group commit's append, or when
/// the memtable rotates).
// `point` is unused when failpoints are compiled out.
#[cfg_attr(not(feature = "failpoints"), allow(unused_variables))]
fn sync_wal(wal: &mut LogWriter, point: &str) -> Result<()> {
    fail::fail_point!(point, |_| Err(Error::io(
        "syncing the WAL",
        std::io::Error::other("injected WAL sync failure"),
    )));
    wal.sync()
}
