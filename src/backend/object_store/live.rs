//! The client and the runtime a backend calls the service with, per
//! process: a forked child ([`crate::fork`]) abandons its parent's (their
//! threads did not come along, and their pooled connections are the
//! parent's sockets) and makes its own on first use.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

use super::timeout::Timed;
use crate::error::{BackendOp, Error, Result};

/// How a forked child makes its own client: again from the URL's
/// configuration; the same store when it does no I/O of its own
/// (`memory://`); or not at all (a store the caller built: the child must
/// build its own backend).
pub(super) enum Remake {
    Build(Box<dyn Fn() -> Result<Arc<dyn ObjectStore>> + Send + Sync>),
    Same,
    Never,
}

/// The runtime the synchronous API blocks on.
pub(super) enum Runtime {
    Owned(tokio::runtime::Runtime),
    Handed(tokio::runtime::Handle),
}

impl Runtime {
    pub(super) fn owned(target: &str) -> Result<Runtime> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("safestash-object-store")
            .enable_all()
            .build()
            .map(Runtime::Owned)
            .map_err(|e| Error::Backend {
                op: BackendOp::StartRuntime,
                target: target.to_owned(),
                source: e.into(),
            })
    }

    pub(super) fn block_on<F: Future>(&self, f: F) -> F::Output {
        match self {
            Runtime::Owned(rt) => rt.block_on(f),
            Runtime::Handed(h) => h.block_on(f),
        }
    }
}

/// One process's client and runtime.
pub(super) struct Live {
    /// The caller's store, every call bounded by the timeout.
    store: Option<Arc<dyn ObjectStore>>,
    /// The caller's store as handed in.
    raw: Option<Arc<dyn ObjectStore>>,
    rt: Option<Runtime>,
    /// The fork generation it was made in.
    generation: u64,
}

impl Live {
    pub(super) fn new(raw: Arc<dyn ObjectStore>, rt: Runtime, timeout: Duration) -> Live {
        let store: Arc<dyn ObjectStore> = Arc::new(Timed { inner: raw.clone(), limit: timeout });
        Live {
            store: Some(store),
            raw: Some(raw),
            rt: Some(rt),
            generation: crate::fork::generation(),
        }
    }

    /// This process's own, made after a fork from the parent's `old`.
    pub(super) fn remade(old: &Live, remake: &Remake, timeout: Duration) -> Result<Live> {
        let raw = match remake {
            Remake::Build(build) => build()?,
            Remake::Same => old.raw().clone(),
            Remake::Never => Arc::new(Inherited(old.raw().to_string())),
        };
        let rt = match old.rt.as_ref() {
            Some(Runtime::Handed(h)) => Runtime::Handed(h.clone()),
            _ => Runtime::owned(&raw.to_string())?,
        };
        Ok(Live::new(raw, rt, timeout))
    }

    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    pub(super) fn store(&self) -> &Arc<dyn ObjectStore> {
        self.store.as_ref().expect("set until dropped")
    }

    pub(super) fn raw(&self) -> &Arc<dyn ObjectStore> {
        self.raw.as_ref().expect("set until dropped")
    }

    pub(super) fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.as_ref().expect("set until dropped").block_on(f)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if self.generation != crate::fork::generation() {
            // A parent's, in a forked child: its runtime's threads are not
            // here (shutting it down would wait for them), and its client's
            // connections are the parent's. Left untouched.
            std::mem::forget(self.rt.take());
            std::mem::forget(self.store.take());
            std::mem::forget(self.raw.take());
        }
    }
}

/// The store of a child forked from a process that used a store the caller
/// built: every call fails, saying so (its connections are the parent's).
#[derive(Debug)]
struct Inherited(String);

impl fmt::Display for Inherited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (inherited from the parent process)", self.0)
    }
}

impl Inherited {
    fn refuse(&self) -> object_store::Error {
        object_store::Error::Generic {
            store: "safestash",
            source: format!(
                "this process was forked from the one that built the object store client \
                 `{}`; its connections are the parent's: build the backend again in this process \
                 (a backend opened from a URL does this itself)",
                self.0
            )
            .into(),
        }
    }
}

#[async_trait::async_trait]
impl ObjectStore for Inherited {
    async fn put_opts(
        &self,
        _: &Path,
        _: PutPayload,
        _: PutOptions,
    ) -> object_store::Result<PutResult> {
        Err(self.refuse())
    }

    async fn put_multipart_opts(
        &self,
        _: &Path,
        _: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        Err(self.refuse())
    }

    async fn get_opts(&self, _: &Path, _: GetOptions) -> object_store::Result<GetResult> {
        Err(self.refuse())
    }

    fn delete_stream(
        &self,
        _: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let e = self.refuse();
        Box::pin(futures_util::stream::once(async move { Err(e) }))
    }

    fn list(&self, _: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let e = self.refuse();
        Box::pin(futures_util::stream::once(async move { Err(e) }))
    }

    async fn list_with_delimiter(&self, _: Option<&Path>) -> object_store::Result<ListResult> {
        Err(self.refuse())
    }

    async fn copy_opts(&self, _: &Path, _: &Path, _: CopyOptions) -> object_store::Result<()> {
        Err(self.refuse())
    }
}
