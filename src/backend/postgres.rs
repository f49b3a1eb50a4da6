//! The PostgreSQL backend (feature `postgres`): stashes in a table, shared
//! by workers on any host.
//!
//! Open it through [`Store::open_url`](crate::Store::open_url) with a
//! `postgres://` or `postgresql://` URL in libpq's URL syntax, plus two
//! parameters of its own that are removed before the URL reaches the client:
//!
//! - `namespace=NAME` (a valid key; default `default`): several stores share
//!   one database, each in its namespace;
//! - `lock_timeout=DURATION` (`humantime` syntax, default `60s`): how long a
//!   lock or a change waits for another holder of the key's lock before it
//!   fails with [`Error::Locked`].
//!
//! What the URL leaves out comes from libpq's environment variables
//! `PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`, `PGSSLMODE`
//! and `PGSSLROOTCERT`.
//!
//! TLS (feature `postgres-tls`, rustls: no system library) follows libpq's
//! `sslmode` (`disable`, `prefer` the default, `require`, `verify-ca`,
//! `verify-full`) and `sslrootcert=FILE` (PEM); the table of what each
//! verifies is in `backend/postgres/tls.rs`: `prefer` and `require`
//! encrypt without checking the certificate (unless `sslrootcert` is
//! given), `verify-full` checks the chain and the host name. Without the
//! feature, `prefer` connects in plain text and the modes that require TLS
//! are refused when the store is opened, so nothing falls back silently.
//!
//! # Schema (version 2)
//!
//! Created on first use when the role may create tables (in the first
//! schema of its `search_path`); otherwise a DBA creates it with:
//!
//! ```sql
//! CREATE TABLE safestash_schema (version integer NOT NULL);
//! INSERT INTO safestash_schema (version) VALUES (2);
//! CREATE TABLE safestash_stashes (
//!     namespace text        NOT NULL,
//!     key       text        NOT NULL,
//!     envelope  bytea       NOT NULL, -- the v1 envelope, byte for byte a stash file
//!                                     -- (empty when chunks > 0)
//!     digest    bytea       NOT NULL, -- its sha256 as recorded at save (for conditions)
//!     size      bigint      NOT NULL, -- its length at save
//!     created   timestamptz NOT NULL DEFAULT now(),
//!     chunks    integer     NOT NULL DEFAULT 0, -- 0: inline in envelope; N: in
//!                                               -- safestash_chunks, seq 0..N-1
//!     PRIMARY KEY (namespace, key)
//! );
//! CREATE TABLE safestash_chunks (
//!     namespace text    NOT NULL,
//!     key       text    NOT NULL,
//!     seq       integer NOT NULL,
//!     bytes     bytea   NOT NULL, -- the envelope's bytes from seq * 1 MiB on
//!     PRIMARY KEY (namespace, key, seq),
//!     FOREIGN KEY (namespace, key) REFERENCES safestash_stashes (namespace, key)
//!         ON UPDATE CASCADE ON DELETE CASCADE
//! );
//! ALTER TABLE safestash_chunks ALTER COLUMN bytes SET STORAGE EXTERNAL;
//! GRANT SELECT, INSERT, UPDATE, DELETE ON safestash_stashes, safestash_chunks TO worker_role;
//! GRANT SELECT ON safestash_schema TO worker_role;
//! ```
//!
//! An envelope of at most [`CHUNK_LEN`] (1 MiB) is one row, written by one
//! `INSERT ... ON CONFLICT` as in version 1. A larger one is streamed in:
//! the row (with `chunks = N`) and N rows of `safestash_chunks` of 1 MiB
//! each (stored uncompressed: an envelope rarely compresses and the
//! attempt costs CPU), written in the same transaction as the condition
//! check, which comes first, and replacing the old chunks in it; so a
//! client killed mid-save leaves the old stash or the new one. A load
//! reads the chunks one at a time in one `REPEATABLE READ` snapshot, so
//! memory on both sides stays at a few MiB whatever the size (the store
//! verifies a large envelope in one streaming pass, then reads it again
//! for the payload, re-hashing it).
//!
//! **Migration from version 1** (done on first use by a role that may
//! alter the table, under an advisory lock, in one transaction; a DBA can
//! run it by hand):
//!
//! ```sql
//! BEGIN;
//! ALTER TABLE safestash_stashes ADD COLUMN chunks integer NOT NULL DEFAULT 0;
//! CREATE TABLE safestash_chunks ( ... as above ... );
//! ALTER TABLE safestash_chunks ALTER COLUMN bytes SET STORAGE EXTERNAL;
//! UPDATE safestash_schema SET version = 2;
//! COMMIT;
//! ```
//!
//! Every version 1 row is a valid version 2 row (`chunks = 0`), and the
//! `ADD COLUMN` with a constant default rewrites nothing. Builds that know
//! only version 1 refuse a version 2 schema rather than misread a chunked
//! stash, so upgrade every worker of a database together. A store refuses
//! any other version. Reserved namespaces of a
//! store (the journal's, the tenant guard's) are the rows of namespace
//! `NAMESPACE/journal` and so on; a quarantined stash is the row renamed
//! to `.KEY.quarantined.STAMP` in its namespace (its chunks follow by the
//! foreign key's `ON UPDATE CASCADE`).
//!
//! # Durability, atomicity, locks
//!
//! - Each save is one transaction run with `SET LOCAL synchronous_commit =
//!   on`, whatever the session or role default: `save` returns `Ok` only
//!   after the server acknowledged the `COMMIT`, which then means the WAL
//!   record is flushed on the primary (and on the synchronous standbys
//!   named in `synchronous_standby_names`, if any). That is a power-cut
//!   promise only if the server runs with `fsync = on` and
//!   `full_page_writes = on` on storage that honours flushes; with
//!   asynchronous replication a failover can lose acknowledged saves.
//! - A save that fails before `COMMIT` is rolled back by the server: the
//!   previous stash is intact. When the connection is lost during the
//!   `COMMIT` itself the outcome is unknown; the error names the commit.
//! - Per-key locks are session advisory locks,
//!   `pg_advisory_lock(hashtextextended(namespace || '/' || key, 0))`, held
//!   on a connection of the [`KeyLock`](crate::KeyLock) and released when it
//!   is dropped or when that connection ends (a killed worker's lock goes
//!   with its TCP connection; a vanished host's when the server's TCP
//!   keepalive gives up). A hung worker keeps its lock; others wait at most
//!   `lock_timeout`. Every change also takes the same lock inside its
//!   transaction (`pg_advisory_xact_lock`), and checks its condition there.
//!   Two keys whose hashes collide share a lock (a wait, never a wrong
//!   result).
//! - Keys and namespaces are always bound parameters.
//! - Size: unbounded by memory (see the schema above); a save of N bytes
//!   writes them once to the heap and once to the WAL.

