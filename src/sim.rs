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

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{self, Cursor, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::fs::{DirEntry, FileKind, Fs, Opened};

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    File(usize),
    Dir,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum DirOp {
    Create(OsString, Entry),
    Rename(OsString, OsString),
    Remove(OsString),
}

impl DirOp {
    fn apply(&self, entries: &mut BTreeMap<OsString, Entry>) {
        match self {
            DirOp::Create(name, entry) => {
                entries.insert(name.clone(), *entry);
            }
            DirOp::Rename(from, to) => {
                if let Some(entry) = entries.remove(from) {
                    entries.insert(to.clone(), entry);
                }
            }
            DirOp::Remove(name) => {
                entries.remove(name);
            }
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Dir {
    durable: BTreeMap<OsString, Entry>,
    live: BTreeMap<OsString, Entry>,
    pending: Vec<DirOp>,
}

impl Dir {
    fn push(&mut self, op: DirOp) {
        op.apply(&mut self.live);
        self.pending.push(op);
    }
}

#[derive(Debug, Clone, Default)]
struct Inode {
    durable: Vec<u8>,
    live: Vec<u8>,
}

/// A fault set on a [`SimFs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    CrashAfter(u64),
    FailAt { seq: u64, persistent: bool },
}

/// One call made to a [`SimFs`], as recorded in its [`log`](SimFs::log).
///
/// # Examples
///
/// ```
/// use safestash::sim::SimFs;
/// let fs = SimFs::new();
/// safestash::Store::with_fs("/s", fs.clone())?.save(&safestash::StashKey::new("k")?, &1)?;
/// assert_eq!(fs.log().last().unwrap().op, "sync_dir");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Call {
    /// Its sequence number, from 1.
    pub seq: u64,
    /// The operation: `create_temp`, `write`, `sync_file`, `rename`, …
    pub op: &'static str,
    /// The path it was made on.
    pub path: PathBuf,
    /// Whether it failed (an injected error or a power cut).
    pub failed: bool,
}

#[derive(Debug, Clone)]
struct State {
    dirs: BTreeMap<PathBuf, Dir>,
    inodes: Vec<Inode>,
    seq: u64,
    log: Vec<Call>,
    fault: Fault,
    frozen: bool,
    locks: BTreeSet<PathBuf>,
    next_name: u64,
}

fn power_lost() -> io::Error {
    io::Error::other("simulated power loss")
}

fn injected() -> io::Error {
    io::Error::other("simulated I/O error")
}

fn not_found() -> io::Error {
    io::ErrorKind::NotFound.into()
}

impl State {
    fn new() -> State {
        let mut dirs = BTreeMap::new();
        dirs.insert(PathBuf::from("/"), Dir::default());
        State {
            dirs,
            inodes: Vec::new(),
            seq: 0,
            log: Vec::new(),
            fault: Fault::None,
            frozen: false,
            locks: BTreeSet::new(),
            next_name: 0,
        }
    }

    /// Counts a call and applies the fault, if any.
    fn call(&mut self, op: &'static str, path: &Path) -> io::Result<()> {
        if self.frozen {
            return Err(power_lost());
        }
        let seq = self.seq + 1;
        let failed = match self.fault {
            Fault::None => false,
            Fault::CrashAfter(k) if seq > k => {
                self.frozen = true;
                return Err(power_lost());
            }
            Fault::CrashAfter(_) => false,
            Fault::FailAt { seq: at, persistent } => seq == at || (persistent && seq > at),
        };
        self.seq = seq;
        self.log.push(Call { seq, op, path: path.to_owned(), failed });
        if failed { Err(injected()) } else { Ok(()) }
    }

    /// The directory holding `path` and `path`'s name in it.
    fn split<'p>(&self, path: &'p Path) -> io::Result<(PathBuf, &'p OsStr)> {
        let name = path.file_name().ok_or_else(not_found)?;
        let parent = path.parent().ok_or_else(not_found)?;
        if !self.dirs.contains_key(parent) {
            return Err(not_found());
        }
        Ok((parent.to_owned(), name))
    }

    fn lookup(&self, path: &Path) -> Option<Entry> {
        if path == Path::new("/") {
            return Some(Entry::Dir);
        }
        let (parent, name) = self.split(path).ok()?;
        self.dirs[&parent].live.get(name).copied()
    }

    fn dir_mut(&mut self, dir: &Path) -> &mut Dir {
        self.dirs.get_mut(dir).expect("split checked the directory exists")
    }

    fn new_file(&mut self, path: &Path, bytes: Vec<u8>, durable: bool) -> io::Result<usize> {
        let (parent, name) = self.split(path)?;
        let inode = self.inodes.len();
        let durable_bytes = if durable { bytes.clone() } else { Vec::new() };
        self.inodes.push(Inode { durable: durable_bytes, live: bytes });
        let dir = self.dir_mut(&parent);
        if durable {
            dir.durable.insert(name.to_owned(), Entry::File(inode));
            dir.live.insert(name.to_owned(), Entry::File(inode));
        } else {
            dir.push(DirOp::Create(name.to_owned(), Entry::File(inode)));
        }
        Ok(inode)
    }
}

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

    /// How many images [`for_each_crash_image`](SimFs::for_each_crash_image)
    /// would produce.
    ///
    /// # Examples
    ///
    /// ```
    /// let fs = safestash::sim::SimFs::new();
    /// assert_eq!(fs.crash_image_count(), 1); // nothing pending: one image
    /// ```
    pub fn crash_image_count(&self) -> u64 {
        let s = self.lock().clone();
        let pending = pending_dirs(&s);
        let limits: Vec<usize> = pending.iter().map(|(_, n)| n + 1).collect();
        let mut cache = BTreeMap::new();
        let mut total = 0u64;
        for_each_combination(&limits, |prefixes| {
            let (_, dirty) = dir_image(&s, &pending, prefixes, &mut cache);
            let product =
                dirty.iter().map(|i| cache[i].len() as u64).fold(1u64, u64::saturating_mul);
            total = total.saturating_add(product);
        });
        total
    }

    /// Calls `f` with every state the disk could be in if the power were cut
    /// now, each as a fresh filesystem with no faults, no locks and every
    /// byte durable.
    ///
    /// # Examples
    ///
    /// See the [module documentation](self).
    pub fn for_each_crash_image(&self, mut f: impl FnMut(SimFs)) {
        self.enumerate(|state| f(SimFs { state: Arc::new(Mutex::new(state)) }));
    }

    /// One crash image chosen by `n`: each choice (how many pending
    /// operations each directory keeps, which variant each unsynced file
    /// takes) is drawn from a mix of `n`, so every image is reachable and
    /// nearby numbers give unrelated images. Costs one image, not all of
    /// them: use it where [`for_each_crash_image`](SimFs::for_each_crash_image)
    /// would be too many.
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::{fs::Fs, sim::SimFs};
    /// let fs = SimFs::new();
    /// fs.create_dir("/d".as_ref())?; // pending: the image may or may not have it
    /// let seen: std::collections::BTreeSet<bool> =
    ///     (0..20).map(|n| fs.crash_image(n).list("/").is_empty()).collect();
    /// assert_eq!(seen.len(), 2);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn crash_image(&self, n: u64) -> SimFs {
        let s = self.lock().clone();
        let mut mix = n;
        let mut draw = |limit: usize| -> usize {
            // splitmix64: every draw is a fresh, well-spread number.
            mix = mix.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = mix;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) % limit as u64) as usize
        };
        let pending = pending_dirs(&s);
        let prefixes: Vec<usize> = pending.iter().map(|(_, n)| draw(n + 1)).collect();
        let mut cache = BTreeMap::new();
        let (mut image, dirty) = dir_image(&s, &pending, &prefixes, &mut cache);
        for inode in dirty {
            let variants = &cache[&inode];
            let v = variants[draw(variants.len())].clone();
            image.inodes[inode] = Inode { durable: v.clone(), live: v };
        }
        SimFs { state: Arc::new(Mutex::new(image)) }
    }

    fn enumerate(&self, mut f: impl FnMut(State)) {
        let s = self.lock().clone();
        let pending = pending_dirs(&s);
        let limits: Vec<usize> = pending.iter().map(|(_, n)| n + 1).collect();
        let mut cache = BTreeMap::new();
        for_each_combination(&limits, |prefixes| {
            let (image, dirty) = dir_image(&s, &pending, prefixes, &mut cache);
            let counts: Vec<usize> = dirty.iter().map(|i| cache[i].len()).collect();
            for_each_combination(&counts, |choice| {
                let mut state = image.clone();
                for (inode, &c) in dirty.iter().zip(choice) {
                    let v = cache[inode][c].clone();
                    state.inodes[*inode] = Inode { durable: v.clone(), live: v };
                }
                f(state);
            });
        });
    }
}

