use super::*;

impl<F: Fs> Store<F> {
    /// The stash keys present, from the directory's file names: every name
    /// that is a valid key. The store's own dot-files and names that are not
    /// keys are skipped. A missing directory has no stashes.
    pub(super) fn entries(&self) -> Result<Vec<(StashKey, FileKind)>> {
        if self.remote.is_some() {
            return self.remote_entries();
        }
        let entries = match self.fs.read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(IoOp::ReadDir, &self.dir)(e)),
        };
        let mut keys: Vec<_> = entries
            .into_iter()
            .filter_map(|entry| {
                let name = entry.name.into_string().ok()?;
                Some((StashKey::new(name).ok()?, entry.kind))
            })
            .collect();
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(keys)
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
        if self.remote.is_some() {
            return self.remote_list();
        }
        Ok(self
            .entries()?
            .into_iter()
            .map(|(key, kind)| {
                let path = self.path_of(&key);
                let (size, header) = self.read_header_of(&path, kind);
                StashInfo { key, path, size, header }
            })
            .collect())
    }

    pub(super) fn read_header_of(&self, path: &Path, kind: FileKind) -> (u64, Result<Header>) {
        if kind != FileKind::File {
            return (
                0,
                Err(Error::NotAFile {
                    path: path.to_owned(),
                    found: kind,
                    expected: FileKind::File,
                }),
            );
        }
        let (reader, len) = match self.fs.open_read(path) {
            Ok(Opened::File { reader, len }) => (reader, len),
            Ok(Opened::Missing) => {
                let e = io::Error::from(io::ErrorKind::NotFound);
                return (0, Err(io_err(IoOp::Open, path)(e)));
            }
            Ok(Opened::NotAFile(found)) => {
                return (
                    0,
                    Err(Error::NotAFile { path: path.to_owned(), found, expected: FileKind::File }),
                );
            }
            Err(e) => return (0, Err(io_err(IoOp::Open, path)(e))),
        };
        let mut prefix = Vec::with_capacity(MAX_PREFIX_LEN);
        if let Err(e) = reader.take(MAX_PREFIX_LEN as u64).read_to_end(&mut prefix) {
            return (len, Err(io_err(IoOp::Read, path)(e)));
        }
        let header = envelope::read_header(&prefix).map_err(|e| match e {
            DecodeError::Corrupt(reason) => Error::Corrupt { path: path.to_owned(), reason },
            DecodeError::UnsupportedVersion(version) => {
                Error::UnsupportedVersion { path: path.to_owned(), version }
            }
        });
        (len, header)
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
                let result = match self.open_verified(&key, VERIFY_WHOLE_LIMIT) {
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
        if let Some(remote) = &self.remote {
            // What the backend collects: nothing where a save is one
            // transaction; an object store's unreferenced data objects.
            let mut removed: Vec<PathBuf> =
                remote.cleanup()?.into_iter().map(|name| self.dir.join(name)).collect();
            removed.sort();
            return Ok(removed);
        }
        let entries = match self.fs.read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(IoOp::ReadDir, &self.dir)(e)),
        };
        let mut removed = Vec::new();
        let mut first_error = None;
        for entry in entries {
            let Some(key) = entry.name.to_str().and_then(temp_file_key) else {
                continue;
            };
            let path = self.dir.join(&entry.name);
            // A live writer holds the key's lock for as long as its temp file exists.
            let outcome = match self.acquire(&key, false, false) {
                Err(Error::Locked { .. }) => continue,
                Err(e) => Err(e),
                Ok(_lock) => match self.fs.remove_file(&path) {
                    Ok(()) => {
                        removed.push(path);
                        Ok(())
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(io_err(IoOp::Remove, &path)(e)),
                },
            };
            // One bad entry does not stop the others from being cleaned.
            if let Err(e) = outcome {
                first_error.get_or_insert(e);
            }
        }
        if !removed.is_empty() {
            self.fs.sync_dir(&self.dir).map_err(io_err(IoOp::SyncDir, &self.dir))?;
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        removed.sort();
        Ok(removed)
    }
}
