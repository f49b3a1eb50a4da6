//! The rollback guard through the public API: the permit is returned only
//! once the snapshot is durable; commit clears (only our own stash);
//! rollback restores *then* clears; a failed restore, a drop, a panic or
//! `keep` never lose the stash; a replaced, cleared or corrupt stash is never
//! restored.

mod common;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::error::Error as _;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use safestash::sim::SimFs;
use safestash::{Error, Restorer, SaveOptions, StashKey, Stashed, Store, envelope};
use serde::{Deserialize, Serialize};

use common::temp_files;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ColumnDef {
    name: String,
    ty: String,
    notes: Option<String>,
    tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Snapshot {
    table: String,
    columns: Vec<ColumnDef>,
    settings: BTreeMap<String, Vec<u32>>,
    owner: Option<Box<Snapshot>>,
}

fn key(s: &str) -> StashKey {
    StashKey::new(s).unwrap()
}

fn snapshot(table: &str) -> Snapshot {
    Snapshot {
        table: table.to_owned(),
        columns: vec![
            ColumnDef {
                name: "amount".to_owned(),
                ty: "numeric".to_owned(),
                notes: Some("gross, \"incl.\" VAT\nsecond line".to_owned()),
                tags: vec!["money".to_owned(), "€".to_owned()],
            },
            ColumnDef {
                name: "placed".to_owned(),
                ty: "date".to_owned(),
                notes: None,
                tags: Vec::new(),
            },
        ],
        settings: BTreeMap::from([
            ("widths".to_owned(), vec![12, 0, u32::MAX]),
            ("empty".to_owned(), Vec::new()),
        ]),
        owner: Some(Box::new(Snapshot {
            table: format!("{table}.parent"),
            columns: Vec::new(),
            settings: BTreeMap::new(),
            owner: None,
        })),
    }
}

#[derive(Debug, PartialEq)]
struct HookError(&'static str);

impl fmt::Display for HookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for HookError {}

/// Loads `key` from every crash image of `sim` (a store at `/s`), and returns
/// how many images there were and what each held.
fn images(sim: &SimFs, key: &StashKey) -> Vec<Option<Stashed<Snapshot>>> {
    let mut seen = Vec::new();
    sim.for_each_crash_image(|image| {
        let store = Store::with_fs("/s", image).unwrap();
        seen.push(store.load::<Snapshot>(key).unwrap());
    });
    seen
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

// ---------------------------------------------------------------------------
// begin: the permit comes only with a durable stash
// ---------------------------------------------------------------------------

#[test]
fn begin_returns_the_permit_only_once_every_crash_image_holds_the_snapshot() {
    let sim = SimFs::new();
    let store = Store::with_fs("/s", sim.clone()).unwrap();
    let k = key("orders.dictionary");
    let snap = snapshot("orders");

    let guard = store.begin(&k, &snap).unwrap();
    // Right after `begin` returns, cut the power (look at every image).
    let seen = images(&sim, &k);
    assert!(!seen.is_empty());
    for stashed in &seen {
        let stashed = stashed.as_ref().expect("a crash image lost the stash begin vouched for");
        assert_eq!(stashed.value(), &snap);
        assert_eq!(stashed.meta().digest, guard.receipt().digest);
    }
    guard.keep();
}

#[test]
fn begin_over_an_older_stash_is_durable_in_every_crash_image() {
    let sim = SimFs::new();
    let store = Store::with_fs("/s", sim.clone()).unwrap();
    let k = key("orders.dictionary");
    let old = store.save(&k, &snapshot("old")).unwrap();

    // Replacing a stash is explicit: only the one seen, by digest.
    let opts = SaveOptions::new().kind("table-snapshot").origin("job-7");
    let guard = store.begin_replacing(&k, &snapshot("new"), &opts, &old.digest).unwrap();
    let seen = images(&sim, &k);
    assert!(!seen.is_empty());
    for stashed in seen {
        let stashed = stashed.expect("a crash image lost the stash");
        assert_eq!(stashed.value().table, "new", "a crash image still held the old stash");
        assert_eq!(stashed.meta().header.origin(), Some("job-7"));
        assert_eq!(stashed.meta().header.kind(), "table-snapshot");
    }
    guard.keep();
}

#[test]
fn begin_on_the_real_fs_leaves_a_verified_file_before_anything_else() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("stashes")).unwrap();
    let k = key("orders.dictionary");
    let snap = snapshot("orders");

    let guard = store.begin(&k, &snap).unwrap();
    let receipt = guard.receipt().clone();
    assert_eq!(guard.key(), &k);
    assert_eq!(receipt.path, store.path_of(&k));
    assert!(receipt.path.is_file());
    let bytes = read(&receipt.path);
    assert_eq!(bytes.len() as u64, receipt.bytes);
    assert_eq!(envelope::decode(&bytes).unwrap().digest, receipt.digest);
    // Another store (another process, say) sees it too.
    let other = Store::open(store.dir()).unwrap();
    let loaded = other.load::<Snapshot>(&k).unwrap().expect("stash exists once begin returned");
    assert_eq!(loaded.value(), &snap);
    assert_eq!(loaded.meta().digest, receipt.digest);
    assert!(temp_files(store.dir()).is_empty());
    guard.keep();
}

// ---------------------------------------------------------------------------
// commit
// ---------------------------------------------------------------------------

#[test]
fn commit_clears_the_stash_and_returns_true() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = key("k");
    let guard = store.begin(&k, &snapshot("t")).unwrap();
    let path = guard.receipt().path.clone();

    assert!(guard.commit().unwrap());
    assert!(!path.exists());
    assert!(store.load::<Snapshot>(&k).unwrap().is_none());
}

