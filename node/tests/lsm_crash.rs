//! Crash recovery under load, with real process crashes.
//!
//! The parent test re-executes this test binary, running only [`crash_child`], which opens
//! the engine with background flushes and compactions on and writes a deterministic sequence
//! of batches, printing `ack {i}` after batch `i` returns. The parent kills the child with
//! SIGKILL after a seeded pseudo-random number of acks (some right away, most while flushes
//! and compactions run), reopens the database in-process and checks that recovery kept
//! exactly a prefix of the batches, containing every acknowledged one, with no partial batch
//! and with the range deletions of that prefix applied. Several rounds run on the same
//! directory, each continuing where the recovered state ends, so recovery of a recovered
//! database is exercised too.
//!
//! ```text
//!   batch i:  Default   k{i:08} -> value(i)
//!             Write     w{i:08} -> i                      (the "batch applied" marker)
//!             Lock      big{i:08} -> 3 KiB               (when i % 40 == 7: forces flushes)
//!             Default   delete_range [k{i-100}, k{i-75})  (when i % 50 == 25 and i >= 100)
//! ```

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use strata::lsm::{ColumnFamily, Db, Options, ReadOptions, WriteBatch, WriteOptions};

/// Set in the child: the database directory. Without it, [`crash_child`] does nothing.
const CHILD_DIR_ENV: &str = "STRATA_CRASH_CHILD_DIR";
/// Set in the child: the index of the first batch to write.
const CHILD_START_ENV: &str = "STRATA_CRASH_CHILD_START";
/// Set in the child: "1" to write with `sync = true`.
const CHILD_SYNC_ENV: &str = "STRATA_CRASH_CHILD_SYNC";

/// The child writes at most this many batches per run (it is normally killed long before).
const MAX_BATCHES_PER_RUN: u64 = 200_000;
/// A child is killed after this long even if it has not reached its ack target.
const CHILD_TIME_CAP: Duration = Duration::from_secs(4);

fn options() -> Options {
    Options {
        wal: true,
        ..Options::small_for_tests()
    }
}

fn data_key(i: u64) -> Vec<u8> {
    format!("k{i:08}").into_bytes()
}

fn marker_key(i: u64) -> Vec<u8> {
    format!("w{i:08}").into_bytes()
}

fn big_key(i: u64) -> Vec<u8> {
    format!("big{i:08}").into_bytes()
}

fn data_value(i: u64) -> Vec<u8> {
    let len = 20 + (i * 37 % 150) as usize;
    format!("v{i}-").bytes().cycle().take(len).collect()
}

fn has_big_value(i: u64) -> bool {
    i % 40 == 7
}

fn big_value(i: u64) -> Vec<u8> {
    format!("B{i}.").bytes().cycle().take(3 << 10).collect()
}

/// The range of data keys batch `i` deletes, as batch indexes `[lo, hi)`.
fn deleted_range(i: u64) -> Option<(u64, u64)> {
    (i % 50 == 25 && i >= 100).then(|| (i - 100, i - 75))
}

fn batch(i: u64) -> WriteBatch {
    let mut b = WriteBatch::new();
    b.put(ColumnFamily::Default, &data_key(i), &data_value(i));
    b.put(
        ColumnFamily::Write,
        &marker_key(i),
        i.to_string().as_bytes(),
    );
    if has_big_value(i) {
        b.put(ColumnFamily::Lock, &big_key(i), &big_value(i));
    }
    if let Some((lo, hi)) = deleted_range(i) {
        b.delete_range(ColumnFamily::Default, &data_key(lo), &data_key(hi));
    }
    b
}

