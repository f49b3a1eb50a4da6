//! The lease of a held lock as its holder knows it: what fences the
//! writes made under the lock.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use object_store::UpdateVersion;
use object_store::path::Path;

use crate::key::StashKey;

/// A lease as its holder knows it.
pub(super) struct Lease {
    pub(super) key: StashKey,
    pub(super) path: Path,
    pub(super) holder: String,
    pub(super) duration: Duration,
    pub(super) state: Mutex<LeaseState>,
    /// The fork generation it was taken in.
    pub(super) generation: u64,
}

pub(super) struct LeaseState {
    /// The lease object's version this holder last wrote.
    pub(super) version: UpdateVersion,
    /// When that write was sent (a renewal counts from before it went out).
    pub(super) renewed: Instant,
    /// Renewal found the lease taken over.
    pub(super) lost: bool,
    /// The key's version this holder last saw or wrote (`None`: absent).
    pub(super) key_version: Option<UpdateVersion>,
}

impl Lease {
    pub(super) fn new(
        path: Path,
        duration: Duration,
        key: &StashKey,
        holder: String,
        (version, sent): (UpdateVersion, Instant),
        key_version: Option<UpdateVersion>,
    ) -> Lease {
        Lease {
            key: key.clone(),
            path,
            holder,
            duration,
            state: Mutex::new(LeaseState { version, renewed: sent, lost: false, key_version }),
            generation: crate::fork::generation(),
        }
    }

    pub(super) fn state(&self) -> std::sync::MutexGuard<'_, LeaseState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `Err(why)` when changes may no longer be made under this lease.
    pub(super) fn check(&self) -> std::result::Result<(), &'static str> {
        if self.generation != crate::fork::generation() {
            return Err("the lock's lease is held by the parent process this one was forked from");
        }
        let state = self.state();
        if state.lost {
            return Err("the lock's lease was taken over by another holder");
        }
        if state.renewed.elapsed() >= self.duration.mul_f64(0.9) {
            return Err("the lock's lease was not renewed in time and may have expired");
        }
        Ok(())
    }
}
