//! The rollback flow: stash → destroy → commit, or rollback through a
//! restore hook.
//!
//! [`Store::begin`] returns a [`RollbackGuard`] only once the snapshot is
//! durable: it is the permit to destroy. Then the caller destroys and
//! rebuilds, and either [`commit`](RollbackGuard::commit)s (the stash is
//! cleared) or [`rollback`](RollbackGuard::rollback)s (the stash is restored
//! through a [`Restorer`], and cleared only if that succeeded). Dropping the
//! guard, or a panic, never deletes the stash: the next attempt finds it
//! (see [`Store::resume`], the retry decision).

use std::fmt;
use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::digest::Digest;
use crate::error::ObserverError;
use crate::error::{Error, Result};
use crate::fs::{Fs, OsFs};
use crate::key::StashKey;
use crate::meta::Stashed;
use crate::meta::{Receipt, SaveOptions, StashMeta};
use crate::policy::{Checked, LoadPolicy};
use crate::store::{Precondition, RestoreFailure, RestoreOutcome, Restorer, Store};

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
    /// fn reload(store: &Store, table: &mut Vec<String>) -> safestash::Result<()> {
    ///     let guard = store.begin(&StashKey::new("table")?, table)?; // durable now
    ///     table.clear(); // destroy...
    ///     let reload_failed = true; // ...rebuild, and fail
    ///     if reload_failed {
    ///         guard.rollback(&mut |s: Stashed<Vec<String>>| -> Result<(), std::io::Error> {
    ///             *table = s.into_value();
    ///             Ok(())
    ///         })?;
    ///     } else {
    ///         guard.commit()?;
    ///     }
    ///     Ok(())
    /// }
    ///
    /// let dir = tempfile::tempdir()?;
    /// let store = Store::open(dir.path())?;
    /// let mut table = vec!["row 1".to_owned(), "row 2".to_owned()];
    /// reload(&store, &mut table)?;
    /// assert_eq!(table.len(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn begin<T: Serialize>(&self, key: &StashKey, snapshot: &T) -> Result<RollbackGuard<T, F>> {
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
    /// guard.commit().map_err(safestash::Error::from)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn begin_with<T: Serialize>(
        &self,
        key: &StashKey,
        snapshot: &T,
        opts: &SaveOptions,
    ) -> Result<RollbackGuard<T, F>> {
        let receipt = self.save_if(key, snapshot, opts, Precondition::Absent)?;
        Ok(RollbackGuard::over(self.clone(), receipt))
    }

    /// [`begin_with`](Store::begin_with) over a stash the caller has seen:
    /// replaces the stash of `key` only if it is still the one with digest
    /// `seen`. Replacing a stash is never implicit; this is the explicit
    /// way, for a caller that has looked at the old stash and decided the
    /// live resource supersedes it.
    ///
    /// # Errors
    ///
    /// [`Error::Replaced`] when the stash is gone or is not the one seen
    /// (nothing is written), and as [`save_with`](Store::save_with).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// let key = safestash::StashKey::new("t")?;
    /// let old = store.save(&key, &[1])?;
    /// let opts = safestash::SaveOptions::new();
    /// let guard = store.begin_replacing(&key, &[1, 2], &opts, &old.digest)?;
    /// guard.commit().map_err(safestash::Error::from)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn begin_replacing<T: Serialize>(
        &self,
        key: &StashKey,
        snapshot: &T,
        opts: &SaveOptions,
        seen: &Digest,
    ) -> Result<RollbackGuard<T, F>> {
        let receipt = self.save_if(key, snapshot, opts, Precondition::Unchanged(*seen))?;
        Ok(RollbackGuard::over(self.clone(), receipt))
    }

    /// Takes charge of a stash the caller has loaded and looked at (a
    /// [`Checked::Stale`] or [`Checked::Foreign`] one it decided to accept,
    /// for instance): returns a guard over it without writing anything, so
    /// the caller can [`rollback`](RollbackGuard::rollback) it onto the
    /// recreated resource or [`commit`](RollbackGuard::commit) (discard) it.
    ///
    /// The guard restores and clears only that exact stash (by digest).
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::{Checked, LoadPolicy, Stashed};
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// let key = safestash::StashKey::new("t")?;
    /// store.save_with(&key, &[1, 2], &safestash::SaveOptions::new().origin("job-1"))?;
    /// let policy = LoadPolicy::new().origin("job-2");
    /// if let Some(Checked::Foreign { stashed, .. }) = store.load_checked::<Vec<i32>>(&key, &policy)? {
    ///     // The operator decided this other job's stash is the right one.
    ///     let guard = store.adopt(&stashed);
    ///     guard.rollback(&mut |s: Stashed<Vec<i32>>| Ok::<(), std::io::Error>(assert_eq!(s.value().len(), 2)))
    ///         .map_err(safestash::Error::from)?;
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn adopt<T>(&self, stashed: &Stashed<T>) -> RollbackGuard<T, F> {
        self.adopt_meta(stashed.meta())
    }

    /// [`adopt`](Store::adopt) by the stash's metadata alone: for a caller
    /// that has moved the value out of the [`Stashed`] (with
    /// [`into_parts`](Stashed::into_parts)) and kept its [`StashMeta`], or
    /// that took it from [`Store::verify`]. As with `adopt`, nothing is
    /// written, and the guard restores and clears only the stash with that
    /// digest.
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::Stashed;
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// let key = safestash::StashKey::new("t")?;
    /// store.save(&key, &vec![1, 2])?;
    /// let (value, meta) = store.load::<Vec<i32>>(&key)?.unwrap().into_parts();
    /// assert_eq!(value, [1, 2]); // the value went elsewhere; the metadata stays
    /// let guard = store.adopt_meta::<Vec<i32>>(&meta);
    /// assert_eq!(guard.receipt().digest, meta.digest);
    /// guard.rollback(&mut |s: Stashed<Vec<i32>>| Ok::<(), std::io::Error>(assert_eq!(s.value().len(), 2)))
    ///     .map_err(safestash::Error::from)?;
    /// assert!(store.load::<Vec<i32>>(&key)?.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn adopt_meta<T>(&self, meta: &StashMeta) -> RollbackGuard<T, F> {
        RollbackGuard::over(self.clone(), receipt_of(meta))
    }

    /// The retry decision, in one call: what a job that may be re-running
    /// after a crash should protect and restore.
    ///
    /// 1. **The live resource wins.** With `live` present, it is stashed and
    ///    the returned guard is the permit to destroy it. A stash left by an
    ///    earlier run is replaced only because it was seen here, and is
    ///    reported in [`Resume::Live::replaced`].
    /// 2. **Else the stash is resumed**, if it passes `policy`:
    ///    [`Resume::Stash`] holds a guard over it; roll it back onto the
    ///    recreated resource (or commit it once the rebuild succeeded).
    /// 3. **A stash that fails the policy is never applied unasked**:
    ///    [`Resume::Refused`] carries the [`Checked`] verdict (stale, future
    ///    or foreign) and the stash, untouched; [`Store::adopt`] it to accept
    ///    it anyway.
    /// 4. **Else there is nothing to protect**: [`Resume::Nothing`].
    ///
    /// A damaged stash is an error ([`Error::Corrupt`]), never "nothing".
    ///
    /// # Errors
    ///
    /// As [`load`](Store::load) and [`save_if`](Store::save_if); when another
    /// worker replaces the stash between the look and the save,
    /// [`Error::Replaced`] (nothing is overwritten).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use safestash::{LoadPolicy, Resume, StashKey, Stashed, Store};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let store = Store::open(dir.path())?;
    /// let key = StashKey::new("orders.dictionary")?;
    /// let policy = LoadPolicy::new().max_age(Duration::from_secs(3600)).origin("upload-7f3a");
    ///
    /// // A crashed run stashed the dictionary, then dropped the table.
    /// let opts = safestash::SaveOptions::new().origin("upload-7f3a");
    /// store.begin_with(&key, &vec!["label"], &opts)?.keep();
    ///
    /// // The retry: no live table any more, so the stash is resumed.
    /// let live: Option<Vec<String>> = None;
    /// match store.resume(&key, live.as_ref(), &opts, &policy)? {
    ///     Resume::Stash(guard) => {
    ///         // ... recreate the table, then put the dictionary back:
    ///         guard.rollback(&mut |s: Stashed<Vec<String>>| Ok::<(), std::io::Error>(assert_eq!(s.value()[0], "label")))
    ///             .map_err(safestash::Error::from)?;
    ///     }
    ///     Resume::Live { guard, .. } => { /* destroy, rebuild, guard.commit() */ guard.keep(); }
    ///     Resume::Refused(checked) => panic!("not fresh or not ours: {checked:?}"),
    ///     Resume::Nothing => { /* nothing to protect */ }
    ///     _ => {}
    /// }
    /// assert!(store.load::<Vec<String>>(&key)?.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn resume<T: Serialize + DeserializeOwned>(
        &self,
        key: &StashKey,
        live: Option<&T>,
        opts: &SaveOptions,
        policy: &LoadPolicy,
    ) -> Result<Resume<T, F>> {
        let existing = self.load::<T>(key)?;
        if let Some(value) = live {
            let replaced = existing.map(|s| s.meta().clone());
            let expect = match &replaced {
                Some(meta) => {
                    tracing::info!(key = %key, "live resource wins over a leftover stash");
                    Precondition::Unchanged(meta.digest)
                }
                None => Precondition::Absent,
            };
            let receipt = self.save_if(key, value, opts, expect)?;
            return Ok(Resume::Live {
                guard: RollbackGuard::over(self.clone(), receipt),
                replaced,
            });
        }
        let Some(stashed) = existing else {
            return Ok(Resume::Nothing);
        };
        match policy.check(stashed) {
            Checked::Fresh(stashed) => {
                tracing::info!(key = %key, age_secs = stashed.meta().age().as_secs_f64(), "resuming from stash: no live resource");
                Ok(Resume::Stash(RollbackGuard::over(self.clone(), receipt_of(stashed.meta()))))
            }
            refused => {
                tracing::warn!(key = %key, verdict = ?VerdictName(&refused), "stash not resumed: it fails the load policy");
                Ok(Resume::Refused(refused))
            }
        }
    }
}

