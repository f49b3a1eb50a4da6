//! Per-key advisory locks. The only file that touches fs2.
//!
//! Since Rust 1.89 `std::fs::File` has inherent `lock`/`try_lock` methods that
//! shadow fs2's trait methods of similar names, so fs2 is always called by its
//! full path.

use std::fmt;
use std::fs::File;
use std::io;

use serde::Serialize;

use crate::error::Result;
use crate::fs::{Fs, OsFs};
use crate::key::StashKey;
use crate::meta::{Receipt, SaveOptions};
use crate::store::Store;

/// Takes an exclusive `flock` on `file`. Returns `false` if `wait` is false
/// and another open file description holds the lock.
pub(crate) fn lock_exclusive(file: &File, wait: bool) -> io::Result<bool> {
    loop {
        let result = if wait {
            fs2::FileExt::lock_exclusive(file)
        } else {
            fs2::FileExt::try_lock_exclusive(file)
        };
        match result {
            Ok(()) => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if !wait
                    && (e.kind() == io::ErrorKind::WouldBlock
                        || e.raw_os_error() == fs2::lock_contended_error().raw_os_error()) =>
            {
                return Ok(false);
            }
            Err(e) => return Err(e),
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
pub struct KeyLock<'s, F: Fs = OsFs> {
    pub(crate) store: &'s Store<F>,
    pub(crate) key: StashKey,
    pub(crate) _held: F::Lock,
}

impl<F: Fs> fmt::Debug for KeyLock<'_, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyLock").field("key", &self.key).finish_non_exhaustive()
    }
}

impl<F: Fs> KeyLock<'_, F> {
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

    /// [`Store::save`] under this lock.
    ///
    /// # Errors
    ///
    /// As [`Store::save`].
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
        self.store.save_locked(&self.key, value, &SaveOptions::default())
    }

    /// [`Store::save_with`] under this lock.
    ///
    /// # Errors
    ///
    /// As [`Store::save_with`].
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
        self.store.save_locked(&self.key, value, opts)
    }

    /// [`Store::clear`] under this lock.
    ///
    /// # Errors
    ///
    /// As [`Store::clear`].
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
        let removed = self.store.clear_locked(&self.key)?;
        if removed {
            self.store.notify(&crate::observe::Event::Cleared { key: &self.key });
        }
        Ok(removed)
    }

    /// [`Store::quarantine`] under this lock.
    ///
    /// # Errors
    ///
    /// As [`Store::quarantine`].
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
        self.store.quarantine_locked(&self.key)
    }
}
