//! The I/O seam: every filesystem call the store makes goes through [`Fs`].
//!
//! [`OsFs`] is the real implementation (std and libc, and fs2 through the
//! crate's lock module). A simulated filesystem can implement the same trait
//! to replay every call with injected faults and power cuts: the store never
//! touches the disk any other way.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// What kind of thing sits at a path.
///
/// # Examples
///
/// ```
/// assert_eq!(safestash::fs::FileKind::Symlink.to_string(), "symbolic link");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (never followed).
    Symlink,
    /// A FIFO, socket or device.
    Other,
}

impl FileKind {
    fn of(ft: fs::FileType) -> FileKind {
        if ft.is_symlink() {
            FileKind::Symlink
        } else if ft.is_dir() {
            FileKind::Dir
        } else if ft.is_file() {
            FileKind::File
        } else {
            FileKind::Other
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::File => "regular file",
            FileKind::Dir => "directory",
            FileKind::Symlink => "symbolic link",
            FileKind::Other => "special file",
        })
    }
}

/// The result of [`Fs::open_read`].
///
/// # Examples
///
/// ```
/// use safestash::fs::{Fs, Opened, OsFs};
///
/// let dir = tempfile::tempdir()?;
/// assert!(matches!(OsFs.open_read(&dir.path().join("nothing"))?, Opened::Missing));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub enum Opened<R> {
    /// A regular file, open for reading, and its length.
    File {
        /// The open file.
        reader: R,
        /// Its length when opened.
        len: u64,
    },
    /// Nothing is at the path.
    Missing,
    /// Something other than a regular file is at the path; it was not followed.
    NotAFile(FileKind),
}

/// One entry of [`Fs::read_dir`].
///
/// # Examples
///
/// ```
/// use safestash::fs::{Fs, OsFs};
/// use safestash::fs::FileKind;
///
/// let dir = tempfile::tempdir()?;
/// std::fs::write(dir.path().join("a"), b"")?;
/// let entries = OsFs.read_dir(dir.path())?;
/// assert_eq!((entries[0].name.to_str(), entries[0].kind), (Some("a"), FileKind::File));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DirEntry {
    /// The entry's file name.
    pub name: OsString,
    /// What it is (symlinks are not followed).
    pub kind: FileKind,
}

