//! Transaction ids that never name two transactions: not across restarts, not across nodes.
//!
//! ```text
//!   63            48 47                    24 23                     0
//!  ┌────────────────┬────────────────────────┬────────────────────────┐
//!  │ node id (16)   │ block (24)             │ sequence (24)          │
//!  └────────────────┴────────────────────────┴────────────────────────┘
//! ```
//!
//! A *block* is a run id taken from the node's durable counter ([`IdBlocks`], the engine's
//! `raft-state` family through [`super::NodeMeta`]): the first block of a run is the run's
//! own id, and a run that uses up 2^24 ids takes the next one (one synced write per 16
//! million transactions). Blocks only grow, even across restarts, so an id issued by an
//! earlier run of this node, or by another node, never matches one issued now: a client
//! holding a stale id gets `NOT_FOUND` instead of reaching someone else's transaction.
//! Block numbers start at 1, so no id is 0 (the proto promises a non-zero `txn_id`).

use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::mvcc::{MvccError, Result};

use super::manager::TxnId;

/// Bits of the per-block sequence.
const SEQ_BITS: u32 = 24;
/// Bits of the block.
const BLOCK_BITS: u32 = 24;
/// The largest node id an id can carry.
pub const MAX_NODE_ID: u64 = (1 << (64 - SEQ_BITS - BLOCK_BITS)) - 1;
const MAX_BLOCK: u64 = (1 << BLOCK_BITS) - 1;
const MAX_SEQ: u64 = (1 << SEQ_BITS) - 1;

/// A durable source of blocks: each call returns a number larger than every number it
/// returned before, in this process or an earlier one.
pub trait IdBlocks: Send + Sync + Debug {
    /// The next block.
    fn next_block(&self) -> Result<u64>;
}

/// Blocks counted in memory from 1: for tests and tools whose ids need not outlive the
/// process.
#[derive(Debug, Default)]
pub struct EphemeralBlocks(AtomicU64);

impl IdBlocks for EphemeralBlocks {
    fn next_block(&self) -> Result<u64> {
        Ok(self.0.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

#[derive(Debug)]
struct Cursor {
    block: u64,
    next_seq: u64,
}

/// Issues transaction ids (see the module documentation).
#[derive(Debug)]
pub struct TxnIds {
    node_id: u64,
    blocks: Arc<dyn IdBlocks>,
    cursor: Mutex<Cursor>,
}

impl TxnIds {
    /// Ids of node `node_id` (at most [`MAX_NODE_ID`]), starting in `first_block` (the run
    /// id, already taken from `blocks`) and taking further blocks from `blocks`.
    pub fn new(node_id: u64, first_block: u64, blocks: Arc<dyn IdBlocks>) -> Result<TxnIds> {
        if node_id > MAX_NODE_ID {
            return Err(invalid(format!(
                "node id {node_id} does not fit a transaction id (at most {MAX_NODE_ID})"
            )));
        }
        check_block(first_block)?;
        Ok(TxnIds {
            node_id,
            blocks,
            cursor: Mutex::new(Cursor {
                block: first_block,
                next_seq: 0,
            }),
        })
    }

    /// Ids valid for this process only (node 0, blocks counted in memory).
    pub fn ephemeral() -> TxnIds {
        TxnIds {
            node_id: 0,
            blocks: Arc::new(EphemeralBlocks(AtomicU64::new(1))),
            cursor: Mutex::new(Cursor {
                block: 1,
                next_seq: 0,
            }),
        }
    }

    /// The next id.
    pub fn next(&self) -> Result<TxnId> {
        let mut cursor = self.cursor.lock();
        if cursor.next_seq > MAX_SEQ {
            let block = self.blocks.next_block()?;
            check_block(block)?;
            *cursor = Cursor { block, next_seq: 0 };
        }
        let seq = cursor.next_seq;
        cursor.next_seq += 1;
        Ok(self.node_id << (BLOCK_BITS + SEQ_BITS) | cursor.block << SEQ_BITS | seq)
    }

    /// The node id carried by `id`.
    pub fn node_of(id: TxnId) -> u64 {
        id >> (BLOCK_BITS + SEQ_BITS)
    }
}

fn check_block(block: u64) -> Result<()> {
    if block == 0 || block > MAX_BLOCK {
        return Err(invalid(format!(
            "transaction id block {block} is outside 1..={MAX_BLOCK}: the node's id space is used up"
        )));
    }
    Ok(())
}

fn invalid(reason: String) -> MvccError {
    MvccError::Engine(crate::lsm::Error::InvalidArgument(reason))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_carry_the_node_and_a_used_up_block_takes_the_next() {
        let blocks = Arc::new(EphemeralBlocks(AtomicU64::new(7)));
        let ids = TxnIds::new(5, 7, blocks).unwrap();
        let first = ids.next().unwrap();
        assert_eq!(first, 5 << 48 | 7 << 24);
        assert_eq!(TxnIds::node_of(first), 5);
        ids.cursor.lock().next_seq = MAX_SEQ;
        assert_eq!(ids.next().unwrap(), 5 << 48 | 7 << 24 | MAX_SEQ);
        assert_eq!(ids.next().unwrap(), 5 << 48 | 8 << 24, "block 8 taken");
    }

    #[test]
    fn runs_and_nodes_never_share_an_id() {
        let mut seen = HashSet::new();
        let blocks: Arc<dyn IdBlocks> = Arc::new(EphemeralBlocks::default());
        for node in [1, 2] {
            for _run in 0..3 {
                let first = blocks.next_block().unwrap();
                let ids = TxnIds::new(node, first, Arc::clone(&blocks)).unwrap();
                for _ in 0..100 {
                    let id = ids.next().unwrap();
                    assert_ne!(id, 0);
                    assert!(seen.insert(id), "id {id:#x} issued twice");
                }
            }
        }
    }

    #[test]
    fn out_of_range_node_ids_and_blocks_are_refused() {
        let blocks: Arc<dyn IdBlocks> = Arc::new(EphemeralBlocks::default());
        assert!(TxnIds::new(MAX_NODE_ID + 1, 1, Arc::clone(&blocks)).is_err());
        assert!(TxnIds::new(1, 0, Arc::clone(&blocks)).is_err());
        assert!(TxnIds::new(1, MAX_BLOCK + 1, Arc::clone(&blocks)).is_err());
        let ids = TxnIds::new(
            1,
            MAX_BLOCK,
            Arc::new(EphemeralBlocks(AtomicU64::new(MAX_BLOCK))),
        )
        .unwrap();
        ids.cursor.lock().next_seq = MAX_SEQ + 1;
        assert!(ids.next().is_err(), "the id space is used up");
    }
}
