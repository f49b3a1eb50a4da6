//! What the benchmarks compare, shared by `benches/compare.rs` and
//! `examples/bench_report.rs`: realistic payloads, the syscall floor written
//! by hand, and the alternatives a user would pick instead.
#![allow(dead_code, missing_docs)]

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use safestash::{StashKey, Store, dictionary::Field};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};

pub const KIB: usize = 1 << 10;
pub const MIB: usize = 1 << 20;

/// One row of a large table stash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub id: u64,
    pub customer: String,
    pub amount: f64,
    pub placed: String,
    pub status: String,
    pub tags: Vec<String>,
}

pub fn record(i: u64) -> Record {
    Record {
        id: i,
        customer: format!("customer-{:06}", i % 100_000),
        amount: (i % 10_000) as f64 * 1.25,
        placed: format!("2026-{:02}-{:02}T{:02}:{:02}:00Z", i % 12 + 1, i % 28 + 1, i % 24, i % 60),
        status: ["open", "shipped", "returned"][(i % 3) as usize].to_owned(),
        tags: (0..i % 4).map(|t| format!("tag{t}")).collect(),
    }
}

/// A field dictionary of about `bytes` of JSON.
pub fn dictionary(bytes: usize) -> Vec<Field> {
    let mut fields = Vec::new();
    let mut size = 2;
    let mut i = 0;
    while size < bytes {
        let f = Field::new(format!("column_{i}"))
            .with("label", format!("Column {i}"))
            .with("notes", "Entered by the data steward; keep in sync with the source system.")
            .with("type_override", ["text", "numeric", "timestamp", "date"][i % 4]);
        size += serde_json::to_vec(&f).map(|v| v.len() + 1).unwrap_or(0);
        fields.push(f);
        i += 1;
    }
    fields
}

/// A table of records of about `bytes` of JSON.
pub fn table(bytes: usize) -> Vec<Record> {
    let per = serde_json::to_vec(&record(1)).map(|v| v.len() + 1).unwrap_or(100);
    (0..(bytes / per).max(1) as u64).map(record).collect()
}

/// The size classes of the comparison, with their payload kind.
pub const SIZES: [(usize, &str); 4] =
    [(KIB, "1 KiB"), (64 * KIB, "64 KiB"), (MIB, "1 MiB"), (64 * MIB, "64 MiB")];

fn fsync_dir(dir: &Path) {
    File::open(dir).and_then(|d| d.sync_all()).expect("fsync dir");
}

/// Every way of stashing a value, behind one interface.
pub trait Contender<T> {
    fn name(&self) -> &'static str;
    fn save(&mut self, value: &T);
    fn load(&mut self) -> T;
    /// Whether `load` verifies a checksum.
    fn verifies(&self) -> bool;
}

pub struct Safestash {
    store: Store,
    key: StashKey,
}

impl Safestash {
    pub fn new(dir: &Path) -> Safestash {
        Safestash {
            store: Store::open(dir.join("safestash")).expect("open"),
            key: StashKey::new("bench").expect("key"),
        }
    }

    pub fn clear(&mut self) {
        self.store.clear(&self.key).expect("clear");
    }
}

impl<T: Serialize + DeserializeOwned> Contender<T> for Safestash {
    fn name(&self) -> &'static str {
        "safestash"
    }
    fn save(&mut self, value: &T) {
        self.store.save(&self.key, value).expect("save");
    }
    fn load(&mut self) -> T {
        self.store.load(&self.key).expect("load").expect("present").into_value()
    }
    fn verifies(&self) -> bool {
        true
    }
}

/// The floor: the same durable protocol by hand, std only, no envelope.
/// Save: serialize, open O_EXCL 0600, write, fsync, rename, fsync dir.
/// Load: read, sha256 (as the library verifies), parse.
pub struct Floor {
    dir: PathBuf,
    n: u64,
}

