//! Processes that fork: what a child inherits from its parent, and the one
//! call that makes it safe.
//!
//! A worker pool that forks (Celery's prefork pool, Python's
//! `multiprocessing` with the `fork` start method, a Rust server that
//! forks workers) gives each child a copy of the parent's memory and
//! descriptors: the locks a parent thread holds at that instant, the
//! connections to a database, an async runtime whose threads did not come
//! along. Used from the child, any of them breaks the parent (a session
//! two processes write to, a lock the child releases for the parent) or
//! the child (a runtime with no threads hangs).
//!
//! The rule: in the child, call [`after_fork_in_child`] before using the
//! library. After it,
//!
//! - a [`KeyLock`](crate::KeyLock) the child inherited reports that it is
//!   not held ([`KeyLock::is_held`](crate::KeyLock::is_held)); dropping it
//!   in the child closes the child's copy of its descriptor and never
//!   releases the parent's lock;
//! - every lock the parent holds stays the parent's, and is free for the
//!   child to take once the parent releases it (a lock is released by
//!   unlocking it, not only by closing it, so the child's copy of the
//!   descriptor does not keep it held);
//! - remote backends abandon the connections (and an object store the
//!   runtime and client) inherited from the parent, without using or
//!   closing them, and open their own on first use.
//!
//! The Python package calls it for you (`os.register_at_fork`).
//!
//! ```
//! // In a Rust program that forks, first thing in the child:
//! safestash::fork::after_fork_in_child();
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

/// Bumped in every forked child; what a process holds is tagged with the
/// generation it was opened in.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Tells the library that this process is a child forked from the process
/// that opened what it holds: inherited locks are no longer held here, and
/// inherited connections and runtimes are abandoned and reopened on first
/// use. Call it in the child, right after `fork` (the Python package does,
/// through `os.register_at_fork`). It is cheap and may be called again.
///
/// # Examples
///
/// ```standalone_crate
/// # let dir = tempfile::tempdir()?;
/// let store = safestash::Store::open(dir.path())?;
/// let lock = store.lock(&safestash::StashKey::new("k")?)?;
/// assert!(lock.is_held());
/// // (in a forked child:)
/// safestash::fork::after_fork_in_child();
/// assert!(!lock.is_held()); // the parent's, not this process's
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn after_fork_in_child() {
    GENERATION.fetch_add(1, Ordering::SeqCst);
}

/// The current fork generation: what was opened in an earlier one was
/// inherited from a parent.
pub(crate) fn generation() -> u64 {
    GENERATION.load(Ordering::SeqCst)
}
