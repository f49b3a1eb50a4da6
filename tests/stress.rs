//! Many processes doing a random mix of save, load and clear on a few shared
//! keys at once.
//!
//! `mixed_operations_from_many_processes_stay_whole` re-executes this test
//! binary once per worker, running only `stress_child_worker` with the store
//! directory, worker id and seed in the environment. Each worker draws its
//! operations from a seeded PRNG: which key (one hot key most of the time,
//! three others otherwise), which operation (save, load or clear, weighted),
//! and the size of the record it saves. Every load must be nothing or a whole
//! record some worker wrote for that key, with a header from the same save;
//! a worker must never load one of its own superseded records. At the end no
//! temp file is left and `verify` passes every stash.
//!
//! Without the environment `stress_child_worker` returns at once.
//! `SAFESTASH_TEST_STRESS_SEED` replays a run.

mod common;
mod harness;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use safestash::{SaveOptions, StashKey, Store};
use serde::{Deserialize, Serialize};

use common::{names, temp_files};
use harness::{Rng, body, self_command, sha256_hex};

const DIR_VAR: &str = "SAFESTASH_TEST_STRESS_DIR";
const WORKER_VAR: &str = "SAFESTASH_TEST_STRESS_WORKER";
const CHILD_SEED_VAR: &str = "SAFESTASH_TEST_STRESS_CHILD_SEED";
const SEED_VAR: &str = "SAFESTASH_TEST_STRESS_SEED";
const WORKERS: u32 = 8;
const OPS: u32 = 200;
/// The hot key, then the three others.
const KEYS: [&str; 4] = ["hot", "side.a", "side.b", "side-c"];
/// Out of 100: the hot key gets what the others leave.
const SIDE_KEY_WEIGHT: u64 = 15;
/// Out of 100: save, load, and clear for the rest.
const SAVE_WEIGHT: u64 = 40;
const LOAD_WEIGHT: u64 = 50;
const MAX_BODY: u64 = 24 * 1024;

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    key: String,
    worker: u32,
    op: u32,
    body: String,
    /// SHA-256 of `body`, computed by the writer.
    sha256: String,
}

fn body_seed(key: &str, worker: u32, op: u32) -> u64 {
    let k = key.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    k ^ (u64::from(worker) << 40) ^ u64::from(op)
}

fn body_of(key: &str, worker: u32, op: u32) -> String {
    let seed = body_seed(key, worker, op);
    body(seed, 1 + Rng::new(seed).below(MAX_BODY) as usize)
}

fn record(key: &str, worker: u32, op: u32) -> Record {
    let body = body_of(key, worker, op);
    Record { key: key.to_owned(), worker, op, sha256: sha256_hex(body.as_bytes()), body }
}

fn origin(worker: u32, op: u32) -> String {
    format!("worker-{worker}/op-{op}")
}

/// Whether `r` is, whole, a record some worker wrote for `key`.
fn validate(key: &str, r: &Record) -> Result<(), String> {
    if r.key != key {
        return Err(format!("record for key {:?} loaded from key {key:?}", r.key));
    }
    if r.worker >= WORKERS || r.op >= OPS {
        return Err(format!("unknown writer {}/{}", r.worker, r.op));
    }
    if sha256_hex(r.body.as_bytes()) != r.sha256 {
        return Err(format!("{}/{}: body does not match its SHA-256", r.worker, r.op));
    }
    if r.body != body_of(key, r.worker, r.op) {
        return Err(format!("{}/{}: body is another record's", r.worker, r.op));
    }
    Ok(())
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    saves: u32,
    loads_some: u32,
    loads_none: u32,
    clears: u32,
    /// Loads that returned another worker's record.
    foreign: u32,
}

