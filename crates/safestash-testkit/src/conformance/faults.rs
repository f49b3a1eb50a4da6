//! The fault suite: the verbs under ambiguous outcomes armed through a
//! [`Rig`], each check on a fresh rig.

use safestash::{EntryName, Error, Precondition, SaveOptions, StashKey, Stashed, Store};

use super::{Check, Checked, Ctx, Rig, Stop, ensure, key};
use crate::sim_remote::Fate;

/// The ambiguous fates every change-level check goes through.
const AMBIGUOUS: [Fate; 4] =
    [Fate::LostReply, Fate::ErrorBefore, Fate::Late { after: 1 }, Fate::RetryMeetsOwn];

/// The fault suite's checks, by name.
pub(super) const CHECKS: [Check<Rig>; 12] = [
    ("a_lost_reply_on_a_save_leaves_the_new_stash", lost_reply_on_a_save),
    ("error_before_a_save_keeps_the_old_stash", error_before_a_save),
    ("a_late_save_never_overwrites_a_newer_one", late_save),
    ("a_retry_meeting_its_own_save_keeps_it", retry_meets_own_save),
    ("an_ambiguous_clear_leaves_old_or_nothing", ambiguous_clear),
    ("an_ambiguous_begin_never_loses_the_snapshot", ambiguous_begin),
    ("a_rollback_whose_clear_failed_keeps_the_stash", rollback_clear_failed),
    ("an_ambiguous_batch_loses_nothing", ambiguous_batch),
    ("an_ambiguous_quarantine_keeps_the_stash_somewhere", ambiguous_quarantine),
    ("an_ambiguous_save_under_a_lock_loses_nothing", ambiguous_save_under_a_lock),
    ("a_paused_holder_cannot_write_over_a_newer_one", paused_holder),
    ("random_ambiguity_never_loses_an_acknowledged_save", random_ambiguity),
];

/// What a key loads as, for messages; `Err` when it is corrupt or the load
/// fails.
fn now(store: &Store, k: &StashKey) -> Result<Option<String>, Stop> {
    match store.load::<String>(k) {
        Ok(v) => Ok(v.map(Stashed::into_value)),
        Err(e @ Error::Corrupt { .. }) => {
            Err(format!("`{k}` is corrupt after an ambiguous outcome: {e}").into())
        }
        Err(e) => Err(format!("load of `{k}` failed with no fault armed: {e}").into()),
    }
}

fn one_of(got: &Option<String>, allowed: &[Option<&str>], what: &str) -> Checked {
    ensure!(allowed.contains(&got.as_deref()), "{what}: loads as {got:?}, allowed {allowed:?}");
    Ok(())
}

fn lost_reply_on_a_save(r: &Rig) -> Checked {
    let (s, k, other) = (&r.store, key("k"), key("other"));
    s.save(&k, "v1").ctx("save")?;
    s.save(&other, "untouched").ctx("save")?;
    r.arm(&[Fate::LostReply]);
    let got = s.save(&k, "v2");
    // It landed: whatever was reported, the new stash is there, intact.
    one_of(&now(s, &k)?, &[Some("v2")], &format!("after a save that reported {got:?}"))?;
    one_of(&now(s, &other)?, &[Some("untouched")], "another key")
}

fn error_before_a_save(r: &Rig) -> Checked {
    let (s, k) = (&r.store, key("k"));
    s.save(&k, "v1").ctx("save")?;
    r.arm(&[Fate::ErrorBefore]);
    let got = s.save(&k, "v2");
    r.settle();
    let v = now(s, &k)?;
    match got {
        Ok(_) => one_of(&v, &[Some("v2")], "an acknowledged save"),
        Err(_) => one_of(&v, &[Some("v1")], "a save that failed before the write"),
    }
}

