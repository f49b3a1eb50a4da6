//! The object storage backend: conditional writes raced by processes and
//! threads, stale ETags, uploads killed mid-way, leases taken over from a
//! killed or stopped holder, the journal's multi-process run, and the CLI.
//!
//! The S3 parts run against the server `SAFESTASH_TEST_S3_URL` names
//! (`.ci/run` starts moto and exports it with the `AWS_*` variables); they
//! skip with a printed reason when it is unset, and fail under `CI=true`.
//! The in-process races run on `object_store`'s `InMemory` always: moto's
//! own conditional check is not guaranteed atomic under load, so the
//! property is also checked where the service is known to be atomic.
#![cfg(feature = "object-store")]

mod bigvalue;
mod harness;
mod objtest;
mod proxy;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use object_store::memory::InMemory;
use object_store::{PutMode, PutOptions, PutPayload, UpdateVersion};
use safestash::backend::object_store::{ObjectStoreBackend, Options};
use safestash::backend::{Backend, Outcome};
use safestash::envelope::{EnvelopeWriter, Header};
use safestash::journal::{Change, Operation};
use safestash::{Error, Precondition, SaveOptions, StashKey, Store};
use sha2::{Digest as _, Sha256};

fn key(s: &str) -> StashKey {
    StashKey::new(s).unwrap()
}

const CHILD_VAR: &str = "SAFESTASH_OBJ_CHILD";
const URL_VAR: &str = "SAFESTASH_OBJ_URL";

fn spawn_child(role: &str, url: &str, extra: &[(&str, String)]) -> Child {
    let mut cmd = harness::self_command("child_entry");
    cmd.env(CHILD_VAR, role)
        .env(URL_VAR, url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn child")
}

/// A child that is killed when the test ends, passed or failed.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill").args([&format!("-{sig}"), &child.id().to_string()]).status();
    assert!(ok.unwrap().success(), "kill -{sig}");
}

/// Reads the child's stdout up to a line ending with `want`; returns it.
fn wait_line(out: &mut impl BufRead, want: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "child ended before {want:?}");
        if line.trim_end().ends_with(want) || line.contains(want) {
            return line.trim_end().to_owned();
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A value whose every byte says which save wrote it.
fn tagged(n: u64, len: usize) -> String {
    let tag = format!("{n:08}:");
    let mut s = tag.repeat(len / tag.len() + 1);
    s.truncate(len);
    s
}

fn intact(s: &str) -> bool {
    s.len() >= 9 && {
        let tag = &s[..9];
        s.as_bytes().chunks(9).all(|c| tag.as_bytes().starts_with(c))
    }
}

/// Streams the envelope of `value` (a JSON string) into `sink`, with the
/// digest the writer computed.
fn write_envelope(
    sink: &mut dyn Write,
    key: &StashKey,
    value: &str,
) -> safestash::Result<safestash::Digest> {
    let header = Header::new(key.clone(), "value", None, SystemTime::now()).unwrap();
    let io = |e: std::io::Error| safestash::Error::Io {
        op: safestash::IoOp::Write,
        path: "sink".into(),
        source: e,
    };
    let mut w = EnvelopeWriter::new(sink, &header).map_err(io)?;
    serde_json::to_writer(&mut w, value).map_err(|e| io(e.into()))?;
    Ok(w.finish().map_err(io)?.digest)
}

/// Not a test of its own: the body of the child processes.
#[test]
fn child_entry() {
    let Ok(role) = std::env::var(CHILD_VAR) else { return };
    let url = std::env::var(URL_VAR).unwrap();
    let var = |name: &str| std::env::var(name).unwrap();
    match role.as_str() {
        // Saves through a proxy that the parent freezes and thaws: each
        // save's outcome and how long it took, one line each, on a line
        // of stdin.
        "silent" => {
            let store = Store::open_url(&url).unwrap();
            let mut lines = std::io::stdin().lock().lines();
            for n in 0.. {
                let began = Instant::now();
                let out = match store.save(&key("k"), &n) {
                    Ok(_) => "ok".to_owned(),
                    Err(e) => {
                        let mut text = format!("{e}");
                        let mut source = std::error::Error::source(&e);
                        while let Some(s) = source {
                            text += &format!(": {s}");
                            source = s.source();
                        }
                        text
                    }
                };
                println!("save {n}: {out} after {} ms", began.elapsed().as_millis());
                if lines.next().is_none() {
                    break;
                }
            }
        }
        // Races create-if-absent on `round-N` at agreed instants.
        "absent-racer" => {
            let store = Store::open_url(&url).unwrap();
            let id: u64 = var("SAFESTASH_OBJ_ID").parse().unwrap();
            let start: u64 = var("SAFESTASH_OBJ_START").parse().unwrap();
            let rounds: u64 = var("SAFESTASH_OBJ_ROUNDS").parse().unwrap();
            for round in 0..rounds {
                let at = start + round * 300;
                if let Some(wait) = at.checked_sub(now_ms()) {
                    std::thread::sleep(Duration::from_millis(wait));
                }
                let k = key(&format!("round-{round}"));
                match store.save_if(&k, &id, &SaveOptions::new(), Precondition::Absent) {
                    Ok(_) => println!("round {round} won"),
                    Err(Error::StashExists { .. }) => println!("round {round} lost"),
                    Err(e) => panic!("round {round}: {e}"),
                }
            }
            println!("racer done");
        }
        // Saves ever larger stashes by multipart upload, forever.
        "uploader" => {
            let opts = Options { multipart_threshold: 1 << 20, ..Options::default() };
            let raw = ObjectStoreBackend::open(&url).unwrap();
            let backend =
                ObjectStoreBackend::new(raw.object_store().clone(), raw.prefix().as_ref(), opts)
                    .unwrap();
            let k = key("big");
            for n in 2.. {
                let value = tagged(n, 12 << 20);
                println!("uploading {n}");
                let out = backend
                    .put_with(&k, Precondition::Any, &mut |sink| write_envelope(sink, &k, &value))
                    .unwrap();
                assert_eq!(out, Outcome::Done);
                println!("ack {n}");
            }
        }
        // Takes the lock, saves under it, then waits; after a line on
        // stdin, saves again and says whether that was refused.
        "holder" => {
            let store = Store::open_url(&url).unwrap();
            let k = key("job");
            let lock = store.lock(&k).unwrap();
            lock.save(&"holder's first").unwrap();
            println!("locked");
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).unwrap();
            match lock.save(&"stale holder's") {
                Ok(_) => println!("stale save: ok"),
                Err(e) => {
                    let mut why = e.to_string();
                    let mut source = std::error::Error::source(&e);
                    while let Some(s) = source {
                        why.push_str(&format!(": {s}"));
                        source = s.source();
                    }
                    println!("stale save: refused: {why}");
                }
            }
            drop(lock);
            println!("holder done");
        }
        // The journal worker: drives its own part through every step.
        "journal" => {
            let store = Store::open_url(&url).unwrap();
            let worker: usize = var("SAFESTASH_OBJ_ID").parse().unwrap();
            let op = Operation::open(&store, JOURNAL_OP).unwrap();
            let part = format!("host-{worker}");
            let mut rng = harness::Rng::new(worker as u64);
            let deadline = Instant::now() + Duration::from_secs(240);
            let conflicts = harness::drive_journal_part(
                &op,
                &part,
                journal_steps(),
                &mut rng,
                Duration::from_millis(20),
                deadline,
            );
            println!("journal done {conflicts}");
        }
        // 1 GiB through put_with and get, reporting peak RSS.
        "gib" => {
            let backend = ObjectStoreBackend::open(&url).unwrap();
            let k = key("gib");
            let len: usize = var("SAFESTASH_OBJ_LEN").parse().unwrap();
            let mut sent = Sha256::new();
            let began = Instant::now();
            backend
                .put_with(&k, Precondition::Absent, &mut |sink| {
                    let mut tee = Tee { inner: sink, hash: &mut sent };
                    let header = Header::new(k.clone(), "value", None, SystemTime::now()).unwrap();
                    let io = |e: std::io::Error| safestash::Error::Io {
                        op: safestash::IoOp::Write,
                        path: "sink".into(),
                        source: e,
                    };
                    let mut w =
                        EnvelopeWriter::new(&mut tee as &mut dyn Write, &header).map_err(io)?;
                    w.write_all(b"\"").map_err(io)?;
                    let chunk = vec![b'a'; 1 << 16];
                    let mut left = len;
                    while left > 0 {
                        let n = left.min(chunk.len());
                        w.write_all(&chunk[..n]).map_err(io)?;
                        left -= n;
                    }
                    w.write_all(b"\"").map_err(io)?;
                    Ok(w.finish().map_err(io)?.digest)
                })
                .unwrap();
            let saved = began.elapsed();
            let rss_after_save = peak_rss_kib();
            let began = Instant::now();
            let fetched = backend.get(&k).unwrap().expect("saved");
            let mut got = Sha256::new();
            let mut reader = fetched.reader;
            let mut buf = vec![0u8; 1 << 16];
            let mut total = 0u64;
            loop {
                let n = reader.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                got.update(&buf[..n]);
                total += n as u64;
            }
            assert_eq!(total, fetched.len);
            assert_eq!(got.finalize(), sent.finalize(), "the bytes read back differ");
            let loaded = began.elapsed();
            // The same size through the Store's own save and load, which
            // stream into put_with and out of get: a value made while it
            // is serialized, checked piece by piece while it is read.
            let store = Store::open_url(&url).unwrap();
            let big = key("gib-store");
            let pieces = len as u64 / bigvalue::PIECE as u64;
            let began = Instant::now();
            store.save(&big, &bigvalue::Big(pieces)).unwrap();
            let store_saved = began.elapsed();
            let began = Instant::now();
            let back = store.load::<bigvalue::BigCheck>(&big).unwrap().expect("saved");
            assert_eq!(back.value().0, pieces);
            println!(
                "gib: {total} bytes saved in {saved:.1?} (peak RSS {rss_after_save} KiB), \
                 loaded in {loaded:.1?}; through Store: saved in {store_saved:.1?}, loaded in \
                 {:.1?}, peak RSS {} KiB",
                began.elapsed(),
                peak_rss_kib()
            );
        }
        other => panic!("unknown child role {other}"),
    }
}