#[test]
fn commit_clear_is_durable_in_every_crash_image() {
    let sim = SimFs::new();
    let store = Store::with_fs("/s", sim.clone()).unwrap();
    let k = key("k");
    let guard = store.begin(&k, &snapshot("t")).unwrap();
    assert!(guard.commit().unwrap());
    let seen = images(&sim, &k);
    assert!(!seen.is_empty());
    assert!(seen.iter().all(Option::is_none), "a crash image brought the committed stash back");
}

#[test]
fn commit_after_another_writer_replaced_the_stash_keeps_theirs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let other = Store::open(dir.path()).unwrap();
    let k = key("k");

    let guard = store.begin(&k, &snapshot("mine")).unwrap();
    let theirs = other.save(&k, &snapshot("theirs")).unwrap();
    let their_bytes = read(&theirs.path);

    assert!(!guard.commit().unwrap(), "commit must not claim to have removed another's stash");
    assert_eq!(read(&theirs.path), their_bytes);
    let loaded = store.load::<Snapshot>(&k).unwrap().expect("the other writer's stash is kept");
    assert_eq!(loaded.value(), &snapshot("theirs"));
    assert_eq!(loaded.meta().digest, theirs.digest);
}

// ---------------------------------------------------------------------------
// rollback
// ---------------------------------------------------------------------------

#[test]
fn rollback_restores_before_it_clears_and_hands_over_exactly_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = key("orders.dictionary");
    let snap = snapshot("orders");
    let opts = SaveOptions::new().kind("table-snapshot").origin("job-7");
    let guard = store.begin_with(&k, &snap, &opts).unwrap();
    let receipt = guard.receipt().clone();

    let mut calls = 0;
    let mut got = None;
    let mut seen_during_restore = None;
    let restored = guard
        .rollback(&mut |s: Stashed<Snapshot>| -> Result<(), HookError> {
            calls += 1;
            // The stash must still be on disk while the resource is rebuilt.
            let second = Store::open(dir.path()).unwrap();
            seen_during_restore = second.load::<Snapshot>(&k).unwrap();
            assert_eq!(s.meta().header.origin(), Some("job-7"));
            assert_eq!(s.meta().header.kind(), "table-snapshot");
            assert_eq!(s.meta().digest, receipt.digest);
            got = Some(s.into_value());
            Ok(())
        })
        .unwrap();

    assert_eq!(calls, 1);
    assert_eq!(got.as_ref(), Some(&snap));
    let during = seen_during_restore.expect("the stash was cleared before the restore ran");
    assert_eq!(during.meta().digest, receipt.digest);
    assert_eq!(during.value(), &snap);
    assert_eq!(restored.meta.digest, receipt.digest);
    assert_eq!(restored.meta.header.key(), &k);
    assert!(restored.observer_errors.is_empty());
    assert!(store.load::<Snapshot>(&k).unwrap().is_none(), "rollback must clear after restoring");
    assert!(!receipt.path.exists());
}

