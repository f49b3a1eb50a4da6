//! A directory stash larger than the whole-read limit (256 MiB) loads in
//! one pass: verified and deserialized together, its bytes read once
//! (counted by the kernel, `/proc/self/io`'s `rchar`), and a damaged one
//! is `Corrupt`, never a value, even when the damage still parses.

mod bigvalue;

use bigvalue::{Big, BigCheck, PIECE};
use safestash::{Error, StashKey, Store};

/// Bytes this process has read through read(2) and friends so far.
fn rchar() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").expect("/proc/self/io");
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("rchar")
}

#[test]
fn a_stash_over_256_mib_loads_in_one_pass_and_damage_is_corrupt() {
    if std::fs::metadata("/proc/self/io").is_err() {
        eprintln!("skipping: no /proc/self/io to count the bytes read");
        return;
    }
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let store = Store::open(dir.path()).unwrap();
    let key = StashKey::new("large").unwrap();
    let pieces = (260u64 << 20) / PIECE as u64;
    let size = store.save(&key, &Big(pieces)).unwrap().bytes;
    assert!(size > 256 << 20);

    let before = rchar();
    assert_eq!(store.load::<BigCheck>(&key).unwrap().unwrap().value().0, pieces);
    let read = rchar() - before;
    assert!(
        read < size + size / 4,
        "{read} bytes read to load a stash of {size}: its bytes were read more than once"
    );

    // One byte of a piece changed to another letter: still a valid payload.
    let path = store.path_of(&key);
    let mut file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    use std::io::{Read, Seek, SeekFrom, Write};
    let at = size / 2;
    let mut byte = [0u8];
    file.seek(SeekFrom::Start(at)).unwrap();
    file.read_exact(&mut byte).unwrap();
    assert!(byte[0].is_ascii_lowercase(), "inside a piece");
    file.seek(SeekFrom::Start(at)).unwrap();
    file.write_all(&[if byte[0] == b'a' { b'b' } else { b'a' }]).unwrap();
    drop(file);
    match store.load::<serde::de::IgnoredAny>(&key) {
        Err(Error::Corrupt { .. }) => {}
        other => panic!("a damaged stash must be Corrupt: {:?}", other.map(|_| "a value")),
    }
}
