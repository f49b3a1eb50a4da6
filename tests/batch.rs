//! Batched saves: each stash atomic on its own, all durable together, one
//! directory fsync; a power cut at every call leaves each key old or new and
//! every acknowledged one new. A batch that skips the directory fsync is
//! caught by the same check (the check has teeth).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use proptest::prelude::*;
use safestash::fs::Fs;
use safestash::sim::SimFs;
use safestash::{Error, Event, Precondition, SaveOptions, StashKey, Store, envelope};

fn key(i: usize) -> StashKey {
    StashKey::new(format!("k{i}")).unwrap()
}

fn load(store: &Store<SimFs>, k: &StashKey) -> Result<Option<String>, Error> {
    Ok(store.load::<String>(k)?.map(|s| s.into_value()))
}

/// A directory with old stashes for keys `0..old`.
fn setup(old: usize) -> SimFs {
    let sim = SimFs::new();
    let store = Store::with_fs("/s", sim.clone()).unwrap();
    for i in 0..old {
        store.save(&key(i), &format!("old {i}")).unwrap();
    }
    sim
}

#[allow(clippy::result_large_err)]
fn run_batch(
    store: &Store<SimFs>,
    n: usize,
) -> Result<Vec<safestash::Receipt>, safestash::BatchError> {
    let values: Vec<String> = (0..n).map(|i| format!("new {i}")).collect();
    let mut batch = store.batch();
    for (i, v) in values.iter().enumerate() {
        batch.add(&key(i), v, &SaveOptions::new()).unwrap();
    }
    batch.commit()
}

/// Checks one crash image: every key holds its old or new value (never a
/// mix, never corrupt, never lost when it had an old one), and every key
/// acknowledged is new. Returns the violations found.
fn check_image(image: SimFs, n: usize, old: usize, acked: &[StashKey]) -> Vec<String> {
    let store = Store::with_fs("/s", image).unwrap();
    let mut bad = Vec::new();
    for i in 0..n {
        let k = key(i);
        match load(&store, &k) {
            Ok(Some(v)) if v == format!("new {i}") => {}
            Ok(Some(v)) if v == format!("old {i}") && !acked.contains(&k) => {}
            Ok(None) if i >= old && !acked.contains(&k) => {}
            other => bad.push(format!("{k}: {other:?} (acknowledged: {})", acked.contains(&k))),
        }
    }
    bad
}

/// Every image of every power cut during a batch, plus the images after it
/// returned; returns (crash points, images, violations).
fn enumerate(
    n: usize,
    old: usize,
    batch: impl Fn(&Store<SimFs>) -> Vec<StashKey>,
) -> (u64, u64, Vec<String>) {
    let base = setup(old);
    // How many calls the whole batch makes.
    let total = {
        let fs = base.fork();
        let store = Store::with_fs("/s", fs.clone()).unwrap();
        let start = fs.calls();
        batch(&store);
        fs.calls() - start
    };
    let (mut points, mut images, mut bad) = (0, 0, Vec::new());
    for k in 0..=total {
        let fs = base.fork();
        let store = Store::with_fs("/s", fs.clone()).unwrap();
        fs.crash_after(fs.calls() + k);
        let acked = batch(&store);
        points += 1;
        let count = fs.crash_image_count();
        if count <= 64 {
            fs.for_each_crash_image(|image| {
                images += 1;
                bad.extend(check_image(image, n, old, &acked));
            });
        } else {
            for m in 0..64 {
                images += 1;
                bad.extend(check_image(fs.crash_image(m), n, old, &acked));
            }
        }
    }
    (points, images, bad)
}

fn library_batch(n: usize) -> impl Fn(&Store<SimFs>) -> Vec<StashKey> {
    move |store| match run_batch(store, n) {
        Ok(receipts) => receipts.into_iter().map(|r| r.key).collect(),
        Err(e) => e.saved.into_iter().map(|r| r.key).collect(),
    }
}

