//! Isolation checkers for recorded transaction histories.
//!
//! A [`History`] is what clients saw: for each transaction its `start_ts`, its outcome
//! (committed with a `commit_ts`, or aborted) and its operations in order, each a read of a
//! key with the value it observed or a write of a key (`None` deletes). The state before
//! the history is [`History::initial`], treated as written by a virtual transaction
//! [`INITIAL_TXN`] committed at timestamp 0.
//!
//! Histories must be *recoverable*: every write of a key carries a value no other write of
//! that key carries (the tests write `t<id>:<key>:<n>`), so a read of a value names the
//! write it observed. Two checks use that:
//!
//! ```text
//!                     ┌── own earlier write of the key? ── must return the latest one
//!   read (key, v) ────┤
//!                     └── else "external" ── v ──> the write that installed it
//!                            never written ............ UnknownValue
//!                            by the reader, later ..... FutureRead
//!                            by an aborted txn ........ G1a  (AbortedRead)
//!                            not the writer's last .... G1b  (IntermediateRead)
//!                            else: a version of the key
//! ```
//!
//! * [`check_serializable`] builds Adya's direct serialization graph over the committed
//!   transactions. The version order of a key is the `commit_ts` order of its writers (the
//!   initial state first). Edges: `ww` from each version's writer to the next version's
//!   writer; `wr` from a version's writer to each transaction that read it; `rw` from a
//!   reader of a version to the writer of the next version. A cycle is reported with its
//!   edges and classified (G0: only ww; G1c: ww and wr; G-single: one rw; G2: more). Cycles
//!   of the stricter kinds are looked for first, and each reported cycle is a shortest one
//!   through one of its transactions.
//! * [`check_snapshot_isolation`] checks the timestamp definition of snapshot isolation:
//!   each external read of a committed transaction returns the final write of the latest
//!   committed writer with `commit_ts < start_ts` (else the initial state), and no two
//!   committed writers of a key have overlapping `[start_ts, commit_ts]` intervals (first
//!   committer wins). A committed transaction without writes has no `commit_ts`; it is a
//!   reader at its `start_ts`.
//!
//! Both run the read checks above first and report malformed histories (duplicate ids or
//! values, writers without `commit_ts`, `commit_ts <= start_ts`) as
//! [`Anomaly::Malformed`].
//!
//! **Deletes are not recoverable.** A read that observed `None` could have read the
//! initial absence or any committed delete of the key. The serializability check then picks
//! the absent version the reader's snapshot names: the latest one committed before its
//! `start_ts` (the first one if none is). A wrong pick could only hide or invent a cycle
//! through a reader that, by the timestamps, read the wrong version, which
//! [`check_snapshot_isolation`] reports; run both on histories of an engine meant to be
//! serializable. Likewise a read of `None` cannot be blamed on an aborted delete (no G1a for
//! deletes).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;

use crate::mvcc::Timestamp;

use crate::txn::TxnId;

/// A key.
pub type Key = Vec<u8>;
/// A value.
pub type Value = Vec<u8>;

/// The virtual transaction that wrote [`History::initial`], committed at timestamp 0.
pub const INITIAL_TXN: TxnId = 0;

/// One operation of a transaction, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A read of `key` that returned `observed` (`None`: absent).
    Read {
        /// The key read.
        key: Key,
        /// What the read returned.
        observed: Option<Value>,
    },
    /// A write of `key` (`None`: a delete).
    Write {
        /// The key written.
        key: Key,
        /// The value written, or `None` for a delete.
        value: Option<Value>,
    },
}

/// How a transaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Committed; `commit_ts` is `None` for transactions that wrote nothing.
    Committed {
        /// The commit timestamp, if the transaction wrote anything.
        commit_ts: Option<Timestamp>,
    },
    /// Aborted (or never finished): none of its writes may be visible.
    Aborted,
}

/// One transaction of a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnRecord {
    /// Unique within the history; never [`INITIAL_TXN`].
    pub id: TxnId,
    /// The snapshot timestamp the transaction began with.
    pub start_ts: Timestamp,
    /// How it ended.
    pub outcome: Outcome,
    /// Its operations, in the order it issued them.
    pub ops: Vec<Op>,
}

impl TxnRecord {
    /// A transaction with no operations, aborted until [`TxnRecord::committed`] says
    /// otherwise.
    pub fn new(id: TxnId, start_ts: Timestamp) -> TxnRecord {
        TxnRecord {
            id,
            start_ts,
            outcome: Outcome::Aborted,
            ops: Vec::new(),
        }
    }

    /// Appends a read of `key` that observed `value`.
    pub fn read(mut self, key: impl Into<Key>, value: impl Into<Value>) -> TxnRecord {
        self.ops.push(Op::Read {
            key: key.into(),
            observed: Some(value.into()),
        });
        self
    }

    /// Appends a read of `key` that found it absent.
    pub fn read_absent(mut self, key: impl Into<Key>) -> TxnRecord {
        self.ops.push(Op::Read {
            key: key.into(),
            observed: None,
        });
        self
    }

