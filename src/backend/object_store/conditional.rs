//! Conditional writes: what is at a key, what this process last saw there,
//! and the one conditional PUT (or its read-back after an ambiguous answer).

use super::multipart::{parse_reference, trailer_digest};
use super::state::*;
use super::*;

impl ObjectStoreBackend {
    /// What this process last saw at `name`, if anything.
    pub(super) fn known(&self, name: &str) -> Option<Current> {
        let known = self.shared.known.lock().unwrap_or_else(PoisonError::into_inner);
        known.get(self.path(name).as_ref()).cloned()
    }

    /// Keeps `state` as what is at `name` now (`None`: nothing known).
    pub(super) fn remember(&self, name: &str, state: Option<Current>) {
        let mut known = self.shared.known.lock().unwrap_or_else(PoisonError::into_inner);
        let path = self.path(name).to_string();
        match state {
            Some(Current::Absent) | None => {
                known.remove(&path);
            }
            Some(state) => {
                if known.len() >= KNOWN_MAX && !known.contains_key(&path) {
                    known.clear();
                }
                known.insert(path, state);
            }
        }
    }

    /// What a write to `name` under `cond` may assume is there without
    /// reading it: the state this process last saw, when the write's
    /// condition holds on it, or nothing (a create: `If-None-Match: *`)
    /// for a save to a key it knows nothing of. `None`: read first.
    ///
    /// The write is conditional on the guess, so a wrong guess costs a
    /// refused PUT and a read, never a guarantee.
    pub(super) fn guess(&self, name: &str, cond: Precondition, tombstone: bool) -> Option<Current> {
        if self.fenced_version(name).is_some() {
            // The locked key: the holder's own view decides (see `write`).
            return None;
        }
        let known = self.known(name);
        match (cond, known, tombstone) {
            (Precondition::Any | Precondition::Absent, None, false) => Some(Current::Absent),
            (Precondition::Any, Some(c), false) => Some(c),
            (Precondition::Absent, Some(c @ Current::Tombstone(..)), false) => Some(c),
            (Precondition::Any, Some(c @ Current::Stash { .. }), true) => Some(c),
            (Precondition::Unchanged(d), Some(c @ Current::Stash { .. }), _)
                if c.digest() == Some(d) =>
            {
                Some(c)
            }
            _ => None,
        }
    }

    /// The state of `name` now, read (see [`read_current`](Self::read_current)),
    /// and remembered.
    pub(super) async fn current(&self, name: &str, op: BackendOp) -> Result<Current> {
        let state = self.read_current(name, op).await?;
        self.remember(name, Some(state.clone()));
        Ok(state)
    }

