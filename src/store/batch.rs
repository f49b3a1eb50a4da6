//! [`Batch`]: many stashes made durable for the price of a few flushes.

use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};

use super::streamed::serialize_error;
use crate::backend::{BatchOutcome, BatchPut};

use super::*;

/// Many stashes saved together: each is written to its own temp file, the
/// temp files are made durable together ([`Fs::sync_files`]), then each is
/// renamed into place under its key's lock, then the directory is fsynced
/// once, and only then are all acknowledged.
///
/// Each stash is still atomic and verified on its own (a crash leaves each
/// key with its old stash or its new one, never a mix); there is no promise
/// across them: after a crash some may be new and others old, but every one
/// that [`commit`](Batch::commit) acknowledged is new. A batch of `n` costs
/// one [`Fs::sync_files`] per [`FLUSH_GROUP`] stashes and one directory
/// fsync, where `n` single saves cost `n` of each. On Linux ext4, XFS and
/// Btrfs [`OsFs`] makes a `sync_files` one `syncfs(2)`, elsewhere one
/// `fsync` per file (see [`OsFs`] for what `syncfs` also flushes).
///
/// # What is atomic, on each backend
///
/// On every backend each stash is atomic and conditional on its own (its
/// [`Precondition`] checked atomically with its write), the stashes before
/// a refused condition are saved and the refused one and those after it
/// are not, every stash `commit` acknowledged is durable, and a failure
/// returns a [`BatchError`] with the receipts of the stashes saved and the
/// keys of those that were not:
///
/// - **directory**: never one all-or-nothing write: each rename is atomic,
///   the flushes are shared, and a failure before any rename saves nothing.
/// - **PostgreSQL**: one transaction, one durable commit for all its
///   stashes: every key's lock is taken and every condition checked in it,
///   in order, and what comes before a refused condition commits together.
///   A failure of the server or the connection before the commit saves
///   none of them (the error names the key where it happened); a commit
///   whose answer is lost may have saved all of them, and the error says
///   so. The transaction holds one advisory lock per key, so the server's
///   lock table (`max_locks_per_transaction` × `max_connections`) bounds
///   how many keys one batch can hold at once.
/// - **object storage**: each stash is one conditional PUT (or a multipart
///   upload and its conditional reference), up to 8 of them in flight at
///   once ([`Backend::concurrent_puts`](crate::backend::Backend::concurrent_puts)),
///   so they land in no particular order; after one fails no new one
///   starts, and those in flight finish, each reported as saved or not. A
///   stash reported not saved because its PUT got no answer may still
///   have landed (see the backend's *Ambiguous answers*).
///
/// Nothing is written until `commit`: [`add`](Batch::add) only checks the
/// key and options; the batch borrows the values and serializes each
/// straight into its temp file during `commit`, so it holds no copies.
/// It holds a clone of its [`Store`], not a borrow, and its values are
/// `Sync`, so a batch can be committed on another thread.
///
/// # Examples
///
/// ```
/// use safestash::{Precondition, SaveOptions, StashKey, Store};
///
/// let dir = tempfile::tempdir()?;
/// let store = Store::open(dir.path())?;
/// let tenants = ["acme", "globex", "initech"];
/// let mut batch = store.batch();
/// for t in &tenants {
///     let opts = SaveOptions::new().kind("tenant-snapshot");
///     batch.add_if(&StashKey::from_any(t), t, &opts, Precondition::Absent)?;
/// }
/// let receipts = batch.commit()?; // all three durable now
/// assert_eq!(receipts.len(), 3);
/// assert_eq!(*store.load::<String>(&StashKey::from_any("globex"))?.unwrap().value(), "globex");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "a batch writes nothing until it is committed"]
pub struct Batch<'v, F: Fs = OsFs> {
    store: Store<F>,
    /// The backend of a held lock whose fencing every put goes through
    /// ([`Store::batch_under`]); the store's own otherwise.
    via: Option<&'v dyn crate::backend::Backend>,
    items: Vec<Item<'v>>,
    keys: BTreeSet<StashKey>,
}

struct Item<'v> {
    header: Header,
    value: &'v (dyn ErasedSerialize + Sync + 'v),
    expect: Precondition,
}

/// `Serialize` is not object-safe; this is the one call a batch needs.
pub(super) trait ErasedSerialize {
    fn write_json(&self, out: &mut dyn io::Write) -> serde_json::Result<()>;
}

impl<T: Serialize + ?Sized> ErasedSerialize for T {
    fn write_json(&self, out: &mut dyn io::Write) -> serde_json::Result<()> {
        serde_json::to_writer(out, self)
    }
}

impl<F: Fs> fmt::Debug for Batch<'_, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch").field("keys", &self.keys).finish_non_exhaustive()
    }
}

impl<F: Fs> Store<F> {
    /// Starts a [`Batch`] of saves into this store.
    ///
    /// # Examples
    ///
    /// See [`Batch`].
    pub fn batch<'v>(&self) -> Batch<'v, F> {
        Batch { store: self.clone(), via: None, items: Vec::new(), keys: BTreeSet::new() }
    }

