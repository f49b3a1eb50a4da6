//! Damaged stashes are always `Error::Corrupt`: every single-bit flip and
//! every truncation of a real stash file, and a stash copied to another key's
//! name. Never `Ok`, never "no stash", never a claim of a newer version.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::time::{Duration, UNIX_EPOCH};

use proptest::prelude::*;
use safestash::envelope::{DecodeError, Header, decode, encode, verify_reader};
use safestash::{Corruption, Digest, Error, SaveOptions, StashKey, Store};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct FieldInfo {
    label: String,
    type_override: Option<String>,
}

type Dictionary = Vec<(String, FieldInfo)>;

fn dictionary() -> Dictionary {
    let field = |id: &str, label: &str, ty: Option<&str>| {
        (id.to_owned(), FieldInfo { label: label.to_owned(), type_override: ty.map(str::to_owned) })
    };
    vec![
        field("amount", "Amount in EUR", Some("numeric")),
        field("placed", "Order placed at", Some("timestamp")),
        field("comment", "Comment", None),
    ]
}

/// A store holding one realistic stash; returns its key and bytes.
fn saved() -> (tempfile::TempDir, Store, StashKey, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let key = StashKey::new("orders.dictionary").unwrap();
    let opts = SaveOptions::new().kind("field-dictionary").origin("upload-7f3a");
    let receipt = store.save_with(&key, &dictionary(), &opts).unwrap();
    let bytes = std::fs::read(&receipt.path).unwrap();
    assert!((300..=600).contains(&bytes.len()), "stash is {} bytes", bytes.len());
    (dir, store, key, bytes)
}

/// A short name for a corruption reason, to count which checks fired.
fn reason_name(c: &Corruption) -> &'static str {
    match c {
        Corruption::NotAStash => "not-a-stash",
        Corruption::Truncated { .. } => "truncated",
        Corruption::BadTrailer => "bad-trailer",
        Corruption::ChecksumMismatch { .. } => "checksum",
        Corruption::BadVersion => "bad-version",
        Corruption::BadHeader(_) => "bad-header",
        Corruption::LengthMismatch { .. } => "length",
        Corruption::KeyMismatch { .. } => "key",
        _ => "other",
    }
}

/// Writes each damaged variant to the stash path and loads it; every one
/// must be `Corrupt` at that path. Returns how many were tested and a tally
/// of reasons.
fn load_all(
    store: &Store,
    key: &StashKey,
    variants: impl Iterator<Item = (String, Vec<u8>)>,
) -> (usize, BTreeMap<&'static str, usize>) {
    let path = store.path_of(key);
    let mut tested = 0;
    let mut reasons = BTreeMap::new();
    let mut failures = Vec::new();
    for (what, bytes) in variants {
        std::fs::write(&path, &bytes).unwrap();
        match store.load::<Dictionary>(key) {
            Err(Error::Corrupt { path: p, reason }) if p == path => {
                *reasons.entry(reason_name(&reason)).or_insert(0) += 1;
            }
            other => failures.push(format!("{what}: {other:?}")),
        }
        tested += 1;
    }
    assert!(
        failures.is_empty(),
        "{} of {tested} damaged files did not load as Corrupt, e.g.:\n{}",
        failures.len(),
        failures[..failures.len().min(10)].join("\n")
    );
    (tested, reasons)
}

fn decode_all(
    variants: impl Iterator<Item = (String, Vec<u8>)>,
) -> (usize, BTreeMap<&'static str, usize>) {
    let mut tested = 0;
    let mut reasons = BTreeMap::new();
    let mut failures = Vec::new();
    for (what, bytes) in variants {
        match decode(&bytes) {
            Err(DecodeError::Corrupt(reason)) => {
                *reasons.entry(reason_name(&reason)).or_insert(0) += 1;
            }
            other => failures.push(format!("{what}: {other:?}")),
        }
        tested += 1;
    }
    assert!(
        failures.is_empty(),
        "{} of {tested} damaged envelopes did not decode as Corrupt, e.g.:\n{}",
        failures.len(),
        failures[..failures.len().min(10)].join("\n")
    );
    (tested, reasons)
}

fn bit_flips(bytes: &[u8]) -> impl Iterator<Item = (String, Vec<u8>)> + '_ {
    (0..bytes.len() * 8).map(move |bit| {
        let mut damaged = bytes.to_vec();
        damaged[bit / 8] ^= 1 << (bit % 8);
        (format!("bit {bit} (byte {})", bit / 8), damaged)
    })
}

fn truncations(bytes: &[u8]) -> impl Iterator<Item = (String, Vec<u8>)> + '_ {
    (0..bytes.len()).map(move |len| (format!("truncated to {len}"), bytes[..len].to_vec()))
}

#[test]
fn the_undamaged_stash_loads_and_decodes() {
    // The control for the tests below: the same bytes, undamaged, are fine.
    let (_dir, store, key, bytes) = saved();
    let loaded = store.load::<Dictionary>(&key).unwrap().unwrap();
    assert_eq!(loaded.value(), &dictionary());
    let decoded = decode(&bytes).unwrap();
    assert_eq!(decoded.header.key(), &key);
}

#[test]
fn every_single_bit_flip_loads_as_corrupt() {
    let (_dir, store, key, bytes) = saved();
    let (tested, reasons) = load_all(&store, &key, bit_flips(&bytes));
    assert_eq!(tested, bytes.len() * 8);
    assert!(tested >= 2400, "only {tested} flips");
    // Flips in the magic, the trailer's syntax and everywhere else all hit.
    for want in ["not-a-stash", "bad-trailer", "checksum"] {
        assert!(reasons.contains_key(want), "no {want} in {reasons:?}");
    }
    println!("{tested} bit flips, all Corrupt: {reasons:?}");
}

