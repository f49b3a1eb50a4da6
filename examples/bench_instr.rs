//! A save (or load) loop for one contender and size, small enough to run
//! under `strace` or `valgrind --tool=callgrind`; `bench_report` runs it
//! under callgrind to count user-space instructions per save.
//!
//! ```text
//! cargo run --release --example bench_instr -- save safestash 1024 100 DIR
//! strace -c -f target/release/examples/bench_instr save floor 1048576 20 DIR
//! valgrind --tool=callgrind target/release/examples/bench_instr save safestash 1024 101 DIR
//! ```
//!
//! Contenders: `safestash`, `floor`, `floor+sha256`, `floor+promises`,
//! `atomic-write-file`;
//! ops: `save`, `load`, and `sha256` (the checksum alone, any contender). Sizes of 64 KiB and less are field dictionaries, larger ones
//! tables of records, as in `bench_report`.

#[path = "../benches/common/mod.rs"]
mod common;

use std::path::Path;

use common::{
    AtomicWrite, Contender, Floor, FloorPromised, FloorSha, KIB, Safestash, dictionary, table,
};
use serde::{Serialize, de::DeserializeOwned};

fn run<T: Serialize + DeserializeOwned>(op: &str, name: &str, value: T, n: usize, dir: &Path) {
    let mut c: Box<dyn Contender<T>> = match name {
        "safestash" => Box::new(Safestash::new(dir)),
        "floor" => Box::new(Floor::new(dir)),
        "floor+sha256" => Box::new(FloorSha::new(dir)),
        "floor+promises" => Box::new(FloorPromised::new(dir)),
        "atomic-write-file" => Box::new(AtomicWrite::new(dir)),
        other => panic!("unknown contender {other}"),
    };
    let mut times = Vec::with_capacity(n);
    if op == "load" {
        c.save(&value);
    }
    for _ in 0..n {
        let t = std::time::Instant::now();
        match op {
            "save" => c.save(&value),
            "load" => drop(std::hint::black_box(c.load())),
            other => panic!("unknown op {other}"),
        }
        times.push(t.elapsed());
    }
    times.sort();
    // The median, for a quick look; bench_report is the interleaved measure.
    eprintln!("{op} {name}: median {:?} of {n}", times[n / 2]);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        eprintln!("usage: bench_instr save|load CONTENDER BYTES N DIR");
        std::process::exit(2);
    }
    let size: usize = args[3].parse().expect("bytes");
    let n: usize = args[4].parse().expect("n");
    let dir = Path::new(&args[5]);
    if args[1] == "sha256" {
        // SHA-256 alone over `size` bytes, `n` times: what the checksum costs.
        let bytes = vec![b'7'; size];
        let t = std::time::Instant::now();
        for _ in 0..n {
            std::hint::black_box(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        }
        eprintln!("sha256 {size} B: {:.1} µs each", t.elapsed().as_secs_f64() * 1e6 / n as f64);
        return;
    }
    std::fs::create_dir_all(dir).expect("dir");
    if size <= 64 * KIB {
        run(&args[1], &args[2], dictionary(size), n, dir);
    } else {
        run(&args[1], &args[2], table(size), n, dir);
    }
}
