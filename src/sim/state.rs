//! The simulated disk: for every file its live and durable bytes, for every
//! directory its durable entries and pending operations, and the call
//! counter that applies the fault set on a [`SimFs`](super::SimFs).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Entry {
    File(usize),
    Dir,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum DirOp {
    Create(OsString, Entry),
    Rename(OsString, OsString),
    Remove(OsString),
}

impl DirOp {
    pub(super) fn apply(&self, entries: &mut BTreeMap<OsString, Entry>) {
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
pub(super) struct Dir {
    pub(super) durable: BTreeMap<OsString, Entry>,
    pub(super) live: BTreeMap<OsString, Entry>,
    pub(super) pending: Vec<DirOp>,
}

impl Dir {
    pub(super) fn push(&mut self, op: DirOp) {
        op.apply(&mut self.live);
        self.pending.push(op);
    }
}

#[derive(Debug, Clone, Default)]
pub(super) struct Inode {
    pub(super) durable: Vec<u8>,
    pub(super) live: Vec<u8>,
}

/// A fault set on a [`SimFs`](super::SimFs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fault {
    None,
    CrashAfter(u64),
    FailAt { seq: u64, persistent: bool },
}

/// One call made to a [`SimFs`](super::SimFs), as recorded in its
/// [`log`](super::SimFs::log).
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
pub(super) struct State {
    pub(super) dirs: BTreeMap<PathBuf, Dir>,
    pub(super) inodes: Vec<Inode>,
    pub(super) seq: u64,
    pub(super) log: Vec<Call>,
    pub(super) fault: Fault,
    pub(super) frozen: bool,
    pub(super) locks: BTreeSet<PathBuf>,
    pub(super) next_name: u64,
}

fn power_lost() -> io::Error {
    io::Error::other("simulated power loss")
}

fn injected() -> io::Error {
    io::Error::other("simulated I/O error")
}

pub(super) fn not_found() -> io::Error {
    io::ErrorKind::NotFound.into()
}

impl State {
    pub(super) fn new() -> State {
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
    pub(super) fn call(&mut self, op: &'static str, path: &Path) -> io::Result<()> {
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
    pub(super) fn split<'p>(&self, path: &'p Path) -> io::Result<(PathBuf, &'p OsStr)> {
        let name = path.file_name().ok_or_else(not_found)?;
        let parent = path.parent().ok_or_else(not_found)?;
        if !self.dirs.contains_key(parent) {
            return Err(not_found());
        }
        Ok((parent.to_owned(), name))
    }

    pub(super) fn lookup(&self, path: &Path) -> Option<Entry> {
        if path == Path::new("/") {
            return Some(Entry::Dir);
        }
        let (parent, name) = self.split(path).ok()?;
        self.dirs[&parent].live.get(name).copied()
    }

    pub(super) fn dir_mut(&mut self, dir: &Path) -> &mut Dir {
        self.dirs.get_mut(dir).expect("split checked the directory exists")
    }

    pub(super) fn new_file(
        &mut self,
        path: &Path,
        bytes: Vec<u8>,
        durable: bool,
    ) -> io::Result<usize> {
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