fn late_save(r: &Rig) -> Checked {
    let (s, k) = (&r.store, key("k"));
    s.save(&k, "v1").ctx("save")?;
    r.arm(&[Fate::Late { after: 2 }]);
    let got = s.save(&k, "v2");
    let v = now(s, &k)?;
    match &got {
        Ok(_) => one_of(&v, &[Some("v2")], "an acknowledged save")?,
        Err(_) => one_of(&v, &[Some("v1"), Some("v2")], "a save that timed out")?,
    }
    r.settle();
    let v = now(s, &k)?;
    match &got {
        Ok(_) => one_of(&v, &[Some("v2")], "an acknowledged save, once settled")?,
        Err(_) => one_of(&v, &[Some("v1"), Some("v2")], "a timed out save, once settled")?,
    }
    // A late request never lands over a newer acknowledged save.
    r.arm(&[Fate::Late { after: 1 }]);
    let _ = s.save(&k, "v3");
    s.save(&k, "v4").ctx("save")?;
    r.settle();
    one_of(&now(s, &k)?, &[Some("v4")], "after a late save and a newer acknowledged one")?;
    // Nor over a newer acknowledged clear.
    r.arm(&[Fate::Late { after: 1 }]);
    let _ = s.save(&k, "v5");
    s.clear(&k).ctx("clear")?;
    r.settle();
    one_of(&now(s, &k)?, &[None], "after a late save and a newer acknowledged clear")
}

fn retry_meets_own_save(r: &Rig) -> Checked {
    let (s, k) = (&r.store, key("k"));
    r.arm(&[Fate::RetryMeetsOwn]);
    let got = s.save_if(&k, "mine", &SaveOptions::new(), Precondition::Absent);
    // Refused, with the caller's own envelope in place: that is its save,
    // done, not another writer's stash.
    if let Err(e) = &got {
        return Err(format!("a create whose retry met itself failed with {e}").into());
    }
    one_of(&now(s, &k)?, &[Some("mine")], &format!("a create that reported {got:?}"))?;
    s.save(&k, "v1").ctx("save")?;
    let seen = s.load::<String>(&k).ctx("load")?.ok_or("lost".to_owned())?.meta().digest;
    r.arm(&[Fate::RetryMeetsOwn]);
    let got = s.save_if(&k, "v2", &SaveOptions::new(), Precondition::Unchanged(seen));
    if let Err(e) = &got {
        return Err(format!("an update whose retry met itself failed with {e}").into());
    }
    one_of(&now(s, &k)?, &[Some("v2")], &format!("an update that reported {got:?}"))
}

fn ambiguous_clear(r: &Rig) -> Checked {
    let (s, k) = (&r.store, key("k"));
    for fate in AMBIGUOUS {
        s.save(&k, "v1").ctx("save")?;
        r.arm(&[fate]);
        let got = s.clear(&k);
        let v = now(s, &k)?;
        match got {
            Ok(true) => one_of(&v, &[None], &format!("a clear acknowledged under {fate:?}"))?,
            _ => one_of(&v, &[Some("v1"), None], &format!("a clear under {fate:?}"))?,
        }
        r.settle();
        let _ = s.clear(&k);
        r.settle();
    }
    Ok(())
}

fn ambiguous_begin(r: &Rig) -> Checked {
    let (s, k) = (&r.store, key("table"));
    for fate in [Fate::LostReply, Fate::RetryMeetsOwn] {
        r.arm(&[fate]);
        let got = s.begin(&k, &"snapshot".to_owned());
        // The write landed: the snapshot is there, and no begin replaces it.
        one_of(&now(s, &k)?, &[Some("snapshot")], &format!("a begin under {fate:?}"))?;
        ensure!(
            matches!(s.begin(&k, &"other".to_owned()), Err(Error::StashExists { .. })),
            "a second begin after an ambiguous one did not refuse"
        );
        one_of(&now(s, &k)?, &[Some("snapshot")], "after a second begin")?;
        match got {
            Ok(g) => drop(g.commit().map_err(|e| format!("commit: {}", e.error))?),
            Err(_) => drop(s.clear(&k).ctx("clear")?),
        }
    }
    r.arm(&[Fate::ErrorBefore]);
    if let Ok(g) = s.begin(&k, &"snapshot".to_owned()) {
        one_of(&now(s, &k)?, &[Some("snapshot")], "an acknowledged begin")?;
        g.keep();
    }
    Ok(())
}

