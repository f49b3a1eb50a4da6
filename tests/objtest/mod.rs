//! The S3-protocol server the object storage tests run against, from the
//! environment.
//!
//! `SAFESTASH_TEST_S3_URL` names a bucket the tests may write to
//! (`s3://BUCKET`); the client takes its endpoint and credentials from the
//! usual `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_REGION` and `AWS_ALLOW_HTTP` (`.ci/run` starts a moto server and
//! exports them all). When it is unset a test prints why it skips its S3
//! part; under `CI=true` that is a failure instead, so CI can never skip
//! these tests silently.
#![allow(dead_code)] // each test crate uses a different subset

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

/// The bucket URL with a prefix no other test (or earlier run) uses, or
/// `None` (with the reason printed) when the tests should skip. Panics
/// under `CI=true` when it is missing.
pub fn url(test: &str) -> Option<String> {
    match std::env::var("SAFESTASH_TEST_S3_URL") {
        Ok(url) if !url.is_empty() => {
            Some(format!("{}/{}", url.trim_end_matches('/'), fresh_prefix(test)))
        }
        _ => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "{test}: CI=true but SAFESTASH_TEST_S3_URL is not set; \
                     the object storage tests must never be skipped in CI"
                );
            }
            eprintln!(
                "{test}: skipping the S3 part: SAFESTASH_TEST_S3_URL is not set \
                 (bash .ci/run starts a moto server and sets it; see the README)"
            );
            None
        }
    }
}

/// Every server configured, as `(name, URL with a fresh prefix)`: moto
/// (`SAFESTASH_TEST_S3_URL`, an `s3://` bucket) and Azurite
/// (`SAFESTASH_TEST_AZURE_URL`, an `az://` container, with
/// `AZURE_STORAGE_USE_EMULATOR=true` and `AZURITE_BLOB_STORAGE_URL`, as
/// `.ci/object-store.sh` exports them). A missing one is skipped with a
/// printed reason, and is a failure under `CI=true`.
pub fn urls(test: &str) -> Vec<(&'static str, String)> {
    let mut all: Vec<(&'static str, String)> = url(test).into_iter().map(|u| ("s3", u)).collect();
    match std::env::var("SAFESTASH_TEST_AZURE_URL") {
        Ok(url) if !url.is_empty() => {
            all.push(("azurite", format!("{}/{}", url.trim_end_matches('/'), fresh_prefix(test))))
        }
        _ => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "{test}: CI=true but SAFESTASH_TEST_AZURE_URL is not set; \
                     the object storage tests must never be skipped in CI"
                );
            }
            eprintln!(
                "{test}: skipping the Azure part: SAFESTASH_TEST_AZURE_URL is not set \
                 (bash .ci/object-store.sh starts Azurite and sets it)"
            );
        }
    }
    all
}

/// A prefix no other test (or earlier run) uses.
pub fn fresh_prefix(test: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{test}-{}-{nanos}-{n}", std::process::id())
}

/// Raw access to the objects of a store, for damage and inspection.
pub struct Raw {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: Path,
    rt: tokio::runtime::Runtime,
}

impl Raw {
    /// Over the bucket and prefix of `url` (an `s3://` or `az://` URL).
    pub fn open(url: &str) -> Raw {
        let backend = safestash::backend::object_store::ObjectStoreBackend::open(url).unwrap();
        Raw::over(backend.object_store().clone(), backend.prefix().clone())
    }

    pub fn over(store: Arc<dyn ObjectStore>, prefix: Path) -> Raw {
        // A worker thread of its own drives this runtime's I/O even between
        // calls: a store's HTTP client pools connections across runtimes,
        // and one opened here may be reused by a backend's runtime (on a
        // current-thread runtime nothing would read it then, and the call
        // would hang until its timeout).
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        Raw { store, prefix, rt }
    }

    fn path(&self, name: &str) -> Path {
        Path::parse(format!("{}/{name}", self.prefix)).unwrap()
    }

    /// The bytes of the object `name` (relative to the prefix; may contain `/`).
    pub fn get(&self, name: &str) -> Option<Vec<u8>> {
        let path = self.path(name);
        self.rt.block_on(async {
            match self.store.get(&path).await {
                Ok(got) => Some(got.bytes().await.unwrap().to_vec()),
                Err(object_store::Error::NotFound { .. }) => None,
                Err(e) => panic!("get {path}: {e}"),
            }
        })
    }

    /// Writes `bytes` at `name`, unconditionally.
    pub fn put(&self, name: &str, bytes: Vec<u8>) {
        let path = self.path(name);
        self.rt.block_on(self.store.put(&path, PutPayload::from(bytes))).unwrap();
    }

    /// The current ETag of `name`.
    pub fn e_tag(&self, name: &str) -> Option<String> {
        let path = self.path(name);
        self.rt.block_on(self.store.head(&path)).ok().and_then(|m| m.e_tag)
    }

    /// Every object name under the prefix (recursively), relative to it.
    pub fn names(&self) -> Vec<String> {
        use futures_util::TryStreamExt;
        let metas: Vec<object_store::ObjectMeta> =
            self.rt.block_on(self.store.list(Some(&self.prefix)).try_collect()).unwrap();
        let skip = self.prefix.as_ref().len() + 1;
        let mut names: Vec<String> =
            metas.into_iter().map(|m| m.location.as_ref()[skip..].to_owned()).collect();
        names.sort();
        names
    }

    /// Runs a future on this helper's runtime.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }
}
