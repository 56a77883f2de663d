//! Property test: random concurrent transactions against a real [`TxnManager`], recorded
//! as a [`History`] and checked by [`check_serializable`] and [`check_snapshot_isolation`].
//!
//! Each run opens a fresh engine, writes an initial state (keys `k0..k2` present, `k3`,
//! `k4` absent) and starts [`THREADS`] threads that each run [`TXNS_PER_THREAD`]
//! transactions of random point reads, writes, deletes and scans over those five keys,
//! all at one isolation level. The threads meet at a [`Barrier`] before every transaction,
//! so each round's transactions start together and overlap. A transaction failing with a
//! retryable error is recorded as aborted (with the writes it attempted, so that a leak
//! would show as G1a) and retried, at most [`MAX_ATTEMPTS`] times.
//!
//! The plan of every transaction (its operations, keys and scan bounds) comes from a
//! seeded generator, so a run is reproducible up to thread interleaving; the seed is in
//! every failure message.
//!
//! Recording:
//! - every write carries a value unique to (attempt, key, write), `t<id>:<key>:<n>`;
//! - a scan is a set of point reads: of every key of the universe in the part of the
//!   range the result covers (all of it, or up to the last key returned when the limit cut
//!   the scan short), `None` for the keys it did not return;
//! - start_ts comes from `begin`, commit_ts from `commit` (`None` for no writes).
//!
//! SERIALIZABLE runs must pass both checks (they are snapshot isolated too); SNAPSHOT
//! runs must pass the snapshot isolation check.

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use parking_lot::Mutex;

use strata::check::history::{
    check_serializable, check_snapshot_isolation, History, Op, Outcome, TxnRecord,
};
use strata::lsm::{Db, Options};
use strata::tso::{LocalTso, LocalTsoOptions, ManualClock};
use strata::txn::{Isolation, Storage, TxnConfig, TxnError, TxnManager};

/// The key universe.
const KEYS: [&str; 5] = ["k0", "k1", "k2", "k3", "k4"];
/// Keys present in the initial state.
const INITIAL_KEYS: usize = 3;
const THREADS: usize = 4;
const TXNS_PER_THREAD: usize = 30;
const MAX_ATTEMPTS: usize = 3;
const MAX_OPS: u64 = 5;
const RUNS: u64 = 12;

/// SplitMix64: a small seeded generator, so that runs are reproducible.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }
}

#[derive(Debug, Clone)]
enum Step {
    Get(usize),
    Put(usize),
    Delete(usize),
    /// Keys `KEYS[start..end]`, at most `limit` of them.
    Scan {
        start: usize,
        end: usize,
        limit: usize,
        reverse: bool,
    },
}

#[derive(Debug, Clone)]
struct Plan {
    read_only: bool,
    steps: Vec<Step>,
}

fn plan(rng: &mut Rng) -> Plan {
    let read_only = rng.below(5) == 0;
    let steps = (0..1 + rng.below(MAX_OPS))
        .map(|_| match rng.below(if read_only { 2 } else { 10 }) {
            0 => {
                let start = rng.index(KEYS.len());
                Step::Scan {
                    start,
                    end: start + 1 + rng.index(KEYS.len() - start),
                    limit: 1 + rng.index(KEYS.len() + 1),
                    reverse: rng.below(2) == 0,
                }
            }
            1..=3 => Step::Get(rng.index(KEYS.len())),
            4..=8 => Step::Put(rng.index(KEYS.len())),
            _ => Step::Delete(rng.index(KEYS.len())),
        })
        .collect();
    Plan { read_only, steps }
}

/// The point reads a scan's result stands for: every key of the universe in the part of
/// `KEYS[start..end]` the result covers.
fn scan_reads(
    (start, end, limit, reverse): (usize, usize, usize, bool),
    rows: &[(Vec<u8>, Vec<u8>)],
) -> Result<Vec<Op>, String> {
    let position = |k: &[u8]| KEYS.iter().position(|u| u.as_bytes() == k);
    let mut covered = start..end;
    if rows.len() > limit {
        return Err(format!("a scan with limit {limit} returned {rows:?}"));
    }
    if rows.len() == limit {
        let last = rows.last().and_then(|(k, _)| position(k));
        let Some(last) = last.filter(|l| covered.contains(l)) else {
            return Err(format!("a scan of {covered:?} returned {rows:?}"));
        };
        covered = if reverse { last..end } else { start..last + 1 };
    }
    let found: BTreeMap<&[u8], &[u8]> = rows
        .iter()
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect();
    if found.len() != rows.len()
        || found
            .keys()
            .any(|k| !position(k).is_some_and(|p| covered.contains(&p)))
    {
        return Err(format!("a scan of {covered:?} returned {rows:?}"));
    }
    Ok(covered
        .map(|i| Op::Read {
            key: KEYS[i].as_bytes().to_vec(),
            observed: found.get(KEYS[i].as_bytes()).map(|v| v.to_vec()),
        })
        .collect())
}

/// What ended an attempt early.
#[derive(Debug)]
enum Failure {
    /// Retry the transaction.
    Retry,
    /// Stop the run: the transaction layer misbehaved.
    Fatal(String),
}

impl From<TxnError> for Failure {
    fn from(e: TxnError) -> Failure {
        if e.is_retryable() {
            Failure::Retry
        } else {
            Failure::Fatal(e.to_string())
        }
    }
}

