//! Damaged files on disk: SSTables, the manifest, WALs and `CURRENT`.
//!
//! Each test builds a database, damages one file the way a bad disk or a torn write would,
//! and checks the documented outcome: a torn or corrupt tail of the last WAL (nothing valid
//! after the damage) is cut off on open, any other damage, including damage in the middle of
//! the last WAL, is [`Error::Corruption`] naming the file (or a clear I/O error),
//! and nothing panics or returns wrong data. Every damaged case works on its own copy of a
//! pristine directory.

mod lsm_support;

use std::path::{Path, PathBuf};

use lsm_support::{copy_dir, manifest};
use strata::lsm::coding::masked_crc;
use strata::lsm::{ColumnFamily, Db, Error, Options, ReadOptions, WriteOptions};

const CF: ColumnFamily = ColumnFamily::Default;

fn key(i: usize) -> Vec<u8> {
    format!("key{i:05}").into_bytes()
}

fn value(i: usize) -> Vec<u8> {
    format!("value-{i}-")
        .bytes()
        .cycle()
        .take(40 + i % 30)
        .collect()
}

/// Foreground-only engine with tiny memtables and files.
fn small_options() -> Options {
    Options {
        background_work: false,
        ..Options::small_for_tests()
    }
}

/// Foreground-only engine whose memtable never fills in these tests: writes stay in the WAL.
fn wal_only_options() -> Options {
    Options {
        background_work: false,
        memtable_size: 1 << 20,
        ..Options::small_for_tests()
    }
}

fn files_with(dir: &Path, pred: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(&pred))
        .collect();
    out.sort();
    out
}

fn ssts(dir: &Path) -> Vec<PathBuf> {
    files_with(dir, |n| n.ends_with(".sst"))
}

/// The tables of the engine's current version, by name (a directory listing can also show
/// replaced tables a reader still held when they were replaced; open deletes those).
fn live_tables(db: &Db) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = db
        .test_version()
        .files()
        .map(|(_, f)| db.path().join(format!("{:06}.sst", f.id)))
        .collect();
    out.sort();
    out
}

fn wals(dir: &Path) -> Vec<PathBuf> {
    files_with(dir, |n| n.ends_with(".log"))
}

fn flip_byte(path: &Path, pos: usize) {
    let mut data = std::fs::read(path).expect("read file");
    data[pos] ^= 0x5a;
    std::fs::write(path, data).expect("write file");
}

fn truncate(path: &Path, len: usize) {
    let data = std::fs::read(path).expect("read file");
    std::fs::write(path, &data[..len]).expect("write file");
}

/// `(offset, total length)` of each record of a WAL or manifest (`crc u32 | len u32 | payload`).
fn log_records(path: &Path) -> Vec<(usize, usize)> {
    let data = std::fs::read(path).expect("read log");
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 8 <= data.len() {
        let len = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().expect("4 bytes")) as usize;
        assert!(pos + 8 + len <= data.len(), "test setup: torn log");
        out.push((pos, 8 + len));
        pos += 8 + len;
    }
    out
}

fn scan_all(db: &Db, cf: ColumnFamily) -> strata::lsm::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    db.scan(cf, b"", None, usize::MAX, false, None)
}

fn get(db: &Db, k: &[u8]) -> Option<Vec<u8>> {
    db.get(CF, k, &ReadOptions::default()).expect("get")
}

fn assert_corruption_in(err: &Error, file: &Path, what: &str) {
    match err {
        Error::Corruption { file: f, .. } => {
            assert_eq!(
                f, file,
                "{what}: corruption reported in the wrong file: {err}"
            )
        }
        other => panic!(
            "{what}: expected corruption in {}, got {other}",
            file.display()
        ),
    }
}

fn write_keys(db: &Db, range: std::ops::Range<usize>, sync: bool) {
    for i in range {
        db.put(
            CF,
            &key(i),
            &value(i),
            &WriteOptions {
                sync,
                ..WriteOptions::default()
            },
        )
        .expect("put");
    }
}

