//! Deciding what to do with a stash found on load: `load_checked` marks a
//! stash too old or from another origin (foreign before stale), and
//! `Store::resume` lets a live resource win over a leftover stash, and
//! resumes a stash only when it passes the policy.

use std::time::{Duration, SystemTime};

use safestash::envelope::{Header, encode};
use safestash::{Checked, Error, LoadPolicy, Resume, SaveOptions, StashKey, Store};

const DAY: Duration = Duration::from_secs(24 * 3600);
const HOUR: Duration = Duration::from_secs(3600);
/// Slack for the time a test takes between writing and checking.
const SLACK: Duration = Duration::from_secs(60);

fn key(s: &str) -> StashKey {
    StashKey::new(s).unwrap()
}

fn labels() -> Vec<String> {
    vec!["Amount in EUR".to_owned(), "Order date".to_owned()]
}

/// Writes a valid stash of `value` under `key` whose header says it was
/// created at `created` by `origin`.
fn plant(
    store: &Store,
    key: &StashKey,
    value: &[String],
    origin: Option<&str>,
    created: SystemTime,
) {
    let header = Header::new(key.clone(), "value", origin, created).unwrap();
    let bytes = encode(&header, &serde_json::to_vec(value).unwrap());
    std::fs::write(store.path_of(key), bytes).unwrap();
}

fn assert_about(age: Duration, want: Duration) {
    assert!(age >= want && age < want + SLACK, "age {age:?}, expected about {want:?}");
}

// ---------------------------------------------------------------------------
// freshness
// ---------------------------------------------------------------------------

#[test]
fn a_two_day_old_stash_is_stale_under_a_one_day_limit() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = key("orders.dictionary");
    plant(&store, &k, &labels(), Some("job-1"), SystemTime::now() - 2 * DAY);

    let policy = LoadPolicy::new().max_age(DAY);
    match store.load_checked::<Vec<String>>(&k, &policy).unwrap() {
        Some(Checked::Stale { stashed, age, max_age }) => {
            assert_about(age, 2 * DAY);
            assert_eq!(max_age, DAY);
            assert_eq!(stashed.value(), &labels());
            assert_about(stashed.meta().age(), 2 * DAY);
        }
        other => panic!("expected Stale, got {other:?}"),
    }
}

#[test]
fn a_two_day_old_stash_is_fresh_under_a_three_day_limit() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = key("orders.dictionary");
    plant(&store, &k, &labels(), Some("job-1"), SystemTime::now() - 2 * DAY);

    let policy = LoadPolicy::new().max_age(3 * DAY);
    match store.load_checked::<Vec<String>>(&k, &policy).unwrap() {
        Some(Checked::Fresh(stashed)) => assert_eq!(stashed.value(), &labels()),
        other => panic!("expected Fresh, got {other:?}"),
    }
}

#[test]
fn a_just_saved_stash_is_fresh_under_a_limit() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = key("k");
    store.save(&k, &labels()).unwrap();
    let checked = store.load_checked::<Vec<String>>(&k, &LoadPolicy::new().max_age(HOUR));
    assert!(matches!(checked.unwrap(), Some(Checked::Fresh(_))));
}

// ---------------------------------------------------------------------------
// origin
// ---------------------------------------------------------------------------

#[test]
fn a_stash_from_another_origin_is_foreign_with_what_was_found() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = key("orders.dictionary");
    store.save_with(&k, &labels(), &SaveOptions::new().origin("job-1")).unwrap();

    match store.load_checked::<Vec<String>>(&k, &LoadPolicy::new().origin("job-2")).unwrap() {
        Some(Checked::Foreign { stashed, expected, found }) => {
            assert_eq!(expected, "job-2");
            assert_eq!(found.as_deref(), Some("job-1"));
            assert_eq!(stashed.value(), &labels());
        }
        other => panic!("expected Foreign, got {other:?}"),
    }
}

