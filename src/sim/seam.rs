//! [`SimFs`] as the store's [`Fs`] seam: every call is counted, and the
//! fault set on the filesystem applies to it.

use std::io::{self, Cursor, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::SimFs;
use super::state::{Dir, DirOp, Entry, not_found};
use crate::fs::{DirEntry, FileKind, Fs, Opened};

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

    /// One call for all of `files` (the model of one `syncfs`): if it is
    /// made, every file's live bytes become durable; if the power is cut
    /// before it or it fails, none of them do.
    fn sync_files(&self, files: &mut [SimFile]) -> io::Result<()> {
        let Some(first) = files.first() else { return Ok(()) };
        let mut s = self.lock();
        s.call("sync_files", first.path.parent().unwrap_or(&first.path))?;
        for file in files.iter() {
            let node = &mut s.inodes[file.inode];
            node.durable = node.live.clone();
        }
        Ok(())
    }

    /// A counted call that changes nothing: starting writeback makes
    /// nothing durable.
    fn start_writeback(&self, file: &mut SimFile, _offset: u64, _len: u64) -> io::Result<()> {
        self.lock().call("start_writeback", &file.path)
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
