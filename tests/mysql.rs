//! The MySQL/MariaDB store against a real server, with real processes: the
//! server SIGKILLed again and again during a loop of saves, a client
//! SIGKILLed mid-save, a server that does not flush at every commit, damage
//! done with raw SQL, eight processes racing on shared keys, the journal's
//! eight-process test, and hostile keys and namespaces.
//!
//! `SAFESTASH_TEST_MYSQL_URL` names the database; the test that kills the
//! server also needs `SAFESTASH_TEST_MYSQL_CMD` (a file with the server's
//! command line, one argument a line) and `SAFESTASH_TEST_MYSQL_PIDFILE`.
//! `.ci/mariadb.sh` (run by `.ci/run`) starts a throwaway MariaDB and
//! exports them. Unset, a test prints why it skips; under `CI=true` it
//! fails instead.
#![cfg(feature = "mysql")]

mod bigvalue;
mod harness;
mod mytest;
mod proxy;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use bigvalue::{Big, BigCheck, PIECE};
use mysql::prelude::Queryable;
use safestash::journal::{Aggregate, Change, Derivation, Operation};
use safestash::{Error, Precondition, SaveOptions, StashKey, Store};
use serde::{Deserialize, Serialize};

/// Tests that kill the server or change its global settings take this for
/// writing; the others for reading, so nothing else runs meanwhile.
static SERVER: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    SERVER.read().unwrap_or_else(|e| e.into_inner())
}

fn exclusive() -> RwLockWriteGuard<'static, ()> {
    SERVER.write().unwrap_or_else(|e| e.into_inner())
}

/// A store in a fresh namespace and its URL, or `None` (printed) to skip.
fn store(test: &str) -> Option<(Store, String)> {
    let url = mytest::url(test)?;
    let ns = mytest::fresh_namespace(test);
    let full = mytest::with_namespace(&url, &ns);
    Some((Store::open_url(&full).unwrap(), full))
}

fn namespace_of(full: &str) -> String {
    full.rsplit("namespace=").next().unwrap().to_owned()
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

// ---------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------

/// The children these tests spawn run this test binary again, with the
/// role in `SAFESTASH_MY_CHILD`.
fn spawn_child(role: &str, url: &str, extra: &[(&str, String)]) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env("SAFESTASH_MY_CHILD", role)
        .env("SAFESTASH_MY_CHILD_URL", url)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn child")
}

const JOURNAL_OP: &str = "fleet upgrade";
const JOURNAL_PROGRESS: usize = 10;

fn journal_steps() -> Vec<Change> {
    harness::journal_steps(JOURNAL_PROGRESS)
}

