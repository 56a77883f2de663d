//! `strata bench run`: a YCSB-style client benchmark against a running node over gRPC.
//!
//! ```text
//!   load (untimed, skipped with --no-load): keys 0..--keys (bank: --accounts balances)
//!          written with Kv puts, in batches by concurrent tasks
//!   run:   --clients tokio tasks for --duration s over --connections gRPC connections
//!          (default one per endpoint): connection j to endpoint j mod n, client i on
//!          connection i mod --connections (etcd's benchmark spreads --conns the same way;
//!          every endpoint must answer); gets and puts travel over one Kv.Batch stream
//!          per connection (--rpc batch, the default: the calls the connection's clients
//!          have queued share a message) or as one unary call each (--rpc unary)
//!          ycsb-a  50% read / 50% update      put   single-key Kv puts
//!          ycsb-b  95% read /  5% update      get   single-key Kv gets
//!          ycsb-c 100% read                   bank  transfers in interactive transactions
//!   report: per operation type ops, ops/s, p50/p95/p99, errors, abort rate ─► text or JSON
//!           and what the servers spent: CPU µs and fsyncs per operation over all nodes of
//!           the cluster, proposals per Raft ready (see [`server_cost`](super::server_cost))
//! ```
//!
//! Keys are chosen uniformly or by a scrambled Zipfian distribution (YCSB's
//! `ScrambledZipfianGenerator`, constant 0.99) drawn from [`SplitMix64`], so two runs with the
//! same `--seed` ask for the same keys. A retryable failure (ABORTED, or an error detail marked
//! retryable) is an abort: it is counted and the operation retried; any other failure is an
//! error and the operation is dropped. The abort rate is aborts over attempts.
//!
//! `bank` moves money between `--accounts` accounts: begin, get two balances, put both,
//! commit. The sum of all balances is read before and after the run and must not change.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use strata_proto::v1::{self, ErrorDetail};

use super::engine::OutputFormat;
use super::generator::{SplitMix64, ValueGen};
use super::histogram::Histogram;
use super::server_cost::{server_cost, ClusterNodes, ServerCost};
use crate::cli::{ClientOptions, Clients, KvBatch};

mod keys;
mod report;

use keys::{account_key, unit, ycsb_key, KeyChooser};
pub use keys::{Zipfian, ZIPFIAN_CONSTANT};

use report::write_report;
#[cfg(test)]
use report::write_server_cost;

/// The workload of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClusterWorkload {
    /// 50% reads, 50% updates.
    YcsbA,
    /// 95% reads, 5% updates.
    YcsbB,
    /// 100% reads.
    YcsbC,
    /// Single-key puts.
    Put,
    /// Single-key gets.
    Get,
    /// Transfers between accounts in interactive transactions.
    Bank,
}

impl ClusterWorkload {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ClusterWorkload::YcsbA => "ycsb-a",
            ClusterWorkload::YcsbB => "ycsb-b",
            ClusterWorkload::YcsbC => "ycsb-c",
            ClusterWorkload::Put => "put",
            ClusterWorkload::Get => "get",
            ClusterWorkload::Bank => "bank",
        }
    }

    /// Fraction of operations that are reads (the rest are updates), for the key-value mixes.
    fn read_fraction(self) -> f64 {
        match self {
            ClusterWorkload::YcsbA => 0.5,
            ClusterWorkload::YcsbB => 0.95,
            ClusterWorkload::YcsbC | ClusterWorkload::Get => 1.0,
            ClusterWorkload::Put | ClusterWorkload::Bank => 0.0,
        }
    }
}

/// How the key-value workloads send their calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rpc {
    /// Over one `Kv.Batch` stream per connection, shared by the connection's clients: each
    /// message carries the calls queued at the time (D172).
    Batch,
    /// One unary call (one HTTP/2 stream) per operation.
    Unary,
}

/// How keys are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Distribution {
    /// Every key equally likely.
    Uniform,
    /// Scrambled Zipfian with constant 0.99: a few hot keys, spread over the key space.
    Zipfian,
}

