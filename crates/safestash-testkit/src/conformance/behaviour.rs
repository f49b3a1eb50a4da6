//! The behaviour suite: every verb through the public API, each check on
//! a fresh store.

use std::collections::BTreeMap;
use std::fmt;

use safestash::journal::{Expect, Operation, PartState};
use safestash::{Corruption, Error, Precondition, SaveOptions, StashKey, Stashed};

use super::{Check, Checked, Ctx, Damage, Opened, Stop, ensure, key};

/// The behaviour suite's checks, by name.
pub(super) const CHECKS: [Check<Opened>; 14] = [
    ("round_trip_and_absent", round_trip_and_absent),
    ("empty_map_is_a_stash_not_absence", empty_map_is_a_stash),
    ("replace_and_idempotent_clear", replace_and_idempotent_clear),
    ("conditional_save_and_clear", conditional_save_and_clear),
    ("hostile_keys_round_trip_and_stay_contained", hostile_keys),
    ("locks_exclude_and_release", locks_exclude_and_release),
    ("begin_rollback_and_resume", begin_rollback_and_resume),
    ("batch_saves_every_stash_and_stops_at_a_failed_condition", batch_semantics),
    ("namespaces_are_separate", namespaces_are_separate),
    ("journal_operation", journal_operation),
    ("flipped_byte_is_corrupt", flipped_byte_is_corrupt),
    ("truncated_is_corrupt", truncated_is_corrupt),
    ("truncated_to_nothing_is_corrupt_not_absent", truncated_to_nothing_is_corrupt),
    ("copied_to_another_key_is_refused", copied_to_another_key_is_refused),
];

