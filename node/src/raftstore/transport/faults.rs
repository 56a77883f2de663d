//! Fault injection on the sending side of the transport: [`NetFaults`].
//!
//! One shared handle holds rules per directed node pair (from, to): drop a percentage of
//! messages, duplicate a percentage, delay each by a random time in a range (which reorders
//! them: a delayed message is overtaken by later ones), and cut links outright (a partition
//! between two sets of nodes, or one node isolated from all others). The sender asks
//! [`NetFaults::decide`] for every message before queueing it. All randomness comes from one
//! seeded generator, so a run's fault decisions repeat from its seed (which message meets
//! which decision still depends on timing across threads).
//!
//! It is compiled into every build, and costs one atomic load per message while no rule is
//! set. Rules are plain data set through methods, so a multi-process test can give each
//! node's process the same rules (a cut is a property of the pair, enforced by both senders).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::super::rng::Rng;
use super::super::types::NodeId;

/// Faults on one directed link (or every link).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkFaults {
    /// Messages lost, in percent.
    pub drop_percent: u64,
    /// Messages delivered twice, in percent (of those not lost).
    pub duplicate_percent: u64,
    /// Each copy is delayed uniformly in `[min_delay_ms, max_delay_ms]`.
    pub min_delay_ms: u64,
    /// Upper bound of the delay (0: no delay).
    pub max_delay_ms: u64,
}

impl LinkFaults {
    /// True when these rules change nothing.
    pub fn is_off(&self) -> bool {
        self.drop_percent == 0 && self.duplicate_percent == 0 && self.max_delay_ms == 0
    }
}

/// What to do with one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Send it now, once (the only answer while no rule is set).
    Deliver,
    /// Lose it (a fault rule or a cut link).
    Drop,
    /// Send one copy after each delay (two copies when duplicated).
    Delayed(Vec<Duration>),
}

/// Counters of the decisions taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Messages lost to a drop rule.
    pub dropped: u64,
    /// Messages lost to a cut link.
    pub blocked: u64,
    /// Messages sent twice.
    pub duplicated: u64,
    /// Copies delayed.
    pub delayed: u64,
}

#[derive(Debug)]
struct State {
    rng: Rng,
    every_link: LinkFaults,
    links: HashMap<(NodeId, NodeId), LinkFaults>,
    cut: HashSet<(NodeId, NodeId)>,
    isolated: HashSet<NodeId>,
    stats: FaultStats,
}

impl State {
    fn any_rule(&self) -> bool {
        !self.every_link.is_off()
            || self.links.values().any(|f| !f.is_off())
            || !self.cut.is_empty()
            || !self.isolated.is_empty()
    }
}

#[derive(Debug)]
struct Inner {
    active: AtomicBool,
    state: Mutex<State>,
}

/// Shared fault rules for a set of senders (clone it into every transport of a test).
#[derive(Debug, Clone)]
pub struct NetFaults(Arc<Inner>);

impl Default for NetFaults {
    fn default() -> Self {
        Self::new(0)
    }
}

impl NetFaults {
    /// No faults yet; random decisions will follow `seed`.
    pub fn new(seed: u64) -> Self {
        Self(Arc::new(Inner {
            active: AtomicBool::new(false),
            state: Mutex::new(State {
                rng: Rng::new(seed),
                every_link: LinkFaults::default(),
                links: HashMap::new(),
                cut: HashSet::new(),
                isolated: HashSet::new(),
                stats: FaultStats::default(),
            }),
        }))
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        let mut s = self.0.state.lock();
        f(&mut s);
        self.0.active.store(s.any_rule(), Ordering::Release);
    }

    /// Restarts the random decisions from `seed` (rules stay as they are).
    pub fn reseed(&self, seed: u64) {
        self.0.state.lock().rng = Rng::new(seed);
    }

    /// Applies `faults` to every link that has no rule of its own.
    pub fn set_all(&self, faults: LinkFaults) {
        self.update(|s| s.every_link = faults);
    }

    /// Applies `faults` to messages from `from` to `to` (one direction).
    pub fn set_link(&self, from: NodeId, to: NodeId, faults: LinkFaults) {
        self.update(|s| {
            s.links.insert((from, to), faults);
        });
    }

    /// Cuts both directions between every node of `a` and every node of `b`.
    pub fn partition(&self, a: &[NodeId], b: &[NodeId]) {
        self.update(|s| {
            for &x in a {
                for &y in b {
                    s.cut.insert((x, y));
                    s.cut.insert((y, x));
                }
            }
        });
    }

    /// Cuts `node` off from every other node, both ways.
    pub fn isolate(&self, node: NodeId) {
        self.update(|s| {
            s.isolated.insert(node);
        });
    }

