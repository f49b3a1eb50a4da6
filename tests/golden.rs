//! Golden files: every committed format-version file must load forever.
//!
//! The files in tests/fixtures/v1 were written by tests/fixtures/make_v1.py
//! from docs/FORMAT.md alone, not by this crate. Never regenerate them.

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use safestash::envelope::{decode, encode};
use safestash::{Digest, StashKey, Store};
use serde_json::{Value, json};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

/// A copy of the fixtures in a fresh store directory (loading never writes,
/// but a test must not be able to damage the committed files).
fn fixture_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

fn at(secs: u64, nanos: u32) -> std::time::SystemTime {
    UNIX_EPOCH + Duration::new(secs, nanos)
}

#[test]
fn v1_field_dictionary_loads() {
    let (_dir, store) = fixture_store();
    let key = StashKey::new("orders.dictionary").unwrap();
    let stashed = store.load::<Value>(&key).unwrap().expect("fixture present");
    assert_eq!(
        stashed.value(),
        &json!([
            {"id": "amount", "info": {"label": "Amount", "notes": "in EUR", "type_override": "numeric"}},
            {"id": "placed", "info": {"label": "Placed at", "type_override": "timestamp"}},
            {"id": "comment", "info": {"label": "Comment"}},
        ])
    );
    let h = &stashed.meta().header;
    assert_eq!(h.key(), &key);
    assert_eq!(h.kind(), "field-dictionary");
    assert_eq!(h.origin(), Some("upload-7f3a"));
    assert_eq!(h.created(), at(1_795_353_601, 123_456_789));
    assert_eq!(h.writer(), "safestash 0.1.0");
    assert_eq!(
        stashed.meta().digest,
        "748388f2fd080768b8af2c883d2273f7cb2abe982cfd8624aa7273485192e566"
            .parse::<Digest>()
            .unwrap()
    );
    assert_eq!(stashed.meta().size, 492);
}

#[test]
fn v1_empty_map_loads_as_empty_not_absent() {
    let (_dir, store) = fixture_store();
    let key = StashKey::new("empty-map").unwrap();
    let stashed = store.load::<std::collections::BTreeMap<String, i32>>(&key).unwrap();
    let stashed = stashed.expect("an empty map is a stash");
    assert!(stashed.value().is_empty());
    assert_eq!(stashed.meta().header.origin(), None);
    assert_eq!(stashed.meta().header.created(), at(1_767_225_600, 0));
}

#[test]
fn v1_escaped_key_unicode_origin_and_pre_2000_time_load() {
    let (_dir, store) = fixture_store();
    let key = StashKey::from_any("tables/orders {x}");
    assert_eq!(key.as_str(), "tables_2Forders_20_7Bx_7D");
    let stashed = store.load::<Value>(&key).unwrap().expect("fixture present");
    assert_eq!(stashed.value(), &json!({"rows": [[1, "a\u{e9}"], [2, null]], "n": 2}));
    assert_eq!(
        stashed.meta().header.origin(),
        Some("job \u{e9}t\u{e9} #4 \"quoted\"\nsecond line")
    );
    assert_eq!(stashed.meta().header.created(), at(946_684_799, 999_999_999));
}

#[test]
fn every_fixture_verifies_and_lists() {
    let (_dir, store) = fixture_store();
    let report = store.verify().unwrap();
    assert_eq!(report.len(), 3);
    for entry in &report {
        assert!(entry.result.is_ok(), "{}: {:?}", entry.key, entry.result);
    }
    let listed = store.list().unwrap();
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().all(|info| info.header.is_ok()));
}

/// The writer is canonical: re-encoding a decoded golden file reproduces it
/// byte for byte, so a change in how headers or trailers are written shows
/// up here before it ships.
#[test]
fn re_encoding_reproduces_the_golden_bytes() {
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let decoded = decode(&bytes).unwrap();
        assert_eq!(encode(&decoded.header, decoded.payload), bytes);
    }
}