    /// Appends a write of `value` to `key`.
    pub fn write(mut self, key: impl Into<Key>, value: impl Into<Value>) -> TxnRecord {
        self.ops.push(Op::Write {
            key: key.into(),
            value: Some(value.into()),
        });
        self
    }

    /// Appends a delete of `key`.
    pub fn delete(mut self, key: impl Into<Key>) -> TxnRecord {
        self.ops.push(Op::Write {
            key: key.into(),
            value: None,
        });
        self
    }

    /// Marks the transaction committed at `commit_ts` (`None`: it wrote nothing).
    pub fn committed(mut self, commit_ts: Option<Timestamp>) -> TxnRecord {
        self.outcome = Outcome::Committed { commit_ts };
        self
    }

    /// Marks the transaction aborted.
    pub fn aborted(mut self) -> TxnRecord {
        self.outcome = Outcome::Aborted;
        self
    }

    /// Whether the transaction committed.
    pub fn is_committed(&self) -> bool {
        matches!(self.outcome, Outcome::Committed { .. })
    }

    fn commit_ts(&self) -> Option<Timestamp> {
        match self.outcome {
            Outcome::Committed { commit_ts } => commit_ts,
            Outcome::Aborted => None,
        }
    }

    fn has_writes(&self) -> bool {
        self.ops.iter().any(|op| matches!(op, Op::Write { .. }))
    }
}

impl fmt::Display for TxnRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "T{} [start {}, ", self.id, self.start_ts)?;
        match self.outcome {
            Outcome::Committed {
                commit_ts: Some(ts),
            } => write!(f, "commit {ts}]")?,
            Outcome::Committed { commit_ts: None } => write!(f, "committed, no writes]")?,
            Outcome::Aborted => write!(f, "aborted]")?,
        }
        for op in &self.ops {
            match op {
                Op::Read { key, observed } => {
                    write!(f, " r({})={}", show(key), show_opt(observed.as_deref()))?
                }
                Op::Write { key, value } => {
                    write!(f, " w({})={}", show(key), show_opt(value.as_deref()))?
                }
            }
        }
        Ok(())
    }
}

/// A recorded history: the initial state and the transactions run from it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// Keys present before the history, as written by [`INITIAL_TXN`].
    pub initial: BTreeMap<Key, Value>,
    /// The transactions, in any order.
    pub txns: Vec<TxnRecord>,
}

impl History {
    /// An empty history from `initial`.
    pub fn new(initial: BTreeMap<Key, Value>) -> History {
        History {
            initial,
            txns: Vec::new(),
        }
    }

    /// Adds a transaction.
    pub fn push(&mut self, txn: TxnRecord) {
        self.txns.push(txn);
    }
}

impl fmt::Display for History {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "initial:")?;
        for (k, v) in &self.initial {
            write!(f, " {}={}", show(k), show(v))?;
        }
        let mut txns: Vec<&TxnRecord> = self.txns.iter().collect();
        txns.sort_by_key(|t| (t.start_ts, t.id));
        for t in txns {
            write!(f, "\n{t}")?;
        }
        Ok(())
    }
}

/// The kind of a dependency edge of the serialization graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EdgeKind {
    /// Write dependency: `to` installed the version after `from`'s.
    Ww,
    /// Read dependency: `to` read the version `from` installed.
    Wr,
    /// Anti-dependency: `from` read a version, `to` installed the next one.
    Rw,
}

impl fmt::Display for EdgeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EdgeKind::Ww => "ww",
            EdgeKind::Wr => "wr",
            EdgeKind::Rw => "rw",
        })
    }
}

/// One edge of the serialization graph: `from` must precede `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// The earlier transaction.
    pub from: TxnId,
    /// The later transaction.
    pub to: TxnId,
    /// Why.
    pub kind: EdgeKind,
    /// The key the dependency is on.
    pub key: Key,
}

/// Adya's classes of dependency cycles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CycleKind {
    /// Only write dependencies (dirty writes).
    G0,
    /// Write and read dependencies, no anti-dependency (circular information flow).
    G1c,
    /// Exactly one anti-dependency (e.g. read skew, lost update).
    GSingle,
    /// Two or more anti-dependencies (e.g. write skew).
    G2,
}

impl fmt::Display for CycleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CycleKind::G0 => "G0 (write cycle)",
            CycleKind::G1c => "G1c (circular information flow)",
            CycleKind::GSingle => "G-single (one anti-dependency)",
            CycleKind::G2 => "G2 (anti-dependency cycle)",
        })
    }
}