use std::fmt;
use std::io::{self, Cursor, Read, Write};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use postgres::config::Host;
use postgres::error::SqlState;
use postgres::{Client, Config, NoTls, Statement, Transaction};

use super::{Backend, Condition, Fetched, Fill, Held, Listed, Outcome};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::key::StashKey;

/// The schema version this build reads and writes.
pub const SCHEMA_VERSION: i32 = 2;

/// The largest envelope kept inline in its row, and the size of every chunk
/// but the last of a larger one.
///
/// ```
/// assert_eq!(safestash::backend::postgres::CHUNK_LEN, 1 << 20);
/// assert_eq!(safestash::backend::postgres::SCHEMA_VERSION, 2);
/// ```
pub const CHUNK_LEN: usize = 1 << 20;

/// The namespace of a URL without `namespace=`.
pub const DEFAULT_NAMESPACE: &str = "default";

const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// The advisory lock taken while creating or migrating the schema (so that
/// concurrent first uses do not race).
const SCHEMA_LOCK: i64 = 0x5afe_57a5_0000_0001;

const CREATE_CHUNKS: &str = "
CREATE TABLE IF NOT EXISTS safestash_chunks (
    namespace text    NOT NULL,
    key       text    NOT NULL,
    seq       integer NOT NULL,
    bytes     bytea   NOT NULL,
    PRIMARY KEY (namespace, key, seq),
    FOREIGN KEY (namespace, key) REFERENCES safestash_stashes (namespace, key)
        ON UPDATE CASCADE ON DELETE CASCADE
);
ALTER TABLE safestash_chunks ALTER COLUMN bytes SET STORAGE EXTERNAL;
";

const CREATE_STASHES: &str = "
CREATE TABLE IF NOT EXISTS safestash_schema (version integer NOT NULL);
CREATE TABLE IF NOT EXISTS safestash_stashes (
    namespace text        NOT NULL,
    key       text        NOT NULL,
    envelope  bytea       NOT NULL,
    digest    bytea       NOT NULL,
    size      bigint      NOT NULL,
    created   timestamptz NOT NULL DEFAULT now(),
    chunks    integer     NOT NULL DEFAULT 0,
    PRIMARY KEY (namespace, key)
);
INSERT INTO safestash_schema (version)
    SELECT 2 WHERE NOT EXISTS (SELECT 1 FROM safestash_schema);
";

const MIGRATE_1_TO_2: &str = "
ALTER TABLE safestash_stashes ADD COLUMN chunks integer NOT NULL DEFAULT 0;
";

const XACT_LOCK: &str = "SELECT pg_advisory_xact_lock(hashtextextended($1 || '/' || $2, 0))";

#[cfg(feature = "postgres-tls")]
mod tls;

/// How much of the server's certificate is checked (see `sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "postgres-tls"), allow(dead_code))]
enum Verify {
    /// Nothing (libpq's `prefer` and `require`).
    None,
    /// That it chains to `sslrootcert` (`verify-ca`).
    Ca,
    /// That, and that it names the host (`verify-full`).
    Full,
}

