//! Recording a history from concurrent clients.
//!
//! Times are nanoseconds since the recorder was made, on [`Instant`] (monotonic, and one
//! clock for every thread). The call time is read before [`HistoryRecorder::invoke`]
//! returns, so before the client sends; the return time is read when the client reports the
//! answer, so after it arrived. Both errors widen the interval, which can only make the
//! check more lenient, never report a violation that did not happen.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

use super::register::{RegisterInput, RegisterOutput};
use super::{ClientId, Completion, ConcurrentHistory, Operation};
use crate::check::history::Key;

/// Tells recorders apart, so that a token only completes an operation of its own recorder.
static NEXT_RECORDER: AtomicU64 = AtomicU64::new(1);

/// An operation in flight, returned by [`HistoryRecorder::invoke`]. Completing it consumes
/// it; one never completed (the client gave up on it) counts as an unknown outcome.
#[derive(Debug)]
#[must_use = "complete the operation with ok, fail or unknown"]
pub struct OpToken {
    recorder: u64,
    index: usize,
}

#[derive(Debug, Clone)]
enum Status<O> {
    Pending,
    Returned { at: u64, output: O },
    Unknown,
    Failed,
}

#[derive(Debug, Clone)]
struct Slot<I, O> {
    client: ClientId,
    key: Key,
    input: I,
    call: u64,
    status: Status<O>,
}

/// Records the operations of concurrent clients into a [`ConcurrentHistory`]. Shared by
/// reference (or in an `Arc`) between the clients' threads or tasks.
#[derive(Debug)]
pub struct HistoryRecorder<I, O> {
    id: u64,
    epoch: Instant,
    slots: Mutex<Vec<Slot<I, O>>>,
}

/// A recorder of register operations.
pub type RegisterRecorder = HistoryRecorder<RegisterInput, RegisterOutput>;

impl<I, O> Default for HistoryRecorder<I, O> {
    fn default() -> Self {
        Self::new()
    }
}

impl<I, O> HistoryRecorder<I, O> {
    /// A recorder whose clock starts now.
    pub fn new() -> Self {
        HistoryRecorder {
            id: NEXT_RECORDER.fetch_add(1, Ordering::Relaxed),
            epoch: Instant::now(),
            slots: Mutex::new(Vec::new()),
        }
    }

    /// Nanoseconds since the recorder was made.
    pub fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Records that `client` is about to send `input` on `key`. Call it before sending.
    pub fn invoke(&self, client: ClientId, key: impl Into<Key>, input: I) -> OpToken {
        let key = key.into();
        let call = self.now();
        let mut slots = self.slots.lock();
        slots.push(Slot {
            client,
            key,
            input,
            call,
            status: Status::Pending,
        });
        OpToken {
            recorder: self.id,
            index: slots.len() - 1,
        }
    }

    /// Records the answer of an operation. Call it after the answer arrived.
    pub fn ok(&self, token: OpToken, output: O) {
        let at = self.now();
        self.complete(token, Status::Returned { at, output });
    }

    /// Records that an operation certainly did not take effect (e.g. refused before the
    /// request was sent); it is left out of the history.
    pub fn fail(&self, token: OpToken) {
        self.complete(token, Status::Failed);
    }

    /// Records that an operation's outcome is unknown (timeout, connection lost, an
    /// "outcome unknown" error): it may take effect at any point after its call, or never.
    pub fn unknown(&self, token: OpToken) {
        self.complete(token, Status::Unknown);
    }

    fn complete(&self, token: OpToken, status: Status<O>) {
        debug_assert_eq!(token.recorder, self.id, "a token of another recorder");
        if token.recorder != self.id {
            return;
        }
        if let Some(slot) = self.slots.lock().get_mut(token.index) {
            slot.status = status;
        }
    }

    /// The history recorded so far, consuming the recorder. Operations still pending have
    /// unknown outcomes; failed ones are left out.
    pub fn into_history(self) -> ConcurrentHistory<I, O> {
        let ops = self.slots.into_inner().into_iter().filter_map(operation);
        ConcurrentHistory { ops: ops.collect() }
    }
}

impl<I: Clone, O: Clone> HistoryRecorder<I, O> {
    /// A copy of the history recorded so far (as [`HistoryRecorder::into_history`]), for
    /// checking while clients are still running.
    pub fn history(&self) -> ConcurrentHistory<I, O> {
        let slots = self.slots.lock().clone();
        let ops = slots.into_iter().filter_map(operation);
        ConcurrentHistory { ops: ops.collect() }
    }
}

fn operation<I, O>(slot: Slot<I, O>) -> Option<Operation<I, O>> {
    let completion = match slot.status {
        Status::Failed => return None,
        Status::Pending | Status::Unknown => Completion::Unknown,
        Status::Returned { at, output } => Completion::Returned { at, output },
    };
    Some(Operation {
        client: slot.client,
        key: slot.key,
        input: slot.input,
        call: slot.call,
        completion,
    })
}
