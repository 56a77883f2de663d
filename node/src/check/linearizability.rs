//! Linearizability of key-value histories recorded from concurrent clients.
//!
//! A [`ConcurrentHistory`] is what clients saw of single-key operations: for each
//! [`Operation`] the client, the key, the input, the call time and either the return time
//! with the output or nothing ([`Completion::Unknown`]: the client timed out, lost its
//! connection or was told the outcome is unknown). Times are nanoseconds on one monotonic
//! clock (a [`HistoryRecorder`]'s). The history is linearizable if every operation can be
//! given a point between its call and its return at which it takes effect, atomically, such
//! that the operations in point order are a legal run of the [`Model`] from its initial
//! state. An operation with an unknown outcome may take effect at any point after its call,
//! or never; an unknown read constrains nothing and is dropped
//! ([`Model::is_read_only`]). Definite failures (refused before the request was sent) are
//! not in the history at all ([`HistoryRecorder::fail`]).
//!
//! The check ([`check`], or [`check_register`] for the [`Register`] model) runs in two steps:
//!
//! ```text
//!   history ──► split by key ──► per key, in key order: depth-first search ──► Verdict
//!                (operations on different keys never constrain each other)
//! ```
//!
//! **Split by key.** Linearizability is local (Herlihy and Wing's P-compositionality): a
//! history is linearizable iff its restriction to each object is. A register per key makes
//! each key its own search, with a search space exponential in the key's concurrency only.
//!
//! **Search** (Wing and Gong's algorithm with Lowe's memoization, the form Porcupine uses).
//! The key's calls and returns are put in one list in time order (a call before a return at
//! the same instant, so equal timestamps count as concurrent). Then, from the list's head:
//!
//! ```text
//!   entry = a call of op  ── model.step(state, op) legal and (linearized ∪ {op}, new state)
//!   │                        not seen before? ── yes: push op, lift its call and return out
//!   │                                                 of the list, restart from the head
//!   │                      └ no: next entry
//!   entry = a return of op ── op had to take effect before here but nothing more fits:
//!                             pop the last op, put its entries back, state back, and go on
//!                             from the entry after its call (empty stack: not linearizable)
//!   no return left ────────── linearizable (what remains are unknown-outcome calls)
//! ```
//!
//! The cache of (linearized set as a bitset, state) pairs prunes orders that reach a
//! configuration already explored; it is what makes the search practical, and it is also
//! what [`Limits::max_states`] bounds. The search stops at that bound or at
//! [`Limits::deadline`] and returns [`Verdict::Unknown`] rather than running on: a history
//! with enough concurrency on one key is exponential to check whatever the algorithm.
//!
//! **Explanations.** When a key fails, the [`Violation`] names the key, the longest prefix
//! that could be linearized (the deepest stack the search reached, in linearization order),
//! the model state after it, and the operation whose return the search then could not get
//! past: the operation that could not be placed. For a stale read that is the read; for two
//! compare-and-sets that both succeeded from the same value, the second one.
//!
//! The checker is generic over a [`Model`] with states that can be compared and hashed (the
//! cache needs both). [`Register`] is the model for Strata's keys: reads, writes and
//! compare-and-set on byte-string values, absent at first. A test that wants initial
//! values writes them first, before any other call.

mod recorder;
mod register;
mod search;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::hash::Hash;
use std::time::Instant;

pub use self::recorder::{HistoryRecorder, OpToken, RegisterRecorder};
pub use self::register::{
    check_register, Register, RegisterHistory, RegisterInput, RegisterOutput,
};
use super::history::Key;

/// Identifies the client that issued an operation (for explanations; the check orders
/// operations by time alone).
pub type ClientId = u64;

/// The default for [`Limits::max_states`].
pub const DEFAULT_MAX_STATES: u64 = 200_000;

/// A sequential specification of one object (for Strata, one key).
pub trait Model {
    /// The object's state. Equality and hashing let the search recognise a configuration
    /// it has explored.
    type State: Clone + Eq + Hash;
    /// What a client asked.
    type Input;
    /// What a client was answered.
    type Output;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// The state after `input` takes effect in `state` answering `output`, or `None` if it
    /// cannot answer that there. `output` is `None` for an operation whose outcome is
    /// unknown: return the state it leaves if it took effect with some answer (an effect
    /// equivalent to none, such as a compare-and-set that fails, can return `None`: the
    /// search may always leave such an operation out).
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State>;

    /// Whether `input` never changes the state. Such operations with an unknown outcome are
    /// dropped before the search.
    fn is_read_only(&self, _input: &Self::Input) -> bool {
        false
    }

