//! One behaviour suite, run on every backend: the directory store always,
//! PostgreSQL when `SAFESTASH_TEST_POSTGRES_URL` is set and the crate is
//! built with `--features postgres`, MySQL/MariaDB when
//! `SAFESTASH_TEST_MYSQL_URL` is set and it is built with `--features
//! mysql`, and with `--features object-store`
//! object storage twice: `object_store`'s `InMemory` always, and an S3
//! server (moto in `.ci/run`) when `SAFESTASH_TEST_S3_URL` is set (under
//! `CI=true` a missing server fails the test). Damage is done where the
//! bytes live: in the file, in the row with an `UPDATE`, or in the object
//! with a raw PUT.

mod mytest;
#[cfg(feature = "object-store")]
mod objtest;
mod pgtest;

use std::collections::BTreeMap;

use safestash::{Error, Precondition, SaveOptions, StashKey, Store};

/// A store and a way to damage what it keeps.
struct Place {
    name: &'static str,
    store: Store,
    damage: Box<dyn Fn(Damage<'_>)>,
    _dir: Option<tempfile::TempDir>,
}

enum Damage<'a> {
    /// Flip one bit of the byte at this offset from the end.
    FlipFromEnd(&'a StashKey, usize),
    /// Keep only the first n bytes.
    Truncate(&'a StashKey, usize),
    /// Copy one key's stored bytes to another key.
    Copy(&'a StashKey, &'a StashKey),
}

fn directory() -> Place {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("stashes");
    let store = Store::open_url(root.to_str().unwrap()).unwrap();
    let damage = Box::new(move |d: Damage<'_>| match d {
        Damage::FlipFromEnd(k, n) => {
            let path = root.join(k.as_str());
            let mut bytes = std::fs::read(&path).unwrap();
            let at = bytes.len() - n;
            bytes[at] ^= 1;
            std::fs::write(&path, bytes).unwrap();
        }
        Damage::Truncate(k, n) => {
            let path = root.join(k.as_str());
            let bytes = std::fs::read(&path).unwrap();
            std::fs::write(&path, &bytes[..n]).unwrap();
        }
        Damage::Copy(a, b) => {
            std::fs::copy(root.join(a.as_str()), root.join(b.as_str())).unwrap();
        }
    });
    Place { name: "directory", store, damage, _dir: Some(dir) }
}

#[cfg(feature = "postgres")]
fn postgres(test: &str) -> Option<Place> {
    use pgtest::lit;
    let url = pgtest::url(test)?;
    let ns = pgtest::fresh_namespace(test);
    let store = Store::open_url(&pgtest::with_namespace(&url, &ns)).unwrap();
    let n = lit(&ns);
    let damage = Box::new(move |d: Damage<'_>| {
        let sql = match d {
            Damage::FlipFromEnd(k, at) => format!(
                "UPDATE safestash_stashes SET envelope = set_byte(envelope, length(envelope) - {at}, \
                 get_byte(envelope, length(envelope) - {at}) # 1) WHERE namespace = {n} AND key = {}",
                lit(k.as_str())
            ),
            Damage::Truncate(k, len) => format!(
                "UPDATE safestash_stashes SET envelope = substring(envelope FROM 1 FOR {len}) \
                 WHERE namespace = {n} AND key = {}",
                lit(k.as_str())
            ),
            Damage::Copy(a, b) => format!(
                "INSERT INTO safestash_stashes (namespace, key, envelope, digest, size, created) \
                 SELECT namespace, {}, envelope, digest, size, created FROM safestash_stashes \
                 WHERE namespace = {n} AND key = {}",
                lit(b.as_str()),
                lit(a.as_str())
            ),
        };
        pgtest::psql(&url, &sql);
    });
    Some(Place { name: "postgres", store, damage, _dir: None })
}

#[cfg(not(feature = "postgres"))]
fn postgres(test: &str) -> Option<Place> {
    eprintln!("{test}: the PostgreSQL part needs --features postgres");
    None
}

