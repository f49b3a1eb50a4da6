//! The verbs' path for a store whose envelopes live in a
//! [`Backend`](crate::backend::Backend) (PostgreSQL), and
//! [`Store::open_url`].
//!
//! The envelope is the same: encoded here in memory, handed to the
//! backend with its digest, and on every read decoded and verified here
//! exactly as a file's. The local directory never comes through this file:
//! its verbs keep their own code (and syscalls) unchanged.

use super::batch::ErasedSerialize;
use super::load::Payload;
use super::*;
use crate::backend::{Backend, Condition, Listed, Outcome};

impl From<Precondition> for Condition {
    fn from(p: Precondition) -> Condition {
        match p {
            Precondition::Any => Condition::Any,
            Precondition::Absent => Condition::Absent,
            Precondition::Unchanged(d) => Condition::Unchanged(d),
        }
    }
}

/// The URL schemes of object storage stores.
const OBJECT_STORE_SCHEMES: [&str; 7] = ["s3", "s3a", "gs", "az", "abfs", "abfss", "memory"];

impl Store<OsFs> {
    /// Opens the store a URL names:
    ///
    /// - a plain path, or `file:///absolute/path`: the local directory
    ///   store, exactly as [`Store::open`];
    /// - `postgres://...` or `postgresql://...` (feature `postgres`): a
    ///   namespace in a PostgreSQL database, shared by workers on any host
    ///   (`?namespace=NAME`, default `default`; see
    ///   [`backend::postgres`](crate::backend)). The connection is made, and
    ///   the schema created if missing, before this returns;
    /// - `s3://BUCKET/PREFIX`, `gs://BUCKET/PREFIX`, `az://CONTAINER/PREFIX`
    ///   or `memory:///PREFIX` (feature `object-store`): a prefix in object
    ///   storage, configured from the environment the way `object_store`
    ///   users expect (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, ...; see
    ///   `backend::object_store`). No request is made before the first verb.
    ///
    /// Every verb keeps its semantics on either; on a remote store
    /// [`dir`](Store::dir) and the paths in receipts and errors are the
    /// store's URL (without its password) followed by `/KEY`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOption`] (field `"url"`) for a scheme this build
    /// does not support (a `postgres` URL without the feature names it);
    /// as [`Store::open`] for a path; [`Error::Backend`] when the server
    /// cannot be reached.
    ///
    /// # Examples
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let store = safestash::Store::open_url(&format!("file://{}", dir.path().display()))?;
    /// assert_eq!(store.dir(), dir.path());
    /// assert!(safestash::Store::open_url("ftp://example.com/x").is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_url(url: &str) -> Result<Store> {
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(Error::InvalidOption {
                    field: "url",
                    value: url.to_owned(),
                    rule: "a file:// URL names an absolute path (file:///dir)",
                });
            }
            return Store::open(path);
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Store::open_postgres(url);
        }
        if OBJECT_STORE_SCHEMES
            .iter()
            .any(|s| url.strip_prefix(s).is_some_and(|r| r.starts_with("://")))
        {
            return Store::open_object_store_url(url);
        }
        if let Some((scheme, _)) = url.split_once("://") {
            if !scheme.is_empty()
                && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
            {
                return Err(Error::InvalidOption {
                    field: "url",
                    value: url.to_owned(),
                    rule: "supported: a path, file://, postgres:// or postgresql:// (feature `postgres`), \
                           s3://, gs://, az:// or memory:// (feature `object-store`)",
                });
            }
        }
        Store::open(url)
    }

    #[cfg(feature = "postgres")]
    fn open_postgres(url: &str) -> Result<Store> {
        let backend = crate::backend::postgres::Postgres::connect(url)?;
        Ok(Store::over_backend(Arc::new(backend), OsFs, Vec::new()))
    }

    #[cfg(feature = "object-store")]
    fn open_object_store_url(url: &str) -> Result<Store> {
        let backend = crate::backend::object_store::ObjectStoreBackend::open(url)?;
        Ok(Store::open_object_store(backend))
    }

    #[cfg(not(feature = "object-store"))]
    fn open_object_store_url(url: &str) -> Result<Store> {
        Err(Error::InvalidOption {
            field: "url",
            value: url.split('?').next().unwrap_or(url).to_owned(),
            rule: "object storage stores need safestash built with the cargo feature `object-store`",
        })
    }

    /// The store whose envelopes live in `backend`: a prefix of an object
    /// store built by code (for a URL, [`Store::open_url`] does this).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use safestash::backend::object_store::{ObjectStoreBackend, Options};
    /// let memory = Arc::new(object_store::memory::InMemory::new());
    /// let store = safestash::Store::open_object_store(ObjectStoreBackend::new(
    ///     memory,
    ///     "stashes",
    ///     Options::default(),
    /// )?);
    /// assert!(store.backend().is_some());
    /// # Ok::<(), safestash::Error>(())
    /// ```
    #[cfg(feature = "object-store")]
    pub fn open_object_store(backend: crate::backend::object_store::ObjectStoreBackend) -> Store {
        Store::over_backend(Arc::new(backend), OsFs, Vec::new())
    }

    #[cfg(not(feature = "postgres"))]
    fn open_postgres(url: &str) -> Result<Store> {
        let value = match url.split_once('@') {
            Some((_, host)) => format!("postgresql://…@{host}"),
            None => url.to_owned(),
        };
        Err(Error::InvalidOption {
            field: "url",
            value,
            rule: "PostgreSQL stores need safestash built with the cargo feature `postgres`",
        })
    }
}