/// Every filesystem call the store makes.
///
/// Paths are always a directory or a file directly inside the store's
/// directory. Implementations must not follow a symbolic link at the last
/// component of a path, except for `sync_dir` and `create_dir`.
///
/// A filesystem is a cheap handle (`Clone`): a store's reserved namespaces
/// (see [`Store::namespace`](crate::Store::namespace)) are stores of their
/// own on the same filesystem.
///
/// # Examples
///
/// A store on the real filesystem is `Store<OsFs>`; another implementation is
/// plugged in with [`Store::with_fs`](crate::Store::with_fs):
///
/// ```
/// use safestash::{fs::OsFs, Store};
///
/// let dir = tempfile::tempdir()?;
/// let store = Store::with_fs(dir.path(), OsFs)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Fs: fmt::Debug + Clone + Send + Sync + 'static {
    /// A file being written.
    type File: Write;
    /// A file open for reading (handed out by a [`Directory`](crate::backend::Directory)
    /// backend, so it may move to another thread).
    type Reader: Read + Seek + Send + 'static;
    /// A held advisory lock, released on drop.
    type Lock: Send + Sync + 'static;

    /// Creates a new file `dir/{prefix}{random}{suffix}` with
    /// `O_CREAT|O_EXCL` and mode 0600, and returns it with its path.
    ///
    /// # Errors
    ///
    /// The OS error.
    fn create_temp(
        &self,
        dir: &Path,
        prefix: &str,
        suffix: &str,
    ) -> io::Result<(Self::File, PathBuf)>;

    /// Makes the file's data durable (`fsync`).
    ///
    /// # Errors
    ///
    /// The OS error. After an error the file's durable contents are unknown.
    fn sync_file(&self, file: &mut Self::File) -> io::Result<()>;

    /// Makes the data of every file in `files` durable, as
    /// [`sync_file`](Fs::sync_file) on each would, in as few device flushes
    /// as the platform allows. All of `files` are in one directory.
    ///
    /// The default calls `sync_file` on each in turn. [`OsFs`] issues one
    /// `syncfs(2)` instead where that is as durable and reports the same
    /// errors (see [`OsFs`]), and falls back to one `fsync` per file
    /// elsewhere. Only the files' data is promised durable: directory
    /// entries still need [`sync_dir`](Fs::sync_dir).
    ///
    /// # Errors
    ///
    /// The OS error. After an error the durable contents of every one of
    /// `files` are unknown.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::Write;
    /// use safestash::fs::{Fs, OsFs};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let mut files = Vec::new();
    /// for _ in 0..3 {
    ///     let (mut file, _path) = OsFs.create_temp(dir.path(), ".k.", ".tmp")?;
    ///     file.write_all(b"x")?;
    ///     files.push(file);
    /// }
    /// OsFs.sync_files(&mut files)?; // all three durable now
    /// # Ok::<(), std::io::Error>(())
    /// ```
    fn sync_files(&self, files: &mut [Self::File]) -> io::Result<()> {
        files.iter_mut().try_for_each(|file| self.sync_file(file))
    }

    /// Asks the OS to start writing `len` bytes of `file` from `offset` to
    /// the device, without waiting: a hint that lets a large file's
    /// writeback overlap with the writing of the rest, so the final
    /// [`sync_file`](Fs::sync_file) has little left to do. It makes nothing
    /// durable: only `sync_file` does.
    ///
    /// The default does nothing. [`OsFs`] on Linux issues
    /// `posix_fadvise(POSIX_FADV_DONTNEED)` on the range, which starts
    /// writeback of its dirty pages and returns (pages still dirty or under
    /// writeback stay cached).
    ///
    /// # Errors
    ///
    /// The OS error.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::Write;
    /// use safestash::fs::{Fs, OsFs};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let (mut file, _path) = OsFs.create_temp(dir.path(), ".k.", ".tmp")?;
    /// file.write_all(&[7; 1 << 20])?;
    /// OsFs.start_writeback(&mut file, 0, 1 << 20)?; // under way, not durable
    /// OsFs.sync_file(&mut file)?; // durable
    /// # Ok::<(), std::io::Error>(())
    /// ```
    fn start_writeback(&self, file: &mut Self::File, offset: u64, len: u64) -> io::Result<()> {
        let _ = (file, offset, len);
        Ok(())
    }

    /// Renames `from` to `to`, atomically replacing `to`.
    ///
    /// # Errors
    ///
    /// The OS error.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Makes the directory's entries durable (`fsync` on the directory).
    ///
    /// # Errors
    ///
    /// The OS error.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;

    /// Removes a file (or a symbolic link, not its target).
    ///
    /// # Errors
    ///
    /// The OS error; `NotFound` when nothing is there.
    fn remove_file(&self, path: &Path) -> io::Result<()>;

    /// Opens a regular file for reading without following a symbolic link.
    ///
    /// # Errors
    ///
    /// The OS error; a missing file or a non-file is not an error.
    fn open_read(&self, path: &Path) -> io::Result<Opened<Self::Reader>>;

    /// Lists a directory's entries (without `.` and `..`).
    ///
    /// # Errors
    ///
    /// The OS error; `NotFound` when the directory does not exist.
    fn read_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>>;

    /// What is at `path`, without following a symbolic link; `None` if nothing.
    ///
    /// # Errors
    ///
    /// The OS error.
    fn metadata(&self, path: &Path) -> io::Result<Option<FileKind>>;

    /// Creates one directory with mode 0700.
    ///
    /// # Errors
    ///
    /// The OS error; `AlreadyExists` when something is there.
    fn create_dir(&self, path: &Path) -> io::Result<()>;

    /// Takes an exclusive advisory lock on the lock file `path`, creating it
    /// (mode 0600) if needed. With `wait` false, returns `None` instead of
    /// blocking when another holder has it.
    ///
    /// # Errors
    ///
    /// The OS error.
    fn lock(&self, path: &Path, wait: bool) -> io::Result<Option<Self::Lock>>;
}

