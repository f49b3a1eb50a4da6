//! How many requests each verb costs on object storage, counted at the
//! boundary by a wrapper `ObjectStore` over `InMemory`, through the public
//! API: a plain small save is one PUT, a create-if-absent one PUT where
//! nothing (or nothing but this store's own tombstone) is, a small load
//! one GET, a multipart stash's load two; and the reads a write skips
//! never cost a guarantee (a stale guess is refused by the service and
//! read again; a save that lands late never replaces a newer one).
#![cfg(feature = "object-store")]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use safestash::backend::object_store::{ObjectStoreBackend, Options};
use safestash::{Error, Precondition, SaveOptions, StashKey, Store};

/// Counts every request by kind, and can make one PUT land late: it
/// reports an error at once (a timeout) and lands, under its condition,
/// once released.
#[derive(Debug, Default)]
struct Counting {
    inner: InMemory,
    gets: AtomicUsize,
    /// Bytes of GET bodies, as read by the caller.
    got_bytes: Arc<AtomicUsize>,
    puts: AtomicUsize,
    /// PUTs in flight now, and the most at once; each PUT takes `put_delay`.
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    put_delay: Mutex<Option<std::time::Duration>>,
    other: AtomicUsize,
    /// Every PUT's mode, in order (`create`, `update`, `overwrite`).
    modes: Mutex<Vec<&'static str>>,
    /// The next PUT to this path is held back until `release`.
    late: Mutex<Option<Path>>,
    held: Mutex<Option<(Path, PutPayload, PutOptions)>>,
    landed: AtomicBool,
}

impl std::fmt::Display for Counting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

impl Counting {
    /// `(GETs, PUTs, other requests)` since the last call.
    fn take(&self) -> (usize, usize, usize) {
        self.modes.lock().unwrap().clear();
        (
            self.gets.swap(0, Ordering::SeqCst),
            self.puts.swap(0, Ordering::SeqCst),
            self.other.swap(0, Ordering::SeqCst),
        )
    }