/// Every directory with pending operations, and how many.
fn pending_dirs(s: &State) -> Vec<(PathBuf, usize)> {
    s.dirs
        .iter()
        .filter(|(_, d)| !d.pending.is_empty())
        .map(|(p, d)| (p.clone(), d.pending.len()))
        .collect()
}

/// The directory tree after a crash in which each directory in `pending`
/// kept the matching prefix of its pending operations, with only the
/// directories still reachable from the root; and the unsynced files it
/// holds, whose variants are computed into `cache`.
fn dir_image(
    s: &State,
    pending: &[(PathBuf, usize)],
    prefixes: &[usize],
    cache: &mut BTreeMap<usize, Vec<Vec<u8>>>,
) -> (State, Vec<usize>) {
    let mut image = State::new();
    image.next_name = s.next_name;
    image.inodes = s.inodes.clone();
    image.dirs.clear();
    for (path, dir) in &s.dirs {
        let mut entries = dir.durable.clone();
        if let Some(i) = pending.iter().position(|(p, _)| p == path) {
            dir.pending[..prefixes[i]].iter().for_each(|op| op.apply(&mut entries));
        }
        image.dirs.insert(
            path.clone(),
            Dir { durable: entries.clone(), live: entries, pending: Vec::new() },
        );
    }
    let reachable: BTreeSet<PathBuf> =
        image.dirs.keys().filter(|p| reachable(&image.dirs, p)).cloned().collect();
    image.dirs.retain(|p, _| reachable.contains(p));
    let files: BTreeSet<usize> = image
        .dirs
        .values()
        .flat_map(|d| d.live.values())
        .filter_map(|e| match e {
            Entry::File(i) => Some(*i),
            Entry::Dir => None,
        })
        .collect();
    let dirty: Vec<usize> =
        files.into_iter().filter(|&i| s.inodes[i].durable != s.inodes[i].live).collect();
    for &i in &dirty {
        cache.entry(i).or_insert_with(|| file_variants(&s.inodes[i]));
    }
    (image, dirty)
}

