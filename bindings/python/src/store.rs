//! `safestash.Store` and what it hands back: `Receipt`, `Stashed`,
//! `Checked`, `StashInfo`, `VerifyReport`, the held `KeyLock`, the
//! rollback `Guard` and the retry decision's `Resumed`.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyList;
use safestash::{
    BoxError, Checked as RsChecked, Digest, GuardError, KeyLock as RsKeyLock, LoadPolicy,
    Receipt as RsReceipt, Resume, RollbackGuard, SaveOptions, StashKey, StashMeta,
    Stashed as RsStashed,
};

use crate::errors::{CallbackError, open_error, store_error};
use crate::time::{age, datetime, duration, timedelta};
use crate::value::{IntoPython, Json, PyValue};

pub type RsStore = safestash::Store;

/// A key from a Python `str`; an invalid key raises `InvalidKeyError`
/// (also a `ValueError`).
pub fn key(py: Python<'_>, k: &str) -> PyResult<StashKey> {
    StashKey::new(k).map_err(|e| store_error(py, e.into()))
}

fn opts(kind: Option<String>, origin: Option<String>) -> SaveOptions {
    let mut o = SaveOptions::new();
    if let Some(k) = kind {
        o = o.kind(k);
    }
    if let Some(g) = origin {
        o = o.origin(g);
    }
    o
}

fn parse_digest(py: Python<'_>, d: &str) -> PyResult<Digest> {
    d.parse::<Digest>().map_err(|_| {
        store_error(
            py,
            safestash::Error::InvalidOption {
                field: "digest",
                value: d.to_owned(),
                rule: "a digest is 64 lowercase hex digits",
            },
        )
    })
}

/// `None` or the quoted string, for a `__repr__`.
fn py_opt(s: &Option<String>) -> String {
    s.as_ref().map_or_else(|| "None".to_owned(), |s| format!("{s:?}"))
}

fn py_bool(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

// --- results -------------------------------------------------------------

/// Proof that a save is durable: what was written where.
///
/// Attributes: ``key`` (str), ``path`` (the stash file), ``bytes`` (its
/// size), ``digest`` (the SHA-256 recorded in its trailer, hex),
/// ``created`` (the creation time recorded in its header, an aware
/// ``datetime`` in UTC).
#[pyclass(frozen, module = "safestash", get_all)]
pub struct Receipt {
    pub key: String,
    pub path: PathBuf,
    pub bytes: u64,
    pub digest: String,
    created_at: SystemTime,
}

impl Receipt {
    pub fn new(r: &RsReceipt) -> Receipt {
        Receipt {
            key: r.key.to_string(),
            path: r.path.clone(),
            bytes: r.bytes,
            digest: r.digest.to_string(),
            created_at: r.created,
        }
    }
}

#[pymethods]
impl Receipt {
    /// The creation time recorded in the header (aware ``datetime``, UTC).
    #[getter]
    fn created<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        datetime(py, self.created_at)
    }

    fn __repr__(&self) -> String {
        format!("Receipt(key={:?}, bytes={}, digest={:?})", self.key, self.bytes, self.digest)
    }
}

/// A loaded, verified stash: the value and its metadata.
///
/// Attributes: ``value`` (the JSON-compatible value, a fresh copy),
/// ``key``, ``kind``, ``origin`` (``None`` when the save gave none),
/// ``created`` (aware ``datetime``, UTC), ``age`` (``timedelta`` since
/// ``created``, measured now; zero if the clock went backwards),
/// ``digest`` (verified SHA-256, hex), ``size`` (bytes), ``path``,
/// ``writer`` (the safestash version that wrote it).
#[pyclass(frozen, module = "safestash")]
pub struct Stashed {
    /// The value (``None`` for the metadata of a replaced stash).
    #[pyo3(get)]
    pub value: Py<PyAny>,
    /// The crate's metadata of the verified stash: the attributes read it,
    /// and :meth:`Store.adopt` takes charge of the stash by it.
    meta: StashMeta,
}

impl Stashed {
    pub fn new<V: IntoPython>(py: Python<'_>, s: RsStashed<V>) -> PyResult<Stashed> {
        let (value, meta) = s.into_parts();
        Ok(Stashed { value: value.into_python(py)?, meta })
    }

    fn meta_only(py: Python<'_>, meta: StashMeta) -> Stashed {
        Stashed { value: py.None(), meta }
    }
}

#[pymethods]
impl Stashed {
    /// The stash's key.
    #[getter]
    fn key(&self) -> &str {
        self.meta.header.key().as_str()
    }

    /// What the payload is (the ``kind`` it was saved with).
    #[getter]
    fn kind(&self) -> &str {
        self.meta.header.kind()
    }

    /// Who or what wrote it, or ``None``.
    #[getter]
    fn origin(&self) -> Option<&str> {
        self.meta.header.origin()
    }

    /// The verified SHA-256 (hex).
    #[getter]
    fn digest(&self) -> String {
        self.meta.digest.to_string()
    }

    /// The stash's size in bytes.
    #[getter]
    fn size(&self) -> u64 {
        self.meta.size
    }

    /// The stash file.
    #[getter]
    fn path(&self) -> PathBuf {
        self.meta.path.clone()
    }

    /// The safestash version that wrote it.
    #[getter]
    fn writer(&self) -> &str {
        self.meta.header.writer()
    }

    /// When the stash was written (aware ``datetime``, UTC).
    #[getter]
    fn created<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        datetime(py, self.meta.header.created())
    }

    /// How long ago the stash was written (``timedelta``; zero if the clock
    /// went backwards).
    #[getter]
    fn age<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        timedelta(py, age(self.meta.header.created()))
    }

    fn __repr__(&self) -> String {
        format!(
            "Stashed(key={:?}, kind={:?}, origin={}, digest={:?})",
            self.key(),
            self.kind(),
            py_opt(&self.origin().map(str::to_owned)),
            self.digest()
        )
    }
}

