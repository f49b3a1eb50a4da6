//! The rollback flow: stash → destroy → commit, or rollback through a
//! restore hook.
//!
//! [`Store::begin`] returns a [`RollbackGuard`] only once the snapshot is
//! durable: it is the permit to destroy. Then the caller destroys and
//! rebuilds, and either [`commit`](RollbackGuard::commit)s (the stash is
//! cleared) or [`rollback`](RollbackGuard::rollback)s (the stash is restored
//! through a [`Restorer`], and cleared only if that succeeded). Dropping the
//! guard, or a panic, never deletes the stash: the next attempt finds it
//! (see [`choose_source`](crate::choose_source)).

use std::fmt;
use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::fs::{Fs, OsFs};
use crate::key::StashKey;
use crate::meta::{Receipt, SaveOptions, StashMeta};
use crate::observe::{Event, ObserverError};
use crate::restore::Restorer;
use crate::store::Store;

impl<F: Fs> Store<F> {
    /// Stashes `snapshot` under `key` durably and returns the permit to
    /// destroy it. See [`RollbackGuard`].
    ///
    /// # Errors
    ///
    /// As [`save`](Store::save): without a durable stash there is no permit.
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::{StashKey, Store, Stashed};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let store = Store::open(dir.path())?;
    /// let mut table = vec!["row 1".to_owned(), "row 2".to_owned()];
    ///
    /// let guard = store.begin(&StashKey::new("table")?, &table)?; // durable now
    /// table.clear(); // destroy...
    /// let reload_failed = true; // ...rebuild, and fail
    /// if reload_failed {
    ///     guard
    ///         .rollback(&mut |s: Stashed<Vec<String>>| -> Result<(), std::io::Error> {
    ///             table = s.into_value();
    ///             Ok(())
    ///         })
    ///         .map_err(|e| e.error)?;
    /// } else {
    ///     guard.commit().map_err(|e| e.error)?;
    /// }
    /// assert_eq!(table.len(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn begin<T: Serialize>(
        &self,
        key: &StashKey,
        snapshot: &T,
    ) -> Result<RollbackGuard<'_, T, F>> {
        self.begin_with(key, snapshot, &SaveOptions::default())
    }

    /// [`begin`](Store::begin) with a kind label and an origin.
    ///
    /// # Errors
    ///
    /// As [`save_with`](Store::save_with).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// let opts = safestash::SaveOptions::new().kind("rows").origin("job-42");
    /// let guard = store.begin_with(&safestash::StashKey::new("t")?, &[1, 2], &opts)?;
    /// guard.commit().map_err(|e| e.error)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn begin_with<T: Serialize>(
        &self,
        key: &StashKey,
        snapshot: &T,
        opts: &SaveOptions,
    ) -> Result<RollbackGuard<'_, T, F>> {
        let receipt = self.save_with(key, snapshot, opts)?;
        Ok(RollbackGuard { store: self, receipt, done: false, _snapshot: PhantomData })
    }
}

/// The permit to destroy: proof that a snapshot is durably stashed, and the
/// only way to commit or roll back.
///
/// - [`commit`](RollbackGuard::commit) clears the stash (only if it is still
///   the one this guard wrote);
/// - [`rollback`](RollbackGuard::rollback) loads and verifies the stash,
///   restores it through a hook, and clears it only if the hook succeeded;
/// - dropping the guard (or panicking) keeps the stash, and logs a warning;
///   [`keep`](RollbackGuard::keep) keeps it on purpose.
///
/// A failed commit or rollback hands the guard back in a [`GuardError`] so
/// the caller can retry.
///
/// # Examples
///
/// See [`Store::begin`].
#[must_use = "dropping the guard keeps the stash; commit or roll back"]
pub struct RollbackGuard<'s, T, F: Fs = OsFs> {
    store: &'s Store<F>,
    receipt: Receipt,
    done: bool,
    _snapshot: PhantomData<fn() -> T>,
}

impl<T, F: Fs> fmt::Debug for RollbackGuard<'_, T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RollbackGuard").field("receipt", &self.receipt).finish_non_exhaustive()
    }
}

/// What a successful rollback did.
///
/// # Examples
///
/// ```
/// # use safestash::{StashKey, Store, Stashed};
/// # let dir = tempfile::tempdir()?;
/// # let store = Store::open(dir.path())?;
/// let guard = store.begin(&StashKey::new("k")?, &5)?;
/// let restored = guard.rollback(&mut |_: Stashed<i32>| Ok::<(), std::io::Error>(())).map_err(|e| e.error)?;
/// assert_eq!(restored.meta.header.key().as_str(), "k");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Restored {
    /// The restored stash's metadata.
    pub meta: StashMeta,
    /// Observers that failed after the restore (it succeeded regardless).
    pub observer_errors: Vec<ObserverError>,
}

