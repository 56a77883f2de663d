//! The data shard's Raft group as the transaction layer and the oracle see it:
//! [`RaftShardWriter`] (the [`ShardWriter`] whose batches are proposals, blocking or as
//! futures, with the term they were computed in) and [`RaftTsoGroup`] (the [`TsoGroup`]
//! whose high-water marks are proposals and whose confirmations are read barriers).

use super::*;

/// Waits for `fut` on this thread (polled here, woken directly by the driver's reply: no
/// task hand-off, see [`crate::park`]), asking `watch` every [`WATCH_INTERVAL`]; `watch`
/// returning `Some` gives up with that value.
fn wait_on<T>(fut: impl Future<Output = T>, watch: impl FnMut() -> Option<T>) -> T {
    crate::park::block_on(fut, WATCH_INTERVAL, watch)
}

/// Maps a raftstore error met before or instead of applying (nothing applied).
fn not_applied(shard: ShardId, e: RaftStoreError) -> MvccError {
    match e {
        RaftStoreError::NotLeader { leader, .. } => MvccError::NotLeader {
            shard: shard.0,
            leader: leader.map(|p| p.0),
        },
        RaftStoreError::LeaderNotReady { .. }
        | RaftStoreError::StaleTerm { .. }
        | RaftStoreError::StaleEpoch { .. }
        | RaftStoreError::WrongShard { .. }
        | RaftStoreError::Busy(_)
        | RaftStoreError::Timeout(_) => MvccError::NotLeader {
            shard: shard.0,
            leader: None,
        },
        other => MvccError::Unavailable(other.to_string()),
    }
}

/// What a proposal's outcome tells its writer.
fn proposal_outcome(
    shard: ShardId,
    outcome: Result<u64, RaftStoreError>,
) -> Result<u64, MvccError> {
    match outcome {
        Ok(index) => Ok(index),
        // The watcher gave up: the entry may still commit under another leader.
        Err(RaftStoreError::Timeout(reason)) => {
            Err(MvccError::OutcomeUnknown(format!("{shard}: {reason}")))
        }
        Err(e) => Err(not_applied(shard, e)),
    }
}

/// Proposes command batches to the data shard; see the module documentation.
#[derive(Debug, Clone)]
pub struct RaftShardWriter {
    pub(super) handle: RaftHandle,
    pub(super) shard: ShardId,
    pub(super) ready_timeout: Duration,
}

impl RaftShardWriter {
    fn status(&self) -> Result<LeaderView, MvccError> {
        if let Some(reason) = self.handle.stop_reason() {
            return Err(MvccError::Unavailable(reason));
        }
        self.handle
            .leader_view(self.shard)
            .ok_or_else(|| MvccError::Unavailable(format!("{} is not open here", self.shard)))
    }

    /// The term this replica leads and is ready in. Waits, up to the ready timeout, while
    /// no leader is known (an election is on) or this replica was just elected and is
    /// catching up; fails at once with the leader's id when another replica leads.
    fn ready_term(&self) -> Result<u64, MvccError> {
        let deadline = Instant::now() + self.ready_timeout;
        loop {
            if let Some(term) = self.ready_term_now()? {
                return Ok(term);
            }
            if Instant::now() >= deadline {
                return Err(MvccError::NotLeader {
                    shard: self.shard.0,
                    leader: self.status()?.leader.map(|p| p.0),
                });
            }
            std::thread::sleep(WATCH_INTERVAL);
        }
    }

    /// [`ready_term`](Self::ready_term) without waiting: `Ok(None)` where it would wait.
    fn ready_term_now(&self) -> Result<Option<u64>, MvccError> {
        let s = self.status()?;
        match (s.role, s.leader) {
            (Role::Leader, _) if s.leader_ready => Ok(Some(s.term)),
            (Role::Leader, _) | (_, None) => Ok(None),
            (_, Some(leader)) => Err(MvccError::NotLeader {
                shard: self.shard.0,
                leader: Some(leader.0),
            }),
        }
    }

    /// Whether this replica stopped leading (in `term`, if given): a pending proposal's
    /// outcome is then unknown.
    fn lost_leadership(&self, term: Option<u64>) -> bool {
        match self.status() {
            Ok(s) => s.role != Role::Leader || term.is_some_and(|t| s.term != t),
            Err(_) => true,
        }
    }

    /// Proposes `cmd` and waits until it is applied here. With `term`, gives up with
    /// `OutcomeUnknown` once this replica stops leading in that term.
    pub(super) fn propose(&self, cmd: RaftCommand, term: Option<u64>) -> Result<u64, MvccError> {
        let handle = self.handle.clone();
        let shard = self.shard;
        let data = cmd.encode();
        let watcher = self.clone();
        let outcome = wait_on(
            async move { handle.propose(shard, data).await },
            move || {
                watcher.lost_leadership(term).then(|| {
                    Err(RaftStoreError::Timeout(
                        "this replica stopped leading while the write was pending".into(),
                    ))
                })
            },
        );
        proposal_outcome(shard, outcome)
    }

