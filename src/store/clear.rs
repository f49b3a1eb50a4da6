use super::*;

impl<F: Fs> Store<F> {
    /// Removes `key`'s stash. Idempotent: returns whether a stash was removed.
    /// The absence is durable when it returns, even when there was nothing to
    /// remove (the directory is fsynced either way, since an earlier failed
    /// clear may have left its removal pending).
    ///
    /// Creates nothing: a missing directory or stash is `Ok(false)`.
    ///
    /// # Errors
    ///
    /// [`Error::NotAFile`] when a symlink, directory or special file is at the
    /// path; [`Error::Io`] when removing or syncing fails.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// let key = safestash::StashKey::new("k")?;
    /// store.save(&key, &1)?;
    /// assert!(store.clear(&key)?);
    /// assert!(!store.clear(&key)?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn clear(&self, key: &StashKey) -> Result<bool> {
        if self.remote.is_some() {
            return self.remote_clear(key, None);
        }
        if !self.expect_file_or_nothing(&self.path_of(key))? {
            self.sync_absence()?;
            return Ok(false);
        }
        let removed = {
            let _lock = self.acquire(key, true, false)?;
            self.clear_locked(key)?
        };
        if removed {
            notify(&self.observers, &Event::Cleared { key });
        }
        Ok(removed)
    }

    /// Removes `key`'s stash only if it is still the one with `digest` (the
    /// digest in a [`Receipt`]): a conditional clear, so a worker never
    /// removes a stash another worker has since written. Returns whether it
    /// removed the stash. Takes the key's lock; reads only the trailer.
    ///
    /// # Errors
    ///
    /// As [`clear`](Store::clear).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// let key = safestash::StashKey::new("k")?;
    /// let mine = store.save(&key, &"mine")?;
    /// store.save(&key, &"another worker's")?;
    /// assert!(!store.clear_if(&key, &mine.digest)?); // not mine any more: kept
    /// assert!(store.load::<String>(&key)?.is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn clear_if(&self, key: &StashKey, digest: &Digest) -> Result<bool> {
        let removed = self.clear_if_unannounced(key, digest)?;
        if removed {
            notify(&self.observers, &Event::Cleared { key });
        }
        Ok(removed)
    }

    /// [`clear_if`](Store::clear_if) without telling observers: the
    /// caller's to notify.
    pub(super) fn clear_if_unannounced(&self, key: &StashKey, digest: &Digest) -> Result<bool> {
        if let Some(remote) = &self.remote {
            let _claim = self.claim_thread(key, true)?;
            return self.remote_delete(remote.as_ref(), key, Some(digest));
        }
        if !self.expect_file_or_nothing(&self.path_of(key))? {
            self.sync_absence()?;
            return Ok(false);
        }
        let removed = {
            let _lock = self.acquire(key, true, false)?;
            match self.recorded_digest(key)? {
                Some(found) if found == *digest => self.clear_locked(key)?,
                _ => {
                    tracing::info!(key = %key, "stash not cleared: another writer's stash is in place");
                    false
                }
            }
        };
        Ok(removed)
    }

    /// The digest in the trailer of `key`'s file, if it has a valid trailer.
    pub(super) fn recorded_digest(&self, key: &StashKey) -> Result<Option<Digest>> {
        let path = self.path_of(key);
        let (mut reader, len) = match self.fs.open_read(&path).map_err(io_err(IoOp::Open, &path))? {
            Opened::File { reader, len } => (reader, len),
            Opened::Missing => return Ok(None),
            Opened::NotAFile(found) => {
                return Err(Error::NotAFile { path, found, expected: FileKind::File });
            }
        };
        let Some(start) = len.checked_sub(envelope::TRAILER_LEN as u64) else {
            return Ok(None);
        };
        let mut trailer = [0u8; envelope::TRAILER_LEN];
        reader.seek(SeekFrom::Start(start)).map_err(io_err(IoOp::Read, &path))?;
        reader.read_exact(&mut trailer).map_err(io_err(IoOp::Read, &path))?;
        Ok(envelope::recorded_digest(&trailer))
    }

    /// Makes "no stash here" durable: an earlier removal or rename that
    /// failed before its directory fsync may still be pending. A missing
    /// directory has nothing to sync.
    pub(super) fn sync_absence(&self) -> Result<()> {
        match self.fs.sync_dir(&self.dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(io_err(IoOp::SyncDir, &self.dir)(e))
            }
            _ => Ok(()),
        }
    }

    pub(crate) fn clear_locked(&self, key: &StashKey) -> Result<bool> {
        let path = self.path_of(key);
        if !self.expect_file_or_nothing(&path)? {
            self.sync_absence()?;
            return Ok(false);
        }
        match self.fs.remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.sync_absence()?;
                return Ok(false);
            }
            Err(e) => return Err(io_err(IoOp::Remove, &path)(e)),
        }
        self.fs.sync_dir(&self.dir).map_err(io_err(IoOp::SyncDir, &self.dir))?;
        tracing::info!(key = %key, "stash cleared");
        Ok(true)
    }

    /// Moves `key`'s stash aside to `.KEY.quarantined.TIMESTAMP` in the same
    /// directory, for inspection, and returns the new path (`None` if there
    /// was no stash). The file is not read: this works on damaged stashes.
    /// After it, `load` finds no stash and [`list`](Store::list) skips the
    /// file.
    ///
    /// # Errors
    ///
    /// [`Error::NotAFile`] when a symlink, directory or special file is at the
    /// path; [`Error::Io`] / [`Error::Rename`] when a filesystem call fails.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// let key = safestash::StashKey::new("k")?;
    /// std::fs::write(store.path_of(&key), b"garbage")?;
    /// assert!(store.load::<i32>(&key).is_err());
    /// let aside = store.quarantine(&key)?.unwrap();
    /// assert_eq!(std::fs::read(aside)?, b"garbage");
    /// assert!(store.load::<i32>(&key)?.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn quarantine(&self, key: &StashKey) -> Result<Option<PathBuf>> {
        let aside = self.quarantine_quietly(key);
        if let Ok(Some(aside)) = &aside {
            tracing::info!(key = %key, aside = %aside.display(), "stash quarantined");
        }
        aside
    }

    /// [`quarantine`](Store::quarantine), with no event of its own.
    fn quarantine_quietly(&self, key: &StashKey) -> Result<Option<PathBuf>> {
        if let Some(remote) = &self.remote {
            let _claim = self.claim_thread(key, true)?;
            return self.remote_quarantine(remote.as_ref(), key);
        }
        if !self.expect_file_or_nothing(&self.path_of(key))? {
            self.sync_absence()?;
            return Ok(None);
        }
        let _lock = self.acquire(key, true, false)?;
        self.quarantine_locked(key)
    }

    pub(crate) fn quarantine_locked(&self, key: &StashKey) -> Result<Option<PathBuf>> {
        let path = self.path_of(key);
        if !self.expect_file_or_nothing(&path)? {
            self.sync_absence()?;
            return Ok(None);
        }
        let stamp = humantime::format_rfc3339_nanos(SystemTime::now()).to_string().replace(':', "");
        let base = names::quarantine_base(key, &stamp);
        // Quarantine names are only made under the key's lock, so checking
        // for a free name first cannot race with another quarantine.
        let mut aside = self.dir.join(&base);
        let mut n = 1;
        while self.fs.metadata(&aside).map_err(io_err(IoOp::Inspect, &aside))?.is_some() {
            aside = self.dir.join(format!("{base}-{n}"));
            n += 1;
        }
        self.fs.rename(&path, &aside).map_err(|source| Error::Rename {
            from: path.clone(),
            to: aside.clone(),
            source,
        })?;
        self.fs.sync_dir(&self.dir).map_err(io_err(IoOp::SyncDir, &self.dir))?;
        Ok(Some(aside))
    }
}
