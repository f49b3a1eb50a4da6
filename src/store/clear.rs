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
        let removed = {
            let _claim = self.claim_thread(key, true)?;
            self.delete_via(self.backend.as_ref(), key, None)?
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

    /// [`clear_if`](Store::clear_if) without telling observers.
    pub(super) fn clear_if_unannounced(&self, key: &StashKey, digest: &Digest) -> Result<bool> {
        let _claim = self.claim_thread(key, true)?;
        self.delete_via(self.backend.as_ref(), key, Some(digest))
    }

    /// Removes `key`'s stash through `via`, if it still has `digest` when
    /// one is given. Observers are the caller's to notify.
    pub(super) fn delete_via(
        &self,
        via: &dyn Backend,
        key: &StashKey,
        digest: Option<&Digest>,
    ) -> Result<bool> {
        let cond = digest.map_or(Precondition::Any, |d| Precondition::Unchanged(*d));
        match via.delete(key, cond)? {
            Outcome::Done => {
                tracing::info!(key = %key, "stash cleared");
                Ok(true)
            }
            Outcome::Missing => Ok(false),
            Outcome::Refused { .. } => {
                tracing::info!(key = %key, "stash not cleared: another writer's stash is in place");
                Ok(false)
            }
        }
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

    fn quarantine_quietly(&self, key: &StashKey) -> Result<Option<PathBuf>> {
        let _claim = self.claim_thread(key, true)?;
        self.quarantine_via(self.backend.as_ref(), key)
    }

    /// Moves `key`'s stash aside through `via`, to
    /// `.KEY.quarantined.STAMP`, a name no key can have.
    pub(super) fn quarantine_via(
        &self,
        via: &dyn Backend,
        key: &StashKey,
    ) -> Result<Option<PathBuf>> {
        let stamp = humantime::format_rfc3339_nanos(SystemTime::now()).to_string().replace(':', "");
        let base = names::quarantine_base(key, &stamp);
        Ok(via.quarantine(key, &base)?.map(|name| self.dir.join(name)))
    }
}
