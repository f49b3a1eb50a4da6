//! Large stashes: a streaming save and verify of a payload generated on the
//! fly, against a raw write + fsync of the same JSON (and a raw read +
//! SHA-256), on the project's disk and on a tmpfs, with the peak resident
//! memory (VmHWM) of each phase measured in its own process.
//!
//! ```text
//! cargo run --release --example bench_large             # 64 MiB and 1 GiB
//! cargo run --release --example bench_large -- 16 256   # sizes in MiB
//! BENCH_ROUNDS=9 cargo run --release --example bench_large -- 64
//! ```
//!
//! Each phase runs in a fresh process, and the phases are interleaved
//! (raw, safestash, raw, safestash, …) for `BENCH_ROUNDS` rounds (default
//! 7, or 3 from 1 GiB up); the table shows the median throughput with the
//! minimum and maximum, and the ratio of the medians. Before each timed
//! phase the file it writes is removed, so that neither side pays for
//! freeing the previous round's blocks.
//!
//! Two places are measured:
//! - **disk**: `BENCH_DIR`, or a fresh directory under `target/`, on the
//!   project's disk;
//! - **tmpfs**: `BENCH_TMPFS=/path` if set (`BENCH_TMPFS=off` skips it),
//!   otherwise a tmpfs this example mounts itself under `target/` (it
//!   needs root) and unmounts at the end. On a tmpfs the disk is out of
//!   the picture: only serializing, hashing and hand-offs show. Sizes above
//!   1 GiB are skipped there.

#[path = "../benches/common/mod.rs"]
mod common;

use std::fs::File;
use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use safestash::{StashKey, Store};
use serde::ser::{Serialize, SerializeSeq, Serializer};
use sha2::{Digest, Sha256};

/// `n` records, generated while they are serialized: never all in memory.
struct Rows(u64);

impl Serialize for Rows {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0 as usize))?;
        for i in 0..self.0 {
            seq.serialize_element(&common::record(i))?;
        }
        seq.end()
    }
}

fn rows_for(mib: u64) -> Rows {
    let per = serde_json::to_vec(&common::record(1)).map(|v| v.len() as u64 + 1).unwrap_or(100);
    Rows(mib * common::MIB as u64 / per)
}

/// Peak resident memory of this process, in KiB.
fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// One phase, run in this (child) process; prints `bytes secs vmhwm_kib`.
fn phase(name: &str, dir: &Path, mib: u64) {
    let key = StashKey::new("large").expect("key");
    let raw = dir.join("raw.json");
    let store = dir.join("store");
    // Start from nothing: freeing the last round's file is not timed.
    match name {
        "raw-write" => drop(std::fs::remove_file(&raw)),
        "save" => drop(Store::open(&store).expect("open").clear(&key)),
        _ => {}
    }
    let start = Instant::now();
    let bytes = match name {
        "raw-write" => {
            let mut w = BufWriter::with_capacity(64 << 10, File::create(&raw).expect("create"));
            serde_json::to_writer(&mut w, &rows_for(mib)).expect("write");
            let file = w.into_inner().expect("flush");
            file.sync_all().expect("fsync");
            file.metadata().expect("stat").len()
        }
        "save" => {
            Store::open(&store).expect("open").save(&key, &rows_for(mib)).expect("save").bytes
        }
        "raw-verify" => {
            let mut f = File::open(&raw).expect("open");
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut n = 0u64;
            loop {
                let got = f.read(&mut buf).expect("read");
                if got == 0 {
                    break;
                }
                hasher.update(&buf[..got]);
                n += got as u64;
            }
            std::hint::black_box(hasher.finalize());
            n
        }
        "verify" => {
            let report = Store::open(&store).expect("open").verify().expect("verify");
            let meta = report[0].result.as_ref().expect("intact");
            meta.size
        }
        other => panic!("unknown phase {other}"),
    };
    let secs = start.elapsed().as_secs_f64();
    println!("{bytes} {secs} {}", vm_hwm_kib());
}

/// One sample of a phase: bytes, seconds, peak RSS in KiB.
#[derive(Clone, Copy)]
struct Sample {
    bytes: u64,
    secs: f64,
    kib: u64,
}

