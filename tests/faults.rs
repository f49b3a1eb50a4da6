//! Injected filesystem failures, through a test-local `Fs` that wraps `OsFs`
//! and is plugged in with `Store::with_fs`: a failed save never damages the
//! old stash and never leaves its temp file behind, and its error names the
//! operation with the OS error as the source.

mod common;

use std::error::Error as _;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use safestash::fs::{DirEntry, Fs, Opened, OsFs};
use safestash::{Error, IoOp, StashKey, Store, fs::FileKind};

use common::temp_files;

// Linux errno values, spelled out to avoid a libc dev-dependency.
const EIO: i32 = 5;
const EXDEV: i32 = 18;
const ENOSPC: i32 = 28;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// Writes to the temp file fail with ENOSPC after this many bytes.
    WriteAfter(usize),
    SyncFile,
    Rename,
    /// Every directory fsync fails once a rename has been made: the fsync
    /// that makes a save's rename durable.
    SyncDirAfterRename,
    /// Every directory fsync fails until a rename has been made.
    SyncDirBeforeRename,
}

/// `OsFs` with one kind of call made to fail, recording the temp files made.
/// Clones share what they record.
#[derive(Debug, Clone)]
struct FaultyFs {
    fault: Fault,
    temps: std::sync::Arc<Mutex<Vec<PathBuf>>>,
    renamed: std::sync::Arc<AtomicBool>,
}

impl FaultyFs {
    fn new(fault: Fault) -> FaultyFs {
        FaultyFs { fault, temps: Default::default(), renamed: Default::default() }
    }

    fn temps(&self) -> Vec<PathBuf> {
        self.temps.lock().unwrap().clone()
    }
}

#[derive(Debug)]
struct FaultyFile {
    inner: File,
    limit: Option<usize>,
    written: usize,
}

impl Write for FaultyFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = match self.limit {
            Some(limit) if self.written >= limit => {
                return Err(io::Error::from_raw_os_error(ENOSPC));
            }
            Some(limit) => (limit - self.written).min(buf.len()),
            None => buf.len(),
        };
        let n = self.inner.write(&buf[..room])?;
        self.written += n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Fs for FaultyFs {
    type File = FaultyFile;
    type Reader = <OsFs as Fs>::Reader;
    type Lock = <OsFs as Fs>::Lock;

    fn create_temp(
        &self,
        dir: &Path,
        prefix: &str,
        suffix: &str,
    ) -> io::Result<(FaultyFile, PathBuf)> {
        let (inner, path) = OsFs.create_temp(dir, prefix, suffix)?;
        self.temps.lock().unwrap().push(path.clone());
        let limit = match self.fault {
            Fault::WriteAfter(n) => Some(n),
            _ => None,
        };
        let file = FaultyFile { inner, limit, written: 0 };
        Ok((file, path))
    }

    fn sync_file(&self, file: &mut FaultyFile) -> io::Result<()> {
        if self.fault == Fault::SyncFile {
            return Err(io::Error::from_raw_os_error(EIO));
        }
        OsFs.sync_file(&mut file.inner)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        if self.fault == Fault::Rename {
            return Err(io::Error::from_raw_os_error(EXDEV));
        }
        OsFs.rename(from, to)?;
        self.renamed.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let renamed = self.renamed.load(Ordering::SeqCst);
        let fail = match self.fault {
            Fault::SyncDirAfterRename => renamed,
            Fault::SyncDirBeforeRename => !renamed,
            _ => false,
        };
        if fail {
            return Err(io::Error::from_raw_os_error(EIO));
        }
        OsFs.sync_dir(dir)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        OsFs.remove_file(path)
    }

    fn open_read(&self, path: &Path) -> io::Result<Opened<Self::Reader>> {
        OsFs.open_read(path)
    }

    fn read_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        OsFs.read_dir(dir)
    }

    fn metadata(&self, path: &Path) -> io::Result<Option<FileKind>> {
        OsFs.metadata(path)
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        OsFs.create_dir(path)
    }

    fn lock(&self, path: &Path, wait: bool) -> io::Result<Option<Self::Lock>> {
        OsFs.lock(path, wait)
    }
}