/// Eight random characters of `[A-Za-z0-9]` for a temp file name.
///
/// `RandomState` is seeded from the OS once per thread and differs on every
/// call; the counter and the time make names differ across processes and
/// calls even if two seeds met.
fn random_name() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    const ALNUM: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    // The process id, once per process (a forked child keeps its parent's
    // here, but not its clock reading; `O_EXCL` settles any clash).
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    hasher.write_u32(*PID.get_or_init(std::process::id));
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(t.as_nanos());
    }
    let mut n = hasher.finish();
    (0..8)
        .map(|_| {
            let c = ALNUM[(n % 62) as usize];
            n /= 62;
            char::from(c)
        })
        .collect()
}

/// The real filesystem.
///
/// Every call is the plain system call, except
/// [`sync_files`](Fs::sync_files): on Linux 5.8 or later, when every file
/// is on one ext4, XFS or Btrfs filesystem, it is one `syncfs(2)` on the
/// first file's descriptor (one journal commit and one device flush for
/// all of them, where an `fsync` per file costs a commit each). Since 5.8
/// `syncfs` reports writeback errors that happened on the filesystem since
/// that descriptor was opened, which is before any of the files were
/// written. It also writes back unrelated dirty data on the same filesystem,
/// so a batch next to a heavy writer waits for that writer's data too.
/// Anywhere else it is one `fsync` per file.
///
/// # Examples
///
/// ```
/// use safestash::fs::{Fs, OsFs};
///
/// let dir = tempfile::tempdir()?;
/// let (mut file, path) = OsFs.create_temp(dir.path(), ".k.", ".tmp")?;
/// std::io::Write::write_all(&mut file, b"x")?;
/// OsFs.sync_file(&mut file)?;
/// OsFs.rename(&path, &dir.path().join("k"))?;
/// OsFs.sync_dir(dir.path())?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct OsFs;

impl Fs for OsFs {
    type File = File;
    type Reader = File;
    type Lock = LockFile;

    fn create_temp(&self, dir: &Path, prefix: &str, suffix: &str) -> io::Result<(File, PathBuf)> {
        // O_CREAT|O_EXCL: never opens an existing file or follows a planted
        // symlink; a name clash just draws another name. Done by hand rather
        // than through tempfile so the OS error (ENOSPC, EROFS, EDQUOT…)
        // reaches the caller intact.
        for _ in 0..64 {
            let path = dir.join(format!("{prefix}{}{suffix}", random_name()));
            let opened = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path);
            match opened {
                Ok(file) => return Ok((file, path)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(io::ErrorKind::AlreadyExists, "no free temp file name after 64 tries"))
    }

    fn sync_file(&self, file: &mut File) -> io::Result<()> {
        file.sync_all()
    }

    fn sync_files(&self, files: &mut [File]) -> io::Result<()> {
        match files {
            [] => Ok(()),
            [first, rest @ ..] if !rest.is_empty() && one_syncfs_suffices(first, rest)? => {
                syncfs(first)
            }
            _ => files.iter().try_for_each(File::sync_all),
        }
    }

    fn start_writeback(&self, file: &mut File, offset: u64, len: u64) -> io::Result<()> {
        start_writeback(file, offset, len)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn open_read(&self, path: &Path) -> io::Result<Opened<File>> {
        // O_NOFOLLOW: a symlink at the path fails with ELOOP instead of being
        // followed. O_NONBLOCK: a FIFO planted at the path cannot block us;
        // it has no effect on regular files.
        let opened = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path);
        let file = match opened {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Opened::Missing),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Ok(Opened::NotAFile(FileKind::Symlink));
            }
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        let kind = FileKind::of(meta.file_type());
        if kind != FileKind::File {
            return Ok(Opened::NotAFile(kind));
        }
        Ok(Opened::File { reader: file, len: meta.len() })
    }