fn reachable(dirs: &BTreeMap<PathBuf, Dir>, path: &Path) -> bool {
    let mut cur = path;
    while let (Some(parent), Some(name)) = (cur.parent(), cur.file_name()) {
        match dirs.get(parent) {
            Some(d) if d.live.get(name) == Some(&Entry::Dir) => cur = parent,
            _ => return false,
        }
    }
    cur == Path::new("/")
}

/// Calls `f` with every vector `v` where `v[i] < limits[i]`.
fn for_each_combination(limits: &[usize], mut f: impl FnMut(&[usize])) {
    if limits.contains(&0) {
        return;
    }
    let mut current = vec![0; limits.len()];
    loop {
        f(&current);
        let mut i = 0;
        loop {
            if i == limits.len() {
                return;
            }
            current[i] += 1;
            if current[i] < limits[i] {
                break;
            }
            current[i] = 0;
            i += 1;
        }
    }
}

/// What a sector holds after a crash.
#[derive(Clone, Copy)]
enum Sector {
    Kept,
    Dropped,
    Garbage,
}

/// Every content an unsynced file can have after a crash.
fn file_variants(inode: &Inode) -> Vec<Vec<u8>> {
    let (old, new) = (&inode.durable, &inode.live);
    let span = old.len().max(new.len());
    let sectors = span.div_ceil(SECTOR);
    let range = |i: usize, len: usize| (i * SECTOR).min(len)..((i + 1) * SECTOR).min(len);
    let dirty: Vec<usize> = (0..sectors)
        .filter(|&i| old.get(range(i, old.len())) != new.get(range(i, new.len())))
        .collect();
    let choices: Vec<Vec<Sector>> = if dirty.len() <= MAX_EXHAUSTIVE_SECTORS {
        let mut all = Vec::new();
        for_each_combination(&vec![3; dirty.len()], |c| {
            all.push(
                c.iter().map(|&x| [Sector::Kept, Sector::Dropped, Sector::Garbage][x]).collect(),
            );
        });
        all
    } else {
        // Representative: uniform choices, one odd sector, and every
        // kept-prefix/dropped-suffix split (a write that stopped part way).
        let n = dirty.len();
        let mut some =
            vec![vec![Sector::Kept; n], vec![Sector::Dropped; n], vec![Sector::Garbage; n]];
        for i in 0..n {
            for odd in [Sector::Dropped, Sector::Garbage] {
                let mut c = vec![Sector::Kept; n];
                c[i] = odd;
                some.push(c);
            }
            some.push((0..n).map(|j| if j < i { Sector::Kept } else { Sector::Dropped }).collect());
        }
        some
    };
    let mut sizes = vec![old.len(), new.len()];
    sizes.dedup();
    let mut out = Vec::with_capacity(choices.len() * sizes.len());
    for choice in &choices {
        let mut bytes = vec![0u8; span];
        bytes[..old.len()].copy_from_slice(old);
        for i in 0..sectors {
            let r = range(i, span);
            let pick = dirty.iter().position(|&d| d == i).map_or(Sector::Kept, |j| choice[j]);
            match pick {
                Sector::Kept => {
                    for (k, b) in bytes[r.clone()].iter_mut().enumerate() {
                        *b = new.get(r.start + k).copied().unwrap_or(0);
                    }
                }
                Sector::Dropped => {}
                Sector::Garbage => {
                    for (k, b) in bytes[r.clone()].iter_mut().enumerate() {
                        *b = 0xA5 ^ (k as u8).wrapping_mul(31) ^ (i as u8);
                    }
                }
            }
        }
        for &size in &sizes {
            let mut v = bytes.clone();
            v.truncate(size);
            out.push(v);
        }
    }
    out.sort();
    out.dedup();
    out
}

