//! Memory bounds on what clients make the coordinator hold.
//!
//! ```text
//!   one response     ResponseBudget   key + value bytes of a batch of point reads
//!                                     <= max_response_bytes; reading stops at the first
//!                                     value past it (ResponseTooLarge)
//!   one transaction  TxnFootprint     bytes: buffered writes (key + value) + SERIALIZABLE
//!                                     read set (keys) + scanned ranges (both bounds)
//!                                     <= max_bytes; read-set keys + ranges <= max_keys
//!                                     (TooLarge)
//!   one node         OpenTxnMemory    every open transaction's bytes + TXN_OVERHEAD_BYTES
//!                                     <= max_open_txn_bytes (Busy, retryable)
//! ```
//!
//! A [`TxnFootprint`] lives inside its transaction and gives its reservation back to the
//! node's [`OpenTxnMemory`] when dropped, that is when the transaction's memory is actually
//! freed (after a commit finishes, on rollback, or when it is reaped), so the node-wide
//! count never runs ahead of or behind what is held. Checks come before growth: a refused
//! write, read or scan leaves the transaction as it was.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::manager::{Result, TxnConfig, TxnError};

/// What every open transaction counts against the node's budget besides its contents (its
/// bookkeeping), so that a node full of empty transactions is full too.
pub const TXN_OVERHEAD_BYTES: usize = 1024;

fn as_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// The bytes all open transactions of a node hold, against `max_open_txn_bytes`.
#[derive(Debug)]
pub struct OpenTxnMemory {
    used: AtomicUsize,
    limit: usize,
}

impl OpenTxnMemory {
    /// A budget of `limit` bytes, none used.
    pub fn new(limit: usize) -> OpenTxnMemory {
        OpenTxnMemory {
            used: AtomicUsize::new(0),
            limit,
        }
    }

    /// Bytes reserved now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The budget.
    pub fn limit(&self) -> usize {
        self.limit
    }

    fn try_reserve(&self, n: usize) -> Result<()> {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let next = used.saturating_add(n);
            if next > self.limit {
                return Err(TxnError::Busy {
                    limit_name: "max_open_txn_bytes",
                    limit: as_u64(self.limit),
                });
            }
            match self
                .used
                .compare_exchange_weak(used, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(now) => used = now,
            }
        }
    }

    fn release(&self, n: usize) {
        // Never below zero: a release always follows the reservation it returns.
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(n))
            });
    }
}

/// What one transaction holds, counted against its own limits and the node's budget.
#[derive(Debug)]
pub struct TxnFootprint {
    node: Arc<OpenTxnMemory>,
    /// Bytes counted against `max_bytes`.
    bytes: usize,
    /// Read-set keys and scanned ranges, counted against `max_keys`.
    read_entries: usize,
}

impl TxnFootprint {
    /// The footprint of a new, empty transaction: reserves [`TXN_OVERHEAD_BYTES`] from
    /// `node`, or fails with `Busy` if the node's open transactions already hold its budget.
    pub fn new(node: &Arc<OpenTxnMemory>) -> Result<TxnFootprint> {
        node.try_reserve(TXN_OVERHEAD_BYTES)?;
        Ok(TxnFootprint {
            node: Arc::clone(node),
            bytes: 0,
            read_entries: 0,
        })
    }

    /// Bytes counted against `max_bytes`.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Replaces `removed` bytes by `added` (a buffered write of a key replacing its earlier
    /// one), if the transaction stays within `max_bytes` and the node within its budget.
    pub fn replace(&mut self, removed: usize, added: usize, config: &TxnConfig) -> Result<()> {
        let bytes = self.bytes.saturating_sub(removed).saturating_add(added);
        if bytes > config.max_bytes {
            return Err(TxnError::TooLarge {
                limit_name: "max_bytes",
                limit: as_u64(config.max_bytes),
            });
        }
        self.resize(bytes)
    }

    /// Adds one read-set key or scanned range of `bytes` bytes, if the transaction stays
    /// within `max_keys` entries and `max_bytes`, and the node within its budget.
    pub fn add_read(&mut self, bytes: usize, config: &TxnConfig) -> Result<()> {
        if self.read_entries >= config.max_keys {
            return Err(TxnError::TooLarge {
                limit_name: "max_keys",
                limit: as_u64(config.max_keys),
            });
        }
        self.replace(0, bytes, config)?;
        self.read_entries += 1;
        Ok(())
    }