fn rollback_clear_failed(r: &Rig) -> Checked {
    let (s, k) = (&r.store, key("table"));
    let guard = s.begin(&k, &"snapshot".to_owned()).ctx("begin")?;
    r.arm(&[Fate::ErrorBefore]);
    let mut restored = None;
    let got = guard.rollback(&mut |st: Stashed<String>| -> Result<(), std::io::Error> {
        restored = Some(st.into_value());
        Ok(())
    });
    ensure!(restored.as_deref() == Some("snapshot"), "restored {restored:?}");
    let v = now(s, &k)?;
    match got {
        Ok(_) => one_of(&v, &[None], "a rollback that reported its clear done")?,
        Err(e) => {
            one_of(&v, &[Some("snapshot")], "a rollback whose clear failed")?;
            // The guard comes back; its retry finishes the job.
            let mut again = false;
            e.guard
                .rollback(&mut |_: Stashed<String>| -> Result<(), std::io::Error> {
                    again = true;
                    Ok(())
                })
                .map_err(|e| format!("retried rollback: {}", e.error))?;
            ensure!(again, "the retried rollback did not restore");
            one_of(&now(s, &k)?, &[None], "after the retried rollback")?;
        }
    }
    // A lost reply on the clear: the stash is gone, and only the guard's
    // clear removed it (after the restore).
    let guard = s.begin(&k, &"snapshot 2".to_owned()).ctx("begin")?;
    r.arm(&[Fate::LostReply]);
    let mut restored = None;
    let _ = guard.rollback(&mut |st: Stashed<String>| -> Result<(), std::io::Error> {
        restored = Some(st.into_value());
        Ok(())
    });
    ensure!(restored.as_deref() == Some("snapshot 2"), "restored {restored:?}");
    Ok(())
}

fn ambiguous_batch(r: &Rig) -> Checked {
    let s = &r.store;
    let keys = [key("a"), key("b"), key("c")];
    for fate in AMBIGUOUS {
        for k in &keys {
            s.save(k, "old").ctx("save")?;
        }
        r.arm(&[Fate::Clean, fate]);
        let mut batch = s.batch();
        let opts = SaveOptions::new();
        let values: Vec<String> = keys.iter().map(|k| format!("new {k}")).collect();
        for (k, v) in keys.iter().zip(&values) {
            batch.add(k, v, &opts).ctx("add")?;
        }
        let (saved, not_saved) = match batch.commit() {
            Ok(receipts) => (receipts.into_iter().map(|r| r.key).collect(), Vec::new()),
            Err(e) => (e.saved.into_iter().map(|r| r.key).collect::<Vec<_>>(), e.not_saved),
        };
        r.settle();
        for k in &keys {
            let new = format!("new {k}");
            let v = now(s, k)?;
            let what = format!("`{k}` after a batch under {fate:?}");
            if saved.contains(k) {
                one_of(&v, &[Some(&new)], &format!("{what}, reported saved"))?;
            } else if not_saved.first() == Some(k) {
                one_of(&v, &[Some("old"), Some(&new)], &format!("{what}, the failed one"))?;
            } else {
                one_of(&v, &[Some("old")], &format!("{what}, reported not saved"))?;
            }
        }
    }
    Ok(())
}

fn ambiguous_quarantine(r: &Rig) -> Checked {
    let s = &r.store;
    // How many quarantined envelopes `k` has, as the store's inspection
    // sees them (quarantined envelopes stay: each fate gets its own key).
    let aside = |k: &StashKey| -> Result<usize, Stop> {
        let entries = s.inspect().ctx("inspect")?;
        Ok(entries.iter().filter(|e| e.name == EntryName::Quarantined(k.clone())).count())
    };
    for (i, fate) in AMBIGUOUS.into_iter().enumerate() {
        let k = key(&format!("q{i}"));
        s.save(&k, "evidence").ctx("save")?;
        r.arm(&[fate]);
        let got = s.quarantine(&k);
        r.settle();
        let (v, aside) = (now(s, &k)?, aside(&k)?);
        // Moved aside (the key gone, one envelope aside) or left in place
        // (nothing aside): never both gone, never both there. A retry that
        // meets its own move finds nothing at the key and may say so: the
        // envelope is aside all the same.
        let ok = match (&got, &v) {
            (Ok(Some(_)), None) | (Err(_), None) => aside == 1,
            (Ok(None), None) => fate == Fate::RetryMeetsOwn && aside == 1,
            (Err(_), Some(v)) => aside == 0 && v == "evidence",
            _ => false,
        };
        ensure!(
            ok,
            "a quarantine under {fate:?} reported {got:?}; `{k}` loads as {v:?}, with {aside} \
             quarantined envelopes"
        );
    }
    Ok(())
}

