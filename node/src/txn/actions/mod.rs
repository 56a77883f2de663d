//! Per-key Percolator actions, one file each (TiKV's `txn/actions` habit).
//!
//! ```text
//!   prewrite(key)      lock the key for start_ts (value in the lock or the default family),
//!                      failing on a newer commit (write conflict) or another's lock
//!   commit(key, cts)   turn start_ts's lock into a commit record at commit_ts
//!   rollback(key)      remove start_ts's lock and leave a rollback record, so a late
//!                      prewrite of the same transaction can never succeed
//!   check_txn_status   the transaction's fate, read (or decided, if its lock expired or
//!                      its coordinator is gone) at its primary key; can push
//!                      min_commit_ts above a reader
//!   one_pc(key)        the checks of a prewrite and a commit record at once, no lock
//!                      (one-phase commit of a single-shard transaction)
//!   heartbeat          extend the primary lock's time to live
//!   resolve_lock(key)  commit or roll back a secondary the way the primary went
//! ```

mod check_txn_status;
mod commit;
mod one_pc;
mod prewrite;
mod resolve_lock;
mod rollback;

#[cfg(test)]
mod tests;

pub use check_txn_status::{check_txn_status, heartbeat, lock_expired, physical_ms, TxnStatus};
pub use commit::commit;
pub use one_pc::{one_pc_check, one_pc_write};
pub use prewrite::{prewrite, Mutation, PrewriteOptions};
pub use resolve_lock::resolve_lock;
pub use rollback::rollback;
