//! [`KeyLock`]: a held per-key lock, and the store verbs that take one.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::thread::{self, ThreadId};

use super::*;

/// The lock files each thread of this process holds, so a thread that asks
/// again for a lock it holds (a hook or observer that calls back into the
/// store under a [`KeyLock`]) gets an error instead of waiting for itself.
static CLAIMS: Mutex<Option<HashSet<(PathBuf, ThreadId)>>> = Mutex::new(None);

#[derive(Debug)]
pub(super) struct ThreadClaim(PathBuf, ThreadId);

impl ThreadClaim {
    /// Claims `path` for this thread; `None` if this thread already holds it.
    fn new(path: &Path) -> Option<ThreadClaim> {
        let id = thread::current().id();
        let mut claims = CLAIMS.lock().unwrap_or_else(PoisonError::into_inner);
        let set = claims.get_or_insert_with(HashSet::new);
        set.insert((path.to_owned(), id)).then(|| ThreadClaim(path.to_owned(), id))
    }
}

impl Drop for ThreadClaim {
    fn drop(&mut self) {
        let mut claims = CLAIMS.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(set) = claims.as_mut() {
            let entry = (std::mem::take(&mut self.0), self.1);
            set.remove(&entry);
        }
    }
}

/// A held lock on one key, from [`Store::lock`] or [`Store::try_lock`].
///
/// The lock is an advisory `flock` on the file `.KEY.lock` in the store's
/// directory: it excludes other holders in this and other processes that use
/// safestash (or `flock` the same file), not a program that writes the stash
/// file without asking. It is released when the guard is dropped, and by the
/// kernel when the process dies.
///
/// [`Store::save`] and [`Store::clear`] take the key's lock themselves; while
/// you hold a `KeyLock`, use its own [`save`](KeyLock::save) and
/// [`clear`](KeyLock::clear), since taking the same lock again from the same
/// thread would wait forever.
///
/// # Examples
///
/// ```
/// use safestash::{StashKey, Store};
///
/// let dir = tempfile::tempdir()?;
/// let store = Store::open(dir.path())?;
/// let key = StashKey::new("job")?;
/// let lock = store.lock(&key)?;
/// // No other worker can save or clear `job` until `lock` is dropped.
/// assert!(store.try_lock(&key).is_err());
/// lock.save(&vec![1, 2, 3])?;
/// drop(lock);
/// assert!(store.try_lock(&key).is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "the lock is released when the guard is dropped"]
pub struct KeyLock<F: Fs = OsFs> {
    pub(crate) store: Store<F>,
    pub(crate) key: StashKey,
    // Declared in this order so the flock is released before this thread's
    // claim on the path is dropped.
    pub(super) held: Box<dyn crate::backend::Held>,
    _claim: ThreadClaim,
    /// The fork generation it was taken in (see [`crate::fork`]).
    generation: u64,
}

impl<F: Fs> fmt::Debug for KeyLock<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyLock").field("key", &self.key).finish_non_exhaustive()
    }
}

