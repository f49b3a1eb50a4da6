//! The store's everyday behaviour through the public API: round trips,
//! absence, replacement, metadata, listing, verification, quarantine, cleanup
//! and directory creation.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use safestash::{Corruption, Error, SaveOptions, StashKey, Store, fs::FileKind};
use serde::{Deserialize, Serialize};

use common::{names, temp_files};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Field {
    label: String,
    notes: Option<String>,
    width: u32,
    tags: Vec<String>,
}

fn key(s: &str) -> StashKey {
    StashKey::new(s).unwrap()
}

fn dictionary() -> BTreeMap<String, Field> {
    BTreeMap::from([
        (
            "amount".to_owned(),
            Field {
                label: "Amount in EUR".to_owned(),
                notes: Some("gross, \"incl.\" VAT\nsecond line".to_owned()),
                width: 12,
                tags: vec!["numeric".to_owned(), "money".to_owned()],
            },
        ),
        (
            "placed".to_owned(),
            Field {
                label: "Placed at \u{e9}t\u{e9}".to_owned(),
                notes: None,
                width: 0,
                tags: vec![],
            },
        ),
    ])
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn struct_map_round_trips_with_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = key("orders.dictionary");
    let value = dictionary();

    let receipt = store.save(&k, &value).unwrap();
    assert_eq!(receipt.key, k);
    assert_eq!(receipt.path, dir.path().join("orders.dictionary"));
    assert_eq!(receipt.bytes, std::fs::metadata(&receipt.path).unwrap().len());

    let stashed = store.load::<BTreeMap<String, Field>>(&k).unwrap().expect("just saved");
    assert_eq!(stashed.value(), &value);
    let meta = stashed.meta();
    assert_eq!(meta.header.key(), &k);
    assert_eq!(meta.header.kind(), "value");
    assert_eq!(meta.header.origin(), None);
    assert_eq!(meta.header.created(), receipt.created);
    assert_eq!(meta.digest, receipt.digest);
    assert_eq!(meta.size, receipt.bytes);
    assert_eq!(meta.path, receipt.path);
    assert_eq!(stashed.into_value(), value);
}

#[test]
fn stash_file_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let receipt = store.save(&key("k"), &"secret").unwrap();
    assert_eq!(mode(&receipt.path), 0o600);
    assert_eq!(mode(&dir.path().join(".k.lock")), 0o600);
}

#[test]
fn missing_key_is_none() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.save(&key("other"), &1).unwrap();
    assert!(store.load::<i32>(&key("absent")).unwrap().is_none());
}

#[test]
fn clear_removes_the_file_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = key("k");
    let path = store.save(&k, &dictionary()).unwrap().path;
    assert!(path.exists());

    assert!(store.clear(&k).unwrap());
    assert!(!path.exists());
    assert!(store.load::<BTreeMap<String, Field>>(&k).unwrap().is_none());
    assert!(!store.clear(&k).unwrap(), "second clear reports nothing removed");
    assert!(store.load::<i32>(&k).unwrap().is_none());
}

#[test]
fn empty_map_is_some_empty_not_none() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = key("empty");
    store.save(&k, &BTreeMap::<String, i32>::new()).unwrap();
    let loaded = store.load::<BTreeMap<String, i32>>(&k).unwrap();
    let loaded = loaded.expect("an empty map is a stash, not an absent one");
    assert!(loaded.value().is_empty());

    let e = key("empty-vec");
    store.save(&e, &Vec::<u8>::new()).unwrap();
    assert_eq!(store.load::<Vec<u8>>(&e).unwrap().map(|s| s.into_value()), Some(vec![]));
}