#[cfg(feature = "mysql")]
fn mysql(test: &str) -> Option<Place> {
    use mysql::prelude::Queryable;
    let url = mytest::url(test)?;
    let ns = mytest::fresh_namespace(test);
    let store = Store::open_url(&mytest::with_namespace(&url, &ns)).unwrap();
    let damage = Box::new(move |d: Damage<'_>| {
        // Read, change and write back the row's bytes with bound values.
        let mut c = mytest::raw(&url);
        let get = |c: &mut mysql::Conn, k: &StashKey| -> Vec<u8> {
            c.exec_first(
                "SELECT envelope FROM safestash_stashes WHERE namespace = ? AND `key` = ?",
                (&ns, k.as_str()),
            )
            .unwrap()
            .expect("a row to damage")
        };
        let set = |c: &mut mysql::Conn, k: &StashKey, bytes: Vec<u8>| {
            c.exec_drop(
                "UPDATE safestash_stashes SET envelope = ? WHERE namespace = ? AND `key` = ?",
                (bytes, &ns, k.as_str()),
            )
            .unwrap();
        };
        match d {
            Damage::FlipFromEnd(k, at) => {
                let mut bytes = get(&mut c, k);
                let i = bytes.len() - at;
                bytes[i] ^= 1;
                set(&mut c, k, bytes);
            }
            Damage::Truncate(k, len) => {
                let bytes = get(&mut c, k);
                set(&mut c, k, bytes[..len].to_vec());
            }
            Damage::Copy(a, b) => c
                .exec_drop(
                    "INSERT INTO safestash_stashes (namespace, `key`, envelope, digest, size, created, chunks) \
                     SELECT namespace, ?, envelope, digest, size, created, chunks FROM safestash_stashes \
                     WHERE namespace = ? AND `key` = ?",
                    (b.as_str(), &ns, a.as_str()),
                )
                .unwrap(),
        }
    });
    Some(Place { name: "mysql", store, damage, _dir: None })
}

#[cfg(not(feature = "mysql"))]
fn mysql(test: &str) -> Option<Place> {
    eprintln!("{test}: the MySQL part needs --features mysql");
    None
}

/// Damage done with raw object store calls.
#[cfg(feature = "object-store")]
fn object_damage(raw: objtest::Raw) -> Box<dyn Fn(Damage<'_>)> {
    Box::new(move |d: Damage<'_>| match d {
        Damage::FlipFromEnd(k, n) => {
            let mut bytes = raw.get(k.as_str()).unwrap();
            let at = bytes.len() - n;
            bytes[at] ^= 1;
            raw.put(k.as_str(), bytes);
        }
        Damage::Truncate(k, n) => {
            let bytes = raw.get(k.as_str()).unwrap();
            raw.put(k.as_str(), bytes[..n].to_vec());
        }
        Damage::Copy(a, b) => {
            let bytes = raw.get(a.as_str()).unwrap();
            raw.put(b.as_str(), bytes);
        }
    })
}

#[cfg(feature = "object-store")]
fn object_places(test: &str) -> Vec<Place> {
    use safestash::backend::object_store::{ObjectStoreBackend, Options};
    let memory = std::sync::Arc::new(object_store::memory::InMemory::new());
    let backend = ObjectStoreBackend::new(memory.clone(), "stashes", Options::default()).unwrap();
    let raw = objtest::Raw::over(memory, backend.prefix().clone());
    let mut all = vec![Place {
        name: "in-memory object store",
        store: Store::open_object_store(backend),
        damage: object_damage(raw),
        _dir: None,
    }];
    for (name, url) in objtest::urls(test) {
        all.push(Place {
            name,
            store: Store::open_url(&url).unwrap(),
            damage: object_damage(objtest::Raw::open(&url)),
            _dir: None,
        });
    }
    all
}

#[cfg(not(feature = "object-store"))]
fn object_places(test: &str) -> Vec<Place> {
    eprintln!("{test}: the object storage part needs --features object-store");
    Vec::new()
}

/// Every place the test runs on.
fn places(test: &str) -> Vec<Place> {
    let mut all = vec![directory()];
    all.extend(postgres(test));
    all.extend(mysql(test));
    all.extend(object_places(test));
    all
}

fn key(s: &str) -> StashKey {
    StashKey::new(s).unwrap()
}