    /// A batch written under `lock`, a held lock of a store with this
    /// store's backend namespace: on a remote store every put goes through
    /// the lock's fencing (a lease that was lost, or a lock session that
    /// died, refuses it); on a directory each stash takes its own key's
    /// lock as in [`batch`](Store::batch).
    pub(crate) fn batch_under<'v>(&self, lock: &'v KeyLock<F>) -> Batch<'v, F> {
        let via = Some(lock.held.backend());
        Batch { store: self.clone(), via, items: Vec::new(), keys: BTreeSet::new() }
    }
}

impl<'v, F: Fs> Batch<'v, F> {
    /// Adds `value` under `key` with `opts`, replacing any stash there.
    ///
    /// # Errors
    ///
    /// As [`add_if`](Batch::add_if).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// let mut batch = store.batch();
    /// batch.add(&safestash::StashKey::new("a")?, &1, &safestash::SaveOptions::new())?;
    /// batch.commit()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn add<T: Serialize + Sync>(
        &mut self,
        key: &StashKey,
        value: &'v T,
        opts: &SaveOptions,
    ) -> Result<&mut Self> {
        self.add_if(key, value, opts, Precondition::Any)
    }

    /// Adds `value` under `key` with `opts`, to be saved only if the stash
    /// there is as `expect` says when its turn to be renamed comes (checked
    /// under the key's lock, as [`Store::save_if`]).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOption`] when the kind or origin breaks its rule, or
    /// the key is already in this batch (one stash per key per batch).
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::{Precondition, SaveOptions, StashKey};
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// let mut batch = store.batch();
    /// let k = StashKey::new("a")?;
    /// batch.add_if(&k, &1, &SaveOptions::new(), Precondition::Absent)?;
    /// assert!(batch.add(&k, &2, &SaveOptions::new()).is_err()); // once per batch
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn add_if<T: Serialize + Sync>(
        &mut self,
        key: &StashKey,
        value: &'v T,
        opts: &SaveOptions,
        expect: Precondition,
    ) -> Result<&mut Self> {
        if self.keys.contains(key) {
            return Err(Error::InvalidOption {
                field: "batch key",
                value: key.to_string(),
                rule: "each key at most once per batch",
            });
        }
        let header = self.store.header_for(key, opts)?;
        self.keys.insert(key.clone());
        self.items.push(Item { header, value, expect });
        Ok(self)
    }

    /// How many stashes the batch holds.
    ///
    /// # Examples
    ///
    /// ```
    /// # let store = safestash::Store::open("/tmp/never-written")?;
    /// assert_eq!(store.batch().len(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the batch is empty.
    ///
    /// # Examples
    ///
    /// ```
    /// # let store = safestash::Store::open("/tmp/never-written")?;
    /// assert!(store.batch().is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Saves every stash of the batch and makes them durable together:
    ///
    /// 1. for each stash: create `.KEY.XXXXXXXX.tmp`, write the envelope;
    ///    after every [`FLUSH_GROUP`] stashes and after the last, make the
    ///    group's temp files durable together ([`Fs::sync_files`]) and close
    ///    them;
    /// 2. for each stash, under its key's lock: check its precondition, then
    ///    `rename` over `KEY`;
    /// 3. `fsync` the directory once;
    /// 4. tell observers, one `Saved` per stash, and return the receipts in
    ///    the order the stashes were added.
    ///
    /// # Errors
    ///
    /// A [`BatchError`]: when step 1 fails (a write or a flush), nothing
    /// was renamed and every temp file is removed ([`BatchError::saved`] is
    /// empty, nothing is acknowledged). When a
    /// precondition or a rename fails in step 2, the stashes renamed before
    /// it are made durable (step 3 still runs) and returned in
    /// [`BatchError::saved`]; the rest are not written.
    ///
    /// # Examples
    ///
    /// See [`Batch`].
    #[allow(clippy::result_large_err)] // the error carries every receipt it saved
    pub fn commit(self) -> std::result::Result<Vec<Receipt>, BatchError> {
        let Batch { store, via, items, .. } = self;
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let via = via.unwrap_or_else(|| store.backend.as_ref());
        // This thread's claims on every key, held across the puts (which
        // may run on other threads): a batch committed under a held lock of
        // one of its keys, on the lock's thread, fails at that key as a
        // save there would.
        let mut claims = Vec::with_capacity(items.len());
        let mut claim_failure = None;
        for item in &items {
            match store.claim_thread(item.header.key(), true) {
                Ok(claim) => claims.push(claim),
                Err(error) => {
                    claim_failure = Some(error);
                    break;
                }
            }
        }
        let runnable = claims.len();
        // What each envelope turned out to be: its length and digest.
        let made: Vec<Mutex<Option<(u64, Digest)>>> =
            (0..runnable).map(|_| Mutex::new(None)).collect();
        let fills: Vec<_> = items[..runnable]
            .iter()
            .zip(&made)
            .map(|(item, made)| {
                let path = store.path_of(item.header.key());
                move |sink: &mut dyn io::Write| -> Result<Digest> {
                    let mut writer = EnvelopeWriter::new(sink, &item.header)
                        .map_err(io_err(IoOp::Write, &path))?;
                    item.value
                        .write_json(&mut writer)
                        .map_err(|e| serialize_error(&item.header, &path, e))?;
                    let done = writer.finish().map_err(io_err(IoOp::Write, &path))?;
                    *made.lock().unwrap_or_else(PoisonError::into_inner) =
                        Some((done.len, done.digest));
                    Ok(done.digest)
                }
            })
            .collect();
        let puts: Vec<BatchPut<'_>> = items[..runnable]
            .iter()
            .zip(&fills)
            .map(|(item, fill)| BatchPut { key: item.header.key(), cond: item.expect, fill })
            .collect();
        let done = if puts.is_empty() {
            BatchOutcome { outcomes: Vec::new(), failed: None }
        } else {
            via.put_batch(&puts)
        };
        drop(claims);
        // The first stash (in order) that failed or was refused is the
        // batch's error; every put that is durable gets its receipt.
        let mut failure: Option<(usize, Error)> = done.failed;
        let mut receipts = Vec::with_capacity(items.len());
        let mut saved = vec![false; items.len()];
        for (i, outcome) in done.outcomes.into_iter().enumerate() {
            let item = &items[i];
            let result = match outcome {
                None => continue,
                Some(outcome) => {
                    let made = *made[i].lock().unwrap_or_else(PoisonError::into_inner);
                    let (bytes, digest) = made.map_or((0, None), |(b, d)| (b, Some(d)));
                    Store::<F>::receipt(
                        &store.dir,
                        &item.header,
                        outcome,
                        item.expect,
                        bytes,
                        digest,
                    )
                }
            };
            match result {
                Ok(receipt) => {
                    saved[i] = true;
                    receipts.push(receipt);
                }
                Err(error) => {
                    if failure.as_ref().is_none_or(|(at, _)| i < *at) {
                        failure = Some((i, error));
                    }
                }
            }
        }
        if failure.is_none() {
            if let Some(error) = claim_failure {
                failure = Some((runnable, error));
            }
        }
        if !receipts.is_empty() {
            tracing::info!(stashes = receipts.len(), "batch written");
        }
        for receipt in &mut receipts {
            receipt.observer_errors = notify(&store.observers, &Event::Saved(receipt));
        }
        match failure {
            None => Ok(receipts),
            Some((at, error)) => {
                let mut not_saved: Vec<StashKey> = Vec::new();
                not_saved.push(items[at.min(items.len() - 1)].header.key().clone());
                for (i, item) in items.iter().enumerate() {
                    if !saved[i] && i != at {
                        not_saved.push(item.header.key().clone());
                    }
                }
                Err(BatchError { error, saved: receipts, not_saved })
            }
        }
    }
}

