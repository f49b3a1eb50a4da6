//! Deciding what to do with a stash found on load: `load_checked` marks a
//! stash too old or from another origin (foreign before stale), and
//! `choose_source` lets a live resource win over a leftover stash.

use std::time::{Duration, SystemTime};

use safestash::envelope::{Header, encode};
use safestash::{
    Checked, Error, LoadPolicy, SaveOptions, Source, StashKey, Stashed, Store, choose_source,
};

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
// retry: choose_source
// ---------------------------------------------------------------------------

#[test]
fn the_live_resource_wins_over_a_stash_and_reports_it_as_leftover() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = key("orders.dictionary");
    let receipt = store.save_with(&k, &labels(), &SaveOptions::new().origin("job-1")).unwrap();

    let live = vec!["live label".to_owned()];
    match choose_source(Some(live.clone()), store.load::<Vec<String>>(&k).unwrap()) {
        Source::Live { value, leftover } => {
            assert_eq!(value, live);
            let leftover = leftover.expect("the superseded stash is reported");
            assert_eq!(leftover.digest, receipt.digest);
            assert_eq!(leftover.path, receipt.path);
            assert_eq!(leftover.header.origin(), Some("job-1"));
        }
        other => panic!("expected Live, got {other:?}"),
    }
    // Choosing reads nothing and removes nothing.
    assert!(store.load::<Vec<String>>(&k).unwrap().is_some());
}

#[test]
fn the_live_resource_alone_has_no_leftover() {
    let live = vec!["live label".to_owned()];
    match choose_source::<Vec<String>>(Some(live.clone()), None) {
        Source::Live { value, leftover } => {
            assert_eq!(value, live);
            assert!(leftover.is_none());
        }
        other => panic!("expected Live, got {other:?}"),
    }
}

#[test]
fn the_stash_is_used_when_nothing_is_live_with_its_age() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = key("orders.dictionary");
    plant(&store, &k, &labels(), Some("job-1"), SystemTime::now() - HOUR);

    match choose_source(None, store.load::<Vec<String>>(&k).unwrap()) {
        Source::Stash { stashed, age } => {
            assert_eq!(stashed.value(), &labels());
            assert!(age > Duration::ZERO);
            assert_about(age, HOUR);
        }
        other => panic!("expected Stash, got {other:?}"),
    }

    // A just-written stash is young.
    let k2 = key("fresh");
    store.save(&k2, &labels()).unwrap();
    match choose_source(None, store.load::<Vec<String>>(&k2).unwrap()) {
        Source::Stash { age, .. } => assert!(age < SLACK, "{age:?}"),
        other => panic!("expected Stash, got {other:?}"),
    }
}

#[test]
fn nothing_when_there_is_neither() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let loaded: Option<Stashed<Vec<String>>> = store.load(&key("absent")).unwrap();
    assert!(matches!(choose_source(None, loaded), Source::Nothing));
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
