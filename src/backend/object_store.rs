//! The object storage backend (feature `object-store`): stashes in S3,
//! Google Cloud Storage, Azure Blob Storage or memory, on the
//! [`object_store`] crate, shared by workers on any host.
//!
//! Open it through [`Store::open_url`](crate::Store::open_url) with
//! `s3://BUCKET/PREFIX`, `gs://BUCKET/PREFIX`, `az://CONTAINER/PREFIX` or
//! `memory:///PREFIX` (a private in-memory store, for tests), configured
//! the way `object_store` users expect: each builder's `from_env()`
//! (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_REGION`, `AWS_ALLOW_HTTP`, `GOOGLE_SERVICE_ACCOUNT`,
//! `AZURE_STORAGE_ACCOUNT_NAME` and friends), then the URL. Code that
//! builds its own store hands it to [`ObjectStoreBackend::new`] and
//! [`Store::open_object_store`](crate::Store::open_object_store). Two
//! parameters of the URL are this backend's own and are removed before the
//! URL reaches the builder:
//!
//! - `lease=DURATION` (`humantime` syntax, default `30s`): how long a lock
//!   lives without renewal (see *Locks* below);
//! - `lock_timeout=DURATION` (default `60s`): how long [`Store::lock`](crate::Store::lock)
//!   waits for another holder before [`Error::Locked`];
//! - `timeout=DURATION` (default `30s`, [`Options::timeout`]): the bound on
//!   each call to the service, connecting and the client's retries
//!   included, and on each chunk of a body or a listing; past it the call
//!   fails with [`Error::Backend`] naming the operation, its source saying
//!   it timed out (the outcome of a write is then unknown, see below);
//! - `gc_grace=DURATION` (default `1h`, [`Options::gc_grace`]): how old an
//!   unreferenced data object must be before cleanup removes it.
//!
//! The API stays synchronous: every call runs to completion on a tokio
//! runtime the backend owns (two worker threads), or on one the caller
//! hands in ([`Options::runtime`]). Do not call a store on this backend
//! from inside an async task: blocking there would stall that runtime (and
//! tokio refuses it outright when it is the backend's own runtime).
//!
//! # Layout
//!
//! Under the namespace's prefix `P` (the URL's path; a child namespace `ns`
//! is the prefix `P/ns`):
//!
//! - `P/KEY`: the stash, byte for byte the v1 envelope of a stash file; or a
//!   *reference* (below) for a stash saved by multipart upload; or a
//!   *tombstone* (`SAFESTASH-TOMBSTONE v1`, a newline, a unique id and a
//!   newline), which every reader treats as absent. An empty object is
//!   damage ([`Error::Corrupt`]), never absence (tombstones written before
//!   this format were empty: they now read as damage);
//! - `P/.KEY.quarantined.STAMP`: a quarantined stash;
//! - `P/.data/KEY.UUID`: the envelope of a large stash, uploaded by
//!   multipart, named by the reference at `P/KEY`;
//! - `P/.locks/KEY`: the key's lease.
//!
//! Names starting with `.` are never keys or namespaces, so none of these
//! collide. The store encodes and verifies envelopes exactly as for a file:
//! damage in the bucket is [`Error::Corrupt`] on load and in `verify`.
//!
//! # Conditions: one conditional PUT
//!
//! Every change is a PUT conditional on what is at the key:
//! `PutMode::Create` (`If-None-Match: *`) where nothing is, `PutMode::Update`
//! (`If-Match: ETAG`) on the object there. The service checks the condition
//! atomically with the write, so there is no window: `Precondition::Unchanged(d)`
//! replaces only the object whose digest was `d` and is still there;
//! `Precondition::Absent` creates only where there is nothing or a tombstone;
//! a change that loses a race is refused (or, for `Precondition::Any`, read
//! again and retried); and a PUT that lands late (a reply lost, a request
//! still in flight) is refused once anything else was written there, so it
//! never replaces a newer acknowledged save. The service must honour
//! `If-Match` and `If-None-Match` on PUT (AWS S3 does since 2024, as do GCS
//! and Azure through `object_store`, and moto).
//!
//! What the condition names comes, where it can, from what this process
//! last read or wrote at the key (its ETag, and whether that was a stash
//! with a given digest or a tombstone), so a change needs no read first:
//!
//! - a plain save is one PUT: on the ETag this process last saw there, or
//!   a create when it knows nothing of the key;
//! - a create-if-absent is one PUT: a create, or an update of the tombstone
//!   this process last saw there;
//! - a conditional save or clear is one PUT when the stash this process
//!   last saw there has the expected digest; a clear is one PUT over a
//!   stash it last saw.
//!
//! Otherwise, and whenever the service refuses such a PUT (the key changed
//! since), the key is read (a ranged GET of its first 4 KiB, which is all
//! of a reference, a tombstone or a small stash; for a larger stash a
//! second ranged GET of its 112-byte trailer, on the same ETag) and the
//! decision is made on what is there now. No refusal and no "nothing to
//! clear" is ever decided on a remembered state, only on a read. The locked
//! key of a held lock is always read first (see *Locks*). A small load is
//! one GET; a multipart stash's, two (the reference, then the data).
//!
//! # Clear: a conditional tombstone
//!
//! `object_store` has no conditional DELETE. A clear (conditional or not)
//! therefore *replaces* the stash with a tombstone under `If-Match` on
//! the ETag it read, and every reader, `list` and `Precondition::Absent` treat
//! a tombstone as absent. A stash another writer saved after the check
//! changes the ETag, so the tombstone is refused and that stash stays:
//! there is no window. The cost is one small object per cleared key, left in
//! the bucket (and reused by the key's next save). Tombstones are never
//! deleted by this backend, because deleting one unconditionally could
//! delete a stash written over it in between.
//!
//! # Large stashes: multipart upload, then a conditional reference
//!
//! [`Backend::put_with`] buffers up to [`Options::multipart_threshold`]
//! (8 MiB by default) and then switches to a multipart upload with bounded
//! memory (parts of 8 MiB, two in flight). A multipart upload cannot carry
//! a condition in `object_store`, so it goes to a fresh object
//! `P/.data/KEY.UUID` that nothing names yet; once it completed, a small
//! *reference* (`SAFESTASH-REF v1`, the data object's name and length, then
//! a copy of the envelope's 112-byte trailer) is written at `P/KEY` by the
//! same conditional PUT as any save. Readers see the old stash until that
//! PUT, and the whole new one after it: a client killed at any point leaves
//! the old stash or the new one. What a killed upload can leave behind is an
//! incomplete multipart upload or an orphaned `.data/` object, never visible
//! as a stash.
//!
//! A data object is never deleted when a reference might name it, now or
//! later: the data of a replaced or cleared reference stays, and
//! [`Store::cleanup`](crate::Store::cleanup) (`safestash gc URL`) removes
//! the data objects that neither a key nor a quarantined copy names once
//! they are older than [`Options::gc_grace`]. A save writes its reference
//! within half of that grace after its upload began (or fails, leaving the
//! data to cleanup), so a reference never lands naming a collected object.
//! A reference whose data object is missing is [`Error::Corrupt`]. Cleanup
//! does not remove incomplete multipart uploads: `object_store` 0.14 cannot
//! list them. The backend aborts its own upload when it fails with a clear
//! answer; set the bucket's lifecycle rule "abort incomplete multipart
//! uploads after N days" for the rest.
//!
//! # Ambiguous answers
//!
//! `object_store` retries a request that met a 5xx or a timeout,
//! conditional PUTs included, so a 412 or 409 can answer the request's own
//! earlier landing, an error can come back for a PUT that was applied (or
//! that lands later), and S3's `409 ConditionalRequestConflict` on a create
//! (reported as `AlreadyExists`) can mean nothing landed. After any such
//! answer the writer reads the key again: its own write (recognised by the
//! envelope's digest, the reference's data name, or the tombstone's unique
//! id) is done; a conflict with nothing of its own there is decided on what
//! is there now (so `StashExists` only when a stash is); any other error is
//! returned, and nothing is deleted on its strength.
//!
//! # Quarantine: copy, then a conditional tombstone
//!
//! `move_aside` reads the key's ETag, reads the object conditionally on it
//! (so the copy is exactly that version), creates the copy at the aside
//! name, and tombstones the key under `If-Match` on that ETag. When the
//! tombstone's answer is not a plain success, the key is read again: its
//! own tombstone there means done; a newer stash there that verifies means
//! a save won, and the copy is removed again; anything else (no answer,
//! damage, another tombstone) leaves the copy aside, and the error says so.
//!
//! # Locks: leases on conditional writes
//!
//! Object storage has no locks, and the journal and the tenant reconciler
//! serialise on [`Store::lock`](crate::Store::lock), so this backend gives
//! *leases*: `P/.locks/KEY` holds a holder id and an expiry. Taking the
//! lock creates it with `PutMode::Create`, or takes over a released or
//! expired lease with `PutMode::Update` on the ETag read (two contenders:
//! one wins). A thread renews the lease every third of its duration with
//! `PutMode::Update` on the ETag it last wrote; dropping the lock releases
//! it the same way. A SIGKILLed holder's lease expires after `lease`, and
//! the next taker takes it over.
//!
//! Limits, and the fencing that covers them:
//!
//! - Expiry is judged by the taker's clock against the expiry the holder
//!   wrote with its own clock: hosts' clocks must agree to well within the
//!   lease (NTP does).
//! - A holder paused longer than its lease (a stopped process, a long GC
//!   pause) has lost the lock without knowing. Every change made through the
//!   lock ([`Held::backend`]) is fenced twice: it is refused when the lease
//!   was not renewed within nine tenths of its duration (counted from when
//!   its take or last renewal was sent, not from the reply), or when renewal
//!   found it taken over; and a change to the locked key itself is
//!   conditional on the ETag the holder last saw or wrote there, so once a
//!   new holder has written the key, a stale holder's write is refused by
//!   the service. Changes to *other* keys made by a lock holder (the
//!   journal writes its part records that way) are covered by the first
//!   check only: a holder paused between that check and its PUT can still
//!   land one write after its lease expired.
//! - A lease excludes other lock takers; a plain `save` by a worker that does
//!   not take the lock is not held back by it (its write is still one atomic
//!   conditional PUT).
//!
//! # Durability, atomicity, size
//!
//! - A save is one PUT (or a completed multipart upload plus one PUT):
//!   readers see the old envelope or the new one. It returns `Ok` once the
//!   service acknowledged it; that is the service's durability promise (S3:
//!   stored redundantly before the 200), not an fsync this host can check.
//! - A reply lost in transit is resolved by reading the key back (see
//!   *Ambiguous answers*); when that read cannot tell, the error stands and
//!   the outcome is unknown: the key holds the old stash or the new one.
//! - Size: a single PUT up to the threshold, multipart beyond (S3 allows up
//!   to 10,000 parts of 8 MiB here, so about 78 GiB).
//!
//! # Examples
//!
//! ```
//! use std::sync::Arc;
//! use safestash::backend::object_store::{ObjectStoreBackend, Options};
//!
//! let memory = Arc::new(object_store::memory::InMemory::new());
//! let backend = ObjectStoreBackend::new(memory, "stashes", Options::default())?;
//! let store = safestash::Store::open_object_store(backend);
//! let key = safestash::StashKey::new("orders")?;
//! store.save(&key, &vec![1, 2, 3])?;
//! assert_eq!(store.load::<Vec<i32>>(&key)?.unwrap().into_value(), [1, 2, 3]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Cursor, Read, Write};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::ClientConfigKey;
use object_store::path::Path;
use object_store::{
    GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    UpdateVersion, WriteMultipart,
};

