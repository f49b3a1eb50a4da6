//! Opening a store: on a directory ([`Store::open`], in `mod.rs`), on the
//! backend a URL names ([`Store::open_url`]), or on any [`Backend`]
//! ([`Store::with_backend`]).

use super::*;

/// The URL schemes of object storage stores.
const OBJECT_STORE_SCHEMES: [&str; 7] = ["s3", "s3a", "gs", "az", "abfs", "abfss", "memory"];

impl Store<OsFs> {
    /// Opens the store a URL names:
    ///
    /// - a plain path, or `file:///absolute/path`: the local directory
    ///   store, exactly as [`Store::open`];
    /// - `postgres://...` or `postgresql://...` (feature `postgres`): a
    ///   namespace in a PostgreSQL database, shared by workers on any host
    ///   (`?namespace=NAME`, default `default`; `timeout=30s`, the bound of
    ///   each call; `lock_timeout=60s`; see
    ///   [`backend::postgres`](crate::backend)). The connection is made, and
    ///   the schema created if missing, before this returns. A libpq
    ///   `key=value` string is refused (without echoing it);
    /// - `s3://BUCKET/PREFIX`, `gs://BUCKET/PREFIX`, `az://CONTAINER/PREFIX`
    ///   or `memory:///PREFIX` (feature `object-store`): a prefix in object
    ///   storage, configured from the environment the way `object_store`
    ///   users expect (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, ...; see
    ///   `backend::object_store`). No request is made before the first verb;
    /// - `mysql://user@host:3306/db` or `mariadb://...` (feature `mysql`): a
    ///   namespace in a MySQL or MariaDB database (InnoDB), with the same
    ///   `namespace`, `timeout` and `lock_timeout` parameters and
    ///   `durability` (see [`backend::mysql`](crate::backend)). The server's
    ///   durability settings are checked, and the schema created if missing,
    ///   before this returns.
    ///
    /// Every verb keeps its semantics on either; on a remote store
    /// [`dir`](Store::dir) and the paths in receipts and errors are the
    /// store's URL (without its password) followed by `/KEY`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOption`] (field `"url"`) for a scheme this build
    /// does not support (a `postgres` URL without the feature names it);
    /// as [`Store::open`] for a path; [`Error::Backend`] when the server
    /// cannot be reached.
    ///
    /// # Examples
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let store = safestash::Store::open_url(&format!("file://{}", dir.path().display()))?;
    /// assert_eq!(store.dir(), dir.path());
    /// assert!(safestash::Store::open_url("ftp://example.com/x").is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_url(url: &str) -> Result<Store> {
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(Error::InvalidOption {
                    field: "url",
                    value: url.to_owned(),
                    rule: "a file:// URL names an absolute path (file:///dir)",
                });
            }
            return Store::open(path);
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Store::open_postgres(url);
        }
        if url.starts_with("mysql://") || url.starts_with("mariadb://") {
            return Store::open_mysql(url);
        }
        if OBJECT_STORE_SCHEMES
            .iter()
            .any(|s| url.strip_prefix(s).is_some_and(|r| r.starts_with("://")))
        {
            return Store::open_object_store_url(url);
        }
        if let Some(keys) = conninfo_keys(url) {
            // Never echo it: its `password=` would reach the message.
            return Err(Error::InvalidOption {
                field: "url",
                value: keys,
                rule: "a libpq key=value connection string is not a store URL; use \
                       postgresql://user@host:port/db (the password in PGPASSWORD or ~/.pgpass)",
            });
        }
        if let Some((scheme, _)) = url.split_once("://") {
            if !scheme.is_empty()
                && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
            {
                return Err(Error::InvalidOption {
                    field: "url",
                    value: url.to_owned(),
                    rule: "supported: a path, file://, postgres:// or postgresql:// (feature `postgres`), \
                           mysql:// or mariadb:// (feature `mysql`), \
                           s3://, gs://, az:// or memory:// (feature `object-store`)",
                });
            }
        }
        Store::open(url)
    }

    #[cfg(feature = "postgres")]
    fn open_postgres(url: &str) -> Result<Store> {
        let backend = crate::backend::postgres::Postgres::connect(url)?;
        Ok(Store::over_backend(Arc::new(backend), OsFs, Vec::new()))
    }

    #[cfg(feature = "mysql")]
    fn open_mysql(url: &str) -> Result<Store> {
        let url = match url.strip_prefix("mariadb://") {
            Some(rest) => std::borrow::Cow::Owned(format!("mysql://{rest}")),
            None => std::borrow::Cow::Borrowed(url),
        };
        let backend = crate::backend::mysql::Mysql::connect(&url)?;
        Ok(Store::over_backend(Arc::new(backend), OsFs, Vec::new()))
    }

    #[cfg(not(feature = "mysql"))]
    fn open_mysql(url: &str) -> Result<Store> {
        let value = match url.split_once('@') {
            Some((_, host)) => format!("mysql://…@{host}"),
            None => url.to_owned(),
        };
        Err(Error::InvalidOption {
            field: "url",
            value,
            rule: "MySQL and MariaDB stores need safestash built with the cargo feature `mysql`",
        })
    }

    #[cfg(feature = "object-store")]
    fn open_object_store_url(url: &str) -> Result<Store> {
        let backend = crate::backend::object_store::ObjectStoreBackend::open(url)?;
        Ok(Store::open_object_store(backend))
    }

    #[cfg(not(feature = "object-store"))]
    fn open_object_store_url(url: &str) -> Result<Store> {
        Err(Error::InvalidOption {
            field: "url",
            value: url.split('?').next().unwrap_or(url).to_owned(),
            rule: "object storage stores need safestash built with the cargo feature `object-store`",
        })
    }

    /// The store whose envelopes live in `backend`: a prefix of an object
    /// store built by code (for a URL, [`Store::open_url`] does this).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use safestash::backend::object_store::{ObjectStoreBackend, Options};
    /// let memory = Arc::new(object_store::memory::InMemory::new());
    /// let store = safestash::Store::open_object_store(ObjectStoreBackend::new(
    ///     memory,
    ///     "stashes",
    ///     Options::default(),
    /// )?);
    /// let key = safestash::StashKey::new("k")?;
    /// store.save(&key, &"in memory")?;
    /// assert_eq!(store.load::<String>(&key)?.unwrap().value(), "in memory");
    /// # Ok::<(), safestash::Error>(())
    /// ```
    #[cfg(feature = "object-store")]
    pub fn open_object_store(backend: crate::backend::object_store::ObjectStoreBackend) -> Store {
        Store::over_backend(Arc::new(backend), OsFs, Vec::new())
    }

    /// A store over any [`Backend`]: the public way to plug one in (a
    /// backend of your own, or one of this crate's built by code).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// # #[cfg(feature = "object-store")] {
    /// use safestash::backend::object_store::{ObjectStoreBackend, Options};
    /// let memory = Arc::new(object_store::memory::InMemory::new());
    /// let backend = ObjectStoreBackend::new(memory, "stashes", Options::default())?;
    /// let store = safestash::Store::with_backend(Arc::new(backend));
    /// let key = safestash::StashKey::new("k")?;
    /// store.save(&key, &1)?;
    /// assert_eq!(*store.load::<i32>(&key)?.unwrap().value(), 1);
    /// # }
    /// # Ok::<(), safestash::Error>(())
    /// ```
    pub fn with_backend(backend: Arc<dyn Backend>) -> Store {
        Store::over_backend(backend, OsFs, Vec::new())
    }

    #[cfg(not(feature = "postgres"))]
    fn open_postgres(url: &str) -> Result<Store> {
        let value = match url.split_once('@') {
            Some((_, host)) => format!("postgresql://…@{host}"),
            None => url.to_owned(),
        };
        Err(Error::InvalidOption {
            field: "url",
            value,
            rule: "PostgreSQL stores need safestash built with the cargo feature `postgres`",
        })
    }
}

