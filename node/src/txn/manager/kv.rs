//! The single-key calls of the Kv service on the runtime: `Kv.Put` and `Kv.Delete` as blind
//! writes (D157) and `Kv.Get` and `Kv.BatchGet` as latest reads (D162), each falling back to
//! a one-shot transaction where the shard's leader declines.

use std::sync::Arc;

use super::{ExecuteRequest, ExecuteResponse, Result, TxnError, TxnManager};
use crate::mvcc::{MvccError, Timestamp};
use crate::txn::actions::Mutation;
use crate::txn::limits::TxnFootprint;
use crate::txn::{BlindWrite, LatestRead, LatestReads};

impl TxnManager {
    /// Writes one key (`Some(value)`: a put, `None`: a delete) without reading anything:
    /// `Kv.Put` and `Kv.Delete`. First on the asynchronous write path (D157,
    /// [`Storage::blind_write`](crate::txn::Storage::blind_write) at the shard's leader):
    /// one proposal at a timestamp the leader chooses, no timestamp round and no thread
    /// held while it commits. Where that path declines (it would wait, or the key is
    /// locked), as a one-shot transaction ([`execute_async`](TxnManager::execute_async),
    /// up to `attempts` times). An unknown outcome is settled through the key at the
    /// proposal's timestamp before answering; if the timestamp is unknown too (the
    /// leader's answer was lost), the answer is `OutcomeUnknown`.
    pub async fn write_one(
        self: Arc<Self>,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        attempts: usize,
    ) -> Result<ExecuteResponse> {
        let mutation = match value.clone() {
            Some(v) => Mutation::Put(key.clone(), v),
            None => Mutation::Delete(key.clone()),
        };
        if self.one_pc_fits(std::slice::from_ref(&mutation)) {
            // Counted against the node's memory for open transactions, as a transaction
            // buffering the write would be.
            let mut footprint = TxnFootprint::new(&self.memory)?;
            footprint.replace(
                0,
                key.len() + value.as_ref().map_or(0, Vec::len),
                &self.config,
            )?;
            if let Some(write) = Arc::clone(&self.shards).blind_write(mutation) {
                let settled = match write.await {
                    Ok(BlindWrite::Committed(ts)) => Some(ts),
                    Ok(BlindWrite::Declined(why)) => {
                        tracing::trace!(why, "blind write declined; as a transaction");
                        None
                    }
                    Ok(BlindWrite::Unknown { ts, reason }) => {
                        let m = Arc::clone(&self);
                        let primary = key.clone();
                        let first = MvccError::OutcomeUnknown(reason);
                        let settled = tokio::task::spawn_blocking(move || {
                            m.settle_one_pc(&primary, ts, first)
                        })
                        .await
                        .map_err(|e| TxnError::TaskFailed(e.to_string()))?;
                        match settled {
                            Ok(ts) => Some(ts),
                            // Rolled back for good: nothing was written; try again.
                            Err(TxnError::NotCommitted(_)) => None,
                            Err(e) => return Err(e),
                        }
                    }
                    // Refused without effect: the transaction path routes and retries.
                    Err(MvccError::NotLeader { .. }) => None,
                    Err(e) => return Err(e.into()),
                };
                if let Some(ts) = settled {
                    return Ok(ExecuteResponse {
                        succeeded: true,
                        failed_precondition: None,
                        reads: Vec::new(),
                        start_ts: ts,
                        commit_ts: Some(ts),
                    });
                }
            }
        }
        let request = ExecuteRequest {
            writes: vec![(key, value)],
            ..ExecuteRequest::default()
        };
        self.execute_async(request, attempts).await
    }

    /// Reads `keys` at the latest state without a transaction where the shard's leader can
    /// (D162): one timestamp, one read barrier, no thread held. `None` when it declined
    /// anything (a lock, a one-phase commit in flight, a leader that would have to wait) or
    /// failed: the caller then reads them in a one-shot transaction, which waits, resolves
    /// and retries. The answers are the transaction's would be: the keys' values at one
    /// timestamp issued after the call began.
    pub async fn read_latest(&self, keys: &[Vec<u8>]) -> Option<(Vec<Option<Vec<u8>>>, Timestamp)> {
        let reads = Arc::clone(&self.shards).latest_reads(keys.to_vec())?;
        match reads.await {
            Ok(LatestReads::Read { ts, values }) if values.len() == keys.len() => {
                let mut out = Vec::with_capacity(values.len());
                for v in values {
                    match v {
                        LatestRead::Value(v) => out.push(v),
                        LatestRead::Declined(why) => {
                            tracing::trace!(why, "latest read declined; in a transaction");
                            return None;
                        }
                    }
                }
                Some((out, ts))
            }
            Ok(LatestReads::Read { .. }) => None,
            Ok(LatestReads::Declined(why)) => {
                tracing::trace!(why, "latest reads declined; in a transaction");
                None
            }
            Err(e) => {
                tracing::debug!(error = %e, "latest reads failed; in a transaction");
                None
            }
        }
    }
}
