//! Helpers for the tests that run real child processes (kill, stress,
//! hostile_dirs): re-executing this test binary, a seeded PRNG, and
//! self-checking payloads. Separate from `common` so those files stay
//! independent.
#![allow(dead_code)] // each test crate uses a different subset

use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest as _, Sha256};

/// splitmix64: tiny, deterministic, good enough to vary delays and sizes.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// The seed in `var` if set, else one from the clock. Printed either way so
/// a failure can be replayed with `var=<seed>`.
pub fn seed(var: &str) -> u64 {
    let seed = match std::env::var(var) {
        Ok(s) => s.parse().unwrap_or_else(|_| panic!("{var}={s} is not a u64")),
        Err(_) => {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
            now.as_secs().wrapping_mul(1_000_000_007) ^ u64::from(now.subsec_nanos())
        }
    };
    println!("seed: {seed} (replay with {var}={seed})");
    seed
}

/// A command that re-executes this test binary running only `child_test`.
pub fn self_command(child_test: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", child_test, "--nocapture", "--test-threads=1"]);
    cmd
}

/// Fails unless the child exited 0 having really run its one test (an exit
/// 0 with the test filtered out would prove nothing).
pub fn assert_child_passed(what: &str, output: &Output) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{what}: child {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
}

/// Lowercase hex SHA-256, computed here rather than by the crate under test.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// `len` printable bytes determined by `seed`: what a record's body must be.
pub fn body(seed: u64, len: usize) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        let mut word = rng.next_u64();
        for _ in 0..8 {
            out.push(ALPHABET[(word & 63) as usize]);
            word >>= 8;
        }
    }
    out.truncate(len);
    String::from_utf8(out).unwrap()
}

/// The effective uid of this process, from `/proc/self/status` (no unsafe).
pub fn effective_uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

/// Waits for child test processes, each writing its stdout and stderr to
/// `out-W` and `err-W` in `root`, and panics listing every worker that
/// failed, ran no test ("1 passed" is required: exit 0 with no test run
/// would prove nothing) or outlived `timeout` (it is killed).
pub fn wait_for_workers<W: std::fmt::Display>(
    root: &std::path::Path,
    mut children: Vec<(W, std::process::Child)>,
    timeout: std::time::Duration,
) {
    let deadline = std::time::Instant::now() + timeout;
    let mut failed = Vec::new();
    while !children.is_empty() {
        let mut still_running = Vec::new();
        for (w, mut child) in children {
            match child.try_wait().unwrap() {
                Some(status) => {
                    let read =
                        |name: String| std::fs::read_to_string(root.join(name)).unwrap_or_default();
                    let (out, err) = (read(format!("out-{w}")), read(format!("err-{w}")));
                    if !status.success() || !out.contains("1 passed") {
                        failed.push(format!("worker {w}: {status}\n{out}\n{err}"));
                    }
                }
                None if std::time::Instant::now() > deadline => {
                    child.kill().unwrap();
                    child.wait().unwrap();
                    failed.push(format!("worker {w}: timed out"));
                }
                None => still_running.push((w, child)),
            }
        }
        children = still_running;
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(failed.is_empty(), "{}", failed.join("\n---\n"));
}

/// The steps a journal worker drives its part through: `Running`
/// ("started"), `progress` more `Running` updates, then `Completed`.
pub fn journal_steps(progress: usize) -> Vec<safestash::journal::Change> {
    use safestash::journal::{Change, PartState};
    let mut steps = vec![Change::to(PartState::Running).note("started")];
    steps.extend(
        (0..progress).map(|i| Change::to(PartState::Running).note(format!("progress {i}"))),
    );
    steps.push(Change::to(PartState::Completed).note("done"));
    steps
}

/// A journal worker's loop: drives `part` of `op` through `steps`, each a
/// compare-and-swap on the whole operation's generation (so any sibling's
/// update in between is a conflict), retried after a pause of up to
/// `max_pause` until it lands. Panics on any other error, or when
/// `deadline` passes first. Returns how many conflicts it met.
pub fn drive_journal_part(
    op: &safestash::journal::Operation,
    part: &str,
    steps: Vec<safestash::journal::Change>,
    rng: &mut Rng,
    max_pause: std::time::Duration,
    deadline: std::time::Instant,
) -> u32 {
    use safestash::journal::{Expect, JournalError};
    let max_pause_us = u64::try_from(max_pause.as_micros()).unwrap().max(1);
    let mut conflicts = 0u32;
    for change in steps {
        loop {
            assert!(std::time::Instant::now() < deadline, "{part}: no progress");
            let seen = op.view().unwrap().generation;
            match op.update(part, Expect::Operation(seen), change.clone()) {
                Ok(_) => break,
                Err(JournalError::Conflict { .. }) => {
                    conflicts += 1;
                    std::thread::sleep(std::time::Duration::from_micros(rng.below(max_pause_us)));
                }
                Err(e) => panic!("{part}: {e}"),
            }
        }
    }
    conflicts
}
