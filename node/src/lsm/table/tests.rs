//! Tests of the table builder, reader and iterator.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::*;
use crate::lsm::cache::BlockCache;
use crate::lsm::coding::{masked_crc, read_u32};
use crate::lsm::error::Result;
use crate::lsm::iterator::InternalIterator;
use crate::lsm::key::{compare_internal, kind_of, seq_of, user_part, ValueKind};
use crate::lsm::key::{internal_key, seek_key, MAX_SEQ};
use crate::lsm::prefix::{engine_prefix, stored_name, FixedPrefix};
use proptest::prelude::*;

type Entries = Vec<(Vec<u8>, Vec<u8>)>;

fn build(dir: &Path, file_id: u64, entries: &Entries, opts: TableOptions) -> TableSummary {
    let mut b = TableBuilder::new(&table_file_name(dir, file_id), opts).unwrap();
    for (k, v) in entries {
        b.add(k, v).unwrap();
    }
    assert_eq!(b.num_entries(), entries.len() as u64);
    b.finish().unwrap()
}

fn open(dir: &Path, file_id: u64, size: u64, cache: Option<Arc<BlockCache>>) -> Arc<Table> {
    Arc::new(Table::open(&table_file_name(dir, file_id), file_id, size, cache).unwrap())
}

fn scan_forward(t: &Arc<Table>) -> Result<Entries> {
    let mut it = t.iter(true);
    let mut out = Vec::new();
    it.seek_to_first()?;
    while it.valid() {
        out.push((it.key().to_vec(), it.value().to_vec()));
        it.next()?;
    }
    Ok(out)
}

fn scan_backward(t: &Arc<Table>) -> Result<Entries> {
    let mut it = t.iter(false);
    let mut out = Vec::new();
    it.seek_to_last()?;
    while it.valid() {
        out.push((it.key().to_vec(), it.value().to_vec()));
        it.prev()?;
    }
    out.reverse();
    Ok(out)
}

/// Deterministic pseudo-random entries: `n` distinct user keys, 1-3 versions each.
fn sample_entries(n: usize) -> Entries {
    let mut state = 0x1234_5678_9abc_def0u64;
    let mut rand = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut out = Vec::new();
    for i in 0..n {
        let user = format!("\x00key-{:06}-{}", i, rand() % 1000).into_bytes();
        let versions = 1 + rand() % 3;
        for v in 0..versions {
            let seq = 10_000 - i as u64 * 3 - v;
            let kind = if rand() % 5 == 0 {
                ValueKind::Delete
            } else {
                ValueKind::Put
            };
            let value = match kind {
                ValueKind::Delete => Vec::new(),
                ValueKind::Put => format!("value-{i}-{v}-")
                    .repeat(1 + (rand() % 4) as usize)
                    .into_bytes(),
            };
            out.push((internal_key(&user, seq, kind), value));
        }
    }
    out.sort_by(|a, b| compare_internal(&a.0, &b.0));
    out
}

fn small_opts(compression: Compression) -> TableOptions {
    TableOptions {
        block_size: 256,
        restart_interval: 4,
        bloom_bits_per_key: 10,
        compression,
        prefix_extractor: None,
    }
}

/// The model answer for `Table::get`.
fn model_get(entries: &Entries, engine_key: &[u8], target: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let i = entries.partition_point(|(k, _)| compare_internal(k, target) == Ordering::Less);
    entries
        .get(i)
        .filter(|(k, _)| user_part(k) == engine_key)
        .cloned()
}

fn check_get(t: &Table, entries: &Entries, engine_key: &[u8], seq: u64) {
    let target = seek_key(engine_key, seq);
    let got = t.get(engine_key, &target, true).unwrap();
    match model_get(entries, engine_key, &target) {
        Some((key, value)) => assert_eq!(got, TableLookup::Found { key, value }),
        None => assert!(
            matches!(got, TableLookup::NotFound | TableLookup::FilteredOut),
            "{got:?}"
        ),
    }
}

