//! Micro-benchmarks of the LSM engine's building blocks: data blocks (build, seek), bloom
//! filters (build, query), the memtable (insert, get, scan) and the merging iterator. Sizes are modest so `cargo bench -- --test` stays quick; the
//! numbers are for comparing changes to these components, not for end-to-end claims.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use strata::lsm::block::{Block, BlockBuilder, BlockIter};
use strata::lsm::bloom::{BloomBuilder, BloomFilter};
use strata::lsm::iterator::{InternalIterator, MergingIterator, VecIterator};
use strata::lsm::key::{compare_internal, internal_key, seek_key, ValueKind};
use strata::lsm::memtable::Memtable;

/// `n` sorted internal keys shaped like MVCC keys, with 32-byte values.
fn entries(n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let user = format!("\x00table/row-{i:08}");
            (
                internal_key(user.as_bytes(), 1_000_000 - i as u64, ValueKind::Put),
                vec![b'v'; 32],
            )
        })
        .collect()
}

fn build_block(entries: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut b = BlockBuilder::new(16);
    for (k, v) in entries {
        b.add(k, v);
    }
    b.finish()
}

fn block_benches(c: &mut Criterion) {
    // About one 4 KiB data block's worth of entries.
    let data = entries(64);
    let mut group = c.benchmark_group("block");
    group.throughput(Throughput::Elements(data.len() as u64));
    group.bench_function("build_64_entries", |b| {
        b.iter(|| black_box(build_block(black_box(&data))))
    });

    let block = Arc::new(Block::new(build_block(&data), Path::new("bench.sst"), 0).unwrap());
    let targets: Vec<Vec<u8>> = (0..64)
        .map(|i| {
            seek_key(
                format!("\x00table/row-{:08}", (i * 37) % 64).as_bytes(),
                u64::MAX >> 8,
            )
        })
        .collect();
    group.bench_function("seek_64_targets", |b| {
        b.iter_batched_ref(
            || BlockIter::new(Arc::clone(&block)),
            |it| {
                for t in &targets {
                    it.seek(t).unwrap();
                    black_box(it.value());
                }
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("scan_forward", |b| {
        b.iter_batched_ref(
            || BlockIter::new(Arc::clone(&block)),
            |it| {
                it.seek_to_first().unwrap();
                while it.valid() {
                    black_box(it.key());
                    it.next().unwrap();
                }
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn bloom_benches(c: &mut Criterion) {
    let keys: Vec<Vec<u8>> = (0..10_000)
        .map(|i| format!("\x00table/row-{i:08}").into_bytes())
        .collect();
    let mut group = c.benchmark_group("bloom");
    group.throughput(Throughput::Elements(keys.len() as u64));
    group.bench_function("build_10k_keys", |b| {
        b.iter(|| {
            let mut builder = BloomBuilder::new(10);
            for k in &keys {
                builder.add_key(k);
            }
            black_box(builder.finish())
        })
    });

    let mut builder = BloomBuilder::new(10);
    for k in &keys {
        builder.add_key(k);
    }
    let filter = BloomFilter::new(builder.finish());
    let absent: Vec<Vec<u8>> = (0..10_000)
        .map(|i| format!("\x00table/miss-{i:08}").into_bytes())
        .collect();
    group.bench_function("query_10k_present", |b| {
        b.iter(|| keys.iter().filter(|k| filter.may_contain(k)).count())
    });
    group.bench_function("query_10k_absent", |b| {
        b.iter(|| absent.iter().filter(|k| filter.may_contain(k)).count())
    });
    group.finish();
}

/// 16-byte keys in a scattered order, like a random-insert workload.
fn scattered_keys(n: usize) -> Vec<Vec<u8>> {
    (0..n as u64)
        .map(|i| {
            let x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) % n as u64;
            format!("\x00{x:015}").into_bytes()
        })
        .collect()
}

fn memtable_benches(c: &mut Criterion) {
    let keys = scattered_keys(10_000);
    let value = vec![b'v'; 100];
    let mut group = c.benchmark_group("memtable");
    group.throughput(Throughput::Elements(keys.len() as u64));
    group.bench_function("insert_10k", |b| {
        b.iter(|| {
            let m = Memtable::new(0);
            for (i, k) in keys.iter().enumerate() {
                m.insert(k, i as u64 + 1, ValueKind::Put, &value);
            }
            black_box(m.len())
        })
    });
    let m = Arc::new(Memtable::new(0));
    for (i, k) in keys.iter().enumerate() {
        m.insert(k, i as u64 + 1, ValueKind::Put, &value);
    }
    group.bench_function("get_10k", |b| {
        b.iter(|| {
            keys.iter()
                .filter(|k| m.get(k, u64::MAX >> 8).is_some())
                .count()
        })
    });
    group.bench_function("scan_10k", |b| {
        b.iter(|| {
            let mut it = m.iter();
            it.seek_to_first().unwrap();
            let mut n = 0;
            while it.valid() {
                n += it.value().len();
                it.next().unwrap();
            }
            black_box(n)
        })
    });
    group.finish();
}

fn merge_benches(c: &mut Criterion) {
    // Eight overlapping sorted runs of 2,000 entries each, as from L0 files and levels.
    let runs: Vec<Vec<(Vec<u8>, Vec<u8>)>> = (0..8u64)
        .map(|r| {
            let mut run: Vec<(Vec<u8>, Vec<u8>)> = (0..2_000u64)
                .map(|i| {
                    let user = format!("\x00key{:08}", i * 8 + r);
                    (
                        internal_key(user.as_bytes(), r + 1, ValueKind::Put),
                        vec![b'v'; 16],
                    )
                })
                .collect();
            run.sort_by(|a, b| compare_internal(&a.0, &b.0));
            run
        })
        .collect();
    let mut group = c.benchmark_group("merging_iterator");
    group.throughput(Throughput::Elements(16_000));
    group.bench_function("scan_8_runs", |b| {
        b.iter_batched(
            || {
                let children: Vec<Box<dyn InternalIterator>> = runs
                    .iter()
                    .map(|r| Box::new(VecIterator::new(r.clone())) as Box<dyn InternalIterator>)
                    .collect();
                MergingIterator::new(children)
            },
            |mut it| {
                it.seek_to_first().unwrap();
                let mut n = 0;
                while it.valid() {
                    n += 1;
                    it.next().unwrap();
                }
                black_box(n)
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(
    benches,
    block_benches,
    bloom_benches,
    memtable_benches,
    merge_benches
);
criterion_main!(benches);