    /// A short text for an operation in explanations (`None`: outcome unknown).
    fn describe_operation(&self, input: &Self::Input, output: Option<&Self::Output>) -> String;

    /// A short text for a state in explanations.
    fn describe_state(&self, state: &Self::State) -> String;
}

/// How an operation ended, as its client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion<O> {
    /// The client got an answer at `at`.
    Returned {
        /// The return time (same clock as the call).
        at: u64,
        /// The answer.
        output: O,
    },
    /// No answer (timeout, connection lost, an "outcome unknown" error): the operation may
    /// have taken effect at any point after its call, or never.
    Unknown,
}

impl<O> Completion<O> {
    /// The output, if the operation returned.
    pub fn output(&self) -> Option<&O> {
        match self {
            Completion::Returned { output, .. } => Some(output),
            Completion::Unknown => None,
        }
    }

    /// The return time, if the operation returned.
    pub fn returned_at(&self) -> Option<u64> {
        match self {
            Completion::Returned { at, .. } => Some(*at),
            Completion::Unknown => None,
        }
    }
}

/// One operation on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation<I, O> {
    /// Who issued it.
    pub client: ClientId,
    /// The key (the object) it is on.
    pub key: Key,
    /// What was asked.
    pub input: I,
    /// When it was called (nanoseconds on the history's clock).
    pub call: u64,
    /// How it ended.
    pub completion: Completion<O>,
}

impl<I, O> Operation<I, O> {
    /// An operation called at `call` that returned `output` at `ret`.
    pub fn returned(
        client: ClientId,
        key: impl Into<Key>,
        input: I,
        call: u64,
        ret: u64,
        output: O,
    ) -> Self {
        Operation {
            client,
            key: key.into(),
            input,
            call,
            completion: Completion::Returned { at: ret, output },
        }
    }

    /// An operation called at `call` whose outcome is unknown.
    pub fn unknown(client: ClientId, key: impl Into<Key>, input: I, call: u64) -> Self {
        Operation {
            client,
            key: key.into(),
            input,
            call,
            completion: Completion::Unknown,
        }
    }
}

/// A recorded history of operations from concurrent clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConcurrentHistory<I, O> {
    /// The operations, in any order; explanations refer to them by index here.
    pub ops: Vec<Operation<I, O>>,
}

impl<I, O> Default for ConcurrentHistory<I, O> {
    fn default() -> Self {
        ConcurrentHistory { ops: Vec::new() }
    }
}

impl<I, O> ConcurrentHistory<I, O> {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an operation; returns its index.
    pub fn push(&mut self, op: Operation<I, O>) -> usize {
        self.ops.push(op);
        self.ops.len() - 1
    }

    /// The number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// How much work a check may do before it gives up with [`Verdict::Unknown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most distinct configurations (linearized set, state) the search of one key may
    /// cache. It bounds both time and memory (each costs a bitset of the key's operations
    /// and a state).
    pub max_states: u64,
    /// When to stop, over all keys.
    pub deadline: Option<Instant>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_states: DEFAULT_MAX_STATES,
            deadline: None,
        }
    }
}

impl Limits {
    /// These limits with `max_states`.
    pub fn with_max_states(mut self, max_states: u64) -> Self {
        self.max_states = max_states;
        self
    }

    /// These limits with a deadline.
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }
}

/// What stopped an undecided search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// [`Limits::max_states`] configurations were explored.
    States(u64),
    /// [`Limits::deadline`] passed.
    Deadline,
}

/// A key whose search hit a bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undecided {
    /// The first key found undecided.
    pub key: Key,
    /// Its number of operations.
    pub ops: usize,
    /// The configurations its search explored.
    pub states: u64,
    /// What stopped it.
    pub bound: Bound,
    /// How many keys were left undecided or unchecked in all (at least 1).
    pub keys: usize,
}

/// An operation, as an explanation shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpSummary {
    /// Its index in [`ConcurrentHistory::ops`].
    pub index: usize,
    /// Its client.
    pub client: ClientId,
    /// Its call time.
    pub call: u64,
    /// Its return time (`None`: outcome unknown).
    pub ret: Option<u64>,
    /// The model's description of it.
    pub description: String,
}

/// Why a key's history is not linearizable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The key.
    pub key: Key,
    /// The longest linearizable prefix the search found, in linearization order.
    pub prefix: Vec<OpSummary>,
    /// The model's state after `prefix`.
    pub state: String,
    /// The operation that could not be placed after `prefix`: it had to take effect before
    /// its return, and no order of the operations called by then let it.
    pub stuck: OpSummary,
}

