//! Persist first: observers run only once an operation is durable and
//! visible, in registration order, and their failures (errors or panics) are
//! reported next to the result without undoing or failing it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use safestash::sim::SimFs;
use safestash::{Event, StashKey, Stashed, Store};

fn key(s: &str) -> StashKey {
    StashKey::new(s).unwrap()
}

type Log = Arc<Mutex<Vec<String>>>;

fn log() -> Log {
    Arc::new(Mutex::new(Vec::new()))
}

fn event_name(event: &Event<'_>) -> &'static str {
    match event {
        Event::Saved(_) => "saved",
        Event::Cleared { .. } => "cleared",
        Event::Restored { .. } => "restored",
        _ => "other",
    }
}

#[test]
fn an_observer_error_on_save_is_reported_and_the_stash_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    store.observe("webhook", |event| match event {
        Event::Saved(_) => Err("watcher is down".into()),
        _ => Ok(()),
    });
    let k = key("k");

    let receipt = store.save(&k, &vec!["label"]).unwrap();
    assert_eq!(receipt.observer_errors.len(), 1);
    let failure = &receipt.observer_errors[0];
    assert_eq!(failure.observer, "webhook");
    assert_eq!(failure.error.to_string(), "watcher is down");
    assert!(failure.to_string().contains("webhook"), "{failure}");

    let loaded = store.load::<Vec<String>>(&k).unwrap().expect("saved despite the observer");
    assert_eq!(loaded.value(), &["label"]);
    assert_eq!(loaded.meta().digest, receipt.digest);
}

#[test]
fn a_panicking_observer_is_reported_and_the_stash_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let ran = log();
    let after = Arc::clone(&ran);
    store
        .observe("str-panic", |_| panic!("observer exploded"))
        .observe("string-panic", |_| panic!("observer {} exploded", 2))
        .observe("after", move |e| {
            after.lock().unwrap().push(event_name(e).to_owned());
            Ok(())
        });
    let k = key("k");

    let receipt = store.save(&k, &42).unwrap();
    let failures: Vec<(&str, String)> = receipt
        .observer_errors
        .iter()
        .map(|f| (f.observer.as_str(), f.error.to_string()))
        .collect();
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert_eq!(failures[0].0, "str-panic");
    assert!(failures[0].1.contains("panicked") && failures[0].1.contains("observer exploded"));
    assert_eq!(failures[1].0, "string-panic");
    assert!(failures[1].1.contains("panicked") && failures[1].1.contains("observer 2 exploded"));
    assert_eq!(*ran.lock().unwrap(), ["saved"], "a panic must not stop later observers");
    assert_eq!(*store.load::<i32>(&k).unwrap().unwrap().value(), 42);
}

#[test]
fn an_observer_sees_the_new_value_through_another_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let seen = log();
    let (sink, path) = (Arc::clone(&seen), PathBuf::from(dir.path()));
    store.observe("reader", move |event| {
        if let Event::Saved(receipt) = event {
            let other = Store::open(&path)?;
            let loaded = other.load::<String>(&receipt.key)?.ok_or("no stash yet")?;
            if loaded.meta().digest != receipt.digest {
                return Err("observer saw an older stash".into());
            }
            sink.lock().unwrap().push(loaded.into_value());
        }
        Ok(())
    });
    let k = key("k");

    for value in ["first", "second"] {
        let receipt = store.save(&k, &value).unwrap();
        assert!(receipt.observer_errors.is_empty(), "{:?}", receipt.observer_errors);
    }
    assert_eq!(*seen.lock().unwrap(), ["first", "second"]);
}

/// What every crash image of `sim` (a store at `/s`) holds under `key`: the
/// digest of the stash, or `None`.
fn digests_in_images(sim: &SimFs, key: &StashKey) -> Vec<Option<safestash::Digest>> {
    let mut out = Vec::new();
    sim.for_each_crash_image(|image| {
        let store = Store::with_fs("/s", image).unwrap();
        out.push(store.load::<serde_json::Value>(key).unwrap().map(|s| s.meta().digest));
    });
    out
}

#[test]
fn observers_run_only_once_the_operation_survives_a_power_cut() {
    let sim = SimFs::new();
    let mut store = Store::with_fs("/s", sim.clone()).unwrap();
    let k = key("k");
    let verdicts = log();
    let (fs, sink, watched) = (sim.clone(), Arc::clone(&verdicts), k.clone());
    store.observe("power-cut", move |event| {
        let images = digests_in_images(&fs, &watched);
        let ok = !images.is_empty()
            && match event {
                Event::Saved(receipt) => images.iter().all(|d| *d == Some(receipt.digest)),
                Event::Cleared { .. } | Event::Restored { .. } => {
                    images.iter().all(Option::is_none)
                }
                _ => false,
            };
        sink.lock().unwrap().push(format!("{} durable={ok}", event_name(event)));
        Ok(())
    });

    store.save(&k, &1).unwrap();
    store.save(&k, &2).unwrap();
    assert!(store.clear(&k).unwrap());
    let guard = store.begin(&k, &3).unwrap();
    guard.rollback(&mut |_: Stashed<i32>| Ok::<(), std::io::Error>(())).unwrap();
    let guard = store.begin(&k, &4).unwrap();
    assert!(guard.commit().unwrap());

    let verdicts = verdicts.lock().unwrap().clone();
    assert!(verdicts.iter().all(|v| v.ends_with("durable=true")), "{verdicts:?}");
    let saved = verdicts.iter().filter(|v| v.starts_with("saved")).count();
    assert_eq!(saved, 4, "{verdicts:?}");
    assert!(verdicts.iter().any(|v| v.starts_with("restored")), "{verdicts:?}");
    assert!(verdicts.iter().any(|v| v.starts_with("cleared")), "{verdicts:?}");
}

