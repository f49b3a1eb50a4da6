//! The object storage rows: safestash save and load of 1 KiB and 1 MiB next to the same
//! `object_store` calls written by hand (a plain PUT of the JSON; a GET and
//! `serde_json::from_slice`), on the same client. Rounds are interleaved
//! (which side goes first alternates) and each side's median per-call time
//! over the rounds is reported. The ratio is the cost of the envelope, the
//! checksum and the read before each conditional PUT.

use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use safestash::backend::object_store::ObjectStoreBackend;
use safestash::{StashKey, Store};

use super::{Row, interleaved};

/// The rows,
/// medians over `rounds` interleaved rounds, for the store at `url` (an
/// object store URL such as `s3://bucket/prefix` or `memory:///bench`).
///
/// # Errors
///
/// When the store cannot be opened or a call fails.
pub fn rows(url: &str, rounds: usize) -> Result<Vec<Row>, Box<dyn std::error::Error>> {
    let store = Store::open_url(url)?;
    let raw = ObjectStoreBackend::open(url)?;
    let os: Arc<dyn ObjectStore> = raw.object_store().clone();
    let path = Path::parse(format!("{}/bench-by-hand", raw.prefix()))?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let key = StashKey::new("bench")?;
    let mut out = Vec::new();
    for (label, size, iters) in [("1 KiB", 1usize << 10, 20u32), ("1 MiB", 1 << 20, 5)] {
        let value = "x".repeat(size);
        let json = serde_json::to_vec(&value)?;
        // Every side once before timing (first connections, first objects).
        store.save(&key, &value)?;
        rt.block_on(os.put(&path, PutPayload::from(json.clone())))?;
        let ours_save = || {
            store.save(&key, &value).unwrap();
        };
        let hand_save = || {
            rt.block_on(os.put(&path, PutPayload::from(json.clone()))).unwrap();
        };
        let ours_load = || {
            let got = store.load::<String>(&key).unwrap().unwrap();
            assert_eq!(got.value().len(), size);
        };
        let hand_load = || {
            let bytes = rt.block_on(async { os.get(&path).await?.bytes().await }).unwrap();
            let got: String = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(got.len(), size);
        };
        let (a, b) = interleaved(rounds, iters, ours_save, hand_save);
        out.push((format!("save {label}"), a, b));
        let (a, b) = interleaved(rounds, iters, ours_load, hand_load);
        out.push((format!("load {label}"), a, b));
    }
    store.clear(&key)?;
    rt.block_on(os.delete(&path))?;
    Ok(out)
}