use super::{Backend, Fetched, Fill, Held, Listed, Outcome, Precondition};
use crate::digest::Digest;
use crate::envelope::{TRAILER_LEN, recorded_digest};
use crate::error::{Corruption, Error, Result};
use crate::key::StashKey;
use live::{Live, Remake, Runtime};

#[path = "object_store_gc.rs"]
mod gc;
#[path = "object_store_live.rs"]
mod live;
#[path = "object_store_timeout.rs"]
mod timeout;

/// The first line of a reference to a multipart-uploaded envelope.
const REF_MAGIC: &[u8] = b"SAFESTASH-REF v1\n";

/// The first line of a tombstone, the object a clear leaves at a key; a
/// unique id follows, so that a writer recognises its own (and no two
/// tombstones share an ETag).
const TOMBSTONE_MAGIC: &[u8] = b"SAFESTASH-TOMBSTONE v1\n";

/// A new tombstone.
fn tombstone() -> Bytes {
    let mut mark = TOMBSTONE_MAGIC.to_vec();
    mark.extend_from_slice(uuid::Uuid::new_v4().simple().to_string().as_bytes());
    mark.push(b'\n');
    Bytes::from(mark)
}

fn is_tombstone(bytes: &[u8]) -> bool {
    bytes.starts_with(TOMBSTONE_MAGIC)
}

/// Objects at most this long are read whole when the current state of a
/// key is read: every reference and tombstone is shorter.
const SMALL: u64 = 4096;

/// Part size of a multipart upload.
const PART_SIZE: usize = 8 << 20;

/// Parts in flight at once during a multipart upload.
const PARTS_IN_FLIGHT: usize = 2;

/// How many PUTs of one batch are in flight at once.
const BATCH_PUTS: usize = 8;

/// How many times a change that lost a race to a concurrent writer reads
/// again and retries (only where its condition allows: `Any`, or `Absent`
/// over a tombstone).
const RETRIES: usize = 8;

/// How a backend is set up; [`Default`] gives the documented defaults.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// let opts = safestash::backend::object_store::Options {
///     lease: Duration::from_secs(10),
///     ..Default::default()
/// };
/// assert_eq!(opts.lock_timeout, Duration::from_secs(60));
/// ```
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a lock's lease lives without renewal (default 30 s).
    pub lease: Duration,
    /// How long a waiting lock gives up after (default 60 s).
    pub lock_timeout: Duration,
    /// Envelopes larger than this are saved by multipart upload through
    /// [`Backend::put_with`] (default 8 MiB).
    pub multipart_threshold: usize,
    /// A runtime to run `object_store` on; `None` (the default): the backend
    /// starts its own, with two worker threads.
    pub runtime: Option<tokio::runtime::Handle>,
    /// The location for messages (a URL without secrets); `None`: made from
    /// the store's name and the prefix.
    pub location: Option<String>,
    /// The bound on each call to the store (default 30 s), the client's
    /// connecting and retries included, and on each chunk of a body or a
    /// listing: past it the call fails with [`Error::Backend`] saying it
    /// timed out. A runtime handed in ([`Options::runtime`]) must have its
    /// time driver enabled (`enable_time`).
    pub timeout: Duration,
    /// How old an unreferenced data object must be before
    /// [`Store::cleanup`](crate::Store::cleanup) removes it (default 1
    /// hour). A multipart save writes its reference within half of it after
    /// its upload started, or fails: so a data object a reference is about
    /// to name is never old enough to be removed.
    pub gc_grace: Duration,
}

/// The default of [`Options::timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The default of [`Options::gc_grace`].
pub const DEFAULT_GC_GRACE: Duration = Duration::from_secs(3600);

impl Default for Options {
    fn default() -> Options {
        Options {
            lease: Duration::from_secs(30),
            lock_timeout: Duration::from_secs(60),
            multipart_threshold: 8 << 20,
            runtime: None,
            location: None,
            timeout: DEFAULT_TIMEOUT,
            gc_grace: DEFAULT_GC_GRACE,
        }
    }
}

/// What a backend and its children share.
struct Shared {
    /// This process's client and runtime (see [`live`]).
    live: std::sync::RwLock<Arc<Live>>,
    /// How a forked child makes its own.
    remake: Remake,
    /// The bound on each call (see [`Options::timeout`]).
    timeout: Duration,
    gc_grace: Duration,
    /// `s3://bucket`, no trailing slash.
    base: String,
    lease: Duration,
    lock_timeout: Duration,
    threshold: usize,
    /// What this process last read or wrote at each key (by full path), at
    /// most [`KNOWN_MAX`] of them: a guess that lets a write go out
    /// without reading the key first. A guess is only ever the condition
    /// of a conditional PUT (`If-Match` on its ETag, `If-None-Match: *`
    /// when nothing is known), so a stale one is refused by the service,
    /// and the key is then read; no decision (a refusal, "nothing to
    /// clear") is ever made on a guess.
    known: Mutex<HashMap<String, Current>>,
}

impl Shared {
    /// This process's client and runtime: made anew, once, in a forked
    /// child ([`crate::fork`]), the parent's abandoned untouched.
    fn live(&self) -> Arc<Live> {
        let now = crate::fork::generation();
        {
            let live = self.live.read().unwrap_or_else(PoisonError::into_inner);
            if live.generation() == now {
                return live.clone();
            }
        }
        let mut live = self.live.write().unwrap_or_else(PoisonError::into_inner);
        if live.generation() != now {
            match Live::remade(&live, &self.remake, self.timeout) {
                Ok(fresh) => *live = Arc::new(fresh),
                // The client cannot be configured again (the environment
                // changed?): every call of this process says why.
                Err(e) => {
                    tracing::warn!(error = %e, "object store client not remade after a fork");
                    let never = Live::remade(&live, &Remake::Never, self.timeout);
                    if let Ok(fresh) = never {
                        *live = Arc::new(fresh);
                    }
                }
            }
        }
        live.clone()
    }