    /// The state of `name` now: one ranged GET of its first 4 KiB, which is
    /// all of a small object (every reference and tombstone is small); for a
    /// large one, a second ranged GET of its trailer, on the same ETag.
    pub(super) async fn read_current(&self, name: &str, op: BackendOp) -> Result<Current> {
        let path = self.path(name);
        for _ in 0..RETRIES {
            // The first 4 KiB: all of a small object, and the size of any.
            let head =
                GetOptions { range: Some(GetRange::Bounded(0..SMALL)), ..Default::default() };
            let got = match self.shared.store().get_opts(&path, head).await {
                Ok(got) => got,
                Err(object_store::Error::NotFound { .. }) => return Ok(Current::Absent),
                // An empty object has no byte range to give (416): read it whole.
                Err(_) => match self.shared.store().get(&path).await {
                    Ok(got) => got,
                    Err(object_store::Error::NotFound { .. }) => return Ok(Current::Absent),
                    Err(e) => return Err(self.fail(op, name)(e)),
                },
            };
            let version = UpdateVersion::from_meta(&got.meta);
            let size = got.meta.size;
            if size == 0 {
                // Damage (an envelope truncated to nothing), not absence.
                return Ok(Current::Stash { version, digest: None, data: None });
            }
            if size <= SMALL {
                let whole = got.bytes().await.map_err(self.fail(op, name))?;
                if is_tombstone(&whole) {
                    return Ok(Current::Tombstone(version, whole));
                }
                let data = parse_reference(&whole).map(|r| r.data);
                let digest = trailer_digest(&whole);
                return Ok(Current::Stash { version, digest, data });
            }
            drop(got);
            let opts = GetOptions {
                range: Some(GetRange::Offset(size - TRAILER_LEN as u64)),
                if_match: version.e_tag.clone(),
                version: version.version.clone(),
                ..Default::default()
            };
            let tail = match self.shared.store().get_opts(&path, opts).await {
                Ok(got) => got.bytes().await.map_err(self.fail(op, name))?,
                // Replaced or removed in between: read again.
                Err(
                    object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. },
                ) => continue,
                Err(e) => return Err(self.fail(op, name)(e)),
            };
            return Ok(Current::Stash { version, digest: trailer_digest(&tail), data: None });
        }
        Err(Error::Backend {
            op,
            target: self.target(Some(name)),
            source: "it kept changing while being read".into(),
        })
    }

    /// Refuses a change made through a lock whose lease is gone.
    pub(super) fn check_fence(&self, op: BackendOp, name: &str) -> Result<()> {
        match &self.fence {
            Some(lease) => lease.check().map_err(|why| Error::Backend {
                op,
                target: self.target(Some(name)),
                source: why.into(),
            }),
            None => Ok(()),
        }
    }

    /// Whether `name` is the locked key of this (fenced) backend, and the
    /// version its holder last saw there.
    pub(super) fn fenced_version(&self, name: &str) -> Option<Option<UpdateVersion>> {
        let lease = self.fence.as_ref()?;
        (lease.key.as_str() == name).then(|| lease.state().key_version.clone())
    }

    pub(super) fn record_version(&self, name: &str, version: Option<UpdateVersion>) {
        if let Some(lease) = &self.fence {
            if lease.key.as_str() == name {
                lease.state().key_version = version;
            }
        }
    }

    /// Writes `payload` at `name` if `cond` holds, by a conditional PUT on
    /// what is there: on what this process last saw there when that is
    /// enough for `cond` (see [`guess`](Self::guess)): one request; else,
    /// or once the service refused the guess, on what a read finds. `mine`
    /// is how the writer recognises its own write when it reads the key
    /// back. A reference's `deadline`: it is not
    /// written (again) after it (see [`Options::gc_grace`]).
    ///
    /// Nothing is deleted here after an ambiguous answer: the data object
    /// of a reference goes only when its write was refused before any PUT
    /// was sent (so no PUT naming it can land later). The data objects of
    /// replaced references are left to [`Backend::cleanup`].
    pub(super) fn write(
        &self,
        op: BackendOp,
        name: &str,
        payload: PutPayload,
        cond: Precondition,
        mine: Mine<'_>,
        deadline: Option<Instant>,
    ) -> Result<Outcome> {
        let mut sent = false;
        let out =
            self.block_on(self.write_async(op, name, payload, cond, &mine, deadline, &mut sent));
        if let (Ok(Outcome::Refused { .. }), false, Mine::Reference(data, _)) = (&out, sent, &mine)
        {
            // A failure here only leaves an orphan behind, for cleanup.
            let _ = self.block_on(self.shared.store().delete(&self.data_path(data)));
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn write_async(
        &self,
        op: BackendOp,
        name: &str,
        payload: PutPayload,
        cond: Precondition,
        mine: &Mine<'_>,
        deadline: Option<Instant>,
        sent: &mut bool,
    ) -> Result<Outcome> {
        let tombstone = matches!(mine, Mine::Tombstone(_));
        let mut guess = self.guess(name, cond, tombstone);
        for _ in 0..RETRIES {
            let guessed = guess.is_some();
            let current = match guess.take() {
                Some(guessed) => guessed,
                None => {
                    let current = self.current(name, op).await?;
                    // A PUT of ours whose answer was a conflict may have
                    // been our own write, met by object_store's retry: then
                    // it is done.
                    if *sent && current.is(mine) {
                        self.record_version(name, current.version().cloned());
                        return Ok(Outcome::Done);
                    }
                    current
                }
            };
            self.check_fence(op, name)?;
            if let Some(seen) = self.fenced_version(name) {
                if seen.as_ref() != current.version() {
                    return Err(Error::Backend {
                        op,
                        target: self.target(Some(name)),
                        source: "the stash changed since this lock's holder last saw it: \
                                 the lock's lease was lost and another holder wrote it"
                            .into(),
                    });
                }
            }
            let stash = matches!(current, Current::Stash { .. });
            let refused = match cond {
                Precondition::Any => false,
                Precondition::Absent => stash,
                Precondition::Unchanged(d) => current.digest() != Some(d) || !stash,
            };
            let nothing_to_clear = tombstone && !stash;
            if guessed && (refused || nothing_to_clear) {
                // Never decided on a guess: read.
                continue;
            }
            if nothing_to_clear && !matches!(cond, Precondition::Unchanged(_)) {
                return Ok(if refused {
                    Outcome::Refused { current: None }
                } else {
                    Outcome::Missing
                });
            }
            if refused {
                return Ok(Outcome::Refused { current: current.digest() });
            }
            if deadline.is_some_and(|d| Instant::now() > d) {
                return Err(Error::Backend {
                    op,
                    target: self.target(Some(name)),
                    source: "the upload took longer than half of the store's gc_grace, so its \
                             data object may be collected: its reference is not written (the \
                             data is left for cleanup)"
                        .into(),
                });
            }
            let mode = match current.version() {
                None => PutMode::Create,
                Some(v) => PutMode::Update(v.clone()),
            };
            let opts = PutOptions { mode, ..Default::default() };
            *sent = true;
            match self.shared.store().put_opts(&self.path(name), payload.clone(), opts).await {
                Ok(put) => {
                    let version = UpdateVersion::from(put);
                    self.remember(name, Some(Current::landed(mine, version.clone())));
                    self.record_version(name, Some(version));
                    return Ok(Outcome::Done);
                }
                Err(e) if is_conflict(&e) => {
                    // Our own earlier landing, a concurrent writer, or (S3's
                    // 409 ConditionalRequestConflict) nothing at all: the
                    // next read decides.
                    if self.fenced_version(name).is_some() {
                        let now = self.current(name, op).await?;
                        if now.is(mine) {
                            self.record_version(name, now.version().cloned());
                            return Ok(Outcome::Done);
                        }
                        return Err(Error::Backend {
                            op,
                            target: self.target(Some(name)),
                            source: "another writer changed the locked stash: the lock's lease \
                                     was lost (fenced by the service's condition)"
                                .into(),
                        });
                    }
                }
                Err(e) => {
                    // Ambiguous: the PUT may have landed, or may still land.
                    // Done if it is seen to have; otherwise the error stands
                    // (and nothing is deleted on its strength).
                    if let Ok(now) = self.current(name, op).await {
                        if now.is(mine) {
                            self.record_version(name, now.version().cloned());
                            return Ok(Outcome::Done);
                        }
                    }
                    return Err(self.fail(op, name)(e));
                }
            }
        }
        Err(Error::Backend {
            op,
            target: self.target(Some(name)),
            source: format!(
                "other writers changed it {RETRIES} times in a row; not retried further"
            )
            .into(),
        })
    }
}
