//! A sharded LRU cache with byte (or any unit) capacity, and the block cache built on it.
//!
//! ```text
//!   key ──hash──► shard[i]  (parking_lot::Mutex)
//!                   ├─ HashMap<K, slot>
//!                   └─ slab: Vec<Node>, doubly linked by index
//!                        head (most recent) ⇄ ... ⇄ tail (least recent, evicted first)
//! ```
//!
//! Each shard is an independent LRU over `capacity / shards` units, so concurrent readers
//! mostly take different locks. The recency list lives in a slab of nodes linked by index
//! rather than by pointer: every operation is O(1) and there is no `unsafe`. Freed slots are
//! recycled through a free list.
//!
//! Every entry has a *charge* (a block's size in bytes, or 1 for an open table). After an
//! insert the shard evicts from the tail until its usage fits its capacity, but never the
//! entry just inserted, so a shard's usage exceeds its capacity by at most that one entry's
//! charge (and only until the next insert). Values are cloned out (`Arc`s in practice), so a
//! value evicted while in use stays alive for its holder.
//!
//! The number of shards is 16, fewer for small capacities so that each shard can still hold
//! several typical entries ([`LruCache::new`] assumes byte-sized charges; use
//! [`LruCache::with_shards`] for other units).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::block::Block;

/// Most shards a cache is split into.
pub const MAX_SHARDS: usize = 16;

/// [`LruCache::new`] keeps each shard at least this large (in charge units, i.e. bytes).
pub const MIN_SHARD_CAPACITY: usize = 256 << 10;

const NIL: usize = usize::MAX;

/// The block cache: decoded blocks keyed by `(file id, block offset)`, charged by size.
pub type BlockCache = LruCache<(u64, u64), Arc<Block>>;

/// A fast, non-cryptographic hash for the cache's keys (file ids and block offsets). The
/// engine picks every key itself, so resistance to crafted collisions is not needed, and
/// SipHash showed up in read profiles.
#[derive(Debug, Clone, Copy, Default)]
pub struct FastHashBuilder;

/// The hasher of [`FastHashBuilder`]: multiply-rotate mixing, finished with MurmurHash3's
/// 64-bit avalanche so both the shard index (high bits) and the table (low bits) are spread.
#[derive(Debug, Clone, Copy, Default)]
pub struct FastHasher(u64);

const MIX: u64 = 0x9e37_79b9_7f4a_7c15;

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(23) ^ n).wrapping_mul(MIX);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

impl BuildHasher for FastHashBuilder {
    type Hasher = FastHasher;
    fn build_hasher(&self) -> FastHasher {
        FastHasher::default()
    }
}

#[derive(Debug)]
struct Node<K, V> {
    /// `None` for a free slot.
    entry: Option<(K, V)>,
    charge: usize,
    prev: usize,
    next: usize,
}

#[derive(Debug)]
struct Shard<K, V> {
    map: HashMap<K, usize, FastHashBuilder>,
    slab: Vec<Node<K, V>>,
    free: Vec<usize>,
    /// Most recently used.
    head: usize,
    /// Least recently used.
    tail: usize,
    usage: usize,
    capacity: usize,
}

impl<K: Hash + Eq + Clone, V: Clone> Shard<K, V> {
    fn new(capacity: usize) -> Self {
        Shard {
            map: HashMap::default(),
            slab: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            usage: 0,
            capacity,
        }
    }

    fn unlink(&mut self, i: usize) {
        let (prev, next) = (self.slab[i].prev, self.slab[i].next);
        if prev == NIL {
            self.head = next;
        } else {
            self.slab[prev].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.slab[next].prev = prev;
        }
        self.slab[i].prev = NIL;
        self.slab[i].next = NIL;
    }

    fn push_front(&mut self, i: usize) {
        self.slab[i].prev = NIL;
        self.slab[i].next = self.head;
        if self.head != NIL {
            self.slab[self.head].prev = i;
        }
        self.head = i;
        if self.tail == NIL {
            self.tail = i;
        }
    }

    fn get(&mut self, key: &K) -> Option<V> {
        let i = *self.map.get(key)?;
        self.unlink(i);
        self.push_front(i);
        self.slab[i].entry.as_ref().map(|(_, v)| v.clone())
    }

    fn free_slot(&mut self, i: usize) -> Option<(K, V)> {
        self.unlink(i);
        self.usage -= self.slab[i].charge;
        self.slab[i].charge = 0;
        self.free.push(i);
        self.slab[i].entry.take()
    }

