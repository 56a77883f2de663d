//! Forwarding to the shard's leader in batches: blind writes (D160) and latest reads
//! (D162). The queue a gateway's forwarded commands wait in, the senders that each send what
//! is queued as one `Shard.BlindWrites` or `Shard.LatestReads` call, and the reading of the
//! leader's answers.

use super::*;

/// Batches of one kind of forwarded command in flight at once, at most.
const FORWARD_BATCHES: usize = 4;

/// Writes (or keys read) in one forwarded batch, at most.
const FORWARD_BATCH: usize = 256;

/// Bytes of keys and values in one forwarded batch, at most (or one command, if larger).
const FORWARD_BATCH_BYTES: usize = 8 << 20;

/// A command waiting in a [`Forwards`] queue.
pub(super) trait Queued {
    /// What it counts against [`FORWARD_BATCH`].
    fn count(&self) -> usize;
    /// What it counts against [`FORWARD_BATCH_BYTES`].
    fn bytes(&self) -> usize;
}

/// One forwarded blind write and where its answer goes.
pub(super) struct Forward {
    pub(super) mutation: Mutation,
    pub(super) reply: tokio::sync::oneshot::Sender<Result<BlindWrite>>,
}

impl Queued for Forward {
    fn count(&self) -> usize {
        1
    }

    fn bytes(&self) -> usize {
        match &self.mutation {
            Mutation::Put(k, v) => k.len() + v.len(),
            Mutation::Delete(k) | Mutation::Lock(k) => k.len(),
        }
    }
}

/// One forwarded call of latest reads and where its answer goes.
pub(super) struct ReadForward {
    pub(super) keys: Vec<Vec<u8>>,
    pub(super) reply: tokio::sync::oneshot::Sender<Result<LatestReads>>,
}

impl Queued for ReadForward {
    fn count(&self) -> usize {
        self.keys.len().max(1)
    }

    fn bytes(&self) -> usize {
        self.keys.iter().map(Vec::len).sum()
    }
}

/// The commands of one kind this gateway forwards to the leader: each waits in a queue,
/// and up to [`FORWARD_BATCHES`] senders each take what is queued, send it as one call,
/// hand out the answers, and go on while anything is queued. A command arriving while
/// fewer senders run starts one, so an idle gateway forwards at once; under load the
/// commands that arrive during a call ride in the next one.
pub(super) struct Forwards<T> {
    queue: Mutex<ForwardQueue<T>>,
}

struct ForwardQueue<T> {
    waiting: Vec<T>,
    senders: usize,
}

impl<T> Default for Forwards<T> {
    fn default() -> Self {
        Self {
            queue: Mutex::new(ForwardQueue {
                waiting: Vec::new(),
                senders: 0,
            }),
        }
    }
}

impl<T> std::fmt::Debug for Forwards<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let q = self.queue.lock();
        f.debug_struct("Forwards")
            .field("waiting", &q.waiting.len())
            .field("senders", &q.senders)
            .finish()
    }
}

impl<T: Queued> Forwards<T> {
    /// Queues `f`; `true` if the caller must start a sender.
    pub(super) fn push(&self, f: T) -> bool {
        let mut q = self.queue.lock();
        q.waiting.push(f);
        let start = q.senders < FORWARD_BATCHES;
        if start {
            q.senders += 1;
        }
        start
    }

    /// The next batch of a sender; empty (and the sender gone) when nothing is queued.
    fn take(&self) -> Vec<T> {
        let mut q = self.queue.lock();
        if q.waiting.is_empty() {
            q.senders -= 1;
            return Vec::new();
        }
        // At least one; then as many as fit the count and the bytes (a batch must stay far
        // below the internal port's message limit, or the leader refuses it undecoded and
        // every command in it would fail).
        let (mut count, mut bytes) = (0, 0);
        let n = q
            .waiting
            .iter()
            .take_while(|f| {
                let fits = count == 0
                    || (count + f.count() <= FORWARD_BATCH
                        && bytes + f.bytes() <= FORWARD_BATCH_BYTES);
                count += f.count();
                bytes += f.bytes();
                fits
            })
            .count();
        q.waiting.drain(..n).collect()
    }

    /// A sender's loop: `send` each batch taken until nothing is queued.
    async fn drain<F: std::future::Future<Output = ()>>(&self, mut send: impl FnMut(Vec<T>) -> F) {
        loop {
            let batch = self.take();
            if batch.is_empty() {
                return;
            }
            send(batch).await;
        }
    }
}