impl<'s, T, F: Fs> RollbackGuard<'s, T, F> {
    /// The receipt of the stash this guard wrote.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// let guard = store.begin(&safestash::StashKey::new("k")?, &1)?;
    /// assert!(guard.receipt().path.exists());
    /// # guard.keep();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn receipt(&self) -> &Receipt {
        &self.receipt
    }

    /// The stash's key.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// let guard = store.begin(&safestash::StashKey::new("k")?, &1)?;
    /// assert_eq!(guard.key().as_str(), "k");
    /// # guard.keep();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn key(&self) -> &StashKey {
        &self.receipt.key
    }

    /// The rebuild succeeded: clears the stash, if it is still the one this
    /// guard wrote (another writer's stash under the same key is left
    /// alone). Returns whether the stash was removed.
    ///
    /// # Errors
    ///
    /// A [`GuardError`] holding the guard, for a retry, when the clear fails.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// let key = safestash::StashKey::new("k")?;
    /// let guard = store.begin(&key, &1)?;
    /// assert!(guard.commit().map_err(|e| e.error)?);
    /// assert!(store.load::<i32>(&key)?.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    // The guard travels back in the error by value, as tempfile's
    // PersistError hands back its file; the failure path is cold.
    #[allow(clippy::result_large_err)]
    pub fn commit(mut self) -> Result<bool, GuardError<'s, T, F>> {
        match self.store.clear_if(&self.receipt.key, &self.receipt.digest) {
            Ok(removed) => {
                self.done = true;
                Ok(removed)
            }
            Err(error) => Err(GuardError { guard: self, error, restored: false }),
        }
    }

    /// Keeps the stash on purpose (for an operator, or a later attempt) and
    /// gives back its receipt, without the warning a plain drop logs.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// let key = safestash::StashKey::new("k")?;
    /// let receipt = store.begin(&key, &1)?.keep();
    /// assert!(store.load::<i32>(&key)?.is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn keep(mut self) -> Receipt {
        self.done = true;
        self.receipt.clone()
    }
}

impl<'s, T: DeserializeOwned, F: Fs> RollbackGuard<'s, T, F> {
    /// The rebuild failed: loads and verifies the stash, hands it to
    /// `restorer` to recreate the resource, and only if that succeeded,
    /// clears the stash.
    ///
    /// # Errors
    ///
    /// A [`GuardError`] holding the guard (the stash is kept):
    /// - [`Error::Restore`] when the hook fails;
    /// - [`Error::Replaced`] when the stash is gone or is no longer the one
    ///   this guard wrote (another writer's snapshot is never restored);
    /// - any error of [`Store::load`] (a corrupt stash is never restored);
    /// - with [`GuardError::restored`] true, an error clearing the stash
    ///   *after* a successful restore: call [`commit`](RollbackGuard::commit)
    ///   to retry the clear rather than restoring twice.
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::{Error, StashKey, Store, Stashed};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let store = Store::open(dir.path())?;
    /// let key = StashKey::new("k")?;
    /// let guard = store.begin(&key, &"snapshot".to_owned())?;
    ///
    /// // The first restore attempt fails: the stash stays, the guard comes back.
    /// let failed = guard
    ///     .rollback(&mut |_: Stashed<String>| Err::<(), _>("database is down"))
    ///     .unwrap_err();
    /// assert!(matches!(failed.error, Error::Restore { .. }));
    /// assert!(store.load::<String>(&key)?.is_some());
    ///
    /// // Retry with the same guard.
    /// failed.guard.rollback(&mut |_: Stashed<String>| Ok::<(), Error>(())).map_err(|e| e.error)?;
    /// assert!(store.load::<String>(&key)?.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[allow(clippy::result_large_err)]
    pub fn rollback<R: Restorer<T>>(
        mut self,
        restorer: &mut R,
    ) -> Result<Restored, GuardError<'s, T, F>> {
        let (key, digest) = (self.receipt.key.clone(), self.receipt.digest);
        let replaced = |receipt: &Receipt| Error::Replaced {
            key: key.clone(),
            path: receipt.path.clone(),
            expected: digest,
        };
        let stashed = match self.store.load::<T>(&key) {
            Ok(Some(stashed)) if stashed.meta().digest == digest => stashed,
            Ok(_) => {
                let error = replaced(&self.receipt);
                return Err(GuardError { guard: self, error, restored: false });
            }
            Err(error) => return Err(GuardError { guard: self, error, restored: false }),
        };
        let meta = stashed.meta().clone();
        if let Err(e) = restorer.restore(stashed) {
            let error = Error::Restore { key, path: self.receipt.path.clone(), source: e.into() };
            tracing::warn!(error = %error, "restore failed; stash kept");
            return Err(GuardError { guard: self, error, restored: false });
        }
        tracing::info!(key = %key, age_secs = meta.age().as_secs_f64(), "stash restored");
        // The resource is back: only now may the stash go.
        if let Err(error) = self.store.clear_if(&key, &digest) {
            return Err(GuardError { guard: self, error, restored: true });
        }
        self.done = true;
        let observer_errors = self.store.notify(&Event::Restored { meta: &meta });
        Ok(Restored { meta, observer_errors })
    }
}

impl<T, F: Fs> Drop for RollbackGuard<'_, T, F> {
    fn drop(&mut self) {
        if !self.done {
            tracing::warn!(
                key = %self.receipt.key,
                path = %self.receipt.path.display(),
                panicking = std::thread::panicking(),
                "rollback guard dropped without commit or rollback; the stash is kept"
            );
        }
    }
}

/// A failed [`commit`](RollbackGuard::commit) or
/// [`rollback`](RollbackGuard::rollback): the error, and the guard handed
/// back so the caller can retry (the stash is still on disk).
///
/// # Examples
///
/// See [`RollbackGuard::rollback`].
pub struct GuardError<'s, T, F: Fs = OsFs> {
    /// The guard, for a retry.
    pub guard: RollbackGuard<'s, T, F>,
    /// What went wrong.
    pub error: Error,
    /// Whether the restore itself succeeded (only the clear after it failed).
    pub restored: bool,
}

impl<T, F: Fs> fmt::Debug for GuardError<'_, T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardError")
            .field("key", &self.guard.receipt.key)
            .field("error", &self.error)
            .field("restored", &self.restored)
            .finish()
    }
}

impl<T, F: Fs> fmt::Display for GuardError<'_, T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.restored {
            write!(f, "stash `{}` was restored, but clearing it failed", self.guard.receipt.key)
        } else {
            write!(
                f,
                "rollback guard for stash `{}` failed; the stash is kept",
                self.guard.receipt.key
            )
        }
    }
}

impl<T, F: Fs> std::error::Error for GuardError<'_, T, F> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}
