//! Tests of the replicated oracle's window logic over a fake group, and of request batching.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::batch::BatchingTso;
use super::replicated::{ReplicatedTso, TsoGroup};
use super::{compose, physical, ManualClock, Timestamp, Tso, TsoError};

/// One Raft group as the oracle sees it: who leads in which term, and the applied mark.
#[derive(Debug, Default)]
struct Group {
    /// The term this node believes it leads in.
    term: AtomicU64,
    /// The newest term a quorum accepts (a confirmation in an older one fails).
    quorum_term: AtomicU64,
    leading: AtomicBool,
    applied_mark: AtomicU64,
    fail_persist: AtomicBool,
    fail_confirm: AtomicBool,
    persisted: Mutex<Vec<u64>>,
}

impl Group {
    fn leader(term: u64) -> Arc<Group> {
        let g = Group::default();
        g.term.store(term, Ordering::SeqCst);
        g.quorum_term.store(term, Ordering::SeqCst);
        g.leading.store(true, Ordering::SeqCst);
        Arc::new(g)
    }
}

impl TsoGroup for Group {
    fn leader_term(&self) -> Result<u64, TsoError> {
        if self.leading.load(Ordering::SeqCst) {
            Ok(self.term.load(Ordering::SeqCst))
        } else {
            Err(TsoError::NotLeader { leader: None })
        }
    }

    fn applied_mark_ms(&self) -> u64 {
        self.applied_mark.load(Ordering::SeqCst)
    }

    fn persist_mark(&self, mark_ms: u64) -> Result<(), TsoError> {
        if self.fail_persist.load(Ordering::SeqCst) {
            return Err(TsoError::NotLeader { leader: None });
        }
        self.applied_mark.fetch_max(mark_ms, Ordering::SeqCst);
        self.persisted.lock().push(mark_ms);
        Ok(())
    }

    fn confirm_leadership(&self, term: u64) -> Result<(), TsoError> {
        if self.fail_confirm.load(Ordering::SeqCst)
            || self.quorum_term.load(Ordering::SeqCst) != term
        {
            return Err(TsoError::NotLeader { leader: None });
        }
        Ok(())
    }
}

fn oracle(group: &Arc<Group>, clock: &ManualClock) -> ReplicatedTso {
    ReplicatedTso::new(group.clone(), Arc::new(clock.clone()), 3000)
}

#[test]
fn issues_increasing_timestamps_and_persists_a_window_ahead() {
    let clock = ManualClock::new(1_000_000);
    let g = Group::leader(2);
    let tso = oracle(&g, &clock);
    let a = tso.get_timestamp().unwrap();
    let b = tso.get_timestamp().unwrap();
    let last = tso.get_timestamps(10).unwrap();
    assert!(a < b && b + 10 <= last, "{a} {b} {last}");
    assert_eq!(
        *g.persisted.lock(),
        vec![1_003_000],
        "one mark covers the window"
    );
    clock.advance(5000);
    let c = tso.get_timestamp().unwrap();
    assert_eq!(physical(c), 1_005_000);
    assert_eq!(
        tso.persist_count(),
        2,
        "a timestamp past the mark needs a new one"
    );
}

#[test]
fn a_new_term_starts_above_the_applied_mark_even_with_a_slow_clock() {
    let clock = ManualClock::new(1_000_000);
    let g = Group::leader(2);
    // An earlier leader persisted a mark far ahead of this node's clock.
    g.applied_mark.store(2_000_000, Ordering::SeqCst);
    let tso = oracle(&g, &clock);
    let t = tso.get_timestamp().unwrap();
    assert!(
        t >= compose(2_000_000, 0),
        "{t} issued below the old window"
    );
}

