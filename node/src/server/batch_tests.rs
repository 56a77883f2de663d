//! `Kv.Batch` over the wire on 127.0.0.1: the raw stream (answers by id, errors as the unary
//! calls give them, flow control, large answers split, shutdown), and the client's
//! [`KvBatch`] over it (many callers, a stream that ends, a new one).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use strata_proto::limits::{MAX_MESSAGE_BYTES, MAX_STREAM_CALLS};
use strata_proto::v1 as pb;
use strata_proto::v1::kv_call::Call;
use strata_proto::v1::kv_client::KvClient;
use strata_proto::v1::kv_result::Result as Answer;
use strata_proto::v1::{ErrorDetail, ErrorReason};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

use super::tests::{channel, test_config};
use super::{Server, ServerHandle};
use crate::cli::KvBatch;

/// Bounds every wait on the server, so that a regression fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(30);

/// A node on a fresh directory (keep the directory while it runs), and a Kv client of it
/// that takes messages up to the server's limit.
async fn start() -> (tempfile::TempDir, ServerHandle, KvClient<Channel>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let handle = Server::start(test_config(dir.path())).await.expect("start");
    let kv =
        KvClient::new(channel(&handle).await).max_decoding_message_size(MAX_MESSAGE_BYTES as usize);
    (dir, handle, kv)
}

/// An open `Kv.Batch` stream: what to send on, and what comes back.
struct RawStream {
    out: Option<mpsc::UnboundedSender<pb::KvBatchRequest>>,
    inbound: Streaming<pb::KvBatchResponse>,
    /// How many response messages came.
    messages: usize,
}

impl RawStream {
    async fn open(kv: &mut KvClient<Channel>) -> RawStream {
        let (out, rx) = mpsc::unbounded_channel();
        let inbound = kv
            .batch(UnboundedReceiverStream::new(rx))
            .await
            .expect("Kv.Batch opens")
            .into_inner();
        RawStream {
            out: Some(out),
            inbound,
            messages: 0,
        }
    }

    fn send(&self, calls: Vec<(u64, Option<Call>)>) {
        let calls = calls
            .into_iter()
            .map(|(id, call)| pb::KvCall { id, call })
            .collect();
        self.out
            .as_ref()
            .expect("our side is open")
            .send(pb::KvBatchRequest { calls })
            .expect("the stream takes it");
    }

    /// Waits for the answers to `n` calls, by id.
    async fn answers(&mut self, n: usize) -> HashMap<u64, Answer> {
        let mut got = HashMap::new();
        while got.len() < n {
            let message = tokio::time::timeout(PATIENCE, self.inbound.message())
                .await
                .expect("answers in time")
                .expect("no stream error")
                .expect("not the end of the stream");
            self.messages += 1;
            for r in message.results {
                let answer = r.result.expect("every result carries an answer");
                assert!(
                    got.insert(r.id, answer).is_none(),
                    "call {} answered twice",
                    r.id
                );
            }
        }
        assert_eq!(got.len(), n, "answers to calls never sent");
        got
    }

    /// Closes our side and waits for the server to end the stream cleanly.
    async fn close(mut self) {
        self.out = None;
        let end = tokio::time::timeout(PATIENCE, self.inbound.message())
            .await
            .expect("the stream ends in time");
        assert!(matches!(end, Ok(None)), "a clean end, not {end:?}");
    }
}

fn put(key: &[u8], value: &[u8]) -> Option<Call> {
    Some(Call::Put(pb::PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
    }))
}

fn get(key: &[u8]) -> Option<Call> {
    Some(Call::Get(pb::GetRequest {
        key: key.to_vec(),
        read_ts: 0,
    }))
}

fn error_of(answer: &Answer) -> (Code, Option<ErrorReason>) {
    match answer {
        Answer::Error(e) => {
            let status = e.clone().into_status();
            let reason = ErrorDetail::from_status(&status).and_then(|d| d.reason_enum());
            (status.code(), reason)
        }
        other => panic!("expected an error, got {other:?}"),
    }
}

