//! safestash next to its floor and its alternatives, per payload size.
//!
//! `cargo bench --bench compare` runs every group; `cargo bench --bench
//! compare -- 'save/1 KiB'` one of them. For the ratio table, interleaved
//! in one process, see `cargo run --release --example bench_report`.

#![allow(missing_docs)] // criterion's macros generate undocumented items

mod common;

use std::time::{Duration, Instant};

use common::{Contender, Floor, KIB, MIB, SIZES, Safestash, contenders, dictionary, table};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde::{Serialize, de::DeserializeOwned};

fn group<T: Serialize + DeserializeOwned>(c: &mut Criterion, size: usize, label: &str, value: T) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut all = contenders::<T>(dir.path());
    let bytes = serde_json::to_vec(&value).expect("serialize").len() as u64;
    let configure = |g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>| {
        g.throughput(Throughput::Bytes(bytes));
        if size >= MIB {
            g.sample_size(10).measurement_time(Duration::from_secs(if size >= 64 * MIB {
                30
            } else {
                10
            }));
        }
    };

    let mut save = c.benchmark_group(format!("save/{label}"));
    configure(&mut save);
    for contender in &mut all {
        save.bench_function(BenchmarkId::from_parameter(contender.name()), |b| {
            b.iter(|| contender.save(&value))
        });
    }
    save.finish();

    let mut load = c.benchmark_group(format!("load/{label}"));
    configure(&mut load);
    for contender in &mut all {
        contender.save(&value);
        load.bench_function(BenchmarkId::from_parameter(contender.name()), |b| {
            b.iter(|| contender.load())
        });
    }
    load.finish();

    let mut clear = c.benchmark_group(format!("clear/{label}"));
    configure(&mut clear);
    let mut lib = Safestash::new(dir.path());
    clear.bench_function("safestash", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                Contender::<T>::save(&mut lib, &value);
                let start = Instant::now();
                lib.clear();
                spent += start.elapsed();
            }
            spent
        })
    });
    let mut floor = Floor::new(dir.path());
    clear.bench_function("floor (by hand)", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                Contender::<T>::save(&mut floor, &value);
                let start = Instant::now();
                floor.clear();
                spent += start.elapsed();
            }
            spent
        })
    });
    clear.finish();
}

fn compare(c: &mut Criterion) {
    for (size, label) in SIZES {
        if size <= 64 * KIB {
            group(c, size, label, dictionary(size));
        } else {
            group(c, size, label, table(size));
        }
    }
}

criterion_group!(benches, compare);
criterion_main!(benches);
