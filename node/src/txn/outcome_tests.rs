//! Commits whose replication outcome is unknown: the coordinator settles them through the
//! primary or says "outcome unknown", and never reports, or re-runs, what it does not know.
//!
//! A scripted [`ShardWriter`] plays replication: each write either applies, applies and
//! then reports `OutcomeUnknown` (the entry committed but the reply was lost), reports
//! `OutcomeUnknown` without applying (the entry was lost with its leader), or refuses with
//! `NotLeader`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::lsm::{Db, Options, WriteBatch};
use crate::mvcc::{GcSafePoint, MvccError, Result};
use crate::tso::{LocalTso, LocalTsoOptions};

use super::shard_writer::{EngineWriter, ShardWriter, WriteTicket};
use super::test_runtime::run;
use super::{ExecuteRequest, Isolation, Storage, TxnConfig, TxnError, TxnManager};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Apply,
    ApplyThenUnknown,
    LoseUnknown,
    NotLeader,
}

#[derive(Debug)]
struct Scripted {
    engine: EngineWriter,
    script: Mutex<VecDeque<Step>>,
    /// What every write after the script gets.
    then: Step,
    writes: Mutex<Vec<Step>>,
}

impl ShardWriter for Scripted {
    fn begin_write(&self) -> Result<WriteTicket> {
        Ok(WriteTicket { term: 1 })
    }

    fn write(&self, ticket: WriteTicket, batch: WriteBatch) -> Result<()> {
        let step = self.script.lock().pop_front().unwrap_or(self.then);
        self.writes.lock().push(step);
        match step {
            Step::Apply => self.engine.write(ticket, batch),
            Step::ApplyThenUnknown => {
                self.engine.write(ticket, batch)?;
                Err(MvccError::OutcomeUnknown("reply lost".into()))
            }
            Step::LoseUnknown => Err(MvccError::OutcomeUnknown("entry lost".into())),
            Step::NotLeader => Err(MvccError::NotLeader {
                shard: 1,
                leader: None,
            }),
        }
    }

    fn read_barrier(&self) -> Result<()> {
        Ok(())
    }
}

struct Env {
    _dir: tempfile::TempDir,
    writer: Arc<Scripted>,
    mgr: TxnManager,
}

fn env(script: &[Step], then: Step) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("db"), Options::small_for_tests()).unwrap();
    let writer = Arc::new(Scripted {
        engine: EngineWriter::new(db.clone()),
        script: Mutex::new(script.iter().copied().collect()),
        then,
        writes: Mutex::new(Vec::new()),
    });
    let storage = Storage::with_writer(db, GcSafePoint::default(), writer.clone());
    let tso = Arc::new(LocalTso::open(LocalTsoOptions::new(dir.path().join("tso"))).unwrap());
    let config = TxnConfig {
        outcome_resolve_timeout: Duration::from_millis(100),
        ..TxnConfig::default()
    };
    let mgr = TxnManager::new(Arc::new(storage), tso, config);
    Env {
        _dir: dir,
        writer,
        mgr,
    }
}

impl Env {
    fn write_one(&self, key: &[u8], value: &[u8]) -> std::result::Result<Option<u64>, TxnError> {
        let (t, _) = self.mgr.begin(Isolation::Snapshot, false).unwrap();
        self.mgr.write(t, key, Some(value)).unwrap();
        self.mgr.commit(t)
    }

    fn read(&self, key: &[u8]) -> Option<Vec<u8>> {
        let (t, _) = self.mgr.begin(Isolation::Snapshot, true).unwrap();
        let v = self.mgr.get(t, key).unwrap();
        self.mgr.commit(t).unwrap();
        v
    }
}

use Step::*;

