use super::streamed::decode_error;
use super::*;

impl<F: Fs> Store<F> {
    /// The stash keys present, from the directory's file names: every name
    /// that is a valid key. The store's own dot-files and names that are not
    /// keys are skipped. A missing directory has no stashes.
    pub(super) fn entries(&self) -> Result<Vec<(StashKey, FileKind)>> {
        Ok(self
            .backend
            .entries(0, true)?
            .into_iter()
            .filter_map(|e| Some((StashKey::new(e.name).ok()?, e.kind)))
            .collect())
    }

    /// Lists every stash with its header, sorted by key, reading only the
    /// magic line and header of each file (at most
    /// [`MAX_PREFIX_LEN`](crate::envelope::MAX_PREFIX_LEN) bytes). Damaged or foreign entries are listed with
    /// the reason in [`StashInfo::header`]; the digest is not checked (use
    /// [`verify`](Store::verify)).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the directory cannot be listed. Errors reading one
    /// entry are reported in that entry.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// # use safestash::StashKey;
    /// store.save(&StashKey::new("b")?, &1)?;
    /// store.save(&StashKey::new("a")?, &2)?;
    /// let keys: Vec<String> = store.list()?.into_iter().map(|i| i.key.into_string()).collect();
    /// assert_eq!(keys, ["a", "b"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn list(&self) -> Result<Vec<StashInfo>> {
        Ok(self
            .backend
            .entries(MAX_PREFIX_LEN, true)?
            .into_iter()
            .filter_map(|e| {
                let key = StashKey::new(e.name.as_str()).ok()?;
                let path = self.path_of(&key);
                let header = e.head.and_then(|head| {
                    envelope::read_header(&head).map_err(|err| decode_error(&path, err))
                });
                Some(StashInfo { key, path, size: e.len.unwrap_or(0), header })
            })
            .collect())
    }

    /// Fully verifies every stash (digest, header, key), without
    /// deserializing payloads. Sorted by key.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the directory cannot be listed. Each entry's own
    /// problem is in its [`VerifyReport::result`].
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// # use safestash::StashKey;
    /// store.save(&StashKey::new("good")?, &1)?;
    /// std::fs::write(dir.path().join("bad"), b"garbage")?;
    /// let report = store.verify()?;
    /// let bad: Vec<&str> = report.iter().filter(|r| r.result.is_err()).map(|r| r.key.as_str()).collect();
    /// assert_eq!(bad, ["bad"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn verify(&self) -> Result<Vec<VerifyReport>> {
        Ok(self
            .entries()?
            .into_iter()
            .map(|(key, _)| {
                let path = self.path_of(&key);
                let result = match self.open_verified(&key, self.backend.whole_read().verify) {
                    Ok(Some((meta, _))) => Ok(meta),
                    Ok(None) => Err(io_err(IoOp::Open, &path)(io::ErrorKind::NotFound.into())),
                    Err(e) => {
                        super::load::log_damage(&key, &e);
                        Err(e)
                    }
                };
                VerifyReport { key, path, result }
            })
            .collect())
    }

    /// Removes temp files left by writers that crashed mid-save, and returns
    /// their paths. A temp file is only removed when its key's lock is free,
    /// so a save in progress (in any process) is never disturbed. Temp files
    /// are never read as stashes whether or not this runs.
    ///
    /// On object storage it removes instead the data objects of multipart
    /// saves that no reference names and that are older than the backend's
    /// grace period (`Options::gc_grace`, default 1 hour): those of
    /// replaced, cleared or failed saves (see `backend::object_store`).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the directory cannot be listed, a lock taken, a file
    /// removed, or the directory synced. A failure on one temp file does not
    /// stop the others from being removed (and the removals made durable);
    /// the first such error is returned after the walk.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// // What a writer killed mid-save leaves behind:
    /// std::fs::write(dir.path().join(".k.Ab3dE5gH.tmp"), b"half a stash")?;
    /// assert_eq!(store.cleanup()?, [dir.path().join(".k.Ab3dE5gH.tmp")]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn cleanup(&self) -> Result<Vec<PathBuf>> {
        let mut removed: Vec<PathBuf> =
            self.backend.cleanup()?.into_iter().map(|name| self.dir.join(name)).collect();
        removed.sort();
        Ok(removed)
    }
}