/// A file being written on a [`SimFs`]. Every `write` is a call.
///
/// # Examples
///
/// ```
/// use std::io::Write;
/// use safestash::{fs::Fs, sim::SimFs};
/// let fs = SimFs::new();
/// let (mut file, path) = fs.create_temp("/".as_ref(), ".t.", ".tmp")?;
/// file.write_all(b"data")?;
/// assert_eq!(fs.read(&path).unwrap(), b"data");
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct SimFile {
    fs: SimFs,
    inode: usize,
    path: PathBuf,
}

impl Write for SimFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut s = self.fs.lock();
        s.call("write", &self.path)?;
        s.inodes[self.inode].live.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A file open for reading on a [`SimFs`]: a snapshot of its live bytes.
/// Every `read` is a call.
///
/// # Examples
///
/// ```
/// use std::io::Read;
/// use safestash::{fs::{Fs, Opened}, sim::SimFs};
/// let fs = SimFs::new();
/// fs.write_durable("/f", b"data")?;
/// let Opened::File { mut reader, .. } = fs.open_read("/f".as_ref())? else { panic!() };
/// let mut s = String::new();
/// reader.read_to_string(&mut s)?;
/// assert_eq!(s, "data");
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct SimReader {
    fs: SimFs,
    data: Cursor<Vec<u8>>,
    path: PathBuf,
}

