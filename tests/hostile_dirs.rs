//! Hostile or locked-down store directories, beyond `hostile.rs`: a
//! directory or symlink at a stash path met through a held `KeyLock`, by
//! `quarantine`, `list` and `verify`; temp-named symlinks and directories met
//! by `cleanup`; a store directory that cannot be written (mode 0555 for a
//! non-root user, a read-only bind mount, the immutable attribute); a stash
//! file no one but root may read. Each is a clear error, and nothing outside
//! the store directory is created or changed: the tree around it is
//! snapshotted (type, mode, owner, size, times, contents) before and after.
//!
//! Root bypasses permission checks, so the permission cases run a child
//! process as `nobody` (uid 65534) through `setpriv`, re-executing this test
//! binary running only `hostile_dirs_child`. Cases that cannot be set up
//! (no `setpriv`, no right to mount, no `chattr`) print `skipped: <reason>`.

mod common;
mod harness;

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use safestash::{Error, IoOp, StashKey, Store, fs::FileKind};

use common::{names, temp_files};
use harness::{assert_child_passed, effective_uid, self_command};

const CASE_VAR: &str = "SAFESTASH_TEST_HOSTILE_CASE";
const ROOT_VAR: &str = "SAFESTASH_TEST_HOSTILE_ROOT";
const NOBODY: u32 = 65534;
const EPERM: i32 = libc::EPERM;
const EROFS: i32 = libc::EROFS;

fn key(s: &str) -> StashKey {
    StashKey::new(s).unwrap()
}

/// One entry of a snapshot: everything a write, chmod or chown would change.
#[derive(Debug, PartialEq, Eq)]
enum Node {
    File { mode: u32, uid: u32, gid: u32, mtime: (i64, i64), ctime: (i64, i64), bytes: Vec<u8> },
    Dir { mode: u32, uid: u32, gid: u32, mtime: (i64, i64), ctime: (i64, i64) },
    Symlink { target: PathBuf, ctime: (i64, i64) },
    Other { mode: u32 },
}

/// Every entry under `top` (itself included), except the subtree `skip`.
fn snapshot(top: &Path, skip: Option<&Path>) -> BTreeMap<PathBuf, Node> {
    fn walk(path: &Path, skip: Option<&Path>, out: &mut BTreeMap<PathBuf, Node>) {
        if Some(path) == skip {
            return;
        }
        let m = std::fs::symlink_metadata(path).unwrap();
        let ft = m.file_type();
        let (mode, mtime, ctime) =
            (m.mode(), (m.mtime(), m.mtime_nsec()), (m.ctime(), m.ctime_nsec()));
        let node = if ft.is_symlink() {
            Node::Symlink { target: std::fs::read_link(path).unwrap(), ctime }
        } else if ft.is_dir() {
            let mut children: Vec<PathBuf> =
                std::fs::read_dir(path).unwrap().map(|e| e.unwrap().path()).collect();
            children.sort();
            for child in children {
                walk(&child, skip, out);
            }
            Node::Dir { mode, uid: m.uid(), gid: m.gid(), mtime, ctime }
        } else if ft.is_file() {
            let bytes = std::fs::read(path).unwrap();
            Node::File { mode, uid: m.uid(), gid: m.gid(), mtime, ctime, bytes }
        } else {
            Node::Other { mode }
        };
        out.insert(path.to_owned(), node);
    }
    let mut out = BTreeMap::new();
    walk(top, skip, &mut out);
    out
}

/// A root directory (mode 0755, so `nobody` can pass through) holding
/// `store/` (not created) and `outside/` with a file, a subdirectory and a
/// symlink: what a confused store could touch.
struct Tree {
    root: tempfile::TempDir,
}

impl Tree {
    fn new() -> Tree {
        let root = tempfile::tempdir().unwrap();
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let outside = root.path().join("outside");
        std::fs::create_dir_all(outside.join("sub")).unwrap();
        std::fs::write(outside.join("secret"), b"keep out\n").unwrap();
        std::fs::write(outside.join("sub/nested"), b"nested\n").unwrap();
        symlink("secret", outside.join("link")).unwrap();
        Tree { root }
    }

    fn root(&self) -> &Path {
        self.root.path()
    }

