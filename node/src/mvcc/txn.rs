//! `MvccTxn`: the writes of one command, collected into one engine batch.

use crate::lsm::{ColumnFamily, WriteBatch};

use super::key::{lock_key, versioned_key};
use super::record::{Lock, Write};
use super::Timestamp;

/// Collects the MVCC writes of one command (a prewrite, a commit, ...) as a single
/// `WriteBatch`, so the command takes effect atomically wherever the batch is applied: the
/// engine directly on a single node, or a Raft proposal on a replicated shard.
#[derive(Debug)]
pub struct MvccTxn {
    /// The transaction the writes belong to.
    pub start_ts: Timestamp,
    batch: WriteBatch,
    /// Keys whose locks the batch removes (their waiters are woken once it is written).
    unlocked: Vec<Vec<u8>>,
}

impl MvccTxn {
    /// An empty set of writes for transaction `start_ts`.
    pub fn new(start_ts: Timestamp) -> Self {
        MvccTxn {
            start_ts,
            batch: WriteBatch::new(),
            unlocked: Vec::new(),
        }
    }

    /// Places `lock` on `key`.
    pub fn put_lock(&mut self, key: &[u8], lock: &Lock) {
        self.batch
            .put(ColumnFamily::Lock, &lock_key(key), &lock.encode());
    }

    /// Removes the lock on `key`.
    pub fn unlock_key(&mut self, key: &[u8]) {
        self.batch.delete(ColumnFamily::Lock, &lock_key(key));
        self.unlocked.push(key.to_vec());
    }

    /// Stores this transaction's value of `key` in the `default` family.
    pub fn put_value(&mut self, key: &[u8], value: &[u8]) {
        self.batch.put(
            ColumnFamily::Default,
            &versioned_key(key, self.start_ts),
            value,
        );
    }

    /// Removes this transaction's value of `key` from the `default` family.
    pub fn delete_value(&mut self, key: &[u8]) {
        self.batch
            .delete(ColumnFamily::Default, &versioned_key(key, self.start_ts));
    }

    /// Writes the commit (or rollback) record of `key` at `ts`.
    pub fn put_write(&mut self, key: &[u8], ts: Timestamp, write: &Write) {
        self.batch.put(
            ColumnFamily::Write,
            &versioned_key(key, ts),
            &write.encode(),
        );
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    /// The collected writes.
    pub fn into_batch(self) -> WriteBatch {
        self.batch
    }

    /// The collected writes, and the keys whose locks they remove.
    pub fn into_parts(self) -> (WriteBatch, Vec<Vec<u8>>) {
        (self.batch, self.unlocked)
    }
}