/// The contents of each column family after batches `0..n`.
fn expected_state(n: u64) -> [Vec<(Vec<u8>, Vec<u8>)>; 3] {
    let mut data = BTreeMap::new();
    let mut markers = Vec::new();
    let mut bigs = Vec::new();
    for i in 0..n {
        data.insert(data_key(i), data_value(i));
        markers.push((marker_key(i), i.to_string().into_bytes()));
        if has_big_value(i) {
            bigs.push((big_key(i), big_value(i)));
        }
        if let Some((lo, hi)) = deleted_range(i) {
            for j in lo..hi {
                data.remove(&data_key(j));
            }
        }
    }
    [data.into_iter().collect(), markers, bigs]
}

/// The child side: does nothing in a normal test run; when spawned by [`run_rounds`], opens
/// the database and writes batches until it is killed.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let start: u64 = std::env::var(CHILD_START_ENV)
        .expect("start index")
        .parse()
        .expect("numeric start index");
    let sync = std::env::var(CHILD_SYNC_ENV).as_deref() == Ok("1");
    let db = Db::open(&dir, options()).expect("child: open");
    let w = WriteOptions {
        sync,
        ..WriteOptions::default()
    };
    let stdout = std::io::stdout();
    for i in start..start + MAX_BATCHES_PER_RUN {
        db.write(batch(i), &w).expect("child: write");
        let mut out = stdout.lock();
        writeln!(out, "ack {i}").expect("child: stdout");
        out.flush().expect("child: stdout");
    }
}

/// SplitMix64: a tiny seeded generator, so rounds are reproducible without a dependency.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Runs one child from batch `start`, kills it after `target` acks (or the time cap), and
/// returns the index of the last acknowledged batch, if any.
fn crash_one_child(dir: &Path, start: u64, target: u64, sync: bool, round: usize) -> Option<u64> {
    let exe = std::env::current_exe().expect("current test binary");
    let stderr_path = dir.with_extension(format!("child-{round}.stderr"));
    let stderr = std::fs::File::create(&stderr_path).expect("child stderr file");
    let mut child = Command::new(exe)
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_START_ENV, start.to_string())
        .env(CHILD_SYNC_ENV, if sync { "1" } else { "0" })
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // With --nocapture the harness prints "test crash_child ... " without a newline, so the
    // first ack shares its line.
    let parse_ack = |line: &str| {
        let at = line.rfind("ack ")?;
        line[at + 4..].parse::<u64>().ok()
    };

    let deadline = Instant::now() + CHILD_TIME_CAP;
    let mut last_ack = None;
    let mut acks = 0u64;
    let mut exited_early = false;
    while acks < target {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(i) = parse_ack(&line) {
                    if i != start + acks {
                        // Kill the child before failing so it does not outlive the test.
                        let _ = child.kill();
                        let _ = child.wait();
                        panic!(
                            "round {round}: ack {i} out of order, expected {}",
                            start + acks
                        );
                    }
                    last_ack = Some(i);
                    acks += 1;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => break,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                exited_early = true;
                break;
            }
        }
    }
    // SIGKILL: no destructor, no close, no final WAL sync.
    let _ = child.kill();
    let status = child.wait().expect("wait for child");
    // Acks the child printed before it died are acknowledgements too.
    for line in rx.iter() {
        if let Some(i) = parse_ack(&line) {
            last_ack = Some(i);
        }
    }
    reader.join().expect("stdout reader");
    if exited_early {
        let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        panic!("round {round}: child exited by itself ({status}) after {acks} acks:\n{log}");
    }
    let _ = std::fs::remove_file(&stderr_path);
    last_ack
}

