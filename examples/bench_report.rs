//! The ratio report: safestash against its floor and the alternatives,
//! interleaved in one process (A B C … A B C …) so that a noisy neighbour
//! slows every contender alike, and printed as a markdown table of medians
//! and ratios.
//!
//! ```text
//! cargo run --release --example bench_report            # the full report
//! cargo run --release --example bench_report -- --quick # a fast smoke run
//! BENCH_DIR=/some/disk cargo run --release --example bench_report
//! ```
//!
//! The directory is `BENCH_DIR`, or a fresh one under `target/`, so that the
//! files live on the project's disk rather than on a tmpfs.

#[path = "../benches/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Contender, Floor, KIB, MIB, SIZES, Safestash, contenders, dictionary, table};
use serde::{Serialize, de::DeserializeOwned};

struct Row {
    size: &'static str,
    op: &'static str,
    name: &'static str,
    median: Duration,
    floor: Duration,
    lib: Duration,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn fmt(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 1e6 {
        format!("{:.2} s", us / 1e6)
    } else if us >= 1e3 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{us:.1} µs")
    }
}

/// Times `op` on each contender in turn, `rounds` times, rotating the order
/// every round.
fn interleave<T>(
    all: &mut [Box<dyn Contender<T>>],
    rounds: usize,
    mut op: impl FnMut(&mut dyn Contender<T>),
) -> Vec<Duration> {
    let n = all.len();
    let mut samples = vec![Vec::with_capacity(rounds); n];
    for round in 0..rounds {
        for j in 0..n {
            let i = (round + j) % n;
            let start = Instant::now();
            op(&mut *all[i]);
            samples[i].push(start.elapsed());
        }
    }
    samples.into_iter().map(median).collect()
}

fn run<T: Serialize + DeserializeOwned>(
    dir: &Path,
    label: &'static str,
    value: T,
    rounds: usize,
    rows: &mut Vec<Row>,
) {
    let mut all = contenders::<T>(dir);
    let names: Vec<&'static str> = all.iter().map(|c| c.name()).collect();
    for c in all.iter_mut() {
        c.save(&value); // warm up: create files, directories, the database
    }
    let save = interleave(&mut all, rounds, |c| c.save(&value));
    let load = interleave(&mut all, rounds, |c| drop(std::hint::black_box(c.load())));
    for (op, medians) in [("save", save), ("load", load)] {
        for (i, name) in names.iter().enumerate() {
            rows.push(Row {
                size: label,
                op,
                name,
                median: medians[i],
                floor: medians[1],
                lib: medians[0],
            });
        }
    }
    // Clear, against the floor's unlink + directory fsync.
    let mut lib = Safestash::new(dir);
    let mut floor = Floor::new(dir);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        Contender::<T>::save(&mut lib, &value);
        Contender::<T>::save(&mut floor, &value);
        let start = Instant::now();
        lib.clear();
        a.push(start.elapsed());
        let start = Instant::now();
        floor.clear();
        b.push(start.elapsed());
    }
    let (lib_clear, floor_clear) = (median(a), median(b));
    rows.push(Row {
        size: label,
        op: "clear",
        name: names[0],
        median: lib_clear,
        floor: floor_clear,
        lib: lib_clear,
    });
    rows.push(Row {
        size: label,
        op: "clear",
        name: names[1],
        median: floor_clear,
        floor: floor_clear,
        lib: lib_clear,
    });
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_owned()).unwrap_or_else(|_| "?".to_owned())
}

/// The filesystem type of the mount holding `dir`, from /proc/mounts.
fn filesystem(dir: &Path) -> String {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && dir.starts_with(f[1]))
                .then(|| (f[1].len(), format!("{} on {} ({})", f[2], f[1], f[0])))
        })
        .max()
        .map(|(_, s)| s)
        .unwrap_or_else(|| "?".to_owned())
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let base: PathBuf = std::env::var_os("BENCH_DIR")
        .map(Into::into)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    std::fs::create_dir_all(&base).expect("bench dir");
    let dir = tempfile::tempdir_in(&base).expect("tempdir");
    let cpu = read_trim("/proc/cpuinfo");
    let cpu = cpu
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?");
    println!("# safestash benchmark report\n");
    println!("- kernel: Linux {}", read_trim("/proc/sys/kernel/osrelease"));
    println!("- filesystem: {}", filesystem(dir.path()));
    println!(
        "- cpu: {} ({} cores)",
        cpu.trim(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "- method: medians of interleaved rounds (each contender once per round, order rotated)\n"
    );

    let mut rows = Vec::new();
    for (size, label) in SIZES {
        let rounds = match (size, quick) {
            (_, true) if size > MIB => continue,
            (_, true) => 5,
            (s, _) if s <= KIB => 300,
            (s, _) if s <= 64 * KIB => 150,
            (s, _) if s <= MIB => 40,
            _ => 7,
        };
        eprintln!("running {label} x {rounds} rounds…");
        if size <= 64 * KIB {
            run(dir.path(), label, dictionary(size), rounds, &mut rows);
        } else {
            run(dir.path(), label, table(size), rounds, &mut rows);
        }
    }

    println!("| size | op | contender | median | ÷ floor | safestash ÷ it |");
    println!("|---|---|---|---:|---:|---:|");
    for r in &rows {
        let vs_floor = r.median.as_secs_f64() / r.floor.as_secs_f64();
        let lib_vs = r.lib.as_secs_f64() / r.median.as_secs_f64();
        println!(
            "| {} | {} | {} | {} | {vs_floor:.2} | {lib_vs:.2} |",
            r.size,
            r.op,
            r.name,
            fmt(r.median)
        );
    }

    println!("\n## Targets\n");
    println!("| target | measured | met |");
    println!("|---|---:|---|");
    let ratio = |size: &str, op: &str, name: &str| {
        rows.iter()
            .find(|r| r.size == size && r.op == op && r.name == name)
            .map(|r| r.median.as_secs_f64() / r.floor.as_secs_f64())
    };
    let lib_over = |size: &str, op: &str, other: &str| {
        let lib = rows.iter().find(|r| r.size == size && r.op == op && r.name == "safestash")?;
        let o = rows.iter().find(|r| r.size == size && r.op == op && r.name == other)?;
        Some(lib.median.as_secs_f64() / o.median.as_secs_f64())
    };
    for (_, label) in SIZES {
        let limit = if label.ends_with("KiB") { 1.10 } else { 1.20 };
        let checks = [
            (
                format!("save {label} ≤ {limit:.2} × floor"),
                ratio(label, "save", "safestash"),
                limit,
            ),
            (format!("load {label} ≤ 1.20 × floor"), ratio(label, "load", "safestash"), 1.20),
            (
                format!("save {label} ≤ atomic-write-file"),
                lib_over(label, "save", "atomic-write-file"),
                1.0,
            ),
        ];
        for (what, measured, limit) in checks {
            if let Some(m) = measured {
                println!("| {what} | {m:.2} | {} |", if m <= limit { "yes" } else { "**no**" });
            }
        }
    }
}