#[test]
fn origins_must_match_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = key("k");
    store.save_with(&k, &labels(), &SaveOptions::new().origin("job-1")).unwrap();
    for near in ["JOB-1", "job-1 ", "job-", "job-10", ""] {
        let checked = store.load_checked::<Vec<String>>(&k, &LoadPolicy::new().origin(near));
        match checked.unwrap() {
            Some(Checked::Foreign { found, .. }) => assert_eq!(found.as_deref(), Some("job-1")),
            other => panic!("{near:?}: expected Foreign, got {other:?}"),
        }
    }
    let same = store.load_checked::<Vec<String>>(&k, &LoadPolicy::new().origin("job-1"));
    assert!(matches!(same.unwrap(), Some(Checked::Fresh(_))));
}

#[test]
fn a_stash_without_origin_is_foreign_when_one_is_expected() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = key("k");
    store.save(&k, &labels()).unwrap();

    match store.load_checked::<Vec<String>>(&k, &LoadPolicy::new().origin("job-2")).unwrap() {
        Some(Checked::Foreign { expected, found, .. }) => {
            assert_eq!(expected, "job-2");
            assert_eq!(found, None);
        }
        other => panic!("expected Foreign, got {other:?}"),
    }
}

#[test]
fn stale_and_foreign_is_reported_as_foreign() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = key("k");
    plant(&store, &k, &labels(), Some("job-1"), SystemTime::now() - 2 * DAY);

    let policy = LoadPolicy::new().max_age(DAY).origin("job-2");
    match store.load_checked::<Vec<String>>(&k, &policy).unwrap() {
        Some(Checked::Foreign { found, .. }) => assert_eq!(found.as_deref(), Some("job-1")),
        other => panic!("expected Foreign (it takes priority over Stale), got {other:?}"),
    }
}

#[test]
fn stale_from_the_expected_origin_is_stale() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = key("k");
    plant(&store, &k, &labels(), Some("job-1"), SystemTime::now() - 2 * DAY);

    let policy = LoadPolicy::new().max_age(DAY).origin("job-1");
    match store.load_checked::<Vec<String>>(&k, &policy).unwrap() {
        Some(Checked::Stale { age, max_age, .. }) => {
            assert_about(age, 2 * DAY);
            assert_eq!(max_age, DAY);
        }
        other => panic!("expected Stale, got {other:?}"),
    }
}

#[test]
fn no_policy_is_always_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = key("k");
    plant(&store, &k, &labels(), Some("job-1"), SystemTime::now() - 400 * DAY);

    match store.load_checked::<Vec<String>>(&k, &LoadPolicy::new()).unwrap() {
        Some(Checked::Fresh(stashed)) => {
            assert_eq!(stashed.value(), &labels());
            assert_eq!(stashed.meta().header.origin(), Some("job-1"));
        }
        other => panic!("expected Fresh, got {other:?}"),
    }
}

#[test]
fn checked_gives_the_stash_whatever_its_class() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = key("k");
    plant(&store, &k, &labels(), Some("job-1"), SystemTime::now() - 2 * DAY);
    let policies =
        [LoadPolicy::new(), LoadPolicy::new().max_age(DAY), LoadPolicy::new().origin("job-2")];
    let mut kinds = Vec::new();
    for policy in &policies {
        let checked = store.load_checked::<Vec<String>>(&k, policy).unwrap().unwrap();
        assert_eq!(checked.stashed().value(), &labels());
        assert_eq!(checked.stashed().meta().header.origin(), Some("job-1"));
        kinds.push(match checked {
            Checked::Fresh(_) => "fresh",
            Checked::Stale { .. } => "stale",
            Checked::Future { .. } => "future",
            Checked::Foreign { .. } => "foreign",
        });
    }
    assert_eq!(kinds, ["fresh", "stale", "foreign"]);
}

