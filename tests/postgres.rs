//! The PostgreSQL store against a real server, with real processes: the
//! server stopped between saves, a client SIGKILLed mid-save, the server
//! SIGKILLed again and again during a loop of saves, and eight processes
//! racing on shared keys.
//!
//! `SAFESTASH_TEST_POSTGRES_URL` names the database; the tests that stop
//! or kill the server also need `SAFESTASH_TEST_PGDATA` (the cluster's data
//! directory) and `SAFESTASH_TEST_PGBIN` (where `pg_ctl` is). `.ci/run`
//! starts a throwaway cluster and exports all three. Unset, a test prints
//! why it skips; under `CI=true` it fails instead.
#![cfg(feature = "postgres")]

mod bigvalue;
mod harness;
mod pgtest;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use bigvalue::{Big, BigCheck, PIECE};
use safestash::journal::{Aggregate, Change, Derivation, Operation};
use safestash::{Error, Precondition, SaveOptions, StashKey, Store};
use serde::{Deserialize, Serialize};

/// Tests that stop or kill the server take this for writing; the others
/// for reading, so nothing else runs while the server is down.
static SERVER: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    SERVER.read().unwrap_or_else(|e| e.into_inner())
}

fn exclusive() -> RwLockWriteGuard<'static, ()> {
    SERVER.write().unwrap_or_else(|e| e.into_inner())
}

/// A store in a fresh namespace, or `None` (printed) to skip.
fn store(test: &str) -> Option<(Store, String)> {
    let url = pgtest::url(test)?;
    let ns = pgtest::fresh_namespace(test);
    let full = pgtest::with_namespace(&url, &ns);
    Some((Store::open_url(&full).unwrap(), full))
}

/// The cluster the tests may stop and kill.
struct Server {
    pgdata: PathBuf,
    pgbin: String,
}

fn server(test: &str) -> Option<Server> {
    pgtest::url(test)?;
    match std::env::var("SAFESTASH_TEST_PGDATA") {
        Ok(d) if !d.is_empty() => Some(Server { pgdata: d.into(), pgbin: pgtest::pgbin() }),
        _ => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{test}: CI=true but SAFESTASH_TEST_PGDATA is not set");
            }
            eprintln!(
                "{test}: skipping: SAFESTASH_TEST_PGDATA is not set (the test controls the server)"
            );
            None
        }
    }
}

impl Server {
    fn pg_ctl(&self, args: &[&str]) -> std::process::Output {
        let pg_ctl = format!("{}/pg_ctl", self.pgbin);
        let data = self.pgdata.to_str().unwrap();
        let mut cmd = if unsafe_free_is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", &pg_ctl]);
            c
        } else {
            Command::new(&pg_ctl)
        };
        cmd.args(["-D", data]).args(args).stdin(Stdio::null()).output().expect("run pg_ctl")
    }

    fn stop(&self) {
        let out = self.pg_ctl(&["stop", "-m", "fast", "-w"]);
        assert!(out.status.success(), "pg_ctl stop: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn start(&self) {
        let log = self.pgdata.join("restart.log");
        let log = log.to_str().unwrap();
        for _ in 0..50 {
            let out = self.pg_ctl(&["start", "-w", "-t", "60", "-l", log]);
            if out.status.success() {
                return;
            }
            // A killed postmaster whose zombie still owns postmaster.pid.
            self.clear_stale_pid();
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the server did not restart; see {log}");
    }

    fn postmaster_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.pgdata.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    fn clear_stale_pid(&self) {
        if let Some(pid) = self.postmaster_pid() {
            if !alive(pid) {
                let _ = std::fs::remove_file(self.pgdata.join("postmaster.pid"));
            }
        }
    }

    /// SIGKILLs the postmaster and every server process at once (a crash
    /// of the whole server), and waits until they are gone.
    fn kill9(&self) {
        let Some(pid) = self.postmaster_pid() else { panic!("no postmaster.pid") };
        let children = Command::new("pgrep").args(["-P", &pid.to_string()]).output().unwrap();
        let mut pids = vec![pid];
        pids.extend(
            String::from_utf8_lossy(&children.stdout)
                .lines()
                .filter_map(|l| l.trim().parse::<i32>().ok()),
        );
        for &p in &pids {
            kill(p, "KILL");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.clear_stale_pid();
    }
}

fn unsafe_free_is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

fn kill(pid: i32, sig: &str) {
    let _ = Command::new("kill").args([&format!("-{sig}"), &pid.to_string()]).status();
}

/// Alive and not a zombie.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start().chars().next();
            !matches!(state, Some('Z' | 'X') | None)
        }
        Err(_) => false,
    }
}

/// A value that shows tearing: every element is derived from `n`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Tagged {
    n: u64,
    writer: u32,
    body: Vec<u64>,
}

impl Tagged {
    fn new(n: u64, writer: u32, len: usize) -> Tagged {
        Tagged { n, writer, body: (0..len as u64).map(|i| i ^ n.wrapping_mul(0x9e37)).collect() }
    }

    fn intact(&self) -> bool {
        self.body.iter().enumerate().all(|(i, &v)| v == (i as u64) ^ self.n.wrapping_mul(0x9e37))
    }
}

/// The children these tests spawn run this test binary again, with the
/// role in `SAFESTASH_PG_CHILD`.
fn spawn_child(role: &str, url: &str, extra: &[(&str, String)]) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env("SAFESTASH_PG_CHILD", role)
        .env("SAFESTASH_PG_CHILD_URL", url)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn child")
}

/// Not a test of its own: the body of the child processes.
#[test]
fn child_entry() {
    let Ok(role) = std::env::var("SAFESTASH_PG_CHILD") else { return };
    let url = std::env::var("SAFESTASH_PG_CHILD_URL").unwrap();
    let key = StashKey::new("k").unwrap();
    match role.as_str() {
        // Saves 1, 2, 3, ... forever, printing `ack N` once save N returned
        // Ok; retries while the server is down.
        "saver" => {
            let len: usize = std::env::var("SAFESTASH_PG_LEN").unwrap().parse().unwrap();
            let store = loop {
                match Store::open_url(&url) {
                    Ok(s) => break s,
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            };
            let mut n = std::env::var("SAFESTASH_PG_FROM").map_or(1, |s| s.parse().unwrap());
            loop {
                match store.save(&key, &Tagged::new(n, 0, len)) {
                    Ok(_) => {
                        println!("ack {n}");
                        n += 1;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        // Holds the key's lock and saves big values in a loop.
        "locker" => {
            let store = Store::open_url(&url).unwrap();
            let lock = store.lock(&key).unwrap();
            println!("locked");
            let mut n = 1_000;
            loop {
                lock.save(&Tagged::new(n, 0, 200_000)).unwrap();
                n += 1;
            }
        }
        // 100 random saves, loads and conditional clears on shared keys.
        "racer" => {
            let id: u32 = std::env::var("SAFESTASH_PG_ID").unwrap().parse().unwrap();
            let store = Store::open_url(&url).unwrap();
            let own = StashKey::new(format!("own-{id}")).unwrap();
            let mut seed = u64::from(id) * 7919 + 1;
            let mut next = || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed
            };
            for i in 0..100u64 {
                let shared = StashKey::new(format!("shared-{}", next() % 3)).unwrap();
                let value = Tagged::new(i, id, 500 + (next() % 2000) as usize);
                match next() % 3 {
                    0 => {
                        let r = store.save(&shared, &value).unwrap();
                        // A conditional clear only removes our own stash.
                        if next() % 2 == 0 {
                            let _ = store.clear_if(&shared, &r.digest).unwrap();
                        }
                    }
                    1 => {
                        if let Some(s) = store.load::<Tagged>(&shared).unwrap() {
                            assert!(s.value().intact(), "torn value {:?}", s.value().n);
                        }
                    }
                    _ => {
                        let seen = store.load::<Tagged>(&shared).unwrap();
                        let expect = match &seen {
                            Some(s) => Precondition::Unchanged(s.meta().digest),
                            None => Precondition::Absent,
                        };
                        match store.save_if(&shared, &value, &SaveOptions::new(), expect) {
                            Ok(_) | Err(Error::Replaced { .. } | Error::StashExists { .. }) => {}
                            Err(e) => panic!("conditional save: {e}"),
                        }
                    }
                }
                // No lost acknowledged save: our own key reads back what we wrote.
                store.save(&own, &value).unwrap();
                assert_eq!(store.load::<Tagged>(&own).unwrap().unwrap().into_value(), value);
            }
            println!("racer done");
        }
        // Saves a value of SAFESTASH_PG_BIG_MIB MiB made on the fly, loads
        // it back into a checker, and prints the figures.
        "big" => {
            let mib: u64 = std::env::var("SAFESTASH_PG_BIG_MIB").unwrap().parse().unwrap();
            let store = Store::open_url(&url).unwrap();
            let big = StashKey::new("big").unwrap();
            let pieces = mib * (1 << 20) / PIECE as u64;
            let start = Instant::now();
            let receipt = store.save(&big, &Big(pieces)).unwrap();
            let saved = start.elapsed();
            let start = Instant::now();
            let back = store.load::<BigCheck>(&big).unwrap().expect("the big stash");
            let loaded = start.elapsed();
            assert_eq!(back.value().0, pieces, "every piece read back, in order");
            assert_eq!(back.meta().digest, receipt.digest);
            println!(
                "big bytes={} peak_rss_kib={} save_s={:.1} load_s={:.1}",
                receipt.bytes,
                peak_rss_kib(),
                saved.as_secs_f64(),
                loaded.as_secs_f64()
            );
        }
        // The journal's worker: drives its own part of a shared operation
        // through every step, each a compare-and-swap on the operation's
        // generation, retried on conflict; prints `journal done N`.
        "journal" => {
            let worker: usize = std::env::var("SAFESTASH_PG_ID").unwrap().parse().unwrap();
            let go = PathBuf::from(std::env::var("SAFESTASH_PG_GO").unwrap());
            let store = Store::open_url(&url).unwrap();
            let op = Operation::open(&store, JOURNAL_OP).unwrap();
            let part = format!("host-{worker}");
            let deadline = Instant::now() + Duration::from_secs(120);
            while !go.exists() {
                assert!(Instant::now() < deadline, "no go signal");
                std::thread::sleep(Duration::from_millis(1));
            }
            let conflicts = harness::drive_journal_part(
                &op,
                &part,
                journal_steps(),
                &mut harness::Rng::new(worker as u64),
                Duration::from_micros(2000),
                deadline,
            );
            println!("journal done {conflicts}");
        }
        other => panic!("unknown child role {other}"),
    }
}

/// This process's peak resident set (`VmHWM`: the kernel's high-water mark
/// of RSS, the counter `getrusage` reports as `ru_maxrss`), in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line =
        status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM in /proc/self/status");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A child that is killed when the test ends, passed or failed.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lines `ack N` from a child's stdout, read on a thread.
fn acks(child: &mut Child) -> std::sync::mpsc::Receiver<u64> {
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            // The first line follows libtest's `test child_entry ... `.
            if let Some(n) = line.rsplit("ack ").next().filter(|_| line.contains("ack ")) {
                if tx.send(n.parse().unwrap()).is_err() {
                    break;
                }
            }
        }
    });
    rx
}

fn wait_line(child: &mut Child, want: &str) {
    let out = child.stdout.as_mut().unwrap();
    let mut reader = BufReader::new(out);
    let mut line = String::new();
    loop {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "child ended before {want:?}");
        if line.trim().ends_with(want) {
            return;
        }
    }
}