fn expected(range: std::ops::Range<usize>) -> Vec<(Vec<u8>, Vec<u8>)> {
    range.map(|i| (key(i), value(i))).collect()
}

// ----- SSTables --------------------------------------------------------------------------

#[test]
fn flipped_sstable_bytes_are_reported_as_corruption_of_that_file() {
    const N: usize = 400;
    let tmp = tempfile::tempdir().expect("tempdir");
    let pristine = tmp.path().join("pristine");
    let tables = {
        let db = Db::open(&pristine, small_options()).expect("open");
        write_keys(&db, 0..N, false);
        db.compact_range(CF, None, None).expect("compact");
        let tables = live_tables(&db);
        // Tables the compaction replaced are gone once it returns, not at the next open.
        assert_eq!(ssts(&pristine), tables, "replaced tables left on disk");
        db.close().expect("close");
        tables
    };
    assert!(tables.len() >= 2, "test setup: expected several tables");
    let name = tables[0].file_name().expect("name").to_owned();
    let data = std::fs::read(&tables[0]).expect("read table");
    let len = data.len();
    let u64_at = |pos: usize| u64::from_le_bytes(data[pos..pos + 8].try_into().expect("8 bytes"));
    // Footer: filter handle (offset, size), index handle (offset, size), version, crc, magic.
    let footer = len - 48;
    let (filter_off, filter_len) = (u64_at(footer) as usize, u64_at(footer + 8) as usize);
    let (index_off, index_len) = (u64_at(footer + 16) as usize, u64_at(footer + 24) as usize);
    assert!(
        filter_off > 0 && index_off > filter_off && index_len > 0,
        "test setup: footer"
    );
    let positions = [
        ("first data block", 3),
        ("a middle data block", filter_off / 2),
        ("the last data block's trailer", filter_off - 2),
        ("the filter block", filter_off + filter_len / 2),
        ("the index block", index_off + index_len / 2),
        ("the index block's checksum", index_off + index_len + 2),
        ("the footer's filter handle", footer + 1),
        ("the footer's index handle", footer + 17),
        ("the footer's checksum", footer + 37),
        ("the magic number", len - 1),
    ];

    for (case, (what, pos)) in positions.into_iter().enumerate() {
        let dir = tmp.path().join(format!("case{case}"));
        copy_dir(&pristine, &dir);
        let damaged = dir.join(&name);
        flip_byte(&damaged, pos);
        let what = format!("flip in {what} (byte {pos} of {len})");
        let db = match Db::open(&dir, small_options()) {
            Ok(db) => db,
            Err(e) => {
                assert_corruption_in(&e, &damaged, &what);
                continue;
            }
        };
        let mut errors = Vec::new();
        for i in 0..N {
            match db.get(CF, &key(i), &ReadOptions::default()) {
                Ok(v) => assert_eq!(v, Some(value(i)), "{what}: wrong value for key {i}"),
                Err(e) => errors.push(e),
            }
        }
        for reverse in [false, true] {
            match db.scan(CF, b"", None, usize::MAX, reverse, None) {
                Ok(rows) => {
                    let mut want = expected(0..N);
                    if reverse {
                        want.reverse();
                    }
                    assert!(
                        rows == want,
                        "{what}: a scan returned wrong data without an error"
                    );
                }
                Err(e) => errors.push(e),
            }
        }
        assert!(!errors.is_empty(), "{what}: the damage went unnoticed");
        for e in &errors {
            assert_corruption_in(e, &damaged, &what);
        }
    }
}

// ----- manifest --------------------------------------------------------------------------

/// A database whose manifest holds several records: the snapshot written at open, the open's
/// own edit, and one edit per flush. Keys 0..300 are in tables (one flush per 100); 300..350
/// are only in the WAL.
fn build_multi_record_manifest(dir: &Path) -> Vec<(usize, usize)> {
    let db = Db::open(dir, wal_only_options()).expect("open");
    for part in 0..3 {
        write_keys(&db, part * 100..(part + 1) * 100, false);
        db.flush().expect("flush");
    }
    write_keys(&db, 300..350, true);
    db.close().expect("close");
    let records = log_records(&manifest(dir));
    assert_eq!(
        records.len(),
        5,
        "test setup: snapshot, open edit, three flush edits"
    );
    records
}