#[test]
fn rollback_keeps_the_stash_durable_during_the_restore_and_clears_durably_after() {
    let sim = SimFs::new();
    let store = Store::with_fs("/s", sim.clone()).unwrap();
    let k = key("k");
    let snap = snapshot("t");
    let guard = store.begin(&k, &snap).unwrap();

    let mut during = Vec::new();
    guard
        .rollback(&mut |_: Stashed<Snapshot>| -> Result<(), HookError> {
            during = images(&sim, &k);
            Ok(())
        })
        .unwrap();
    assert!(!during.is_empty());
    for s in &during {
        assert_eq!(s.as_ref().map(Stashed::value), Some(&snap), "stash not durable during restore");
    }
    let after = images(&sim, &k);
    assert!(!after.is_empty());
    assert!(after.iter().all(Option::is_none), "a crash image brought the restored stash back");
}

#[test]
fn failed_restore_keeps_the_stash_byte_identical_and_the_guard_can_retry() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = key("orders.dictionary");
    let snap = snapshot("orders");
    let guard = store.begin(&k, &snap).unwrap();
    let receipt = guard.receipt().clone();
    let before = read(&receipt.path);

    let failed = guard
        .rollback(&mut |_: Stashed<Snapshot>| Err::<(), _>(HookError("database is down")))
        .unwrap_err();

    assert!(!failed.restored);
    match &failed.error {
        Error::Restore { key: ek, path, .. } => {
            assert_eq!(ek, &k);
            assert_eq!(path, &receipt.path);
        }
        other => panic!("expected Error::Restore, got {other:?}"),
    }
    let msg = failed.error.to_string();
    assert!(msg.contains("kept"), "{msg}");
    assert!(msg.contains(&receipt.path.display().to_string()), "{msg}");
    let source = failed.error.source().expect("the hook's error is the source");
    assert_eq!(source.downcast_ref::<HookError>(), Some(&HookError("database is down")));
    // The GuardError itself says the stash is kept, and chains to the error.
    assert!(failed.to_string().contains("kept"), "{failed}");
    assert!(failed.source().unwrap().to_string() == msg);

    assert_eq!(read(&receipt.path), before, "a failed restore touched the stash");
    assert_eq!(store.load::<Snapshot>(&k).unwrap().unwrap().value(), &snap);

    // Retry with the guard handed back.
    let mut got = None;
    let restored = failed
        .guard
        .rollback(&mut |s: Stashed<Snapshot>| -> Result<(), HookError> {
            got = Some(s.into_value());
            Ok(())
        })
        .unwrap();
    assert_eq!(got, Some(snap));
    assert_eq!(restored.meta.digest, receipt.digest);
    assert!(store.load::<Snapshot>(&k).unwrap().is_none());
}

#[test]
fn a_clear_failing_after_a_successful_restore_is_flagged_and_commit_retries_it() {
    let sim = SimFs::new();
    let store = Store::with_fs("/s", sim.clone()).unwrap();
    let k = key("k");
    let guard = store.begin(&k, &snapshot("t")).unwrap();

    let mut calls = 0;
    let failed = guard
        .rollback(&mut |_: Stashed<Snapshot>| -> Result<(), HookError> {
            calls += 1;
            // Every filesystem call after the restore fails.
            sim.fail_at(sim.calls() + 1, true);
            Ok(())
        })
        .unwrap_err();
    assert_eq!(calls, 1);
    assert!(failed.restored, "the restore succeeded; only the clear failed");
    assert!(matches!(failed.error, Error::Io { .. }), "{:?}", failed.error);
    assert!(failed.to_string().contains("restored"), "{failed}");

    sim.clear_faults();
    assert!(store.load::<Snapshot>(&k).unwrap().is_some(), "a failed clear removed nothing");
    assert!(failed.guard.commit().unwrap());
    assert!(store.load::<Snapshot>(&k).unwrap().is_none());
}

// ---------------------------------------------------------------------------
// drop, panic, keep
// ---------------------------------------------------------------------------

