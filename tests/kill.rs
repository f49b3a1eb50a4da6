//! A writer SIGKILLed at random moments, hundreds of times, on one store.
//!
//! `killed_writer_never_leaves_a_torn_or_stale_stash` re-executes this test
//! binary running only `kill_child_writer`, which saves self-checking records
//! with rising sequence numbers in an endless loop and appends each sequence
//! number to an acknowledgement file once `save` has returned. The parent
//! kills it after a random delay, then checks that `load` gives a whole,
//! self-consistent record no older than the last acknowledged one (and at
//! most one newer: the save that was in flight), that `verify` agrees, and
//! that `cleanup` removes exactly the temp files the dead writer left.
//!
//! Without the environment `kill_child_writer` returns at once, so it is
//! harmless in a normal run. `SAFESTASH_TEST_KILL_SEED` replays a run;
//! `SAFESTASH_TEST_KILLS` changes the number of kills (default 200).

mod common;
mod harness;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use safestash::{StashKey, Store};
use serde::{Deserialize, Serialize};

use common::{names, temp_files};
use harness::{Rng, body, self_command, sha256_hex};

const DIR_VAR: &str = "SAFESTASH_TEST_KILL_DIR";
const START_VAR: &str = "SAFESTASH_TEST_KILL_START";
const ACKS_VAR: &str = "SAFESTASH_TEST_KILL_ACKS";
const SEED_VAR: &str = "SAFESTASH_TEST_KILL_SEED";
const KILLS_VAR: &str = "SAFESTASH_TEST_KILLS";
const DEFAULT_KILLS: u32 = 200;
/// Kill delays are drawn from `0..=MAX_DELAY_US` after the child is ready.
const MAX_DELAY_US: u64 = 30_000;
const KEY: &str = "victim";
const SIGKILL: i32 = 9;

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    seq: u64,
    len: u64,
    body: String,
    /// SHA-256 of `body`, computed by the writer.
    sha256: String,
}

/// The body for `seq`: 10–60 KB, its length and bytes fixed by `seq`.
fn body_of(seq: u64) -> String {
    let len = 10_000 + Rng::new(seq ^ 0x5EED).below(50_001);
    body(seq, len as usize)
}

fn record(seq: u64) -> Record {
    let body = body_of(seq);
    Record { seq, len: body.len() as u64, sha256: sha256_hex(body.as_bytes()), body }
}

/// Whether `r` is, whole, the record the writer made for `r.seq`.
fn validate(r: &Record) -> Result<(), String> {
    if r.body.len() as u64 != r.len {
        return Err(format!(
            "seq {}: body is {} bytes, record says {}",
            r.seq,
            r.body.len(),
            r.len
        ));
    }
    if sha256_hex(r.body.as_bytes()) != r.sha256 {
        return Err(format!("seq {}: body does not match its SHA-256", r.seq));
    }
    if r.body != body_of(r.seq) {
        return Err(format!("seq {}: body is another record's", r.seq));
    }
    Ok(())
}

/// The child: saves forever, acknowledging each save after it returns.
#[test]
fn kill_child_writer() {
    let Ok(dir) = std::env::var(DIR_VAR) else {
        return;
    };
    let start: u64 = std::env::var(START_VAR).unwrap().parse().unwrap();
    let store = Store::open(Path::new(&dir).join("store")).unwrap();
    let key = StashKey::new(KEY).unwrap();
    // Creating the ack file tells the parent the writer is about to start.
    let mut acks = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(std::env::var(ACKS_VAR).unwrap())
        .unwrap();
    for seq in start.. {
        let r = record(seq);
        if let Err(e) = store.save(&key, &r) {
            // Recorded first: the kill may land while the panic unwinds, and
            // the parent must not mistake a failed save for a killed one.
            acks.write_all(format!("error: save {seq}: {e:?}\n").as_bytes()).unwrap();
            panic!("save {seq}: {e}");
        }
        // One small write: the line is there whole or not at all.
        acks.write_all(format!("{seq}\n").as_bytes()).unwrap();
    }
}

/// The writer process, killed (and reaped) on drop as well, so a failing
/// parent never leaves it saving forever.
struct Writer(Child);