#[test]
fn thousands_of_entries_roundtrip() {
    let dir = tempfile::tempdir().unwrap();
    let entries = sample_entries(3000);
    for (id, compression) in [(1, Compression::None), (2, Compression::Lz4)] {
        let summary = build(dir.path(), id, &entries, small_opts(compression));
        assert_eq!(summary.num_entries, entries.len() as u64);
        assert_eq!(
            summary.num_deletions,
            entries
                .iter()
                .filter(|(k, _)| kind_of(k) == Some(ValueKind::Delete))
                .count() as u64
        );
        assert_eq!(summary.smallest_key, entries[0].0);
        assert_eq!(summary.largest_key, entries[entries.len() - 1].0);
        assert_eq!(
            summary.smallest_seq,
            entries.iter().map(|(k, _)| seq_of(k)).min().unwrap()
        );
        assert_eq!(
            summary.largest_seq,
            entries.iter().map(|(k, _)| seq_of(k)).max().unwrap()
        );
        let path = table_file_name(dir.path(), id);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), summary.file_size);

        let cache = Arc::new(BlockCache::new(1 << 20));
        let t = open(dir.path(), id, summary.file_size, Some(cache.clone()));
        assert_eq!(t.file_id(), id);
        assert_eq!(t.path(), path);
        assert_eq!(t.file_size(), summary.file_size);
        assert_eq!(scan_forward(&t).unwrap(), entries);
        assert_eq!(scan_backward(&t).unwrap(), entries);

        for (k, _) in entries.iter().step_by(7) {
            let user = user_part(k);
            check_get(&t, &entries, user, MAX_SEQ);
            check_get(&t, &entries, user, seq_of(k));
            check_get(&t, &entries, user, seq_of(k).saturating_sub(1));
        }
        // Absent keys are mostly filtered out.
        let filtered = (0..1000)
            .filter(|i| {
                let user = format!("\x00absent-{i}").into_bytes();
                let target = seek_key(&user, MAX_SEQ);
                let got = t.get(&user, &target, true).unwrap();
                assert_ne!(
                    std::mem::discriminant(&got),
                    std::mem::discriminant(&TableLookup::Found {
                        key: vec![],
                        value: vec![]
                    })
                );
                got == TableLookup::FilteredOut
            })
            .count();
        assert!(filtered > 950, "only {filtered} filtered");
    }
    // LZ4 made the compressible table smaller.
    let plain = std::fs::metadata(table_file_name(dir.path(), 1))
        .unwrap()
        .len();
    let lz4 = std::fs::metadata(table_file_name(dir.path(), 2))
        .unwrap()
        .len();
    assert!(lz4 < plain, "lz4 {lz4} vs plain {plain}");
}

#[test]
fn empty_table() {
    let dir = tempfile::tempdir().unwrap();
    let summary = build(dir.path(), 1, &Vec::new(), TableOptions::default());
    assert_eq!(summary.num_entries, 0);
    let t = open(dir.path(), 1, summary.file_size, None);
    assert!(scan_forward(&t).unwrap().is_empty());
    assert!(scan_backward(&t).unwrap().is_empty());
    let mut it = t.iter(true);
    it.seek(b"\x00a\0\0\0\0\0\0\0\x01").unwrap();
    assert!(!it.valid());
    it.seek_for_prev(b"\x00a\0\0\0\0\0\0\0\x01").unwrap();
    assert!(!it.valid());
    let got = t.get(b"\x00a", &seek_key(b"\x00a", 5), true).unwrap();
    assert!(matches!(
        got,
        TableLookup::NotFound | TableLookup::FilteredOut
    ));
}