impl Read for SimReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.fs.lock().call("read", &self.path)?;
        self.data.read(buf)
    }
}

impl Seek for SimReader {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.data.seek(pos)
    }
}

/// A held lock on a [`SimFs`], released on drop.
///
/// # Examples
///
/// ```
/// use safestash::{fs::Fs, sim::SimFs};
/// let fs = SimFs::new();
/// let held = fs.lock("/.k.lock".as_ref(), false)?;
/// assert!(held.is_some());
/// assert!(fs.lock("/.k.lock".as_ref(), false)?.is_none());
/// drop(held);
/// assert!(fs.lock("/.k.lock".as_ref(), false)?.is_some());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct SimLock {
    fs: SimFs,
    path: PathBuf,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        self.fs.lock().locks.remove(&self.path);
    }
}

impl Fs for SimFs {
    type File = SimFile;
    type Reader = SimReader;
    type Lock = SimLock;

    fn create_temp(
        &self,
        dir: &Path,
        prefix: &str,
        suffix: &str,
    ) -> io::Result<(SimFile, PathBuf)> {
        let mut s = self.lock();
        s.call("create_temp", dir)?;
        if !s.dirs.contains_key(dir) {
            return Err(not_found());
        }
        loop {
            const ALNUM: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
            let mut n = s.next_name;
            s.next_name += 1;
            let rand: String = (0..8)
                .map(|_| {
                    let c = ALNUM[(n % 62) as usize];
                    n /= 62;
                    char::from(c)
                })
                .collect();
            let path = dir.join(format!("{prefix}{rand}{suffix}"));
            if s.lookup(&path).is_none() {
                let inode = s.new_file(&path, Vec::new(), false)?;
                return Ok((SimFile { fs: self.clone(), inode, path: path.clone() }, path));
            }
        }
    }

    fn sync_file(&self, file: &mut SimFile) -> io::Result<()> {
        let mut s = self.lock();
        s.call("sync_file", &file.path)?;
        let node = &mut s.inodes[file.inode];
        node.durable = node.live.clone();
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.call("rename", from)?;
        let (dir, from_name) = s.split(from)?;
        let (to_dir, to_name) = s.split(to)?;
        if dir != to_dir {
            return Err(io::Error::new(
                io::ErrorKind::CrossesDevices,
                "SimFs renames within one directory",
            ));
        }
        match (s.lookup(from), s.lookup(to)) {
            (None, _) => Err(not_found()),
            (Some(Entry::Dir), _) | (_, Some(Entry::Dir)) => {
                Err(io::ErrorKind::IsADirectory.into())
            }
            _ => {
                s.dir_mut(&dir).push(DirOp::Rename(from_name.to_owned(), to_name.to_owned()));
                Ok(())
            }
        }
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.call("sync_dir", dir)?;
        let d = s.dirs.get_mut(dir).ok_or_else(not_found)?;
        d.durable = d.live.clone();
        d.pending.clear();
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.call("remove_file", path)?;
        let (dir, name) = s.split(path)?;
        match s.lookup(path) {
            None => Err(not_found()),
            Some(Entry::Dir) => Err(io::ErrorKind::IsADirectory.into()),
            Some(Entry::File(_)) => {
                s.dir_mut(&dir).push(DirOp::Remove(name.to_owned()));
                Ok(())
            }
        }
    }

    fn open_read(&self, path: &Path) -> io::Result<Opened<SimReader>> {
        let mut s = self.lock();
        s.call("open_read", path)?;
        match s.lookup(path) {
            None => Ok(Opened::Missing),
            Some(Entry::Dir) => Ok(Opened::NotAFile(FileKind::Dir)),
            Some(Entry::File(inode)) => {
                let data = s.inodes[inode].live.clone();
                let len = data.len() as u64;
                let reader =
                    SimReader { fs: self.clone(), data: Cursor::new(data), path: path.to_owned() };
                Ok(Opened::File { reader, len })
            }
        }
    }

