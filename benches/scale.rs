//! `list` and `cleanup` over 100, 10,000 and 100,000 stashes: the time per
//! entry should stay flat.

#![allow(missing_docs)] // criterion's macros generate undocumented items

mod common;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn scale(c: &mut Criterion) {
    let mut group = c.benchmark_group("scale");
    group.sample_size(10);
    for n in [100usize, 10_000, 100_000] {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = common::populated_store(dir.path(), n, 0);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("list", n), &n, |b, _| {
            b.iter(|| assert_eq!(store.list().expect("list").len(), n))
        });
        group.bench_with_input(BenchmarkId::new("cleanup (nothing stale)", n), &n, |b, _| {
            b.iter(|| assert!(store.cleanup().expect("cleanup").is_empty()))
        });
    }
    group.finish();
}

criterion_group!(benches, scale);
criterion_main!(benches);
