//! A real full filesystem: a 256 KiB tmpfs mounted for the test. A save that
//! runs out of space fails with ENOSPC naming its temp file, removes that
//! file, and leaves the old stash byte for byte; once space is freed, saving
//! works again.
//!
//! When the filesystem runs out of inodes instead, creating the temp file
//! fails: the old stash is kept just the same.
//!
//! Needs the right to mount (root, outside a restricted container); without
//! it the test prints `skipped: <reason>` and passes.

mod common;

use std::error::Error as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use safestash::{Error, IoOp, StashKey, Store};

use common::{names, temp_files};

const FS_SIZE: u64 = 256 * 1024;

/// Unmounts (lazily, so a stray open file cannot keep it busy) on drop.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Mounts a `FS_SIZE` tmpfs with `extra` options at `at`, or says why it
/// could not.
fn mount_tmpfs(at: &Path, extra: &str) -> Result<Mounted, String> {
    let output = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={FS_SIZE},mode=0700{extra}"), "tmpfs"])
        .arg(at)
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "mount -t tmpfs failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(Mounted(at.to_owned()))
}

/// Fills the filesystem with `path` until a write fails with ENOSPC, and
/// returns the file's length.
fn fill(path: &Path) -> u64 {
    let mut file = OpenOptions::new().create_new(true).write(true).open(path).unwrap();
    let chunk = [0x55u8; 4096];
    let mut len = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(n) => len += n as u64,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "filling: {e}");
                break;
            }
        }
        assert!(len <= FS_SIZE, "wrote {len} bytes into a {FS_SIZE}-byte tmpfs: not our mount");
    }
    file.sync_all().unwrap();
    len
}

/// A save that must fail for lack of space: checks the error and that
/// nothing of it is left.
fn assert_enospc(result: safestash::Result<safestash::Receipt>, dir: &Path, key: &str) {
    let err = match result {
        Err(e) => e,
        Ok(receipt) => panic!("save of {key} succeeded on a full disk: {receipt:?}"),
    };
    let display = err.to_string();
    match &err {
        Error::Io { op, path, source } => {
            assert!(matches!(op, IoOp::Write | IoOp::SyncFile), "{key}: {op} failed: {err:?}");
            assert_eq!(path.parent(), Some(dir), "{key}: error names {}", path.display());
            let name = path.file_name().unwrap().to_str().unwrap();
            assert!(
                name.starts_with(&format!(".{key}.")) && name.ends_with(".tmp"),
                "{key}: error names {name}, not a temp file of the key"
            );
            assert!(!path.exists(), "{key}: the failed temp file {name} was left behind");
            assert_eq!(source.raw_os_error(), Some(libc::ENOSPC), "{key}: {source:?}");
            assert!(display.contains(name), "{key}: message {display:?} does not name {name}");
            // The OS error is the source, reachable through the error chain.
            let chained = err.source().and_then(|s| s.downcast_ref::<io::Error>());
            assert_eq!(chained.and_then(io::Error::raw_os_error), Some(libc::ENOSPC));
        }
        other => panic!("{key}: expected Error::Io with ENOSPC, got {other:?}"),
    }
    assert_eq!(temp_files(dir), Vec::<String>::new(), "{key}: temp file left");
}