fn round_trip_and_absent(o: &Opened) -> Checked {
    let s = &o.store;
    let k = key("orders.dictionary");
    ensure!(s.load::<String>(&k).ctx("load")?.is_none(), "a fresh store has a stash");
    let labels = BTreeMap::from([("amount".to_string(), "Amount in EUR".to_string())]);
    let r =
        s.save_with(&k, &labels, &SaveOptions::new().kind("dict").origin("job-1")).ctx("save")?;
    let back = s.load::<BTreeMap<String, String>>(&k).ctx("load")?;
    let back = back.ok_or("a saved stash loads as none".to_owned())?;
    ensure!(back.value() == &labels, "loaded {:?}", back.value());
    ensure!(back.meta().digest == r.digest, "digest differs from the receipt's");
    ensure!(back.meta().header.kind() == "dict", "kind {}", back.meta().header.kind());
    ensure!(back.meta().header.origin() == Some("job-1"), "origin lost");
    ensure!(back.meta().size == r.bytes, "size {} != receipt {}", back.meta().size, r.bytes);
    let raw = s.read_raw(&k).ctx("read_raw")?.ok_or("read_raw found nothing".to_owned())?;
    ensure!(raw.value() == br#"{"amount":"Amount in EUR"}"#, "raw payload {:?}", raw.value());
    Ok(())
}

fn empty_map_is_a_stash(o: &Opened) -> Checked {
    let k = key("empty");
    o.store.save(&k, &BTreeMap::<String, i32>::new()).ctx("save")?;
    let back = o.store.load::<BTreeMap<String, i32>>(&k).ctx("load")?;
    ensure!(back.is_some_and(|b| b.value().is_empty()), "an empty map did not load as one");
    Ok(())
}

fn replace_and_idempotent_clear(o: &Opened) -> Checked {
    let s = &o.store;
    let k = key("k");
    s.save(&k, &1).ctx("save")?;
    s.save(&k, &2).ctx("save over")?;
    let v = s.load::<i32>(&k).ctx("load")?.map(Stashed::into_value);
    ensure!(v == Some(2), "loaded {v:?} after replacing 1 with 2");
    ensure!(s.clear(&k).ctx("clear")?, "clear of a stash said nothing was removed");
    ensure!(!s.clear(&k).ctx("clear again")?, "a second clear said it removed something");
    ensure!(s.load::<i32>(&k).ctx("load")?.is_none(), "a cleared stash loads");
    Ok(())
}

fn conditional_save_and_clear(o: &Opened) -> Checked {
    let s = &o.store;
    let k = key("k");
    let opts = SaveOptions::new();
    let first = s.save_if(&k, &1, &opts, Precondition::Absent).ctx("create")?;
    match s.save_if(&k, &2, &opts, Precondition::Absent) {
        Err(Error::StashExists { digest: Some(d), .. }) if d == first.digest => {}
        other => return Err(format!("a second create gave {other:?}").into()),
    }
    let second =
        s.save_if(&k, &3, &opts, Precondition::Unchanged(first.digest)).ctx("save if unchanged")?;
    match s.save_if(&k, &4, &opts, Precondition::Unchanged(first.digest)) {
        Err(Error::Replaced { .. }) => {}
        other => return Err(format!("a save on a stale digest gave {other:?}").into()),
    }
    ensure!(!s.clear_if(&k, &first.digest).ctx("clear_if")?, "a stale clear_if removed");
    let v = s.load::<i32>(&k).ctx("load")?.map(Stashed::into_value);
    ensure!(v == Some(3), "loaded {v:?}, want 3");
    ensure!(s.clear_if(&k, &second.digest).ctx("clear_if")?, "clear_if on the digest failed");
    ensure!(s.load::<i32>(&k).ctx("load")?.is_none(), "cleared stash loads");
    Ok(())
}

fn hostile_keys(o: &Opened) -> Checked {
    let hostile = [
        "../../etc/passwd",
        "'; DROP TABLE safestash_stashes; --",
        "\" OR 1=1 --",
        "%s%n\\x00",
        "Robert'); DELETE FROM safestash_schema;",
        "ключ/ü/😀",
    ];
    for (i, h) in hostile.iter().enumerate() {
        o.store.save(&StashKey::from_any(h), &i).ctx("save")?;
    }
    for (i, h) in hostile.iter().enumerate() {
        let v = o.store.load::<usize>(&StashKey::from_any(h)).ctx("load")?.map(Stashed::into_value);
        ensure!(v == Some(i), "{h:?} loaded {v:?}");
    }
    let n = o.store.list().ctx("list")?.len();
    ensure!(n == hostile.len(), "list shows {n} stashes, want {}", hostile.len());
    Ok(())
}

fn locks_exclude_and_release(o: &Opened) -> Checked {
    let s = &o.store;
    if !s.backend().has_locks() {
        return Err(Stop::Skip("the backend has no per-key locks".into()));
    }
    let k = key("job");
    let held = s.lock(&k).ctx("lock")?;
    ensure!(matches!(s.try_lock(&k), Err(Error::Locked { .. })), "a second try_lock got the lock");
    ensure!(s.is_locked(&k).ctx("is_locked")?, "is_locked says no while held");
    ensure!(
        matches!(s.save(&k, &0), Err(Error::LockedByThisThread { .. })),
        "a save from the holding thread did not refuse to wait for itself"
    );
    held.save(&vec![1, 2, 3]).ctx("save under the lock")?;
    ensure!(held.clear().ctx("clear under the lock")?, "clear under the lock removed nothing");
    held.save(&vec![4]).ctx("save under the lock")?;
    drop(held);
    ensure!(!s.is_locked(&k).ctx("is_locked")?, "still locked after release");
    drop(s.try_lock(&k).ctx("try_lock after release")?);
    let v = s.load::<Vec<i32>>(&k).ctx("load")?.map(Stashed::into_value);
    ensure!(v == Some(vec![4]), "loaded {v:?}");
    Ok(())
}

fn begin_rollback_and_resume(o: &Opened) -> Checked {
    let s = &o.store;
    let k = key("table");
    let guard = s.begin(&k, &vec!["row1".to_string(), "row2".to_string()]).ctx("begin")?;
    ensure!(
        matches!(s.begin(&k, &vec!["other".to_string()]), Err(Error::StashExists { .. })),
        "a second begin replaced a stash the caller has not seen"
    );
    let mut restored = Vec::new();
    guard
        .rollback(&mut |st: Stashed<Vec<String>>| -> Result<(), std::io::Error> {
            restored = st.into_value();
            Ok(())
        })
        .map_err(|e| format!("rollback: {}", e.error))?;
    ensure!(restored == ["row1", "row2"], "restored {restored:?}");
    ensure!(s.load::<Vec<String>>(&k).ctx("load")?.is_none(), "rolled back stash still there");
    let guard = s.begin(&k, &vec!["x".to_string()]).ctx("begin again")?;
    ensure!(guard.commit().map_err(|e| format!("commit: {}", e.error))?, "commit removed nothing");
    ensure!(s.load::<Vec<String>>(&k).ctx("load")?.is_none(), "committed stash still there");
    Ok(())
}

fn batch_semantics(o: &Opened) -> Checked {
    let s = &o.store;
    let (a, b, c) = (key("a"), key("b"), key("c"));
    s.save(&b, &"already").ctx("save")?;
    let opts = SaveOptions::new();
    let mut batch = s.batch();
    batch.add_if(&a, &1, &opts, Precondition::Absent).ctx("add")?;
    batch.add_if(&b, &2, &opts, Precondition::Absent).ctx("add")?;
    batch.add(&c, &3, &opts).ctx("add")?;
    let err = match batch.commit() {
        Err(e) => e,
        Ok(_) => return Err("a batch with a failed condition committed".to_owned().into()),
    };
    ensure!(matches!(err.error, Error::StashExists { .. }), "batch failed with {:?}", err.error);
    let va = s.load::<i32>(&a).ctx("load")?.map(Stashed::into_value);
    ensure!(va == Some(1), "a loaded {va:?}");
    let vb = s.load::<String>(&b).ctx("load")?.map(Stashed::into_value);
    ensure!(vb.as_deref() == Some("already"), "b loaded {vb:?}");
    ensure!(err.not_saved.first() == Some(&b), "not_saved starts with {:?}", err.not_saved);
    let saved: Vec<StashKey> = err.saved.iter().map(|r| r.key.clone()).collect();
    ensure!(saved.contains(&a), "a not reported saved");
    ensure!(saved.len() + err.not_saved.len() == 3, "{saved:?} + {:?}", err.not_saved);
    let c_loads = s.load::<i32>(&c).ctx("load")?.is_some();
    ensure!(saved.contains(&c) == c_loads, "c saved: {}, loads: {c_loads}", saved.contains(&c));
    ensure!(saved.contains(&c) != err.not_saved.contains(&c), "c both or neither");
    if s.backend().concurrent_puts() == 1 {
        ensure!(err.saved.len() == 1, "one put at a time, yet {} saved", err.saved.len());
        ensure!(err.not_saved == [b.clone(), c.clone()], "not_saved {:?}", err.not_saved);
    }
    // A value that does not serialize stops the batch with nothing of it
    // saved, even the stashes before it (on every backend).
    struct Unserializable;
    impl serde::Serialize for Unserializable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("not serializable"))
        }
    }
    let (d, e) = (key("d"), key("e"));
    let mut batch = s.batch();
    batch.add(&d, &4, &opts).ctx("add")?;
    batch.add(&e, &Unserializable, &opts).ctx("add")?;
    let err = match batch.commit() {
        Err(err) => err,
        Ok(_) => {
            return Err("a batch with a value that does not serialize committed".to_owned().into());
        }
    };
    ensure!(matches!(err.error, Error::Serialize { .. }), "batch failed with {:?}", err.error);
    ensure!(err.saved.is_empty(), "saved {:?} from a batch that did not serialize", err.saved);
    ensure!(err.not_saved.first() == Some(&e), "not_saved starts with {:?}", err.not_saved);
    let vd = s.load::<i32>(&d).ctx("load")?.map(Stashed::into_value);
    ensure!(vd.is_none(), "the stash before a value that does not serialize loads: {vd:?}");
    Ok(())
}

