//! The client side of the `strata` CLI: an etcdctl for Strata.
//!
//! ```text
//!   strata get KEY                 strata put KEY VALUE          strata delete KEY
//!   strata scan [--prefix P | --start S --end E] [--limit N] [--reverse]
//!   strata txn                     an interactive transaction, commands from a prompt or stdin
//!   strata status
//! ```
//!
//! Every command talks gRPC to one server: the first reachable of `--endpoints a,b,c`
//! (`STRATA_ENDPOINTS`), else `--endpoint` (`STRATA_ENDPOINT`, default the playground's
//! `127.0.0.1:7379`). Keys and values are text, hex or base64 (`--encoding`); results print
//! as text or, with `--output json`, one JSON object per line. Exit codes scripts can rely
//! on are in [`ExitStatus`].
//!
//! Failover: when a connection fails ([`is_connection_error`]), reads (`get`, `scan`,
//! `status`) move to the next reachable endpoint and are asked again; a write is never
//! sent again, since the first attempt may have been applied: its outcome is reported as
//! unknown. The transaction shell reports an open transaction as lost and goes on from
//! the next endpoint only with a new transaction (`txn_shell`).

pub mod encoding;
pub mod kv_batch;
pub mod node_process;
pub mod playground;
pub mod status;
pub mod txn_shell;

use std::future::Future;
use std::io::Write;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde_json::json;
use strata_proto::v1::admin_client::AdminClient;
use strata_proto::v1::kv_client::KvClient;
use strata_proto::v1::txn_client::TxnClient;
use strata_proto::v1::{self, ErrorDetail};
use tonic::transport::{Channel, Endpoint};

pub use encoding::Format;
pub use kv_batch::KvBatch;

/// The playground's gRPC address, the default endpoint.
pub const DEFAULT_ENDPOINT: &str = "127.0.0.1:7379";

/// Process exit codes of client commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// The command did what was asked.
    Ok = 0,
    /// It failed: the server refused it, or the server could not be reached.
    Failed = 1,
    /// The command line was wrong (clap's own code).
    Usage = 2,
    /// `get` found no such key.
    NotFound = 3,
    /// A retryable failure (conflict, lock, overload): running the command again may work.
    Retryable = 4,
}

/// Output format of results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Output {
    /// Human-readable text.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Options every client command shares.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientOptions {
    /// The server's gRPC address, HOST:PORT.
    #[arg(long, global = true, env = "STRATA_ENDPOINT", default_value = DEFAULT_ENDPOINT)]
    pub endpoint: String,
    /// Several servers' gRPC addresses, HOST:PORT,...: commands use the first reachable one
    /// and fail over to the next (`bench run` spreads its clients over all). Overrides
    /// --endpoint.
    #[arg(
        long,
        global = true,
        env = "STRATA_ENDPOINTS",
        value_name = "HOST:PORT,..."
    )]
    pub endpoints: Option<String>,
    /// How keys and values are written on the command line and printed.
    #[arg(long = "encoding", id = "encoding", global = true, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Seconds to wait for the server before giving up.
    #[arg(long, global = true, default_value_t = 10)]
    pub timeout: u64,
}

/// A failure with the exit status it maps to.
#[derive(Debug)]
pub struct CommandError {
    /// The exit status.
    pub status: ExitStatus,
    /// The one-line message.
    pub error: anyhow::Error,
}

impl From<anyhow::Error> for CommandError {
    fn from(error: anyhow::Error) -> Self {
        CommandError {
            status: ExitStatus::Failed,
            error,
        }
    }
}

impl ClientOptions {
    /// Options for `endpoint` with the other settings at their defaults.
    pub fn for_endpoint(endpoint: impl Into<String>) -> ClientOptions {
        ClientOptions {
            endpoint: endpoint.into(),
            endpoints: None,
            format: Format::Text,
            output: Output::Text,
            timeout: 10,
        }
    }

