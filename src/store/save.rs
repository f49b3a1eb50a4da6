use super::streamed::serialize_error;
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
        self.save_if(key, value, opts, Precondition::Any)
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
        let header = self.header_for(key, opts)?;
        let mut receipt = {
            let _claim = self.claim_thread(key, true)?;
            Self::put_value(&self.dir, self.backend.as_ref(), &header, expect, |w| {
                serde_json::to_writer(w, value)
            })?
        };
        // Persist first, and unlocked: an observer may even write this key.
        receipt.observer_errors = notify(&self.observers, &Event::Saved(&receipt));
        Ok(receipt)
    }

    /// A save through a held lock's backend (its session, its lease, its
    /// `flock`), under `expect`.
    pub(super) fn save_via<T: Serialize + ?Sized>(
        &self,
        via: &dyn Backend,
        key: &StashKey,
        value: &T,
        opts: &SaveOptions,
        expect: Precondition,
    ) -> Result<Receipt> {
        let header = self.header_for(key, opts)?;
        let mut receipt =
            Self::put_value(&self.dir, via, &header, expect, |w| serde_json::to_writer(w, value))?;
        receipt.observer_errors = notify(&self.observers, &Event::Saved(&receipt));
        Ok(receipt)
    }

    pub(super) fn header_for(&self, key: &StashKey, opts: &SaveOptions) -> Result<Header> {
        let kind = opts.kind.as_deref().unwrap_or("value");
        Header::new(key.clone(), kind, opts.origin.as_deref(), SystemTime::now())
    }

    /// Puts through `via`, under `expect`, the envelope of `header` and
    /// what `write` serializes, streamed by an [`EnvelopeWriter`] straight
    /// into the backend's sink: no copy of the envelope is held here.
    pub(super) fn put_value(
        dir: &Path,
        via: &dyn Backend,
        header: &Header,
        expect: Precondition,
        mut write: impl FnMut(&mut EnvelopeWriter<&mut dyn Write>) -> serde_json::Result<()>,
    ) -> Result<Receipt> {
        let key = header.key().clone();
        let path = dir.join(key.as_str());
        let (mut bytes, mut digest) = (0, None);
        let mut fill = |sink: &mut dyn Write| -> Result<Digest> {
            let mut writer =
                EnvelopeWriter::new(sink, header).map_err(io_err(IoOp::Write, &path))?;
            write(&mut writer).map_err(|e| serialize_error(header, &path, e))?;
            let done = writer.finish().map_err(io_err(IoOp::Write, &path))?;
            bytes = done.len;
            digest = Some(done.digest);
            Ok(done.digest)
        };
        let outcome = via.put_with(&key, expect, &mut fill)?;
        Self::receipt(dir, header, outcome, expect, bytes, digest)
    }

    /// The receipt of a put, or the refusal it met.
    pub(super) fn receipt(
        dir: &Path,
        header: &Header,
        outcome: Outcome,
        expect: Precondition,
        bytes: u64,
        digest: Option<Digest>,
    ) -> Result<Receipt> {
        let key = header.key().clone();
        let path = dir.join(key.as_str());
        // Refused, with this very envelope in place (its digest covers the
        // header's creation time, so no other save makes it): a retry that
        // met its own write, which is this save done.
        let own = matches!(outcome, Outcome::Refused { current: Some(c) } if Some(c) == digest);
        if let (Outcome::Refused { current }, false) = (outcome, own) {
            return Err(match expect {
                Precondition::Unchanged(expected) => Error::Replaced { key, path, expected },
                _ => Error::StashExists { key, path, digest: current },
            });
        }
        // A streamed put learns its digest from the fill, which `Done` implies ran.
        let digest = digest.ok_or_else(|| Error::Backend {
            op: BackendOp::Save,
            target: path.display().to_string(),
            source: "the backend reported a save it never wrote".into(),
        })?;
        tracing::info!(key = %key, bytes, digest = %digest, "stash written");
        Ok(Receipt {
            key,
            path,
            bytes,
            digest,
            created: header.created(),
            observer_errors: Vec::new(),
        })
    }
}
