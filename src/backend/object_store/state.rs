//! What is at a key, as this process knows it, and the service's answers
//! classified (a conflict, a service error).

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use object_store::UpdateVersion;

use super::timeout;
use crate::digest::Digest;

/// What is at a key now (or, in [`Shared::known`](super::Shared::known), what was there when
/// this process last read or wrote it).
#[derive(Clone)]
pub(super) enum Current {
    Absent,
    /// A tombstone, and its bytes.
    Tombstone(UpdateVersion, Bytes),
    Stash {
        version: UpdateVersion,
        digest: Option<Digest>,
        /// The data object a reference names.
        data: Option<String>,
    },
}

impl Current {
    /// What `mine` leaves at a key, landed as `version`.
    pub(super) fn landed(mine: &Mine<'_>, version: UpdateVersion) -> Current {
        match mine {
            Mine::Envelope(d) => Current::Stash { version, digest: Some(*d), data: None },
            Mine::Reference(data, digest) => {
                Current::Stash { version, digest: *digest, data: Some((*data).to_owned()) }
            }
            Mine::Tombstone(m) => Current::Tombstone(version, Bytes::copy_from_slice(m)),
        }
    }

    pub(super) fn version(&self) -> Option<&UpdateVersion> {
        match self {
            Current::Absent => None,
            Current::Tombstone(v, _) | Current::Stash { version: v, .. } => Some(v),
        }
    }

    pub(super) fn digest(&self) -> Option<Digest> {
        match self {
            Current::Stash { digest, .. } => *digest,
            _ => None,
        }
    }

    /// Whether this is what `mine` wrote: a writer whose answer was lost,
    /// or whose retry met its own earlier landing, recognises it.
    pub(super) fn is(&self, mine: &Mine<'_>) -> bool {
        match (self, mine) {
            (Current::Tombstone(_, bytes), Mine::Tombstone(m)) => bytes.as_ref() == *m,
            (Current::Stash { data: Some(d), .. }, Mine::Reference(m, _)) => d == m,
            (Current::Stash { data: None, digest, .. }, Mine::Envelope(m)) => *digest == Some(*m),
            _ => false,
        }
    }
}

/// What a write puts at a key, as its writer recognises it when read back.
pub(super) enum Mine<'a> {
    /// An envelope with this digest.
    Envelope(Digest),
    /// A reference naming this data object (and the envelope's digest,
    /// from its trailer).
    Reference(&'a str, Option<Digest>),
    /// This tombstone.
    Tombstone(&'a [u8]),
}

/// A quarantine that could not finish: the copy aside stays.
#[derive(Debug)]
pub(super) struct KeptAside {
    pub(super) aside: String,
    pub(super) source: object_store::Error,
}

impl fmt::Display for KeptAside {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the key could not be cleared (the answer may have been lost); \
             the copy set aside at `{}` stays",
            self.aside
        )
    }
}

impl std::error::Error for KeptAside {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

pub(super) fn is_conflict(e: &object_store::Error) -> bool {
    matches!(
        e,
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }
    )
}

/// The source of an [`Error::Backend`] for a failed request: the
/// service's error, or the timeout itself when the request got no answer
/// in time (not wrapped in `object_store`'s generic error, which would say
/// it twice).
pub(crate) fn service_error(e: object_store::Error) -> crate::error::BoxError {
    match e {
        object_store::Error::Generic { source, .. } if source.is::<timeout::TimedOut>() => source,
        e => e.into(),
    }
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

pub(super) trait FromMeta {
    fn from_meta(meta: &object_store::ObjectMeta) -> Self;
}

impl FromMeta for UpdateVersion {
    fn from_meta(meta: &object_store::ObjectMeta) -> UpdateVersion {
        UpdateVersion { e_tag: meta.e_tag.clone(), version: meta.version.clone() }
    }
}
