//! A retry after a crash never loses the only good copy: `begin` never
//! replaces a stash the caller has not seen, and the retry decision
//! (`Store::resume`) applies a stash only when the caller's policy calls it
//! fresh, or when the caller adopts it explicitly.

use std::time::Duration;

use safestash::{
    Checked, Error, LoadPolicy, Precondition, Resume, SaveOptions, StashKey, Stashed, Store,
};

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

fn key() -> StashKey {
    StashKey::new("orders.dictionary").unwrap()
}

/// Writes a stash whose header says it was created `age` ago by `origin`,
/// through the store itself, by rewriting the file's header (the only way to
/// age a stash without waiting): re-encode with the envelope module.
fn aged_stash(store: &Store, value: &Vec<String>, origin: &str, age: Duration) {
    let header = safestash::envelope::Header::new(
        key(),
        "value",
        Some(origin),
        std::time::SystemTime::now() - age,
    )
    .unwrap();
    let bytes = safestash::envelope::encode(&header, &serde_json::to_vec(value).unwrap());
    std::fs::create_dir_all(store.dir()).unwrap();
    std::fs::write(store.path_of(&key()), bytes).unwrap();
}

#[test]
fn begin_refuses_to_replace_a_stash_it_has_not_seen() {
    let (_dir, store) = store();
    let crashed = vec!["operator label".to_owned()];
    store.begin(&key(), &crashed).unwrap().keep(); // the crashed job's stash
    // The retry runs the normal path without looking: the resource is gone,
    // so its "snapshot" is empty.
    let gone: Vec<String> = Vec::new();
    let err = store.begin(&key(), &gone).unwrap_err();
    assert!(matches!(err, Error::StashExists { .. }), "{err:?}");
    let kept = store.load::<Vec<String>>(&key()).unwrap().unwrap();
    assert_eq!(kept.value(), &crashed, "the only good copy must survive");
}

#[test]
fn begin_replacing_replaces_only_the_stash_seen() {
    let (_dir, store) = store();
    let first = store.save(&key(), &vec!["a".to_owned()]).unwrap();
    let second = store.save(&key(), &vec!["b".to_owned()]).unwrap();
    let opts = SaveOptions::new();
    let stale_look = store.begin_replacing(&key(), &vec!["c".to_owned()], &opts, &first.digest);
    assert!(matches!(stale_look, Err(Error::Replaced { .. })));
    assert_eq!(store.load::<Vec<String>>(&key()).unwrap().unwrap().value()[0], "b");
    let guard =
        store.begin_replacing(&key(), &vec!["c".to_owned()], &opts, &second.digest).unwrap();
    guard.commit().unwrap();
}

#[test]
fn save_if_absent_and_unchanged() {
    let (_dir, store) = store();
    let opts = SaveOptions::new();
    let r = store.save_if(&key(), &1, &opts, Precondition::Absent).unwrap();
    assert!(matches!(
        store.save_if(&key(), &2, &opts, Precondition::Absent),
        Err(Error::StashExists { digest: Some(d), .. }) if d == r.digest
    ));
    let other = safestash::Digest::of(b"not it");
    assert!(matches!(
        store.save_if(&key(), &3, &opts, Precondition::Unchanged(other)),
        Err(Error::Replaced { .. })
    ));
    assert_eq!(*store.load::<i32>(&key()).unwrap().unwrap().value(), 1);
    store.save_if(&key(), &4, &opts, Precondition::Unchanged(r.digest)).unwrap();
    store.save_if(&key(), &5, &opts, Precondition::Any).unwrap();
    assert_eq!(*store.load::<i32>(&key()).unwrap().unwrap().value(), 5);
}

#[test]
fn a_damaged_stash_is_never_replaced_by_begin() {
    let (_dir, store) = store();
    store.save(&key(), &vec!["x".to_owned()]).unwrap();
    let path = store.path_of(&key());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[20] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(store.begin(&key(), &Vec::<String>::new()), Err(Error::StashExists { .. })));
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[test]
fn resume_live_wins_and_reports_what_it_replaced() {
    let (_dir, store) = store();
    let old = store.save(&key(), &vec!["old".to_owned()]).unwrap();
    let live = vec!["live".to_owned()];
    let policy = LoadPolicy::new();
    match store.resume(&key(), Some(&live), &SaveOptions::new(), &policy).unwrap() {
        Resume::Live { guard, replaced } => {
            assert_eq!(replaced.unwrap().digest, old.digest);
            guard.keep();
        }
        other => panic!("expected Live, got {other:?}"),
    }
    assert_eq!(store.load::<Vec<String>>(&key()).unwrap().unwrap().value(), &live);
}

#[test]
fn resume_without_live_resumes_a_fresh_stash_and_restores_it() {
    let (_dir, store) = store();
    let opts = SaveOptions::new().origin("upload-1");
    store.begin_with(&key(), &vec!["label".to_owned()], &opts).unwrap().keep();
    let policy = LoadPolicy::new().max_age(Duration::from_secs(3600)).origin("upload-1");
    let guard = match store.resume::<Vec<String>>(&key(), None, &opts, &policy).unwrap() {
        Resume::Stash(guard) => guard,
        other => panic!("expected Stash, got {other:?}"),
    };
    let mut restored = Vec::new();
    guard
        .rollback(&mut |s: Stashed<Vec<String>>| -> Result<(), std::io::Error> {
            restored = s.into_value();
            Ok(())
        })
        .unwrap();
    assert_eq!(restored, ["label"]);
    assert!(store.load::<Vec<String>>(&key()).unwrap().is_none(), "restored, then cleared");
}