    fn store_dir(&self) -> PathBuf {
        self.root().join("store")
    }

    fn outside(&self) -> PathBuf {
        self.root().join("outside")
    }

    /// Everything but the store directory.
    fn around_store(&self) -> BTreeMap<PathBuf, Node> {
        snapshot(self.root(), Some(&self.store_dir()))
    }
}

fn assert_not_a_file<T: std::fmt::Debug>(
    result: safestash::Result<T>,
    path: &Path,
    kind: FileKind,
    what: &str,
) {
    match result {
        Err(e) => check_not_a_file(&e, path, kind, what),
        Ok(v) => panic!("{what}: expected NotAFile({kind}), got Ok({v:?})"),
    }
}

fn check_not_a_file(err: &Error, path: &Path, kind: FileKind, what: &str) {
    match err {
        Error::NotAFile { path: p, found, expected: FileKind::File } => {
            assert_eq!((p.as_path(), *found), (path, kind), "{what}");
        }
        other => panic!("{what}: expected NotAFile({kind}), got {other:?}"),
    }
}

/// How an OS error must look.
#[derive(Debug, Clone, Copy)]
enum Os {
    Errno(i32),
    Kind(io::ErrorKind),
}

fn check_os(source: &io::Error, want: Os, what: &str) {
    match want {
        Os::Errno(n) => assert_eq!(source.raw_os_error(), Some(n), "{what}: {source:?}"),
        Os::Kind(k) => assert_eq!(source.kind(), k, "{what}: {source:?}"),
    }
}

fn assert_io<T: std::fmt::Debug>(
    result: safestash::Result<T>,
    op: IoOp,
    path: &Path,
    want: Os,
    what: &str,
) {
    match result {
        Err(Error::Io { op: o, path: p, source }) => {
            assert_eq!((o, p.as_path()), (op, path), "{what}");
            check_os(&source, want, what);
        }
        other => panic!("{what}: expected Io({op}, {}), got {other:?}", path.display()),
    }
}

fn assert_rename_refused<T: std::fmt::Debug>(
    result: safestash::Result<T>,
    from: &Path,
    want: Os,
    what: &str,
) {
    match result {
        Err(Error::Rename { from: f, to, source }) => {
            assert_eq!(f, from, "{what}");
            assert_eq!(to.parent(), from.parent(), "{what}: renamed out of the store");
            assert!(!to.exists(), "{what}: {} appeared", to.display());
            check_os(&source, want, what);
        }
        other => panic!("{what}: expected a refused rename, got {other:?}"),
    }
}

// --- Things planted at stash and temp paths (as root) -------------------

#[test]
fn directory_at_a_stash_path_is_refused_by_quarantine_list_verify_and_a_held_lock() {
    let tree = Tree::new();
    let dir = tree.store_dir();
    let store = Store::open(&dir).unwrap();
    let k = key("k");
    let path = store.path_of(&k);
    std::fs::create_dir_all(path.join("deeper")).unwrap();
    std::fs::write(path.join("inside"), b"x").unwrap();
    std::fs::write(path.join("deeper/more"), b"y").unwrap();
    let planted = snapshot(&path, None);
    let around = tree.around_store();

    assert_not_a_file(store.quarantine(&k), &path, FileKind::Dir, "quarantine");
    let listed = store.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].key.as_str(), listed[0].size), ("k", 0));
    check_not_a_file(listed[0].header.as_ref().unwrap_err(), &path, FileKind::Dir, "list");
    let report = store.verify().unwrap();
    assert_eq!(report.len(), 1);
    check_not_a_file(report[0].result.as_ref().unwrap_err(), &path, FileKind::Dir, "verify");
    {
        let lock = store.lock(&k).unwrap();
        assert_not_a_file(lock.save(&"payload"), &path, FileKind::Dir, "KeyLock::save");
        let opts = safestash::SaveOptions::new().origin("o");
        assert_not_a_file(lock.save_with(&"payload", &opts), &path, FileKind::Dir, "save_with");
        assert_not_a_file(lock.clear(), &path, FileKind::Dir, "KeyLock::clear");
        assert_not_a_file(lock.quarantine(), &path, FileKind::Dir, "KeyLock::quarantine");
    }
    assert!(store.cleanup().unwrap().is_empty());

    assert_eq!(snapshot(&path, None), planted, "the planted directory changed");
    assert_eq!(tree.around_store(), around, "something outside the store changed");
    assert_eq!(names(&dir), [".k.lock", "k"]);
    assert_eq!(temp_files(&dir), Vec::<String>::new());
}

