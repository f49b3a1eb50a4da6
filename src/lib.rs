//! Stash data durably on disk before a destructive operation, and get it back
//! verified when the rebuild fails.
//!
//! # Motivation
//!
//! Code that drops a table to reload it, deletes records to resync them, or
//! overwrites state to redeploy it, destroys something before it rebuilds it.
//! The usual safety net is a file written on the side:
//!
//! ```no_run
//! # let labels = vec!["amount"];
//! // Looks safe; is not.
//! std::fs::write("stash.json.tmp", serde_json::to_vec(&labels)?)?;
//! std::fs::rename("stash.json.tmp", "stash.json")?;
//! // ... drop the table, reload, crash ...
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Nothing was fsynced, so after a power cut `stash.json` can be empty or hold
//! half the data; a damaged file reads as "no stash" or as wrong data; the
//! fixed `.tmp` name lets two workers tear each other's writes; and nothing
//! records whose stash it is or how old. `safestash` does it right:
//!
//! ```
//! use safestash::{SaveOptions, StashKey, Store};
//!
//! let dir = tempfile::tempdir()?;
//! let store = Store::open(dir.path())?;
//! let key = StashKey::new("orders.dictionary")?;
//! let labels = vec![("amount", "Amount in EUR"), ("placed", "Order date")];
//!
//! // Durable and atomic when it returns: now it is safe to destroy.
//! store.save_with(&key, &labels, &SaveOptions::new().kind("field-dictionary").origin("job-42"))?;
//!
//! // ... drop the table, reload, fail ...
//!
//! // Verified on the way back: a damaged file is an error, never "no stash".
//! let stashed = store.load::<Vec<(String, String)>>(&key)?.expect("stash exists");
//! assert_eq!(stashed.value()[0].1, "Amount in EUR");
//! assert_eq!(stashed.meta().header.origin(), Some("job-42"));
//! store.clear(&key)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # How it works
//!
//! A store is a directory with one file per key. [`Store::save`] makes, on
//! Linux, exactly this sequence of calls:
//!
//! 1. `open(DIR/.KEY.lock, O_CREAT|O_NOFOLLOW, 0600)` and `flock(LOCK_EX)`: the
//!    key's advisory lock, held to the end. If `DIR` is missing, first `mkdir`
//!    each missing directory with mode 0700, each followed by `fsync` of its
//!    parent;
//! 2. `lstat(DIR/KEY)`: a symlink, directory or special file there is refused;
//! 3. on the first save of each store (its clones share it) only: `fsync` every ancestor of
//!    `DIR`, so the directory is durably reachable even if whoever created it
//!    (another process, an earlier failed save) crashed before syncing it;
//! 4. `open(DIR/.KEY.XXXXXXXX.tmp, O_CREAT|O_EXCL|O_CLOEXEC, 0600)` with a
//!    random name;
//! 5. `write` the envelope (header, payload streamed from the serializer in
//!    64 KiB writes, trailer with length and SHA-256), then `fsync`, `close`;
//! 6. `rename(.KEY.XXXXXXXX.tmp, KEY)`, atomically replacing any old stash;
//! 7. `fsync(DIR)`, making the rename durable, and only then returning `Ok`;
//! 8. `flock(LOCK_UN)` and `close` of the lock file: unlocked, not only
//!    closed, so a forked child's copy of the descriptor keeps nothing held
//!    ([`fork`]).
//!
//! If any step before the rename fails, the temp file is removed and the old
//! stash is untouched. [`Store::load`] opens `DIR/KEY` with `O_NOFOLLOW`,
//! reads it, and checks magic, trailer, SHA-256, version, header and key
//! before deserializing. [`Store::clear`] takes the lock, `unlink`s, and
//! `fsync`s the directory.
//!
//! # Guarantees
//!
//! - **Durable before it returns**: an `Ok` from `save` means the stash
//!   survives a power cut (steps 5–7 above).
//! - **Atomic**: after any crash `load` sees the old stash or the new one,
//!   never a mix; a temp file is never read as a stash.
//! - **Verified**: every byte is covered by the SHA-256; a damaged,
//!   truncated or foreign file is [`Error::Corrupt`], never silently absent,
//!   and [`Store::quarantine`] moves it aside for inspection.
//! - **Contained**: keys are allowlisted ([`StashKey`]); stash files are
//!   opened without following symlinks; a header naming another key is
//!   rejected.
//! - **Coordinated**: saves and clears of one key are serialized across
//!   processes by advisory locks ([`KeyLock`]); a lock holder that lost
//!   its lock on a shared store (a lease that ran out, a session that
//!   died) cannot overwrite a newer holder's update.
//! - **Fork-safe**: a forked child that calls
//!   [`fork::after_fork_in_child`] never waits on, releases or uses what
//!   its parent holds.
//!
//! # Format
//!
//! Each stash file is a version-1 envelope, readable with `head`:
//!
//! ```text
//! SAFESTASH 1
//! {"key":"orders.dictionary","kind":"field-dictionary","created":"2026-11-22T13:20:01.123456789Z","origin":"job-42","encoding":"json","writer":"safestash 0.1.0"}
//! [["amount","Amount in EUR"],["placed","Order date"]]
//! SAFESTASH-END len=00000000000000000052 sha256=<64 hex digits>
//! ```
//!
//! The byte-exact specification and version policy are in `docs/FORMAT.md`;
//! the [`envelope`] module encodes and decodes it.
//!
//! # Cargo features
//!
//! - `sim`: `sim::SimFs`, an in-memory filesystem that
//!   simulates power cuts and I/O errors, for crash-testing code built on
//!   the store.
//! - `cli`: the `safestash` operator binary (`list`, `show`, `export`,
//!   `verify`, `quarantine`, `clear`, `gc`), on clap.
//! - `postgres`: stores in PostgreSQL, opened with [`Store::open_url`]
//!   (see [`backend`]), on `tokio-postgres` driven per connection
//!   (the API stays synchronous; every call bounded by the URL's `timeout`).
//! - `postgres-tls`: `postgres` with TLS as libpq's `sslmode` says, on
//!   rustls (no system library).
//! - `object-store`: stores in S3, GCS, Azure or memory, opened with
//!   [`Store::open_url`] (`s3://bucket/prefix`, ...), on the `object_store`
//!   crate run on a private tokio runtime; the API stays synchronous.
//! - `mysql`: stores in MySQL or MariaDB (InnoDB), opened with
//!   [`Store::open_url`] (`mysql://user@host:3306/db`), on the synchronous
//!   `mysql` client; opening checks that the server flushes at every commit.
//! - `mysql-tls`: `mysql` with TLS, the `mysql` crate's rustls option.
//!
//! With no features the crate pulls in no async runtime, no HTTP stack and
//! no database client.
//!
//! # Modules
//!
//! The store core is at the crate root ([`Store`], [`StashKey`], [`Error`],
//! [`RollbackGuard`], [`Store::resume`], [`Batch`], ...). Around it:
//! [`journal`] (multi-part operations whose aggregate never lies),
//! [`reconcile`] (the destructive-plan guard for deletes),
//! [`dictionary`] (field dictionaries and type mapping for restores),
//! [`envelope`] (the format, bytes only) and [`fs`] (the I/O seam). The
//! journal and the tenant guard keep their records in reserved namespaces
//! of the store ([`Store::namespace`]), where no user key can collide with
//! them.
//!
//! # Limitations
//!
//! - POSIX only (Linux is what is tested). The durability promise relies on
//!   `fsync` of files and directories doing what POSIX says; filesystems or
//!   platforms without directory fsync (and disks that lie about flushes) do
//!   not give it.
//! - Locks are advisory `flock`s: they exclude other safestash users, not a
//!   program that writes stash files without asking. `flock` over NFS is not
//!   reliable.
//! - One lock file `.KEY.lock` per key ever saved stays in the directory
//!   (removing lock files safely needs every locker to cooperate).
//! - The store's directory path itself is trusted: if it is a symlink, it is
//!   followed. Only entries inside it are guarded.
//! - Payloads are JSON (`serde_json`); values are deserialized into memory.
//!   `load` reads files up to 256 MiB whole; larger ones are verified in a
//!   streaming pass and then deserialized from the file, so the file itself
//!   is never held in memory. `verify` streams anything over 1 MiB, and
//!   `save` streams always (hashing on a helper thread past 256 KiB).
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod backend;
pub mod dictionary;
mod digest;
pub mod envelope;
mod error;
pub mod fork;
pub mod fs;
pub mod journal;
mod key;
mod meta;
mod names;
mod observe;
mod policy;
pub mod reconcile;
mod rollback;
#[cfg(feature = "sim")]
pub mod sim;
mod store;

pub use digest::{Digest, DigestParseError};
pub use error::{BackendOp, BoxError, Corruption, Error, IoOp, ObserverError, Result};
pub use key::{KeyError, KeyErrorKind, MAX_KEY_LEN, StashKey};
pub use meta::{Receipt, SaveOptions, StashInfo, StashMeta, Stashed, VerifyReport};
pub use observe::Event;
pub use policy::{Checked, LoadPolicy};
pub use rollback::{GuardError, Restored, Resume, RollbackGuard};
pub use store::{
    Batch, BatchError, EntryName, FLUSH_GROUP, Inspected, KeyLock, Precondition, Restorer, Store,
    temp_file_key,
};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The examples of docs/RECONCILE.md, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../docs/RECONCILE.md")]
pub struct ReconcileDoctests;