#[test]
fn block_cache_hits_and_fill_cache() {
    let dir = tempfile::tempdir().unwrap();
    let entries = sample_entries(500);
    let summary = build(dir.path(), 7, &entries, small_opts(Compression::None));
    let cache = Arc::new(BlockCache::new(1 << 20));
    let t = open(dir.path(), 7, summary.file_size, Some(cache.clone()));

    // A scan that does not fill the cache leaves it empty.
    let mut it = t.iter(false);
    it.seek_to_first().unwrap();
    while it.valid() {
        it.next().unwrap();
    }
    assert!(cache.is_empty());

    assert_eq!(scan_forward(&t).unwrap(), entries);
    let blocks = cache.len();
    assert!(blocks > 10);
    let misses = cache.misses();
    assert_eq!(scan_forward(&t).unwrap(), entries);
    assert_eq!(cache.misses(), misses, "second scan must be all hits");
    assert!(cache.hits() >= blocks as u64);
}

#[test]
fn table_cache_opens_once_and_evicts() {
    let dir = tempfile::tempdir().unwrap();
    let entries = sample_entries(50);
    let mut sizes = Vec::new();
    for id in 1..=4 {
        sizes.push(build(dir.path(), id, &entries, TableOptions::default()).file_size);
    }
    let tc = TableCache::new(dir.path().to_path_buf(), 2, None);
    let a = tc.get(1, sizes[0]).unwrap();
    let b = tc.get(1, sizes[0]).unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    tc.evict(1);
    let c = tc.get(1, sizes[0]).unwrap();
    assert!(!Arc::ptr_eq(&a, &c));
    for id in 1..=4 {
        let t = tc.get(id, sizes[id as usize - 1]).unwrap();
        assert_eq!(scan_forward(&t).unwrap(), entries);
    }
    assert!(tc.len() <= 2);
    // Missing file: an I/O error, not a panic.
    assert!(tc.get(99, 100).is_err());
    assert_eq!(
        table_file_name(Path::new("/d"), 42),
        PathBuf::from("/d/000042.sst")
    );
}

#[test]
fn format_constants() {
    assert_eq!(TABLE_MAGIC, 0x5453_5354_4152_5453);
    let dir = tempfile::tempdir().unwrap();
    let summary = build(dir.path(), 1, &sample_entries(10), TableOptions::default());
    let bytes = std::fs::read(table_file_name(dir.path(), 1)).unwrap();
    assert_eq!(&bytes[bytes.len() - 8..], b"STRATSST");
    let f = bytes.len() - FOOTER_LEN;
    assert_eq!(read_u32(&bytes, f + 32), Some(FORMAT_VERSION));
    assert_eq!(summary.file_size, bytes.len() as u64);

    // With a prefix extractor: format 2, whose version sits at the same distance from the
    // end of the file.
    let opts = TableOptions {
        prefix_extractor: Some(FixedPrefix::shared(4)),
        ..TableOptions::default()
    };
    let summary = build(dir.path(), 2, &sample_entries(10), opts);
    let bytes = std::fs::read(table_file_name(dir.path(), 2)).unwrap();
    assert_eq!(&bytes[bytes.len() - 8..], b"STRATSST");
    let f = bytes.len() - FOOTER_V2_LEN;
    assert_eq!(read_u32(&bytes, f + 48), Some(FORMAT_VERSION_PREFIX));
    assert_eq!(summary.file_size, bytes.len() as u64);
}

#[test]
fn tables_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Table>();
    check::<TableCache>();
    check::<TableIterator>();
}

/// Opens, scans both ways and probes a table, returning the first error.
fn read_everything(path: &Path, size: u64, entries: &Entries) -> Result<()> {
    let t = Arc::new(Table::open(path, 1, size, None)?);
    let fwd = scan_forward(&t)?;
    let bwd = scan_backward(&t)?;
    assert_eq!(fwd, bwd);
    for (k, _) in entries.iter().step_by(11) {
        t.get(user_part(k), &seek_key(user_part(k), MAX_SEQ), false)?;
    }
    // Whatever reads succeed must return the real data.
    assert_eq!(&fwd, entries);
    Ok(())
}

