//! Waiting for a future on a synchronous thread, without handing it to another thread.
//!
//! The transaction layer is synchronous and runs on tokio's blocking pool; what it waits for
//! is a future: the Raft driver's answer on a one-shot channel, a gRPC call to another
//! node's shard service. Spawning that future on the runtime and waiting for its result on
//! a channel costs two more thread wake-ups per wait (a runtime worker that polls the
//! future, then the waiting thread woken by the worker), and on a small machine the
//! context switches of such hand-offs were the largest item of a put's CPU profile
//! (`docs/architecture/raft.md`, "Where the time goes"). [`block_on`] polls the future on
//! the waiting thread itself, with a waker that unparks that thread: whoever completes the
//! future (the driver thread sending its reply, the runtime's I/O driver delivering a
//! response) wakes the waiter directly.
//!
//! ```text
//!   before:  caller ──spawn──▶ worker ──▶ driver ──oneshot──▶ worker ──channel──▶ caller
//!   now:     caller ─────────────────────▶ driver ──oneshot──────────────────────▶ caller
//! ```
//!
//! A future that needs a runtime's context (tokio timers, tonic channels) is polled with
//! that runtime entered by the caller (`Handle::enter`): its I/O and timers are still driven
//! by the runtime's own threads, so the caller must not be one of them (the rule was the
//! same before: never call the synchronous layer from an async task).

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// Unparks the waiting thread, remembering that it was woken (parking may end spuriously).
struct Unpark {
    thread: Thread,
    woken: AtomicBool,
}

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

/// Polls `fut` on this thread until it completes, parking the thread in between. Every
/// `interval` without an answer, `on_idle` is asked and may end the wait with its own value
/// (a deadline passed, the caller stopped caring); the future is then dropped.
pub fn block_on<F: Future>(
    fut: F,
    interval: Duration,
    mut on_idle: impl FnMut() -> Option<F::Output>,
) -> F::Output {
    let unpark = Arc::new(Unpark {
        thread: std::thread::current(),
        woken: AtomicBool::new(true),
    });
    let waker = Waker::from(Arc::clone(&unpark));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    let mut idle_at = Instant::now() + interval;
    loop {
        if unpark.woken.swap(false, Ordering::AcqRel) {
            if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                return v;
            }
        }
        let now = Instant::now();
        if now >= idle_at {
            if let Some(v) = on_idle() {
                return v;
            }
            idle_at = now + interval;
        } else if !unpark.woken.load(Ordering::Acquire) {
            // A wake between the poll and here leaves the thread's token set: this returns
            // at once.
            std::thread::park_timeout(idle_at - now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_future_completed_by_another_thread_wakes_the_waiter() {
        let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            let _ = tx.send(7);
        });
        let mut idles = 0;
        // A long interval: only the sender's wake can end the wait in time.
        let started = Instant::now();
        let got = block_on(
            async move { rx.await.ok() },
            Duration::from_secs(30),
            || {
                idles += 1;
                Some(None)
            },
        );
        assert_eq!(got, Some(7));
        assert_eq!(idles, 0);
        assert!(started.elapsed() < Duration::from_secs(10));
        sender.join().ok();
    }

    #[test]
    fn on_idle_ends_a_wait_that_gets_no_answer() {
        let (_tx, rx) = tokio::sync::oneshot::channel::<u32>();
        let mut idles = 0;
        let got = block_on(
            async move { rx.await.ok() },
            Duration::from_millis(5),
            || {
                idles += 1;
                (idles == 3).then_some(None)
            },
        );
        assert_eq!(got, None);
        assert_eq!(idles, 3);
    }

    #[test]
    fn a_ready_future_is_answered_without_parking() {
        let got = block_on(async { 5 }, Duration::from_secs(30), || Some(0));
        assert_eq!(got, 5);
    }
}