#[test]
fn load_checked_of_nothing_is_none_and_of_damage_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = key("k");
    let policy = LoadPolicy::new().max_age(DAY).origin("job-1");
    assert!(store.load_checked::<Vec<String>>(&k, &policy).unwrap().is_none());

    std::fs::write(store.path_of(&k), b"SAFESTASH 1\nhalf a stash").unwrap();
    match store.load_checked::<Vec<String>>(&k, &policy) {
        Err(Error::Corrupt { path, .. }) => assert_eq!(path, store.path_of(&k)),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// retry: Store::resume
// ---------------------------------------------------------------------------

#[test]
fn the_live_resource_wins_over_a_stash_and_reports_it_as_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = key("orders.dictionary");
    let receipt = store.save_with(&k, &labels(), &SaveOptions::new().origin("job-1")).unwrap();

    let live = vec!["live label".to_owned()];
    let opts = SaveOptions::new().origin("job-2");
    match store.resume(&k, Some(&live), &opts, &LoadPolicy::new()).unwrap() {
        Resume::Live { guard, replaced } => {
            let replaced = replaced.expect("the superseded stash is reported");
            assert_eq!(replaced.digest, receipt.digest);
            assert_eq!(replaced.path, receipt.path);
            assert_eq!(replaced.header.origin(), Some("job-1"));
            guard.keep();
        }
        other => panic!("expected Live, got {other:?}"),
    }
    // The live resource is what is stashed now.
    let now = store.load::<Vec<String>>(&k).unwrap().unwrap();
    assert_eq!(now.value(), &live);
    assert_eq!(now.meta().header.origin(), Some("job-2"));
}

#[test]
fn the_live_resource_alone_replaces_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let live = vec!["live label".to_owned()];
    match store.resume(&key("k"), Some(&live), &SaveOptions::new(), &LoadPolicy::new()).unwrap() {
        Resume::Live { guard, replaced } => {
            assert!(replaced.is_none());
            guard.commit().unwrap();
        }
        other => panic!("expected Live, got {other:?}"),
    }
}

#[test]
fn the_stash_is_resumed_when_nothing_is_live_and_it_is_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = key("orders.dictionary");
    plant(&store, &k, &labels(), Some("job-1"), SystemTime::now() - HOUR);
    let policy = LoadPolicy::new().max_age(2 * HOUR).origin("job-1");

    match store.resume::<Vec<String>>(&k, None, &SaveOptions::new(), &policy).unwrap() {
        Resume::Stash(guard) => {
            assert_about(SystemTime::now().duration_since(guard.receipt().created).unwrap(), HOUR);
            guard.keep();
        }
        other => panic!("expected Stash, got {other:?}"),
    }
    // Stale under a tighter policy: refused, and kept.
    let tight = LoadPolicy::new().max_age(HOUR / 2).origin("job-1");
    match store.resume::<Vec<String>>(&k, None, &SaveOptions::new(), &tight).unwrap() {
        Resume::Refused(Checked::Stale { age, max_age, .. }) => {
            assert_about(age, HOUR);
            assert_eq!(max_age, HOUR / 2);
        }
        other => panic!("expected Stale, got {other:?}"),
    }
    assert!(store.load::<Vec<String>>(&k).unwrap().is_some());
}

#[test]
fn nothing_when_there_is_neither() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let outcome =
        store.resume::<Vec<String>>(&key("absent"), None, &SaveOptions::new(), &LoadPolicy::new());
    assert!(matches!(outcome.unwrap(), Resume::Nothing));
}

/// A stash dated in the future has no knowable age: with a maximum age it is
/// reported, never Fresh (clock skew must not slip past the limit).
#[test]
fn a_stash_dated_in_the_future_is_reported_not_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = key("k");
    plant(&store, &k, &labels(), Some("job-1"), SystemTime::now() + 30 * DAY);
    let policy = LoadPolicy::new().max_age(DAY);
    match store.load_checked::<Vec<String>>(&k, &policy).unwrap().unwrap() {
        Checked::Future { ahead, .. } => assert!(ahead > 29 * DAY, "{ahead:?}"),
        other => panic!("expected Future, got {other:?}"),
    }
    // Without an age limit, age does not matter.
    assert!(matches!(
        store.load_checked::<Vec<String>>(&k, &LoadPolicy::new()).unwrap().unwrap(),
        Checked::Fresh(_)
    ));
    // A foreign origin is still reported first.
    let policy = LoadPolicy::new().max_age(DAY).origin("job-2");
    assert!(matches!(
        store.load_checked::<Vec<String>>(&k, &policy).unwrap().unwrap(),
        Checked::Foreign { .. }
    ));
}