/// Options of `strata bench run`.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterBenchConfig {
    /// The workload.
    #[arg(long, value_enum, default_value_t = ClusterWorkload::YcsbA)]
    pub workload: ClusterWorkload,
    /// Concurrent clients (tokio tasks sharing the connections).
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// gRPC connections (HTTP/2 channels) the clients share, spread round-robin over the
    /// endpoints; 0 means one per endpoint. Like etcd's `benchmark --conns`.
    #[arg(long, default_value_t = 0)]
    pub connections: usize,
    /// How gets and puts travel (bank's transactions are always unary calls).
    #[arg(long, value_enum, default_value_t = Rpc::Batch)]
    pub rpc: Rpc,
    /// Seconds to run the timed phase.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Number of keys (loaded before the timed phase unless --no-load).
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Number of bank accounts.
    #[arg(long, default_value_t = 1_000)]
    pub accounts: u64,
    /// Skip loading: the keys (or accounts) are already there.
    #[arg(long)]
    pub no_load: bool,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Output format: a text table, or one JSON object per line.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
    /// Seed of the PRNG that picks keys and fills values.
    #[arg(long, default_value_t = 0x5eed)]
    pub seed: u64,
    /// How keys are chosen.
    #[arg(long, value_enum, default_value_t = Distribution::Zipfian)]
    pub distribution: Distribution,
}

impl ClusterBenchConfig {
    /// How many connections a run over `endpoints` endpoints opens: `--connections`, or one
    /// per endpoint when it is 0 (never fewer than the endpoints, which must all be measured).
    pub fn connections_for(&self, endpoints: usize) -> usize {
        if self.connections == 0 {
            endpoints
        } else {
            self.connections.max(endpoints)
        }
    }
}

impl Default for ClusterBenchConfig {
    /// The defaults of the command line.
    fn default() -> Self {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: ClusterBenchConfig,
        }
        <Wrapper as clap::Parser>::parse_from(["bench"]).config
    }
}

/// Balance every account starts with when loaded.
pub const INITIAL_BALANCE: i64 = 1_000;

/// Operation types measured separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OpKind {
    /// A Kv get.
    Read,
    /// A Kv put of an existing key.
    Update,
    /// A Kv put.
    Put,
    /// A bank transfer transaction.
    Transfer,
}

impl OpKind {
    const ALL: [OpKind; 4] = [OpKind::Read, OpKind::Update, OpKind::Put, OpKind::Transfer];

    fn index(self) -> usize {
        self as usize
    }

    fn name(self) -> &'static str {
        match self {
            OpKind::Read => "read",
            OpKind::Update => "update",
            OpKind::Put => "put",
            OpKind::Transfer => "transfer",
        }
    }
}

/// What one client measured of one operation type.
#[derive(Debug, Clone, Default)]
struct OpStats {
    latency: Histogram,
    attempts: u64,
    aborts: u64,
    errors: u64,
}

impl OpStats {
    fn merge(&mut self, other: &OpStats) {
        self.latency.merge(&other.latency);
        self.attempts += other.attempts;
        self.aborts += other.aborts;
        self.errors += other.errors;
    }
}

/// The results of one operation type (or of all of them, `op: "all"`).
#[derive(Debug, Clone, Serialize)]
pub struct OpResult {
    /// The workload.
    pub workload: ClusterWorkload,
    /// The operation type, or `all`.
    pub op: &'static str,
    /// Concurrent clients.
    pub clients: usize,
    /// Operations that succeeded.
    pub ops: u64,
    /// `ops` over the wall time of the timed phase.
    pub ops_per_sec: f64,
    /// Median latency of a successful operation (retries included), in microseconds.
    pub p50_us: f64,
    /// 95th percentile latency, in microseconds.
    pub p95_us: f64,
    /// 99th percentile latency, in microseconds.
    pub p99_us: f64,
    /// Retryable failures over attempts.
    pub abort_rate: f64,
    /// Operations that failed with a non-retryable error.
    pub errors: u64,
}

impl OpResult {
    fn new(config: &ClusterBenchConfig, op: &'static str, s: &OpStats, seconds: f64) -> Self {
        let us = |ns: u64| ns as f64 / 1000.0;
        let ops = s.latency.count();
        OpResult {
            workload: config.workload,
            op,
            clients: config.clients,
            ops,
            ops_per_sec: if seconds > 0.0 {
                ops as f64 / seconds
            } else {
                0.0
            },
            p50_us: us(s.latency.percentile(50.0)),
            p95_us: us(s.latency.percentile(95.0)),
            p99_us: us(s.latency.percentile(99.0)),
            abort_rate: if s.attempts > 0 {
                s.aborts as f64 / s.attempts as f64
            } else {
                0.0
            },
            errors: s.errors,
        }
    }
}

