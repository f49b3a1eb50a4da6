//! Guards own their store: a `Store` is a cheap clone, and every guard,
//! lock, batch, operation and reconciler holds one, so each can outlive
//! the `Store` value it came from and move to another thread.

use std::thread;

use safestash::journal::{Operation, PartState};
use safestash::reconcile::{CanonicalUuid, IdSet, Reconciler, plan};
use safestash::{Error, KeyLock, RollbackGuard, StashKey, Store};

fn assert_owned<T: Send + 'static>() {}
fn assert_shared<T: Clone + Send + Sync + 'static>() {}

#[test]
fn the_public_types_are_owned_and_sendable() {
    assert_shared::<Store>();
    assert_owned::<RollbackGuard<String>>();
    assert_owned::<safestash::GuardError<String>>();
    assert_owned::<KeyLock>();
    assert_owned::<safestash::Batch<'static>>();
    assert_owned::<Operation>();
    assert_owned::<Reconciler>();
}

#[test]
fn a_guard_commits_on_another_thread_after_its_store_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = StashKey::new("k").unwrap();
    let g = store.begin(&k, &"snapshot".to_owned()).unwrap();
    drop(store);
    let committed = thread::spawn(move || g.commit().map_err(Error::from)).join().unwrap();
    assert!(committed.unwrap());
    assert!(Store::open(dir.path()).unwrap().load::<String>(&k).unwrap().is_none());
}

#[test]
fn a_lock_saves_on_another_thread_after_its_store_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = StashKey::new("k").unwrap();
    let lock = store.lock(&k).unwrap();
    drop(store);
    thread::spawn(move || lock.save(&7).map(drop)).join().unwrap().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(*store.load::<i32>(&k).unwrap().unwrap().value(), 7);
    assert!(store.try_lock(&k).is_ok(), "released when dropped on the other thread");
}

#[test]
fn a_batch_commits_on_another_thread_after_its_store_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut batch = store.batch();
    batch.add(&StashKey::new("a").unwrap(), &1, &Default::default()).unwrap();
    drop(store);
    let receipts =
        thread::spawn(move || batch.commit().map_err(|e| e.error)).join().unwrap().unwrap();
    assert_eq!(receipts.len(), 1);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(*store.load::<i32>(&StashKey::new("a").unwrap()).unwrap().unwrap().value(), 1);
}

#[test]
fn an_operation_updates_on_another_thread_after_its_store_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let op = Operation::create(&store, "op", ["a"]).unwrap();
    drop(store);
    let view = thread::spawn(move || {
        let g = op.view()?.generation;
        op.update("a", safestash::journal::Expect::Operation(g), PartState::Running)
    })
    .join()
    .unwrap()
    .unwrap();
    assert_eq!(view.part.state, PartState::Running);
}

#[test]
fn a_reconciler_runs_on_another_thread_after_its_store_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let reconciler = Reconciler::new(&store);
    drop(store);
    let ids = |ns: &[u128]| -> IdSet<CanonicalUuid> {
        IdSet::canonicalize(ns.iter().map(|n| uuid::Uuid::from_u128(*n)))
    };
    let report = thread::spawn(move || {
        let (local, truth) =
            (ids(&(1..=20).collect::<Vec<_>>()), ids(&(2..=20).collect::<Vec<_>>()));
        let p = plan(&local, &truth);
        reconciler.execute(
            &p,
            &local,
            &truth,
            |id| Ok::<_, Error>(id.to_string()),
            |_| Ok::<_, Error>(()),
        )
    })
    .join()
    .unwrap()
    .unwrap();
    assert_eq!(report.deleted.len(), 1);
}

#[test]
fn a_clone_is_the_same_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let clone = store.clone();
    let k = StashKey::new("k").unwrap();
    clone.save(&k, &"from the clone").unwrap();
    assert_eq!(store.load::<String>(&k).unwrap().unwrap().value(), "from the clone");
    let _held = store.lock(&k).unwrap();
    assert!(matches!(clone.try_lock(&k), Err(Error::Locked { .. })));
}

/// The directory is a `Backend` like any other: a store over it, plugged in
/// through the public seam, is the store `Store::open` makes.
#[test]
fn a_store_over_a_directory_backend_is_the_directory_store() {
    use safestash::backend::Directory;
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("stashes");
    let plugged = Store::with_backend(Arc::new(Directory::open(&root).unwrap()));
    let opened = Store::open(&root).unwrap();
    let k = StashKey::new("k").unwrap();

    let receipt = plugged.save(&k, &vec![1, 2, 3]).unwrap();
    assert_eq!(receipt.path, root.join("k"));
    assert!(root.join("k").is_file(), "one file per key, in the directory");
    assert_eq!(opened.load::<Vec<i32>>(&k).unwrap().unwrap().value(), &[1, 2, 3]);
    opened.save(&k, &vec![4]).unwrap();
    assert_eq!(plugged.load::<Vec<i32>>(&k).unwrap().unwrap().value(), &[4]);

    // The same locks: a lock taken through one excludes the other.
    let held = plugged.lock(&k).unwrap();
    assert!(matches!(opened.try_lock(&k), Err(Error::Locked { .. })));
    drop(held);
    assert!(opened.try_lock(&k).is_ok());

    // The same verbs, the same answers.
    assert_eq!(plugged.list().unwrap().len(), 1);
    assert!(plugged.verify().unwrap().iter().all(|r| r.result.is_ok()));
    assert!(plugged.clear(&k).unwrap());
    assert!(opened.load::<Vec<i32>>(&k).unwrap().is_none());

    // A file where the directory should be is refused when it is opened.
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    assert!(matches!(Directory::open(&file), Err(Error::NotAFile { .. })));
}
