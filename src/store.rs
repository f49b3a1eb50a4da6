//! [`Store`]: save, load, clear, list, verify, quarantine and clean up stashes.

use std::fmt;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::envelope::{self, DecodeError, Digest, EnvelopeWriter, Header, MAX_PREFIX_LEN};
use crate::error::{Corruption, Error, IoOp, Result};
use crate::fs::{FileKind, Fs, Opened, OsFs};
use crate::key::StashKey;
use crate::lock::KeyLock;
use crate::meta::{Receipt, SaveOptions, StashInfo, StashMeta, Stashed, VerifyReport};
use crate::observe::{BoxError, Event, Observer, notify};

/// `load` reads files up to this size whole and verifies them in memory
/// (the value will be in memory anyway); larger ones are verified in a
/// streaming pass and then deserialized from the file.
const LOAD_WHOLE_LIMIT: u64 = 256 << 20;
/// `verify` keeps no payload, so above this size it streams.
const VERIFY_WHOLE_LIMIT: u64 = 1 << 20;
const TEMP_SUFFIX: &str = ".tmp";
const TEMP_RAND_LEN: usize = 8;
const LOCK_SUFFIX: &str = ".lock";
const QUARANTINE_INFIX: &str = ".quarantined.";

fn io_err(op: IoOp, path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io { op, path: path.to_owned(), source }
}

/// A directory of stashes, one file per key.
///
/// `Store` is cheap: it holds the directory's path and the filesystem seam.
/// Several `Store`s (in one process or many) can share a directory; writers
/// coordinate through per-key locks.
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
pub struct Store<F: Fs = OsFs> {
    dir: PathBuf,
    fs: F,
    observers: Vec<Observer>,
    /// Whether this store has fsynced every ancestor of `dir` (done before
    /// its first save: an earlier writer may have created the chain and
    /// failed or crashed before making it durable).
    chain_synced: AtomicBool,
}

impl<F: Fs> fmt::Debug for Store<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("fs", &self.fs)
            .field("observers", &self.observers)
            .finish()
    }
}