/// The connector of a store's connections.
enum Tls {
    /// No TLS: `sslmode=disable`, or `prefer` in a build without TLS.
    Plain,
    /// rustls (feature `postgres-tls`).
    #[cfg(feature = "postgres-tls")]
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
}

impl Tls {
    /// The connector for libpq's `sslmode` (default `prefer`) and
    /// `sslrootcert`, setting the client's own mode to match.
    fn for_mode(
        url: &str,
        sslmode: Option<&str>,
        root_cert: Option<&str>,
        config: &mut Config,
    ) -> Result<Tls> {
        use postgres::config::SslMode;
        let (mode, verify) = match sslmode.unwrap_or("prefer") {
            "disable" => (SslMode::Disable, Verify::None),
            "prefer" => (SslMode::Prefer, Verify::None),
            "require" if root_cert.is_some() => (SslMode::Require, Verify::Ca),
            "require" => (SslMode::Require, Verify::None),
            "verify-ca" => (SslMode::Require, Verify::Ca),
            "verify-full" => (SslMode::Require, Verify::Full),
            _ => {
                return Err(url_error(
                    url,
                    "sslmode must be disable, prefer, require, verify-ca or verify-full",
                ));
            }
        };
        config.ssl_mode(mode);
        if mode == SslMode::Disable {
            return Ok(Tls::Plain);
        }
        #[cfg(feature = "postgres-tls")]
        {
            tls::connector(verify, root_cert).map(Tls::Rustls).map_err(|reason| Error::Backend {
                op: "set up TLS for",
                target: redact(url),
                source: reason.into(),
            })
        }
        #[cfg(not(feature = "postgres-tls"))]
        {
            let _ = (verify, root_cert);
            if mode == SslMode::Require {
                return Err(url_error(
                    url,
                    "TLS (sslmode require, verify-ca, verify-full) needs safestash built with the cargo feature `postgres-tls`",
                ));
            }
            Ok(Tls::Plain)
        }
    }
}

/// What every connection of a store (and its children) shares.
struct Shared {
    config: Config,
    tls: Tls,
    /// `postgresql://user@host:port/db`, no password.
    base: String,
    lock_timeout: Duration,
    pool: Mutex<Vec<Client>>,
}

impl Shared {
    /// Returns a healthy connection to the pool.
    fn give_back(&self, client: Client) {
        if !client.is_closed() {
            self.pool.lock().unwrap_or_else(PoisonError::into_inner).push(client);
        }
    }
}

/// One namespace of a PostgreSQL database. See the [module docs](self).
pub struct Postgres {
    shared: Arc<Shared>,
    ns: String,
    location: String,
    /// The connection of a held lock: every call runs on it.
    pinned: Option<Arc<Mutex<Option<Client>>>>,
}

impl fmt::Debug for Postgres {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Postgres")
            .field("location", &self.location)
            .field("pinned", &self.pinned.is_some())
            .finish()
    }
}

fn url_error(url: &str, rule: &'static str) -> Error {
    Error::InvalidOption { field: "url", value: redact(url), rule }
}