#[test]
fn symlink_to_a_directory_at_a_stash_path_is_refused_through_a_held_lock() {
    let tree = Tree::new();
    let dir = tree.store_dir();
    std::fs::create_dir(&dir).unwrap();
    let store = Store::open(&dir).unwrap();
    let k = key("k");
    let path = store.path_of(&k);
    symlink(tree.outside(), &path).unwrap();
    let around = tree.around_store();

    {
        let lock = store.lock(&k).unwrap();
        assert_not_a_file(lock.save(&"payload"), &path, FileKind::Symlink, "KeyLock::save");
        assert_not_a_file(lock.clear(), &path, FileKind::Symlink, "KeyLock::clear");
        assert_not_a_file(lock.quarantine(), &path, FileKind::Symlink, "KeyLock::quarantine");
    }
    assert_not_a_file(store.save(&k, &"payload"), &path, FileKind::Symlink, "save");
    assert_not_a_file(store.load::<String>(&k), &path, FileKind::Symlink, "load");
    assert_not_a_file(store.clear(&k), &path, FileKind::Symlink, "clear");
    assert_not_a_file(store.quarantine(&k), &path, FileKind::Symlink, "quarantine");
    assert!(store.cleanup().unwrap().is_empty());

    assert_eq!(std::fs::read_link(&path).unwrap(), tree.outside());
    assert_eq!(tree.around_store(), around, "something outside the store changed");
    assert_eq!(names(&dir), [".k.lock", "k"]);
}

#[test]
fn cleanup_removes_a_temp_named_symlink_but_not_its_target() {
    let tree = Tree::new();
    let dir = tree.store_dir();
    std::fs::create_dir(&dir).unwrap();
    let store = Store::open(&dir).unwrap();
    store.save(&key("k"), &"live").unwrap();
    let to_file = dir.join(".k.Ab3dE5gH.tmp");
    let to_dir = dir.join(".k.Zz9yY8xX.tmp");
    symlink(tree.outside().join("secret"), &to_file).unwrap();
    symlink(tree.outside(), &to_dir).unwrap();
    let around = tree.around_store();

    // Named like a dead writer's temp file, so it is removed, as a link.
    assert_eq!(store.cleanup().unwrap(), [to_file.clone(), to_dir.clone()]);
    assert!(std::fs::symlink_metadata(&to_file).is_err());
    assert!(std::fs::symlink_metadata(&to_dir).is_err());
    assert_eq!(tree.around_store(), around, "cleanup reached through a symlink");
    assert_eq!(store.load::<String>(&key("k")).unwrap().unwrap().value(), "live");
    assert_eq!(names(&dir), [".k.lock", "k"]);
}

#[test]
fn cleanup_reports_a_temp_named_directory_and_leaves_it_alone() {
    let tree = Tree::new();
    let dir = tree.store_dir();
    std::fs::create_dir(&dir).unwrap();
    let store = Store::open(&dir).unwrap();
    let planted = dir.join(".k.Ab3dE5gH.tmp");
    std::fs::create_dir(&planted).unwrap();
    std::fs::write(planted.join("inside"), b"x").unwrap();
    let stale = dir.join(".j.Zz9yY8xX.tmp");
    std::fs::write(&stale, b"half a stash").unwrap();
    let planted_before = snapshot(&planted, None);
    let around = tree.around_store();

    // unlink(2) of a directory fails (EISDIR on Linux): reported, not
    // recursed into, and the real leftover is still removed.
    match store.cleanup() {
        Err(Error::Io { op: IoOp::Remove, path, .. }) => assert_eq!(path, planted),
        other => panic!("expected a remove error for the directory, got {other:?}"),
    }
    assert!(!stale.exists(), "the real leftover was not removed");
    assert_eq!(snapshot(&planted, None), planted_before, "the planted directory changed");
    assert_eq!(tree.around_store(), around);
    assert_eq!(temp_files(&dir), [".k.Ab3dE5gH.tmp"]);
}