fn run_phase(dir: &Path, name: &str, mib: u64) -> Sample {
    let out = Command::new(std::env::current_exe().expect("exe"))
        .args(["--phase", name, &dir.to_string_lossy(), &mib.to_string()])
        .output()
        .expect("run phase");
    assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<&str> = text.split_whitespace().collect();
    Sample {
        bytes: f[0].parse().expect("bytes"),
        secs: f[1].parse().expect("secs"),
        kib: f[2].parse().expect("kib"),
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs every phase `rounds` times, interleaved, and prints the rows.
fn measure(place: &str, base: &Path, mib: u64, rounds: usize) {
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    let names = ["raw-write", "save", "raw-verify", "verify"];
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); names.len()];
    for round in 0..rounds {
        // raw, safestash, raw, safestash…; which goes first alternates.
        for pair in [[0, 1], [2, 3]] {
            let order = if round % 2 == 0 { pair } else { [pair[1], pair[0]] };
            for i in order {
                samples[i].push(run_phase(dir.path(), names[i], mib));
            }
        }
    }
    let label = if mib >= 1024 { format!("{} GiB", mib / 1024) } else { format!("{mib} MiB") };
    let mbps = |s: &Sample| s.bytes as f64 / s.secs / 1e6;
    let stats = |i: usize| {
        let mut v: Vec<f64> = samples[i].iter().map(mbps).collect();
        let med = median(&mut v);
        let rss = samples[i].iter().map(|s| s.kib).max().unwrap_or(0);
        (med, v[0], v[v.len() - 1], rss, samples[i][0].bytes)
    };
    for (i, phase, raw) in [
        (0, "raw write + fsync", 0),
        (1, "safestash save (streaming)", 0),
        (2, "raw read + sha256", 2),
        (3, "safestash verify (streaming)", 2),
    ] {
        let (med, min, max, rss, bytes) = stats(i);
        let (raw_med, ..) = stats(raw);
        println!(
            "| {place} | {label} | {phase} | {bytes} | {med:.0} ({min:.0}–{max:.0}) | {:.2} | {} MiB |",
            med / raw_med,
            rss / 1024
        );
    }
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

/// A tmpfs this example mounted, unmounted on drop.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(&self.0).status().is_ok_and(|s| s.success());
        if ok {
            let _ = std::fs::remove_dir(&self.0);
        } else {
            eprintln!("could not unmount {}", self.0.display());
        }
    }
}

/// The tmpfs to measure on: `BENCH_TMPFS`, or one mounted here.
fn tmpfs(bytes: u64) -> Result<(PathBuf, Option<Mounted>), String> {
    match std::env::var_os("BENCH_TMPFS") {
        Some(v) if v == "off" => Err("BENCH_TMPFS=off".to_owned()),
        Some(v) => Ok((PathBuf::from(v), None)),
        None => {
            let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
            let dir = target.join(format!("bench-tmpfs-{}", std::process::id()));
            std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir: {e}"))?;
            let out = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={bytes},mode=0700"), "tmpfs"])
                .arg(&dir)
                .output();
            match out {
                Ok(o) if o.status.success() => {
                    let mounted = Mounted(dir.clone());
                    Ok((dir, Some(mounted)))
                }
                Ok(o) => {
                    let _ = std::fs::remove_dir(&dir);
                    Err(format!("mount failed: {}", String::from_utf8_lossy(&o.stderr).trim()))
                }
                Err(e) => {
                    let _ = std::fs::remove_dir(&dir);
                    Err(format!("mount failed: {e}"))
                }
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 5 && args[1] == "--phase" {
        return phase(&args[2], Path::new(&args[3]), args[4].parse().expect("size"));
    }
    let sizes: Vec<u64> = args[1..].iter().filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() { vec![64, 1024] } else { sizes };
    let rounds_for = |mib: u64| {
        std::env::var("BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(if mib >= 1024 {
            3
        } else {
            7
        })
    };
    let base: PathBuf = std::env::var_os("BENCH_DIR")
        .map(Into::into)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    std::fs::create_dir_all(&base).expect("bench dir");

    let tmpfs_sizes: Vec<u64> = sizes.iter().copied().filter(|&m| m <= 1024).collect();
    let tmpfs_bytes = tmpfs_sizes.iter().max().map_or(0, |m| (3 * m + 64) << 20);
    let tmpfs = if tmpfs_sizes.is_empty() {
        Err("no size ≤ 1 GiB".to_owned())
    } else {
        tmpfs(tmpfs_bytes)
    };

    println!("- disk: {} ({})", base.display(), filesystem(&base));
    match &tmpfs {
        Ok((dir, mounted)) => println!(
            "- tmpfs: {} ({}{})",
            dir.display(),
            filesystem(dir),
            if mounted.is_some() { ", mounted by this run" } else { ", from BENCH_TMPFS" }
        ),
        Err(why) => println!("- tmpfs: skipped ({why})"),
    }
    println!(
        "- method: each phase in its own process, interleaved (raw, safestash, raw, …); \
         MB/s as median (min–max); ÷ raw is the ratio of the medians\n"
    );
    println!(
        "| place | payload | phase | bytes | MB/s median (min–max) | ÷ raw | peak RSS (VmHWM) |"
    );
    println!("|---|---|---|---:|---:|---:|---:|");
    for &mib in &sizes {
        measure("disk", &base, mib, rounds_for(mib));
    }
    if let Ok((dir, _mounted)) = &tmpfs {
        for &mib in &tmpfs_sizes {
            measure("tmpfs", dir, mib, rounds_for(mib));
        }
    }
    // `_mounted` drops here: the tmpfs is unmounted.
}