#[test]
fn a_power_cut_at_every_call_of_a_batch_leaves_each_key_old_or_new() {
    let (points, images, bad) = enumerate(4, 2, library_batch(4));
    println!("batch of 4 over 2 old stashes: {points} crash points, {images} images");
    assert!(points > 10);
    assert!(bad.is_empty(), "{} violations, first: {:?}", bad.len(), &bad[..bad.len().min(5)]);
}

/// The negative control: the same batch written by hand without the
/// directory fsync, acknowledged anyway. The same check must find lost
/// acknowledged stashes.
#[test]
fn a_batch_that_skips_the_directory_fsync_is_caught() {
    let no_dir_sync = |store: &Store<SimFs>| -> Vec<StashKey> {
        let fs = store.fs();
        let mut acked = Vec::new();
        let mut temps = Vec::new();
        for i in 0..4 {
            let k = key(i);
            let header =
                envelope::Header::new(k.clone(), "value", None, std::time::SystemTime::now())
                    .unwrap();
            let bytes = envelope::encode(&header, format!("\"new {i}\"").as_bytes());
            let Ok((mut file, tmp)) = fs.create_temp(Path::new("/s"), &format!(".{k}."), ".tmp")
            else {
                return acked;
            };
            if file.write_all(&bytes).is_err() || fs.sync_file(&mut file).is_err() {
                return acked;
            }
            temps.push((k, tmp));
        }
        for (k, tmp) in &temps {
            if fs.rename(tmp, &Path::new("/s").join(k.as_str())).is_err() {
                return acked;
            }
        }
        // Missing: fs.sync_dir("/s").
        acked.extend(temps.into_iter().map(|(k, _)| k));
        acked
    };
    let (_, _, bad) = enumerate(4, 2, no_dir_sync);
    println!("negative control (no directory fsync): {} violations", bad.len());
    assert!(!bad.is_empty(), "the check must catch a batch that skips the directory fsync");
}

#[test]
fn a_batch_syncs_the_directory_once_where_single_saves_sync_it_each_time() {
    let count_dir_syncs = |f: &dyn Fn(&Store<SimFs>)| {
        let sim = setup(0);
        let store = Store::with_fs("/s", sim.clone()).unwrap();
        store.save(&StashKey::new("warm").unwrap(), &0).unwrap(); // chain synced
        let before = sim.log().len();
        f(&store);
        sim.log()[before..].iter().filter(|c| c.op == "sync_dir").count()
    };
    let batch = count_dir_syncs(&|s| {
        run_batch(s, 10).unwrap();
    });
    let singles = count_dir_syncs(&|s| {
        for i in 0..10 {
            s.save(&key(i), &format!("new {i}")).unwrap();
        }
    });
    assert_eq!(batch, 1);
    assert_eq!(singles, 10);
}

#[test]
fn a_failed_write_leaves_every_old_stash_and_no_temp_file() {
    let base = setup(3);
    let total = {
        let fs = base.fork();
        let store = Store::with_fs("/s", fs.clone()).unwrap();
        let start = fs.calls();
        run_batch(&store, 3).unwrap();
        fs.calls() - start
    };
    for k in 1..=total {
        let fs = base.fork();
        let store = Store::with_fs("/s", fs.clone()).unwrap();
        fs.fail_at(fs.calls() + k, false);
        match run_batch(&store, 3) {
            Ok(_) => {
                for i in 0..3 {
                    assert_eq!(load(&store, &key(i)).unwrap().unwrap(), format!("new {i}"));
                }
            }
            Err(e) => {
                let saved: Vec<StashKey> = e.saved.iter().map(|r| r.key.clone()).collect();
                for i in 0..3 {
                    let v = load(&store, &key(i)).unwrap().unwrap();
                    if saved.contains(&key(i)) {
                        assert_eq!(v, format!("new {i}"), "call {k}");
                    } else {
                        assert!(
                            v == format!("old {i}") || v == format!("new {i}"),
                            "call {k}: {v}"
                        );
                    }
                }
                fs.clear_faults();
                let temps: Vec<String> =
                    fs.list("/s").into_iter().filter(|n| n.ends_with(".tmp")).collect();
                assert!(temps.is_empty(), "call {k} left {temps:?}");
            }
        }
    }
}