#[test]
fn dropping_the_guard_keeps_the_stash() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = key("k");
    let guard = store.begin(&k, &snapshot("t")).unwrap();
    let receipt = guard.receipt().clone();
    let before = read(&receipt.path);
    drop(guard);

    assert_eq!(read(&receipt.path), before);
    let loaded = store.load::<Snapshot>(&k).unwrap().expect("a dropped guard keeps the stash");
    assert_eq!(loaded.meta().digest, receipt.digest);
    assert_eq!(loaded.value(), &snapshot("t"));
}

fn rebuild_that_panics() {
    panic!("the rebuild blew up");
}

#[test]
fn a_panic_between_begin_and_commit_keeps_the_stash_for_the_next_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = key("k");
    let snap = snapshot("t");

    let mut digest = None;
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let guard = store.begin(&k, &snap).unwrap();
        digest = Some(guard.receipt().digest);
        rebuild_that_panics();
        guard.commit().unwrap()
    }));
    assert!(outcome.is_err());

    let stashed = store.load::<Snapshot>(&k).unwrap().expect("a panic must not lose the stash");
    assert_eq!(Some(stashed.meta().digest), digest);
    assert_eq!(stashed.value(), &snap);
    // The next attempt finds nothing live and resumes the stash.
    let policy = safestash::LoadPolicy::new();
    match store.resume::<Snapshot>(&k, None, &SaveOptions::new(), &policy).unwrap() {
        safestash::Resume::Stash(guard) => assert_eq!(Some(guard.receipt().digest), digest),
        other => panic!("expected the stash, got {other:?}"),
    }
}

#[test]
fn keep_keeps_the_stash_and_returns_its_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = key("k");
    let guard = store.begin(&k, &snapshot("t")).unwrap();
    let expected = guard.receipt().clone();

    let kept = guard.keep();
    assert_eq!(kept, expected);
    let loaded = store.load::<Snapshot>(&k).unwrap().expect("keep keeps the stash");
    assert_eq!(loaded.meta().digest, kept.digest);
    assert_eq!(read(&kept.path).len() as u64, kept.bytes);
}

// ---------------------------------------------------------------------------
// rollback never restores what the guard did not write
// ---------------------------------------------------------------------------

#[test]
fn rollback_of_a_stash_replaced_by_another_writer_is_refused_without_calling_the_hook() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let other = Store::open(dir.path()).unwrap();
    let k = key("k");
    let guard = store.begin(&k, &snapshot("mine")).unwrap();
    let mine = guard.receipt().clone();
    let theirs = other.save(&k, &snapshot("theirs")).unwrap();
    let their_bytes = read(&theirs.path);

    let called = Cell::new(false);
    let failed = guard
        .rollback(&mut |_: Stashed<Snapshot>| -> Result<(), HookError> {
            called.set(true);
            Ok(())
        })
        .unwrap_err();
    assert!(!called.get(), "another writer's stash was handed to the hook");
    assert!(!failed.restored);
    match &failed.error {
        Error::Replaced { key: ek, path, expected } => {
            assert_eq!(ek, &k);
            assert_eq!(path, &mine.path);
            assert_eq!(expected, &mine.digest);
        }
        other => panic!("expected Error::Replaced, got {other:?}"),
    }
    assert_eq!(read(&theirs.path), their_bytes, "the other writer's stash was touched");
    // The guard handed back still refuses to remove their stash.
    assert!(!failed.guard.commit().unwrap());
    assert_eq!(read(&theirs.path), their_bytes);
}

#[test]
fn rollback_of_a_corrupt_stash_is_refused_and_leaves_the_file_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    type Damage = fn(&mut Vec<u8>);
    let damages: [(&str, Damage); 3] = [
        ("flipped payload byte", |b| {
            let mid = b.len() / 2;
            b[mid] ^= 0x20;
        }),
        ("truncated", |b| b.truncate(b.len() - 10)),
        ("garbage", |b| *b = b"not a stash at all".to_vec()),
    ];
    for (i, (what, damage)) in damages.iter().enumerate() {
        let k = key(&format!("k{i}"));
        let guard = store.begin(&k, &snapshot("t")).unwrap();
        let path = guard.receipt().path.clone();
        let mut bytes = read(&path);
        damage(&mut bytes);
        std::fs::write(&path, &bytes).unwrap();

        let called = Cell::new(false);
        let failed = guard
            .rollback(&mut |_: Stashed<Snapshot>| -> Result<(), HookError> {
                called.set(true);
                Ok(())
            })
            .unwrap_err();
        assert!(!called.get(), "{what}: a corrupt stash was handed to the hook");
        assert!(!failed.restored);
        match &failed.error {
            Error::Corrupt { path: p, .. } => assert_eq!(p, &path, "{what}"),
            other => panic!("{what}: expected Error::Corrupt, got {other:?}"),
        }
        assert_eq!(read(&path), bytes, "{what}: the corrupt file was modified");
        failed.guard.keep();
    }
}