#[test]
fn store_directory_removed_under_a_held_lock_is_not_recreated_by_save() {
    let tree = Tree::new();
    let dir = tree.store_dir();
    let store = Store::open(&dir).unwrap();
    let k = key("k");
    let held = store.lock(&k).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let around = tree.around_store();

    let saved = held.save(&"payload");
    assert_io(saved, IoOp::CreateTemp, &dir, Os::Kind(io::ErrorKind::NotFound), "save");
    assert!(!dir.exists(), "save recreated the directory under a held lock");
    assert_eq!(tree.around_store(), around, "something outside the store changed");
    drop(held);
}

/// `Error::Io`'s source is documented as "the OS error", and for every other
/// operation `raw_os_error()` gives the errno. For `CreateTemp` it does not:
/// `OsFs::create_temp` passes on tempfile's error, an `io::Error` wrapping a
/// private `PathError` (same kind, errno hidden, and `PathError::source`
/// returns the inner error's source, i.e. None), so neither `raw_os_error()`
/// nor the source chain reaches the errno. ENOSPC from inode exhaustion,
/// EROFS, EDQUOT, EMFILE at temp creation are only known by kind and text.
#[test]
fn create_temp_error_keeps_the_os_errno() {
    let tree = Tree::new();
    let dir = tree.store_dir();
    let store = Store::open(&dir).unwrap();
    let held = store.lock(&key("k")).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    match held.save(&"payload") {
        Err(Error::Io { op: IoOp::CreateTemp, source, .. }) => {
            assert_eq!(source.raw_os_error(), Some(libc::ENOENT), "{source:?}");
        }
        other => panic!("expected a CreateTemp error, got {other:?}"),
    }
}

// --- Store directories that cannot be written (as root) -----------------

/// Runs `args` and says why it failed, if it did.
fn run(program: &str, args: &[&std::ffi::OsStr]) -> Result<(), String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {:?} failed ({}): {}",
            args,
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Undoes a bind mount (lazily) on drop.
struct BindMount(PathBuf);

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Clears the immutable attribute on drop, so the tree can be removed.
struct Immutable(PathBuf);

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

/// A stash `k` = "before" in a fresh tree, its bytes and the store.
fn saved_tree() -> (Tree, Store, Vec<u8>) {
    let tree = Tree::new();
    let store = Store::open(tree.store_dir()).unwrap();
    let receipt = store.save(&key("k"), &"before").unwrap();
    let bytes = std::fs::read(&receipt.path).unwrap();
    (tree, store, bytes)
}

/// Reads still work and show the old stash, untouched.
fn assert_reads_work(store: &Store, old: &[u8]) {
    let k = key("k");
    assert_eq!(store.load::<String>(&k).unwrap().unwrap().value(), "before");
    assert_eq!(std::fs::read(store.path_of(&k)).unwrap(), old);
    assert!(store.verify().unwrap().iter().all(|r| r.result.is_ok()));
    assert_eq!(store.list().unwrap().len(), 1);
    assert!(store.cleanup().unwrap().is_empty());
}

#[test]
fn read_only_bind_mounted_store_directory_refuses_every_write() {
    let (tree, store, old) = saved_tree();
    let dir = tree.store_dir();
    let inside = snapshot(&dir, None);
    let around = tree.around_store();

    let d = dir.as_os_str();
    if let Err(why) = run("mount", &["--bind".as_ref(), d, d]) {
        println!("skipped: {why}");
        return;
    }
    let mounted = BindMount(dir.clone());
    if let Err(why) = run("mount", &["-o".as_ref(), "remount,ro,bind".as_ref(), d]) {
        println!("skipped: {why}");
        return;
    }
    // Control: the directory really is read-only, even for root.
    let probe = std::fs::write(dir.join("probe"), b"x");
    assert_eq!(probe.unwrap_err().raw_os_error(), Some(EROFS));

    let k = key("k");
    let lock = dir.join(".k.lock");
    assert_io(store.save(&k, &"after"), IoOp::Lock, &lock, Os::Errno(EROFS), "save");
    let fresh_lock = dir.join(".fresh.lock");
    let fresh = store.save(&key("fresh"), &"new");
    assert_io(fresh, IoOp::Lock, &fresh_lock, Os::Errno(EROFS), "first save");
    assert_io(store.clear(&k), IoOp::Lock, &lock, Os::Errno(EROFS), "clear");
    assert_io(store.quarantine(&k), IoOp::Lock, &lock, Os::Errno(EROFS), "quarantine");
    assert_io(store.lock(&k), IoOp::Lock, &lock, Os::Errno(EROFS), "lock");
    assert_reads_work(&store, &old);

    drop(mounted);
    assert_eq!(snapshot(&dir, None), inside, "the store changed");
    assert_eq!(tree.around_store(), around, "something outside the store changed");
}