#[test]
fn second_save_replaces_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = key("k");
    let first = store.save_with(&k, &vec!["first"; 50], &SaveOptions::new().origin("one")).unwrap();
    let second = store.save_with(&k, &vec!["second"], &SaveOptions::new().origin("two")).unwrap();
    assert_ne!(first.digest, second.digest);
    let loaded = store.load::<Vec<String>>(&k).unwrap().unwrap();
    assert_eq!(loaded.value(), &vec!["second".to_owned()]);
    assert_eq!(loaded.meta().header.origin(), Some("two"));
    assert_eq!(loaded.meta().digest, second.digest);
    assert_eq!(std::fs::metadata(&second.path).unwrap().len(), second.bytes);
    // One stash file and its lock file; nothing else.
    assert_eq!(names(dir.path()), [".k.lock", "k"]);
}

#[test]
fn garbage_at_the_key_path_is_corrupt_not_absent() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = key("k");
    for garbage in [&b"not a stash"[..], b"", b"SAFESTASH", b"{\"a\":1}", &[0u8; 4096]] {
        std::fs::write(store.path_of(&k), garbage).unwrap();
        match store.load::<serde_json::Value>(&k) {
            Err(Error::Corrupt { path, .. }) => assert_eq!(path, store.path_of(&k)),
            other => panic!("{garbage:?}: expected Corrupt, got {other:?}"),
        }
    }
    std::fs::write(store.path_of(&k), b"not a stash").unwrap();
    assert!(matches!(
        store.load::<serde_json::Value>(&k),
        Err(Error::Corrupt { reason: Corruption::NotAStash, .. })
    ));
}

#[test]
fn successful_saves_leave_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for i in 0..5 {
        store.save(&key("a"), &vec![i; 1000]).unwrap();
        store.save(&key("b.c"), &dictionary()).unwrap();
    }
    assert_eq!(temp_files(dir.path()), Vec::<String>::new());
    assert_eq!(names(dir.path()), [".a.lock", ".b.c.lock", "a", "b.c"]);
}

#[test]
fn kind_and_origin_show_in_load_and_list() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = key("orders");
    let origin = "job 2026-11-22 #4 \u{e9} \"quoted\"\nline two";
    let opts = SaveOptions::new().kind("field-dictionary").origin(origin);
    store.save_with(&k, &dictionary(), &opts).unwrap();
    store.save(&key("plain"), &1).unwrap();

    let loaded = store.load::<BTreeMap<String, Field>>(&k).unwrap().unwrap();
    assert_eq!(loaded.meta().header.kind(), "field-dictionary");
    assert_eq!(loaded.meta().header.origin(), Some(origin));

    let listed = store.list().unwrap();
    assert_eq!(listed.len(), 2);
    let info = listed.iter().find(|i| i.key == k).unwrap();
    let header = info.header.as_ref().unwrap();
    assert_eq!(header.kind(), "field-dictionary");
    assert_eq!(header.origin(), Some(origin));
    assert_eq!(header.key(), &k);
    assert_eq!(info.path, store.path_of(&k));
    assert_eq!(info.size, std::fs::metadata(&info.path).unwrap().len());

    let plain = listed.iter().find(|i| i.key.as_str() == "plain").unwrap();
    let plain = plain.header.as_ref().unwrap();
    assert_eq!((plain.kind(), plain.origin()), ("value", None));
}

#[test]
fn list_skips_dot_files_and_is_sorted() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // Enough keys, saved in a scrambled order, that directory order is
    // unlikely to be sorted by accident.
    let mut want: Vec<String> = (0..24).map(|i| format!("key-{:02}", (i * 7) % 24)).collect();
    for k in &want {
        store.save(&key(k), k).unwrap();
    }
    want.sort();
    // The store's own files, and dot-files a user or crash left behind.
    std::fs::write(dir.path().join(".hidden"), b"x").unwrap();
    std::fs::write(dir.path().join(".key-00.Ab3dE5gH.tmp"), b"half").unwrap();
    std::fs::write(dir.path().join(".key-01.quarantined.2026-01-01T000000.0Z"), b"x").unwrap();

    let listed: Vec<String> =
        store.list().unwrap().into_iter().map(|i| i.key.into_string()).collect();
    assert_eq!(listed, want);
    let verified: Vec<String> =
        store.verify().unwrap().into_iter().map(|r| r.key.into_string()).collect();
    assert_eq!(verified, want);
}

