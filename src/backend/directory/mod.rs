//! [`Directory`]: the local directory store, as a [`Backend`].
//!
//! One file per stash in one directory, over the [`Fs`] seam, so a
//! simulated filesystem (and the crash harness) sees every call. The
//! protocols, file by file:
//!
//! - `write.rs`: a save (temp file, `fsync`, `rename`,
//!   directory `fsync`), a batch (every temp file first, then the renames,
//!   one directory `fsync`), clear and quarantine;
//! - `read.rs`: reading an envelope, listing the directory's
//!   entries, the reserved namespaces, and cleaning up leftovers;
//! - this file: opening, per-key locks and the lock holder's view.

mod read;
mod write;

pub use write::FLUSH_GROUP;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::{Backend, BatchOutcome, BatchPut, Entry, Fetched, Fill, Held, Listed, Outcome};
use super::{Precondition, WholeRead};
use crate::digest::Digest;
use crate::error::{Error, IoOp, Result};
use crate::fs::{FileKind, Fs, OsFs};
use crate::key::StashKey;
use crate::names;

pub(crate) fn io_err(op: IoOp, path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io { op, path: path.to_owned(), source }
}

/// A directory of stashes on a filesystem: the default backend
/// ([`Store::open`](crate::Store::open) is a store over one).
///
/// Creates nothing when opened: the first save creates the directory and
/// any missing parents (mode 0700), each fsynced into its parent, and
/// fsyncs every ancestor once (an earlier writer may have created the
/// chain and crashed before making it durable).
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use safestash::backend::Directory;
/// use safestash::{StashKey, Store};
///
/// let dir = tempfile::tempdir()?;
/// let store = Store::with_backend(Arc::new(Directory::open(dir.path().join("stashes"))?));
/// let key = StashKey::new("k")?;
/// store.save(&key, &[1, 2, 3])?;
/// assert_eq!(store.load::<Vec<u8>>(&key)?.unwrap().value(), &[1, 2, 3]);
/// assert!(dir.path().join("stashes/k").is_file());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Directory<F: Fs = OsFs> {
    dir: PathBuf,
    location: String,
    fs: F,
    /// Whether every ancestor of `dir` has been fsynced (done before the
    /// first save through this directory or any of its views).
    chain_synced: Arc<AtomicBool>,
    /// The key whose lock the holder of this view has: its changes run
    /// without taking that lock again (see [`Held::backend`]).
    locked: Option<StashKey>,
}

impl<F: Fs> Clone for Directory<F> {
    fn clone(&self) -> Self {
        Directory {
            dir: self.dir.clone(),
            location: self.location.clone(),
            fs: self.fs.clone(),
            chain_synced: self.chain_synced.clone(),
            locked: self.locked.clone(),
        }
    }
}

impl<F: Fs> fmt::Debug for Directory<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Directory")
            .field("dir", &self.dir)
            .field("fs", &self.fs)
            .field("locked", &self.locked)
            .finish()
    }
}

impl Directory<OsFs> {
    /// The directory `dir` on the real filesystem.
    ///
    /// # Errors
    ///
    /// [`Error::NotAFile`] when something other than a directory is at
    /// `dir`; [`Error::Io`] when `dir` cannot be inspected.
    ///
    /// # Examples
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let stashes = safestash::backend::Directory::open(dir.path().join("not/yet"))?;
    /// assert_eq!(stashes.dir(), dir.path().join("not/yet"));
    /// assert!(!dir.path().join("not").exists());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(dir: impl AsRef<Path>) -> Result<Directory> {
        Directory::with_fs(dir, OsFs)
    }
}

impl<F: Fs> Directory<F> {
    /// The directory `dir` on the filesystem `fs` (a simulator, say).
    ///
    /// # Errors
    ///
    /// As [`Directory::open`].
    ///
    /// # Examples
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let stashes = safestash::backend::Directory::with_fs(dir.path(), safestash::fs::OsFs)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_fs(dir: impl AsRef<Path>, fs: F) -> Result<Directory<F>> {
        let dir = dir.as_ref().to_owned();
        match fs.metadata(&dir).map_err(io_err(IoOp::Inspect, &dir))? {
            // A symlink to the store's directory is the caller's choice.
            None | Some(FileKind::Dir | FileKind::Symlink) => Ok(Directory::unchecked(dir, fs)),
            Some(found) => Err(Error::NotAFile { path: dir, found, expected: FileKind::Dir }),
        }
    }

    /// `dir`, inspected by nobody yet (a reserved namespace's, made by the
    /// library itself: the first call finds out what is there).
    pub(crate) fn unchecked(dir: PathBuf, fs: F) -> Directory<F> {
        Directory {
            location: dir.to_string_lossy().into_owned(),
            dir,
            fs,
            chain_synced: Arc::new(AtomicBool::new(false)),
            locked: None,
        }
    }

    /// The directory's path.
    ///
    /// # Examples
    ///
    /// ```
    /// let stashes = safestash::backend::Directory::open("/tmp/stashes")?;
    /// assert_eq!(stashes.dir(), std::path::Path::new("/tmp/stashes"));
    /// # Ok::<(), safestash::Error>(())
    /// ```
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_of(&self, key: &StashKey) -> PathBuf {
        self.dir.join(key.as_str())
    }