#[test]
fn every_flipped_byte_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let entries = sample_entries(300);
    let plain = small_opts(Compression::None);
    let lz4 = small_opts(Compression::Lz4);
    let with_prefix = TableOptions {
        prefix_extractor: Some(FixedPrefix::shared(8)),
        ..small_opts(Compression::None)
    };
    for opts in [plain, lz4, with_prefix] {
        let summary = build(dir.path(), 1, &entries, opts.clone());
        let path = table_file_name(dir.path(), 1);
        let original = std::fs::read(&path).unwrap();
        let len = original.len();
        let t = open(dir.path(), 1, summary.file_size, None);
        let (filter_off, index_off) = (t.data_end, t.index_offset());
        drop(t);
        // A sample of every region: data, filters, index, footer (all of it).
        let mut positions: Vec<usize> = (0..len).step_by(37).collect();
        positions.extend(filter_off as usize..filter_off as usize + 16);
        positions.extend(index_off as usize..index_off as usize + 16);
        positions.extend(len - FOOTER_V2_LEN..len);
        for pos in positions {
            for bit in [0u8, 5] {
                let mut damaged = original.clone();
                damaged[pos] ^= 1 << bit;
                std::fs::write(&path, &damaged).unwrap();
                match read_everything(&path, summary.file_size, &entries) {
                    Err(e) => assert!(e.is_corruption(), "byte {pos}: {e}"),
                    Ok(()) => panic!("flip of byte {pos} bit {bit} went unnoticed"),
                }
            }
        }
        std::fs::write(&path, &original).unwrap();
        read_everything(&path, summary.file_size, &entries).unwrap();
    }
}

#[test]
fn truncation_and_bad_footers_are_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let entries = sample_entries(100);
    let summary = build(dir.path(), 1, &entries, small_opts(Compression::None));
    let path = table_file_name(dir.path(), 1);
    let original = std::fs::read(&path).unwrap();

    // Truncated below the recorded size.
    for keep in [0, 10, 47, 48, original.len() / 2, original.len() - 1] {
        std::fs::write(&path, &original[..keep]).unwrap();
        let err = Table::open(&path, 1, summary.file_size, None).unwrap_err();
        assert!(err.is_corruption(), "{err}");
        // Opening with the truncated length: no footer where it should be.
        let err = Table::open(&path, 1, keep as u64, None).unwrap_err();
        assert!(err.is_corruption(), "{err}");
        assert!(err.to_string().contains(&path.display().to_string()));
    }

    // An unknown format version with a valid checksum gets a clear message.
    let mut v2 = original.clone();
    let f = v2.len() - FOOTER_LEN;
    v2[f + 32..f + 36].copy_from_slice(&3u32.to_le_bytes());
    let crc = masked_crc(&[&v2[f..f + 36]]);
    v2[f + 36..f + 40].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&path, &v2).unwrap();
    let err = Table::open(&path, 1, summary.file_size, None).unwrap_err();
    assert!(
        err.to_string()
            .contains("unsupported table format version 3"),
        "{err}"
    );

    // A checksummed footer whose index handle points past the file.
    let mut bad = original.clone();
    bad[f + 16..f + 24].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let crc = masked_crc(&[&bad[f..f + 36]]);
    bad[f + 36..f + 40].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&path, &bad).unwrap();
    let err = Table::open(&path, 1, summary.file_size, None).unwrap_err();
    assert!(err.to_string().contains("outside"), "{err}");
}

fn arb_entries() -> impl Strategy<Value = Entries> {
    let value = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..40),
        (any::<u8>(), 0usize..200).prop_map(|(b, n)| vec![b; n]),
    ];
    proptest::collection::btree_map(
        (
            proptest::collection::vec(0u8..6, 0..10),
            0u64..1000,
            any::<bool>(),
        ),
        value,
        0..400,
    )
    .prop_map(|m| {
        let mut v: Entries = m
            .into_iter()
            .map(|((k, s, put), v)| {
                let kind = if put {
                    ValueKind::Put
                } else {
                    ValueKind::Delete
                };
                (internal_key(&k, s, kind), v)
            })
            .collect();
        v.sort_by(|a, b| compare_internal(&a.0, &b.0));
        v.dedup_by(|a, b| compare_internal(&a.0, &b.0) == Ordering::Equal);
        v
    })
}

