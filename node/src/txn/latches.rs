//! Key latches: commands that touch the same keys run one at a time.
//!
//! An action reads the state of its keys and writes a batch computed from it; if another
//! command changed those keys in between, the batch would be wrong (two prewrites could
//! both see "no lock"). Each command therefore holds the latches of all its keys from its
//! first read to the application of its batch. Keys hash to a fixed array of slots;
//! a command takes its slots in ascending order, so two commands never wait on each other
//! in a cycle. Unrelated keys that share a slot only wait a little.

use parking_lot::{Mutex, MutexGuard};

use crate::lsm::bloom::hash64;

/// A fixed set of latch slots.
#[derive(Debug)]
pub struct Latches {
    slots: Vec<Mutex<()>>,
}

/// The latches one command holds; released when dropped.
#[derive(Debug)]
pub struct LatchGuard<'a> {
    _held: Vec<MutexGuard<'a, ()>>,
}

impl Latches {
    /// `slots` latch slots (rounded up to at least 1).
    pub fn new(slots: usize) -> Latches {
        Latches {
            slots: (0..slots.max(1)).map(|_| Mutex::new(())).collect(),
        }
    }

    /// The slots of `keys`, sorted and without repeats.
    fn slots_of<'k>(&self, keys: impl IntoIterator<Item = &'k [u8]>) -> Vec<usize> {
        let n = self.slots.len() as u64;
        let mut slots: Vec<usize> = keys.into_iter().map(|k| (hash64(k) % n) as usize).collect();
        slots.sort_unstable();
        slots.dedup();
        slots
    }

    /// Waits for and takes the latches of `keys`.
    pub fn acquire<'k>(&self, keys: impl IntoIterator<Item = &'k [u8]>) -> LatchGuard<'_> {
        let held = self
            .slots_of(keys)
            .into_iter()
            .map(|i| self.slots[i].lock())
            .collect();
        LatchGuard { _held: held }
    }

    /// Takes the latches of `keys` if none is held, without waiting; `None` (nothing
    /// taken) otherwise. The guard may be held across an `.await` (it is `Send`): the
    /// asynchronous write path uses this and never waits for a latch on a runtime thread.
    pub fn try_acquire<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k [u8]>,
    ) -> Option<LatchGuard<'_>> {
        let held = self
            .slots_of(keys)
            .into_iter()
            .map(|i| self.slots[i].try_lock())
            .collect::<Option<Vec<_>>>()?;
        Some(LatchGuard { _held: held })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn try_acquire_takes_free_latches_only() {
        let latches = Latches::new(64);
        let a = b"a".as_slice();
        let b = (0..)
            .map(|i| format!("b{i}").into_bytes())
            .find(|b| latches.slots_of([b.as_slice()]) != latches.slots_of([a]))
            .unwrap();
        let held = latches.acquire([a]);
        assert!(latches.try_acquire([b.as_slice(), a]).is_none());
        let other = latches.try_acquire([b.as_slice()]);
        assert!(other.is_some(), "another slot is free");
        assert!(latches.try_acquire([b.as_slice()]).is_none());
        drop(held);
        drop(other);
        assert!(latches.try_acquire([a, b.as_slice()]).is_some());
    }

    #[test]
    fn overlapping_commands_are_serialised_without_deadlock() {
        let latches = Arc::new(Latches::new(8));
        let inside = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (latches, inside) = (Arc::clone(&latches), Arc::clone(&inside));
                std::thread::spawn(move || {
                    for i in 0..2000 {
                        // Every command shares key "hot", listed in varying orders.
                        let other = format!("k{}", (i + t) % 16);
                        let keys: [&[u8]; 2] = if i % 2 == 0 {
                            [b"hot", other.as_bytes()]
                        } else {
                            [other.as_bytes(), b"hot"]
                        };
                        let _g = latches.acquire(keys);
                        assert_eq!(
                            inside.fetch_add(1, Ordering::SeqCst),
                            0,
                            "two commands on one key at once"
                        );
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }
}
