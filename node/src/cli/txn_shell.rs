//! `strata txn`: an interactive transaction, one command per line.
//!
//! ```text
//!   begin [snapshot|serializable] [read-only]    (optional: the first command begins one)
//!   get KEY | put KEY VALUE | delete KEY | scan START [END] [LIMIT]
//!   commit | rollback | help | exit
//! ```
//!
//! Tokens are separated by spaces; a token in double quotes may contain spaces and `\"`.
//! From a terminal a prompt is shown and an error leaves the transaction open; from a pipe
//! or file the first error stops the session with its exit status. Input that ends with a
//! transaction still open rolls it back and fails, so a script never commits by accident.
//!
//! A lost connection loses the open transaction: it lived on that server, and nothing it
//! wrote was committed (a `commit` whose connection failed has an unknown outcome, and
//! says so). Nothing is sent again. From a terminal the shell then moves to the next
//! reachable endpoint, where a new command begins a new transaction; from a script it stops
//! (exit 1), since the lines that follow belong to the lost transaction.

use std::io::{BufRead, Write};

use anyhow::{anyhow, bail, Result};
use serde_json::json;
use strata_proto::v1;

use super::{
    is_connection_error, status_error, ClientOptions, Clients, CommandError, ExitStatus, Output,
};

/// A call of the shell failed because its connection did.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct ConnectionLost {
    message: String,
}

/// The error of a call of the shell: a lost connection is told apart.
fn call_error(endpoint: &str, committing: Option<u64>, s: tonic::Status) -> CommandError {
    if !is_connection_error(&s) {
        return status_error(s);
    }
    let message = match committing {
        Some(txn) => format!(
            "the connection to {endpoint} failed during commit ({}): the outcome of transaction {txn} is unknown (it may have committed); it was not sent again",
            s.message()
        ),
        None => format!("the connection to {endpoint} failed ({})", s.message()),
    };
    CommandError {
        status: ExitStatus::Failed,
        error: anyhow::Error::new(ConnectionLost { message }),
    }
}

/// Splits a line into tokens, honouring double quotes.
pub fn tokenize(line: &str) -> Result<Vec<String>> {
    let mut tokens = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut token = String::new();
        if c == '"' {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(e) => token.push(e),
                        None => bail!("unfinished escape in {line:?}"),
                    },
                    Some(ch) => token.push(ch),
                    None => bail!("unterminated quote in {line:?}"),
                }
            }
        } else {
            while let Some(&ch) = chars.peek() {
                if ch.is_whitespace() {
                    break;
                }
                token.push(ch);
                chars.next();
            }
        }
        tokens.push(token);
    }
    Ok(tokens)
}

struct Session<'a> {
    clients: &'a mut Clients,
    options: &'a ClientOptions,
    txn: Option<u64>,
}