#[test]
fn immutable_store_directory_refuses_every_write() {
    let (tree, store, old) = saved_tree();
    let dir = tree.store_dir();
    if let Err(why) = run("chattr", &["+i".as_ref(), dir.as_os_str()]) {
        println!("skipped: {why}");
        return;
    }
    let immutable = Immutable(dir.clone());
    // Control: not even root may add an entry.
    let probe = std::fs::write(dir.join("probe"), b"x");
    assert_eq!(probe.unwrap_err().raw_os_error(), Some(EPERM));
    let inside = snapshot(&dir, None);
    let around = tree.around_store();

    let k = key("k");
    let path = store.path_of(&k);
    // The existing lock file can be opened; the temp file cannot be made.
    // (Only the kind is checked for CreateTemp: its source does not carry the
    // errno, see `create_temp_error_keeps_the_os_errno`.)
    let perm = Os::Kind(io::ErrorKind::PermissionDenied);
    assert_io(store.save(&k, &"after"), IoOp::CreateTemp, &dir, perm, "save");
    {
        let held = store.lock(&k).unwrap();
        let saved = held.save(&"after");
        assert_io(saved, IoOp::CreateTemp, &dir, perm, "KeyLock::save");
    }
    let fresh = store.save(&key("fresh"), &"new");
    assert_io(fresh, IoOp::Lock, &dir.join(".fresh.lock"), Os::Errno(EPERM), "first save");
    assert_io(store.clear(&k), IoOp::Remove, &path, Os::Errno(EPERM), "clear");
    assert_rename_refused(store.quarantine(&k), &path, Os::Errno(EPERM), "quarantine");
    assert_reads_work(&store, &old);

    assert_eq!(snapshot(&dir, None), inside, "the store changed");
    assert_eq!(tree.around_store(), around, "something outside the store changed");
    drop(immutable);
}

// --- Permission checks, as nobody ---------------------------------------

/// Runs `hostile_dirs_child` as `nobody` with `case`, or says why it cannot.
fn as_nobody(case: &str, root: &Path) -> Result<Output, String> {
    let exe = std::env::current_exe().unwrap();
    let child = self_command("hostile_dirs_child");
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", &NOBODY.to_string(), "--regid", &NOBODY.to_string(), "--clear-groups"])
        .arg(&exe)
        .args(child.get_args())
        .env(CASE_VAR, case)
        .env(ROOT_VAR, root);
    cmd.output().map_err(|e| format!("cannot run setpriv: {e}"))
}

/// Whether a child can run as `nobody` at all (setpriv present, this binary
/// reachable and executable by nobody), or why not.
fn nobody_works(tree: &Tree) -> Result<(), String> {
    let output = as_nobody("probe", tree.root())?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if output.status.success() && stdout.contains("1 passed") {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(format!("cannot run a child as uid {NOBODY}: {}: {}", output.status, stderr.trim()))
    }
}