    fn read_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        let mut s = self.lock();
        s.call("read_dir", dir)?;
        let d = s.dirs.get(dir).ok_or_else(not_found)?;
        Ok(d.live
            .iter()
            .map(|(name, entry)| DirEntry {
                name: name.clone(),
                kind: match entry {
                    Entry::File(_) => FileKind::File,
                    Entry::Dir => FileKind::Dir,
                },
            })
            .collect())
    }

    fn metadata(&self, path: &Path) -> io::Result<Option<FileKind>> {
        let mut s = self.lock();
        s.call("metadata", path)?;
        Ok(s.lookup(path).map(|e| match e {
            Entry::File(_) => FileKind::File,
            Entry::Dir => FileKind::Dir,
        }))
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.call("create_dir", path)?;
        let (parent, name) = s.split(path)?;
        if s.lookup(path).is_some() {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        s.dir_mut(&parent).push(DirOp::Create(name.to_owned(), Entry::Dir));
        s.dirs.insert(path.to_owned(), Dir::default());
        Ok(())
    }

    fn lock(&self, path: &Path, wait: bool) -> io::Result<Option<SimLock>> {
        let mut s = self.lock();
        s.call("lock", path)?;
        match s.lookup(path) {
            Some(Entry::File(_)) => {}
            Some(Entry::Dir) => return Err(io::ErrorKind::IsADirectory.into()),
            None => {
                s.new_file(path, Vec::new(), false)?;
            }
        }
        if !s.locks.insert(path.to_owned()) {
            if wait {
                return Err(io::Error::new(
                    io::ErrorKind::Deadlock,
                    "SimFs is single-threaded: waiting for a held lock would never end",
                ));
            }
            return Ok(None);
        }
        Ok(Some(SimLock { fs: self.clone(), path: path.to_owned() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsynced_file_has_every_sector_variant() {
        let inode = Inode { durable: Vec::new(), live: vec![7; 2 * SECTOR + 10] };
        // 3 dirty sectors: 27 content choices x 2 sizes, fewer after dedup
        // (size 0 makes every choice the same empty file).
        let v = file_variants(&inode);
        assert_eq!(v.len(), 27 + 1);
        assert!(v.contains(&Vec::new()));
        assert!(v.contains(&inode.live));
    }

    #[test]
    fn pending_ops_are_kept_as_prefixes() {
        let fs = SimFs::new();
        fs.mkdir_durable("/d").unwrap();
        fs.write_durable("/d/a", b"A").unwrap();
        fs.remove_file(Path::new("/d/a")).unwrap();
        let (mut f, p) = fs.create_temp(Path::new("/d"), ".t.", ".tmp").unwrap();
        f.write_all(b"x").unwrap();
        fs.sync_file(&mut f).unwrap();
        fs.rename(&p, Path::new("/d/b")).unwrap();
        let mut seen = BTreeSet::new();
        fs.for_each_crash_image(|img| {
            seen.insert(img.list("/d"));
        });
        // remove a; create temp; rename temp -> b: four prefixes.
        let want: BTreeSet<Vec<String>> = [
            vec!["a".to_owned()],
            vec![],
            vec![p.file_name().unwrap().to_string_lossy().into_owned()],
            vec!["b".to_owned()],
        ]
        .into();
        assert_eq!(seen, want);
    }

    /// Regression (fuzz target store_ops, a timeout): with many unsynced
    /// files, picking one crash image must not enumerate their product.
    #[test]
    fn one_crash_image_among_astronomically_many_is_cheap() {
        let fs = SimFs::new();
        fs.mkdir_durable("/d").unwrap();
        for _ in 0..12 {
            let (mut f, _) = fs.create_temp(Path::new("/d"), ".t.", ".tmp").unwrap();
            f.write_all(&[b'x'; 3 * SECTOR]).unwrap();
        }
        assert!(fs.crash_image_count() > 10u64.pow(15)); // far too many to list
        let a = fs.crash_image(1);
        let b = fs.crash_image(2);
        assert!(a.list("/d").len() <= 12 && b.list("/d").len() <= 12);
    }

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