/// The payload of a verified stash, in memory or still in the file.
enum Payload<R> {
    Bytes { bytes: Vec<u8>, range: std::ops::Range<usize> },
    InFile { reader: R, offset: u64, len: u64 },
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
        let dir = dir.as_ref().to_owned();
        match fs.metadata(&dir).map_err(io_err(IoOp::Inspect, &dir))? {
            // A symlink to the store's directory is the caller's choice.
            None | Some(FileKind::Dir | FileKind::Symlink) => {
                Ok(Store { dir, fs, observers: Vec::new(), chain_synced: AtomicBool::new(false) })
            }
            Some(found) => Err(Error::NotAFile { path: dir, found, expected: FileKind::Dir }),
        }
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
        self.observers.push(Observer::new(name.into(), observer));
        self
    }

    pub(crate) fn notify(&self, event: &Event<'_>) -> Vec<crate::observe::ObserverError> {
        notify(&self.observers, event)
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

    fn lock_path(&self, key: &StashKey) -> PathBuf {
        self.dir.join(format!(".{key}{LOCK_SUFFIX}"))
    }

    /// Saves `value` under `key`, durably and atomically, with kind `value`
    /// and no origin.
    ///
    /// When this returns `Ok`, the stash survives a power cut. The protocol:
    /// take the key's lock; create `.KEY.XXXXXXXX.tmp` in the store's
    /// directory with `O_CREAT|O_EXCL`, mode 0600; serialize the envelope into
    /// it in one pass; `fsync` it; close it; rename it over `KEY`; `fsync` the
    /// directory. The directory (and missing parents) are created first if
    /// needed, each fsynced into its parent.
    ///
    /// # Errors
    ///
    /// - [`Error::Serialize`] when `value` does not serialize;
    /// - [`Error::NotAFile`] when a symlink, directory or special file is at
    ///   the stash path (it is neither followed nor replaced);
    /// - [`Error::Io`] / [`Error::Rename`] when a filesystem call fails.
    ///
    /// On any error before the rename, the previous stash is untouched and the
    /// temp file is removed. If only the final directory `fsync` fails, the
    /// new stash is in place but may not survive a crash; the error says so by
    /// naming the `sync directory` operation.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// let key = safestash::StashKey::new("tenants")?;
    /// let receipt = store.save(&key, &["acme", "globex"])?;
    /// assert_eq!(receipt.path, dir.path().join("tenants"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn save<T: Serialize + ?Sized>(&self, key: &StashKey, value: &T) -> Result<Receipt> {
        self.save_with(key, value, &SaveOptions::default())
    }

    /// Saves `value` under `key` with a kind label and an origin; otherwise
    /// exactly as [`save`](Store::save).
    ///
    /// # Errors
    ///
    /// As [`save`](Store::save), and [`Error::InvalidOption`] when the kind
    /// or origin breaks its rule (checked before anything is written).
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::{SaveOptions, StashKey, Store};
    /// # let dir = tempfile::tempdir()?;
    /// # let store = Store::open(dir.path())?;
    /// let opts = SaveOptions::new().kind("field-dictionary").origin("upload-7f3a");
    /// store.save_with(&StashKey::new("orders")?, &["amount"], &opts)?;
    /// let meta = store.load::<Vec<String>>(&StashKey::new("orders")?)?.unwrap().meta().clone();
    /// assert_eq!(meta.header.kind(), "field-dictionary");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn save_with<T: Serialize + ?Sized>(
        &self,
        key: &StashKey,
        value: &T,
        opts: &SaveOptions,
    ) -> Result<Receipt> {
        let header = self.header_for(key, opts)?;
        let mut receipt = {
            let _lock = self.acquire(key, true, true)?;
            self.write_stash(header, value)?
        };
        // Persist first, and unlocked: an observer may even write this key.
        receipt.observer_errors = notify(&self.observers, &Event::Saved(&receipt));
        Ok(receipt)
    }

    fn header_for(&self, key: &StashKey, opts: &SaveOptions) -> Result<Header> {
        let kind = opts.kind.as_deref().unwrap_or("value");
        Header::new(key.clone(), kind, opts.origin.as_deref(), SystemTime::now())
    }

    pub(crate) fn save_locked<T: Serialize + ?Sized>(
        &self,
        key: &StashKey,
        value: &T,
        opts: &SaveOptions,
    ) -> Result<Receipt> {
        let header = self.header_for(key, opts)?;
        let mut receipt = self.write_stash(header, value)?;
        receipt.observer_errors = notify(&self.observers, &Event::Saved(&receipt));
        Ok(receipt)
    }

    /// The save protocol, with the key's lock held. Observers are the
    /// caller's to notify.
    fn write_stash<T: Serialize + ?Sized>(&self, header: Header, value: &T) -> Result<Receipt> {
        let key = header.key().clone();
        let path = self.path_of(&key);
        self.expect_file_or_nothing(&path)?;
        self.sync_chain()?;
        let (file, tmp) = self
            .fs
            .create_temp(&self.dir, &format!(".{key}."), TEMP_SUFFIX)
            .map_err(io_err(IoOp::CreateTemp, &self.dir))?;
        let written = self.fill_temp(file, &tmp, &header, value).and_then(|(digest, bytes)| {
            self.fs.rename(&tmp, &path).map_err(|source| Error::Rename {
                from: tmp.clone(),
                to: path.clone(),
                source,
            })?;
            Ok((digest, bytes))
        });
        let (digest, bytes) = match written {
            Ok(done) => done,
            Err(e) => {
                // Best effort: a leftover is recognised and removed by `cleanup`.
                let _ = self.fs.remove_file(&tmp);
                return Err(e);
            }
        };
        self.fs.sync_dir(&self.dir).map_err(io_err(IoOp::SyncDir, &self.dir))?;
        let receipt = Receipt {
            key,
            path,
            bytes,
            digest,
            created: header.created(),
            observer_errors: Vec::new(),
        };
        tracing::info!(key = %receipt.key, bytes, digest = %digest, "stash written");
        Ok(receipt)
    }

    /// Writes the envelope into the temp file, fsyncs and closes it.
    fn fill_temp<T: Serialize + ?Sized>(
        &self,
        file: F::File,
        tmp: &Path,
        header: &Header,
        value: &T,
    ) -> Result<(Digest, u64)> {
        let mut writer = EnvelopeWriter::new(file, header).map_err(io_err(IoOp::Write, tmp))?;
        if let Err(e) = serde_json::to_writer(&mut writer, value) {
            return Err(if e.is_io() {
                Error::Io { op: IoOp::Write, path: tmp.to_owned(), source: e.into() }
            } else {
                Error::Serialize { key: header.key().clone(), source: e }
            });
        }
        let done = writer.finish().map_err(io_err(IoOp::Write, tmp))?;
        let mut file = done.inner;
        self.fs.sync_file(&mut file).map_err(io_err(IoOp::SyncFile, tmp))?;
        drop(file);
        Ok((done.digest, done.len))
    }

    /// Refuses a symlink, directory or special file at a stash path.
    fn expect_file_or_nothing(&self, path: &Path) -> Result<bool> {
        match self.fs.metadata(path).map_err(io_err(IoOp::Inspect, path))? {
            None => Ok(false),
            Some(FileKind::File) => Ok(true),
            Some(found) => {
                Err(Error::NotAFile { path: path.to_owned(), found, expected: FileKind::File })
            }
        }
    }

    /// Once per store: fsyncs every ancestor of the directory, so that the
    /// directory itself is durably reachable even if whoever created it
    /// (another process, or an earlier failed save) never synced it.
    fn sync_chain(&self) -> Result<()> {
        if self.chain_synced.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut cur = self.dir.as_path();
        while let Some(parent) = cur.parent() {
            let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
            match self.fs.sync_dir(parent) {
                Ok(()) => {}
                // An ancestor this user may pass through but not open (mode
                // 0711, say) cannot be synced by anyone but its owner; it
                // was not created by this store.
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {}
                Err(e) => return Err(io_err(IoOp::SyncDir, parent)(e)),
            }
            if parent == Path::new(".") {
                break;
            }
            cur = parent;
        }
        self.chain_synced.store(true, Ordering::Release);
        Ok(())
    }

    /// Creates the store's directory and missing parents, each fsynced into
    /// its parent.
    fn ensure_dir(&self) -> Result<()> {
        let mut missing = Vec::new();
        let mut cur = self.dir.as_path();
        loop {
            match self.fs.metadata(cur).map_err(io_err(IoOp::Inspect, cur))? {
                Some(FileKind::Dir | FileKind::Symlink) => break,
                Some(found) => {
                    return Err(Error::NotAFile {
                        path: cur.to_owned(),
                        found,
                        expected: FileKind::Dir,
                    });
                }
                None => missing.push(cur),
            }
            match cur.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => cur = parent,
                _ => break,
            }
        }
        for dir in missing.into_iter().rev() {
            match self.fs.create_dir(dir) {
                Ok(()) => {}
                // Another writer created it first; it syncs it too, but so do we.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err(IoOp::CreateDir, dir)(e)),
            }
            let parent = match dir.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            self.fs.sync_dir(parent).map_err(io_err(IoOp::SyncDir, parent))?;
        }
        Ok(())
    }

    /// Takes `key`'s lock; with `create_dir`, creates the store's directory
    /// first if it is missing.
    fn acquire(&self, key: &StashKey, wait: bool, create_dir: bool) -> Result<KeyLock<'_, F>> {
        let path = self.lock_path(key);
        let held = match self.fs.lock(&path, wait) {
            Err(e) if create_dir && e.kind() == io::ErrorKind::NotFound => {
                self.ensure_dir()?;
                self.fs.lock(&path, wait)
            }
            other => other,
        };
        match held.map_err(io_err(IoOp::Lock, &path))? {
            Some(held) => Ok(KeyLock { store: self, key: key.clone(), _held: held }),
            None => Err(Error::Locked { key: key.clone(), path }),
        }
    }

    /// Waits for and takes `key`'s advisory lock, creating the store's
    /// directory if needed. See [`KeyLock`].
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the directory or lock file cannot be created or locked.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// let lock = store.lock(&safestash::StashKey::new("k")?)?;
    /// lock.save(&"under the lock")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lock(&self, key: &StashKey) -> Result<KeyLock<'_, F>> {
        self.acquire(key, true, true)
    }

    /// Takes `key`'s advisory lock if nobody holds it.
    ///
    /// # Errors
    ///
    /// [`Error::Locked`] when another holder has it; otherwise as
    /// [`lock`](Store::lock).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// let key = safestash::StashKey::new("k")?;
    /// let held = store.try_lock(&key)?;
    /// assert!(matches!(store.try_lock(&key), Err(safestash::Error::Locked { .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_lock(&self, key: &StashKey) -> Result<KeyLock<'_, F>> {
        self.acquire(key, false, true)
    }

    /// Loads and verifies `key`'s stash.
    ///
    /// `Ok(None)` means there is no stash (and nothing is created). A file
    /// that is damaged, truncated, written for another key, or not a stash is
    /// an error, never `None`.
    ///
    /// # Errors
    ///
    /// - [`Error::Corrupt`] when the file fails verification;
    /// - [`Error::UnsupportedVersion`] for an intact file of a newer format;
    /// - [`Error::NotAFile`] when a symlink, directory or special file is at
    ///   the path (never followed);
    /// - [`Error::Deserialize`] when the intact payload is not a `T`;
    /// - [`Error::Io`] when reading fails.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// let key = safestash::StashKey::new("k")?;
    /// assert!(store.load::<Vec<u8>>(&key)?.is_none());
    /// store.save(&key, &Vec::<u8>::new())?;
    /// assert_eq!(store.load::<Vec<u8>>(&key)?.unwrap().value(), &Vec::<u8>::new());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn load<T: DeserializeOwned>(&self, key: &StashKey) -> Result<Option<Stashed<T>>> {
        let Some((meta, payload)) = self.open_verified(key, LOAD_WHOLE_LIMIT)? else {
            return Ok(None);
        };
        let parsed = match payload {
            Payload::Bytes { bytes, range } => serde_json::from_slice(&bytes[range]),
            Payload::InFile { mut reader, offset, len } => {
                reader.seek(SeekFrom::Start(offset)).map_err(io_err(IoOp::Read, &meta.path))?;
                let limited = BufReader::with_capacity(1 << 20, reader.take(len));
                serde_json::from_reader(limited)
            }
        };
        match parsed {
            Ok(value) => Ok(Some(Stashed { value, meta })),
            Err(e) if e.is_io() => {
                Err(Error::Io { op: IoOp::Read, path: meta.path, source: e.into() })
            }
            Err(source) => Err(Error::Deserialize { path: meta.path, source }),
        }
    }

    /// Opens and fully verifies `key`'s stash, in memory if it is at most
    /// `whole_limit` bytes, else in a streaming pass.
    fn open_verified(
        &self,
        key: &StashKey,
        whole_limit: u64,
    ) -> Result<Option<(StashMeta, Payload<F::Reader>)>> {
        let path = self.path_of(key);
        let (mut reader, len) = match self.fs.open_read(&path).map_err(io_err(IoOp::Open, &path))? {
            Opened::Missing => return Ok(None),
            Opened::NotAFile(found) => {
                return Err(Error::NotAFile { path, found, expected: FileKind::File });
            }
            Opened::File { reader, len } => (reader, len),
        };
        let decode_err = |path: &Path, e: DecodeError| match e {
            DecodeError::Corrupt(reason) => Error::Corrupt { path: path.to_owned(), reason },
            DecodeError::UnsupportedVersion(version) => {
                Error::UnsupportedVersion { path: path.to_owned(), version }
            }
        };
        let (header, digest, payload) = if len <= whole_limit {
            // The length bounds the allocation and the read, even if the file grows.
            let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
            (&mut reader).take(len).read_to_end(&mut bytes).map_err(io_err(IoOp::Read, &path))?;
            let decoded = envelope::decode(&bytes).map_err(|e| decode_err(&path, e))?;
            let end = bytes.len() - envelope::TRAILER_LEN;
            let range = end - decoded.payload.len()..end;
            let (header, digest) = (decoded.header, decoded.digest);
            (header, digest, Payload::Bytes { bytes, range })
        } else {
            let layout = envelope::verify_reader(&mut reader, len)
                .map_err(io_err(IoOp::Read, &path))?
                .map_err(|e| decode_err(&path, e))?;
            let payload =
                Payload::InFile { reader, offset: layout.payload_offset, len: layout.payload_len };
            (layout.header, layout.digest, payload)
        };
        if header.key() != key {
            let reason = Corruption::KeyMismatch {
                expected: key.to_string(),
                found: header.key().to_string(),
            };
            return Err(Error::Corrupt { path, reason });
        }
        Ok(Some((StashMeta { header, digest, size: len, path }, payload)))
    }

    /// Removes `key`'s stash. Idempotent: returns whether a stash was removed.
    /// The absence is durable when it returns, even when there was nothing to
    /// remove (the directory is fsynced either way, since an earlier failed
    /// clear may have left its removal pending).
    ///
    /// Creates nothing: a missing directory or stash is `Ok(false)`.
    ///
    /// # Errors
    ///
    /// [`Error::NotAFile`] when a symlink, directory or special file is at the
    /// path; [`Error::Io`] when removing or syncing fails.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// let key = safestash::StashKey::new("k")?;
    /// store.save(&key, &1)?;
    /// assert!(store.clear(&key)?);
    /// assert!(!store.clear(&key)?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn clear(&self, key: &StashKey) -> Result<bool> {
        if !self.expect_file_or_nothing(&self.path_of(key))? {
            self.sync_absence()?;
            return Ok(false);
        }
        let removed = {
            let _lock = self.acquire(key, true, false)?;
            self.clear_locked(key)?
        };
        if removed {
            notify(&self.observers, &Event::Cleared { key });
        }
        Ok(removed)
    }

    /// Removes `key`'s stash only if it is still the one with `digest` (the
    /// digest in a [`Receipt`]): a conditional clear, so a worker never
    /// removes a stash another worker has since written. Returns whether it
    /// removed the stash. Takes the key's lock; reads only the trailer.
    ///
    /// # Errors
    ///
    /// As [`clear`](Store::clear).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// let key = safestash::StashKey::new("k")?;
    /// let mine = store.save(&key, &"mine")?;
    /// store.save(&key, &"another worker's")?;
    /// assert!(!store.clear_if(&key, &mine.digest)?); // not mine any more: kept
    /// assert!(store.load::<String>(&key)?.is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn clear_if(&self, key: &StashKey, digest: &Digest) -> Result<bool> {
        if !self.expect_file_or_nothing(&self.path_of(key))? {
            self.sync_absence()?;
            return Ok(false);
        }
        let removed = {
            let _lock = self.acquire(key, true, false)?;
            match self.recorded_digest(key)? {
                Some(found) if found == *digest => self.clear_locked(key)?,
                _ => {
                    tracing::info!(key = %key, "stash not cleared: another writer's stash is in place");
                    false
                }
            }
        };
        if removed {
            notify(&self.observers, &Event::Cleared { key });
        }
        Ok(removed)
    }

    /// The digest in the trailer of `key`'s file, if it has a valid trailer.
    fn recorded_digest(&self, key: &StashKey) -> Result<Option<Digest>> {
        let path = self.path_of(key);
        let (mut reader, len) = match self.fs.open_read(&path).map_err(io_err(IoOp::Open, &path))? {
            Opened::File { reader, len } => (reader, len),
            Opened::Missing => return Ok(None),
            Opened::NotAFile(found) => {
                return Err(Error::NotAFile { path, found, expected: FileKind::File });
            }
        };
        let Some(start) = len.checked_sub(envelope::TRAILER_LEN as u64) else {
            return Ok(None);
        };
        let mut trailer = [0u8; envelope::TRAILER_LEN];
        reader.seek(SeekFrom::Start(start)).map_err(io_err(IoOp::Read, &path))?;
        reader.read_exact(&mut trailer).map_err(io_err(IoOp::Read, &path))?;
        Ok(envelope::recorded_digest(&trailer))
    }

    /// Makes "no stash here" durable: an earlier removal or rename that
    /// failed before its directory fsync may still be pending. A missing
    /// directory has nothing to sync.
    fn sync_absence(&self) -> Result<()> {
        match self.fs.sync_dir(&self.dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(io_err(IoOp::SyncDir, &self.dir)(e))
            }
            _ => Ok(()),
        }
    }

    pub(crate) fn clear_locked(&self, key: &StashKey) -> Result<bool> {
        let path = self.path_of(key);
        if !self.expect_file_or_nothing(&path)? {
            self.sync_absence()?;
            return Ok(false);
        }
        match self.fs.remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.sync_absence()?;
                return Ok(false);
            }
            Err(e) => return Err(io_err(IoOp::Remove, &path)(e)),
        }
        self.fs.sync_dir(&self.dir).map_err(io_err(IoOp::SyncDir, &self.dir))?;
        tracing::info!(key = %key, "stash cleared");
        Ok(true)
    }

    /// Moves `key`'s stash aside to `.KEY.quarantined.TIMESTAMP` in the same
    /// directory, for inspection, and returns the new path (`None` if there
    /// was no stash). The file is not read: this works on damaged stashes.
    /// After it, `load` finds no stash and [`list`](Store::list) skips the
    /// file.
    ///
    /// # Errors
    ///
    /// [`Error::NotAFile`] when a symlink, directory or special file is at the
    /// path; [`Error::Io`] / [`Error::Rename`] when a filesystem call fails.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// let key = safestash::StashKey::new("k")?;
    /// std::fs::write(store.path_of(&key), b"garbage")?;
    /// assert!(store.load::<i32>(&key).is_err());
    /// let aside = store.quarantine(&key)?.unwrap();
    /// assert_eq!(std::fs::read(aside)?, b"garbage");
    /// assert!(store.load::<i32>(&key)?.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn quarantine(&self, key: &StashKey) -> Result<Option<PathBuf>> {
        if !self.expect_file_or_nothing(&self.path_of(key))? {
            self.sync_absence()?;
            return Ok(None);
        }
        let _lock = self.acquire(key, true, false)?;
        self.quarantine_locked(key)
    }

    pub(crate) fn quarantine_locked(&self, key: &StashKey) -> Result<Option<PathBuf>> {
        let path = self.path_of(key);
        if !self.expect_file_or_nothing(&path)? {
            self.sync_absence()?;
            return Ok(None);
        }
        let stamp = humantime::format_rfc3339_nanos(SystemTime::now()).to_string().replace(':', "");
        let base = format!(".{key}{QUARANTINE_INFIX}{stamp}");
        // Quarantine names are only made under the key's lock, so checking
        // for a free name first cannot race with another quarantine.
        let mut aside = self.dir.join(&base);
        let mut n = 1;
        while self.fs.metadata(&aside).map_err(io_err(IoOp::Inspect, &aside))?.is_some() {
            aside = self.dir.join(format!("{base}-{n}"));
            n += 1;
        }
        self.fs.rename(&path, &aside).map_err(|source| Error::Rename {
            from: path.clone(),
            to: aside.clone(),
            source,
        })?;
        self.fs.sync_dir(&self.dir).map_err(io_err(IoOp::SyncDir, &self.dir))?;
        Ok(Some(aside))
    }

    /// The stash keys present, from the directory's file names: every name
    /// that is a valid key. The store's own dot-files and names that are not
    /// keys are skipped. A missing directory has no stashes.
    fn entries(&self) -> Result<Vec<(StashKey, FileKind)>> {
        let entries = match self.fs.read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(IoOp::ReadDir, &self.dir)(e)),
        };
        let mut keys: Vec<_> = entries
            .into_iter()
            .filter_map(|entry| {
                let name = entry.name.into_string().ok()?;
                Some((StashKey::new(name).ok()?, entry.kind))
            })
            .collect();
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(keys)
    }

    /// Lists every stash with its header, sorted by key, reading only the
    /// magic line and header of each file (at most
    /// [`MAX_PREFIX_LEN`](crate::envelope::MAX_PREFIX_LEN) bytes). Damaged or foreign entries are listed with
    /// the reason in [`StashInfo::header`]; the digest is not checked (use
    /// [`verify`](Store::verify)).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the directory cannot be listed. Errors reading one
    /// entry are reported in that entry.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// # use safestash::StashKey;
    /// store.save(&StashKey::new("b")?, &1)?;
    /// store.save(&StashKey::new("a")?, &2)?;
    /// let keys: Vec<String> = store.list()?.into_iter().map(|i| i.key.into_string()).collect();
    /// assert_eq!(keys, ["a", "b"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn list(&self) -> Result<Vec<StashInfo>> {
        Ok(self
            .entries()?
            .into_iter()
            .map(|(key, kind)| {
                let path = self.path_of(&key);
                let (size, header) = self.read_header_of(&path, kind);
                StashInfo { key, path, size, header }
            })
            .collect())
    }

    fn read_header_of(&self, path: &Path, kind: FileKind) -> (u64, Result<Header>) {
        if kind != FileKind::File {
            return (
                0,
                Err(Error::NotAFile {
                    path: path.to_owned(),
                    found: kind,
                    expected: FileKind::File,
                }),
            );
        }
        let (reader, len) = match self.fs.open_read(path) {
            Ok(Opened::File { reader, len }) => (reader, len),
            Ok(Opened::Missing) => {
                let e = io::Error::from(io::ErrorKind::NotFound);
                return (0, Err(io_err(IoOp::Open, path)(e)));
            }
            Ok(Opened::NotAFile(found)) => {
                return (
                    0,
                    Err(Error::NotAFile { path: path.to_owned(), found, expected: FileKind::File }),
                );
            }
            Err(e) => return (0, Err(io_err(IoOp::Open, path)(e))),
        };
        let mut prefix = Vec::with_capacity(MAX_PREFIX_LEN);
        if let Err(e) = reader.take(MAX_PREFIX_LEN as u64).read_to_end(&mut prefix) {
            return (len, Err(io_err(IoOp::Read, path)(e)));
        }
        let header = envelope::read_header(&prefix).map_err(|e| match e {
            DecodeError::Corrupt(reason) => Error::Corrupt { path: path.to_owned(), reason },
            DecodeError::UnsupportedVersion(version) => {
                Error::UnsupportedVersion { path: path.to_owned(), version }
            }
        });
        (len, header)
    }

    /// Fully verifies every stash (digest, header, key), without
    /// deserializing payloads. Sorted by key.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the directory cannot be listed. Each entry's own
    /// problem is in its [`VerifyReport::result`].
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// # use safestash::StashKey;
    /// store.save(&StashKey::new("good")?, &1)?;
    /// std::fs::write(dir.path().join("bad"), b"garbage")?;
    /// let report = store.verify()?;
    /// let bad: Vec<&str> = report.iter().filter(|r| r.result.is_err()).map(|r| r.key.as_str()).collect();
    /// assert_eq!(bad, ["bad"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn verify(&self) -> Result<Vec<VerifyReport>> {
        Ok(self
            .entries()?
            .into_iter()
            .map(|(key, _)| {
                let path = self.path_of(&key);
                let result = match self.open_verified(&key, VERIFY_WHOLE_LIMIT) {
                    Ok(Some((meta, _))) => Ok(meta),
                    Ok(None) => Err(io_err(IoOp::Open, &path)(io::ErrorKind::NotFound.into())),
                    Err(e) => Err(e),
                };
                VerifyReport { key, path, result }
            })
            .collect())
    }

    /// Removes temp files left by writers that crashed mid-save, and returns
    /// their paths. A temp file is only removed when its key's lock is free,
    /// so a save in progress (in any process) is never disturbed. Temp files
    /// are never read as stashes whether or not this runs.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the directory cannot be listed, a lock taken, a file
    /// removed, or the directory synced. A failure on one temp file does not
    /// stop the others from being removed (and the removals made durable);
    /// the first such error is returned after the walk.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// // What a writer killed mid-save leaves behind:
    /// std::fs::write(dir.path().join(".k.Ab3dE5gH.tmp"), b"half a stash")?;
    /// assert_eq!(store.cleanup()?, [dir.path().join(".k.Ab3dE5gH.tmp")]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn cleanup(&self) -> Result<Vec<PathBuf>> {
        let entries = match self.fs.read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(IoOp::ReadDir, &self.dir)(e)),
        };
        let mut removed = Vec::new();
        let mut first_error = None;
        for entry in entries {
            let Some(key) = entry.name.to_str().and_then(temp_file_key) else {
                continue;
            };
            let path = self.dir.join(&entry.name);
            // A live writer holds the key's lock for as long as its temp file exists.
            let outcome = match self.acquire(&key, false, false) {
                Err(Error::Locked { .. }) => continue,
                Err(e) => Err(e),
                Ok(_lock) => match self.fs.remove_file(&path) {
                    Ok(()) => {
                        removed.push(path);
                        Ok(())
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(io_err(IoOp::Remove, &path)(e)),
                },
            };
            // One bad entry does not stop the others from being cleaned.
            if let Err(e) = outcome {
                first_error.get_or_insert(e);
            }
        }
        if !removed.is_empty() {
            self.fs.sync_dir(&self.dir).map_err(io_err(IoOp::SyncDir, &self.dir))?;
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        removed.sort();
        Ok(removed)
    }
}

