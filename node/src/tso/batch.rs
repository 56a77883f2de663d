//! [`BatchingTso`]: many concurrent callers, one oracle request.
//!
//! A gateway asks the oracle for a timestamp per transaction start and per commit. With the
//! replicated oracle each request costs a leadership confirmation (a Raft round trip), so
//! concurrent requests are coalesced, as a PD client does: a caller that finds no round in
//! flight runs one for everyone queued so far (itself included): it asks the inner oracle
//! for that many contiguous timestamps in one call and hands each waiter its own. Callers
//! that arrive meanwhile queue for the next round, which one of them runs when the current
//! one ends; no caller serves rounds for others after its own answer. Each caller gets a
//! timestamp at least as fresh as its call: the round that serves it starts after it queued.
//!
//! Each caller sleeps on a condition variable of its own: a round's end wakes the callers
//! it served and the first one queued after it (the next round's runner), no one else
//! (D137; one shared condition variable woke every queued caller at every round's end, and
//! each of those wake-ups is a context switch).
//!
//! ```text
//!   caller A ─► queue [A]      ─► A runs get_timestamps(1) ─► A gets t1
//!   caller B ─► queue [B]    ┐     (a round is in flight)
//!   caller C ─► queue [B, C] ┴──► B runs get_timestamps(2) ─► B gets t2-1, C gets t2
//! ```

use std::sync::Arc;

use parking_lot::{Condvar, Mutex, MutexGuard};

use super::{Timestamp, Tso, TsoError};

/// Largest batch one round asks for.
const MAX_BATCH: usize = 4096;

/// One caller's place: its answer once a round filled it, and what it sleeps on (always
/// with the queue's lock).
#[derive(Debug, Default)]
struct SlotState {
    answer: Mutex<Option<Result<Timestamp, TsoError>>>,
    wake: Condvar,
}

type Slot = Arc<SlotState>;

#[derive(Debug, Default)]
struct Queue {
    waiting: Vec<(u32, Slot)>,
    fetching: bool,
    rounds: u64,
    idle_wakes: u64,
}

/// Coalesces concurrent requests to `inner`; see the module documentation.
#[derive(Debug)]
pub struct BatchingTso<T> {
    inner: T,
    queue: Mutex<Queue>,
}

impl<T: Tso> BatchingTso<T> {
    /// Batches requests to `inner`.
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            queue: Mutex::new(Queue::default()),
        }
    }

    /// The oracle behind the batches.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    /// Requests sent to the inner oracle so far (fewer than calls under concurrency).
    pub fn rounds(&self) -> u64 {
        self.queue.lock().rounds
    }

    /// Wake-ups that neither answered a caller nor let it run a round (tests: none is
    /// expected when nobody else arrives meanwhile).
    pub fn idle_wakes(&self) -> u64 {
        self.queue.lock().idle_wakes
    }

    /// Requests waiting for a round (tests).
    pub fn queued(&self) -> usize {
        self.queue.lock().waiting.len()
    }

    fn request(&self, count: u32) -> Result<Timestamp, TsoError> {
        if count == 0 {
            return Err(TsoError::InvalidArgument(
                "timestamp batch count must be at least 1".to_string(),
            ));
        }
        let slot: Slot = Arc::new(SlotState::default());
        let mut q = self.queue.lock();
        q.waiting.push((count, Arc::clone(&slot)));
        loop {
            if let Some(answer) = slot.answer.lock().take() {
                return answer;
            }
            if q.fetching {
                // Woken by the round that answers it, or to run the next round.
                slot.wake.wait(&mut q);
                if q.fetching && slot.answer.lock().is_none() {
                    q.idle_wakes += 1;
                }
                continue;
            }
            // Nobody fetches: this caller runs one round for everyone queued (its own
            // request among them), then hands the role on.
            q.fetching = true;
            q.rounds += 1;
            let n = q.waiting.len().min(MAX_BATCH);
            let round: Vec<(u32, Slot)> = q.waiting.drain(..n).collect();
            let served: Vec<Slot> = round.iter().map(|(_, s)| Arc::clone(s)).collect();
            MutexGuard::unlocked(&mut q, || self.run_round(round));
            q.fetching = false;
            // Under the queue's lock, which every sleeper checks and waits with: no wake-up
            // is lost. The next runner is the first caller still queued.
            for s in served.iter().filter(|s| !Arc::ptr_eq(s, &slot)) {
                s.wake.notify_one();
            }
            if let Some((_, next)) = q.waiting.first() {
                next.wake.notify_one();
            }
        }
    }

    fn run_round(&self, round: Vec<(u32, Slot)>) {
        let total: u64 = round.iter().map(|(c, _)| u64::from(*c)).sum();
        let result = u32::try_from(total)
            .map_err(|_| TsoError::InvalidArgument(format!("batch of {total} timestamps")))
            .and_then(|total| self.inner.get_timestamps(total));
        // Hand out from the end: the last request gets `last`, the one before it the
        // timestamps just below, and so on (each request's own range is contiguous).
        match result {
            Ok(last) => {
                let mut end = last;
                for (count, slot) in round.into_iter().rev() {
                    *slot.answer.lock() = Some(Ok(end));
                    end = end.saturating_sub(u64::from(count));
                }
            }
            Err(e) => {
                for (_, slot) in round {
                    *slot.answer.lock() = Some(Err(e.clone()));
                }
            }
        }
    }
}

impl<T: Tso> Tso for BatchingTso<T> {
    fn get_timestamp(&self) -> Result<Timestamp, TsoError> {
        self.request(1)
    }

    fn get_timestamps(&self, count: u32) -> Result<Timestamp, TsoError> {
        self.request(count)
    }

    /// Not batched: without a confirmation round it costs the inner oracle no round trip.
    fn get_timestamp_in_term(&self, term: u64) -> Result<Timestamp, TsoError> {
        self.inner.get_timestamp_in_term(term)
    }

    fn try_timestamp_in_term(&self, term: u64) -> Result<Option<Timestamp>, TsoError> {
        self.inner.try_timestamp_in_term(term)
    }
}