/// A loaded stash with the verdict of a load policy
/// (:meth:`Store.load_checked`).
///
/// ``verdict`` is one of ``"fresh"``, ``"stale"`` (older than
/// ``max_age``), ``"future"`` (dated more than a second ahead: its age is
/// unknown) or ``"foreign"`` (written by another origin). ``stashed`` is
/// the verified :class:`Stashed` whatever the verdict, so the caller can
/// look at it and decide; ``fresh`` is ``verdict == "fresh"``. Stale,
/// future and foreign stashes are reported as values, never raised: the
/// caller has to look at ``verdict``. ``age``/``max_age`` are set for
/// ``"stale"``, ``ahead`` for ``"future"``, ``expected``/``found`` for
/// ``"foreign"``; the others are ``None``.
#[pyclass(frozen, module = "safestash", get_all)]
pub struct Checked {
    pub verdict: &'static str,
    pub stashed: Py<Stashed>,
    pub expected: Option<String>,
    pub found: Option<String>,
    age_: Option<Duration>,
    max_age_: Option<Duration>,
    ahead_: Option<Duration>,
}

impl Checked {
    pub fn new<V: IntoPython>(py: Python<'_>, c: RsChecked<V>) -> PyResult<Checked> {
        let (verdict, stashed, age_, max_age_, ahead_, expected, found) = match c {
            RsChecked::Fresh(s) => ("fresh", s, None, None, None, None, None),
            RsChecked::Stale { stashed, age, max_age } => {
                ("stale", stashed, Some(age), Some(max_age), None, None, None)
            }
            RsChecked::Future { stashed, ahead } => {
                ("future", stashed, None, None, Some(ahead), None, None)
            }
            RsChecked::Foreign { stashed, expected, found } => {
                ("foreign", stashed, None, None, None, Some(expected), found)
            }
        };
        let stashed = Py::new(py, Stashed::new(py, stashed)?)?;
        Ok(Checked { verdict, stashed, expected, found, age_, max_age_, ahead_ })
    }
}

#[pymethods]
impl Checked {
    /// ``verdict == "fresh"``.
    #[getter]
    fn fresh(&self) -> bool {
        self.verdict == "fresh"
    }
    /// For ``"stale"``: the stash's age (``timedelta``).
    #[getter]
    fn age<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.age_.map(|d| timedelta(py, d)).transpose()
    }
    /// For ``"stale"``: the policy's maximum age (``timedelta``).
    #[getter]
    fn max_age<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.max_age_.map(|d| timedelta(py, d)).transpose()
    }
    /// For ``"future"``: how far ahead of now the stash is dated.
    #[getter]
    fn ahead<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.ahead_.map(|d| timedelta(py, d)).transpose()
    }
    fn __repr__(&self) -> String {
        format!("Checked(verdict={:?}, stashed={})", self.verdict, self.stashed.get().__repr__())
    }
}

/// One stash as :meth:`Store.list` sees it, from its header alone (the
/// digest is not checked: :meth:`Store.verify` does that), or as
/// :meth:`Store.verify` sees it, fully checked.
///
/// Attributes: ``key``, ``path``, ``size``, ``kind``, ``origin``,
/// ``created`` (``None`` when the header cannot be read), ``ok`` (the
/// header, or for ``verify`` the whole stash, is intact), ``error`` (the
/// exception describing what is wrong, or ``None``), ``digest`` (for
/// ``verify``: the verified SHA-256 of an intact stash).
#[pyclass(frozen, module = "safestash", get_all)]
pub struct StashInfo {
    pub key: String,
    pub path: PathBuf,
    pub size: Option<u64>,
    pub kind: Option<String>,
    pub origin: Option<String>,
    pub ok: bool,
    pub error: Option<Py<PyAny>>,
    pub digest: Option<String>,
    created_at: Option<SystemTime>,
}

#[pymethods]
impl StashInfo {
    /// The header's creation time (aware ``datetime``, UTC), if readable.
    #[getter]
    fn created<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.created_at.map(|t| datetime(py, t)).transpose()
    }
    fn __repr__(&self) -> String {
        format!(
            "StashInfo(key={:?}, kind={}, ok={})",
            self.key,
            py_opt(&self.kind),
            py_bool(self.ok)
        )
    }
}

// --- the store -----------------------------------------------------------

/// A directory of stashes.
///
/// ``Store(path_or_url)`` takes a ``str`` or an ``os.PathLike``. A plain
/// path or a ``file:///dir`` URL is a directory store: it creates nothing;
/// the first save creates the directory and any missing parents (mode
/// 0700), each fsynced into its parent; until then every read finds no
/// stash. A ``postgresql://`` (or ``postgres://``) URL opens the
/// PostgreSQL store, a ``mysql://`` (or ``mariadb://``) URL the MySQL or
/// MariaDB store, with the same verbs and promises (see the crate's
/// docs/BACKENDS.md); ``?namespace=NAME`` picks a namespace in the database.
///
/// Raises ``NotAFileError`` when something other than a directory is at
/// ``path``, ``StashIOError`` when it cannot be inspected.
///
/// Every method releases the GIL while it does I/O: an ``fsync`` in one
/// thread does not stall the others. A load of a directory stash takes it
/// back to parse the value straight into Python objects; a stash over
/// 256 MiB is parsed as it is read, so its payload is read with the GIL
/// held (a remote store's loads never read with it). A ``Store`` holds no open files and
/// no threads, so it is safe to create before ``fork`` and to pass to
/// ``multiprocessing`` workers (it pickles as its path).
#[pyclass(frozen, module = "safestash")]
pub struct Store {
    /// The store; `None` once closed.
    handle: RwLock<Option<RsStore>>,
    /// Its directory, or its URL without a password: for ``path``,
    /// ``repr`` and messages, also once closed.
    dir: PathBuf,
    /// The URL it was opened with, for a store opened from one.
    url: Option<String>,
    /// A directory store: a load parses the stash straight into Python
    /// objects ([`PyValue`], the GIL held for the parse). A remote store's
    /// loads parse into a [`Json`] tree without the GIL, so a stash that
    /// streams from the network is never read with the GIL held.
    parse_into_python: bool,
}