/// Reopens the database and checks the recovered state; returns the number of batches
/// recovered.
fn verify_recovered(dir: &Path, start: u64, last_ack: Option<u64>, round: usize) -> u64 {
    let db = Db::open(dir, options()).unwrap_or_else(|e| panic!("round {round}: reopen: {e}"));
    let scan = |cf| {
        db.scan(cf, b"", None, usize::MAX, false, None)
            .unwrap_or_else(|e| panic!("round {round}: scan {cf:?}: {e}"))
    };
    let markers = scan(ColumnFamily::Write);
    let n = markers.len() as u64;

    // Every acknowledged batch survived; at most the one in flight at the kill went further.
    let acked = last_ack.map_or(start, |i| i + 1);
    assert!(
        n >= acked,
        "round {round}: {n} batches recovered but batches up to {acked} were acknowledged"
    );
    assert!(
        n <= acked + 1,
        "round {round}: {n} batches recovered, only {acked} acknowledged (+1 in flight)"
    );

    // Exactly a prefix, whole batches only, range deletions applied as of that prefix.
    let [data, expected_markers, bigs] = expected_state(n);
    assert!(
        markers == expected_markers,
        "round {round}: the applied batches are not the prefix 0..{n}"
    );
    assert!(
        scan(ColumnFamily::Default) == data,
        "round {round}: Default differs from the state after batches 0..{n}"
    );
    assert!(
        scan(ColumnFamily::Lock) == bigs,
        "round {round}: Lock differs from the state after batches 0..{n}"
    );
    let reversed: Vec<_> = db
        .scan(ColumnFamily::Default, b"", None, usize::MAX, true, None)
        .expect("reverse scan");
    assert!(
        reversed.iter().rev().eq(data.iter()),
        "round {round}: reverse scan differs"
    );

    // Point reads agree, including for the last batches and the in-flight one.
    let r = ReadOptions::default();
    for i in n.saturating_sub(60)..n + 2 {
        let present = i < n;
        assert_eq!(
            db.get(ColumnFamily::Write, &marker_key(i), &r)
                .expect("get"),
            present.then(|| i.to_string().into_bytes()),
            "round {round}: marker {i}"
        );
        let deleted =
            (0..n).any(|b| deleted_range(b).is_some_and(|(lo, hi)| (lo..hi).contains(&i)));
        assert_eq!(
            db.get(ColumnFamily::Default, &data_key(i), &r)
                .expect("get"),
            (present && !deleted).then(|| data_value(i)),
            "round {round}: data key {i}"
        );
        if has_big_value(i) {
            assert_eq!(
                db.get(ColumnFamily::Lock, &big_key(i), &r).expect("get"),
                present.then(|| big_value(i)),
                "round {round}: big value {i}"
            );
        }
    }
    db.close().expect("close");
    n
}

fn run_rounds(sync: bool, seed: u64, rounds: usize) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("db");
    let mut rng = SplitMix(seed);
    let mut next = 0u64;
    for round in 0..rounds {
        // A quarter of the kills land almost immediately (during or right after open and
        // recovery); the rest after tens to hundreds of batches, while flushes and
        // compactions of the 4 KiB memtables run.
        let target = match rng.next() % 4 {
            0 => rng.next() % 4,
            _ => 20 + rng.next() % 600,
        };
        let last_ack = crash_one_child(&dir, next, target, sync, round);
        let recovered = verify_recovered(&dir, next, last_ack, round);
        let tables = std::fs::read_dir(&dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.path().extension().is_some_and(|x| x == "sst"))
                    .count()
            })
            .unwrap_or(0);
        // Shown when a later round fails.
        println!("round {round}: started at {next}, kill after {target} acks, last ack {last_ack:?}, recovered {recovered} batches, {tables} tables");
        next = recovered;
    }
    assert!(next > 0, "no batch was ever written");
}

/// With `sync = true`, every acknowledged batch is in the WAL on disk.
#[test]
fn recovers_a_prefix_with_every_acknowledged_batch_after_kill_9() {
    run_rounds(true, 0x5eed_0001, 7);
}

/// With `sync = false` the WAL is not fsynced, but each acknowledged batch was handed to the
/// kernel with `write(2)` before the ack (the WAL writer does not buffer in user space). A
/// killed *process* does not lose what the kernel holds, so the ack guarantee still holds
/// here; only a machine crash could lose unsynced writes, which this test does not simulate.
#[test]
fn recovers_a_prefix_with_every_acknowledged_batch_after_kill_9_without_sync() {
    run_rounds(false, 0x5eed_0002, 6);
}