    /// The endpoints to use, in order: `--endpoints` when given, else `--endpoint`.
    pub fn endpoint_list(&self) -> Result<Vec<String>> {
        let Some(list) = &self.endpoints else {
            return Ok(vec![self.endpoint.clone()]);
        };
        let endpoints: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_owned)
            .collect();
        if endpoints.is_empty() {
            return Err(anyhow!("--endpoints names no endpoint"));
        }
        Ok(endpoints)
    }

    /// How long to wait for a server.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout.max(1))
    }
}

/// Whether a failed call failed because the connection did (the server is down or
/// unreachable, or the connection broke), rather than because the server answered with an
/// error. Strata's own errors always carry an [`ErrorDetail`]; transport failures never do.
pub fn is_connection_error(status: &tonic::Status) -> bool {
    if ErrorDetail::from_status(status).is_some() {
        return false;
    }
    match status.code() {
        tonic::Code::Unavailable => true,
        tonic::Code::Unknown | tonic::Code::Internal | tonic::Code::Cancelled => {
            let m = status.message().to_ascii_lowercase();
            [
                "transport",
                "connection",
                "h2 protocol",
                "broken pipe",
                "reset",
            ]
            .iter()
            .any(|w| m.contains(w))
        }
        _ => false,
    }
}

/// Whether the server answered NOT_LEADER: it did nothing, and the call may be sent to
/// another node (the leader) as it is, writes included.
pub fn is_not_leader(status: &tonic::Status) -> bool {
    ErrorDetail::from_status(status)
        .and_then(|d| d.reason_enum())
        .is_some_and(|r| r == strata_proto::v1::ErrorReason::NotLeader)
}

/// Turns a gRPC status into a one-line error with the right exit status.
pub fn status_error(status: tonic::Status) -> CommandError {
    let detail = ErrorDetail::from_status(&status);
    let retryable = detail.as_ref().is_some_and(|d| d.retryable);
    let reason = detail
        .as_ref()
        .map(|d| d.reason.clone())
        .unwrap_or_default();
    let mut message = status.message().to_string();
    if !reason.is_empty() {
        message = format!("{reason}: {message}");
    }
    if retryable {
        message.push_str(" (retryable)");
    }
    CommandError {
        status: if retryable {
            ExitStatus::Retryable
        } else {
            ExitStatus::Failed
        },
        error: anyhow!(message),
    }
}

/// gRPC clients of one server, chosen among several endpoints.
#[derive(Debug, Clone)]
pub struct Clients {
    /// Auto-committed reads and writes.
    pub kv: KvClient<Channel>,
    /// Interactive transactions.
    pub txn: TxnClient<Channel>,
    /// Status.
    pub admin: AdminClient<Channel>,
    endpoints: Vec<String>,
    current: usize,
    timeout: Duration,
}

impl Clients {
    /// Connects to the first reachable endpoint of `options`.
    pub async fn connect(options: &ClientOptions) -> Result<Clients> {
        Clients::connect_first(&options.endpoint_list()?, options.timeout()).await
    }

    /// Connects to the first reachable of `endpoints` (HOST:PORT or a URI each), trying them
    /// in order.
    pub async fn connect_first(endpoints: &[String], timeout: Duration) -> Result<Clients> {
        let mut failures = Vec::new();
        for (i, endpoint) in endpoints.iter().enumerate() {
            match connect_channel(endpoint, timeout).await {
                Ok(channel) => return Ok(Clients::over(channel, endpoints.to_vec(), i, timeout)),
                Err(e) => failures.push(format!("{endpoint}: {e:#}")),
            }
        }
        Err(match endpoints {
            [one] => anyhow!(
                "cannot reach a Strata server at {one}: {}",
                failures.join("; ")
            ),
            _ => anyhow!(
                "cannot reach a Strata server at any of {}: {}",
                endpoints.join(", "),
                failures.join("; ")
            ),
        })
    }

    /// Connects to exactly `endpoint`.
    pub async fn connect_one(endpoint: &str, timeout: Duration) -> Result<Clients> {
        Clients::connect_first(&[endpoint.to_owned()], timeout).await
    }