#[test]
fn verify_reports_ok_and_corrupt_entries() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let good = store.save(&key("good"), &dictionary()).unwrap();
    std::fs::write(dir.path().join("bad"), b"garbage").unwrap();
    let bytes = std::fs::read(&good.path).unwrap();
    std::fs::write(dir.path().join("cut"), &bytes[..bytes.len() - 1]).unwrap();
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x10;
    std::fs::write(dir.path().join("flipped"), &flipped).unwrap();

    let report = store.verify().unwrap();
    let keys: Vec<&str> = report.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["bad", "cut", "flipped", "good"]);

    let meta = report[3].result.as_ref().expect("good verifies");
    assert_eq!(meta.digest, good.digest);
    assert_eq!(meta.size, good.bytes);
    assert_eq!(report[3].path, good.path);

    assert!(matches!(report[0].result, Err(Error::Corrupt { reason: Corruption::NotAStash, .. })));
    assert!(matches!(report[1].result, Err(Error::Corrupt { reason: Corruption::BadTrailer, .. })));
    assert!(matches!(
        report[2].result,
        Err(Error::Corrupt { reason: Corruption::ChecksumMismatch { .. }, .. })
    ));
    for r in &report[..3] {
        assert_eq!(r.path, dir.path().join(r.key.as_str()));
    }

    // list shows the same entries; it reads headers only, so the garbage
    // file has none while the damaged stashes still show theirs.
    let listed = store.list().unwrap();
    let keys: Vec<&str> = listed.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(keys, ["bad", "cut", "flipped", "good"]);
    assert!(matches!(listed[0].header, Err(Error::Corrupt { reason: Corruption::NotAStash, .. })));
    assert!(listed[3].header.is_ok());
}

#[test]
fn quarantine_moves_a_corrupt_stash_aside() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = key("k");
    store.save(&key("keep"), &1).unwrap();
    std::fs::write(store.path_of(&k), b"damaged stash").unwrap();
    assert!(matches!(store.load::<i32>(&k), Err(Error::Corrupt { .. })));

    let aside = store.quarantine(&k).unwrap().expect("there was a file");
    assert_eq!(aside.parent(), Some(dir.path()));
    let name = aside.file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with(".k.quarantined."), "{name}");
    assert_eq!(std::fs::read(&aside).unwrap(), b"damaged stash");
    assert!(!store.path_of(&k).exists());

    assert!(store.load::<i32>(&k).unwrap().is_none());
    let listed: Vec<String> =
        store.list().unwrap().into_iter().map(|i| i.key.into_string()).collect();
    assert_eq!(listed, ["keep"]);
    assert_eq!(store.verify().unwrap().len(), 1);
    // Nothing left to quarantine; a second one is a no-op.
    assert_eq!(store.quarantine(&k).unwrap(), None);
    assert!(aside.exists());

    // A later quarantine of the same key does not overwrite the first.
    std::fs::write(store.path_of(&k), b"damaged again").unwrap();
    let aside2 = store.quarantine(&k).unwrap().unwrap();
    assert_ne!(aside, aside2);
    assert_eq!(std::fs::read(&aside).unwrap(), b"damaged stash");
    assert_eq!(std::fs::read(&aside2).unwrap(), b"damaged again");
}

