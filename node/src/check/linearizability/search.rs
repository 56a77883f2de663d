//! The depth-first search over linearization points of one key's operations.
//!
//! The calls and returns form a doubly linked list in time order. Linearizing an operation
//! lifts its two entries out of the list; backtracking puts them back. Lifts are undone in
//! reverse order, so each entry keeps its old neighbours while it is out and relinking
//! restores the list exactly (Knuth's dancing links).
//!
//! Invariant of the loop: while some return remains in the list, the cursor is at or
//! before the first one. It holds at the head; a call that is not taken moves the cursor
//! one entry, never past a return; taking a call restarts from the head; and a backtrack
//! resumes after a call that was itself before the first return when it was taken, in the
//! list as it was then. So the cursor never runs off the end of the list.

use std::collections::HashMap;
use std::mem;
use std::time::Instant;

use super::{Bound, Limits, Model, Operation};

/// The result of one key's search. Operation indices are into the whole history.
pub(super) enum Outcome<S> {
    Linearizable,
    Stuck {
        prefix: Vec<usize>,
        state: S,
        stuck: usize,
    },
    Undecided {
        states: u64,
        bound: Bound,
    },
}

/// How many loop iterations pass between looks at the clock.
const DEADLINE_EVERY: u64 = 1024;

const HEAD: usize = 0;
const NIL: usize = usize::MAX;

/// A set of the key's operations (by position in its subset).
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }

    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

/// The entry list. Node 0 is the head; nodes 1.. are calls and returns in time order.
struct Entries {
    next: Vec<usize>,
    prev: Vec<usize>,
    /// The operation (position in the subset) of each node.
    op: Vec<usize>,
    is_call: Vec<bool>,
    /// The return node of each operation, if it returned.
    ret_node: Vec<Option<usize>>,
}

impl Entries {
    fn new<I, O>(ops: &[Operation<I, O>], subset: &[usize]) -> Entries {
        // (time, 0 for a call or 1 for a return, op): calls before returns at equal times.
        let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(subset.len() * 2);
        for (j, &i) in subset.iter().enumerate() {
            events.push((ops[i].call, 0, j));
            if let Some(at) = ops[i].completion.returned_at() {
                events.push((at, 1, j));
            }
        }
        events.sort_unstable();
        let n = events.len() + 1;
        let mut e = Entries {
            next: (1..=n).map(|x| if x == n { NIL } else { x }).collect(),
            prev: (0..n).map(|x| x.wrapping_sub(1)).collect(),
            op: Vec::with_capacity(n),
            is_call: Vec::with_capacity(n),
            ret_node: vec![None; subset.len()],
        };
        e.prev[HEAD] = NIL;
        e.op.push(NIL);
        e.is_call.push(false);
        for (node, &(_, kind, j)) in events.iter().enumerate().map(|(k, ev)| (k + 1, ev)) {
            e.op.push(j);
            e.is_call.push(kind == 0);
            if kind == 1 {
                e.ret_node[j] = Some(node);
            }
        }
        e
    }

    fn unlink(&mut self, x: usize) {
        let (p, n) = (self.prev[x], self.next[x]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, x: usize) {
        let (p, n) = (self.prev[x], self.next[x]);
        self.next[p] = x;
        if n != NIL {
            self.prev[n] = x;
        }
    }

    /// Takes a call and its return out of the list.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        if let Some(ret) = self.ret_node[self.op[call]] {
            self.unlink(ret);
        }
    }

    /// Undoes the last [`Entries::lift`], which must have been of `call`.
    fn unlift(&mut self, call: usize) {
        if let Some(ret) = self.ret_node[self.op[call]] {
            self.relink(ret);
        }
        self.relink(call);
    }
}

/// Searches for a linearization of the operations `subset` (indices into `ops`, all on one
/// key).
pub(super) fn linearize<M: Model>(
    model: &M,
    ops: &[Operation<M::Input, M::Output>],
    subset: &[usize],
    limits: &Limits,
) -> Outcome<M::State> {
    let mut entries = Entries::new(ops, subset);
    let mut pending_returns = entries.ret_node.iter().filter(|r| r.is_some()).count();
    let mut linearized = Bits::new(subset.len());
    let mut state = model.init();
    // The call nodes taken, each with the state before it.
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut cache: HashMap<Bits, Vec<M::State>> = HashMap::new();
    let mut states = 0u64;
    let mut iterations = 0u64;
    // The deepest dead end: (prefix, state after it, the operation that could not be placed).
    let mut deepest: Option<(Vec<usize>, M::State, usize)> = None;
    let mut cursor = entries.next[HEAD];

    while pending_returns > 0 {
        iterations += 1;
        if iterations.is_multiple_of(DEADLINE_EVERY)
            && limits.deadline.is_some_and(|d| Instant::now() >= d)
        {
            return Outcome::Undecided {
                states,
                bound: Bound::Deadline,
            };
        }
        debug_assert_ne!(cursor, NIL, "the cursor ran past the first return");
        let node = cursor;
        let j = entries.op[node];
        if entries.is_call[node] {
            let op = &ops[subset[j]];
            if let Some(next) = model.step(&state, &op.input, op.completion.output()) {
                linearized.set(j);
                let fresh = match cache.get_mut(&linearized) {
                    Some(seen) if seen.contains(&next) => false,
                    Some(seen) => {
                        seen.push(next.clone());
                        true
                    }
                    None => {
                        cache.insert(linearized.clone(), vec![next.clone()]);
                        true
                    }
                };
                if fresh {
                    if states == limits.max_states {
                        return Outcome::Undecided {
                            states,
                            bound: Bound::States(limits.max_states),
                        };
                    }
                    states += 1;
                    stack.push((node, mem::replace(&mut state, next)));
                    entries.lift(node);
                    if entries.ret_node[j].is_some() {
                        pending_returns -= 1;
                    }
                    cursor = entries.next[HEAD];
                    continue;
                }
                linearized.clear(j);
            }
            cursor = entries.next[node];
        } else {
            // Operation j had to take effect before this return; nothing more fits here.
            if deepest
                .as_ref()
                .is_none_or(|(prefix, _, _)| stack.len() > prefix.len())
            {
                let prefix = stack.iter().map(|&(c, _)| subset[entries.op[c]]).collect();
                deepest = Some((prefix, state.clone(), subset[j]));
            }
            let Some((call, before)) = stack.pop() else {
                let (prefix, state, stuck) =
                    deepest.unwrap_or_else(|| (Vec::new(), state, subset[j]));
                return Outcome::Stuck {
                    prefix,
                    state,
                    stuck,
                };
            };
            let k = entries.op[call];
            linearized.clear(k);
            state = before;
            entries.unlift(call);
            if entries.ret_node[k].is_some() {
                pending_returns += 1;
            }
            cursor = entries.next[call];
        }
    }
    Outcome::Linearizable
}
