//! Keys that could name a path outside the store are rejected by every way
//! of making a `StashKey`.

use std::str::FromStr;

use safestash::{KeyErrorKind, StashKey, Store};
use serde::Deserialize;

/// Hostile inputs and the rule each breaks first.
fn hostile() -> Vec<(&'static str, KeyErrorKind)> {
    vec![
        ("../etc/passwd", KeyErrorKind::InvalidChar { ch: '/', index: 2 }),
        ("foo/bar", KeyErrorKind::InvalidChar { ch: '/', index: 3 }),
        ("foo\\bar", KeyErrorKind::InvalidChar { ch: '\\', index: 3 }),
        ("", KeyErrorKind::Empty),
        ("a\0b", KeyErrorKind::InvalidChar { ch: '\0', index: 1 }),
        ("\0", KeyErrorKind::InvalidChar { ch: '\0', index: 0 }),
        ("/abs", KeyErrorKind::InvalidChar { ch: '/', index: 0 }),
        ("..", KeyErrorKind::LeadingDot),
        (".", KeyErrorKind::LeadingDot),
        (".k.lock", KeyErrorKind::LeadingDot),
    ]
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)] // only deserialized
struct Config {
    key: StashKey,
}

#[test]
fn hostile_keys_are_rejected_by_new() {
    for (input, kind) in hostile() {
        let err = StashKey::new(input).unwrap_err();
        assert_eq!(err.kind(), &kind, "{input:?}");
        assert_eq!(err.input(), input);
        assert_eq!(StashKey::new(input.to_owned()).unwrap_err().kind(), &kind);
    }
}

#[test]
fn hostile_keys_are_rejected_by_from_str_and_try_from() {
    for (input, kind) in hostile() {
        let parsed = input.parse::<StashKey>();
        assert_eq!(parsed.unwrap_err().kind(), &kind, "parse {input:?}");
        assert!(StashKey::from_str(input).is_err());
        let owned = StashKey::try_from(input.to_owned());
        assert_eq!(owned.unwrap_err().kind(), &kind, "TryFrom<String> {input:?}");
        let borrowed = StashKey::try_from(input);
        assert_eq!(borrowed.unwrap_err().kind(), &kind, "TryFrom<&str> {input:?}");
    }
}

#[test]
fn hostile_keys_are_rejected_by_deserialize() {
    for (input, _) in hostile() {
        let json = serde_json::to_string(input).unwrap();
        let err = serde_json::from_str::<StashKey>(&json).unwrap_err();
        assert!(err.to_string().contains("invalid stash key"), "{input:?}: {err}");
        let nested = format!("{{\"key\":{json}}}");
        assert!(serde_json::from_str::<Config>(&nested).is_err(), "{nested}");
    }
}

/// The same ways accept a valid key, so the rejections above are about the
/// input and not a broken constructor.
#[test]
fn a_valid_key_is_accepted_by_every_way() {
    let good = "tenant-42.snapshot_v1";
    assert_eq!(StashKey::new(good).unwrap().as_str(), good);
    assert_eq!(good.parse::<StashKey>().unwrap().as_str(), good);
    assert_eq!(StashKey::try_from(good.to_owned()).unwrap().as_str(), good);
    assert_eq!(StashKey::try_from(good).unwrap().as_str(), good);
    let key: StashKey = serde_json::from_str(&format!("\"{good}\"")).unwrap();
    assert_eq!(key.as_str(), good);
    let cfg: Config = serde_json::from_str(&format!("{{\"key\":\"{good}\"}}")).unwrap();
    assert_eq!(cfg.key.as_str(), good);
}

/// `from_any` turns the same hostile inputs into keys whose stash path is
/// directly inside the store's directory, and distinct inputs stay distinct.
#[test]
fn from_any_maps_hostile_inputs_inside_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for (input, _) in hostile() {
        let key = StashKey::from_any(input);
        assert_eq!(StashKey::new(key.as_str()).unwrap(), key, "{input:?}");
        let path = store.path_of(&key);
        assert_eq!(path.parent(), Some(dir.path()), "{input:?} -> {key}");
        assert!(seen.insert(key), "{input:?} collides");
    }
}