#[test]
fn preconditions_are_checked_per_stash_and_observers_run_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    store.observe("log", move |e| {
        if let Event::Saved(r) = e {
            log.lock().unwrap().push(r.key.to_string());
        }
        Ok(())
    });
    let first = store.save(&key(1), &"one").unwrap();
    let mut batch = store.batch();
    let (a, b) = ("a".to_owned(), "b".to_owned());
    batch.add_if(&key(0), &a, &SaveOptions::new(), Precondition::Absent).unwrap();
    batch.add_if(&key(1), &b, &SaveOptions::new(), Precondition::Unchanged(first.digest)).unwrap();
    let receipts = batch.commit().unwrap();
    assert_eq!(receipts.len(), 2);
    assert_eq!(*seen.lock().unwrap(), ["k1", "k0", "k1"]);
    // Now k0 exists: a create-only batch entry for it is refused, the others land.
    let mut batch = store.batch();
    let c = "c".to_owned();
    batch.add_if(&key(2), &c, &SaveOptions::new(), Precondition::Absent).unwrap();
    batch.add_if(&key(0), &c, &SaveOptions::new(), Precondition::Absent).unwrap();
    batch.add_if(&key(3), &c, &SaveOptions::new(), Precondition::Absent).unwrap();
    let err = batch.commit().unwrap_err();
    assert!(matches!(err.error, Error::StashExists { .. }));
    assert_eq!(err.saved.iter().map(|r| r.key.clone()).collect::<Vec<_>>(), [key(2)]);
    assert_eq!(err.not_saved, [key(0), key(3)]);
    assert_eq!(*store.load::<String>(&key(0)).unwrap().unwrap().value(), "a");
    assert!(store.load::<String>(&key(3)).unwrap().is_none());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Batches and single saves and clears, interleaved, against a BTreeMap.
    #[test]
    fn batches_match_a_model(ops in proptest::collection::vec(
        prop_oneof![
            (0usize..6, any::<u16>()).prop_map(|(k, v)| (0u8, vec![(k, v)])),
            (0usize..6).prop_map(|k| (1u8, vec![(k, 0)])),
            proptest::collection::vec((0usize..6, any::<u16>()), 0..6).prop_map(|b| (2u8, b)),
        ],
        1..20,
    )) {
        let sim = SimFs::new();
        let store = Store::with_fs("/s", sim).unwrap();
        let mut model: BTreeMap<usize, u16> = BTreeMap::new();
        for (op, items) in ops {
            match op {
                0 => {
                    let (k, v) = items[0];
                    store.save(&key(k), &v).unwrap();
                    model.insert(k, v);
                }
                1 => {
                    let k = items[0].0;
                    prop_assert_eq!(store.clear(&key(k)).unwrap(), model.remove(&k).is_some());
                }
                _ => {
                    let mut dedup: BTreeMap<usize, u16> = BTreeMap::new();
                    for (k, v) in &items {
                        dedup.entry(*k).or_insert(*v);
                    }
                    let mut batch = store.batch();
                    for (k, v) in &dedup {
                        batch.add(&key(*k), v, &SaveOptions::new()).unwrap();
                    }
                    let receipts = batch.commit().unwrap();
                    prop_assert_eq!(receipts.len(), dedup.len());
                    model.extend(dedup);
                }
            }
            for k in 0..6 {
                let got = store.load::<u16>(&key(k)).unwrap().map(|s| s.into_value());
                prop_assert_eq!(got, model.get(&k).copied());
            }
        }
    }
}