/// Every kind of call in one stream: each answered under its id with what the unary call
/// returns, bad calls with the unary call's error and detail; closing our side ends the
/// stream once all are answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_stream_answers_every_call_as_its_unary_call_would() {
    let (_dir, handle, mut kv) = start().await;
    let mut stream = RawStream::open(&mut kv).await;

    let too_long = vec![b'v'; strata_proto::limits::MAX_VALUE_BYTES as usize + 1];
    stream.send(vec![
        (10, put(b"a", b"1")),
        (11, put(b"b", b"2")),
        (12, put(b"c", b"3")),
        (13, put(b"", b"empty key")),
        (14, None),
    ]);
    stream.send(vec![(15, put(b"d", &too_long))]);
    let first = stream.answers(6).await;
    for id in [10, 11, 12] {
        assert!(
            matches!(first[&id], Answer::Put(pb::PutResponse { commit_ts }) if commit_ts > 0),
            "call {id}: {:?}",
            first[&id]
        );
    }
    assert_eq!(
        error_of(&first[&13]),
        (Code::InvalidArgument, Some(ErrorReason::KeyEmpty))
    );
    assert_eq!(
        error_of(&first[&14]),
        (Code::InvalidArgument, Some(ErrorReason::InvalidField))
    );
    assert_eq!(
        error_of(&first[&15]),
        (Code::InvalidArgument, Some(ErrorReason::ValueTooLarge))
    );

    stream.send(vec![
        (
            20,
            Some(Call::Delete(pb::DeleteRequest { key: b"c".to_vec() })),
        ),
        (21, get(b"a")),
        (
            22,
            Some(Call::BatchGet(pb::BatchGetRequest {
                keys: vec![b"a".to_vec(), b"b".to_vec(), b"zz".to_vec()],
                read_ts: 0,
            })),
        ),
    ]);
    let second = stream.answers(3).await;
    assert!(
        matches!(second[&20], Answer::Delete(_)),
        "{:?}",
        second[&20]
    );
    match &second[&21] {
        Answer::Get(g) => assert_eq!((g.found, g.value.as_slice()), (true, &b"1"[..])),
        other => panic!("{other:?}"),
    }
    match &second[&22] {
        Answer::BatchGet(b) => {
            let found: Vec<(bool, &[u8])> = b
                .results
                .iter()
                .map(|r| (r.found, r.value.as_slice()))
                .collect();
            assert_eq!(
                found,
                vec![(true, &b"1"[..]), (true, &b"2"[..]), (false, &b""[..])]
            );
        }
        other => panic!("{other:?}"),
    }

    stream.send(vec![
        (
            30,
            Some(Call::Scan(pb::ScanRequest {
                start: Vec::new(),
                end: Vec::new(),
                limit: 0,
                reverse: false,
                read_ts: 0,
            })),
        ),
        (31, get(b"c")),
    ]);
    let third = stream.answers(2).await;
    match &third[&30] {
        Answer::Scan(s) => {
            let keys: Vec<&[u8]> = s.kvs.iter().map(|kv| kv.key.as_slice()).collect();
            assert_eq!(keys, vec![&b"a"[..], &b"b"[..]], "c was deleted, d refused");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(&third[&31], Answer::Get(g) if !g.found),
        "{:?}",
        third[&31]
    );
    stream.close().await;
    handle.shutdown().await.expect("shutdown");
}

/// More calls than a stream may have in flight, in one message: the server stops reading
/// while its permits are used up and goes on as answers go out; every call is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_calls_than_a_stream_may_have_in_flight_are_all_answered() {
    let (_dir, handle, mut kv) = start().await;
    let mut stream = RawStream::open(&mut kv).await;
    let n = MAX_STREAM_CALLS as usize * 2 + 100;
    let calls = (0..n as u64)
        .map(|i| (i, put(format!("k{i:05}").as_bytes(), b"v")))
        .collect();
    stream.send(calls);
    let answers = stream.answers(n).await;
    for (id, answer) in &answers {
        assert!(matches!(answer, Answer::Put(_)), "call {id}: {answer:?}");
    }
    assert!(
        stream.messages > 1,
        "{n} answers in {} message(s)",
        stream.messages
    );
    stream.close().await;
    handle.shutdown().await.expect("shutdown");
}

/// Answers that would not fit in one message together (three reads of 7 MiB values) go in
/// several, each under the message limit the client accepts; and 7 MiB puts over the
/// client's [`KvBatch`] reach the server (how it packs calls queued together is forced in
/// `cli::kv_batch`'s own tests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_calls_and_answers_are_split_across_messages() {
    let (_dir, handle, mut kv) = start().await;
    let batch = KvBatch::new(kv.clone());
    let value = |i: u8| vec![i; 7 << 20];
    let puts: Vec<_> = (0..3u8)
        .map(|i| {
            let batch = batch.clone();
            tokio::spawn(async move {
                batch
                    .put(pb::PutRequest {
                        key: vec![b'k', i],
                        value: value(i),
                    })
                    .await
            })
        })
        .collect();
    for p in puts {
        p.await
            .expect("put task")
            .expect("a 7 MiB put over the batch stream");
    }

    let mut stream = RawStream::open(&mut kv).await;
    stream.send((0..3u8).map(|i| (u64::from(i), get(&[b'k', i]))).collect());
    let answers = stream.answers(3).await;
    for i in 0..3u8 {
        match &answers[&u64::from(i)] {
            Answer::Get(g) => assert!(g.found && g.value == value(i), "value {i}"),
            other => panic!("{other:?}"),
        }
    }
    assert!(stream.messages >= 2, "three 7 MiB answers in one message");
    stream.close().await;
    handle.shutdown().await.expect("shutdown");
}

