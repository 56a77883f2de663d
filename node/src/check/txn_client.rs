//! Recording transaction histories from real clients of Strata's public gRPC API, settling
//! the Commits whose outcome is unknown, and the anomalies tests inject to show a verdict of
//! [`super::history`] is not vacuous.
//!
//! A [`TxnWorkload`] runs interactive transactions against one node (any node is a
//! gateway) and records each one in a [`TxnLog`] as the client saw it:
//!
//! ```text
//!   Txn.Begin(isolation) ─► start_ts
//!   Txn.Get a, Txn.Get b  ─► Read (a, observed), Read (b, observed)   a != b, seeded
//!   Txn.Put a ("t<id>:a"), maybe Txn.Put b ("t<id>:b"), Txn.Put marker/<id> ("1")
//!   Txn.Commit ─► ok commit_ts ........................ Committed { commit_ts }
//!              └► error ─► classify_write_error:
//!                   Refused ............................ Aborted
//!                   Unknown / Unexpected ............... unresolved (settled afterwards)
//!   a failed Begin: not recorded; a failed Get or Put: Aborted (nothing was sent to commit)
//! ```
//!
//! Every write is recorded before it is sent, so an attempted write can never be visible
//! without the history knowing of it, and every value is unique (the history is
//! recoverable, as [`super::history`] requires).
//!
//! **Unknown Commits** are settled by [`TxnLog::resolve`] after the run, through the
//! marker key each transaction writes and nobody else touches (D87): read at the latest
//! timestamp, an absent marker means the transaction did not commit (the read's lock
//! resolution makes sure it never will); a present one is visible exactly from its
//! commit_ts on (one write installs it), found by bisection on `read_ts` between the
//! start_ts and the latest read's timestamp.
//!
//! **Injected anomalies**, each built from the recorded transactions, for a test to assert
//! the checkers reject them on the very history they accepted:
//! [`inject_stale_txn_read`] (a read of an overwritten version: not snapshot isolated),
//! [`inject_lost_update`] (two consecutive writers of a key made concurrent, the second
//! reading what the first overwrote: a G-single cycle, and concurrent writes under snapshot
//! isolation) and [`inject_write_skew`] (two transactions above the recorded ones reading
//! the recorded final versions of two keys and each writing one: a G2 cycle that snapshot
//! isolation allows). [`judge`] runs the checks a recorded history must pass at its
//! isolation level and the rejections of those anomalies in one call, for every test that
//! records transactions.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use strata_proto::v1 as pb;
use strata_proto::v1::kv_client::KvClient;
use strata_proto::v1::txn_client::TxnClient;
use tonic::transport::Channel;
use tonic::Status;

use super::client::{classify_write_error, ErrorClass};
use super::history::{
    check_serializable, check_snapshot_isolation, Anomaly, CycleKind, History, Key, Op, Outcome,
    TxnRecord, Value,
};
use crate::mvcc::Timestamp;
use crate::raftstore::rng::Rng;
use crate::txn::TxnId;

/// A transaction whose Commit's outcome is unknown, to settle after the run.
#[derive(Debug, Clone)]
struct Unresolved {
    /// Its record's index in [`TxnLog::history`].
    index: usize,
    marker: Key,
    start_ts: Timestamp,
}

/// What clients' transactions did: the records (unknown Commits recorded as aborted until
/// [`TxnLog::resolve`] settles them) and counts.
#[derive(Debug, Clone, Default)]
pub struct TxnLog {
    records: Vec<TxnRecord>,
    unresolved: Vec<Unresolved>,
    /// Transactions that committed (acknowledged, or settled as committed).
    pub committed: u64,
    /// Transactions that did not commit (refused, failed before Commit, or settled as not
    /// committed).
    pub aborted: u64,
    /// Begins that failed (nothing recorded).
    pub not_begun: u64,
    /// Unknown Commits settled by [`TxnLog::resolve`]: (committed, not committed).
    pub resolved: (u64, u64),
    /// Statuses a correct client should never get, on Commit; a test should fail on them.
    pub unexpected: Vec<String>,
}

