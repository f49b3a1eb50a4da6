//! Opening a namespace: the URL, its options, the client's own settings.

use super::state::service_error;
use super::*;

/// How a backend is set up; [`Default`] gives the documented defaults.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// let opts = safestash::backend::object_store::Options {
///     lease: Duration::from_secs(10),
///     ..Default::default()
/// };
/// assert_eq!(opts.lock_timeout, Duration::from_secs(60));
/// ```
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a lock's lease lives without renewal (default 30 s).
    pub lease: Duration,
    /// How long a waiting lock gives up after (default 60 s).
    pub lock_timeout: Duration,
    /// Envelopes larger than this are saved by multipart upload through
    /// [`Backend::put_with`] (default 8 MiB).
    pub multipart_threshold: usize,
    /// A runtime to run `object_store` on; `None` (the default): the backend
    /// starts its own, with two worker threads.
    pub runtime: Option<tokio::runtime::Handle>,
    /// The location for messages (a URL without secrets); `None`: made from
    /// the store's name and the prefix.
    pub location: Option<String>,
    /// The bound on each call to the store (default 30 s), the client's
    /// connecting and retries included, and on each chunk of a body or a
    /// listing: past it the call fails with [`Error::Backend`] saying it
    /// timed out. A runtime handed in ([`Options::runtime`]) must have its
    /// time driver enabled (`enable_time`).
    pub timeout: Duration,
    /// How old an unreferenced data object must be before
    /// [`Store::cleanup`](crate::Store::cleanup) removes it (default 1
    /// hour). A multipart save writes its reference within half of it after
    /// its upload started, or fails: so a data object a reference is about
    /// to name is never old enough to be removed.
    pub gc_grace: Duration,
}

/// The default of [`Options::timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The default of [`Options::gc_grace`].
pub const DEFAULT_GC_GRACE: Duration = Duration::from_secs(3600);

impl Default for Options {
    fn default() -> Options {
        Options {
            lease: Duration::from_secs(30),
            lock_timeout: Duration::from_secs(60),
            multipart_threshold: 8 << 20,
            runtime: None,
            location: None,
            timeout: DEFAULT_TIMEOUT,
            gc_grace: DEFAULT_GC_GRACE,
        }
    }
}

pub(super) fn url_error(url: &str, rule: &'static str) -> Error {
    Error::InvalidOption { field: "url", value: url.to_owned(), rule }
}