/// The child: `OPS` random operations, then its counts in `done-<worker>`.
#[test]
fn stress_child_worker() {
    let (Ok(dir), Ok(worker), Ok(seed)) =
        (std::env::var(DIR_VAR), std::env::var(WORKER_VAR), std::env::var(CHILD_SEED_VAR))
    else {
        return;
    };
    let worker: u32 = worker.parse().unwrap();
    let mut rng = Rng::new(seed.parse::<u64>().unwrap() ^ (u64::from(worker) << 32));
    let dir = PathBuf::from(dir);
    let store = Store::open(dir.join("store")).unwrap();
    let keys: Vec<StashKey> = KEYS.iter().map(|k| StashKey::new(*k).unwrap()).collect();
    // Per key: the op of this worker's own record that may still be there
    // (None once it cleared the key or before it saved it).
    let mut mine: [Option<u32>; KEYS.len()] = [None; KEYS.len()];

    let deadline = Instant::now() + Duration::from_secs(60);
    while !dir.join("go").exists() {
        assert!(Instant::now() < deadline, "no go signal");
        std::thread::sleep(Duration::from_millis(1));
    }

    let mut c = Counts::default();
    for op in 0..OPS {
        let k = match rng.below(100) {
            n if n < SIDE_KEY_WEIGHT => 1,
            n if n < 2 * SIDE_KEY_WEIGHT => 2,
            n if n < 3 * SIDE_KEY_WEIGHT => 3,
            _ => 0,
        };
        let (key, name) = (&keys[k], KEYS[k]);
        let what = rng.below(100);
        if what < SAVE_WEIGHT {
            let opts = SaveOptions::new().kind("test/stress").origin(origin(worker, op));
            store
                .save_with(key, &record(name, worker, op), &opts)
                .unwrap_or_else(|e| panic!("worker {worker} op {op}: save {name}: {e}"));
            mine[k] = Some(op);
            c.saves += 1;
        } else if what < SAVE_WEIGHT + LOAD_WEIGHT {
            match store.load::<Record>(key) {
                Ok(None) => c.loads_none += 1,
                Ok(Some(stashed)) => {
                    let r = stashed.value();
                    if let Err(why) = validate(name, r) {
                        panic!("worker {worker} op {op}: load {name}: {why}");
                    }
                    let header = &stashed.meta().header;
                    assert_eq!(header.key(), key);
                    assert_eq!(header.kind(), "test/stress");
                    assert_eq!(
                        header.origin(),
                        Some(origin(r.worker, r.op).as_str()),
                        "worker {worker} op {op}: header and payload from different saves"
                    );
                    if r.worker == worker {
                        // Our own record can only be the latest we saved and
                        // did not clear since: an older one was replaced.
                        assert_eq!(
                            Some(r.op),
                            mine[k],
                            "worker {worker} op {op}: load {name} saw our superseded record"
                        );
                    } else {
                        c.foreign += 1;
                    }
                    c.loads_some += 1;
                }
                Err(e) => panic!("worker {worker} op {op}: load {name}: {e}"),
            }
        } else {
            store.clear(key).unwrap_or_else(|e| panic!("worker {worker} op {op}: clear: {e}"));
            mine[k] = None;
            c.clears += 1;
        }
        std::thread::sleep(Duration::from_micros(rng.below(500)));
    }
    let line = format!("{} {} {} {} {}", c.saves, c.loads_some, c.loads_none, c.clears, c.foreign);
    std::fs::write(dir.join(format!("done-{worker}")), line).unwrap();
}

fn spawn(root: &std::path::Path, worker: u32, seed: u64) -> Child {
    let out = File::create(root.join(format!("out-{worker}"))).unwrap();
    let err = File::create(root.join(format!("err-{worker}"))).unwrap();
    self_command("stress_child_worker")
        .env(DIR_VAR, root)
        .env(WORKER_VAR, worker.to_string())
        .env(CHILD_SEED_VAR, seed.to_string())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap()
}

#[test]
fn mixed_operations_from_many_processes_stay_whole() {
    let seed = harness::seed(SEED_VAR);
    let root = tempfile::tempdir().unwrap();
    let began = Instant::now();
    let children: Vec<(u32, Child)> =
        (0..WORKERS).map(|w| (w, spawn(root.path(), w, seed))).collect();
    File::create(root.path().join("go")).unwrap();

    harness::wait_for_workers(root.path(), children, Duration::from_secs(120));
    let elapsed = began.elapsed();

    let mut total = Counts::default();
    let mut overlapped_workers = 0;
    for w in 0..WORKERS {
        let done = std::fs::read_to_string(root.path().join(format!("done-{w}"))).unwrap();
        let n: Vec<u32> = done.split(' ').map(|n| n.parse().unwrap()).collect();
        assert_eq!(n[0] + n[1] + n[2] + n[3], OPS, "worker {w}: {done}");
        total.saves += n[0];
        total.loads_some += n[1];
        total.loads_none += n[2];
        total.clears += n[3];
        total.foreign += n[4];
        if n[4] > 0 {
            overlapped_workers += 1;
        }
    }
    println!(
        "{WORKERS} processes x {OPS} ops in {elapsed:.1?}: {} saves, {} loads found a stash \
         ({} another worker's, in {overlapped_workers} workers), {} found none, {} clears",
        total.saves, total.loads_some, total.foreign, total.loads_none, total.clears
    );
    assert!(total.saves > 0 && total.loads_some > 0 && total.clears > 0, "{total:?}");
    assert!(
        overlapped_workers >= 2,
        "only {overlapped_workers} workers loaded another's record: the processes did not overlap"
    );

    let dir = root.path().join("store");
    assert_eq!(temp_files(&dir), Vec::<String>::new());
    let store = Store::open(&dir).unwrap();
    assert!(store.cleanup().unwrap().is_empty());
    // Only stashes of the four keys and their lock files.
    for name in names(&dir) {
        let bare = name.strip_prefix('.').and_then(|n| n.strip_suffix(".lock")).unwrap_or(&name);
        assert!(KEYS.contains(&bare), "unexpected file {name:?} in the store");
    }
    let report = store.verify().unwrap();
    let mut left = BTreeMap::new();
    for r in &report {
        let meta = r.result.as_ref().unwrap_or_else(|e| panic!("verify {}: {e}", r.key));
        assert_eq!(meta.header.kind(), "test/stress");
        let stashed = store.load::<Record>(&r.key).unwrap().unwrap();
        validate(r.key.as_str(), stashed.value()).unwrap();
        left.insert(r.key.to_string(), (stashed.value().worker, stashed.value().op));
    }
    println!("left at the end: {left:?}");
}