impl Store {
    /// The open store (a cheap clone: a path and shared handles), or
    /// ``ValueError`` once closed.
    pub fn inner(&self) -> PyResult<RsStore> {
        let handle = self.handle.read().unwrap_or_else(PoisonError::into_inner);
        handle
            .clone()
            .ok_or_else(|| PyValueError::new_err(format!("the store {:?} is closed", self.dir)))
    }

    fn opened(inner: RsStore, url: Option<String>) -> Store {
        let dir = inner.dir().to_owned();
        let parse_into_python = url
            .as_deref()
            .is_none_or(|u| u.get(..7).is_some_and(|s| s.eq_ignore_ascii_case("file://")));
        Store { handle: RwLock::new(Some(inner)), dir, url, parse_into_python }
    }

    fn load_as<V: IntoPython>(&self, py: Python<'_>, key: &StashKey) -> PyResult<Option<Stashed>> {
        let store = &self.inner()?;
        let loaded = py.detach(|| store.load::<V>(key)).map_err(|e| store_error(py, e))?;
        loaded.map(|s| Stashed::new(py, s)).transpose()
    }

    fn load_checked_as<V: IntoPython>(
        &self,
        py: Python<'_>,
        key: &StashKey,
        policy: &LoadPolicy,
    ) -> PyResult<Option<Checked>> {
        let store = &self.inner()?;
        let checked =
            py.detach(|| store.load_checked::<V>(key, policy)).map_err(|e| store_error(py, e))?;
        checked.map(|c| Checked::new(py, c)).transpose()
    }
}

#[pymethods]
impl Store {
    #[new]
    fn new(py: Python<'_>, path: &Bound<'_, PyAny>) -> PyResult<Store> {
        if let Ok(text) = path.extract::<String>() {
            if text.trim().is_empty() {
                return Err(PyValueError::new_err(
                    "a store needs a location: a directory path or a URL, not an empty string",
                ));
            }
            if text.contains("://") {
                let inner =
                    py.detach(|| RsStore::open_url(&text)).map_err(|e| open_error(py, e))?;
                return Ok(Store::opened(inner, Some(text)));
            }
        }
        let path: PathBuf = path.extract()?;
        let inner = py.detach(|| RsStore::open(&path)).map_err(|e| store_error(py, e))?;
        Ok(Store::opened(inner, None))
    }

    /// The store's directory.
    #[getter]
    fn path(&self) -> PathBuf {
        self.dir.clone()
    }

    fn __repr__(&self) -> String {
        format!("safestash.Store({:?})", self.dir)
    }

    fn __reduce__(&self, py: Python<'_>) -> PyResult<(Py<PyAny>, (Py<PyAny>,))> {
        let cls = py.get_type::<Store>().into_any().unbind();
        let arg = match &self.url {
            Some(url) => url.clone().into_pyobject(py)?.into_any().unbind(),
            None => self.dir.clone().into_pyobject(py)?.into_any().unbind(),
        };
        Ok((cls, (arg,)))
    }

    fn __fspath__(&self) -> std::ffi::OsString {
        self.dir.as_os_str().to_owned()
    }

    /// Closes the store: its pooled connections (a PostgreSQL store's) are
    /// released once nothing opened from it (a guard, a lock, an
    /// operation) still uses them, and every later call on this object
    /// raises ``ValueError``. Idempotent. ``with Store(url) as store:``
    /// closes it at the end of the block.
    fn close(&self, py: Python<'_>) {
        let handle = self.handle.write().unwrap_or_else(PoisonError::into_inner).take();
        py.detach(move || drop(handle));
    }

    /// Whether :meth:`close` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.handle.read().unwrap_or_else(PoisonError::into_inner).is_none()
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _ty: Option<&Bound<'_, PyAny>>,
        _value: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> bool {
        self.close(py);
        false
    }

    /// The path of ``key``'s stash file (whether or not it exists).
    fn path_of(&self, py: Python<'_>, key: &str) -> PyResult<PathBuf> {
        Ok(self.inner()?.path_of(&self::key(py, key)?))
    }