#[test]
fn saves_commit_durably_and_reopen_sees_them() {
    let _g = shared();
    let Some((s, url)) = store("durable") else { return };
    let k = StashKey::new("k").unwrap();
    let r = s.save(&k, &Tagged::new(5, 1, 10)).unwrap();
    let other = Store::open_url(&url).unwrap();
    let back = other.load::<Tagged>(&k).unwrap().unwrap();
    assert_eq!(back.meta().digest, r.digest);
    assert!(r.path.to_str().unwrap().ends_with("/k"));
    assert!(!r.path.to_str().unwrap().contains("password"));
}

#[test]
fn stored_bytes_are_the_file_envelope() {
    let _g = shared();
    let Some((s, _)) = store("envelope") else { return };
    let dir = tempfile::tempdir().unwrap();
    let local = Store::open(dir.path()).unwrap();
    let k = StashKey::new("k").unwrap();
    s.save(&k, &[1, 2, 3]).unwrap();
    // Export: the row's bytes written to a file are a stash file.
    let url = pgtest::url("envelope").unwrap();
    let ns = s.dir().to_str().unwrap().rsplit("namespace=").next().unwrap().to_owned();
    let hex = pgtest::psql(
        &url,
        &format!(
            "SELECT encode(envelope, 'hex') FROM safestash_stashes WHERE namespace = {} AND key = 'k'",
            pgtest::lit(&ns)
        ),
    );
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    std::fs::write(local.path_of(&k), bytes).unwrap();
    assert_eq!(local.load::<Vec<i32>>(&k).unwrap().unwrap().into_value(), [1, 2, 3]);
}

#[test]
fn a_held_lock_bounds_other_writers_by_lock_timeout() {
    let _g = shared();
    let Some(url) = pgtest::url("lock_timeout") else { return };
    let ns = pgtest::fresh_namespace("lock_timeout");
    let url = format!("{}&lock_timeout=300ms", pgtest::with_namespace(&url, &ns));
    let (a, b) = (Store::open_url(&url).unwrap(), Store::open_url(&url).unwrap());
    let k = StashKey::new("k").unwrap();
    let held = a.lock(&k).unwrap();
    let start = Instant::now();
    let handle = std::thread::spawn(move || b.save(&StashKey::new("k").unwrap(), &1).map(|_| ()));
    let err = handle.join().unwrap().unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(5));
    drop(held);
}

#[test]
fn server_stopped_between_saves_is_a_clear_error_and_the_next_save_works() {
    let _g = exclusive();
    let Some(srv) = server("server_stopped") else { return };
    let (s, _) = store("server_stopped").unwrap();
    let k = StashKey::new("k").unwrap();
    s.save(&k, &1).unwrap();
    srv.stop();
    let err = s.save(&k, &2).unwrap_err();
    let msg = err.to_string();
    srv.start();
    assert!(matches!(err, Error::Backend { .. }), "{err:?}");
    assert!(
        msg.contains("save") || msg.contains("connect"),
        "the error names the operation: {msg}"
    );
    assert!(msg.contains("namespace="), "the error names the store: {msg}");
    // The failed save did not commit; the next works once the server is back.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match s.save(&k, &3) {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                eprintln!("retrying after restart: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("save after restart: {e}"),
        }
    }
    assert_eq!(*s.load::<i32>(&k).unwrap().unwrap().value(), 3);
}

#[test]
fn client_killed_mid_save_leaves_old_or_new_and_no_lock() {
    let _g = shared();
    let Some((s, url)) = store("client_killed") else { return };
    let k = StashKey::new("k").unwrap();
    s.save(&k, &Tagged::new(1, 0, 10)).unwrap();
    for round in 0..10u64 {
        let mut child = spawn_child("locker", &url, &[]);
        wait_line(&mut child, "locked");
        std::thread::sleep(Duration::from_millis(20 + round * 37 % 150));
        child.kill().unwrap();
        child.wait().unwrap();
        // Old or new, never torn, never corrupt.
        let v = s.load::<Tagged>(&k).unwrap().expect("a stash").into_value();
        assert!(v.intact(), "round {round}: torn value");
        // The killed holder's lock went with its connection.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match s.try_lock(&k) {
                Ok(_lock) => break,
                Err(Error::Locked { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("round {round}: the lock stayed held: {e}"),
            }
        }
    }
}

#[test]
fn server_killed_during_saves_loses_no_acknowledged_save() {
    let _g = exclusive();
    let Some(srv) = server("server_killed") else { return };
    let (s, url) = store("server_killed").unwrap();
    let k = StashKey::new("k").unwrap();
    let kills: u64 = std::env::var("SAFESTASH_TEST_PG_KILLS").map_or(50, |v| v.parse().unwrap());
    let mut child = KillOnDrop(spawn_child("saver", &url, &[("SAFESTASH_PG_LEN", "2000".into())]));
    let rx = acks(&mut child.0);
    let mut last_ack = 0;
    let mut seed = 0x2545_f491_u64;
    for kill_no in 0..kills {
        // Let some saves be acknowledged, then kill at a random moment.
        let first = rx.recv_timeout(Duration::from_secs(60)).expect("the saver makes progress");
        last_ack = last_ack.max(first);
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(seed % 80));
        srv.kill9();
        // Every ack printed before the kill is in the channel by now or soon.
        std::thread::sleep(Duration::from_millis(50));
        while let Ok(n) = rx.try_recv() {
            last_ack = last_ack.max(n);
        }
        srv.start();
        let got = loop {
            match s.load::<Tagged>(&k) {
                Ok(v) => break v.expect("a stash").into_value(),
                Err(Error::Backend { .. }) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => panic!("kill {kill_no}: {e}"),
            }
        };
        assert!(got.intact(), "kill {kill_no}: torn value");
        assert!(
            got.n >= last_ack,
            "kill {kill_no}: acknowledged save {last_ack} lost, found {}",
            got.n
        );
    }
    drop(child);
    eprintln!("{kills} server kills, last acknowledged save {last_ack}: none lost");
}

#[test]
fn eight_processes_race_without_tearing_or_losing_saves() {
    let _g = shared();
    let Some((_, url)) = store("race") else { return };
    let mut children: Vec<Child> = (0..8)
        .map(|id| spawn_child("racer", &url, &[("SAFESTASH_PG_ID", id.to_string())]))
        .collect();
    for (id, child) in children.iter_mut().enumerate() {
        let mut out = String::new();
        std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
        let status = child.wait().unwrap();
        assert!(status.success() && out.contains("racer done"), "racer {id} failed:\n{out}");
    }
}