impl ObjectStoreBackend {
    /// Opens the namespace a URL names (see the [module docs](super)); the
    /// store is built with its builder's `from_env()`, then the URL.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOption`] for a malformed URL or parameter or an
    /// unsupported scheme; [`Error::Backend`] when the builder refuses its
    /// configuration (no network call is made here).
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::backend::{Backend, object_store::ObjectStoreBackend};
    /// let backend = ObjectStoreBackend::open("memory:///tests?lease=5s")?;
    /// assert_eq!(backend.location(), "memory:///tests");
    /// # Ok::<(), safestash::Error>(())
    /// ```
    pub fn open(url: &str) -> Result<ObjectStoreBackend> {
        let (base_url, query) = url.split_once('?').unwrap_or((url, ""));
        let mut opts = Options::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let duration = || {
                humantime::parse_duration(value).ok().filter(|d| !d.is_zero()).ok_or_else(|| {
                    url_error(
                        url,
                        "lease, lock_timeout, timeout and gc_grace are durations such as 30s",
                    )
                })
            };
            match name {
                "lease" => opts.lease = duration()?,
                "lock_timeout" => opts.lock_timeout = duration()?,
                "timeout" => opts.timeout = duration()?,
                "gc_grace" => opts.gc_grace = duration()?,
                _ => {
                    return Err(url_error(
                        url,
                        "the parameters of an object store URL are lease, lock_timeout, \
                         timeout and gc_grace",
                    ));
                }
            }
        }
        let (scheme, rest) = base_url
            .split_once("://")
            .ok_or_else(|| url_error(url, "an object store URL is SCHEME://BUCKET/PREFIX"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_matches('/');
        if scheme != "memory" && bucket.is_empty() {
            return Err(url_error(
                url,
                "an object store URL names its bucket: SCHEME://BUCKET/PREFIX",
            ));
        }
        let bucket_url = format!("{scheme}://{bucket}");
        if !matches!(scheme, "s3" | "s3a" | "gs" | "az" | "abfs" | "abfss" | "memory") {
            return Err(url_error(
                url,
                "supported object store schemes: s3://, gs://, az://, memory://",
            ));
        }
        // The client, from the environment and the URL: again in a forked
        // child, whose parent's client it must not use.
        let in_memory = scheme == "memory";
        let (scheme, target, bucket) = (scheme.to_owned(), base_url.to_owned(), bucket_url.clone());
        let configure = move || -> Result<Arc<dyn ObjectStore>> {
            let built = |e: object_store::Error| Error::Backend {
                op: BackendOp::Configure,
                target: target.clone(),
                source: e.into(),
            };
            Ok(match scheme.as_str() {
                "s3" | "s3a" => Arc::new(
                    stream_timeouts(
                        "AWS",
                        object_store::aws::AmazonS3Builder::from_env(),
                        |b, k, v| b.with_config(object_store::aws::AmazonS3ConfigKey::Client(k), v),
                    )
                    .with_url(bucket.clone())
                    .build()
                    .map_err(built)?,
                ),
                "gs" => Arc::new(
                    stream_timeouts(
                        "GOOGLE",
                        object_store::gcp::GoogleCloudStorageBuilder::from_env(),
                        |b, k, v| b.with_config(object_store::gcp::GoogleConfigKey::Client(k), v),
                    )
                    .with_url(bucket.clone())
                    .build()
                    .map_err(built)?,
                ),
                "az" | "abfs" | "abfss" => Arc::new(
                    stream_timeouts(
                        "AZURE",
                        object_store::azure::MicrosoftAzureBuilder::from_env(),
                        |b, k, v| b.with_config(object_store::azure::AzureConfigKey::Client(k), v),
                    )
                    .with_url(bucket.clone())
                    .build()
                    .map_err(built)?,
                ),
                _ => Arc::new(object_store::memory::InMemory::new()),
            })
        };
        let store = configure()?;
        // An in-memory store does no I/O: a child keeps its copy.
        let remake = if in_memory { Remake::Same } else { Remake::Build(Box::new(configure)) };
        opts.location = Some(bucket_url);
        ObjectStoreBackend::build(store, prefix, opts, remake)
    }

    /// A backend over `store`, in the namespace `prefix` (`""` for the
    /// store's root; segments separated by `/`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOption`] for a prefix `object_store` rejects, or a
    /// zero lease; [`Error::Backend`] when the runtime cannot start.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use safestash::backend::{Backend, object_store::{ObjectStoreBackend, Options}};
    /// let memory = Arc::new(object_store::memory::InMemory::new());
    /// let backend = ObjectStoreBackend::new(memory, "team/stashes", Options::default())?;
    /// assert!(backend.location().ends_with("team/stashes"));
    /// # Ok::<(), safestash::Error>(())
    /// ```
    pub fn new(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        opts: Options,
    ) -> Result<ObjectStoreBackend> {
        ObjectStoreBackend::build(store, prefix, opts, Remake::Never)
    }

    /// [`new`](Self::new), with how a forked child makes its own client.
    pub(super) fn build(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        opts: Options,
        remake: Remake,
    ) -> Result<ObjectStoreBackend> {
        let prefix_path =
            Path::parse(prefix.trim_matches('/')).map_err(|_| Error::InvalidOption {
                field: "prefix",
                value: prefix.to_owned(),
                rule: "an object store prefix is /-separated segments, none empty, `.` or `..`",
            })?;
        if opts.lease.is_zero() {
            return Err(Error::InvalidOption {
                field: "lease",
                value: "0s".into(),
                rule: "a lease lasts longer than zero",
            });
        }
        let rt = match opts.runtime {
            Some(h) => Runtime::Handed(h),
            None => Runtime::owned(&store.to_string())?,
        };
        if opts.timeout.is_zero() {
            return Err(Error::InvalidOption {
                field: "timeout",
                value: "0s".into(),
                rule: "a timeout lasts longer than zero",
            });
        }
        let base = opts.location.unwrap_or_else(|| store.to_string());
        let shared = Arc::new(Shared {
            live: std::sync::RwLock::new(Arc::new(Live::new(store, rt, opts.timeout))),
            remake,
            timeout: opts.timeout,
            gc_grace: opts.gc_grace,
            base,
            lease: opts.lease,
            lock_timeout: opts.lock_timeout,
            threshold: opts.multipart_threshold.max(1),
            known: Mutex::new(HashMap::new()),
        });
        Ok(ObjectStoreBackend::at(shared, prefix_path, None))
    }

    pub(super) fn at(
        shared: Arc<Shared>,
        prefix: Path,
        fence: Option<Arc<Lease>>,
    ) -> ObjectStoreBackend {
        let location = if prefix.as_ref().is_empty() {
            shared.base.clone()
        } else {
            format!("{}/{}", shared.base, prefix)
        };
        ObjectStoreBackend { shared, prefix, location, fence }
    }

    /// The object store underneath.
    ///
    /// # Examples
    ///
    /// ```
    /// let backend = safestash::backend::object_store::ObjectStoreBackend::open("memory:///x")?;
    /// println!("{}", backend.object_store());
    /// # Ok::<(), safestash::Error>(())
    /// ```
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.shared.live().raw().clone()
    }