impl TxnLog {
    /// An empty log.
    pub fn new() -> TxnLog {
        TxnLog::default()
    }

    /// The transactions recorded so far.
    pub fn records(&self) -> &[TxnRecord] {
        &self.records
    }

    /// How many Commits are still unknown.
    pub fn unresolved(&self) -> usize {
        self.unresolved.len()
    }

    /// Both logs in one (the records of `other` after those of `self`).
    pub fn merged(mut self, other: TxnLog) -> TxnLog {
        let offset = self.records.len();
        self.records.extend(other.records);
        self.unresolved
            .extend(other.unresolved.into_iter().map(|u| Unresolved {
                index: u.index + offset,
                ..u
            }));
        self.committed += other.committed;
        self.aborted += other.aborted;
        self.not_begun += other.not_begun;
        self.resolved.0 += other.resolved.0;
        self.resolved.1 += other.resolved.1;
        self.unexpected.extend(other.unexpected);
        self
    }

    /// Records `rec`, whose Commit's outcome is unknown, to be settled by
    /// [`TxnLog::resolve`] through `marker`: a key only this transaction writes (once), and
    /// nobody reads in the history.
    pub fn record_unknown(&mut self, rec: TxnRecord, marker: Key) {
        self.unresolved.push(Unresolved {
            index: self.records.len(),
            marker,
            start_ts: rec.start_ts,
        });
        self.records.push(rec);
    }

    /// The recorded transactions as a history over an empty initial state.
    pub fn history(&self) -> History {
        let mut h = History::new(BTreeMap::new());
        for t in &self.records {
            h.push(t.clone());
        }
        h
    }

    /// Settles every unknown Commit through its marker key, with reads through `kv` (each
    /// bounded by `timeout`, errors retried until `deadline`). Returns the last error when
    /// a read could not be answered by `deadline`.
    pub async fn resolve(
        &mut self,
        kv: &mut KvClient<Channel>,
        timeout: Duration,
        deadline: Instant,
    ) -> Result<(), Status> {
        while let Some(u) = self.unresolved.last().cloned() {
            let (found, latest) = read_at(kv, &u.marker, 0, timeout, deadline).await?;
            let Some(rec) = self.records.get(u.index).cloned() else {
                self.unresolved.pop();
                continue;
            };
            let settled = if found {
                let (mut lo, mut hi) = (u.start_ts, latest);
                while hi.saturating_sub(lo) > 1 {
                    let mid = lo + (hi - lo) / 2;
                    if read_at(kv, &u.marker, mid, timeout, deadline).await?.0 {
                        hi = mid;
                    } else {
                        lo = mid;
                    }
                }
                self.committed += 1;
                self.resolved.0 += 1;
                rec.committed(Some(hi))
            } else {
                self.aborted += 1;
                self.resolved.1 += 1;
                rec.aborted()
            };
            if let Some(slot) = self.records.get_mut(u.index) {
                *slot = settled;
            }
            self.unresolved.pop();
        }
        Ok(())
    }
}

impl fmt::Display for TxnLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} committed, {} aborted, {} not begun, of {} recorded; unknown Commits settled \
             (committed, not committed) {:?}, still unknown {}",
            self.committed,
            self.aborted,
            self.not_begun,
            self.records.len(),
            self.resolved,
            self.unresolved.len()
        )
    }
}