#[test]
fn cli_lists_and_verifies_a_postgres_store() {
    let _g = shared();
    let Some((s, url)) = store("cli") else { return };
    let (good, bad) = (StashKey::new("good").unwrap(), StashKey::new("bad").unwrap());
    s.save(&good, &1).unwrap();
    s.save(&bad, &"to be damaged").unwrap();
    let run = |args: &[&str]| {
        let out = assert_cmd::Command::cargo_bin("safestash").unwrap().args(args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, out) = run(&["list", &url]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("good") && out.contains("bad"), "{out}");
    assert_eq!(run(&["verify", &url]).0, Some(0));
    let ns = url.rsplit("namespace=").next().unwrap();
    pgtest::psql(
        &pgtest::url("cli").unwrap(),
        &format!(
            "UPDATE safestash_stashes SET envelope = set_byte(envelope, 40, get_byte(envelope, 40) # 1) \
             WHERE namespace = {} AND key = 'bad'",
            pgtest::lit(ns)
        ),
    );
    let (code, out) = run(&["verify", &url]);
    assert_eq!(code, Some(1), "damage inside the database is found: {out}");
    assert_eq!(run(&["quarantine", "--yes", &url, "bad"]).0, Some(0));
    assert_eq!(run(&["verify", &url]).0, Some(0));
}

#[test]
fn a_stash_larger_than_memory_streams_in_and_out_in_bounded_memory() {
    let _g = shared();
    let Some((_, url)) = store("big") else { return };
    // 384 MiB by default (a debug build streams some 5 MiB/s through
    // serde_json and SHA-256 on this project's machines, so 1 GiB takes
    // minutes); SAFESTASH_TEST_PG_BIG_MIB=1024 for the full GiB.
    let mib: u64 = std::env::var("SAFESTASH_TEST_PG_BIG_MIB").map_or(384, |v| v.parse().unwrap());
    let mut child =
        KillOnDrop(spawn_child("big", &url, &[("SAFESTASH_PG_BIG_MIB", mib.to_string())]));
    let mut out = String::new();
    std::io::Read::read_to_string(child.0.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(child.0.wait().unwrap().success(), "the child failed:\n{out}");
    let line = out.lines().find_map(|l| l.split_once("big ").map(|(_, r)| r)).expect("figures");
    let field = |name: &str| -> f64 {
        let v = line.split_whitespace().find_map(|w| w.strip_prefix(&format!("{name}=")[..]));
        v.unwrap().parse().unwrap()
    };
    let (bytes, rss) = (field("bytes"), field("peak_rss_kib"));
    eprintln!("big stash: {line}");
    assert!(bytes >= (mib << 20) as f64, "the stash is {bytes} bytes");
    assert!(rss < 64.0 * 1024.0, "peak RSS {rss} KiB for a {mib} MiB stash");
}

/// The chunk rows of `key` in `ns`.
fn chunk_count(url: &str, ns: &str, key: &str) -> u64 {
    let sql = format!(
        "SELECT count(*) FROM safestash_chunks WHERE namespace = {} AND key = {}",
        pgtest::lit(ns),
        pgtest::lit(key)
    );
    pgtest::psql(url, &sql).parse().unwrap()
}

#[test]
fn chunked_stashes_replace_quarantine_and_show_damage() {
    let _g = shared();
    let Some((s, full)) = store("chunked") else { return };
    let url = pgtest::url("chunked").unwrap();
    let ns = full.rsplit("namespace=").next().unwrap().to_owned();
    let k = StashKey::new("k").unwrap();
    // About 4.6 MiB of JSON: five chunks, and above the 4 MiB a remote
    // load reads whole, so loads verify in one pass and read again.
    let big = Tagged::new(7, 1, 700_000);
    let r = s.save(&k, &big).unwrap();
    assert!(r.bytes > 4 << 20, "{} bytes", r.bytes);
    assert_eq!(chunk_count(&url, &ns, "k"), r.bytes.div_ceil(1 << 20));
    assert_eq!(s.load::<Tagged>(&k).unwrap().unwrap().into_value(), big);
    let listed = s.list().unwrap();
    assert_eq!((listed.len(), listed[0].size), (1, r.bytes));
    assert!(listed[0].header.is_ok(), "the header is read from the first chunk");
    assert!(s.verify().unwrap().iter().all(|r| r.result.is_ok()));
    // A small stash replaces the chunks; a big one replaces the inline row.
    s.save(&k, &1).unwrap();
    assert_eq!(chunk_count(&url, &ns, "k"), 0);
    assert_eq!(*s.load::<i32>(&k).unwrap().unwrap().value(), 1);
    s.save(&k, &big).unwrap();
    let smaller = Tagged::new(8, 1, 200_000);
    let r2 = s.save(&k, &smaller).unwrap();
    assert_eq!(chunk_count(&url, &ns, "k"), r2.bytes.div_ceil(1 << 20), "old chunks are gone");
    assert_eq!(s.load::<Tagged>(&k).unwrap().unwrap().into_value(), smaller);
    // A conditional save that fails streams nothing and changes nothing.
    let err = s.save_if(&k, &big, &SaveOptions::new(), Precondition::Absent).unwrap_err();
    assert!(matches!(err, Error::StashExists { .. }), "{err:?}");
    assert_eq!(s.load::<Tagged>(&k).unwrap().unwrap().meta().digest, r2.digest);
    // A flipped byte inside a chunk: load and verify find it.
    pgtest::psql(
        &url,
        &format!(
            "UPDATE safestash_chunks SET bytes = set_byte(bytes, 1000, get_byte(bytes, 1000) # 1) \
             WHERE namespace = {} AND key = 'k' AND seq = 1",
            pgtest::lit(&ns)
        ),
    );
    let err = s.load::<Tagged>(&k).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    assert!(s.verify().unwrap().iter().any(|r| matches!(r.result, Err(Error::Corrupt { .. }))));
    // A missing chunk is a truncated envelope.
    s.save(&k, &big).unwrap();
    pgtest::psql(
        &url,
        &format!(
            "DELETE FROM safestash_chunks WHERE namespace = {} AND key = 'k' AND seq = 2",
            pgtest::lit(&ns)
        ),
    );
    let err = s.load::<Tagged>(&k).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    // Quarantine takes the chunks along; the key is then absent.
    let aside = s.quarantine(&k).unwrap().expect("quarantined");
    let aside = aside.file_name().unwrap().to_str().unwrap().to_owned();
    assert!(chunk_count(&url, &ns, &aside) > 0);
    assert_eq!(chunk_count(&url, &ns, "k"), 0);
    assert!(s.load::<Tagged>(&k).unwrap().is_none());
    // Clearing a chunked stash removes its chunks.
    s.save(&k, &big).unwrap();
    assert!(s.clear(&k).unwrap());
    assert_eq!(chunk_count(&url, &ns, "k"), 0);
}

#[test]
fn a_version_1_schema_is_migrated_and_its_stashes_load() {
    let _g = shared();
    let Some(url) = pgtest::url("migrate") else { return };
    let schema = format!("v1_{}", std::process::id());
    pgtest::psql(
        &url,
        &format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}; \
             CREATE TABLE {schema}.safestash_schema (version integer NOT NULL); \
             INSERT INTO {schema}.safestash_schema (version) VALUES (1); \
             CREATE TABLE {schema}.safestash_stashes (namespace text NOT NULL, key text NOT NULL, \
               envelope bytea NOT NULL, digest bytea NOT NULL, size bigint NOT NULL, \
               created timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (namespace, key));"
        ),
    );
    // A stash written in version 1: the envelope of a local store's file.
    let dir = tempfile::tempdir().unwrap();
    let local = Store::open(dir.path()).unwrap();
    let k = StashKey::new("k").unwrap();
    let r = local.save(&k, &[4, 5]).unwrap();
    let hex: String = std::fs::read(&r.path).unwrap().iter().map(|b| format!("{b:02x}")).collect();
    let digest: String = r.digest.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
    pgtest::psql(
        &url,
        &format!(
            "INSERT INTO {schema}.safestash_stashes VALUES ('old', 'k', '\\x{hex}', '\\x{digest}', {}, now())",
            r.bytes
        ),
    );
    let sep = if url.contains('?') { '&' } else { '?' };
    let with_path = format!("{url}{sep}options=-c%20search_path%3D{schema}");
    let s = Store::open_url(&pgtest::with_namespace(&with_path, "old")).unwrap();
    assert_eq!(pgtest::psql(&url, &format!("SELECT version FROM {schema}.safestash_schema")), "2");
    assert_eq!(s.load::<Vec<i32>>(&k).unwrap().unwrap().into_value(), [4, 5]);
    let big = Tagged::new(3, 0, 300_000);
    s.save(&k, &big).unwrap();
    assert_eq!(s.load::<Tagged>(&k).unwrap().unwrap().into_value(), big);
    // A second open finds version 2 and changes nothing.
    Store::open_url(&pgtest::with_namespace(&with_path, "old")).unwrap();
    pgtest::psql(&url, &format!("DROP SCHEMA {schema} CASCADE"));
}

const JOURNAL_OP: &str = "fleet upgrade";
const JOURNAL_PROGRESS: usize = 10;

fn journal_steps() -> Vec<Change> {
    harness::journal_steps(JOURNAL_PROGRESS)
}

/// The journal's eight-process test (tests/journal.rs), on PostgreSQL:
/// real processes, each driving its own part by compare-and-swap on the
/// operation's generation; no update lost or merged.
#[test]
fn journal_eight_processes_drive_their_own_parts_and_lose_no_update() {
    let _g = shared();
    let Some((store, url)) = store("journal") else { return };
    const WORKERS: usize = 8;
    let names: Vec<String> = (0..WORKERS).map(|w| format!("host-{w}")).collect();
    let op = Operation::create(&store, JOURNAL_OP, &names).unwrap();
    let start = op.view().unwrap().generation;
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("go");
    let mut children: Vec<KillOnDrop> = (0..WORKERS)
        .map(|w| {
            KillOnDrop(spawn_child(
                "journal",
                &url,
                &[
                    ("SAFESTASH_PG_ID", w.to_string()),
                    ("SAFESTASH_PG_GO", go.display().to_string()),
                ],
            ))
        })
        .collect();
    std::fs::write(&go, b"").unwrap();
    let mut conflicts = 0u32;
    for (w, child) in children.iter_mut().enumerate() {
        let mut out = String::new();
        std::io::Read::read_to_string(child.0.stdout.as_mut().unwrap(), &mut out).unwrap();
        let status = child.0.wait().unwrap();
        let done = out.lines().find_map(|l| l.split_once("journal done ").map(|(_, n)| n));
        assert!(status.success() && done.is_some(), "worker {w} failed:\n{out}");
        conflicts += done.unwrap().trim().parse::<u32>().unwrap();
    }
    let view = op.view().unwrap();
    let per_part = journal_steps().len();
    eprintln!(
        "{WORKERS} processes x {per_part} updates on PostgreSQL: {conflicts} conflicts retried"
    );
    assert_eq!(view.derivation, Derivation::Known(Aggregate::Completed));
    assert_eq!(view.stored, Aggregate::Completed);
    // Every update got its own generation: none lost, none merged.
    assert_eq!(view.generation.get(), start.get() + (WORKERS * per_part) as u64);
    let want_notes: Vec<Option<String>> =
        journal_steps().iter().map(|c| c.note_text().map(str::to_owned)).collect();
    let mut generations = Vec::new();
    for name in &names {
        let p = view.part(name).unwrap().unwrap();
        assert_eq!(p.updates, per_part as u64, "{name}");
        let notes: Vec<Option<String>> = p.history.iter().map(|t| t.note.clone()).collect();
        assert_eq!(notes, want_notes, "{name}: history");
        generations.extend(p.history.iter().map(|t| t.generation.get()));
    }
    generations.sort_unstable();
    let want: Vec<u64> = (start.get() + 1..=view.generation.get()).collect();
    assert_eq!(generations, want, "generations are not exactly one per update");
    assert!(conflicts > 0, "no update conflicted: the processes did not overlap");
}