/// The receipt a guard over an existing stash holds.
fn receipt_of(meta: &StashMeta) -> Receipt {
    Receipt {
        key: meta.header.key().clone(),
        path: meta.path.clone(),
        bytes: meta.size,
        digest: meta.digest,
        created: meta.header.created(),
        observer_errors: Vec::new(),
    }
}

struct VerdictName<'a, T>(&'a Checked<T>);

impl<T> fmt::Debug for VerdictName<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            Checked::Fresh(_) => "fresh",
            Checked::Stale { .. } => "stale",
            Checked::Future { .. } => "future",
            Checked::Foreign { .. } => "foreign",
        })
    }
}

/// What [`Store::resume`] decided.
///
/// # Examples
///
/// See [`Store::resume`].
#[derive(Debug)]
#[must_use = "a resumed stash must be rolled back, committed or kept"]
#[non_exhaustive]
pub enum Resume<T, F: Fs = OsFs> {
    /// The live resource was stashed: the guard is the permit to destroy it.
    Live {
        /// The permit to destroy.
        guard: RollbackGuard<T, F>,
        /// The earlier run's stash this one replaced, if there was one.
        replaced: Option<StashMeta>,
    },
    /// No live resource; the stash passed the policy: a guard over it, to
    /// roll back onto the recreated resource.
    Stash(RollbackGuard<T, F>),
    /// No live resource; the stash failed the policy (stale, future or
    /// foreign) and is left untouched. [`Store::adopt`] accepts it.
    Refused(Checked<T>),
    /// No live resource and no stash: nothing to protect.
    Nothing,
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
pub struct RollbackGuard<T, F: Fs = OsFs> {
    store: Store<F>,
    receipt: Receipt,
    done: bool,
    _snapshot: PhantomData<fn() -> T>,
}

impl<T, F: Fs> fmt::Debug for RollbackGuard<T, F> {
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
/// let restored = guard.rollback(&mut |_: Stashed<i32>| Ok::<(), std::io::Error>(())).map_err(safestash::Error::from)?;
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

impl<T, F: Fs> RollbackGuard<T, F> {
    fn over(store: Store<F>, receipt: Receipt) -> RollbackGuard<T, F> {
        RollbackGuard { store, receipt, done: false, _snapshot: PhantomData }
    }

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
    /// assert!(guard.commit().map_err(safestash::Error::from)?);
    /// assert!(store.load::<i32>(&key)?.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    // The guard travels back in the error by value, as tempfile's
    // PersistError hands back its file; the failure path is cold.
    #[allow(clippy::result_large_err)]
    pub fn commit(mut self) -> Result<bool, GuardError<T, F>> {
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

impl<T: DeserializeOwned, F: Fs> RollbackGuard<T, F> {
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
    /// failed.guard.rollback(&mut |_: Stashed<String>| Ok::<(), Error>(())).map_err(safestash::Error::from)?;
    /// assert!(store.load::<String>(&key)?.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[allow(clippy::result_large_err)]
    pub fn rollback<R: Restorer<T>>(
        mut self,
        restorer: &mut R,
    ) -> Result<Restored, GuardError<T, F>> {
        let (key, digest) = (self.receipt.key.clone(), self.receipt.digest);
        match self.store.restore_and_clear(&key, &digest, restorer) {
            Ok(RestoreOutcome { meta, observer_errors }) => {
                self.done = true;
                Ok(Restored { meta, observer_errors })
            }
            Err(RestoreFailure { error, restored }) => {
                Err(GuardError { guard: self, error, restored })
            }
        }
    }
}

impl<T, F: Fs> Drop for RollbackGuard<T, F> {
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
pub struct GuardError<T, F: Fs = OsFs> {
    /// The guard, for a retry.
    pub guard: RollbackGuard<T, F>,
    /// What went wrong.
    pub error: Error,
    /// Whether the restore itself succeeded (only the clear after it failed).
    pub restored: bool,
}

impl<T, F: Fs> fmt::Debug for GuardError<T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardError")
            .field("key", &self.guard.receipt.key)
            .field("error", &self.error)
            .field("restored", &self.restored)
            .finish()
    }
}

impl<T, F: Fs> fmt::Display for GuardError<T, F> {
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

/// Lets `?` turn a failed commit or rollback into an [`Error`] in a function
/// returning [`safestash::Result`](crate::Result); the guard is dropped, so
/// the stash is kept for the next attempt (as tempfile's `PersistError`
/// converts into `io::Error`).
///
/// # Examples
///
/// ```
/// fn reload(store: &safestash::Store, key: &safestash::StashKey) -> safestash::Result<()> {
///     let guard = store.begin(key, &vec![1, 2, 3])?;
///     // ... destroy and rebuild ...
///     guard.commit()?;
///     Ok(())
/// }
/// # let dir = tempfile::tempdir()?;
/// # reload(&safestash::Store::open(dir.path())?, &safestash::StashKey::new("k")?)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl<T, F: Fs> From<GuardError<T, F>> for Error {
    fn from(e: GuardError<T, F>) -> Error {
        e.error
    }
}

impl<T, F: Fs> std::error::Error for GuardError<T, F> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}