    /// Saves ``value`` under ``key``, durably: when it returns, the stash
    /// survives a power cut.
    ///
    /// ``value`` is any JSON-compatible value (``None``, ``bool``, ``int``
    /// within 64 bits, finite ``float``, ``str``, ``list``/``tuple``,
    /// ``dict`` with ``str`` keys; dict order is kept). ``kind`` labels
    /// what the payload is (1-64 bytes of ``[A-Za-z0-9._:/-]``, default
    /// ``"value"``); ``origin`` records who or what wrote it (a job id, an
    /// upload hash; at most 1024 bytes), so a later load can refuse a
    /// stash from another origin.
    ///
    /// Takes the key's lock; writes a uniquely named temp file (0600) in
    /// the directory, fsyncs it, renames it over the stash and fsyncs the
    /// directory. An existing stash is replaced atomically: a reader sees
    /// the old one or the new one, never a mix. A failed save leaves the
    /// old stash byte-identical and no temp file.
    ///
    /// Returns a :class:`Receipt`.
    ///
    /// Raises ``InvalidKeyError`` (a ``ValueError``) for an invalid key,
    /// ``InvalidOptionError`` (a ``ValueError``) for an invalid kind or
    /// origin, ``TypeError``/``ValueError`` for a value that is not
    /// JSON-compatible (before anything is written), ``NotAFileError`` when
    /// a symlink or directory sits at the stash's path,
    /// ``LockedByThisThreadError`` when this thread holds the key's lock
    /// (use the lock's own ``save``), ``StashIOError`` (an ``OSError`` with
    /// ``errno`` and ``filename``) when a filesystem call fails.
    ///
    /// >>> store.save("orders.dictionary", [{"id": "amount"}], kind="field-dictionary", origin="job-42").bytes > 0
    /// True
    #[pyo3(signature = (key, value, *, kind=None, origin=None))]
    fn save(
        &self,
        py: Python<'_>,
        key: &str,
        value: &Bound<'_, PyAny>,
        kind: Option<String>,
        origin: Option<String>,
    ) -> PyResult<Receipt> {
        let key = self::key(py, key)?;
        let value = Json::from_py(value)?;
        let opts = opts(kind, origin);
        let store = &self.inner()?;
        let receipt =
            py.detach(|| store.save_with(&key, &value, &opts)).map_err(|e| store_error(py, e))?;
        Ok(Receipt::new(&receipt))
    }

    /// Loads and verifies ``key``'s stash: a :class:`Stashed`, or ``None``
    /// when there is no stash.
    ///
    /// The SHA-256 is checked on every load, and the key recorded in the
    /// header must be ``key``. Creates nothing (a missing directory reads
    /// as no stash).
    ///
    /// Raises ``CorruptError`` for a damaged, truncated or foreign-keyed
    /// file — never ``None``: a damaged stash is not "no stash" —,
    /// ``UnsupportedVersionError`` for a newer format, ``NotAFileError``,
    /// ``InvalidKeyError``, ``StashIOError``.
    fn load(&self, py: Python<'_>, key: &str) -> PyResult<Option<Stashed>> {
        let key = self::key(py, key)?;
        if self.parse_into_python {
            self.load_as::<PyValue>(py, &key)
        } else {
            self.load_as::<Json>(py, &key)
        }
    }

    /// Loads ``key``'s stash and checks it against a load policy:
    /// a :class:`Checked` (``verdict`` ``"fresh"``, ``"stale"``,
    /// ``"future"`` or ``"foreign"``), or ``None`` when there is no stash.
    ///
    /// ``max_age`` (a ``timedelta`` or seconds) makes a stash older than
    /// that ``"stale"``, and one dated in the future ``"future"``;
    /// ``origin`` makes a stash written by another origin (or none)
    /// ``"foreign"``. Stale and foreign stashes are values, not
    /// exceptions, so the caller decides; damage still raises
    /// ``CorruptError``.
    #[pyo3(signature = (key, *, max_age=None, origin=None))]
    fn load_checked(
        &self,
        py: Python<'_>,
        key: &str,
        max_age: Option<&Bound<'_, PyAny>>,
        origin: Option<String>,
    ) -> PyResult<Option<Checked>> {
        let key = self::key(py, key)?;
        let policy = policy(max_age, origin)?;
        if self.parse_into_python {
            self.load_checked_as::<PyValue>(py, &key, &policy)
        } else {
            self.load_checked_as::<Json>(py, &key, &policy)
        }
    }

    /// Removes ``key``'s stash, durably. ``True`` if a stash was removed,
    /// ``False`` if there was none (so it is idempotent). Creates nothing.
    ///
    /// Raises ``InvalidKeyError``, ``NotAFileError``,
    /// ``LockedByThisThreadError``, ``StashIOError``.
    fn clear(&self, py: Python<'_>, key: &str) -> PyResult<bool> {
        let key = self::key(py, key)?;
        let store = &self.inner()?;
        py.detach(|| store.clear(&key)).map_err(|e| store_error(py, e))
    }

    /// Removes ``key``'s stash only if it is still the one with this
    /// ``digest`` (hex): ``True`` if removed, ``False`` if there was none.
    ///
    /// Raises ``ReplacedError`` when another stash is there now (it is
    /// kept), and as :meth:`clear`.
    fn clear_if(&self, py: Python<'_>, key: &str, digest: &str) -> PyResult<bool> {
        let key = self::key(py, key)?;
        let digest = parse_digest(py, digest)?;
        let store = &self.inner()?;
        py.detach(|| store.clear_if(&key, &digest)).map_err(|e| store_error(py, e))
    }

    /// Every stash in the directory, sorted by key, from headers alone:
    /// a list of :class:`StashInfo`. A stash whose header cannot be read
    /// is listed with ``ok=False`` and its ``error``. Temp files and the
    /// library's own records are not listed. A missing directory is an
    /// empty list.
    fn list(&self, py: Python<'_>) -> PyResult<Vec<StashInfo>> {
        let store = &self.inner()?;
        let infos = py.detach(|| store.list()).map_err(|e| store_error(py, e))?;
        Ok(infos
            .into_iter()
            .map(|i| {
                let (kind, origin, created_at, ok, error) = match i.header {
                    Ok(h) => (
                        Some(h.kind().to_owned()),
                        h.origin().map(str::to_owned),
                        Some(h.created()),
                        true,
                        None,
                    ),
                    Err(e) => (
                        None,
                        None,
                        None,
                        false,
                        Some(store_error(py, e).into_value(py).into_any()),
                    ),
                };
                StashInfo {
                    key: i.key.to_string(),
                    path: i.path,
                    size: Some(i.size),
                    kind,
                    origin,
                    ok,
                    error,
                    digest: None,
                    created_at,
                }
            })
            .collect())
    }