#[test]
fn rollback_of_a_stash_cleared_by_someone_else_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let other = Store::open(dir.path()).unwrap();
    let k = key("k");
    let guard = store.begin(&k, &snapshot("t")).unwrap();
    let mine = guard.receipt().clone();
    assert!(other.clear(&k).unwrap());

    let called = Cell::new(false);
    let failed = guard
        .rollback(&mut |_: Stashed<Snapshot>| -> Result<(), HookError> {
            called.set(true);
            Ok(())
        })
        .unwrap_err();
    assert!(!called.get());
    assert!(!failed.restored);
    match &failed.error {
        Error::Replaced { expected, .. } => assert_eq!(expected, &mine.digest),
        other => panic!("expected Error::Replaced, got {other:?}"),
    }
    assert!(store.load::<Snapshot>(&k).unwrap().is_none(), "nothing may be recreated");
    failed.guard.keep();
}

// ---------------------------------------------------------------------------
// Restorer forms
// ---------------------------------------------------------------------------

/// A resource that is rebuilt from a stash: the struct form of a hook.
struct Table {
    rebuilt: Option<Snapshot>,
    fail_with: Option<std::io::ErrorKind>,
    calls: usize,
}

impl Restorer<Snapshot> for Table {
    type Error = std::io::Error;

    fn restore(&mut self, stashed: Stashed<Snapshot>) -> Result<(), std::io::Error> {
        self.calls += 1;
        if let Some(kind) = self.fail_with {
            return Err(std::io::Error::new(kind, "table rebuild failed"));
        }
        self.rebuilt = Some(stashed.into_value());
        Ok(())
    }
}

#[test]
fn a_struct_restorer_works_and_its_failure_keeps_the_stash() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = key("k");
    let snap = snapshot("t");
    let guard = store.begin(&k, &snap).unwrap();

    let mut table =
        Table { rebuilt: None, fail_with: Some(std::io::ErrorKind::PermissionDenied), calls: 0 };
    let failed = guard.rollback(&mut table).unwrap_err();
    assert_eq!(table.calls, 1);
    assert!(table.rebuilt.is_none());
    let source = failed.error.source().unwrap();
    let io = source.downcast_ref::<std::io::Error>().expect("the hook's io::Error is the source");
    assert_eq!(io.kind(), std::io::ErrorKind::PermissionDenied);
    assert!(store.load::<Snapshot>(&k).unwrap().is_some());

    table.fail_with = None;
    failed.guard.rollback(&mut table).unwrap();
    assert_eq!(table.calls, 2);
    assert_eq!(table.rebuilt, Some(snap));
    assert!(store.load::<Snapshot>(&k).unwrap().is_none());
}

#[test]
fn a_closure_restorer_works() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = key("k");
    let snap = snapshot("t");
    let mut live: Vec<Snapshot> = Vec::new();

    let guard = store.begin(&k, &snap).unwrap();
    live.clear(); // destroy
    guard
        .rollback(
            &mut |s: Stashed<Snapshot>| -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
                live.push(s.into_value());
                Ok(())
            },
        )
        .unwrap();
    assert_eq!(live, [snap]);
    assert!(store.load::<Snapshot>(&k).unwrap().is_none());
}

#[test]
fn a_restore_hook_that_panics_keeps_the_stash() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = key("k");
    let guard = store.begin(&k, &snapshot("t")).unwrap();
    let receipt = guard.receipt().clone();
    let before = read(&receipt.path);

    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let result = guard.rollback(&mut |_: Stashed<Snapshot>| -> Result<(), HookError> {
            panic!("restore blew up")
        });
        result.is_ok()
    }));
    assert!(outcome.is_err());
    assert_eq!(read(&receipt.path), before, "a panicking hook must not lose the stash");
    let loaded = store.load::<Snapshot>(&k).unwrap().expect("stash kept");
    assert_eq!(loaded.meta().digest, receipt.digest);
}