#[test]
fn a_corrupt_manifest_record_refuses_to_open() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("db");
    let records = build_multi_record_manifest(&dir);
    let path = manifest(&dir);
    // Inside the payload of the first flush's edit, in the middle of the log.
    let (offset, len) = records[2];
    flip_byte(&path, offset + 8 + (len - 8) / 2);
    let err = Db::open(&dir, wal_only_options()).expect_err("open must fail");
    assert_corruption_in(&err, &path, "flipped manifest byte");
    // The failed open changed nothing: fixing the byte makes the database whole again.
    let (offset, len) = records[2];
    flip_byte(&path, offset + 8 + (len - 8) / 2);
    let db = Db::open(&dir, wal_only_options()).expect("open after repair");
    assert!(scan_all(&db, CF).expect("scan") == expected(0..350));
}

#[test]
fn a_torn_last_manifest_record_is_ignored() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("db");
    let records = build_multi_record_manifest(&dir);
    let (offset, len) = records[4];
    // Cut the last flush's edit in half, as if the machine died while appending it.
    truncate(&manifest(&dir), offset + len / 2);
    let db = Db::open(&dir, wal_only_options()).expect("open with a torn manifest tail");
    for i in (0..200).chain(300..350) {
        assert_eq!(get(&db, &key(i)), Some(value(i)), "key {i}");
    }
    // Keys 200..300 were in the file the torn edit added. A real torn append is never
    // followed by the deletion of that flush's WAL (it happens after the manifest fsync), so
    // they would have been replayed from it; here the WAL is gone, and they must simply be
    // absent rather than half there.
    let rows = scan_all(&db, CF).expect("scan");
    let want: Vec<_> = expected(0..200)
        .into_iter()
        .chain(expected(300..350))
        .collect();
    assert!(rows == want, "state after ignoring the torn edit");
    // The database keeps working and survives another reopen.
    write_keys(&db, 350..360, true);
    db.close().expect("close");
    let db = Db::open(&dir, wal_only_options()).expect("second reopen");
    let want: Vec<_> = want.into_iter().chain(expected(350..360)).collect();
    assert!(scan_all(&db, CF).expect("scan") == want);
}

// ----- WAL -------------------------------------------------------------------------------

/// Writes keys 0..n one synced write (one WAL record) each, closes, and returns the WAL.
fn build_wal_only(dir: &Path, n: usize) -> PathBuf {
    let db = Db::open(dir, wal_only_options()).expect("open");
    write_keys(&db, 0..n, true);
    db.close().expect("close");
    assert!(
        ssts(dir).is_empty(),
        "test setup: data must stay in the WAL"
    );
    let logs = wals(dir);
    assert_eq!(logs.len(), 1, "test setup: one WAL");
    assert_eq!(
        log_records(&logs[0]).len(),
        n,
        "test setup: one record per write"
    );
    logs[0].clone()
}