impl Floor {
    pub fn new(dir: &Path) -> Floor {
        let dir = dir.join("floor");
        std::fs::create_dir_all(&dir).expect("mkdir");
        Floor { dir, n: 0 }
    }

    pub fn clear(&mut self) {
        std::fs::remove_file(self.dir.join("bench")).expect("remove");
        fsync_dir(&self.dir);
    }

    /// Open O_EXCL 0600, one write, fsync, rename, fsync dir.
    fn write_durably(&mut self, bytes: &[u8]) {
        self.n += 1;
        let tmp = self.dir.join(format!(".bench.{}.tmp", self.n));
        let mut f =
            OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).expect("open");
        f.write_all(bytes).expect("write");
        f.sync_all().expect("fsync");
        drop(f);
        std::fs::rename(&tmp, self.dir.join("bench")).expect("rename");
        fsync_dir(&self.dir);
    }
}

impl<T: Serialize + DeserializeOwned> Contender<T> for Floor {
    fn name(&self) -> &'static str {
        "floor (by hand)"
    }
    fn save(&mut self, value: &T) {
        let bytes = serde_json::to_vec(value).expect("serialize");
        self.write_durably(&bytes);
    }
    fn load(&mut self) -> T {
        let mut bytes = Vec::new();
        File::open(self.dir.join("bench"))
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .expect("read");
        let digest = Sha256::digest(&bytes);
        std::hint::black_box(digest);
        serde_json::from_slice(&bytes).expect("parse")
    }
    fn verifies(&self) -> bool {
        true
    }
}

/// The floor plus the checksum: the same syscalls, and a SHA-256 over the
/// serialized bytes before they are written. What safestash cannot go
/// below without dropping its checksum.
pub struct FloorSha(Floor);

impl FloorSha {
    pub fn new(dir: &Path) -> FloorSha {
        let dir = dir.join("floor-sha256");
        std::fs::create_dir_all(&dir).expect("mkdir");
        FloorSha(Floor { dir, n: 0 })
    }
}

impl<T: Serialize + DeserializeOwned> Contender<T> for FloorSha {
    fn name(&self) -> &'static str {
        "floor + sha256"
    }
    fn save(&mut self, value: &T) {
        let bytes = serde_json::to_vec(value).expect("serialize");
        std::hint::black_box(Sha256::digest(&bytes));
        self.0.write_durably(&bytes);
    }
    fn load(&mut self) -> T {
        Contender::<T>::load(&mut self.0)
    }
    fn verifies(&self) -> bool {
        true
    }
}

/// The next number of a xorshift64 sequence (`state` must not be 0): cheap
/// randomness for temp names and run orders, where no crate is needed.
pub fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// The floor with every promise a safestash save keeps on top of it, by
/// hand: the checksum, and the envelope's framing (`SAFESTASH 1`, the
/// header line, the trailer with length and SHA-256), the key's lock (open
/// `.bench.lock`, `flock`, a no-follow stat of the stash, held until the
/// directory is fsynced: writers of one key never interleave), and a
/// unique random temp name as long as safestash's (writers never share a
/// temp file). Otherwise the floor's syscalls. What safestash cannot go
/// below without dropping a promise.
pub struct FloorPromised {
    dir: PathBuf,
    prefix: Vec<u8>,
    seed: u64,
}

impl FloorPromised {
    pub fn new(dir: &Path) -> FloorPromised {
        let dir = dir.join("floor-promised");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let key = StashKey::new("bench").expect("key");
        let header = safestash::envelope::Header::new(key, "value", None, SystemTime::now())
            .expect("header");
        let empty = safestash::envelope::encode(&header, b"");
        let prefix = empty[..empty.len() - safestash::envelope::TRAILER_LEN].to_vec();
        let seed = SystemTime::now().duration_since(UNIX_EPOCH).expect("time").as_nanos() as u64;
        FloorPromised { dir, prefix, seed: seed | 1 }
    }

