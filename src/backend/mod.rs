//! Where envelopes live, when not in a local directory: the [`Backend`]
//! seam, at the level of stashes.
//!
//! A backend keeps opaque envelope bytes under keys, inside a namespace. It
//! knows where bytes live, not what they mean: the store encodes and
//! verifies envelopes (the same v1 format, checksum included, as a stash
//! file) and hands a backend finished bytes and their digest. What a backend
//! must give the store:
//!
//! - [`put`](Backend::put): atomic and durable when it returns `Ok`, under a
//!   [`Precondition`] checked atomically with the write;
//! - [`get`](Backend::get): the bytes as a reader, and their length;
//! - [`delete`](Backend::delete): under a [`Precondition`], durable;
//! - [`list`](Backend::list): every name with its size and the first bytes
//!   (the envelope's header);
//! - [`lock`](Backend::lock): a per-key exclusive lock where the backend has
//!   one (an object store has none and says so with
//!   [`has_locks`](Backend::has_locks));
//! - [`move_aside`](Backend::move_aside): quarantine under another name.
//!
//! The trait is object-safe and boxed (`Arc<dyn Backend>`), so
//! [`Store`](crate::Store) is not generic over it: a caller never names a
//! backend in its types, and every verb of the store is written once,
//! against this trait. Plug one in with
//! [`Store::with_backend`](crate::Store::with_backend).
//!
//! Backends: [`Directory`] (the local directory, over the
//! [`Fs`](crate::fs::Fs) seam, so the crash simulator sees every call);
//! `postgres` (feature `postgres`), in `safestash::backend::postgres`;
//! `object_store` (feature `object-store`), in `safestash::backend::object_store`;
//! `mysql` (feature `mysql`: MySQL and MariaDB), in `safestash::backend::mysql`.

use std::fmt;
use std::io::{Read, Write};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::fs::FileKind;
use crate::key::StashKey;

mod batch;
pub mod directory;
#[cfg(any(feature = "postgres", feature = "mysql"))]
mod redact;

pub use directory::{Directory, FLUSH_GROUP};

#[cfg(feature = "mysql")]
pub mod mysql;
#[cfg(feature = "object-store")]
pub mod object_store;
#[cfg(feature = "postgres")]
pub mod postgres;

/// What a conditional save ([`Store::save_if`](crate::Store::save_if)), or
/// a backend's [`put`](Backend::put) or [`delete`](Backend::delete),
/// expects at the key, checked atomically with the change.
///
/// # Examples
///
/// ```
/// use safestash::Precondition;
///
/// let d = safestash::Digest::of(b"x");
/// assert_ne!(Precondition::Absent, Precondition::Unchanged(d));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Anything, or nothing: a plain save.
    Any,
    /// No stash: create only.
    Absent,
    /// The stash with this digest (from a [`Receipt`](crate::Receipt) or a
    /// loaded stash's [`StashMeta`](crate::StashMeta)): change only what
    /// the caller has seen.
    Unchanged(Digest),
}

/// What [`Backend::put_with`] calls to write an envelope into the
/// backend's sink; it returns the envelope's digest.
pub type Fill<'a> = dyn FnMut(&mut dyn Write) -> Result<Digest> + 'a;

/// The result of a conditional change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done: written, or removed.
    Done,
    /// Nothing to do: a delete found no envelope.
    Missing,
    /// The condition failed; nothing changed. `current` is the digest of
    /// the envelope in place, if there is one.
    Refused {
        /// The digest recorded with the envelope in place, if any.
        current: Option<Digest>,
    },
}

/// An envelope read back by [`Backend::get`].
pub struct Fetched {
    /// Its length in bytes.
    pub len: u64,
    /// Its bytes.
    pub reader: Box<dyn Read + Send>,
}

impl fmt::Debug for Fetched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fetched").field("len", &self.len).finish_non_exhaustive()
    }
}

/// One name in a backend's namespace, from [`Backend::list`].
#[derive(Debug, Clone)]
pub struct Listed {
    /// The name (a stash key, or a name the store gave a quarantined stash).
    pub name: String,
    /// The stored length in bytes.
    pub len: u64,
    /// The first bytes of the envelope (at most what `list` was asked for).
    pub head: Vec<u8>,
}

/// One stash of a [`Backend::put_batch`].
pub struct BatchPut<'a> {
    /// Its key.
    pub key: &'a StashKey,
    /// What must be at the key for the put to happen.
    pub cond: Precondition,
    /// Writes the whole envelope into the sink it is given and returns its
    /// digest. It may be called more than once (a check pass, then the
    /// write), and from other threads; it writes the same bytes each time.
    pub fill: &'a (dyn Fn(&mut dyn Write) -> Result<Digest> + Sync),
}

impl fmt::Debug for BatchPut<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchPut")
            .field("key", &self.key)
            .field("cond", &self.cond)
            .finish_non_exhaustive()
    }
}