    /// Restores every link and turns every fault rule off (the seeded sequence continues).
    pub fn heal(&self) {
        self.update(|s| {
            s.every_link = LinkFaults::default();
            s.links.clear();
            s.cut.clear();
            s.isolated.clear();
        });
    }

    /// True when messages from `from` to `to` are cut off.
    pub fn is_blocked(&self, from: NodeId, to: NodeId) -> bool {
        if !self.0.active.load(Ordering::Acquire) {
            return false;
        }
        let s = self.0.state.lock();
        Self::blocked(&s, from, to)
    }

    fn blocked(s: &State, from: NodeId, to: NodeId) -> bool {
        s.cut.contains(&(from, to)) || s.isolated.contains(&from) || s.isolated.contains(&to)
    }

    /// Decides the fate of one message from `from` to `to`.
    pub fn decide(&self, from: NodeId, to: NodeId) -> Verdict {
        if !self.0.active.load(Ordering::Acquire) {
            return Verdict::Deliver;
        }
        let mut s = self.0.state.lock();
        if Self::blocked(&s, from, to) {
            s.stats.blocked += 1;
            return Verdict::Drop;
        }
        let f = s.links.get(&(from, to)).copied().unwrap_or(s.every_link);
        if f.is_off() {
            return Verdict::Deliver;
        }
        if s.rng.chance(f.drop_percent) {
            s.stats.dropped += 1;
            return Verdict::Drop;
        }
        let copies = if s.rng.chance(f.duplicate_percent) {
            s.stats.duplicated += 1;
            2
        } else {
            1
        };
        let (lo, hi) = (f.min_delay_ms.min(f.max_delay_ms), f.max_delay_ms);
        let mut delays = Vec::with_capacity(copies);
        for _ in 0..copies {
            let ms = lo + s.rng.below(hi - lo + 1);
            if ms > 0 {
                s.stats.delayed += 1;
            }
            delays.push(Duration::from_millis(ms));
        }
        if copies == 1 && delays[0].is_zero() {
            return Verdict::Deliver;
        }
        Verdict::Delayed(delays)
    }

    /// The decisions taken so far.
    pub fn stats(&self) -> FaultStats {
        self.0.state.lock().stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: NodeId = NodeId(1);
    const B: NodeId = NodeId(2);
    const C: NodeId = NodeId(3);

    #[test]
    fn no_rule_delivers_everything() {
        let f = NetFaults::new(1);
        assert!((0..100).all(|_| f.decide(A, B) == Verdict::Deliver));
        assert_eq!(f.stats(), FaultStats::default());
    }

    #[test]
    fn partitions_and_isolation_cut_both_ways_until_healed() {
        let f = NetFaults::new(1);
        f.partition(&[A], &[B, C]);
        assert_eq!(f.decide(A, B), Verdict::Drop);
        assert_eq!(f.decide(C, A), Verdict::Drop);
        assert_eq!(f.decide(B, C), Verdict::Deliver);
        f.heal();
        f.isolate(C);
        assert!(f.is_blocked(C, A) && f.is_blocked(B, C));
        assert!(!f.is_blocked(A, B));
        f.heal();
        assert_eq!(f.decide(C, A), Verdict::Deliver);
        assert_eq!(f.stats().blocked, 2, "decide counts, is_blocked only asks");
    }

    #[test]
    fn random_rules_follow_the_seed_and_their_rates() {
        let rules = LinkFaults {
            drop_percent: 20,
            duplicate_percent: 10,
            min_delay_ms: 1,
            max_delay_ms: 5,
        };
        let run = |seed| {
            let f = NetFaults::new(seed);
            f.set_all(rules);
            let v: Vec<Verdict> = (0..1000).map(|_| f.decide(A, B)).collect();
            (v, f.stats())
        };
        let (a, stats) = run(9);
        assert_eq!(a, run(9).0, "same seed, same decisions");
        assert_ne!(a, run(10).0);
        // 20% lost, 10% of the rest doubled, every copy delayed 1..=5 ms: loose bounds.
        assert!((120..=280).contains(&stats.dropped), "{stats:?}");
        assert!((40..=140).contains(&stats.duplicated), "{stats:?}");
        for v in &a {
            if let Verdict::Delayed(d) = v {
                assert!(d.iter().all(|d| (1..=5).contains(&d.as_millis())));
            }
        }
        // A rule of its own overrides the every-link rule for that direction only.
        let f = NetFaults::new(3);
        f.set_all(rules);
        f.set_link(B, A, LinkFaults::default());
        assert!((0..100).all(|_| f.decide(B, A) == Verdict::Deliver));
    }
}