    /// `.bench.XXXXXXXX.tmp`, eight random letters and digits (xorshift).
    fn temp_name(&mut self) -> PathBuf {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let mut name = *b".bench.XXXXXXXX.tmp";
        for c in &mut name[7..15] {
            *c = ALPHABET[(xorshift(&mut self.seed) % ALPHABET.len() as u64) as usize];
        }
        self.dir.join(std::str::from_utf8(&name).expect("ascii"))
    }
}

impl<T: Serialize + DeserializeOwned> Contender<T> for FloorPromised {
    fn name(&self) -> &'static str {
        "floor + promises"
    }
    fn save(&mut self, value: &T) {
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(self.dir.join(".bench.lock"))
            .expect("lock file");
        fs2::FileExt::lock_exclusive(&lock).expect("flock");
        let stash = self.dir.join("bench");
        std::hint::black_box(std::fs::symlink_metadata(&stash).ok());
        let mut bytes = self.prefix.clone();
        serde_json::to_writer(&mut bytes, value).expect("serialize");
        let payload_len = bytes.len() - self.prefix.len();
        write!(bytes, "\nSAFESTASH-END len={payload_len:020} sha256=").expect("trailer");
        let digest = Sha256::digest(&bytes);
        for b in digest {
            write!(bytes, "{b:02x}").expect("hex");
        }
        bytes.push(b'\n');
        let tmp = self.temp_name();
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .expect("open");
        f.write_all(&bytes).expect("write");
        f.sync_all().expect("fsync");
        drop(f);
        std::fs::rename(&tmp, &stash).expect("rename");
        fsync_dir(&self.dir);
        drop(lock);
    }
    fn load(&mut self) -> T {
        let bytes = std::fs::read(self.dir.join("bench")).expect("read");
        let decoded = safestash::envelope::decode(&bytes).expect("decode");
        serde_json::from_slice(decoded.payload).expect("parse")
    }
    fn verifies(&self) -> bool {
        true
    }
}

/// atomic-write-file: temp file, fsync, rename, fsync dir, by the crate.
pub struct AtomicWrite {
    path: PathBuf,
}

impl AtomicWrite {
    pub fn new(dir: &Path) -> AtomicWrite {
        let dir = dir.join("atomic-write-file");
        std::fs::create_dir_all(&dir).expect("mkdir");
        AtomicWrite { path: dir.join("bench") }
    }
}

impl<T: Serialize + DeserializeOwned> Contender<T> for AtomicWrite {
    fn name(&self) -> &'static str {
        "atomic-write-file"
    }
    fn save(&mut self, value: &T) {
        let mut f = atomic_write_file::AtomicWriteFile::open(&self.path).expect("open");
        serde_json::to_writer(std::io::BufWriter::new(&mut f), value).expect("write");
        f.commit().expect("commit");
    }
    fn load(&mut self) -> T {
        serde_json::from_slice(&std::fs::read(&self.path).expect("read")).expect("parse")
    }
    fn verifies(&self) -> bool {
        false
    }
}

/// tempfile: NamedTempFile + sync_all + persist + directory fsync by hand.
pub struct TempfilePersist {
    dir: PathBuf,
}

impl TempfilePersist {
    pub fn new(dir: &Path) -> TempfilePersist {
        let dir = dir.join("tempfile");
        std::fs::create_dir_all(&dir).expect("mkdir");
        TempfilePersist { dir }
    }
}

impl<T: Serialize + DeserializeOwned> Contender<T> for TempfilePersist {
    fn name(&self) -> &'static str {
        "tempfile persist"
    }
    fn save(&mut self, value: &T) {
        let mut f = tempfile::NamedTempFile::new_in(&self.dir).expect("temp");
        serde_json::to_writer(std::io::BufWriter::new(f.as_file_mut()), value).expect("write");
        f.as_file().sync_all().expect("fsync");
        f.persist(self.dir.join("bench")).expect("persist");
        fsync_dir(&self.dir);
    }
    fn load(&mut self) -> T {
        serde_json::from_slice(&std::fs::read(self.dir.join("bench")).expect("read"))
            .expect("parse")
    }
    fn verifies(&self) -> bool {
        false
    }
}