fn arb_opts() -> impl Strategy<Value = TableOptions> {
    (
        16usize..2048,
        1usize..17,
        0usize..16,
        prop_oneof![Just(Compression::None), Just(Compression::Lz4)],
        proptest::option::of(0usize..5),
    )
        .prop_map(
            |(block_size, restart_interval, bloom_bits_per_key, compression, prefix)| {
                TableOptions {
                    block_size,
                    restart_interval,
                    bloom_bits_per_key,
                    compression,
                    prefix_extractor: prefix.map(FixedPrefix::shared),
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn table_matches_model(
        entries in arb_entries(),
        opts in arb_opts(),
        probes in proptest::collection::vec(
            (proptest::collection::vec(0u8..6, 0..10), 0u64..1001), 0..40),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let summary = build(dir.path(), 3, &entries, opts.clone());
        let t = open(dir.path(), 3, summary.file_size, Some(Arc::new(BlockCache::new(4096))));
        prop_assert_eq!(&scan_forward(&t).unwrap(), &entries);
        prop_assert_eq!(&scan_backward(&t).unwrap(), &entries);

        let mut it = t.iter(true);
        for (user, seq) in probes {
            let target = seek_key(&user, seq);
            let i = entries.partition_point(|(k, _)| compare_internal(k, &target) == Ordering::Less);
            it.seek(&target).unwrap();
            prop_assert_eq!(it.valid(), i < entries.len());
            if i < entries.len() {
                prop_assert_eq!(it.key(), &entries[i].0[..]);
                prop_assert_eq!(it.value(), &entries[i].1[..]);
                it.prev().unwrap();
                prop_assert_eq!(it.valid(), i > 0);
                if i > 0 {
                    prop_assert_eq!(it.key(), &entries[i - 1].0[..]);
                    it.next().unwrap();
                    prop_assert_eq!(it.key(), &entries[i].0[..]);
                }
            }
            it.seek_for_prev(&target).unwrap();
            let j = entries.partition_point(|(k, _)| compare_internal(k, &target) != Ordering::Greater);
            prop_assert_eq!(it.valid(), j > 0);
            if j > 0 {
                prop_assert_eq!(it.key(), &entries[j - 1].0[..]);
                it.next().unwrap();
                prop_assert_eq!(it.valid(), j < entries.len());
                if j < entries.len() {
                    prop_assert_eq!(it.key(), &entries[j].0[..]);
                }
            }

            let got = t.get(&user, &target, true).unwrap();
            match model_get(&entries, &user, &target) {
                Some((key, value)) => prop_assert_eq!(got, TableLookup::Found { key, value }),
                None => prop_assert!(matches!(got, TableLookup::NotFound | TableLookup::FilteredOut), "{:?}", got),
            }
        }
        // Every stored engine key passes the filter, and its prefix the prefix filter (no
        // false negatives).
        for (k, _) in &entries {
            let got = t.get(user_part(k), &seek_key(user_part(k), MAX_SEQ), false).unwrap();
            prop_assert!(matches!(got, TableLookup::Found { .. }), "{:?}", got);
            if let Some(ex) = &opts.prefix_extractor {
                if let Some(p) = engine_prefix(&**ex, user_part(k)) {
                    prop_assert!(t.may_contain_prefix(stored_name(&**ex), p));
                }
            }
        }
        prop_assert_eq!(
            t.prefix_extractor_name(),
            opts.prefix_extractor.as_ref().map(|e| stored_name(&**e))
        );
    }

    #[test]
    fn random_corruption_never_panics(
        entries in arb_entries(),
        opts in arb_opts(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        truncate in proptest::option::of(any::<usize>()),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let summary = build(dir.path(), 1, &entries, opts);
        let path = table_file_name(dir.path(), 1);
        let mut data = std::fs::read(&path).unwrap();
        for (pos, x) in flips {
            let i = pos % data.len();
            data[i] ^= x;
        }
        let mut size = summary.file_size;
        if let Some(t) = truncate {
            data.truncate(t % data.len());
            size = data.len() as u64;
        }
        std::fs::write(&path, &data).unwrap();
        // Either an error or, when the damage happened to cancel out (x == 0), the data.
        if let Ok(t) = Table::open(&path, 1, size, None) {
            let t = Arc::new(t);
            let _ = scan_forward(&t);
            let _ = scan_backward(&t);
            for (k, _) in entries.iter().step_by(5) {
                let _ = t.get(user_part(k), &seek_key(user_part(k), MAX_SEQ), true);
            }
        }
    }
}

/// The entries of `testdata/v1.sst`, a table written by the format-1 builder: 200 keys of
/// the `write` family, each with three versions that end in an 8-byte timestamp.
fn fixture_entries() -> Entries {
    let mut out = Vec::new();
    for i in 0..200u64 {
        for ts in [30u64, 20, 10] {
            let mut ek = vec![2u8];
            ek.extend_from_slice(format!("key-{i:04}").as_bytes());
            ek.extend_from_slice(&(!(ts + i)).to_be_bytes());
            let kind = if (i + ts) % 7 == 0 {
                ValueKind::Delete
            } else {
                ValueKind::Put
            };
            let value = match kind {
                ValueKind::Delete => Vec::new(),
                ValueKind::Put => format!("value-{i}-{ts}").into_bytes(),
            };
            out.push((internal_key(&ek, 1000 + i * 3 + ts / 10, kind), value));
        }
    }
    out.sort_by(|a, b| compare_internal(&a.0, &b.0));
    out
}

/// A table written by an older build keeps reading: the bytes of `testdata/v1.sst` were
/// written by the format-1 builder and are checked in.
#[test]
fn format_1_fixture_reads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lsm/table/testdata/v1.sst");
    let size = std::fs::metadata(&path).unwrap().len();
    let t = Arc::new(Table::open(&path, 1, size, None).unwrap());
    let entries = fixture_entries();
    assert_eq!(scan_forward(&t).unwrap(), entries);
    assert_eq!(scan_backward(&t).unwrap(), entries);
    for (k, _) in &entries {
        check_get(&t, &entries, user_part(k), MAX_SEQ);
        check_get(&t, &entries, user_part(k), seq_of(k));
    }
    // No prefix filter: every prefix may be there, whatever the extractor.
    assert_eq!(t.prefix_extractor_name(), None);
    assert!(t.may_contain_prefix(b"test.fixed.9", b"\x02key-0000"));
    assert!(t.may_contain_prefix(b"test.fixed.9", b"\x02absent"));
}

#[test]
fn prefix_filter_skips_absent_prefixes_of_its_own_extractor_only() {
    let dir = tempfile::tempdir().unwrap();
    let entries = fixture_entries();
    // The fixture's keys: family byte, "key-NNNN", 8 timestamp bytes.
    let extractor = FixedPrefix::shared(8);
    let opts = TableOptions {
        prefix_extractor: Some(extractor.clone()),
        ..small_opts(Compression::None)
    };
    let summary = build(dir.path(), 1, &entries, opts);
    let t = open(dir.path(), 1, summary.file_size, None);
    let name = stored_name(&*extractor);
    assert_eq!(t.prefix_extractor_name(), Some(name));
    for i in 0..200 {
        let p = format!("\x02key-{i:04}");
        assert!(
            t.may_contain_prefix(name, p.as_bytes()),
            "false negative for {p}"
        );
    }
    let skipped = (200..2200)
        .filter(|i| !t.may_contain_prefix(name, format!("\x02key-{i:04}").as_bytes()))
        .count();
    assert!(
        skipped > 1900,
        "only {skipped} of 2000 absent prefixes skipped"
    );
    // Another extractor's question is never answered by this filter.
    assert!(
        (200..2200).all(|i| t.may_contain_prefix(b"other", format!("\x02key-{i:04}").as_bytes()))
    );
    // The whole table still reads as before.
    assert_eq!(scan_forward(&t).unwrap(), entries);
}