/// `url` with any password replaced by `***`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(auth_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{user}:***@{host}")
        }
        _ => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let pairs: Vec<String> = query
                .split('&')
                .map(|p| {
                    if p.starts_with("password=") {
                        "password=***".to_owned()
                    } else {
                        p.to_owned()
                    }
                })
                .collect();
            format!("{path}?{}", pairs.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

impl Postgres {
    /// Connects to the database of `url` (see the [module docs](self)),
    /// creating the schema if it is missing and the role may, and checking
    /// its version.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOption`] for a malformed URL or parameter,
    /// [`Error::Backend`] when the server cannot be reached or the schema
    /// cannot be created or is of another version.
    pub fn connect(url: &str) -> Result<Postgres> {
        let (base_url, query) = match url.split_once('?') {
            Some((b, q)) => (b, q),
            None => (url, ""),
        };
        let mut ns = DEFAULT_NAMESPACE.to_owned();
        let mut lock_timeout = DEFAULT_LOCK_TIMEOUT;
        let mut passed = Vec::new();
        let (mut sslmode, mut root_cert) = (None, None);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "namespace" => {
                    ns = StashKey::new(value)
                        .map_err(|_| url_error(url, "namespace must be a valid key ([A-Za-z0-9._-], not starting with '.')"))?
                        .into_string();
                }
                "sslmode" => sslmode = Some(value.to_owned()),
                "sslrootcert" => root_cert = Some(value.to_owned()),
                "lock_timeout" => {
                    lock_timeout = humantime::parse_duration(value).map_err(|_| {
                        url_error(url, "lock_timeout must be a duration such as 30s")
                    })?;
                }
                _ => passed.push(pair),
            }
        }
        let client_url = if passed.is_empty() {
            base_url.to_owned()
        } else {
            format!("{base_url}?{}", passed.join("&"))
        };
        let mut config = Config::from_str(&client_url).map_err(|e| Error::Backend {
            op: "parse the URL",
            target: redact(url),
            source: e.into(),
        })?;
        fill_from_env(&mut config);
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let sslmode = sslmode.or_else(|| env("PGSSLMODE"));
        let root_cert = root_cert.or_else(|| env("PGSSLROOTCERT"));
        let tls = Tls::for_mode(url, sslmode.as_deref(), root_cert.as_deref(), &mut config)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("safestash");
        }
        let base = describe(&config);
        let shared =
            Arc::new(Shared { config, tls, base, lock_timeout, pool: Mutex::new(Vec::new()) });
        let store = Postgres::in_namespace(shared, ns);
        store.ensure_schema()?;
        Ok(store)
    }

    fn in_namespace(shared: Arc<Shared>, ns: String) -> Postgres {
        let location = format!("{}?namespace={ns}", shared.base);
        Postgres { shared, ns, location, pinned: None }
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    fn target(&self, key: Option<&StashKey>) -> String {
        match key {
            Some(key) => format!("{}/{key}", self.location),
            None => self.location.clone(),
        }
    }

    fn fail(
        &self,
        op: &'static str,
        key: Option<&StashKey>,
    ) -> impl FnOnce(postgres::Error) -> Error + '_ {
        let target = self.target(key);
        let key = key.cloned();
        move |e| match (e.code(), key) {
            (Some(code), Some(key)) if *code == SqlState::LOCK_NOT_AVAILABLE => {
                Error::Locked { path: target.into(), key }
            }
            _ => Error::Backend { op, target, source: e.into() },
        }
    }

    fn new_client(&self) -> Result<Client> {
        let connected = match &self.shared.tls {
            Tls::Plain => self.shared.config.connect(NoTls),
            #[cfg(feature = "postgres-tls")]
            Tls::Rustls(tls) => self.shared.config.connect(tls.clone()),
        };
        let mut client = connected.map_err(|e| Error::Backend {
            op: "connect to",
            target: self.location.clone(),
            source: e.into(),
        })?;
        let ms = self.shared.lock_timeout.as_millis().max(1);
        client.batch_execute(&format!("SET lock_timeout = {ms}")).map_err(|e| Error::Backend {
            op: "set up a session on",
            target: self.location.clone(),
            source: e.into(),
        })?;
        Ok(client)
    }

    fn take_client(&self) -> Result<Client> {
        let pooled = self.shared.pool.lock().unwrap_or_else(PoisonError::into_inner).pop();
        match pooled {
            Some(client) if !client.is_closed() => Ok(client),
            _ => self.new_client(),
        }
    }

    fn give_back(&self, client: Client) {
        self.shared.give_back(client);
    }

    /// A chunked envelope, read in one snapshot, a chunk at a time.
    fn get_chunked(&self, key: &StashKey) -> Result<Option<Fetched>> {
        let mut client = self.take_client()?;
        let opened = (|| {
            client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
            let row = client.query_opt(
                "SELECT s.chunks, s.envelope, \
                   (SELECT coalesce(sum(length(c.bytes)), 0)::bigint FROM safestash_chunks c \
                    WHERE c.namespace = s.namespace AND c.key = s.key) \
                 FROM safestash_stashes s WHERE s.namespace = $1 AND s.key = $2",
                &[&self.ns, &key.as_str()],
            )?;
            let stmt = client.prepare(
                "SELECT bytes FROM safestash_chunks WHERE namespace = $1 AND key = $2 AND seq = $3",
            )?;
            Ok::<_, postgres::Error>(
                row.map(|r| (r.get::<_, i32>(0), r.get::<_, Vec<u8>>(1), r.get::<_, i64>(2), stmt)),
            )
        })();
        let found = match opened {
            Ok(found) => found,
            Err(e) => {
                // The snapshot's transaction goes with the connection.
                drop(client);
                return Err(self.fail("load", Some(key))(e));
            }
        };
        let mut reader = ChunkReader {
            client: Some(client),
            shared: self.shared.clone(),
            stmt: None,
            ns: self.ns.clone(),
            key: key.as_str().to_owned(),
            next: 0,
            chunks: 0,
            cur: Vec::new(),
            at: 0,
        };
        let Some((chunks, inline, total, stmt)) = found else {
            reader.end();
            return Ok(None);
        };
        if chunks == 0 {
            // Replaced by a small stash since the first look.
            reader.end();
            let len = inline.len() as u64;
            return Ok(Some(Fetched { len, reader: Box::new(Cursor::new(inline)) }));
        }
        reader.chunks = chunks;
        reader.stmt = Some(stmt);
        Ok(Some(Fetched { len: u64::try_from(total).unwrap_or(0), reader: Box::new(reader) }))
    }

    /// Runs `f` on the pinned connection of a held lock, or on a pooled one.
    /// A connection that failed is not reused.
    fn run<R>(
        &self,
        op: &'static str,
        key: Option<&StashKey>,
        f: impl FnOnce(&mut Client) -> std::result::Result<R, postgres::Error>,
    ) -> Result<R> {
        if let Some(pinned) = &self.pinned {
            let mut guard = pinned.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(client) = guard.as_mut() else {
                return Err(Error::Backend {
                    op,
                    target: self.target(key),
                    source: "the lock's connection is gone".into(),
                });
            };
            return f(client).map_err(self.fail(op, key));
        }
        let mut client = self.take_client()?;
        let out = f(&mut client);
        // A failed statement leaves the connection usable unless it closed;
        // a failed transaction was rolled back when it was dropped.
        self.give_back(client);
        out.map_err(self.fail(op, key))
    }

    fn ensure_schema(&self) -> Result<()> {
        let version = self.run("create the schema in", None, |c| {
            let exists: bool = c
                .query_one(
                    "SELECT to_regclass('safestash_stashes') IS NOT NULL \
                     AND to_regclass('safestash_schema') IS NOT NULL",
                    &[],
                )?
                .get(0);
            if !exists {
                let mut tx = c.transaction()?;
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])?;
                tx.batch_execute(CREATE_STASHES)?;
                // Tables that an older build created stay as they are: the
                // version below tells, and a migration follows.
                let version: Option<i32> =
                    tx.query_one("SELECT max(version) FROM safestash_schema", &[])?.get(0);
                if version == Some(SCHEMA_VERSION) {
                    tx.batch_execute(CREATE_CHUNKS)?;
                }
                tx.commit()?;
            }
            let version: Option<i32> =
                c.query_one("SELECT max(version) FROM safestash_schema", &[])?.get(0);
            Ok(version)
        })?;
        match version {
            Some(SCHEMA_VERSION) => Ok(()),
            Some(1) => self.migrate_from_1(),
            other => Err(Error::Backend {
                op: "use the schema of",
                target: self.location.clone(),
                source: format!(
                    "safestash_schema holds version {other:?}; this build uses version {SCHEMA_VERSION}"
                )
                .into(),
            }),
        }
    }

    /// Schema version 1 to 2 (see the [module docs](self)), in one
    /// transaction under the schema lock; a no-op if another process did it.
    fn migrate_from_1(&self) -> Result<()> {
        self.run("migrate the schema (version 1 to 2; see the docs for the SQL) of", None, |c| {
            let mut tx = c.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])?;
            let version: Option<i32> =
                tx.query_one("SELECT max(version) FROM safestash_schema", &[])?.get(0);
            if version == Some(1) {
                tx.batch_execute(MIGRATE_1_TO_2)?;
                tx.batch_execute(CREATE_CHUNKS)?;
                tx.execute("UPDATE safestash_schema SET version = $1", &[&SCHEMA_VERSION])?;
            }
            tx.commit()
        })
    }
}