#[test]
fn regaining_leadership_skips_what_another_leader_issued_meanwhile() {
    let clock = ManualClock::new(1_000_000);
    let g = Group::leader(2);
    let tso = oracle(&g, &clock);
    let before = tso.get_timestamp().unwrap();
    // Term 3 elsewhere issued up to a later mark; this node leads again in term 4.
    g.applied_mark.store(1_500_000, Ordering::SeqCst);
    g.term.store(4, Ordering::SeqCst);
    g.quorum_term.store(4, Ordering::SeqCst);
    let after = tso.get_timestamp().unwrap();
    assert!(before < after && after >= compose(1_500_000, 0));
}

#[test]
fn nothing_is_issued_when_the_mark_cannot_be_persisted() {
    let clock = ManualClock::new(1_000_000);
    let g = Group::leader(2);
    let tso = oracle(&g, &clock);
    g.fail_persist.store(true, Ordering::SeqCst);
    assert!(matches!(
        tso.get_timestamp(),
        Err(TsoError::NotLeader { .. })
    ));
    g.fail_persist.store(false, Ordering::SeqCst);
    let t = tso.get_timestamp().unwrap();
    assert_eq!(physical(t), 1_000_000);
}

#[test]
fn an_allocation_not_confirmed_is_never_handed_out() {
    let clock = ManualClock::new(1_000_000);
    let g = Group::leader(2);
    let tso = oracle(&g, &clock);
    let first = tso.get_timestamp().unwrap();
    g.fail_confirm.store(true, Ordering::SeqCst);
    assert!(tso.get_timestamp().is_err());
    g.fail_confirm.store(false, Ordering::SeqCst);
    // The thrown-away timestamp is not reissued.
    assert!(tso.get_timestamp().unwrap() > first + 1);
}

#[test]
fn a_follower_issues_nothing() {
    let clock = ManualClock::new(1_000_000);
    let g = Arc::new(Group::default());
    let tso = oracle(&g, &clock);
    assert!(matches!(
        tso.get_timestamp(),
        Err(TsoError::NotLeader { .. })
    ));
    assert!(g.persisted.lock().is_empty());
}

/// Two nodes' oracles over one group model: the old leader, cut off, cannot hand out a
/// timestamp once the new leader has issued any (its confirmation fails), so no timestamp
/// issued later in real time is smaller than one issued before.
#[test]
fn real_time_order_holds_across_a_leader_change() {
    let clock = ManualClock::new(1_000_000);
    let old_group = Group::leader(2);
    let old = oracle(&old_group, &clock);
    let t1 = old.get_timestamp().unwrap();
    // Node B is elected in term 3; it applied the old leader's mark.
    let new_group = Group::leader(3);
    new_group
        .applied_mark
        .store(old_group.applied_mark_ms(), Ordering::SeqCst);
    let new = oracle(&new_group, &clock);
    let t2 = new.get_timestamp().unwrap();
    assert!(t2 > t1);
    // The old leader still believes it leads in term 2, but a quorum has moved to term 3.
    old_group.quorum_term.store(3, Ordering::SeqCst);
    let late = old.get_timestamp();
    assert!(
        late.is_err(),
        "the cut-off leader handed out {late:?} after {t2}"
    );
}

#[test]
fn batching_coalesces_concurrent_requests_into_fewer_rounds() {
    /// An oracle that is slow enough for requests to pile up, counting its calls.
    #[derive(Debug)]
    struct Slow {
        inner: super::LocalTso,
        gate: Mutex<()>,
    }
    impl Tso for Slow {
        fn get_timestamp(&self) -> Result<Timestamp, TsoError> {
            self.get_timestamps(1)
        }
        fn get_timestamps(&self, count: u32) -> Result<Timestamp, TsoError> {
            let _g = self.gate.lock();
            self.inner.get_timestamps(count)
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let slow = Slow {
        inner: super::LocalTso::open(super::LocalTsoOptions::new(dir.path().join("tso"))).unwrap(),
        gate: Mutex::new(()),
    };
    let tso = Arc::new(BatchingTso::new(slow));
    // Hold the inner oracle so that every thread below queues behind the first round.
    let gate = tso.inner().gate.lock();
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let tso = Arc::clone(&tso);
            std::thread::spawn(move || tso.get_timestamps(2).unwrap())
        })
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while tso.queued() < 15 {
        assert!(
            std::time::Instant::now() < deadline,
            "requests did not queue"
        );
        std::thread::yield_now();
    }
    drop(gate);
    let mut got: Vec<Timestamp> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    got.sort_unstable();
    // Every request got its own two timestamps: `last` values at least 2 apart.
    assert!(got.windows(2).all(|w| w[1] >= w[0] + 2), "{got:?}");
    assert!(tso.rounds() <= 3, "{} rounds for 16 requests", tso.rounds());
    // Each round's end woke the callers it served and the next runner, nobody else.
    assert_eq!(tso.idle_wakes(), 0);
}