/// Why a history is not serializable or not snapshot isolated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Anomaly {
    /// The history breaks the model's rules (not an isolation anomaly).
    Malformed {
        /// The transaction at fault, if one is.
        txn: Option<TxnId>,
        /// What is wrong.
        reason: String,
    },
    /// A committed transaction read a value that no transaction wrote (or absence of a key
    /// that was never absent).
    UnknownValue {
        /// The reader.
        reader: TxnId,
        /// The key.
        key: Key,
        /// What it read.
        observed: Option<Value>,
    },
    /// A committed transaction read, before writing it, a value it writes later.
    FutureRead {
        /// The reader.
        reader: TxnId,
        /// The key.
        key: Key,
        /// What it read.
        observed: Value,
    },
    /// A read after the transaction's own write of the key did not return that write.
    OwnWriteLost {
        /// The reader.
        reader: TxnId,
        /// The key.
        key: Key,
        /// What it read.
        observed: Option<Value>,
        /// Its latest earlier write of the key.
        expected: Option<Value>,
    },
    /// G1a: a committed transaction read a write of an aborted one.
    AbortedRead {
        /// The reader.
        reader: TxnId,
        /// The aborted writer.
        writer: TxnId,
        /// The key.
        key: Key,
        /// The value read.
        observed: Value,
    },
    /// G1b: a committed transaction read a write that was not its writer's final write of
    /// the key.
    IntermediateRead {
        /// The reader.
        reader: TxnId,
        /// The writer.
        writer: TxnId,
        /// The key.
        key: Key,
        /// The value read.
        observed: Value,
    },
    /// A cycle in the direct serialization graph.
    Cycle {
        /// Its class.
        kind: CycleKind,
        /// Its edges, each ending where the next begins.
        edges: Vec<Dependency>,
    },
    /// Snapshot isolation: a read did not return the value of the reader's snapshot.
    SnapshotRead {
        /// The reader.
        reader: TxnId,
        /// Its snapshot.
        start_ts: Timestamp,
        /// The key.
        key: Key,
        /// What it read.
        observed: Option<Value>,
        /// What the snapshot holds.
        expected: Option<Value>,
        /// The transaction that wrote `expected` ([`INITIAL_TXN`] for the initial state).
        expected_writer: TxnId,
    },
    /// Snapshot isolation: two concurrent committed transactions wrote the same key (first
    /// committer wins was not enforced).
    ConcurrentWrites {
        /// The key.
        key: Key,
        /// The first to commit.
        first: TxnId,
        /// Its commit timestamp.
        first_commit_ts: Timestamp,
        /// The second to commit.
        second: TxnId,
        /// Its start timestamp, at or before `first_commit_ts`.
        second_start_ts: Timestamp,
    },
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Anomaly::Malformed { txn: Some(t), reason } => {
                write!(f, "malformed history: T{t}: {reason}")
            }
            Anomaly::Malformed { txn: None, reason } => write!(f, "malformed history: {reason}"),
            Anomaly::UnknownValue {
                reader,
                key,
                observed,
            } => write!(
                f,
                "T{reader} read {}={}, which no transaction wrote",
                show(key),
                show_opt(observed.as_deref())
            ),
            Anomaly::FutureRead {
                reader,
                key,
                observed,
            } => write!(
                f,
                "T{reader} read {}={} before writing that value itself",
                show(key),
                show(observed)
            ),
            Anomaly::OwnWriteLost {
                reader,
                key,
                observed,
                expected,
            } => write!(
                f,
                "T{reader} read {}={} after writing {}",
                show(key),
                show_opt(observed.as_deref()),
                show_opt(expected.as_deref())
            ),
            Anomaly::AbortedRead {
                reader,
                writer,
                key,
                observed,
            } => write!(
                f,
                "G1a (aborted read): T{reader} read {}={} written by aborted T{writer}",
                show(key),
                show(observed)
            ),
            Anomaly::IntermediateRead {
                reader,
                writer,
                key,
                observed,
            } => write!(
                f,
                "G1b (intermediate read): T{reader} read {}={}, not T{writer}'s final write",
                show(key),
                show(observed)
            ),
            Anomaly::Cycle { kind, edges } => {
                write!(f, "{kind}:")?;
                for e in edges {
                    write!(f, " T{} -{}({})->", e.from, e.kind, show(&e.key))?;
                }
                if let Some(first) = edges.first() {
                    write!(f, " T{}", first.from)?;
                }
                Ok(())
            }
            Anomaly::SnapshotRead {
                reader,
                start_ts,
                key,
                observed,
                expected,
                expected_writer,
            } => write!(
                f,
                "T{reader} read {}={}, but its snapshot at {start_ts} holds {} (from T{expected_writer})",
                show(key),
                show_opt(observed.as_deref()),
                show_opt(expected.as_deref())
            ),
            Anomaly::ConcurrentWrites {
                key,
                first,
                first_commit_ts,
                second,
                second_start_ts,
            } => write!(
                f,
                "lost update: concurrent T{first} and T{second} both wrote {} (T{second} started at \
                 {second_start_ts}, T{first} committed at {first_commit_ts}; first committer \
                 must win)",
                show(key)
            ),
        }
    }
}

impl std::error::Error for Anomaly {}

fn show(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

fn show_opt(value: Option<&[u8]>) -> String {
    value.map_or_else(|| "<absent>".to_string(), show)
}

/// One committed version of a key.
#[derive(Debug, Clone, Copy)]
struct Version<'h> {
    writer: TxnId,
    start_ts: Timestamp,
    commit_ts: Timestamp,
    value: Option<&'h [u8]>,
}

/// Who wrote a (key, value) pair.
#[derive(Debug, Clone, Copy)]
struct WriteSite {
    writer: TxnId,
    committed: bool,
    is_final: bool,
}

