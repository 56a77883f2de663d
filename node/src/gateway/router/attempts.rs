//! [`Attempts`]: the router's retry loop of one command, as a state machine with no I/O. The
//! blocking route and the asynchronous one (`Routing::route`, `Routing::route_async`) both
//! ask it where the next attempt goes and what a failed one means (follow a hint, adopt an
//! epoch, pause, give up), so the two cannot drift apart.

use super::*;

/// The retry loop of one command (see the module documentation), shared by the blocking
/// and the asynchronous routes: where the next attempt goes, and what a failed one means.
pub(super) struct Attempts {
    resend: Resend,
    deadline: Instant,
    backoff: Duration,
    max_backoff: Duration,
    hint: Option<u64>,
    lost: bool,
    hops: u32,
    tried: Option<u64>,
}

impl Attempts {
    pub(super) fn new(config: &RouterConfig, resend: Resend) -> Attempts {
        Attempts {
            resend,
            deadline: Instant::now() + config.retry_deadline,
            backoff: config.min_backoff,
            max_backoff: config.max_backoff,
            hint: None,
            lost: false,
            hops: 0,
            tried: None,
        }
    }

    /// The next attempt's target, counted.
    pub(super) fn target(
        &mut self,
        routing: &Routing<'_>,
    ) -> std::result::Result<Target, CallError> {
        self.tried = None;
        let target = routing.target(self.hint.take())?;
        match &target {
            Target::Local => {
                routing.stats.local.fetch_add(1, Ordering::Relaxed);
            }
            Target::Remote(r) => {
                self.tried = Some(r.node_id);
                routing.stats.remote.fetch_add(1, Ordering::Relaxed);
                if self.lost {
                    routing.stats.resent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Ok(target)
    }

    /// After a failed attempt: the error to give up with, or the pause before the next
    /// attempt (`None`: at once).
    pub(super) fn failed(
        &mut self,
        routing: &Routing<'_>,
        err: CallError,
    ) -> std::result::Result<Option<Duration>, CallError> {
        let mut at_once = false;
        match &err {
            CallError::NotLeader { leader, .. } => {
                // Follow the hint at once, unless it names the node that just refused.
                if let Some(next) = leader.filter(|n| Some(*n) != self.tried) {
                    routing.stats.hints_followed.fetch_add(1, Ordering::Relaxed);
                    self.hint = Some(next);
                    self.hops += 1;
                    at_once = self.hops <= MAX_HOPS;
                }
            }
            CallError::EpochNotMatch(current) => {
                let mut epoch = routing.epoch.lock();
                at_once = *epoch != Some(*current);
                *epoch = Some(*current);
            }
            CallError::ShardNotFound | CallError::NotSent(_) => {}
            CallError::Lost(_) => match self.resend {
                Resend::Never => return Err(err),
                Resend::Read | Resend::Write | Resend::Decisive => self.lost = true,
            },
            CallError::Mvcc(MvccError::OutcomeUnknown(_)) => return Err(err),
            CallError::Mvcc(_) | CallError::Tso(_) | CallError::Invalid(_)
                if self.lost && self.resend == Resend::Decisive =>
            {
                return Err(CallError::Lost(format!(
                    "an earlier attempt's answer was lost, and a later one answered: {}",
                    describe(&err)
                )));
            }
            CallError::Mvcc(_) | CallError::Tso(_) | CallError::Invalid(_) => return Err(err),
        }
        let now = Instant::now();
        if now >= self.deadline {
            return Err(match (self.lost, self.resend) {
                (true, Resend::Write | Resend::Decisive) => CallError::Lost(format!(
                    "an answer was lost and no later attempt settled it: {}",
                    describe(&err)
                )),
                _ => err,
            });
        }
        if at_once {
            return Ok(None);
        }
        let pause = self
            .backoff
            .min(self.deadline.saturating_duration_since(now));
        self.backoff = (self.backoff * 2).min(self.max_backoff);
        Ok(Some(pause))
    }
}