    fn resize(&mut self, bytes: usize) -> Result<()> {
        if bytes > self.bytes {
            self.node.try_reserve(bytes - self.bytes)?;
        } else {
            self.node.release(self.bytes - bytes);
        }
        self.bytes = bytes;
        Ok(())
    }
}

impl Drop for TxnFootprint {
    fn drop(&mut self) {
        self.node
            .release(self.bytes.saturating_add(TXN_OVERHEAD_BYTES));
    }
}

/// The key and value bytes one request's point reads may return (`max_response_bytes`).
#[derive(Debug, Clone)]
pub struct ResponseBudget {
    used: usize,
    limit: usize,
}

impl ResponseBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> ResponseBudget {
        ResponseBudget { used: 0, limit }
    }

    /// Counts a read of `key` that returned `value`; fails with `ResponseTooLarge` once the
    /// reads so far pass the budget, so that the caller stops reading.
    pub fn charge(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<()> {
        let n = key.len().saturating_add(value.map_or(0, <[u8]>::len));
        self.used = self.used.saturating_add(n);
        if self.used > self.limit {
            return Err(TxnError::ResponseTooLarge {
                limit_name: "max_response_bytes",
                limit: as_u64(self.limit),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_keys: usize, max_bytes: usize) -> TxnConfig {
        TxnConfig {
            max_keys,
            max_bytes,
            ..TxnConfig::default()
        }
    }

    #[test]
    fn footprints_reserve_from_the_node_and_give_back_when_dropped() {
        let node = Arc::new(OpenTxnMemory::new(TXN_OVERHEAD_BYTES * 2 + 100));
        let c = config(10, 1000);
        let mut a = TxnFootprint::new(&node).unwrap();
        let b = TxnFootprint::new(&node).unwrap();
        assert!(matches!(
            TxnFootprint::new(&node),
            Err(TxnError::Busy {
                limit_name: "max_open_txn_bytes",
                ..
            })
        ));
        a.replace(0, 60, &c).unwrap();
        // Replacing a write frees what it replaced.
        a.replace(60, 100, &c).unwrap();
        assert_eq!(a.bytes(), 100);
        assert!(matches!(a.add_read(1, &c), Err(TxnError::Busy { .. })));
        assert_eq!((a.bytes(), node.used()), (100, node.limit()));
        drop(b);
        a.add_read(50, &c).unwrap();
        drop(a);
        assert_eq!(node.used(), 0);
    }

    #[test]
    fn a_transaction_stays_within_its_own_limits() {
        let node = Arc::new(OpenTxnMemory::new(usize::MAX));
        let c = config(2, 100);
        let mut t = TxnFootprint::new(&node).unwrap();
        assert!(matches!(
            t.replace(0, 101, &c),
            Err(TxnError::TooLarge {
                limit_name: "max_bytes",
                limit: 100
            })
        ));
        t.add_read(10, &c).unwrap();
        t.add_read(10, &c).unwrap();
        assert!(matches!(
            t.add_read(1, &c),
            Err(TxnError::TooLarge {
                limit_name: "max_keys",
                limit: 2
            })
        ));
        assert!(matches!(
            t.replace(0, 81, &c),
            Err(TxnError::TooLarge { .. })
        ));
        assert_eq!(
            t.bytes(),
            20,
            "a refused change leaves the footprint as it was"
        );
        assert_eq!(node.used(), 20 + TXN_OVERHEAD_BYTES);
    }

    #[test]
    fn the_response_budget_fails_at_the_first_read_past_it() {
        let mut b = ResponseBudget::new(10);
        b.charge(b"k", Some(b"12345678")).unwrap();
        b.charge(b"k", None).unwrap();
        assert!(matches!(
            b.charge(b"k", Some(b"x")),
            Err(TxnError::ResponseTooLarge {
                limit_name: "max_response_bytes",
                limit: 10
            })
        ));
    }
}