/// An external read of a committed transaction, resolved to the version it observed.
#[derive(Debug)]
struct ResolvedRead<'h> {
    reader: TxnId,
    key: &'h [u8],
    version: usize,
}

/// What both checks need: the versions of every key and the resolved reads.
#[derive(Debug)]
struct Analysis<'h> {
    /// Per key, its versions in commit order, the initial state first.
    versions: BTreeMap<&'h [u8], Vec<Version<'h>>>,
    reads: Vec<ResolvedRead<'h>>,
}

impl<'h> Analysis<'h> {
    /// Validates the history, indexes its writes and resolves every read of a committed
    /// transaction, reporting the read anomalies.
    fn new(h: &'h History) -> Result<Analysis<'h>, Anomaly> {
        let malformed = |txn: Option<TxnId>, reason: String| Anomaly::Malformed { txn, reason };
        let mut ids = HashSet::new();
        let mut sites: HashMap<(&[u8], &[u8]), WriteSite> = HashMap::new();
        let mut versions: BTreeMap<&[u8], Vec<Version<'h>>> = BTreeMap::new();
        for (k, v) in &h.initial {
            sites.insert(
                (k, v),
                WriteSite {
                    writer: INITIAL_TXN,
                    committed: true,
                    is_final: true,
                },
            );
        }
        let initial_version = |key: &'h [u8]| Version {
            writer: INITIAL_TXN,
            start_ts: 0,
            commit_ts: 0,
            value: h.initial.get(key).map(Vec::as_slice),
        };
        for t in &h.txns {
            if t.id == INITIAL_TXN || !ids.insert(t.id) {
                return Err(malformed(Some(t.id), "duplicate or reserved id".into()));
            }
            if t.start_ts == 0 {
                return Err(malformed(
                    Some(t.id),
                    "start_ts 0 is the initial state's".into(),
                ));
            }
            let commit_ts = t.commit_ts();
            if t.is_committed() && t.has_writes() && commit_ts.is_none() {
                return Err(malformed(
                    Some(t.id),
                    "committed writes without a commit_ts".into(),
                ));
            }
            if commit_ts.is_some_and(|c| c <= t.start_ts) {
                return Err(malformed(
                    Some(t.id),
                    "commit_ts is not after start_ts".into(),
                ));
            }
            // The final write of each key is the version the transaction installs.
            let mut last: BTreeMap<&[u8], (usize, Option<&[u8]>)> = BTreeMap::new();
            for (i, op) in t.ops.iter().enumerate() {
                if let Op::Write { key, value } = op {
                    last.insert(key, (i, value.as_deref()));
                }
            }
            for (i, op) in t.ops.iter().enumerate() {
                let (key, written) = match op {
                    Op::Read { key, .. } => (key.as_slice(), None),
                    Op::Write { key, value } => (key.as_slice(), value.as_deref()),
                };
                versions
                    .entry(key)
                    .or_insert_with(|| vec![initial_version(key)]);
                let Some(value) = written else {
                    continue;
                };
                let site = WriteSite {
                    writer: t.id,
                    committed: t.is_committed(),
                    is_final: last.get(key).is_some_and(|&(j, _)| j == i),
                };
                if sites.insert((key, value), site).is_some() {
                    return Err(malformed(
                        Some(t.id),
                        format!(
                            "value {} of key {} is written twice (values must be unique)",
                            show(value),
                            show(key)
                        ),
                    ));
                }
            }
            if let Some(commit_ts) = commit_ts {
                for (key, (_, value)) in last {
                    versions
                        .entry(key)
                        .or_insert_with(|| vec![initial_version(key)])
                        .push(Version {
                            writer: t.id,
                            start_ts: t.start_ts,
                            commit_ts,
                            value,
                        });
                }
            }
        }
        for (key, vs) in &mut versions {
            vs.sort_by_key(|v| v.commit_ts);
            if let Some(w) = vs.windows(2).find(|w| w[0].commit_ts == w[1].commit_ts) {
                return Err(malformed(
                    Some(w[1].writer),
                    format!(
                        "T{} and T{} both wrote {} at commit_ts {}",
                        w[0].writer,
                        w[1].writer,
                        show(key),
                        w[1].commit_ts
                    ),
                ));
            }
        }

        let mut reads = Vec::new();
        for t in h.txns.iter().filter(|t| t.is_committed()) {
            let mut own: HashMap<&[u8], Option<&[u8]>> = HashMap::new();
            for op in &t.ops {
                let (key, observed) = match op {
                    Op::Write { key, value } => {
                        own.insert(key, value.as_deref());
                        continue;
                    }
                    Op::Read { key, observed } => (key.as_slice(), observed.as_deref()),
                };
                if let Some(&expected) = own.get(key) {
                    if observed != expected {
                        return Err(Anomaly::OwnWriteLost {
                            reader: t.id,
                            key: key.to_vec(),
                            observed: observed.map(<[u8]>::to_vec),
                            expected: expected.map(<[u8]>::to_vec),
                        });
                    }
                    continue;
                }
                let vs = &versions[key];
                let version = match observed {
                    Some(value) => {
                        let Some(site) = sites.get(&(key, value)) else {
                            return Err(Anomaly::UnknownValue {
                                reader: t.id,
                                key: key.to_vec(),
                                observed: Some(value.to_vec()),
                            });
                        };
                        let anomaly = if site.writer == t.id {
                            Some(Anomaly::FutureRead {
                                reader: t.id,
                                key: key.to_vec(),
                                observed: value.to_vec(),
                            })
                        } else if !site.committed {
                            Some(Anomaly::AbortedRead {
                                reader: t.id,
                                writer: site.writer,
                                key: key.to_vec(),
                                observed: value.to_vec(),
                            })
                        } else if !site.is_final {
                            Some(Anomaly::IntermediateRead {
                                reader: t.id,
                                writer: site.writer,
                                key: key.to_vec(),
                                observed: value.to_vec(),
                            })
                        } else {
                            None
                        };
                        if let Some(anomaly) = anomaly {
                            return Err(anomaly);
                        }
                        vs.iter()
                            .position(|v| v.writer == site.writer)
                            .expect("a committed final write is a version")
                    }
                    None => {
                        // Not recoverable: pick the absent version the snapshot names.
                        let absent = || {
                            vs.iter()
                                .enumerate()
                                .filter(|(_, v)| v.value.is_none() && v.writer != t.id)
                                .map(|(i, _)| i)
                        };
                        let Some(version) = absent()
                            .rfind(|&i| vs[i].commit_ts < t.start_ts)
                            .or_else(|| absent().next())
                        else {
                            return Err(Anomaly::UnknownValue {
                                reader: t.id,
                                key: key.to_vec(),
                                observed: None,
                            });
                        };
                        version
                    }
                };
                reads.push(ResolvedRead {
                    reader: t.id,
                    key,
                    version,
                });
            }
        }
        Ok(Analysis { versions, reads })
    }