#[test]
fn a_damaged_tail_of_the_last_wal_is_cut_off_and_later_writes_are_durable() {
    const N: usize = 40;
    type Damage = fn(&Path, &[(usize, usize)]);
    let cases: [(&str, Damage, usize); 4] = [
        (
            "flipped byte in the last record",
            |p, r| flip_byte(p, r[N - 1].0 + 8 + 3),
            N - 1,
        ),
        (
            "last record cut in the middle",
            |p, r| truncate(p, r[N - 1].0 + r[N - 1].1 / 2),
            N - 1,
        ),
        (
            "last record's length field damaged",
            |p, r| flip_byte(p, r[N - 1].0 + 6),
            N - 1,
        ),
        (
            "garbage after a torn last record",
            |p, r| {
                truncate(p, r[N - 1].0 + 5);
                let mut data = std::fs::read(p).expect("read WAL");
                data.extend(noise(300, 5));
                std::fs::write(p, data).expect("write WAL");
            },
            N - 1,
        ),
    ];
    let tmp = tempfile::tempdir().expect("tempdir");
    for (case, (what, damage, survivors)) in cases.into_iter().enumerate() {
        let dir = tmp.path().join(format!("case{case}"));
        let wal = build_wal_only(&dir, N);
        damage(&wal, &log_records(&wal));

        let db = Db::open(&dir, wal_only_options())
            .unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
        // Everything before the damage, nothing from it on.
        assert!(
            scan_all(&db, CF).expect("scan") == expected(0..survivors),
            "{what}: recovered state"
        );
        assert_eq!(get(&db, &key(survivors)), None, "{what}");
        db.put(CF, b"after", b"reopen", &WriteOptions::synced())
            .expect("write after reopen");
        // Crash (no close): the new write must come back from its WAL, and the damaged bytes
        // must not resurface or make the old WAL look damaged in the middle of the sequence.
        drop(db);
        let db = Db::open(&dir, wal_only_options())
            .unwrap_or_else(|e| panic!("{what}: second reopen failed: {e}"));
        assert_eq!(get(&db, b"after"), Some(b"reopen".to_vec()), "{what}");
        let mut want = expected(0..survivors);
        want.push((b"after".to_vec(), b"reopen".to_vec()));
        want.sort();
        assert!(
            scan_all(&db, CF).expect("scan") == want,
            "{what}: state after the second reopen"
        );
    }
}

/// Damage in the middle of the last WAL, with valid records after it, is not a torn append:
/// cutting the file there would drop writes that were acknowledged as synced. Open refuses
/// with `Corruption` naming the WAL and the damaged record's offset, and changes nothing.
#[test]
fn damage_in_the_middle_of_the_last_wal_refuses_to_open() {
    const N: usize = 40;
    type Damage = fn(&Path, (usize, usize));
    let cases: [(&str, Damage); 4] = [
        ("flipped payload byte", |p, (off, _)| {
            flip_byte(p, off + 8 + 5)
        }),
        ("flipped checksum byte", |p, (off, _)| flip_byte(p, off + 1)),
        // A longer length makes the record look torn (or swallow its successors).
        ("length field damaged", |p, (off, _)| flip_byte(p, off + 6)),
        // A batch whose header says it holds more entries than it does: the record's
        // checksum is recomputed, so only the batch decoder can tell.
        ("undecodable batch with a good checksum", |p, (off, len)| {
            let mut data = std::fs::read(p).expect("read WAL");
            data[off + 8 + 8] ^= 0x01;
            let crc = masked_crc(&[&data[off + 4..off + len]]);
            data[off..off + 4].copy_from_slice(&crc.to_le_bytes());
            std::fs::write(p, data).expect("write WAL");
        }),
    ];
    let tmp = tempfile::tempdir().expect("tempdir");
    for (case, (what, damage)) in cases.into_iter().enumerate() {
        let dir = tmp.path().join(format!("case{case}"));
        let wal = build_wal_only(&dir, N);
        let records = log_records(&wal);
        let (offset, _) = records[N / 2];
        damage(&wal, records[N / 2]);
        let before = std::fs::read(&wal).expect("read WAL");
        let err = Db::open(&dir, wal_only_options()).expect_err(what);
        assert_corruption_in(&err, &wal, what);
        match &err {
            Error::Corruption { offset: o, .. } => {
                assert_eq!(*o, offset as u64, "{what}: offset of the damage ({err})")
            }
            other => panic!("{what}: {other}"),
        }
        assert!(
            std::fs::read(&wal).expect("read WAL") == before,
            "{what}: the refused open modified the WAL"
        );
    }
}

