//! Crash windows and races of the storage engine, forced with failpoints.
//!
//! Each test holds a [`fail::FailScenario`] (which serialises them and clears every failpoint
//! when it ends) and forces one bad moment: a compaction installing its version after a
//! flush logged and installed a newer one, a manifest or WAL fsync failing, and the order of
//! directory syncs against the edits and writes that depend on them. They live in their own
//! test binary because failpoints are process-global. Built only with the `failpoints`
//! feature.
#![cfg(feature = "failpoints")]

mod lsm_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lsm_support::{copy_dir, manifest};
use strata::lsm::{ColumnFamily, Db, Error, Options, ReadOptions, WriteOptions};

const CF: ColumnFamily = ColumnFamily::Default;
/// How long a test waits for another thread to reach a failpoint before giving up.
const DEADLINE: Duration = Duration::from_secs(60);

fn key(i: usize) -> Vec<u8> {
    format!("key{i:05}").into_bytes()
}

fn value(i: usize) -> Vec<u8> {
    format!("value-{i}-").bytes().cycle().take(60).collect()
}

/// Foreground-only engine whose memtable only rotates when asked to (`Db::flush`).
fn manual_options() -> Options {
    Options {
        background_work: false,
        memtable_size: 1 << 20,
        ..Options::small_for_tests()
    }
}

/// Foreground-only engine with a tiny memtable: writes rotate it and flush L0 often.
fn rotating_options() -> Options {
    Options {
        background_work: false,
        ..Options::small_for_tests()
    }
}

fn write_keys(db: &Db, range: std::ops::Range<usize>) {
    for i in range {
        db.put(CF, &key(i), &value(i), &WriteOptions::synced())
            .expect("put");
    }
}

fn assert_keys(db: &Db, range: std::ops::Range<usize>, what: &str) {
    for i in range {
        let got = db
            .get(CF, &key(i), &ReadOptions::default())
            .unwrap_or_else(|e| panic!("{what}: get key {i}: {e}"));
        assert_eq!(got, Some(value(i)), "{what}: key {i}");
    }
}

fn names_with(dir: &Path, suffix: &str) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .expect("list dir")
        .filter_map(|e| e.expect("dir entry").file_name().into_string().ok())
        .filter(|n| n.ends_with(suffix))
        .collect()
}

fn live_tables(db: &Db) -> BTreeSet<String> {
    db.test_version()
        .files()
        .map(|(_, f)| format!("{:06}.sst", f.id))
        .collect()
}

// ----- version install order --------------------------------------------------------------

