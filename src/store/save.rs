use super::*;

impl<F: Fs> Store<F> {
    /// Saves `value` under `key`, durably and atomically, with kind `value`
    /// and no origin.
    ///
    /// When this returns `Ok`, the stash survives a power cut. The protocol:
    /// take the key's lock; create `.KEY.XXXXXXXX.tmp` in the store's
    /// directory with `O_CREAT|O_EXCL`, mode 0600; serialize the envelope into
    /// it in one pass; `fsync` it; close it; rename it over `KEY`; `fsync` the
    /// directory. The directory (and missing parents) are created first if
    /// needed, each fsynced into its parent.
    ///
    /// # Errors
    ///
    /// - [`Error::Serialize`] when `value` does not serialize;
    /// - [`Error::NotAFile`] when a symlink, directory or special file is at
    ///   the stash path (it is neither followed nor replaced);
    /// - [`Error::Io`] / [`Error::Rename`] when a filesystem call fails.
    ///
    /// On any error before the rename, the previous stash is untouched and the
    /// temp file is removed. If only the final directory `fsync` fails, the
    /// new stash is in place but may not survive a crash; the error says so by
    /// naming the `sync directory` operation.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// let key = safestash::StashKey::new("tenants")?;
    /// let receipt = store.save(&key, &["acme", "globex"])?;
    /// assert_eq!(receipt.path, dir.path().join("tenants"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn save<T: Serialize + ?Sized>(&self, key: &StashKey, value: &T) -> Result<Receipt> {
        self.save_with(key, value, &SaveOptions::default())
    }

    /// Saves `value` under `key` with a kind label and an origin; otherwise
    /// exactly as [`save`](Store::save).
    ///
    /// # Errors
    ///
    /// As [`save`](Store::save), and [`Error::InvalidOption`] when the kind
    /// or origin breaks its rule (checked before anything is written).
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::{SaveOptions, StashKey, Store};
    /// # let dir = tempfile::tempdir()?;
    /// # let store = Store::open(dir.path())?;
    /// let opts = SaveOptions::new().kind("field-dictionary").origin("upload-7f3a");
    /// store.save_with(&StashKey::new("orders")?, &["amount"], &opts)?;
    /// let meta = store.load::<Vec<String>>(&StashKey::new("orders")?)?.unwrap().meta().clone();
    /// assert_eq!(meta.header.kind(), "field-dictionary");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn save_with<T: Serialize + ?Sized>(
        &self,
        key: &StashKey,
        value: &T,
        opts: &SaveOptions,
    ) -> Result<Receipt> {
        if self.remote.is_some() {
            return self.remote_save(key, value, opts, Precondition::Any);
        }
        let header = self.header_for(key, opts)?;
        let mut receipt = {
            let _lock = self.acquire(key, true, true)?;
            self.write_stash(header, value)?
        };
        // Persist first, and unlocked: an observer may even write this key.
        receipt.observer_errors = notify(&self.observers, &Event::Saved(&receipt));
        Ok(receipt)
    }

    /// Saves `value` under `key` only if the stash there is as `expect`
    /// says, checked under the key's lock: a conditional save, so a worker
    /// never replaces a stash it has not seen.
    ///
    /// # Errors
    ///
    /// As [`save_with`](Store::save_with), and:
    /// - [`Error::StashExists`] when `expect` is [`Precondition::Absent`] and
    ///   a stash (even a damaged one) is there;
    /// - [`Error::Replaced`] when `expect` is [`Precondition::Unchanged`] and
    ///   the stash there is gone or has another digest.
    ///
    /// Nothing is written when the precondition fails.
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::{Error, Precondition, SaveOptions, StashKey, Store};
    /// # let dir = tempfile::tempdir()?;
    /// # let store = Store::open(dir.path())?;
    /// let key = StashKey::new("orders")?;
    /// let opts = SaveOptions::new();
    /// let first = store.save_if(&key, &1, &opts, Precondition::Absent)?;
    /// // A second create-if-absent is refused: the first stash is kept.
    /// assert!(matches!(
    ///     store.save_if(&key, &2, &opts, Precondition::Absent),
    ///     Err(Error::StashExists { .. })
    /// ));
    /// // Replacing the stash this caller has seen is allowed.
    /// store.save_if(&key, &3, &opts, Precondition::Unchanged(first.digest))?;
    /// assert_eq!(*store.load::<i32>(&key)?.unwrap().value(), 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn save_if<T: Serialize + ?Sized>(
        &self,
        key: &StashKey,
        value: &T,
        opts: &SaveOptions,
        expect: Precondition,
    ) -> Result<Receipt> {
        if self.remote.is_some() {
            return self.remote_save(key, value, opts, expect);
        }
        let header = self.header_for(key, opts)?;
        let mut receipt = {
            let _lock = self.acquire(key, true, true)?;
            self.check_precondition(key, expect)?;
            self.write_stash(header, value)?
        };
        receipt.observer_errors = notify(&self.observers, &Event::Saved(&receipt));
        Ok(receipt)
    }

    /// Checks `expect` against the stash of `key`; the caller holds the lock.
    pub(super) fn check_precondition(&self, key: &StashKey, expect: Precondition) -> Result<()> {
        let path = self.path_of(key);
        match expect {
            Precondition::Any => Ok(()),
            Precondition::Absent => {
                if self.expect_file_or_nothing(&path)? {
                    let digest = self.recorded_digest(key)?;
                    return Err(Error::StashExists { key: key.clone(), path, digest });
                }
                Ok(())
            }
            Precondition::Unchanged(expected) => match self.recorded_digest(key)? {
                Some(found) if found == expected => Ok(()),
                _ => Err(Error::Replaced { key: key.clone(), path, expected }),
            },
        }
    }

    pub(super) fn header_for(&self, key: &StashKey, opts: &SaveOptions) -> Result<Header> {
        let kind = opts.kind.as_deref().unwrap_or("value");
        Header::new(key.clone(), kind, opts.origin.as_deref(), SystemTime::now())
    }

    pub(crate) fn save_locked<T: Serialize + ?Sized>(
        &self,
        key: &StashKey,
        value: &T,
        opts: &SaveOptions,
    ) -> Result<Receipt> {
        let header = self.header_for(key, opts)?;
        let mut receipt = self.write_stash(header, value)?;
        receipt.observer_errors = notify(&self.observers, &Event::Saved(&receipt));
        Ok(receipt)
    }

    /// The save protocol, with the key's lock held. Observers are the
    /// caller's to notify.
    pub(super) fn write_stash<T: Serialize + ?Sized>(
        &self,
        header: Header,
        value: &T,
    ) -> Result<Receipt> {
        let key = header.key().clone();
        let path = self.path_of(&key);
        self.expect_file_or_nothing(&path)?;
        self.sync_chain()?;
        let (file, tmp) = self
            .fs
            .create_temp(&self.dir, &names::temp_prefix(&key), TEMP_SUFFIX)
            .map_err(io_err(IoOp::CreateTemp, &self.dir))?;
        let written = self.fill_temp(file, &tmp, &header, value).and_then(|(digest, bytes)| {
            self.fs.rename(&tmp, &path).map_err(|source| Error::Rename {
                from: tmp.clone(),
                to: path.clone(),
                source,
            })?;
            Ok((digest, bytes))
        });
        let (digest, bytes) = match written {
            Ok(done) => done,
            Err(e) => {
                // Best effort: a leftover is recognised and removed by `cleanup`.
                let _ = self.fs.remove_file(&tmp);
                return Err(e);
            }
        };
        self.fs.sync_dir(&self.dir).map_err(io_err(IoOp::SyncDir, &self.dir))?;
        let receipt = Receipt {
            key,
            path,
            bytes,
            digest,
            created: header.created(),
            observer_errors: Vec::new(),
        };
        tracing::info!(key = %receipt.key, bytes, digest = %digest, "stash written");
        Ok(receipt)
    }

    /// Writes the envelope into the temp file, fsyncs and closes it.
    pub(super) fn fill_temp<T: Serialize + ?Sized>(
        &self,
        file: F::File,
        tmp: &Path,
        header: &Header,
        value: &T,
    ) -> Result<(Digest, u64)> {
        self.fill_temp_with(file, tmp, header, |w| serde_json::to_writer(w, value))
    }

    /// [`fill_temp`](Store::fill_temp) with the payload written by `write`.
    pub(super) fn fill_temp_with(
        &self,
        file: F::File,
        tmp: &Path,
        header: &Header,
        write: impl FnOnce(&mut EnvelopeWriter<Writeback<'_, F>>) -> serde_json::Result<()>,
    ) -> Result<(Digest, u64)> {
        let (mut file, digest, len) = self.write_envelope(file, tmp, header, write)?;
        self.fs.sync_file(&mut file).map_err(io_err(IoOp::SyncFile, tmp))?;
        drop(file);
        Ok((digest, len))
    }

    /// Writes the envelope into the temp file and hands the file back,
    /// not yet synced, with the envelope's digest and length.
    pub(super) fn write_envelope(
        &self,
        file: F::File,
        tmp: &Path,
        header: &Header,
        write: impl FnOnce(&mut EnvelopeWriter<Writeback<'_, F>>) -> serde_json::Result<()>,
    ) -> Result<(F::File, Digest, u64)> {
        let file = Writeback { fs: &self.fs, file, written: 0, started: 0 };
        let mut writer = EnvelopeWriter::new(file, header).map_err(io_err(IoOp::Write, tmp))?;
        if let Err(e) = write(&mut writer) {
            return Err(if e.is_io() {
                Error::Io { op: IoOp::Write, path: tmp.to_owned(), source: e.into() }
            } else {
                Error::Serialize { key: header.key().clone(), source: e }
            });
        }
        let done = writer.finish().map_err(io_err(IoOp::Write, tmp))?;
        Ok((done.inner.file, done.digest, done.len))
    }

    /// Refuses a symlink, directory or special file at a stash path.
    pub(super) fn expect_file_or_nothing(&self, path: &Path) -> Result<bool> {
        match self.fs.metadata(path).map_err(io_err(IoOp::Inspect, path))? {
            None => Ok(false),
            Some(FileKind::File) => Ok(true),
            Some(found) => {
                Err(Error::NotAFile { path: path.to_owned(), found, expected: FileKind::File })
            }
        }
    }

    /// Once per store: fsyncs every ancestor of the directory, so that the
    /// directory itself is durably reachable even if whoever created it
    /// (another process, or an earlier failed save) never synced it.
    pub(super) fn sync_chain(&self) -> Result<()> {
        if self.chain_synced.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut cur = self.dir.as_path();
        while let Some(parent) = cur.parent() {
            let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
            match self.fs.sync_dir(parent) {
                Ok(()) => {}
                // An ancestor this user may pass through but not open (mode
                // 0711, say) cannot be synced by anyone but its owner; it
                // was not created by this store.
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {}
                Err(e) => return Err(io_err(IoOp::SyncDir, parent)(e)),
            }
            if parent == Path::new(".") {
                break;
            }
            cur = parent;
        }
        self.chain_synced.store(true, Ordering::Release);
        Ok(())
    }

    /// Creates the store's directory and missing parents, each fsynced into
    /// its parent.
    pub(super) fn ensure_dir(&self) -> Result<()> {
        let mut missing = Vec::new();
        let mut cur = self.dir.as_path();
        loop {
            match self.fs.metadata(cur).map_err(io_err(IoOp::Inspect, cur))? {
                Some(FileKind::Dir | FileKind::Symlink) => break,
                Some(found) => {
                    return Err(Error::NotAFile {
                        path: cur.to_owned(),
                        found,
                        expected: FileKind::Dir,
                    });
                }
                None => missing.push(cur),
            }
            match cur.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => cur = parent,
                _ => break,
            }
        }
        for dir in missing.into_iter().rev() {
            match self.fs.create_dir(dir) {
                Ok(()) => {}
                // Another writer created it first; it syncs it too, but so do we.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err(IoOp::CreateDir, dir)(e)),
            }
            let parent = match dir.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            self.fs.sync_dir(parent).map_err(io_err(IoOp::SyncDir, parent))?;
        }
        Ok(())
    }
}

/// How many bytes of a temp file are written before their writeback is
/// started ([`Fs::start_writeback`]): a large stash's writeback overlaps
/// with serializing and hashing the rest instead of all waiting for the
/// final `fsync` (a 1 MiB save's `fsync` went from 1.1 ms to 0.4 ms).
/// Smaller stashes never reach it. Measured on this project's disk
/// (issue 16), every 256 KiB cost more in `fadvise` calls than it saved
/// (1.19-1.23 × the floor at 1 MiB), every 512 KiB measured 1.12-1.22,
/// every 768 KiB 1.11-1.21, and every 8 MiB 1.21-1.36.
const WRITEBACK_CHUNK: u64 = 512 << 10;

/// A temp file being written, which starts the writeback of every
/// [`WRITEBACK_CHUNK`] written.
pub(super) struct Writeback<'f, F: Fs> {
    fs: &'f F,
    file: F::File,
    written: u64,
    started: u64,
}

impl<F: Fs> io::Write for Writeback<'_, F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.started >= WRITEBACK_CHUNK {
            self.fs.start_writeback(&mut self.file, self.started, self.written - self.started)?;
            self.started = self.written;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}
