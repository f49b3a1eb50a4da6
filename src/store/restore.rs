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

impl<F: Fs> Store<F> {
    /// Restores the stash of `key` through `restorer`, and clears it only if
    /// that succeeded and the stash is still the one with digest `expected`.
    ///
    /// - no stash, or one with another digest: [`Error::Replaced`], nothing
    ///   restored (another writer's snapshot is never restored);
    /// - a damaged stash: the load error, nothing restored;
    /// - the hook fails: [`Error::Restore`], the stash is kept;
    /// - the clear fails after a successful restore: that error with
    ///   `restored` set, so the caller retries the clear, not the restore.
    pub(crate) fn restore_verified<T: DeserializeOwned, R: Restorer<T> + ?Sized>(
        &self,
        key: &StashKey,
        expected: &Digest,
        restorer: &mut R,
    ) -> std::result::Result<RestoreOutcome, RestoreFailure> {
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
        // The resource is back: only now may the stash go, and only if it is
        // still the one restored.
        let mut observer_errors = Vec::new();
        match self.clear_if_unannounced(key, expected) {
            Ok(true) => observer_errors.extend(self.notify(&Event::Cleared { key })),
            Ok(false) => {}
            Err(error) => return Err(RestoreFailure { error, restored: true }),
        }
        observer_errors.extend(self.notify(&Event::Restored { meta: &meta }));
        Ok(RestoreOutcome { meta, observer_errors })
    }
}