/// Reads `key` at `read_ts` (0: latest), retrying errors until `deadline`; returns whether
/// it exists and the read timestamp used.
async fn read_at(
    kv: &mut KvClient<Channel>,
    key: &[u8],
    read_ts: Timestamp,
    timeout: Duration,
    deadline: Instant,
) -> Result<(bool, Timestamp), Status> {
    loop {
        let mut r = tonic::Request::new(pb::GetRequest {
            key: key.to_vec(),
            read_ts,
        });
        r.set_timeout(timeout);
        match kv.get(r).await {
            Ok(r) => {
                let r = r.into_inner();
                return Ok((r.found, r.read_ts));
            }
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Seeded interactive transactions of one client over a set of keys.
#[derive(Debug)]
pub struct TxnWorkload {
    isolation: pb::Isolation,
    keys: Vec<Key>,
    rng: Rng,
    /// Added to this client's counter to name its transactions (ids unique across clients
    /// and runs).
    id_base: TxnId,
    n: u64,
    timeout: Duration,
}

impl TxnWorkload {
    /// Transactions of client `client` at `isolation` over `keys` (at least two), following
    /// `seed`, each call bounded by `timeout`. Transaction ids are
    /// `(seed << 32) + client * 1_000_000 + n`: distinct seeds and clients give distinct ids
    /// (and marker keys).
    pub fn new(
        client: u64,
        isolation: pb::Isolation,
        keys: Vec<Key>,
        seed: u64,
        timeout: Duration,
    ) -> TxnWorkload {
        TxnWorkload {
            isolation,
            keys,
            rng: Rng::new(seed.wrapping_add(client)),
            id_base: (seed << 32).wrapping_add(client.wrapping_mul(1_000_000)),
            n: 0,
            timeout,
        }
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        r.set_timeout(self.timeout);
        r
    }

    /// Runs one transaction through `txn`: read two keys, write one or both of them (unique
    /// values) and the marker, commit. Recorded into `log` unless Begin failed. Returns
    /// whether it was acknowledged as committed (on `false` a caller may want to reconnect
    /// or pause).
    pub async fn run_one(&mut self, txn: &mut TxnClient<Channel>, log: &mut TxnLog) -> bool {
        let n = u64::try_from(self.keys.len()).unwrap_or(0);
        if n < 2 {
            return false;
        }
        let Ok(begin) = txn
            .begin(self.request(pb::BeginRequest {
                isolation: self.isolation as i32,
                read_only: false,
            }))
            .await
        else {
            log.not_begun += 1;
            return false;
        };
        let begin = begin.into_inner();
        self.n += 1;
        let id = self.id_base.wrapping_add(self.n);
        let mut rec = TxnRecord::new(id, begin.start_ts);
        let a = usize::try_from(self.rng.below(n)).unwrap_or(0);
        let b = (a + 1 + usize::try_from(self.rng.below(n - 1)).unwrap_or(0)) % self.keys.len();
        let (key_a, key_b) = (self.keys[a].clone(), self.keys[b].clone());
        let marker = format!("marker/{id}").into_bytes();
        let mut writes: Vec<(Key, Value)> = vec![(key_a.clone(), format!("t{id}:a").into())];
        if self.rng.below(2) == 0 {
            writes.push((key_b.clone(), format!("t{id}:b").into()));
        }
        writes.push((marker.clone(), b"1".to_vec()));
        let mut ok = true;
        for key in [key_a, key_b] {
            let got = txn
                .get(self.request(pb::TxnGetRequest {
                    txn_id: begin.txn_id,
                    key: key.clone(),
                }))
                .await;
            match got {
                Ok(r) => {
                    let r = r.into_inner();
                    rec.ops.push(Op::Read {
                        key,
                        observed: r.found.then_some(r.value),
                    });
                }
                Err(_) => {
                    ok = false;
                    break;
                }
            }
        }
        if ok {
            for (key, value) in writes {
                // Recorded before it is sent: an attempted write must never leak.
                rec = rec.write(key.clone(), value.clone());
                let sent = txn
                    .put(self.request(pb::TxnPutRequest {
                        txn_id: begin.txn_id,
                        key,
                        value,
                    }))
                    .await;
                if sent.is_err() {
                    ok = false;
                    break;
                }
            }
        }
        if !ok {
            // Nothing was committed: writes are buffered until Commit, which was never sent.
            log.aborted += 1;
            log.records.push(rec.aborted());
            let _ = txn
                .rollback(self.request(pb::RollbackRequest {
                    txn_id: begin.txn_id,
                }))
                .await;
            return false;
        }
        let result = txn
            .commit(self.request(pb::CommitRequest {
                txn_id: begin.txn_id,
            }))
            .await;
        match result {
            Ok(r) => {
                log.committed += 1;
                log.records
                    .push(rec.committed(Some(r.into_inner().commit_ts)));
                true
            }
            Err(status) => {
                match classify_write_error(&status) {
                    ErrorClass::Refused => {
                        log.aborted += 1;
                        log.records.push(rec.aborted());
                    }
                    class => {
                        if class == ErrorClass::Unexpected {
                            log.unexpected.push(status.to_string());
                        }
                        log.record_unknown(rec, marker);
                    }
                }
                false
            }
        }
    }
}

/// The committed writers of `key` in `history` as (commit_ts, index of the transaction,
/// its final write of the key), in commit_ts order.
fn writers(history: &History, key: &[u8]) -> Vec<(Timestamp, usize, Option<Value>)> {
    let mut w: Vec<_> = history
        .txns
        .iter()
        .enumerate()
        .filter_map(|(i, t)| match t.outcome {
            Outcome::Committed { commit_ts: Some(c) } => t
                .ops
                .iter()
                .rev()
                .find_map(|op| match op {
                    Op::Write { key: k, value } if k == key => Some(value.clone()),
                    _ => None,
                })
                .map(|v| (c, i, v)),
            _ => None,
        })
        .collect();
    w.sort();
    w
}

/// The value of `key` a snapshot at `ts` holds: the final write of its latest committed
/// writer below `ts`, else the initial state.
fn visible_at(history: &History, key: &[u8], ts: Timestamp) -> Option<Value> {
    writers(history, key)
        .into_iter()
        .rev()
        .find(|(c, _, _)| *c < ts)
        .map_or_else(|| history.initial.get(key).cloned(), |(_, _, v)| v)
}

/// `history` with one committed transaction's read made stale: it observes the version
/// before the latest one committed below its start_ts. `None` when no read has an older
/// version to go back to.
pub fn inject_stale_txn_read(history: &History) -> Option<History> {
    let mut h = history.clone();
    for t in h.txns.iter_mut().filter(|t| t.is_committed()) {
        let start = t.start_ts;
        for op in t.ops.iter_mut() {
            if let Op::Read { key, observed } = op {
                let before: Vec<_> = writers(history, key)
                    .into_iter()
                    .filter(|(c, _, _)| *c < start)
                    .collect();
                if before.len() >= 2 {
                    *observed = before[before.len() - 2].2.clone();
                    return Some(h);
                }
            }
        }
    }
    None
}

/// `history` with a lost update: for two consecutive committed writers T1, T2 of a key
/// where T2 read the key, T2 is moved back to T1's snapshot (its start_ts becomes T1's and
/// its reads return what that snapshot holds), so it reads the version T1 overwrote and
/// overwrites T1's write without having seen it. Serializability must find the cycle
/// T2 -rw-> T1 -ww-> T2; snapshot isolation, the two concurrent writers of the key.
/// Returns the history and the ids (T1, T2), or `None` when no key has two such writers.
pub fn inject_lost_update(history: &History) -> Option<(History, (TxnId, TxnId))> {
    let mut keys: Vec<&Key> = history
        .txns
        .iter()
        .flat_map(|t| t.ops.iter())
        .filter_map(|op| match op {
            Op::Write { key, .. } => Some(key),
            Op::Read { .. } => None,
        })
        .collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        let w = writers(history, key);
        for pair in w.windows(2) {
            let (first, second) = (pair[0].1, pair[1].1);
            let t2 = &history.txns[second];
            let reads_key = t2
                .ops
                .iter()
                .any(|op| matches!(op, Op::Read { key: k, .. } if k == key));
            let s1 = history.txns[first].start_ts;
            if !reads_key || s1 >= t2.start_ts {
                continue;
            }
            let mut h = history.clone();
            let moved = &mut h.txns[second];
            moved.start_ts = s1;
            let mut written: Vec<Key> = Vec::new();
            for op in moved.ops.iter_mut() {
                match op {
                    Op::Write { key, .. } => written.push(key.clone()),
                    // An external read: what T1's snapshot holds.
                    Op::Read { key, observed } if !written.contains(key) => {
                        *observed = visible_at(history, key, s1);
                    }
                    Op::Read { .. } => {}
                }
            }
            let ids = (history.txns[first].id, history.txns[second].id);
            return Some((h, ids));
        }
    }
    None
}

/// `history` with a write skew above it: two more transactions, both starting after every
/// recorded timestamp, read the recorded final versions of two keys `x` and `y`; one
/// writes `x`, the other `y`, and they commit concurrently. Snapshot isolation allows it
/// (disjoint writes, every read from the snapshot); serializability must find the G2 cycle
/// (each anti-depends on the other). Returns the history and the two new ids, or `None`
/// when fewer than two keys were written by committed transactions.
pub fn inject_write_skew(history: &History) -> Option<(History, (TxnId, TxnId))> {
    let ops = || history.txns.iter().flat_map(|t| t.ops.iter());
    let read: Vec<&Key> = ops()
        .filter_map(|op| match op {
            Op::Read { key, .. } => Some(key),
            Op::Write { .. } => None,
        })
        .collect();
    // Keys written by committed transactions, those also read first (the data keys rather
    // than markers).
    let mut keys: Vec<(bool, Key)> = history
        .txns
        .iter()
        .filter(|t| t.is_committed())
        .flat_map(|t| t.ops.iter())
        .filter_map(|op| match op {
            Op::Write { key, .. } => Some((!read.contains(&key), key.clone())),
            Op::Read { .. } => None,
        })
        .collect();
    keys.sort();
    keys.dedup();
    let keys: Vec<Key> = keys.into_iter().map(|(_, k)| k).collect();
    let (x, y) = match keys.as_slice() {
        [x, y, ..] => (x.clone(), y.clone()),
        _ => return None,
    };
    let top = history
        .txns
        .iter()
        .map(|t| match t.outcome {
            Outcome::Committed { commit_ts: Some(c) } => c.max(t.start_ts),
            _ => t.start_ts,
        })
        .max()
        .unwrap_or(0);
    let next_id = history.txns.iter().map(|t| t.id).max().unwrap_or(0);
    let (ia, ib) = (next_id.checked_add(1)?, next_id.checked_add(2)?);
    let (vx, vy) = (
        visible_at(history, &x, top + 1),
        visible_at(history, &y, top + 1),
    );
    let txn = |id: TxnId, start: Timestamp, commit: Timestamp, write: &Key, tag: &str| {
        let mut t = TxnRecord::new(id, start);
        t.ops.push(Op::Read {
            key: x.clone(),
            observed: vx.clone(),
        });
        t.ops.push(Op::Read {
            key: y.clone(),
            observed: vy.clone(),
        });
        t.write(write.clone(), format!("write-skew/{tag}").into_bytes())
            .committed(Some(commit))
    };
    let mut h = history.clone();
    h.push(txn(ia, top + 1, top + 3, &x, "a"));
    h.push(txn(ib, top + 2, top + 4, &y, "b"));
    Some((h, (ia, ib)))
}

/// Judges a recorded `history` of transactions run at `isolation`: SNAPSHOT ones must pass
/// [`check_snapshot_isolation`], SERIALIZABLE ones that and [`check_serializable`]. Then,
/// so that the verdict is not vacuous, the same history with each injected anomaly must be
/// rejected: a stale read and a lost update by snapshot isolation, a lost update (a
/// G-single cycle) and a write skew (G2) by serializability; the write skew must pass
/// snapshot isolation (the checks tell the two levels apart). Returns what went wrong,
/// with the history when the recorded one failed.
pub fn judge(history: &History, isolation: pb::Isolation) -> Result<(), String> {
    let serializable = isolation == pb::Isolation::Serializable;
    if let Err(a) = check_snapshot_isolation(history) {
        return Err(format!(
            "{isolation:?}: not snapshot isolated: {a}\n{history}"
        ));
    }
    if serializable {
        if let Err(a) = check_serializable(history) {
            return Err(format!("not serializable: {a}\n{history}"));
        }
    }
    let stale = inject_stale_txn_read(history).ok_or("no key with two committed versions")?;
    if check_snapshot_isolation(&stale).is_ok() {
        return Err("an injected stale read passed snapshot isolation".into());
    }
    let (lost, ids) = inject_lost_update(history).ok_or("no key with two committed writers")?;
    match check_snapshot_isolation(&lost) {
        Err(Anomaly::ConcurrentWrites { .. }) => {}
        other => {
            return Err(format!(
                "an injected lost update {ids:?} under SI: {other:?}"
            ))
        }
    }
    match check_serializable(&lost) {
        Err(Anomaly::Cycle { .. }) => {}
        other => return Err(format!("an injected lost update {ids:?}: {other:?}")),
    }
    let (skew, ids) = inject_write_skew(history).ok_or("fewer than two keys written")?;
    if let Err(a) = check_snapshot_isolation(&skew) {
        return Err(format!("an injected write skew {ids:?} failed SI: {a}"));
    }
    match check_serializable(&skew) {
        Err(Anomaly::Cycle {
            kind: CycleKind::G2,
            ..
        }) => Ok(()),
        other => Err(format!("an injected write skew {ids:?}: {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// x and y written in turn by three serial transactions, each reading both first.
    fn serial() -> History {
        let mut h = History::new(BTreeMap::new());
        h.push(
            TxnRecord::new(1, 1)
                .read_absent(b"x".to_vec())
                .read_absent(b"y".to_vec())
                .write(b"x".to_vec(), b"x1".to_vec())
                .committed(Some(2)),
        );
        h.push(
            TxnRecord::new(2, 3)
                .read(b"x".to_vec(), b"x1".to_vec())
                .read_absent(b"y".to_vec())
                .write(b"x".to_vec(), b"x2".to_vec())
                .write(b"y".to_vec(), b"y2".to_vec())
                .committed(Some(4)),
        );
        h.push(
            TxnRecord::new(3, 5)
                .read(b"x".to_vec(), b"x2".to_vec())
                .read(b"y".to_vec(), b"y2".to_vec())
                .write(b"y".to_vec(), b"y3".to_vec())
                .committed(Some(6)),
        );
        h
    }

    #[test]
    fn a_serial_history_passes_and_every_injected_anomaly_is_rejected() {
        let h = serial();
        assert_eq!(judge(&h, pb::Isolation::Serializable), Ok(()));
        assert_eq!(judge(&h, pb::Isolation::Snapshot), Ok(()));
        // The lost update: T2 moved back to T1's snapshot, reading x absent.
        let (lost, ids) = inject_lost_update(&h).expect("two writers of x");
        assert_eq!(ids, (1, 2));
        assert_eq!(lost.txns[1].start_ts, 1);
        assert_eq!(
            lost.txns[1].ops[0],
            Op::Read {
                key: b"x".to_vec(),
                observed: None
            }
        );
        let (skew, ids) = inject_write_skew(&h).expect("two keys");
        assert_eq!(ids, (4, 5));
        assert_eq!(skew.txns.len(), 5);
        assert!(inject_stale_txn_read(&h).is_some());
    }

    #[test]
    fn judge_rejects_a_recorded_anomaly_and_a_history_too_small_to_prove_anything() {
        // A lost update in the recording itself: T2 read x1's predecessor concurrently.
        let (lost, _) = inject_lost_update(&serial()).expect("two writers of x");
        assert!(judge(&lost, pb::Isolation::Snapshot).is_err());
        assert!(judge(&lost, pb::Isolation::Serializable).is_err());
        // One transaction: no injection can be built, so no verdict is claimed.
        let mut one = History::new(BTreeMap::new());
        one.push(
            TxnRecord::new(1, 1)
                .write(b"x".to_vec(), b"x1".to_vec())
                .committed(Some(2)),
        );
        assert!(judge(&one, pb::Isolation::Serializable).is_err());
    }
}