    fn over(
        channel: Channel,
        endpoints: Vec<String>,
        current: usize,
        timeout: Duration,
    ) -> Clients {
        let limit = strata_proto::limits::MAX_MESSAGE_BYTES as usize;
        Clients {
            kv: KvClient::new(channel.clone()).max_decoding_message_size(limit),
            txn: TxnClient::new(channel.clone()).max_decoding_message_size(limit),
            admin: AdminClient::new(channel).max_decoding_message_size(limit),
            endpoints,
            current,
            timeout,
        }
    }

    /// The endpoint these clients talk to.
    pub fn endpoint(&self) -> &str {
        &self.endpoints[self.current]
    }

    /// Every endpoint, in the order given.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Moves to the next reachable endpoint after the current one (in order, wrapping
    /// round, the current one last). Fails when none answers; the clients then stay as
    /// they were.
    pub async fn failover(&mut self) -> Result<()> {
        let n = self.endpoints.len();
        let mut failures = Vec::new();
        for step in 1..=n {
            let i = (self.current + step) % n;
            match connect_channel(&self.endpoints[i], self.timeout).await {
                Ok(channel) => {
                    tracing::info!(from = %self.endpoint(), to = %self.endpoints[i], "failing over");
                    *self = Clients::over(channel, self.endpoints.clone(), i, self.timeout);
                    return Ok(());
                }
                Err(e) => failures.push(format!("{}: {e:#}", self.endpoints[i])),
            }
        }
        Err(anyhow!("no endpoint is reachable: {}", failures.join("; ")))
    }

    /// Runs a call that is safe to repeat (a read), moving to the next reachable endpoint
    /// and asking again when the connection fails (every endpoint at most once) or a node
    /// answers NOT_LEADER (see [`Clients::write`]).
    pub async fn idempotent<T, F, Fut>(&mut self, call: F) -> Result<T, tonic::Status>
    where
        F: FnMut(Clients) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        self.retrying(call, true).await
    }

    /// Runs a write. A node that answers NOT_LEADER wrote nothing, so the write moves to
    /// the next reachable endpoint, round and round with a short backoff while an election
    /// settles, up to [`LEADER_WAIT`]; a failed connection is never followed by a resend,
    /// since the write may have been applied.
    pub async fn write<T, F, Fut>(&mut self, call: F) -> Result<T, tonic::Status>
    where
        F: FnMut(Clients) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        self.retrying(call, false).await
    }

    async fn retrying<T, F, Fut>(
        &mut self,
        mut call: F,
        resend_after_connection_error: bool,
    ) -> Result<T, tonic::Status>
    where
        F: FnMut(Clients) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let deadline = std::time::Instant::now() + LEADER_WAIT;
        let mut connection_failures_left = self.endpoints.len();
        let mut tried_since_pause = 0;
        loop {
            let s = match call(self.clone()).await {
                Err(s) => s,
                ok => return ok,
            };
            let not_leader = is_not_leader(&s);
            if resend_after_connection_error && is_connection_error(&s) {
                if connection_failures_left <= 1 {
                    return Err(s);
                }
                connection_failures_left -= 1;
            } else if !not_leader || std::time::Instant::now() >= deadline {
                return Err(s);
            }
            tried_since_pause += 1;
            if not_leader && tried_since_pause >= self.endpoints.len() {
                // Every node said no: an election is on. Let it settle.
                tried_since_pause = 0;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if self.endpoints.len() > 1 && self.failover().await.is_err() {
                return Err(s);
            }
        }
    }
}

/// How long a call answered NOT_LEADER keeps looking for the leader.
pub const LEADER_WAIT: Duration = Duration::from_secs(10);

async fn connect_channel(endpoint: &str, timeout: Duration) -> Result<Channel> {
    let uri = if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("http://{endpoint}")
    };
    Endpoint::from_shared(uri)
        .with_context(|| format!("bad endpoint {endpoint:?}"))?
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect()
        .await
        .map_err(anyhow::Error::from)
}

/// The error of a write whose connection failed: it is not sent again.
fn write_outcome_unknown(c: &Clients, status: tonic::Status) -> CommandError {
    if is_connection_error(&status) {
        return CommandError {
            status: ExitStatus::Failed,
            error: anyhow!(
                "the connection to {} failed during the write ({}): it may or may not have been applied, and was not sent again",
                c.endpoint(),
                status.message()
            ),
        };
    }
    status_error(status)
}

