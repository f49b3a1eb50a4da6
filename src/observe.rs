//! Observers: side effects that run only after a stash is durable.
//!
//! A pipeline once notified a watcher *before* writing its data; when the
//! watcher failed, valid data was never stored. Observers registered with
//! [`Store::observe`](crate::Store::observe) run after the operation is
//! durable, and their failures (errors or panics) are reported next to the
//! result — they never undo, block or fail the operation.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use crate::error::{BoxError, ObserverError};
use crate::key::StashKey;
use crate::meta::{Receipt, StashMeta};

/// What happened, as an observer is told.
///
/// # Examples
///
/// ```
/// use safestash::{Event, StashKey, Store};
///
/// let dir = tempfile::tempdir()?;
/// let mut store = Store::open(dir.path())?;
/// store.observe("audit", |event| {
///     if let Event::Saved(receipt) = event {
///         println!("stashed {} ({} bytes)", receipt.key, receipt.bytes);
///     }
///     Ok(())
/// });
/// store.save(&StashKey::new("k")?, &1)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A stash was saved and is durable.
    Saved(&'a Receipt),
    /// A stash was removed, durably.
    Cleared {
        /// Its key.
        key: &'a StashKey,
    },
    /// A stash was restored through a rollback and then cleared.
    Restored {
        /// Its metadata.
        meta: &'a StashMeta,
    },
}

type ObserverFn = dyn Fn(&Event<'_>) -> Result<(), BoxError> + Send + Sync;

pub(crate) struct Observer {
    name: String,
    f: Box<ObserverFn>,
}

impl Observer {
    pub(crate) fn new(
        name: String,
        f: impl Fn(&Event<'_>) -> Result<(), BoxError> + Send + Sync + 'static,
    ) -> Observer {
        Observer { name, f: Box::new(f) }
    }
}

impl fmt::Debug for Observer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Observer").field("name", &self.name).finish_non_exhaustive()
    }
}

/// Runs every observer on `event`; a panic is caught and reported like an
/// error.
pub(crate) fn notify(observers: &[Arc<Observer>], event: &Event<'_>) -> Vec<ObserverError> {
    let mut failed = Vec::new();
    for observer in observers {
        let outcome = catch_unwind(AssertUnwindSafe(|| (observer.f)(event)));
        let error: BoxError = match outcome {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e,
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic".to_owned());
                format!("panicked: {msg}").into()
            }
        };
        tracing::warn!(observer = %observer.name, error = %error, "observer failed after a durable write");
        failed.push(ObserverError { observer: observer.name.clone(), error: Arc::from(error) });
    }
    failed
}