/// The bank invariant: the sum of balances before and after the run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct BankCheck {
    /// Sum of balances before the timed phase.
    pub sum_before: i64,
    /// Sum of balances after it.
    pub sum_after: i64,
}

impl BankCheck {
    /// Whether no money was created or lost.
    pub fn holds(&self) -> bool {
        self.sum_before == self.sum_after
    }
}

/// Everything a run measured.
#[derive(Debug, Clone)]
pub struct ClusterReport {
    /// The endpoints the clients were spread over (connection j on endpoint j mod n).
    pub endpoints: Vec<String>,
    /// The connections the clients shared (client i on connection i mod this).
    pub connections: usize,
    /// Wall time of the timed phase.
    pub seconds: f64,
    /// Per operation type that occurred.
    pub ops: Vec<OpResult>,
    /// All operation types together.
    pub total: OpResult,
    /// The bank invariant, for `bank`.
    pub bank: Option<BankCheck>,
    /// What the run cost the servers (all nodes found), per completed operation.
    pub server: ServerCost,
}

pub(crate) fn is_retryable(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Aborted
        || ErrorDetail::from_status(status).is_some_and(|d| d.retryable)
}

/// Runs `config`'s workload against the server of `options` and writes the report to `out`.
pub async fn run(
    config: &ClusterBenchConfig,
    options: &ClientOptions,
    out: &mut dyn Write,
) -> Result<ClusterReport> {
    if config.clients == 0 {
        bail!("--clients must be at least 1");
    }
    let bank = config.workload == ClusterWorkload::Bank;
    let items = if bank { config.accounts } else { config.keys };
    if items == 0 || (bank && items < 2) {
        bail!("need at least {} keys/accounts", if bank { 2 } else { 1 });
    }
    let endpoints = options.endpoint_list()?;
    let mut servers = Vec::with_capacity(endpoints.len());
    for endpoint in &endpoints {
        // A benchmark measures the servers it was asked to: each one must answer.
        servers.push(Clients::connect_one(endpoint, options.timeout()).await?);
    }
    // The run's connections: the first one per endpoint is the one just made, the others are
    // opened the same way (each `connect_one` is a channel, an HTTP/2 connection, of its own).
    let connections = config.connections_for(endpoints.len());
    let mut channels = servers.clone();
    for j in servers.len()..connections {
        let endpoint = &endpoints[j % endpoints.len()];
        channels.push(Clients::connect_one(endpoint, options.timeout()).await?);
    }
    let clients = servers[0].clone();
    let named: Vec<(String, Clients)> = endpoints.iter().cloned().zip(servers.clone()).collect();
    let cluster = ClusterNodes::discover(&named, options.timeout()).await;
    let mut rng = SplitMix64::for_stream(config.seed, config.workload.name());
    let values = ValueGen::new(config.value_size.max(1), &mut rng);

    if !config.no_load {
        load(&servers, config, items, &values).await?;
    }
    let sum_before = if bank {
        Some(balance_sum(&clients, items).await?)
    } else {
        None
    };

    let chooser = KeyChooser::new(items, config.distribution);
    let deadline_in = Duration::from_secs(config.duration);
    let samples_before = cluster.sample().await;
    let start = Instant::now();
    let deadline = start + deadline_in;
    let batches: Vec<KvBatch> = channels
        .iter()
        .map(|c| KvBatch::new(c.kv.clone()))
        .collect();
    let mut tasks = Vec::with_capacity(config.clients);
    for id in 0..config.clients {
        let c = channels[id % channels.len()].clone();
        let chooser = chooser.clone();
        let mut values = values.clone();
        let mut rng =
            SplitMix64::for_stream(config.seed, &format!("{}/{id}", config.workload.name()));
        let workload = config.workload;
        let batch = match config.rpc {
            Rpc::Batch => Some(batches[id % channels.len()].clone()),
            Rpc::Unary => None,
        };
        tasks.push(tokio::spawn(async move {
            if workload == ClusterWorkload::Bank {
                bank_client(c, chooser, rng, deadline).await
            } else {
                let calls = KvCalls { unary: c, batch };
                kv_client(calls, workload, chooser, &mut values, &mut rng, deadline).await
            }
        }));
    }
    let mut stats: Vec<OpStats> = vec![OpStats::default(); OpKind::ALL.len()];
    for t in tasks {
        let s = t.await.context("a benchmark client panicked")?;
        for (a, b) in stats.iter_mut().zip(&s) {
            a.merge(b);
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let samples_after = cluster.sample().await;

    let bank_check = match sum_before {
        Some(sum_before) => Some(BankCheck {
            sum_before,
            sum_after: balance_sum(&clients, items).await?,
        }),
        None => None,
    };

    let mut total = OpStats::default();
    let mut ops = Vec::new();
    for kind in OpKind::ALL {
        let s = &stats[kind.index()];
        if s.attempts > 0 || s.errors > 0 {
            total.merge(s);
            ops.push(OpResult::new(config, kind.name(), s, seconds));
        }
    }
    let total = OpResult::new(config, "all", &total, seconds);
    let server = server_cost(
        &samples_before,
        &samples_after,
        total.ops,
        &cluster.unreachable,
    );
    let report = ClusterReport {
        endpoints,
        connections,
        seconds,
        ops,
        total,
        bank: bank_check,
        server,
    };
    write_report(config, &report, out)?;
    Ok(report)
}

/// Writes the keys (or the accounts' starting balances) untimed, in batches by concurrent tasks.
async fn load(
    servers: &[Clients],
    config: &ClusterBenchConfig,
    items: u64,
    values: &ValueGen,
) -> Result<()> {
    let bank = config.workload == ClusterWorkload::Bank;
    let loaders = config.clients.clamp(1, 64) as u64;
    let batch = items.div_ceil(loaders);
    let mut tasks = Vec::new();
    for l in 0..loaders {
        let lo = l * batch;
        let hi = ((l + 1) * batch).min(items);
        if lo >= hi {
            break;
        }
        let mut c = servers[l as usize % servers.len()].clone();
        let mut values = values.clone();
        tasks.push(tokio::spawn(async move {
            for i in lo..hi {
                let (key, value) = if bank {
                    (account_key(i), INITIAL_BALANCE.to_string().into_bytes())
                } else {
                    (ycsb_key(i), values.next_value().to_vec())
                };
                loop {
                    match c
                        .kv
                        .put(v1::PutRequest {
                            key: key.clone(),
                            value: value.clone(),
                        })
                        .await
                    {
                        Ok(_) => break,
                        Err(s) if is_retryable(&s) => continue,
                        Err(s) => return Err(crate::cli::status_error(s).error.context("loading")),
                    }
                }
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await.context("a loader panicked")??;
    }
    Ok(())
}

/// The sum of all balances, read in one snapshot (missing accounts count 0).
async fn balance_sum(clients: &Clients, accounts: u64) -> Result<i64> {
    let mut c = clients.clone();
    let mut sum = 0i64;
    let mut read_ts = 0;
    for chunk_start in (0..accounts).step_by(1000) {
        let keys: Vec<Vec<u8>> = (chunk_start..(chunk_start + 1000).min(accounts))
            .map(account_key)
            .collect();
        let resp =
            c.kv.batch_get(v1::BatchGetRequest { keys, read_ts })
                .await
                .map_err(|s| crate::cli::status_error(s).error)?
                .into_inner();
        read_ts = resp.read_ts;
        for r in resp.results {
            if r.found {
                sum += parse_balance(&r.value)?;
            }
        }
    }
    Ok(sum)
}

fn parse_balance(value: &[u8]) -> Result<i64> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not a balance: {:?}", String::from_utf8_lossy(value)))
}

/// A key-value client's way to the server: unary calls, or its connection's batch stream.
struct KvCalls {
    unary: Clients,
    batch: Option<KvBatch>,
}

impl KvCalls {
    async fn get(&mut self, request: v1::GetRequest) -> Result<(), tonic::Status> {
        match &self.batch {
            Some(b) => b.get(request).await.map(|_| ()),
            None => self.unary.kv.get(request).await.map(|_| ()),
        }
    }

    async fn put(&mut self, request: v1::PutRequest) -> Result<(), tonic::Status> {
        match &self.batch {
            Some(b) => b.put(request).await.map(|_| ()),
            None => self.unary.kv.put(request).await.map(|_| ()),
        }
    }
}

async fn kv_client(
    mut c: KvCalls,
    workload: ClusterWorkload,
    chooser: KeyChooser,
    values: &mut ValueGen,
    rng: &mut SplitMix64,
    deadline: Instant,
) -> Vec<OpStats> {
    let mut stats = vec![OpStats::default(); OpKind::ALL.len()];
    let read_fraction = workload.read_fraction();
    while Instant::now() < deadline {
        let key = ycsb_key(chooser.next(rng));
        let read = read_fraction >= 1.0 || (read_fraction > 0.0 && unit(rng) < read_fraction);
        let kind = match (read, workload) {
            (true, _) => OpKind::Read,
            (false, ClusterWorkload::Put) => OpKind::Put,
            (false, _) => OpKind::Update,
        };
        let value = (!read).then(|| values.next_value().to_vec());
        let s = &mut stats[kind.index()];
        let began = Instant::now();
        loop {
            s.attempts += 1;
            let result = match &value {
                None => {
                    c.get(v1::GetRequest {
                        key: key.clone(),
                        read_ts: 0,
                    })
                    .await
                }
                Some(v) => {
                    c.put(v1::PutRequest {
                        key: key.clone(),
                        value: v.clone(),
                    })
                    .await
                }
            };
            match result {
                Ok(()) => {
                    s.latency.record_duration(began.elapsed());
                    break;
                }
                Err(st) if is_retryable(&st) && Instant::now() < deadline => s.aborts += 1,
                Err(_) => {
                    s.errors += 1;
                    break;
                }
            }
        }
    }
    stats
}

/// How one transfer attempt ended.
enum Attempt {
    Committed,
    Retry,
    Failed,
}

async fn bank_client(
    mut c: Clients,
    chooser: KeyChooser,
    mut rng: SplitMix64,
    deadline: Instant,
) -> Vec<OpStats> {
    let mut stats = vec![OpStats::default(); OpKind::ALL.len()];
    let s = &mut stats[OpKind::Transfer.index()];
    while Instant::now() < deadline {
        let from = chooser.next(&mut rng);
        let mut to = chooser.next(&mut rng);
        while to == from {
            to = rng.below(chooser.items);
        }
        let amount = 1 + rng.below(10) as i64;
        let began = Instant::now();
        loop {
            s.attempts += 1;
            match transfer(&mut c, from, to, amount).await {
                Attempt::Committed => {
                    s.latency.record_duration(began.elapsed());
                    break;
                }
                Attempt::Retry if Instant::now() < deadline => s.aborts += 1,
                Attempt::Retry => {
                    // Out of time: the last attempt aborted and changed nothing.
                    s.aborts += 1;
                    break;
                }
                Attempt::Failed => {
                    s.errors += 1;
                    break;
                }
            }
        }
    }
    stats
}

async fn transfer(c: &mut Clients, from: u64, to: u64, amount: i64) -> Attempt {
    let classify = |st: &tonic::Status| {
        if is_retryable(st) {
            Attempt::Retry
        } else {
            Attempt::Failed
        }
    };
    let txn_id = match c
        .txn
        .begin(v1::BeginRequest {
            isolation: 0,
            read_only: false,
        })
        .await
    {
        Ok(r) => r.into_inner().txn_id,
        Err(st) => return classify(&st),
    };
    let result: Result<(), Attempt> = async {
        let (fk, tk) = (account_key(from), account_key(to));
        let mut balances = [0i64; 2];
        for (slot, key) in balances.iter_mut().zip([&fk, &tk]) {
            let r = c
                .txn
                .get(v1::TxnGetRequest {
                    txn_id,
                    key: key.clone(),
                })
                .await
                .map_err(|st| classify(&st))?
                .into_inner();
            if r.found {
                *slot = parse_balance(&r.value).map_err(|_| Attempt::Failed)?;
            }
        }
        for (key, balance) in [(fk, balances[0] - amount), (tk, balances[1] + amount)] {
            c.txn
                .put(v1::TxnPutRequest {
                    txn_id,
                    key,
                    value: balance.to_string().into_bytes(),
                })
                .await
                .map_err(|st| classify(&st))?;
        }
        c.txn
            .commit(v1::CommitRequest { txn_id })
            .await
            .map_err(|st| classify(&st))?;
        Ok(())
    }
    .await;
    match result {
        Ok(()) => Attempt::Committed,
        Err(a) => {
            // Best effort: the server may already have ended the transaction.
            let _ = c.txn.rollback(v1::RollbackRequest { txn_id }).await;
            a
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Format, Output};
    use crate::server::Server;

    #[test]
    fn renders_the_servers_cost() {
        let node = |id: u64| super::super::server_cost::NodeSample {
            node_id: id,
            cpu_seconds: 1.5,
            raft_log_syncs: 300,
            engine_wal_syncs: 0,
            raft_proposals: 900,
            raft_proposal_readies: 300,
            ..Default::default()
        };
        let cost = ServerCost {
            nodes: vec![node(1), node(2)],
            unmeasured: vec!["node 3".into()],
            cpu_seconds: 3.0,
            cpu_us_per_op: 250.0,
            raft_log_syncs: 600,
            engine_wal_syncs: 0,
            fsyncs_per_op: 0.05,
            proposals_per_ready: 3.0,
            blind_writes_committed: 882,
            blind_writes_declined: 18,
            latest_reads_served: 990,
            latest_reads_declined: 10,
        };
        let mut out = Vec::new();
        write_server_cost(&cost, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "  servers (2 nodes): CPU 250.0 µs/op (3.00 s), fsyncs 0.050/op (raft log 600, \
             engine WAL 0), proposals/ready 3.00\n\
             \x20   blind writes: 882 committed, 18 declined (2.0%, run as transactions)\n\
             \x20   latest reads: 990 keys served, 10 declined (1.0%, read in transactions)\n\
             \x20   node 1: CPU 1.50 s, raft log fsyncs 300, WAL fsyncs 0, proposals 900 in 300 readies\n\
             \x20   node 2: CPU 1.50 s, raft log fsyncs 300, WAL fsyncs 0, proposals 900 in 300 readies\n\
             \x20 not measured: node 3\n"
        );
        let mut out = Vec::new();
        write_server_cost(&ServerCost::default(), &mut out).unwrap();
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("not measured (no node sent"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn every_workload_runs_against_an_in_process_node() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let handle = Server::start(crate::server::tests::test_config(dir.path())).await?;
        let options = ClientOptions {
            endpoint: handle.grpc_addr().to_string(),
            endpoints: None,
            format: Format::Text,
            output: Output::Text,
            timeout: 10,
        };
        for (workload, rpc) in [
            (ClusterWorkload::YcsbA, Rpc::Batch),
            (ClusterWorkload::YcsbA, Rpc::Unary),
            (ClusterWorkload::YcsbB, Rpc::Batch),
            (ClusterWorkload::YcsbC, Rpc::Batch),
            (ClusterWorkload::Put, Rpc::Batch),
            (ClusterWorkload::Get, Rpc::Unary),
            (ClusterWorkload::Bank, Rpc::Batch),
        ] {
            let config = ClusterBenchConfig {
                workload,
                rpc,
                clients: 4,
                duration: 1,
                keys: 200,
                accounts: 20,
                format: OutputFormat::Json,
                ..Default::default()
            };
            let mut out = Vec::new();
            let report = run(&config, &options, &mut out).await?;
            assert!(report.total.ops > 0, "{workload:?}: no ops");
            let text = String::from_utf8(out)?;
            let lines: Vec<serde_json::Value> = text
                .lines()
                .map(serde_json::from_str)
                .collect::<Result<_, _>>()?;
            assert!(!lines.is_empty());
            for l in &lines {
                assert_eq!(l["workload"], workload.name());
                assert!(l["ops"].as_u64().is_some());
                for f in ["ops_per_sec", "p50_us", "p95_us", "p99_us", "abort_rate"] {
                    assert!(l[f].as_f64().is_some(), "{f} in {l}");
                }
                assert_eq!(l["errors"], 0, "{l}");
            }
            // The servers' cost is on the total line: one node measured, and every write
            // paid a raft log fsync (some shared one).
            let last = lines.last().unwrap();
            assert_eq!(last["server_nodes"], 1, "{last}");
            let unary = rpc == Rpc::Unary || workload == ClusterWorkload::Bank;
            assert_eq!(last["rpc"] == "unary", unary, "{last}");
            assert!(report.server.unmeasured.is_empty(), "{:?}", report.server);
            for f in [
                "server_cpu_seconds",
                "server_cpu_us_per_op",
                "fsyncs_per_op",
                "proposals_per_ready",
            ] {
                assert!(last[f].as_f64().is_some(), "{f} in {last}");
            }
            assert!(report.server.cpu_seconds > 0.0, "{:?}", report.server);
            if workload.read_fraction() < 1.0 {
                let s = &report.server;
                assert!(s.raft_log_syncs > 0, "{s:?}");
                assert!(
                    s.fsyncs_per_op > 0.0 && s.proposals_per_ready >= 1.0,
                    "{s:?}"
                );
                // A write is one proposal, so a ready carries no more than every client's.
                assert!(s.proposals_per_ready <= 4.0 + 1.0, "{s:?}");
            }
            if workload == ClusterWorkload::Bank {
                let b = report.bank.expect("bank check");
                assert!(b.holds(), "{b:?}");
                assert_eq!(b.sum_before, 20 * INITIAL_BALANCE);
                let last = lines.last().unwrap();
                assert_eq!(last["invariant_holds"], true);
            }
            // The text report renders too.
            let mut text = Vec::new();
            write_report(
                &ClusterBenchConfig {
                    format: OutputFormat::Text,
                    ..config
                },
                &report,
                &mut text,
            )?;
            let text = String::from_utf8(text)?;
            assert!(text.contains("all"));
            assert!(text.contains("servers (1 nodes): CPU "), "{text}");
        }
        handle.shutdown().await?;
        Ok(())
    }

    #[test]
    fn connections_default_to_one_per_endpoint_and_never_fewer() {
        let config = |connections| ClusterBenchConfig {
            connections,
            ..Default::default()
        };
        assert_eq!(config(0).connections_for(3), 3);
        assert_eq!(config(64).connections_for(3), 64);
        assert_eq!(config(1).connections_for(3), 3);
        assert_eq!(config(0).connections_for(1), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn clients_are_spread_round_robin_over_the_endpoints() -> anyhow::Result<()> {
        let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
        let first = Server::start(crate::server::tests::test_config(a.path())).await?;
        let second = Server::start(crate::server::tests::test_config(b.path())).await?;
        let options = ClientOptions {
            endpoints: Some(format!("{},{}", first.grpc_addr(), second.grpc_addr())),
            ..ClientOptions::for_endpoint("unused:1")
        };
        let config = ClusterBenchConfig {
            workload: ClusterWorkload::Put,
            clients: 4,
            connections: 3,
            duration: 1,
            keys: 50,
            no_load: true,
            format: OutputFormat::Text,
            ..Default::default()
        };
        let mut out = Vec::new();
        let report = run(&config, &options, &mut out).await?;
        assert_eq!(report.endpoints.len(), 2);
        assert_eq!(report.connections, 3);
        // Both nodes are measured though both are node 1: they are told apart by address.
        assert_eq!(report.server.nodes.len(), 2, "{:?}", report.server);
        let text = String::from_utf8(out)?;
        assert!(
            text.contains("spread round-robin over 3 connections to"),
            "{text}"
        );
        // Each server took writes: the two nodes share no data, so each one's engine saw
        // its own client's puts.
        for server in [&first, &second] {
            let mut c =
                Clients::connect_one(&server.grpc_addr().to_string(), Duration::from_secs(5))
                    .await?;
            let s = c.admin.status(v1::StatusRequest {}).await?.into_inner();
            let written = s.engine.map(|e| e.user_bytes_written).unwrap_or(0);
            assert!(written > 0, "{} took no writes", server.grpc_addr());
        }
        // An endpoint that does not answer fails the run before it starts.
        let options = ClientOptions {
            endpoints: Some(format!("{},127.0.0.1:1", first.grpc_addr())),
            timeout: 2,
            ..ClientOptions::for_endpoint("unused:1")
        };
        let err = run(&config, &options, &mut Vec::new()).await.unwrap_err();
        assert!(format!("{err:#}").contains("127.0.0.1:1"), "{err:#}");
        first.shutdown().await?;
        second.shutdown().await?;
        Ok(())
    }
}