impl<F: Fs> KeyLock<F> {
    /// The locked key.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// let key = safestash::StashKey::new("k")?;
    /// assert_eq!(store.lock(&key)?.key(), &key);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn key(&self) -> &StashKey {
        &self.key
    }

    /// Whether this process holds the lock: `false` in a forked child that
    /// inherited it from its parent ([`crate::fork::after_fork_in_child`]),
    /// where it is the parent's lock still, and dropping it releases
    /// nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// let lock = store.lock(&safestash::StashKey::new("k")?)?;
    /// assert!(lock.is_held());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_held(&self) -> bool {
        self.generation == crate::fork::generation()
    }

    /// Refuses a change through a lock this process does not hold (one a
    /// forked child inherited): the parent holds it.
    fn check_held(&self) -> Result<()> {
        if self.is_held() {
            return Ok(());
        }
        Err(Error::Locked { key: self.key.clone(), path: self.store.lock_path(&self.key) })
    }

    /// [`Store::save`] under this lock.
    ///
    /// # Errors
    ///
    /// As [`Store::save`]; [`Error::Locked`] in a forked child that inherited
    /// the lock ([`is_held`](KeyLock::is_held) is false there).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// # let key = safestash::StashKey::new("k")?;
    /// store.lock(&key)?.save(&"value")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn save<T: Serialize + ?Sized>(&self, value: &T) -> Result<Receipt> {
        self.save_with(value, &SaveOptions::default())
    }

    /// [`Store::save_with`] under this lock.
    ///
    /// # Errors
    ///
    /// As [`Store::save_with`]; [`Error::Locked`] in a forked child that inherited
    /// the lock ([`is_held`](KeyLock::is_held) is false there).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// # let key = safestash::StashKey::new("k")?;
    /// let opts = safestash::SaveOptions::new().origin("job-7");
    /// store.lock(&key)?.save_with(&"value", &opts)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn save_with<T: Serialize + ?Sized>(
        &self,
        value: &T,
        opts: &SaveOptions,
    ) -> Result<Receipt> {
        self.check_held()?;
        self.store.save_via(self.held.backend(), &self.key, value, opts, Precondition::Any)
    }

    /// [`Store::clear`] under this lock.
    ///
    /// # Errors
    ///
    /// As [`Store::clear`]; [`Error::Locked`] in a forked child that inherited
    /// the lock ([`is_held`](KeyLock::is_held) is false there).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// # let key = safestash::StashKey::new("k")?;
    /// let lock = store.lock(&key)?;
    /// lock.save(&1)?;
    /// assert!(lock.clear()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn clear(&self) -> Result<bool> {
        self.check_held()?;
        let removed = self.store.delete_via(self.held.backend(), &self.key, None)?;
        if removed {
            self.store.notify(&Event::Cleared { key: &self.key });
        }
        Ok(removed)
    }

    /// [`Store::quarantine`] under this lock.
    ///
    /// # Errors
    ///
    /// As [`Store::quarantine`]; [`Error::Locked`] in a forked child that inherited
    /// the lock ([`is_held`](KeyLock::is_held) is false there).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// # let key = safestash::StashKey::new("k")?;
    /// let lock = store.lock(&key)?;
    /// lock.save(&1)?;
    /// assert!(lock.quarantine()?.is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn quarantine(&self) -> Result<Option<std::path::PathBuf>> {
        self.check_held()?;
        self.store.quarantine_via(self.held.backend(), &self.key)
    }
}

impl<F: Fs> Store<F> {
    /// [`save_if`](Store::save_if) of another key, written under `lock` (a
    /// held lock of a store with this store's backend namespace, such as a
    /// journal operation's): on a remote store through the lock's fencing,
    /// so a holder whose lease was lost or whose lock session died cannot
    /// write; on a directory under `key`'s own lock. This store's observers
    /// are told.
    pub(crate) fn save_if_under<T: Serialize + ?Sized>(
        &self,
        lock: &KeyLock<F>,
        key: &StashKey,
        value: &T,
        opts: &SaveOptions,
        expect: Precondition,
    ) -> Result<Receipt> {
        lock.check_held()?;
        // Another key than the lock's is claimed for this thread as a save
        // would; its own key is this thread's already.
        let _claim = if *key == lock.key { None } else { Some(self.claim_thread(key, true)?) };
        self.save_via(lock.held.backend(), key, value, opts, expect)
    }

    /// Takes `key`'s lock (a directory creates itself first if missing).
    fn acquire(&self, key: &StashKey, wait: bool) -> Result<KeyLock<F>> {
        self.require_locks(key)?;
        let path = self.lock_path(key);
        let claim = self.claim_path(key, &path, wait)?;
        match self.backend.lock(key, wait)? {
            Some(held) => Ok(KeyLock {
                store: self.clone(),
                key: key.clone(),
                held,
                _claim: claim,
                generation: crate::fork::generation(),
            }),
            None => Err(Error::Locked { key: key.clone(), path }),
        }
    }

