//! Locks: leases on conditional writes, renewed by a thread while held.

use super::fence::Lease;
use super::state::{FromMeta, is_conflict, now_ms};
use super::*;

/// What a lease object holds.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct LeaseBody {
    /// The holder's id; `None` once released.
    pub(super) holder: Option<String>,
    /// Until when (Unix milliseconds, the holder's clock).
    #[serde(default)]
    pub(super) expires_ms: u64,
}

impl LeaseBody {
    pub(super) fn held(holder: &str, lease: Duration) -> LeaseBody {
        LeaseBody {
            holder: Some(holder.to_owned()),
            expires_ms: now_ms() + lease.as_millis() as u64,
        }
    }

    pub(super) fn payload(&self) -> PutPayload {
        PutPayload::from(serde_json::to_vec(self).unwrap_or_default())
    }
}

impl ObjectStoreBackend {
    /// Reads the lease at `key`: its version and content.
    pub(super) async fn read_lease(
        &self,
        key: &StashKey,
    ) -> Result<Option<(UpdateVersion, LeaseBody)>> {
        let path = self.lock_path(key);
        let got = match self.shared.store().get(&path).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.fail(BackendOp::Lock, key.as_str())(e)),
        };
        let version = UpdateVersion::from_meta(&got.meta);
        let bytes = got.bytes().await.map_err(self.fail(BackendOp::Lock, key.as_str()))?;
        // An unreadable lease body is treated as released: it holds no one.
        let body = serde_json::from_slice(&bytes).unwrap_or_default();
        Ok(Some((version, body)))
    }

    /// One attempt to take `key`'s lease: its version when taken, and when
    /// the take was sent (the lease counts from then, as a renewal does).
    pub(super) async fn try_take(
        &self,
        key: &StashKey,
        holder: &str,
    ) -> Result<Option<(UpdateVersion, Instant)>> {
        let path = self.lock_path(key);
        let mode = match self.read_lease(key).await? {
            None => PutMode::Create,
            Some((version, body)) => {
                if body.holder.is_some() && body.expires_ms > now_ms() {
                    return Ok(None);
                }
                PutMode::Update(version)
            }
        };
        let sent = Instant::now();
        let body = LeaseBody::held(holder, self.shared.lease);
        let opts = PutOptions { mode, ..Default::default() };
        match self.shared.store().put_opts(&path, body.payload(), opts).await {
            Ok(put) => Ok(Some((UpdateVersion::from(put), sent))),
            Err(e) if is_conflict(&e) => Ok(None),
            Err(e) => Err(self.fail(BackendOp::Lock, key.as_str())(e)),
        }
    }
}

/// A held lease, its renewal thread, and the fenced backend it gives.
pub(super) struct LeaseHeld {
    pub(super) backend: ObjectStoreBackend,
    pub(super) lease: Arc<Lease>,
    pub(super) stop: Option<mpsc::Sender<()>>,
    pub(super) renewer: Option<JoinHandle<()>>,
    /// The fork generation it was taken in: a forked child neither renews
    /// nor releases its parent's lease.
    pub(super) generation: u64,
}

impl fmt::Debug for LeaseHeld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseHeld")
            .field("key", &self.lease.key)
            .field("holder", &self.lease.holder)
            .finish_non_exhaustive()
    }
}

impl LeaseHeld {
    pub(super) fn start(backend: &ObjectStoreBackend, lease: Lease) -> LeaseHeld {
        let lease = Arc::new(lease);
        let (stop, stopped) = mpsc::channel::<()>();
        let shared = backend.shared.clone();
        let renewing = lease.clone();
        let renewer = std::thread::Builder::new()
            .name("safestash-lease".into())
            .spawn(move || renew(&shared, &renewing, &stopped))
            .ok();
        LeaseHeld {
            backend: ObjectStoreBackend::at(
                backend.shared.clone(),
                backend.prefix.clone(),
                Some(lease.clone()),
            ),
            lease,
            stop: Some(stop),
            renewer,
            generation: crate::fork::generation(),
        }
    }
}

/// Renews the lease every third of its duration until told to stop or the
/// lease is found taken over.
pub(super) fn renew(shared: &Shared, lease: &Lease, stopped: &mpsc::Receiver<()>) {
    loop {
        match stopped.recv_timeout(lease.duration / 3) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let sent = Instant::now();
        let version = lease.state().version.clone();
        let body = LeaseBody::held(&lease.holder, lease.duration);
        let opts = PutOptions { mode: PutMode::Update(version), ..Default::default() };
        match shared.block_on(shared.store().put_opts(&lease.path, body.payload(), opts)) {
            Ok(put) => {
                let mut state = lease.state();
                state.version = UpdateVersion::from(put);
                state.renewed = sent;
            }
            Err(e) if is_conflict(&e) => {
                lease.state().lost = true;
                tracing::warn!(key = %lease.key, "lock lease taken over by another holder");
                return;
            }
            Err(e) => {
                tracing::warn!(key = %lease.key, error = %e, "lock lease renewal failed; retrying")
            }
        }
    }
}

impl Held for LeaseHeld {
    fn backend(&self) -> &dyn Backend {
        &self.backend
    }
}

impl Drop for LeaseHeld {
    fn drop(&mut self) {
        if self.generation != crate::fork::generation() {
            // The parent's lease, in a forked child: its renewing thread is
            // not here to join, and releasing it would free the parent's
            // lock. Left alone.
            std::mem::forget(self.renewer.take());
            std::mem::forget(self.stop.take());
            return;
        }
        drop(self.stop.take());
        if let Some(t) = self.renewer.take() {
            let _ = t.join();
        }
        let (lost, version) = {
            let s = self.lease.state();
            (s.lost, s.version.clone())
        };
        if lost {
            return;
        }
        // Release: only the lease this holder wrote last, never a taker's.
        let opts = PutOptions { mode: PutMode::Update(version), ..Default::default() };
        let released = LeaseBody { holder: None, expires_ms: 0 };
        let shared = &self.backend.shared;
        let _ =
            shared.block_on(shared.store().put_opts(&self.lease.path, released.payload(), opts));
    }
}
