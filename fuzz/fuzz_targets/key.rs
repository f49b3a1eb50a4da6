//! Arbitrary strings as keys: `StashKey::new` either rejects or gives a key
//! whose stash path stays directly inside the store's directory and that
//! round-trips through Display, FromStr and serde; `from_any` always gives
//! a valid key and never maps two different strings to one key.
#![no_main]

use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use safestash::{StashKey, Store};

fuzz_target!(|input: (String, String)| {
    let (a, b) = input;
    let store = Store::open("/fuzz/store").expect("open creates nothing");
    for s in [&a, &b] {
        if let Ok(key) = StashKey::new(s.as_str()) {
            assert_eq!(key.as_str(), s);
            let path = store.path_of(&key);
            assert_eq!(path.parent(), Some(Path::new("/fuzz/store")));
            assert!(
                path.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
            );
            assert_eq!(path.file_name().and_then(|n| n.to_str()), Some(s.as_str()));
            assert_eq!(key.to_string().parse::<StashKey>().expect("Display/FromStr"), key);
            let json = serde_json::to_string(&key).expect("serialize");
            assert_eq!(serde_json::from_str::<StashKey>(&json).expect("deserialize"), key);
        } else {
            let json = serde_json::to_string(s).expect("serialize a string");
            assert!(serde_json::from_str::<StashKey>(&json).is_err());
        }
        let any = StashKey::from_any(s);
        assert_eq!(StashKey::new(any.as_str()).as_ref(), Ok(&any), "from_any gave an invalid key");
        assert_eq!(StashKey::from_any(s), any, "from_any is deterministic");
    }
    if a != b {
        assert_ne!(StashKey::from_any(&a), StashKey::from_any(&b), "{a:?} and {b:?} collide");
    }
});