struct Tee<'a> {
    inner: &'a mut dyn Write,
    hash: &'a mut Sha256,
}

impl Write for Tee<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn peak_rss_kib() -> i64 {
    // The peak resident set (VmHWM), what getrusage reports as ru_maxrss.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(-1)
}

// ---------------------------------------------------------------------------
// Create-if-absent races
// ---------------------------------------------------------------------------

/// `InMemory` with every GET slowed down, so that racers read the key's
/// state at the same time and only the service's atomic condition decides.
fn slow_memory() -> Arc<dyn object_store::ObjectStore> {
    use object_store::throttle::{ThrottleConfig, ThrottledStore};
    let config =
        ThrottleConfig { wait_get_per_call: Duration::from_millis(5), ..ThrottleConfig::default() };
    Arc::new(ThrottledStore::new(InMemory::new(), config))
}

#[test]
fn eight_threads_race_create_if_absent_on_in_memory_one_winner_every_round() {
    let memory = slow_memory();
    const ROUNDS: usize = 40;
    const RACERS: usize = 8;
    let barrier = Arc::new(Barrier::new(RACERS));
    let threads: Vec<_> = (0..RACERS)
        .map(|id| {
            // Each racer has its own backend (and runtime) over the one store.
            let store = Store::open_object_store(
                ObjectStoreBackend::new(memory.clone(), "race", Options::default()).unwrap(),
            );
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut won = Vec::new();
                for round in 0..ROUNDS {
                    barrier.wait();
                    let k = key(&format!("round-{round}"));
                    match store.save_if(&k, &id, &SaveOptions::new(), Precondition::Absent) {
                        Ok(_) => won.push(round),
                        Err(Error::StashExists { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
                (id, won)
            })
        })
        .collect();
    let mut winners = vec![Vec::new(); ROUNDS];
    for t in threads {
        let (id, won) = t.join().unwrap();
        for round in won {
            winners[round].push(id);
        }
    }
    let store = Store::open_object_store(
        ObjectStoreBackend::new(memory, "race", Options::default()).unwrap(),
    );
    for (round, ids) in winners.iter().enumerate() {
        assert_eq!(ids.len(), 1, "round {round}: winners {ids:?}");
        let k = key(&format!("round-{round}"));
        assert_eq!(*store.load::<usize>(&k).unwrap().unwrap().value(), ids[0], "round {round}");
    }
}

#[test]
fn eight_processes_race_create_if_absent_on_s3_one_winner_every_round() {
    let Some(url) = objtest::url("absent_race") else { return };
    const ROUNDS: u64 = 10;
    let start = now_ms() + 3000;
    let children: Vec<KillOnDrop> = (0..8u64)
        .map(|id| {
            KillOnDrop(spawn_child(
                "absent-racer",
                &url,
                &[
                    ("SAFESTASH_OBJ_ID", id.to_string()),
                    ("SAFESTASH_OBJ_START", start.to_string()),
                    ("SAFESTASH_OBJ_ROUNDS", ROUNDS.to_string()),
                ],
            ))
        })
        .collect();
    let mut winners = vec![Vec::new(); ROUNDS as usize];
    for (id, mut child) in children.into_iter().enumerate() {
        let mut out = BufReader::new(child.0.stdout.take().unwrap());
        let mut text = String::new();
        out.read_to_string(&mut text).unwrap();
        assert!(child.0.wait().unwrap().success(), "racer {id}: {text}");
        assert!(text.contains("racer done"), "racer {id}: {text}");
        for line in text.lines().filter(|l| l.contains(" won")) {
            let round: usize = line
                .rsplit("round ")
                .next()
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap();
            winners[round].push(id);
        }
    }
    let store = Store::open_url(&url).unwrap();
    for (round, ids) in winners.iter().enumerate() {
        assert_eq!(ids.len(), 1, "round {round}: winners {ids:?}");
        let k = key(&format!("round-{round}"));
        assert_eq!(*store.load::<usize>(&k).unwrap().unwrap().value(), ids[0], "round {round}");
    }
}

// ---------------------------------------------------------------------------
// Stale ETags and conditions
// ---------------------------------------------------------------------------

/// Every object store place: InMemory, and S3 when configured.
fn backends(test: &str) -> Vec<(&'static str, ObjectStoreBackend, objtest::Raw)> {
    let memory = Arc::new(InMemory::new());
    let b = ObjectStoreBackend::new(memory.clone(), "stale", Options::default()).unwrap();
    let raw = objtest::Raw::over(memory, b.prefix().clone());
    let mut all = vec![("in-memory", b, raw)];
    for (name, url) in objtest::urls(test) {
        all.push((name, ObjectStoreBackend::open(&url).unwrap(), objtest::Raw::open(&url)));
    }
    all
}

fn envelope(k: &StashKey, value: &str) -> (Vec<u8>, safestash::Digest) {
    let mut bytes = Vec::new();
    let digest = write_envelope(&mut bytes, k, value).unwrap();
    (bytes, digest)
}

#[test]
fn a_stale_etag_is_a_precondition_error_never_an_overwrite() {
    for (name, backend, raw) in backends("stale_etag") {
        let k = key("k");
        let (first, d1) = envelope(&k, "first");
        assert_eq!(backend.put(&k, &first, &d1, Precondition::Absent).unwrap(), Outcome::Done);
        let stale = raw.e_tag("k").expect("an etag");
        let (second, d2) = envelope(&k, "second");
        assert_eq!(
            backend.put(&k, &second, &d2, Precondition::Unchanged(d1)).unwrap(),
            Outcome::Done
        );
        // The service refuses a write on the ETag seen before the change...
        let opts = PutOptions {
            mode: PutMode::Update(UpdateVersion { e_tag: Some(stale), version: None }),
            ..Default::default()
        };
        let path = object_store::path::Path::parse(format!("{}/k", raw.prefix)).unwrap();
        let err = raw
            .block_on(raw.store.put_opts(&path, PutPayload::from(first.clone()), opts))
            .unwrap_err();
        assert!(matches!(err, object_store::Error::Precondition { .. }), "{name}: {err:?}");
        // ...and so does the backend on the digest seen before it.
        let (third, d3) = envelope(&k, "third");
        let out = backend.put(&k, &third, &d3, Precondition::Unchanged(d1)).unwrap();
        assert_eq!(out, Outcome::Refused { current: Some(d2) }, "{name}");
        assert_eq!(
            backend.delete(&k, Precondition::Unchanged(d1)).unwrap(),
            Outcome::Refused { current: Some(d2) }
        );
        assert_eq!(raw.get("k").unwrap(), second, "{name}: never overwritten");
        // Create over a stash is refused; over a tombstone it creates.
        assert_eq!(
            backend.put(&k, &third, &d3, Precondition::Absent).unwrap(),
            Outcome::Refused { current: Some(d2) },
            "{name}"
        );
        assert_eq!(backend.delete(&k, Precondition::Unchanged(d2)).unwrap(), Outcome::Done);
        let mark = raw.get("k").unwrap();
        assert!(mark.starts_with(b"SAFESTASH-TOMBSTONE v1\n"), "{name}: a tombstone");
        assert!(backend.get(&k).unwrap().is_none(), "{name}");
        assert!(backend.list(0).unwrap().is_empty(), "{name}");
        assert_eq!(backend.delete(&k, Precondition::Any).unwrap(), Outcome::Missing, "{name}");
        assert_eq!(backend.put(&k, &third, &d3, Precondition::Absent).unwrap(), Outcome::Done);
        assert_eq!(raw.get("k").unwrap(), third, "{name}");
    }
}

#[test]
fn a_clear_if_loses_to_a_save_in_between_on_in_memory() {
    // Many rounds of: one thread clears on the digest it saw, another saves
    // a new stash at the same moment. The new stash is never removed.
    let memory = slow_memory();
    let open = || {
        Store::open_object_store(
            ObjectStoreBackend::new(memory.clone(), "clear", Options::default()).unwrap(),
        )
    };
    let (a, b) = (open(), open());
    let k = key("k");
    for round in 0..150 {
        let seen = a.save(&k, &format!("old {round}")).unwrap().digest;
        let barrier = Arc::new(Barrier::new(2));
        let (ka, ba) = (k.clone(), barrier.clone());
        let clearing = std::thread::scope(|s| {
            let c = s.spawn(|| {
                ba.wait();
                a.clear_if(&ka, &seen).unwrap()
            });
            let w = s.spawn(|| {
                barrier.wait();
                b.save(&k, &format!("new {round}")).unwrap()
            });
            (c.join().unwrap(), w.join().unwrap())
        });
        let (cleared, _saved) = clearing;
        let now = a.load::<String>(&k).unwrap();
        match now {
            // The save landed after the clear: it must be there.
            Some(v) => assert_eq!(v.value(), &format!("new {round}")),
            None => panic!("round {round}: the new stash was removed (cleared: {cleared})"),
        }
    }
}

// ---------------------------------------------------------------------------
// Killed uploads
// ---------------------------------------------------------------------------

#[test]
fn a_client_killed_mid_upload_leaves_the_old_or_the_new_stash() {
    let Some(url) = objtest::url("killed_upload") else { return };
    let store = Store::open_url(&url).unwrap();
    let k = key("big");
    store.save(&k, &tagged(1, 1000)).unwrap();
    let mut last_acked = 1;
    for round in 0..4u64 {
        let mut child = KillOnDrop(spawn_child("uploader", &url, &[]));
        let mut out = BufReader::new(child.0.stdout.take().unwrap());
        // Somewhere inside the first upload, or (odd rounds) inside a later
        // one, replacing a stash saved by multipart: between its parts, or
        // at its end.
        wait_line(&mut out, if round % 2 == 0 { "uploading 2" } else { "ack 2" });
        if round % 2 == 1 {
            last_acked = 2;
        }
        std::thread::sleep(Duration::from_millis(100 + round * 200));
        signal(&child.0, "KILL");
        child.0.wait().unwrap();
        let mut rest = String::new();
        out.read_to_string(&mut rest).unwrap();
        if let Some(n) = rest.lines().filter_map(|l| l.strip_prefix("ack ")).next_back() {
            last_acked = n.trim().parse().unwrap();
        }
        let v = store.load::<String>(&k).unwrap().expect("a stash").into_value();
        assert!(intact(&v), "round {round}: torn value");
        let n: u64 = v[..8].parse().unwrap();
        assert!(
            n >= last_acked,
            "round {round}: an acknowledged save ({last_acked}) was lost: {n}"
        );
        assert!(store.verify().unwrap().iter().all(|r| r.result.is_ok()), "round {round}");
        println!("round {round}: after the kill the stash is save {n} ({} bytes)", v.len());
    }
    let raw = objtest::Raw::open(&url);
    println!("objects left: {:?}", raw.names());
}

// ---------------------------------------------------------------------------
// Leases
// ---------------------------------------------------------------------------

fn with_lease(url: &str, lease: &str) -> String {
    format!("{url}?lease={lease}")
}

#[test]
fn a_sigkilled_holders_lease_expires_and_is_taken_over() {
    let Some(url) = objtest::url("lease_kill") else { return };
    let url = with_lease(&url, "2s");
    let store = Store::open_url(&url).unwrap();
    let k = key("job");
    let mut child = KillOnDrop(spawn_child("holder", &url, &[]));
    let mut out = BufReader::new(child.0.stdout.take().unwrap());
    wait_line(&mut out, "locked");
    assert!(matches!(store.try_lock(&k), Err(Error::Locked { .. })), "the child holds it");
    signal(&child.0, "KILL");
    child.0.wait().unwrap();
    // A dead holder renews nothing: its lease expires and a waiting lock takes it.
    let lock = store.lock(&k).unwrap();
    lock.save(&"taken over").unwrap();
    drop(lock);
    assert_eq!(store.load::<String>(&k).unwrap().unwrap().value(), "taken over");
    // Released: free at once.
    drop(store.try_lock(&k).unwrap());
}

#[test]
fn a_stopped_holders_write_after_a_takeover_is_refused() {
    let Some(url) = objtest::url("lease_stale") else { return };
    let url = with_lease(&url, "2s");
    let store = Store::open_url(&url).unwrap();
    let k = key("job");
    let mut child = KillOnDrop(spawn_child("holder", &url, &[]));
    let mut out = BufReader::new(child.0.stdout.take().unwrap());
    wait_line(&mut out, "locked");
    // The holder pauses (as in a long GC pause or a SIGSTOP) past its lease.
    signal(&child.0, "STOP");
    let lock = store.lock(&k).unwrap();
    lock.save(&"new holder's").unwrap();
    signal(&child.0, "CONT");
    writeln!(child.0.stdin.as_mut().unwrap()).unwrap();
    let line = wait_line(&mut out, "stale save:");
    assert!(line.contains("refused"), "{line}");
    println!("{line}");
    wait_line(&mut out, "holder done");
    assert_eq!(store.load::<String>(&k).unwrap().unwrap().value(), "new holder's");
    // The stale holder's release did not free the new holder's lease.
    let other = Store::open_url(&url).unwrap();
    assert!(matches!(other.try_lock(&k), Err(Error::Locked { .. })));
    drop(lock);
}

#[test]
fn a_holders_write_is_fenced_on_the_etag_it_last_saw() {
    for (name, backend, _raw) in backends("fence") {
        let k = key("job");
        let (v1, d1) = envelope(&k, "one");
        backend.put(&k, &v1, &d1, Precondition::Any).unwrap();
        let held = backend.lock(&k, false).unwrap().expect("free");
        assert!(backend.lock(&k, false).unwrap().is_none(), "{name}: excluded");
        let (v2, d2) = envelope(&k, "two");
        assert_eq!(held.backend().put(&k, &v2, &d2, Precondition::Any).unwrap(), Outcome::Done);
        // A writer that ignores the lock changes the key behind the holder's back.
        let (v3, d3) = envelope(&k, "three");
        backend.put(&k, &v3, &d3, Precondition::Any).unwrap();
        let (v4, d4) = envelope(&k, "four");
        let err = held.backend().put(&k, &v4, &d4, Precondition::Any).unwrap_err();
        assert!(err.to_string().contains("failed to save"), "{name}: {err}");
        assert!(held.backend().delete(&k, Precondition::Any).is_err(), "{name}");
        let got = backend.get(&k).unwrap().unwrap();
        let mut bytes = Vec::new();
        { got.reader }.read_to_end(&mut bytes).unwrap();
        assert_eq!(bytes, v3, "{name}: the holder's stale write did not land");
        drop(held);
        assert!(backend.lock(&k, false).unwrap().is_some(), "{name}: released");
    }
}

/// A server that stops answering (stopped, or partitioned away: here a
/// proxy that stops forwarding, its connections left open) fails each
/// call within the URL's `timeout`, connecting and retries included, and
/// the store works again once the server answers.
#[test]
fn a_server_that_stops_answering_fails_each_call_within_the_timeout() {
    for (name, url) in objtest::urls("silent") {
        // The endpoint the client reads from the environment.
        let var =
            if url.starts_with("s3://") { "AWS_ENDPOINT_URL" } else { "AZURITE_BLOB_STORAGE_URL" };
        let endpoint = std::env::var(var).unwrap();
        let authority = endpoint.trim_start_matches("http://").trim_end_matches('/').to_owned();
        let proxy = proxy::Proxy::start(&authority);
        let through = proxy.url(&endpoint, &authority);
        let url = format!("{url}?timeout=2s");
        let mut child = KillOnDrop(spawn_child("silent", &url, &[(var, through)]));
        let mut out = BufReader::new(child.0.stdout.take().unwrap());
        let line = wait_line(&mut out, "ms");
        assert!(line.contains(": ok after"), "{name}: {line}");
        let mut next = || {
            writeln!(child.0.stdin.as_mut().unwrap()).unwrap();
            wait_line(&mut out, "ms")
        };
        proxy.freeze();
        let line = next();
        println!("{name}, server silent: {line}");
        assert!(line.contains("timed out"), "{name}: {line}");
        let ms: u64 =
            line.rsplit(" after ").next().unwrap().trim_end_matches(" ms").parse().unwrap();
        assert!((1900..10_000).contains(&ms), "{name}: bounded by the 2 s timeout: {ms} ms");
        proxy.thaw();
        let line = next();
        assert!(line.contains(": ok after"), "{name}: the store works again: {line}");
    }
}

// ---------------------------------------------------------------------------
// The journal's multi-process run, on S3
// ---------------------------------------------------------------------------

const JOURNAL_OP: &str = "fleet upgrade";
const JOURNAL_WORKERS: usize = 8;

fn journal_steps() -> Vec<Change> {
    harness::journal_steps(4)
}

#[test]
fn eight_processes_drive_their_journal_parts_on_s3_and_lose_no_update() {
    use safestash::journal::{Aggregate, Derivation};
    let Some(url) = objtest::url("journal") else { return };
    let url = with_lease(&url, "10s");
    let store = Store::open_url(&url).unwrap();
    let names: Vec<String> = (0..JOURNAL_WORKERS).map(|w| format!("host-{w}")).collect();
    let op = Operation::create(&store, JOURNAL_OP, &names).unwrap();
    let start = op.view().unwrap().generation;
    let began = Instant::now();
    let children: Vec<KillOnDrop> = (0..JOURNAL_WORKERS)
        .map(|w| KillOnDrop(spawn_child("journal", &url, &[("SAFESTASH_OBJ_ID", w.to_string())])))
        .collect();
    let mut conflicts = 0u32;
    for (w, mut child) in children.into_iter().enumerate() {
        let mut text = String::new();
        child.0.stdout.take().unwrap().read_to_string(&mut text).unwrap();
        assert!(child.0.wait().unwrap().success(), "worker {w}: {text}");
        let done = text.lines().find_map(|l| l.split("journal done ").nth(1));
        conflicts +=
            done.unwrap_or_else(|| panic!("worker {w}: {text}")).trim().parse::<u32>().unwrap();
    }
    let per_part = journal_steps().len();
    println!(
        "{JOURNAL_WORKERS} processes x {per_part} updates on S3 in {:.1?}: {conflicts} conflicts retried",
        began.elapsed()
    );
    let view = op.view().unwrap();
    assert_eq!(view.derivation, Derivation::Known(Aggregate::Completed));
    assert_eq!(view.generation.get(), start.get() + (JOURNAL_WORKERS * per_part) as u64);
    let mut generations = Vec::new();
    for name in &names {
        let p = view.part(name).unwrap().unwrap();
        assert_eq!(p.updates, per_part as u64, "{name}");
        generations.extend(p.history.iter().map(|t| t.generation.get()));
    }
    generations.sort_unstable();
    let want: Vec<u64> = (start.get() + 1..=view.generation.get()).collect();
    assert_eq!(generations, want, "generations are not exactly one per update");
}

// ---------------------------------------------------------------------------
// 1 GiB with bounded memory
// ---------------------------------------------------------------------------

#[test]
#[ignore = "uploads and downloads 1 GiB (about 5 minutes on moto); run with --ignored"]
fn a_gib_stash_saves_and_loads_with_bounded_memory() {
    let Some(url) = objtest::url("gib") else { return };
    let len = std::env::var("SAFESTASH_OBJ_LEN").unwrap_or_else(|_| (1usize << 30).to_string());
    let mut child = KillOnDrop(spawn_child("gib", &url, &[("SAFESTASH_OBJ_LEN", len)]));
    let mut text = String::new();
    child.0.stdout.take().unwrap().read_to_string(&mut text).unwrap();
    assert!(child.0.wait().unwrap().success(), "{text}");
    let line = text.lines().find(|l| l.contains("gib:")).unwrap_or_else(|| panic!("{text}"));
    println!("{line}");
    let peak: i64 =
        line.rsplit("peak RSS ").next().unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(peak < 256 * 1024, "peak RSS {peak} KiB: memory is not bounded");
}

// ---------------------------------------------------------------------------
// The CLI on a bucket URL
// ---------------------------------------------------------------------------

#[test]
fn cli_lists_verifies_quarantines_and_clears_an_s3_store() {
    let Some(url) = objtest::url("cli") else { return };
    let s = Store::open_url(&url).unwrap();
    let (good, bad) = (key("good"), key("bad"));
    s.save(&good, &1).unwrap();
    s.save(&bad, &"to be damaged").unwrap();
    let run = |args: &[&str]| {
        let out = assert_cmd::Command::cargo_bin("safestash").unwrap().args(args).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let (code, out) = run(&["list", &url]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("good") && out.contains("bad"), "{out}");
    let (code, out) = run(&["show", &url, "good"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(run(&["verify", &url]).0, Some(0));
    let raw = objtest::Raw::open(&url);
    let mut bytes = raw.get("bad").unwrap();
    bytes[40] ^= 1;
    raw.put("bad", bytes);
    let (code, out) = run(&["verify", &url]);
    assert_eq!(code, Some(1), "damage in the bucket is found: {out}");
    assert_eq!(run(&["quarantine", "--yes", &url, "bad"]).0, Some(0));
    assert_eq!(run(&["verify", &url]).0, Some(0));
    assert!(raw.names().iter().any(|n| n.starts_with(".bad.quarantined.")), "{:?}", raw.names());
    let (code, out) = run(&["clear", "--yes", &url, "good"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(s.load::<i32>(&good).unwrap().is_none());
    let (code, out) = run(&["gc", "--older-than", "7d", &url]);
    assert_eq!(code, Some(0), "{out}");
    // A multipart stash replaced: its first data object is named by nothing,
    // and gc removes it once it is older than the grace period, not before.
    let opts = Options { multipart_threshold: 64 << 10, ..Options::default() };
    let plain = ObjectStoreBackend::open(&url).unwrap();
    let big = Store::open_object_store(
        ObjectStoreBackend::new(plain.object_store().clone(), plain.prefix().as_ref(), opts)
            .unwrap(),
    );
    let value = |n: u64| tagged(n, 100 << 10);
    big.save(&key("big"), &value(1)).unwrap();
    big.save(&key("big"), &value(2)).unwrap();
    let data = || raw.names().into_iter().filter(|n| n.starts_with(".data/")).count();
    assert_eq!(data(), 2);
    let graced = format!("{url}?gc_grace=3s");
    let (code, out) = run(&["gc", "--older-than", "7d", &graced]);
    assert_eq!((code, data()), (Some(0), 2), "nothing removed within the grace: {out}");
    std::thread::sleep(Duration::from_millis(4100));
    let (code, out) = run(&["gc", "--older-than", "7d", &graced]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("data object `.data/big."), "{out}");
    assert_eq!(data(), 1, "{out}");
    assert_eq!(big.load::<String>(&key("big")).unwrap().unwrap().value(), &value(2));
}

// ---------------------------------------------------------------------------
// Tenant reconcile on object storage (its run lock is a lease here)
// ---------------------------------------------------------------------------

fn stores(test: &str) -> Vec<(&'static str, Store)> {
    let memory = Arc::new(InMemory::new());
    let mut all = vec![(
        "in-memory",
        Store::open_object_store(
            ObjectStoreBackend::new(memory, "tenants-test", Options::default()).unwrap(),
        ),
    )];
    for (name, url) in objtest::urls(test) {
        all.push((name, Store::open_url(&url).unwrap()));
    }
    all
}

fn tenant(n: u128) -> safestash::reconcile::CanonicalUuid {
    safestash::reconcile::CanonicalUuid::from(uuid::Uuid::from_u128(
        0xabcdef01_2345_4678_9abc_def000000000 | n,
    ))
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[test]
fn tenant_reconcile_stashes_before_delete_keeps_a_failed_delete_and_restores() {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    use safestash::reconcile::{IdSet, Limits, Reconciler, plan, restore_tenant, tenant_key};
    for (name, store) in stores("tenants") {
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

#[test]
fn two_tenant_reconcilers_on_one_bucket_take_turns_on_the_run_lock() {
    use std::sync::Mutex;

    use safestash::reconcile::{IdSet, Limits, Reconciler, plan};
    let Some(url) = objtest::url("tenant_runs") else { return };
    // Two workers, each with its own store, run the same plan at once: the
    // run lock (a lease here) keeps their export-and-stash phases apart.
    let calls = Arc::new(Mutex::new(Vec::new()));
    let local: IdSet<_> = (1..=10).map(tenant).collect();
    let truth: IdSet<_> = (4..=10).map(tenant).collect();
    let p = plan(&local, &truth);
    let barrier = Arc::new(Barrier::new(2));
    std::thread::scope(|s| {
        for worker in 0..2 {
            let (calls, barrier) = (calls.clone(), barrier.clone());
            let (url, p, local, truth) = (&url, &p, &local, &truth);
            s.spawn(move || {
                let store = Store::open_url(url).unwrap();
                let r = Reconciler::new(&store).limits(Limits::default().max_share(0.5));
                barrier.wait();
                let report = r
                    .execute(
                        p,
                        local,
                        truth,
                        |id| -> Result<String, BoxError> {
                            calls.lock().unwrap().push((worker, "export", *id));
                            Ok(format!("{id}"))
                        },
                        |id| -> Result<(), BoxError> {
                            calls.lock().unwrap().push((worker, "delete", *id));
                            // Give the other run every chance to interleave.
                            std::thread::sleep(Duration::from_millis(50));
                            Ok(())
                        },
                    )
                    .unwrap();
                assert!(report.is_complete(), "{report}");
            });
        }
    });
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 12, "{calls:?}");
    // The run lock covers choosing generation keys, exporting and the
    // batch; it is released before the deletes (phase 2), so the other
    // run's exports may overlap this run's deletes, but the two runs'
    // export phases never interleave. (Both reports being complete also
    // shows they chose different generation keys: a second run on the
    // same keys would have been refused by the batch's `Absent`.)
    let exports: Vec<usize> = calls.iter().filter(|c| c.1 == "export").map(|c| c.0).collect();
    assert_eq!(exports.len(), 6, "{calls:?}");
    let first = exports[0];
    assert!(exports[..3].iter().all(|w| *w == first), "the runs interleaved: {calls:?}");
    assert!(exports[3..].iter().all(|w| *w != first), "the runs interleaved: {calls:?}");
    let last_export_of_first = calls.iter().rposition(|c| c.0 == first && c.1 == "export");
    let first_export_of_other = calls.iter().position(|c| c.0 != first && c.1 == "export");
    assert!(last_export_of_first < first_export_of_other, "{calls:?}");
}

// ---------------------------------------------------------------------------
// Multipart saves keep their condition
// ---------------------------------------------------------------------------

#[test]
fn a_multipart_save_keeps_its_condition_and_leaves_no_orphan() {
    let memory = Arc::new(InMemory::new());
    // Servers keep an object's time to the second: a grace of 3 s (a second of it for that, and for a loaded machine).
    let grace = Duration::from_secs(3);
    let opts = || Options { multipart_threshold: 64 << 10, gc_grace: grace, ..Options::default() };
    let b = ObjectStoreBackend::new(memory.clone(), "multipart", opts()).unwrap();
    let raw = objtest::Raw::over(memory, b.prefix().clone());
    let mut all = vec![("in-memory", b, raw)];
    for (name, url) in objtest::urls("multipart") {
        let plain = ObjectStoreBackend::open(&url).unwrap();
        let b =
            ObjectStoreBackend::new(plain.object_store().clone(), plain.prefix().as_ref(), opts())
                .unwrap();
        all.push((name, b, objtest::Raw::open(&url)));
    }
    for (name, backend, raw) in all {
        let k = key("big");
        let big = |n: u64| tagged(n, 300 << 10);
        let put = |n: u64, cond: Precondition| {
            let value = big(n);
            backend.put_with(&k, cond, &mut |sink| write_envelope(sink, &k, &value)).unwrap()
        };
        let data_objects =
            || raw.names().into_iter().filter(|n| n.starts_with(".data/")).collect::<Vec<_>>();
        assert_eq!(put(1, Precondition::Absent), Outcome::Done, "{name}");
        let first = data_objects();
        assert_eq!(first.len(), 1, "{name}: saved by multipart: {first:?}");
        let d1 = backend.list(0).unwrap()[0].clone();
        assert_eq!(d1.len, raw.get(&first[0]).unwrap().len() as u64, "{name}");
        // Create over it is refused, and the refused upload's data goes.
        let refused = put(2, Precondition::Absent);
        assert!(matches!(refused, Outcome::Refused { current: Some(_) }), "{name}: {refused:?}");
        assert_eq!(data_objects(), first, "{name}: no orphan after a refusal");
        let Outcome::Refused { current: Some(d1) } = refused else { unreachable!() };
        // Replace-if-unchanged on a stale digest is refused; on the right one it lands.
        let (_, ds) = envelope(&k, "small");
        let stale = Precondition::Unchanged(ds);
        assert!(matches!(put(3, stale), Outcome::Refused { .. }), "{name}");
        assert_eq!(put(4, Precondition::Unchanged(d1)), Outcome::Done, "{name}");
        // The replaced stash's data stays (a reader may hold its reference)
        // until cleanup finds it unreferenced and older than the grace.
        assert_eq!(data_objects().len(), 2, "{name}");
        let store = Store::open_object_store(
            ObjectStoreBackend::new(raw.store.clone(), raw.prefix.as_ref(), opts()).unwrap(),
        );
        assert!(store.cleanup().unwrap().is_empty(), "{name}: not before the grace");
        std::thread::sleep(grace + Duration::from_millis(100));
        let removed = store.cleanup().unwrap();
        assert_eq!(removed.len(), 1, "{name}: {removed:?}");
        assert!(removed[0].ends_with(&first[0]), "{name}: {removed:?} {first:?}");
        let now = data_objects();
        assert_eq!(now.len(), 1, "{name}: the replaced stash's data was removed: {now:?}");
        assert_ne!(now, first, "{name}");
        let got = backend.get(&k).unwrap().unwrap();
        let mut bytes = Vec::new();
        { got.reader }.read_to_end(&mut bytes).unwrap();
        assert!(String::from_utf8_lossy(&bytes).contains(&big(4)[..100]), "{name}");
        // A clear tombstones the reference and removes its data.
        let Outcome::Refused { current: Some(d4) } = put(5, Precondition::Absent) else { panic!() };
        assert_eq!(backend.delete(&k, Precondition::Unchanged(d4)).unwrap(), Outcome::Done);
        std::thread::sleep(grace + Duration::from_millis(100));
        assert_eq!(store.cleanup().unwrap().len(), 1, "{name}");
        assert!(data_objects().is_empty(), "{name}: {:?}", raw.names());
        assert!(backend.get(&k).unwrap().is_none(), "{name}");
        // A fill that fails stores nothing, and leaves no upload behind.
        let failed = backend.put_with(&k, Precondition::Any, &mut |sink| {
            sink.write_all(&vec![b'x'; 200 << 10]).unwrap();
            Err(Error::InvalidOption { field: "test", value: String::new(), rule: "fails" })
        });
        assert!(failed.is_err(), "{name}");
        assert!(backend.get(&k).unwrap().is_none(), "{name}");
        assert!(data_objects().is_empty(), "{name}: {:?}", raw.names());
    }
}

// ---------------------------------------------------------------------------
// Faults a service can show: lost and late replies, concurrent writers
// ---------------------------------------------------------------------------

/// `InMemory` with faults a real service can show, each armed for the next
/// PUT to one path: `armed`, it lands and then reports an error (its reply
/// was lost); `slow`, it lands and replies only after the given time;
/// `echo`, it lands and then reports the conflict that object_store's retry
/// of it meets (its own write: `Precondition`, or `AlreadyExists` for a
/// create); `late`, it reports an error at once and lands (under its
/// condition) after the given time; `conflict`, it fails with
/// `AlreadyExists` and nothing lands (S3's `409 ConditionalRequestConflict`
/// on a create); `hook`, it lands, then the hook runs (as another worker),
/// then it reports the conflict of `echo`; `hang`, it never answers. And
/// `after_list` is written right after the next listing; `fail_parts`
/// makes every multipart part upload fail.
#[derive(Default)]
struct Faulty {
    inner: InMemory,
    armed: std::sync::Mutex<Option<object_store::path::Path>>,
    slow: std::sync::Mutex<Option<(object_store::path::Path, Duration)>>,
    echo: std::sync::Mutex<Option<object_store::path::Path>>,
    late: std::sync::Mutex<Option<(object_store::path::Path, Duration)>>,
    /// The held-back PUTs, to wait for.
    landing: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
    conflict: std::sync::Mutex<Option<object_store::path::Path>>,
    hook: std::sync::Mutex<Option<(object_store::path::Path, Hook)>>,
    hang: std::sync::Mutex<Option<object_store::path::Path>>,
    /// Written right after the next listing is taken, as by another saver.
    after_list: std::sync::Mutex<Option<(object_store::path::Path, Vec<u8>)>>,
    fail_parts: std::sync::atomic::AtomicBool,
}

type Hook = Box<dyn FnOnce() + Send>;

impl std::fmt::Debug for Faulty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Faulty")
    }
}

impl Faulty {
    fn new() -> Faulty {
        Faulty::default()
    }

    /// Waits until every held-back PUT has landed (or been refused).
    fn wait_landed(&self) {
        let all: Vec<_> = self.landing.lock().unwrap().drain(..).collect();
        for t in all {
            t.join().unwrap();
        }
    }
}

/// Takes the armed path out of `slot` if it is `location`.
fn take_if<T>(
    slot: &std::sync::Mutex<Option<(object_store::path::Path, T)>>,
    location: &object_store::path::Path,
) -> Option<T> {
    let mut slot = slot.lock().unwrap();
    match slot.take() {
        Some((at, t)) if &at == location => Some(t),
        other => {
            *slot = other;
            None
        }
    }
}

fn take_path(
    slot: &std::sync::Mutex<Option<object_store::path::Path>>,
    location: &object_store::path::Path,
) -> bool {
    let mut slot = slot.lock().unwrap();
    let hit = slot.as_ref() == Some(location);
    if hit {
        *slot = None;
    }
    hit
}

/// The conflict a retried PUT meets when its first attempt landed.
fn own_conflict(location: &object_store::path::Path, mode: &PutMode) -> object_store::Error {
    let source = "the retry met the request's own earlier write".into();
    match mode {
        PutMode::Create => {
            object_store::Error::AlreadyExists { path: location.to_string(), source }
        }
        _ => object_store::Error::Precondition { path: location.to_string(), source },
    }
}

/// A multipart upload whose parts all fail.
#[derive(Debug)]
struct FailingParts(Box<dyn object_store::MultipartUpload>);

#[async_trait::async_trait]
impl object_store::MultipartUpload for FailingParts {
    fn put_part(&mut self, _data: PutPayload) -> object_store::UploadPart {
        Box::pin(async {
            Err(object_store::Error::Generic {
                store: "Faulty",
                source: "500 Internal Server Error uploading a part".into(),
            })
        })
    }
    async fn complete(&mut self) -> object_store::Result<object_store::PutResult> {
        self.0.complete().await
    }
    async fn abort(&mut self) -> object_store::Result<()> {
        self.0.abort().await
    }
}

/// A store over a fresh [`Faulty`] in namespace `ns`, saving over 64 KiB
/// as multipart uploads: the faults, the namespace's prefix, the store.
fn faulty_multipart_store(ns: &str) -> (Arc<Faulty>, object_store::path::Path, Store) {
    let memory = Arc::new(Faulty::new());
    let opts = Options { multipart_threshold: 64 << 10, ..Options::default() };
    let backend = ObjectStoreBackend::new(memory.clone(), ns, opts).unwrap();
    let prefix = backend.prefix().clone();
    (memory, prefix, Store::open_object_store(backend))
}

impl std::fmt::Display for Faulty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

#[async_trait::async_trait]
impl object_store::ObjectStore for Faulty {
    async fn put_opts(
        &self,
        location: &object_store::path::Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        if take_path(&self.hang, location) {
            return std::future::pending().await;
        }
        if take_path(&self.conflict, location) && matches!(opts.mode, PutMode::Create) {
            return Err(object_store::Error::AlreadyExists {
                path: location.to_string(),
                source: "409 ConditionalRequestConflict: retry the upload".into(),
            });
        }
        if let Some(delay) = take_if(&self.late, location) {
            let (inner, at) = (self.inner.clone(), location.clone());
            let landing = std::thread::spawn(move || {
                std::thread::sleep(delay);
                use futures_util::FutureExt;
                let _ = inner.put_opts(&at, payload, opts).now_or_never();
            });
            self.landing.lock().unwrap().push(landing);
            return Err(object_store::Error::Generic {
                store: "Faulty",
                source: "timed out waiting for the reply (the request is still in flight)".into(),
            });
        }
        let lose = take_path(&self.armed, location);
        let echo = take_path(&self.echo, location);
        let hook = take_if(&self.hook, location);
        let delay = take_if(&self.slow, location);
        let mode = opts.mode.clone();
        let put = self.inner.put_opts(location, payload, opts).await?;
        if let Some(delay) = delay {
            std::thread::sleep(delay);
        }
        if lose {
            return Err(object_store::Error::Generic {
                store: "Faulty",
                source: "connection reset after the request was sent".into(),
            });
        }
        if let Some(hook) = hook {
            // Another worker, on its own thread and runtime.
            std::thread::spawn(hook).join().unwrap();
            return Err(own_conflict(location, &mode));
        }
        if echo {
            return Err(own_conflict(location, &mode));
        }
        Ok(put)
    }
    async fn put_multipart_opts(
        &self,
        location: &object_store::path::Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        let upload = self.inner.put_multipart_opts(location, opts).await?;
        if self.fail_parts.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(Box::new(FailingParts(upload)));
        }
        Ok(upload)
    }
    async fn get_opts(
        &self,
        location: &object_store::path::Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.inner.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: futures_util::stream::BoxStream<
            'static,
            object_store::Result<object_store::path::Path>,
        >,
    ) -> futures_util::stream::BoxStream<'static, object_store::Result<object_store::path::Path>>
    {
        self.inner.delete_stream(locations)
    }
    fn list(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> futures_util::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>>
    {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> object_store::Result<object_store::ListResult> {
        let listing = self.inner.list_with_delimiter(prefix).await?;
        let write = self.after_list.lock().unwrap().take();
        if let Some((at, bytes)) = write {
            self.inner.put_opts(&at, PutPayload::from(bytes), PutOptions::default()).await?;
        }
        Ok(listing)
    }
    async fn copy_opts(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// A save whose reference PUT landed but whose reply was lost fails, and
/// must not take the new stash's data with it; a quarantine whose
/// tombstone landed but whose reply was lost fails, and must not delete
/// the only copy. Either way the stash stays loadable somewhere.
#[test]
fn a_lost_reply_never_loses_the_stash() {
    let (memory, prefix, store) = faulty_multipart_store("lost");
    let raw = objtest::Raw::over(memory.clone(), prefix.clone());
    let k = key("big");
    let arm = |name: &str| *memory.armed.lock().unwrap() = Some(prefix.clone().join(name));

    store.save(&k, &tagged(1, 300 << 10)).unwrap();
    arm("big");
    let lost = store.save(&k, &tagged(2, 300 << 10));
    // The reference landed, and the writer read it back: done.
    assert!(lost.is_ok(), "its own landing is recognised: {lost:?}");
    let now = store.load::<String>(&k).expect("the stash the key names loads");
    assert_eq!(now.unwrap().into_value(), tagged(2, 300 << 10));

    // Quarantine: the copy aside, then a tombstone whose reply is lost.
    let small = key("small");
    store.save(&small, &"only copy").unwrap();
    arm("small");
    let lost = store.quarantine(&small);
    assert!(lost.is_ok(), "its own tombstone is recognised: {lost:?}");
    let aside: Vec<String> =
        raw.names().into_iter().filter(|n| n.starts_with(".small.quarantined.")).collect();
    let still_at_key = store.load::<String>(&small).ok().flatten().is_some();
    assert!(
        still_at_key || aside.len() == 1,
        "the stash is neither at the key nor aside: {:?}",
        raw.names()
    );
    assert_eq!(aside.len(), 1, "the key was tombstoned, so the copy aside must stay");
}

/// A lease counts from when its take was sent, as its expiry in the lease
/// object does: a take whose reply comes back late leaves its holder that
/// much less time to write under it, never more.
#[test]
fn a_lease_counts_from_when_its_take_was_sent() {
    let memory = Arc::new(Faulty::new());
    let opts = Options { lease: Duration::from_secs(2), ..Options::default() };
    let backend = ObjectStoreBackend::new(memory.clone(), "slow", opts).unwrap();
    let k = key("job");
    let (v1, d1) = envelope(&k, "one");
    backend.put(&k, &v1, &d1, Precondition::Any).unwrap();
    let lease_object = backend.prefix().clone().join(".locks").join("job");
    // The take lands at once; its reply takes 1.9 s of the 2 s lease.
    *memory.slow.lock().unwrap() = Some((lease_object, Duration::from_millis(1900)));
    let held = backend.lock(&k, false).unwrap().expect("free");
    let (v2, d2) = envelope(&k, "two");
    let err = held.backend().put(&k, &v2, &d2, Precondition::Any).unwrap_err();
    let why = std::error::Error::source(&err).map(ToString::to_string).unwrap_or_default();
    assert!(why.contains("not renewed in time"), "{err}: {why}");
    let got = backend.get(&k).unwrap().unwrap();
    let mut bytes = Vec::new();
    { got.reader }.read_to_end(&mut bytes).unwrap();
    assert_eq!(bytes, v1, "nothing was written under a lease about to expire");
}

/// A key replaced between the listing and the read of its head is listed
/// as what is there now, never as damaged: here a multipart stash (listed
/// as its short reference) is replaced by a small envelope.
#[test]
fn a_stash_replaced_while_listed_is_listed_as_it_is_now() {
    let (memory, prefix, store) = faulty_multipart_store("listed");
    let k = key("big");
    store.save(&k, &tagged(1, 300 << 10)).unwrap();
    let (small, _) = envelope(&k, "now small");
    *memory.after_list.lock().unwrap() = Some((prefix.join("big"), small.clone()));
    let listed = store.list().unwrap();
    assert_eq!(listed.len(), 1);
    let header = listed[0].header.as_ref().expect("listed as healthy");
    assert_eq!(header.key(), &k);
    assert_eq!(listed[0].size, small.len() as u64);
}

// ---------------------------------------------------------------------------
// The fault suite: ambiguous answers never lose a stash
// ---------------------------------------------------------------------------

/// The names under the prefix that start with `start`.
fn names_starting(raw: &objtest::Raw, start: &str) -> Vec<String> {
    raw.names().into_iter().filter(|n| n.starts_with(start)).collect()
}

/// A quarantine whose tombstone lands but whose retry meets that tombstone
/// (a 412 for its own write) must not conclude that a newer save won: the
/// copy aside is the only copy left, and it stays.
#[test]
fn a_quarantine_whose_retry_meets_its_own_tombstone_keeps_the_copy() {
    for big in [false, true] {
        let (memory, prefix, store) = faulty_multipart_store("quarantine-echo");
        let raw = objtest::Raw::over(memory.clone(), prefix.clone());
        let k = key("only");
        let value = tagged(7, if big { 300 << 10 } else { 100 });
        store.save(&k, &value).unwrap();
        let before = raw.get("only").unwrap();
        *memory.echo.lock().unwrap() = Some(prefix.clone().join("only"));
        let out = store.quarantine(&k);
        let aside = names_starting(&raw, ".only.quarantined.");
        let at_key = store.load::<String>(&k);
        assert!(
            matches!(at_key, Ok(Some(_))) || aside.len() == 1,
            "big {big}: the stash is neither at the key ({at_key:?}) nor aside: {:?} ({out:?})",
            raw.names()
        );
        assert_eq!(aside.len(), 1, "big {big}: the copy aside stays: {:?} ({out:?})", raw.names());
        assert_eq!(raw.get(&aside[0]).unwrap(), before, "big {big}: the version that was read");
        if big {
            // The data the copy aside names is still there.
            let data = names_starting(&raw, ".data/");
            assert_eq!(data.len(), 1, "{:?}", raw.names());
        }
    }
}

/// (a) A multipart save whose reference PUT fails now and lands later: the
/// save reports an error, and must not delete the data the late reference
/// will name. Once it lands, the key loads (the new stash).
#[test]
fn a_reference_that_lands_late_never_names_deleted_data() {
    let (memory, prefix, store) = faulty_multipart_store("late-ref");
    let k = key("big");
    store.save(&k, &tagged(1, 300 << 10)).unwrap();
    *memory.late.lock().unwrap() = Some((prefix.clone().join("big"), Duration::from_millis(300)));
    let failed = store.save(&k, &tagged(2, 300 << 10));
    assert!(failed.is_err(), "the lost reply is reported: {failed:?}");
    memory.wait_landed();
    let now = store.load::<String>(&k);
    let v = now.unwrap_or_else(|e| panic!("the key names deleted data: {e}"));
    assert_eq!(v.expect("a stash").into_value(), tagged(2, 300 << 10), "the late reference");
}

/// (b) A multipart save whose reference lands, whose reply is lost, and
/// whose retry meets another worker's newer save (which replaced it): the
/// save may be acknowledged only if what it acknowledged loads.
#[test]
fn a_save_acknowledged_after_its_retry_met_another_save_loads() {
    let (memory, prefix, store) = faulty_multipart_store("retry-other");
    let other = Store::open_object_store(
        ObjectStoreBackend::new(
            memory.clone(),
            prefix.as_ref(),
            Options { multipart_threshold: 64 << 10, ..Options::default() },
        )
        .unwrap(),
    );
    let k = key("big");
    store.save(&k, &tagged(1, 300 << 10)).unwrap();
    let k2 = k.clone();
    let hook: Hook = Box::new(move || {
        other.save(&k2, &tagged(3, 300 << 10)).unwrap();
    });
    *memory.hook.lock().unwrap() = Some((prefix.clone().join("big"), hook));
    let saved = store.save(&k, &tagged(2, 300 << 10));
    let now = store.load::<String>(&k);
    let v = now.unwrap_or_else(|e| panic!("the key names deleted data ({saved:?}): {e}"));
    let v = v.expect("a stash").into_value();
    if saved.is_ok() {
        assert_eq!(v, tagged(2, 300 << 10), "the acknowledged save is the one that loads");
    } else {
        assert_eq!(v, tagged(3, 300 << 10));
    }
}

/// A save or clear whose retry meets its own write is done, not refused:
/// create-if-absent does not report `StashExists` for its own stash, and a
/// conditional clear does not report `Replaced` for its own tombstone.
#[test]
fn a_write_whose_retry_meets_its_own_landing_is_done() {
    for (big, ns) in [(false, "own-small"), (true, "own-big")] {
        let (memory, prefix, store) = faulty_multipart_store(ns);
        let k = key("k");
        let value = tagged(5, if big { 300 << 10 } else { 100 });
        *memory.echo.lock().unwrap() = Some(prefix.clone().join("k"));
        let saved = store.save_if(&k, &value, &SaveOptions::new(), Precondition::Absent);
        let receipt = saved.unwrap_or_else(|e| panic!("big {big}: its own stash: {e}"));
        assert_eq!(store.load::<String>(&k).unwrap().unwrap().into_value(), value);
        *memory.echo.lock().unwrap() = Some(prefix.clone().join("k"));
        let cleared = store.clear_if(&k, &receipt.digest);
        assert!(matches!(cleared, Ok(true)), "big {big}: its own tombstone: {cleared:?}");
        assert!(store.load::<String>(&k).unwrap().is_none());
    }
}

/// S3 answers a conditional create that raced another request with `409
/// ConditionalRequestConflict`, which object_store reports as
/// `AlreadyExists` although nothing landed: that is no `StashExists`.
#[test]
fn a_conflict_on_create_where_nothing_landed_is_not_stash_exists() {
    let (memory, prefix, store) = faulty_multipart_store("conflict-409");
    let k = key("k");
    *memory.conflict.lock().unwrap() = Some(prefix.clone().join("k"));
    let saved = store.save_if(&k, &"first", &SaveOptions::new(), Precondition::Absent);
    assert!(saved.is_ok(), "nothing was at the key: {saved:?}");
    assert_eq!(store.load::<String>(&k).unwrap().unwrap().value(), "first");
}

/// A large save that fails while uploading its parts is a backend error
/// naming the stash, not a local write error.
#[test]
fn a_failed_part_upload_is_a_backend_error_naming_the_stash() {
    let (memory, _prefix, store) = faulty_multipart_store("parts");
    memory.fail_parts.store(true, std::sync::atomic::Ordering::SeqCst);
    // More parts than are kept in flight, so that the failure shows while
    // the envelope is still being written.
    let err = store.save(&key("big"), &tagged(1, 40 << 20)).unwrap_err();
    match &err {
        Error::Backend { target, .. } => assert!(target.ends_with("/big"), "{target}"),
        other => panic!("a failed part upload: {other:?}"),
    }
}

/// An object truncated to nothing is damage, not a cleared stash; a
/// reference whose data object is missing is damage too, found by verify.
#[test]
fn an_empty_object_or_a_missing_data_object_is_corrupt() {
    let (memory, prefix, store) = faulty_multipart_store("damage");
    let raw = objtest::Raw::over(memory.clone(), prefix.clone());
    let (small, big) = (key("small"), key("big"));
    store.save(&small, &"x").unwrap();
    raw.put("small", Vec::new());
    let err = store.load::<String>(&small).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "an empty object: {err:?}");
    store.save(&big, &tagged(1, 300 << 10)).unwrap();
    let data = names_starting(&raw, ".data/");
    assert_eq!(data.len(), 1);
    let path = prefix.clone().join(".data").join(&data[0][".data/".len()..]);
    raw.block_on(object_store::ObjectStoreExt::delete(&*raw.store, &path)).unwrap();
    let err = store.load::<String>(&big).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "a missing data object: {err:?}");
    let verified = store.verify().unwrap();
    let bad: Vec<_> = verified
        .iter()
        .filter(|r| matches!(r.result, Err(Error::Corrupt { .. })))
        .map(|r| r.key.to_string())
        .collect();
    assert_eq!(bad, ["big", "small"], "{verified:?}");
}

/// Cleanup removes the data objects nothing names once they are older than
/// the grace period, and nothing a reference (or a quarantined copy of
/// one) names.
#[test]
fn cleanup_removes_only_unreferenced_data_older_than_the_grace() {
    let memory = Arc::new(InMemory::new());
    let grace = Duration::from_millis(400);
    let opts = Options { multipart_threshold: 64 << 10, gc_grace: grace, ..Options::default() };
    let backend = ObjectStoreBackend::new(memory.clone(), "gc", opts).unwrap();
    let raw = objtest::Raw::over(memory, backend.prefix().clone());
    let store = Store::open_object_store(backend);
    let (a, b, q) = (key("a"), key("b"), key("q"));
    store.save(&a, &tagged(1, 300 << 10)).unwrap();
    store.save(&a, &tagged(2, 300 << 10)).unwrap();
    store.save(&b, &tagged(3, 300 << 10)).unwrap();
    store.save(&q, &tagged(4, 300 << 10)).unwrap();
    store.quarantine(&q).unwrap();
    let tenants = store.namespace("tenants").unwrap();
    tenants.save(&a, &tagged(5, 300 << 10)).unwrap();
    tenants.save(&a, &tagged(6, 300 << 10)).unwrap();
    store.clear(&b).unwrap();
    raw.put(".data/a.0123456789abcdef0123456789abcdef", vec![1; 10]);
    assert!(store.cleanup().unwrap().is_empty(), "nothing before the grace");
    std::thread::sleep(grace + Duration::from_millis(100));
    let removed = store.cleanup().unwrap();
    let names: Vec<String> = removed.iter().map(|p| p.display().to_string()).collect();
    // a's first, b's (cleared), the stray one, and tenants/a's first.
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(names.iter().any(|n| n.ends_with("/.data/a.0123456789abcdef0123456789abcdef")));
    assert!(names.iter().any(|n| n.contains("/tenants/.data/a.")), "{names:?}");
    assert_eq!(store.load::<String>(&a).unwrap().unwrap().into_value(), tagged(2, 300 << 10));
    assert_eq!(tenants.load::<String>(&a).unwrap().unwrap().into_value(), tagged(6, 300 << 10));
    // The quarantined copy still names its data, which stays.
    let aside = names_starting(&raw, ".q.quarantined.");
    assert_eq!(aside.len(), 1);
    assert_eq!(names_starting(&raw, ".data/q.").len(), 1, "{:?}", raw.names());
    assert!(store.verify().unwrap().iter().all(|r| r.result.is_ok()));
    assert!(store.cleanup().unwrap().is_empty(), "done");
}

/// Cleanup raced against saves on many threads loses nothing: every
/// acknowledged save loads, right after it and at the end.
#[test]
fn cleanup_raced_against_saves_loses_nothing() {
    let memory: Arc<dyn object_store::ObjectStore> = Arc::new(InMemory::new());
    // Long enough that a save's reference is written well within half of
    // it on a loaded machine (past that a save fails, by design).
    let grace = Duration::from_secs(2);
    let open = || {
        let opts = Options { multipart_threshold: 64 << 10, gc_grace: grace, ..Options::default() };
        Store::open_object_store(ObjectStoreBackend::new(memory.clone(), "race", opts).unwrap())
    };
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let collected = std::thread::scope(|s| {
        let gc = {
            let (store, stop) = (open(), stop.clone());
            s.spawn(move || {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    n += store.cleanup().unwrap().len();
                }
                n
            })
        };
        let savers: Vec<_> = (0..4u64)
            .map(|t| {
                let store = open();
                s.spawn(move || {
                    let k = key(&format!("k{}", t % 2));
                    let mut last = None;
                    let began = Instant::now();
                    let mut n = t * 1000;
                    while began.elapsed() < Duration::from_secs(5) {
                        n += 1;
                        let len = if n % 3 == 0 { 100 } else { 100 << 10 };
                        let value = tagged(n, len);
                        store.save(&k, &value).unwrap();
                        // Loads whatever the key holds now: never damage.
                        let now = store.load::<String>(&k).unwrap().expect("a stash");
                        assert!(intact(now.value()), "torn");
                        last = Some(value);
                    }
                    (k, last)
                })
            })
            .collect();
        let done: Vec<_> = savers.into_iter().map(|t| t.join()).collect();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let done: Vec<_> = done.into_iter().map(|r| r.unwrap()).collect();
        (gc.join().unwrap(), done)
    });
    let (removed, done) = collected;
    let store = open();
    for (k, last) in done {
        let now = store.load::<String>(&k).unwrap().expect("a stash").into_value();
        assert!(intact(&now), "{k}");
        let _ = last;
    }
    assert!(removed > 0, "cleanup removed the replaced data objects");
    assert!(store.verify().unwrap().iter().all(|r| r.result.is_ok()));
    println!("cleanup raced against saves: removed {removed} data objects, lost nothing");
}

/// A store that stops answering fails a save within the timeout, saying
/// it timed out, instead of hanging.
#[test]
fn a_store_that_stops_answering_fails_within_the_timeout() {
    let memory = Arc::new(Faulty::new());
    let opts = Options { timeout: Duration::from_secs(1), ..Options::default() };
    let backend = ObjectStoreBackend::new(memory.clone(), "hang", opts).unwrap();
    *memory.hang.lock().unwrap() = Some(backend.prefix().clone().join("k"));
    let store = Store::open_object_store(backend);
    let (tx, rx) = std::sync::mpsc::channel();
    let began = Instant::now();
    std::thread::spawn(move || tx.send(store.save(&key("k"), &1).map(|_| ())).unwrap());
    let got = rx.recv_timeout(Duration::from_secs(20)).expect("the save hung");
    assert!(began.elapsed() < Duration::from_secs(5), "{:?}", began.elapsed());
    assert_timed_out(got);
    // The URL takes it too.
    assert!(ObjectStoreBackend::open("memory:///t?timeout=2s").is_ok());
    assert!(ObjectStoreBackend::open("memory:///t?timeout=soon").is_err());
}

fn assert_timed_out(got: Result<(), Error>) {
    match got {
        Err(e @ Error::Backend { .. }) => {
            let mut why = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                why.push_str(&format!(": {s}"));
                source = s.source();
            }
            assert!(why.starts_with("failed to save"), "{why}");
            assert!(why.contains("timed out"), "{why}");
            println!("{why}");
        }
        other => panic!("a timeout is a backend error: {other:?}"),
    }
}