#[test]
fn cleanup_removes_stale_temp_files_but_not_locked_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let other = Store::open(dir.path()).unwrap();
    let k = key("k");
    let live = store.save(&k, &"live stash").unwrap();
    let stale = dir.path().join(".k.Ab3dE5gH.tmp");
    std::fs::write(&stale, b"half a stash").unwrap();
    // Dot-files that are not temp files: never touched.
    let not_temp = [".k.Ab3dE5g.tmp", ".notes", ".k.Ab3dE5gH.tmp.bak"];
    for n in not_temp {
        std::fs::write(dir.path().join(n), b"keep").unwrap();
    }

    {
        let _held = store.lock(&k).unwrap();
        assert!(matches!(other.try_lock(&k), Err(Error::Locked { .. })));
        assert_eq!(other.cleanup().unwrap(), Vec::<std::path::PathBuf>::new());
        assert!(stale.exists(), "a temp file under a held lock was removed");
    }

    assert_eq!(other.cleanup().unwrap(), std::slice::from_ref(&stale));
    assert!(!stale.exists());
    for n in not_temp {
        assert!(dir.path().join(n).exists(), "{n} was removed");
    }
    assert_eq!(store.load::<String>(&k).unwrap().unwrap().value(), "live stash");
    assert_eq!(std::fs::metadata(&live.path).unwrap().len(), live.bytes);
    assert_eq!(other.cleanup().unwrap(), Vec::<std::path::PathBuf>::new());
}

#[test]
fn cleanup_goes_on_past_an_entry_it_cannot_handle() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.save(&key("a"), &1).unwrap();
    store.save(&key("c"), &3).unwrap();
    // A planted symlink at b's lock file makes b's temp file impossible to
    // lock; the temp files of a and c must still be removed.
    std::os::unix::fs::symlink("/nonexistent", dir.path().join(".b.lock")).unwrap();
    for name in [".a.Ab3dE5gH.tmp", ".b.Ab3dE5gH.tmp", ".c.Ab3dE5gH.tmp"] {
        std::fs::write(dir.path().join(name), b"stale").unwrap();
    }
    let err = store.cleanup().unwrap_err();
    assert!(matches!(err, Error::Io { op: safestash::IoOp::Lock, .. }), "{err:?}");
    assert_eq!(common::temp_files(dir.path()), [".b.Ab3dE5gH.tmp"]);
}

#[test]
fn invalid_options_are_rejected_before_anything_is_written() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("store");
    let store = Store::open(&dir).unwrap();
    let k = key("k");

    let err = store.save_with(&k, &1, &SaveOptions::new().kind("has space")).unwrap_err();
    match &err {
        Error::InvalidOption { field, value, .. } => {
            assert_eq!((*field, value.as_str()), ("kind", "has space"));
        }
        other => panic!("expected InvalidOption, got {other:?}"),
    }
    assert!(!dir.exists(), "a rejected save created the directory");

    let long_origin = "x".repeat(1025);
    assert!(matches!(
        store.save_with(&k, &1, &SaveOptions::new().origin(long_origin)),
        Err(Error::InvalidOption { field: "origin", .. })
    ));
    for bad_kind in ["", "a\nb", "\u{e9}", &"k".repeat(65)] {
        assert!(
            matches!(
                store.save_with(&k, &1, &SaveOptions::new().kind(bad_kind)),
                Err(Error::InvalidOption { field: "kind", .. })
            ),
            "{bad_kind:?}"
        );
    }
    assert!(!dir.exists());

    // With an existing stash: it is untouched and nothing is added.
    store.save(&k, &"old").unwrap();
    let before = std::fs::read(store.path_of(&k)).unwrap();
    let names_before = names(&dir);
    assert!(matches!(
        store.save_with(&k, &"new", &SaveOptions::new().kind("has space")),
        Err(Error::InvalidOption { .. })
    ));
    assert_eq!(std::fs::read(store.path_of(&k)).unwrap(), before);
    assert_eq!(names(&dir), names_before);

    // The limits themselves are accepted.
    let edge =
        SaveOptions::new().kind("a-Z_0.9:/".to_owned() + &"k".repeat(55)).origin("o".repeat(1024));
    store.save_with(&key("edge"), &1, &edge).unwrap();
}

