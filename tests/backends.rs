//! One conformance suite, run on every backend (`safestash_testkit::conformance`):
//! the behaviour suite and the fault suite, on
//!
//! - the directory store (behaviour; damage done to its files), and the
//!   kit's fault wrapper over `Directory` (faults);
//! - the simulated remote of the test kit (behaviour; faults through its own
//!   protocol, paused lock holders included), and the kit's fault wrapper
//!   over it;
//! - with `--features postgres`, PostgreSQL when `SAFESTASH_TEST_POSTGRES_URL`
//!   is set (damage with an `UPDATE`; faults through the wrapper);
//! - with `--features object-store`, `object_store`'s `InMemory` always, and
//!   S3 (moto) and Azurite when `SAFESTASH_TEST_S3_URL` and
//!   `SAFESTASH_TEST_AZURE_URL` are set (damage with a raw PUT; faults through
//!   the wrapper).
//!
//! A missing server skips its part with a printed reason, and fails the
//! test under `CI=true`. The negative controls at the end show the fault
//! suite has teeth: deliberately broken protocols of the simulated remote
//! must fail it.

mod mytest;
#[cfg(feature = "object-store")]
mod objtest;
mod pgtest;

use std::sync::Arc;

use safestash::Store;
use safestash_testkit::conformance::{self, Damage, FaultSubject, Opened, Report, Rig, Subject};
use safestash_testkit::sim_remote::{Config, Protocol, SimRemote};

fn show(report: Report) {
    println!("conformance: {report}");
}

#[test]
fn directory_conforms() {
    show(conformance::run(&Subject::new("directory", || {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("stashes");
        let store = Store::open_url(root.to_str().unwrap()).unwrap();
        let damage = move |d: Damage<'_>| match d {
            Damage::Rewrite(k, f) => {
                let path = root.join(k.as_str());
                let mut bytes = std::fs::read(&path).unwrap();
                f(&mut bytes);
                std::fs::write(&path, bytes).unwrap();
            }
            Damage::Copy(a, b) => {
                std::fs::copy(root.join(a.as_str()), root.join(b.as_str())).unwrap();
            }
        };
        Opened::new(store).with_damage(damage).keeping(dir)
    })));
}

#[test]
fn fault_wrapper_over_the_directory_conforms() {
    show(conformance::run_faults(&FaultSubject::new("fault wrapper over the directory", || {
        let dir = tempfile::tempdir().unwrap();
        let backend = safestash::backend::Directory::open(dir.path().join("stashes")).unwrap();
        Rig::wrapping(Arc::new(backend)).keeping(dir)
    })));
}

fn sim_damage(sim: SimRemote) -> impl Fn(Damage<'_>) {
    move |d: Damage<'_>| match d {
        Damage::Rewrite(k, f) => {
            let mut bytes = sim.raw(k.as_str()).unwrap();
            f(&mut bytes);
            sim.raw_put(k.as_str(), bytes);
        }
        Damage::Copy(a, b) => sim.raw_put(b.as_str(), sim.raw(a.as_str()).unwrap()),
    }
}

#[test]
fn simulated_remote_conforms() {
    show(conformance::run(&Subject::new("simulated remote", || {
        let sim = SimRemote::new(1);
        let store = Store::with_backend(Arc::new(sim.clone()));
        Opened::new(store).with_damage(sim_damage(sim))
    })));
    show(conformance::run_faults(&FaultSubject::new("simulated remote", || {
        Rig::sim(SimRemote::new(2))
    })));
}

#[test]
fn fault_wrapper_over_the_simulated_remote_conforms() {
    // With nothing armed the wrapper passes every call through.
    show(conformance::run(&Subject::new("fault wrapper over the simulated remote", || {
        let sim = SimRemote::new(3);
        let faulty = safestash_testkit::faulty::Faulty::new(Arc::new(sim.clone()));
        Opened::new(Store::with_backend(Arc::new(faulty))).with_damage(sim_damage(sim))
    })));
    show(conformance::run_faults(&FaultSubject::new(
        "fault wrapper over the simulated remote",
        || {
            let sim = SimRemote::new(4);
            let pause = sim.clone();
            Rig::wrapping(Arc::new(sim)).with_pause(move || pause.expire_leases())
        },
    )));
}

