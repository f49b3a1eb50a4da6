//! What the store hands back: receipts, loaded stashes, listings, and the
//! options a save takes.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::digest::Digest;
use crate::envelope::Header;
use crate::error::ObserverError;
use crate::error::Result;
use crate::key::StashKey;

/// Options for [`Store::save_with`](crate::Store::save_with): the stash's kind label and origin.
///
/// # Examples
///
/// ```
/// use safestash::SaveOptions;
///
/// let opts = SaveOptions::new().kind("field-dictionary").origin("upload-7f3a");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SaveOptions {
    pub(crate) kind: Option<String>,
    pub(crate) origin: Option<String>,
}

impl SaveOptions {
    /// Kind `value`, no origin.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(safestash::SaveOptions::new(), safestash::SaveOptions::default());
    /// ```
    pub fn new() -> SaveOptions {
        SaveOptions::default()
    }

    /// Labels what the payload is: 1–64 bytes of `[A-Za-z0-9._:/-]`,
    /// checked when saving.
    ///
    /// # Examples
    ///
    /// ```
    /// let opts = safestash::SaveOptions::new().kind("table/rows");
    /// ```
    #[must_use]
    pub fn kind(mut self, kind: impl Into<String>) -> SaveOptions {
        self.kind = Some(kind.into());
        self
    }

    /// Records who or what wrote the stash (a job id, an upload hash), at
    /// most 1024 bytes, checked when saving.
    ///
    /// # Examples
    ///
    /// ```
    /// let opts = safestash::SaveOptions::new().origin("job 2026-11-22#4");
    /// ```
    #[must_use]
    pub fn origin(mut self, origin: impl Into<String>) -> SaveOptions {
        self.origin = Some(origin.into());
        self
    }
}

/// Proof that a save is durable: what was written where.
///
/// # Examples
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// # let store = safestash::Store::open(dir.path())?;
/// let receipt = store.save(&safestash::StashKey::new("k")?, &[1, 2, 3])?;
/// assert_eq!(receipt.bytes, std::fs::metadata(&receipt.path)?.len());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Receipt {
    /// The key saved.
    pub key: StashKey,
    /// The stash file.
    pub path: PathBuf,
    /// The file's size in bytes.
    pub bytes: u64,
    /// The SHA-256 recorded in the file's trailer.
    pub digest: Digest,
    /// The creation time recorded in the header.
    pub created: SystemTime,
    /// Observers that failed after the stash was durable (see
    /// [`Store::observe`](crate::Store::observe)); the save itself succeeded.
    pub observer_errors: Vec<ObserverError>,
}

/// What is known about a verified stash.
///
/// # Examples
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// # let store = safestash::Store::open(dir.path())?;
/// let key = safestash::StashKey::new("k")?;
/// let opts = safestash::SaveOptions::new().origin("job-1");
/// let receipt = store.save_with(&key, &1, &opts)?;
/// let meta = store.load::<i32>(&key)?.unwrap().meta().clone();
/// assert_eq!(meta.header.origin(), Some("job-1"));
/// assert_eq!(meta.digest, receipt.digest);
/// assert!(meta.age() < std::time::Duration::from_secs(60));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StashMeta {
    /// The header: key, kind, created time, origin, encoding, writer.
    pub header: Header,
    /// The verified SHA-256.
    pub digest: Digest,
    /// The file's size in bytes.
    pub size: u64,
    /// The stash file.
    pub path: PathBuf,
}

impl StashMeta {
    /// How long ago the stash was written (zero if the clock went backwards).
    ///
    /// # Examples
    ///
    /// See [`StashMeta`].
    pub fn age(&self) -> Duration {
        SystemTime::now().duration_since(self.header.created()).unwrap_or(Duration::ZERO)
    }
}

/// A loaded, verified stash: the value and its metadata.
///
/// # Examples
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// # let store = safestash::Store::open(dir.path())?;
/// # let key = safestash::StashKey::new("k")?;
/// store.save(&key, &vec!["a", "b"])?;
/// let stashed = store.load::<Vec<String>>(&key)?.unwrap();
/// assert_eq!(stashed.value().len(), 2);
/// assert_eq!(stashed.meta().header.kind(), "value");
/// let v: Vec<String> = stashed.into_value();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Stashed<T> {
    pub(crate) value: T,
    pub(crate) meta: StashMeta,
}

impl<T> Stashed<T> {
    /// The value.
    ///
    /// # Examples
    ///
    /// See [`Stashed`].
    pub fn value(&self) -> &T {
        &self.value
    }

    /// The value, consuming the stash.
    ///
    /// # Examples
    ///
    /// See [`Stashed`].
    pub fn into_value(self) -> T {
        self.value
    }

    /// The metadata.
    ///
    /// # Examples
    ///
    /// See [`Stashed`].
    pub fn meta(&self) -> &StashMeta {
        &self.meta
    }

    /// The value and the metadata.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// # let key = safestash::StashKey::new("k")?;
    /// store.save(&key, &7)?;
    /// let (value, meta) = store.load::<u8>(&key)?.unwrap().into_parts();
    /// assert_eq!((value, meta.header.key()), (7, &key));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn into_parts(self) -> (T, StashMeta) {
        (self.value, self.meta)
    }
}

/// One stash as [`Store::list`](crate::Store::list) sees it, from its header alone.
///
/// # Examples
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// # let store = safestash::Store::open(dir.path())?;
/// store.save(&safestash::StashKey::new("k")?, &1)?;
/// let info = &store.list()?[0];
/// assert_eq!(info.key.as_str(), "k");
/// assert_eq!(info.header.as_ref().unwrap().kind(), "value");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct StashInfo {
    /// The key (the file's name).
    pub key: StashKey,
    /// The file.
    pub path: PathBuf,
    /// The file's size in bytes (0 for a non-file, or a file that cannot
    /// be opened).
    pub size: u64,
    /// The header, or why it could not be read. The digest is not checked:
    /// use [`Store::verify`](crate::Store::verify) for that.
    pub header: Result<Header>,
}

/// One stash as [`Store::verify`](crate::Store::verify) sees it, fully checked.
///
/// # Examples
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// # let store = safestash::Store::open(dir.path())?;
/// store.save(&safestash::StashKey::new("k")?, &1)?;
/// let report = store.verify()?;
/// assert!(report[0].result.is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct VerifyReport {
    /// The key (the file's name).
    pub key: StashKey,
    /// The file.
    pub path: PathBuf,
    /// The stash's metadata if it is intact, else why not.
    pub result: Result<StashMeta>,
}
