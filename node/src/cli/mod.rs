//! The client side of the `strata` CLI: an etcdctl for Strata.
//!
//! ```text
//!   strata get KEY                 strata put KEY VALUE          strata delete KEY
//!   strata scan [--prefix P | --start S --end E] [--limit N] [--reverse]
//!   strata txn                     an interactive transaction, commands from a prompt or stdin
//!   strata status
//! ```
//!
//! Every command talks gRPC to `--endpoint` (`STRATA_ENDPOINT`, default the playground's
//! `127.0.0.1:7379`). Keys and values are text, hex or base64 (`--encoding`); results print
//! as text or, with `--output json`, one JSON object per line. Exit codes scripts can rely
//! on are in [`ExitStatus`].

pub mod encoding;
pub mod txn_shell;

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

/// gRPC clients of one server.
#[derive(Debug, Clone)]
pub struct Clients {
    /// Auto-committed reads and writes.
    pub kv: KvClient<Channel>,
    /// Interactive transactions.
    pub txn: TxnClient<Channel>,
    /// Status.
    pub admin: AdminClient<Channel>,
}

impl Clients {
    /// Connects to `endpoint` (HOST:PORT).
    pub async fn connect(options: &ClientOptions) -> Result<Clients> {
        let uri = if options.endpoint.contains("://") {
            options.endpoint.clone()
        } else {
            format!("http://{}", options.endpoint)
        };
        let timeout = Duration::from_secs(options.timeout.max(1));
        let channel = Endpoint::from_shared(uri.clone())
            .with_context(|| format!("bad endpoint {:?}", options.endpoint))?
            .connect_timeout(timeout)
            .timeout(timeout)
            .connect()
            .await
            .with_context(|| format!("cannot reach a Strata server at {}", options.endpoint))?;
        let limit = strata_proto::limits::MAX_MESSAGE_BYTES as usize;
        Ok(Clients {
            kv: KvClient::new(channel.clone()).max_decoding_message_size(limit),
            txn: TxnClient::new(channel.clone()).max_decoding_message_size(limit),
            admin: AdminClient::new(channel).max_decoding_message_size(limit),
        })
    }
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
    let resp =
        c.kv.get(v1::GetRequest {
            key: key.clone(),
            read_ts: 0,
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
    let resp = c.kv.put(req).await.map_err(status_error)?.into_inner();
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
    let resp = c.kv.delete(req).await.map_err(status_error)?.into_inner();
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
        let resp = c.kv.scan(req).await.map_err(status_error)?.into_inner();
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
        .admin
        .status(v1::StatusRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    let e = s.engine.unwrap_or_default();
    let w = |r: std::io::Result<()>| r.map_err(anyhow::Error::from);
    match o.output {
        Output::Json => w(writeln!(
            out,
            "{}",
            json!({
                "node_id": s.node_id, "version": s.version, "uptime_seconds": s.uptime_seconds,
                "active_transactions": s.active_transactions, "gc_safe_point": s.gc_safe_point,
                "write_amplification": e.write_amplification, "read_amplification": e.read_amplification,
                "space_amplification": e.space_amplification, "total_sst_bytes": e.total_sst_bytes,
                "memtable_bytes": e.memtable_bytes,
                "levels": e.levels.iter().map(|l| json!({"level": l.level, "files": l.files, "bytes": l.bytes})).collect::<Vec<_>>(),
            })
        ))?,
        Output::Text => {
            w(writeln!(
                out,
                "node {} (strata {}), up {} s",
                s.node_id, s.version, s.uptime_seconds
            ))?;
            w(writeln!(
                out,
                "active transactions: {}, GC safe point: {}",
                s.active_transactions, s.gc_safe_point
            ))?;
            w(writeln!(
                out,
                "engine: {} B in tables, {} B in memtables; write amp {:.2}, read amp {:.2}, space amp {:.2}",
                e.total_sst_bytes, e.memtable_bytes, e.write_amplification, e.read_amplification, e.space_amplification
            ))?;
            for l in e.levels.iter().filter(|l| l.files > 0) {
                w(writeln!(
                    out,
                    "  L{}: {} files, {} B",
                    l.level, l.files, l.bytes
                ))?;
            }
        }
    }
    Ok(ExitStatus::Ok)
}