#[test]
fn a_primary_commit_applied_with_its_reply_lost_is_reported_committed() {
    // Prewrite, then the primary's commit (applied, reply lost); the settling retry finds
    // the commit record and writes nothing (committing is idempotent).
    let e = env(&[Apply, ApplyThenUnknown], NotLeader);
    let commit_ts = e.write_one(b"k", b"v").unwrap();
    assert!(commit_ts.is_some());
    assert_eq!(e.read(b"k"), Some(b"v".to_vec()));
    assert_eq!(*e.writer.writes.lock(), [Apply, ApplyThenUnknown]);
}

#[test]
fn a_primary_commit_lost_with_its_leader_is_committed_by_the_retry() {
    let e = env(&[Apply, LoseUnknown, NotLeader], Apply);
    assert!(e.write_one(b"k", b"v").unwrap().is_some());
    assert_eq!(e.read(b"k"), Some(b"v".to_vec()));
}

#[test]
fn an_outcome_that_cannot_be_settled_is_reported_unknown_not_failed() {
    let e = env(&[Apply, LoseUnknown], NotLeader);
    let err = e.write_one(b"k", b"v").unwrap_err();
    assert!(
        matches!(err, TxnError::Mvcc(MvccError::OutcomeUnknown(_))),
        "{err:?}"
    );
    assert!(
        !err.is_retryable(),
        "an unknown outcome must not be retried blindly"
    );
}