/// Writes until the engine has rotated to `count` WALs (memtables waiting for a flush that
/// foreground-only mode has not run yet), then drops the engine without closing it. Returns
/// the keys written and the WALs, oldest first.
fn build_with_wals(dir: &Path, count: usize) -> (usize, Vec<PathBuf>) {
    let db = Db::open(dir, small_options()).expect("open");
    let mut n = 0;
    while wals(dir).len() < count {
        write_keys(&db, n..n + 1, true);
        n += 1;
        assert!(n < 10_000, "test setup: the WAL never rotated");
    }
    write_keys(&db, n..n + 5, true);
    n += 5;
    drop(db);
    assert!(ssts(dir).is_empty(), "test setup: nothing flushed yet");
    (n, wals(dir))
}

#[test]
fn damage_in_a_wal_that_is_not_the_last_refuses_to_open() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pristine = tmp.path().join("pristine");
    let (n, logs) = build_with_wals(&pristine, 2);
    assert_eq!(logs.len(), 2);

    // Undamaged, this state recovers every write.
    let good = tmp.path().join("good");
    copy_dir(&pristine, &good);
    let db = Db::open(&good, small_options()).expect("open undamaged");
    assert!(scan_all(&db, CF).expect("scan") == expected(0..n));
    drop(db);

    let dir = tmp.path().join("damaged");
    copy_dir(&pristine, &dir);
    let older = dir.join(logs[0].file_name().expect("name"));
    let records = log_records(&older);
    assert!(
        records.len() >= 3,
        "test setup: several records in the older WAL"
    );
    let (offset, _) = records[records.len() / 2];
    flip_byte(&older, offset + 8 + 2);
    let before: Vec<Vec<u8>> = wals(&dir)
        .iter()
        .map(|p| std::fs::read(p).expect("read"))
        .collect();
    let err = Db::open(&dir, small_options()).expect_err("open must fail");
    assert_corruption_in(&err, &older, "flipped byte in the older WAL");
    // The refused open left the WALs as they were, for an operator to inspect.
    let after: Vec<Vec<u8>> = wals(&dir)
        .iter()
        .map(|p| std::fs::read(p).expect("read"))
        .collect();
    assert!(before == after, "a refused open modified the WALs");
}

/// Recovery replays the WALs, flushes what it replayed, creates a fresh WAL and only then
/// records the result in a new manifest. Until that manifest is durable, the old manifest
/// still says the replayed WALs hold the data, so they must stay intact: a crash at that
/// point is simulated by combining the pristine directory with the files recovery creates
/// before its manifest write (the flushed table and the new, empty WAL).
#[test]
fn a_crash_during_recovery_loses_no_replayed_write() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pristine = tmp.path().join("pristine");
    // Three WALs: more file numbers were handed out than the manifest has recorded.
    let (n, logs) = build_with_wals(&pristine, 3);
    let replayed: Vec<_> = logs
        .iter()
        .map(|p| p.file_name().expect("name").to_owned())
        .collect();

    let recovered = tmp.path().join("recovered");
    copy_dir(&pristine, &recovered);
    let db = Db::open(&recovered, small_options()).expect("recovery");
    assert!(scan_all(&db, CF).expect("scan") == expected(0..n));
    db.close().expect("close");
    let new_wal = wals(&recovered).pop().expect("recovery created a WAL");
    let new_wal_name = new_wal.file_name().expect("name").to_owned();

    // The simulated crash state opens with every write.
    let crashed = tmp.path().join("crashed");
    copy_dir(&pristine, &crashed);
    for table in ssts(&recovered) {
        std::fs::copy(&table, crashed.join(table.file_name().expect("name"))).expect("copy");
    }
    std::fs::write(crashed.join(&new_wal_name), b"").expect("empty WAL");
    let db = Db::open(&crashed, small_options()).expect("open after the simulated crash");
    let rows = scan_all(&db, CF).expect("scan");
    assert!(
        rows == expected(0..n),
        "a crash during recovery lost writes: {} of {n} keys left",
        rows.len()
    );
    assert!(
        !replayed.contains(&new_wal_name),
        "recovery reused the number of a WAL it replayed ({new_wal_name:?}) for its new WAL"
    );
}