    /// This process's client, every call bounded by the timeout.
    fn store(&self) -> Arc<dyn ObjectStore> {
        self.live().store().clone()
    }

    fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.live().block_on(f)
    }
}

/// How many keys' states [`Shared::known`] keeps; past it, it starts over.
const KNOWN_MAX: usize = 4096;

/// One namespace (a prefix) of an object store. See the [module docs](self).
pub struct ObjectStoreBackend {
    shared: Arc<Shared>,
    prefix: Path,
    location: String,
    /// The lease of a held lock: changes made through it are fenced.
    fence: Option<Arc<Lease>>,
}

impl fmt::Debug for ObjectStoreBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectStoreBackend")
            .field("location", &self.location)
            .field("fenced", &self.fence.is_some())
            .finish()
    }
}

fn url_error(url: &str, rule: &'static str) -> Error {
    Error::InvalidOption { field: "url", value: url.to_owned(), rule }
}

/// What is at a key now (or, in [`Shared::known`], what was there when
/// this process last read or wrote it).
#[derive(Clone)]
enum Current {
    Absent,
    /// A tombstone, and its bytes.
    Tombstone(UpdateVersion, Bytes),
    Stash {
        version: UpdateVersion,
        digest: Option<Digest>,
        /// The data object a reference names.
        data: Option<String>,
    },
}

impl Current {
    /// What `mine` leaves at a key, landed as `version`.
    fn landed(mine: &Mine<'_>, version: UpdateVersion) -> Current {
        match mine {
            Mine::Envelope(d) => Current::Stash { version, digest: Some(*d), data: None },
            Mine::Reference(data, digest) => {
                Current::Stash { version, digest: *digest, data: Some((*data).to_owned()) }
            }
            Mine::Tombstone(m) => Current::Tombstone(version, Bytes::copy_from_slice(m)),
        }
    }

    fn version(&self) -> Option<&UpdateVersion> {
        match self {
            Current::Absent => None,
            Current::Tombstone(v, _) | Current::Stash { version: v, .. } => Some(v),
        }
    }

    fn digest(&self) -> Option<Digest> {
        match self {
            Current::Stash { digest, .. } => *digest,
            _ => None,
        }
    }

    /// Whether this is what `mine` wrote: a writer whose answer was lost,
    /// or whose retry met its own earlier landing, recognises it.
    fn is(&self, mine: &Mine<'_>) -> bool {
        match (self, mine) {
            (Current::Tombstone(_, bytes), Mine::Tombstone(m)) => bytes.as_ref() == *m,
            (Current::Stash { data: Some(d), .. }, Mine::Reference(m, _)) => d == m,
            (Current::Stash { data: None, digest, .. }, Mine::Envelope(m)) => *digest == Some(*m),
            _ => false,
        }
    }
}

/// What a write puts at a key, as its writer recognises it when read back.
enum Mine<'a> {
    /// An envelope with this digest.
    Envelope(Digest),
    /// A reference naming this data object (and the envelope's digest,
    /// from its trailer).
    Reference(&'a str, Option<Digest>),
    /// This tombstone.
    Tombstone(&'a [u8]),
}

/// A quarantine that could not finish: the copy aside stays.
#[derive(Debug)]
struct KeptAside {
    aside: String,
    source: object_store::Error,
}

impl fmt::Display for KeptAside {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the key could not be cleared (the answer may have been lost); \
             the copy set aside at `{}` stays",
            self.aside
        )
    }
}