    /// The namespace's prefix in the store.
    ///
    /// # Examples
    ///
    /// ```
    /// let backend = safestash::backend::object_store::ObjectStoreBackend::open("memory:///a/b")?;
    /// assert_eq!(backend.prefix().as_ref(), "a/b");
    /// # Ok::<(), safestash::Error>(())
    /// ```
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    pub(super) fn target(&self, name: Option<&str>) -> String {
        match name {
            Some(n) => format!("{}/{n}", self.location),
            None => self.location.clone(),
        }
    }

    pub(super) fn fail<'a>(
        &'a self,
        op: BackendOp,
        name: &'a str,
    ) -> impl FnOnce(object_store::Error) -> Error + 'a {
        move |e| Error::Backend { op, target: self.target(Some(name)), source: service_error(e) }
    }

    pub(super) fn path(&self, name: &str) -> Path {
        self.prefix.clone().join(name)
    }

    pub(super) fn data_path(&self, data: &str) -> Path {
        self.prefix.clone().join(".data").join(data)
    }

    pub(super) fn lock_path(&self, key: &StashKey) -> Path {
        self.prefix.clone().join(".locks").join(key.as_str())
    }

    pub(super) fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.shared.block_on(f)
    }
}

/// The client timeouts a streamed stash needs, unless the environment sets
/// them (`{PREFIX}_TIMEOUT`, `{PREFIX}_READ_TIMEOUT`, as object_store reads
/// them). object_store's default `timeout` (30 s) bounds a whole request,
/// body included, and a load reads the body only as fast as the caller
/// deserializes it: a large stash read by a slow consumer would be cut off
/// (its retries resume by range, within a budget of minutes, then fail). So
/// a request may last as long as its body takes (`timeout` 24 h), while a
/// connection that stalls, with no byte for `read_timeout` (60 s), fails.
pub(super) fn stream_timeouts<B>(
    prefix: &str,
    builder: B,
    set: impl Fn(B, ClientConfigKey, &str) -> B,
) -> B {
    let unset = |name: &str| std::env::var_os(format!("{prefix}_{name}")).is_none();
    let mut builder = builder;
    if unset("TIMEOUT") {
        builder = set(builder, ClientConfigKey::Timeout, "24h");
    }
    if unset("READ_TIMEOUT") {
        builder = set(builder, ClientConfigKey::ReadTimeout, "60s");
    }
    builder
}
