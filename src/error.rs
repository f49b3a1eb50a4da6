//! [`Error`], [`KeyError`] and the reasons they carry.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::digest::Digest;
use crate::fs::FileKind;
use crate::key::{KeyError, StashKey};

/// A `Result` whose error is [`Error`].
///
/// # Examples
///
/// ```
/// fn load(store: &safestash::Store) -> safestash::Result<Option<i32>> {
///     Ok(store.load(&safestash::StashKey::new("k")?)?.map(|s| s.into_value()))
/// }
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a store operation.
///
/// I/O variants name the operation and the path; the OS error is the
/// [`source`](std::error::Error::source), not repeated in the message.
///
/// # Examples
///
/// ```
/// use safestash::{Error, StashKey, Store};
///
/// let dir = tempfile::tempdir()?;
/// let store = Store::open(dir.path())?;
/// let key = StashKey::new("k")?;
/// std::fs::write(dir.path().join("k"), b"not a stash")?;
/// match store.load::<String>(&key) {
///     Err(Error::Corrupt { path, reason }) => println!("{} is damaged: {reason}", path.display()),
///     other => panic!("expected corruption, got {other:?}"),
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A filesystem call failed.
    #[error("failed to {op} `{}`", path.display())]
    Io {
        /// What was being done.
        op: IoOp,
        /// The path it was done to.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Renaming a file failed.
    #[error("failed to rename `{}` to `{}`", from.display(), to.display())]
    Rename {
        /// The file being renamed.
        from: PathBuf,
        /// The name it was to get.
        to: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The file at a stash path is damaged, truncated, written for another
    /// key, or not a stash at all. It is never treated as "no stash".
    #[error("stash `{}` is corrupt: {reason}", path.display())]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// What is wrong with it.
        reason: Corruption,
    },
    /// The file is an intact stash of a format version this build cannot
    /// read (written by a newer safestash).
    #[error("stash `{}` has format version {version}; this build reads version 1", path.display())]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version it declares.
        version: u32,
    },
    /// Something other than a regular file (a symlink, a directory, …) sits
    /// where a stash or the store's directory should be. It is neither
    /// followed nor replaced.
    #[error("`{}` is a {found}, not a {expected}; refusing to use it", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What is there.
        found: FileKind,
        /// What should be there.
        expected: FileKind,
    },
    /// Another writer holds the key's lock.
    #[error("stash `{key}` is locked by another writer (lock file `{}`)", path.display())]
    Locked {
        /// The key.
        key: StashKey,
        /// Its lock file.
        path: PathBuf,
    },
    /// A create-only save ([`Store::begin`](crate::Store::begin),
    /// [`Precondition::Absent`](crate::Precondition::Absent)) found a stash
    /// already there: it is kept, never replaced unseen. Resume it with
    /// [`Store::resume`](crate::Store::resume), or replace it explicitly.
    #[error("stash `{key}` already exists at `{}`; refusing to replace a stash the caller has not seen", path.display())]
    StashExists {
        /// The key.
        key: StashKey,
        /// The existing stash's path.
        path: PathBuf,
        /// The existing stash's recorded digest (`None` when it has no
        /// readable trailer: a damaged stash is kept too).
        digest: Option<Digest>,
    },
    /// This thread already holds `key`'s lock (a [`KeyLock`](crate::KeyLock)
    /// it holds, or a restore hook or observer running under one, asked for
    /// it again). Waiting would wait for itself forever; use the held lock's
    /// own [`save`](crate::KeyLock::save) and [`clear`](crate::KeyLock::clear).
    #[error("stash `{key}` is already locked by this thread (lock file `{}`); use the held KeyLock instead of locking again", path.display())]
    LockedByThisThread {
        /// The key.
        key: StashKey,
        /// Its lock file.
        path: PathBuf,
    },
    /// The value could not be serialized.
    #[error("failed to serialize the value for stash `{key}`")]
    Serialize {
        /// The key being saved.
        key: StashKey,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },
    /// The stash is intact but does not deserialize into the requested type.
    #[error("failed to deserialize stash `{}` into the requested type", path.display())]
    Deserialize {
        /// The stash file.
        path: PathBuf,
        /// The deserializer's error.
        #[source]
        source: serde_json::Error,
    },
    /// A value given to the library breaks its rule: a save option (kind,
    /// origin), a header's created time, or a digest string.
    #[error("invalid {field} {value:?}: {rule}")]
    InvalidOption {
        /// Which value: `"kind"`, `"origin"`, `"created"` or `"digest"`.
        field: &'static str,
        /// The rejected value.
        value: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// A key was rejected.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A restore hook failed. The stash was kept, for a retry or an operator.
    #[error("failed to restore stash `{key}`; the stash is kept at `{}` for a retry", path.display())]
    Restore {
        /// The stash's key.
        key: StashKey,
        /// The stash file, still in place.
        path: PathBuf,
        /// The hook's error.
        #[source]
        source: BoxError,
    },
    /// A remote store (PostgreSQL or object storage) failed an operation: a
    /// lost connection, a server restart, a call past the store's `timeout`
    /// (the source then says it timed out), a full disk on the server, a
    /// multipart upload whose parts failed. Names the operation and the
    /// stash or store; the client's error is the
    /// [`source`](std::error::Error::source). The previous stash is then
    /// intact, or (when the answer was lost or came too late: a timeout, a
    /// reset connection) the change may have been made: it is never half
    /// made, and nothing was deleted on the strength of that answer.
    #[error("failed to {op} `{target}`")]
    Backend {
        /// What was being done.
        op: BackendOp,
        /// The stash or store, as a URL without its password.
        target: String,
        /// The client's error.
        #[source]
        source: BoxError,
    },
    /// The stash a rollback guard holds, or a conditional save or clear
    /// expected, is gone or was replaced by another writer's: it is neither
    /// restored nor overwritten.
    #[error("stash `{key}` at `{}` is no longer the one expected (sha256 {expected})", path.display())]
    Replaced {
        /// The key.
        key: StashKey,
        /// The stash file.
        path: PathBuf,
        /// The digest of the stash the guard wrote.
        expected: Digest,
    },
}