    fn lock_path(&self, key: &StashKey) -> PathBuf {
        self.dir.join(names::lock_name(key))
    }

    /// Takes `key`'s `flock`, unless this is the view of its holder;
    /// creates the directory first when `create_dir` and it is missing.
    fn take_lock(&self, key: &StashKey, wait: bool, create_dir: bool) -> Result<Option<Lock<F>>> {
        if self.locked.as_ref() == Some(key) {
            return Ok(Some(Lock(None)));
        }
        Ok(self.flock(key, wait, create_dir)?.map(|l| Lock(Some(l))))
    }

    /// `key`'s `flock` on `.KEY.lock`; `None` when another holder has it.
    /// With `create_dir`, a missing directory is created first.
    fn flock(&self, key: &StashKey, wait: bool, create_dir: bool) -> Result<Option<F::Lock>> {
        let path = self.lock_path(key);
        let held = match self.fs.lock(&path, wait) {
            Err(e) if create_dir && e.kind() == io::ErrorKind::NotFound => {
                self.ensure_dir()?;
                self.fs.lock(&path, wait)
            }
            other => other,
        };
        held.map_err(io_err(IoOp::Lock, &path))
    }

    /// `key`'s lock taken, waiting; `Error::Locked` is never the answer.
    fn wait_lock(&self, key: &StashKey, create_dir: bool) -> Result<Lock<F>> {
        self.take_lock(key, true, create_dir)?
            .ok_or_else(|| Error::Locked { key: key.clone(), path: self.lock_path(key) })
    }
}

/// A taken `flock`, or nothing on the holder's own view.
struct Lock<F: Fs>(#[allow(dead_code)] Option<F::Lock>);

/// A held per-key lock of a [`Directory`]: its `flock`, and the view its
/// changes go through.
struct DirectoryHeld<F: Fs> {
    view: Directory<F>,
    _lock: F::Lock,
}

impl<F: Fs> fmt::Debug for DirectoryHeld<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectoryHeld").field("view", &self.view).finish_non_exhaustive()
    }
}

impl<F: Fs> Held for DirectoryHeld<F> {
    fn backend(&self) -> &dyn Backend {
        &self.view
    }
}

impl<F: Fs> Backend for Directory<F> {
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
        self.put_with(key, cond, &mut |sink: &mut dyn io::Write| {
            sink.write_all(envelope).map_err(io_err(IoOp::Write, &self.path_of(key)))?;
            Ok(*digest)
        })
    }

    fn put_with(&self, key: &StashKey, cond: Precondition, fill: &mut Fill<'_>) -> Result<Outcome> {
        self.save(key, cond, fill)
    }

    fn put_batch(&self, puts: &[BatchPut<'_>]) -> BatchOutcome {
        self.save_batch(puts)
    }

    fn get(&self, key: &StashKey) -> Result<Option<Fetched>> {
        self.fetch(key)
    }

    fn whole_read(&self) -> WholeRead {
        WholeRead { load: read::LOAD_WHOLE_LIMIT, verify: read::VERIFY_WHOLE_LIMIT }
    }

    fn delete(&self, key: &StashKey, cond: Precondition) -> Result<Outcome> {
        self.remove(key, cond)
    }

    fn list(&self, head_len: usize) -> Result<Vec<Listed>> {
        // At least one byte read, so every file is opened and its length known.
        Ok(self
            .scan(head_len.max(1), true)?
            .into_iter()
            .filter(|e| e.kind == FileKind::File)
            .filter_map(|e| {
                let mut head = e.head.ok()?;
                head.truncate(head_len);
                Some(Listed { name: e.name, len: e.len?, head })
            })
            .collect())
    }

    fn entries(&self, head_len: usize, stashes_only: bool) -> Result<Vec<Entry>> {
        self.scan(head_len, stashes_only)
    }

    fn entry(&self, name: &str, head_len: usize) -> Result<Option<Entry>> {
        self.one_entry(name, head_len)
    }

    fn has_locks(&self) -> bool {
        true
    }

    fn lock(&self, key: &StashKey, wait: bool) -> Result<Option<Box<dyn Held>>> {
        Ok(self.flock(key, wait, true)?.map(|lock| {
            let view = Directory { locked: Some(key.clone()), ..self.clone() };
            Box::new(DirectoryHeld { view, _lock: lock }) as Box<dyn Held>
        }))
    }

    fn is_locked(&self, key: &StashKey) -> Result<bool> {
        let path = self.lock_path(key);
        if self.fs.metadata(&path).map_err(io_err(IoOp::Inspect, &path))?.is_none() {
            return Ok(false);
        }
        Ok(self.take_lock(key, false, false)?.is_none())
    }

    fn move_aside(&self, key: &StashKey, aside: &str) -> Result<bool> {
        Ok(self.quarantine(key, aside)?.is_some())
    }

    fn quarantine(&self, key: &StashKey, base: &str) -> Result<Option<String>> {
        self.set_aside(key, base)
    }

    fn child(&self, ns: &str) -> Box<dyn Backend> {
        Box::new(Directory::unchecked(self.dir.join(names::namespace_dir(ns)), self.fs.clone()))
    }

    fn children(&self) -> Result<Vec<String>> {
        self.namespaces()
    }

    fn cleanup(&self) -> Result<Vec<String>> {
        self.remove_leftovers()
    }
}
