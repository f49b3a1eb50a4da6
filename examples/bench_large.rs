//! Large stashes: a streaming save and verify of a payload generated on the
//! fly, against a raw write + fsync of the same JSON, with the peak resident
//! memory (VmHWM) of each phase measured in its own process.
//!
//! ```text
//! cargo run --release --example bench_large             # 64 MiB and 1 GiB
//! cargo run --release --example bench_large -- 16 256   # sizes in MiB
//! ```
//!
//! The files go to `BENCH_DIR`, or a fresh directory under `target/`.

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
    let start = Instant::now();
    let bytes = match name {
        "raw-write" => {
            let path = dir.join("raw.json");
            let mut w = BufWriter::with_capacity(64 << 10, File::create(&path).expect("create"));
            serde_json::to_writer(&mut w, &rows_for(mib)).expect("write");
            let file = w.into_inner().expect("flush");
            file.sync_all().expect("fsync");
            file.metadata().expect("stat").len()
        }
        "save" => {
            Store::open(dir.join("store"))
                .expect("open")
                .save(&key, &rows_for(mib))
                .expect("save")
                .bytes
        }
        "raw-verify" => {
            let mut f = File::open(dir.join("raw.json")).expect("open");
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
            let report = Store::open(dir.join("store")).expect("open").verify().expect("verify");
            let meta = report[0].result.as_ref().expect("intact");
            meta.size
        }
        other => panic!("unknown phase {other}"),
    };
    let secs = start.elapsed().as_secs_f64();
    println!("{bytes} {secs} {}", vm_hwm_kib());
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 5 && args[1] == "--phase" {
        return phase(&args[2], Path::new(&args[3]), args[4].parse().expect("size"));
    }
    let sizes: Vec<u64> = args[1..].iter().filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() { vec![64, 1024] } else { sizes };
    let base: PathBuf = std::env::var_os("BENCH_DIR")
        .map(Into::into)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    std::fs::create_dir_all(&base).expect("bench dir");

    println!("| payload | phase | bytes | MB/s | ÷ raw | peak RSS (VmHWM) |");
    println!("|---|---|---:|---:|---:|---:|");
    for mib in sizes {
        let dir = tempfile::tempdir_in(&base).expect("tempdir");
        let run = |name: &str| -> (u64, f64, u64) {
            let out = Command::new(std::env::current_exe().expect("exe"))
                .args(["--phase", name, &dir.path().to_string_lossy(), &mib.to_string()])
                .output()
                .expect("run phase");
            assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
            let text = String::from_utf8_lossy(&out.stdout);
            let f: Vec<&str> = text.split_whitespace().collect();
            (f[0].parse().expect("bytes"), f[1].parse().expect("secs"), f[2].parse().expect("kib"))
        };
        // Interleave: raw, library, raw, library; keep the faster of each.
        let best = |a: (u64, f64, u64), b: (u64, f64, u64)| if a.1 <= b.1 { a } else { b };
        let raw_w = best(run("raw-write"), run("raw-write"));
        let save = run("save");
        let save = best(save, run("save"));
        let raw_v = best(run("raw-verify"), run("raw-verify"));
        let verify = best(run("verify"), run("verify"));
        let label = if mib >= 1024 { format!("{} GiB", mib / 1024) } else { format!("{mib} MiB") };
        let mbps = |r: (u64, f64, u64)| r.0 as f64 / r.1 / 1e6;
        for (phase, r, raw) in [
            ("raw write + fsync", raw_w, raw_w),
            ("safestash save (streaming)", save, raw_w),
            ("raw read + sha256", raw_v, raw_v),
            ("safestash verify (streaming)", verify, raw_v),
        ] {
            println!(
                "| {label} | {phase} | {} | {:.0} | {:.2} | {} MiB |",
                r.0,
                mbps(r),
                mbps(r) / mbps(raw),
                r.2 / 1024
            );
        }
    }
}
