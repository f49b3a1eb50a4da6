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
//!   [`Condition`] checked atomically with the write;
//! - [`get`](Backend::get): the bytes as a reader, and their length;
//! - [`delete`](Backend::delete): under a [`Condition`], durable;
//! - [`list`](Backend::list): every name with its size and the first bytes
//!   (the envelope's header);
//! - [`lock`](Backend::lock): a per-key exclusive lock where the backend has
//!   one (an object store has none and says so with
//!   [`has_locks`](Backend::has_locks));
//! - [`move_aside`](Backend::move_aside): quarantine under another name.
//!
//! The trait is object-safe and boxed (`Arc<dyn Backend>`), so
//! [`Store`](crate::Store) is not generic over it: a caller never names a
//! backend in its types. The local directory is not a `Backend`: it keeps
//! its own code path over [`Fs`](crate::fs::Fs), so its syscalls (and the
//! crash simulator's view of them) are exactly those of the directory
//! protocol, with nothing in between.
//!
//! Backends: `postgres` (feature `postgres`), in `safestash::backend::postgres`;
//! `object_store` (feature `object-store`), in `safestash::backend::object_store`.

use std::fmt;
use std::io::{Read, Write};

use crate::digest::Digest;
use crate::error::Result;
use crate::key::StashKey;

#[cfg(feature = "object-store")]
pub mod object_store;
#[cfg(feature = "postgres")]
pub mod postgres;

/// What a conditional [`put`](Backend::put) or [`delete`](Backend::delete)
/// expects at the key, checked atomically with the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// Anything, or nothing.
    Any,
    /// Nothing: create only.
    Absent,
    /// The envelope with this digest: change only what the caller has seen.
    Unchanged(Digest),
}

/// What [`Backend::put_with`] calls to write an envelope into the
/// backend's sink; it returns the envelope's digest.
pub type Fill<'a> = dyn FnMut(&mut dyn Write) -> Result<Digest> + 'a;

/// One stash of a [`Backend::put_batch`]: where, under which condition,
/// and what writes its envelope (as [`Backend::put_with`]'s `fill`).
pub struct BatchPut<'a, 'f> {
    /// The key.
    pub key: &'a StashKey,
    /// What must be there for the stash to be written.
    pub cond: Condition,
    /// Writes the envelope into the sink it is given, once, and returns
    /// its digest.
    pub fill: &'a mut Fill<'f>,
}

impl fmt::Debug for BatchPut<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchPut")
            .field("key", &self.key)
            .field("cond", &self.cond)
            .finish_non_exhaustive()
    }
}

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

/// A place that keeps envelopes: one namespace of a shared service.
///
/// Implementations are cheap to share (`Arc<dyn Backend>`) and safe to use
/// from many threads. Every method names the stash or store in its errors
/// ([`Error::Backend`](crate::Error::Backend)).
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
        cond: Condition,
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
    fn put_with(&self, key: &StashKey, cond: Condition, fill: &mut Fill<'_>) -> Result<Outcome> {
        let mut envelope = Vec::new();
        let digest = fill(&mut envelope)?;
        self.put(key, &envelope, &digest, cond)
    }

    /// Puts the stashes of one [`Batch`](crate::Batch), in order, each
    /// under its condition, stopping at the first that fails or is
    /// refused: the results are those of a prefix of `items`, one each,
    /// every one but the last `Ok(Outcome::Done)`; the last is the failure
    /// or the refusal, if there was one. The stashes before a refusal are
    /// saved; the refused one and those after it are not.
    ///
    /// The default puts each with [`put_with`](Backend::put_with), each its
    /// own atomic, durable write. A backend may do better: PostgreSQL
    /// writes them all in one transaction (one durable commit). Where a
    /// failure (not a refusal) undoes every stash of the batch, the result
    /// is that one failure, as the first stash's, its error naming the key
    /// where it happened.
    ///
    /// ```
    /// use safestash::backend::{Backend, BatchPut, Condition, Outcome};
    /// # fn demo(backend: &dyn Backend, a: &safestash::StashKey, b: &safestash::StashKey,
    /// #         envelope: &[u8], digest: safestash::Digest) {
    /// let mut fill_a = |w: &mut dyn std::io::Write| {
    ///     w.write_all(envelope).unwrap();
    ///     Ok(digest)
    /// };
    /// let mut fill_b = |w: &mut dyn std::io::Write| {
    ///     w.write_all(envelope).unwrap();
    ///     Ok(digest)
    /// };
    /// let mut items = [
    ///     BatchPut { key: a, cond: Condition::Any, fill: &mut fill_a },
    ///     BatchPut { key: b, cond: Condition::Absent, fill: &mut fill_b },
    /// ];
    /// let results = backend.put_batch(&mut items);
    /// assert!(results.len() <= 2);
    /// assert!(results.iter().take(results.len().saturating_sub(1))
    ///     .all(|r| matches!(r, Ok(Outcome::Done))));
    /// # }
    /// ```
    fn put_batch(&self, items: &mut [BatchPut<'_, '_>]) -> Vec<Result<Outcome>> {
        let mut results = Vec::with_capacity(items.len());
        for item in items {
            let put = self.put_with(item.key, item.cond, item.fill);
            let stop = !matches!(put, Ok(Outcome::Done | Outcome::Missing));
            results.push(put);
            if stop {
                break;
            }
        }
        results
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
    fn delete(&self, key: &StashKey, cond: Condition) -> Result<Outcome>;

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
    /// ([`Error::Locked`](crate::Error::Locked)).
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