    /// The edges of the direct serialization graph, ww before wr before rw.
    fn dependencies(&self) -> Vec<Dependency> {
        let mut edges = Vec::new();
        for (key, vs) in &self.versions {
            for w in vs.windows(2) {
                edges.push(Dependency {
                    from: w[0].writer,
                    to: w[1].writer,
                    kind: EdgeKind::Ww,
                    key: key.to_vec(),
                });
            }
        }
        for r in &self.reads {
            let vs = &self.versions[r.key];
            let writer = vs[r.version].writer;
            edges.push(Dependency {
                from: writer,
                to: r.reader,
                kind: EdgeKind::Wr,
                key: r.key.to_vec(),
            });
            if let Some(next) = vs.get(r.version + 1) {
                if next.writer != r.reader {
                    edges.push(Dependency {
                        from: r.reader,
                        to: next.writer,
                        kind: EdgeKind::Rw,
                        key: r.key.to_vec(),
                    });
                }
            }
        }
        edges.sort_by_key(|e| e.kind);
        edges
    }
}

/// Checks that the committed transactions of `h` are conflict-serializable (no cycle in
/// Adya's direct serialization graph, version order = commit order) and that none read an
/// aborted, intermediate or unknown write.
pub fn check_serializable(h: &History) -> Result<(), Anomaly> {
    let analysis = Analysis::new(h)?;
    let edges = analysis.dependencies();
    let phases: [&[EdgeKind]; 3] = [
        &[EdgeKind::Ww],
        &[EdgeKind::Ww, EdgeKind::Wr],
        &[EdgeKind::Ww, EdgeKind::Wr, EdgeKind::Rw],
    ];
    for kinds in phases {
        let subset: Vec<&Dependency> = edges.iter().filter(|e| kinds.contains(&e.kind)).collect();
        if let Some(cycle) = find_cycle(&subset) {
            let rw = cycle.iter().filter(|e| e.kind == EdgeKind::Rw).count();
            let kind = match (rw, cycle.iter().all(|e| e.kind == EdgeKind::Ww)) {
                (_, true) => CycleKind::G0,
                (0, false) => CycleKind::G1c,
                (1, _) => CycleKind::GSingle,
                _ => CycleKind::G2,
            };
            return Err(Anomaly::Cycle { kind, edges: cycle });
        }
    }
    Ok(())
}