fn namespaces_are_separate(o: &Opened) -> Checked {
    let s = &o.store;
    let k = key("r");
    let journal = s.namespace("journal").ctx("namespace")?;
    journal.save(&k, &"record").ctx("save in the namespace")?;
    ensure!(s.load::<String>(&k).ctx("load")?.is_none(), "a namespace's stash loads at the root");
    ensure!(s.list().ctx("list")?.is_empty(), "a namespace's stash is listed at the root");
    let ns = s.namespaces().ctx("namespaces")?;
    ensure!(ns == ["journal"], "namespaces {ns:?}");
    let v = journal.load::<String>(&k).ctx("load")?.map(Stashed::into_value);
    ensure!(v.as_deref() == Some("record"), "loaded {v:?}");
    Ok(())
}

fn journal_operation(o: &Opened) -> Checked {
    let s = &o.store;
    let op = Operation::create(s, "reload", ["orders"]).ctx("create")?;
    let g = op.view().ctx("view")?.generation;
    let u = op.update("orders", Expect::Operation(g), PartState::Running).ctx("update")?;
    let u = op
        .stash("orders", Expect::Part(u.part.generation), &vec!["row 1", "row 2"])
        .ctx("stash")?;
    ensure!(u.part.stash.is_some(), "the part records no stash");
    let again = Operation::open(s, "reload").ctx("open")?;
    let back = again.load_stash::<Vec<String>>("orders").ctx("load_stash")?;
    let back = back.ok_or("another worker finds no snapshot".to_owned())?;
    ensure!(back.value().len() == 2, "snapshot {:?}", back.value());
    let g = again.view().ctx("view")?.generation;
    again.update("orders", Expect::Operation(g), PartState::Failed).ctx("update")?;
    ensure!(s.list().ctx("list")?.is_empty(), "journal records left their namespace");
    let mut restored = Vec::new();
    again
        .rollback::<Vec<String>, _>(&mut |st: Stashed<Vec<String>>| -> Result<(), std::io::Error> {
            restored = st.into_value();
            Ok(())
        })
        .ctx("rollback")?;
    ensure!(restored == ["row 1", "row 2"], "restored {restored:?}");
    Ok(())
}