/// A compaction logs its edit C; before it installs the version C produced, a flush logs
/// C+F and installs it; then the compaction installs. The visible version must stay the
/// newest logged one (C+F): installing C would hide the flushed table, whose memtable is
/// already gone, and its keys would vanish from reads.
#[test]
fn a_compaction_installing_after_a_newer_flush_keeps_the_flushed_table() {
    let scenario = fail::FailScenario::setup();
    let tmp = tempfile::tempdir().expect("tempdir");
    // Two levels: `compact_range` runs one compaction (L0 into L1) and nothing after it
    // that could log and install yet another version before the check below.
    let options = Options {
        num_levels: 2,
        ..manual_options()
    };
    let db = Db::open(tmp.path(), options.clone()).expect("open");
    // Two L0 tables for the compaction to merge.
    write_keys(&db, 0..50);
    db.flush().expect("flush");
    write_keys(&db, 50..100);
    db.flush().expect("flush");

    let (reached_tx, reached_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let reached_tx = Mutex::new(reached_tx);
    let go_rx = Mutex::new(go_rx);
    let paused_once = AtomicBool::new(false);
    fail::cfg_callback("lsm::compact::before_install", move || {
        if !paused_once.swap(true, Ordering::SeqCst) {
            let _ = reached_tx.lock().expect("lock").send(());
            // Wait for the flush; give up at the deadline rather than hang the suite.
            let _ = go_rx.lock().expect("lock").recv_timeout(DEADLINE);
        }
    })
    .expect("configure failpoint");

    let compactor = {
        let db = db.clone();
        std::thread::spawn(move || db.compact_range(CF, None, None))
    };
    reached_rx
        .recv_timeout(DEADLINE)
        .expect("the compaction never logged its edit");
    // The compaction has logged C and not installed it. Flush F on top of it.
    write_keys(&db, 100..150);
    db.flush()
        .expect("flush while the compaction waits to install");
    assert_keys(&db, 100..150, "after the flush installed");
    go_tx.send(()).expect("release the compaction");
    compactor
        .join()
        .expect("compaction thread")
        .expect("compact_range");

    assert_keys(&db, 0..150, "after the compaction installed");
    // The engine goes on logging consistent edits, and the state survives a reopen.
    write_keys(&db, 150..200);
    db.flush().expect("flush after");
    db.compact_range(CF, None, None).expect("compact after");
    assert_keys(&db, 0..200, "after more work");
    db.close().expect("close");
    let db = Db::open(tmp.path(), options).expect("reopen");
    assert_keys(&db, 0..200, "after reopen");
    db.close().expect("close");
    scenario.teardown();
}

/// A pause that a failpoint callback takes once: the first thread through it reports that it
/// arrived and waits until the test releases it (or the deadline passes).
struct Gate {
    armed: AtomicBool,
    arrived: Mutex<mpsc::Sender<()>>,
    release: Mutex<mpsc::Receiver<()>>,
}

impl Gate {
    /// Configures the failpoint `point` to pause at this gate once it is armed. Returns the
    /// gate, the receiver of its arrival and the sender that releases it.
    fn at(point: &str) -> (Arc<Gate>, mpsc::Receiver<()>, mpsc::Sender<()>) {
        let (arrived_tx, arrived_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel();
        let gate = Arc::new(Gate {
            armed: AtomicBool::new(false),
            arrived: Mutex::new(arrived_tx),
            release: Mutex::new(release_rx),
        });
        let g = Arc::clone(&gate);
        fail::cfg_callback(point, move || {
            if g.armed.swap(false, Ordering::SeqCst) {
                let _ = g.arrived.lock().expect("lock").send(());
                let _ = g.release.lock().expect("lock").recv_timeout(DEADLINE);
            }
        })
        .expect("configure failpoint");
        (gate, arrived_rx, release_tx)
    }

    fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }
}

/// The other order: a flush logs F, a background compaction logs F+C and installs it, then
/// the flush installs. The flush's older version must not come back: it still lists the
/// compaction's inputs (already retired) and lacks its outputs, so the next compaction would
/// be picked from a version the manifest no longer holds.
#[test]
fn a_flush_installing_after_a_newer_compaction_keeps_the_compaction() {
    let scenario = fail::FailScenario::setup();
    let tmp = tempfile::tempdir().expect("tempdir");
    let options = Options {
        background_work: true,
        memtable_size: 1 << 20,
        num_levels: 2,
        ..Options::small_for_tests()
    };
    let (compaction_gate, compaction_arrived, release_compaction) =
        Gate::at("lsm::compact::before_run");
    let (flush_gate, flush_arrived, release_flush) = Gate::at("lsm::flush::before_install");
    compaction_gate.arm();
    let db = Db::open(tmp.path(), options.clone()).expect("open");
    // Two L0 tables: the compaction thread picks them and waits at its gate.
    write_keys(&db, 0..50);
    db.flush().expect("flush");
    write_keys(&db, 50..100);
    db.flush().expect("flush");
    compaction_arrived
        .recv_timeout(DEADLINE)
        .expect("the compaction never picked the two tables");
    let inputs: BTreeSet<u64> = db.test_version().files().map(|(_, f)| f.id).collect();
    assert_eq!(inputs.len(), 2, "test setup: two L0 tables");

    // A third flush logs F and waits before installing.
    flush_gate.arm();
    write_keys(&db, 100..150);
    let flusher = {
        let db = db.clone();
        std::thread::spawn(move || db.flush())
    };
    flush_arrived
        .recv_timeout(DEADLINE)
        .expect("the flush never logged its edit");
    // The compaction logs F+C and installs it.
    release_compaction.send(()).expect("release the compaction");
    let deadline = std::time::Instant::now() + DEADLINE;
    while db.test_version().levels[1].is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the compaction never installed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    release_flush.send(()).expect("release the flush");
    flusher.join().expect("flush thread").expect("flush");

    let version = db.test_version();
    let visible: BTreeSet<u64> = version.files().map(|(_, f)| f.id).collect();
    assert!(
        visible.is_disjoint(&inputs),
        "the compaction's inputs {inputs:?} came back: {visible:?}"
    );
    assert_eq!(version.levels[0].len(), 1, "the flushed table in L0");
    assert!(
        !version.levels[1].is_empty(),
        "the compaction's output in L1"
    );
    assert_keys(&db, 0..150, "after both installed");
    write_keys(&db, 150..200);
    db.flush().expect("flush after");
    db.compact_range(CF, None, None).expect("compact after");
    db.wait_for_background_work().expect("background work");
    assert_keys(&db, 0..200, "after more work");
    db.close().expect("close");
    let db = Db::open(tmp.path(), options).expect("reopen");
    assert_keys(&db, 0..200, "after reopen");
    db.close().expect("close");
    scenario.teardown();
}

// ----- directory syncs ----------------------------------------------------------------------

/// What the directory looked like at one moment the engine passed a failpoint.
#[derive(Debug, Clone)]
struct Seen {
    point: &'static str,
    names: BTreeSet<String>,
    current: Option<String>,
}

fn look(dir: &Path, point: &'static str) -> Seen {
    let names = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    Seen {
        point,
        names,
        current: std::fs::read_to_string(dir.join("CURRENT")).ok(),
    }
}

/// Whether a name is one acknowledged data can depend on (not a lock or temporary file).
fn durable_kind(name: &str) -> bool {
    name.ends_with(".sst") || name.ends_with(".log") || name.starts_with("MANIFEST-")
}

/// Every new name must be made durable by a directory sync before anything depends on it:
/// a WAL before writes are appended to it, tables before the manifest edit naming them, a
/// manifest before `CURRENT` names it, and `CURRENT`'s rename before the next edit or write.
/// The test records the directory at each sync and at each of those moments, over a run
/// that rotates WALs, flushes, compacts, reopens (which writes a new manifest and renames
/// `CURRENT`) and keeps writing.
#[test]
fn every_new_file_is_synced_into_its_directory_before_it_is_relied_on() {
    let scenario = fail::FailScenario::setup();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("db");
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    for point in [
        "lsm::sync_dir",
        "lsm::manifest::before_append",
        "lsm::wal::before_append",
        "lsm::current::before_rename",
    ] {
        let seen = Arc::clone(&seen);
        let dir = dir.clone();
        fail::cfg_callback(point, move || {
            let s = look(&dir, point);
            seen.lock().expect("lock").push(s);
        })
        .expect("configure failpoint");
    }

    let db = Db::open(&dir, rotating_options()).expect("open");
    write_keys(&db, 0..300);
    db.compact_range(CF, None, None).expect("compact");
    write_keys(&db, 300..400);
    db.close().expect("close");
    let db = Db::open(&dir, rotating_options()).expect("reopen");
    write_keys(&db, 400..450);
    db.flush().expect("flush");
    assert_keys(&db, 0..450, "end of the run");
    db.close().expect("close");

    let seen = seen.lock().expect("lock").clone();
    let mut synced: BTreeSet<String> = BTreeSet::new();
    let mut synced_current: Option<String> = None;
    let mut checked = [0usize; 3];
    for s in &seen {
        let relevant: Box<dyn Fn(&str) -> bool> = match s.point {
            "lsm::sync_dir" => {
                synced.extend(s.names.iter().cloned());
                synced_current = s.current.clone();
                continue;
            }
            "lsm::wal::before_append" => {
                checked[0] += 1;
                Box::new(|n: &str| n.ends_with(".log"))
            }
            "lsm::manifest::before_append" => {
                checked[1] += 1;
                Box::new(durable_kind)
            }
            _ => {
                checked[2] += 1;
                Box::new(|n: &str| n.ends_with(".sst") || n.starts_with("MANIFEST-"))
            }
        };
        let unsynced: Vec<&String> = s
            .names
            .iter()
            .filter(|n| relevant(n) && !synced.contains(*n))
            .collect();
        assert!(
            unsynced.is_empty(),
            "at {}: {unsynced:?} exist but no directory sync covered them",
            s.point
        );
        if s.point != "lsm::current::before_rename" {
            assert_eq!(
                s.current, synced_current,
                "at {}: CURRENT was renamed and not synced since",
                s.point
            );
        }
    }
    assert!(
        checked.iter().all(|&n| n > 0),
        "test setup: every kind of dependency must occur (WAL appends, manifest appends, \
         CURRENT renames): {checked:?}"
    );
    scenario.teardown();
}

// ----- ambiguous manifest fsync -------------------------------------------------------------

/// What a manifest fsync failure leaves for each later open to settle.
struct Ambiguous {
    /// The database as the failed engine left it: the edit is in the manifest.
    durable: PathBuf,
    /// A copy whose manifest lost the edit, as if the fsync really had failed.
    lost: PathBuf,
}

/// Runs `work` (which must log exactly one manifest edit and fail on its fsync) on a database
/// holding `keys`, checks the engine's reaction and returns both possible outcomes on disk.
fn fail_one_manifest_sync(
    tmp: &Path,
    prepare: impl Fn(&Db),
    work: impl Fn(&Db) -> strata::lsm::Result<()>,
) -> Ambiguous {
    let durable = tmp.join("durable");
    let db = Db::open(&durable, manual_options()).expect("open");
    prepare(&db);
    let manifest_path = manifest(&durable);
    let manifest_len = std::fs::metadata(&manifest_path).expect("stat").len();
    let tables_before = names_with(&durable, ".sst");
    fail::cfg("lsm::manifest::sync", "return").expect("configure failpoint");
    work(&db).expect_err("the manifest sync failure must be reported");
    fail::remove("lsm::manifest::sync");
    let tables_after = names_with(&durable, ".sst");
    assert!(
        tables_after.is_superset(&tables_before) && tables_after.len() > tables_before.len(),
        "the files of the possibly durable edit must stay: {tables_before:?} -> {tables_after:?}"
    );
    // Until a reopen settles what the manifest holds, the engine refuses writes and edits,
    // however often it is asked and although the failpoint is gone.
    for i in 0..3 {
        let err = db
            .put(CF, b"late", b"write", &WriteOptions::synced())
            .expect_err("a write after an ambiguous manifest sync must fail");
        assert!(matches!(err, Error::Background(_)), "write {i}: {err}");
    }
    assert!(
        db.compact_range(CF, None, None).is_err(),
        "a flush or compaction after an ambiguous manifest sync must fail"
    );
    assert_eq!(
        names_with(&durable, ".sst"),
        tables_after,
        "later work must delete none of the files"
    );
    db.close().expect("close");

    let lost = tmp.join("lost");
    copy_dir(&durable, &lost);
    let lost_manifest = lost.join(manifest_path.file_name().expect("name"));
    let data = std::fs::read(&lost_manifest).expect("read manifest");
    std::fs::write(&lost_manifest, &data[..manifest_len as usize]).expect("cut manifest");
    Ambiguous { durable, lost }
}

/// Reopens `dir` and checks that it holds keys `0..n` and nothing but live tables.
fn reopen_and_check(dir: &Path, n: usize, what: &str) {
    let db = Db::open(dir, manual_options()).unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
    assert_keys(&db, 0..n, what);
    assert_eq!(
        names_with(dir, ".sst"),
        live_tables(&db),
        "{what}: tables on disk"
    );
    write_keys(&db, n..n + 10);
    db.flush().expect("flush after reopen");
    db.compact_range(CF, None, None)
        .expect("compact after reopen");
    assert_keys(&db, 0..n + 10, what);
    db.close().expect("close");
}

#[test]
fn an_ambiguous_manifest_sync_in_a_flush_keeps_its_table_until_reopen_settles_it() {
    let scenario = fail::FailScenario::setup();
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = fail_one_manifest_sync(
        tmp.path(),
        |db| {
            write_keys(db, 0..50);
            db.flush().expect("flush");
            write_keys(db, 50..100);
        },
        Db::flush,
    );
    reopen_and_check(&out.durable, 100, "flush edit durable");
    reopen_and_check(&out.lost, 100, "flush edit lost");
    scenario.teardown();
}

#[test]
fn an_ambiguous_manifest_sync_in_a_compaction_keeps_every_table_until_reopen_settles_it() {
    let scenario = fail::FailScenario::setup();
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = fail_one_manifest_sync(
        tmp.path(),
        |db| {
            for part in 0..3 {
                write_keys(db, part * 40..(part + 1) * 40);
                db.flush().expect("flush");
            }
        },
        |db| db.compact_range(CF, None, None),
    );
    reopen_and_check(&out.durable, 120, "compaction edit durable");
    reopen_and_check(&out.lost, 120, "compaction edit lost");
    scenario.teardown();
}

// ----- WAL sync at rotation -----------------------------------------------------------------

/// The WAL's fsync fails once, when a full memtable is rotated. Like a failed group-commit
/// fsync, that leaves the old WAL's tail of unknown durability, so every later write must
/// fail until reopen (a later synced write could otherwise be acknowledged and outlive the
/// earlier writes a crash drops), and reopening recovers every acknowledged write.
#[test]
fn a_failed_wal_sync_at_rotation_refuses_every_later_write_until_reopen() {
    let scenario = fail::FailScenario::setup();
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = Db::open(tmp.path(), rotating_options()).expect("open");
    write_keys(&db, 0..20);
    fail::cfg("lsm::wal::rotate_sync", "1*return").expect("configure failpoint");
    // Unsynced writes until the memtable rotates, which fails.
    let mut acknowledged = 20;
    let failed = loop {
        assert!(
            acknowledged < 10_000,
            "test setup: the memtable never rotated"
        );
        let i = acknowledged;
        match db.put(CF, &key(i), &value(i), &WriteOptions::default()) {
            Ok(()) => acknowledged += 1,
            Err(e) => break e,
        }
    };
    assert!(
        matches!(failed, Error::Io { .. }),
        "the failed sync itself: {failed}"
    );
    // The failpoint fired once and is spent: a retry would sync fine, and must still fail.
    for (n, sync) in [true, false, true, false].into_iter().enumerate() {
        let i = acknowledged + 1 + n;
        let err = db
            .put(
                CF,
                &key(i),
                &value(i),
                &WriteOptions {
                    sync,
                    ..WriteOptions::default()
                },
            )
            .expect_err("a write after a failed WAL sync must fail until reopen");
        assert!(matches!(err, Error::Background(_)), "retry {n}: {err}");
    }
    drop(db);
    let db = Db::open(tmp.path(), rotating_options()).expect("reopen");
    assert_keys(&db, 0..acknowledged, "after reopen");
    for n in 0..5 {
        assert_eq!(
            db.get(CF, &key(acknowledged + 1 + n), &ReadOptions::default())
                .expect("get"),
            None,
            "a refused write came back"
        );
    }
    write_keys(&db, acknowledged + 10..acknowledged + 20);
    db.close().expect("close");
    scenario.teardown();
}

/// A failed group-commit fsync is fatal until reopen. A flush that then fails with a
/// clearable error (here its directory sync) and a flush that later succeeds must not clear
/// it: the flush thread clears the errors of failed flushes, never a fatal one.
#[test]
fn a_fatal_wal_error_is_not_cleared_by_a_flush_that_recovers_from_its_own_error() {
    let scenario = fail::FailScenario::setup();
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = Db::open(tmp.path(), manual_options()).expect("open");
    write_keys(&db, 0..20);
    fail::cfg("lsm::wal::sync", "1*return").expect("configure failpoint");
    db.put(CF, b"x", b"y", &WriteOptions::synced())
        .expect_err("the group commit's sync fails");
    // The flush rotates (its sync of the old WAL succeeds), then its table's directory sync
    // fails: a clearable flush error.
    fail::cfg("lsm::sync_dir", "1*off->1*return").expect("configure failpoint");
    db.flush().expect_err("the flush's directory sync fails");
    fail::remove("lsm::sync_dir");
    db.flush().expect("the retried flush succeeds");
    assert_keys(&db, 0..20, "after the flush");
    let err = db
        .put(CF, b"x", b"y", &WriteOptions::synced())
        .expect_err("writes stay refused until reopen");
    assert!(matches!(err, Error::Background(_)), "{err}");
    drop(db);
    let db = Db::open(tmp.path(), manual_options()).expect("reopen");
    assert_keys(&db, 0..20, "after reopen");
    write_keys(&db, 20..30);
    db.close().expect("close");
    scenario.teardown();
}

// ----- writes that skip the WAL -------------------------------------------------------------

/// A flush that fails before its table is written makes nothing durable: the writes that
/// skipped the WAL since the last good flush stay memory-only, `flushed_seq` does not move,
/// and a crash then loses exactly them; the logged writes around them survive, and so does
/// everything the earlier flush covered.
#[test]
fn a_failed_flush_leaves_unlogged_writes_to_be_lost_by_a_crash() {
    let scenario = fail::FailScenario::setup();
    let tmp = tempfile::tempdir().expect("tempdir");
    let put = |db: &Db, i: usize, logged: bool| {
        let opts = if logged {
            WriteOptions::default()
        } else {
            WriteOptions::unlogged()
        };
        db.put(CF, &key(i), &value(i), &opts).expect("put")
    };
    {
        let db = Db::open(tmp.path(), manual_options()).expect("open");
        for i in 0..40 {
            put(&db, i, i % 3 == 0);
        }
        db.flush().expect("flush");
        let flushed = db.flushed_seq();
        assert_eq!(flushed, db.last_seq());
        for i in 40..80 {
            put(&db, i, i % 3 == 0);
        }
        fail::cfg("lsm::flush::before_write", "return").expect("configure failpoint");
        assert!(db.flush().is_err(), "the injected flush failure");
        assert_eq!(db.flushed_seq(), flushed, "a failed flush covers nothing");
        // Everything is still readable until the crash.
        assert_keys(&db, 0..80, "before the crash");
        // Crash: dropped without a successful flush or close.
    }
    fail::remove("lsm::flush::before_write");
    let db = Db::open(tmp.path(), manual_options()).expect("reopen");
    assert_keys(&db, 0..40, "flushed before the failure");
    for i in 40..80 {
        let got = db.get(CF, &key(i), &ReadOptions::default()).expect("get");
        let want = (i % 3 == 0).then(|| value(i));
        assert_eq!(got, want, "key {i}: logged survives, unlogged is lost");
    }
    db.close().expect("close");
    scenario.teardown();
}
