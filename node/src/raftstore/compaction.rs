//! When to compact a replica's raft log: a pure policy over what the replica knows.
//!
//! A log entry can go once the state machine has made its effect durable (the LSM applies
//! without its WAL, so "applied" is not enough: a crash replays the log from the last
//! flush) and the stored apply state covers it. Within that bound the policy keeps a lag of
//! entries, so a follower a little behind catches up from the log rather than by snapshot;
//! a leader also keeps what its slowest follower still needs, unless that would keep too
//! much (that follower then gets a snapshot). Compacting only in steps of some size keeps
//! raft-engine writes few.
//!
//! ```text
//!   first_index ........ target ....... min(durable applied, stored applied) ... last
//!   |<---- dropped ---->|<-- keep_entries (or up to the slowest follower) -->|
//! ```

/// What a replica knows when the policy runs (`Peer::log_view`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogView {
    /// The first index still in the log.
    pub first_index: u64,
    /// The index through which the state machine's state survives a crash.
    pub durable_applied: u64,
    /// The apply index stored with the conf state in the log store.
    pub stored_applied: u64,
    /// On a leader, the lowest index a follower is known to have (`None` on followers, or
    /// a leader alone).
    pub slowest_follower: Option<u64>,
}

/// How much raft log to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogCompactionPolicy {
    /// Entries kept below the compaction bound.
    pub keep_entries: u64,
    /// Compact only when at least this many entries can go.
    pub min_entries: u64,
    /// A leader keeps entries its slowest follower needs, unless that follower is more than
    /// this many entries behind the bound.
    pub max_follower_lag: u64,
}

impl Default for LogCompactionPolicy {
    fn default() -> Self {
        Self {
            keep_entries: 64,
            min_entries: 256,
            max_follower_lag: 20_000,
        }
    }
}

impl LogCompactionPolicy {
    /// The first index to keep, if enough entries can go.
    pub fn first_kept(&self, v: &LogView) -> Option<u64> {
        let bound = v.durable_applied.min(v.stored_applied);
        let mut last_dropped = bound.saturating_sub(self.keep_entries);
        if let Some(slowest) = v.slowest_follower {
            if bound.saturating_sub(slowest) <= self.max_follower_lag {
                last_dropped = last_dropped.min(slowest);
            }
        }
        let first_kept = last_dropped + 1;
        (first_kept >= v.first_index + self.min_entries.max(1)).then_some(first_kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(durable: u64, stored: u64) -> LogView {
        LogView {
            first_index: 1,
            durable_applied: durable,
            stored_applied: stored,
            slowest_follower: None,
        }
    }

    const TIGHT: LogCompactionPolicy = LogCompactionPolicy {
        keep_entries: 0,
        min_entries: 1,
        max_follower_lag: 100,
    };

    #[test]
    fn never_past_the_durable_or_the_stored_applied_index() {
        // Applied (and stored) through 500, but only 120 flushed: the bound is 120.
        assert_eq!(TIGHT.first_kept(&view(120, 500)), Some(121));
        assert_eq!(TIGHT.first_kept(&view(500, 90)), Some(91));
        assert_eq!(TIGHT.first_kept(&view(0, 500)), None);
    }

    #[test]
    fn keeps_a_lag_and_compacts_in_steps() {
        let p = LogCompactionPolicy {
            keep_entries: 10,
            min_entries: 50,
            max_follower_lag: 100,
        };
        assert_eq!(
            p.first_kept(&view(59, 59)),
            None,
            "only 49 entries could go"
        );
        assert_eq!(p.first_kept(&view(60, 60)), Some(51));
        let later = LogView {
            first_index: 51,
            ..view(80, 80)
        };
        assert_eq!(p.first_kept(&later), None, "20 more is below the step");
    }

    #[test]
    fn a_leader_keeps_what_a_near_follower_needs_but_not_a_far_one() {
        let near = LogView {
            slowest_follower: Some(400),
            ..view(450, 450)
        };
        assert_eq!(TIGHT.first_kept(&near), Some(401));
        let far = LogView {
            slowest_follower: Some(100),
            ..view(450, 450)
        };
        assert_eq!(TIGHT.first_kept(&far), Some(451), "it will get a snapshot");
        let caught_up = LogView {
            slowest_follower: Some(450),
            ..view(450, 450)
        };
        assert_eq!(TIGHT.first_kept(&caught_up), Some(451));
    }
}