impl<F: Fs> Store<F> {
    fn over_backend(backend: Arc<dyn Backend>, fs: F, observers: Vec<Arc<Observer>>) -> Store<F> {
        Store {
            dir: PathBuf::from(backend.location()),
            fs,
            observers,
            chain_synced: AtomicBool::new(true),
            remote: Some(backend),
        }
    }

    /// The backend holding this store's envelopes; `None` for a local
    /// directory store.
    ///
    /// # Examples
    ///
    /// ```
    /// let store = safestash::Store::open("/tmp/stashes")?;
    /// assert!(store.backend().is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn backend(&self) -> Option<&dyn Backend> {
        self.remote.as_deref()
    }

    /// The store of child namespace `ns` of a remote store.
    pub(super) fn remote_child(&self, ns: &str, observers: Vec<Arc<Observer>>) -> Store<F> {
        let remote = self.remote.as_ref().expect("a remote store");
        Store::over_backend(Arc::from(remote.child(ns)), self.fs.clone(), observers)
    }

    fn remote_backend(&self) -> &dyn Backend {
        self.remote.as_deref().expect("a remote store")
    }

    /// The envelope of `value`, in memory, and its digest.
    fn encode_with(
        &self,
        header: &Header,
        write: impl FnOnce(&mut EnvelopeWriter<Vec<u8>>) -> serde_json::Result<()>,
    ) -> Result<(Vec<u8>, Digest)> {
        let path = self.path_of(header.key());
        let mut writer =
            EnvelopeWriter::new(Vec::new(), header).map_err(io_err(IoOp::Write, &path))?;
        if let Err(e) = write(&mut writer) {
            return Err(if e.is_io() {
                Error::Io { op: IoOp::Write, path, source: e.into() }
            } else {
                Error::Serialize { key: header.key().clone(), source: e }
            });
        }
        let done = writer.finish().map_err(io_err(IoOp::Write, &path))?;
        Ok((done.inner, done.digest))
    }

    /// Puts an encoded envelope through `via` under `expect`.
    fn remote_put(
        &self,
        via: &dyn Backend,
        header: &Header,
        envelope: &[u8],
        digest: Digest,
        expect: Precondition,
    ) -> Result<Receipt> {
        let key = header.key().clone();
        let path = self.path_of(&key);
        match via.put(&key, envelope, &digest, expect.into())? {
            Outcome::Done | Outcome::Missing => {}
            Outcome::Refused { current } => {
                return Err(match expect {
                    Precondition::Unchanged(expected) => Error::Replaced { key, path, expected },
                    _ => Error::StashExists { key, path, digest: current },
                });
            }
        }
        let bytes = envelope.len() as u64;
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

    /// `save_with` / `save_if` on a remote store: the condition is checked
    /// in the backend's transaction, under the key's lock there.
    pub(super) fn remote_save<T: Serialize + ?Sized>(
        &self,
        key: &StashKey,
        value: &T,
        opts: &SaveOptions,
        expect: Precondition,
    ) -> Result<Receipt> {
        let header = self.header_for(key, opts)?;
        let (envelope, digest) = self.encode_with(&header, |w| serde_json::to_writer(w, value))?;
        let mut receipt = {
            let _claim = self.claim_thread(key, true)?;
            self.remote_put(self.remote_backend(), &header, &envelope, digest, expect)?
        };
        receipt.observer_errors = notify(&self.observers, &Event::Saved(&receipt));
        Ok(receipt)
    }

    /// [`KeyLock::save_with`] on a remote store: through the lock's session.
    pub(super) fn remote_save_via<T: Serialize + ?Sized>(
        &self,
        via: &dyn Backend,
        key: &StashKey,
        value: &T,
        opts: &SaveOptions,
    ) -> Result<Receipt> {
        let header = self.header_for(key, opts)?;
        let (envelope, digest) = self.encode_with(&header, |w| serde_json::to_writer(w, value))?;
        let mut receipt = self.remote_put(via, &header, &envelope, digest, Precondition::Any)?;
        receipt.observer_errors = notify(&self.observers, &Event::Saved(&receipt));
        Ok(receipt)
    }

    /// Removes `key`'s envelope through `via`, if it still has `digest`
    /// when one is given. Observers are the caller's to notify.
    pub(super) fn remote_delete(
        &self,
        via: &dyn Backend,
        key: &StashKey,
        digest: Option<&Digest>,
    ) -> Result<bool> {
        let cond = digest.map_or(Condition::Any, |d| Condition::Unchanged(*d));
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

    /// `clear` on a remote store.
    pub(super) fn remote_clear(&self, key: &StashKey, digest: Option<&Digest>) -> Result<bool> {
        let removed = {
            let _claim = self.claim_thread(key, true)?;
            self.remote_delete(self.remote_backend(), key, digest)?
        };
        if removed {
            notify(&self.observers, &Event::Cleared { key });
        }
        Ok(removed)
    }

    /// `quarantine` on a remote store: the envelope is renamed to
    /// `.KEY.quarantined.STAMP`, a name no key can have.
    pub(super) fn remote_quarantine(
        &self,
        via: &dyn Backend,
        key: &StashKey,
    ) -> Result<Option<PathBuf>> {
        let stamp = humantime::format_rfc3339_nanos(SystemTime::now()).to_string().replace(':', "");
        let aside = names::quarantine_base(key, &stamp);
        Ok(via.move_aside(key, &aside)?.then(|| self.dir.join(aside)))
    }

    /// `key`'s envelope, read whole and verified exactly as a file's.
    pub(super) fn remote_open_verified(
        &self,
        remote: &dyn Backend,
        key: &StashKey,
    ) -> Result<Option<(StashMeta, Payload<F::Reader>)>> {
        let path = self.path_of(key);
        let Some(fetched) = remote.get(key)? else {
            return Ok(None);
        };
        let len = fetched.len;
        let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        fetched.reader.take(len).read_to_end(&mut bytes).map_err(io_err(IoOp::Read, &path))?;
        let decoded = envelope::decode(&bytes).map_err(|e| decode_error(&path, e))?;
        let end = bytes.len() - envelope::TRAILER_LEN;
        let range = end - decoded.payload.len()..end;
        let (header, digest) = (decoded.header, decoded.digest);
        if header.key() != key {
            let reason = Corruption::KeyMismatch {
                expected: key.to_string(),
                found: header.key().to_string(),
            };
            return Err(Error::Corrupt { path, reason });
        }
        Ok(Some((StashMeta { header, digest, size: len, path }, Payload::Bytes { bytes, range })))
    }

    /// The names of a remote store that are keys, as files.
    pub(super) fn remote_entries(&self) -> Result<Vec<(StashKey, FileKind)>> {
        Ok(self
            .remote_backend()
            .list(0)?
            .into_iter()
            .filter_map(|l| Some((StashKey::new(l.name).ok()?, FileKind::File)))
            .collect())
    }

    fn header_of(&self, listed: &Listed) -> Result<Header> {
        let path = self.dir.join(&listed.name);
        envelope::read_header(&listed.head).map_err(|e| decode_error(&path, e))
    }

    /// `list` on a remote store: headers only, from the first bytes.
    pub(super) fn remote_list(&self) -> Result<Vec<StashInfo>> {
        Ok(self
            .remote_backend()
            .list(MAX_PREFIX_LEN)?
            .into_iter()
            .filter_map(|l| {
                let key = StashKey::new(l.name.clone()).ok()?;
                let header = self.header_of(&l);
                Some(StashInfo { path: self.path_of(&key), key, size: l.len, header })
            })
            .collect())
    }

    /// `inspect` on a remote store: stashes (verified) and quarantined
    /// envelopes; a remote store has no temp or lock entries.
    pub(super) fn remote_inspect(&self) -> Result<Vec<Inspected>> {
        let mut found: Vec<Inspected> = self
            .remote_backend()
            .list(MAX_PREFIX_LEN)?
            .into_iter()
            .map(|l| {
                let name = EntryName::parse(&l.name);
                let has_header = matches!(name, EntryName::Stash(_) | EntryName::Quarantined(_));
                let header = has_header.then(|| self.header_of(&l));
                let verified = match &name {
                    EntryName::Stash(key) => {
                        Some(match self.open_verified(key, VERIFY_WHOLE_LIMIT) {
                            Ok(Some((meta, _))) => Ok(meta),
                            Ok(None) => {
                                let path = self.path_of(key);
                                Err(io_err(IoOp::Open, &path)(io::ErrorKind::NotFound.into()))
                            }
                            Err(e) => Err(e),
                        })
                    }
                    _ => None,
                };
                Inspected {
                    file: l.name,
                    name,
                    kind: FileKind::File,
                    size: Some(l.len),
                    header,
                    verified,
                }
            })
            .collect();
        found.sort_by(|a, b| a.file.cmp(&b.file));
        Ok(found)
    }

    /// A batch on a remote store: every envelope is encoded first (a value
    /// that does not serialize writes nothing), then each is put under its
    /// condition, in order; each is durable once put.
    #[allow(clippy::result_large_err)]
    pub(super) fn remote_batch(
        &self,
        items: Vec<(&Header, &dyn ErasedSerialize, Precondition)>,
    ) -> std::result::Result<Vec<Receipt>, BatchError> {
        let all_keys = || items.iter().map(|(h, _, _)| h.key().clone()).collect::<Vec<_>>();
        let mut encoded = Vec::with_capacity(items.len());
        for (header, value, expect) in &items {
            match self.encode_with(header, |w| value.write_json(w)) {
                Ok((bytes, digest)) => encoded.push((*header, bytes, digest, *expect)),
                Err(error) => {
                    return Err(BatchError { error, saved: Vec::new(), not_saved: all_keys() });
                }
            }
        }
        let mut receipts = Vec::with_capacity(encoded.len());
        let mut rest = encoded.into_iter();
        let mut failure = None;
        for (header, bytes, digest, expect) in rest.by_ref() {
            let put = self.claim_thread(header.key(), true).and_then(|_claim| {
                self.remote_put(self.remote_backend(), header, &bytes, digest, expect)
            });
            match put {
                Ok(receipt) => receipts.push(receipt),
                Err(error) => {
                    failure = Some((error, header.key().clone()));
                    break;
                }
            }
        }
        let not_saved: Vec<StashKey> = rest.map(|(h, ..)| h.key().clone()).collect();
        for receipt in &mut receipts {
            receipt.observer_errors = notify(&self.observers, &Event::Saved(receipt));
        }
        match failure {
            None => Ok(receipts),
            Some((error, key)) => {
                let mut keys = vec![key];
                keys.extend(not_saved);
                Err(BatchError { error, saved: receipts, not_saved: keys })
            }
        }
    }
}

fn decode_error(path: &Path, e: DecodeError) -> Error {
    match e {
        DecodeError::Corrupt(reason) => Error::Corrupt { path: path.to_owned(), reason },
        DecodeError::UnsupportedVersion(version) => {
            Error::UnsupportedVersion { path: path.to_owned(), version }
        }
    }
}
