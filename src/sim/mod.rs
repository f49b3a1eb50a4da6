//! `SimFs`: an in-memory filesystem that models power loss and I/O faults.
//!
//! Enabled by the `sim` feature. It implements the store's [`Fs`] seam and
//! keeps, like SQLite's crash VFS and redb's crash backend, two images of
//! everything:
//!
//! - for every file, its **live** bytes (what reads see now) and its
//!   **durable** bytes (what survives a power cut): [`Fs::sync_file`] copies
//!   live to durable; closing a file syncs nothing;
//! - for every directory, its **durable** entries and the **pending** entry
//!   operations (create, rename, remove) made since its last
//!   [`Fs::sync_dir`], which makes them durable.
//!
//! Every call (each `write` and `read` included) gets a sequence number, and
//! a fault can be set at any of them: a power cut after call *k*
//! ([`SimFs::crash_after`]), after which every call fails and changes nothing,
//! or an I/O error at call *k*, once or from then on ([`SimFs::fail_at`]).
//! [`SimFs::for_each_crash_image`] then produces every state the disk could
//! be in after the power cut:
//!
//! - each directory keeps any in-order prefix of its pending operations;
//! - each unsynced 512-byte sector of a file is kept, dropped (old bytes, or
//!   zeros past the old end), or replaced by garbage;
//! - each unsynced file's size is its old or its new size.
//!
//! Only what a store does is modelled: renames within one directory, no
//! directory removal, no symlinks, appending writes to new files.
//!
//! The module is in three parts: the simulated disk itself (live and
//! durable images, the call counter that applies faults), the store's
//! [`Fs`] seam over it ([`SimFile`], [`SimReader`], [`SimLock`]), and the
//! enumeration of crash images (what a power cut may leave).
//!
//! # Examples
//!
//! ```
//! use safestash::sim::SimFs;
//! use safestash::{StashKey, Store};
//!
//! let fs = SimFs::new();
//! let store = Store::with_fs("/stashes", fs.clone())?;
//! let key = StashKey::new("k")?;
//! store.save(&key, &1)?;
//!
//! // Cut the power during a second save, after its 5th call.
//! let start = fs.calls();
//! fs.crash_after(start + 5);
//! assert!(store.save(&key, &2).is_err());
//! let mut outcomes = std::collections::BTreeSet::new();
//! fs.for_each_crash_image(|image| {
//!     let store = Store::with_fs("/stashes", image).unwrap();
//!     outcomes.insert(store.load::<i32>(&key).unwrap().map(|s| s.into_value()));
//! });
//! assert_eq!(outcomes, [Some(1)].into()); // the old value, in every image
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod image;
mod seam;
mod state;

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

#[cfg(doc)]
use crate::fs::Fs;

pub use seam::{SimFile, SimLock, SimReader};
pub use state::Call;
use state::{Dir, Entry, Fault, Inode, State, not_found};

/// The sector size of the crash model.
///
/// # Examples
///
/// ```
/// assert_eq!(safestash::sim::SECTOR, 512);
/// ```
pub const SECTOR: usize = 512;
/// Files with more unsynced sectors than this get a representative set of
/// sector choices instead of every combination.
///
/// # Examples
///
/// ```
/// assert_eq!(safestash::sim::MAX_EXHAUSTIVE_SECTORS, 6);
/// ```
pub const MAX_EXHAUSTIVE_SECTORS: usize = 6;

/// An in-memory filesystem with power-cut and fault simulation. Clones share
/// one state; [`fork`](SimFs::fork) copies it.
///
/// # Examples
///
/// See the [module documentation](self).
#[derive(Clone)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for SimFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.lock();
        f.debug_struct("SimFs").field("calls", &s.seq).field("fault", &s.fault).finish()
    }
}

impl Default for SimFs {
    fn default() -> SimFs {
        SimFs::new()
    }
}