#[test]
fn a_full_disk_fails_the_save_and_keeps_the_old_stash() {
    let root = tempfile::tempdir().unwrap();
    let mnt = root.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let _mounted = match mount_tmpfs(&mnt, "") {
        Ok(m) => m,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    let dir = mnt.join("store");
    let store = Store::open(&dir).unwrap();
    let key = StashKey::new("k").unwrap();
    let old_value = vec!["small".to_owned(), "stash".to_owned()];
    let receipt = store.save(&key, &old_value).unwrap();
    let old_bytes = std::fs::read(&receipt.path).unwrap();
    let intact = |when: &str| {
        assert_eq!(std::fs::read(&receipt.path).unwrap(), old_bytes, "{when}: stash bytes changed");
        let loaded = store.load::<Vec<String>>(&key).unwrap().expect("old stash is gone");
        assert_eq!(loaded.value(), &old_value, "{when}");
        assert!(store.verify().unwrap().iter().all(|r| r.result.is_ok()), "{when}");
    };

    // Completely full: the first write into the temp file fails.
    let filler = mnt.join("filler");
    let filled = fill(&filler);
    println!("filler took {filled} of {FS_SIZE} bytes");
    assert_enospc(store.save(&key, &"x".repeat(8 * 1024)), &dir, "k");
    intact("full disk");

    // 16 KiB free, a 64 KiB value: the temp file gets part of it, then
    // the disk fills up mid-write.
    File::options().write(true).open(&filler).unwrap().set_len(filled - 16 * 1024).unwrap();
    let big = "y".repeat(64 * 1024);
    assert_enospc(store.save(&key, &big), &dir, "k");
    intact("16 KiB free");

    // A value larger than the whole filesystem, and a first save of a new key.
    assert_enospc(store.save(&key, &"z".repeat(2 * FS_SIZE as usize)), &dir, "k");
    intact("oversized value");
    let fresh = StashKey::new("fresh").unwrap();
    assert_enospc(store.save(&fresh, &big), &dir, "fresh");
    assert!(!store.path_of(&fresh).exists(), "a failed first save left a stash");
    assert!(store.load::<String>(&fresh).unwrap().is_none());
    intact("new key");
    assert!(store.cleanup().unwrap().is_empty());

    // Space freed: the same saves now succeed.
    std::fs::remove_file(&filler).unwrap();
    store.save(&key, &big).unwrap();
    store.save(&fresh, &big).unwrap();
    assert_eq!(store.load::<String>(&key).unwrap().unwrap().value(), &big);
    assert_eq!(store.load::<String>(&fresh).unwrap().unwrap().value(), &big);
    assert!(store.verify().unwrap().iter().all(|r| r.result.is_ok()));
    assert_eq!(names(&dir), [".fresh.lock", ".k.lock", "fresh", "k"]);
}

#[test]
fn running_out_of_inodes_fails_the_save_and_keeps_the_old_stash() {
    let root = tempfile::tempdir().unwrap();
    let mnt = root.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let _mounted = match mount_tmpfs(&mnt, ",nr_inodes=32") {
        Ok(m) => m,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    let dir = mnt.join("store");
    let store = Store::open(&dir).unwrap();
    let key = StashKey::new("k").unwrap();
    let receipt = store.save(&key, &"old").unwrap();
    let old_bytes = std::fs::read(&receipt.path).unwrap();

    // Use up every inode with empty files.
    let fillers = mnt.join("fillers");
    std::fs::create_dir(&fillers).unwrap();
    let mut made = 0;
    loop {
        match File::create_new(fillers.join(made.to_string())) {
            Ok(_) => made += 1,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "filling: {e}");
                break;
            }
        }
        assert!(made <= 32, "made {made} files on a 32-inode tmpfs: not our mount");
    }

    // The lock file exists, so the save gets as far as the temp file.
    match store.save(&key, &"new") {
        Err(Error::Io { op: IoOp::CreateTemp, path, source }) => {
            assert_eq!(path, dir);
            // Only the kind: this source does not carry the errno (tempfile
            // wraps it), see hostile_dirs.rs `create_temp_error_keeps_the_os_errno`.
            assert_eq!(source.kind(), io::ErrorKind::StorageFull, "{source:?}");
        }
        other => panic!("expected a CreateTemp error, got {other:?}"),
    }
    // A new key cannot even get its lock file.
    let fresh = StashKey::new("fresh").unwrap();
    match store.save(&fresh, &"new") {
        Err(Error::Io { op: IoOp::Lock, path, source }) => {
            assert_eq!(path, dir.join(".fresh.lock"));
            assert_eq!(source.raw_os_error(), Some(libc::ENOSPC), "{source:?}");
        }
        other => panic!("expected a Lock error, got {other:?}"),
    }
    assert_eq!(std::fs::read(&receipt.path).unwrap(), old_bytes);
    assert_eq!(store.load::<String>(&key).unwrap().unwrap().value(), "old");
    assert_eq!(names(&dir), [".k.lock", "k"]);

    std::fs::remove_dir_all(&fillers).unwrap();
    store.save(&key, &"new").unwrap();
    store.save(&fresh, &"new").unwrap();
    assert_eq!(store.load::<String>(&key).unwrap().unwrap().value(), "new");
    assert_eq!(names(&dir), [".fresh.lock", ".k.lock", "fresh", "k"]);
}
