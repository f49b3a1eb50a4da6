//! Things planted in the store's directory by someone else: symlinks out of
//! the store, directories and FIFOs at stash paths. They are refused, never
//! followed, replaced or blocked on.

mod common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use safestash::{Error, IoOp, StashKey, Store, fs::FileKind};

use common::{names, temp_files};

const SECRET: &[u8] = b"root:x:0:0:root:/root:/bin/bash\n";

fn key() -> StashKey {
    StashKey::new("k").unwrap()
}

/// A store directory and, beside it, an "outside" directory with one file.
fn setup() -> (tempfile::TempDir, Store, PathBuf, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("store");
    let outside = root.path().join("outside");
    std::fs::create_dir(&dir).unwrap();
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), SECRET).unwrap();
    let store = Store::open(&dir).unwrap();
    (root, store, dir, outside)
}

fn assert_not_a_file<T: std::fmt::Debug>(
    result: safestash::Result<T>,
    path: &Path,
    kind: FileKind,
    what: &str,
) {
    match result {
        Err(Error::NotAFile { path: p, found, expected: FileKind::File }) => {
            assert_eq!(p, path, "{what}");
            assert_eq!(found, kind, "{what}");
        }
        other => panic!("{what}: expected NotAFile({kind}), got {other:?}"),
    }
}

/// Runs `f` on another thread and fails if it takes more than five seconds
/// (a blocking open of a FIFO would never return).
fn within_5s<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(5)).unwrap_or_else(|_| panic!("{what} hung on a FIFO"))
}

#[test]
fn symlink_at_a_stash_path_is_refused_and_not_followed() {
    let (_root, store, dir, outside) = setup();
    let target = outside.join("secret");
    let path = store.path_of(&key());
    symlink(&target, &path).unwrap();

    assert_not_a_file(store.save(&key(), &"overwrite"), &path, FileKind::Symlink, "save");
    assert_not_a_file(store.load::<String>(&key()), &path, FileKind::Symlink, "load");
    assert_not_a_file(store.clear(&key()), &path, FileKind::Symlink, "clear");
    assert_not_a_file(store.quarantine(&key()), &path, FileKind::Symlink, "quarantine");
    // list and verify report it without reading through it.
    let listed = store.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert!(matches!(listed[0].header, Err(Error::NotAFile { found: FileKind::Symlink, .. })));
    let report = store.verify().unwrap();
    assert!(matches!(report[0].result, Err(Error::NotAFile { found: FileKind::Symlink, .. })));

    assert_eq!(std::fs::read(&target).unwrap(), SECRET);
    assert_eq!(names(&outside), ["secret"]);
    assert_eq!(std::fs::read_link(&path).unwrap(), target);
    assert_eq!(temp_files(&dir), Vec::<String>::new());
}

#[test]
fn dangling_symlink_at_a_stash_path_creates_nothing_outside() {
    let (_root, store, dir, outside) = setup();
    let target = outside.join("planted");
    let path = store.path_of(&key());
    symlink(&target, &path).unwrap();

    assert_not_a_file(store.save(&key(), &"payload"), &path, FileKind::Symlink, "save");
    assert_not_a_file(store.load::<String>(&key()), &path, FileKind::Symlink, "load");
    assert_not_a_file(store.clear(&key()), &path, FileKind::Symlink, "clear");
    assert!(!target.exists());
    assert_eq!(names(&outside), ["secret"]);
    assert_eq!(temp_files(&dir), Vec::<String>::new());
}

#[test]
fn hard_link_at_a_stash_path_is_replaced_not_written_through() {
    let (_root, store, dir, outside) = setup();
    let target = outside.join("secret");
    let path = store.path_of(&key());
    std::fs::hard_link(&target, &path).unwrap();

    // A hard link is a regular file: load reads it as garbage, save replaces
    // the directory entry, clear unlinks only the entry. The outside file's
    // bytes never change.
    assert!(matches!(store.load::<String>(&key()), Err(Error::Corrupt { .. })));
    store.save(&key(), &"payload").unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), SECRET);
    assert_eq!(store.load::<String>(&key()).unwrap().unwrap().value(), "payload");
    std::fs::remove_file(&path).unwrap();
    std::fs::hard_link(&target, &path).unwrap();
    assert!(store.clear(&key()).unwrap());
    assert_eq!(std::fs::read(&target).unwrap(), SECRET);
    assert_eq!(names(&outside), ["secret"]);
    assert_eq!(temp_files(&dir), Vec::<String>::new());
}

#[test]
fn symlink_at_the_lock_path_is_not_followed() {
    let (_root, store, dir, outside) = setup();
    let target = outside.join("secret");
    let lock = dir.join(".k.lock");
    symlink(&target, &lock).unwrap();

    match store.save(&key(), &"payload") {
        Err(Error::Io { op: IoOp::Lock, path, .. }) => assert_eq!(path, lock),
        other => panic!("expected a lock error, got {other:?}"),
    }
    assert!(store.try_lock(&key()).is_err());
    assert!(!store.path_of(&key()).exists());
    assert_eq!(std::fs::read(&target).unwrap(), SECRET);
    assert_eq!(names(&outside), ["secret"]);
    assert_eq!(temp_files(&dir), Vec::<String>::new());
}

#[test]
fn directory_at_a_stash_path_is_refused() {
    let (_root, store, dir, _outside) = setup();
    let path = store.path_of(&key());
    std::fs::create_dir(&path).unwrap();
    std::fs::write(path.join("inside"), b"x").unwrap();

    assert_not_a_file(store.save(&key(), &"payload"), &path, FileKind::Dir, "save");
    assert_not_a_file(store.load::<String>(&key()), &path, FileKind::Dir, "load");
    assert_not_a_file(store.clear(&key()), &path, FileKind::Dir, "clear");
    assert!(path.is_dir());
    assert_eq!(names(&path), ["inside"]);
    assert_eq!(temp_files(&dir), Vec::<String>::new());
}

#[test]
fn fifo_at_a_stash_path_is_refused_without_blocking() {
    let (_root, store, dir, _outside) = setup();
    let path = store.path_of(&key());
    match Command::new("mkfifo").arg(&path).status() {
        Ok(status) if status.success() => {}
        other => {
            println!("skipped: mkfifo is not available ({other:?})");
            return;
        }
    }
    let store = std::sync::Arc::new(store);

    let s = store.clone();
    let loaded = within_5s("load", move || s.load::<String>(&key()));
    assert_not_a_file(loaded, &path, FileKind::Other, "load");
    let s = store.clone();
    let saved = within_5s("save", move || s.save(&key(), &"payload"));
    assert_not_a_file(saved, &path, FileKind::Other, "save");
    let s = store.clone();
    let cleared = within_5s("clear", move || s.clear(&key()));
    assert_not_a_file(cleared, &path, FileKind::Other, "clear");
    let s = store.clone();
    let report = within_5s("verify", move || s.verify().unwrap());
    assert!(matches!(report[0].result, Err(Error::NotAFile { found: FileKind::Other, .. })));
    let s = store.clone();
    let listed = within_5s("list", move || s.list().unwrap());
    assert_eq!(listed[0].size, 0);
    assert!(listed[0].header.is_err());

    let ft = std::fs::symlink_metadata(&path).unwrap().file_type();
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&ft));
    assert_eq!(temp_files(&dir), Vec::<String>::new());
}