fn key() -> StashKey {
    StashKey::new("orders.dictionary").unwrap()
}

/// A value big enough that its payload spans several writes.
fn new_value() -> Vec<String> {
    (0..2000).map(|i| format!("new row {i}")).collect()
}

/// A store with an old stash saved normally, and a faulty store on the same
/// directory. Returns the old stash's bytes.
fn setup(fault: Fault) -> (tempfile::TempDir, Store<FaultyFs>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let plain = Store::open(dir.path()).unwrap();
    let receipt = plain.save(&key(), &vec!["old row"; 3]).unwrap();
    let old = std::fs::read(&receipt.path).unwrap();
    let faulty = Store::with_fs(dir.path(), FaultyFs::new(fault)).unwrap();
    (dir, faulty, old)
}

/// The old stash is byte-identical, still loads, and no temp file is left,
/// although one was made.
fn assert_old_intact(dir: &Path, store: &Store<FaultyFs>, old: &[u8]) {
    assert_eq!(std::fs::read(store.path_of(&key())).unwrap(), old);
    let loaded = store.load::<Vec<String>>(&key()).unwrap().unwrap();
    assert_eq!(loaded.value(), &vec!["old row".to_owned(); 3]);
    let temps = store.fs().temps();
    assert_eq!(temps.len(), 1, "the save should have made one temp file");
    assert!(!temps[0].exists(), "temp file {} left", temps[0].display());
    assert_eq!(temp_files(dir), Vec::<String>::new());
}

/// The error's source is exactly the injected OS error, and its message is
/// not repeated in the error's own message.
fn assert_source_is_os_error(err: &Error, errno: i32) {
    let source = err.source().expect("an OS error as source");
    let io = source.downcast_ref::<io::Error>().expect("source is an io::Error");
    assert_eq!(io.raw_os_error(), Some(errno));
    let os_text = io::Error::from_raw_os_error(errno).to_string();
    assert!(!err.to_string().contains(&os_text), "OS error repeated in {err}");
}

#[test]
fn wrapper_without_faults_saves_normally() {
    let (dir, store, _) = setup(Fault::None);
    store.save(&key(), &new_value()).unwrap();
    assert_eq!(store.load::<Vec<String>>(&key()).unwrap().unwrap().value(), &new_value());
    assert_eq!(store.fs().temps().len(), 1);
    assert_eq!(temp_files(dir.path()), Vec::<String>::new());
}

#[test]
fn failed_rename_keeps_old_stash_and_removes_temp() {
    let (dir, store, old) = setup(Fault::Rename);
    let err = store.save(&key(), &new_value()).unwrap_err();
    let tmp = &store.fs().temps()[0];
    match &err {
        Error::Rename { from, to, .. } => {
            assert_eq!(from, tmp);
            assert_eq!(to, &store.path_of(&key()));
        }
        other => panic!("expected Rename, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        format!("failed to rename `{}` to `{}`", tmp.display(), store.path_of(&key()).display())
    );
    assert_source_is_os_error(&err, EXDEV);
    let name = tmp.file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with(".orders.dictionary.") && name.ends_with(".tmp"), "{name}");
    assert_eq!(tmp.parent(), Some(dir.path()));
    assert_old_intact(dir.path(), &store, &old);
}

#[test]
fn failed_rename_of_a_first_save_leaves_no_stash() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::with_fs(dir.path(), FaultyFs::new(Fault::Rename)).unwrap();
    assert!(matches!(store.save(&key(), &new_value()), Err(Error::Rename { .. })));
    assert!(store.load::<Vec<String>>(&key()).unwrap().is_none());
    assert!(!store.fs().temps()[0].exists());
    assert_eq!(temp_files(dir.path()), Vec::<String>::new());
}

