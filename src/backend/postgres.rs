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
//! `PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD` and `PGDATABASE`.
//! Connections are plain TCP or Unix sockets (`NoTls`): TLS is not wired up
//! yet, so use it on a trusted network or through a local socket or tunnel.
//!
//! # Schema (version 1)
//!
//! Created on first use when the role may create tables (in the first
//! schema of its `search_path`); otherwise a DBA creates it with:
//!
//! ```sql
//! CREATE TABLE safestash_schema (version integer NOT NULL);
//! INSERT INTO safestash_schema (version) VALUES (1);
//! CREATE TABLE safestash_stashes (
//!     namespace text        NOT NULL,
//!     key       text        NOT NULL,
//!     envelope  bytea       NOT NULL, -- the v1 envelope, byte for byte a stash file
//!     digest    bytea       NOT NULL, -- its sha256 as recorded at save (for conditions)
//!     size      bigint      NOT NULL, -- length(envelope) at save
//!     created   timestamptz NOT NULL DEFAULT now(),
//!     PRIMARY KEY (namespace, key)
//! );
//! GRANT SELECT, INSERT, UPDATE, DELETE ON safestash_stashes TO worker_role;
//! GRANT SELECT ON safestash_schema TO worker_role;
//! ```
//!
//! A store refuses a schema version other than 1. Reserved namespaces of a
//! store (the journal's, the tenant guard's) are the rows of namespace
//! `NAMESPACE/journal` and so on; a quarantined stash is the row renamed
//! to `.KEY.quarantined.STAMP` in its namespace.
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
//! - Size: an envelope is one `bytea` value, held in memory on both sides:
//!   at most 1 GiB by PostgreSQL's limit, and practically a few hundred MiB.
//!   Stashes larger than memory need the directory store for now.

use std::fmt;
use std::io::Cursor;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use postgres::config::Host;
use postgres::error::SqlState;
use postgres::{Client, Config, NoTls};

use super::{Backend, Condition, Fetched, Held, Listed, Outcome};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::key::StashKey;

/// The schema version this build reads and writes.
pub const SCHEMA_VERSION: i32 = 1;

/// The namespace of a URL without `namespace=`.
pub const DEFAULT_NAMESPACE: &str = "default";

const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// The advisory lock taken while creating the schema (so that concurrent
/// first uses do not race in `CREATE TABLE IF NOT EXISTS`).
const SCHEMA_LOCK: i64 = 0x5afe_57a5_0000_0001;

const CREATE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS safestash_schema (version integer NOT NULL);
CREATE TABLE IF NOT EXISTS safestash_stashes (
    namespace text        NOT NULL,
    key       text        NOT NULL,
    envelope  bytea       NOT NULL,
    digest    bytea       NOT NULL,
    size      bigint      NOT NULL,
    created   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, key)
);
INSERT INTO safestash_schema (version)
    SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM safestash_schema);
";

const XACT_LOCK: &str = "SELECT pg_advisory_xact_lock(hashtextextended($1 || '/' || $2, 0))";

/// What every connection of a store (and its children) shares.
struct Shared {
    config: Config,
    /// `postgresql://user@host:port/db`, no password.
    base: String,
    lock_timeout: Duration,
    pool: Mutex<Vec<Client>>,
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
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "namespace" => {
                    ns = StashKey::new(value)
                        .map_err(|_| url_error(url, "namespace must be a valid key ([A-Za-z0-9._-], not starting with '.')"))?
                        .into_string();
                }
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
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("safestash");
        }
        let base = describe(&config);
        let shared = Arc::new(Shared { config, base, lock_timeout, pool: Mutex::new(Vec::new()) });
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
        let mut client = self.shared.config.connect(NoTls).map_err(|e| Error::Backend {
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
        if !client.is_closed() {
            self.shared.pool.lock().unwrap_or_else(PoisonError::into_inner).push(client);
        }
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
                tx.batch_execute(CREATE_SCHEMA)?;
                tx.commit()?;
            }
            let version: Option<i32> =
                c.query_one("SELECT max(version) FROM safestash_schema", &[])?.get(0);
            Ok(version)
        })?;
        match version {
            Some(SCHEMA_VERSION) => Ok(()),
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
        let size = i64::try_from(envelope.len()).unwrap_or(i64::MAX);
        let done = self.run("save", Some(key), |c| {
            let mut tx = c.transaction()?;
            tx.batch_execute("SET LOCAL synchronous_commit = on")?;
            tx.execute(XACT_LOCK, &[&self.ns, &key.as_str()])?;
            let current: Option<Vec<u8>> = tx
                .query_opt(
                    "SELECT digest FROM safestash_stashes WHERE namespace = $1 AND key = $2 FOR UPDATE",
                    &[&self.ns, &key.as_str()],
                )?
                .map(|row| row.get(0));
            let current_digest = current.as_deref().map(digest_of);
            let refused = match cond {
                Condition::Any => false,
                Condition::Absent => current.is_some(),
                Condition::Unchanged(d) => current_digest != Some(Some(d)),
            };
            if refused {
                return Ok(Ok(Outcome::Refused { current: current_digest.flatten() }));
            }
            tx.execute(
                "INSERT INTO safestash_stashes (namespace, key, envelope, digest, size, created) \
                 VALUES ($1, $2, $3, $4, $5, now()) \
                 ON CONFLICT (namespace, key) DO UPDATE SET envelope = EXCLUDED.envelope, \
                 digest = EXCLUDED.digest, size = EXCLUDED.size, created = EXCLUDED.created",
                &[&self.ns, &key.as_str(), &envelope, &&digest.as_bytes()[..], &size],
            )?;
            // The commit's own failure is told apart: its outcome may be unknown.
            Ok(tx.commit().map(|()| Outcome::Done))
        })?;
        done.map_err(self.fail(
            "commit the save (if the connection was lost, it may have committed) of",
            Some(key),
        ))
    }

    fn get(&self, key: &StashKey) -> Result<Option<Fetched>> {
        let bytes: Option<Vec<u8>> = self.run("load", Some(key), |c| {
            Ok(c.query_opt(
                "SELECT envelope FROM safestash_stashes WHERE namespace = $1 AND key = $2",
                &[&self.ns, &key.as_str()],
            )?
            .map(|row| row.get(0)))
        })?;
        Ok(bytes.map(|b| Fetched { len: b.len() as u64, reader: Box::new(Cursor::new(b)) }))
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
                "SELECT key, length(envelope)::bigint, substring(envelope FROM 1 FOR $2) \
                 FROM safestash_stashes WHERE namespace = $1 ORDER BY key COLLATE \"C\"",
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