#[cfg(feature = "postgres")]
#[test]
fn postgres_conforms() {
    use pgtest::lit;
    let Some(url) = pgtest::url("postgres_conforms") else { return };
    let open_url = url.clone();
    show(conformance::run(&Subject::new("postgres", move || {
        let ns = pgtest::fresh_namespace("conformance");
        let store = Store::open_url(&pgtest::with_namespace(&open_url, &ns)).unwrap();
        let (url, n) = (open_url.clone(), lit(&ns));
        let damage = move |d: Damage<'_>| {
            let sql = match d {
                Damage::Rewrite(k, f) => {
                    let hex = pgtest::psql(
                        &url,
                        &format!(
                            "SELECT encode(envelope, 'hex') FROM safestash_stashes \
                             WHERE namespace = {n} AND key = {}",
                            lit(k.as_str())
                        ),
                    );
                    let mut bytes: Vec<u8> = (0..hex.len())
                        .step_by(2)
                        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                        .collect();
                    f(&mut bytes);
                    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                    format!(
                        "UPDATE safestash_stashes SET envelope = decode('{hex}', 'hex') \
                         WHERE namespace = {n} AND key = {}",
                        lit(k.as_str())
                    )
                }
                Damage::Copy(a, b) => format!(
                    "INSERT INTO safestash_stashes (namespace, key, envelope, digest, size, created) \
                     SELECT namespace, {}, envelope, digest, size, created FROM safestash_stashes \
                     WHERE namespace = {n} AND key = {}",
                    lit(b.as_str()),
                    lit(a.as_str())
                ),
            };
            pgtest::psql(&url, &sql);
        };
        Opened::new(store).with_damage(damage)
    })));
    show(conformance::run_faults(&FaultSubject::new("fault wrapper over postgres", move || {
        let ns = pgtest::fresh_namespace("conformance-faults");
        let backend =
            safestash::backend::postgres::Postgres::connect(&pgtest::with_namespace(&url, &ns))
                .unwrap();
        // A paused holder, on PostgreSQL: its session is killed, which
        // releases its advisory lock to the next holder.
        let pause_url = url.clone();
        Rig::wrapping(Arc::new(backend)).with_pause(move || {
            pgtest::psql(
                &pause_url,
                "SELECT count(pg_terminate_backend(pid)) FROM pg_locks \
                 WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid() \
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            );
        })
    })));
}

#[cfg(not(feature = "postgres"))]
#[test]
fn postgres_conforms() {
    eprintln!("postgres_conforms: skipped: the PostgreSQL part needs --features postgres");
}

#[cfg(feature = "mysql")]
#[test]
fn mysql_conforms() {
    use mysql::prelude::Queryable;
    let Some(url) = mytest::url("mysql_conforms") else { return };
    let open_url = url.clone();
    show(conformance::run(&Subject::new("mysql", move || {
        let ns = mytest::fresh_namespace("conformance");
        let store = Store::open_url(&mytest::with_namespace(&open_url, &ns)).unwrap();
        let url = open_url.clone();
        // Read, change and write back the row's bytes with bound values.
        let damage = move |d: Damage<'_>| {
            let mut c = mytest::raw(&url);
            match d {
                Damage::Rewrite(k, f) => {
                    let mut bytes: Vec<u8> = c
                        .exec_first(
                            "SELECT envelope FROM safestash_stashes WHERE namespace = ? AND `key` = ?",
                            (&ns, k.as_str()),
                        )
                        .unwrap()
                        .expect("a row to damage");
                    f(&mut bytes);
                    c.exec_drop(
                        "UPDATE safestash_stashes SET envelope = ? WHERE namespace = ? AND `key` = ?",
                        (bytes, &ns, k.as_str()),
                    )
                    .unwrap();
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
        };
        Opened::new(store).with_damage(damage)
    })));
    show(conformance::run_faults(&FaultSubject::new("fault wrapper over mysql", move || {
        let ns = mytest::fresh_namespace("conformance-faults");
        let backend =
            safestash::backend::mysql::Mysql::connect(&mytest::with_namespace(&url, &ns)).unwrap();
        Rig::wrapping(Arc::new(backend))
    })));
}

#[cfg(not(feature = "mysql"))]
#[test]
fn mysql_conforms() {
    eprintln!("mysql_conforms: skipped: the MySQL part needs --features mysql");
}

/// Damage done with raw object store calls.
#[cfg(feature = "object-store")]
fn object_damage(raw: objtest::Raw) -> impl Fn(Damage<'_>) {
    move |d: Damage<'_>| match d {
        Damage::Rewrite(k, f) => {
            let mut bytes = raw.get(k.as_str()).unwrap();
            f(&mut bytes);
            raw.put(k.as_str(), bytes);
        }
        Damage::Copy(a, b) => {
            let bytes = raw.get(a.as_str()).unwrap();
            raw.put(b.as_str(), bytes);
        }
    }
}

