//! The ratio report: safestash against its floor and the alternatives,
//! interleaved in one process (each contender once a round, in a shuffled
//! order) so that a noisy neighbour slows every contender alike, and
//! printed as a markdown table of medians and ratios.
//!
//! ```text
//! cargo run --release --example bench_report            # the full report
//! cargo run --release --example bench_report -- --quick # a fast smoke run
//! cargo run --release --example bench_report -- --size 1KiB --no-batch --no-instr
//! BENCH_DIR=/some/disk cargo run --release --example bench_report
//! ```
//!
//! The directory is `BENCH_DIR`, or a fresh one under `target/`, so that the
//! files live on the project's disk rather than on a tmpfs. The batch rows
//! run there too, and again in `BENCH_BATCH_DIR` when it is set (another
//! filesystem: a batch's price is its flushes, which the filesystem's
//! journal, or lack of one, decides).
//!
//! Besides the per-size table it prints: batch rows (1,000 stashes of
//! 1 KiB in one [`Store::batch`] against 1,000 single saves and against
//! SQLite inserting the same rows in one transaction), user-space
//! instructions per save and load counted by `valgrind --tool=callgrind`
//! on `examples/bench_instr` (skipped with a reason when valgrind or that
//! example is missing; `--no-instr` skips them), the backend rows, and the
//! targets table.
//!
//! The backend rows (save, load, save-if-absent, clear and a batch of 100 on
//! PostgreSQL and on object storage, save and load on MySQL, against the
//! same calls written by hand, and on PostgreSQL one batch of 1,000 against
//! 1,000 single saves, with the done-when targets; see
//! `examples/backend_rows/`) run through a TCP proxy the bench
//! starts on 127.0.0.1, which delays every burst by `BENCH_RTT_MS`
//! (default 1 ms) each way and counts round trips and bytes per call. They
//! need the backend's feature and its URL:
//!
//! ```text
//! SAFESTASH_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/db \
//! SAFESTASH_MYSQL_URL=mysql://root@127.0.0.1:3306/db \
//! SAFESTASH_OBJSTORE_URL=s3://bucket/bench AWS_ENDPOINT_URL=http://127.0.0.1:5000 ... \
//!   cargo run --release --features postgres,object-store,mysql --example bench_report
//! ```
//!
//! Without them each backend's section says why it is missing; `--no-backends`
//! skips them.

#[path = "../benches/common/mod.rs"]
mod common;

#[cfg(any(feature = "postgres", feature = "object-store", feature = "mysql"))]
#[path = "backend_rows/mod.rs"]
mod backend_rows;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{
    Contender, Floor, KIB, MIB, SIZES, Safestash, contenders, dictionary, table, xorshift,
};
use safestash::{SaveOptions, StashKey, Store};
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