impl Drop for Writer {
    fn drop(&mut self) {
        // After a successful `wait` this is a no-op: std knows it was reaped.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(root: &Path, start: u64, acks: &Path) -> Writer {
    let out = File::create(root.join("child.out")).unwrap();
    let err = File::create(root.join("child.err")).unwrap();
    self_command("kill_child_writer")
        .env(DIR_VAR, root)
        .env(START_VAR, start.to_string())
        .env(ACKS_VAR, acks)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map(Writer)
        .unwrap()
}

fn child_output(root: &Path) -> String {
    let out = std::fs::read_to_string(root.join("child.out")).unwrap_or_default();
    let err = std::fs::read_to_string(root.join("child.err")).unwrap_or_default();
    format!("--- stdout\n{out}\n--- stderr\n{err}")
}

/// The acknowledged sequence numbers: complete lines only. Fails if the
/// writer reported an error.
fn read_acks(path: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    complete.lines().map(|l| l.parse().unwrap_or_else(|_| panic!("writer: {l}"))).collect()
}

#[test]
fn killed_writer_never_leaves_a_torn_or_stale_stash() {
    let kills: u32 = std::env::var(KILLS_VAR).map_or(DEFAULT_KILLS, |s| s.parse().unwrap());
    let mut rng = Rng::new(harness::seed(SEED_VAR));
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("store");
    let store = Store::open(&dir).unwrap();
    let key = StashKey::new(KEY).unwrap();
    let began = Instant::now();

    // The newest sequence number known to be durable (loaded or acknowledged).
    let mut floor: Option<u64> = None;
    let mut next_start = 1u64;
    let (mut acked_total, mut with_temp, mut unacked_landed, mut before_first_ack) = (0, 0, 0, 0);
    for run in 0..kills {
        let start = next_start;
        let acks_path = root.path().join(format!("acks-{run}"));
        let mut writer = spawn(root.path(), start, &acks_path);

        let ready_by = Instant::now() + Duration::from_secs(30);
        while !acks_path.exists() {
            if let Some(status) = writer.0.try_wait().unwrap() {
                panic!(
                    "run {run}: child exited before starting: {status}\n{}",
                    child_output(root.path())
                );
            }
            assert!(Instant::now() < ready_by, "run {run}: child never started");
            std::thread::sleep(Duration::from_micros(200));
        }
        let delay = Duration::from_micros(rng.below(MAX_DELAY_US + 1));
        std::thread::sleep(delay);
        writer.0.kill().unwrap();
        let status = writer.0.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(SIGKILL),
            "run {run}: the writer ended by itself ({status}), not by the kill\n{}",
            child_output(root.path())
        );

        // What the writer promised before it died.
        let acks = read_acks(&acks_path);
        let expected: Vec<u64> = (start..start + acks.len() as u64).collect();
        assert_eq!(acks, expected, "run {run}: acknowledgements out of order");
        acked_total += acks.len();
        if acks.is_empty() {
            before_first_ack += 1;
        }
        if let Some(&last) = acks.last() {
            floor = Some(last);
        }
        // The one save that may have been in flight when the kill came.
        let ceiling = acks.last().map_or(start, |last| last + 1);

        let temps = temp_files(&dir);
        if !temps.is_empty() {
            with_temp += 1;
        }
        let loaded = store
            .load::<Record>(&key)
            .unwrap_or_else(|e| panic!("run {run} (delay {delay:?}): load after kill failed: {e}"));
        let seq = match (&loaded, floor) {
            (None, None) => None,
            (None, Some(f)) => panic!("run {run}: stash {f} was durable, load found none"),
            (Some(stashed), _) => {
                let r = stashed.value();
                if let Err(why) = validate(r) {
                    panic!("run {run} (delay {delay:?}): torn stash: {why}");
                }
                assert_eq!(stashed.meta().header.key(), &key);
                assert!(
                    floor.is_none_or(|f| r.seq >= f),
                    "run {run}: loaded seq {} is older than durable seq {floor:?}",
                    r.seq
                );
                assert!(
                    r.seq <= ceiling,
                    "run {run}: loaded seq {} was never written (ceiling {ceiling})",
                    r.seq
                );
                if acks.last().is_none_or(|&a| r.seq > a) && r.seq >= start {
                    unacked_landed += 1;
                }
                Some(r.seq)
            }
        };
        let report = store.verify().unwrap();
        assert_eq!(report.len(), usize::from(seq.is_some()), "run {run}: {report:?}");
        for r in &report {
            assert!(r.result.is_ok(), "run {run}: verify: {:?}", r.result);
        }

        // Exactly the dead writer's temp files are removed, nothing else.
        let removed = store.cleanup().unwrap();
        let mut removed_names: Vec<String> = removed
            .iter()
            .map(|p| {
                assert_eq!(p.parent(), Some(dir.as_path()));
                p.file_name().unwrap().to_str().unwrap().to_owned()
            })
            .collect();
        removed_names.sort();
        assert_eq!(removed_names, temps, "run {run}: cleanup removed the wrong files");
        assert!(temp_files(&dir).is_empty(), "run {run}: temp files left after cleanup");
        let found = names(&dir);
        match seq {
            Some(_) => assert_eq!(found, [".victim.lock", "victim"], "run {run}: stray files"),
            // Killed before the first save landed: at most the lock file.
            None => assert!(found.iter().all(|n| n == ".victim.lock"), "run {run}: {found:?}"),
        }

        if let Some(s) = seq {
            floor = Some(s);
        }
        next_start = ceiling + 1;
        std::fs::remove_file(&acks_path).unwrap();
    }

    let elapsed = began.elapsed();
    println!(
        "{kills} kills in {elapsed:.1?}: {acked_total} acknowledged saves, \
         {with_temp} kills left a temp file, {unacked_landed} landed unacknowledged, \
         {before_first_ack} came before the run's first acknowledgement"
    );
    assert!(floor.is_some(), "no save ever completed: the test proved nothing");
    assert!(with_temp > 0, "no kill hit a save mid-write: the test proved nothing");
}