    fn modes(&self) -> Vec<&'static str> {
        self.modes.lock().unwrap().clone()
    }

    /// Lands the held-back PUT now (the service still checks its condition).
    fn release(&self) {
        use futures_util::FutureExt;
        let (at, payload, opts) = self.held.lock().unwrap().take().expect("a held-back PUT");
        let landed = self.inner.put_opts(&at, payload, opts).now_or_never().unwrap();
        self.landed.store(landed.is_ok(), Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl ObjectStore for Counting {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.puts.fetch_add(1, Ordering::SeqCst);
        self.modes.lock().unwrap().push(match opts.mode {
            PutMode::Create => "create",
            PutMode::Update(_) => "update",
            PutMode::Overwrite => "overwrite",
        });
        let late = {
            let mut slot = self.late.lock().unwrap();
            let hit = slot.as_ref() == Some(location);
            if hit {
                *slot = None;
            }
            hit
        };
        let delay = *self.put_delay.lock().unwrap();
        if let Some(delay) = delay {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(delay).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        if late {
            *self.held.lock().unwrap() = Some((location.clone(), payload, opts));
            return Err(object_store::Error::Generic {
                store: "Counting",
                source: "timed out waiting for the reply (the request is still in flight)".into(),
            });
        }
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.other.fetch_add(1, Ordering::SeqCst);
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        let mut got = self.inner.get_opts(location, options).await?;
        #[allow(irrefutable_let_patterns)] // one variant unless `fs` is on
        if let object_store::GetResultPayload::Stream(stream) = got.payload {
            use futures_util::StreamExt;
            let count = self.got_bytes.clone();
            got.payload = object_store::GetResultPayload::Stream(
                stream
                    .inspect(move |chunk| {
                        if let Ok(b) = chunk {
                            count.fetch_add(b.len(), Ordering::SeqCst);
                        }
                    })
                    .boxed(),
            );
        }
        Ok(got)
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.other.fetch_add(1, Ordering::SeqCst);
        self.inner.delete_stream(locations)
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.other.fetch_add(1, Ordering::SeqCst);
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.other.fetch_add(1, Ordering::SeqCst);
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.other.fetch_add(1, Ordering::SeqCst);
        self.inner.copy_opts(from, to, options).await
    }
}

fn key(s: &str) -> StashKey {
    StashKey::new(s).unwrap()
}

/// A store over `counting`, saving over 64 KiB by multipart upload. Two
/// stores over one `Counting` are two workers sharing a bucket.
fn store(counting: &Arc<Counting>) -> Store {
    let opts = Options { multipart_threshold: 64 << 10, ..Options::default() };
    Store::open_object_store(ObjectStoreBackend::new(counting.clone(), "ns", opts).unwrap())
}

#[test]
fn a_small_save_is_one_put_and_a_small_load_one_get() {
    let counting = Arc::new(Counting::default());
    let store = store(&counting);
    let k = key("orders");
    let small = "x".repeat(1000);

    store.save(&k, &small).unwrap();
    assert_eq!(counting.take(), (0, 1, 0), "a first save of a small stash: one PUT");
    store.save(&k, &small).unwrap();
    assert_eq!(counting.take(), (0, 1, 0), "a save over this store's own stash: one PUT");
    assert_eq!(store.load::<String>(&k).unwrap().unwrap().into_value(), small);
    assert_eq!(counting.take(), (1, 0, 0), "a load of a small stash: one GET");
    store.save(&k, &"after the load").unwrap();
    assert_eq!(counting.take(), (0, 1, 0), "a save over a stash just loaded: one PUT");
    assert!(store.clear(&k).unwrap());
    assert_eq!(counting.take(), (0, 1, 0), "a clear of a stash this store saw: one PUT");
    // A create-if-absent over this store's own tombstone: one PUT.
    let opts = SaveOptions::new();
    store.save_if(&k, &1, &opts, Precondition::Absent).unwrap();
    assert_eq!(counting.take(), (0, 1, 0), "create-if-absent over a known tombstone");
    // Where nothing is: one create.
    store.save_if(&key("fresh"), &1, &opts, Precondition::Absent).unwrap();
    assert_eq!(counting.take(), (0, 1, 0), "create-if-absent where nothing is: one PUT");
    assert_eq!(store.load::<i32>(&key("fresh")).unwrap().unwrap().into_value(), 1);
}

#[test]
fn a_multipart_stash_loads_in_two_gets_and_saves_without_reading_the_key() {
    let counting = Arc::new(Counting::default());
    let store = store(&counting);
    let k = key("big");
    let big: Vec<u64> = (0..40_000).collect(); // about 230 KiB of JSON
    store.save(&k, &big).unwrap();
    let (gets, _, _) = counting.take();
    assert_eq!(gets, 0, "a multipart save reads nothing before its reference PUT");
    assert_eq!(store.load::<Vec<u64>>(&k).unwrap().unwrap().into_value(), big);
    assert_eq!(counting.take(), (2, 0, 0), "a multipart stash loads in two GETs");
}

/// Another worker's store has never seen the key: its create-if-absent
/// is tried first, refused, and only then is the key read (a tombstone
/// there is taken over; a stash there is `StashExists`, nothing written).
#[test]
fn create_if_absent_reads_only_when_refused() {
    let counting = Arc::new(Counting::default());
    let (a, b) = (store(&counting), store(&counting));
    let k = key("orders");
    let opts = SaveOptions::new();
    a.save(&k, &"a's").unwrap();
    counting.take();
    assert!(matches!(
        b.save_if(&k, &"b's", &opts, Precondition::Absent),
        Err(Error::StashExists { .. })
    ));
    assert_eq!(counting.modes(), ["create"], "tried as a create first, nothing else written");
    assert_eq!(counting.take(), (1, 1, 0), "one create, refused; one read to say what is there");
    assert_eq!(a.load::<String>(&k).unwrap().unwrap().into_value(), "a's");

    // `b` read the key: a stash there, as far as it knows, so it reads
    // first; a third worker that knows nothing tries a create first.
    assert!(a.clear(&k).unwrap());
    counting.take();
    b.save_if(&k, &"b's", &opts, Precondition::Absent).unwrap();
    assert_eq!(counting.modes(), ["update"], "over the tombstone it read");
    assert_eq!(counting.take(), (1, 1, 0));
    assert!(a.clear(&k).unwrap());
    counting.take();
    let c = store(&counting);
    c.save_if(&k, &"c's", &opts, Precondition::Absent).unwrap();
    assert_eq!(counting.modes(), ["create", "update"], "refused by the tombstone, then over it");
    assert_eq!(counting.take(), (1, 2, 0));
    assert_eq!(a.load::<String>(&k).unwrap().unwrap().into_value(), "c's");
}

/// A store's guess of what is at a key goes stale when another worker
/// writes it: the conditional PUT on the guess is refused by the service
/// and the key is read; conditions keep holding.
#[test]
fn a_stale_guess_is_refused_by_the_service_and_read_again() {
    let counting = Arc::new(Counting::default());
    let (a, b) = (store(&counting), store(&counting));
    let k = key("orders");
    let first = a.save(&k, &"a 1").unwrap();
    b.save(&k, &"b 1").unwrap();
    counting.take();
    // A plain save by `a`: its guess (its own first stash) is stale.
    a.save(&k, &"a 2").unwrap();
    assert_eq!(counting.modes(), ["update", "update"]);
    assert_eq!(counting.take(), (1, 2, 0));
    assert_eq!(b.load::<String>(&k).unwrap().unwrap().into_value(), "a 2");
    // `b` replaced `a`'s first stash: a save conditional on it is refused.
    b.save(&k, &"b 2").unwrap();
    let opts = SaveOptions::new();
    assert!(matches!(
        a.save_if(&k, &"a 3", &opts, Precondition::Unchanged(first.digest)),
        Err(Error::Replaced { .. })
    ));
    assert_eq!(b.load::<String>(&k).unwrap().unwrap().into_value(), "b 2");
    // And a clear conditional on a stash it no longer has removes nothing.
    assert!(!a.clear_if(&k, &first.digest).unwrap());
    assert_eq!(b.load::<String>(&k).unwrap().unwrap().into_value(), "b 2");
    // A clear by `a` whose guess is stale still clears what is there now.
    assert!(a.clear(&k).unwrap());
    assert!(b.load::<String>(&k).unwrap().is_none());
}

/// A plain save whose reply was lost (it timed out, the request still in
/// flight) and another worker's save acknowledged after it: when the first
/// one lands at last, the acknowledged save stays. One request a save is
/// no unconditional PUT.
#[test]
fn a_save_that_lands_late_never_replaces_a_newer_acknowledged_one() {
    let counting = Arc::new(Counting::default());
    let (a, b) = (store(&counting), store(&counting));
    let k = key("orders");
    a.save(&k, &"old").unwrap();
    b.load::<String>(&k).unwrap();
    *counting.late.lock().unwrap() = Some(Path::parse("ns/orders").unwrap());
    let lost = a.save(&k, &"late");
    assert!(lost.is_err(), "the reply was lost: the outcome is unknown, {lost:?}");
    b.save(&k, &"newer").unwrap();
    counting.release();
    assert!(!counting.landed.load(Ordering::SeqCst), "the late PUT must be refused");
    assert_eq!(a.load::<String>(&k).unwrap().unwrap().into_value(), "newer");
}

/// A load of a stash too large to read whole verifies and deserializes in
/// one pass: its bytes are read once (a reference and its data: two GETs),
/// and a damaged one is `Corrupt`, never a value, whether the damage still
/// parses or not.
#[test]
fn a_large_load_reads_its_bytes_once_and_hands_back_only_a_verified_value() {
    let counting = Arc::new(Counting::default());
    let store = store(&counting);
    let k = key("large");
    let value = "x".repeat(6 << 20);
    let envelope = store.save(&k, &value).unwrap().bytes as usize;
    counting.take();
    counting.got_bytes.store(0, Ordering::SeqCst);
    assert_eq!(store.load::<String>(&k).unwrap().unwrap().into_value(), value);
    let read = counting.got_bytes.load(Ordering::SeqCst);
    assert_eq!(counting.take().0, 2, "the reference, then the data");
    assert!(
        read <= envelope + 4096,
        "{read} bytes read for an envelope of {envelope}: read more than once"
    );

    // Damage in the data object: one byte of the payload, still a string.
    let raw = &counting.inner;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let data = rt.block_on(async {
        use futures_util::TryStreamExt;
        let all: Vec<ObjectMeta> =
            raw.list(Some(&Path::parse("ns/.data").unwrap())).try_collect().await.unwrap();
        all.into_iter().find(|m| m.location.as_ref().contains("large")).unwrap().location
    });
    let damage = |at: usize, byte: u8| {
        use object_store::ObjectStoreExt;
        let mut bytes =
            rt.block_on(async { raw.get(&data).await?.bytes().await }).unwrap().to_vec();
        bytes[at] = byte;
        rt.block_on(raw.put(&data, PutPayload::from(bytes))).unwrap();
    };
    damage(3 << 20, b'y');
    match store.load::<String>(&k) {
        Err(Error::Corrupt { .. }) => {}
        other => panic!("a damaged stash that still parses must be Corrupt: {other:?}"),
    }
    damage(3 << 20, b'"');
    match store.load::<String>(&k) {
        Err(Error::Corrupt { .. }) => {}
        other => panic!("a damaged stash that no longer parses must be Corrupt: {other:?}"),
    }
}

/// A batch's PUTs run concurrently, at most 8 at once; a failure stops
/// new ones from starting, and the error says exactly which stashes were
/// saved (each loads) and which were not (each still as before).
#[test]
fn a_batch_puts_concurrently_and_reports_what_it_saved() {
    let counting = Arc::new(Counting::default());
    let store = store(&counting);
    *counting.put_delay.lock().unwrap() = Some(std::time::Duration::from_millis(20));
    let keys: Vec<StashKey> = (0..40).map(|i| key(&format!("batch-{i:03}"))).collect();
    let opts = SaveOptions::new();
    let ones: Vec<String> = keys.iter().map(|k| format!("{k} 1")).collect();
    let twos: Vec<String> = keys.iter().map(|k| format!("{k} 2")).collect();
    let mut batch = store.batch();
    for (k, v) in keys.iter().zip(&ones) {
        batch.add(k, v, &opts).unwrap();
    }
    assert_eq!(batch.commit().unwrap().len(), 40);
    let most = counting.max_in_flight.load(Ordering::SeqCst);
    assert!((2..=8).contains(&most), "{most} PUTs in flight at most: want 2 to 8");
    for k in &keys {
        assert_eq!(store.load::<String>(k).unwrap().unwrap().into_value(), format!("{k} 1"));
    }

    // A create-if-absent of an existing stash in the middle fails the batch.
    let mut batch = store.batch();
    for (i, (k, v)) in keys.iter().zip(&twos).enumerate() {
        let expect = if i == 20 { Precondition::Absent } else { Precondition::Any };
        batch.add_if(k, v, &opts, expect).unwrap();
    }
    let failed = batch.commit().unwrap_err();
    assert!(matches!(failed.error, Error::StashExists { .. }), "{:?}", failed.error);
    assert_eq!(failed.not_saved[0], keys[20], "the failed key first");
    assert_eq!(failed.saved.len() + failed.not_saved.len(), 40);
    for r in &failed.saved {
        assert!(!failed.not_saved.contains(&r.key));
        assert_eq!(
            store.load::<String>(&r.key).unwrap().unwrap().into_value(),
            format!("{} 2", r.key)
        );
    }
    for k in &failed.not_saved {
        assert_eq!(store.load::<String>(k).unwrap().unwrap().into_value(), format!("{k} 1"));
    }
}