    /// Verifies every stash in full (SHA-256, header, key): a list of
    /// :class:`StashInfo` with ``ok`` and, for a damaged one, ``error``
    /// (a ``CorruptError`` instance, say). It raises only when the
    /// directory cannot be listed.
    fn verify(&self, py: Python<'_>) -> PyResult<Vec<StashInfo>> {
        let store = &self.inner()?;
        let reports = py.detach(|| store.verify()).map_err(|e| store_error(py, e))?;
        Ok(reports
            .into_iter()
            .map(|r| match r.result {
                Ok(meta) => StashInfo {
                    key: r.key.to_string(),
                    path: r.path,
                    size: Some(meta.size),
                    kind: Some(meta.header.kind().to_owned()),
                    origin: meta.header.origin().map(str::to_owned),
                    ok: true,
                    error: None,
                    digest: Some(meta.digest.to_string()),
                    created_at: Some(meta.header.created()),
                },
                Err(e) => StashInfo {
                    key: r.key.to_string(),
                    path: r.path,
                    size: None,
                    kind: None,
                    origin: None,
                    ok: false,
                    error: Some(store_error(py, e).into_value(py).into_any()),
                    digest: None,
                    created_at: None,
                },
            })
            .collect())
    }

    /// Moves ``key``'s stash aside to ``.KEY.quarantined.TIME`` for
    /// inspection instead of deleting it: the new path, or ``None`` when
    /// there was no stash.
    fn quarantine(&self, py: Python<'_>, key: &str) -> PyResult<Option<PathBuf>> {
        let key = self::key(py, key)?;
        let store = &self.inner()?;
        py.detach(|| store.quarantine(&key)).map_err(|e| store_error(py, e))
    }

    /// Removes temp files left by writers that crashed mid-save (only where
    /// no live writer holds the key's lock): the paths removed.
    fn cleanup(&self, py: Python<'_>) -> PyResult<Vec<PathBuf>> {
        let store = &self.inner()?;
        py.detach(|| store.cleanup()).map_err(|e| store_error(py, e))
    }