impl SimFs {
    /// An empty filesystem holding only the durable root directory `/`.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(safestash::sim::SimFs::new().calls(), 0);
    /// ```
    pub fn new() -> SimFs {
        SimFs { state: Arc::new(Mutex::new(State::new())) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// An independent copy of this filesystem, faults and log included.
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::sim::SimFs;
    /// let a = SimFs::new();
    /// a.write_durable("/x", b"1")?;
    /// let b = a.fork();
    /// b.write_durable("/x", b"2")?;
    /// assert_eq!(a.read("/x").unwrap(), b"1");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn fork(&self) -> SimFs {
        SimFs { state: Arc::new(Mutex::new(self.lock().clone())) }
    }

    /// How many calls have been made (the last sequence number).
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::{fs::Fs, sim::SimFs};
    /// let fs = SimFs::new();
    /// fs.metadata("/x".as_ref())?;
    /// assert_eq!(fs.calls(), 1);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn calls(&self) -> u64 {
        self.lock().seq
    }

    /// Every call made so far.
    ///
    /// # Examples
    ///
    /// See [`Call`].
    pub fn log(&self) -> Vec<Call> {
        self.lock().log.clone()
    }

    /// Cuts the power after call number `k`: calls `k + 1` and later fail
    /// and change nothing. Use [`for_each_crash_image`](SimFs::for_each_crash_image)
    /// to see what survived.
    ///
    /// # Examples
    ///
    /// See the [module documentation](self).
    pub fn crash_after(&self, k: u64) {
        self.lock().fault = Fault::CrashAfter(k);
    }

    /// Makes call number `k` fail with an I/O error, and with `persistent`
    /// every call after it too.
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::{fs::Fs, sim::SimFs};
    /// let fs = SimFs::new();
    /// fs.fail_at(1, false);
    /// assert!(fs.metadata("/x".as_ref()).is_err());
    /// assert!(fs.metadata("/x".as_ref()).is_ok());
    /// ```
    pub fn fail_at(&self, k: u64, persistent: bool) {
        self.lock().fault = Fault::FailAt { seq: k, persistent };
    }

    /// Removes any fault and restores power.
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::{fs::Fs, sim::SimFs};
    /// let fs = SimFs::new();
    /// fs.crash_after(0);
    /// assert!(fs.metadata("/x".as_ref()).is_err());
    /// fs.clear_faults();
    /// assert!(fs.metadata("/x".as_ref()).is_ok());
    /// ```
    pub fn clear_faults(&self) {
        let mut s = self.lock();
        s.fault = Fault::None;
        s.frozen = false;
    }

    /// Whether the power was cut.
    ///
    /// # Examples
    ///
    /// ```
    /// let fs = safestash::sim::SimFs::new();
    /// assert!(!fs.is_crashed());
    /// ```
    pub fn is_crashed(&self) -> bool {
        self.lock().frozen
    }