    fn read_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        fs::read_dir(dir)?
            .map(|entry| {
                let entry = entry?;
                Ok(DirEntry { name: entry.file_name(), kind: FileKind::of(entry.file_type()?) })
            })
            .collect()
    }

    fn metadata(&self, path: &Path) -> io::Result<Option<FileKind>> {
        match fs::symlink_metadata(path) {
            Ok(meta) => Ok(Some(FileKind::of(meta.file_type()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        fs::DirBuilder::new().mode(0o700).create(path)
    }

    fn lock(&self, path: &Path, wait: bool) -> io::Result<Option<LockFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)?;
        let generation = crate::fork::generation();
        Ok(lock_exclusive(&file, wait)?.then_some(LockFile { file, generation }))
    }
}

/// A held `flock` of [`OsFs`]: released when dropped, by unlocking it and
/// then closing it.
///
/// Unlocking, not only closing, is what releases it when a forked child
/// still has a copy of the descriptor (closing releases a `flock` only
/// with the last descriptor of its open file). A lock dropped in a child
/// that inherited it ([`crate::fork`]) is only closed there: the lock
/// stays the parent's.
#[derive(Debug)]
pub struct LockFile {
    file: File,
    generation: u64,
}

impl LockFile {
    /// Whether this process holds the lock: `false` in a forked child that
    /// inherited it (see [`crate::fork::after_fork_in_child`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::fs::{Fs, OsFs};
    /// let dir = tempfile::tempdir()?;
    /// let held = OsFs.lock(&dir.path().join(".k.lock"), false)?.expect("free");
    /// assert!(held.is_held());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_held(&self) -> bool {
        self.generation == crate::fork::generation()
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        if self.is_held() {
            // An error leaves the lock to the close that follows.
            let _ = fs2::FileExt::unlock(&self.file);
        }
    }
}

/// Whether one `syncfs` on `first` makes the data of `first` and `rest`
/// as durable as an `fsync` of each, with its errors reported: Linux 5.8 or
/// later (writeback errors reported), all on one filesystem of a type whose
/// `syncfs` commits its journal and flushes the device.
#[cfg(target_os = "linux")]
fn one_syncfs_suffices(first: &File, rest: &[File]) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    use std::sync::OnceLock;
    const EXT4: u64 = 0xEF53;
    const XFS: u64 = 0x5846_5342;
    const BTRFS: u64 = 0x9123_683E;
    static REPORTS_ERRORS: OnceLock<bool> = OnceLock::new();
    let reports_errors = *REPORTS_ERRORS.get_or_init(|| {
        let uname = rustix::system::uname();
        let release = uname.release().to_string_lossy();
        let mut parts = release.split(|c: char| !c.is_ascii_digit());
        let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        (major, minor) >= (5, 8)
    });
    if !reports_errors {
        return Ok(false);
    }
    let kind = rustix::fs::fstatfs(first).map_err(io::Error::from)?.f_type as u64;
    if ![EXT4, XFS, BTRFS].contains(&kind) {
        return Ok(false);
    }
    let dev = first.metadata()?.dev();
    for file in rest {
        if file.metadata()?.dev() != dev {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(not(target_os = "linux"))]
fn one_syncfs_suffices(_first: &File, _rest: &[File]) -> io::Result<bool> {
    Ok(false)
}

/// See [`Fs::start_writeback`]: rustix has no `sync_file_range`, and this
/// crate forbids unsafe code; `POSIX_FADV_DONTNEED` starts the same
/// asynchronous writeback (`WB_SYNC_NONE`) on the range.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let Some(len) = std::num::NonZeroU64::new(len) else { return Ok(()) };
    rustix::fs::fadvise(file, offset, Some(len), rustix::fs::Advice::DontNeed)
        .map_err(io::Error::from)
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _offset: u64, _len: u64) -> io::Result<()> {
    Ok(())
}

#[cfg(target_os = "linux")]
fn syncfs(file: &File) -> io::Result<()> {
    rustix::fs::syncfs(file).map_err(io::Error::from)
}

#[cfg(not(target_os = "linux"))]
fn syncfs(file: &File) -> io::Result<()> {
    file.sync_all()
}

/// Takes an exclusive `flock` on `file`. Returns `false` if `wait` is false
/// and another open file description holds the lock.
pub(crate) fn lock_exclusive(file: &File, wait: bool) -> io::Result<bool> {
    loop {
        let result = if wait {
            fs2::FileExt::lock_exclusive(file)
        } else {
            fs2::FileExt::try_lock_exclusive(file)
        };
        match result {
            Ok(()) => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if !wait
                    && (e.kind() == io::ErrorKind::WouldBlock
                        || e.raw_os_error() == fs2::lock_contended_error().raw_os_error()) =>
            {
                return Ok(false);
            }
            Err(e) => return Err(e),
        }
    }
}