#[test]
fn observers_run_in_registration_order_even_when_one_fails() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let order = log();
    for name in ["first", "second", "third"] {
        let sink = Arc::clone(&order);
        store.observe(name, move |event| {
            sink.lock().unwrap().push(format!("{name}:{}", event_name(event)));
            if name == "second" { Err("second is broken".into()) } else { Ok(()) }
        });
    }
    let k = key("k");

    let receipt = store.save(&k, &1).unwrap();
    assert_eq!(*order.lock().unwrap(), ["first:saved", "second:saved", "third:saved"]);
    let failed: Vec<&str> = receipt.observer_errors.iter().map(|e| e.observer.as_str()).collect();
    assert_eq!(failed, ["second"]);

    order.lock().unwrap().clear();
    assert!(store.clear(&k).unwrap());
    assert_eq!(*order.lock().unwrap(), ["first:cleared", "second:cleared", "third:cleared"]);
    assert!(store.load::<i32>(&k).unwrap().is_none(), "a failing observer undid the clear");
}

#[test]
fn a_failing_observer_on_begin_still_yields_a_usable_guard() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    store.observe("audit", |event| match event {
        Event::Saved(_) => Err("audit log unreachable".into()),
        _ => Ok(()),
    });
    let k = key("k");

    // Rolled back.
    let guard = store.begin(&k, &vec![1, 2, 3]).unwrap();
    let failed: Vec<&str> =
        guard.receipt().observer_errors.iter().map(|e| e.observer.as_str()).collect();
    assert_eq!(failed, ["audit"]);
    assert!(store.load::<Vec<i32>>(&k).unwrap().is_some());
    let mut got = None;
    let restored = guard
        .rollback(&mut |s: Stashed<Vec<i32>>| -> Result<(), std::io::Error> {
            got = Some(s.into_value());
            Ok(())
        })
        .unwrap();
    assert_eq!(got, Some(vec![1, 2, 3]));
    assert!(restored.observer_errors.is_empty());
    assert!(store.load::<Vec<i32>>(&k).unwrap().is_none());

    // Committed.
    let guard = store.begin(&k, &vec![4]).unwrap();
    assert_eq!(guard.receipt().observer_errors.len(), 1);
    assert!(guard.commit().unwrap());
    assert!(store.load::<Vec<i32>>(&k).unwrap().is_none());
}

#[test]
fn an_observer_failing_on_restore_is_reported_and_the_rollback_still_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let events = log();
    let sink = Arc::clone(&events);
    store.observe("restore-hook", move |event| {
        sink.lock().unwrap().push(event_name(event).to_owned());
        match event {
            Event::Restored { meta } if meta.header.key().as_str() == "k" => {
                Err(format!("cannot announce {}", meta.header.key()).into())
            }
            _ => Ok(()),
        }
    });
    let k = key("k");
    let guard = store.begin(&k, &"snapshot".to_owned()).unwrap();
    let digest = guard.receipt().digest;

    let restored = guard.rollback(&mut |_: Stashed<String>| Ok::<(), std::io::Error>(())).unwrap();
    assert_eq!(restored.meta.digest, digest);
    assert_eq!(restored.observer_errors.len(), 1);
    assert_eq!(restored.observer_errors[0].observer, "restore-hook");
    assert_eq!(restored.observer_errors[0].error.to_string(), "cannot announce k");
    assert!(store.load::<String>(&k).unwrap().is_none());
    assert_eq!(events.lock().unwrap().last().map(String::as_str), Some("restored"));
}

/// An observer runs after the key's lock is released: one that writes the
/// same key must not deadlock (it did while observers ran under the lock).
#[test]
fn an_observer_may_write_the_key_it_observes() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let path = dir.path().to_owned();
        let lock_free_on_clear = Arc::new(Mutex::new(None));
        let seen = Arc::clone(&lock_free_on_clear);
        store.observe("marker", move |event| {
            match event {
                Event::Saved(receipt) => {
                    Store::open(&path)?.save(&receipt.key, &"written by the observer")?;
                }
                Event::Cleared { key } => {
                    *seen.lock().unwrap() = Some(Store::open(&path)?.try_lock(key).is_ok());
                }
                _ => {}
            }
            Ok(())
        });
        let k = StashKey::new("k").unwrap();
        let receipt = store.save(&k, &"written by the job").unwrap();
        assert!(receipt.observer_errors.is_empty(), "{:?}", receipt.observer_errors);
        let loaded = store.load::<String>(&k).unwrap().unwrap().into_value();
        assert!(store.clear(&k).unwrap());
        assert_eq!(*lock_free_on_clear.lock().unwrap(), Some(true), "observer ran under the lock");
        tx.send(loaded).unwrap();
    });
    let loaded =
        rx.recv_timeout(std::time::Duration::from_secs(10)).expect("deadlocked on the key's lock");
    assert_eq!(loaded, "written by the observer");
}
