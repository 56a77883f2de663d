//! Forwarding blind writes to the shard's leader in batches (D160): the queue a gateway's
//! blind writes wait in, the senders that each send what is queued as one
//! `Shard.BlindWrites` call, and the reading of the leader's answers.

use super::*;

/// Batches of forwarded blind writes in flight at once, at most.
const FORWARD_BATCHES: usize = 4;

/// Blind writes in one forwarded batch, at most.
const FORWARD_BATCH: usize = 256;

/// Bytes of keys and values in one forwarded batch, at most (or one write, if larger).
const FORWARD_BATCH_BYTES: usize = 8 << 20;

/// One forwarded blind write and where its answer goes.
pub(super) struct Forward {
    pub(super) mutation: Mutation,
    pub(super) reply: tokio::sync::oneshot::Sender<Result<BlindWrite>>,
}

/// The blind writes this gateway forwards to the leader (D160): each waits in a queue, and
/// up to [`FORWARD_BATCHES`] senders each take what is queued, send it as one `BlindWrites`
/// call, hand out the answers, and go on while anything is queued. A write arriving while
/// fewer senders run starts one, so an idle gateway forwards at once; under load the
/// writes that arrive during a call ride in the next one.
#[derive(Default)]
pub(super) struct Forwards {
    queue: Mutex<ForwardQueue>,
}

#[derive(Default)]
struct ForwardQueue {
    waiting: Vec<Forward>,
    senders: usize,
}

impl std::fmt::Debug for Forwards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let q = self.queue.lock();
        f.debug_struct("Forwards")
            .field("waiting", &q.waiting.len())
            .field("senders", &q.senders)
            .finish()
    }
}

impl Forwards {
    /// Queues `f`; `true` if the caller must start a sender.
    pub(super) fn push(&self, f: Forward) -> bool {
        let mut q = self.queue.lock();
        q.waiting.push(f);
        let start = q.senders < FORWARD_BATCHES;
        if start {
            q.senders += 1;
        }
        start
    }

    /// The next batch of a sender; empty (and the sender gone) when nothing is queued.
    fn take(&self) -> Vec<Forward> {
        let mut q = self.queue.lock();
        if q.waiting.is_empty() {
            q.senders -= 1;
            return Vec::new();
        }
        // At least one; then as many as fit the count and the bytes (a batch must stay far
        // below the internal port's message limit, or the leader refuses it undecoded and
        // every write in it would be reported unknown).
        let mut bytes = 0;
        let n = q
            .waiting
            .iter()
            .take(FORWARD_BATCH)
            .take_while(|f| {
                let size = match &f.mutation {
                    Mutation::Put(k, v) => k.len() + v.len(),
                    Mutation::Delete(k) | Mutation::Lock(k) => k.len(),
                };
                let fits = bytes == 0 || bytes + size <= FORWARD_BATCH_BYTES;
                bytes += size;
                fits
            })
            .count();
        q.waiting.drain(..n).collect()
    }
}

impl ShardRouter {
    /// A sender of forwarded blind writes (see [`Forwards`]).
    pub(super) async fn send_forwards(self: Arc<Self>) {
        loop {
            let batch = self.forwards.take();
            if batch.is_empty() {
                return;
            }
            let (mutations, replies): (Vec<Mutation>, Vec<_>) =
                batch.into_iter().map(|f| (f.mutation, f.reply)).unzip();
            self.stats.forward_batches.fetch_add(1, Ordering::Relaxed);
            let answers = self.forward(mutations).await;
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(answer);
            }
        }
    }

    /// Carries out `mutations` at the leader (or here, if this replica leads by now): one
    /// answer per mutation, in order.
    async fn forward(&self, mutations: Vec<Mutation>) -> Vec<Result<BlindWrite>> {
        let n = mutations.len();
        let shard = self.shard.0;
        let timeout = self.config.rpc_timeout;
        let request: Vec<pb::Mutation> = mutations.iter().map(codec::mutation_to_pb).collect();
        let mutations = &mutations;
        let request = &request;
        let routing = self.routing();
        let outcome = routing
            .route_async(Resend::Never, |target| async move {
                match target {
                    Target::Local => {
                        let writes: Vec<_> = mutations
                            .iter()
                            .map(|m| self.local.spawn_blind_write(m.clone()))
                            .collect();
                        let mut answers = Vec::with_capacity(n);
                        for w in writes {
                            answers.push(w.await);
                        }
                        Ok(answers)
                    }
                    Target::Remote(mut r) => {
                        let req = pb::BlindWritesRequest {
                            header: Some(r.header),
                            mutations: request.clone(),
                        };
                        let resp = unary(timeout, r.client.blind_writes(req)).await?;
                        if let Some(e) = resp.error {
                            return Err(codec::error_from_pb(e, shard));
                        }
                        if resp.results.len() != n {
                            // Carried out or not, nobody can tell which.
                            return Err(CallError::Lost(format!(
                                "{} answers to {n} blind writes",
                                resp.results.len()
                            )));
                        }
                        Ok(resp
                            .results
                            .into_iter()
                            .map(|r| {
                                blind_outcome(r, shard)
                                    .map_err(|e| to_mvcc(e, self.shard, Resend::Never))
                            })
                            .collect())
                    }
                }
            })
            .await;
        match outcome {
            Ok(answers) => answers,
            Err(e) => {
                let e = to_mvcc(e, self.shard, Resend::Never);
                vec![Err(e); n]
            }
        }
    }
}

/// A leader's answer to one blind write.
fn blind_outcome(
    resp: pb::BlindWriteResponse,
    shard: u64,
) -> std::result::Result<BlindWrite, CallError> {
    let Some(error) = resp.error else {
        return Ok(BlindWrite::Committed(resp.ts));
    };
    match codec::error_from_pb(error, shard) {
        CallError::Mvcc(MvccError::OnePcRefused(_)) => {
            Ok(BlindWrite::Declined("the leader declined"))
        }
        CallError::Mvcc(MvccError::OutcomeUnknown(reason)) if resp.ts != 0 => {
            Ok(BlindWrite::Unknown {
                ts: resp.ts,
                reason,
            })
        }
        other => Err(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(f: &Forwards, n: usize, value_bytes: usize) {
        for i in 0..n {
            let (reply, _) = tokio::sync::oneshot::channel();
            let mutation = Mutation::Put(format!("k{i}").into_bytes(), vec![0; value_bytes]);
            f.push(Forward { mutation, reply });
        }
    }

    #[test]
    fn a_batch_takes_what_is_queued_up_to_its_count_and_bytes() {
        let f = Forwards::default();
        queued(&f, 300, 10);
        assert_eq!(f.queue.lock().senders, FORWARD_BATCHES.min(300));
        assert_eq!(f.take().len(), FORWARD_BATCH);
        assert_eq!(f.take().len(), 300 - FORWARD_BATCH);
        // Three writes of 5 MiB: one per batch (two would pass 8 MiB).
        queued(&f, 3, 5 << 20);
        assert_eq!(f.take().len(), 1);
        assert_eq!(f.take().len(), 1);
        // A single write larger than the bound still goes, alone.
        queued(&f, 1, 9 << 20);
        assert_eq!(f.take().len(), 1);
        assert_eq!(f.take().len(), 1);
        // Nothing queued: the sender leaves.
        let senders = f.queue.lock().senders;
        assert!(f.take().is_empty());
        assert_eq!(f.queue.lock().senders, senders - 1);
    }
}