/// A cycle of `edges` (a shortest one through one of its nodes), if there is one.
fn find_cycle(edges: &[&Dependency]) -> Option<Vec<Dependency>> {
    // Parallel edges: keep the first (the strictest kind).
    let mut out: BTreeMap<TxnId, BTreeMap<TxnId, &Dependency>> = BTreeMap::new();
    let mut indegree: BTreeMap<TxnId, usize> = BTreeMap::new();
    for e in edges {
        indegree.entry(e.from).or_default();
        if e.from == e.to {
            continue;
        }
        if let std::collections::btree_map::Entry::Vacant(slot) =
            out.entry(e.from).or_default().entry(e.to)
        {
            slot.insert(e);
            *indegree.entry(e.to).or_default() += 1;
        }
    }
    // Kahn: whatever cannot be ordered lies on or behind a cycle.
    let mut ready: VecDeque<TxnId> = indegree
        .iter()
        .filter(|(_, &d)| d == 0)
        .map(|(&n, _)| n)
        .collect();
    while let Some(n) = ready.pop_front() {
        indegree.remove(&n);
        for to in out.get(&n).into_iter().flat_map(BTreeMap::keys) {
            if let Some(d) = indegree.get_mut(to) {
                *d -= 1;
                if *d == 0 {
                    ready.push_back(*to);
                }
            }
        }
    }
    // Every remaining node has a remaining predecessor: walk back until a node repeats.
    let mut preds: HashMap<TxnId, TxnId> = HashMap::new();
    for (&from, tos) in &out {
        for &to in tos.keys() {
            if indegree.contains_key(&from) && indegree.contains_key(&to) {
                preds.entry(to).or_insert(from);
            }
        }
    }
    let mut node = *indegree.keys().next()?;
    let mut seen = HashSet::new();
    while seen.insert(node) {
        node = preds[&node];
    }
    // `node` is on a cycle: the shortest way back to it (breadth first).
    let mut parent: HashMap<TxnId, TxnId> = HashMap::new();
    let mut queue = VecDeque::from([node]);
    while let Some(n) = queue.pop_front() {
        for &to in out.get(&n).into_iter().flat_map(BTreeMap::keys) {
            if !indegree.contains_key(&to) || parent.contains_key(&to) {
                continue;
            }
            parent.insert(to, n);
            if to == node {
                let mut path = vec![to];
                let mut at = n;
                while at != node {
                    path.push(at);
                    at = parent[&at];
                }
                path.push(node);
                path.reverse();
                return Some(path.windows(2).map(|w| out[&w[0]][&w[1]].clone()).collect());
            }
            queue.push_back(to);
        }
    }
    unreachable!("a node on a cycle reaches itself")
}