#[test]
fn a_prewrite_lost_with_its_leader_means_not_committed() {
    let e = env(&[LoseUnknown], Apply);
    let err = e.write_one(b"k", b"v").unwrap_err();
    assert!(matches!(err, TxnError::NotCommitted(_)), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(e.read(b"k"), None);
}

#[test]
fn execute_never_runs_again_after_a_commit_whose_outcome_is_unknown() {
    let e = env(&[Apply, LoseUnknown], NotLeader);
    let request = ExecuteRequest {
        isolation: Isolation::Snapshot,
        preconditions: Vec::new(),
        reads: Vec::new(),
        writes: vec![(b"k".to_vec(), Some(b"v".to_vec()))],
    };
    let err = e.mgr.execute(&request, 8).unwrap_err();
    assert!(
        matches!(err, TxnError::Mvcc(MvccError::OutcomeUnknown(_))),
        "{err:?}"
    );
    // One prewrite and one commit attempt, then only settling retries of the primary's
    // commit: never a second prewrite, which a re-run would begin with.
    let writes = e.writer.writes.lock().clone();
    assert_eq!(writes[..2], [Apply, LoseUnknown]);
    assert!(writes[2..].iter().all(|s| *s == NotLeader), "{writes:?}");
}

/// A manager whose storage may take its max_ts floor (one-phase commits and blind writes),
/// with its first write (the floor's transaction) applied.
fn blind_env(script: &[Step], then: Step) -> (Env, Arc<TxnManager>) {
    // The warm-up transaction's one write, then the script.
    let e = env(&[&[Apply], script].concat(), then);
    let storage = Arc::clone(e.mgr.storage());
    let tso: Arc<dyn crate::tso::Tso> =
        Arc::new(LocalTso::open(LocalTsoOptions::new(e._dir.path().join("tso2"))).unwrap());
    storage.set_ts_source(Arc::clone(&tso));
    let config = TxnConfig {
        outcome_resolve_timeout: Duration::from_millis(100),
        ..TxnConfig::default()
    };
    let mgr = Arc::new(TxnManager::new(storage, tso, config));
    run(Arc::clone(&mgr).write_one(b"warm-up".to_vec(), Some(b"v".to_vec()), 1)).unwrap();
    assert_eq!(
        *e.writer.writes.lock(),
        [Apply],
        "the warm-up is one transaction"
    );
    e.writer.writes.lock().clear();
    (e, mgr)
}

/// Reads `key` through `mgr`, whose oracle issued the blind writes' timestamps.
fn read_with(mgr: &TxnManager, key: &[u8]) -> Option<Vec<u8>> {
    let (t, _) = mgr.begin(Isolation::Snapshot, true).unwrap();
    let v = mgr.get(t, key).unwrap();
    mgr.commit(t).unwrap();
    v
}

#[test]
fn a_blind_write_applied_with_its_reply_lost_is_settled_committed() {
    // The blind write applies and its outcome is reported unknown; settling (a rollback of
    // the key at its timestamp) finds the commit record and writes nothing.
    let (e, mgr) = blind_env(&[ApplyThenUnknown], NotLeader);
    let r = run(Arc::clone(&mgr).write_one(b"k".to_vec(), Some(b"v".to_vec()), 3)).unwrap();
    assert_eq!(
        r.commit_ts,
        Some(r.start_ts),
        "the blind write's own timestamp"
    );
    assert_eq!(*e.writer.writes.lock(), [ApplyThenUnknown]);
    assert_eq!(read_with(&mgr, b"k"), Some(b"v".to_vec()));
}

#[test]
fn a_blind_write_lost_with_its_leader_is_rolled_back_then_written_once_as_a_transaction() {
    // Lost: the settling rollback record makes "not committed" certain, so the write runs
    // again as a transaction, exactly once.
    let (e, mgr) = blind_env(&[LoseUnknown, Apply, Apply], NotLeader);
    let r = run(Arc::clone(&mgr).write_one(b"k".to_vec(), Some(b"v".to_vec()), 3)).unwrap();
    assert!(r.start_ts < r.commit_ts.unwrap(), "the transaction's");
    assert_eq!(*e.writer.writes.lock(), [LoseUnknown, Apply, Apply]);
    assert_eq!(read_with(&mgr, b"k"), Some(b"v".to_vec()));
}

#[test]
fn a_blind_write_whose_outcome_cannot_be_settled_is_reported_unknown() {
    let (e, mgr) = blind_env(&[LoseUnknown], NotLeader);
    let r = run(Arc::clone(&mgr).write_one(b"k".to_vec(), Some(b"v".to_vec()), 3));
    assert!(
        matches!(r, Err(TxnError::Mvcc(MvccError::OutcomeUnknown(_)))),
        "{r:?}"
    );
    let writes = e.writer.writes.lock().clone();
    assert_eq!(writes[0], LoseUnknown);
    assert!(
        writes[1..].iter().all(|s| *s == NotLeader),
        "only settling attempts: {writes:?}"
    );
}

#[test]
fn a_batch_of_blind_writes_shares_its_proposal_s_outcome_each_at_its_own_timestamp() {
    use super::BlindWrite;
    use crate::txn::actions::Mutation;
    let put = |k: &[u8]| Mutation::Put(k.to_vec(), b"v".to_vec());
    // Applied, reply lost: every write of the one proposal is unknown at its timestamp.
    let (e, mgr) = blind_env(&[ApplyThenUnknown], NotLeader);
    let storage = Arc::clone(mgr.storage());
    let answers = run(Arc::clone(&storage).blind_write_batch(vec![put(b"a"), put(b"b")]));
    assert_eq!(*e.writer.writes.lock(), [ApplyThenUnknown], "one proposal");
    let ts: Vec<u64> = answers
        .iter()
        .map(|a| match a {
            Ok(BlindWrite::Unknown { ts, .. }) => *ts,
            other => panic!("not unknown: {other:?}"),
        })
        .collect();
    assert!(ts[0] < ts[1], "each its own timestamp: {ts:?}");
    assert_eq!(read_with(&mgr, b"a"), Some(b"v".to_vec()));
    assert_eq!(read_with(&mgr, b"b"), Some(b"v".to_vec()));
    // Refused: every write declined, nothing written.
    let (e, mgr) = blind_env(&[NotLeader], NotLeader);
    let storage = Arc::clone(mgr.storage());
    let answers = run(Arc::clone(&storage).blind_write_batch(vec![put(b"c"), put(b"d")]));
    assert!(
        answers
            .iter()
            .all(|a| matches!(a, Ok(BlindWrite::Declined(_)))),
        "{answers:?}"
    );
    assert_eq!(*e.writer.writes.lock(), [NotLeader]);
    assert_eq!(read_with(&mgr, b"c"), None);
}