impl std::error::Error for KeptAside {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// A parsed reference: the data object's name (under `.data/`) and length.
struct Reference {
    data: String,
    len: u64,
}

fn parse_reference(bytes: &[u8]) -> Option<Reference> {
    let rest = bytes.strip_prefix(REF_MAGIC)?;
    let json_end = rest.iter().position(|&b| b == b'\n')?;
    let value: serde_json::Value = serde_json::from_slice(&rest[..json_end]).ok()?;
    let data = value.get("data")?.as_str()?.to_owned();
    let len = value.get("len")?.as_u64()?;
    if data.is_empty() || data.contains('/') || rest.len() != json_end + 1 + TRAILER_LEN {
        return None;
    }
    Some(Reference { data, len })
}

fn make_reference(data: &str, len: u64, trailer: &[u8]) -> Vec<u8> {
    let mut out = REF_MAGIC.to_vec();
    out.extend_from_slice(serde_json::json!({ "data": data, "len": len }).to_string().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(trailer);
    out
}

/// The digest recorded in the trailer at the end of `bytes`.
fn trailer_digest(bytes: &[u8]) -> Option<Digest> {
    bytes.len().checked_sub(TRAILER_LEN).and_then(|at| recorded_digest(&bytes[at..]))
}

fn is_conflict(e: &object_store::Error) -> bool {
    matches!(
        e,
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }
    )
}

/// The source of an [`Error::Backend`] for a failed request: the
/// service's error, or the timeout itself when the request got no answer
/// in time (not wrapped in `object_store`'s generic error, which would say
/// it twice).
pub(crate) fn service_error(e: object_store::Error) -> crate::error::BoxError {
    match e {
        object_store::Error::Generic { source, .. } if source.is::<timeout::TimedOut>() => source,
        e => e.into(),
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl ObjectStoreBackend {
    /// Opens the namespace a URL names (see the [module docs](self)); the
    /// store is built with its builder's `from_env()`, then the URL.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOption`] for a malformed URL or parameter or an
    /// unsupported scheme; [`Error::Backend`] when the builder refuses its
    /// configuration (no network call is made here).
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::backend::{Backend, object_store::ObjectStoreBackend};
    /// let backend = ObjectStoreBackend::open("memory:///tests?lease=5s")?;
    /// assert_eq!(backend.location(), "memory:///tests");
    /// # Ok::<(), safestash::Error>(())
    /// ```
    pub fn open(url: &str) -> Result<ObjectStoreBackend> {
        let (base_url, query) = url.split_once('?').unwrap_or((url, ""));
        let mut opts = Options::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let duration = || {
                humantime::parse_duration(value).ok().filter(|d| !d.is_zero()).ok_or_else(|| {
                    url_error(
                        url,
                        "lease, lock_timeout, timeout and gc_grace are durations such as 30s",
                    )
                })
            };
            match name {
                "lease" => opts.lease = duration()?,
                "lock_timeout" => opts.lock_timeout = duration()?,
                "timeout" => opts.timeout = duration()?,
                "gc_grace" => opts.gc_grace = duration()?,
                _ => {
                    return Err(url_error(
                        url,
                        "the parameters of an object store URL are lease, lock_timeout, \
                         timeout and gc_grace",
                    ));
                }
            }
        }
        let (scheme, rest) = base_url
            .split_once("://")
            .ok_or_else(|| url_error(url, "an object store URL is SCHEME://BUCKET/PREFIX"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_matches('/');
        if scheme != "memory" && bucket.is_empty() {
            return Err(url_error(
                url,
                "an object store URL names its bucket: SCHEME://BUCKET/PREFIX",
            ));
        }
        let bucket_url = format!("{scheme}://{bucket}");
        if !matches!(scheme, "s3" | "s3a" | "gs" | "az" | "abfs" | "abfss" | "memory") {
            return Err(url_error(
                url,
                "supported object store schemes: s3://, gs://, az://, memory://",
            ));
        }
        // The client, from the environment and the URL: again in a forked
        // child, whose parent's client it must not use.
        let in_memory = scheme == "memory";
        let (scheme, target, bucket) = (scheme.to_owned(), base_url.to_owned(), bucket_url.clone());
        let configure = move || -> Result<Arc<dyn ObjectStore>> {
            let built = |e: object_store::Error| Error::Backend {
                op: "configure",
                target: target.clone(),
                source: e.into(),
            };
            Ok(match scheme.as_str() {
                "s3" | "s3a" => Arc::new(
                    stream_timeouts(
                        "AWS",
                        object_store::aws::AmazonS3Builder::from_env(),
                        |b, k, v| b.with_config(object_store::aws::AmazonS3ConfigKey::Client(k), v),
                    )
                    .with_url(bucket.clone())
                    .build()
                    .map_err(built)?,
                ),
                "gs" => Arc::new(
                    stream_timeouts(
                        "GOOGLE",
                        object_store::gcp::GoogleCloudStorageBuilder::from_env(),
                        |b, k, v| b.with_config(object_store::gcp::GoogleConfigKey::Client(k), v),
                    )
                    .with_url(bucket.clone())
                    .build()
                    .map_err(built)?,
                ),
                "az" | "abfs" | "abfss" => Arc::new(
                    stream_timeouts(
                        "AZURE",
                        object_store::azure::MicrosoftAzureBuilder::from_env(),
                        |b, k, v| b.with_config(object_store::azure::AzureConfigKey::Client(k), v),
                    )
                    .with_url(bucket.clone())
                    .build()
                    .map_err(built)?,
                ),
                _ => Arc::new(object_store::memory::InMemory::new()),
            })
        };
        let store = configure()?;
        // An in-memory store does no I/O: a child keeps its copy.
        let remake = if in_memory { Remake::Same } else { Remake::Build(Box::new(configure)) };
        opts.location = Some(bucket_url);
        ObjectStoreBackend::build(store, prefix, opts, remake)
    }

    /// A backend over `store`, in the namespace `prefix` (`""` for the
    /// store's root; segments separated by `/`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOption`] for a prefix `object_store` rejects, or a
    /// zero lease; [`Error::Backend`] when the runtime cannot start.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use safestash::backend::{Backend, object_store::{ObjectStoreBackend, Options}};
    /// let memory = Arc::new(object_store::memory::InMemory::new());
    /// let backend = ObjectStoreBackend::new(memory, "team/stashes", Options::default())?;
    /// assert!(backend.location().ends_with("team/stashes"));
    /// # Ok::<(), safestash::Error>(())
    /// ```
    pub fn new(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        opts: Options,
    ) -> Result<ObjectStoreBackend> {
        ObjectStoreBackend::build(store, prefix, opts, Remake::Never)
    }

    /// [`new`](Self::new), with how a forked child makes its own client.
    fn build(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        opts: Options,
        remake: Remake,
    ) -> Result<ObjectStoreBackend> {
        let prefix_path =
            Path::parse(prefix.trim_matches('/')).map_err(|_| Error::InvalidOption {
                field: "prefix",
                value: prefix.to_owned(),
                rule: "an object store prefix is /-separated segments, none empty, `.` or `..`",
            })?;
        if opts.lease.is_zero() {
            return Err(Error::InvalidOption {
                field: "lease",
                value: "0s".into(),
                rule: "a lease lasts longer than zero",
            });
        }
        let rt = match opts.runtime {
            Some(h) => Runtime::Handed(h),
            None => Runtime::owned(&store.to_string())?,
        };
        if opts.timeout.is_zero() {
            return Err(Error::InvalidOption {
                field: "timeout",
                value: "0s".into(),
                rule: "a timeout lasts longer than zero",
            });
        }
        let base = opts.location.unwrap_or_else(|| store.to_string());
        let shared = Arc::new(Shared {
            live: std::sync::RwLock::new(Arc::new(Live::new(store, rt, opts.timeout))),
            remake,
            timeout: opts.timeout,
            gc_grace: opts.gc_grace,
            base,
            lease: opts.lease,
            lock_timeout: opts.lock_timeout,
            threshold: opts.multipart_threshold.max(1),
            known: Mutex::new(HashMap::new()),
        });
        Ok(ObjectStoreBackend::at(shared, prefix_path, None))
    }

    fn at(shared: Arc<Shared>, prefix: Path, fence: Option<Arc<Lease>>) -> ObjectStoreBackend {
        let location = if prefix.as_ref().is_empty() {
            shared.base.clone()
        } else {
            format!("{}/{}", shared.base, prefix)
        };
        ObjectStoreBackend { shared, prefix, location, fence }
    }

    /// The object store underneath.
    ///
    /// # Examples
    ///
    /// ```
    /// let backend = safestash::backend::object_store::ObjectStoreBackend::open("memory:///x")?;
    /// println!("{}", backend.object_store());
    /// # Ok::<(), safestash::Error>(())
    /// ```
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.shared.live().raw().clone()
    }

    /// The namespace's prefix in the store.
    ///
    /// # Examples
    ///
    /// ```
    /// let backend = safestash::backend::object_store::ObjectStoreBackend::open("memory:///a/b")?;
    /// assert_eq!(backend.prefix().as_ref(), "a/b");
    /// # Ok::<(), safestash::Error>(())
    /// ```
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    fn target(&self, name: Option<&str>) -> String {
        match name {
            Some(n) => format!("{}/{n}", self.location),
            None => self.location.clone(),
        }
    }

    fn fail<'a>(
        &'a self,
        op: &'static str,
        name: &'a str,
    ) -> impl FnOnce(object_store::Error) -> Error + 'a {
        move |e| Error::Backend { op, target: self.target(Some(name)), source: service_error(e) }
    }

    fn path(&self, name: &str) -> Path {
        self.prefix.clone().join(name)
    }

    fn data_path(&self, data: &str) -> Path {
        self.prefix.clone().join(".data").join(data)
    }

    fn lock_path(&self, key: &StashKey) -> Path {
        self.prefix.clone().join(".locks").join(key.as_str())
    }

    fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.shared.block_on(f)
    }

    /// What this process last saw at `name`, if anything.
    fn known(&self, name: &str) -> Option<Current> {
        let known = self.shared.known.lock().unwrap_or_else(PoisonError::into_inner);
        known.get(self.path(name).as_ref()).cloned()
    }

    /// Keeps `state` as what is at `name` now (`None`: nothing known).
    fn remember(&self, name: &str, state: Option<Current>) {
        let mut known = self.shared.known.lock().unwrap_or_else(PoisonError::into_inner);
        let path = self.path(name).to_string();
        match state {
            Some(Current::Absent) | None => {
                known.remove(&path);
            }
            Some(state) => {
                if known.len() >= KNOWN_MAX && !known.contains_key(&path) {
                    known.clear();
                }
                known.insert(path, state);
            }
        }
    }

    /// What a write to `name` under `cond` may assume is there without
    /// reading it: the state this process last saw, when the write's
    /// condition holds on it, or nothing (a create: `If-None-Match: *`)
    /// for a save to a key it knows nothing of. `None`: read first.
    ///
    /// The write is conditional on the guess, so a wrong guess costs a
    /// refused PUT and a read, never a guarantee.
    fn guess(&self, name: &str, cond: Precondition, tombstone: bool) -> Option<Current> {
        if self.fenced_version(name).is_some() {
            // The locked key: the holder's own view decides (see `write`).
            return None;
        }
        let known = self.known(name);
        match (cond, known, tombstone) {
            (Precondition::Any | Precondition::Absent, None, false) => Some(Current::Absent),
            (Precondition::Any, Some(c), false) => Some(c),
            (Precondition::Absent, Some(c @ Current::Tombstone(..)), false) => Some(c),
            (Precondition::Any, Some(c @ Current::Stash { .. }), true) => Some(c),
            (Precondition::Unchanged(d), Some(c @ Current::Stash { .. }), _)
                if c.digest() == Some(d) =>
            {
                Some(c)
            }
            _ => None,
        }
    }

    /// The state of `name` now, read (see [`read_current`](Self::read_current)),
    /// and remembered.
    async fn current(&self, name: &str, op: &'static str) -> Result<Current> {
        let state = self.read_current(name, op).await?;
        self.remember(name, Some(state.clone()));
        Ok(state)
    }