/// Every message in `e`'s chain of sources, joined.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}

#[test]
fn statement_timeout_is_a_clear_error_and_the_previous_stash_stays() {
    let _g = shared();
    let Some(url) = pgtest::url("statement_timeout") else { return };
    let plain = pgtest::with_namespace(&url, &pgtest::fresh_namespace("statement_timeout"));
    // The role's or the URL's statement_timeout (here the URL's), shorter
    // than the store's lock_timeout.
    let timed = format!("{plain}&options=-c%20statement_timeout%3D300&lock_timeout=60s");
    let (a, b) = (Store::open_url(&plain).unwrap(), Store::open_url(&timed).unwrap());
    let k = StashKey::new("k").unwrap();
    a.save(&k, &1).unwrap();
    // A save that cannot finish within the timeout: the key's lock is held.
    let held = a.lock(&k).unwrap();
    let (b, err) = std::thread::spawn(move || {
        let err = b.save(&StashKey::new("k").unwrap(), &2).unwrap_err();
        (b, err)
    })
    .join()
    .unwrap();
    drop(held);
    let text = chain(&err);
    assert!(matches!(err, Error::Backend { op: safestash::BackendOp::Save, .. }), "{err:?}");
    assert!(err.to_string().starts_with("failed to save `postgresql://"), "{text}");
    assert!(err.to_string().contains("/k`"), "the error names the stash: {text}");
    assert!(text.contains("statement timeout"), "the server's reason is the source: {text}");
    assert_eq!(*a.load::<i32>(&k).unwrap().unwrap().value(), 1, "the previous stash is intact");
    b.save(&k, &3).unwrap();
    assert_eq!(*a.load::<i32>(&k).unwrap().unwrap().value(), 3);
}

/// A small tmpfs mounted for a test, unmounted (and its database and
/// tablespace dropped) when it ends, passed or failed.
struct SmallDisk {
    dir: tempfile::TempDir,
    url: String,
    db: String,
}

impl SmallDisk {
    fn mount(test: &str, url: &str, mib: u32) -> Option<SmallDisk> {
        let why_not = if !unsafe_free_is_root() {
            Some("not root, cannot mount a tmpfs".to_owned())
        } else {
            None
        };
        let dir = tempfile::tempdir().unwrap();
        let why_not = why_not.or_else(|| {
            let out = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={mib}m,mode=0700"), "tmpfs"])
                .arg(dir.path())
                .output()
                .ok()?;
            (!out.status.success())
                .then(|| format!("mount -t tmpfs failed: {}", String::from_utf8_lossy(&out.stderr)))
        });
        if let Some(why) = why_not {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{test}: CI=true but {why}");
            }
            eprintln!("{test}: skipping: {why}");
            return None;
        }
        let space = dir.path().join("space");
        std::fs::create_dir(&space).unwrap();
        let chown =
            Command::new("chown").args(["-R", "postgres"]).arg(dir.path()).status().unwrap();
        assert!(chown.success());
        let db = format!("full_{}", std::process::id());
        let disk = SmallDisk { dir, url: url.to_owned(), db };
        pgtest::psql(url, &format!("CREATE TABLESPACE {} LOCATION '{}'", disk.db, space.display()));
        pgtest::psql(url, &format!("CREATE DATABASE {0} TABLESPACE {0}", disk.db));
        Some(disk)
    }

    /// The test URL, on the database that lives on the small disk.
    fn db_url(&self) -> String {
        let (base, query) = self.url.split_once('?').unwrap_or((&self.url, ""));
        let (server, _) = base.rsplit_once('/').unwrap();
        let query = if query.is_empty() { String::new() } else { format!("?{query}") };
        format!("{server}/{}{query}", self.db)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let sql = |q: String| {
            let psql = format!("{}/psql", pgtest::pgbin());
            let _ = Command::new(psql).args([&self.url, "-X", "-q", "-c", &q]).output();
        };
        sql(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db));
        sql(format!("DROP TABLESPACE IF EXISTS {}", self.db));
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_full_disk_on_the_server_is_a_clear_error_and_the_previous_stash_stays() {
    let _g = shared();
    let Some(url) = pgtest::url("disk_full") else { return };
    // 40 MiB: the new database's catalog (some 8 MiB), a ballast file, and
    // less room than the big save needs.
    let Some(disk) = SmallDisk::mount("disk_full", &url, 40) else { return };
    let ballast = disk.dir.path().join("ballast");
    std::fs::write(&ballast, vec![0u8; 8 << 20]).unwrap();
    let s = Store::open_url(&pgtest::with_namespace(&disk.db_url(), "full")).unwrap();
    let k = StashKey::new("k").unwrap();
    let small = Tagged::new(1, 0, 1000);
    s.save(&k, &small).unwrap();
    // About 48 MiB of JSON: more than the disk has left.
    let err = s.save(&k, &Tagged::new(2, 0, 5_000_000)).unwrap_err();
    let text = chain(&err);
    eprintln!("the full disk's error: {text}");
    assert!(matches!(err, Error::Backend { op: safestash::BackendOp::Save, .. }), "{text}");
    assert!(err.to_string().starts_with("failed to save `postgresql://"), "{text}");
    assert!(text.contains("No space left on device"), "the server's reason is the source: {text}");
    assert_eq!(s.load::<Tagged>(&k).unwrap().unwrap().into_value(), small, "the previous stash");
    // Space freed: saves work again.
    std::fs::remove_file(&ballast).unwrap();
    let next = Tagged::new(3, 0, 100_000);
    s.save(&k, &next).unwrap();
    assert_eq!(s.load::<Tagged>(&k).unwrap().unwrap().into_value(), next);
    drop(s);
}

#[test]
fn export_moves_a_postgres_stash_to_a_directory_byte_for_byte() {
    let _g = shared();
    let Some((s, url)) = store("export") else { return };
    let dir = tempfile::tempdir().unwrap();
    let local = Store::open(dir.path()).unwrap();
    // One inline, one chunked and above the whole-read limit (streamed).
    let cases = [("small", Tagged::new(1, 0, 10)), ("large", Tagged::new(2, 0, 700_000))];
    for (name, value) in &cases {
        let k = StashKey::new(*name).unwrap();
        let r = s.save(&k, value).unwrap();
        let file = local.path_of(&k);
        let out = assert_cmd::Command::cargo_bin("safestash")
            .unwrap()
            .args(["export", &url, name, "-o", file.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let back = local.load::<Tagged>(&k).unwrap().expect("exported");
        assert_eq!((back.meta().digest, back.meta().size), (r.digest, r.bytes), "{name}");
        assert_eq!(&back.into_value(), value, "{name}");
        // The library call writes the same bytes.
        let mut bytes = Vec::new();
        s.export(&k, &mut bytes).unwrap().unwrap();
        assert_eq!(bytes, std::fs::read(&file).unwrap(), "{name}");
    }
}

/// A throwaway cluster with `ssl = on` that refuses plain TCP, its
/// certificates made by `openssl`, stopped when dropped.
#[cfg(feature = "postgres-tls")]
struct TlsServer {
    dir: tempfile::TempDir,
    port: u16,
}

#[cfg(feature = "postgres-tls")]
impl TlsServer {
    fn start(test: &str) -> Option<TlsServer> {
        pgtest::url(test)?;
        let has_openssl =
            Command::new("openssl").arg("version").output().is_ok_and(|o| o.status.success());
        if !has_openssl {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{test}: CI=true but no openssl");
            eprintln!("{test}: skipping: the openssl program is not installed");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl").args(args).current_dir(d).output().unwrap();
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ca = |name: &str| {
            openssl(
                &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
                    .iter()
                    .copied()
                    .chain(["-keyout", &format!("{name}.key"), "-out", &format!("{name}.crt")])
                    .chain(["-subj", &format!("/CN={name}")])
                    .collect::<Vec<_>>(),
            );
        };
        ca("test-ca");
        ca("other-ca");
        std::fs::write(d.join("ext"), "subjectAltName=DNS:localhost\n").unwrap();
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "test-ca.crt",
            "-CAkey",
            "test-ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "ext",
        ]);
        let data = d.join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::create_dir(d.join("sock")).unwrap();
        let root = unsafe_free_is_root();
        let as_pg = |prog: &str| {
            let prog = format!("{}/{prog}", pgtest::pgbin());
            if root {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--", &prog]);
                c
            } else {
                Command::new(prog)
            }
        };
        if root {
            let _ = Command::new("chmod").arg("755").arg(d).status();
            let st = Command::new("chown").args(["-R", "postgres"]).arg(d).status().unwrap();
            assert!(st.success());
        }
        let out = as_pg("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres"])
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let conf = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
            d.join("sock").display(),
            d.join("server.crt").display(),
            d.join("server.key").display()
        );
        let mut pgconf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        pgconf.push_str(&conf);
        std::fs::write(data.join("postgresql.conf"), pgconf).unwrap();
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
        )
        .unwrap();
        let key = d.join("server.key");
        let _ = Command::new("chmod").arg("600").arg(&key).status();
        let log = d.join("log");
        let out = as_pg("pg_ctl")
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "start"])
            .output()
            .unwrap();
        let server = TlsServer { dir, port };
        assert!(
            out.status.success(),
            "pg_ctl start: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Some(server)
    }

    fn url(&self, host: &str, params: &str) -> String {
        format!("postgresql://postgres@{host}:{}/postgres?namespace=tls&{params}", self.port)
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

#[cfg(feature = "postgres-tls")]
impl Drop for TlsServer {
    fn drop(&mut self) {
        let pg_ctl = format!("{}/pg_ctl", pgtest::pgbin());
        let data = self.dir.path().join("data");
        let mut cmd = if unsafe_free_is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", &pg_ctl]);
            c
        } else {
            Command::new(&pg_ctl)
        };
        let _ = cmd.arg("-D").arg(&data).args(["stop", "-m", "fast", "-w"]).output();
    }
}

