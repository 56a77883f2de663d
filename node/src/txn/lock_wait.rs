//! Lock waits: a writer blocked by another transaction's lock sleeps in a queue for that
//! key and is woken when the lock is released, instead of polling.
//!
//! ```text
//!   prewrite meets T's lock on k ──► enqueue on k ──► ask T's primary ──► T alive: sleep
//!                                                                         │
//!   T commits / rolls back / is resolved: k's lock removed ──► wake k's head waiter
//!                                                                         │
//!   head retries ─┬─ takes k (prewrite succeeds): keep(), the rest sleep on until it
//!                 │  releases k in turn
//!                 ├─ meets a lock on k again (another writer came first): back to the
//!                 │  FRONT, keeping its turn
//!                 └─ anything else (conflict, gave up, blocked elsewhere): dropped, and
//!                    the turn passes to the next waiter
//! ```
//!
//! One queue per key, first come first served: the waiter that has waited longest gets the
//! key next, where backoff polling let whoever happened to poll first win (and made long
//! waiters poll least often). This is the waiter manager of TiKV's lock manager, without
//! deadlock detection (a waiter gives up at its deadline).
//!
//! **No lost wake-up.** A waiter enqueues *before* it asks the lock's primary whether its
//! owner is still alive. The owner removes its primary's lock before any other (commit and
//! rollback both decide at the primary first), so if the primary still showed the owner
//! alive after we enqueued, every release of the owner's locks comes after our enqueue and
//! wakes us. Releases are reported by [`super::Storage`] after the batch that removed the
//! lock is written, for exactly the keys whose locks the batch deleted.
//!
//! **Two ways to sleep.** A [`Waiter`] can be awaited (an async future that holds no
//! thread: this is what the server uses, so any number of blocked requests cost no blocking
//! threads) or waited on by a thread (the synchronous API). Either way the sleep ends at a
//! deadline the caller chooses.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};
use tokio::sync::Notify;

/// The waiters of each key, oldest first.
type Queues = HashMap<Vec<u8>, VecDeque<Arc<Slot>>>;

/// Per-key queues of waiters.
#[derive(Debug, Clone, Default)]
pub struct LockWaits {
    queues: Arc<Mutex<Queues>>,
}

/// One sleeper's wake-up flag, observable by a thread or a task.
#[derive(Debug, Default)]
struct Slot {
    woken: Mutex<bool>,
    cv: Condvar,
    notify: Notify,
}

impl Slot {
    fn wake(&self) {
        *self.woken.lock() = true;
        self.cv.notify_all();
        // Stores a permit if the task is not polling yet: the wake-up is not lost.
        self.notify.notify_one();
    }
}

/// A place in a key's queue. Dropping it leaves the queue; if it had been woken (it held
/// the turn) and did not [`keep`](Waiter::keep) the key, the turn passes to the next
/// waiter.
#[derive(Debug)]
pub struct Waiter {
    waits: LockWaits,
    key: Vec<u8>,
    slot: Arc<Slot>,
    /// Set once the waiter has nothing left to do on drop.
    settled: bool,
}

impl LockWaits {
    /// An empty table.
    pub fn new() -> LockWaits {
        LockWaits::default()
    }

    /// Joins the back of `key`'s queue.
    pub fn enqueue(&self, key: &[u8]) -> Waiter {
        self.join(key, false)
    }

    fn join(&self, key: &[u8], front: bool) -> Waiter {
        let slot = Arc::new(Slot::default());
        let mut queues = self.queues.lock();
        let queue = queues.entry(key.to_vec()).or_default();
        if front {
            queue.push_front(Arc::clone(&slot));
        } else {
            queue.push_back(Arc::clone(&slot));
        }
        Waiter {
            waits: self.clone(),
            key: key.to_vec(),
            slot,
            settled: false,
        }
    }

    /// A place in `key`'s queue for a caller that may already hold one (`prev`): the same
    /// key keeps its place, or goes back to the front if it had been woken (it was first);
    /// another key's place (or a place in another table) is given up and `key`'s queue
    /// joined at the back.
    pub fn requeue(&self, prev: Option<Waiter>, key: &[u8]) -> Waiter {
        match prev {
            Some(w) if w.key == key && Arc::ptr_eq(&w.waits.queues, &self.queues) => {
                if w.is_queued() {
                    w
                } else {
                    let mut w = w;
                    w.settled = true;
                    self.join(key, true)
                }
            }
            other => {
                drop(other);
                self.enqueue(key)
            }
        }
    }

    /// The lock on `key` was released: wakes the waiter at the front of its queue.
    pub fn release(&self, key: &[u8]) {
        let slot = {
            let mut queues = self.queues.lock();
            let Some(queue) = queues.get_mut(key) else {
                return;
            };
            let slot = queue.pop_front();
            if queue.is_empty() {
                queues.remove(key);
            }
            slot
        };
        if let Some(slot) = slot {
            slot.wake();
        }
    }

    /// Wakes every waiter of `key` (for waits that do not exclude each other).
    pub fn release_all(&self, key: &[u8]) {
        let slots = self.queues.lock().remove(key).unwrap_or_default();
        for slot in slots {
            slot.wake();
        }
    }

    /// How many waiters sleep on `key`.
    pub fn waiting(&self, key: &[u8]) -> usize {
        self.queues.lock().get(key).map_or(0, VecDeque::len)
    }

    /// How many waiters sleep on any key.
    pub fn total_waiting(&self) -> usize {
        self.queues.lock().values().map(VecDeque::len).sum()
    }
}

impl Waiter {
    /// The key waited for.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// Whether the waiter is still in its queue (not yet woken).
    fn is_queued(&self) -> bool {
        self.waits
            .queues
            .lock()
            .get(&self.key)
            .is_some_and(|q| q.iter().any(|s| Arc::ptr_eq(s, &self.slot)))
    }