/// libpq's connection parameters, as keys of a `key=value` string.
const CONNINFO_KEYS: [&str; 12] = [
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "passfile",
    "sslmode",
    "sslrootcert",
    "connect_timeout",
    "application_name",
    "options",
];

/// For a libpq `key=value` connection string (`host=db password=...`),
/// its keys with every value replaced by `…`; `None` for anything else
/// (a URL, a path).
fn conninfo_keys(s: &str) -> Option<String> {
    if s.contains("://") {
        return None;
    }
    let tokens: Vec<&str> = s.split_whitespace().collect();
    let key_of = |t: &str| t.split_once('=').map(|(k, _)| k.trim().to_ascii_lowercase());
    let first = key_of(tokens.first()?)?;
    let known =
        tokens.iter().filter_map(|t| key_of(t)).filter(|k| CONNINFO_KEYS.contains(&k.as_str()));
    if !first.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || known.count() == 0 {
        return None;
    }
    Some(
        tokens
            .iter()
            .filter_map(|t| key_of(t))
            .map(|k| format!("{k}=…"))
            .collect::<Vec<_>>()
            .join(" "),
    )
}

impl<F: Fs> Store<F> {
    pub(super) fn over_backend(
        backend: Arc<dyn Backend>,
        fs: F,
        observers: Vec<Arc<Observer>>,
    ) -> Store<F> {
        Store { dir: PathBuf::from(backend.location()), fs, observers, backend }
    }

    /// The backend holding this store's envelopes: a [`Directory`] for a
    /// local store.
    ///
    /// # Examples
    ///
    /// ```
    /// let store = safestash::Store::open("/tmp/stashes")?;
    /// assert_eq!(store.backend().location(), "/tmp/stashes");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }
}