    fn remove(&mut self, key: &K) -> Option<V> {
        let i = self.map.remove(key)?;
        self.free_slot(i).map(|(_, v)| v)
    }

    fn insert(&mut self, key: K, value: V, charge: usize) {
        let i = if let Some(&i) = self.map.get(&key) {
            self.usage -= self.slab[i].charge;
            self.slab[i].entry = Some((key, value));
            self.slab[i].charge = charge;
            self.unlink(i);
            i
        } else {
            let node = Node {
                entry: Some((key.clone(), value)),
                charge,
                prev: NIL,
                next: NIL,
            };
            let i = match self.free.pop() {
                Some(i) => {
                    self.slab[i] = node;
                    i
                }
                None => {
                    self.slab.push(node);
                    self.slab.len() - 1
                }
            };
            self.map.insert(key, i);
            i
        };
        self.usage += charge;
        self.push_front(i);
        while self.usage > self.capacity && self.tail != i && self.tail != NIL {
            let victim = self.tail;
            if let Some((k, _)) = self.free_slot(victim) {
                self.map.remove(&k);
            }
        }
    }
}

/// A sharded LRU cache charging each entry a caller-chosen cost against a fixed capacity.
pub struct LruCache<K, V> {
    shards: Vec<Mutex<Shard<K, V>>>,
    hasher: FastHashBuilder,
    capacity: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl<K, V> std::fmt::Debug for LruCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LruCache")
            .field("capacity", &self.capacity)
            .field("shards", &self.shards.len())
            .field(
                "usage",
                &self.shards.iter().map(|s| s.lock().usage).sum::<usize>(),
            )
            .field("hits", &self.hits.load(Ordering::Relaxed))
            .field("misses", &self.misses.load(Ordering::Relaxed))
            .finish()
    }
}

impl<K: Hash + Eq + Clone, V: Clone> LruCache<K, V> {
    /// A cache of `capacity` units (bytes), with up to 16 shards of at least
    /// [`MIN_SHARD_CAPACITY`] each (one shard for small capacities).
    pub fn new(capacity: usize) -> Self {
        let shards = (capacity / MIN_SHARD_CAPACITY).clamp(1, MAX_SHARDS);
        Self::with_shards(capacity, shards)
    }