// ----- garbage files ---------------------------------------------------------------------

/// Deterministic noise.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Keys 0..200 in tables; returns the live tables.
fn build_flushed(dir: &Path) -> Vec<PathBuf> {
    let db = Db::open(dir, small_options()).expect("open");
    write_keys(&db, 0..200, false);
    db.compact_range(CF, None, None).expect("compact");
    let tables = live_tables(&db);
    db.close().expect("close");
    tables
}

#[test]
fn garbage_current_files_are_clear_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pristine = tmp.path().join("pristine");
    build_flushed(&pristine);
    let cases: [(&str, Vec<u8>); 4] = [
        ("random bytes", noise(64, 7)),
        ("text that names no manifest", b"garbage\n".to_vec()),
        ("a missing manifest", b"MANIFEST-999999\n".to_vec()),
        ("an empty file", Vec::new()),
    ];
    for (case, (what, contents)) in cases.into_iter().enumerate() {
        let dir = tmp.path().join(format!("case{case}"));
        copy_dir(&pristine, &dir);
        std::fs::write(dir.join("CURRENT"), contents).expect("write CURRENT");
        let err = Db::open(&dir, small_options()).expect_err("open must fail");
        assert!(
            matches!(err, Error::Corruption { .. } | Error::Io { .. }),
            "CURRENT holding {what}: unexpected error {err}"
        );
        let message = err.to_string();
        assert!(
            message.contains("CURRENT") || message.contains("MANIFEST"),
            "CURRENT holding {what}: the error does not say which file: {message}"
        );
    }
}

#[test]
fn a_garbage_manifest_is_corruption() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("db");
    build_flushed(&dir);
    let path = manifest(&dir);
    std::fs::write(&path, noise(300, 11)).expect("write manifest");
    let err = Db::open(&dir, small_options()).expect_err("open must fail");
    assert_corruption_in(&err, &path, "garbage manifest");
}

#[test]
fn an_empty_or_missing_sstable_is_a_clear_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pristine = tmp.path().join("pristine");
    let tables = build_flushed(&pristine);
    for (case, remove) in [false, true].into_iter().enumerate() {
        let dir = tmp.path().join(format!("case{case}"));
        copy_dir(&pristine, &dir);
        let table = dir.join(tables[0].file_name().expect("name"));
        if remove {
            std::fs::remove_file(&table).expect("remove table");
        } else {
            std::fs::write(&table, b"").expect("empty table");
        }
        let errors: Vec<Error> = match Db::open(&dir, small_options()) {
            Err(e) => vec![e],
            Ok(db) => {
                let mut errors: Vec<Error> = (0..200)
                    .filter_map(|i| db.get(CF, &key(i), &ReadOptions::default()).err())
                    .collect();
                errors.extend(scan_all(&db, CF).err());
                errors
            }
        };
        assert!(!errors.is_empty(), "a damaged table went unnoticed");
        for e in &errors {
            if remove {
                assert!(
                    matches!(
                        e,
                        Error::Io {
                            kind: std::io::ErrorKind::NotFound,
                            ..
                        }
                    ),
                    "missing table: {e}"
                );
                assert!(e.to_string().contains(&*table.to_string_lossy()), "{e}");
            } else {
                assert_corruption_in(e, &table, "empty table");
            }
        }
    }
}

#[test]
fn a_garbage_last_wal_opens_without_inventing_data() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("db");
    let wal = build_wal_only(&dir, 20);
    let mut data = std::fs::read(&wal).expect("read WAL");
    let half = log_records(&wal)[10].0;
    data.truncate(half);
    data.extend(noise(500, 3));
    std::fs::write(&wal, data).expect("write WAL");
    let db = Db::open(&dir, wal_only_options()).expect("open");
    assert!(scan_all(&db, CF).expect("scan") == expected(0..10));
}