    /// Whether the waiter has been woken.
    pub fn is_woken(&self) -> bool {
        *self.slot.woken.lock()
    }

    /// Sleeps until woken or until `deadline`, holding no thread; returns whether it was
    /// woken.
    pub async fn wait(&self, deadline: Instant) -> bool {
        let notified = self.slot.notify.notified();
        if self.is_woken() {
            return true;
        }
        tokio::time::timeout_at(deadline.into(), notified)
            .await
            .is_ok()
    }

    /// Blocks the calling thread until woken or until `deadline`; returns whether it was
    /// woken.
    pub fn wait_blocking(&self, deadline: Instant) -> bool {
        let mut woken = self.slot.woken.lock();
        while !*woken {
            if self.slot.cv.wait_until(&mut woken, deadline).timed_out() {
                return *woken;
            }
        }
        true
    }

    /// The caller now holds the key (its prewrite locked it): leave the queue without
    /// passing the turn on. The next waiter is woken when the caller's lock is released.
    pub fn keep(mut self) {
        self.leave_queue();
        self.settled = true;
    }

    /// Removes the waiter from its queue; returns whether it was still there.
    fn leave_queue(&self) -> bool {
        let mut queues = self.waits.queues.lock();
        let Some(queue) = queues.get_mut(&self.key) else {
            return false;
        };
        let before = queue.len();
        queue.retain(|s| !Arc::ptr_eq(s, &self.slot));
        let removed = queue.len() < before;
        if queue.is_empty() {
            queues.remove(&self.key);
        }
        removed
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        if !self.leave_queue() {
            // Woken, and leaving without the key: whoever is next may go.
            self.waits.release(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    #[test]
    fn a_release_wakes_waiters_one_at_a_time_in_arrival_order() {
        let waits = LockWaits::new();
        let w1 = waits.enqueue(b"k");
        let w2 = waits.enqueue(b"k");
        let w3 = waits.enqueue(b"k");
        let other = waits.enqueue(b"other");
        assert_eq!(waits.waiting(b"k"), 3);

        waits.release(b"k");
        assert!(w1.is_woken() && !w2.is_woken() && !w3.is_woken());
        assert!(w1.wait_blocking(far()), "already woken: returns at once");
        // w1 takes the key: nobody else is woken until it releases it.
        w1.keep();
        assert!(!w2.is_woken());
        waits.release(b"k");
        assert!(w2.is_woken() && !w3.is_woken());
        // w2 gives up without the key: the turn passes on to w3.
        drop(w2);
        assert!(w3.is_woken());
        assert!(!other.is_woken(), "other keys are not disturbed");
        drop(w3);
        assert_eq!(waits.waiting(b"k"), 0);
        assert_eq!(waits.total_waiting(), 1);
        drop(other);
        assert_eq!(waits.total_waiting(), 0, "queues leave nothing behind");
    }

    #[test]
    fn a_woken_waiter_that_must_wait_again_goes_back_to_the_front() {
        let waits = LockWaits::new();
        let w1 = waits.enqueue(b"k");
        let w2 = waits.enqueue(b"k");
        waits.release(b"k");
        assert!(w1.is_woken());
        // Someone else locked k first: w1 waits again, ahead of w2.
        let w1 = waits.requeue(Some(w1), b"k");
        assert!(!w1.is_woken());
        assert!(!w2.is_woken(), "requeueing does not pass the turn on");
        waits.release(b"k");
        assert!(w1.is_woken() && !w2.is_woken());
        // A waiter still queued keeps its place when requeued on the same key...
        let w2 = waits.requeue(Some(w2), b"k");
        assert_eq!(waits.waiting(b"k"), 1);
        // ...and gives it up when it now waits on another key.
        let w2 = waits.requeue(Some(w2), b"j");
        assert_eq!(waits.waiting(b"k"), 0);
        assert_eq!(waits.waiting(b"j"), 1);
        drop((w1, w2));
        assert_eq!(waits.total_waiting(), 0);
    }

    #[test]
    fn a_waiter_that_times_out_leaves_its_queue() {
        let waits = LockWaits::new();
        let w = waits.enqueue(b"k");
        assert!(!w.wait_blocking(Instant::now() + Duration::from_millis(5)));
        drop(w);
        assert_eq!(waits.waiting(b"k"), 0);
        // A release with nobody waiting is a no-op.
        waits.release(b"k");
    }

    #[test]
    fn release_all_wakes_everyone() {
        let waits = LockWaits::new();
        let ws: Vec<Waiter> = (0..3).map(|_| waits.enqueue(b"r")).collect();
        waits.release_all(b"r");
        assert!(ws.iter().all(Waiter::is_woken));
        drop(ws);
        assert_eq!(waits.total_waiting(), 0);
    }

    #[tokio::test]
    async fn an_async_waiter_is_woken_by_a_release_from_another_thread() {
        let waits = LockWaits::new();
        let w = waits.enqueue(b"k");
        let sleeper = tokio::spawn(async move {
            // The deadline is an hour away: only the release can end this wait.
            w.wait(far()).await
        });
        let releaser = {
            let waits = waits.clone();
            // Whether the task is already asleep or not yet polled, the wake-up counts.
            std::thread::spawn(move || waits.release(b"k"))
        };
        releaser.join().unwrap();
        assert!(sleeper.await.unwrap());
    }

    #[tokio::test]
    async fn an_async_waiter_times_out_at_its_deadline() {
        let waits = LockWaits::new();
        let w = waits.enqueue(b"k");
        assert!(!w.wait(Instant::now() + Duration::from_millis(5)).await);
    }
}