impl ShardRouter {
    /// A sender of forwarded blind writes (see [`Forwards`]).
    pub(super) async fn send_forwards(self: Arc<Self>) {
        self.forwards
            .drain(|batch| async {
                let (mutations, replies): (Vec<Mutation>, Vec<_>) =
                    batch.into_iter().map(|f| (f.mutation, f.reply)).unzip();
                self.stats.forward_batches.fetch_add(1, Ordering::Relaxed);
                let answers = self.forward(mutations).await;
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let _ = reply.send(answer);
                }
            })
            .await
    }

    /// A sender of forwarded latest reads (see [`Forwards`]): the keys of every call in a
    /// batch are read in one `LatestReads` call, at one timestamp, and each caller gets its
    /// own keys' answers back.
    pub(super) async fn send_read_forwards(self: Arc<Self>) {
        self.read_forwards
            .drain(|batch| async {
                self.stats.read_batches.fetch_add(1, Ordering::Relaxed);
                let mut keys = Vec::new();
                let mut calls = Vec::with_capacity(batch.len());
                for f in batch {
                    calls.push((f.keys.len(), f.reply));
                    keys.extend(f.keys);
                }
                let outcome = self.forward_reads(keys).await;
                let mut values = match outcome {
                    Ok(LatestReads::Read { ts, values }) => Ok((ts, values.into_iter())),
                    Ok(LatestReads::Declined(why)) => Err(Ok(LatestReads::Declined(why))),
                    Err(e) => Err(Err(e)),
                };
                for (n, reply) in calls {
                    let answer = match &mut values {
                        Ok((ts, values)) => Ok(LatestReads::Read {
                            ts: *ts,
                            values: values.by_ref().take(n).collect(),
                        }),
                        Err(whole) => whole.clone(),
                    };
                    let _ = reply.send(answer);
                }
            })
            .await
    }

    /// Reads `keys` at the leader (or here, if this replica leads by now).
    async fn forward_reads(&self, keys: Vec<Vec<u8>>) -> Result<LatestReads> {
        let n = keys.len();
        let shard = self.shard.0;
        let timeout = self.config.rpc_timeout;
        let keys = &keys;
        let routing = self.routing();
        let outcome = routing
            .route_async(Resend::Read, |target| async move {
                match target {
                    Target::Local => Ok(Storage::latest_reads(&self.local, keys).await),
                    Target::Remote(mut r) => {
                        let req = pb::LatestReadsRequest {
                            header: Some(r.header),
                            keys: keys.iter().map(|k| Bytes::copy_from_slice(k)).collect(),
                        };
                        let resp = unary(timeout, r.client.latest_reads(req)).await?;
                        if let Some(e) = resp.error {
                            return Err(codec::error_from_pb(e, shard));
                        }
                        if !resp.declined.is_empty() {
                            return Ok(Ok(LatestReads::Declined("the leader declined")));
                        }
                        if resp.results.len() != n {
                            return Err(CallError::Lost(format!(
                                "{} answers to {n} reads",
                                resp.results.len()
                            )));
                        }
                        let values = resp
                            .results
                            .into_iter()
                            .map(|r| {
                                if !r.declined.is_empty() {
                                    LatestRead::Declined("the leader declined")
                                } else if r.found {
                                    LatestRead::Value(Some(r.value.to_vec()))
                                } else {
                                    LatestRead::Value(None)
                                }
                            })
                            .collect();
                        Ok(Ok(LatestReads::Read {
                            ts: resp.read_ts,
                            values,
                        }))
                    }
                }
            })
            .await;
        match outcome {
            Ok(answer) => answer,
            Err(e) => Err(to_mvcc(e, self.shard, Resend::Read)),
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
                        Ok(self.local.spawn_blind_write_batch(mutations.clone()).await)
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

    fn queued(f: &Forwards<Forward>, n: usize, value_bytes: usize) {
        for i in 0..n {
            let (reply, _) = tokio::sync::oneshot::channel();
            let mutation = Mutation::Put(format!("k{i}").into_bytes(), vec![0; value_bytes]);
            f.push(Forward { mutation, reply });
        }
    }

    #[test]
    fn a_batch_takes_what_is_queued_up_to_its_count_and_bytes() {
        let f = Forwards::<Forward>::default();
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

    #[test]
    fn a_batch_of_reads_counts_keys_not_calls() {
        let f = Forwards::<ReadForward>::default();
        let call = |keys: usize| {
            let (reply, _) = tokio::sync::oneshot::channel();
            ReadForward {
                keys: (0..keys).map(|i| format!("k{i}").into_bytes()).collect(),
                reply,
            }
        };
        // 200 + 100 keys pass the 256 a batch holds: two batches.
        f.push(call(200));
        f.push(call(100));
        f.push(call(1));
        assert_eq!(f.take().len(), 1);
        assert_eq!(f.take().len(), 2);
        // A call with more keys than a batch holds still goes, alone.
        f.push(call(300));
        f.push(call(1));
        assert_eq!(f.take().len(), 1);
        assert_eq!(f.take().len(), 1);
    }
}