/// Checks that `h` is snapshot isolated by the timestamp definition: every read of a
/// committed transaction returns its own latest earlier write of the key, else the final
/// write of the latest writer committed before its `start_ts` (else the initial state); no
/// two committed transactions with overlapping `[start_ts, commit_ts]` write the same key;
/// and no committed transaction read an aborted, intermediate or unknown write.
pub fn check_snapshot_isolation(h: &History) -> Result<(), Anomaly> {
    let analysis = Analysis::new(h)?;
    for t in h.txns.iter().filter(|t| t.is_committed()) {
        let mut own: HashSet<&[u8]> = HashSet::new();
        for op in &t.ops {
            let (key, observed) = match op {
                Op::Write { key, .. } => {
                    own.insert(key);
                    continue;
                }
                Op::Read { key, observed } => (key.as_slice(), observed.as_deref()),
            };
            if own.contains(key) {
                continue; // checked against its own write by Analysis::new
            }
            let snapshot = analysis.versions[key]
                .iter()
                .rev()
                .find(|v| v.commit_ts < t.start_ts)
                .expect("the initial version precedes every start_ts");
            if observed != snapshot.value {
                return Err(Anomaly::SnapshotRead {
                    reader: t.id,
                    start_ts: t.start_ts,
                    key: key.to_vec(),
                    observed: observed.map(<[u8]>::to_vec),
                    expected: snapshot.value.map(<[u8]>::to_vec),
                    expected_writer: snapshot.writer,
                });
            }
        }
    }
    // First committer wins. If a writer overlaps any earlier writer of the key, it
    // overlaps the one just before it in commit order.
    for (key, vs) in &analysis.versions {
        for w in vs[1..].windows(2) {
            if w[1].start_ts <= w[0].commit_ts {
                return Err(Anomaly::ConcurrentWrites {
                    key: key.to_vec(),
                    first: w[0].writer,
                    first_commit_ts: w[0].commit_ts,
                    second: w[1].writer,
                    second_start_ts: w[1].start_ts,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(initial: &[(&str, &str)], txns: Vec<TxnRecord>) -> History {
        History {
            initial: initial
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
            txns,
        }
    }

    fn t(id: TxnId, start_ts: Timestamp) -> TxnRecord {
        TxnRecord::new(id, start_ts)
    }

    fn cycle_kind(r: Result<(), Anomaly>) -> CycleKind {
        match r {
            Err(Anomaly::Cycle { kind, edges }) => {
                assert!(edges.windows(2).all(|w| w[0].to == w[1].from));
                assert_eq!(edges.last().map(|e| e.to), edges.first().map(|e| e.from));
                kind
            }
            other => panic!("expected a cycle, got {other:?}"),
        }
    }

    #[test]
    fn a_serial_history_passes_both() {
        let h = history(
            &[("x", "x0"), ("y", "y0")],
            vec![
                t(1, 1)
                    .read("x", "x0")
                    .write("x", "x1")
                    .read("x", "x1")
                    .committed(Some(2)),
                t(2, 3)
                    .read("x", "x1")
                    .read("y", "y0")
                    .delete("y")
                    .read_absent("y")
                    .committed(Some(4)),
                t(3, 5).read("x", "x1").read_absent("y").committed(None),
                t(4, 6).read_absent("z").write("z", "z4").committed(Some(7)),
                t(5, 6).write("x", "never").aborted(),
            ],
        );
        check_serializable(&h).unwrap();
        check_snapshot_isolation(&h).unwrap();
    }

    #[test]
    fn write_skew_is_snapshot_isolated_but_not_serializable() {
        let h = history(
            &[("x", "x0"), ("y", "y0")],
            vec![
                t(1, 1)
                    .read("x", "x0")
                    .read("y", "y0")
                    .write("x", "x1")
                    .committed(Some(3)),
                t(2, 2)
                    .read("x", "x0")
                    .read("y", "y0")
                    .write("y", "y2")
                    .committed(Some(4)),
            ],
        );
        check_snapshot_isolation(&h).unwrap();
        let err = check_serializable(&h).unwrap_err();
        assert!(err.to_string().starts_with("G2"), "{err}");
        assert_eq!(cycle_kind(Err(err)), CycleKind::G2);
    }

    #[test]
    fn lost_update_fails_both() {
        let h = history(
            &[("x", "x0")],
            vec![
                t(1, 1).read("x", "x0").write("x", "x1").committed(Some(3)),
                t(2, 2).read("x", "x0").write("x", "x2").committed(Some(4)),
            ],
        );
        let err = check_snapshot_isolation(&h).unwrap_err();
        assert!(
            matches!(
                err,
                Anomaly::ConcurrentWrites {
                    first: 1,
                    second: 2,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("first committer"));
        // rw 2 -> 1 (2 read x0, 1 wrote the next version), ww 1 -> 2.
        assert_eq!(cycle_kind(check_serializable(&h)), CycleKind::GSingle);
    }

    #[test]
    fn blind_concurrent_writes_fail_first_committer_wins_only() {
        // Without reads the writes serialize (in commit order) but SI still forbids them.
        let h = history(
            &[],
            vec![
                t(1, 1).write("x", "x1").committed(Some(3)),
                t(2, 2).write("x", "x2").committed(Some(4)),
            ],
        );
        check_serializable(&h).unwrap();
        assert!(matches!(
            check_snapshot_isolation(&h),
            Err(Anomaly::ConcurrentWrites { .. })
        ));
    }

    #[test]
    fn read_skew_fails_both() {
        let h = history(
            &[("x", "x0"), ("y", "y0")],
            vec![
                t(1, 1).read("x", "x0").read("y", "y2").committed(None),
                t(2, 2).write("x", "x2").write("y", "y2").committed(Some(3)),
            ],
        );
        let err = check_snapshot_isolation(&h).unwrap_err();
        assert!(
            matches!(
                &err,
                Anomaly::SnapshotRead { reader: 1, expected: Some(v), expected_writer: 0, .. }
                    if v == b"y0"
            ),
            "{err}"
        );
        assert_eq!(cycle_kind(check_serializable(&h)), CycleKind::GSingle);
    }

    #[test]
    fn reading_an_aborted_write_is_g1a() {
        let h = history(
            &[("x", "x0")],
            vec![
                t(1, 1).write("x", "x1").aborted(),
                t(2, 2).read("x", "x1").committed(None),
            ],
        );
        for check in [check_serializable, check_snapshot_isolation] {
            let err = check(&h).unwrap_err();
            assert!(
                matches!(
                    err,
                    Anomaly::AbortedRead {
                        reader: 2,
                        writer: 1,
                        ..
                    }
                ),
                "{err}"
            );
            assert!(err.to_string().starts_with("G1a"));
        }
    }

    #[test]
    fn reading_an_intermediate_write_is_g1b() {
        let h = history(
            &[("x", "x0")],
            vec![
                t(1, 1)
                    .write("x", "x1a")
                    .write("x", "x1b")
                    .committed(Some(2)),
                t(2, 3).read("x", "x1a").committed(None),
            ],
        );
        for check in [check_serializable, check_snapshot_isolation] {
            let err = check(&h).unwrap_err();
            assert!(
                matches!(
                    err,
                    Anomaly::IntermediateRead {
                        reader: 2,
                        writer: 1,
                        ..
                    }
                ),
                "{err}"
            );
            assert!(err.to_string().starts_with("G1b"));
        }
    }

    #[test]
    fn the_read_only_anomaly_is_snapshot_isolated_but_not_serializable() {
        // Fekete, O'Neil, O'Neil 2004: T2 withdraws from checking after reading both
        // balances, T1 deposits to savings, T3 reads both in between.
        let h = history(
            &[("checking", "c0"), ("savings", "s0")],
            vec![
                t(2, 1)
                    .read("checking", "c0")
                    .read("savings", "s0")
                    .write("checking", "c2")
                    .committed(Some(8)),
                t(1, 2)
                    .read("savings", "s0")
                    .write("savings", "s1")
                    .committed(Some(4)),
                t(3, 5)
                    .read("checking", "c0")
                    .read("savings", "s1")
                    .committed(None),
            ],
        );
        check_snapshot_isolation(&h).unwrap();
        let Err(Anomaly::Cycle { kind, edges }) = check_serializable(&h) else {
            panic!("expected a cycle")
        };
        assert_eq!(kind, CycleKind::G2);
        let mut txns: Vec<TxnId> = edges.iter().map(|e| e.from).collect();
        txns.sort_unstable();
        assert_eq!(txns, [1, 2, 3], "the cycle goes through the read-only T3");
    }

    #[test]
    fn circular_information_flow_is_g1c() {
        // Each reads the other's write: no serial order explains it. (G0 cannot occur:
        // the version order is commit order, so ww edges never form a cycle alone.)
        let h = history(
            &[],
            vec![
                t(1, 1).write("x", "x1").read("y", "y2").committed(Some(3)),
                t(2, 2).write("y", "y2").read("x", "x1").committed(Some(4)),
            ],
        );
        assert_eq!(cycle_kind(check_serializable(&h)), CycleKind::G1c);
        assert!(check_snapshot_isolation(&h).is_err());
    }

    #[test]
    fn a_stale_read_is_serializable_but_not_snapshot_isolated() {
        // T3 read x1 although x2 committed before T3 started: T1, T3, T2 is a serial
        // order, but not T3's snapshot.
        let h = history(
            &[],
            vec![
                t(1, 1).write("x", "x1").committed(Some(2)),
                t(2, 3).write("x", "x2").committed(Some(4)),
                t(3, 5).read("x", "x1").committed(None),
            ],
        );
        check_serializable(&h).unwrap();
        assert!(matches!(
            check_snapshot_isolation(&h),
            Err(Anomaly::SnapshotRead { reader: 3, .. })
        ));
    }

    #[test]
    fn own_writes_future_reads_and_unknown_values_are_reported() {
        let own = history(
            &[("x", "x0")],
            vec![t(1, 1).write("x", "x1").read("x", "x0").committed(Some(2))],
        );
        assert!(matches!(
            check_serializable(&own),
            Err(Anomaly::OwnWriteLost { reader: 1, .. })
        ));
        let future = history(
            &[],
            vec![t(1, 1).read("x", "x1").write("x", "x1").committed(Some(2))],
        );
        assert!(matches!(
            check_snapshot_isolation(&future),
            Err(Anomaly::FutureRead { reader: 1, .. })
        ));
        let unknown = history(&[], vec![t(1, 1).read("x", "zz").committed(None)]);
        assert!(matches!(
            check_serializable(&unknown),
            Err(Anomaly::UnknownValue { reader: 1, .. })
        ));
        let never_absent = history(
            &[("x", "x0")],
            vec![t(1, 1).read_absent("x").committed(None)],
        );
        assert!(matches!(
            check_serializable(&never_absent),
            Err(Anomaly::UnknownValue { observed: None, .. })
        ));
    }

    #[test]
    fn malformed_histories_are_refused() {
        let dup_value = history(
            &[("x", "v")],
            vec![t(1, 1).write("x", "v").committed(Some(2))],
        );
        let no_commit_ts = history(&[], vec![t(1, 1).write("x", "v").committed(None)]);
        let dup_id = history(&[], vec![t(1, 1).committed(None), t(1, 2).committed(None)]);
        let backwards = history(&[], vec![t(1, 5).write("x", "v").committed(Some(5))]);
        for h in [dup_value, no_commit_ts, dup_id, backwards] {
            assert!(matches!(
                check_serializable(&h),
                Err(Anomaly::Malformed { .. })
            ));
            assert!(matches!(
                check_snapshot_isolation(&h),
                Err(Anomaly::Malformed { .. })
            ));
        }
    }

    #[test]
    fn reads_of_deleted_keys_use_the_snapshot_to_pick_a_version() {
        // x: x0, deleted by T1 (ts 2), rewritten by T2 (ts 4), deleted by T3 (ts 6). A
        // reader at 5 that saw it absent would be stale; at 3 it is not.
        let writers = || {
            vec![
                t(1, 1).delete("x").committed(Some(2)),
                t(2, 3).write("x", "x2").committed(Some(4)),
                t(3, 5).delete("x").committed(Some(6)),
            ]
        };
        let mut ok = history(&[("x", "x0")], writers());
        ok.push(t(4, 3).read_absent("x").committed(None));
        check_serializable(&ok).unwrap();
        check_snapshot_isolation(&ok).unwrap();
        let mut stale = history(&[("x", "x0")], writers());
        stale.push(t(4, 5).read_absent("x").committed(None));
        assert!(matches!(
            check_snapshot_isolation(&stale),
            Err(Anomaly::SnapshotRead { reader: 4, .. })
        ));
    }

    #[test]
    fn anomalies_display_readably() {
        let h = history(
            &[("x", "x0"), ("y", "y0")],
            vec![
                t(1, 1).read("y", "y0").write("x", "x1").committed(Some(3)),
                t(2, 2).read("x", "x0").write("y", "y2").committed(Some(4)),
            ],
        );
        let text = check_serializable(&h).unwrap_err().to_string();
        assert!(
            text.contains("-rw(x)->") && text.contains("-rw(y)->"),
            "{text}"
        );
        let shown = h.to_string();
        assert!(
            shown.contains("T1 [start 1, commit 3] r(y)=y0 w(x)=x1"),
            "{shown}"
        );
    }
}
