//! Save a stash, load it back, damage the file and watch the damage be
//! detected, quarantine it, and clear.
//!
//! ```text
//! cargo run --example quickstart
//! ```

use std::collections::BTreeMap;

use safestash::{Error, SaveOptions, StashKey, Store};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Column {
    id: String,
    label: String,
    type_override: Option<String>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path().join("stashes"))?;
    let key = StashKey::new("orders.dictionary")?;
    let dictionary = vec![
        Column {
            id: "amount".into(),
            label: "Amount in EUR".into(),
            type_override: Some("numeric".into()),
        },
        Column {
            id: "placed".into(),
            label: "Placed at".into(),
            type_override: Some("timestamp".into()),
        },
        Column { id: "comment".into(), label: "Free text".into(), type_override: None },
    ];

    // 1. Save: durable and atomic when it returns.
    let opts = SaveOptions::new().kind("field-dictionary").origin("upload-7f3a");
    let receipt = store.save_with(&key, &dictionary, &opts)?;
    println!(
        "saved {} ({} bytes, sha256 {})",
        receipt.path.display(),
        receipt.bytes,
        receipt.digest
    );
    let head: String = String::from_utf8_lossy(&std::fs::read(&receipt.path)?)
        .lines()
        .take(2)
        .collect::<Vec<_>>()
        .join("\n");
    println!("the file starts with:\n{head}\n");

    // 2. Load: verified, with its metadata.
    let loaded = store.load::<Vec<Column>>(&key)?.ok_or("stash missing right after save")?;
    assert_eq!(loaded.value(), &dictionary);
    let meta = loaded.meta();
    println!(
        "loaded {} columns: kind {}, origin {:?}, {:?} old",
        loaded.value().len(),
        meta.header.kind(),
        meta.header.origin(),
        meta.age()
    );

    // 3. Damage one byte of the payload, as a bad disk or a careless edit would.
    let mut bytes = std::fs::read(&receipt.path)?;
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&receipt.path, &bytes)?;
    match store.load::<Vec<Column>>(&key) {
        Err(Error::Corrupt { reason, .. }) => {
            println!("\nafter flipping one bit at byte {at}: detected: {reason}")
        }
        other => return Err(format!("corruption went undetected: {other:?}").into()),
    }
    let report = store.verify()?;
    assert!(report.iter().all(|r| r.result.is_err()));
    println!("verify: {} of {} stashes corrupt", report.len(), report.len());

    // 4. Quarantine the damaged file for inspection instead of deleting it.
    let aside = store.quarantine(&key)?.ok_or("nothing to quarantine")?;
    println!("quarantined to {}", aside.display());
    assert!(store.load::<Vec<Column>>(&key)?.is_none());

    // 5. Save again and clear: clear is durable and idempotent.
    store.save(&key, &BTreeMap::<String, String>::new())?;
    let empty = store.load::<BTreeMap<String, String>>(&key)?;
    assert!(empty.is_some_and(|s| s.value().is_empty()), "an empty map is a stash, not None");
    assert!(store.clear(&key)?);
    assert!(!store.clear(&key)?);
    assert!(store.load::<BTreeMap<String, String>>(&key)?.is_none());
    println!("cleared; load now finds no stash");
    Ok(())
}