/// SQLite through rusqlite: WAL, synchronous=FULL, one row per stash.
pub struct Sqlite {
    conn: rusqlite::Connection,
}

impl Sqlite {
    pub fn new(dir: &Path) -> Sqlite {
        let conn = rusqlite::Connection::open(dir.join("stashes.sqlite")).expect("open");
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS stash (key TEXT PRIMARY KEY, value BLOB NOT NULL);",
        )
        .expect("setup");
        Sqlite { conn }
    }
}

impl<T: Serialize + DeserializeOwned> Contender<T> for Sqlite {
    fn name(&self) -> &'static str {
        "sqlite (WAL, FULL)"
    }
    fn save(&mut self, value: &T) {
        let bytes = serde_json::to_vec(value).expect("serialize");
        self.conn
            .execute("INSERT OR REPLACE INTO stash (key, value) VALUES ('bench', ?1)", [bytes])
            .expect("insert");
    }
    fn load(&mut self) -> T {
        let bytes: Vec<u8> = self
            .conn
            .query_row("SELECT value FROM stash WHERE key = 'bench'", [], |r| r.get(0))
            .expect("select");
        serde_json::from_slice(&bytes).expect("parse")
    }
    fn verifies(&self) -> bool {
        false
    }
}

/// std::fs::write: not durable, not atomic; what fsync costs, by contrast.
pub struct FsWrite {
    path: PathBuf,
}

impl FsWrite {
    pub fn new(dir: &Path) -> FsWrite {
        let dir = dir.join("fs-write");
        std::fs::create_dir_all(&dir).expect("mkdir");
        FsWrite { path: dir.join("bench") }
    }
}

impl<T: Serialize + DeserializeOwned> Contender<T> for FsWrite {
    fn name(&self) -> &'static str {
        "std::fs::write (no fsync)"
    }
    fn save(&mut self, value: &T) {
        std::fs::write(&self.path, serde_json::to_vec(value).expect("serialize")).expect("write");
    }
    fn load(&mut self) -> T {
        serde_json::from_slice(&std::fs::read(&self.path).expect("read")).expect("parse")
    }
    fn verifies(&self) -> bool {
        false
    }
}

/// Every contender, the library first and the floor second.
pub fn contenders<T: Serialize + DeserializeOwned>(dir: &Path) -> Vec<Box<dyn Contender<T>>> {
    vec![
        Box::new(Safestash::new(dir)),
        Box::new(Floor::new(dir)),
        Box::new(FloorSha::new(dir)),
        Box::new(FloorPromised::new(dir)),
        Box::new(AtomicWrite::new(dir)),
        Box::new(TempfilePersist::new(dir)),
        Box::new(Sqlite::new(dir)),
        Box::new(FsWrite::new(dir)),
    ]
}

/// A directory of `n` stashes (written without fsync: this measures
/// listing, not saving) and `temps` stale temp files.
pub fn populated_store(dir: &Path, n: usize, temps: usize) -> Store {
    std::fs::create_dir_all(dir).expect("mkdir");
    let now = std::time::SystemTime::now();
    for i in 0..n {
        let key = StashKey::new(format!("stash-{i:06}")).expect("key");
        let header = safestash::envelope::Header::new(key.clone(), "value", Some("bench"), now)
            .expect("header");
        let bytes = safestash::envelope::encode(&header, br#"{"n":1}"#);
        std::fs::write(dir.join(key.as_str()), bytes).expect("write");
    }
    for i in 0..temps {
        std::fs::write(dir.join(format!(".stash-{i:06}.Tmp{i:05}.tmp")), b"half").expect("write");
    }
    Store::open(dir).expect("open")
}