/// libpq's environment variables for what the URL leaves out.
fn fill_from_env(config: &mut Config) {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if config.get_hosts().is_empty() {
        config.host(var("PGHOST").as_deref().unwrap_or("localhost"));
    }
    if config.get_ports().is_empty() {
        if let Some(port) = var("PGPORT").and_then(|p| p.parse().ok()) {
            config.port(port);
        }
    }
    if config.get_user().is_none() {
        if let Some(user) = var("PGUSER").or_else(|| var("USER")) {
            config.user(&user);
        }
    }
    if config.get_password().is_none() {
        if let Some(password) = var("PGPASSWORD") {
            config.password(password);
        }
    }
    if config.get_dbname().is_none() {
        if let Some(db) = var("PGDATABASE") {
            config.dbname(&db);
        }
    }
}

/// `postgresql://user@host:port/db`, never the password.
fn describe(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(Host::Unix(p)) => p.display().to_string(),
        None => String::new(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().map(|u| format!("{u}@")).unwrap_or_default();
    let db = config.get_dbname().or(config.get_user()).unwrap_or("");
    format!("postgresql://{user}{host}:{port}/{db}")
}

fn digest_of(bytes: &[u8]) -> Option<Digest> {
    <[u8; 32]>::try_from(bytes).ok().map(Digest::from_bytes)
}

impl Backend for Postgres {
    fn location(&self) -> &str {
        &self.location
    }

    fn put(
        &self,
        key: &StashKey,
        envelope: &[u8],
        digest: &Digest,
        cond: Condition,
    ) -> Result<Outcome> {
        self.put_with(key, cond, &mut |sink| {
            sink.write_all(envelope).map_err(|e| Error::Backend {
                op: "save",
                target: self.target(Some(key)),
                source: e.into(),
            })?;
            Ok(*digest)
        })
    }

    fn put_with(&self, key: &StashKey, cond: Condition, fill: &mut Fill<'_>) -> Result<Outcome> {
        let step = self.run("save", Some(key), |c| {
            let mut tx = c.transaction()?;
            tx.batch_execute("SET LOCAL synchronous_commit = on")?;
            tx.execute(XACT_LOCK, &[&self.ns, &key.as_str()])?;
            let current: Option<(Vec<u8>, i32)> = tx
                .query_opt(
                    "SELECT digest, chunks FROM safestash_stashes \
                     WHERE namespace = $1 AND key = $2 FOR UPDATE",
                    &[&self.ns, &key.as_str()],
                )?
                .map(|row| (row.get(0), row.get(1)));
            let current_digest = current.as_ref().map(|(d, _)| digest_of(d));
            let refused = match cond {
                Condition::Any => false,
                Condition::Absent => current.is_some(),
                Condition::Unchanged(d) => current_digest != Some(Some(d)),
            };
            if refused {
                return Ok(PutStep::Refused(current_digest.flatten()));
            }
            // The condition holds (and stays so under the lock): stream.
            let had_chunks = current.is_some_and(|(_, n)| n > 0);
            let mut sink = Chunker::new(&mut tx, &self.ns, key.as_str(), had_chunks);
            let filled = fill(&mut sink);
            if let Some(e) = sink.failed.take() {
                return Err(e);
            }
            let digest = match filled {
                Ok(d) => d,
                Err(e) => return Ok(PutStep::FillFailed(e)),
            };
            sink.finish(&digest)?;
            // The commit's own failure is told apart: its outcome may be unknown.
            Ok(PutStep::Commit(tx.commit()))
        })?;
        match step {
            PutStep::Refused(current) => Ok(Outcome::Refused { current }),
            PutStep::FillFailed(e) => Err(e),
            PutStep::Commit(Ok(())) => Ok(Outcome::Done),
            PutStep::Commit(Err(e)) => Err(self.fail(
                "commit the save (if the connection was lost, it may have committed) of",
                Some(key),
            )(e)),
        }
    }

    fn get(&self, key: &StashKey) -> Result<Option<Fetched>> {
        // One statement for the common case: the envelope inline in its row.
        let row: Option<(i32, Vec<u8>)> = self.run("load", Some(key), |c| {
            Ok(c.query_opt(
                "SELECT chunks, envelope FROM safestash_stashes WHERE namespace = $1 AND key = $2",
                &[&self.ns, &key.as_str()],
            )?
            .map(|row| (row.get(0), row.get(1))))
        })?;
        match row {
            None => Ok(None),
            Some((0, b)) => {
                Ok(Some(Fetched { len: b.len() as u64, reader: Box::new(Cursor::new(b)) }))
            }
            Some(_) => self.get_chunked(key),
        }
    }

    fn delete(&self, key: &StashKey, cond: Condition) -> Result<Outcome> {
        self.run("clear", Some(key), |c| {
            let mut tx = c.transaction()?;
            tx.batch_execute("SET LOCAL synchronous_commit = on")?;
            tx.execute(XACT_LOCK, &[&self.ns, &key.as_str()])?;
            let current: Option<Vec<u8>> = tx
                .query_opt(
                    "SELECT digest FROM safestash_stashes WHERE namespace = $1 AND key = $2 FOR UPDATE",
                    &[&self.ns, &key.as_str()],
                )?
                .map(|row| row.get(0));
            let Some(current) = current else { return Ok(Outcome::Missing) };
            let current = digest_of(&current);
            match cond {
                Condition::Absent => return Ok(Outcome::Refused { current }),
                Condition::Unchanged(d) if current != Some(d) => {
                    return Ok(Outcome::Refused { current });
                }
                _ => {}
            }
            tx.execute(
                "DELETE FROM safestash_stashes WHERE namespace = $1 AND key = $2",
                &[&self.ns, &key.as_str()],
            )?;
            tx.commit()?;
            Ok(Outcome::Done)
        })
    }

    fn list(&self, head_len: usize) -> Result<Vec<Listed>> {
        let head_len = i32::try_from(head_len).unwrap_or(i32::MAX);
        let rows = self.run("list", None, |c| {
            c.query(
                "SELECT s.key, \
                   CASE WHEN s.chunks = 0 THEN length(s.envelope)::bigint \
                   ELSE (SELECT coalesce(sum(length(c.bytes)), 0)::bigint FROM safestash_chunks c \
                         WHERE c.namespace = s.namespace AND c.key = s.key) END, \
                   CASE WHEN s.chunks = 0 THEN substring(s.envelope FROM 1 FOR $2) \
                   ELSE coalesce((SELECT substring(c.bytes FROM 1 FOR $2) FROM safestash_chunks c \
                         WHERE c.namespace = s.namespace AND c.key = s.key AND c.seq = 0), \
                         ''::bytea) END \
                 FROM safestash_stashes s WHERE s.namespace = $1 ORDER BY s.key COLLATE \"C\"",
                &[&self.ns, &head_len],
            )
        })?;
        Ok(rows
            .into_iter()
            .map(|row| Listed {
                name: row.get(0),
                len: u64::try_from(row.get::<_, i64>(1)).unwrap_or(0),
                head: row.get(2),
            })
            .collect())
    }

    fn has_locks(&self) -> bool {
        true
    }

    fn lock(&self, key: &StashKey, wait: bool) -> Result<Option<Box<dyn Held>>> {
        let mut client = self.take_client()?;
        let args: [&(dyn postgres::types::ToSql + Sync); 2] = [&self.ns, &key.as_str()];
        let taken = if wait {
            client
                .execute("SELECT pg_advisory_lock(hashtextextended($1 || '/' || $2, 0))", &args)
                .map(|_| true)
        } else {
            client
                .query_one(
                    "SELECT pg_try_advisory_lock(hashtextextended($1 || '/' || $2, 0))",
                    &args,
                )
                .map(|row| row.get::<_, bool>(0))
        };
        match taken {
            Ok(true) => {
                let store = Postgres {
                    shared: self.shared.clone(),
                    ns: self.ns.clone(),
                    location: self.location.clone(),
                    pinned: Some(Arc::new(Mutex::new(Some(client)))),
                };
                Ok(Some(Box::new(PgHeld { store, key: key.clone() })))
            }
            Ok(false) => {
                self.give_back(client);
                Ok(None)
            }
            Err(e) => {
                self.give_back(client);
                Err(self.fail("lock", Some(key))(e))
            }
        }
    }

    fn move_aside(&self, key: &StashKey, aside: &str) -> Result<bool> {
        self.run("quarantine", Some(key), |c| {
            let mut tx = c.transaction()?;
            tx.batch_execute("SET LOCAL synchronous_commit = on")?;
            tx.execute(XACT_LOCK, &[&self.ns, &key.as_str()])?;
            let moved = tx.execute(
                "UPDATE safestash_stashes SET key = $3 WHERE namespace = $1 AND key = $2",
                &[&self.ns, &key.as_str(), &aside],
            )?;
            tx.commit()?;
            Ok(moved > 0)
        })
    }

    fn child(&self, ns: &str) -> Box<dyn Backend> {
        Box::new(Postgres::in_namespace(self.shared.clone(), format!("{}/{ns}", self.ns)))
    }

    fn children(&self) -> Result<Vec<String>> {
        let rows = self.run("list namespaces of", None, |c| {
            c.query(
                "SELECT DISTINCT substr(namespace, length($1) + 2) FROM safestash_stashes \
                 WHERE left(namespace, length($1) + 1) = $1 || '/'",
                &[&self.ns],
            )
        })?;
        let mut found: Vec<String> =
            rows.into_iter().map(|r| r.get::<_, String>(0)).filter(|n| !n.contains('/')).collect();
        found.sort();
        Ok(found)
    }
}

/// A held advisory lock and the session that holds it.
struct PgHeld {
    store: Postgres,
    key: StashKey,
}

impl fmt::Debug for PgHeld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgHeld").field("key", &self.key).finish_non_exhaustive()
    }
}

