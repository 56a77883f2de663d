//! A full disk: the engine refuses writes with a clear error, keeps serving reads, and
//! accepts writes again once space is freed (the flush thread retries with backoff), with no
//! acknowledged write lost across a reopen.
//!
//! Runs on a 4 MiB tmpfs so the disk really fills; where mounting is not permitted the test
//! prints that it was skipped and passes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use strata::lsm::{ColumnFamily, Db, Error, Options, ReadOptions, WriteOptions};

const CF: ColumnFamily = ColumnFamily::Default;
const FILLER_BYTES: usize = 1 << 20;

/// Unmounts the tmpfs when the test ends, also when it fails.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount_tmpfs(dir: &Path, size: &str) -> Result<Mount, String> {
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(Mount(dir.to_path_buf()))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("key{i:06}").into_bytes()
}

fn value(i: usize) -> Vec<u8> {
    format!("{i}:").bytes().cycle().take(1000).collect()
}

fn options() -> Options {
    Options {
        wal: true,
        ..Options::small_for_tests()
    }
}

fn assert_readable(db: &Db, model: &BTreeMap<Vec<u8>, Vec<u8>>, when: &str) {
    let r = ReadOptions::default();
    for (k, v) in model {
        let got = db
            .get(CF, k, &r)
            .unwrap_or_else(|e| panic!("{when}: get failed: {e}"));
        assert_eq!(
            got.as_ref(),
            Some(v),
            "{when}: {}",
            String::from_utf8_lossy(k)
        );
    }
    let rows = db
        .scan(CF, b"", None, usize::MAX, false, None)
        .unwrap_or_else(|e| panic!("{when}: scan failed: {e}"));
    let want: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert!(
        rows == want,
        "{when}: scan returned {} rows, expected {}",
        rows.len(),
        want.len()
    );
}

#[test]
fn a_full_disk_refuses_writes_keeps_reads_and_recovers_when_space_is_freed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mount = match mount_tmpfs(tmp.path(), "4m") {
        Ok(m) => m,
        Err(e) => {
            println!("skipped: cannot mount tmpfs: {e}");
            return;
        }
    };
    let filler = mount.0.join("filler");
    std::fs::write(&filler, vec![0x55u8; FILLER_BYTES]).expect("write filler");
    let dir = mount.0.join("db");
    let db = Db::open(&dir, options()).expect("open");
    let w = WriteOptions::synced();

    // Fill the disk. Background compactions delete the tables they replace, so a failed
    // write can be followed by successful ones for a while; the disk counts as full once
    // writes have failed many times in a row. Every write that returned Ok is acknowledged.
    let mut model = BTreeMap::new();
    let mut i = 0;
    let mut failures_in_a_row = 0;
    let mut errors = Vec::new();
    while failures_in_a_row < 50 {
        match db.put(CF, &key(i), &value(i), &w) {
            Ok(()) => {
                model.insert(key(i), value(i));
                i += 1;
                failures_in_a_row = 0;
                assert!(i < 100_000, "the 4 MiB disk never filled");
            }
            Err(e) => {
                assert!(
                    matches!(e, Error::NoSpace { .. } | Error::Background(_)),
                    "a full disk should be NoSpace or Background, got {e}"
                );
                failures_in_a_row += 1;
                errors.push(e);
            }
        }
    }
    println!(
        "disk full after {i} writes ({} failed), last error: {}",
        errors.len(),
        errors.last().map(ToString::to_string).unwrap_or_default()
    );
    // The failed write was not applied; every acknowledged one is readable.
    let failed_key = key(i);
    assert_eq!(
        db.get(CF, &failed_key, &ReadOptions::default())
            .expect("get"),
        None
    );
    assert_readable(&db, &model, "disk full");

    // Free space; the flush thread's retry clears the error and writes succeed again.
    std::fs::remove_file(&filler).expect("remove filler");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match db.put(CF, &failed_key, &value(i), &w) {
            Ok(()) => break,
            Err(e) => {
                assert!(
                    matches!(e, Error::NoSpace { .. } | Error::Background(_)),
                    "after freeing space: {e}"
                );
                assert!(
                    Instant::now() < deadline,
                    "writes still refused 20 s after space was freed: {e}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    model.insert(key(i), value(i));
    for j in i + 1..i + 20 {
        db.put(CF, &key(j), &value(j), &w)
            .expect("write after recovery");
        model.insert(key(j), value(j));
    }
    assert_readable(&db, &model, "after space was freed");

    // Everything acknowledged survives a reopen.
    db.close().expect("close");
    let db = Db::open(&dir, options()).expect("reopen");
    assert_readable(&db, &model, "after reopen");
    db.close().expect("close");
    drop(mount);
}