/// Prints one key/value pair.
pub fn print_kv(out: &mut dyn Write, o: &ClientOptions, key: &[u8], value: &[u8]) -> Result<()> {
    match o.output {
        Output::Text => writeln!(out, "{}\t{}", o.format.encode(key), o.format.encode(value))?,
        Output::Json => writeln!(
            out,
            "{}",
            json!({"key": o.format.encode(key), "value": o.format.encode(value)})
        )?,
    }
    Ok(())
}

/// `strata get KEY`.
pub async fn get(
    c: &mut Clients,
    o: &ClientOptions,
    key: &str,
    out: &mut dyn Write,
) -> Result<ExitStatus, CommandError> {
    let key = o.format.decode(key)?;
    let req = v1::GetRequest {
        key: key.clone(),
        read_ts: 0,
    };
    let resp = c
        .idempotent(|mut c| {
            let req = req.clone();
            async move { c.kv.get(req).await }
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if !resp.found {
        if o.output == Output::Json {
            writeln!(
                out,
                "{}",
                json!({"key": o.format.encode(&key), "found": false})
            )
            .map_err(anyhow::Error::from)?;
        }
        return Ok(ExitStatus::NotFound);
    }
    match o.output {
        Output::Text => writeln!(out, "{}", o.format.encode(&resp.value)).map_err(anyhow::Error::from)?,
        Output::Json => writeln!(
            out,
            "{}",
            json!({"key": o.format.encode(&key), "found": true, "value": o.format.encode(&resp.value), "read_ts": resp.read_ts})
        )
        .map_err(anyhow::Error::from)?,
    }
    Ok(ExitStatus::Ok)
}

/// `strata put KEY VALUE`.
pub async fn put(
    c: &mut Clients,
    o: &ClientOptions,
    key: &str,
    value: &str,
    out: &mut dyn Write,
) -> Result<ExitStatus, CommandError> {
    let req = v1::PutRequest {
        key: o.format.decode(key)?,
        value: o.format.decode(value)?,
    };
    let resp = c
        .write(|mut c| {
            let req = req.clone();
            async move { c.kv.put(req).await }
        })
        .await
        .map_err(|s| write_outcome_unknown(c, s))?
        .into_inner();
    print_written(out, o, resp.commit_ts)
}

/// `strata delete KEY`.
pub async fn delete(
    c: &mut Clients,
    o: &ClientOptions,
    key: &str,
    out: &mut dyn Write,
) -> Result<ExitStatus, CommandError> {
    let req = v1::DeleteRequest {
        key: o.format.decode(key)?,
    };
    let resp = c
        .write(|mut c| {
            let req = req.clone();
            async move { c.kv.delete(req).await }
        })
        .await
        .map_err(|s| write_outcome_unknown(c, s))?
        .into_inner();
    print_written(out, o, resp.commit_ts)
}

fn print_written(
    out: &mut dyn Write,
    o: &ClientOptions,
    commit_ts: u64,
) -> Result<ExitStatus, CommandError> {
    match o.output {
        Output::Text => writeln!(out, "OK (commit_ts {commit_ts})"),
        Output::Json => writeln!(out, "{}", json!({"ok": true, "commit_ts": commit_ts})),
    }
    .map_err(anyhow::Error::from)?;
    Ok(ExitStatus::Ok)
}

/// What `strata scan` reads.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ScanArgs {
    /// Every key starting with this prefix.
    #[arg(long, conflicts_with_all = ["start", "end"])]
    pub prefix: Option<String>,
    /// First key (inclusive).
    #[arg(long)]
    pub start: Option<String>,
    /// End key (exclusive).
    #[arg(long)]
    pub end: Option<String>,
    /// At most this many pairs (0: everything, fetched page by page).
    #[arg(long, default_value_t = 0)]
    pub limit: u64,
    /// Newest key first.
    #[arg(long)]
    pub reverse: bool,
    /// Print keys only.
    #[arg(long)]
    pub keys_only: bool,
}

/// The smallest key greater than every key starting with `prefix` (`None`: no bound).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    crate::lsm::key::prefix_successor(prefix)
}