fn ambiguous_save_under_a_lock(r: &Rig) -> Checked {
    let s = &r.store;
    if !s.backend().has_locks() {
        return Err(Stop::Skip("the backend has no per-key locks".into()));
    }
    let k = key("job");
    let held = s.lock(&k).ctx("lock")?;
    for fate in AMBIGUOUS {
        held.save("before").ctx("save under the lock")?;
        r.arm(&[fate]);
        let got = held.save("after");
        r.settle();
        let v = now(s, &k)?;
        let allowed: &[Option<&str>] = match (&got, fate) {
            (Ok(_), _) | (Err(_), Fate::LostReply | Fate::RetryMeetsOwn) => &[Some("after")],
            (Err(_), Fate::ErrorBefore) => &[Some("before")],
            (Err(_), _) => &[Some("before"), Some("after")],
        };
        one_of(&v, allowed, &format!("a save under a lock that reported {got:?} under {fate:?}"))?;
    }
    drop(held);
    one_of(&now(s, &k)?, &[Some("before"), Some("after")], "after the lock was released")
}

fn paused_holder(r: &Rig) -> Checked {
    let Some(pause) = &r.pause else {
        return Err(Stop::Skip("no pause hook given".into()));
    };
    let s = &r.store;
    let k = key("job");
    let old = s.lock(&k).ctx("lock")?;
    old.save("old holder").ctx("save under the lock")?;
    pause();
    // A newer holder (another worker) takes the key and writes.
    let (s2, k2) = (s.clone(), k.clone());
    std::thread::spawn(move || -> Result<(), String> {
        let new = s2.lock(&k2).map_err(|e| format!("the newer holder's lock: {e}"))?;
        new.save("new holder").map_err(|e| format!("the newer holder's save: {e}"))?;
        Ok(())
    })
    .join()
    .map_err(|_| "the newer holder panicked".to_owned())??;
    let stale = old.save("stale write");
    ensure!(stale.is_err(), "a holder past its lease saved over the newer holder's stash");
    let cleared = old.clear();
    ensure!(!matches!(cleared, Ok(true)), "a holder past its lease cleared the newer stash");
    drop(old);
    one_of(&now(s, &k)?, &[Some("new holder")], "after the paused holder woke")
}

fn random_ambiguity(r: &Rig) -> Checked {
    // A fixed pseudo-random walk of saves and clears over three keys, every
    // third change ambiguous; after each step every key must load as
    // something its history allows, and each acknowledged step is exact.
    let s = &r.store;
    let keys = [key("x"), key("y"), key("z")];
    let mut allowed: Vec<Vec<Option<String>>> = vec![vec![None]; 3];
    let mut seed = 0x5EED_u64;
    for step in 0..48 {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let i = (seed >> 33) as usize % 3;
        let fate = (step % 3 == 0).then(|| AMBIGUOUS[(seed >> 40) as usize % 4]);
        if let Some(f) = fate {
            r.arm(&[f]);
        }
        let clear = (seed >> 50) % 4 == 0;
        let value = format!("s{step}");
        let target = if clear { None } else { Some(value.clone()) };
        let ok = if clear { s.clear(&keys[i]).is_ok() } else { s.save(&keys[i], &value).is_ok() };
        if ok {
            allowed[i] = vec![target];
        } else {
            allowed[i].push(target);
        }
        if step % 5 == 4 {
            r.settle();
        }
        for (j, k) in keys.iter().enumerate() {
            let v = now(s, k)?;
            ensure!(
                allowed[j].contains(&v),
                "step {step} ({fate:?}): `{k}` loads as {v:?}, allowed {:?}",
                allowed[j]
            );
        }
    }
    Ok(())
}
