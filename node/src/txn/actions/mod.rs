//! Per-key Percolator actions, one file each (TiKV's `txn/actions` habit).
//!
//! ```text
//!   prewrite(key)      lock the key for start_ts (value in the lock or the default family),
//!                      failing on a newer commit (write conflict) or another's lock
//!   commit(key, cts)   turn start_ts's lock into a commit record at commit_ts
//!   rollback(key)      remove start_ts's lock and leave a rollback record, so a late
//!                      prewrite of the same transaction can never succeed
//! ```

mod commit;
mod prewrite;
mod rollback;

#[cfg(test)]
mod tests;

pub use commit::commit;
pub use prewrite::{prewrite, Mutation, PrewriteOptions};
pub use rollback::rollback;
