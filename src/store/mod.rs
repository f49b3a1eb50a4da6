//! [`Store`]: save, load, clear, list, verify, quarantine and clean up stashes.
//!
//! Every verb is written once, against the [`Backend`] trait: the local
//! directory is a backend ([`Directory`]) like PostgreSQL and object
//! storage, and the store encodes and verifies envelopes the same way over
//! any of them. One verb per file: [`save`](save), [`load`](load),
//! [`clear`](clear) (clear, conditional clear, quarantine), [`scan`](scan)
//! (list, verify, cleanup), [`inspect`](inspect) (tools' views),
//! [`lock`](lock) ([`KeyLock`]), [`batch`](batch), [`restore`](restore) (the
//! one verified-restore step), [`open`](open) (URLs and backends) and
//! [`streamed`](streamed) (the second read of a large envelope).

mod batch;
mod clear;
mod inspect;
mod load;
mod lock;
mod open;
mod restore;
mod save;
mod scan;
mod streamed;

pub use crate::backend::{FLUSH_GROUP, Precondition};
pub use crate::names::{EntryName, temp_file_key};
pub use batch::{Batch, BatchError};
pub use inspect::Inspected;
pub use lock::KeyLock;
pub use restore::Restorer;
pub(crate) use restore::{RestoreFailure, RestoreOutcome};

use std::fmt;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::{Backend, Directory, Outcome};
use crate::digest::Digest;
use crate::envelope::{self, DecodeError, EnvelopeWriter, Header, MAX_PREFIX_LEN};
use crate::error::BoxError;
use crate::error::{BackendOp, Corruption, Error, IoOp, Result};
use crate::fs::{FileKind, Fs, OsFs};
use crate::key::StashKey;
use crate::meta::{Receipt, SaveOptions, StashInfo, StashMeta, Stashed, VerifyReport};
use crate::names;
use crate::observe::{Event, Observer, notify};

fn io_err(op: IoOp, path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io { op, path: path.to_owned(), source }
}

/// Stashes in a [`Backend`]: by default a directory, one file per key
/// ([`Store::open`]); or PostgreSQL, object storage, or a backend of your
/// own ([`Store::open_url`], [`Store::with_backend`]).
///
/// `Store` is cheap: it holds the backend (shared), its name and the
/// filesystem seam. Several `Store`s (in one process or many) can share a
/// directory or namespace; writers coordinate through per-key locks and
/// conditional writes.
///
/// # Examples
///
/// ```
/// use std::collections::BTreeMap;
/// use safestash::{StashKey, Store};
///
/// let dir = tempfile::tempdir()?;
/// let store = Store::open(dir.path().join("stashes"))?; // creates nothing yet
/// let key = StashKey::new("orders.dictionary")?;
///
/// let labels = BTreeMap::from([("amount", "Amount in EUR")]);
/// let receipt = store.save(&key, &labels)?; // durable when it returns
/// println!("{} bytes, sha256 {}", receipt.bytes, receipt.digest);
///
/// let back = store.load::<BTreeMap<String, String>>(&key)?.expect("just saved");
/// assert_eq!(back.value()["amount"], "Amount in EUR");
/// assert!(store.clear(&key)?);
/// assert!(store.load::<BTreeMap<String, String>>(&key)?.is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// A `Store` is cheap to clone (a path, and shared handles), and a clone
/// is the same store: guards, locks, batches, operations and reconcilers
/// each hold one, so none of them borrows the `Store` value it came from.
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// let store = safestash::Store::open(dir.path())?;
/// let key = safestash::StashKey::new("k")?;
/// let guard = store.begin(&key, &"snapshot")?;
/// drop(store);
/// std::thread::spawn(move || guard.commit()).join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Store<F: Fs = OsFs> {
    /// The directory, or the backend's location as a path (messages and
    /// receipts name `dir/KEY`).
    dir: PathBuf,
    fs: F,
    observers: Vec<Arc<Observer>>,
    /// Where envelopes live: every verb goes through it.
    backend: Arc<dyn Backend>,
}

impl<F: Fs> fmt::Debug for Store<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("fs", &self.fs)
            .field("observers", &self.observers)
            .field("backend", &self.backend)
            .finish()
    }
}

impl Store<OsFs> {
    /// A store in `dir` on the real filesystem.
    ///
    /// Creates nothing: the first save creates `dir` and any missing parents
    /// (mode 0700), each fsynced into its parent. Until then every read finds
    /// no stash.
    ///
    /// # Errors
    ///
    /// [`Error::NotAFile`] when something other than a directory is at `dir`;
    /// [`Error::Io`] when `dir` cannot be inspected.
    ///
    /// # Examples
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let store = safestash::Store::open(dir.path().join("not/yet/there"))?;
    /// assert!(!dir.path().join("not").exists());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(dir: impl AsRef<Path>) -> Result<Store> {
        Store::with_fs(dir, OsFs)
    }
}

impl<F: Fs> Store<F> {
    /// A store in `dir` on the filesystem `fs` (a simulator, for example).
    ///
    /// # Errors
    ///
    /// As [`Store::open`].
    ///
    /// # Examples
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let store = safestash::Store::with_fs(dir.path(), safestash::fs::OsFs)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_fs(dir: impl AsRef<Path>, fs: F) -> Result<Store<F>> {
        let directory = Directory::with_fs(dir, fs.clone())?;
        Ok(Store {
            dir: directory.dir().to_owned(),
            fs,
            observers: Vec::new(),
            backend: Arc::new(directory),
        })
    }

