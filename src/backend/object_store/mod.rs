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
//! # Files
//!
//! One concept each: `url.rs` (the URL, [`Options`], the client's
//! settings), `conditional.rs` (what is at a key and the one conditional
//! PUT), `multipart.rs` (large stashes: the upload's sink and the
//! reference), `stream.rs` (bounded reads and listing), `lease.rs` (locks),
//! `gc.rs` (cleanup of unreferenced data), `live.rs` (the client and
//! runtime, remade in a forked child), `timeout.rs` (the per-request
//! bound); this file holds the shared state and the [`Backend`] impl.
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
use std::time::{Duration, Instant};

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
use crate::error::{BackendOp, Corruption, Error, Result};
use crate::key::StashKey;
use live::{Live, Remake, Runtime};

mod conditional;
mod fence;
mod gc;
mod lease;
mod live;
mod multipart;
mod state;
mod stream;
mod timeout;
mod url;
mod verbs;

use fence::Lease;
use state::Current;
pub use url::{DEFAULT_GC_GRACE, DEFAULT_TIMEOUT, Options};

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