    /// The state of `name` now: one ranged GET of its first 4 KiB, which is
    /// all of a small object (every reference and tombstone is small); for a
    /// large one, a second ranged GET of its trailer, on the same ETag.
    async fn read_current(&self, name: &str, op: &'static str) -> Result<Current> {
        let path = self.path(name);
        for _ in 0..RETRIES {
            // The first 4 KiB: all of a small object, and the size of any.
            let head =
                GetOptions { range: Some(GetRange::Bounded(0..SMALL)), ..Default::default() };
            let got = match self.shared.store().get_opts(&path, head).await {
                Ok(got) => got,
                Err(object_store::Error::NotFound { .. }) => return Ok(Current::Absent),
                // An empty object has no byte range to give (416): read it whole.
                Err(_) => match self.shared.store().get(&path).await {
                    Ok(got) => got,
                    Err(object_store::Error::NotFound { .. }) => return Ok(Current::Absent),
                    Err(e) => return Err(self.fail(op, name)(e)),
                },
            };
            let version = UpdateVersion::from_meta(&got.meta);
            let size = got.meta.size;
            if size == 0 {
                // Damage (an envelope truncated to nothing), not absence.
                return Ok(Current::Stash { version, digest: None, data: None });
            }
            if size <= SMALL {
                let whole = got.bytes().await.map_err(self.fail(op, name))?;
                if is_tombstone(&whole) {
                    return Ok(Current::Tombstone(version, whole));
                }
                let data = parse_reference(&whole).map(|r| r.data);
                let digest = trailer_digest(&whole);
                return Ok(Current::Stash { version, digest, data });
            }
            drop(got);
            let opts = GetOptions {
                range: Some(GetRange::Offset(size - TRAILER_LEN as u64)),
                if_match: version.e_tag.clone(),
                version: version.version.clone(),
                ..Default::default()
            };
            let tail = match self.shared.store().get_opts(&path, opts).await {
                Ok(got) => got.bytes().await.map_err(self.fail(op, name))?,
                // Replaced or removed in between: read again.
                Err(
                    object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. },
                ) => continue,
                Err(e) => return Err(self.fail(op, name)(e)),
            };
            return Ok(Current::Stash { version, digest: trailer_digest(&tail), data: None });
        }
        Err(Error::Backend {
            op,
            target: self.target(Some(name)),
            source: "it kept changing while being read".into(),
        })
    }

    /// Refuses a change made through a lock whose lease is gone.
    fn check_fence(&self, op: &'static str, name: &str) -> Result<()> {
        match &self.fence {
            Some(lease) => lease.check().map_err(|why| Error::Backend {
                op,
                target: self.target(Some(name)),
                source: why.into(),
            }),
            None => Ok(()),
        }
    }

    /// Whether `name` is the locked key of this (fenced) backend, and the
    /// version its holder last saw there.
    fn fenced_version(&self, name: &str) -> Option<Option<UpdateVersion>> {
        let lease = self.fence.as_ref()?;
        (lease.key.as_str() == name).then(|| lease.state().key_version.clone())
    }

    fn record_version(&self, name: &str, version: Option<UpdateVersion>) {
        if let Some(lease) = &self.fence {
            if lease.key.as_str() == name {
                lease.state().key_version = version;
            }
        }
    }

    /// Writes `payload` at `name` if `cond` holds, by a conditional PUT on
    /// what is there: on what this process last saw there when that is
    /// enough for `cond` (see [`guess`](Self::guess)): one request; else,
    /// or once the service refused the guess, on what a read finds. `mine`
    /// is how the writer recognises its own write when it reads the key
    /// back. A reference's `deadline`: it is not
    /// written (again) after it (see [`Options::gc_grace`]).
    ///
    /// Nothing is deleted here after an ambiguous answer: the data object
    /// of a reference goes only when its write was refused before any PUT
    /// was sent (so no PUT naming it can land later). The data objects of
    /// replaced references are left to [`Backend::cleanup`].
    fn write(
        &self,
        op: &'static str,
        name: &str,
        payload: PutPayload,
        cond: Precondition,
        mine: Mine<'_>,
        deadline: Option<Instant>,
    ) -> Result<Outcome> {
        let mut sent = false;
        let out =
            self.block_on(self.write_async(op, name, payload, cond, &mine, deadline, &mut sent));
        if let (Ok(Outcome::Refused { .. }), false, Mine::Reference(data, _)) = (&out, sent, &mine)
        {
            // A failure here only leaves an orphan behind, for cleanup.
            let _ = self.block_on(self.shared.store().delete(&self.data_path(data)));
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    async fn write_async(
        &self,
        op: &'static str,
        name: &str,
        payload: PutPayload,
        cond: Precondition,
        mine: &Mine<'_>,
        deadline: Option<Instant>,
        sent: &mut bool,
    ) -> Result<Outcome> {
        let tombstone = matches!(mine, Mine::Tombstone(_));
        let mut guess = self.guess(name, cond, tombstone);
        for _ in 0..RETRIES {
            let guessed = guess.is_some();
            let current = match guess.take() {
                Some(guessed) => guessed,
                None => {
                    let current = self.current(name, op).await?;
                    // A PUT of ours whose answer was a conflict may have
                    // been our own write, met by object_store's retry: then
                    // it is done.
                    if *sent && current.is(mine) {
                        self.record_version(name, current.version().cloned());
                        return Ok(Outcome::Done);
                    }
                    current
                }
            };
            self.check_fence(op, name)?;
            if let Some(seen) = self.fenced_version(name) {
                if seen.as_ref() != current.version() {
                    return Err(Error::Backend {
                        op,
                        target: self.target(Some(name)),
                        source: "the stash changed since this lock's holder last saw it: \
                                 the lock's lease was lost and another holder wrote it"
                            .into(),
                    });
                }
            }
            let stash = matches!(current, Current::Stash { .. });
            let refused = match cond {
                Precondition::Any => false,
                Precondition::Absent => stash,
                Precondition::Unchanged(d) => current.digest() != Some(d) || !stash,
            };
            let nothing_to_clear = tombstone && !stash;
            if guessed && (refused || nothing_to_clear) {
                // Never decided on a guess: read.
                continue;
            }
            if nothing_to_clear && !matches!(cond, Precondition::Unchanged(_)) {
                return Ok(if refused {
                    Outcome::Refused { current: None }
                } else {
                    Outcome::Missing
                });
            }
            if refused {
                return Ok(Outcome::Refused { current: current.digest() });
            }
            if deadline.is_some_and(|d| Instant::now() > d) {
                return Err(Error::Backend {
                    op,
                    target: self.target(Some(name)),
                    source: "the upload took longer than half of the store's gc_grace, so its \
                             data object may be collected: its reference is not written (the \
                             data is left for cleanup)"
                        .into(),
                });
            }
            let mode = match current.version() {
                None => PutMode::Create,
                Some(v) => PutMode::Update(v.clone()),
            };
            let opts = PutOptions { mode, ..Default::default() };
            *sent = true;
            match self.shared.store().put_opts(&self.path(name), payload.clone(), opts).await {
                Ok(put) => {
                    let version = UpdateVersion::from(put);
                    self.remember(name, Some(Current::landed(mine, version.clone())));
                    self.record_version(name, Some(version));
                    return Ok(Outcome::Done);
                }
                Err(e) if is_conflict(&e) => {
                    // Our own earlier landing, a concurrent writer, or (S3's
                    // 409 ConditionalRequestConflict) nothing at all: the
                    // next read decides.
                    if self.fenced_version(name).is_some() {
                        let now = self.current(name, op).await?;
                        if now.is(mine) {
                            self.record_version(name, now.version().cloned());
                            return Ok(Outcome::Done);
                        }
                        return Err(Error::Backend {
                            op,
                            target: self.target(Some(name)),
                            source: "another writer changed the locked stash: the lock's lease \
                                     was lost (fenced by the service's condition)"
                                .into(),
                        });
                    }
                }
                Err(e) => {
                    // Ambiguous: the PUT may have landed, or may still land.
                    // Done if it is seen to have; otherwise the error stands
                    // (and nothing is deleted on its strength).
                    if let Ok(now) = self.current(name, op).await {
                        if now.is(mine) {
                            self.record_version(name, now.version().cloned());
                            return Ok(Outcome::Done);
                        }
                    }
                    return Err(self.fail(op, name)(e));
                }
            }
        }
        Err(Error::Backend {
            op,
            target: self.target(Some(name)),
            source: format!(
                "other writers changed it {RETRIES} times in a row; not retried further"
            )
            .into(),
        })
    }

    /// `name`'s object as a reader, following a reference; `None` for
    /// nothing or a tombstone.
    fn fetch(&self, name: &str, op: &'static str) -> Result<Option<Fetched>> {
        // A reference replaced (and its data deleted) between reading it and
        // reading its data is read again.
        for _ in 0..RETRIES {
            let got = match self.block_on(self.shared.store().get(&self.path(name))) {
                Ok(got) => got,
                Err(object_store::Error::NotFound { .. }) => {
                    self.remember(name, None);
                    return Ok(None);
                }
                Err(e) => return Err(self.fail(op, name)(e)),
            };
            let size = got.meta.size;
            let version = UpdateVersion::from_meta(&got.meta);
            // What is there, for the next write's guess (see `guess`).
            let seen =
                |digest, data| Some(Current::Stash { version: version.clone(), digest, data });
            if size == 0 {
                // Damage: the store finds no envelope in it.
                self.remember(name, seen(None, None));
                return Ok(Some(Fetched { len: 0, reader: Box::new(io::empty()) }));
            }
            if size > SMALL {
                self.remember(name, seen(None, None));
                return Ok(Some(Fetched {
                    len: size,
                    reader: Box::new(self.reader(got.into_stream())),
                }));
            }
            let bytes = self.block_on(got.bytes()).map_err(self.fail(op, name))?;
            if is_tombstone(&bytes) {
                self.remember(name, Some(Current::Tombstone(version, bytes)));
                return Ok(None);
            }
            let reference = parse_reference(&bytes);
            let data = reference.as_ref().map(|r| r.data.clone());
            self.remember(name, seen(trailer_digest(&bytes), data));
            let Some(reference) = reference else {
                return Ok(Some(Fetched {
                    len: bytes.len() as u64,
                    reader: Box::new(Cursor::new(bytes)),
                }));
            };
            match self.block_on(self.shared.store().get(&self.data_path(&reference.data))) {
                Ok(data) => {
                    return Ok(Some(Fetched {
                        len: data.meta.size,
                        reader: Box::new(self.reader(data.into_stream())),
                    }));
                }
                Err(object_store::Error::NotFound { .. }) => {
                    // Still this reference at the key: its data is gone,
                    // which is damage. Replaced since: read again.
                    let same = GetOptions {
                        if_match: version.e_tag.clone(),
                        version: version.version.clone(),
                        head: true,
                        ..Default::default()
                    };
                    match self.block_on(self.shared.store().get_opts(&self.path(name), same)) {
                        Ok(_) => {
                            return Err(Error::Corrupt {
                                path: self.target(Some(name)).into(),
                                reason: Corruption::MissingData(format!(
                                    ".data/{}",
                                    reference.data
                                )),
                            });
                        }
                        Err(
                            object_store::Error::Precondition { .. }
                            | object_store::Error::NotFound { .. },
                        ) => continue,
                        Err(e) => return Err(self.fail(op, name)(e)),
                    }
                }
                Err(e) => return Err(self.fail(op, name)(e)),
            }
        }
        Err(Error::Backend {
            op,
            target: self.target(Some(name)),
            source: "it kept changing while being read".into(),
        })
    }

    /// Whether `key` holds an intact envelope for it now (read whole).
    fn verified_at(&self, key: &StashKey) -> bool {
        match self.fetch(key.as_str(), "quarantine") {
            Ok(Some(mut fetched)) => {
                matches!(crate::envelope::verify_stream(&mut fetched.reader, fetched.len),
                    Ok(Ok(layout)) if layout.header.key() == key)
            }
            _ => false,
        }
    }

    fn reader(&self, stream: BoxStream<'static, object_store::Result<Bytes>>) -> StreamReader {
        StreamReader { shared: self.shared.clone(), stream, buf: Bytes::new() }
    }

    /// The stored length and first `head_len` bytes of one listed object;
    /// `None` for a tombstone.
    async fn listed(
        &self,
        name: String,
        mut size: u64,
        mut e_tag: Option<String>,
        head_len: usize,
    ) -> Result<Option<Listed>> {
        let store = &self.shared.store();
        let path = self.path(&name);
        let want = head_len as u64;
        // Read as listed; when the key was replaced since the listing (the
        // ETag no longer matches), read what is there now instead of taking
        // the start of another object for the listed one.
        let mut attempts = 0;
        let bytes = loop {
            if size == 0 {
                // Damage, listed so that verify finds it.
                return Ok(Some(Listed { name, len: 0, head: Vec::new() }));
            }
            if size > SMALL && want == 0 {
                return Ok(Some(Listed { name, len: size, head: Vec::new() }));
            }
            let range = if size <= SMALL { 0..size } else { 0..want.min(size) };
            let opts = GetOptions {
                range: Some(GetRange::Bounded(range)),
                if_match: e_tag.clone(),
                ..Default::default()
            };
            let got = match store.get_opts(&path, opts).await {
                Ok(got) => got.bytes().await,
                Err(e) => Err(e),
            };
            match got {
                Ok(b) => break b,
                // Removed since the listing.
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(object_store::Error::Precondition { .. }) if attempts < 3 => {
                    attempts += 1;
                    match store.head(&path).await {
                        Ok(meta) => (size, e_tag) = (meta.size, meta.e_tag),
                        Err(object_store::Error::NotFound { .. }) => return Ok(None),
                        Err(e) => return Err(self.fail("list", &name)(e)),
                    }
                }
                Err(e) => return Err(self.fail("list", &name)(e)),
            }
        };
        if size <= SMALL {
            if is_tombstone(&bytes) {
                return Ok(None);
            }
            if let Some(r) = parse_reference(&bytes) {
                let head = if want == 0 || r.len == 0 {
                    Bytes::new()
                } else {
                    match store.get_range(&self.data_path(&r.data), 0..want.min(r.len)).await {
                        Ok(b) => b,
                        Err(object_store::Error::NotFound { .. }) => Bytes::new(),
                        Err(e) => return Err(self.fail("list", &name)(e)),
                    }
                };
                return Ok(Some(Listed { name, len: r.len, head: head.to_vec() }));
            }
        }
        let head = bytes.slice(..bytes.len().min(head_len)).to_vec();
        Ok(Some(Listed { name, len: size, head }))
    }

    /// Reads the lease at `key`: its version and content.
    async fn read_lease(&self, key: &StashKey) -> Result<Option<(UpdateVersion, LeaseBody)>> {
        let path = self.lock_path(key);
        let got = match self.shared.store().get(&path).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.fail("read the lock of", key.as_str())(e)),
        };
        let version = UpdateVersion::from_meta(&got.meta);
        let bytes = got.bytes().await.map_err(self.fail("read the lock of", key.as_str()))?;
        // An unreadable lease body is treated as released: it holds no one.
        let body = serde_json::from_slice(&bytes).unwrap_or_default();
        Ok(Some((version, body)))
    }

    /// One attempt to take `key`'s lease: its version when taken, and when
    /// the take was sent (the lease counts from then, as a renewal does).
    async fn try_take(
        &self,
        key: &StashKey,
        holder: &str,
    ) -> Result<Option<(UpdateVersion, Instant)>> {
        let path = self.lock_path(key);
        let mode = match self.read_lease(key).await? {
            None => PutMode::Create,
            Some((version, body)) => {
                if body.holder.is_some() && body.expires_ms > now_ms() {
                    return Ok(None);
                }
                PutMode::Update(version)
            }
        };
        let sent = Instant::now();
        let body = LeaseBody::held(holder, self.shared.lease);
        let opts = PutOptions { mode, ..Default::default() };
        match self.shared.store().put_opts(&path, body.payload(), opts).await {
            Ok(put) => Ok(Some((UpdateVersion::from(put), sent))),
            Err(e) if is_conflict(&e) => Ok(None),
            Err(e) => Err(self.fail("lock", key.as_str())(e)),
        }
    }
}