/// A [`Batch::commit`] that did not save every stash.
///
/// # Examples
///
/// ```
/// use safestash::{Error, Precondition, SaveOptions, StashKey};
/// # let dir = tempfile::tempdir()?;
/// # let store = safestash::Store::open(dir.path())?;
/// let (a, b) = (StashKey::new("a")?, StashKey::new("b")?);
/// store.save(&b, &"already here")?;
/// let mut batch = store.batch();
/// batch.add_if(&a, &1, &SaveOptions::new(), Precondition::Absent)?;
/// batch.add_if(&b, &2, &SaveOptions::new(), Precondition::Absent)?;
/// let err = batch.commit().unwrap_err();
/// assert!(matches!(err.error, Error::StashExists { .. }));
/// assert_eq!(err.saved.len(), 1); // `a` is durable
/// assert_eq!(err.not_saved, [b]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[error("batch of stashes stopped: {} saved, {} not saved", saved.len(), not_saved.len())]
#[non_exhaustive]
pub struct BatchError {
    /// What stopped the batch.
    #[source]
    pub error: Error,
    /// The stashes that were saved and are durable.
    pub saved: Vec<Receipt>,
    /// The keys whose stashes were not saved (their old stash, if any, is
    /// untouched), first the one that failed.
    pub not_saved: Vec<StashKey>,
}

/// `?` on a batch's result in a function returning [`Result`].
///
/// # Examples
///
/// ```
/// fn stash_all(store: &safestash::Store) -> safestash::Result<usize> {
///     let mut batch = store.batch();
///     batch.add(&safestash::StashKey::new("a")?, &1, &safestash::SaveOptions::new())?;
///     Ok(batch.commit()?.len())
/// }
/// # let dir = tempfile::tempdir()?;
/// # assert_eq!(stash_all(&safestash::Store::open(dir.path())?)?, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl From<BatchError> for Error {
    fn from(e: BatchError) -> Error {
        e.error
    }
}
