//! One verified-restore step: the rollback guard, the tenant guard's
//! restore and the journal's rollback tell observers the same thing, in the
//! same order, and the journal's own records never reach user observers.

use std::sync::{Arc, Mutex};

use safestash::journal::{Expect, Operation, PartState};
use safestash::reconcile::{CanonicalUuid, IdSet, Limits, Reconciler, plan, restore_tenant};
use safestash::{Event, StashKey, Stashed, Store};

type Log = Arc<Mutex<Vec<String>>>;

/// A store whose observer writes one line per event: its kind, and the key
/// it is about.
fn observed(dir: &std::path::Path) -> (Store, Log) {
    let mut store = Store::open(dir).unwrap();
    let log: Log = Arc::default();
    let out = log.clone();
    store.observe("log", move |event| {
        let line = match event {
            Event::Saved(r) => format!("saved {}", r.key),
            Event::Cleared { key } => format!("cleared {key}"),
            Event::Restored { meta } => format!("restored {}", meta.header.key()),
            _ => "other".to_owned(),
        };
        out.lock().unwrap().push(line);
        Ok(())
    });
    (store, log)
}

/// The events of the restore itself (what came after `mark`), with keys
/// replaced by `K` so the three flows can be compared.
fn restore_events(log: &Log, mark: usize) -> Vec<String> {
    log.lock().unwrap()[mark..]
        .iter()
        .map(|l| l.split_once(' ').map_or(l.clone(), |(kind, _)| format!("{kind} K")))
        .collect()
}

#[test]
fn rollback_tenant_restore_and_journal_rollback_tell_observers_the_same() {
    // The rollback guard.
    let dir = tempfile::tempdir().unwrap();
    let (store, log) = observed(dir.path());
    let guard = store.begin(&StashKey::new("t").unwrap(), &"snapshot".to_owned()).unwrap();
    let mark = log.lock().unwrap().len();
    guard.rollback(&mut |_: Stashed<String>| Ok::<(), std::io::Error>(())).unwrap();
    let guard_events = restore_events(&log, mark);

    // The tenant guard: stash, delete, restore.
    let dir = tempfile::tempdir().unwrap();
    let (store, log) = observed(dir.path());
    let ids: Vec<CanonicalUuid> =
        (1..=4).map(|n| CanonicalUuid::from(uuid::Uuid::from_u128(n))).collect();
    let local: IdSet<CanonicalUuid> = ids.iter().copied().collect();
    let truth: IdSet<CanonicalUuid> = ids[1..].iter().copied().collect();
    let report = Reconciler::new(&store)
        .limits(Limits::default().max_share(0.5))
        .execute(
            &plan(&local, &truth),
            &local,
            &truth,
            |_| Ok::<_, std::io::Error>("tenant data".to_owned()),
            |_| Ok::<_, std::io::Error>(()),
        )
        .unwrap();
    assert_eq!(report.deleted, [ids[0]]);
    let mark = log.lock().unwrap().len();
    restore_tenant(&store, &ids[0], &mut |_: Stashed<String>| Ok::<(), std::io::Error>(()))
        .unwrap();
    let tenant_events = restore_events(&log, mark);

    // The journal: a part stashes, fails retryably, and is rolled back.
    let dir = tempfile::tempdir().unwrap();
    let (store, log) = observed(dir.path());
    let op = Operation::create(&store, "reload", ["orders"]).unwrap();
    let g = op.view().unwrap().generation;
    let u = op.update("orders", Expect::Operation(g), PartState::Running).unwrap();
    let u = op.stash("orders", Expect::Operation(u.generation), &"orders before").unwrap();
    op.update("orders", Expect::Operation(u.generation), PartState::FailedRetryable).unwrap();
    let mark = log.lock().unwrap().len();
    op.rollback(&mut |_: Stashed<String>| Ok::<(), std::io::Error>(())).unwrap();
    let journal_events = restore_events(&log, mark);

    assert_eq!(guard_events, ["cleared K", "restored K"]);
    assert_eq!(tenant_events, guard_events);
    assert_eq!(journal_events, guard_events);

    // The journal's records (header, part records) were never announced:
    // only its part's stash (user data) was.
    let all = log.lock().unwrap().clone();
    let saved: Vec<&String> = all.iter().filter(|l| l.starts_with("saved")).collect();
    assert_eq!(saved, [&format!("saved {}", op.stash_key("orders"))], "{all:?}");
}