#[cfg(feature = "object-store")]
fn in_memory() -> safestash::backend::object_store::ObjectStoreBackend {
    use safestash::backend::object_store::{ObjectStoreBackend, Options};
    let memory = Arc::new(object_store::memory::InMemory::new());
    ObjectStoreBackend::new(memory, "stashes", Options::default()).unwrap()
}

#[cfg(feature = "object-store")]
#[test]
fn in_memory_object_store_conforms() {
    show(conformance::run(&Subject::new("in-memory object store", || {
        let backend = in_memory();
        let raw = objtest::Raw::over(backend.object_store().clone(), backend.prefix().clone());
        Opened::new(Store::open_object_store(backend)).with_damage(object_damage(raw))
    })));
    show(conformance::run_faults(&FaultSubject::new(
        "fault wrapper over the in-memory object store",
        || Rig::wrapping(Arc::new(in_memory())),
    )));
}

#[cfg(feature = "object-store")]
#[test]
fn object_store_servers_conform() {
    use safestash::backend::object_store::ObjectStoreBackend;
    for (name, url) in objtest::urls("object_store_servers_conform") {
        // Each check on a prefix of its own in the same bucket.
        let base = url.rsplit_once('/').expect("a bucket URL with a prefix").0.to_owned();
        let fresh = move || format!("{base}/{}", objtest::fresh_prefix("conformance"));
        let fresh_too = fresh.clone();
        show(conformance::run(&Subject::new(name, move || {
            let url = fresh();
            Opened::new(Store::open_url(&url).unwrap())
                .with_damage(object_damage(objtest::Raw::open(&url)))
        })));
        show(conformance::run_faults(&FaultSubject::new(
            format!("fault wrapper over {name}"),
            move || Rig::wrapping(Arc::new(ObjectStoreBackend::open(&fresh_too()).unwrap())),
        )));
    }
}

#[cfg(not(feature = "object-store"))]
#[test]
fn object_store_servers_conform() {
    eprintln!(
        "object_store_servers_conform: skipped: the object storage part needs --features object-store"
    );
}

/// Negative controls: a remote protocol that deletes the key after an
/// ambiguous answer, one that acknowledges a write it dropped, and one
/// whose lock holders carry no fencing token must each fail the fault
/// suite, naming the check and what it saw.
#[test]
fn the_fault_suite_catches_broken_protocols() {
    for (protocol, check, saw) in [
        (
            Protocol::DeleteAfterAmbiguous,
            "a_lost_reply_on_a_save_leaves_the_new_stash",
            "loads as None, allowed [Some(\"v2\")]",
        ),
        (
            Protocol::AckDropped,
            "error_before_a_save_keeps_the_old_stash",
            "an acknowledged save: loads as Some(\"v1\"), allowed [Some(\"v2\")]",
        ),
        (
            Protocol::Unfenced,
            "a_paused_holder_cannot_write_over_a_newer_one",
            "a holder past its lease saved over the newer holder's stash",
        ),
    ] {
        let subject = FaultSubject::new(format!("{protocol:?}"), move || {
            Rig::sim(SimRemote::with(Config { protocol, ..Config::default() }))
        });
        let failure = conformance::check_faults(&subject).expect_err("a broken protocol passed");
        println!("negative control: {failure}");
        assert_eq!(failure.check, check, "{failure}");
        assert!(failure.message.contains(saw), "{failure}");
    }
    // The behaviour suite alone (no ambiguity) cannot tell them apart from
    // the correct protocol: the fault suite is what catches them.
    for protocol in [Protocol::DeleteAfterAmbiguous, Protocol::AckDropped, Protocol::Unfenced] {
        conformance::run(&Subject::new(format!("{protocol:?}"), move || {
            Opened::new(Store::with_backend(Arc::new(SimRemote::with(Config {
                protocol,
                ..Config::default()
            }))))
        }));
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
            assert!(
                matches!(err, safestash::Error::InvalidOption { field: "url", .. }),
                "{bad}: {err:?}"
            );
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
        assert!(matches!(err, safestash::Error::InvalidOption { field: "url", .. }), "{err:?}");
        let s = Store::open_url(&url).unwrap();
        assert!(s.dir().to_str().unwrap().ends_with("?namespace=default"), "{:?}", s.dir());
    }
}