/// Times `op` on each contender in turn, `rounds` times, in a new random
/// order every round (a seeded shuffle, the same every run).
///
/// Not a rotation: in a rotation each contender always follows the same
/// one, and what a contender leaves behind is paid by the next. Measured
/// on this project's disk (issue 16), safestash, rotated in right after
/// `std::fs::write` (whose unsynced data the kernel starts writing back on
/// its own), measured 1.07-1.10 × the floor at 1 KiB in three runs where a
/// second safestash store in the same run, following another contender,
/// measured 0.96-1.06; in two more such runs its thread spent 49-53 µs more
/// CPU a save than "floor + promises" at 1 KiB and 82-112 µs at 64 KiB, the
/// second store's 13-20 µs.
fn interleave<T>(
    all: &mut [Box<dyn Contender<T>>],
    rounds: usize,
    mut op: impl FnMut(&mut dyn Contender<T>),
) -> Vec<Duration> {
    let n = all.len();
    let mut samples = vec![Vec::with_capacity(rounds); n];
    let mut order: Vec<usize> = (0..n).collect();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..rounds {
        // Fisher-Yates.
        for k in (1..n).rev() {
            order.swap(k, (xorshift(&mut seed) % (k as u64 + 1)) as usize);
        }
        for &i in &order {
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

/// The batch rows: `n` stashes of about 1 KiB each, saved one by one, in
/// one batch, and as `n` SQLite rows in one transaction (WAL, FULL);
/// medians of `rounds` interleaved rounds.
fn batch_rows(dir: &Path, n: usize, rounds: usize) -> [(&'static str, Duration); 3] {
    let value = dictionary(KIB);
    let keys: Vec<StashKey> =
        (0..n).map(|i| StashKey::new(format!("tenant-{i:05}")).expect("key")).collect();
    let singles = Store::open(dir.join("batch-single")).expect("open");
    let batched = Store::open(dir.join("batch")).expect("open");
    let conn = rusqlite::Connection::open(dir.join("batch.sqlite")).expect("sqlite");
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
         CREATE TABLE IF NOT EXISTS stash (key TEXT PRIMARY KEY, value BLOB NOT NULL);",
    )
    .expect("setup");
    let opts = SaveOptions::new();
    let single = || {
        for k in &keys {
            singles.save(k, &value).expect("save");
        }
    };
    let batch = || {
        let mut b = batched.batch();
        for k in &keys {
            b.add(k, &value, &opts).expect("add");
        }
        b.commit().expect("commit");
    };
    let sqlite = || {
        let tx = conn.unchecked_transaction().expect("begin");
        {
            let mut stmt = tx
                .prepare_cached("INSERT OR REPLACE INTO stash (key, value) VALUES (?1, ?2)")
                .expect("prepare");
            for k in &keys {
                let bytes = serde_json::to_vec(&value).expect("serialize");
                stmt.execute(rusqlite::params![k.as_str(), bytes]).expect("insert");
            }
        }
        tx.commit().expect("commit");
    };
    let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..=rounds {
        let t = Instant::now();
        batch();
        let tb = t.elapsed();
        let t = Instant::now();
        sqlite();
        let tc = t.elapsed();
        let t = Instant::now();
        single();
        let ta = t.elapsed();
        if round > 0 {
            // Round 0 creates the files, the table and the lock files.
            a.push(ta);
            b.push(tb);
            c.push(tc);
        }
    }
    [
        ("1,000 single saves", median(a)),
        ("one Store::batch of 1,000", median(b)),
        ("sqlite: 1,000 rows, one transaction (WAL, FULL)", median(c)),
    ]
}

/// User-space instructions of `bench_instr OP CONTENDER BYTES`, per
/// iteration, and the part of them in SHA-256's compression function:
/// callgrind runs of 1 and 1 + `n` iterations, subtracted, so that start-up
/// and the warm-up save are not counted. Under valgrind sha2 takes its
/// portable code (valgrind does not offer the SHA extensions), so the
/// SHA-256 share is larger than on the bare CPU.
fn instructions(op: &str, who: &str, bytes: usize, n: usize) -> Result<(f64, f64), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let instr = exe.with_file_name("bench_instr");
    if !instr.exists() {
        return Err("build it: cargo build --release --example bench_instr".to_owned());
    }
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let count = |iters: usize| -> Result<(f64, f64), String> {
        let out_file = work.path().join(format!("cg.{iters}"));
        let out = std::process::Command::new("valgrind")
            .arg("--tool=callgrind")
            .arg(format!("--callgrind-out-file={}", out_file.display()))
            .arg(&instr)
            .args([op, who, &bytes.to_string(), &iters.to_string()])
            .arg(work.path().join("dir"))
            .output()
            .map_err(|e| format!("valgrind: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("").into());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let total = stderr
            .lines()
            .find_map(|l| l.split("Collected :").nth(1))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .ok_or("no callgrind total")?;
        let annotate = std::process::Command::new("callgrind_annotate")
            .arg("--inclusive=yes")
            .arg(&out_file)
            .output()
            .map_err(|e| format!("callgrind_annotate: {e}"))?;
        let sha = String::from_utf8_lossy(&annotate.stdout)
            .lines()
            .filter(|l| l.contains("sha2::sha256::compress256"))
            .filter_map(|l| l.split_whitespace().next()?.replace(',', "").parse::<f64>().ok())
            .fold(0.0, f64::max);
        Ok((total, sha))
    };
    let (t1, s1) = count(1)?;
    let (tn, sn) = count(1 + n)?;
    Ok(((tn - t1) / n as f64, (sn - s1) / n as f64))
}

fn fmt_count(n: f64) -> String {
    if n >= 1e6 { format!("{:.2} M", n / 1e6) } else { format!("{:.1} k", n / 1e3) }
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
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    // `--size 1KiB` (repeatable): only those sizes.
    let only: Vec<String> =
        args.windows(2).filter(|w| w[0] == "--size").map(|w| w[1].replace(' ', "")).collect();
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
        "- method: medians of interleaved rounds (each contender once per round, order shuffled)\n"
    );

    let mut rows = Vec::new();
    for (size, label) in SIZES {
        if !only.is_empty() && !only.contains(&label.replace(' ', "")) {
            continue;
        }
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

    let batch = if args.iter().any(|a| a == "--no-batch") {
        None
    } else {
        let batch_rounds = if quick { 1 } else { 5 };
        let mut places = vec![dir.path().to_owned()];
        let extra = std::env::var_os("BENCH_BATCH_DIR").map(|d| {
            std::fs::create_dir_all(&d).expect("batch dir");
            tempfile::tempdir_in(d).expect("tempdir")
        });
        places.extend(extra.as_ref().map(|d| d.path().to_owned()));
        let mut all = Vec::new();
        for place in &places {
            eprintln!("running batches of 1,000 x {batch_rounds} rounds in {}…", place.display());
            let batch = batch_rows(place, 1000, batch_rounds);
            println!("\n## Batches: 1,000 stashes of 1 KiB, {}\n", filesystem(place));
            println!("| contender | median | per stash | single saves ÷ it |");
            println!("|---|---:|---:|---:|");
            for (name, d) in &batch {
                println!(
                    "| {name} | {} | {} | {:.1} |",
                    fmt(*d),
                    fmt(*d / 1000),
                    batch[0].1.as_secs_f64() / d.as_secs_f64()
                );
            }
            all.push((filesystem(place), batch));
        }
        Some(all)
    };

    if !args.iter().any(|a| a == "--no-instr") {
        println!("\n## Instructions per operation (user space, callgrind)\n");
        println!(
            "Counted by `valgrind --tool=callgrind` on `examples/bench_instr`: the kernel is \
             not counted, and sha2 runs its portable code there, so the SHA-256 column is \
             larger than on a CPU with the SHA extensions.\n"
        );
        println!(
            "| size | op | contender | instructions | of which SHA-256 | other | other ÷ floor's |"
        );
        println!("|---|---|---|---:|---:|---:|---:|");
        let sizes: &[(usize, &str)] = if quick { &SIZES[..1] } else { &SIZES[..3] };
        'outer: for &(size, label) in sizes {
            let n = if size <= 64 * KIB { 20 } else { 3 };
            for op in ["save", "load"] {
                let mut floor_other = None;
                for who in ["floor", "floor+sha256", "safestash", "atomic-write-file"] {
                    if op == "load" && who == "floor+sha256" {
                        continue; // the floor's load already hashes
                    }
                    eprintln!("counting {op} {label} {who}…");
                    match instructions(op, who, size, n) {
                        Ok((total, sha)) => {
                            let other = total - sha;
                            let base = *floor_other.get_or_insert(other);
                            println!(
                                "| {label} | {op} | {who} | {} | {} | {} | {:.2} |",
                                fmt_count(total),
                                fmt_count(sha),
                                fmt_count(other),
                                other / base
                            );
                        }
                        Err(why) => {
                            println!("\n(skipped: {why})");
                            break 'outer;
                        }
                    }
                }
            }
        }
    }

    if !args.iter().any(|a| a == "--no-backends") {
        backends(if quick { 3 } else { 9 });
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
        let limit = if label == "1 KiB" { 1.05 } else { 1.10 };
        let checks = [
            (
                format!("save {label} ≤ {limit:.2} × floor"),
                ratio(label, "save", "safestash"),
                limit,
            ),
            (format!("load {label} ≤ 1.10 × floor"), ratio(label, "load", "safestash"), 1.10),
            (
                format!("save {label} ≤ atomic-write-file"),
                lib_over(label, "save", "atomic-write-file"),
                1.0,
            ),
        ];
        for (what, measured, limit) in checks {
            if let Some(m) = measured {
                // Three decimals: 1.104 would print as a failing "1.10" with two.
                println!("| {what} | {m:.3} | {} |", if m <= limit { "yes" } else { "**no**" });
            }
        }
        for bound in ["floor + sha256", "floor + promises"] {
            if let Some(m) = lib_over(label, "save", bound) {
                println!("| (save {label} ÷ {bound}, no target) | {m:.2} | – |");
            }
        }
    }
    for (place, batch) in batch.iter().flatten() {
        let speedup = batch[0].1.as_secs_f64() / batch[1].1.as_secs_f64();
        println!(
            "| 1,000 × 1 KiB: one batch ≥ 10 × faster than single saves ({place}) | {speedup:.1} | {} |",
            if speedup >= 10.0 { "yes" } else { "**no**" }
        );
        let vs_sqlite = batch[1].1.as_secs_f64() / batch[2].1.as_secs_f64();
        println!("| (one batch ÷ sqlite transaction, {place}, no target) | {vs_sqlite:.2} | – |");
    }
}

/// The backend sections: PostgreSQL and object storage rows, or why each
/// is missing.
#[cfg_attr(
    not(any(feature = "postgres", feature = "object-store", feature = "mysql")),
    allow(unused_variables)
)]
fn backends(rounds: usize) {
    #[cfg(any(feature = "postgres", feature = "object-store", feature = "mysql"))]
    println!(
        "\nBoth sides of every backend row go through the bench's TCP proxy, which delays \
         each burst by {:.2?} each way (`BENCH_RTT_MS`) and counts request/response \
         exchanges (round trips) and bytes per call.",
        backend_rows::proxy::delay_from_env()
    );
    println!("\n## PostgreSQL: save and load against the same statements by hand\n");
    #[cfg(feature = "postgres")]
    match std::env::var("SAFESTASH_POSTGRES_URL")
        .or_else(|_| std::env::var("SAFESTASH_TEST_POSTGRES_URL"))
    {
        Ok(url) => {
            eprintln!("running the PostgreSQL rows x {rounds} rounds…");
            match backend_rows::postgres::rows(&url, rounds) {
                Ok((rows, proxied)) => {
                    print!("{}", backend_rows::table(&rows, proxied));
                    println!("\n| PostgreSQL target | measured | met |\n|---|---:|---|");
                    print!("{}", backend_rows::postgres::targets(&rows));
                }
                Err(e) => println!("(failed: {e})"),
            }
        }
        Err(_) => println!("(skipped: SAFESTASH_POSTGRES_URL is not set)"),
    }
    #[cfg(not(feature = "postgres"))]
    println!("(skipped: built without the feature `postgres`)");

    println!("\n## MySQL/MariaDB: save and load against the durable statement by hand\n");
    #[cfg(feature = "mysql")]
    match std::env::var("SAFESTASH_MYSQL_URL")
        .or_else(|_| std::env::var("SAFESTASH_TEST_MYSQL_URL"))
    {
        Ok(url) => {
            eprintln!("running the MySQL rows x {rounds} rounds…");
            match backend_rows::mysql::rows(&url, rounds) {
                Ok((rows, proxied)) => print!("{}", backend_rows::table(&rows, proxied)),
                Err(e) => println!("(failed: {e})"),
            }
        }
        Err(_) => println!("(skipped: SAFESTASH_MYSQL_URL is not set)"),
    }
    #[cfg(not(feature = "mysql"))]
    println!("(skipped: built without the feature `mysql`)");

    println!("\n## Object storage: save and load against the same object_store calls by hand\n");
    #[cfg(feature = "object-store")]
    match std::env::var("SAFESTASH_OBJSTORE_URL").or_else(|_| {
        std::env::var("SAFESTASH_TEST_S3_URL")
            .map(|b| format!("{}/bench-{}", b.trim_end_matches('/'), std::process::id()))
    }) {
        Ok(url) => {
            eprintln!("running the object store rows x {rounds} rounds…");
            match backend_rows::objstore::rows(&url, rounds) {
                Ok((rows, proxied)) => {
                    println!("`{}`:\n", url.split('?').next().unwrap_or(&url));
                    print!("{}", backend_rows::table(&rows, proxied));
                }
                Err(e) => println!("(failed: {e})"),
            }
        }
        Err(_) => println!("(skipped: SAFESTASH_OBJSTORE_URL is not set)"),
    }
    #[cfg(not(feature = "object-store"))]
    println!("(skipped: built without the feature `object-store`)");
}