    /// Takes ``key``'s lock and returns it held, as a :class:`KeyLock`:
    /// use it as a context manager (``with store.lock(key) as held:``),
    /// or call ``release()``.
    ///
    /// The lock is an advisory ``flock`` on ``.KEY.lock``: it excludes
    /// other holders in this and other processes. While it is held, use
    /// its own ``save``/``clear``: the store's would take it again and
    /// raise ``LockedByThisThreadError``. With ``blocking=False`` a lock
    /// held elsewhere raises ``LockedError`` instead of waiting; with
    /// ``timeout=seconds`` (a number or a ``timedelta``) it waits at most
    /// that long, then raises ``LockedError``, which is also a
    /// ``TimeoutError``. The GIL is released while waiting.
    #[pyo3(signature = (key, *, blocking=true, timeout=None))]
    fn lock(
        &self,
        py: Python<'_>,
        key: &str,
        blocking: bool,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<KeyLock> {
        let key = self::key(py, key)?;
        let store = &self.inner()?;
        let limit = timeout.map(duration).transpose()?;
        let held = py
            .detach(|| match (blocking, limit) {
                (false, _) => store.try_lock(&key),
                (true, None) => store.lock(&key),
                (true, Some(limit)) => lock_within(store, &key, limit),
            })
            .map_err(|e| store_error(py, e))?;
        Ok(KeyLock { key: key.to_string(), held: Mutex::new(Some(held)) })
    }

    /// Stashes ``snapshot`` under ``key`` and returns the permit to destroy
    /// it: a :class:`Guard`, to use as a context manager.
    ///
    /// It **refuses** to replace an existing stash (``StashExistsError``):
    /// a retry that forgot to look must not overwrite the crashed run's
    /// only good copy. Use :meth:`resume` when an earlier run may have
    /// left one.
    ///
    /// ``with store.begin(key, snapshot) as guard:`` — destroy, rebuild,
    /// then ``guard.commit()`` (clears the stash) or
    /// ``guard.rollback(restore_fn)``. An exception inside the block keeps
    /// the stash and propagates.
    #[pyo3(signature = (key, snapshot, *, kind=None, origin=None))]
    fn begin(
        &self,
        py: Python<'_>,
        key: &str,
        snapshot: &Bound<'_, PyAny>,
        kind: Option<String>,
        origin: Option<String>,
    ) -> PyResult<Guard> {
        let key = self::key(py, key)?;
        let snapshot = Json::from_py(snapshot)?;
        let opts = opts(kind, origin);
        let store = &self.inner()?;
        let guard = py
            .detach(|| store.begin_with(&key, &snapshot, &opts))
            .map_err(|e| store_error(py, e))?;
        Guard::new(py, guard)
    }

    /// The retry decision, in one call: what a job that is about to
    /// destroy ``key``'s resource should do, given ``live`` (the resource's
    /// current state, or ``None`` when it is gone).
    ///
    /// Returns a :class:`Resumed` whose ``decision`` is:
    ///
    /// - ``"live"``: ``live`` was stashed (replacing a stash an earlier
    ///   run left only because this call saw it: ``replaced``); ``guard``
    ///   is the permit to destroy it;
    /// - ``"stash"``: no live resource, and the stash passes the policy
    ///   (``max_age``, ``expect_origin``); ``guard`` rolls it back onto
    ///   the recreated resource;
    /// - ``"refused"``: the stash is stale, future-dated or foreign; it is
    ///   left untouched, ``checked`` says why, ``store.adopt(checked.stashed)``
    ///   accepts it anyway;
    /// - ``"nothing"``: no live resource and no stash.
    ///
    /// ``kind`` and ``origin`` label the stash a ``"live"`` decision
    /// writes. A damaged stash raises ``CorruptError``, never "nothing".
    #[pyo3(signature = (key, live, *, kind=None, origin=None, max_age=None, expect_origin=None))]
    #[allow(clippy::too_many_arguments)]
    fn resume(
        &self,
        py: Python<'_>,
        key: &str,
        live: &Bound<'_, PyAny>,
        kind: Option<String>,
        origin: Option<String>,
        max_age: Option<&Bound<'_, PyAny>>,
        expect_origin: Option<String>,
    ) -> PyResult<Resumed> {
        let key = self::key(py, key)?;
        let live = if live.is_none() { None } else { Some(Json::from_py(live)?) };
        let opts = opts(kind, origin);
        let policy = policy(max_age, expect_origin)?;
        let store = &self.inner()?;
        enum Out {
            Live(RsGuard, Option<StashMeta>),
            Stash(RsGuard),
            Refused(RsChecked<Json>),
            Nothing,
        }
        let out = py
            .detach(|| {
                store.resume(&key, live.as_ref(), &opts, &policy).map(|r| match r {
                    Resume::Live { guard, replaced } => Out::Live(guard, replaced),
                    Resume::Stash(guard) => Out::Stash(guard),
                    Resume::Refused(checked) => Out::Refused(checked),
                    Resume::Nothing => Out::Nothing,
                    _ => Out::Nothing,
                })
            })
            .map_err(|e| store_error(py, e))?;
        let none = Resumed { decision: "nothing", guard: None, checked: None, replaced: None };
        Ok(match out {
            Out::Live(guard, replaced) => Resumed {
                decision: "live",
                guard: Some(Py::new(py, Guard::new(py, guard)?)?),
                replaced: replaced.map(|m| Py::new(py, Stashed::meta_only(py, m))).transpose()?,
                ..none
            },
            Out::Stash(guard) => Resumed {
                decision: "stash",
                guard: Some(Py::new(py, Guard::new(py, guard)?)?),
                ..none
            },
            Out::Refused(checked) => Resumed {
                decision: "refused",
                checked: Some(Py::new(py, Checked::new(py, checked)?)?),
                ..none
            },
            Out::Nothing => none,
        })
    }

    /// A :class:`Guard` over exactly this stash (a :class:`Stashed`, such as
    /// ``checked.stashed`` of a refused retry): accepting it anyway.
    /// Its rollback restores it only if it is still that stash (same
    /// SHA-256).
    fn adopt(&self, py: Python<'_>, stashed: &Bound<'_, Stashed>) -> PyResult<Guard> {
        Guard::new(py, self.inner()?.adopt_meta(&stashed.get().meta))
    }
}

/// `key`'s lock, waiting at most `limit` for it (polling, with a backoff
/// up to 50 ms), then [`safestash::Error::Locked`].
fn lock_within(
    store: &RsStore,
    key: &StashKey,
    limit: std::time::Duration,
) -> safestash::Result<RsKeyLock> {
    let deadline = std::time::Instant::now() + limit;
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        match store.try_lock(key) {
            Err(safestash::Error::Locked { .. }) if std::time::Instant::now() < deadline => {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                std::thread::sleep(pause.min(left));
                pause = (pause * 2).min(std::time::Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

fn policy(max_age: Option<&Bound<'_, PyAny>>, origin: Option<String>) -> PyResult<LoadPolicy> {
    let mut p = LoadPolicy::new();
    if let Some(age) = max_age {
        p = p.max_age(duration(age)?);
    }
    if let Some(o) = origin {
        p = p.origin(o);
    }
    Ok(p)
}

// --- the held lock ------------------------------------------------------

/// A held lock on one key, from :meth:`Store.lock`.
///
/// A context manager: ``with store.lock(key) as held:`` releases it on
/// exit; ``release()`` does too. ``held.save(value)``, ``held.clear()``
/// and ``held.quarantine()`` act on the key under this lock. The kernel
/// releases it when the process dies. Do not hold one across ``fork``.
#[pyclass(frozen, module = "safestash")]
pub struct KeyLock {
    #[pyo3(get)]
    key: String,
    held: Mutex<Option<RsKeyLock>>,
}

impl KeyLock {
    fn with<R: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&RsKeyLock) -> safestash::Result<R> + Send,
    ) -> PyResult<R> {
        let out = py.detach(|| {
            let guard = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            guard.as_ref().map(f)
        });
        match out {
            Some(r) => r.map_err(|e| store_error(py, e)),
            None => {
                Err(PyRuntimeError::new_err(format!("the lock on `{}` was released", self.key)))
            }
        }
    }
}

#[pymethods]
impl KeyLock {
    /// Saves ``value`` under this lock (as :meth:`Store.save`).
    #[pyo3(signature = (value, *, kind=None, origin=None))]
    fn save(
        &self,
        py: Python<'_>,
        value: &Bound<'_, PyAny>,
        kind: Option<String>,
        origin: Option<String>,
    ) -> PyResult<Receipt> {
        let value = Json::from_py(value)?;
        let opts = opts(kind, origin);
        self.with(py, |l| l.save_with(&value, &opts)).map(|r| Receipt::new(&r))
    }

    /// Removes the stash under this lock (as :meth:`Store.clear`).
    fn clear(&self, py: Python<'_>) -> PyResult<bool> {
        self.with(py, |l| l.clear())
    }

    /// Quarantines the stash under this lock (as :meth:`Store.quarantine`).
    fn quarantine(&self, py: Python<'_>) -> PyResult<Option<PathBuf>> {
        self.with(py, |l| l.quarantine())
    }

    /// Whether this object holds the lock in this process: ``False`` once
    /// released, and in a forked child that inherited it (the lock is the
    /// parent's; its ``save``/``clear`` raise ``LockedError`` there).
    #[getter]
    fn locked(&self, py: Python<'_>) -> bool {
        // Waits for a call under the lock without the GIL.
        py.detach(|| {
            let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            held.as_ref().is_some_and(RsKeyLock::is_held)
        })
    }

    /// Releases the lock (idempotent). In a forked child that inherited it,
    /// only the child's copy of the descriptor is closed: the parent keeps
    /// its lock.
    fn release(&self, py: Python<'_>) {
        py.detach(|| {
            let held = self.held.lock().unwrap_or_else(PoisonError::into_inner).take();
            drop(held);
        });
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _ty: Option<&Bound<'_, PyAny>>,
        _value: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> bool {
        self.release(py);
        false
    }

    fn __repr__(&self) -> String {
        let locked = self
            .held
            .try_lock()
            .map_or("busy", |h| py_bool(h.as_ref().is_some_and(RsKeyLock::is_held)));
        format!("KeyLock(key={:?}, locked={})", self.key, locked)
    }
}

// --- the rollback guard -------------------------------------------------

/// The crate's guard over a stash of JSON-compatible values.
type RsGuard = RollbackGuard<Json>;

/// The permit to destroy: the stash of the resource about to be destroyed,
/// from :meth:`Store.begin`, :meth:`Store.resume` or :meth:`Store.adopt`.
///
/// Use it as a context manager::
///
///     with store.begin("orders", snapshot) as guard:
///         drop_table(); reload()
///         guard.commit()
///
/// - ``commit()`` clears the stash (if it is still this one) and returns
///   whether it removed it;
/// - ``rollback(restore_fn)`` loads and verifies the stash, calls
///   ``restore_fn(stashed)`` with a :class:`Stashed`, and clears it only
///   if ``restore_fn`` returned normally and the stash is still this one.
///   If ``restore_fn`` raises, the stash is kept and ``RestoreError`` is
///   raised from its exception; the guard stays usable, so the rollback
///   can be retried;
/// - ``keep()`` gives up the guard, keeping the stash.
///
/// An exception inside the ``with`` block keeps the stash and propagates
/// (the guard stays usable for a rollback in an ``except`` clause);
/// leaving the block without commit or rollback keeps the stash and warns
/// (``StashKeptWarning``). The next attempt finds the stash
/// (:meth:`Store.resume`). A guard garbage-collected while still open
/// keeps the stash and logs a warning (the crate's guard, dropped).
///
/// While a ``commit`` or ``rollback`` runs the guard is in use: another
/// call on it (from ``restore_fn``, or another thread) raises
/// ``RuntimeError`` rather than act on the stash being restored.
#[pyclass(frozen, module = "safestash")]
pub struct Guard {
    /// The crate's guard: there while open and idle, taken out by the call
    /// that uses it (and put back if that call failed, as the crate hands
    /// it back in its `GuardError`).
    guard: Mutex<Option<RsGuard>>,
    /// Which call consumed the crate's guard, set once it succeeded.
    ended: OnceLock<&'static str>,
    #[pyo3(get)]
    receipt: Py<Receipt>,
}

impl Guard {
    fn new(py: Python<'_>, guard: RsGuard) -> PyResult<Guard> {
        let receipt = Py::new(py, Receipt::new(guard.receipt()))?;
        Ok(Guard { guard: Mutex::new(Some(guard)), ended: OnceLock::new(), receipt })
    }

    fn state(&self) -> &'static str {
        self.ended.get().copied().unwrap_or("open")
    }

    /// Takes the crate's guard out for one consuming call. The mutex is
    /// held only to take or put back, never across I/O or Python code.
    fn take(&self) -> PyResult<RsGuard> {
        let taken = self.guard.lock().unwrap_or_else(PoisonError::into_inner).take();
        taken.ok_or_else(|| {
            let key = &self.receipt.get().key;
            PyRuntimeError::new_err(match self.ended.get() {
                Some(done) => format!("the guard of stash `{key}` is already {done}"),
                None => {
                    format!("the guard of stash `{key}` is in use: a commit or rollback is running")
                }
            })
        })
    }

    /// A consuming call succeeded: the crate's guard is gone.
    fn end(&self, how: &'static str) {
        let _ = self.ended.set(how);
    }

    /// A consuming call failed: the crate handed the guard back.
    fn hand_back(&self, failed: GuardError<Json>) -> (safestash::Error, bool) {
        let GuardError { guard, error, restored } = failed;
        *self.guard.lock().unwrap_or_else(PoisonError::into_inner) = Some(guard);
        (error, restored)
    }
}

#[pymethods]
impl Guard {
    /// The stash's key.
    #[getter]
    fn key(&self) -> String {
        self.receipt.get().key.clone()
    }

    /// The SHA-256 of the stash this guard holds (hex).
    #[getter]
    fn digest(&self) -> String {
        self.receipt.get().digest.clone()
    }

    /// ``"open"``, ``"committed"``, ``"rolled_back"`` or ``"kept"``.
    #[getter]
    fn state_name(&self) -> &'static str {
        self.state()
    }

    /// Whether the guard is still open (neither committed, rolled back nor
    /// kept).
    #[getter]
    fn open(&self) -> bool {
        self.ended.get().is_none()
    }

    /// The rebuild succeeded: clears the stash, if it is still the one this
    /// guard wrote. Returns whether it removed it (``False``: it was gone
    /// already).
    ///
    /// Raises ``ReplacedError`` when another writer replaced the stash (it
    /// is kept), ``StashIOError`` on failure; the guard stays open, so the
    /// commit can be retried.
    // The crate hands its guard back by value in a failed call's
    // `GuardError` (the cold path), to be put back for a retry.
    #[allow(clippy::result_large_err)]
    fn commit(&self, py: Python<'_>) -> PyResult<bool> {
        let guard = self.take()?;
        match py.detach(|| guard.commit()) {
            Ok(removed) => {
                self.end("committed");
                Ok(removed)
            }
            Err(failed) => Err(store_error(py, self.hand_back(failed).0)),
        }
    }

    /// The rebuild failed: restores the stash through ``restore_fn`` and
    /// clears it only if that succeeded.
    ///
    /// ``restore_fn(stashed)`` gets the verified :class:`Stashed`; it must
    /// make its own writes durable before it returns, since the stash is
    /// cleared right after (and only if it is still this stash: one another
    /// writer saved meanwhile is left in place). It runs with the GIL held.
    ///
    /// Raises ``RestoreError`` (whose ``__cause__`` is the exception
    /// ``restore_fn`` raised) when the restore fails, ``ReplacedError``
    /// when the stash is gone or another one, ``CorruptError`` when it is
    /// damaged: in every case the stash is kept and the guard stays open
    /// for a retry. If the restore succeeded but clearing the stash
    /// failed, the exception has ``restored = True``.
    // The crate hands its guard back by value in a failed call's
    // `GuardError` (the cold path), to be put back for a retry.
    #[allow(clippy::result_large_err)]
    fn rollback(&self, py: Python<'_>, restore_fn: Py<PyAny>) -> PyResult<()> {
        let guard = self.take()?;
        let mut hook = |s: RsStashed<Json>| -> Result<(), BoxError> {
            Python::attach(|py| {
                let arg = Stashed::new(py, s)?;
                restore_fn.call1(py, (arg,)).map(drop)
            })
            .map_err(|e| Box::new(CallbackError(e)) as BoxError)
        };
        match py.detach(|| guard.rollback(&mut hook)) {
            Ok(_) => {
                self.end("rolled_back");
                Ok(())
            }
            Err(failed) => {
                let (e, restored) = self.hand_back(failed);
                let err = store_error(py, e);
                err.value(py).setattr("restored", restored)?;
                Err(err)
            }
        }
    }

    /// Gives up the guard and keeps the stash (for an operator, or a later
    /// :meth:`Store.resume`). Returns the :class:`Receipt`.
    fn keep(&self, py: Python<'_>) -> PyResult<Py<Receipt>> {
        let guard = self.take()?;
        // The crate's receipt is the one `receipt` was made from.
        let _: RsReceipt = guard.keep();
        self.end("kept");
        Ok(self.receipt.clone_ref(py))
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        ty: Option<&Bound<'_, PyAny>>,
        _value: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        if ty.is_none() && self.open() {
            let warning = py.import("safestash.errors")?.getattr("StashKeptWarning")?;
            let msg = format!(
                "guard of stash `{}` left without commit() or rollback(); the stash is kept",
                self.receipt.get().key
            );
            PyErr::warn(py, &warning, &std::ffi::CString::new(msg).unwrap_or_default(), 1)?;
        }
        // An exception propagates; the stash is kept either way.
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!("Guard(key={:?}, state={:?})", self.receipt.get().key, self.state())
    }
}

/// What :meth:`Store.resume` decided.
///
/// ``decision`` is ``"live"``, ``"stash"``, ``"refused"`` or
/// ``"nothing"``; ``guard`` is the :class:`Guard` for ``"live"`` and
/// ``"stash"`` (else ``None``); ``checked`` the :class:`Checked` of a
/// ``"refused"`` stash; ``replaced`` the :class:`Stashed` metadata (no
/// value) of a stash a ``"live"`` decision replaced. It unpacks as a pair:
/// ``decision, guard = store.resume(...)`` (the second item is the
/// ``Checked`` for ``"refused"``, ``None`` for ``"nothing"``).
#[pyclass(frozen, module = "safestash", get_all)]
pub struct Resumed {
    pub decision: &'static str,
    pub guard: Option<Py<Guard>>,
    pub checked: Option<Py<Checked>>,
    pub replaced: Option<Py<Stashed>>,
}

#[pymethods]
impl Resumed {
    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let second: Py<PyAny> = match (&self.guard, &self.checked) {
            (Some(g), _) => g.clone_ref(py).into_any(),
            (None, Some(c)) => c.clone_ref(py).into_any(),
            _ => py.None(),
        };
        PyList::new(py, [self.decision.into_pyobject(py)?.into_any().unbind(), second])?
            .try_iter()
            .map(Bound::into_any)
    }

    fn __repr__(&self) -> String {
        format!("Resumed(decision={:?})", self.decision)
    }
}

/// For the overhead benchmark: `n` saves and loads of `value` under `key`
/// done entirely in Rust (the value converted once, up front), with the GIL
/// released. Returns the nanoseconds of each call, saves then loads.
#[pyfunction]
pub fn _bench_rust(
    py: Python<'_>,
    store: &Store,
    key: &str,
    value: &Bound<'_, PyAny>,
    n: usize,
) -> PyResult<(Vec<u64>, Vec<u64>)> {
    let key = self::key(py, key)?;
    let value = Json::from_py(value)?;
    let store = &store.inner()?;
    py.detach(|| {
        let mut saves = Vec::with_capacity(n);
        let mut loads = Vec::with_capacity(n);
        for _ in 0..n {
            let t = std::time::Instant::now();
            store.save(&key, &value)?;
            saves.push(t.elapsed().as_nanos() as u64);
            let t = std::time::Instant::now();
            let loaded = store.load::<Json>(&key)?;
            loads.push(t.elapsed().as_nanos() as u64);
            drop(loaded);
        }
        Ok((saves, loads))
    })
    .map_err(|e: safestash::Error| store_error(py, e))
}