impl Held for PgHeld {
    fn backend(&self) -> &dyn Backend {
        &self.store
    }
}

impl Drop for PgHeld {
    fn drop(&mut self) {
        let Some(pinned) = &self.store.pinned else { return };
        let client = pinned.lock().unwrap_or_else(PoisonError::into_inner).take();
        let Some(mut client) = client else { return };
        let unlocked = client
            .query_one(
                "SELECT pg_advisory_unlock(hashtextextended($1 || '/' || $2, 0))",
                &[&self.store.ns, &self.key.as_str()],
            )
            .map(|row| row.get::<_, bool>(0));
        match unlocked {
            Ok(true) => self.store.give_back(client),
            // Closing the session releases whatever it still holds.
            _ => drop(client),
        }
    }
}

/// What a save's transaction came to.
enum PutStep {
    Refused(Option<Digest>),
    FillFailed(Error),
    Commit(std::result::Result<(), postgres::Error>),
}

/// The sink a save streams its envelope into: up to [`CHUNK_LEN`] it is
/// kept for one inline row; past it, it goes out in chunk rows as it comes.
struct Chunker<'t, 'c> {
    tx: &'t mut Transaction<'c>,
    ns: &'t str,
    key: &'t str,
    buf: Vec<u8>,
    /// Chunks written so far.
    seq: i32,
    /// The old envelope has chunks still to remove.
    had_chunks: bool,
    size: u64,
    insert: Option<Statement>,
    /// The server's error, when a statement failed (the transaction is lost).
    failed: Option<postgres::Error>,
}

