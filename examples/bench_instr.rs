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
//! ops: `save`, `load`, `sha256` (the checksum alone, any contender), and
//! `parts` (any contender): what a save does beyond the floor's, each part
//! timed alone in interleaved rounds, medians in µs — serializing into a
//! `Vec` (the floor's CPU work), serializing through an `EnvelopeWriter`
//! into `io::sink()` (header, hashing and trailer included), SHA-256 of that
//! envelope alone, and the key's lock (`Store::lock` and its release) in
//! DIR. Sizes of 64 KiB and less are field dictionaries, larger ones
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

/// Times each part of a save alone, `n` interleaved rounds; prints medians.
fn parts<T: Serialize>(value: &T, n: usize, dir: &Path) {
    use safestash::envelope::{EnvelopeWriter, Header};
    use std::time::{Instant, SystemTime};
    let key = safestash::StashKey::new("bench").expect("key");
    let store = safestash::Store::open(dir.join("parts")).expect("open");
    let header = Header::new(key.clone(), "value", None, SystemTime::now()).expect("header");
    // The envelope a save writes, serialized into nowhere; its length.
    let through_envelope = || {
        let mut w = EnvelopeWriter::new(std::io::sink(), &header).expect("writer");
        serde_json::to_writer(&mut w, value).expect("serialize");
        w.finish().expect("finish").len
    };
    let envelope_len = through_envelope() as usize;
    let bytes = vec![b'7'; envelope_len];
    let names = [
        "serialize to a Vec",
        "serialize into an envelope (to io::sink)",
        "sha256 of the envelope",
        "lock and unlock",
    ];
    let mut times: Vec<Vec<f64>> = vec![Vec::with_capacity(n); names.len()];
    for _ in 0..n {
        for (i, t) in times.iter_mut().enumerate() {
            let start = Instant::now();
            match i {
                0 => drop(std::hint::black_box(serde_json::to_vec(value).expect("serialize"))),
                1 => drop(std::hint::black_box(through_envelope())),
                2 => drop(std::hint::black_box(<sha2::Sha256 as sha2::Digest>::digest(&bytes))),
                _ => drop(std::hint::black_box(store.lock(&key).expect("lock"))),
            }
            t.push(start.elapsed().as_secs_f64() * 1e6);
        }
    }
    for (name, t) in names.iter().zip(&mut times) {
        t.sort_by(f64::total_cmp);
        println!("{name}: {:.1} µs (median of {n})", t[n / 2]);
    }
    println!("envelope: {envelope_len} bytes");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        eprintln!("usage: bench_instr save|load|sha256|parts CONTENDER BYTES N DIR");
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
    match (args[1].as_str(), size <= 64 * KIB) {
        ("parts", true) => parts(&dictionary(size), n, dir),
        ("parts", false) => parts(&table(size), n, dir),
        (op, true) => run(op, &args[2], dictionary(size), n, dir),
        (op, false) => run(op, &args[2], table(size), n, dir),
    }
}