/// `strata scan`: pages through the range at one snapshot (`read_ts` of the first page).
pub async fn scan(
    c: &mut Clients,
    o: &ClientOptions,
    args: &ScanArgs,
    out: &mut dyn Write,
) -> Result<ExitStatus, CommandError> {
    let (mut start, mut end) = match &args.prefix {
        Some(p) => {
            let p = o.format.decode(p)?;
            let e = prefix_end(&p);
            (p, e)
        }
        None => (
            args.start
                .as_deref()
                .map(|s| o.format.decode(s))
                .transpose()?
                .unwrap_or_default(),
            args.end
                .as_deref()
                .map(|s| o.format.decode(s))
                .transpose()?,
        ),
    };
    let page = strata_proto::limits::MAX_SCAN_LIMIT;
    let mut remaining = if args.limit == 0 {
        u64::MAX
    } else {
        args.limit
    };
    let mut read_ts = 0;
    while remaining > 0 {
        let req = v1::ScanRequest {
            start: start.clone(),
            end: end.clone().unwrap_or_default(),
            limit: remaining.min(page) as u32,
            reverse: args.reverse,
            read_ts,
        };
        let resp = c
            .idempotent(|mut c| {
                let req = req.clone();
                async move { c.kv.scan(req).await }
            })
            .await
            .map_err(status_error)?
            .into_inner();
        read_ts = resp.read_ts;
        let Some(last) = resp.kvs.last().map(|kv| kv.key.clone()) else {
            break;
        };
        for kv in &resp.kvs {
            if args.keys_only {
                match o.output {
                    Output::Text => writeln!(out, "{}", o.format.encode(&kv.key)),
                    Output::Json => writeln!(out, "{}", json!({"key": o.format.encode(&kv.key)})),
                }
                .map_err(anyhow::Error::from)?;
            } else {
                print_kv(out, o, &kv.key, &kv.value)?;
            }
        }
        remaining = remaining.saturating_sub(resp.kvs.len() as u64);
        if !resp.more {
            break;
        }
        // Continue after the last key (forward) or before it (reverse).
        if args.reverse {
            end = Some(last);
        } else {
            let mut next = last;
            next.push(0);
            start = next;
        }
    }
    Ok(ExitStatus::Ok)
}

/// `strata status`.
pub async fn status(
    c: &mut Clients,
    o: &ClientOptions,
    out: &mut dyn Write,
) -> Result<ExitStatus, CommandError> {
    let s = c
        .idempotent(|mut c| async move { c.admin.status(v1::StatusRequest {}).await })
        .await
        .map_err(status_error)?
        .into_inner();
    match o.output {
        Output::Json => writeln!(out, "{}", status::render_json(&s)),
        Output::Text => write!(out, "{}", status::render_text(&s)),
    }
    .map_err(anyhow::Error::from)?;
    Ok(ExitStatus::Ok)
}

/// `strata node ...`: membership changes.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum NodeCommand {
    /// Add a running node (started with `--join`, or with fresh data) as a learner, wait
    /// until it caught up, then make it a voter.
    Add {
        /// Its node id.
        node_id: u64,
        /// Its Raft address, HOST:PORT.
        raft_addr: String,
        /// Its gRPC address, HOST:PORT.
        #[arg(long, default_value = "")]
        grpc_addr: String,
    },
    /// Remove a node from the data shard's group (refused if unsafe).
    Remove {
        /// The node id.
        node_id: u64,
    },
    /// Move every replica off a node (hand over leadership, keep the replication factor,
    /// remove it); prints DRAINED when done.
    Decommission {
        /// The node id.
        node_id: u64,
        /// Voters the group must keep.
        #[arg(long, default_value_t = 3)]
        replication_factor: u32,
    },
    /// Whether a node still holds a replica (ACTIVE) or none (DRAINED).
    DrainStatus {
        /// The node id.
        node_id: u64,
    },
}