impl Session<'_> {
    async fn ensure(&mut self) -> Result<u64, CommandError> {
        if let Some(id) = self.txn {
            return Ok(id);
        }
        self.begin(v1::Isolation::Snapshot, false).await
    }

    async fn begin(
        &mut self,
        isolation: v1::Isolation,
        read_only: bool,
    ) -> Result<u64, CommandError> {
        if self.txn.is_some() {
            return Err(anyhow!("a transaction is already open; commit or rollback first").into());
        }
        let resp = self
            .clients
            .txn
            .begin(v1::BeginRequest {
                isolation: isolation as i32,
                read_only,
            })
            .await
            .map_err(|e| call_error(self.clients.endpoint(), None, e))?
            .into_inner();
        self.txn = Some(resp.txn_id);
        Ok(resp.txn_id)
    }

    async fn run(&mut self, tokens: &[String], out: &mut dyn Write) -> Result<bool, CommandError> {
        let o = self.options;
        let f = o.format;
        let io = |r: std::io::Result<()>| r.map_err(|e| CommandError::from(anyhow::Error::from(e)));
        let endpoint = self.clients.endpoint().to_owned();
        let Some(cmd) = tokens.first() else {
            return Ok(true);
        };
        let args = &tokens[1..];
        let arg = |i: usize, name: &str| -> Result<&String, CommandError> {
            args.get(i)
                .ok_or_else(|| anyhow!("{cmd}: missing {name}").into())
        };
        match cmd.as_str() {
            "begin" => {
                let isolation = if args.iter().any(|a| a == "serializable") {
                    v1::Isolation::Serializable
                } else {
                    v1::Isolation::Snapshot
                };
                let id = self.begin(isolation, args.iter().any(|a| a == "read-only")).await?;
                match o.output {
                    Output::Text => io(writeln!(out, "BEGIN (txn {id})"))?,
                    Output::Json => io(writeln!(out, "{}", json!({"begin": id})))?,
                }
            }
            "get" => {
                let key = f.decode(arg(0, "KEY")?)?;
                let txn_id = self.ensure().await?;
                let r = self
                    .clients
                    .txn
                    .get(v1::TxnGetRequest { txn_id, key: key.clone() })
                    .await
                    .map_err(|e| call_error(&endpoint, None, e))?
                    .into_inner();
                match (o.output, r.found) {
                    (Output::Text, true) => io(writeln!(out, "{}", f.encode(&r.value)))?,
                    (Output::Text, false) => io(writeln!(out, "(not found)"))?,
                    (Output::Json, found) => io(writeln!(
                        out,
                        "{}",
                        json!({"key": f.encode(&key), "found": found, "value": found.then(|| f.encode(&r.value))})
                    ))?,
                }
            }
            "put" => {
                let (key, value) = (f.decode(arg(0, "KEY")?)?, f.decode(arg(1, "VALUE")?)?);
                let txn_id = self.ensure().await?;
                self.clients.txn.put(v1::TxnPutRequest { txn_id, key, value }).await.map_err(|e| call_error(&endpoint, None, e))?;
                if o.output == Output::Text {
                    io(writeln!(out, "OK"))?;
                }
            }
            "delete" => {
                let key = f.decode(arg(0, "KEY")?)?;
                let txn_id = self.ensure().await?;
                self.clients.txn.delete(v1::TxnDeleteRequest { txn_id, key }).await.map_err(|e| call_error(&endpoint, None, e))?;
                if o.output == Output::Text {
                    io(writeln!(out, "OK"))?;
                }
            }
            "scan" => {
                let start = f.decode(arg(0, "START")?)?;
                let end = args.get(1).map(|e| f.decode(e)).transpose()?.unwrap_or_default();
                let limit = match args.get(2) {
                    Some(l) => l.parse::<u32>().map_err(|_| anyhow!("scan: LIMIT must be a number"))?,
                    None => 0,
                };
                let txn_id = self.ensure().await?;
                let r = self
                    .clients
                    .txn
                    .scan(v1::TxnScanRequest { txn_id, start, end, limit, reverse: false })
                    .await
                    .map_err(|e| call_error(&endpoint, None, e))?
                    .into_inner();
                for kv in r.kvs {
                    super::print_kv(out, o, &kv.key, &kv.value)?;
                }
            }
            "commit" => {
                let Some(txn_id) = self.txn.take() else {
                    return Err(anyhow!("commit: no open transaction").into());
                };
                let r = self.clients.txn.commit(v1::CommitRequest { txn_id }).await.map_err(|e| call_error(&endpoint, Some(txn_id), e))?.into_inner();
                match o.output {
                    Output::Text => io(writeln!(out, "COMMIT (commit_ts {})", r.commit_ts))?,
                    Output::Json => io(writeln!(out, "{}", json!({"commit_ts": r.commit_ts})))?,
                }
            }
            "rollback" => {
                let Some(txn_id) = self.txn.take() else {
                    return Err(anyhow!("rollback: no open transaction").into());
                };
                self.clients.txn.rollback(v1::RollbackRequest { txn_id }).await.map_err(|e| call_error(&endpoint, None, e))?;
                if o.output == Output::Text {
                    io(writeln!(out, "ROLLBACK"))?;
                }
            }
            "help" => io(writeln!(
                out,
                "begin [snapshot|serializable] [read-only] | get KEY | put KEY VALUE | delete KEY | \
                 scan START [END] [LIMIT] | commit | rollback | exit"
            ))?,
            "exit" | "quit" => return Ok(false),
            other => return Err(anyhow!("unknown command {other:?} (try help)").into()),
        }
        Ok(true)
    }
}