    /// A cache of `capacity` units split evenly over `num_shards` shards (rounded down to a
    /// power of two in `1..=16`).
    pub fn with_shards(capacity: usize, num_shards: usize) -> Self {
        let n = num_shards.clamp(1, MAX_SHARDS);
        let n = 1usize << (usize::BITS - 1 - n.leading_zeros());
        // Spread the remainder so the shard capacities sum to `capacity`.
        let shards = (0..n)
            .map(|i| Mutex::new(Shard::new(capacity / n + usize::from(i < capacity % n))))
            .collect();
        LruCache {
            shards,
            hasher: FastHashBuilder,
            capacity,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn shard(&self, key: &K) -> &Mutex<Shard<K, V>> {
        let h = self.hasher.hash_one(key);
        // The high bits: HashMap inside the shard uses the low ones.
        let i = (h >> 32) as usize & (self.shards.len() - 1);
        &self.shards[i]
    }

    /// Inserts or replaces `key`, charging `charge` units, and evicts least recently used
    /// entries of its shard until the shard fits (never the new entry itself).
    pub fn insert(&self, key: K, value: V, charge: usize) {
        self.shard(&key).lock().insert(key, value, charge);
    }

    /// The value for `key`, marking it most recently used. Counts a hit or a miss.
    pub fn get(&self, key: &K) -> Option<V> {
        let v = self.shard(key).lock().get(key);
        let counter = if v.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        v
    }

    /// Removes `key`, returning its value if it was cached.
    pub fn remove(&self, key: &K) -> Option<V> {
        self.shard(key).lock().remove(key)
    }

    /// Total charge of the cached entries.
    pub fn usage(&self) -> usize {
        self.shards.iter().map(|s| s.lock().usage).sum()
    }

    /// The configured capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Number of cached entries.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map.len()).sum()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of shards.
    pub fn num_shards(&self) -> usize {
        self.shards.len()
    }

    /// Lookups that found their key.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Lookups that did not.
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn evicts_least_recently_used() {
        let c: LruCache<u32, u32> = LruCache::with_shards(3, 1);
        c.insert(1, 10, 1);
        c.insert(2, 20, 1);
        c.insert(3, 30, 1);
        assert_eq!(c.get(&1), Some(10)); // 1 is now most recent; 2 is the LRU
        c.insert(4, 40, 1);
        assert_eq!(c.get(&2), None);
        assert_eq!(c.get(&1), Some(10));
        assert_eq!(c.get(&3), Some(30));
        assert_eq!(c.get(&4), Some(40));
        assert_eq!(c.usage(), 3);
        assert_eq!(c.hits(), 4);
        assert_eq!(c.misses(), 1);

        // Replacing re-charges and refreshes.
        c.insert(1, 11, 2);
        assert_eq!(c.usage(), 3);
        assert_eq!(c.get(&3), None);
        assert_eq!(c.get(&1), Some(11));
        assert_eq!(c.remove(&1), Some(11));
        assert_eq!(c.remove(&1), None);
        assert_eq!(c.usage(), 1);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn oversized_entry_stays_until_next_insert() {
        let c: LruCache<u32, u32> = LruCache::with_shards(10, 1);
        c.insert(1, 1, 4);
        c.insert(2, 2, 25);
        // Everything else is evicted; the big one stays (bounded overshoot).
        assert_eq!(c.get(&1), None);
        assert_eq!(c.get(&2), Some(2));
        assert_eq!(c.usage(), 25);
        c.insert(3, 3, 1);
        assert_eq!(c.get(&2), None);
        assert_eq!(c.usage(), 1);
    }

    #[test]
    fn shard_counts() {
        assert_eq!(LruCache::<u32, u32>::new(1000).num_shards(), 1);
        assert_eq!(LruCache::<u32, u32>::new(1 << 20).num_shards(), 4);
        assert_eq!(LruCache::<u32, u32>::new(64 << 20).num_shards(), 16);
        assert_eq!(LruCache::<u32, u32>::with_shards(100, 5).num_shards(), 4);
        assert_eq!(LruCache::<u32, u32>::with_shards(100, 0).num_shards(), 1);
    }

    #[test]
    fn capacity_bound_holds_across_shards() {
        let c: LruCache<u64, u64> = LruCache::with_shards(1000, 16);
        for i in 0..10_000u64 {
            let charge = (i % 13 + 1) as usize;
            c.insert(i, i, charge);
            // Per shard: capacity + one entry's charge at most.
            assert!(c.usage() <= c.capacity() + 16 * 13);
        }
        assert!(c.len() > 16);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u8, u8),
        Get(u8),
        Remove(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..16, any::<u8>(), 0u8..6).prop_map(|(k, v, c)| Op::Insert(k, v, c)),
            (0u8..16).prop_map(Op::Get),
            (0u8..16).prop_map(Op::Remove),
        ]
    }

    /// A slow but obviously correct LRU: a Vec ordered from most to least recent.
    #[derive(Default)]
    struct Model {
        entries: Vec<(u8, u8, usize)>,
    }

    impl Model {
        fn usage(&self) -> usize {
            self.entries.iter().map(|e| e.2).sum()
        }
        fn take(&mut self, k: u8) -> Option<(u8, u8, usize)> {
            let pos = self.entries.iter().position(|e| e.0 == k)?;
            Some(self.entries.remove(pos))
        }
    }

    proptest! {
        #[test]
        fn single_shard_matches_model(ops in proptest::collection::vec(op(), 0..200), cap in 0usize..20) {
            let c: LruCache<u8, u8> = LruCache::with_shards(cap, 1);
            let mut m = Model::default();
            for op in ops {
                match op {
                    Op::Insert(k, v, charge) => {
                        let charge = usize::from(charge);
                        c.insert(k, v, charge);
                        m.take(k);
                        m.entries.insert(0, (k, v, charge));
                        while m.usage() > cap && m.entries.len() > 1 {
                            m.entries.pop();
                        }
                        prop_assert!(c.usage() <= cap.max(charge));
                    }
                    Op::Get(k) => {
                        let want = m.take(k);
                        if let Some(e) = want {
                            m.entries.insert(0, e);
                        }
                        prop_assert_eq!(c.get(&k), want.map(|e| e.1));
                    }
                    Op::Remove(k) => {
                        prop_assert_eq!(c.remove(&k), m.take(k).map(|e| e.1));
                    }
                }
                prop_assert_eq!(c.usage(), m.usage());
                prop_assert_eq!(c.len(), m.entries.len());
            }
        }
    }
}