#[test]
fn resume_refuses_a_90_day_old_stash_and_keeps_it() {
    let (_dir, store) = store();
    aged_stash(&store, &vec!["ancient".to_owned()], "upload-1", Duration::from_secs(90 * 86_400));
    let policy = LoadPolicy::new().max_age(Duration::from_secs(86_400)).origin("upload-1");
    match store.resume::<Vec<String>>(&key(), None, &SaveOptions::new(), &policy).unwrap() {
        Resume::Refused(Checked::Stale { age, max_age, .. }) => {
            assert!(age > max_age);
        }
        other => panic!("expected a stale refusal, got {other:?}"),
    }
    assert!(store.load::<Vec<String>>(&key()).unwrap().is_some(), "a refused stash is kept");
}

#[test]
fn resume_refuses_another_jobs_stash_until_adopted() {
    let (_dir, store) = store();
    let opts = SaveOptions::new().origin("job-other");
    store.begin_with(&key(), &vec!["theirs".to_owned()], &opts).unwrap().keep();
    let policy = LoadPolicy::new().origin("job-mine");
    let checked = match store.resume::<Vec<String>>(&key(), None, &opts, &policy).unwrap() {
        Resume::Refused(checked @ Checked::Foreign { .. }) => checked,
        other => panic!("expected a foreign refusal, got {other:?}"),
    };
    // The caller decides explicitly to accept it.
    let guard = store.adopt(checked.stashed());
    let mut got = Vec::new();
    guard
        .rollback(&mut |s: Stashed<Vec<String>>| -> Result<(), std::io::Error> {
            got = s.into_value();
            Ok(())
        })
        .unwrap();
    assert_eq!(got, ["theirs"]);
}

#[test]
fn resume_with_nothing_is_nothing_and_a_corrupt_stash_is_an_error() {
    let (_dir, store) = store();
    let policy = LoadPolicy::new();
    assert!(matches!(
        store.resume::<Vec<String>>(&key(), None, &SaveOptions::new(), &policy).unwrap(),
        Resume::Nothing
    ));
    store.save(&key(), &vec!["x".to_owned()]).unwrap();
    let path = store.path_of(&key());
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let live = vec!["live".to_owned()];
    assert!(matches!(
        store.resume(&key(), Some(&live), &SaveOptions::new(), &policy),
        Err(Error::Corrupt { .. })
    ));
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "a damaged stash is never overwritten");
}

#[test]
fn an_adopted_stash_replaced_meanwhile_is_not_restored() {
    let (_dir, store) = store();
    store.save(&key(), &vec!["first".to_owned()]).unwrap();
    let seen = store.load::<Vec<String>>(&key()).unwrap().unwrap();
    store.save(&key(), &vec!["second".to_owned()]).unwrap();
    let guard = store.adopt(&seen);
    let err = guard
        .rollback(&mut |_: Stashed<Vec<String>>| -> Result<(), std::io::Error> {
            panic!("must not restore another writer's stash")
        })
        .unwrap_err();
    assert!(matches!(err.error, Error::Replaced { .. }));
}

#[test]
fn a_guard_error_converts_into_error_with_question_mark() {
    fn commit_twice(store: &Store) -> safestash::Result<()> {
        let guard = store.begin(&key(), &1)?;
        std::fs::remove_file(store.path_of(&key())).unwrap();
        store.save(&key(), &2)?; // another writer's stash now
        guard.commit()?;
        Ok(())
    }
    let (_dir, store) = store();
    // commit clears only its own stash; another writer's is kept, not an error.
    commit_twice(&store).unwrap();
    assert_eq!(*store.load::<i32>(&key()).unwrap().unwrap().value(), 2);
}

/// Runs `f` on a thread and fails the test if it has not finished within
/// `secs`: a hang is a failure, never a stuck test run.
fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs)).expect("hung: a call back into the store deadlocked")
}

#[test]
fn locking_a_key_this_thread_holds_is_an_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let err = within(20, move || {
        let store = Store::open(&path).unwrap();
        let other = Store::open(&path).unwrap(); // another handle on the same directory
        let held = store.lock(&key()).unwrap();
        let err = other.save(&key(), &1).unwrap_err();
        drop(held);
        other.save(&key(), &2).unwrap(); // released: works again
        err
    });
    assert!(matches!(err, Error::LockedByThisThread { .. }), "{err:?}");
    assert!(err.to_string().contains("already locked by this thread"), "{err}");
}

#[test]
fn a_restore_hook_that_writes_its_own_key_works() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    within(20, move || {
        let store = Store::open(&path).unwrap();
        let guard = store.begin(&key(), &vec!["a".to_owned()]).unwrap();
        let hook_store = Store::open(&path).unwrap();
        guard
            .rollback(&mut |_: Stashed<Vec<String>>| {
                hook_store.save(&key(), &vec!["newer".to_owned()]).map(drop)
            })
            .unwrap();
        // The hook's newer stash is another writer's: kept, never cleared.
        let left = store.load::<Vec<String>>(&key()).unwrap().unwrap();
        assert_eq!(left.value()[0], "newer");
    });
}

#[test]
fn an_observer_that_writes_the_key_it_observes_works() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    within(20, move || {
        let mut store = Store::open(&path).unwrap();
        let echo = Store::open(&path).unwrap();
        let echo_key = StashKey::new("echo").unwrap();
        store.observe("echo", move |event| {
            if let safestash::Event::Saved(r) = event {
                if r.key == key() {
                    echo.save(&echo_key, &r.bytes)?;
                    echo.save(&key(), &"overwritten by the observer")?;
                }
            }
            Ok(())
        });
        let receipt = store.save(&key(), &"value").unwrap();
        assert!(receipt.observer_errors.is_empty(), "{:?}", receipt.observer_errors);
    });
}