/// Runs one attempt of `plan`, recording it into `rec` as it goes.
fn attempt(
    mgr: &TxnManager,
    isolation: Isolation,
    plan: &Plan,
    rec: &mut Option<TxnRecord>,
) -> Result<(), Failure> {
    let (id, start_ts) = mgr.begin(isolation, plan.read_only)?;
    let r = rec.insert(TxnRecord::new(id, start_ts));
    let result = (|| -> Result<(), Failure> {
        for (n, step) in plan.steps.iter().enumerate() {
            match *step {
                Step::Get(k) => {
                    let observed = mgr.get(id, KEYS[k].as_bytes())?;
                    r.ops.push(Op::Read {
                        key: KEYS[k].as_bytes().to_vec(),
                        observed,
                    });
                }
                Step::Put(k) | Step::Delete(k) => {
                    let value = matches!(step, Step::Put(_))
                        .then(|| format!("t{id}:{}:{n}", KEYS[k]).into_bytes());
                    // Recorded first: an attempted write that fails still may not leak.
                    r.ops.push(Op::Write {
                        key: KEYS[k].as_bytes().to_vec(),
                        value: value.clone(),
                    });
                    mgr.write(id, KEYS[k].as_bytes(), value.as_deref())?;
                }
                Step::Scan {
                    start,
                    end,
                    limit,
                    reverse,
                } => {
                    let end_key = KEYS.get(end).map(|k| k.as_bytes());
                    let rows = mgr.scan(id, KEYS[start].as_bytes(), end_key, limit, reverse)?;
                    r.ops.extend(
                        scan_reads((start, end, limit, reverse), &rows).map_err(Failure::Fatal)?,
                    );
                }
            }
            std::thread::yield_now();
        }
        let commit_ts = mgr.commit(id)?;
        r.outcome = Outcome::Committed { commit_ts };
        Ok(())
    })();
    if result.is_err() {
        // The commit removes the transaction even when it fails; an op error leaves it.
        let _ = mgr.rollback(id);
    }
    result
}

/// One run: returns the history and the fatal errors met.
fn run(seed: u64, isolation: Isolation) -> (History, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("db"), Options::small_for_tests()).unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let tso = Arc::new(
        LocalTso::open_with_clock(LocalTsoOptions::new(dir.path().join("tso")), clock).unwrap(),
    );
    let config = TxnConfig {
        lock_wait: Duration::from_millis(20),
        ..TxnConfig::default()
    };
    let mgr = TxnManager::new(Arc::new(Storage::new(db)), tso, config);

    let mut initial = BTreeMap::new();
    let (setup, _) = mgr.begin(Isolation::Snapshot, false).unwrap();
    for key in &KEYS[..INITIAL_KEYS] {
        let value = format!("init:{key}").into_bytes();
        mgr.write(setup, key.as_bytes(), Some(&value)).unwrap();
        initial.insert(key.as_bytes().to_vec(), value);
    }
    mgr.commit(setup).unwrap();

    let history = Mutex::new(History::new(initial));
    let fatal = Mutex::new(Vec::new());
    let barrier = Barrier::new(THREADS);
    std::thread::scope(|s| {
        for thread in 0..THREADS as u64 {
            let (mgr, history, fatal, barrier) = (&mgr, &history, &fatal, &barrier);
            s.spawn(move || {
                let mut rng = Rng(seed.wrapping_mul(1_000_003).wrapping_add(thread));
                for _ in 0..TXNS_PER_THREAD {
                    let plan = plan(&mut rng);
                    barrier.wait();
                    for _ in 0..MAX_ATTEMPTS {
                        let mut rec = None;
                        let result = attempt(mgr, isolation, &plan, &mut rec);
                        history.lock().txns.extend(rec);
                        match result {
                            Ok(()) => break,
                            Err(Failure::Retry) => continue,
                            Err(Failure::Fatal(e)) => {
                                fatal.lock().push(e);
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
    (history.into_inner(), fatal.into_inner())
}

#[test]
fn random_concurrent_transactions_keep_their_isolation_level() {
    let mut non_serializable_snapshot_runs = 0;
    for seed in 0..RUNS {
        let isolation = if seed % 2 == 0 {
            Isolation::Serializable
        } else {
            Isolation::Snapshot
        };
        let (history, fatal) = run(seed, isolation);
        let context = || format!("seed {seed}, {isolation:?}; history:\n{history}");
        assert!(fatal.is_empty(), "{fatal:?}; {}", context());
        let committed = history.txns.iter().filter(|t| t.is_committed()).count();
        assert!(committed > 0, "{}", context());
        if let Err(a) = check_snapshot_isolation(&history) {
            panic!("not snapshot isolated: {a}\n{}", context());
        }
        match (isolation, check_serializable(&history)) {
            (Isolation::Serializable, Err(a)) => {
                panic!("not serializable: {a}\n{}", context())
            }
            (Isolation::Snapshot, Err(_)) => non_serializable_snapshot_runs += 1,
            _ => {}
        }
        eprintln!(
            "seed {seed} {isolation:?}: {committed} committed of {} attempts",
            history.txns.len()
        );
    }
    eprintln!("{non_serializable_snapshot_runs} SNAPSHOT runs were not serializable");
}