#[cfg(feature = "postgres-tls")]
#[test]
fn tls_follows_sslmode_sslrootcert_and_the_libpq_environment() {
    let _g = shared();
    let Some(srv) = TlsServer::start("tls") else { return };
    let k = StashKey::new("k").unwrap();
    let works = |url: &str| {
        let s = Store::open_url(url).unwrap_or_else(|e| panic!("{url}: {}", chain(&e)));
        s.save(&k, &"over TLS").unwrap();
        assert_eq!(s.load::<String>(&k).unwrap().unwrap().into_value(), "over TLS", "{url}");
    };
    let refused = |url: &str, why: &str| {
        let e = Store::open_url(url).expect_err(url);
        let text = chain(&e);
        assert!(
            matches!(e, Error::Backend { op: safestash::BackendOp::Connect, .. }),
            "{url}: {text}"
        );
        assert!(!text.contains("password"), "{text}");
        assert!(text.contains(why), "{url}: {text}");
    };
    let ca = srv.file("test-ca.crt");
    let other = srv.file("other-ca.crt");
    // The server refuses plain TCP, so each that works went over TLS.
    works(&srv.url("127.0.0.1", "sslmode=require"));
    works(&srv.url("127.0.0.1", "")); // prefer, libpq's default
    refused(&srv.url("127.0.0.1", "sslmode=disable"), "no encryption");
    // Verified: the chain, and for verify-full the name too.
    works(&srv.url("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca}")));
    works(&srv.url("localhost", &format!("sslmode=verify-full&sslrootcert={ca}")));
    refused(&srv.url("127.0.0.1", &format!("sslmode=verify-full&sslrootcert={ca}")), "certificate");
    refused(
        &srv.url("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={other}")),
        "certificate",
    );
    // require with a root certificate checks the chain, as libpq does.
    refused(&srv.url("127.0.0.1", &format!("sslmode=require&sslrootcert={other}")), "certificate");
    // libpq's environment, through the CLI (a process of its own).
    let cli = |url: &str, env: &[(&str, &str)]| {
        let mut cmd = assert_cmd::Command::cargo_bin("safestash").unwrap();
        cmd.args(["list", url]).env_remove("PGSSLMODE").env_remove("PGSSLROOTCERT");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let port = srv.port.to_string();
    let libpq = [
        ("PGHOST", "127.0.0.1"),
        ("PGPORT", &port),
        ("PGUSER", "postgres"),
        ("PGDATABASE", "postgres"),
    ];
    let (code, err) = cli("postgresql://?namespace=tls", &libpq);
    assert_eq!(code, Some(0), "PGHOST/PGPORT/PGUSER/PGDATABASE: {err}");
    let with = |extra: (&'static str, &'static str)| {
        let mut env: Vec<(&str, &str)> = libpq.to_vec();
        env.push(extra);
        env
    };
    let (code, err) = cli("postgresql://?namespace=tls", &with(("PGSSLMODE", "disable")));
    assert_eq!(code, Some(2), "PGSSLMODE=disable is honoured: {err}");
    assert!(err.contains("no encryption"), "{err}");
    let (code, err) =
        cli("postgresql://?namespace=tls&sslmode=require", &with(("PGSSLMODE", "disable")));
    assert_eq!(code, Some(0), "the URL's sslmode wins over PGSSLMODE: {err}");
}

#[test]
fn loads_racing_saves_of_a_large_stash_never_return_a_wrong_value() {
    let _g = shared();
    let Some((s, url)) = store("reread") else { return };
    let k = StashKey::new("k").unwrap();
    // Above the 4 MiB a remote load reads whole: every load is a verifying
    // pass and a second, re-hashed read, with saves landing in between.
    let save = |s: &Store, n: u64| {
        let opts = SaveOptions::new().origin(format!("n={n}"));
        s.save_with(&k, &Tagged::new(n, 0, 700_000), &opts).unwrap();
    };
    save(&s, 0);
    let done = std::sync::atomic::AtomicBool::new(false);
    let (mut loads, mut changed) = (0u32, 0u32);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let writer = Store::open_url(&url).unwrap();
            for n in 1..=12 {
                save(&writer, n);
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            match s.load::<Tagged>(&k) {
                Ok(Some(v)) => {
                    // The value is the one whose header was verified.
                    let origin = v.meta().header.origin().unwrap().to_owned();
                    assert_eq!(origin, format!("n={}", v.value().n), "a value from another save");
                    assert!(v.value().intact());
                    loads += 1;
                }
                Err(e @ Error::Backend { op: safestash::BackendOp::Load, .. }) => {
                    assert!(chain(&e).contains("changed while it was read"), "{}", chain(&e));
                    changed += 1;
                }
                other => panic!("{other:?}"),
            }
        }
    });
    eprintln!("racing loads: {loads} intact, {changed} refused as changed between the reads");
    assert!(loads + changed > 0);
}

#[test]
fn a_batch_with_large_stashes_saves_each_and_checks_every_value_first() {
    let _g = shared();
    let Some((s, _)) = store("batch_large") else { return };
    let (small, large) = (Tagged::new(1, 0, 10), Tagged::new(2, 0, 300_000));
    let keys: Vec<StashKey> = ["a", "b", "c"].iter().map(|k| StashKey::new(*k).unwrap()).collect();
    let opts = SaveOptions::new();
    let mut batch = s.batch();
    batch.add(&keys[0], &small, &opts).unwrap();
    // Over 1 MiB: checked in the first pass, serialized again into the backend.
    batch.add(&keys[1], &large, &opts).unwrap();
    batch.add(&keys[2], &small, &opts).unwrap();
    let receipts = batch.commit().unwrap();
    assert!(receipts[1].bytes > 1 << 20);
    for (k, (want, r)) in keys.iter().zip([&small, &large, &small].into_iter().zip(&receipts)) {
        let got = s.load::<Tagged>(k).unwrap().unwrap();
        assert_eq!((got.meta().digest, got.value()), (r.digest, want), "{k}");
    }
    // A value that does not serialize, after a large one: nothing written.
    struct Fails;
    impl Serialize for Fails {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("no"))
        }
    }
    let d = StashKey::new("d").unwrap();
    let mut batch = s.batch();
    batch.add(&d, &large, &opts).unwrap();
    batch.add(&keys[0], &Fails, &opts).unwrap();
    let err = batch.commit().unwrap_err();
    assert!(matches!(err.error, Error::Serialize { .. }), "{:?}", err.error);
    assert!(err.saved.is_empty());
    assert!(s.load::<Tagged>(&d).unwrap().is_none());
}

// ---- Issue 24: hostile schemas, restarts, silent servers, secrets, poolers ----

/// Runs `f` on a thread and gives its result, or panics after `limit`
/// (so that a call that hangs on today's code fails the test instead of
/// hanging it).
fn bounded<T: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> (T, Duration) {
    let (tx, rx) = std::sync::mpsc::channel();
    let t0 = Instant::now();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => (v, t0.elapsed()),
        Err(_) => panic!("{what}: no answer within {limit:?} (the call hangs)"),
    }
}