/// The child: one permission case, as nobody. Panics on any surprise.
#[test]
fn hostile_dirs_child() {
    let (Ok(case), Ok(root)) = (std::env::var(CASE_VAR), std::env::var(ROOT_VAR)) else {
        return;
    };
    let uid = effective_uid();
    assert_eq!(uid, NOBODY, "privileges were not dropped");
    let dir = Path::new(&root).join("store");
    let k = key("k");
    match case.as_str() {
        "probe" => {}
        "read-only-dir" => {
            let store = Store::open(&dir).unwrap();
            let receipt = store.save(&k, &"before").unwrap();
            let old = std::fs::read(&receipt.path).unwrap();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
            // Control: the mode really applies to us.
            let probe = std::fs::write(dir.join("probe"), b"x").unwrap_err();
            assert_eq!(probe.kind(), io::ErrorKind::PermissionDenied);

            let denied = Os::Kind(io::ErrorKind::PermissionDenied);
            let path = store.path_of(&k);
            assert_io(store.save(&k, &"after"), IoOp::CreateTemp, &dir, denied, "save");
            let fresh = store.save(&key("fresh"), &"new");
            assert_io(fresh, IoOp::Lock, &dir.join(".fresh.lock"), denied, "first save");
            assert_io(store.clear(&k), IoOp::Remove, &path, denied, "clear");
            assert_rename_refused(store.quarantine(&k), &path, denied, "quarantine");
            assert_reads_work(&store, &old);
            assert_eq!(names(&dir), [".k.lock", "k"]);
        }
        "unreadable-stash" => {
            let store = Store::open(&dir).unwrap();
            let path = store.path_of(&k);
            // Control: the directory is readable, the file is not.
            assert_eq!(names(&dir), [".k.lock", "k"]);
            let probe = std::fs::read(&path).unwrap_err();
            assert_eq!(probe.kind(), io::ErrorKind::PermissionDenied);

            let denied = Os::Kind(io::ErrorKind::PermissionDenied);
            assert_io(store.load::<String>(&k), IoOp::Open, &path, denied, "load");
            let report = store.verify().unwrap();
            assert_eq!(report.len(), 1);
            let result = report.into_iter().next().unwrap().result;
            assert_io(result, IoOp::Open, &path, denied, "verify");
            let listed = store.list().unwrap();
            assert_eq!(listed.len(), 1);
            let header = listed.into_iter().next().unwrap().header;
            assert_io(header, IoOp::Open, &path, denied, "list");
            // Writing needs the root-owned lock file: refused too.
            let lock = dir.join(".k.lock");
            assert_io(store.save(&k, &"mine"), IoOp::Lock, &lock, denied, "save");
            assert!(store.cleanup().unwrap().is_empty());
        }
        other => panic!("unknown case {other}"),
    }
}

#[test]
fn read_only_store_directory_refuses_every_write_for_a_non_root_user() {
    let tree = Tree::new();
    if let Err(why) = nobody_works(&tree) {
        println!("skipped: {why}");
        return;
    }
    let dir = tree.store_dir();
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(NOBODY), Some(NOBODY)).unwrap();
    let around = tree.around_store();

    let output = as_nobody("read-only-dir", tree.root()).unwrap();
    assert_child_passed("read-only-dir", &output);

    assert_eq!(tree.around_store(), around, "something outside the store changed");
    assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o7777, 0o555);
    assert_eq!(names(&dir), [".k.lock", "k"]);
    let store = Store::open(&dir).unwrap();
    assert_eq!(store.load::<String>(&key("k")).unwrap().unwrap().value(), "before");
}

#[test]
fn unreadable_stash_is_an_open_error_for_a_non_root_user_and_loads_for_root() {
    let tree = Tree::new();
    if let Err(why) = nobody_works(&tree) {
        println!("skipped: {why}");
        return;
    }
    let dir = tree.store_dir();
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let store = Store::open(&dir).unwrap();
    let k = key("k");
    let receipt = store.save(&k, &"secret value").unwrap();
    std::fs::set_permissions(&receipt.path, std::fs::Permissions::from_mode(0o000)).unwrap();
    // Root reads it regardless of the mode.
    assert_eq!(store.load::<String>(&k).unwrap().unwrap().value(), "secret value");
    let inside = snapshot(&dir, None);
    let around = tree.around_store();

    let output = as_nobody("unreadable-stash", tree.root()).unwrap();
    assert_child_passed("unreadable-stash", &output);

    assert_eq!(snapshot(&dir, None), inside, "the store changed");
    assert_eq!(tree.around_store(), around, "something outside the store changed");
    assert_eq!(std::fs::metadata(&receipt.path).unwrap().mode() & 0o7777, 0);
    assert_eq!(store.load::<String>(&k).unwrap().unwrap().value(), "secret value");
}
