//! The one verified-restore step, shared by the rollback guard, the tenant
//! guard's restore and the journal's rollback, so all three behave alike:
//! load and verify the stash, check it is the one expected, hand it to the
//! restorer, clear it only if that succeeded and the stash is unchanged,
//! then notify observers (`Cleared`, then `Restored`).

use super::*;
use crate::error::ObserverError;

/// A hook that puts stashed data back onto a recreated resource, used by
/// [`RollbackGuard::rollback`](crate::RollbackGuard::rollback), the journal's
/// rollback and the tenant guard's restore alike.
///
/// Any `FnMut(Stashed<T>) -> Result<(), E>` is a restorer.
///
/// # Examples
///
/// ```
/// use safestash::{Restorer, Stashed};
///
/// struct Table { rows: Vec<String> }
///
/// impl Restorer<Vec<String>> for Table {
///     type Error = std::io::Error;
///     fn restore(&mut self, stashed: Stashed<Vec<String>>) -> Result<(), Self::Error> {
///         self.rows = stashed.into_value();
///         Ok(())
///     }
/// }
///
/// // The closure form:
/// let mut restored = Vec::new();
/// let mut hook = |s: Stashed<Vec<String>>| -> Result<(), std::io::Error> {
///     restored = s.into_value();
///     Ok(())
/// };
/// # fn takes<R: Restorer<Vec<String>>>(_: &mut R) {}
/// # takes(&mut hook);
/// ```
pub trait Restorer<T> {
    /// The hook's error.
    type Error: Into<BoxError>;

    /// Recreates the resource from the stashed value.
    ///
    /// # Errors
    ///
    /// Whatever kept the resource from being restored; the stash is then kept.
    fn restore(&mut self, stashed: Stashed<T>) -> Result<(), Self::Error>;
}

impl<T, E, G> Restorer<T> for G
where
    G: FnMut(Stashed<T>) -> Result<(), E>,
    E: Into<BoxError>,
{
    type Error = E;

    fn restore(&mut self, stashed: Stashed<T>) -> Result<(), E> {
        self(stashed)
    }
}

/// A successful [`Store::restore_verified`].
#[derive(Debug)]
pub(crate) struct RestoreOutcome {
    /// The restored stash's metadata.
    pub(crate) meta: StashMeta,
    /// Observers that failed on `Cleared` or `Restored`.
    pub(crate) observer_errors: Vec<ObserverError>,
}

/// A failed [`Store::restore_verified`]: the stash is kept unless
/// `restored` is true (the restore succeeded and only the clear failed).
#[derive(Debug)]
pub(crate) struct RestoreFailure {
    pub(crate) error: Error,
    pub(crate) restored: bool,
}

/// A restore that succeeded, its stash not yet cleared: [`clear`](Restoring::clear)
/// it once the caller has recorded the restore (the journal writes
/// `rolled_back` in between, so a crash never leaves a cleared stash with
/// no record of its restore).
pub(crate) struct Restoring<'s, F: Fs> {
    store: &'s Store<F>,
    key: StashKey,
    digest: Digest,
    meta: StashMeta,
}

impl<F: Fs> Restoring<'_, F> {
    /// Clears the restored stash if it is still the one restored, then
    /// notifies observers: `Cleared` (if it was removed), then `Restored`.
    pub(crate) fn clear(self) -> std::result::Result<RestoreOutcome, RestoreFailure> {
        let Restoring { store, key, digest, meta } = self;
        let mut observer_errors = Vec::new();
        match store.clear_if_unannounced(&key, &digest) {
            Ok(true) => observer_errors.extend(store.notify(&Event::Cleared { key: &key })),
            Ok(false) => {
                tracing::warn!(key = %key, "restored stash was replaced meanwhile; left in place");
            }
            Err(error) => return Err(RestoreFailure { error, restored: true }),
        }
        observer_errors.extend(store.notify(&Event::Restored { meta: &meta }));
        Ok(RestoreOutcome { meta, observer_errors })
    }
}

impl<F: Fs> Store<F> {
    /// Restores the stash of `key` through `restorer`, and clears it only if
    /// that succeeded and the stash is still the one with digest `expected`:
    /// [`restore_verified`](Store::restore_verified), then
    /// [`Restoring::clear`].
    pub(crate) fn restore_and_clear<T: DeserializeOwned, R: Restorer<T> + ?Sized>(
        &self,
        key: &StashKey,
        expected: &Digest,
        restorer: &mut R,
    ) -> std::result::Result<RestoreOutcome, RestoreFailure> {
        self.restore_verified(key, expected, restorer)?.clear()
    }

    /// Loads the stash of `key`, checks it is the one with digest
    /// `expected`, and hands it to `restorer`. Nothing is cleared yet.
    ///
    /// - no stash, or one with another digest: [`Error::Replaced`], nothing
    ///   restored (another writer's snapshot is never restored);
    /// - a damaged stash: the load error, nothing restored;
    /// - the hook fails: [`Error::Restore`], the stash is kept.
    pub(crate) fn restore_verified<T: DeserializeOwned, R: Restorer<T> + ?Sized>(
        &self,
        key: &StashKey,
        expected: &Digest,
        restorer: &mut R,
    ) -> std::result::Result<Restoring<'_, F>, RestoreFailure> {
        let fail = |error| RestoreFailure { error, restored: false };
        let replaced =
            || Error::Replaced { key: key.clone(), path: self.path_of(key), expected: *expected };
        let stashed = match self.load::<T>(key) {
            Ok(Some(stashed)) if stashed.meta().digest == *expected => stashed,
            Ok(_) => return Err(fail(replaced())),
            Err(error) => return Err(fail(error)),
        };
        let meta = stashed.meta().clone();
        if let Err(e) = restorer.restore(stashed) {
            let error =
                Error::Restore { key: key.clone(), path: self.path_of(key), source: e.into() };
            tracing::warn!(error = %error, "restore failed; stash kept");
            return Err(fail(error));
        }
        tracing::info!(key = %key, age_secs = meta.age().as_secs_f64(), "stash restored");
        Ok(Restoring { store: self, key: key.clone(), digest: *expected, meta })
    }
}