/// Runs a transaction session over `input`. `interactive` shows a prompt and keeps going
/// after errors.
pub async fn run(
    clients: &mut Clients,
    options: &ClientOptions,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    interactive: bool,
) -> Result<ExitStatus, CommandError> {
    let mut session = Session {
        clients,
        options,
        txn: None,
    };
    let mut line = String::new();
    loop {
        if interactive {
            let prompt = if session.txn.is_some() {
                "txn> "
            } else {
                "strata> "
            };
            write!(out, "{prompt}")
                .and_then(|()| out.flush())
                .map_err(anyhow::Error::from)?;
        }
        line.clear();
        if input.read_line(&mut line).map_err(anyhow::Error::from)? == 0 {
            break;
        }
        let result = match tokenize(line.trim()) {
            Ok(tokens) => session.run(&tokens, out).await,
            Err(e) => Err(e.into()),
        };
        match result {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) if e.error.downcast_ref::<ConnectionLost>().is_some() => {
                let lost = session.txn.take();
                let mut message = format!("{:#}", e.error);
                if let Some(txn_id) = lost {
                    message.push_str(&format!(
                        "; transaction {txn_id} is lost: nothing it wrote was committed"
                    ));
                }
                if !interactive {
                    return Err(CommandError {
                        status: ExitStatus::Failed,
                        error: anyhow!(message),
                    });
                }
                writeln!(out, "error: {message}").map_err(anyhow::Error::from)?;
                match session.clients.failover().await {
                    Ok(()) => writeln!(
                        out,
                        "now connected to {}; the next command begins a new transaction",
                        session.clients.endpoint()
                    ),
                    Err(e) => writeln!(out, "error: {e:#}"),
                }
                .map_err(anyhow::Error::from)?;
            }
            Err(e) if interactive => {
                writeln!(out, "error: {:#}", e.error).map_err(anyhow::Error::from)?;
            }
            Err(e) => {
                if let Some(txn_id) = session.txn.take() {
                    let _ = session
                        .clients
                        .txn
                        .rollback(v1::RollbackRequest { txn_id })
                        .await;
                }
                return Err(e);
            }
        }
    }
    if let Some(txn_id) = session.txn.take() {
        let _ = session
            .clients
            .txn
            .rollback(v1::RollbackRequest { txn_id })
            .await;
        return Err(CommandError {
            status: ExitStatus::Failed,
            error: anyhow!("input ended with the transaction still open; it was rolled back"),
        });
    }
    Ok(ExitStatus::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizes_quotes_and_escapes() {
        assert_eq!(
            tokenize(r#"put "a key" value"#).unwrap(),
            ["put", "a key", "value"]
        );
        assert_eq!(
            tokenize(r#"put k "say \"hi\"""#).unwrap(),
            ["put", "k", r#"say "hi""#]
        );
        assert_eq!(tokenize("   ").unwrap(), Vec::<String>::new());
        assert!(tokenize(r#"put "open"#).is_err());
    }

    /// Lines handed out one by one; before line `gate` it tells the test and waits for its
    /// go-ahead, so the test can act between two commands.
    struct GatedInput {
        lines: std::collections::VecDeque<String>,
        served: usize,
        gate: usize,
        reached: std::sync::mpsc::Sender<()>,
        go: std::sync::mpsc::Receiver<()>,
        buf: Vec<u8>,
    }

    impl std::io::Read for GatedInput {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = std::io::BufRead::fill_buf(self)?.len().min(out.len());
            out[..n].copy_from_slice(&self.buf[..n]);
            std::io::BufRead::consume(self, n);
            Ok(n)
        }
    }

    impl BufRead for GatedInput {
        fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
            if self.buf.is_empty() {
                if self.served == self.gate {
                    let _ = self.reached.send(());
                    let _ = self.go.recv();
                }
                if let Some(line) = self.lines.pop_front() {
                    self.served += 1;
                    self.buf = line.into_bytes();
                }
            }
            Ok(&self.buf)
        }

        fn consume(&mut self, n: usize) {
            self.buf.drain(..n);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_connection_loses_the_transaction_and_nothing_is_sent_again() {
        use crate::server::Server;
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let first = Server::start(crate::server::tests::test_config(a.path()))
            .await
            .unwrap();
        let second = Server::start(crate::server::tests::test_config(b.path()))
            .await
            .unwrap();
        let endpoints = vec![
            first.grpc_addr().to_string(),
            second.grpc_addr().to_string(),
        ];
        let options = ClientOptions::for_endpoint("unused:1");
        let mut clients = Clients::connect_first(&endpoints, std::time::Duration::from_secs(5))
            .await
            .unwrap();
        let (reached_tx, reached) = std::sync::mpsc::channel();
        let (go, go_rx) = std::sync::mpsc::channel();
        let mut input = GatedInput {
            lines: ["put a 1\n", "put b 2\n", "put c 3\n", "commit\n"]
                .map(String::from)
                .into(),
            served: 0,
            gate: 1,
            reached: reached_tx,
            go: go_rx,
            buf: Vec::new(),
        };
        // The shell in its own thread, interactive (keeps going after errors).
        let shell = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let mut out = Vec::new();
            let status = rt.block_on(run(&mut clients, &options, &mut input, &mut out, true));
            (
                status.map_err(|e| e.error.to_string()),
                String::from_utf8(out).unwrap(),
            )
        });
        // After "put a 1": the first server goes away.
        tokio::task::spawn_blocking(move || reached.recv())
            .await
            .unwrap()
            .unwrap();
        first.shutdown().await.unwrap();
        go.send(()).unwrap();
        let (status, out) = tokio::task::spawn_blocking(move || shell.join().unwrap())
            .await
            .unwrap();
        assert!(status.is_ok(), "{status:?}\n{out}");
        assert!(
            out.contains("is lost: nothing it wrote was committed"),
            "{out}"
        );
        assert!(
            out.contains(&format!("now connected to {}", endpoints[1])),
            "{out}"
        );
        // The lost "put b 2" was not sent again; "put c 3" began a new transaction on the
        // second node, and only it committed there.
        let mut c = Clients::connect_one(&endpoints[1], std::time::Duration::from_secs(5))
            .await
            .unwrap();
        for (key, expected) in [("a", None), ("b", None), ("c", Some(&b"3"[..]))] {
            let r =
                c.kv.get(v1::GetRequest {
                    key: key.into(),
                    read_ts: 0,
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(r.found.then_some(r.value).as_deref(), expected, "{key}");
        }
        second.shutdown().await.unwrap();
    }
}