#[test]
fn failed_file_sync_keeps_old_stash_and_removes_temp() {
    let (dir, store, old) = setup(Fault::SyncFile);
    let err = store.save(&key(), &new_value()).unwrap_err();
    let tmp = &store.fs().temps()[0];
    match &err {
        Error::Io { op, path, .. } => {
            assert_eq!(*op, IoOp::SyncFile);
            assert_eq!(path, tmp);
        }
        other => panic!("expected Io, got {other:?}"),
    }
    assert_eq!(err.to_string(), format!("failed to sync `{}`", tmp.display()));
    assert_source_is_os_error(&err, EIO);
    assert_old_intact(dir.path(), &store, &old);
}

#[test]
fn failed_write_keeps_old_stash_and_removes_temp() {
    // Fail inside the header, and in the middle of the payload.
    for limit in [20, 4096] {
        let (dir, store, old) = setup(Fault::WriteAfter(limit));
        let err = store.save(&key(), &new_value()).unwrap_err();
        let tmp = &store.fs().temps()[0];
        match &err {
            Error::Io { op, path, .. } => {
                assert_eq!(*op, IoOp::Write, "limit {limit}");
                assert_eq!(path, tmp);
            }
            other => panic!("limit {limit}: expected Io, got {other:?}"),
        }
        assert_eq!(err.to_string(), format!("failed to write `{}`", tmp.display()));
        assert_source_is_os_error(&err, ENOSPC);
        assert_old_intact(dir.path(), &store, &old);
    }
}

#[test]
fn failed_dir_sync_after_rename_is_reported_and_new_stash_is_in_place() {
    let (dir, store, _) = setup(Fault::SyncDirAfterRename);
    let err = store.save(&key(), &new_value()).unwrap_err();
    match &err {
        Error::Io { op, path, .. } => {
            assert_eq!(*op, IoOp::SyncDir);
            assert_eq!(path, dir.path());
        }
        other => panic!("expected Io, got {other:?}"),
    }
    assert_eq!(err.to_string(), format!("failed to sync directory `{}`", dir.path().display()));
    assert_source_is_os_error(&err, EIO);
    assert_eq!(store.load::<Vec<String>>(&key()).unwrap().unwrap().value(), &new_value());
    assert_eq!(temp_files(dir.path()), Vec::<String>::new());
}

#[test]
fn failed_dir_sync_before_rename_keeps_old_stash() {
    // Whatever directory fsync a save needs before its rename (here: of the
    // directory's ancestors, on a store's first save), its failure is
    // reported and changes nothing.
    let (dir, store, old) = setup(Fault::SyncDirBeforeRename);
    let err = store.save(&key(), &new_value()).unwrap_err();
    match &err {
        Error::Io { op: IoOp::SyncDir, path, .. } => {
            assert!(dir.path().starts_with(path), "{}", path.display())
        }
        other => panic!("expected a directory sync error, got {other:?}"),
    }
    assert_source_is_os_error(&err, EIO);
    assert_eq!(std::fs::read(store.path_of(&key())).unwrap(), old);
    for tmp in store.fs().temps() {
        assert!(!tmp.exists(), "temp file {} left", tmp.display());
    }
    assert_eq!(temp_files(dir.path()), Vec::<String>::new());
}

#[test]
fn failed_quarantine_rename_leaves_the_stash_in_place() {
    let (dir, store, old) = setup(Fault::Rename);
    let err = store.quarantine(&key()).unwrap_err();
    match &err {
        Error::Rename { from, to, .. } => {
            assert_eq!(from, &store.path_of(&key()));
            assert_eq!(to.parent(), Some(dir.path()));
            assert!(!to.exists());
        }
        other => panic!("expected Rename, got {other:?}"),
    }
    assert_source_is_os_error(&err, EXDEV);
    assert_eq!(std::fs::read(store.path_of(&key())).unwrap(), old);
}
