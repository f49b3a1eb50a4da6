//! A stale lock holder never overwrites a newer holder's update.
//!
//! A journal operation is changed under its header's lock, and the change
//! writes two records: the part's, then the header. A holder that stops
//! (a long pause, a SIGSTOP) past its lease on object storage, or whose
//! lock session died on PostgreSQL (a restart, `pg_terminate_backend`),
//! and then resumes must not overwrite the part record that a newer holder
//! wrote meanwhile: every record is written through the held lock's
//! fencing, and only over the record that was read.
//!
//! The fault is injected at the boundary: a wrapper `ObjectStore` that
//! stops the first holder's requests (as a paused process would), and a TCP
//! proxy that holds the first holder's write to PostgreSQL while the test
//! kills its lock session. Object storage runs over `InMemory` always and
//! over the S3 server of `SAFESTASH_TEST_S3_URL` when set; PostgreSQL when
//! `SAFESTASH_TEST_POSTGRES_URL` is set (under `CI=true` a missing server
//! fails the test).

mod mytest;
#[cfg(feature = "object-store")]
mod objtest;
mod pgtest;
mod proxy;

use std::thread;

use safestash::Store;
use safestash::journal::{Change, Expect, Generation, JournalError, Operation, PartState};

const OP: &str = "reload";
const PART: &str = "orders";

/// What both holders do to the same part, from the same view.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Move the part to `running` (one write: the part's record).
    Update,
    /// Stash a snapshot for the running part (two writes: the stash, then
    /// the part's record naming it).
    Stash,
}

impl Step {
    /// Creates the operation, readies the part for this step, and returns
    /// the generation both holders will expect.
    fn prepare(self, store: &Store) -> Generation {
        let op = Operation::create(store, OP, [PART, "customers"]).unwrap();
        let seen = op.view().unwrap().generation;
        match self {
            Step::Update => seen,
            Step::Stash => {
                op.update(PART, Expect::Operation(seen), PartState::Running).unwrap().generation
            }
        }
    }

    /// The step as `who` makes it.
    fn run(self, store: &Store, seen: Generation, who: &str) -> Result<(), JournalError> {
        let op = Operation::open(store, OP)?;
        let expect = Expect::Operation(seen);
        match self {
            Step::Update => op.update(PART, expect, Change::to(PartState::Running).note(who)),
            Step::Stash => op.stash(PART, expect, &who),
        }
        .map(drop)
    }

