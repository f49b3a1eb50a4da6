//! What a [`Store::batch`] costs, and what its one `syncfs(2)` costs next to
//! unrelated dirty data: 1,000 stashes of 1 KiB, interleaved rounds, medians.
//!
//! ```text
//! cargo run --release --example bench_batch             # 5 rounds
//! cargo run --release --example bench_batch -- 9        # 9 rounds
//! cargo run --release --example bench_batch -- 9 --only-batch  # for strace
//! BENCH_DIR=/some/disk cargo run --release --example bench_batch
//! ```
//!
//! Contenders, each round in turn:
//!
//! - 1,000 single saves (two journal commits each);
//! - one batch through [`OsFs`] (one `syncfs` for the temp files, one
//!   directory fsync);
//! - one batch through a filesystem that makes its temp files durable with
//!   one `fsync` each (the fallback where `syncfs` is not used);
//! - one batch through [`OsFs`] right after 64 MiB of unrelated data was
//!   written, not synced, to another file on the same filesystem: `syncfs`
//!   writes that back too, where the per-file fsyncs do not.
//!
//! The directory is `BENCH_DIR`, or a fresh one under `target/`.
//! `BENCH_PAUSE=100` sleeps 100 s before each timed phase. ext4 without a
//! journal does not reuse an inode freed in the last 60 s (360 s while its
//! inode-table block is not yet written back), and checks each such inode
//! of the group when it creates a file, so each phase frees 1,000 inodes
//! that the next one's creates may have to step over; a pause tells how
//! much of a batch's time that is. (On this project's disk it was little:
//! 2.8 × with 35 s pauses and 3.4 × with 100 s, against 3.1 × with none,
//! since files deleted minutes before count too; see docs/PERFORMANCE.md.)

#[path = "../benches/common/mod.rs"]
mod common;

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{KIB, dictionary};
use safestash::fs::{DirEntry, FileKind, Fs, Opened, OsFs};
use safestash::{SaveOptions, StashKey, Store};

/// [`OsFs`] with the trait's default `sync_files`: one `fsync` per file.
#[derive(Debug, Clone, Copy)]
struct FsyncEach;

impl Fs for FsyncEach {
    type File = File;
    type Reader = File;
    type Lock = safestash::fs::LockFile;

    fn create_temp(&self, dir: &Path, prefix: &str, suffix: &str) -> io::Result<(File, PathBuf)> {
        OsFs.create_temp(dir, prefix, suffix)
    }
    fn sync_file(&self, file: &mut File) -> io::Result<()> {
        OsFs.sync_file(file)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        OsFs.rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        OsFs.sync_dir(dir)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        OsFs.remove_file(path)
    }
    fn open_read(&self, path: &Path) -> io::Result<Opened<File>> {
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
    fn lock(&self, path: &Path, wait: bool) -> io::Result<Option<safestash::fs::LockFile>> {
        OsFs.lock(path, wait)
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn batch<F: Fs>(store: &Store<F>, keys: &[StashKey], value: &(impl serde::Serialize + Sync)) {
    let opts = SaveOptions::new();
    let mut b = store.batch();
    for k in keys {
        b.add(k, value, &opts).expect("add");
    }
    b.commit().expect("commit");
}

fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let base: PathBuf = std::env::var_os("BENCH_DIR")
        .map(Into::into)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    std::fs::create_dir_all(&base).expect("bench dir");
    let dir = tempfile::tempdir_in(&base).expect("tempdir");
    let value = dictionary(KIB);
    let keys: Vec<StashKey> =
        (0..1000).map(|i| StashKey::new(format!("tenant-{i:05}")).expect("key")).collect();
    let singles = Store::open(dir.path().join("single")).expect("open");
    let syncfs = Store::open(dir.path().join("syncfs")).expect("open");
    let fsyncs = Store::with_fs(dir.path().join("fsync-each"), FsyncEach).expect("open");
    let noisy = Store::open(dir.path().join("syncfs-noisy")).expect("open");
    if std::env::args().nth(2).as_deref() == Some("--only-batch") {
        // For strace and /usr/bin/time: nothing but batches through OsFs.
        for round in 0..=rounds {
            let t = Instant::now();
            batch(&syncfs, &keys, &value);
            eprintln!("round {round}: one batch {:?}", t.elapsed());
        }
        return;
    }
    let pause = match std::env::var("BENCH_PAUSE") {
        Err(_) => Duration::ZERO,
        Ok(p) => p
            .parse::<f64>()
            .ok()
            .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
            .unwrap_or_else(|| panic!("BENCH_PAUSE={p:?}: expected seconds, like 100 or 2.5")),
    };
    let junk = vec![0x5au8; 64 << 20];
    let mut times: [Vec<Duration>; 4] = Default::default();
    for round in 0..=rounds {
        std::thread::sleep(pause);
        let t = Instant::now();
        for k in &keys {
            singles.save(k, &value).expect("save");
        }
        let single = t.elapsed();
        std::thread::sleep(pause);
        let t = Instant::now();
        batch(&syncfs, &keys, &value);
        let one = t.elapsed();
        std::thread::sleep(pause);
        let t = Instant::now();
        batch(&fsyncs, &keys, &value);
        let each = t.elapsed();
        // Unrelated dirty data on the same filesystem, then the batch.
        File::create(dir.path().join("unrelated"))
            .and_then(|mut f| f.write_all(&junk))
            .expect("junk");
        std::thread::sleep(pause);
        let t = Instant::now();
        batch(&noisy, &keys, &value);
        let next_to_dirty = t.elapsed();
        std::fs::remove_file(dir.path().join("unrelated")).expect("junk");
        eprintln!(
            "round {round}: singles {single:?}, syncfs {one:?}, fsync each {each:?}, \
             syncfs after 64 MiB dirty {next_to_dirty:?}"
        );
        if round > 0 {
            // Round 0 creates the lock files and the stashes.
            for (v, d) in times.iter_mut().zip([single, one, each, next_to_dirty]) {
                v.push(d);
            }
        }
    }
    let [single, one, each, dirty] = times.map(median);
    println!("| 1,000 × 1 KiB | median | single saves ÷ it |");
    println!("|---|---:|---:|");
    for (name, d) in [
        ("1,000 single saves", single),
        ("one batch, one syncfs (OsFs)", one),
        ("one batch, one fsync per temp file", each),
        ("one batch, one syncfs, 64 MiB of unrelated dirty data", dirty),
    ] {
        println!("| {name} | {d:.2?} | {:.1} |", single.as_secs_f64() / d.as_secs_f64());
    }
}