    /// Refuses, with a typed error, a lock on a backend that has none
    /// (asking an object store would misbehave).
    pub(super) fn require_locks(&self, key: &StashKey) -> Result<()> {
        if self.backend.has_locks() {
            return Ok(());
        }
        Err(Error::Backend {
            op: BackendOp::Lock,
            target: self.path_of(key).display().to_string(),
            source: "this store's backend has no per-key locks".into(),
        })
    }

    /// This thread's claim on `key`'s lock: a second lock from this thread
    /// on a lock it holds would wait for itself forever, so it is refused
    /// with an error that says so.
    pub(super) fn claim_thread(&self, key: &StashKey, wait: bool) -> Result<ThreadClaim> {
        self.claim_path(key, &self.lock_path(key), wait)
    }

    /// [`claim_thread`](Store::claim_thread) with the lock's path at hand.
    fn claim_path(&self, key: &StashKey, path: &Path, wait: bool) -> Result<ThreadClaim> {
        ThreadClaim::new(path).ok_or_else(|| {
            let path = path.to_owned();
            if wait {
                Error::LockedByThisThread { key: key.clone(), path }
            } else {
                Error::Locked { key: key.clone(), path }
            }
        })
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
    pub fn lock(&self, key: &StashKey) -> Result<KeyLock<F>> {
        self.acquire(key, true)
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
    pub fn try_lock(&self, key: &StashKey) -> Result<KeyLock<F>> {
        self.acquire(key, false)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::backend::{Backend, Fetched, Held, Listed, Outcome, Precondition};
    use crate::digest::Digest;
    use crate::error::{BackendOp, Error, Result};
    use crate::fs::OsFs;
    use crate::key::StashKey;
    use crate::store::Store;

    /// A backend with no locks whose every call fails, so the test shows
    /// that `lock` never reaches it.
    #[derive(Debug)]
    struct NoLocks;

    fn refused<T>() -> Result<T> {
        Err(Error::Backend {
            op: BackendOp::Use,
            target: "nolocks://ns".into(),
            source: "not here".into(),
        })
    }

    impl Backend for NoLocks {
        fn location(&self) -> &str {
            "nolocks://ns"
        }
        fn put(&self, _: &StashKey, _: &[u8], _: &Digest, _: Precondition) -> Result<Outcome> {
            refused()
        }
        fn get(&self, _: &StashKey) -> Result<Option<Fetched>> {
            refused()
        }
        fn delete(&self, _: &StashKey, _: Precondition) -> Result<Outcome> {
            refused()
        }
        fn list(&self, _: usize) -> Result<Vec<Listed>> {
            refused()
        }
        fn has_locks(&self) -> bool {
            false
        }
        fn lock(&self, _: &StashKey, _: bool) -> Result<Option<Box<dyn Held>>> {
            refused()
        }
        fn move_aside(&self, _: &StashKey, _: &str) -> Result<bool> {
            refused()
        }
        fn child(&self, _: &str) -> Box<dyn Backend> {
            Box::new(NoLocks)
        }
        fn children(&self) -> Result<Vec<String>> {
            refused()
        }
    }

    #[test]
    fn lock_on_a_backend_without_locks_is_a_typed_error() {
        let store = Store::over_backend(Arc::new(NoLocks), OsFs, Vec::new());
        let key = StashKey::new("k").unwrap();
        for result in [store.lock(&key).map(drop), store.try_lock(&key).map(drop)] {
            match result {
                Err(Error::Backend { op: BackendOp::Lock, target, source }) => {
                    assert_eq!(target, "nolocks://ns/k");
                    assert!(source.to_string().contains("no per-key locks"), "{source}");
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