/// The result of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every key's history is linearizable.
    Linearizable,
    /// A key's history is not (a violation wins over keys left undecided).
    NotLinearizable(Violation),
    /// No key is known to be non-linearizable, but at least one search hit a bound.
    Unknown(Undecided),
    /// The history is not well formed (e.g. an operation returned before its call).
    Malformed {
        /// The index of the offending operation.
        op: usize,
        /// What is wrong.
        reason: String,
    },
}

impl Verdict {
    /// Whether the history was found linearizable.
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }

    /// The violation, if one was found.
    pub fn violation(&self) -> Option<&Violation> {
        match self {
            Verdict::NotLinearizable(v) => Some(v),
            _ => None,
        }
    }
}

/// Checks that `history` is linearizable with respect to `model` (one object per key),
/// within `limits`.
pub fn check<M: Model>(
    model: &M,
    history: &ConcurrentHistory<M::Input, M::Output>,
    limits: &Limits,
) -> Verdict {
    let mut by_key: BTreeMap<&Key, Vec<usize>> = BTreeMap::new();
    for (i, op) in history.ops.iter().enumerate() {
        if let Some(ret) = op.completion.returned_at() {
            if ret < op.call {
                return Verdict::Malformed {
                    op: i,
                    reason: format!("returned at {ret}, before its call at {}", op.call),
                };
            }
        } else if model.is_read_only(&op.input) {
            continue; // an unknown read constrains nothing
        }
        by_key.entry(&op.key).or_default().push(i);
    }
    let total_keys = by_key.len();
    let mut undecided: Option<Undecided> = None;
    for (checked, (key, indices)) in by_key.into_iter().enumerate() {
        match search::linearize(model, &history.ops, &indices, limits) {
            search::Outcome::Linearizable => {}
            search::Outcome::Stuck {
                prefix,
                state,
                stuck,
            } => {
                let summary = |i: usize| summarize(model, &history.ops, i);
                return Verdict::NotLinearizable(Violation {
                    key: key.clone(),
                    prefix: prefix.into_iter().map(summary).collect(),
                    state: model.describe_state(&state),
                    stuck: summary(stuck),
                });
            }
            search::Outcome::Undecided { states, bound } => {
                let u = undecided.get_or_insert_with(|| Undecided {
                    key: key.clone(),
                    ops: indices.len(),
                    states,
                    bound,
                    keys: 0,
                });
                u.keys += 1;
                if bound == Bound::Deadline {
                    // Every later key would stop at once; count them as unchecked.
                    u.keys += total_keys - checked - 1;
                    break;
                }
            }
        }
    }
    undecided.map_or(Verdict::Linearizable, Verdict::Unknown)
}

fn summarize<M: Model>(model: &M, ops: &[Operation<M::Input, M::Output>], i: usize) -> OpSummary {
    let op = &ops[i];
    OpSummary {
        index: i,
        client: op.client,
        call: op.call,
        ret: op.completion.returned_at(),
        description: model.describe_operation(&op.input, op.completion.output()),
    }
}

fn show(bytes: &[u8]) -> String {
    format!("\"{}\"", bytes.escape_ascii())
}

/// How many prefix operations an explanation lists (the last ones, nearest the failure).
const SHOWN_PREFIX: usize = 20;

impl fmt::Display for OpSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} client {} [{}, ", self.index, self.client, self.call)?;
        match self.ret {
            Some(ret) => write!(f, "{ret}]")?,
            None => write!(f, "?]")?,
        }
        write!(f, " {}", self.description)
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "key {} is not linearizable: {} cannot be placed after the longest linearizable \
             prefix found ({} ops, leaving {})",
            show(&self.key),
            self.stuck,
            self.prefix.len(),
            self.state
        )?;
        let skipped = self.prefix.len().saturating_sub(SHOWN_PREFIX);
        if skipped > 0 {
            write!(f, "\n  ... {skipped} earlier")?;
        }
        for op in &self.prefix[skipped..] {
            write!(f, "\n  {op}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Linearizable => f.write_str("linearizable"),
            Verdict::NotLinearizable(v) => v.fmt(f),
            Verdict::Unknown(u) => {
                write!(
                    f,
                    "undecided: the search of key {} ({} ops) stopped after {} states",
                    show(&u.key),
                    u.ops,
                    u.states
                )?;
                match u.bound {
                    Bound::States(max) => write!(f, " (max_states {max})")?,
                    Bound::Deadline => write!(f, " (deadline)")?,
                }
                write!(f, "; {} key(s) undecided", u.keys)
            }
            Verdict::Malformed { op, reason } => write!(f, "malformed history: op #{op} {reason}"),
        }
    }
}