#[test]
fn first_save_creates_deep_private_directories() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("a/b/c/d");
    let store = Store::open(&dir).unwrap();
    assert!(!root.path().join("a").exists());

    store.save(&key("k"), &dictionary()).unwrap();
    for sub in ["a", "a/b", "a/b/c", "a/b/c/d"] {
        let p = root.path().join(sub);
        assert!(p.is_dir(), "{sub} missing");
        assert_eq!(mode(&p), 0o700, "{sub}");
    }
    assert_eq!(
        store.load::<BTreeMap<String, Field>>(&key("k")).unwrap().unwrap().value(),
        &dictionary()
    );
}

#[test]
fn reads_and_maintenance_on_a_missing_directory_create_nothing() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("a/b/c/d");
    let store = Store::open(&dir).unwrap();
    let k = key("k");

    assert!(store.load::<i32>(&k).unwrap().is_none());
    assert!(!store.clear(&k).unwrap());
    assert!(store.list().unwrap().is_empty());
    assert!(store.verify().unwrap().is_empty());
    assert!(store.cleanup().unwrap().is_empty());
    assert_eq!(store.quarantine(&k).unwrap(), None);
    let again = Store::open(&dir).unwrap();
    assert!(again.load::<String>(&k).unwrap().is_none());

    assert!(!root.path().join("a").exists(), "something was created");
    assert_eq!(names(root.path()), Vec::<String>::new());
}

#[test]
fn open_refuses_a_file_as_the_directory() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("store");
    std::fs::write(&file, b"x").unwrap();
    match Store::open(&file) {
        Err(Error::NotAFile { path, found: FileKind::File, expected: FileKind::Dir }) => {
            assert_eq!(path, file)
        }
        other => panic!("expected NotAFile, got {other:?}"),
    }
}

#[test]
fn large_value_round_trips() {
    // Several times the 64 KiB write buffer.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = key("big");
    let value: Vec<String> =
        (0..20_000).map(|i| format!("row {i:05} {}", "x".repeat(i % 50))).collect();
    let receipt = store.save(&k, &value).unwrap();
    assert!(receipt.bytes > 300 << 10, "{}", receipt.bytes);
    assert_eq!(store.load::<Vec<String>>(&k).unwrap().unwrap().value(), &value);
}

#[test]
fn a_value_that_does_not_serialize_leaves_the_old_stash() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = key("k");
    store.save(&k, &"old").unwrap();
    let before = std::fs::read(store.path_of(&k)).unwrap();
    // JSON object keys must be strings: this fails part way through.
    let bad = BTreeMap::from([((1, 2), "a"), ((3, 4), "b")]);
    match store.save(&k, &bad) {
        Err(Error::Serialize { key: ek, .. }) => assert_eq!(ek, k),
        other => panic!("expected Serialize, got {other:?}"),
    }
    assert_eq!(std::fs::read(store.path_of(&k)).unwrap(), before);
    assert_eq!(temp_files(dir.path()), Vec::<String>::new());
    assert_eq!(store.load::<String>(&k).unwrap().unwrap().value(), "old");
}

#[test]
fn a_wrong_type_is_deserialize_not_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = key("k");
    store.save(&k, &dictionary()).unwrap();
    assert!(matches!(store.load::<Vec<u64>>(&k), Err(Error::Deserialize { .. })));
    // The stash itself is fine.
    assert!(store.verify().unwrap()[0].result.is_ok());
}

/// Floats come back bit for bit (serde_json's float_roundtrip): a stash is a
/// copy, not an approximation.
#[test]
fn floats_round_trip_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let k = key("floats");
    let values =
        [-4.604065061432271e-196_f64, 0.1 + 0.2, f64::MAX, f64::MIN_POSITIVE, 5e-324, 1.0 / 3.0];
    store.save(&k, &values).unwrap();
    let back = store.load::<Vec<f64>>(&k).unwrap().unwrap().into_value();
    let bits = |v: &[f64]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&back), bits(&values));
}