/// A shutdown answers a stream's calls in flight (a held put: OUTCOME_UNKNOWN) and ends
/// the stream at once: an open stream does not hold the drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_answers_a_streams_calls_and_ends_it() {
    let (_dir, handle, mut kv) = start().await;
    let mut stream = RawStream::open(&mut kv).await;
    stream.send(vec![(1, put(b"k", b"v"))]);
    stream.answers(1).await;
    handle.state.test_hold.set("kv.Put");
    stream.send(vec![(2, put(b"k", b"w"))]);
    let deadline = Instant::now() + PATIENCE;
    while handle.state.test_hold.held() < 1 {
        assert!(Instant::now() < deadline, "the put was not held in time");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let began = Instant::now();
    let shutdown = tokio::spawn(handle.shutdown());
    let answers = stream.answers(1).await;
    assert_eq!(
        error_of(&answers[&2]),
        (Code::Unavailable, Some(ErrorReason::OutcomeUnknown))
    );
    let end = tokio::time::timeout(PATIENCE, stream.inbound.message())
        .await
        .expect("the stream ends in time");
    assert!(matches!(end, Ok(None)), "a clean end, not {end:?}");
    shutdown.await.expect("shutdown task").expect("shutdown");
    let took = began.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "shutdown took {took:?} with a stream open"
    );
}

/// The in-flight bound, forced: with every put held, a message of more puts than a stream
/// may have in flight starts exactly `MAX_STREAM_CALLS` of them. The shutdown then answers
/// those OUTCOME_UNKNOWN (cut short) and the rest NOT_LEADER (never started, so they did
/// nothing and may be sent again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_starts_no_more_calls_than_its_bound_and_a_shutdown_says_which_never_ran() {
    let (_dir, handle, mut kv) = start().await;
    let mut stream = RawStream::open(&mut kv).await;
    handle.state.test_hold.set("kv.Put");
    let bound = MAX_STREAM_CALLS as usize;
    let n = bound + 76;
    let calls = (0..n as u64)
        .map(|i| (i, put(format!("k{i:05}").as_bytes(), b"v")))
        .collect();
    stream.send(calls);
    let deadline = Instant::now() + PATIENCE;
    while handle.state.test_hold.held() < bound {
        assert!(
            Instant::now() < deadline,
            "{} puts held",
            handle.state.test_hold.held()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let shutdown = tokio::spawn(handle.shutdown());
    let answers = stream.answers(n).await;
    let mut cut_short = 0;
    let mut never_ran = 0;
    for answer in answers.values() {
        match error_of(answer) {
            (Code::Unavailable, Some(ErrorReason::OutcomeUnknown)) => cut_short += 1,
            (Code::Unavailable, Some(ErrorReason::NotLeader)) => never_ran += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!((cut_short, never_ran), (bound, n - bound));
    let end = tokio::time::timeout(PATIENCE, stream.inbound.message())
        .await
        .expect("the stream ends in time");
    assert!(matches!(end, Ok(None)), "a clean end, not {end:?}");
    shutdown.await.expect("shutdown task").expect("shutdown");
}

/// Many callers share one [`KvBatch`]: each gets its own answers (its own value back).
/// When the server goes away, the stream's calls fail instead of hanging; a server back at
/// the same address gets a new stream on the next call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_batch_client_routes_answers_and_opens_a_new_stream_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let handle = Server::start(test_config(dir.path())).await.expect("start");
    let grpc = handle.grpc_addr();
    let channel = Channel::from_shared(format!("http://{grpc}"))
        .expect("a uri")
        .connect_lazy();
    let batch = KvBatch::new(KvClient::new(channel));
    let callers: Vec<_> = (0..32u32)
        .map(|c| {
            let batch = batch.clone();
            tokio::spawn(async move {
                for i in 0..20u32 {
                    let key = format!("c{c}/{}", i % 4).into_bytes();
                    let value = format!("{c}:{i}").into_bytes();
                    batch
                        .put(pb::PutRequest {
                            key: key.clone(),
                            value: value.clone(),
                        })
                        .await
                        .expect("put");
                    let got = batch
                        .get(pb::GetRequest { key, read_ts: 0 })
                        .await
                        .expect("get");
                    assert_eq!(got.value, value, "caller {c} reads its own write");
                }
            })
        })
        .collect();
    for c in callers {
        c.await.expect("caller");
    }

    handle.shutdown().await.expect("shutdown");
    let down = tokio::time::timeout(
        PATIENCE,
        batch.get(pb::GetRequest {
            key: b"c0/0".to_vec(),
            read_ts: 0,
        }),
    )
    .await
    .expect("a call to a stopped server fails in time");
    assert!(down.is_err(), "{down:?}");

    let mut config = test_config(dir.path());
    config.grpc_addr = grpc;
    let handle = Server::start(config)
        .await
        .expect("restart on the same address");
    let deadline = Instant::now() + PATIENCE;
    let got = loop {
        match batch
            .get(pb::GetRequest {
                key: b"c0/3".to_vec(),
                read_ts: 0,
            })
            .await
        {
            Ok(got) => break got,
            Err(e) => {
                assert!(Instant::now() < deadline, "no new stream in time: {e:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(got.value, b"0:19".to_vec());
    handle.shutdown().await.expect("shutdown");
}