    /// The stale holder's step failed, and the newer holder's is the one
    /// the part keeps: its update in the history, or its snapshot.
    fn assert_newer_kept(self, store: &Store, stale: Result<(), JournalError>, place: &str) {
        let err = stale.expect_err("the stale holder's step was acknowledged");
        println!("{place}: stale holder's {self:?} refused: {err}");
        let op = Operation::open(store, OP).unwrap();
        let part = op.view().unwrap().part(PART).unwrap().unwrap().clone();
        assert_eq!(part.state, PartState::Running, "{place}");
        let notes: Vec<&str> = part.history.iter().filter_map(|t| t.note.as_deref()).collect();
        match self {
            Step::Update => {
                assert_eq!(notes, ["newer holder"], "{place}: the part's history is {notes:?}");
                assert_eq!(part.updates, 1, "{place}: the stale update overwrote the newer one");
            }
            Step::Stash => {
                let stash = op.load_stash::<String>(PART);
                let snapshot = stash.map(|s| s.map(|s| s.into_value()));
                assert!(
                    matches!(&snapshot, Ok(Some(s)) if s == "newer holder"),
                    "{place}: the newer holder's snapshot is gone: {snapshot:?}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Object storage: a holder paused past its lease
// ---------------------------------------------------------------------------

#[cfg(feature = "object-store")]
mod paused {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use futures_util::stream::BoxStream;
    use object_store::path::Path;
    use object_store::{
        CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
        PutMultipartOptions, PutOptions, PutPayload, PutResult,
    };

    /// An `ObjectStore` through which one process's requests go: once a
    /// PUT to a path containing `trigger` comes, the process stops for
    /// `pause` (that PUT, and every other request, including the lease's
    /// renewals, waits), then goes on as if nothing happened.
    #[derive(Debug)]
    pub struct Paused {
        pub inner: Arc<dyn ObjectStore>,
        pub trigger: Mutex<Option<(String, Duration)>>,
        pub until: Mutex<Option<Instant>>,
    }

    impl Paused {
        pub fn new(inner: Arc<dyn ObjectStore>) -> Paused {
            Paused { inner, trigger: Mutex::new(None), until: Mutex::new(None) }
        }

        /// Stops the process at the next PUT whose path contains `what`.
        pub fn arm(&self, what: &str, pause: Duration) {
            *self.trigger.lock().unwrap() = Some((what.to_owned(), pause));
        }

        /// Whether the pause has begun.
        pub fn paused(&self) -> bool {
            self.until.lock().unwrap().is_some()
        }

        fn stop_if_paused(&self) {
            let until = *self.until.lock().unwrap();
            if let Some(until) = until {
                std::thread::sleep(until.saturating_duration_since(Instant::now()));
            }
        }

        fn trip(&self, location: &Path) {
            let mut trigger = self.trigger.lock().unwrap();
            if let Some((what, pause)) = trigger.as_ref() {
                if location.as_ref().contains(what.as_str()) {
                    *self.until.lock().unwrap() = Some(Instant::now() + *pause);
                    *trigger = None;
                }
            }
        }
    }

    impl std::fmt::Display for Paused {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "Paused({})", self.inner)
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for Paused {
        async fn put_opts(
            &self,
            location: &Path,
            payload: PutPayload,
            opts: PutOptions,
        ) -> object_store::Result<PutResult> {
            self.trip(location);
            self.stop_if_paused();
            self.inner.put_opts(location, payload, opts).await
        }
        async fn put_multipart_opts(
            &self,
            location: &Path,
            opts: PutMultipartOptions,
        ) -> object_store::Result<Box<dyn MultipartUpload>> {
            self.stop_if_paused();
            self.inner.put_multipart_opts(location, opts).await
        }
        async fn get_opts(
            &self,
            location: &Path,
            options: GetOptions,
        ) -> object_store::Result<GetResult> {
            self.stop_if_paused();
            self.inner.get_opts(location, options).await
        }
        fn delete_stream(
            &self,
            locations: BoxStream<'static, object_store::Result<Path>>,
        ) -> BoxStream<'static, object_store::Result<Path>> {
            self.stop_if_paused();
            self.inner.delete_stream(locations)
        }
        fn list(
            &self,
            prefix: Option<&Path>,
        ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
            self.stop_if_paused();
            self.inner.list(prefix)
        }
        async fn list_with_delimiter(
            &self,
            prefix: Option<&Path>,
        ) -> object_store::Result<ListResult> {
            self.stop_if_paused();
            self.inner.list_with_delimiter(prefix).await
        }
        async fn copy_opts(
            &self,
            from: &Path,
            to: &Path,
            options: CopyOptions,
        ) -> object_store::Result<()> {
            self.stop_if_paused();
            self.inner.copy_opts(from, to, options).await
        }
    }
}

/// Two holders of one operation on one object store: the first stops at
/// its step's first write past its lease; the second takes the lock and
/// makes the same step on the same part; the first resumes.
#[cfg(feature = "object-store")]
fn paused_holder_on(
    place: &str,
    inner: std::sync::Arc<dyn object_store::ObjectStore>,
    ns: &str,
    step: Step,
) {
    use std::sync::Arc;

    use safestash::backend::object_store::{ObjectStoreBackend, Options};

    use std::time::Duration;

    let lease = Duration::from_secs(1);
    let opts = || Options { lease, ..Options::default() };
    let paused = Arc::new(paused::Paused::new(inner.clone()));
    let stale_store =
        Store::open_object_store(ObjectStoreBackend::new(paused.clone(), ns, opts()).unwrap());
    let store = Store::open_object_store(ObjectStoreBackend::new(inner, ns, opts()).unwrap());
    let seen = step.prepare(&store);

    paused.arm(if let Step::Stash = step { ".stash." } else { ".part." }, 3 * lease);
    let stale = thread::spawn(move || step.run(&stale_store, seen, "stale holder"));
    while !paused.paused() {
        thread::sleep(Duration::from_millis(10));
    }
    // The stale holder's lease runs out while it is stopped; the newer
    // holder waits for it, then takes the lock and makes its step.
    step.run(&store, seen, "newer holder").unwrap();
    let stale = stale.join().unwrap();
    step.assert_newer_kept(&store, stale, place);
}

#[cfg(feature = "object-store")]
#[test]
fn a_holder_paused_past_its_lease_never_overwrites_a_newer_part_record() {
    let s3 = objtest::url("fencing").map(|url| objtest::Raw::open(&url));
    for step in [Step::Update, Step::Stash] {
        let memory: std::sync::Arc<dyn object_store::ObjectStore> =
            std::sync::Arc::new(object_store::memory::InMemory::new());
        paused_holder_on("in-memory", memory, "fenced", step);
        if let Some(raw) = &s3 {
            let ns = format!("{}/{step:?}", raw.prefix);
            paused_holder_on("s3", raw.store.clone(), &ns, step);
        }
    }
}

// ---------------------------------------------------------------------------
// PostgreSQL: a holder whose lock session was killed
// ---------------------------------------------------------------------------

#[test]
fn a_holder_whose_lock_session_died_never_overwrites_a_newer_part_record() {
    if !cfg!(feature = "postgres") {
        eprintln!("the PostgreSQL part needs --features postgres");
        return;
    }
    let Some(url) = pgtest::url("fencing") else { return };
    for step in [Step::Update, Step::Stash] {
        killed_session_on(&url, step);
    }
}

/// Two holders of one operation on PostgreSQL: the first is held by a
/// proxy at its step's first write while its lock session is killed; the
/// second takes the lock and makes the same step on the same part; the
/// first resumes.
fn killed_session_on(url: &str, step: Step) {
    let ns = pgtest::fresh_namespace("fencing");
    let store = Store::open_url(&pgtest::with_namespace(url, &ns)).unwrap();
    // The stale holder reaches the server through the proxy.
    let authority = url.split('@').nth(1).unwrap().split('/').next().unwrap().to_owned();
    let proxy = proxy::Proxy::start(&authority);
    let proxied = proxy.url(url, &authority);
    let stale_store = Store::open_url(&pgtest::with_namespace(&proxied, &ns)).unwrap();
    let seen = step.prepare(&store);

    // Held at the start of the stale holder's first write transaction
    // (the part record's), before it takes any lock of its own.
    proxy.arm(b"synchronous_commit");
    let stale = thread::spawn(move || step.run(&stale_store, seen, "stale holder"));
    proxy.wait_holding();
    // The stale holder's lock session dies (a restart, an operator's
    // pg_terminate_backend); its advisory lock goes with it.
    // The session whose advisory lock is the operation's (the header
    // key's: `op.reload` in the namespace `journal`).
    let killed = pgtest::psql(
        url,
        &format!(
            "WITH h AS (SELECT pg_catalog.hashtextextended({}, 0) AS v) \
             SELECT count(pg_catalog.pg_terminate_backend(pid)) FROM \
             (SELECT DISTINCT l.pid FROM pg_catalog.pg_locks l, h WHERE l.locktype = 'advisory' \
              AND l.granted AND l.classid::int8 = (h.v >> 32) & 4294967295 \
              AND l.objid::int8 = h.v & 4294967295) s",
            pgtest::lit(&format!("{ns}/journal/op.{OP}"))
        ),
    );
    assert_eq!(killed, "1", "one holder of the operation's lock");
    step.run(&store, seen, "newer holder").unwrap();
    proxy.release();
    let stale = stale.join().unwrap();
    step.assert_newer_kept(&store, stale, "postgres");
}

// ---------------------------------------------------------------------------
// MySQL/MariaDB: a holder whose lock connection was killed
// ---------------------------------------------------------------------------

#[test]
fn a_mysql_holder_whose_lock_connection_died_never_overwrites_a_newer_part_record() {
    #[cfg(not(feature = "mysql"))]
    eprintln!("the MySQL part needs --features mysql");
    #[cfg(feature = "mysql")]
    {
        let Some(url) = mytest::url("fencing") else { return };
        for step in [Step::Update, Step::Stash] {
            killed_mysql_connection_on(&url, step);
        }
    }
}

/// The `GET_LOCK` name of a key, as documented in `backend::mysql`: the
/// first 54 hex digits of sha256(database NUL namespace NUL key).
#[cfg(feature = "mysql")]
fn mysql_lock_name(db: &str, ns: &str, key: &str) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    for (i, part) in [db, ns, key].into_iter().enumerate() {
        if i > 0 {
            h.update([0u8]);
        }
        h.update(part.as_bytes());
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("safestash:{}", &hex[..54])
}

/// As [`killed_session_on`], on MySQL: the stale holder is held by the
/// proxy at the start of its first write transaction while the connection
/// holding its named lock is killed (`KILL`).
#[cfg(feature = "mysql")]
fn killed_mysql_connection_on(url: &str, step: Step) {
    use mysql::prelude::Queryable;
    let ns = mytest::fresh_namespace("fencing");
    let store = Store::open_url(&mytest::with_namespace(url, &ns)).unwrap();
    let authority = mytest::host_port(url);
    let proxy = proxy::Proxy::start(&authority);
    let proxied = mytest::via_port(url, proxy.port);
    let stale_store = Store::open_url(&mytest::with_namespace(&proxied, &ns)).unwrap();
    let seen = step.prepare(&store);

    proxy.arm(b"START TRANSACTION");
    let stale = thread::spawn(move || step.run(&stale_store, seen, "stale holder"));
    proxy.wait_holding();
    let mut raw = mytest::raw(url);
    let db: String = raw.query_first("SELECT DATABASE()").unwrap().unwrap();
    let name = mysql_lock_name(&db, &format!("{ns}/journal"), &format!("op.{OP}"));
    let holder: Option<u64> =
        raw.exec_first("SELECT IS_USED_LOCK(?)", (name.as_str(),)).unwrap().flatten();
    let holder = holder.expect("the stale holder holds the operation's lock");
    raw.query_drop(format!("KILL {holder}")).unwrap();
    step.run(&store, seen, "newer holder").unwrap();
    proxy.release();
    let stale = stale.join().unwrap();
    step.assert_newer_kept(&store, stale, "mysql");
}