/// The key of a temp file name `.KEY.XXXXXXXX.tmp` (a save in progress, or
/// one a crashed writer left), if `name` is one; see `docs/FORMAT.md`.
///
/// # Examples
///
/// ```
/// use safestash::temp_file_key;
///
/// assert_eq!(temp_file_key(".orders.Ab3dE5gH.tmp").unwrap().as_str(), "orders");
/// assert!(temp_file_key("orders").is_none());
/// assert!(temp_file_key(".orders.lock").is_none());
/// ```
pub fn temp_file_key(name: &str) -> Option<StashKey> {
    let inner = name.strip_prefix('.')?.strip_suffix(TEMP_SUFFIX)?;
    let (key, rand) = inner.rsplit_once('.')?;
    if rand.len() != TEMP_RAND_LEN || !rand.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    StashKey::new(key).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_recognised_exactly() {
        assert_eq!(temp_file_key(".a.b.Ab3dE5gH.tmp").unwrap().as_str(), "a.b");
        for not in [
            ".a.Ab3dE5g.tmp",
            "a.Ab3dE5gH.tmp",
            ".a.Ab3dE5gH.tmpx",
            ".a.lock",
            ".Ab3dE5gH.tmp",
            "..Ab3dE5gH.tmp",
        ] {
            assert!(temp_file_key(not).is_none(), "{not}");
        }
    }
}
