//! Scan pages of the MVCC reader: the byte budget stops reading before values are loaded,
//! `more` is exact, and continuing from the last key of a page (ascending: its successor
//! as the start; descending: the key itself as the end) visits every pair exactly once.

use crate::lsm::{Db, Options, WriteOptions};

use super::record::{Write, WriteKind, SHORT_VALUE_MAX};
use super::{MvccReader, MvccTxn, ScanLimit, ScanPage, Timestamp};

struct Env {
    _dir: tempfile::TempDir,
    db: Db,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let mut options = Options::small_for_tests();
        options.memtable_size = 4 << 20;
        let db = Db::open(dir.path(), options).unwrap();
        Env { _dir: dir, db }
    }

    /// Commits `value` (`None`: a delete) of `key` by transaction `start_ts` at `commit_ts`.
    fn commit(&self, key: &[u8], value: Option<&[u8]>, start_ts: Timestamp, commit_ts: Timestamp) {
        let mut txn = MvccTxn::new(start_ts);
        let write = match value {
            Some(v) if v.len() > SHORT_VALUE_MAX => {
                txn.put_value(key, v);
                Write {
                    kind: WriteKind::Put,
                    start_ts,
                    short_value: None,
                }
            }
            Some(v) => Write {
                kind: WriteKind::Put,
                start_ts,
                short_value: Some(v.to_vec()),
            },
            None => Write {
                kind: WriteKind::Delete,
                start_ts,
                short_value: None,
            },
        };
        txn.put_write(key, commit_ts, &write);
        self.db
            .write(txn.into_batch(), &WriteOptions::default())
            .unwrap();
    }

    fn reader(&self) -> MvccReader<'_> {
        MvccReader::new(&self.db, None)
    }

    /// Engine point reads so far: the scan reads a value stored apart from its commit
    /// record with one engine `get`, and nothing else it does is a `get`.
    fn gets(&self) -> u64 {
        self.db.stats().gets
    }

    fn page(&self, start: &[u8], end: Option<&[u8]>, limit: ScanLimit, reverse: bool) -> ScanPage {
        self.reader()
            .scan_page(start, end, limit, 100, reverse, &[])
            .unwrap()
    }
}

fn keys(page: &ScanPage) -> Vec<Vec<u8>> {
    page.pairs.iter().map(|(k, _)| k.clone()).collect()
}

fn key(i: usize) -> Vec<u8> {
    format!("k{i:03}").into_bytes()
}

#[test]
fn the_byte_budget_stops_reading_values_in_both_directions() {
    let env = Env::new();
    let value = vec![7u8; 2048];
    for i in 0..50 {
        env.commit(&key(i), Some(&value), 10, 11);
    }
    // 2048 + 4 bytes a pair: after 4 pairs the page holds 8208 >= 7000 bytes.
    let limit = ScanLimit {
        pairs: 1000,
        bytes: 7000,
    };
    for reverse in [false, true] {
        let before = env.gets();
        let page = env.page(b"", None, limit, reverse);
        let loaded = env.gets() - before;
        let want: Vec<_> = if reverse {
            (46..50).rev().map(key).collect()
        } else {
            (0..4).map(key).collect()
        };
        assert_eq!(keys(&page), want, "reverse = {reverse}");
        assert!(page.more);
        assert_eq!(
            loaded, 4,
            "only the values returned are read (reverse = {reverse})"
        );
    }
    // Without a byte budget the same scan reads every value: the count above is the budget's.
    let before = env.gets();
    let page = env.page(b"", None, ScanLimit::pairs(1000), false);
    assert_eq!((page.pairs.len(), page.more), (50, false));
    assert_eq!(env.gets() - before, 50);
    // The pair limit, too, stops before the next value is read.
    let before = env.gets();
    let page = env.page(b"", None, ScanLimit::pairs(3), true);
    assert_eq!((page.pairs.len(), page.more), (3, true));
    assert_eq!(env.gets() - before, 3);
}

#[test]
fn a_page_holds_at_least_one_pair_however_large() {
    let env = Env::new();
    let big = vec![1u8; 10_000];
    env.commit(b"a", Some(&big), 10, 11);
    env.commit(b"b", Some(&big), 10, 11);
    let limit = ScanLimit {
        pairs: 10,
        bytes: 100,
    };
    let page = env.page(b"", None, limit, false);
    assert_eq!((keys(&page), page.more), (vec![b"a".to_vec()], true));
    let page = env.page(b"", None, limit, true);
    assert_eq!((keys(&page), page.more), (vec![b"b".to_vec()], true));
}

#[test]
fn more_is_set_only_when_a_visible_pair_remains() {
    let env = Env::new();
    env.commit(b"a", Some(b"1"), 10, 11);
    env.commit(b"b", Some(b"2"), 10, 11);
    env.commit(b"c", Some(b"3"), 10, 11);
    // c is deleted at 21, and d only committed after the read timestamp (100).
    env.commit(b"c", None, 20, 21);
    env.commit(b"d", Some(b"4"), 150, 151);
    for reverse in [false, true] {
        let page = env.page(b"", None, ScanLimit::pairs(2), reverse);
        assert_eq!(page.pairs.len(), 2);
        assert!(!page.more, "nothing visible beyond (reverse = {reverse})");
        let page = env.page(b"", None, ScanLimit::pairs(1), reverse);
        assert!(page.more, "reverse = {reverse}");
    }
    let page = env.page(b"", Some(b"b"), ScanLimit::pairs(1), false);
    assert_eq!((keys(&page), page.more), (vec![b"a".to_vec()], false));
}

/// Pages through `[start, end)` with `limit`, continuing as the API documents.
fn all_pages(env: &Env, limit: ScanLimit, reverse: bool) -> Vec<(Vec<u8>, Vec<u8>)> {
    let (mut start, mut end): (Vec<u8>, Option<Vec<u8>>) = (Vec::new(), None);
    let mut out = Vec::new();
    for _ in 0..1000 {
        let page = env.page(&start, end.as_deref(), limit, reverse);
        let last = page.pairs.last().map(|(k, _)| k.clone());
        out.extend(page.pairs);
        match (page.more, last) {
            (true, Some(last)) if reverse => end = Some(last),
            (true, Some(mut last)) => {
                last.push(0);
                start = last;
            }
            _ => return out,
        }
    }
    panic!("paging did not finish");
}

#[test]
fn continuing_from_the_last_key_visits_every_pair_once_in_both_directions() {
    let env = Env::new();
    // Keys that are prefixes of one another, where an inexact successor skips or repeats.
    let names: [&[u8]; 8] = [b"a", b"a\0", b"a\0\0", b"a\x01", b"ab", b"b", b"b\0", b"c"];
    for (i, k) in names.iter().enumerate() {
        let value = vec![b'v'; 100 + i];
        env.commit(k, Some(&value), 10, 11);
        // A second, newer version: the page must use it and skip the older one.
        env.commit(k, Some(&value[1..]), 30, 31);
    }
    env.commit(b"a\x01", None, 40, 41);
    let full = env.page(b"", None, ScanLimit::pairs(100), false).pairs;
    assert_eq!(full.len(), names.len() - 1);
    for limit in [
        ScanLimit::pairs(1),
        ScanLimit::pairs(3),
        ScanLimit {
            pairs: 100,
            bytes: 150,
        },
        ScanLimit {
            pairs: 2,
            bytes: 250,
        },
    ] {
        assert_eq!(all_pages(&env, limit, false), full, "{limit:?}");
        let mut reversed = all_pages(&env, limit, true);
        reversed.reverse();
        assert_eq!(reversed, full, "{limit:?} reverse");
    }
}
