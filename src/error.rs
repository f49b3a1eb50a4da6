//! [`Error`], [`KeyError`] and the reasons they carry.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::envelope::Digest;
use crate::fs::FileKind;
use crate::key::{MAX_KEY_LEN, StashKey};

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
        source: crate::observe::BoxError,
    },
    /// The stash a rollback guard wrote is gone, or was replaced by another
    /// writer's; it is not restored.
    #[error("stash `{key}` at `{}` is no longer the one this guard wrote (expected sha256 {expected})", path.display())]
    Replaced {
        /// The key.
        key: StashKey,
        /// The stash file.
        path: PathBuf,
        /// The digest of the stash the guard wrote.
        expected: Digest,
    },
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
        }
    }
}

/// A string rejected by [`StashKey::new`], with the reason and the input.
///
/// # Examples
///
/// ```
/// use safestash::{KeyErrorKind, StashKey};
///
/// let err = StashKey::new("foo/bar").unwrap_err();
/// assert_eq!(err.kind(), &KeyErrorKind::InvalidChar { ch: '/', index: 3 });
/// assert_eq!(err.to_string(), "invalid stash key \"foo/bar\": character '/' at byte 3 is not in [A-Za-z0-9._-]");
/// assert_eq!(err.into_input(), "foo/bar");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid stash key {input:?}: {kind}")]
pub struct KeyError {
    input: String,
    kind: KeyErrorKind,
}

impl KeyError {
    pub(crate) fn new(input: String, kind: KeyErrorKind) -> KeyError {
        KeyError { input, kind }
    }

    /// The rejected input.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(safestash::StashKey::new("a/b").unwrap_err().input(), "a/b");
    /// ```
    pub fn input(&self) -> &str {
        &self.input
    }

    /// Gives the rejected input back.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(safestash::StashKey::new("a/b").unwrap_err().into_input(), "a/b");
    /// ```
    pub fn into_input(self) -> String {
        self.input
    }

    /// Which rule the input breaks.
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::{KeyErrorKind, StashKey};
    /// assert_eq!(StashKey::new("").unwrap_err().kind(), &KeyErrorKind::Empty);
    /// ```
    pub fn kind(&self) -> &KeyErrorKind {
        &self.kind
    }
}

/// The rule a rejected key breaks.
///
/// # Examples
///
/// ```
/// use safestash::{KeyErrorKind, StashKey};
/// assert_eq!(StashKey::new("NUL.txt").unwrap_err().kind(), &KeyErrorKind::Reserved);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyErrorKind {
    /// The key is empty.
    Empty,
    /// The key is longer than 200 bytes.
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The key holds a character outside `[A-Za-z0-9._-]`.
    InvalidChar {
        /// The first such character.
        ch: char,
        /// Its byte offset.
        index: usize,
    },
    /// The key starts with `.` (reserved for the store's own files; this also
    /// rejects `.` and `..`).
    LeadingDot,
    /// The key ends with `.`.
    TrailingDot,
    /// The key is a Windows device name, with or without an extension.
    Reserved,
}

impl fmt::Display for KeyErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyErrorKind::Empty => f.write_str("empty"),
            KeyErrorKind::TooLong { len } => {
                write!(f, "{len} bytes long, the limit is {MAX_KEY_LEN}")
            }
            KeyErrorKind::InvalidChar { ch, index } => {
                write!(f, "character {ch:?} at byte {index} is not in [A-Za-z0-9._-]")
            }
            KeyErrorKind::LeadingDot => {
                f.write_str("starts with '.', which is reserved for the store's own files")
            }
            KeyErrorKind::TrailingDot => f.write_str("ends with '.'"),
            KeyErrorKind::Reserved => f.write_str("is a reserved device name"),
        }
    }
}