#[test]
fn round_trip_and_absent() {
    for p in places("round_trip") {
        let s = &p.store;
        let k = key("orders.dictionary");
        assert!(s.load::<String>(&k).unwrap().is_none(), "{}", p.name);
        let labels = BTreeMap::from([("amount".to_string(), "Amount in EUR".to_string())]);
        let r = s.save_with(&k, &labels, &SaveOptions::new().kind("dict").origin("job-1")).unwrap();
        let back = s.load::<BTreeMap<String, String>>(&k).unwrap().expect("saved");
        assert_eq!(back.value(), &labels, "{}", p.name);
        assert_eq!(back.meta().digest, r.digest, "{}", p.name);
        assert_eq!(back.meta().header.kind(), "dict");
        assert_eq!(back.meta().header.origin(), Some("job-1"));
        assert_eq!(back.meta().size, r.bytes, "{}", p.name);
        let raw = s.read_raw(&k).unwrap().unwrap();
        assert_eq!(raw.value(), br#"{"amount":"Amount in EUR"}"#);
    }
}

#[test]
fn empty_map_is_a_stash_not_absence() {
    for p in places("empty_map") {
        let k = key("empty");
        p.store.save(&k, &BTreeMap::<String, i32>::new()).unwrap();
        let back = p.store.load::<BTreeMap<String, i32>>(&k).unwrap();
        assert!(back.expect("an empty map is a stash").value().is_empty(), "{}", p.name);
    }
}

#[test]
fn replace_and_idempotent_clear() {
    for p in places("replace") {
        let s = &p.store;
        let k = key("k");
        s.save(&k, &1).unwrap();
        s.save(&k, &2).unwrap();
        assert_eq!(*s.load::<i32>(&k).unwrap().unwrap().value(), 2, "{}", p.name);
        assert!(s.clear(&k).unwrap(), "{}", p.name);
        assert!(!s.clear(&k).unwrap(), "{}", p.name);
        assert!(s.load::<i32>(&k).unwrap().is_none(), "{}", p.name);
    }
}

#[test]
fn conditional_save_and_clear() {
    for p in places("conditional") {
        let s = &p.store;
        let k = key("k");
        let opts = SaveOptions::new();
        let first = s.save_if(&k, &1, &opts, Precondition::Absent).unwrap();
        let err = s.save_if(&k, &2, &opts, Precondition::Absent).unwrap_err();
        assert!(
            matches!(&err, Error::StashExists { digest: Some(d), .. } if *d == first.digest),
            "{}: {err:?}",
            p.name
        );
        let second = s.save_if(&k, &3, &opts, Precondition::Unchanged(first.digest)).unwrap();
        let err = s.save_if(&k, &4, &opts, Precondition::Unchanged(first.digest)).unwrap_err();
        assert!(matches!(err, Error::Replaced { .. }), "{}: {err:?}", p.name);
        assert!(!s.clear_if(&k, &first.digest).unwrap(), "{}", p.name);
        assert_eq!(*s.load::<i32>(&k).unwrap().unwrap().value(), 3);
        assert!(s.clear_if(&k, &second.digest).unwrap(), "{}", p.name);
        assert!(s.load::<i32>(&k).unwrap().is_none());
    }
}

#[test]
fn flipped_byte_is_corrupt_for_load_and_verify() {
    for p in places("flipped") {
        let s = &p.store;
        let (bad, good) = (key("bad"), key("good"));
        s.save(&bad, &"some payload to damage").unwrap();
        s.save(&good, &1).unwrap();
        // A byte of the payload: the trailer is the last 112 bytes.
        (p.damage)(Damage::FlipFromEnd(&bad, 120));
        let err = s.load::<String>(&bad).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{}: {err:?}", p.name);
        let report = s.verify().unwrap();
        let broken: Vec<&str> =
            report.iter().filter(|r| r.result.is_err()).map(|r| r.key.as_str()).collect();
        assert_eq!(broken, ["bad"], "{}", p.name);
        // Quarantine moves it aside; then there is no stash and verify is clean.
        assert!(s.quarantine(&bad).unwrap().is_some(), "{}", p.name);
        assert!(s.load::<String>(&bad).unwrap().is_none(), "{}", p.name);
        assert!(s.verify().unwrap().iter().all(|r| r.result.is_ok()), "{}", p.name);
        let keys: Vec<String> =
            s.list().unwrap().into_iter().map(|i| i.key.into_string()).collect();
        assert_eq!(keys, ["good"], "{}", p.name);
    }
}

#[test]
fn truncated_is_corrupt() {
    for p in places("truncated") {
        let k = key("k");
        p.store.save(&k, &vec![7u8; 1000]).unwrap();
        (p.damage)(Damage::Truncate(&k, 300));
        let err = p.store.load::<Vec<u8>>(&k).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{}: {err:?}", p.name);
        assert!(p.store.verify().unwrap()[0].result.is_err(), "{}", p.name);
    }
}

#[test]
fn truncated_to_nothing_is_corrupt_not_absent() {
    for p in places("truncated_empty") {
        let k = key("k");
        p.store.save(&k, &vec![7u8; 1000]).unwrap();
        (p.damage)(Damage::Truncate(&k, 0));
        let err = p.store.load::<Vec<u8>>(&k).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{}: {err:?}", p.name);
        assert!(p.store.verify().unwrap()[0].result.is_err(), "{}", p.name);
    }
}

#[test]
fn copied_to_another_key_is_refused() {
    for p in places("copied") {
        let (a, b) = (key("a"), key("b"));
        p.store.save(&a, &"a's data").unwrap();
        (p.damage)(Damage::Copy(&a, &b));
        let err = p.store.load::<String>(&b).unwrap_err();
        assert!(
            matches!(
                &err,
                Error::Corrupt { reason: safestash::Corruption::KeyMismatch { .. }, .. }
            ),
            "{}: {err:?}",
            p.name
        );
        assert_eq!(*p.store.load::<String>(&a).unwrap().unwrap().value(), "a's data");
    }
}

#[test]
fn hostile_keys_round_trip_and_stay_contained() {
    let hostile = [
        "../../etc/passwd",
        "'; DROP TABLE safestash_stashes; --",
        "\" OR 1=1 --",
        "%s%n\\x00",
        "Robert'); DELETE FROM safestash_schema;",
        "ключ/ü/😀",
    ];
    for p in places("hostile") {
        for (i, h) in hostile.iter().enumerate() {
            let k = StashKey::from_any(h);
            p.store.save(&k, &i).unwrap();
        }
        for (i, h) in hostile.iter().enumerate() {
            let k = StashKey::from_any(h);
            assert_eq!(*p.store.load::<usize>(&k).unwrap().unwrap().value(), i, "{}", p.name);
        }
        assert_eq!(p.store.list().unwrap().len(), hostile.len(), "{}", p.name);
        for h in hostile {
            assert!(StashKey::new(h).is_err() || !h.contains(['/', '\'']));
        }
    }
}

#[test]
fn locks_exclude_and_release() {
    for p in places("locks") {
        let s = &p.store;
        let k = key("job");
        let held = s.lock(&k).unwrap();
        assert!(matches!(s.try_lock(&k), Err(Error::Locked { .. })), "{}", p.name);
        assert!(s.is_locked(&k).unwrap(), "{}", p.name);
        // From the holding thread, the store's own save refuses to wait for itself.
        assert!(matches!(s.save(&k, &0), Err(Error::LockedByThisThread { .. })), "{}", p.name);
        held.save(&vec![1, 2, 3]).unwrap();
        assert!(held.clear().unwrap());
        held.save(&vec![4]).unwrap();
        drop(held);
        assert!(!s.is_locked(&k).unwrap(), "{}", p.name);
        let again = s.try_lock(&k).unwrap();
        drop(again);
        assert_eq!(s.load::<Vec<i32>>(&k).unwrap().unwrap().into_value(), [4]);
    }
}

#[test]
fn begin_rollback_and_resume() {
    for p in places("rollback") {
        let s = &p.store;
        let k = key("table");
        let guard = s.begin(&k, &vec!["row1".to_string(), "row2".to_string()]).unwrap();
        // A second begin never replaces a stash the caller has not seen.
        assert!(matches!(s.begin(&k, &vec!["other".to_string()]), Err(Error::StashExists { .. })));
        let mut restored = Vec::new();
        guard
            .rollback(&mut |st: safestash::Stashed<Vec<String>>| -> Result<(), std::io::Error> {
                restored = st.into_value();
                Ok(())
            })
            .unwrap();
        assert_eq!(restored, ["row1", "row2"], "{}", p.name);
        assert!(s.load::<Vec<String>>(&k).unwrap().is_none(), "{}", p.name);
        let guard = s.begin(&k, &vec!["x".to_string()]).unwrap();
        assert!(guard.commit().unwrap(), "{}", p.name);
        assert!(s.load::<Vec<String>>(&k).unwrap().is_none(), "{}", p.name);
    }
}

#[test]
fn batch_saves_every_stash_and_stops_at_a_failed_condition() {
    for p in places("batch") {
        let s = &p.store;
        let (a, b, c) = (key("a"), key("b"), key("c"));
        s.save(&b, &"already").unwrap();
        let opts = SaveOptions::new();
        let mut batch = s.batch();
        batch.add_if(&a, &1, &opts, Precondition::Absent).unwrap();
        batch.add_if(&b, &2, &opts, Precondition::Absent).unwrap();
        batch.add(&c, &3, &opts).unwrap();
        let err = batch.commit().unwrap_err();
        assert!(matches!(err.error, Error::StashExists { .. }), "{}", p.name);
        assert_eq!(*s.load::<i32>(&a).unwrap().unwrap().value(), 1);
        assert_eq!(*s.load::<String>(&b).unwrap().unwrap().value(), "already");
        // The failed key first; every other key saved (and loading) or not
        // saved (and not written).
        assert_eq!(err.not_saved[0], b, "{}", p.name);
        let saved: Vec<StashKey> = err.saved.iter().map(|r| r.key.clone()).collect();
        assert!(saved.contains(&a), "{}", p.name);
        assert_eq!(saved.len() + err.not_saved.len(), 3, "{}", p.name);
        assert_eq!(saved.contains(&c), s.load::<i32>(&c).unwrap().is_some(), "{}", p.name);
        assert_eq!(saved.contains(&c), !err.not_saved.contains(&c), "{}", p.name);
        if s.backend().is_none_or(|b| b.concurrent_puts() == 1) {
            // One put at a time, in order: nothing after the failed one.
            assert_eq!(err.saved.len(), 1, "{}", p.name);
            assert_eq!(err.not_saved, [b.clone(), c.clone()], "{}", p.name);
        }
    }
}

#[test]
fn namespaces_are_separate() {
    for p in places("namespaces") {
        let s = &p.store;
        let k = key("r");
        let journal = s.namespace("journal").unwrap();
        journal.save(&k, &"record").unwrap();
        assert!(s.load::<String>(&k).unwrap().is_none(), "{}", p.name);
        assert!(s.list().unwrap().is_empty(), "{}", p.name);
        assert_eq!(s.namespaces().unwrap(), ["journal"], "{}", p.name);
        assert_eq!(*journal.load::<String>(&k).unwrap().unwrap().value(), "record");
    }
}

#[test]
fn journal_operation_runs_on_every_backend() {
    use safestash::journal::{Expect, Operation, PartState};
    for p in places("journal") {
        let s = &p.store;
        let op = Operation::create(s, "reload", ["orders"]).unwrap();
        let g = op.view().unwrap().generation;
        let u = op.update("orders", Expect::Operation(g), PartState::Running).unwrap();
        let u =
            op.stash("orders", Expect::Part(u.part.generation), &vec!["row 1", "row 2"]).unwrap();
        assert!(u.part.stash.is_some(), "{}", p.name);
        // Another worker opens the operation and finds the snapshot.
        let again = Operation::open(s, "reload").unwrap();
        let back = again.load_stash::<Vec<String>>("orders").unwrap().expect("stashed");
        assert_eq!(back.value().len(), 2, "{}", p.name);
        let g = again.view().unwrap().generation;
        again.update("orders", Expect::Operation(g), PartState::Failed).unwrap();
        assert!(
            s.list().unwrap().is_empty(),
            "journal records stay in their namespace: {}",
            p.name
        );
        let mut restored = Vec::new();
        let report = again
            .rollback::<Vec<String>, _>(
                &mut |st: safestash::Stashed<Vec<String>>| -> Result<(), std::io::Error> {
                    restored = st.into_value();
                    Ok(())
                },
            )
            .unwrap();
        let _ = report;
        assert_eq!(restored, ["row 1", "row 2"], "{}", p.name);
    }
}

#[test]
fn urls_open_the_right_store() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    assert_eq!(Store::open_url(&url).unwrap().dir(), dir.path());
    assert!(Store::open_url("s3x://bucket/x").is_err());
    assert!(Store::open_url("file://relative/x").is_err());
    #[cfg(not(feature = "postgres"))]
    {
        let err = Store::open_url("postgresql://u:secret@db/x").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("feature `postgres`"), "{msg}");
        assert!(!msg.contains("secret"), "{msg}");
    }
    #[cfg(not(feature = "object-store"))]
    {
        let err = Store::open_url("s3://bucket/x").unwrap_err();
        assert!(err.to_string().contains("feature `object-store`"), "{err}");
    }
    #[cfg(feature = "object-store")]
    {
        for bad in ["s3://", "s3:///prefix", "memory:///x?lease=0s", "memory:///x?color=red"] {
            let err = Store::open_url(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidOption { field: "url", .. }), "{bad}: {err:?}");
        }
        let s = Store::open_url("memory:///a/b?lease=5s&lock_timeout=1s").unwrap();
        assert_eq!(s.dir().to_str().unwrap(), "memory:///a/b");
        assert_eq!(
            s.namespace("journal").unwrap().dir().to_str().unwrap(),
            "memory:///a/b/journal"
        );
    }
    #[cfg(feature = "postgres")]
    if let Some(url) = pgtest::url("urls") {
        let err = Store::open_url(&pgtest::with_namespace(&url, "bad'name")).unwrap_err();
        assert!(matches!(err, Error::InvalidOption { field: "url", .. }), "{err:?}");
        let s = Store::open_url(&url).unwrap();
        assert!(s.dir().to_str().unwrap().ends_with("?namespace=default"), "{:?}", s.dir());
    }
}