/// What a [`Backend::put_batch`] did.
#[derive(Debug)]
pub struct BatchOutcome {
    /// One per put, in order: `Some(Done)` when it is durable,
    /// `Some(Refused)` when its condition failed, `None` when it was not
    /// made (or not acknowledged).
    pub outcomes: Vec<Option<Outcome>>,
    /// The error that stopped the batch, and the index of the put it
    /// stopped at.
    pub failed: Option<(usize, Error)>,
}

impl BatchOutcome {
    /// The outcome of puts made in order that stopped at the first that
    /// failed or was refused: `results` holds one result for each put
    /// made, a prefix of `len` puts.
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::backend::{BatchOutcome, Outcome};
    ///
    /// let out = BatchOutcome::of_prefix(3, vec![Ok(Outcome::Done), Ok(Outcome::Refused { current: None })]);
    /// assert_eq!(out.outcomes, [Some(Outcome::Done), Some(Outcome::Refused { current: None }), None]);
    /// assert!(out.failed.is_none());
    /// ```
    pub fn of_prefix(len: usize, results: Vec<Result<Outcome>>) -> BatchOutcome {
        let mut out = BatchOutcome { outcomes: vec![None; len], failed: None };
        for (i, r) in results.into_iter().enumerate().take(len) {
            match r {
                Ok(o) => out.outcomes[i] = Some(o),
                Err(e) => {
                    out.failed = Some((i, e));
                    break;
                }
            }
        }
        out
    }
}

/// One entry of a backend's namespace, from [`Backend::entries`].
#[derive(Debug)]
pub struct Entry {
    /// Its name (a key, or a name the store made).
    pub name: String,
    /// What it is (a remote backend's entries are all files).
    pub kind: FileKind,
    /// Its length in bytes, when known.
    pub len: Option<u64>,
    /// Its first bytes (stashes, temp files and quarantined stashes only;
    /// empty for other entries), or why they could not be read.
    pub head: Result<Vec<u8>>,
}

/// Up to which size a verb reads an envelope whole, in memory (above it,
/// in one streaming pass): see [`Backend::whole_read`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WholeRead {
    /// For a load (whose value will be in memory anyway).
    pub load: u64,
    /// For a verify, which keeps no payload.
    pub verify: u64,
}

/// A place that keeps envelopes: one namespace of a shared service.
///
/// Implementations are cheap to share (`Arc<dyn Backend>`) and safe to use
/// from many threads. Every method names the stash or store in its errors
/// ([`Error::Backend`]).
pub trait Backend: Send + Sync + fmt::Debug {
    /// The namespace's location for messages and [`Store::dir`](crate::Store::dir),
    /// with no secret in it (a URL without its password).
    fn location(&self) -> &str;

    /// Stores `envelope` (whose digest is `digest`) under `key`, replacing
    /// what is there, if `cond` holds: atomically (readers see the old
    /// envelope or the new one) and durably once it returns
    /// [`Outcome::Done`].
    ///
    /// # Errors
    ///
    /// When the service fails; the previous envelope is then intact.
    fn put(
        &self,
        key: &StashKey,
        envelope: &[u8],
        digest: &Digest,
        cond: Precondition,
    ) -> Result<Outcome>;

    /// As [`put`](Backend::put), with the envelope streamed: `fill` writes
    /// the whole envelope into the sink it is given, once, and returns its
    /// digest. A backend that can take an envelope larger than memory
    /// (chunked rows, a multipart upload) overrides this; the default
    /// collects the envelope in memory and calls `put`. If `fill` fails,
    /// nothing is stored and its error is returned.
    ///
    /// # Errors
    ///
    /// `fill`'s error, or as [`put`](Backend::put).
    fn put_with(&self, key: &StashKey, cond: Precondition, fill: &mut Fill<'_>) -> Result<Outcome> {
        let mut envelope = Vec::new();
        let digest = fill(&mut envelope)?;
        self.put(key, &envelope, &digest, cond)
    }

    /// The envelope under `key`, or `None`.
    ///
    /// # Errors
    ///
    /// When the service fails.
    fn get(&self, key: &StashKey) -> Result<Option<Fetched>>;

    /// Removes the envelope under `key` if `cond` holds; durable once it
    /// returns.
    ///
    /// # Errors
    ///
    /// When the service fails.
    fn delete(&self, key: &StashKey, cond: Precondition) -> Result<Outcome>;

    /// Every name in the namespace, sorted, with its length and its first
    /// `head_len` bytes.
    ///
    /// # Errors
    ///
    /// When the service fails.
    fn list(&self, head_len: usize) -> Result<Vec<Listed>>;

    /// Whether [`lock`](Backend::lock) gives exclusive per-key locks.
    fn has_locks(&self) -> bool;

