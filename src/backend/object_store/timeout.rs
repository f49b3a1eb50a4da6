//! The object storage backend's bound on each call: an [`ObjectStore`] over
//! the caller's that fails any request (and any chunk of a body or a
//! listing) that gets no answer within the backend's `timeout`, the
//! client's own connecting and retries included.

use std::fmt;
use std::time::Duration;

use futures_util::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};

/// The error a call that got no answer in time fails with.
#[derive(Debug)]
pub(crate) struct TimedOut(pub(crate) Duration);

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "timed out: no answer within {} (the store's `timeout`)",
            humantime::format_duration(self.0)
        )
    }
}

impl std::error::Error for TimedOut {}

fn timed_out(limit: Duration) -> object_store::Error {
    object_store::Error::Generic { store: "safestash", source: Box::new(TimedOut(limit)) }
}

async fn bounded<T>(
    limit: Duration,
    f: impl Future<Output = object_store::Result<T>>,
) -> object_store::Result<T> {
    tokio::time::timeout(limit, f).await.unwrap_or_else(|_| Err(timed_out(limit)))
}

/// Each item of `stream` within `limit` of the one before.
fn bounded_stream<T: Send + 'static>(
    limit: Duration,
    stream: BoxStream<'static, object_store::Result<T>>,
) -> BoxStream<'static, object_store::Result<T>> {
    futures_util::stream::unfold(Some(stream), move |state| async move {
        let mut stream = state?;
        match tokio::time::timeout(limit, stream.next()).await {
            Ok(Some(item)) => Some((item, Some(stream))),
            Ok(None) => None,
            Err(_) => Some((Err(timed_out(limit)), None)),
        }
    })
    .boxed()
}

/// `inner`, every call of it bounded by `limit`.
#[derive(Debug)]
pub(crate) struct Timed {
    pub(crate) inner: std::sync::Arc<dyn ObjectStore>,
    pub(crate) limit: Duration,
}

impl fmt::Display for Timed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

#[async_trait::async_trait]
impl ObjectStore for Timed {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        bounded(self.limit, self.inner.put_opts(location, payload, opts)).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let upload = bounded(self.limit, self.inner.put_multipart_opts(location, opts)).await?;
        Ok(Box::new(TimedUpload { inner: upload, limit: self.limit }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let mut got = bounded(self.limit, self.inner.get_opts(location, options)).await?;
        // (A `File` payload exists only when object_store's `fs` is on.)
        #[allow(irrefutable_let_patterns)]
        if let GetResultPayload::Stream(stream) = got.payload {
            got.payload = GetResultPayload::Stream(bounded_stream(self.limit, stream));
        }
        Ok(got)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        bounded_stream(self.limit, self.inner.delete_stream(locations))
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        bounded_stream(self.limit, self.inner.list(prefix))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        bounded(self.limit, self.inner.list_with_delimiter(prefix)).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        bounded(self.limit, self.inner.copy_opts(from, to, options)).await
    }
}

/// A multipart upload whose every request is bounded.
#[derive(Debug)]
struct TimedUpload {
    inner: Box<dyn MultipartUpload>,
    limit: Duration,
}

#[async_trait::async_trait]
impl MultipartUpload for TimedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let (part, limit) = (self.inner.put_part(data), self.limit);
        Box::pin(bounded(limit, part))
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        bounded(self.limit, self.inner.complete()).await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        bounded(self.limit, self.inner.abort()).await
    }
}
