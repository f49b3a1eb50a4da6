//! The [`Backend`] verbs of an object store, each from the pieces of its
//! sibling files.

use super::fence::Lease;
use super::lease::LeaseHeld;
use super::multipart::{Sink, make_reference};
use super::state::{KeptAside, Mine, service_error};
use super::*;

impl Backend for ObjectStoreBackend {
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
        let payload = PutPayload::from(Bytes::copy_from_slice(envelope));
        self.write(BackendOp::Save, key.as_str(), payload, cond, Mine::Envelope(*digest), None)
    }

    fn put_with(&self, key: &StashKey, cond: Precondition, fill: &mut Fill<'_>) -> Result<Outcome> {
        let mut sink = Sink {
            backend: self,
            key,
            buf: Vec::new(),
            upload: None,
            written: 0,
            tail: Vec::new(),
            started: None,
            failed: None,
        };
        let filled = fill(&mut sink);
        let failed = sink.failed.take();
        let Some((data, mut upload)) = sink.upload.take() else {
            if let Some(e) = failed {
                return Err(e);
            }
            let digest = filled?;
            let payload = PutPayload::from(std::mem::take(&mut sink.buf));
            return self.write(
                BackendOp::Save,
                key.as_str(),
                payload,
                cond,
                Mine::Envelope(digest),
                None,
            );
        };
        let rest = std::mem::take(&mut sink.buf);
        // A part that failed is that error, whatever the envelope writer
        // made of it.
        let filled = match failed {
            Some(e) => Err(e),
            None => filled,
        };
        let finished = match filled {
            Ok(_) => self
                .block_on(async {
                    upload.write(&rest);
                    upload.finish().await
                })
                .map(|_| ())
                .map_err(self.fail(BackendOp::Save, key.as_str())),
            Err(e) => {
                // Nothing of it may stay: the parts uploaded so far go.
                let _ = self.block_on(upload.abort());
                Err(e)
            }
        };
        if let Err(e) = finished {
            // `finish` aborted a failed upload itself; a completed one is
            // removed: no reference naming it was sent, so none can land
            // later (best effort: an orphan is left for cleanup).
            let _ = self.block_on(self.shared.store().delete(&self.data_path(&data)));
            return Err(e);
        }
        let reference = make_reference(&data, sink.written, &sink.tail);
        let digest = recorded_digest(&sink.tail);
        // Written within half of the grace period after the upload began,
        // so cleanup never takes a data object a reference is about to name.
        let deadline = sink.started.map(|t| t + self.shared.gc_grace / 2);
        let payload = PutPayload::from(reference);
        let mine = Mine::Reference(&data, digest);
        self.write(BackendOp::Save, key.as_str(), payload, cond, mine, deadline)
    }

    fn get(&self, key: &StashKey) -> Result<Option<Fetched>> {
        self.fetch(key.as_str(), BackendOp::Load)
    }

    fn delete(&self, key: &StashKey, cond: Precondition) -> Result<Outcome> {
        let mark = tombstone();
        let payload = PutPayload::from(mark.clone());
        self.write(BackendOp::Clear, key.as_str(), payload, cond, Mine::Tombstone(&mark), None)
    }

    fn list(&self, head_len: usize) -> Result<Vec<Listed>> {
        let listing = self
            .block_on(self.shared.store().list_with_delimiter(Some(&self.prefix)))
            .map_err(|e| Error::Backend {
                op: BackendOp::List,
                target: self.location.clone(),
                source: service_error(e),
            })?;
        let mut found: Vec<Listed> = self.block_on(
            futures_util::stream::iter(listing.objects.into_iter().filter_map(|meta| {
                let name = meta.location.filename()?.to_owned();
                Some(self.listed(name, meta.size, meta.e_tag, head_len))
            }))
            .buffered(8)
            .try_filter_map(|l| async move { Ok(l) })
            .try_collect(),
        )?;
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    fn has_locks(&self) -> bool {
        true
    }

    fn lock(&self, key: &StashKey, wait: bool) -> Result<Option<Box<dyn Held>>> {
        let holder = uuid::Uuid::new_v4().to_string();
        let started = Instant::now();
        let mut pause = Duration::from_millis(20);
        let (version, sent) = loop {
            if let Some(taken) = self.block_on(self.try_take(key, &holder))? {
                break taken;
            }
            if !wait {
                return Ok(None);
            }
            if started.elapsed() >= self.shared.lock_timeout {
                return Err(Error::Locked {
                    key: key.clone(),
                    path: self.target(Some(key.as_str())).into(),
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(250));
        };
        // What the holder sees at the key now: its changes are conditional on it.
        let key_version = match self.block_on(self.current(key.as_str(), BackendOp::Lock)) {
            Ok(c) => c.version().cloned(),
            Err(e) => {
                let lease = Lease::new(
                    self.lock_path(key),
                    self.shared.lease,
                    key,
                    holder,
                    (version, sent),
                    None,
                );
                drop(LeaseHeld::start(self, lease));
                return Err(e);
            }
        };
        let lease = Lease::new(
            self.lock_path(key),
            self.shared.lease,
            key,
            holder,
            (version, sent),
            key_version,
        );
        Ok(Some(Box::new(LeaseHeld::start(self, lease))))
    }

    fn move_aside(&self, key: &StashKey, aside: &str) -> Result<bool> {
        let name = key.as_str();
        self.check_fence(BackendOp::Quarantine, name)?;
        let store = &self.shared.store();
        let current = self.block_on(self.current(name, BackendOp::Quarantine))?;
        let Current::Stash { version, .. } = current else { return Ok(false) };
        if let Some(seen) = self.fenced_version(name) {
            if seen.as_ref() != Some(&version) {
                return Err(Error::Backend {
                    op: BackendOp::Quarantine,
                    target: self.target(Some(name)),
                    source: "the stash changed since this lock's holder last saw it".into(),
                });
            }
        }
        let aside_path = self.path(aside);
        match self.block_on(store.head(&aside_path)) {
            Ok(_) => {
                return Err(Error::Backend {
                    op: BackendOp::Quarantine,
                    target: self.target(Some(name)),
                    source: format!("`{}` exists already", self.target(Some(aside))).into(),
                });
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.fail(BackendOp::Quarantine, name)(e)),
        }
        // The copy aside is exactly the version read: a read conditional on
        // its ETag, then a create at the aside name.
        let path = self.path(name);
        let exact = GetOptions {
            if_match: version.e_tag.clone(),
            version: version.version.clone(),
            ..Default::default()
        };
        let read = self.block_on(async { store.get_opts(&path, exact).await?.bytes().await });
        let bytes = match read {
            Ok(bytes) => bytes,
            Err(
                object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. },
            ) => {
                return Err(Error::Backend {
                    op: BackendOp::Quarantine,
                    target: self.target(Some(name)),
                    source: "the stash changed while it was being quarantined; nothing was \
                             moved: try again"
                        .into(),
                });
            }
            Err(e) => return Err(self.fail(BackendOp::Quarantine, name)(e)),
        };
        let create = PutOptions { mode: PutMode::Create, ..Default::default() };
        let copied = self.block_on(store.put_opts(&aside_path, bytes.clone().into(), create));
        if let Err(e) = copied {
            // A conflict may be this create's own earlier landing, and any
            // error a lost reply: the copy counts when it is there, whole.
            let there = self.block_on(async { store.get(&aside_path).await?.bytes().await });
            if !there.is_ok_and(|b| b == bytes) {
                return Err(self.fail(BackendOp::Quarantine, name)(e));
            }
        }
        // Then the key: a tombstone on the ETag read.
        let mark = tombstone();
        let opts = PutOptions { mode: PutMode::Update(version.clone()), ..Default::default() };
        let e = match self.block_on(store.put_opts(&path, PutPayload::from(mark.clone()), opts)) {
            Ok(put) => {
                let version = UpdateVersion::from(put);
                self.remember(name, Some(Current::Tombstone(version.clone(), mark)));
                self.record_version(name, Some(version));
                return Ok(true);
            }
            Err(e) => e,
        };
        // Refused or unanswered: the tombstone may be this request's own
        // (a reply lost, a retry meeting it). Read the key again.
        let now = self.block_on(self.current(name, BackendOp::Quarantine));
        if let Ok(now @ Current::Tombstone(..)) = &now {
            if now.is(&Mine::Tombstone(&mark)) {
                self.record_version(name, now.version().cloned());
                return Ok(true);
            }
        }
        // The copy aside goes only when a verified newer stash is at the
        // key: the quarantine lost to a save, and the stash read is not the
        // only copy of anything current. Otherwise it stays.
        let newer = matches!(&now, Ok(Current::Stash { version: v, .. }) if *v != version)
            && self.verified_at(key);
        if newer {
            let _ = self.block_on(store.delete(&aside_path));
            return Err(Error::Backend {
                op: BackendOp::Quarantine,
                target: self.target(Some(name)),
                source: "a newer stash was saved at the key meanwhile; it stays (the copy \
                         aside was removed again)"
                    .into(),
            });
        }
        Err(Error::Backend {
            op: BackendOp::Quarantine,
            target: self.target(Some(name)),
            source: Box::new(KeptAside { aside: self.target(Some(aside)), source: e }),
        })
    }

    fn cleanup(&self) -> Result<Vec<String>> {
        self.collect_garbage()
    }

    /// A batch's PUTs go out eight at a time: each is its own
    /// request, and the service takes them in parallel.
    fn concurrent_puts(&self) -> usize {
        BATCH_PUTS
    }

    fn child(&self, ns: &str) -> Box<dyn Backend> {
        Box::new(ObjectStoreBackend::at(self.shared.clone(), self.prefix.clone().join(ns), None))
    }

    fn children(&self) -> Result<Vec<String>> {
        let listing = self
            .block_on(self.shared.store().list_with_delimiter(Some(&self.prefix)))
            .map_err(|e| Error::Backend {
                op: BackendOp::ListNamespaces,
                target: self.location.clone(),
                source: service_error(e),
            })?;
        let mut found: Vec<String> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_owned))
            .filter(|n| !n.starts_with('.'))
            .collect();
        found.sort();
        Ok(found)
    }
}