    /// Takes `key`'s exclusive lock, waiting (within the backend's
    /// documented timeout) if `wait`; `None` when another holder has it.
    /// Changes made through [`Held::backend`] run under the lock; other
    /// holders' changes to the key wait for it.
    ///
    /// # Errors
    ///
    /// When the service fails, or the wait times out
    /// ([`Error::Locked`]).
    fn lock(&self, key: &StashKey, wait: bool) -> Result<Option<Box<dyn Held>>>;

    /// Moves the envelope under `key` to the name `aside` (which the store
    /// made, and which is never a valid key), durably; `false` when nothing
    /// was under `key`.
    ///
    /// # Errors
    ///
    /// When the service fails, or something is already at `aside`.
    fn move_aside(&self, key: &StashKey, aside: &str) -> Result<bool>;

    /// The backend of the child namespace `ns` (a valid key), sharing this
    /// one's connections.
    fn child(&self, ns: &str) -> Box<dyn Backend>;

    /// The child namespaces that hold anything, sorted.
    ///
    /// # Errors
    ///
    /// When the service fails.
    fn children(&self) -> Result<Vec<String>>;

    /// Puts every stash of a [`Batch`](crate::Batch), in order, and stops
    /// at the first that fails or is refused (puts already made stay
    /// made). The default checks every envelope first (a value that does
    /// not serialize stops the batch before anything is written), then
    /// puts each as [`put`](Backend::put) does,
    /// [`concurrent_puts`](Backend::concurrent_puts) at a time. A backend
    /// that can do better overrides it: the directory writes every temp
    /// file before the first rename and flushes once.
    fn put_batch(&self, puts: &[BatchPut<'_>]) -> BatchOutcome {
        batch::put_each(self, puts)
    }

    /// Up to which sizes envelopes are read whole (default: 4 MiB for a
    /// load, 1 MiB for a verify); above them, one streaming pass.
    fn whole_read(&self) -> WholeRead {
        WholeRead { load: 4 << 20, verify: 1 << 20 }
    }

    /// Every entry of the namespace, sorted (only the names that are keys
    /// when `stashes_only`), with the first `head_len` bytes of each. The
    /// default lists [`list`](Backend::list)'s names as files.
    ///
    /// # Errors
    ///
    /// When the service fails.
    fn entries(&self, head_len: usize, stashes_only: bool) -> Result<Vec<Entry>> {
        Ok(self
            .list(head_len)?
            .into_iter()
            .filter(|l| !stashes_only || StashKey::new(l.name.as_str()).is_ok())
            .map(|l| Entry {
                name: l.name,
                kind: FileKind::File,
                len: Some(l.len),
                head: Ok(l.head),
            })
            .collect())
    }

    /// The entry `name` alone, as [`entries`](Backend::entries) would
    /// give it (the default lists them all and picks it).
    ///
    /// # Errors
    ///
    /// When the service fails.
    fn entry(&self, name: &str, head_len: usize) -> Result<Option<Entry>> {
        Ok(self.entries(head_len, false)?.into_iter().find(|e| e.name == name))
    }

    /// Whether another holder has `key`'s lock (the default asks for it
    /// without waiting, and lets it go).
    ///
    /// # Errors
    ///
    /// When the service fails.
    fn is_locked(&self, key: &StashKey) -> Result<bool> {
        Ok(self.lock(key, false)?.is_none())
    }

    /// Moves `key`'s envelope aside under `base` (or a name made from it
    /// if `base` is taken) and returns the name used; `None` when nothing
    /// was under `key`. The default is [`move_aside`](Backend::move_aside)
    /// to `base`.
    ///
    /// # Errors
    ///
    /// As [`move_aside`](Backend::move_aside).
    fn quarantine(&self, key: &StashKey, base: &str) -> Result<Option<String>> {
        Ok(self.move_aside(key, base)?.then(|| base.to_owned()))
    }

    /// How many puts of one [`Batch`](crate::Batch) may run at once (each
    /// on its own thread, each still its own atomic, conditional write).
    /// The default, 1: in order, one at a time.
    fn concurrent_puts(&self) -> usize {
        1
    }

    /// Removes what interrupted or replaced saves left behind that nothing
    /// names any more (an object store's unreferenced data objects, once
    /// older than its grace period), and returns the names removed,
    /// relative to the namespace. The default: nothing to remove (a save
    /// that is one transaction leaves nothing behind).
    ///
    /// # Errors
    ///
    /// When the service fails; what was removed before stays removed.
    fn cleanup(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
}

/// A held per-key lock of a [`Backend`]; released when dropped, and by the
/// service when the holder's connection ends.
pub trait Held: Send + Sync + fmt::Debug {
    /// The backend as seen by the lock's holder: its changes run under the
    /// lock (on PostgreSQL, on the session that holds it).
    fn backend(&self) -> &dyn Backend;
}
