//! The verbs' path for a store whose envelopes live in a
//! [`Backend`](crate::backend::Backend) (PostgreSQL), and
//! [`Store::open_url`].
//!
//! The envelope is the same: encoded here by an `EnvelopeWriter` streaming
//! into the backend's sink (no whole-envelope copy in memory), and on every
//! read verified here exactly as a file's: in memory up to the verb's
//! whole-read limit; above it, a load verifies and deserializes in one
//! streaming pass (`envelope::read_stream`, in `load.rs`), while `export`
//! and `read_raw` verify in a streaming pass followed by a second,
//! re-hashed read for the payload ([`Streamed`]). The local directory
//! never comes through this file: its verbs keep their own code (and
//! syscalls) unchanged.

use super::batch::ErasedSerialize;
use super::load::Payload;
use super::*;
use std::io::Write;

use crate::backend::{Backend, BatchPut, Condition, Fill, Listed, Outcome};
use sha2::{Digest as _, Sha256};

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
    ///   (`?namespace=NAME`, default `default`; `timeout=30s`, the bound of
    ///   each call; `lock_timeout=60s`; see
    ///   [`backend::postgres`](crate::backend)). The connection is made, and
    ///   the schema created if missing, before this returns. A libpq
    ///   `key=value` string is refused (without echoing it);
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
        if let Some(keys) = conninfo_keys(url) {
            // Never echo it: its `password=` would reach the message.
            return Err(Error::InvalidOption {
                field: "url",
                value: keys,
                rule: "a libpq key=value connection string is not a store URL; use \
                       postgresql://user@host:port/db (the password in PGPASSWORD or ~/.pgpass)",
            });
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

    /// A store over any [`Backend`]: the public way to plug one in (a
    /// backend of your own, or one of this crate's built by code).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// # #[cfg(feature = "object-store")] {
    /// use safestash::backend::object_store::{ObjectStoreBackend, Options};
    /// let memory = Arc::new(object_store::memory::InMemory::new());
    /// let backend = ObjectStoreBackend::new(memory, "stashes", Options::default())?;
    /// let store = safestash::Store::with_backend(Arc::new(backend));
    /// let key = safestash::StashKey::new("k")?;
    /// store.save(&key, &1)?;
    /// assert_eq!(*store.load::<i32>(&key)?.unwrap().value(), 1);
    /// # }
    /// # Ok::<(), safestash::Error>(())
    /// ```
    pub fn with_backend(backend: Arc<dyn Backend>) -> Store {
        Store::over_backend(backend, OsFs, Vec::new())
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

/// libpq's connection parameters, as keys of a `key=value` string.
const CONNINFO_KEYS: [&str; 12] = [
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "passfile",
    "sslmode",
    "sslrootcert",
    "connect_timeout",
    "application_name",
    "options",
];

/// For a libpq `key=value` connection string (`host=db password=...`),
/// its keys with every value replaced by `…`; `None` for anything else
/// (a URL, a path).
fn conninfo_keys(s: &str) -> Option<String> {
    if s.contains("://") {
        return None;
    }
    let tokens: Vec<&str> = s.split_whitespace().collect();
    let key_of = |t: &str| t.split_once('=').map(|(k, _)| k.trim().to_ascii_lowercase());
    let first = key_of(tokens.first()?)?;
    let known =
        tokens.iter().filter_map(|t| key_of(t)).filter(|k| CONNINFO_KEYS.contains(&k.as_str()));
    if !first.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || known.count() == 0 {
        return None;
    }
    Some(
        tokens
            .iter()
            .filter_map(|t| key_of(t))
            .map(|k| format!("{k}=…"))
            .collect::<Vec<_>>()
            .join(" "),
    )
}

impl<F: Fs> Store<F> {
    pub(super) fn over_backend(
        backend: Arc<dyn Backend>,
        fs: F,
        observers: Vec<Arc<Observer>>,
    ) -> Store<F> {
        Store {
            dir: PathBuf::from(backend.location()),
            fs,
            observers,
            chain_synced: Arc::new(AtomicBool::new(true)),
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

    /// Puts through `via`, under `expect`, the envelope of `header` and
    /// what `write` serializes, streamed by an [`EnvelopeWriter`] straight
    /// into the backend's sink: no copy of the envelope is held here.
    fn remote_put_with(
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
        let outcome = via.put_with(&key, expect.into(), &mut fill)?;
        Self::put_outcome(dir, header, outcome, expect, bytes, digest)
    }

    /// Puts an envelope already encoded in memory through `via`.
    fn remote_put(
        dir: &Path,
        via: &dyn Backend,
        header: &Header,
        envelope: &[u8],
        digest: Digest,
        expect: Precondition,
    ) -> Result<Receipt> {
        let outcome = via.put(header.key(), envelope, &digest, expect.into())?;
        Self::put_outcome(dir, header, outcome, expect, envelope.len() as u64, Some(digest))
    }

    /// The receipt of a put, or the refusal it met.
    fn put_outcome(
        dir: &Path,
        header: &Header,
        outcome: Outcome,
        expect: Precondition,
        bytes: u64,
        digest: Option<Digest>,
    ) -> Result<Receipt> {
        let key = header.key().clone();
        let path = dir.join(key.as_str());
        match outcome {
            Outcome::Done | Outcome::Missing => {}
            Outcome::Refused { current } => {
                return Err(match expect {
                    Precondition::Unchanged(expected) => Error::Replaced { key, path, expected },
                    _ => Error::StashExists { key, path, digest: current },
                });
            }
        }
        // A streamed put learns its digest from the fill, which `Done` implies ran.
        let digest = digest.ok_or_else(|| Error::Backend {
            op: "save",
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

    /// `save_with` / `save_if` on a remote store: the condition is checked
    /// in the backend's transaction, under the key's lock there, before the
    /// envelope is streamed in.
    pub(super) fn remote_save<T: Serialize + ?Sized>(
        &self,
        key: &StashKey,
        value: &T,
        opts: &SaveOptions,
        expect: Precondition,
    ) -> Result<Receipt> {
        let header = self.header_for(key, opts)?;
        let mut receipt = {
            let _claim = self.claim_thread(key, true)?;
            Self::remote_put_with(&self.dir, self.remote_backend(), &header, expect, |w| {
                serde_json::to_writer(w, value)
            })?
        };
        receipt.observer_errors = notify(&self.observers, &Event::Saved(&receipt));
        Ok(receipt)
    }

    /// A save through a held lock's backend (its session, its lease), under
    /// `expect`.
    pub(super) fn remote_save_via<T: Serialize + ?Sized>(
        &self,
        via: &dyn Backend,
        key: &StashKey,
        value: &T,
        opts: &SaveOptions,
        expect: Precondition,
    ) -> Result<Receipt> {
        let header = self.header_for(key, opts)?;
        let mut receipt = Self::remote_put_with(&self.dir, via, &header, expect, |w| {
            serde_json::to_writer(w, value)
        })?;
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

    /// `key`'s envelope, verified exactly as a file's: read whole when it
    /// is at most `whole_limit` bytes; otherwise verified in one streaming
    /// pass, its payload left to a second read ([`Streamed`]) that the
    /// caller makes only if it wants the payload.
    pub(super) fn remote_open_verified(
        &self,
        remote: &Arc<dyn Backend>,
        key: &StashKey,
        whole_limit: u64,
    ) -> Result<Option<(StashMeta, Payload<F::Reader>)>> {
        let path = self.path_of(key);
        let Some(fetched) = remote.get(key)? else {
            return Ok(None);
        };
        let len = fetched.len;
        let (header, digest, payload) = if len <= whole_limit.min(REMOTE_WHOLE_LIMIT) {
            let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
            fetched.reader.take(len).read_to_end(&mut bytes).map_err(io_err(IoOp::Read, &path))?;
            let decoded = envelope::decode(&bytes).map_err(|e| decode_error(&path, e))?;
            let end = bytes.len() - envelope::TRAILER_LEN;
            let range = end - decoded.payload.len()..end;
            let (header, digest) = (decoded.header, decoded.digest);
            (header, digest, Payload::Bytes { bytes, range })
        } else {
            let mut reader = fetched.reader;
            let layout = envelope::verify_stream(&mut reader, len)
                .map_err(io_err(IoOp::Read, &path))?
                .map_err(|e| decode_error(&path, e))?;
            drop(reader);
            let streamed = Streamed {
                backend: remote.clone(),
                key: key.clone(),
                path: path.clone(),
                size: len,
                digest: layout.digest,
                offset: layout.payload_offset,
                len: layout.payload_len,
            };
            (layout.header, layout.digest, Payload::Remote(streamed))
        };
        if header.key() != key {
            let reason = Corruption::KeyMismatch {
                expected: key.to_string(),
                found: header.key().to_string(),
            };
            return Err(Error::Corrupt { path, reason });
        }
        Ok(Some((StashMeta { header, digest, size: len, path }, payload)))
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

    /// A batch on a remote store: every value is serialized first (a value
    /// that does not serialize writes nothing), then each envelope is put
    /// under its condition, up to [`Backend::concurrent_puts`] at once (in
    /// order when that is 1); each is durable once put. After a put fails,
    /// no new one starts: the receipts of those that were put are returned
    /// with the error, the keys of the rest (the failed one first) as not
    /// saved. Envelopes up to [`BATCH_HELD_LIMIT`] are kept from the first
    /// pass, while they total at most [`BATCH_HELD_TOTAL`]; any other is
    /// only checked then (serialized into a digest) and serialized again
    /// straight into the backend, so memory stays bounded.
    #[allow(clippy::result_large_err)]
    pub(super) fn remote_batch(
        &self,
        via: Option<&dyn Backend>,
        items: Vec<(&Header, &(dyn ErasedSerialize + Sync), Precondition)>,
    ) -> std::result::Result<Vec<Receipt>, BatchError> {
        let all_keys = || items.iter().map(|(h, _, _)| h.key().clone()).collect::<Vec<_>>();
        let mut encoded = Vec::with_capacity(items.len());
        let mut budget = BATCH_HELD_TOTAL;
        for (header, value, expect) in &items {
            let path = self.path_of(header.key());
            let capped = Capped { held: None, over: false, cap: budget.min(BATCH_HELD_LIMIT) };
            let checked = EnvelopeWriter::new(capped, header)
                .map_err(io_err(IoOp::Write, &path))
                .and_then(|mut w| {
                    value.write_json(&mut w).map_err(|e| serialize_error(header, &path, e))?;
                    w.finish().map_err(io_err(IoOp::Write, &path))
                });
            match checked {
                Ok(done) => {
                    let held = done.inner.held.map(|bytes| (bytes, done.digest));
                    budget -= held.as_ref().map_or(0, |(bytes, _)| bytes.len());
                    encoded.push((*header, *value, held, *expect));
                }
                Err(error) => {
                    return Err(BatchError { error, saved: Vec::new(), not_saved: all_keys() });
                }
            }
        }
        let via = via.unwrap_or_else(|| self.remote_backend());
        // This thread's claims on every key, held across the puts (which
        // may run on other threads): a batch committed under a held lock of
        // one of its keys, on the lock's thread, fails at that key as a
        // save there would.
        let mut claims = Vec::with_capacity(encoded.len());
        let mut claim_failure = None;
        for (header, ..) in &encoded {
            match self.claim_thread(header.key(), true) {
                Ok(claim) => claims.push(claim),
                Err(error) => {
                    claim_failure = Some(error);
                    break;
                }
            }
        }
        let runnable = claims.len();
        let dir: &Path = &self.dir;
        let put_one = |(header, value, held, expect): &Encoded<'_>| match held {
            Some((bytes, digest)) => Self::remote_put(dir, via, header, bytes, *digest, *expect),
            None => Self::remote_put_with(dir, via, header, *expect, |w| value.write_json(w)),
        };
        let width = via.concurrent_puts().clamp(1, 64).min(runnable.max(1));
        let mut results: Vec<Option<Result<Receipt>>> = (0..encoded.len()).map(|_| None).collect();
        if width == 1 {
            // One call for the whole batch, so a backend can make it one
            // transaction (PostgreSQL does); the default puts each in turn.
            let mut written: Vec<(u64, Option<Digest>)> = vec![(0, None); runnable];
            let mut fills: Vec<_> = encoded[..runnable]
                .iter()
                .zip(written.iter_mut())
                .map(|(item, slot)| Self::batch_fill(dir, item, slot))
                .collect();
            let mut puts: Vec<BatchPut<'_, '_>> = encoded[..runnable]
                .iter()
                .zip(fills.iter_mut())
                .map(|((header, _, _, expect), fill)| BatchPut {
                    key: header.key(),
                    cond: (*expect).into(),
                    fill: &mut **fill,
                })
                .collect();
            let outcomes = via.put_batch(&mut puts);
            drop(puts);
            drop(fills);
            for (i, outcome) in outcomes.into_iter().enumerate().take(runnable) {
                let (header, _, _, expect) = &encoded[i];
                let (bytes, digest) = written[i];
                results[i] = Some(
                    outcome.and_then(|o| Self::put_outcome(dir, header, o, *expect, bytes, digest)),
                );
            }
        } else {
            let next = std::sync::atomic::AtomicUsize::new(0);
            let stop = AtomicBool::new(false);
            let done = std::sync::Mutex::new(&mut results);
            std::thread::scope(|scope| {
                for _ in 0..width {
                    scope.spawn(|| {
                        loop {
                            if stop.load(Ordering::SeqCst) {
                                return;
                            }
                            let i = next.fetch_add(1, Ordering::SeqCst);
                            if i >= runnable {
                                return;
                            }
                            let put = put_one(&encoded[i]);
                            if put.is_err() {
                                stop.store(true, Ordering::SeqCst);
                            }
                            done.lock().unwrap_or_else(std::sync::PoisonError::into_inner)[i] =
                                Some(put);
                        }
                    });
                }
            });
        }
        drop(claims);
        let mut receipts = Vec::with_capacity(encoded.len());
        let mut failure = None;
        let mut not_saved = Vec::new();
        for ((header, ..), result) in encoded.iter().zip(results) {
            match result {
                Some(Ok(receipt)) => receipts.push(receipt),
                Some(Err(error)) if failure.is_none() => {
                    failure = Some(error);
                    not_saved.insert(0, header.key().clone());
                }
                _ => not_saved.push(header.key().clone()),
            }
        }
        if failure.is_none() {
            if let Some(error) = claim_failure {
                let key = encoded[runnable].0.key().clone();
                not_saved.retain(|k| *k != key);
                not_saved.insert(0, key);
                failure = Some(error);
            }
        }
        for receipt in &mut receipts {
            receipt.observer_errors = notify(&self.observers, &Event::Saved(receipt));
        }
        match failure {
            None => Ok(receipts),
            Some(error) => Err(BatchError { error, saved: receipts, not_saved }),
        }
    }
}

impl<F: Fs> Store<F> {
    /// What writes one stash of a batch into a backend's sink: its
    /// envelope as kept from the first pass, or serialized again; `slot`
    /// gets its length and digest.
    fn batch_fill<'a>(
        dir: &'a Path,
        (header, value, held, _): &'a Encoded<'a>,
        slot: &'a mut (u64, Option<Digest>),
    ) -> Box<Fill<'a>> {
        Box::new(move |sink: &mut dyn Write| {
            let path = dir.join(header.key().as_str());
            let (len, digest) = match held {
                Some((bytes, digest)) => {
                    sink.write_all(bytes).map_err(io_err(IoOp::Write, &path))?;
                    (bytes.len() as u64, *digest)
                }
                None => {
                    let mut writer =
                        EnvelopeWriter::new(sink, header).map_err(io_err(IoOp::Write, &path))?;
                    value.write_json(&mut writer).map_err(|e| serialize_error(header, &path, e))?;
                    let done = writer.finish().map_err(io_err(IoOp::Write, &path))?;
                    (done.len, done.digest)
                }
            };
            *slot = (len, Some(digest));
            Ok(digest)
        })
    }
}

/// A batch's stash between its two passes: its header, its value, its
/// envelope and digest when kept, its condition.
type Encoded<'a> =
    (&'a Header, &'a (dyn ErasedSerialize + Sync), Option<(Vec<u8>, Digest)>, Precondition);

/// The largest remote envelope read into memory whole (a verb may set a
/// lower limit): above it, a load costs a second read from the server but
/// holds only the backend's chunk and the deserializer's buffer.
pub(super) const REMOTE_WHOLE_LIMIT: u64 = 4 << 20;

/// The largest envelope a remote batch keeps in memory between its two
/// passes.
const BATCH_HELD_LIMIT: usize = 1 << 20;

/// What a remote batch keeps in memory between its two passes, in all.
const BATCH_HELD_TOTAL: usize = 16 << 20;

/// A sink that keeps what is written while it stays within `cap`, and from
/// then on only lets it through.
struct Capped {
    held: Option<Vec<u8>>,
    over: bool,
    cap: usize,
}

impl Write for Capped {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if !self.over {
            let held = self.held.get_or_insert_with(Vec::new);
            if held.len() + data.len() <= self.cap {
                held.extend_from_slice(data);
            } else {
                self.held = None;
                self.over = true;
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A verified remote envelope too large to read whole: its payload is read
/// by a second `get`, every byte re-hashed on the way, and accepted only if
/// the envelope hashes to the digest the verifying pass found. An envelope
/// that changed between the two reads (a concurrent save, damage) is an
/// error, never a wrong value.
pub(super) struct Streamed {
    backend: Arc<dyn Backend>,
    key: StashKey,
    path: PathBuf,
    size: u64,
    digest: Digest,
    offset: u64,
    len: u64,
}

impl Streamed {
    /// Runs `read` on the payload (exactly its bytes), then checks the
    /// whole envelope against the verified digest; `read`'s result is
    /// returned only if it matches.
    pub(super) fn read_payload<T>(self, read: impl FnOnce(&mut dyn Read) -> T) -> Result<T> {
        let (offset, len) = (self.offset, self.len);
        self.reread(|reader| {
            let skipped = io::copy(&mut reader.take(offset), &mut io::sink())?;
            let out = read(&mut reader.take(len));
            Ok((skipped == offset).then_some(out))
        })
    }

    /// Copies the whole envelope to `out`, re-hashed; an error at the end
    /// if it was not the verified one.
    pub(super) fn copy_envelope(self, out: &mut dyn Write) -> Result<()> {
        let (path, size) = (self.path.clone(), self.size);
        let mut failed = None;
        let copied = self.reread(|reader| {
            let mut reader = reader.take(size);
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = reader.read(&mut buf)?;
                if n == 0 {
                    return Ok(Some(()));
                }
                if let Err(e) = out.write_all(&buf[..n]) {
                    failed = Some(e);
                    return Ok(None);
                }
            }
        });
        match failed {
            Some(e) => Err(Error::Io { op: IoOp::Write, path, source: e }),
            None => copied,
        }
    }

    /// A second `get`, handed to `read` as a re-hashing reader; what `read`
    /// leaves unread is drained. `read`'s result (`None`: the envelope
    /// ended early) is returned only if every byte hashed to the verified
    /// digest.
    fn reread<T>(&self, read: impl FnOnce(&mut Rehashing) -> io::Result<Option<T>>) -> Result<T> {
        let changed = |why: &str| Error::Backend {
            op: "load",
            target: self.path.display().to_string(),
            source: format!(
                "the stash changed while it was read ({why}; a concurrent save?): load it again"
            )
            .into(),
        };
        let Some(fetched) = self.backend.get(&self.key)? else {
            return Err(changed("it is gone"));
        };
        if fetched.len != self.size {
            return Err(changed("another length"));
        }
        let hashed = self.size - envelope::TRAILER_LEN as u64 + envelope::TRAILER_HASHED as u64;
        let mut reader = Rehashing {
            inner: fetched.reader,
            hasher: Sha256::new(),
            pos: 0,
            hashed,
            failed: None,
        };
        let out = read(&mut reader).map_err(io_err(IoOp::Read, &self.path))?;
        let rest = self.size.saturating_sub(reader.pos);
        let drained = io::copy(&mut (&mut reader).take(rest), &mut io::sink());
        // A read that failed is that error, not "changed", even when the
        // payload's reader swallowed it and the stream then ended early.
        if let Some(e) = reader.failed.take() {
            return Err(io_err(IoOp::Read, &self.path)(e));
        }
        let drained = drained.map_err(io_err(IoOp::Read, &self.path))?;
        let Some(out) = out else { return Err(changed("shorter")) };
        if drained != rest
            || reader.pos != self.size
            || Digest::from_bytes(reader.hasher.finalize().into()) != self.digest
        {
            return Err(changed("another digest"));
        }
        Ok(out)
    }
}

/// A reader that hashes the first `hashed` bytes it passes on.
struct Rehashing {
    inner: Box<dyn Read + Send>,
    hasher: Sha256,
    pos: u64,
    hashed: u64,
    /// The first read error, kept: the reader's user (serde) may swallow
    /// it, and the stream may then just end.
    failed: Option<io::Error>,
}

impl Read for Rehashing {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted && self.failed.is_none() {
                    self.failed = Some(io::Error::new(e.kind(), e.to_string()));
                }
                return Err(e);
            }
        };
        if self.pos < self.hashed {
            let upto = usize::try_from(self.hashed - self.pos).unwrap_or(usize::MAX).min(n);
            self.hasher.update(&buf[..upto]);
        }
        self.pos += n as u64;
        Ok(n)
    }
}

fn serialize_error(header: &Header, path: &Path, e: serde_json::Error) -> Error {
    if e.is_io() {
        Error::Io { op: IoOp::Write, path: path.to_owned(), source: e.into() }
    } else {
        Error::Serialize { key: header.key().clone(), source: e }
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

#[cfg(test)]
mod tests {
    use std::io::{self, Read};
    use std::sync::{Arc, Mutex};

    use super::REMOTE_WHOLE_LIMIT;
    use crate::backend::{Backend, Condition, Fetched, Held, Listed, Outcome};
    use crate::digest::Digest;
    use crate::error::{Error, IoOp, Result};
    use crate::fs::OsFs;
    use crate::key::StashKey;
    use crate::store::Store;

    /// A backend keeping one envelope in memory, whose reads from the
    /// `first_failing`-th on (1: every read; 2: the second pass of a large
    /// `read_raw` or `export`) fail with `ConnectionReset` after `fail_at`
    /// bytes and then end, as a dropped stream does.
    #[derive(Debug)]
    struct FlakyReads {
        envelope: Mutex<Option<Vec<u8>>>,
        gets: Mutex<u32>,
        first_failing: Mutex<u32>,
        fail_at: usize,
    }

    /// The envelope's bytes up to `fail_at`, then one error, then the end.
    struct Dropped {
        bytes: io::Cursor<Vec<u8>>,
        fail_at: u64,
        failed: bool,
    }

    impl Read for Dropped {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let left = self.fail_at.saturating_sub(self.bytes.position());
            if left == 0 {
                if self.failed {
                    return Ok(0);
                }
                self.failed = true;
                return Err(io::Error::new(io::ErrorKind::ConnectionReset, "peer went away"));
            }
            let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            self.bytes.read(&mut buf[..n])
        }
    }

    impl Backend for FlakyReads {
        fn location(&self) -> &str {
            "flaky://ns"
        }
        fn put(&self, _: &StashKey, envelope: &[u8], _: &Digest, _: Condition) -> Result<Outcome> {
            *self.envelope.lock().unwrap() = Some(envelope.to_vec());
            Ok(Outcome::Done)
        }
        fn get(&self, _: &StashKey) -> Result<Option<Fetched>> {
            let Some(bytes) = self.envelope.lock().unwrap().clone() else { return Ok(None) };
            let mut gets = self.gets.lock().unwrap();
            *gets += 1;
            let len = bytes.len() as u64;
            let failing = *gets >= *self.first_failing.lock().unwrap();
            let fail_at = if failing { self.fail_at as u64 } else { u64::MAX };
            let reader = Dropped { bytes: io::Cursor::new(bytes), fail_at, failed: false };
            Ok(Some(Fetched { len, reader: Box::new(reader) }))
        }
        fn delete(&self, _: &StashKey, _: Condition) -> Result<Outcome> {
            Ok(if self.envelope.lock().unwrap().take().is_some() {
                Outcome::Done
            } else {
                Outcome::Missing
            })
        }
        fn list(&self, _: usize) -> Result<Vec<Listed>> {
            Ok(Vec::new())
        }
        fn has_locks(&self) -> bool {
            false
        }
        fn lock(&self, _: &StashKey, _: bool) -> Result<Option<Box<dyn Held>>> {
            unreachable!("a backend without locks is never asked for one")
        }
        fn move_aside(&self, _: &StashKey, _: &str) -> Result<bool> {
            Ok(false)
        }
        fn child(&self, _: &str) -> Box<dyn Backend> {
            unreachable!("not used here")
        }
        fn children(&self) -> Result<Vec<String>> {
            Ok(Vec::new())
        }
    }

    fn assert_reset(what: &str, result: Result<impl std::fmt::Debug>) {
        match result {
            Err(Error::Io { op: IoOp::Read, path, source }) => {
                assert_eq!(source.kind(), io::ErrorKind::ConnectionReset, "{what}: {source}");
                assert_eq!(path.to_string_lossy(), "flaky://ns/big", "{what}");
            }
            other => panic!("{what}: a failed read must be reported as that read error: {other:?}"),
        }
    }

    /// A read error in the one pass of a large remote load, or in the
    /// second pass of a large `read_raw` or `export` (the payload read, or
    /// the drain of the trailer behind it), is reported as that I/O error,
    /// not as damage or "the stash changed": a retry is the answer, but
    /// only the truth tells an operator where to look.
    #[test]
    fn a_read_error_in_the_second_pass_of_a_large_load_is_that_error() {
        let value = "x".repeat(usize::try_from(REMOTE_WHOLE_LIMIT).unwrap() + 1000);
        let key = StashKey::new("big").unwrap();
        let size = {
            let backend = FlakyReads {
                envelope: Mutex::new(None),
                gets: Mutex::new(0),
                first_failing: Mutex::new(2),
                fail_at: 0,
            };
            let store = Store::over_backend(Arc::new(backend), OsFs, Vec::new());
            store.save(&key, &value).unwrap().bytes
        };
        assert!(size > REMOTE_WHOLE_LIMIT, "{size}: large enough to be read twice");
        // In the payload, and in the trailer after it (where the payload's
        // reader has already finished).
        for fail_at in [1 << 20, usize::try_from(size).unwrap() - 10] {
            let backend = Arc::new(FlakyReads {
                envelope: Mutex::new(None),
                gets: Mutex::new(0),
                first_failing: Mutex::new(1),
                fail_at,
            });
            let store = Store::over_backend(backend.clone(), OsFs, Vec::new());
            store.save(&key, &value).unwrap();
            // A load reads once, verifying while it parses: a read error
            // there is that error.
            *backend.gets.lock().unwrap() = 0;
            assert_reset(&format!("load, failing at {fail_at}"), store.load::<String>(&key));
            assert_eq!(*backend.gets.lock().unwrap(), 1, "one pass");

            // `read_raw` and `export` verify, then read again.
            *backend.first_failing.lock().unwrap() = 2;
            *backend.gets.lock().unwrap() = 0;
            assert_reset(&format!("read_raw, failing at {fail_at}"), store.read_raw(&key));

            *backend.gets.lock().unwrap() = 0;
            let mut out = Vec::new();
            assert_reset(&format!("export, failing at {fail_at}"), store.export(&key, &mut out));

            // And with reads that do not fail, the value comes back whole.
            *backend.gets.lock().unwrap() = 0;
            let healthy = FlakyReads {
                envelope: Mutex::new(backend.envelope.lock().unwrap().clone()),
                gets: Mutex::new(0),
                first_failing: Mutex::new(1),
                fail_at: usize::MAX,
            };
            let store = Store::over_backend(Arc::new(healthy), OsFs, Vec::new());
            assert_eq!(store.load::<String>(&key).unwrap().unwrap().into_value(), value);
        }
    }
}