/// Not a test of its own: the body of the child processes.
#[test]
fn child_entry() {
    let Ok(role) = std::env::var("SAFESTASH_MY_CHILD") else { return };
    let url = std::env::var("SAFESTASH_MY_CHILD_URL").unwrap();
    let key = StashKey::new("k").unwrap();
    let env_num = |name: &str| -> u64 { std::env::var(name).unwrap().parse().unwrap() };
    match role.as_str() {
        // Saves 1, 2, 3, ... forever, printing `ack N` once save N returned
        // Ok; retries while the server is down.
        "saver" => {
            let len = env_num("SAFESTASH_MY_LEN") as usize;
            let store = loop {
                match Store::open_url(&url) {
                    Ok(s) => break s,
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            };
            let mut n = 1;
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
        // Holds the key's lock and saves big (chunked) values in a loop.
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
            let id = env_num("SAFESTASH_MY_ID") as u32;
            let store = Store::open_url(&url).unwrap();
            let own = StashKey::new(format!("own-{id}")).unwrap();
            let mut rng = harness::Rng::new(u64::from(id) * 7919 + 1);
            for i in 0..100u64 {
                let shared = StashKey::new(format!("shared-{}", rng.below(3))).unwrap();
                let value = Tagged::new(i, id, 500 + rng.below(2000) as usize);
                match rng.below(3) {
                    0 => {
                        let r = store.save(&shared, &value).unwrap();
                        // A conditional clear only removes our own stash.
                        if rng.below(2) == 0 {
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
        // Saves a value of SAFESTASH_MY_BIG_MIB MiB made on the fly, loads
        // it back into a checker, and prints the figures.
        "big" => {
            let mib = env_num("SAFESTASH_MY_BIG_MIB");
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
            let worker = env_num("SAFESTASH_MY_ID");
            let go = PathBuf::from(std::env::var("SAFESTASH_MY_GO").unwrap());
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
                &mut harness::Rng::new(worker),
                Duration::from_micros(2000),
                deadline,
            );
            println!("journal done {conflicts}");
        }
        other => panic!("unknown child role {other}"),
    }
}

/// This process's peak resident set (`VmHWM`), in KiB.
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

// ---------------------------------------------------------------------------
// Server settings
// ---------------------------------------------------------------------------

/// Sets a global variable and puts the old value back when dropped.
struct Global {
    url: String,
    name: &'static str,
    old: String,
}

impl Global {
    fn set(url: &str, name: &'static str, value: &str) -> Global {
        let mut c = mytest::raw(url);
        let old: String =
            c.query_first(format!("SELECT CAST(@@GLOBAL.{name} AS CHAR)")).unwrap().unwrap();
        c.query_drop(format!("SET GLOBAL {name} = {value}")).unwrap();
        Global { url: url.to_owned(), name, old }
    }
}

impl Drop for Global {
    fn drop(&mut self) {
        let mut c = mytest::raw(&self.url);
        c.query_drop(format!("SET GLOBAL {} = {}", self.name, self.old)).unwrap();
    }
}

#[test]
fn a_server_that_does_not_flush_at_every_commit_is_refused_unless_the_url_says_server() {
    let _g = exclusive();
    let Some(url) = mytest::url("durability") else { return };
    let ns = mytest::fresh_namespace("durability");
    let full = mytest::with_namespace(&url, &ns);
    Store::open_url(&full).expect("the test server flushes at every commit");
    {
        let _flush = Global::set(&url, "innodb_flush_log_at_trx_commit", "2");
        let err = Store::open_url(&full).expect_err("a server flushing once a second is refused");
        let msg = chain(&err);
        println!("refused: {msg}");
        assert!(matches!(err, Error::Backend { .. }), "{err:?}");
        assert!(msg.contains("innodb_flush_log_at_trx_commit = 2"), "{msg}");
        assert!(msg.contains("durability=server"), "{msg}");
        // The operator's choice: the server's settings decide.
        let s = Store::open_url(&format!("{full}&durability=server")).unwrap();
        let k = StashKey::new("k").unwrap();
        s.save(&k, &1).unwrap();
        assert_eq!(*s.load::<i32>(&k).unwrap().unwrap().value(), 1);
    }
    let mut c = mytest::raw(&url);
    let log_bin: String = c.query_first("SELECT CAST(@@GLOBAL.log_bin AS CHAR)").unwrap().unwrap();
    if log_bin == "1" || log_bin.eq_ignore_ascii_case("on") {
        let _sync = Global::set(&url, "sync_binlog", "0");
        let err = Store::open_url(&full).expect_err("an unsynced binary log is refused");
        let msg = chain(&err);
        println!("refused: {msg}");
        assert!(msg.contains("sync_binlog = 0"), "{msg}");
        Store::open_url(&format!("{full}&durability=server")).unwrap();
    } else {
        eprintln!("durability: the binary log is off on this server; sync_binlog not checked");
    }
    Store::open_url(&full).expect("opens again once the server flushes");
}

// ---------------------------------------------------------------------------
// Raw SQL damage, chunks, max_allowed_packet
// ---------------------------------------------------------------------------

fn chunk_count(url: &str, ns: &str, key: &str) -> u64 {
    mytest::raw(url)
        .exec_first(
            "SELECT COUNT(*) FROM safestash_chunks WHERE namespace = ? AND `key` = ?",
            (ns, key),
        )
        .unwrap()
        .unwrap()
}

#[test]
fn chunked_stashes_replace_quarantine_and_show_raw_sql_damage() {
    let _g = shared();
    let Some((s, full)) = store("chunked") else { return };
    let url = mytest::url("chunked").unwrap();
    let ns = namespace_of(&full);
    let k = StashKey::new("k").unwrap();
    // About 4.6 MiB of JSON: five chunks of 1 MiB.
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
    // A conditional save that fails changes nothing.
    let err = s.save_if(&k, &big, &SaveOptions::new(), Precondition::Absent).unwrap_err();
    assert!(matches!(err, Error::StashExists { .. }), "{err:?}");
    assert_eq!(s.load::<Tagged>(&k).unwrap().unwrap().meta().digest, r2.digest);
    let mut raw = mytest::raw(&url);
    // A flipped byte inside a chunk: load and verify find it.
    raw.exec_drop(
        "UPDATE safestash_chunks SET bytes = CONCAT(LEFT(bytes, 1000), \
         CHAR(ASCII(SUBSTRING(bytes, 1001, 1)) ^ 1), SUBSTRING(bytes, 1002)) \
         WHERE namespace = ? AND `key` = 'k' AND seq = 1",
        (&ns,),
    )
    .unwrap();
    let err = s.load::<Tagged>(&k).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    assert!(s.verify().unwrap().iter().any(|r| matches!(r.result, Err(Error::Corrupt { .. }))));
    // A missing chunk is a truncated envelope.
    s.save(&k, &big).unwrap();
    raw.exec_drop(
        "DELETE FROM safestash_chunks WHERE namespace = ? AND `key` = 'k' AND seq = 2",
        (&ns,),
    )
    .unwrap();
    let err = s.load::<Tagged>(&k).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    assert!(s.verify().unwrap().iter().any(|r| matches!(r.result, Err(Error::Corrupt { .. }))));
    // A truncated last chunk.
    s.save(&k, &big).unwrap();
    raw.exec_drop(
        "UPDATE safestash_chunks SET bytes = LEFT(bytes, 10) WHERE namespace = ? AND `key` = 'k' \
         AND seq = (SELECT MAX(seq) FROM (SELECT seq FROM safestash_chunks WHERE namespace = ? \
         AND `key` = 'k') m)",
        (&ns, &ns),
    )
    .unwrap();
    let err = s.load::<Tagged>(&k).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    // A chunked row copied to another key (its chunks with it).
    s.save(&k, &big).unwrap();
    raw.exec_drop(
        "INSERT INTO safestash_stashes (namespace, `key`, envelope, digest, size, created, chunks) \
         SELECT namespace, 'copy', envelope, digest, size, created, chunks FROM safestash_stashes \
         WHERE namespace = ? AND `key` = 'k'",
        (&ns,),
    )
    .unwrap();
    raw.exec_drop(
        "INSERT INTO safestash_chunks (namespace, `key`, seq, bytes) SELECT namespace, 'copy', \
         seq, bytes FROM safestash_chunks WHERE namespace = ? AND `key` = 'k'",
        (&ns,),
    )
    .unwrap();
    let err = s.load::<Tagged>(&StashKey::new("copy").unwrap()).unwrap_err();
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

/// Loads of a chunked stash racing its saves: each load reads one
/// consistent snapshot, so it returns a whole value whose header it
/// verified, or (a load over 4 MiB reads twice) says it changed.
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
fn chunks_fit_a_small_max_allowed_packet() {
    let _g = exclusive();
    let Some(url) = mytest::url("packet") else { return };
    let ns = mytest::fresh_namespace("packet");
    let full = mytest::with_namespace(&url, &ns);
    let k = StashKey::new("k").unwrap();
    let big = Tagged::new(3, 1, 300_000);
    let r = {
        // New sessions take the global value as theirs.
        let _packet = Global::set(&url, "max_allowed_packet", "262144");
        let s = Store::open_url(&full).unwrap();
        let r = s.save(&k, &big).unwrap();
        assert!(r.bytes > 1 << 20);
        assert_eq!(s.load::<Tagged>(&k).unwrap().unwrap().into_value(), big);
        r
    };
    // 128 KiB chunks: half the packet.
    assert_eq!(chunk_count(&url, &ns, "k"), r.bytes.div_ceil(128 << 10));
    let s = Store::open_url(&full).unwrap();
    assert_eq!(s.load::<Tagged>(&k).unwrap().unwrap().meta().digest, r.digest);
}

#[test]
fn a_stash_larger_than_memory_streams_in_and_out_in_bounded_memory() {
    let _g = shared();
    let Some((_, url)) = store("big") else { return };
    let mib: u64 = std::env::var("SAFESTASH_TEST_MY_BIG_MIB").map_or(128, |v| v.parse().unwrap());
    let mut child =
        KillOnDrop(spawn_child("big", &url, &[("SAFESTASH_MY_BIG_MIB", mib.to_string())]));
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

// ---------------------------------------------------------------------------
// Timeouts
// ---------------------------------------------------------------------------

#[test]
fn a_held_lock_bounds_other_writers_by_lock_timeout() {
    let _g = shared();
    let Some((_, url)) = store("lock_timeout") else { return };
    let s = Store::open_url(&format!("{url}&lock_timeout=1s")).unwrap();
    let k = StashKey::new("k").unwrap();
    let lock = s.lock(&k).unwrap();
    lock.save(&1).unwrap();
    // Another worker (thread, store and connection of its own).
    let other = Store::open_url(&format!("{url}&lock_timeout=1s")).unwrap();
    let (o, key) = (other.clone(), k.clone());
    let (err, waited, try_locked) = std::thread::spawn(move || {
        let start = Instant::now();
        let err = o.save(&key, &2).unwrap_err();
        (err, start.elapsed(), o.try_lock(&key).is_ok())
    })
    .join()
    .unwrap();
    assert!(matches!(err, Error::Locked { .. }), "{err:?}");
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(5), "{waited:?}");
    assert!(!try_locked, "the lock was taken twice");
    drop(lock);
    let (o, key) = (other.clone(), k.clone());
    std::thread::spawn(move || o.save(&key, &2).unwrap()).join().unwrap();
    assert_eq!(*s.load::<i32>(&k).unwrap().unwrap().value(), 2);
}

#[test]
fn a_silent_server_fails_each_call_within_its_timeout() {
    let _g = shared();
    let Some((_, url)) = store("silent") else { return };
    let proxy = proxy::Proxy::start(&mytest::host_port(&url));
    let via = mytest::via_port(&url, proxy.port);
    let s = Store::open_url(&format!("{via}&timeout=1s&lock_timeout=1s")).unwrap();
    let k = StashKey::new("k").unwrap();
    s.save(&k, &1).unwrap();
    proxy.freeze();
    for what in ["save", "load"] {
        let start = Instant::now();
        let err = match what {
            "save" => s.save(&k, &2).map(drop).unwrap_err(),
            _ => s.load::<i32>(&k).map(drop).unwrap_err(),
        };
        let took = start.elapsed();
        let msg = chain(&err);
        println!("{what} on a silent server: {took:?}: {msg}");
        assert!(msg.contains("timed out"), "{msg}");
        // One read bound (timeout + lock_timeout), and connecting anew.
        assert!(took < Duration::from_secs(6), "{what} took {took:?}");
    }
    proxy.thaw();
    // The save that timed out may have landed or not; nothing is torn.
    let v = *s.load::<i32>(&k).unwrap().unwrap().value();
    assert!(v == 1 || v == 2, "{v}");
    s.save(&k, &3).unwrap();
}

/// A `COMMIT` that reaches the server after the client's side of the
/// connection is gone (the reply is lost): the save is never reported
/// `Ok`, its error says it may have committed, and nothing is lost: the
/// key holds the new stash (the commit ran) or the old one, and no lock
/// stays held.
#[test]
fn a_commit_whose_reply_is_lost_is_not_reported_ok_and_loses_nothing() {
    let _g = shared();
    let Some((_, url)) = store("lost_commit") else { return };
    let proxy = proxy::Proxy::start(&mytest::host_port(&url));
    let s = Store::open_url(&mytest::via_port(&url, proxy.port)).unwrap();
    let k = StashKey::new("k").unwrap();
    s.save(&k, &Tagged::new(1, 0, 100)).unwrap();
    for (round, len) in [(2u64, 100usize), (3, 300_000)] {
        proxy.cut_after(b"COMMIT; DO RELEASE_LOCK");
        let err = s.save(&k, &Tagged::new(round, 0, len)).expect_err("the reply was lost");
        let msg = chain(&err);
        println!("lost commit reply, round {round}: {msg}");
        assert!(msg.contains("may have committed"), "{msg}");
        let got = s.load::<Tagged>(&k).unwrap().expect("a stash").into_value();
        assert!(got.intact());
        assert!(got.n == round || got.n == round - 1, "found {}", got.n);
        // The session that held the key's lock is gone with the connection.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match s.try_lock(&k) {
                Ok(_) => break,
                Err(Error::Locked { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("the lock stayed held: {e}"),
            }
        }
    }
    assert_eq!(proxy.cuts(), 2);
}

// ---------------------------------------------------------------------------
// The tenant guard
// ---------------------------------------------------------------------------

fn tenant(n: u128) -> safestash::reconcile::CanonicalUuid {
    safestash::reconcile::CanonicalUuid::from(uuid::Uuid::from_u128(
        0xabcdef01_2345_4678_9abc_def000000000 | n,
    ))
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The tenant guard on MySQL: the whole plan stashed before any delete,
/// a failed delete kept for the rerun, restores by choice.
#[test]
fn tenant_reconcile_on_mysql_stashes_before_delete_keeps_a_failed_delete_and_restores() {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    use safestash::reconcile::{IdSet, Limits, Reconciler, plan, restore_tenant, tenant_key};
    let _g = shared();
    let Some((store, _)) = store("tenants") else { return };
    let name = "mysql";
    {
        let db: RefCell<BTreeMap<_, String>> =
            RefCell::new((1..=20).map(|n| (tenant(n), format!("data of {n}"))).collect());
        let local: IdSet<_> = (1..=20).map(tenant).collect();
        let truth: IdSet<_> = (3..=20).map(tenant).collect();
        let p = plan(&local, &truth);
        let r = Reconciler::new(&store).limits(Limits::default().max_share(0.5));
        let export = |id: &_| -> Result<String, BoxError> { Ok(db.borrow()[id].clone()) };
        // The first delete of tenant 1 fails half way.
        let report = r
            .execute(&p, &local, &truth, export, |id| -> Result<(), BoxError> {
                if *id == tenant(1) {
                    db.borrow_mut().insert(*id, "half deleted".into());
                    return Err("connection reset".into());
                }
                db.borrow_mut().remove(id);
                Ok(())
            })
            .unwrap();
        assert!(report.stopped.is_some(), "{name}");
        assert_eq!(report.stashed.len(), 2, "{name}: the whole plan stashed before any delete");
        let snapshots = store.namespace("tenants").unwrap();
        let key = tenant_key(&tenant(1));
        assert_eq!(snapshots.load::<String>(&key).unwrap().unwrap().value(), "data of 1");
        // The rerun never overwrites the full snapshot.
        let rerun = r
            .execute(&p, &local, &truth, export, |id| -> Result<(), BoxError> {
                db.borrow_mut().remove(id);
                Ok(())
            })
            .unwrap();
        assert!(rerun.is_complete(), "{name}: {rerun}");
        assert_eq!(rerun.deleted, [tenant(1), tenant(2)], "{name}");
        assert_eq!(snapshots.load::<String>(&key).unwrap().unwrap().value(), "data of 1");
        // Restored by choice: the full copy, which is then cleared.
        let stashes = r.tenant_stashes(&tenant(1)).unwrap();
        assert_eq!(stashes.len(), 2, "{name}");
        r.restore_tenant_stash(&tenant(1), &stashes[0].key, &mut |s: safestash::Stashed<
            String,
        >| {
            db.borrow_mut().insert(tenant(1), s.into_value());
            Ok::<(), BoxError>(())
        })
        .unwrap();
        assert_eq!(db.borrow()[&tenant(1)], "data of 1", "{name}");
        assert!(snapshots.load::<String>(&key).unwrap().is_none(), "{name}");
        // Tenant 2 comes back through restore_tenant.
        restore_tenant(&store, &tenant(2), &mut |s: safestash::Stashed<String>| {
            db.borrow_mut().insert(tenant(2), s.into_value());
            Ok::<(), BoxError>(())
        })
        .unwrap();
        assert_eq!(db.borrow()[&tenant(2)], "data of 2", "{name}");
    }
}

// ---------------------------------------------------------------------------
// The CLI
// ---------------------------------------------------------------------------

#[test]
fn cli_lists_verifies_and_quarantines_a_mysql_store() {
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
    mytest::raw(&url)
        .exec_drop(
            "UPDATE safestash_stashes SET envelope = CONCAT(LEFT(envelope, 40), \
             CHAR(ASCII(SUBSTRING(envelope, 41, 1)) ^ 1), SUBSTRING(envelope, 42)) \
             WHERE namespace = ? AND `key` = 'bad'",
            (namespace_of(&url),),
        )
        .unwrap();
    let (code, out) = run(&["verify", &url]);
    assert_eq!(code, Some(1), "damage inside the database is found: {out}");
    assert_eq!(run(&["quarantine", "--yes", &url, "bad"]).0, Some(0));
    assert_eq!(run(&["verify", &url]).0, Some(0));
    assert_eq!(*s.load::<i32>(&good).unwrap().unwrap().value(), 1);
}

// ---------------------------------------------------------------------------
// Hostile input, secrets
// ---------------------------------------------------------------------------

#[test]
fn hostile_keys_and_namespaces_are_stored_and_found_as_themselves() {
    let _g = shared();
    let Some(url) = mytest::url("hostile") else { return };
    let raw_names =
        ["o'hare", "back\\slash", "100%_off", "x' OR '1'='1", "\"quoted\"; DROP TABLE t"];
    let base = mytest::fresh_namespace("hostile");
    let mut stores = Vec::new();
    for (i, name) in raw_names.iter().enumerate() {
        // A namespace is a key: the escaped form of a hostile name.
        let ns = StashKey::from_any(&format!("{base}{name}"));
        let s = Store::open_url(&mytest::with_namespace(&url, ns.as_str())).unwrap();
        for (j, key) in raw_names.iter().enumerate() {
            s.save(&StashKey::from_any(key), &(i * 10 + j)).unwrap();
        }
        stores.push((ns, s));
    }
    let mut raw = mytest::raw(&url);
    for (i, (ns, s)) in stores.iter().enumerate() {
        for (j, key) in raw_names.iter().enumerate() {
            let k = StashKey::from_any(key);
            assert_eq!(*s.load::<usize>(&k).unwrap().unwrap().value(), i * 10 + j, "{key}");
            // Stored as itself: the row's key and namespace are the bytes.
            let n: u64 = raw
                .exec_first(
                    "SELECT COUNT(*) FROM safestash_stashes WHERE namespace = ? AND `key` = ?",
                    (ns.as_str(), k.as_str()),
                )
                .unwrap()
                .unwrap();
            assert_eq!(n, 1, "{ns}/{k}");
        }
        let listed: Vec<String> =
            s.list().unwrap().into_iter().map(|i| i.key.to_string()).collect();
        assert_eq!(listed.len(), raw_names.len(), "{listed:?}");
    }
    // A key that differs only in case is another key (binary columns).
    let (_, s) = &stores[0];
    s.save(&StashKey::new("Case").unwrap(), &1).unwrap();
    s.save(&StashKey::new("case").unwrap(), &2).unwrap();
    assert_eq!(*s.load::<i32>(&StashKey::new("Case").unwrap()).unwrap().unwrap().value(), 1);
}

#[test]
fn a_mariadb_url_opens_the_same_store() {
    let _g = shared();
    let Some((s, url)) = store("scheme") else { return };
    let k = StashKey::new("k").unwrap();
    s.save(&k, &"saved through mysql://").unwrap();
    let other = Store::open_url(&url.replacen("mysql://", "mariadb://", 1)).unwrap();
    assert_eq!(other.load::<String>(&k).unwrap().unwrap().value(), "saved through mysql://");
    assert!(other.dir().to_string_lossy().starts_with("mysql://"), "{}", other.dir().display());
}

/// A TLS parameter in a build without TLS is refused when the store is
/// opened (the client would panic at its first connection).
#[cfg(not(feature = "mysql-tls"))]
#[test]
fn tls_without_the_feature_is_refused_not_a_panic() {
    let _g = shared();
    let Some(url) = mytest::url("tls_refused") else { return };
    for param in ["tls=on", "root_cert_path=/nonexistent/ca.pem"] {
        let err = Store::open_url(&format!("{url}?{param}")).expect_err("refused");
        assert!(chain(&err).contains("mysql-tls"), "{}", chain(&err));
    }
}

/// A free port on 127.0.0.1.
#[cfg(feature = "mysql-tls")]
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// TLS (feature `mysql-tls`) against a MariaDB of its own that refuses
/// plain connections (`require_secure_transport`), with certificates made
/// by openssl: the store connects when the server's certificate chains to
/// `root_cert_path`, and is refused in plain text or against another CA.
#[cfg(feature = "mysql-tls")]
#[test]
fn tls_verifies_the_server_against_root_cert_path() {
    let _g = shared();
    let Some(srv) = Server::from_env("tls") else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sh = |cmd: &str| {
        let out = Command::new("sh").arg("-c").arg(cmd).current_dir(d).output().unwrap();
        assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
    };
    for ca in ["ca", "other"] {
        sh(&format!(
            "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN={ca} \
             -keyout {ca}.key -out {ca}.pem 2>/dev/null"
        ));
    }
    sh("openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key \
        -out server.csr 2>/dev/null && printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext && \
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -extfile san.ext -out server.pem 2>/dev/null");
    sh(&format!(
        "mariadb-install-db --no-defaults --user=root --datadir={} \
         --auth-root-authentication-method=normal --skip-test-db >install.log 2>&1",
        d.join("data").display()
    ));
    let port = free_port();
    let mut server = KillOnDrop(
        Command::new(&srv.cmd[0])
            .args(["--no-defaults", "--user=root", "--bind-address=127.0.0.1"])
            .arg(format!("--datadir={}", d.join("data").display()))
            .arg(format!("--port={port}"))
            .arg(format!("--socket={}", d.join("sock").display()))
            .arg(format!("--pid-file={}", d.join("pid").display()))
            .arg(format!("--log-error={}", d.join("error.log").display()))
            .arg(format!("--ssl-ca={}", d.join("ca.pem").display()))
            .arg(format!("--ssl-cert={}", d.join("server.pem").display()))
            .arg(format!("--ssl-key={}", d.join("server.key").display()))
            .arg("--require-secure-transport=ON")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let sock = d.join("sock");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let made = Command::new("mariadb")
            .args(["--no-defaults", "-uroot", "-S"])
            .arg(&sock)
            .args(["-e", "CREATE DATABASE IF NOT EXISTS tls_test"])
            .output()
            .unwrap();
        if made.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "the TLS server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let base = format!("mysql://root@127.0.0.1:{port}/tls_test");
    let ca = d.join("ca.pem");
    let s = Store::open_url(&format!("{base}?root_cert_path={}", ca.display())).unwrap();
    let k = StashKey::new("k").unwrap();
    s.save(&k, &"over TLS").unwrap();
    assert_eq!(s.load::<String>(&k).unwrap().unwrap().value(), "over TLS");
    let plain = Store::open_url(&base).map(drop).expect_err("plain text refused by the server");
    println!("refused: plain text: {}", chain(&plain));
    let other = d.join("other.pem");
    let wrong = Store::open_url(&format!("{base}?root_cert_path={}", other.display()))
        .map(drop)
        .expect_err("a certificate of another CA is refused");
    println!("refused: another CA: {}", chain(&wrong));
    assert!(chain(&wrong).to_lowercase().contains("cert"), "{}", chain(&wrong));
    let _ = server.0.kill();
    let _ = server.0.wait();
}

#[test]
fn passwords_never_reach_an_error_or_its_sources() {
    let _g = shared();
    let Some(url) = mytest::url("secrets") else { return };
    let authority = mytest::host_port(&url);
    let db = url.rsplit('/').next().unwrap().split('?').next().unwrap();
    for bad in [
        format!("mysql://root:hunter2-secret@{authority}/{db}?namespace=x"),
        format!("mysql://nobody:hunter2-secret@{authority}/{db}"),
        format!("mysql://root:hunter2-secret@127.0.0.1:1/{db}?timeout=2s"),
        format!("mysql://root@{authority}/{db}?password=hunter2-secret&bogus=1"),
        format!("mysql://root:hunter2-secret@{authority}/{db}?durability=never"),
    ] {
        let err = Store::open_url(&bad).expect_err("refused");
        let all = format!("{} {err:?}", chain(&err));
        assert!(!all.contains("hunter2"), "{all}");
    }
    // A store's Debug and location hold no password either.
    let with_pw = url.replacen("://root@", "://root:@", 1);
    if let Ok(s) = Store::open_url(&with_pw) {
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}

// ---------------------------------------------------------------------------
// Processes: killed clients, killed servers, races, the journal
// ---------------------------------------------------------------------------

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

/// The server the tests may kill and restart.
struct Server {
    cmd: Vec<String>,
    pidfile: PathBuf,
    url: String,
    /// The server this test started (the first one is `.ci/mariadb.sh`'s).
    child: Option<Child>,
}

impl Server {
    fn from_env(test: &str) -> Option<Server> {
        let url = mytest::url(test)?;
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        match (var("SAFESTASH_TEST_MYSQL_CMD"), var("SAFESTASH_TEST_MYSQL_PIDFILE")) {
            (Some(cmd), Some(pidfile)) => {
                let cmd = std::fs::read_to_string(cmd).unwrap();
                let cmd = cmd.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect();
                Some(Server { cmd, pidfile: pidfile.into(), url, child: None })
            }
            _ => {
                if std::env::var("CI").as_deref() == Ok("true") {
                    panic!(
                        "{test}: CI=true but SAFESTASH_TEST_MYSQL_CMD or \
                         SAFESTASH_TEST_MYSQL_PIDFILE is not set"
                    );
                }
                eprintln!("{test}: skipping: SAFESTASH_TEST_MYSQL_CMD is not set (.ci/mariadb.sh)");
                None
            }
        }
    }

    fn pid(&self) -> i32 {
        std::fs::read_to_string(&self.pidfile).unwrap().trim().parse().unwrap()
    }

    /// SIGKILL, and wait until the process is gone.
    fn kill9(&mut self) {
        let pid = self.pid();
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat.rsplit(')').next().unwrap_or("").trim_start().starts_with(['Z', 'X']) {
                break;
            }
            assert!(Instant::now() < deadline, "the server survived SIGKILL");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts it again with the same command line, and waits until it
    /// answers.
    fn start(&mut self) {
        let _ = std::fs::remove_file(&self.pidfile);
        let child = Command::new(&self.cmd[0])
            .args(&self.cmd[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(120);
        let base = self.url.split('?').next().unwrap().to_owned();
        loop {
            let opts = mysql::OptsBuilder::from_opts(mysql::Opts::from_url(&base).unwrap())
                .prefer_socket(false)
                .tcp_connect_timeout(Some(Duration::from_secs(2)));
            if mysql::Conn::new(opts).is_ok() && self.pidfile.exists() {
                return;
            }
            assert!(Instant::now() < deadline, "the server did not come back");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Leave the server running (it is .ci/mariadb.sh's to stop), but
        // reap the process this test started when it ends.
        if let Some(child) = self.child.take() {
            std::thread::spawn(move || {
                let mut child = child;
                let _ = child.wait();
            });
        }
    }
}

#[test]
fn server_killed_during_saves_loses_no_acknowledged_save() {
    let _g = exclusive();
    let Some(mut srv) = Server::from_env("server_killed") else { return };
    let (s, url) = store("server_killed").unwrap();
    let k = StashKey::new("k").unwrap();
    let kills: u64 = std::env::var("SAFESTASH_TEST_MY_KILLS").map_or(30, |v| v.parse().unwrap());
    let mut child = KillOnDrop(spawn_child("saver", &url, &[("SAFESTASH_MY_LEN", "2000".into())]));
    let rx = acks(&mut child.0);
    let mut last_ack = 0;
    let mut rng = harness::Rng::new(0x2545_f491);
    for kill_no in 0..kills {
        // Let some saves be acknowledged, then kill at a random moment.
        let first = rx.recv_timeout(Duration::from_secs(120)).expect("the saver makes progress");
        last_ack = last_ack.max(first);
        std::thread::sleep(Duration::from_millis(rng.below(80)));
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
    assert!(s.verify().unwrap().iter().all(|r| r.result.is_ok()), "a stash is damaged");
    eprintln!("{kills} server kills, last acknowledged save {last_ack}: none lost");
}

/// Puts `n` connections in the store's pool: `n` threads hold a key's
/// lock each at once, then let go.
fn fill_pool(s: &Store, n: usize) {
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(n));
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

/// A restart ends every pooled session; the first statement of each call
/// finds its pooled connection gone and the call runs once more on a new
/// one: no call fails.
#[test]
fn a_restart_with_a_full_pool_costs_no_failed_call() {
    let _g = exclusive();
    let Some(mut srv) = Server::from_env("restart_full_pool") else { return };
    let (s, _) = store("restart_full_pool").unwrap();
    let mut failed = Vec::new();
    fill_pool(&s, 6);
    srv.kill9();
    srv.start();
    for i in 0..6 {
        let k = StashKey::new(format!("fill{i}")).unwrap();
        if let Err(e) = s.save(&k, &(i + 100)) {
            failed.push(format!("save {i}: {}", chain(&e)));
        }
    }
    fill_pool(&s, 6);
    srv.kill9();
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

#[test]
fn eight_processes_race_without_tearing_or_losing_saves() {
    let _g = shared();
    let Some((_, url)) = store("race") else { return };
    let mut children: Vec<KillOnDrop> = (0..8)
        .map(|id| KillOnDrop(spawn_child("racer", &url, &[("SAFESTASH_MY_ID", id.to_string())])))
        .collect();
    for (id, child) in children.iter_mut().enumerate() {
        let mut out = String::new();
        std::io::Read::read_to_string(child.0.stdout.as_mut().unwrap(), &mut out).unwrap();
        let status = child.0.wait().unwrap();
        assert!(status.success() && out.contains("racer done"), "racer {id} failed:\n{out}");
    }
    eprintln!("8 processes x 100 saves, loads and conditional changes on MySQL: none torn or lost");
}

/// The journal's eight-process test (tests/journal.rs), on MySQL.
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
                    ("SAFESTASH_MY_ID", w.to_string()),
                    ("SAFESTASH_MY_GO", go.display().to_string()),
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
    eprintln!("{WORKERS} processes x {per_part} updates on MySQL: {conflicts} conflicts retried");
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

/// A batch of 1,000 stashes of 1 KiB on MySQL is one transaction: the
/// server counts one `COMMIT` for it (not 1,000), and every stash loads.
#[test]
fn a_batch_of_a_thousand_stashes_is_one_transaction() {
    let _g = exclusive();
    let Some((s, url)) = store("batch_one_tx") else { return };
    let keys: Vec<StashKey> =
        (0..1000).map(|i| StashKey::new(format!("b{i:04}")).unwrap()).collect();
    let value = "v".repeat(1024);
    let opts = SaveOptions::new();
    let mut batch = s.batch();
    for k in &keys {
        batch.add(k, &value, &opts).unwrap();
    }
    let commits = |c: &mut mysql::Conn| -> u64 {
        let row: (String, String) =
            c.query_first("SHOW GLOBAL STATUS LIKE 'Com_commit'").unwrap().unwrap();
        row.1.parse().unwrap()
    };
    let mut raw = mytest::raw(&url);
    let before = commits(&mut raw);
    assert_eq!(batch.commit().unwrap().len(), 1000);
    let after = commits(&mut raw);
    assert_eq!(after - before, 1, "the batch's COMMITs");
    for k in [&keys[0], &keys[499], &keys[999]] {
        assert_eq!(s.load::<String>(k).unwrap().unwrap().into_value(), value);
    }
}