impl<'t, 'c> Chunker<'t, 'c> {
    fn new(tx: &'t mut Transaction<'c>, ns: &'t str, key: &'t str, had_chunks: bool) -> Self {
        Chunker {
            tx,
            ns,
            key,
            buf: Vec::new(),
            seq: 0,
            had_chunks,
            size: 0,
            insert: None,
            failed: None,
        }
    }

    fn drop_old_chunks(&mut self) -> std::result::Result<(), postgres::Error> {
        if std::mem::take(&mut self.had_chunks) {
            self.tx.execute(
                "DELETE FROM safestash_chunks WHERE namespace = $1 AND key = $2",
                &[&self.ns, &self.key],
            )?;
        }
        Ok(())
    }

    /// Writes the full buffer as the next chunk; before the first, the row
    /// (a placeholder until [`finish`](Self::finish)) and no old chunks.
    fn write_chunk(&mut self) -> std::result::Result<(), postgres::Error> {
        if self.insert.is_none() {
            self.tx.execute(
                "INSERT INTO safestash_stashes (namespace, key, envelope, digest, size, created, chunks) \
                 VALUES ($1, $2, '', '', 0, now(), 0) \
                 ON CONFLICT (namespace, key) DO UPDATE SET envelope = '', digest = '', size = 0, \
                 created = now(), chunks = 0",
                &[&self.ns, &self.key],
            )?;
            self.drop_old_chunks()?;
            self.insert = Some(self.tx.prepare(
                "INSERT INTO safestash_chunks (namespace, key, seq, bytes) VALUES ($1, $2, $3, $4)",
            )?);
        }
        if let Some(insert) = &self.insert {
            self.tx.execute(insert, &[&self.ns, &self.key, &self.seq, &self.buf.as_slice()])?;
        }
        self.seq += 1;
        self.buf.clear();
        Ok(())
    }