/// What a backend was doing when it failed ([`Error::Backend`]); its
/// `Display` is the verb of the error's message.
///
/// # Examples
///
/// ```
/// use safestash::BackendOp;
///
/// assert_eq!(BackendOp::Connect.to_string(), "connect to");
/// let err = safestash::Store::open_url("postgresql://h/db?timeout=soon");
/// # let _ = err;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendOp {
    /// Reading the store's URL.
    ParseUrl,
    /// Building the client from its configuration.
    Configure,
    /// Starting the client's runtime.
    StartRuntime,
    /// Setting up TLS.
    SetUpTls,
    /// Opening the store (checks made at open).
    Open,
    /// Connecting to the server.
    Connect,
    /// Setting up a session on a new connection.
    SetUpSession,
    /// Checking that pooled sessions are still alive.
    CheckSessions,
    /// Finding the store's schema.
    FindSchema,
    /// Creating the store's schema.
    CreateSchema,
    /// Using (or migrating) the store's schema.
    UseSchema,
    /// A call on a store that cannot be used (a forked child's inherited one).
    Use,
    /// Saving a stash.
    Save,
    /// Saving the stashes of a batch.
    SaveBatch,
    /// Loading a stash.
    Load,
    /// Clearing a stash.
    Clear,
    /// Quarantining a stash.
    Quarantine,
    /// Listing a namespace.
    List,
    /// Listing the child namespaces.
    ListNamespaces,
    /// Taking or holding a key's lock.
    Lock,
    /// Removing what interrupted saves left behind.
    CleanUp,
}

impl fmt::Display for BackendOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendOp::ParseUrl => "parse the URL",
            BackendOp::Configure => "configure",
            BackendOp::StartRuntime => "start the runtime for",
            BackendOp::SetUpTls => "set up TLS for",
            BackendOp::Open => "open",
            BackendOp::Connect => "connect to",
            BackendOp::SetUpSession => "set up a session on",
            BackendOp::CheckSessions => "check the sessions of",
            BackendOp::FindSchema => "find the schema of",
            BackendOp::CreateSchema => "create the schema in",
            BackendOp::UseSchema => "use the schema of",
            BackendOp::Use => "use",
            BackendOp::Save => "save",
            BackendOp::SaveBatch => "save the batch of",
            BackendOp::Load => "load",
            BackendOp::Clear => "clear",
            BackendOp::Quarantine => "quarantine",
            BackendOp::List => "list",
            BackendOp::ListNamespaces => "list namespaces of",
            BackendOp::Lock => "lock",
            BackendOp::CleanUp => "clean up",
        })
    }
}

/// The filesystem operation an [`Error::Io`] was doing.
///
/// # Examples
///
/// ```
/// assert_eq!(safestash::IoOp::SyncDir.to_string(), "sync directory");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IoOp {
    /// Creating a directory.
    CreateDir,
    /// Listing a directory.
    ReadDir,
    /// `fsync` on a directory.
    SyncDir,
    /// Creating a temp file in a directory.
    CreateTemp,
    /// Writing a temp file.
    Write,
    /// `fsync` on a file.
    SyncFile,
    /// Opening a file for reading.
    Open,
    /// Reading a file.
    Read,
    /// Removing a file.
    Remove,
    /// Looking at a path's type and size.
    Inspect,
    /// Taking a lock.
    Lock,
}

impl fmt::Display for IoOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IoOp::CreateDir => "create directory",
            IoOp::ReadDir => "list directory",
            IoOp::SyncDir => "sync directory",
            IoOp::CreateTemp => "create a temp file in",
            IoOp::Write => "write",
            IoOp::SyncFile => "sync",
            IoOp::Open => "open",
            IoOp::Read => "read",
            IoOp::Remove => "remove",
            IoOp::Inspect => "inspect",
            IoOp::Lock => "lock",
        })
    }
}