#[test]
fn batching_passes_errors_to_every_waiter_of_the_round() {
    let clock = ManualClock::new(1_000_000);
    let g = Arc::new(Group::default());
    let tso = BatchingTso::new(oracle(&g, &clock));
    assert!(matches!(
        tso.get_timestamp(),
        Err(TsoError::NotLeader { .. })
    ));
    assert!(tso.get_timestamps(0).is_err());
}

#[test]
fn a_timestamp_in_the_leaders_term_skips_the_confirmation_and_no_other_term_gets_one() {
    let clock = ManualClock::new(1_000_000);
    let g = Group::leader(4);
    let tso = BatchingTso::new(oracle(&g, &clock));
    let start = tso.get_timestamp().unwrap();
    // A confirmation would fail now (a quorum moved on): a commit timestamp for a write that
    // must commit in term 4 is still issued, above everything before, while a start
    // timestamp is not.
    g.fail_confirm.store(true, Ordering::SeqCst);
    let commit = tso.get_timestamp_in_term(4).unwrap();
    assert!(commit > start, "{commit} <= {start}");
    assert!(tso.get_timestamp().is_err());
    // Not for a term this node does not lead in.
    assert!(matches!(
        tso.get_timestamp_in_term(3),
        Err(TsoError::NotLeader { .. })
    ));
    g.fail_confirm.store(false, Ordering::SeqCst);
    g.term.store(5, Ordering::SeqCst);
    g.quorum_term.store(5, Ordering::SeqCst);
    assert!(tso.get_timestamp_in_term(4).is_err());
    // Whatever was issued, in term or not, the next timestamp is above it.
    let next = tso.get_timestamp().unwrap();
    assert!(next > commit, "{next} <= {commit}");
}

#[test]
fn a_timestamp_at_once_is_issued_from_the_window_and_never_persists_or_confirms() {
    let clock = ManualClock::new(1_000_000);
    let g = Group::leader(2);
    let tso = oracle(&g, &clock);
    // No window yet in this term: it would have to persist a mark.
    assert_eq!(tso.try_timestamp_in_term(2), Ok(None));
    assert!(g.persisted.lock().is_empty());
    let a = tso.get_timestamp().unwrap();
    // Confirmation rounds fail from now on: the window is still there to issue from.
    g.fail_confirm.store(true, Ordering::SeqCst);
    let b = tso.try_timestamp_in_term(2).unwrap().unwrap();
    assert!(b > a);
    assert_eq!(tso.persist_count(), 1);
    assert!(matches!(
        tso.try_timestamp_in_term(3),
        Err(TsoError::NotLeader { .. })
    ));
    // Past the mark: it would have to persist again, so nothing is issued.
    clock.advance(5000);
    assert_eq!(tso.try_timestamp_in_term(2), Ok(None));
    assert_eq!(tso.persist_count(), 1);
    g.fail_confirm.store(false, Ordering::SeqCst);
    let c = tso.get_timestamp().unwrap();
    assert!(c > b && tso.persist_count() == 2);
    assert!(tso.try_timestamp_in_term(2).unwrap().unwrap() > c);
}