    /// Writes what is left: the whole envelope in its row, or the last
    /// chunk and the row's digest, size and chunk count.
    fn finish(mut self, digest: &Digest) -> std::result::Result<(), postgres::Error> {
        let size = i64::try_from(self.size).unwrap_or(i64::MAX);
        let digest = &digest.as_bytes()[..];
        if self.insert.is_none() {
            self.drop_old_chunks()?;
            self.tx.execute(
                "INSERT INTO safestash_stashes (namespace, key, envelope, digest, size, created, chunks) \
                 VALUES ($1, $2, $3, $4, $5, now(), 0) \
                 ON CONFLICT (namespace, key) DO UPDATE SET envelope = EXCLUDED.envelope, \
                 digest = EXCLUDED.digest, size = EXCLUDED.size, created = EXCLUDED.created, \
                 chunks = 0",
                &[&self.ns, &self.key, &self.buf.as_slice(), &digest, &size],
            )?;
            return Ok(());
        }
        if !self.buf.is_empty() {
            self.write_chunk()?;
        }
        self.tx.execute(
            "UPDATE safestash_stashes SET digest = $3, size = $4, chunks = $5, created = now() \
             WHERE namespace = $1 AND key = $2",
            &[&self.ns, &self.key, &digest, &size, &self.seq],
        )?;
        Ok(())
    }
}

impl Write for Chunker<'_, '_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.failed.is_some() {
            return Err(io::Error::other("the save's transaction failed"));
        }
        let mut rest = data;
        while !rest.is_empty() {
            // A full buffer goes out only when more comes: an envelope of
            // exactly CHUNK_LEN stays inline.
            if self.buf.len() == CHUNK_LEN {
                if let Err(e) = self.write_chunk() {
                    self.failed = Some(e);
                    return Err(io::Error::other("the server refused a chunk of the envelope"));
                }
            }
            let take = (CHUNK_LEN - self.buf.len()).min(rest.len());
            self.buf.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
        }
        self.size += data.len() as u64;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The reader of a chunked envelope: one chunk in memory at a time, all
/// read in the snapshot of one read-only transaction, whose connection
/// goes back to the pool at the end.
struct ChunkReader {
    client: Option<Client>,
    shared: Arc<Shared>,
    stmt: Option<Statement>,
    ns: String,
    key: String,
    next: i32,
    chunks: i32,
    cur: Vec<u8>,
    at: usize,
}

impl ChunkReader {
    /// Ends the snapshot and returns the connection.
    fn end(&mut self) {
        if let Some(mut client) = self.client.take() {
            if client.batch_execute("ROLLBACK").is_ok() {
                self.shared.give_back(client);
            }
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.cur.len() {
            let (Some(client), Some(stmt)) = (self.client.as_mut(), self.stmt.as_ref()) else {
                return Ok(0);
            };
            if self.next >= self.chunks {
                self.end();
                return Ok(0);
            }
            match client.query_opt(stmt, &[&self.ns, &self.key, &self.next]) {
                Ok(Some(row)) => {
                    self.cur = row.get(0);
                    self.at = 0;
                    self.next += 1;
                }
                // A missing chunk: the envelope ends short, which the
                // store's verification reports as truncated.
                Ok(None) => self.next = self.chunks,
                Err(e) => {
                    self.client = None;
                    return Err(io::Error::other(e));
                }
            }
        }
        let n = buf.len().min(self.cur.len() - self.at);
        buf[..n].copy_from_slice(&self.cur[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl Drop for ChunkReader {
    fn drop(&mut self) {
        self.end();
    }
}