    /// The store's directory.
    ///
    /// # Examples
    ///
    /// ```
    /// let store = safestash::Store::open("/tmp/stashes")?;
    /// assert_eq!(store.dir(), std::path::Path::new("/tmp/stashes"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The filesystem the store works on.
    ///
    /// # Examples
    ///
    /// ```
    /// let store = safestash::Store::open("/tmp/stashes")?;
    /// let _fs: &safestash::fs::OsFs = store.fs();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn fs(&self) -> &F {
        &self.fs
    }

    /// Registers an observer, run after every durable save, clear and
    /// rollback-restore of this store, in registration order.
    ///
    /// Persist first: an observer runs only once the operation is durable
    /// and the key's lock is released (so it may itself read or write the
    /// key), and its failure (an error or a panic) never undoes or fails the
    /// operation. A save reports failed observers in
    /// [`Receipt::observer_errors`], a rollback in
    /// [`Restored::observer_errors`](crate::Restored::observer_errors); every
    /// failure, including those on a clear, is logged as a `tracing`
    /// warning. Through a [`KeyLock`] you hold, observers run while you
    /// still hold the lock. A rollback notifies `Cleared`, then `Restored`.
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::{Event, StashKey, Store};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let mut store = Store::open(dir.path())?;
    /// store.observe("notify-watcher", |event| match event {
    ///     Event::Saved(_) => Err("watcher unreachable".into()),
    ///     _ => Ok(()),
    /// });
    /// let key = StashKey::new("k")?;
    /// let receipt = store.save(&key, &"data")?;
    /// assert_eq!(receipt.observer_errors.len(), 1);
    /// assert_eq!(store.load::<String>(&key)?.unwrap().value(), "data"); // stored anyway
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn observe(
        &mut self,
        name: impl Into<String>,
        observer: impl Fn(&Event<'_>) -> Result<(), BoxError> + Send + Sync + 'static,
    ) -> &mut Self {
        self.observers.push(Arc::new(Observer::new(name.into(), observer)));
        self
    }

    pub(crate) fn notify(&self, event: &Event<'_>) -> Vec<crate::error::ObserverError> {
        notify(&self.observers, event)
    }

    /// The store of reserved namespace `ns`: the directory `.ns.NS` inside
    /// this one, on the same filesystem, with no observers. The library keeps
    /// its own records there (the journal's under `journal`, the tenant
    /// guard's under `tenants`), where no user key can collide with them
    /// (a [`StashKey`] never starts with `.`), user observers never see
    /// their writes, and `gc`-style tools over the user's stashes never
    /// reach them.
    ///
    /// Open one to inspect it (the operator CLI does); leave writing to the
    /// namespace's owner.
    ///
    /// # Errors
    ///
    /// [`Error::Key`] when `ns` is not a valid key; as [`Store::open`].
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let store = safestash::Store::open(dir.path())?;
    /// let journal = store.namespace("journal")?;
    /// assert_eq!(journal.dir(), dir.path().join(".ns.journal"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn namespace(&self, ns: &str) -> Result<Store<F>> {
        let ns = StashKey::new(ns)?;
        Ok(self.child(ns.as_str(), Vec::new()))
    }

    /// The store of reserved namespace `ns`, for the library's own use:
    /// infallible (`ns` is a constant, and nothing is inspected until the
    /// first call), and with this store's observers when `observed` (the
    /// tenant guard's snapshots are user data; the journal's records are
    /// not, and are written where user observers do not see them).
    pub(crate) fn reserved(&self, ns: &'static str, observed: bool) -> Store<F> {
        debug_assert!(StashKey::new(ns).is_ok());
        self.child(ns, if observed { self.observers.clone() } else { Vec::new() })
    }

    /// The store of child namespace `ns` (a valid key).
    fn child(&self, ns: &str, observers: Vec<Arc<Observer>>) -> Store<F> {
        let backend: Arc<dyn Backend> = Arc::from(self.backend.child(ns));
        // A directory's child is the directory `.ns.NS` inside it: keep its
        // path as it is (it need not be UTF-8); anything else is named by
        // its location.
        let inside = self.dir.join(names::namespace_dir(ns));
        let dir = if inside.to_string_lossy() == backend.location() {
            inside
        } else {
            PathBuf::from(backend.location())
        };
        Store { dir, fs: self.fs.clone(), observers, backend }
    }

    /// The reserved namespaces present in this store, sorted (see
    /// [`namespace`](Store::namespace)).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the directory cannot be listed,
    /// [`Error::Backend`] when the service fails.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let store = safestash::Store::open(dir.path())?;
    /// store.namespace("journal")?.save(&safestash::StashKey::new("r")?, &1)?;
    /// assert_eq!(store.namespaces()?, ["journal"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn namespaces(&self) -> Result<Vec<String>> {
        self.backend.children()
    }

    /// The path of `key`'s stash file: always directly inside [`dir`](Store::dir).
    ///
    /// # Examples
    ///
    /// ```
    /// # use safestash::{StashKey, Store};
    /// let store = Store::open("/tmp/stashes")?;
    /// assert_eq!(store.path_of(&StashKey::new("k")?), std::path::Path::new("/tmp/stashes/k"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn path_of(&self, key: &StashKey) -> PathBuf {
        self.dir.join(key.as_str())
    }

    pub(super) fn lock_path(&self, key: &StashKey) -> PathBuf {
        self.dir.join(names::lock_name(key))
    }
}