fn damage_of(o: &Opened) -> Result<&dyn Fn(Damage<'_>), Stop> {
    o.damage.as_deref().ok_or_else(|| Stop::Skip("no damage callback given".into()))
}

fn expect_corrupt<T: fmt::Debug>(got: safestash::Result<T>, what: &str) -> Checked {
    match got {
        Err(Error::Corrupt { .. }) => Ok(()),
        other => Err(format!("{what} gave {other:?}, want Corrupt").into()),
    }
}

fn flipped_byte_is_corrupt(o: &Opened) -> Checked {
    let damage = damage_of(o)?;
    let s = &o.store;
    let (bad, good) = (key("bad"), key("good"));
    s.save(&bad, &"some payload to damage").ctx("save")?;
    s.save(&good, &1).ctx("save")?;
    // A byte of the payload: the trailer is the last 112 bytes.
    damage(Damage::Rewrite(&bad, &|b: &mut Vec<u8>| {
        let at = b.len() - 120;
        b[at] ^= 1;
    }));
    expect_corrupt(s.load::<String>(&bad), "load")?;
    let report = s.verify().ctx("verify")?;
    let broken: Vec<&str> =
        report.iter().filter(|r| r.result.is_err()).map(|r| r.key.as_str()).collect();
    ensure!(broken == ["bad"], "verify reports {broken:?} broken");
    ensure!(s.quarantine(&bad).ctx("quarantine")?.is_some(), "quarantine found nothing");
    ensure!(s.load::<String>(&bad).ctx("load")?.is_none(), "a quarantined stash loads");
    ensure!(s.verify().ctx("verify")?.iter().all(|r| r.result.is_ok()), "verify still fails");
    let keys: Vec<String> =
        s.list().ctx("list")?.into_iter().map(|i| i.key.into_string()).collect();
    ensure!(keys == ["good"], "list shows {keys:?}");
    Ok(())
}

fn truncated_is_corrupt(o: &Opened) -> Checked {
    let damage = damage_of(o)?;
    let k = key("k");
    o.store.save(&k, &vec![7u8; 1000]).ctx("save")?;
    damage(Damage::Rewrite(&k, &|b: &mut Vec<u8>| b.truncate(300)));
    expect_corrupt(o.store.load::<Vec<u8>>(&k), "load")?;
    let report = o.store.verify().ctx("verify")?;
    ensure!(report.first().is_some_and(|r| r.result.is_err()), "verify passes a truncated stash");
    Ok(())
}

fn truncated_to_nothing_is_corrupt(o: &Opened) -> Checked {
    let damage = damage_of(o)?;
    let k = key("k");
    o.store.save(&k, &vec![7u8; 1000]).ctx("save")?;
    damage(Damage::Rewrite(&k, &|b: &mut Vec<u8>| b.clear()));
    expect_corrupt(o.store.load::<Vec<u8>>(&k), "load")?;
    let report = o.store.verify().ctx("verify")?;
    ensure!(report.first().is_some_and(|r| r.result.is_err()), "verify passes an empty stash");
    Ok(())
}

fn copied_to_another_key_is_refused(o: &Opened) -> Checked {
    let damage = damage_of(o)?;
    let (a, b) = (key("a"), key("b"));
    o.store.save(&a, &"a's data").ctx("save")?;
    damage(Damage::Copy(&a, &b));
    match o.store.load::<String>(&b) {
        Err(Error::Corrupt { reason: Corruption::KeyMismatch { .. }, .. }) => {}
        other => return Err(format!("a copied stash loaded as {other:?}").into()),
    }
    let v = o.store.load::<String>(&a).ctx("load")?.map(Stashed::into_value);
    ensure!(v.as_deref() == Some("a's data"), "the original loads as {v:?}");
    Ok(())
}