fn print_members(
    out: &mut dyn Write,
    o: &ClientOptions,
    what: &str,
    members: &[v1::ClusterMember],
) -> Result<()> {
    match o.output {
        Output::Json => {
            let m: Vec<_> = members
                .iter()
                .map(|m| json!({"node_id": m.node_id, "raft_addr": m.raft_addr, "grpc_addr": m.grpc_addr, "voter": m.voter}))
                .collect();
            writeln!(out, "{}", json!({"ok": true, "result": what, "members": m}))?;
        }
        Output::Text => {
            writeln!(out, "{what}")?;
            for m in members {
                let role = if m.voter { "voter" } else { "learner" };
                writeln!(
                    out,
                    "  node {} {role} raft {} grpc {}",
                    m.node_id, m.raft_addr, m.grpc_addr
                )?;
            }
        }
    }
    Ok(())
}

/// Runs a `strata node` subcommand.
pub async fn node(
    c: &mut Clients,
    o: &ClientOptions,
    cmd: &NodeCommand,
    out: &mut dyn Write,
) -> Result<ExitStatus, CommandError> {
    match cmd.clone() {
        NodeCommand::Add {
            node_id,
            raft_addr,
            grpc_addr,
        } => {
            let req = v1::AddNodeRequest {
                node_id,
                raft_addr,
                grpc_addr,
                incarnation: String::new(),
                catch_up_timeout_ms: 0,
            };
            let r = c
                .idempotent(|mut c| {
                    let req = req.clone();
                    async move { c.admin.add_node(req).await }
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let what = if r.already_member {
                format!("node {node_id} already is a voter")
            } else {
                format!("added node {node_id}")
            };
            print_members(out, o, &what, &r.members)?;
        }
        NodeCommand::Remove { node_id } => {
            let r = c
                .idempotent(|mut c| async move {
                    c.admin.remove_node(v1::RemoveNodeRequest { node_id }).await
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let what = if r.was_member {
                format!("removed node {node_id}")
            } else {
                format!("node {node_id} is not a member")
            };
            print_members(out, o, &what, &r.members)?;
        }
        NodeCommand::Decommission {
            node_id,
            replication_factor,
        } => {
            let r = c
                .idempotent(|mut c| async move {
                    c.admin
                        .decommission(v1::DecommissionRequest {
                            node_id,
                            replication_factor,
                        })
                        .await
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let what = format!("node {node_id} DRAINED ({})", r.summary);
            print_members(out, o, &what, &r.members)?;
        }
        NodeCommand::DrainStatus { node_id } => {
            let r = c
                .idempotent(|mut c| async move {
                    c.admin
                        .decommission_status(v1::DecommissionStatusRequest { node_id })
                        .await
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let state = if r.state == v1::DrainState::Drained as i32 {
                "DRAINED"
            } else {
                "ACTIVE"
            };
            match o.output {
                Output::Json => writeln!(out, "{}", json!({"node_id": node_id, "state": state, "voter": r.voter, "leader": r.leader})),
                Output::Text => writeln!(out, "node {node_id} {state}"),
            }
            .map_err(anyhow::Error::from)?;
        }
    }
    Ok(ExitStatus::Ok)
}

/// `strata transfer-leader <node id>`.
pub async fn transfer_leader(
    c: &mut Clients,
    o: &ClientOptions,
    node_id: u64,
    out: &mut dyn Write,
) -> Result<ExitStatus, CommandError> {
    let r = c
        .idempotent(|mut c| async move {
            c.admin
                .transfer_leader(v1::TransferLeaderRequest { node_id })
                .await
        })
        .await
        .map_err(status_error)?
        .into_inner();
    match o.output {
        Output::Json => writeln!(
            out,
            "{}",
            json!({"ok": true, "leader_node_id": r.leader_node_id})
        ),
        Output::Text => writeln!(out, "node {} leads", r.leader_node_id),
    }
    .map_err(anyhow::Error::from)?;
    Ok(ExitStatus::Ok)
}

#[cfg(test)]
#[path = "failover_tests.rs"]
mod failover_tests;
