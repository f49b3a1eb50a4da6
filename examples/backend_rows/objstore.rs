//! The object storage rows: safestash's verbs next to the same
//! `object_store` calls written by hand (a plain PUT of the JSON; a PUT
//! with `If-None-Match: *`; a GET and `serde_json::from_slice`; a DELETE;
//! a batch's PUTs, 8 at a time), on the same client, through the bench's
//! proxy when the store is S3 at `AWS_ENDPOINT_URL` (moto, say). The ratio
//! is the cost of the envelope, the checksum and any request the verb
//! makes beyond the one the call needs.

use std::sync::Arc;

use futures_util::stream::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use safestash::backend::object_store::{ObjectStoreBackend, Options};
use safestash::{Precondition, SaveOptions, StashKey, Store};

use super::proxy::{Proxy, delay_from_env};
use super::{Contender, Row, interleaved};

/// The backend for `url`: for `s3://` with `AWS_ENDPOINT_URL` set, an S3
/// client whose endpoint is a proxy in front of it (and the proxy); else
/// the URL as is, unproxied.
fn open(url: &str) -> Result<(ObjectStoreBackend, Option<Proxy>), Box<dyn std::error::Error>> {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").ok();
    let (Some(endpoint), Some(rest)) = (endpoint, url.strip_prefix("s3://")) else {
        return Ok((ObjectStoreBackend::open(url)?, None));
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let authority =
        endpoint.split("://").nth(1).unwrap_or(&endpoint).trim_end_matches('/').to_owned();
    let proxy = Proxy::start(&authority, delay_from_env())?;
    let s3 = object_store::aws::AmazonS3Builder::from_env()
        .with_url(format!("s3://{bucket}"))
        .with_endpoint(format!("http://{}", proxy.addr))
        .with_allow_http(true)
        .build()?;
    let opts = Options { location: Some(format!("s3://{bucket}")), ..Options::default() };
    Ok((ObjectStoreBackend::new(Arc::new(s3), prefix, opts)?, Some(proxy)))
}

/// The rows, medians over `rounds` interleaved rounds, for the store at
/// `url` (an object store URL such as `s3://bucket/prefix` or
/// `memory:///bench`), and whether they went through the proxy.
///
/// # Errors
///
/// When the store cannot be opened or a call fails.
pub fn rows(url: &str, rounds: usize) -> Result<(Vec<Row>, bool), Box<dyn std::error::Error>> {
    let (backend, proxy) = open(url)?;
    let os: Arc<dyn ObjectStore> = backend.object_store().clone();
    let prefix = backend.prefix().clone();
    let store = Store::open_object_store(backend);
    let proxy = proxy.as_ref();
    let path = Path::parse(format!("{prefix}/bench-by-hand"))?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let key = StashKey::new("bench")?;
    let opts = SaveOptions::new();
    let mut out = Vec::new();
    let put = |json: &[u8]| {
        rt.block_on(os.put(&path, PutPayload::from(json.to_vec()))).unwrap();
    };
    let get = |size: usize| {
        let bytes = rt.block_on(async { os.get(&path).await?.bytes().await }).unwrap();
        let got: String = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(got.len(), size);
    };
    let load = |size: usize| {
        let got = store.load::<String>(&key).unwrap().unwrap();
        assert_eq!(got.value().len(), size);
    };
    for (label, size, iters) in
        [("1 KiB", 1usize << 10, 20u32), ("1 MiB", 1 << 20, 5), ("6 MiB", 6 << 20, 2)]
    {
        let value = "x".repeat(size);
        let json = serde_json::to_vec(&value)?;
        // Every side once before timing (first connections, first objects).
        let envelope = store.save(&key, &value)?.bytes;
        put(&json);
        if size < 6 << 20 {
            let (a, b) = interleaved(
                proxy,
                rounds,
                iters,
                Contender::call(|| drop(store.save(&key, &value).unwrap())),
                Contender::call(|| put(&json)),
            );
            out.push(Row { op: format!("save {label}"), ours: a, hand: b, envelope: None });
        }
        let (a, b) = interleaved(
            proxy,
            rounds,
            iters,
            Contender::call(|| load(size)),
            Contender::call(|| get(size)),
        );
        out.push(Row { op: format!("load {label}"), ours: a, hand: b, envelope: Some(envelope) });
        if size == 1 << 10 {
            let create = PutOptions { mode: PutMode::Create, ..Default::default() };
            let (a, b) = interleaved(
                proxy,
                rounds,
                iters,
                Contender::after(
                    || {
                        store.clear(&key).unwrap();
                    },
                    || drop(store.save_if(&key, &value, &opts, Precondition::Absent).unwrap()),
                ),
                Contender::after(
                    || rt.block_on(os.delete(&path)).unwrap(),
                    || {
                        let payload = PutPayload::from(json.clone());
                        rt.block_on(os.put_opts(&path, payload, create.clone())).unwrap();
                    },
                ),
            );
            out.push(Row {
                op: format!("save if absent {label}"),
                ours: a,
                hand: b,
                envelope: None,
            });
            let (a, b) = interleaved(
                proxy,
                rounds,
                iters,
                Contender::after(
                    || drop(store.save(&key, &value).unwrap()),
                    || assert!(store.clear(&key).unwrap()),
                ),
                Contender::after(|| put(&json), || rt.block_on(os.delete(&path)).unwrap()),
            );
            out.push(Row { op: format!("clear {label}"), ours: a, hand: b, envelope: None });
            // A batch of 100 stashes, against 100 PUTs, 8 at a time.
            let keys: Vec<StashKey> =
                (0..100).map(|i| StashKey::new(format!("batch-{i:03}")).unwrap()).collect();
            let paths: Vec<Path> = (0..100)
                .map(|i| Path::parse(format!("{prefix}/by-hand-{i:03}")).unwrap())
                .collect();
            let (a, b) = interleaved(
                proxy,
                rounds,
                1,
                Contender::call(|| {
                    let mut batch = store.batch();
                    for k in &keys {
                        batch.add(k, &value, &opts).unwrap();
                    }
                    batch.commit().unwrap();
                }),
                Contender::call(|| {
                    rt.block_on(
                        futures_util::stream::iter(
                            paths.iter().map(|p| os.put(p, PutPayload::from(json.clone()))),
                        )
                        .buffer_unordered(8)
                        .try_collect::<Vec<_>>(),
                    )
                    .unwrap();
                }),
            );
            out.push(Row {
                op: format!("batch of 100 × {label}"),
                ours: a,
                hand: b,
                envelope: None,
            });
            for (k, p) in keys.iter().zip(&paths) {
                store.clear(k)?;
                rt.block_on(os.delete(p))?;
            }
            store.save(&key, &value)?;
        }
    }
    store.clear(&key)?;
    rt.block_on(os.delete(&path))?;
    Ok((out, proxy.is_some()))
}

/// A 1 GiB stash saved and loaded through the proxy (safestash only): the
/// bytes the load moved against the envelope's size, and the process's
/// peak RSS (VmHWM) after the save and during the load (the peak reset
/// in between, where Linux allows). The value is made while it is serialized
/// and checked piece by piece while it is read (`tests/bigvalue`), so
/// nothing of it is ever held whole.
///
/// # Errors
///
/// When the store cannot be opened or a call fails.
pub fn gib(url: &str, size: u64) -> Result<String, Box<dyn std::error::Error>> {
    use super::bigvalue::{Big, BigCheck, PIECE};
    let (backend, proxy) = open(url)?;
    let store = Store::open_object_store(backend);
    let key = StashKey::new("bench-gib")?;
    let pieces = size / PIECE as u64;
    let began = std::time::Instant::now();
    let envelope = store.save(&key, &Big(pieces))?.bytes;
    let saved = began.elapsed();
    let hwm = || {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM")).map(str::to_owned))
            .map(|l| l.trim_start_matches("VmHWM:").trim().to_owned())
            .unwrap_or_else(|| "?".to_owned())
    };
    let after_save = hwm();
    // Resets the peak to the current RSS (Linux: "5" to clear_refs), so
    // that the load's own peak is measured.
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let before = proxy.as_ref().map(Proxy::counts).unwrap_or_default();
    let began = std::time::Instant::now();
    let back = store.load::<BigCheck>(&key)?.ok_or("the stash is gone")?;
    let loaded = began.elapsed();
    assert_eq!(back.value().0, pieces);
    let moved = proxy.as_ref().map(Proxy::counts).unwrap_or_default() - before;
    let after_load = hwm();
    store.clear(&key)?;
    Ok(format!(
        "envelope {envelope} bytes: saved in {saved:.1?} (peak RSS {after_save}), loaded in \
         {loaded:.1?}; the load moved {} bytes ({:.4} × the envelope) in {} round trips; peak \
         RSS {} {after_load}",
        moved.up + moved.down,
        (moved.up + moved.down) as f64 / envelope as f64,
        moved.exchanges,
        if reset { "during the load" } else { "(save and load)" },
    ))
}