#[test]
fn every_truncation_loads_as_corrupt() {
    let (_dir, store, key, bytes) = saved();
    let (tested, reasons) = load_all(&store, &key, truncations(&bytes));
    assert_eq!(tested, bytes.len());
    for want in ["truncated", "bad-trailer"] {
        assert!(reasons.contains_key(want), "no {want} in {reasons:?}");
    }
    println!("{tested} truncations, all Corrupt: {reasons:?}");
}

#[test]
fn every_single_bit_flip_and_truncation_decodes_as_corrupt() {
    let (_dir, _store, _key, bytes) = saved();
    let (flips, _) = decode_all(bit_flips(&bytes));
    assert_eq!(flips, bytes.len() * 8);
    let (cuts, _) = decode_all(truncations(&bytes));
    assert_eq!(cuts, bytes.len());
    println!("decode: {flips} bit flips and {cuts} truncations, all Corrupt");
}

#[test]
fn a_stash_copied_to_another_key_is_a_key_mismatch() {
    let (dir, store, key, bytes) = saved();
    let other = StashKey::new("customers.dictionary").unwrap();
    std::fs::write(store.path_of(&other), &bytes).unwrap();

    match store.load::<Dictionary>(&other) {
        Err(Error::Corrupt { path, reason: Corruption::KeyMismatch { expected, found } }) => {
            assert_eq!(path, dir.path().join("customers.dictionary"));
            assert_eq!(expected, "customers.dictionary");
            assert_eq!(found, "orders.dictionary");
        }
        other => panic!("expected KeyMismatch, got {other:?}"),
    }
    // Whatever type is asked for, the data never comes back.
    assert!(matches!(
        store.load::<serde_json::Value>(&other),
        Err(Error::Corrupt { reason: Corruption::KeyMismatch { .. }, .. })
    ));
    let report = store.verify().unwrap();
    let entry = report.iter().find(|r| r.key == other).unwrap();
    assert!(matches!(
        entry.result,
        Err(Error::Corrupt { reason: Corruption::KeyMismatch { .. }, .. })
    ));
    // The original still loads.
    assert_eq!(store.load::<Dictionary>(&key).unwrap().unwrap().value(), &dictionary());

    // Renaming rather than copying is caught the same way.
    let third = StashKey::new("third").unwrap();
    std::fs::rename(store.path_of(&key), store.path_of(&third)).unwrap();
    assert!(matches!(
        store.load::<Dictionary>(&third),
        Err(Error::Corrupt { reason: Corruption::KeyMismatch { .. }, .. })
    ));
}

/// Only an intact envelope, digest and all, can claim another version; then
/// it is `UnsupportedVersion`, which is what the flips above must never give.
#[test]
fn an_intact_newer_version_is_unsupported_not_corrupt() {
    let (_dir, store, key, bytes) = saved();
    let mut v2 = bytes.clone();
    assert!(v2.starts_with(b"SAFESTASH 1\n"));
    v2[10] = b'2';
    let digest_at = v2.len() - 65;
    let digest = Digest::of(&v2[..digest_at]).to_string();
    v2[digest_at..digest_at + 64].copy_from_slice(digest.as_bytes());

    assert!(matches!(decode(&v2), Err(DecodeError::UnsupportedVersion(2))));
    std::fs::write(store.path_of(&key), &v2).unwrap();
    match store.load::<Dictionary>(&key) {
        Err(Error::UnsupportedVersion { version: 2, path }) => {
            assert_eq!(path, store.path_of(&key));
        }
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
}

/// A fixed envelope of the realistic value, for the property tests.
fn fixed_envelope() -> Vec<u8> {
    let header = Header::new(
        StashKey::new("orders.dictionary").unwrap(),
        "field-dictionary",
        Some("upload-7f3a"),
        UNIX_EPOCH + Duration::new(1_795_353_601, 123_456_789),
    )
    .unwrap();
    encode(&header, &serde_json::to_vec(&dictionary()).unwrap())
}

/// Recomputes the trailer's digest, as a forger (or a buggy writer) would.
fn resign(bytes: &mut [u8]) {
    let at = bytes.len() - 65;
    let digest = Digest::of(&bytes[..at]).to_string();
    bytes[at..at + 64].copy_from_slice(digest.as_bytes());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary damage, with or without a forged digest, never panics, and
    /// the streaming verifier (used for large files) reaches exactly the same
    /// verdict as the in-memory decoder.
    #[test]
    fn damaged_or_forged_envelopes_never_panic_and_both_verifiers_agree(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in proptest::option::of(any::<prop::sample::Index>()),
        forge in any::<bool>(),
    ) {
        let original = fixed_envelope();
        let mut bytes = original.clone();
        for (at, b) in &edits {
            // Edit anywhere before the digest, so forging can cover it.
            let i = at.index(bytes.len() - 65);
            bytes[i] = *b;
        }
        if forge {
            resign(&mut bytes);
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len()));
        }
        let in_memory = decode(&bytes).map(|d| (d.header, d.digest, d.payload.len() as u64));
        let streamed = verify_reader(&mut Cursor::new(&bytes), bytes.len() as u64)
            .expect("reading a Cursor cannot fail")
            .map(|l| (l.header, l.digest, l.payload_len));
        prop_assert_eq!(&in_memory, &streamed);
        if bytes == original {
            prop_assert!(in_memory.is_ok());
        } else if !forge || cut.is_some() {
            // Without a valid digest nothing is accepted, and nothing claims
            // to be a newer version.
            prop_assert!(matches!(in_memory, Err(DecodeError::Corrupt(_))), "{:?}", in_memory);
        }
    }
}