/// Why a file is not a valid stash (see [`Error::Corrupt`]).
///
/// # Examples
///
/// ```
/// use safestash::envelope::decode;
/// use safestash::Corruption;
///
/// assert_eq!(decode(b"hello").unwrap_err().to_string(), Corruption::NotAStash.to_string());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Corruption {
    /// The file does not start with the envelope's magic.
    NotAStash,
    /// The file is shorter than any envelope.
    Truncated {
        /// Its length.
        len: u64,
    },
    /// The last 112 bytes are not a valid trailer.
    BadTrailer,
    /// The digest in the trailer does not match the file's bytes.
    ChecksumMismatch {
        /// The digest the trailer records.
        recorded: Digest,
        /// The digest of the bytes read.
        actual: Digest,
    },
    /// The version field is not a decimal number.
    BadVersion,
    /// The header line is missing, too long or invalid.
    BadHeader(String),
    /// The payload's length differs from the trailer's.
    LengthMismatch {
        /// The length the trailer records.
        recorded: u64,
        /// The length found.
        actual: u64,
    },
    /// The stash was written for another key (copied or renamed by hand).
    KeyMismatch {
        /// The key it was loaded as.
        expected: String,
        /// The key its header names.
        found: String,
    },
    /// A part of the stash stored apart is missing: the data object an
    /// object store's reference names (named here).
    MissingData(String),
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Corruption::NotAStash => f.write_str("not a stash (no SAFESTASH magic)"),
            Corruption::Truncated { len } => write!(f, "truncated ({len} bytes)"),
            Corruption::BadTrailer => f.write_str("missing or malformed trailer"),
            Corruption::ChecksumMismatch { recorded, actual } => {
                write!(f, "checksum mismatch (recorded {recorded}, actual {actual})")
            }
            Corruption::BadVersion => f.write_str("malformed version"),
            Corruption::BadHeader(why) => write!(f, "bad header: {why}"),
            Corruption::LengthMismatch { recorded, actual } => {
                write!(f, "payload is {actual} bytes, trailer says {recorded}")
            }
            Corruption::KeyMismatch { expected, found } => {
                write!(f, "written for key `{found}`, not `{expected}`")
            }
            Corruption::MissingData(name) => write!(f, "its data `{name}` is missing"),
        }
    }
}

/// A boxed error from an observer or a restore hook.
///
/// # Examples
///
/// ```
/// let e: safestash::BoxError = "watcher is down".into();
/// assert_eq!(e.to_string(), "watcher is down");
/// ```
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An observer that failed (returned an error or panicked). The operation it
/// observed still succeeded.
///
/// # Examples
///
/// ```
/// use safestash::{StashKey, Store};
///
/// let dir = tempfile::tempdir()?;
/// let mut store = Store::open(dir.path())?;
/// store.observe("webhook", |_| Err("watcher is down".into()));
/// let receipt = store.save(&StashKey::new("k")?, &1)?; // still Ok: persisted first
/// assert_eq!(receipt.observer_errors[0].observer, "webhook");
/// assert_eq!(receipt.observer_errors[0].to_string(), "observer `webhook` failed: watcher is down");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ObserverError {
    /// The observer's name.
    pub observer: String,
    /// What it reported (or the panic message).
    pub error: Arc<dyn std::error::Error + Send + Sync + 'static>,
}

impl PartialEq for ObserverError {
    fn eq(&self, other: &ObserverError) -> bool {
        self.observer == other.observer && self.error.to_string() == other.error.to_string()
    }
}

impl Eq for ObserverError {}

impl fmt::Display for ObserverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "observer `{}` failed: {}", self.observer, self.error)
    }
}

impl std::error::Error for ObserverError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.error)
    }
}

/// What a backend was doing, and what is known of the outcome when the
/// call failed (a commit whose reply was lost may have been made): the
/// note goes first in the error's source, so a reader of the message
/// learns it before the client's error.
#[cfg(any(feature = "postgres", feature = "mysql"))]
#[derive(Debug, Clone, Copy)]
pub(crate) struct Doing {
    pub(crate) op: BackendOp,
    pub(crate) note: Option<&'static str>,
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
impl Doing {
    /// `op`, with `note` said first in the error's source.
    pub(crate) const fn noted(op: BackendOp, note: &'static str) -> Doing {
        Doing { op, note: Some(note) }
    }

    /// The backend error of this operation on `target`, caused by `source`.
    pub(crate) fn error(self, target: String, source: BoxError) -> Error {
        let source = match self.note {
            Some(note) => Box::new(Noted { note, source }),
            None => source,
        };
        Error::Backend { op: self.op, target, source }
    }
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
impl From<BackendOp> for Doing {
    fn from(op: BackendOp) -> Doing {
        Doing { op, note: None }
    }
}

/// A client's error, with what is known of the outcome said first.
#[cfg(any(feature = "postgres", feature = "mysql"))]
#[derive(Debug)]
struct Noted {
    note: &'static str,
    source: BoxError,
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
impl fmt::Display for Noted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.note)
    }
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
impl std::error::Error for Noted {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.source.as_ref())
    }
}