    /// Creates or replaces the file `path` with `bytes`, durably, without
    /// counting a call (for setting up a test: a planted file, a stale temp).
    ///
    /// # Errors
    ///
    /// `NotFound` when the parent directory does not exist.
    ///
    /// # Examples
    ///
    /// ```
    /// let fs = safestash::sim::SimFs::new();
    /// fs.write_durable("/garbage", b"not a stash")?;
    /// assert_eq!(fs.read("/garbage").unwrap(), b"not a stash");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn write_durable(&self, path: impl AsRef<Path>, bytes: &[u8]) -> io::Result<()> {
        let mut s = self.lock();
        match s.lookup(path.as_ref()) {
            Some(Entry::File(inode)) => {
                s.inodes[inode] = Inode { durable: bytes.to_vec(), live: bytes.to_vec() };
            }
            Some(Entry::Dir) => return Err(io::ErrorKind::IsADirectory.into()),
            None => {
                s.new_file(path.as_ref(), bytes.to_vec(), true)?;
            }
        }
        Ok(())
    }

    /// Creates the directory `path` (and parents) durably, without counting
    /// a call.
    ///
    /// # Errors
    ///
    /// `AlreadyExists` when a file is in the way.
    ///
    /// # Examples
    ///
    /// ```
    /// let fs = safestash::sim::SimFs::new();
    /// fs.mkdir_durable("/a/b")?;
    /// assert!(fs.list("/a").contains(&"b".to_owned()));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn mkdir_durable(&self, path: impl AsRef<Path>) -> io::Result<()> {
        let mut s = self.lock();
        let mut todo = Vec::new();
        let mut cur = path.as_ref();
        while !s.dirs.contains_key(cur) {
            todo.push(cur.to_owned());
            cur = cur.parent().ok_or_else(not_found)?;
        }
        for dir in todo.into_iter().rev() {
            let (parent, name) = s.split(&dir)?;
            if s.dirs[&parent].live.contains_key(name) {
                return Err(io::ErrorKind::AlreadyExists.into());
            }
            let p = s.dir_mut(&parent);
            p.durable.insert(name.to_owned(), Entry::Dir);
            p.live.insert(name.to_owned(), Entry::Dir);
            s.dirs.insert(dir, Dir::default());
        }
        Ok(())
    }

    /// Overwrites the existing file `path` in place with `bytes` (truncate
    /// and write, nothing synced), counted as one call. No correct store
    /// does this; it exists to build broken protocols as negative controls.
    ///
    /// # Errors
    ///
    /// `NotFound` when there is no file, or the injected fault.
    ///
    /// # Examples
    ///
    /// ```
    /// let fs = safestash::sim::SimFs::new();
    /// fs.write_durable("/f", b"old")?;
    /// fs.overwrite_in_place("/f", b"new")?;
    /// assert_eq!(fs.read("/f").unwrap(), b"new");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn overwrite_in_place(&self, path: impl AsRef<Path>, bytes: &[u8]) -> io::Result<()> {
        let mut s = self.lock();
        s.call("overwrite_in_place", path.as_ref())?;
        match s.lookup(path.as_ref()) {
            Some(Entry::File(inode)) => {
                s.inodes[inode].live = bytes.to_vec();
                Ok(())
            }
            _ => Err(not_found()),
        }
    }

    /// Makes the file `path` durable, counted as a `sync_file` call: the
    /// second half of [`overwrite_in_place`](SimFs::overwrite_in_place).
    ///
    /// # Errors
    ///
    /// `NotFound` when there is no file, or the injected fault.
    ///
    /// # Examples
    ///
    /// ```
    /// let fs = safestash::sim::SimFs::new();
    /// fs.write_durable("/f", b"old")?;
    /// fs.overwrite_in_place("/f", b"new")?;
    /// fs.sync_in_place("/f")?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn sync_in_place(&self, path: impl AsRef<Path>) -> io::Result<()> {
        let mut s = self.lock();
        s.call("sync_file", path.as_ref())?;
        match s.lookup(path.as_ref()) {
            Some(Entry::File(inode)) => {
                let node = &mut s.inodes[inode];
                node.durable = node.live.clone();
                Ok(())
            }
            _ => Err(not_found()),
        }
    }

    /// The live bytes of the file `path`, without counting a call.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(safestash::sim::SimFs::new().read("/none").is_none());
    /// ```
    pub fn read(&self, path: impl AsRef<Path>) -> Option<Vec<u8>> {
        let s = self.lock();
        match s.lookup(path.as_ref())? {
            Entry::File(inode) => Some(s.inodes[inode].live.clone()),
            Entry::Dir => None,
        }
    }

    /// The live entry names of the directory `dir`, sorted, without counting
    /// a call (empty if there is no such directory).
    ///
    /// # Examples
    ///
    /// ```
    /// let fs = safestash::sim::SimFs::new();
    /// fs.write_durable("/b", b"")?;
    /// fs.write_durable("/a", b"")?;
    /// assert_eq!(fs.list("/"), ["a", "b"]);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn list(&self, dir: impl AsRef<Path>) -> Vec<String> {
        let s = self.lock();
        s.dirs
            .get(dir.as_ref())
            .map(|d| d.live.keys().map(|n| n.to_string_lossy().into_owned()).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::SimFs;
    use crate::fs::Fs;

    #[test]
    fn crash_freezes_and_fail_at_injects() {
        let fs = SimFs::new();
        fs.crash_after(1);
        assert!(fs.create_dir(Path::new("/a")).is_ok());
        assert!(fs.create_dir(Path::new("/b")).is_err());
        assert!(fs.is_crashed());
        assert_eq!(fs.list("/"), ["a"]);
        let fs = SimFs::new();
        fs.fail_at(2, true);
        assert!(fs.create_dir(Path::new("/a")).is_ok());
        assert!(fs.create_dir(Path::new("/b")).is_err());
        assert!(fs.create_dir(Path::new("/c")).is_err());
        assert_eq!(fs.log().iter().filter(|c| c.failed).count(), 2);
    }
}