/// A database of its own whose default `search_path` puts `public` before
/// `pg_catalog`, with functions and an operator in `public` that shadow
/// the catalog's: a random `hashtextextended` (for both argument types) and
/// a `text = text` that is always true. None of it changes what the store
/// does: the lock of a key excludes, create-if-absent is granted once, and
/// every key loads its own stash.
#[test]
fn shadowing_functions_and_operators_on_the_search_path_change_nothing() {
    let _g = shared();
    let Some(url) = pgtest::url("hostile_search_path") else { return };
    let db = format!("safestash_hostile_{}", std::process::id());
    pgtest::psql(&url, &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
    pgtest::psql(&url, &format!("CREATE DATABASE {db}"));
    let (base, _) = url.split_once('?').map_or((url.as_str(), ""), |(b, q)| (b, q));
    let db_url = format!("{}/{db}", base.rsplit_once('/').unwrap().0);
    pgtest::psql(&db_url, &format!("ALTER DATABASE {db} SET search_path = public, pg_catalog"));
    pgtest::psql(
        &db_url,
        "CREATE FUNCTION public.hashtextextended(text, integer) RETURNS bigint \
           LANGUAGE sql VOLATILE AS 'SELECT (pg_catalog.random() * 1e15)::pg_catalog.int8'; \
         CREATE FUNCTION public.hashtextextended(text, bigint) RETURNS bigint \
           LANGUAGE sql VOLATILE AS 'SELECT (pg_catalog.random() * 1e15)::pg_catalog.int8'; \
         CREATE FUNCTION public.always(text, text) RETURNS boolean \
           LANGUAGE sql IMMUTABLE AS 'SELECT true'; \
         CREATE OPERATOR public.= (leftarg = text, rightarg = text, function = public.always);",
    );
    // The shadows are live for a session of this database.
    let shadowed = pgtest::psql(&db_url, "SELECT 'a'::text = 'b'::text");
    assert_eq!(shadowed, "t", "the shadowing operator is what an unqualified `=` calls");
    let ns = pgtest::fresh_namespace("hostile");
    let full = pgtest::with_namespace(&db_url, &ns);
    let result = std::panic::catch_unwind(|| {
        let (a, b) =
            (Arc::new(Store::open_url(&full).unwrap()), Arc::new(Store::open_url(&full).unwrap()));
        // Each key its own stash.
        for i in 0..4 {
            a.save(&StashKey::new(format!("k{i}")).unwrap(), &i).unwrap();
        }
        for i in 0..4 {
            let got = b.load::<i32>(&StashKey::new(format!("k{i}")).unwrap()).unwrap();
            assert_eq!(got.map(|s| s.into_value()), Some(i), "k{i} loads its own stash");
        }
        // A held lock excludes.
        let k = StashKey::new("locked").unwrap();
        for _ in 0..10 {
            let held = a.lock(&k).unwrap();
            assert!(
                matches!(b.try_lock(&k), Err(Error::Locked { .. })),
                "a second holder of the same key's lock"
            );
            drop(held);
        }
        // Create-if-absent is granted once, however the saves interleave.
        let opts = SaveOptions::new();
        for round in 0..40 {
            let key = StashKey::new(format!("race{round}")).unwrap();
            let barrier = Arc::new(std::sync::Barrier::new(2));
            let results: Vec<_> = [a.clone(), b.clone()]
                .into_iter()
                .enumerate()
                .map(|(w, s)| {
                    let (key, barrier, opts) = (key.clone(), barrier.clone(), opts.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        s.save_if(&key, &w, &opts, Precondition::Absent)
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect();
            let won: Vec<usize> = results
                .iter()
                .enumerate()
                .filter_map(|(w, r)| match r {
                    Ok(_) => Some(w),
                    Err(Error::StashExists { .. }) => None,
                    Err(e) => panic!("round {round}: {e}"),
                })
                .collect();
            assert_eq!(won.len(), 1, "round {round}: create-if-absent granted to {won:?}");
            let stored = a.load::<usize>(&key).unwrap().unwrap().into_value();
            assert_eq!(stored, won[0], "round {round}: the winner's stash is the one stored");
        }
    });
    pgtest::psql(&url, &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// Fills the pool with `n` connections: `n` threads hold a lock each at
/// the same time (each on its own connection), then all let go.
fn fill_pool(s: &Arc<Store>, n: usize) {
    let barrier = Arc::new(std::sync::Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (s, barrier) = (s.clone(), barrier.clone());
            std::thread::spawn(move || {
                let k = StashKey::new(format!("fill{i}")).unwrap();
                let held = s.lock(&k).unwrap();
                held.save(&i).unwrap();
                barrier.wait();
                drop(held);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

/// A restart of the server (fast shutdown, start) with six pooled
/// connections: the next six saves and six loads all succeed.
#[test]
fn a_restart_with_a_full_pool_costs_no_failed_call() {
    let _g = exclusive();
    let Some(srv) = server("restart_full_pool") else { return };
    let s = Arc::new(store("restart_full_pool").unwrap().0);
    fill_pool(&s, 6);
    srv.stop();
    srv.start();
    let mut failed = Vec::new();
    for i in 0..6 {
        let k = StashKey::new(format!("fill{i}")).unwrap();
        if let Err(e) = s.save(&k, &(i + 100)) {
            failed.push(format!("save {i}: {}", chain(&e)));
        }
    }
    fill_pool(&s, 6);
    srv.stop();
    srv.start();
    for i in 0..6 {
        let k = StashKey::new(format!("fill{i}")).unwrap();
        match s.load::<usize>(&k) {
            Ok(Some(v)) => assert_eq!(v.into_value(), i),
            Ok(None) => failed.push(format!("load {i}: no stash")),
            Err(e) => failed.push(format!("load {i}: {}", chain(&e))),
        }
    }
    assert!(
        failed.is_empty(),
        "{} calls failed after a restart:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

/// Pooled connections that died while idle without the client hearing of
/// it (the proxy closes each at its next message, forwarding nothing): the
/// first statement of the next calls finds them dead, and each call runs
/// once more on a new connection; six saves and six loads all succeed.
#[test]
fn pooled_connections_found_dead_at_first_use_cost_no_failed_call() {
    let _g = shared();
    let Some(url) = pgtest::url("dead_at_first_use") else { return };
    let proxy = pgtest::Proxy::start(&pgtest::host_port(&url));
    let ns = pgtest::fresh_namespace("dead_at_first_use");
    let full = pgtest::with_namespace(&pgtest::via_port(&url, proxy.port), &ns);
    let s = Arc::new(Store::open_url(&full).unwrap());
    let mut failed = Vec::new();
    for round in 0..2 {
        fill_pool(&s, 6);
        let before = proxy.accepted();
        proxy.doom_open_connections();
        for i in 0..6 {
            let k = StashKey::new(format!("fill{i}")).unwrap();
            let call = if round == 0 {
                s.save(&k, &i).map(|_| ())
            } else {
                s.load::<usize>(&k).map(|v| assert_eq!(v.unwrap().into_value(), i))
            };
            if let Err(e) = call {
                failed.push(format!("round {round}, call {i}: {}", chain(&e)));
            }
        }
        assert!(failed.is_empty(), "{} calls failed:\n{}", failed.len(), failed.join("\n"));
        assert!(proxy.accepted() > before, "new connections were made");
    }
}

/// A lock holder whose session is killed (`pg_terminate_backend`: an
/// operator, a failover, a restart) has lost its lock: another worker takes
/// it and saves; the stale holder's next save through its lock fails (its
/// session is never silently replaced), and the newer save stays.
#[test]
fn a_lock_holder_whose_session_is_killed_cannot_overwrite_the_next_holder() {
    let _g = shared();
    let Some(url) = pgtest::url("killed_session") else { return };
    let ns = pgtest::fresh_namespace("killed_session");
    let full = pgtest::with_namespace(&url, &ns);
    let (a, b) = (Store::open_url(&full).unwrap(), Store::open_url(&full).unwrap());
    let k = StashKey::new("k").unwrap();
    a.save(&k, &0).unwrap();
    let held = a.lock(&k).unwrap();
    let h = format!("pg_catalog.hashtextextended({}, 0)", pgtest::lit(&format!("{ns}/k")));
    let killed = pgtest::psql(
        &url,
        &format!(
            "SELECT pg_catalog.pg_terminate_backend(l.pid) FROM pg_catalog.pg_locks l \
             WHERE l.locktype = 'advisory' AND l.granted \
             AND l.classid = (({h} >> 32) & 4294967295)::oid AND l.objid = ({h} & 4294967295)::oid"
        ),
    );
    assert_eq!(killed, "t", "the holder's session was found and terminated");
    // Another worker (a thread: this one holds the key).
    let b = std::thread::spawn(move || {
        let newer = b.lock(&StashKey::new("k").unwrap()).unwrap();
        newer.save(&2).unwrap();
        drop(newer);
        b
    })
    .join()
    .unwrap();
    let stale = held.save(&1);
    assert!(stale.is_err(), "the stale holder's save went through: {stale:?}");
    drop(held);
    assert_eq!(b.load::<i32>(&k).unwrap().unwrap().into_value(), 2, "the newer save stays");
}

/// A server that stops answering (a proxy that stops forwarding, so the
/// TCP connections stay open and silent): a save, a load and an open each
/// fail within about `timeout` (+ `lock_timeout` for calls that may wait
/// for a key's lock), naming the operation and saying it timed out; once
/// the server answers again the store works.
#[test]
fn a_silent_server_fails_each_call_within_its_timeout() {
    let _g = shared();
    let Some(url) = pgtest::url("silent_server") else { return };
    let proxy = pgtest::Proxy::start(&pgtest::host_port(&url));
    let ns = pgtest::fresh_namespace("silent_server");
    let full = format!(
        "{}&timeout=2s&lock_timeout=1s",
        pgtest::with_namespace(&pgtest::via_port(&url, proxy.port), &ns)
    );
    let s = Arc::new(Store::open_url(&full).unwrap());
    let k = StashKey::new("k").unwrap();
    s.save(&k, &1).unwrap();
    proxy.set(pgtest::Mode::Stall);
    let s2 = s.clone();
    let (saved, took) = bounded("save", Duration::from_secs(30), move || s2.save(&k, &2));
    let err = saved.unwrap_err();
    let text = chain(&err);
    assert!(matches!(err, Error::Backend { op: safestash::BackendOp::Save, .. }), "{err:?}");
    assert!(text.contains("timed out"), "the error says it timed out: {text}");
    assert!(took < Duration::from_secs(6), "the save failed after {took:?}: {text}");
    eprintln!("silent server: the save failed after {took:?}");
    let s2 = s.clone();
    let (loaded, took) = bounded("load", Duration::from_secs(30), move || {
        s2.load::<i32>(&StashKey::new("k").unwrap()).map(|v| v.map(|v| v.into_value()))
    });
    let err = loaded.unwrap_err();
    // The stalled save's session was closed (never reused after a time
    // out), so the load first connects: it fails connecting, or loading.
    assert!(
        matches!(
            err,
            Error::Backend { op: safestash::BackendOp::Load | safestash::BackendOp::Connect, .. }
        ),
        "{err:?}"
    );
    assert!(chain(&err).contains("timed out"), "{}", chain(&err));
    assert!(took < Duration::from_secs(4), "the load failed after {took:?}");
    eprintln!("silent server: the load failed after {took:?}");
    let full2 = full.clone();
    let (opened, took) = bounded("open", Duration::from_secs(30), move || Store::open_url(&full2));
    let err = opened.unwrap_err();
    assert!(chain(&err).contains("timed out"), "{}", chain(&err));
    assert!(took < Duration::from_secs(4), "the open failed after {took:?}");
    eprintln!("silent server: the open failed after {took:?}");
    proxy.set(pgtest::Mode::Forward);
    let k = StashKey::new("k").unwrap();
    s.save(&k, &3).unwrap();
    assert_eq!(s.load::<i32>(&k).unwrap().unwrap().into_value(), 3);
}

/// The server's processes SIGSTOPped (postmaster and backends): a save
/// fails within about its bound instead of hanging; after SIGCONT the
/// store works again.
#[test]
fn a_stopped_server_process_fails_a_save_within_its_timeout() {
    let _g = exclusive();
    let Some(srv) = server("stopped_server") else { return };
    let (_, full) = store("stopped_server").unwrap();
    let s = Arc::new(Store::open_url(&format!("{full}&timeout=2s&lock_timeout=1s")).unwrap());
    let k = StashKey::new("k").unwrap();
    s.save(&k, &1).unwrap();
    let pid = srv.postmaster_pid().expect("postmaster.pid");
    let children = Command::new("pgrep").args(["-P", &pid.to_string()]).output().unwrap();
    let mut pids = vec![pid];
    pids.extend(
        String::from_utf8_lossy(&children.stdout)
            .lines()
            .filter_map(|l| l.trim().parse::<i32>().ok()),
    );
    for &p in &pids {
        kill(p, "STOP");
    }
    let s2 = s.clone();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        bounded("save", Duration::from_secs(30), move || s2.save(&StashKey::new("k").unwrap(), &2))
    }));
    for &p in &pids {
        kill(p, "CONT");
    }
    let (saved, took) = result.unwrap_or_else(|p| std::panic::resume_unwind(p));
    let err = saved.unwrap_err();
    assert!(matches!(err, Error::Backend { op: safestash::BackendOp::Save, .. }), "{err:?}");
    assert!(chain(&err).contains("timed out"), "{}", chain(&err));
    assert!(took < Duration::from_secs(6), "the save failed after {took:?}");
    eprintln!("stopped server: the save failed after {took:?}");
    // The timed-out save may still land when the server continues (its
    // outcome is unknown); the store works, and holds one of the two.
    s.save(&k, &3).unwrap();
    assert_eq!(s.load::<i32>(&k).unwrap().unwrap().into_value(), 3);
}

/// A save whose `COMMIT` reaches the server but whose reply is lost (the
/// proxy cuts the client's side right after forwarding it): the save
/// reports `Ok` only when its stash is there (a small save sends its whole
/// transaction in its first exchange; when a pooled session gives no answer
/// to it, the store ends that session and finds out), else its error says
/// the outcome is unknown (a large save's separate `COMMIT`); a load
/// afterwards finds the old or the new stash, never an error or nothing.
#[test]
fn a_commit_whose_reply_is_lost_is_reported_ok_only_when_it_landed_and_loses_nothing() {
    let _g = shared();
    let Some(url) = pgtest::url("lost_commit_reply") else { return };
    let proxy = pgtest::Proxy::start(&pgtest::host_port(&url));
    let ns = pgtest::fresh_namespace("lost_commit_reply");
    let full = pgtest::with_namespace(&pgtest::via_port(&url, proxy.port), &ns);
    let s = Store::open_url(&full).unwrap();
    let direct = Store::open_url(&pgtest::with_namespace(&url, &ns)).unwrap();
    let k = StashKey::new("k").unwrap();
    let (mut landed, mut found_out, mut unknown) = (0, 0, 0);
    for round in 0..6u64 {
        // Even rounds small (one exchange), odd ones over 1 MiB (chunked).
        let len = if round % 2 == 0 { 50 } else { 300_000 };
        s.save(&k, &Tagged::new(round * 2, 0, len)).unwrap();
        proxy.set(pgtest::Mode::CutAfterCommit);
        let result = s.save(&k, &Tagged::new(round * 2 + 1, 0, len));
        assert_eq!(
            proxy.cuts(),
            round as u32 + 1,
            "round {round}: the proxy cut a COMMIT ({:?})",
            result.as_ref().map_err(|e| chain(e))
        );
        match result {
            Ok(_) => {
                found_out += 1;
                let got = direct.load::<Tagged>(&k).unwrap().expect("a stash").into_value();
                assert_eq!(got.n, round * 2 + 1, "round {round}: reported Ok, but not there");
            }
            Err(err) => {
                unknown += 1;
                let text = chain(&err);
                assert!(matches!(err, Error::Backend { .. }), "{err:?}");
                assert!(
                    text.contains("may have committed"),
                    "the error says the outcome is unknown: {text}"
                );
            }
        }
        // Old or new, through the proxy and directly.
        for (via, store) in [("proxy", &s), ("direct", &direct)] {
            let got = store.load::<Tagged>(&k).unwrap().expect("a stash").into_value();
            assert!(got.intact(), "{via}: torn");
            assert!(got.n == round * 2 || got.n == round * 2 + 1, "{via}: {}", got.n);
            if via == "direct" && got.n == round * 2 + 1 {
                landed += 1;
            }
        }
    }
    eprintln!(
        "lost COMMIT replies: 6, of which landed: {landed}; found out and Ok: {found_out}; \
         reported unknown: {unknown}"
    );
    assert!(unknown >= 1, "the large saves' lost commits were reported as unknown");
    // A create-if-absent whose reply is lost is never refused by its own
    // stash (which a blind resend would meet): Ok, and there.
    for round in 0..3u64 {
        // A save and a clear first: the pooled session has its statements,
        // so the create is its first exchange.
        s.save(&k, &Tagged::new(round, 0, 50)).unwrap();
        s.clear(&k).unwrap();
        proxy.set(pgtest::Mode::CutAfterCommit);
        let value = Tagged::new(100 + round, 0, 50);
        let result = s.save_if(&k, &value, &SaveOptions::new(), Precondition::Absent);
        assert_eq!(proxy.cuts(), 7 + round as u32, "the proxy cut the create's COMMIT");
        match result {
            Ok(_) => {
                let got = direct.load::<Tagged>(&k).unwrap().expect("a stash").into_value();
                assert_eq!(got.n, 100 + round, "reported Ok, but not there");
            }
            Err(err) => {
                assert!(
                    !matches!(err, Error::StashExists { .. }),
                    "refused by its own stash: {err:?}"
                );
                assert!(chain(&err).contains("may have committed"), "{}", chain(&err));
            }
        }
    }
    // A clear whose reply is lost: never `true` while the stash is still
    // there, never an error without saying the outcome is unknown; another
    // key's stash is untouched.
    let other = StashKey::new("other").unwrap();
    s.save(&other, &Tagged::new(7, 0, 50)).unwrap();
    for round in 0..3u64 {
        s.save(&k, &Tagged::new(200 + round, 0, 50)).unwrap();
        // The pooled session has the clear's statements: its first exchange.
        assert!(!s.clear(&StashKey::new("never-saved").unwrap()).unwrap());
        proxy.set(pgtest::Mode::CutAfterCommit);
        let result = s.clear(&k);
        assert_eq!(proxy.cuts(), 10 + round as u32, "the proxy cut the clear's COMMIT");
        let there = direct.load::<Tagged>(&k).unwrap().is_some();
        match &result {
            Ok(removed) => assert!(!(*removed && there), "reported removed, but still there"),
            Err(err) => assert!(chain(err).contains("may have committed"), "{}", chain(err)),
        }
        eprintln!(
            "lost clear reply: {:?}, stash there after: {there}",
            result.map_err(|e| chain(&e))
        );
    }
    assert_eq!(direct.load::<Tagged>(&other).unwrap().unwrap().into_value().n, 7);
}

/// Every error from opening a store, for every spelling of a password in
/// the URL, and every error in its `source()` chain, in `Display` and in
/// `Debug`, is free of the password: bad URLs, bad parameters, a refused
/// port.
#[test]
fn passwords_never_reach_an_error_or_its_sources() {
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let urls = [
        format!("postgresql://u:Sekr1tA@127.0.0.1:{refused}/db"),
        format!("postgres://u:Sekr1tA@127.0.0.1:{refused}/db?namespace=ns"),
        format!("postgresql://u@127.0.0.1:{refused}/db?password=Sekr1tA"),
        format!("postgresql://u@127.0.0.1:{refused}/db?Password=Sekr1tA"),
        format!("postgresql://u@127.0.0.1:{refused}/db?PASSWORD=Sekr1tA&namespace=x"),
        format!("postgresql://u@127.0.0.1:{refused}/db?namespace=x&pass%77ord=Sekr1tA"),
        "postgresql://u:Sekr1tA@127.0.0.1:notaport/db".to_owned(),
        format!("postgresql://u:Sekr1tA@127.0.0.1:{refused}/db?sslmode=bogus"),
        format!("postgresql://u:Sekr1tA@127.0.0.1:{refused}/db?lock_timeout=soon"),
        format!("postgresql://u:Sekr1tA@127.0.0.1:{refused}/db?timeout=soon"),
        format!("postgresql://u:Sekr1tA@127.0.0.1:{refused}/db?namespace=bad'ns"),
        format!("postgresql://u:Sekr1tA@127.0.0.1:{refused}/db?bogus_option=1"),
        format!("postgresql://u@127.0.0.1:{refused}/db?password=Sekr1tA&bogus_option=1"),
        format!("postgresql://u:pa/Sekr1tA@127.0.0.1:{refused}/db"),
        format!("postgresql://u:pa?Sekr1tA@127.0.0.1:{refused}/db"),
        format!("postgresql://u:Sekr1tA@[::1:{refused}/db"),
        format!("host=127.0.0.1 port={refused} user=u password=Sekr1tA dbname=db"),
        format!("host=127.0.0.1 port={refused} user=u PASSWORD='Sekr1tA' dbname=db"),
    ];
    for url in &urls {
        let err = match Store::open_url(url) {
            Ok(_) => panic!("{url}: opened"),
            Err(e) => e,
        };
        let mut next: Option<&dyn std::error::Error> = Some(&err);
        let mut depth = 0;
        while let Some(e) = next {
            let (display, debug) = (e.to_string(), format!("{e:?}"));
            for text in [&display, &debug] {
                assert!(
                    !text.contains("Sekr1tA"),
                    "{url}: the password is in an error (depth {depth}): {text}"
                );
            }
            next = e.source();
            depth += 1;
        }
        eprintln!("{url}: {}", chain(&err));
    }
}

/// A pgbouncer in front of the test server, run as the cluster's user
/// (pgbouncer refuses root), killed when dropped.
struct Bouncer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        // The child may be runuser: pgbouncer's own pid is in its pidfile.
        if let Ok(pid) = std::fs::read_to_string(self._dir.path().join("pgbouncer.pid")) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                kill(pid, "TERM");
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pgbouncer(test: &str, url: &str, pool_mode: &str) -> Option<Bouncer> {
    let bin = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let Some(bin) = bin else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{test}: CI=true but pgbouncer is not installed (.ci/run installs it)");
        }
        eprintln!("{test}: skipping: pgbouncer is not installed (apt-get install pgbouncer)");
        return None;
    };
    let upstream = pgtest::host_port(url);
    let (host, port) = upstream.rsplit_once(':').unwrap();
    let db = url.split('?').next().unwrap().rsplit('/').next().unwrap().to_owned();
    let listen = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("pgbouncer.ini");
    std::fs::write(dir.path().join("users.txt"), "\"postgres\" \"\"\n").unwrap();
    std::fs::write(
        &ini,
        format!(
            "[databases]\n{db} = host={host} port={port} dbname={db}\n\
             [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {listen}\n\
             unix_socket_dir =\nauth_type = trust\nauth_file = {}\n\
             pool_mode = {pool_mode}\ndefault_pool_size = 20\npidfile = {}\n\
             ignore_startup_parameters = extra_float_digits,options,application_name\n",
            dir.path().join("users.txt").display(),
            dir.path().join("pgbouncer.pid").display()
        ),
    )
    .unwrap();
    let mut cmd = if unsafe_free_is_root() {
        Command::new("chown").args(["-R", "postgres"]).arg(dir.path()).status().unwrap();
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", bin]);
        c
    } else {
        Command::new(bin)
    };
    let child = cmd.arg(&ini).stdin(Stdio::null()).stdout(Stdio::null()).spawn().unwrap();
    let bouncer = Bouncer { child, port: listen, _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", listen)).is_err() {
        assert!(Instant::now() < deadline, "{test}: pgbouncer did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(bouncer)
}

/// Behind pgbouncer in transaction mode a session advisory lock and a
/// session setting do not hold (the next statement may run on another
/// server session): the store refuses to open there, with an error that
/// says why. Behind session pooling it works as it does directly.
#[test]
fn a_transaction_mode_pooler_is_refused_and_session_pooling_works() {
    let _g = shared();
    let Some(url) = pgtest::url("pooler") else { return };
    let Some(tx_mode) = pgbouncer("pooler", &url, "transaction") else { return };
    let ns = pgtest::fresh_namespace("pooler");
    let via = pgtest::with_namespace(&pgtest::via_port(&url, tx_mode.port), &ns);
    for attempt in 0..5 {
        let err = match Store::open_url(&via) {
            Ok(_) => panic!("attempt {attempt}: opened a store behind a transaction-mode pooler"),
            Err(e) => e,
        };
        let text = chain(&err);
        assert!(matches!(err, Error::Backend { .. }), "{err:?}");
        assert!(text.contains("transaction"), "the error names the pooler's mode: {text}");
    }
    drop(tx_mode);
    let Some(session) = pgbouncer("pooler", &url, "session") else { return };
    let via = pgtest::with_namespace(&pgtest::via_port(&url, session.port), &ns);
    let (a, b) = (Store::open_url(&via).unwrap(), Store::open_url(&via).unwrap());
    let k = StashKey::new("k").unwrap();
    a.save(&k, &1).unwrap();
    let held = a.lock(&k).unwrap();
    assert!(matches!(b.try_lock(&k), Err(Error::Locked { .. })), "the lock excludes");
    drop(held);
    assert_eq!(b.load::<i32>(&k).unwrap().unwrap().into_value(), 1);
}

/// A store that is opened and never used holds no connection (a forked
/// child of a process that only opened it has nothing to abandon); once
/// used, its pool keeps one.
#[test]
fn a_store_that_is_never_used_holds_no_connection() {
    let _server = shared();
    let Some(url) = pgtest::url("idle") else { return };
    let app = pgtest::fresh_namespace("idle").replace('-', "_");
    let full = format!("{}&application_name={app}", pgtest::with_namespace(&url, &app));
    let store = Store::open_url(&full).unwrap();
    let sessions = || {
        pgtest::psql(
            &url,
            &format!(
                "SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE application_name = {}",
                pgtest::lit(&app)
            ),
        )
    };
    assert_eq!(sessions(), "0", "opened, never used");
    store.save(&StashKey::new("k").unwrap(), &1).unwrap();
    assert_eq!(sessions(), "1", "one pooled after a save");
    drop(store);
}

/// Round trips per verb on a warm connection (its statements already
/// prepared), counted by the proxy in front of the server: a small save,
/// a load and a clear cost one each; a save under a condition
/// (create-if-absent, refused or not; unchanged-since) at most two.
#[test]
fn small_verbs_cost_one_round_trip_and_conditional_saves_at_most_two() {
    let _g = shared();
    let Some(url) = pgtest::url("round_trips") else { return };
    let proxy = pgtest::Proxy::start(&pgtest::host_port(&url));
    let ns = pgtest::fresh_namespace("round_trips");
    let s =
        Store::open_url(&pgtest::with_namespace(&pgtest::via_port(&url, proxy.port), &ns)).unwrap();
    let k = StashKey::new("k").unwrap();
    let value = "x".repeat(1024);
    let opts = SaveOptions::new();
    let count = |f: &mut dyn FnMut()| {
        let before = proxy.exchanges();
        f();
        proxy.exchanges() - before
    };
    // The first round prepares the statements; the second is measured.
    let mut last = Vec::new();
    for _ in 0..2 {
        last = vec![
            ("save", 1, count(&mut || drop(s.save(&k, &value).unwrap()))),
            ("load", 1, count(&mut || assert!(s.load::<String>(&k).unwrap().is_some()))),
            ("list", 1, count(&mut || assert_eq!(s.list().unwrap().len(), 1))),
            ("clear", 1, count(&mut || assert!(s.clear(&k).unwrap()))),
            (
                "save if absent",
                2,
                count(&mut || drop(s.save_if(&k, &value, &opts, Precondition::Absent).unwrap())),
            ),
            (
                "save if absent, refused",
                2,
                count(&mut || {
                    let refused = s.save_if(&k, &value, &opts, Precondition::Absent);
                    assert!(matches!(refused, Err(Error::StashExists { .. })), "{refused:?}");
                }),
            ),
        ];
        let digest = s.save(&k, &value).unwrap().digest;
        last.push((
            "save if unchanged",
            2,
            count(&mut || {
                drop(s.save_if(&k, &value, &opts, Precondition::Unchanged(digest)).unwrap())
            }),
        ));
    }
    let over: Vec<_> = last.iter().filter(|(_, most, got)| got > most).collect();
    eprintln!("round trips per verb: {last:?}");
    assert!(over.is_empty(), "verbs over their round trips (verb, at most, counted): {over:?}");
}

/// A batch of 1,000 stashes of 1 KiB on PostgreSQL is one transaction:
/// every row it wrote carries the same `xmin` (one commit, not 1,000),
/// and every stash loads back.
#[test]
fn a_batch_of_a_thousand_stashes_is_one_transaction() {
    let _g = shared();
    let Some(url) = pgtest::url("batch_one_tx") else { return };
    let ns = pgtest::fresh_namespace("batch_one_tx");
    let s = Store::open_url(&pgtest::with_namespace(&url, &ns)).unwrap();
    let keys: Vec<StashKey> =
        (0..1000).map(|i| StashKey::new(format!("b{i:04}")).unwrap()).collect();
    let value = "v".repeat(1024);
    let opts = SaveOptions::new();
    let mut batch = s.batch();
    for k in &keys {
        batch.add(k, &value, &opts).unwrap();
    }
    assert_eq!(batch.commit().unwrap().len(), 1000);
    let sql = format!(
        "SELECT count(*), count(DISTINCT xmin::text) FROM safestash_stashes WHERE namespace = {}",
        pgtest::lit(&ns)
    );
    assert_eq!(pgtest::psql(&url, &sql), "1000|1", "rows, and the transactions that wrote them");
    for k in [&keys[0], &keys[499], &keys[999]] {
        assert_eq!(s.load::<String>(k).unwrap().unwrap().into_value(), value);
    }
}