trait FromMeta {
    fn from_meta(meta: &object_store::ObjectMeta) -> Self;
}

impl FromMeta for UpdateVersion {
    fn from_meta(meta: &object_store::ObjectMeta) -> UpdateVersion {
        UpdateVersion { e_tag: meta.e_tag.clone(), version: meta.version.clone() }
    }
}

/// What a lease object holds.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct LeaseBody {
    /// The holder's id; `None` once released.
    holder: Option<String>,
    /// Until when (Unix milliseconds, the holder's clock).
    #[serde(default)]
    expires_ms: u64,
}

impl LeaseBody {
    fn held(holder: &str, lease: Duration) -> LeaseBody {
        LeaseBody {
            holder: Some(holder.to_owned()),
            expires_ms: now_ms() + lease.as_millis() as u64,
        }
    }

    fn payload(&self) -> PutPayload {
        PutPayload::from(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// A reader over an object's byte stream, pulling one chunk at a time.
struct StreamReader {
    shared: Arc<Shared>,
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    buf: Bytes,
}

/// The client timeouts a streamed stash needs, unless the environment sets
/// them (`{PREFIX}_TIMEOUT`, `{PREFIX}_READ_TIMEOUT`, as object_store reads
/// them). object_store's default `timeout` (30 s) bounds a whole request,
/// body included, and a load reads the body only as fast as the caller
/// deserializes it: a large stash read by a slow consumer would be cut off
/// (its retries resume by range, within a budget of minutes, then fail). So
/// a request may last as long as its body takes (`timeout` 24 h), while a
/// connection that stalls, with no byte for `read_timeout` (60 s), fails.
fn stream_timeouts<B>(prefix: &str, builder: B, set: impl Fn(B, ClientConfigKey, &str) -> B) -> B {
    let unset = |name: &str| std::env::var_os(format!("{prefix}_{name}")).is_none();
    let mut builder = builder;
    if unset("TIMEOUT") {
        builder = set(builder, ClientConfigKey::Timeout, "24h");
    }
    if unset("READ_TIMEOUT") {
        builder = set(builder, ClientConfigKey::ReadTimeout, "60s");
    }
    builder
}

impl Read for StreamReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.buf.is_empty() {
            match self.shared.block_on(self.stream.next()) {
                Some(Ok(chunk)) => self.buf = chunk,
                Some(Err(e)) => return Err(io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        let _ = self.buf.split_to(n);
        Ok(n)
    }
}

/// The sink `put_with` fills: memory up to the threshold, then a multipart
/// upload of a fresh data object.
struct Sink<'a> {
    backend: &'a ObjectStoreBackend,
    key: &'a StashKey,
    buf: Vec<u8>,
    upload: Option<(String, WriteMultipart)>,
    written: u64,
    /// The last `TRAILER_LEN` bytes written (once spilled).
    tail: Vec<u8>,
    /// When the upload was started.
    started: Option<Instant>,
    /// The service's error that failed the upload, reported as such (the
    /// envelope writer only sees an I/O error).
    failed: Option<Error>,
}

impl Sink<'_> {
    fn spill(&mut self) -> io::Result<()> {
        let backend = self.backend;
        let key = self.key.as_str();
        let (_, upload) = match &mut self.upload {
            Some(u) => u,
            None => {
                let data = format!("{}.{}", self.key, uuid::Uuid::new_v4().simple());
                let path = backend.data_path(&data);
                self.started = Some(Instant::now());
                let started = match backend.block_on(backend.shared.store().put_multipart(&path)) {
                    Ok(started) => started,
                    Err(e) => {
                        self.failed = Some(backend.fail("start the upload of", key)(e));
                        return Err(io::Error::other("the upload could not start"));
                    }
                };
                self.upload.insert((data, WriteMultipart::new_with_chunk_size(started, PART_SIZE)))
            }
        };
        let buf = std::mem::take(&mut self.buf);
        let sent = backend.block_on(async {
            upload.write(&buf);
            upload.wait_for_capacity(PARTS_IN_FLIGHT).await
        });
        sent.map_err(|e| {
            self.failed = Some(backend.fail("upload the envelope of", key)(e));
            io::Error::other("the upload failed")
        })
    }
}

impl Write for Sink<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.written += data.len() as u64;
        if data.len() >= TRAILER_LEN {
            self.tail.clear();
            self.tail.extend_from_slice(&data[data.len() - TRAILER_LEN..]);
        } else {
            self.tail.extend_from_slice(data);
            let cut = self.tail.len().saturating_sub(TRAILER_LEN);
            self.tail.drain(..cut);
        }
        self.buf.extend_from_slice(data);
        let spill = match self.upload {
            None => self.buf.len() > self.backend.shared.threshold,
            Some(_) => self.buf.len() >= PART_SIZE,
        };
        if spill {
            self.spill()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Backend for ObjectStoreBackend {
    fn location(&self) -> &str {
        &self.location
    }

    fn put(
        &self,
        key: &StashKey,
        envelope: &[u8],
        digest: &Digest,
        cond: Precondition,
    ) -> Result<Outcome> {
        let payload = PutPayload::from(Bytes::copy_from_slice(envelope));
        self.write("save", key.as_str(), payload, cond, Mine::Envelope(*digest), None)
    }

    fn put_with(&self, key: &StashKey, cond: Precondition, fill: &mut Fill<'_>) -> Result<Outcome> {
        let mut sink = Sink {
            backend: self,
            key,
            buf: Vec::new(),
            upload: None,
            written: 0,
            tail: Vec::new(),
            started: None,
            failed: None,
        };
        let filled = fill(&mut sink);
        let failed = sink.failed.take();
        let Some((data, mut upload)) = sink.upload.take() else {
            if let Some(e) = failed {
                return Err(e);
            }
            let digest = filled?;
            let payload = PutPayload::from(std::mem::take(&mut sink.buf));
            return self.write("save", key.as_str(), payload, cond, Mine::Envelope(digest), None);
        };
        let rest = std::mem::take(&mut sink.buf);
        // A part that failed is that error, whatever the envelope writer
        // made of it.
        let filled = match failed {
            Some(e) => Err(e),
            None => filled,
        };
        let finished = match filled {
            Ok(_) => self
                .block_on(async {
                    upload.write(&rest);
                    upload.finish().await
                })
                .map(|_| ())
                .map_err(self.fail("upload the envelope of", key.as_str())),
            Err(e) => {
                // Nothing of it may stay: the parts uploaded so far go.
                let _ = self.block_on(upload.abort());
                Err(e)
            }
        };
        if let Err(e) = finished {
            // `finish` aborted a failed upload itself; a completed one is
            // removed: no reference naming it was sent, so none can land
            // later (best effort: an orphan is left for cleanup).
            let _ = self.block_on(self.shared.store().delete(&self.data_path(&data)));
            return Err(e);
        }
        let reference = make_reference(&data, sink.written, &sink.tail);
        let digest = recorded_digest(&sink.tail);
        // Written within half of the grace period after the upload began,
        // so cleanup never takes a data object a reference is about to name.
        let deadline = sink.started.map(|t| t + self.shared.gc_grace / 2);
        let payload = PutPayload::from(reference);
        let mine = Mine::Reference(&data, digest);
        self.write("save", key.as_str(), payload, cond, mine, deadline)
    }

    fn get(&self, key: &StashKey) -> Result<Option<Fetched>> {
        self.fetch(key.as_str(), "load")
    }

    fn delete(&self, key: &StashKey, cond: Precondition) -> Result<Outcome> {
        let mark = tombstone();
        let payload = PutPayload::from(mark.clone());
        self.write("clear", key.as_str(), payload, cond, Mine::Tombstone(&mark), None)
    }

    fn list(&self, head_len: usize) -> Result<Vec<Listed>> {
        let listing = self
            .block_on(self.shared.store().list_with_delimiter(Some(&self.prefix)))
            .map_err(|e| Error::Backend {
                op: "list",
                target: self.location.clone(),
                source: service_error(e),
            })?;
        let mut found: Vec<Listed> = self.block_on(
            futures_util::stream::iter(listing.objects.into_iter().filter_map(|meta| {
                let name = meta.location.filename()?.to_owned();
                Some(self.listed(name, meta.size, meta.e_tag, head_len))
            }))
            .buffered(8)
            .try_filter_map(|l| async move { Ok(l) })
            .try_collect(),
        )?;
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    fn has_locks(&self) -> bool {
        true
    }

    fn lock(&self, key: &StashKey, wait: bool) -> Result<Option<Box<dyn Held>>> {
        let holder = uuid::Uuid::new_v4().to_string();
        let started = Instant::now();
        let mut pause = Duration::from_millis(20);
        let (version, sent) = loop {
            if let Some(taken) = self.block_on(self.try_take(key, &holder))? {
                break taken;
            }
            if !wait {
                return Ok(None);
            }
            if started.elapsed() >= self.shared.lock_timeout {
                return Err(Error::Locked {
                    key: key.clone(),
                    path: self.target(Some(key.as_str())).into(),
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(250));
        };
        // What the holder sees at the key now: its changes are conditional on it.
        let key_version = match self.block_on(self.current(key.as_str(), "lock")) {
            Ok(c) => c.version().cloned(),
            Err(e) => {
                let lease = Lease::new(self, key, holder, (version, sent), None);
                drop(LeaseHeld::start(self, lease));
                return Err(e);
            }
        };
        let lease = Lease::new(self, key, holder, (version, sent), key_version);
        Ok(Some(Box::new(LeaseHeld::start(self, lease))))
    }

    fn move_aside(&self, key: &StashKey, aside: &str) -> Result<bool> {
        let name = key.as_str();
        self.check_fence("quarantine", name)?;
        let store = &self.shared.store();
        let current = self.block_on(self.current(name, "quarantine"))?;
        let Current::Stash { version, .. } = current else { return Ok(false) };
        if let Some(seen) = self.fenced_version(name) {
            if seen.as_ref() != Some(&version) {
                return Err(Error::Backend {
                    op: "quarantine",
                    target: self.target(Some(name)),
                    source: "the stash changed since this lock's holder last saw it".into(),
                });
            }
        }
        let aside_path = self.path(aside);
        match self.block_on(store.head(&aside_path)) {
            Ok(_) => {
                return Err(Error::Backend {
                    op: "quarantine",
                    target: self.target(Some(name)),
                    source: format!("`{}` exists already", self.target(Some(aside))).into(),
                });
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.fail("quarantine", name)(e)),
        }
        // The copy aside is exactly the version read: a read conditional on
        // its ETag, then a create at the aside name.
        let path = self.path(name);
        let exact = GetOptions {
            if_match: version.e_tag.clone(),
            version: version.version.clone(),
            ..Default::default()
        };
        let read = self.block_on(async { store.get_opts(&path, exact).await?.bytes().await });
        let bytes = match read {
            Ok(bytes) => bytes,
            Err(
                object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. },
            ) => {
                return Err(Error::Backend {
                    op: "quarantine",
                    target: self.target(Some(name)),
                    source: "the stash changed while it was being quarantined; nothing was \
                             moved: try again"
                        .into(),
                });
            }
            Err(e) => return Err(self.fail("quarantine (read)", name)(e)),
        };
        let create = PutOptions { mode: PutMode::Create, ..Default::default() };
        let copied = self.block_on(store.put_opts(&aside_path, bytes.clone().into(), create));
        if let Err(e) = copied {
            // A conflict may be this create's own earlier landing, and any
            // error a lost reply: the copy counts when it is there, whole.
            let there = self.block_on(async { store.get(&aside_path).await?.bytes().await });
            if !there.is_ok_and(|b| b == bytes) {
                return Err(self.fail("quarantine (copy aside)", name)(e));
            }
        }
        // Then the key: a tombstone on the ETag read.
        let mark = tombstone();
        let opts = PutOptions { mode: PutMode::Update(version.clone()), ..Default::default() };
        let e = match self.block_on(store.put_opts(&path, PutPayload::from(mark.clone()), opts)) {
            Ok(put) => {
                let version = UpdateVersion::from(put);
                self.remember(name, Some(Current::Tombstone(version.clone(), mark)));
                self.record_version(name, Some(version));
                return Ok(true);
            }
            Err(e) => e,
        };
        // Refused or unanswered: the tombstone may be this request's own
        // (a reply lost, a retry meeting it). Read the key again.
        let now = self.block_on(self.current(name, "quarantine"));
        if let Ok(now @ Current::Tombstone(..)) = &now {
            if now.is(&Mine::Tombstone(&mark)) {
                self.record_version(name, now.version().cloned());
                return Ok(true);
            }
        }
        // The copy aside goes only when a verified newer stash is at the
        // key: the quarantine lost to a save, and the stash read is not the
        // only copy of anything current. Otherwise it stays.
        let newer = matches!(&now, Ok(Current::Stash { version: v, .. }) if *v != version)
            && self.verified_at(key);
        if newer {
            let _ = self.block_on(store.delete(&aside_path));
            return Err(Error::Backend {
                op: "quarantine",
                target: self.target(Some(name)),
                source: "a newer stash was saved at the key meanwhile; it stays (the copy \
                         aside was removed again)"
                    .into(),
            });
        }
        Err(Error::Backend {
            op: "quarantine",
            target: self.target(Some(name)),
            source: Box::new(KeptAside { aside: self.target(Some(aside)), source: e }),
        })
    }

    fn cleanup(&self) -> Result<Vec<String>> {
        self.collect_garbage()
    }

    /// A batch's PUTs go out eight at a time: each is its own
    /// request, and the service takes them in parallel.
    fn concurrent_puts(&self) -> usize {
        BATCH_PUTS
    }

    fn child(&self, ns: &str) -> Box<dyn Backend> {
        Box::new(ObjectStoreBackend::at(self.shared.clone(), self.prefix.clone().join(ns), None))
    }

    fn children(&self) -> Result<Vec<String>> {
        let listing = self
            .block_on(self.shared.store().list_with_delimiter(Some(&self.prefix)))
            .map_err(|e| Error::Backend {
                op: "list namespaces of",
                target: self.location.clone(),
                source: service_error(e),
            })?;
        let mut found: Vec<String> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_owned))
            .filter(|n| !n.starts_with('.'))
            .collect();
        found.sort();
        Ok(found)
    }
}

/// A lease as its holder knows it.
struct Lease {
    key: StashKey,
    path: Path,
    holder: String,
    duration: Duration,
    state: Mutex<LeaseState>,
    /// The fork generation it was taken in.
    generation: u64,
}

struct LeaseState {
    /// The lease object's version this holder last wrote.
    version: UpdateVersion,
    /// When that write was sent (a renewal counts from before it went out).
    renewed: Instant,
    /// Renewal found the lease taken over.
    lost: bool,
    /// The key's version this holder last saw or wrote (`None`: absent).
    key_version: Option<UpdateVersion>,
}

impl Lease {
    fn new(
        backend: &ObjectStoreBackend,
        key: &StashKey,
        holder: String,
        (version, sent): (UpdateVersion, Instant),
        key_version: Option<UpdateVersion>,
    ) -> Lease {
        Lease {
            key: key.clone(),
            path: backend.lock_path(key),
            holder,
            duration: backend.shared.lease,
            state: Mutex::new(LeaseState { version, renewed: sent, lost: false, key_version }),
            generation: crate::fork::generation(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LeaseState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `Err(why)` when changes may no longer be made under this lease.
    fn check(&self) -> std::result::Result<(), &'static str> {
        if self.generation != crate::fork::generation() {
            return Err("the lock's lease is held by the parent process this one was forked from");
        }
        let state = self.state();
        if state.lost {
            return Err("the lock's lease was taken over by another holder");
        }
        if state.renewed.elapsed() >= self.duration.mul_f64(0.9) {
            return Err("the lock's lease was not renewed in time and may have expired");
        }
        Ok(())
    }
}

/// A held lease, its renewal thread, and the fenced backend it gives.
struct LeaseHeld {
    backend: ObjectStoreBackend,
    lease: Arc<Lease>,
    stop: Option<mpsc::Sender<()>>,
    renewer: Option<JoinHandle<()>>,
    /// The fork generation it was taken in: a forked child neither renews
    /// nor releases its parent's lease.
    generation: u64,
}

impl fmt::Debug for LeaseHeld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseHeld")
            .field("key", &self.lease.key)
            .field("holder", &self.lease.holder)
            .finish_non_exhaustive()
    }
}

impl LeaseHeld {
    fn start(backend: &ObjectStoreBackend, lease: Lease) -> LeaseHeld {
        let lease = Arc::new(lease);
        let (stop, stopped) = mpsc::channel::<()>();
        let shared = backend.shared.clone();
        let renewing = lease.clone();
        let renewer = std::thread::Builder::new()
            .name("safestash-lease".into())
            .spawn(move || renew(&shared, &renewing, &stopped))
            .ok();
        LeaseHeld {
            backend: ObjectStoreBackend::at(
                backend.shared.clone(),
                backend.prefix.clone(),
                Some(lease.clone()),
            ),
            lease,
            stop: Some(stop),
            renewer,
            generation: crate::fork::generation(),
        }
    }
}

/// Renews the lease every third of its duration until told to stop or the
/// lease is found taken over.
fn renew(shared: &Shared, lease: &Lease, stopped: &mpsc::Receiver<()>) {
    loop {
        match stopped.recv_timeout(lease.duration / 3) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let sent = Instant::now();
        let version = lease.state().version.clone();
        let body = LeaseBody::held(&lease.holder, lease.duration);
        let opts = PutOptions { mode: PutMode::Update(version), ..Default::default() };
        match shared.block_on(shared.store().put_opts(&lease.path, body.payload(), opts)) {
            Ok(put) => {
                let mut state = lease.state();
                state.version = UpdateVersion::from(put);
                state.renewed = sent;
            }
            Err(e) if is_conflict(&e) => {
                lease.state().lost = true;
                tracing::warn!(key = %lease.key, "lock lease taken over by another holder");
                return;
            }
            Err(e) => {
                tracing::warn!(key = %lease.key, error = %e, "lock lease renewal failed; retrying")
            }
        }
    }
}

impl Held for LeaseHeld {
    fn backend(&self) -> &dyn Backend {
        &self.backend
    }
}

impl Drop for LeaseHeld {
    fn drop(&mut self) {
        if self.generation != crate::fork::generation() {
            // The parent's lease, in a forked child: its renewing thread is
            // not here to join, and releasing it would free the parent's
            // lock. Left alone.
            std::mem::forget(self.renewer.take());
            std::mem::forget(self.stop.take());
            return;
        }
        drop(self.stop.take());
        if let Some(t) = self.renewer.take() {
            let _ = t.join();
        }
        let (lost, version) = {
            let s = self.lease.state();
            (s.lost, s.version.clone())
        };
        if lost {
            return;
        }
        // Release: only the lease this holder wrote last, never a taker's.
        let opts = PutOptions { mode: PutMode::Update(version), ..Default::default() };
        let released = LeaseBody { holder: None, expires_ms: 0 };
        let shared = &self.backend.shared;
        let _ =
            shared.block_on(shared.store().put_opts(&self.lease.path, released.payload(), opts));
    }
}
