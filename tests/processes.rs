//! Real OS processes saving, loading and clearing one key at once.
//!
//! `concurrent_processes_never_see_a_torn_stash` re-executes this test binary
//! once per worker, running only `child_worker`, with the store directory and
//! worker id in the environment. Without that environment `child_worker`
//! returns at once, so it is harmless in a normal run.

mod common;
mod harness;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use safestash::{Digest, SaveOptions, StashKey, Store};
use serde::{Deserialize, Serialize};

use common::temp_files;

const DIR_VAR: &str = "SAFESTASH_TEST_PROCESSES_DIR";
const WORKER_VAR: &str = "SAFESTASH_TEST_PROCESSES_WORKER";
const WORKERS: u32 = 4;
const ITERATIONS: u32 = 100;
const BODY_LEN: usize = 20 * 1024;
/// Worker 0 clears the key every this many iterations, so loads also race
/// with removals and "no stash" is a possible answer.
const CLEAR_EVERY: u32 = 20;
const KEY: &str = "shared";

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    worker: u32,
    iteration: u32,
    body: String,
    /// SHA-256 of the other three fields, so a torn or mixed value shows.
    check: String,
}

fn body(worker: u32, iteration: u32) -> String {
    let unit = format!("w{worker}i{iteration}:");
    unit.repeat(BODY_LEN / unit.len() + 1)[..BODY_LEN].to_owned()
}

fn check_of(worker: u32, iteration: u32, body: &str) -> String {
    Digest::of(format!("{worker}/{iteration}/{body}").as_bytes()).to_string()
}

fn record(worker: u32, iteration: u32) -> Record {
    let body = body(worker, iteration);
    let check = check_of(worker, iteration, &body);
    Record { worker, iteration, body, check }
}

/// Whether `r` is, whole, a record some worker wrote.
fn validate(r: &Record) -> Result<(), String> {
    if r.worker >= WORKERS || r.iteration >= ITERATIONS {
        return Err(format!("unknown writer {}/{}", r.worker, r.iteration));
    }
    if r.check != check_of(r.worker, r.iteration, &r.body) {
        return Err(format!("self-check failed for {}/{}", r.worker, r.iteration));
    }
    if r.body != body(r.worker, r.iteration) {
        return Err(format!("body differs for {}/{}", r.worker, r.iteration));
    }
    Ok(())
}

fn origin(worker: u32) -> String {
    format!("worker-{worker}")
}

/// The child: runs only when the parent set the environment.
#[test]
fn child_worker() {
    let (Ok(dir), Ok(worker)) = (std::env::var(DIR_VAR), std::env::var(WORKER_VAR)) else {
        return;
    };
    let worker: u32 = worker.parse().unwrap();
    let dir = PathBuf::from(dir);
    let store = Store::open(dir.join("store")).unwrap();
    let key = StashKey::new(KEY).unwrap();

    // Start together: wait for the parent's go file.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !dir.join("go").exists() {
        assert!(Instant::now() < deadline, "no go signal");
        std::thread::sleep(Duration::from_millis(1));
    }

    let (mut some, mut none, mut foreign) = (0u32, 0u32, 0u32);
    for iteration in 0..ITERATIONS {
        let opts = SaveOptions::new().kind("test/record").origin(origin(worker));
        store
            .save_with(&key, &record(worker, iteration), &opts)
            .unwrap_or_else(|e| panic!("worker {worker} save {iteration}: {e}"));
        if worker == 0 && iteration % CLEAR_EVERY == CLEAR_EVERY - 1 {
            store.clear(&key).unwrap();
        }
        // Let other workers' saves land between this save and some loads.
        let pause = (worker * 7 + iteration * 13) % 4;
        std::thread::sleep(Duration::from_micros(500 * u64::from(pause)));
        match store.load::<Record>(&key) {
            Ok(None) => none += 1,
            Ok(Some(stashed)) => {
                let r = stashed.value();
                if let Err(why) = validate(r) {
                    panic!("worker {worker} load {iteration}: {why}");
                }
                let header = &stashed.meta().header;
                assert_eq!(header.key(), &key);
                assert_eq!(header.kind(), "test/record");
                assert_eq!(
                    header.origin(),
                    Some(origin(r.worker).as_str()),
                    "header and payload from different saves"
                );
                if r.worker != worker {
                    foreign += 1;
                }
                some += 1;
            }
            Err(e) => panic!("worker {worker} load {iteration}: {e}"),
        }
    }
    std::fs::write(dir.join(format!("done-{worker}")), format!("{some} {none} {foreign}")).unwrap();
}

fn spawn(exe: &Path, dir: &Path, worker: u32) -> Child {
    let out = File::create(dir.join(format!("out-{worker}"))).unwrap();
    let err = File::create(dir.join(format!("err-{worker}"))).unwrap();
    Command::new(exe)
        .args(["--exact", "child_worker", "--nocapture", "--test-threads=1"])
        .env(DIR_VAR, dir)
        .env(WORKER_VAR, worker.to_string())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap()
}

#[test]
fn concurrent_processes_never_see_a_torn_stash() {
    let root = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<(u32, Child)> =
        (0..WORKERS).map(|w| (w, spawn(&exe, root.path(), w))).collect();
    File::create(root.path().join("go")).unwrap();

    harness::wait_for_workers(root.path(), children, Duration::from_secs(120));

    let mut loads = 0;
    let mut foreign = 0;
    for w in 0..WORKERS {
        let done = std::fs::read_to_string(root.path().join(format!("done-{w}"))).unwrap();
        let counts: Vec<u32> = done.split(' ').map(|n| n.parse().unwrap()).collect();
        loads += counts[0] + counts[1];
        foreign += counts[2];
    }
    assert_eq!(loads, WORKERS * ITERATIONS);
    println!("{loads} loads, {foreign} of them saw another worker's record");
    assert!(foreign > 0, "no load saw another worker's save: the workers did not overlap");

    let dir = root.path().join("store");
    assert_eq!(temp_files(&dir), Vec::<String>::new());
    let store = Store::open(&dir).unwrap();
    assert!(store.cleanup().unwrap().is_empty());
    if let Some(last) = store.load::<Record>(&StashKey::new(KEY).unwrap()).unwrap() {
        validate(last.value()).unwrap();
    }
    assert!(store.verify().unwrap().iter().all(|r| r.result.is_ok()));
}