    /// [`propose`](Self::propose) as a future that holds no thread: the write path of
    /// single-key writes on the runtime (D157). The same watch, every [`WATCH_INTERVAL`].
    async fn propose_async(&self, cmd: RaftCommand, term: Option<u64>) -> Result<u64, MvccError> {
        let shard = self.shard;
        let proposal = self.handle.propose(shard, cmd.encode());
        tokio::pin!(proposal);
        let outcome = loop {
            match tokio::time::timeout(WATCH_INTERVAL, &mut proposal).await {
                Ok(outcome) => break outcome,
                Err(_) if self.lost_leadership(term) => {
                    break Err(RaftStoreError::Timeout(
                        "this replica stopped leading while the write was pending".into(),
                    ))
                }
                Err(_) => {}
            }
        };
        proposal_outcome(shard, outcome)
    }

    pub(super) fn command(&self) -> Result<RaftCommand, MvccError> {
        let s = self.status()?;
        Ok(RaftCommand::new(self.shard, s.epoch))
    }
}

impl ShardWriter for RaftShardWriter {
    fn begin_write(&self) -> Result<WriteTicket, MvccError> {
        Ok(WriteTicket {
            term: self.ready_term()?,
        })
    }

    fn write(&self, ticket: WriteTicket, batch: WriteBatch) -> Result<(), MvccError> {
        let mut cmd = self.command()?.in_term(ticket.term);
        cmd.push(Op::Write(batch));
        self.propose(cmd, Some(ticket.term)).map(|_| ())
    }

    fn begin_write_now(&self) -> Result<Option<WriteTicket>, MvccError> {
        Ok(self.ready_term_now()?.map(|term| WriteTicket { term }))
    }

    fn write_async(&self, ticket: WriteTicket, batch: WriteBatch) -> WriteFuture {
        let writer = self.clone();
        Box::pin(async move {
            let mut cmd = writer.command()?.in_term(ticket.term);
            cmd.push(Op::Write(batch));
            writer
                .propose_async(cmd, Some(ticket.term))
                .await
                .map(|_| ())
        })
    }

    fn read_barrier(&self) -> Result<(), MvccError> {
        let handle = self.handle.clone();
        let shard = self.shard;
        // The driver bounds reads by its own read timeout; nothing to watch here.
        match wait_on(async move { handle.read_index(shard).await }, || None) {
            Ok(_) => Ok(()),
            Err(e) => Err(not_applied(shard, e)),
        }
    }

    fn read_barrier_async(&self) -> WriteFuture {
        let handle = self.handle.clone();
        let shard = self.shard;
        // Bounded by the driver's read timeout, as the blocking barrier.
        Box::pin(async move {
            handle
                .read_index(shard)
                .await
                .map(|_| ())
                .map_err(|e| not_applied(shard, e))
        })
    }
}

fn tso_error(e: MvccError) -> TsoError {
    match e {
        MvccError::NotLeader { leader, .. } => TsoError::NotLeader { leader },
        other => TsoError::Unavailable(other.to_string()),
    }
}

/// The timestamp oracle's Raft group: the data shard's (the meta shard's later).
#[derive(Debug, Clone)]
pub struct RaftTsoGroup {
    pub(super) writer: RaftShardWriter,
    pub(super) state: Arc<ShardState>,
    pub(super) floor_ms: u64,
}

impl TsoGroup for RaftTsoGroup {
    fn leader_term(&self) -> Result<u64, TsoError> {
        self.writer.ready_term().map_err(tso_error)
    }

    fn leader_term_now(&self) -> Result<Option<u64>, TsoError> {
        self.writer.ready_term_now().map_err(tso_error)
    }

    fn applied_mark_ms(&self) -> u64 {
        physical(self.state.tso_high_water()).max(self.floor_ms)
    }

    fn persist_mark(&self, mark_ms: u64) -> Result<(), TsoError> {
        let mut cmd = self.writer.command().map_err(tso_error)?;
        cmd.push(Op::SetTsoHighWater(compose(mark_ms, 0)));
        self.writer
            .propose(cmd, None)
            .map(|_| ())
            .map_err(tso_error)
    }

    fn confirm_leadership(&self, term: u64) -> Result<(), TsoError> {
        self.writer.read_barrier().map_err(tso_error)?;
        match self.writer.status() {
            Ok(s) if s.role == Role::Leader && s.term == term => Ok(()),
            Ok(s) => Err(TsoError::NotLeader {
                leader: s.leader.map(|p| p.0),
            }),
            Err(e) => Err(tso_error(e)),
        }
    }
}
