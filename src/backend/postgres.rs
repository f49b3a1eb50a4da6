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
//!   fails with [`Error::Locked`];
//! - `timeout=DURATION` (default `30s`): the client-side bound of each call
//!   (see *Timeouts* below).
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
//! The tables live in the first schema of the role's `search_path` that
//! has `safestash_stashes`, else in the first schema of it that exists;
//! that schema is found once, when the store is opened, and every
//! statement then names it explicitly. Created on first use when the role
//! may create tables; otherwise a DBA creates them with:
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
//!   `pg_catalog.pg_advisory_lock(pg_catalog.hashtextextended('NAMESPACE/KEY'::pg_catalog.text,
//!   0::pg_catalog.int8))` (the same numbers as earlier builds' unqualified
//!   `hashtextextended(namespace || '/' || key, 0)`), held
//!   on a connection of the [`KeyLock`](crate::KeyLock) and released when it
//!   is dropped or when that connection ends (a killed worker's lock goes
//!   with its TCP connection; a vanished host's when the server's TCP
//!   keepalive gives up). A hung worker keeps its lock; others wait at most
//!   `lock_timeout`. Every change also takes the same lock inside its
//!   transaction (`pg_advisory_xact_lock`), and checks its condition there.
//!   Two keys whose hashes collide share a lock (a wait, never a wrong
//!   result).
//! - Keys and namespaces are always bound parameters.
//! - Nothing on the search path can change a statement: every session runs
//!   `SET search_path = pg_catalog, pg_temp` first, every function is
//!   named `pg_catalog.`, every literal is cast to its exact type, and the
//!   tables are schema-qualified. A function or operator that another
//!   role creates in `public` (which any role may, up to PostgreSQL 14)
//!   cannot shadow `hashtextextended` or `=`. A create-if-absent save also
//!   holds without the lock: its row is inserted with `ON CONFLICT DO
//!   NOTHING`, and a conflict (no row inserted) is a refusal.
//!
//! # Connections, restarts, timeouts
//!
//! - Connections are pooled per store (and shared with its child
//!   namespaces): at most [`POOL_MAX_IDLE`] (8) are kept idle, and one idle
//!   for more than [`POOL_IDLE_TIME`] (5 minutes) is closed instead of
//!   reused. A held lock keeps its own connection until it is dropped;
//!   there is no bound on connections in use (one per concurrent call or
//!   held lock).
//! - A restart of the server ends every pooled session. A call that takes
//!   a pooled connection first lets it read what the server sent while it
//!   was idle; a closed one empties the pool. When the first statement of
//!   a call (always a `BEGIN`, a read, or a lock that dies with its
//!   session) fails because the session is gone (the connection closed, or
//!   the server's `57P01`/`57P02`/`57P03`), the call is run once more on a
//!   new connection. Nothing later is retried: a failed `COMMIT` may have
//!   committed, and the error says so. A held lock's session is never
//!   replaced: a call through a lock whose session died fails.
//! - Timeouts: each call (a save, a load, a clear, a lock, opening the
//!   store) must finish within `timeout`, plus `lock_timeout` for a call
//!   that may wait for a key's lock, connecting and the retry included. The
//!   bound is a clock on the client around every statement, so it holds
//!   when the server process is stopped (its kernel still acknowledges
//!   every packet: neither TCP's timeouts nor the server's
//!   `statement_timeout` fire). Past it the call fails with
//!   [`Error::Backend`] naming the operation, whose source says it timed
//!   out; the connection is closed, and whether what it sent took effect
//!   is unknown (a save that timed out may still land). TCP keepalives
//!   (idle `timeout`) and `tcp_user_timeout` (`timeout`) are also set, so a
//!   partitioned connection ends in the kernel. A large load's chunk reads
//!   are each bounded by `timeout`.
//!
//! # Poolers
//!
//! Session advisory locks and session settings (`search_path`,
//! `lock_timeout`) need every statement of a connection to run in one
//! server session. Behind pgbouncer in session mode that holds, and the
//! store works as it does directly. In transaction or statement mode it
//! does not: a lock would be taken in one server session and the save
//! would run in another, or the lock would stay behind in a session handed
//! to another client. Opening a store checks this (one connection asks for
//! its server session's pid twice while a second connection holds a
//! transaction open in between) and refuses with [`Error::Backend`] when
//! the pid changes or is shared; connect directly or through session
//! pooling.
//!
//! # Secrets
//!
//! The password of the URL (userinfo, or a `password` parameter, which
//! must be spelled so; any other spelling is refused) never reaches an
//! error or a location: they name `postgresql://user@host:port/db`.
//! - Size: unbounded by memory (see the schema above); a save of N bytes
//!   writes them once to the heap and once to the WAL.

use std::fmt;
use std::io::{self, Cursor, Read, Write};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Config, NoTls, Statement};

use super::{Backend, Fetched, Fill, Held, Listed, Outcome, Precondition};
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

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The most connections a store keeps idle for reuse; more are closed
/// when they are given back.
///
/// ```
/// assert_eq!(safestash::backend::postgres::POOL_MAX_IDLE, 8);
/// ```
pub const POOL_MAX_IDLE: usize = 8;

/// How long an idle connection is kept: one idle for longer is closed
/// instead of reused.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(safestash::backend::postgres::POOL_IDLE_TIME, Duration::from_secs(300));
/// ```
pub const POOL_IDLE_TIME: Duration = Duration::from_secs(300);

/// The advisory lock taken while creating or migrating the schema (so that
/// concurrent first uses do not race).
const SCHEMA_LOCK: i64 = 0x5afe_57a5_0000_0001;

// Statements name the store's tables as `<stashes>`, `<chunks>` and
// `<schema>`, replaced by their schema-qualified names (see `Shared::sql`);
// every function is `pg_catalog.`-qualified and every literal cast to its
// exact type, and sessions run with `search_path = pg_catalog, pg_temp`, so
// nothing another role creates in a schema can change what they call.

const CREATE_CHUNKS: &str = "
CREATE TABLE IF NOT EXISTS <chunks> (
    namespace pg_catalog.text    NOT NULL,
    key       pg_catalog.text    NOT NULL,
    seq       pg_catalog.int4    NOT NULL,
    bytes     pg_catalog.bytea   NOT NULL,
    PRIMARY KEY (namespace, key, seq),
    FOREIGN KEY (namespace, key) REFERENCES <stashes> (namespace, key)
        ON UPDATE CASCADE ON DELETE CASCADE
);
ALTER TABLE <chunks> ALTER COLUMN bytes SET STORAGE EXTERNAL;
";

const CREATE_STASHES: &str = "
CREATE TABLE IF NOT EXISTS <schema> (version pg_catalog.int4 NOT NULL);
CREATE TABLE IF NOT EXISTS <stashes> (
    namespace pg_catalog.text        NOT NULL,
    key       pg_catalog.text        NOT NULL,
    envelope  pg_catalog.bytea       NOT NULL,
    digest    pg_catalog.bytea       NOT NULL,
    size      pg_catalog.int8        NOT NULL,
    created   pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now(),
    chunks    pg_catalog.int4        NOT NULL DEFAULT 0,
    PRIMARY KEY (namespace, key)
);
INSERT INTO <schema> (version)
    SELECT 2 WHERE NOT EXISTS (SELECT 1 FROM <schema>);
";

const MIGRATE_1_TO_2: &str = "
ALTER TABLE <stashes> ADD COLUMN chunks pg_catalog.int4 NOT NULL DEFAULT 0;
";

/// The advisory lock of a key, `$1` being `NAMESPACE/KEY`: the same number
/// as `hashtextextended(namespace || '/' || key, 0)` of earlier builds.
const LOCK_ID: &str = "pg_catalog.hashtextextended($1::pg_catalog.text, 0::pg_catalog.int8)";

/// What every session runs first.
const SESSION_SETUP: &str = "SET search_path = pg_catalog, pg_temp";

mod conn;
#[cfg(feature = "postgres-tls")]
mod tls;

use conn::{Conn, Fault, Tx};

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
    /// The client-side bound of each call (URL parameter `timeout`).
    timeout: Duration,
    /// The quoted schema of the store's tables, with a dot (`"public".`).
    schema: Mutex<String>,
    pool: Mutex<Vec<Conn>>,
}

impl Shared {
    /// Returns a healthy connection to the pool, unless the pool is full.
    fn give_back(&self, mut conn: Conn) {
        if conn.inherited() {
            return conn.abandon();
        }
        if conn.is_closed() {
            return;
        }
        let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() < POOL_MAX_IDLE {
            conn.idle_since = std::time::Instant::now();
            pool.push(conn);
        }
    }

    /// `sql` with the store's tables named in their schema.
    fn sql(&self, sql: &str) -> String {
        let schema = self.schema.lock().unwrap_or_else(PoisonError::into_inner);
        sql.replace("<stashes>", &format!("{schema}safestash_stashes"))
            .replace("<chunks>", &format!("{schema}safestash_chunks"))
            .replace("<schema>", &format!("{schema}safestash_schema"))
    }
}

/// One namespace of a PostgreSQL database. See the [module docs](self).
pub struct Postgres {
    shared: Arc<Shared>,
    ns: String,
    location: String,
    /// The connection of a held lock: every call runs on it.
    pinned: Option<Arc<Mutex<Option<Conn>>>>,
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

/// A query parameter's name, percent-decoded and lowercased.
fn param_name(name: &str) -> String {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).to_ascii_lowercase()
}

/// `url` with any password replaced by `***`: the userinfo's (everything
/// between the first `:` after the scheme and the last `@`, so a password
/// with `/`, `?` or `@` in it is covered too), and every query parameter
/// whose name is `password` in any case or percent-encoding. A string that
/// is not a URL is a libpq `key=value` string: its `password` values go.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return redact_conninfo(url) };
    let (userinfo, after) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let userinfo = match userinfo {
        Some(u) => match u.split_once(':') {
            Some((user, _)) => format!("{user}:***@"),
            None => format!("{u}@"),
        },
        None => String::new(),
    };
    let after = match after.split_once('?') {
        Some((path, query)) => {
            let pairs: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((name, _)) if param_name(name) == "password" => format!("{name}=***"),
                    _ => p.to_owned(),
                })
                .collect();
            format!("{path}?{}", pairs.join("&"))
        }
        None => after.to_owned(),
    };
    format!("{scheme}://{userinfo}{after}")
}

/// A libpq `key=value` string with every `password` value (any case,
/// quoted or not) replaced by `***`.
pub(crate) fn redact_conninfo(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while !rest.is_empty() {
        let ws = rest.len() - rest.trim_start().len();
        out.push_str(&rest[..ws]);
        rest = &rest[ws..];
        let Some(eq) = rest.find('=') else {
            out.push_str(rest);
            break;
        };
        let name = &rest[..eq];
        let is_password = name.trim().eq_ignore_ascii_case("password");
        out.push_str(&rest[..=eq]);
        rest = rest[eq + 1..].trim_start();
        // The value: quoted (with \' and \\ escapes) or up to whitespace.
        let end = if let Some(quoted) = rest.strip_prefix('\'') {
            let mut esc = false;
            quoted
                .find(|c| {
                    let stop = !esc && c == '\'';
                    esc = !esc && c == '\\';
                    stop
                })
                .map_or(rest.len(), |i| i + 2)
        } else {
            rest.find(char::is_whitespace).unwrap_or(rest.len())
        };
        out.push_str(if is_password { "***" } else { &rest[..end] });
        rest = &rest[end..];
    }
    out
}

impl Postgres {
    /// Connects to the database of `url` (see the [module docs](self)),
    /// refusing a transaction-mode pooler, creating the schema if it is
    /// missing and the role may, and checking its version; then closes
    /// those sessions, so a store that is never used holds no connection.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOption`] for a malformed URL or parameter,
    /// [`Error::Backend`] when the server cannot be reached in time, sits
    /// behind a transaction-mode pooler, or the schema cannot be created
    /// or is of another version.
    pub fn connect(url: &str) -> Result<Postgres> {
        let (base_url, query) = match url.split_once('?') {
            Some((b, q)) => (b, q),
            None => (url, ""),
        };
        let mut ns = DEFAULT_NAMESPACE.to_owned();
        let mut lock_timeout = DEFAULT_LOCK_TIMEOUT;
        let mut timeout = DEFAULT_TIMEOUT;
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
                "timeout" => {
                    timeout = humantime::parse_duration(value)
                        .ok()
                        .filter(|t| !t.is_zero())
                        .ok_or_else(|| url_error(url, "timeout must be a duration such as 30s"))?;
                }
                _ if param_name(name) == "password" && name != "password" => {
                    return Err(url_error(url, "the password parameter is spelled `password`"));
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
            config.connect_timeout(timeout);
        }
        // A partition (unacknowledged data, a silent peer) also ends the
        // connection in the kernel, which frees a held lock's session.
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(timeout);
        }
        config.keepalives(true);
        config.keepalives_idle(timeout.max(Duration::from_secs(1)));
        if config.get_application_name().is_none() {
            config.application_name("safestash");
        }
        let base = describe(&config);
        let shared = Arc::new(Shared {
            config,
            tls,
            base,
            lock_timeout,
            timeout,
            schema: Mutex::new(String::new()),
            pool: Mutex::new(Vec::new()),
        });
        let store = Postgres::in_namespace(shared, ns);
        store.open()?;
        // A store that is never used holds nothing: the sessions the checks
        // opened are closed now, and calls open their own (a forked child
        // then has nothing of its parent's to abandon).
        store.shared.pool.lock().unwrap_or_else(PoisonError::into_inner).clear();
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

    /// `NAMESPACE/KEY`, the text of a key's advisory lock.
    fn lock_name(&self, key: &StashKey) -> String {
        format!("{}/{key}", self.ns)
    }

    /// The end of a call starting now: `timeout`, plus `lock_timeout` for
    /// a call that may wait for a key's lock.
    fn deadline(&self, waits: bool) -> std::time::Instant {
        let wait = if waits { self.shared.lock_timeout } else { Duration::ZERO };
        std::time::Instant::now() + self.shared.timeout + wait
    }

    fn fail(&self, op: &'static str, key: Option<&StashKey>) -> impl FnOnce(Fault) -> Error + '_ {
        let target = self.target(key);
        let key = key.cloned();
        move |e| match (e, key) {
            (e, Some(key)) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                Error::Locked { path: target.into(), key }
            }
            (Fault::Pg(e), _) => Error::Backend { op, target, source: e.into() },
            (Fault::Local(e), _) => Error::Backend { op, target, source: e.into() },
            (Fault::TimedOut, _) => Error::Backend {
                op,
                target,
                source: format!(
                    "timed out: the server did not answer within the call's bound (`timeout` {}, \
                     plus `lock_timeout` {} for a call that may wait for a key's lock); the \
                     connection was closed, and whether what it sent took effect is unknown",
                    humantime::format_duration(self.shared.timeout),
                    humantime::format_duration(self.shared.lock_timeout),
                )
                .into(),
            },
        }
    }

    /// A new session, set up, before `deadline`.
    fn new_client(&self, deadline: std::time::Instant) -> Result<Conn> {
        let config = &self.shared.config;
        let connected = match &self.shared.tls {
            Tls::Plain => Conn::connect(config, NoTls, deadline),
            #[cfg(feature = "postgres-tls")]
            Tls::Rustls(tls) => Conn::connect(config, tls.clone(), deadline),
        };
        let mut conn = connected.map_err(self.fail("connect to", None))?;
        conn.start_call(deadline);
        let ms = self.shared.lock_timeout.as_millis().max(1);
        conn.batch_execute(&format!("{SESSION_SETUP}; SET lock_timeout = {ms}"))
            .map_err(self.fail("set up a session on", None))?;
        Ok(conn)
    }

    /// A pooled session that is still open, else a new one; `true` when
    /// it was pooled. An idle connection found closed (a server restart
    /// ends them all) empties the pool.
    fn take_client(&self, deadline: std::time::Instant) -> Result<(Conn, bool)> {
        loop {
            let pooled = self.shared.pool.lock().unwrap_or_else(PoisonError::into_inner).pop();
            let Some(mut conn) = pooled else { break };
            if conn.inherited() {
                // A forked child's copy of its parent's pool.
                conn.abandon();
                continue;
            }
            if conn.idle_since.elapsed() > POOL_IDLE_TIME {
                continue;
            }
            conn.refresh();
            if conn.is_closed() {
                self.shared.pool.lock().unwrap_or_else(PoisonError::into_inner).clear();
                break;
            }
            return Ok((conn, true));
        }
        Ok((self.new_client(deadline)?, false))
    }

    fn give_back(&self, conn: Conn) {
        self.shared.give_back(conn);
    }

    /// Runs `f` on a session before `deadline`: a pooled one, and once more
    /// on a new one when the pooled one's session turns out to be gone at
    /// `f`'s first statement. That statement (of every call: a `BEGIN`, a
    /// read, or a lock that dies with its session) was then not executed,
    /// or executed in a session that ended without committing anything.
    /// Nothing later is retried: a failed `COMMIT` may have committed.
    fn attempt<R>(
        &self,
        deadline: std::time::Instant,
        mut f: impl FnMut(&mut Conn) -> std::result::Result<R, Fault>,
    ) -> Result<(Conn, std::result::Result<R, Fault>)> {
        let (mut conn, pooled) = self.take_client(deadline)?;
        conn.start_call(deadline);
        let out = f(&mut conn);
        match out {
            Err(fault) if pooled && conn.sent() == 1 && fault.session_gone() => {
                tracing::debug!(store = %self.location, "a pooled connection was closed; retrying on a new one");
                self.shared.pool.lock().unwrap_or_else(PoisonError::into_inner).clear();
                drop(conn);
                let mut conn = self.new_client(deadline)?;
                conn.start_call(deadline);
                let out = f(&mut conn);
                Ok((conn, out))
            }
            out => Ok((conn, out)),
        }
    }

    /// A chunked envelope, read in one snapshot, a chunk at a time.
    fn get_chunked(&self, key: &StashKey) -> Result<Option<Fetched>> {
        let shared = &self.shared;
        let (conn, opened) = self.attempt(self.deadline(false), |conn| {
            conn.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
            let row = conn.query_opt(
                &shared.sql(
                    "SELECT s.chunks, s.envelope, \
                       (SELECT COALESCE(pg_catalog.sum(pg_catalog.length(c.bytes)), 0)::pg_catalog.int8 \
                        FROM <chunks> c WHERE c.namespace = s.namespace AND c.key = s.key) \
                     FROM <stashes> s WHERE s.namespace = $1 AND s.key = $2",
                ),
                &[&self.ns, &key.as_str()],
            )?;
            let stmt = conn.prepare(&shared.sql(
                "SELECT bytes FROM <chunks> WHERE namespace = $1 AND key = $2 AND seq = $3",
            ))?;
            Ok(row.map(|r| (r.get::<_, i32>(0), r.get::<_, Vec<u8>>(1), r.get::<_, i64>(2), stmt)))
        })?;
        let found = match opened {
            Ok(found) => found,
            Err(e) => {
                // The snapshot's transaction goes with the connection.
                drop(conn);
                return Err(self.fail("load", Some(key))(e));
            }
        };
        let mut reader = ChunkReader {
            client: Some(conn),
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

    /// Runs `f` on the pinned connection of a held lock, or on a pooled one
    /// (see [`attempt`](Self::attempt)), all before the call's deadline
    /// (`waits`: it may wait for a key's lock). A connection that failed is
    /// not reused.
    fn run<R>(
        &self,
        op: &'static str,
        key: Option<&StashKey>,
        waits: bool,
        f: impl FnMut(&mut Conn) -> std::result::Result<R, Fault>,
    ) -> Result<R> {
        let deadline = self.deadline(waits);
        if let Some(pinned) = &self.pinned {
            let mut f = f;
            let mut guard = pinned.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(conn) = guard.as_mut() else {
                return Err(Error::Backend {
                    op,
                    target: self.target(key),
                    source: "the lock's connection is gone".into(),
                });
            };
            // No retry here: the lock lives and dies with this session.
            if conn.inherited() {
                return Err(Error::Backend {
                    op,
                    target: self.target(key),
                    source: "the lock's session belongs to the parent process this one was \
                             forked from: the lock is not held here"
                        .into(),
                });
            }
            if conn.is_closed() {
                return Err(Error::Backend {
                    op,
                    target: self.target(key),
                    source: "the lock's connection was closed (a call on it failed or timed out): \
                             the lock is no longer held"
                        .into(),
                });
            }
            conn.start_call(deadline);
            return f(conn).map_err(self.fail(op, key));
        }
        let (conn, out) = self.attempt(deadline, f)?;
        // A failed statement leaves the connection usable unless it closed;
        // a failed transaction was rolled back when it was dropped.
        self.give_back(conn);
        out.map_err(self.fail(op, key))
    }

    /// Opens the store: refuses a transaction-mode pooler, finds (or
    /// creates) the schema, checks its version. One call, one deadline.
    fn open(&self) -> Result<()> {
        let deadline = self.deadline(true);
        let mut first = self.new_client(deadline)?;
        first.start_call(deadline);
        let located = self.locate_schema(&mut first);
        let located = located.map_err(self.fail("find the schema of", None))?;
        *self.shared.schema.lock().unwrap_or_else(PoisonError::into_inner) = located;
        let second = self.new_client(deadline)?;
        self.refuse_transaction_pooling(first, second, deadline)?;
        self.ensure_schema()
    }

    /// The schema holding the tables: the first schema of the role's own
    /// `search_path` that has `safestash_stashes`, else the first that
    /// exists (where `CREATE TABLE` would put it). Read from the session's
    /// default search path, before [`SESSION_SETUP`] pins it, by functions
    /// named in `pg_catalog`.
    fn locate_schema(&self, conn: &mut Conn) -> std::result::Result<String, Fault> {
        conn.batch_execute("RESET search_path")?;
        let schemas: Vec<String> = conn
            .query_one("SELECT pg_catalog.current_schemas(false)::pg_catalog.text[]", &[])?
            .get(0);
        conn.batch_execute(SESSION_SETUP)?;
        let with_table: Vec<String> = conn
            .query(
                "SELECT n.nspname::pg_catalog.text FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relname = 'safestash_stashes' AND c.relkind = 'r'",
                &[],
            )?
            .into_iter()
            .map(|row| row.get(0))
            .collect();
        let chosen = schemas
            .iter()
            .find(|s| with_table.contains(s))
            .or_else(|| schemas.iter().find(|s| *s != "pg_catalog"))
            .cloned()
            .unwrap_or_else(|| "public".to_owned());
        Ok(format!("\"{}\".", chosen.replace('"', "\"\"")))
    }

    /// Refuses a pooler that hands consecutive statements of one client
    /// connection to different server sessions (pgbouncer's
    /// `pool_mode = transaction` or `statement`): session advisory locks
    /// and session settings would not hold there. `a` asks for its server
    /// session's pid, `b` holds a transaction open (so a transaction pooler
    /// must give `b` a session of its own, usually the one `a` just used),
    /// then `a` asks again. Directly or through session pooling, `a`'s pid
    /// never changes and `b`'s is another.
    fn refuse_transaction_pooling(
        &self,
        mut a: Conn,
        mut b: Conn,
        deadline: std::time::Instant,
    ) -> Result<()> {
        a.start_call(deadline);
        b.start_call(deadline);
        let pid = "SELECT pg_catalog.pg_backend_pid()";
        let probe = (|| {
            let a1 = a.simple_value(pid)?;
            b.batch_execute("BEGIN")?;
            let b1 = b.simple_value(pid)?;
            let a2 = a.simple_value(pid)?;
            b.batch_execute("ROLLBACK")?;
            Ok::<_, Fault>((a1, b1, a2))
        })();
        let (a1, b1, a2) = probe.map_err(self.fail("check the sessions of", None))?;
        if a1 != a2 || a1 == b1 {
            return Err(Error::Backend {
                op: "use",
                target: self.location.clone(),
                source: format!(
                    "one connection's statements ran in different server sessions (pids {}, {}; \
                     another connection's {}): a pooler in transaction or statement mode \
                     (pgbouncer pool_mode=transaction) is in between, and the store's session \
                     advisory locks and session settings would not hold there; connect to the \
                     server directly or through a pooler in session mode",
                    a1.as_deref().unwrap_or("?"),
                    a2.as_deref().unwrap_or("?"),
                    b1.as_deref().unwrap_or("?"),
                )
                .into(),
            });
        }
        self.give_back(a);
        self.give_back(b);
        Ok(())
    }

    fn ensure_schema(&self) -> Result<()> {
        let shared = &self.shared;
        let version = self.run("create the schema in", None, true, |c| {
            let exists: bool = c
                .query_one(
                    &shared.sql(
                        "SELECT pg_catalog.to_regclass($1::pg_catalog.text) IS NOT NULL \
                         AND pg_catalog.to_regclass($2::pg_catalog.text) IS NOT NULL",
                    ),
                    &[&shared.sql("<stashes>"), &shared.sql("<schema>")],
                )?
                .get(0);
            if !exists {
                let mut tx = c.transaction()?;
                tx.execute(
                    "SELECT pg_catalog.pg_advisory_xact_lock($1::pg_catalog.int8)",
                    &[&SCHEMA_LOCK],
                )?;
                tx.batch_execute(&shared.sql(CREATE_STASHES))?;
                // Tables that an older build created stay as they are: the
                // version below tells, and a migration follows.
                let version: Option<i32> = tx
                    .query_one(&shared.sql("SELECT pg_catalog.max(version) FROM <schema>"), &[])?
                    .get(0);
                if version == Some(SCHEMA_VERSION) {
                    tx.batch_execute(&shared.sql(CREATE_CHUNKS))?;
                }
                tx.commit()?;
            }
            let version: Option<i32> = c
                .query_one(&shared.sql("SELECT pg_catalog.max(version) FROM <schema>"), &[])?
                .get(0);
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
        let shared = &self.shared;
        self.run(
            "migrate the schema (version 1 to 2; see the docs for the SQL) of",
            None,
            true,
            |c| {
                let mut tx = c.transaction()?;
                tx.execute(
                    "SELECT pg_catalog.pg_advisory_xact_lock($1::pg_catalog.int8)",
                    &[&SCHEMA_LOCK],
                )?;
                let version: Option<i32> = tx
                    .query_one(&shared.sql("SELECT pg_catalog.max(version) FROM <schema>"), &[])?
                    .get(0);
                if version == Some(1) {
                    tx.batch_execute(&shared.sql(MIGRATE_1_TO_2))?;
                    tx.batch_execute(&shared.sql(CREATE_CHUNKS))?;
                    tx.execute(
                        &shared.sql("UPDATE <schema> SET version = $1"),
                        &[&SCHEMA_VERSION],
                    )?;
                }
                tx.commit()
            },
        )
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
        cond: Precondition,
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

    fn put_with(&self, key: &StashKey, cond: Precondition, fill: &mut Fill<'_>) -> Result<Outcome> {
        let shared = &self.shared;
        let lock = self.lock_name(key);
        let step = self.run("save", Some(key), true, |c| {
            let mut tx = c.transaction()?;
            tx.batch_execute("SET LOCAL synchronous_commit = on")?;
            tx.execute(&format!("SELECT pg_catalog.pg_advisory_xact_lock({LOCK_ID})"), &[&lock])?;
            let current: Option<(Vec<u8>, i32)> = tx
                .query_opt(
                    &shared.sql(
                        "SELECT digest, chunks FROM <stashes> \
                         WHERE namespace = $1 AND key = $2 FOR UPDATE",
                    ),
                    &[&self.ns, &key.as_str()],
                )?
                .map(|row| (row.get(0), row.get(1)));
            let current_digest = current.as_ref().map(|(d, _)| digest_of(d));
            let refused = match cond {
                Precondition::Any => false,
                Precondition::Absent => current.is_some(),
                Precondition::Unchanged(d) => current_digest != Some(Some(d)),
            };
            if refused {
                return Ok(PutStep::Refused(current_digest.flatten()));
            }
            // The condition holds under the lock, and without it: a
            // replaced row is locked (FOR UPDATE) until the commit, and a
            // create-if-absent inserts with ON CONFLICT DO NOTHING.
            let had_chunks = current.is_some_and(|(_, n)| n > 0);
            let absent = cond == Precondition::Absent;
            let mut sink =
                Chunker::new(&mut tx, shared, &self.ns, key.as_str(), had_chunks, absent);
            let filled = fill(&mut sink);
            if let Some(e) = sink.failed.take() {
                return Err(e);
            }
            let digest = match filled {
                Ok(d) => d,
                Err(e) => return Ok(PutStep::FillFailed(e)),
            };
            if !sink.finish(&digest)? {
                // Another create-if-absent committed first.
                let theirs: Option<Vec<u8>> = tx
                    .query_opt(
                        &shared
                            .sql("SELECT digest FROM <stashes> WHERE namespace = $1 AND key = $2"),
                        &[&self.ns, &key.as_str()],
                    )?
                    .map(|row| row.get(0));
                return Ok(PutStep::Refused(theirs.as_deref().and_then(digest_of)));
            }
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
        let sql = self
            .shared
            .sql("SELECT chunks, envelope FROM <stashes> WHERE namespace = $1 AND key = $2");
        let row: Option<(i32, Vec<u8>)> = self.run("load", Some(key), false, |c| {
            Ok(c.query_opt(&sql, &[&self.ns, &key.as_str()])?.map(|row| (row.get(0), row.get(1))))
        })?;
        match row {
            None => Ok(None),
            Some((0, b)) => {
                Ok(Some(Fetched { len: b.len() as u64, reader: Box::new(Cursor::new(b)) }))
            }
            Some(_) => self.get_chunked(key),
        }
    }

    fn delete(&self, key: &StashKey, cond: Precondition) -> Result<Outcome> {
        let shared = &self.shared;
        let lock = self.lock_name(key);
        self.run("clear", Some(key), true, |c| {
            let mut tx = c.transaction()?;
            tx.batch_execute("SET LOCAL synchronous_commit = on")?;
            tx.execute(&format!("SELECT pg_catalog.pg_advisory_xact_lock({LOCK_ID})"), &[&lock])?;
            let current: Option<Vec<u8>> = tx
                .query_opt(
                    &shared.sql(
                        "SELECT digest FROM <stashes> WHERE namespace = $1 AND key = $2 FOR UPDATE",
                    ),
                    &[&self.ns, &key.as_str()],
                )?
                .map(|row| row.get(0));
            let Some(current) = current else { return Ok(Outcome::Missing) };
            let current = digest_of(&current);
            match cond {
                Precondition::Absent => return Ok(Outcome::Refused { current }),
                Precondition::Unchanged(d) if current != Some(d) => {
                    return Ok(Outcome::Refused { current });
                }
                _ => {}
            }
            tx.execute(
                &shared.sql("DELETE FROM <stashes> WHERE namespace = $1 AND key = $2"),
                &[&self.ns, &key.as_str()],
            )?;
            tx.commit()?;
            Ok(Outcome::Done)
        })
    }

    fn list(&self, head_len: usize) -> Result<Vec<Listed>> {
        let head_len = i32::try_from(head_len).unwrap_or(i32::MAX);
        let sql = self.shared.sql(
            "SELECT s.key, \
               CASE WHEN s.chunks = 0 THEN pg_catalog.length(s.envelope)::pg_catalog.int8 \
               ELSE (SELECT COALESCE(pg_catalog.sum(pg_catalog.length(c.bytes)), 0)::pg_catalog.int8 \
                     FROM <chunks> c WHERE c.namespace = s.namespace AND c.key = s.key) END, \
               CASE WHEN s.chunks = 0 THEN pg_catalog.substr(s.envelope, 1, $2) \
               ELSE COALESCE((SELECT pg_catalog.substr(c.bytes, 1, $2) FROM <chunks> c \
                     WHERE c.namespace = s.namespace AND c.key = s.key AND c.seq = 0), \
                     ''::pg_catalog.bytea) END \
             FROM <stashes> s WHERE s.namespace = $1 ORDER BY s.key COLLATE pg_catalog.\"C\"",
        );
        let rows = self.run("list", None, false, |c| c.query(&sql, &[&self.ns, &head_len]))?;
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
        let lock = self.lock_name(key);
        let (conn, taken) = self.attempt(self.deadline(wait), |c| {
            if wait {
                c.execute(&format!("SELECT pg_catalog.pg_advisory_lock({LOCK_ID})"), &[&lock])
                    .map(|_| true)
            } else {
                c.query_one(&format!("SELECT pg_catalog.pg_try_advisory_lock({LOCK_ID})"), &[&lock])
                    .map(|row| row.get::<_, bool>(0))
            }
        })?;
        match taken {
            Ok(true) => {
                let store = Postgres {
                    shared: self.shared.clone(),
                    ns: self.ns.clone(),
                    location: self.location.clone(),
                    pinned: Some(Arc::new(Mutex::new(Some(conn)))),
                };
                Ok(Some(Box::new(PgHeld { store, key: key.clone() })))
            }
            Ok(false) => {
                self.give_back(conn);
                Ok(None)
            }
            Err(e) => {
                self.give_back(conn);
                Err(self.fail("lock", Some(key))(e))
            }
        }
    }

    fn move_aside(&self, key: &StashKey, aside: &str) -> Result<bool> {
        let shared = &self.shared;
        let lock = self.lock_name(key);
        self.run("quarantine", Some(key), true, |c| {
            let mut tx = c.transaction()?;
            tx.batch_execute("SET LOCAL synchronous_commit = on")?;
            tx.execute(&format!("SELECT pg_catalog.pg_advisory_xact_lock({LOCK_ID})"), &[&lock])?;
            let moved = tx.execute(
                &shared.sql("UPDATE <stashes> SET key = $3 WHERE namespace = $1 AND key = $2"),
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
        let sql = self.shared.sql(
            "SELECT DISTINCT pg_catalog.substr(namespace, pg_catalog.length($1::pg_catalog.text) + 2) \
             FROM <stashes> \
             WHERE pg_catalog.\"left\"(namespace, pg_catalog.length($1::pg_catalog.text) + 1) \
                   = pg_catalog.concat($1::pg_catalog.text, '/'::pg_catalog.text)",
        );
        let rows = self.run("list namespaces of", None, false, |c| c.query(&sql, &[&self.ns]))?;
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
        let conn = pinned.lock().unwrap_or_else(PoisonError::into_inner).take();
        let Some(mut conn) = conn else { return };
        if conn.inherited() {
            // The parent's session, and its lock: left alone.
            return conn.abandon();
        }
        if conn.is_closed() {
            return;
        }
        conn.start_call(self.store.deadline(false));
        let unlocked = conn
            .query_one(
                &format!("SELECT pg_catalog.pg_advisory_unlock({LOCK_ID})"),
                &[&self.store.lock_name(&self.key)],
            )
            .map(|row| row.get::<_, bool>(0));
        match unlocked {
            Ok(true) => self.store.give_back(conn),
            // Closing the session releases whatever it still holds.
            _ => drop(conn),
        }
    }
}

/// What a save's transaction came to.
enum PutStep {
    Refused(Option<Digest>),
    FillFailed(Error),
    Commit(std::result::Result<(), Fault>),
}

/// The sink a save streams its envelope into: up to [`CHUNK_LEN`] it is
/// kept for one inline row; past it, it goes out in chunk rows as it comes.
struct Chunker<'t, 'c> {
    tx: &'t mut Tx<'c>,
    shared: &'t Shared,
    ns: &'t str,
    key: &'t str,
    buf: Vec<u8>,
    /// Chunks written so far.
    seq: i32,
    /// The old envelope has chunks still to remove.
    had_chunks: bool,
    /// Create-if-absent: the row is inserted only if there is none.
    absent: bool,
    /// Another writer's row was found at the first insert (create-if-absent).
    lost: bool,
    size: u64,
    insert: Option<Statement>,
    /// The server's error, when a statement failed (the transaction is lost).
    failed: Option<Fault>,
}

impl<'t, 'c> Chunker<'t, 'c> {
    fn new(
        tx: &'t mut Tx<'c>,
        shared: &'t Shared,
        ns: &'t str,
        key: &'t str,
        had_chunks: bool,
        absent: bool,
    ) -> Self {
        Chunker {
            tx,
            shared,
            ns,
            key,
            buf: Vec::new(),
            seq: 0,
            had_chunks,
            absent,
            lost: false,
            size: 0,
            insert: None,
            failed: None,
        }
    }

    fn drop_old_chunks(&mut self) -> std::result::Result<(), Fault> {
        if std::mem::take(&mut self.had_chunks) {
            self.tx.execute(
                &self.shared.sql("DELETE FROM <chunks> WHERE namespace = $1 AND key = $2"),
                &[&self.ns, &self.key],
            )?;
        }
        Ok(())
    }

    /// What an insert of the row does when a row is there: replace it, or
    /// (create-if-absent) nothing, which the row count then tells.
    fn on_conflict(&self, update: &str) -> String {
        if self.absent {
            "ON CONFLICT (namespace, key) DO NOTHING".to_owned()
        } else {
            format!("ON CONFLICT (namespace, key) DO UPDATE SET {update}")
        }
    }

    /// Writes the full buffer as the next chunk; before the first, the row
    /// (a placeholder until [`finish`](Self::finish)) and no old chunks.
    fn write_chunk(&mut self) -> std::result::Result<(), Fault> {
        if self.lost {
            return Ok(());
        }
        if self.insert.is_none() {
            let sql = format!(
                "INSERT INTO <stashes> (namespace, key, envelope, digest, size, created, chunks) \
                 VALUES ($1, $2, ''::pg_catalog.bytea, ''::pg_catalog.bytea, 0, pg_catalog.now(), 0) {}",
                self.on_conflict(
                    "envelope = ''::pg_catalog.bytea, digest = ''::pg_catalog.bytea, size = 0, \
                     created = pg_catalog.now(), chunks = 0"
                )
            );
            let inserted = self.tx.execute(&self.shared.sql(&sql), &[&self.ns, &self.key])?;
            if inserted == 0 {
                self.lost = true;
                return Ok(());
            }
            self.drop_old_chunks()?;
            self.insert = Some(self.tx.prepare(&self.shared.sql(
                "INSERT INTO <chunks> (namespace, key, seq, bytes) VALUES ($1, $2, $3, $4)",
            ))?);
        }
        if let Some(insert) = &self.insert {
            let insert = insert.clone();
            self.tx.execute(&insert, &[&self.ns, &self.key, &self.seq, &self.buf.as_slice()])?;
        }
        self.seq += 1;
        self.buf.clear();
        Ok(())
    }

    /// Writes what is left: the whole envelope in its row, or the last
    /// chunk and the row's digest, size and chunk count. `false` when a
    /// create-if-absent found another writer's row (nothing was written).
    fn finish(mut self, digest: &Digest) -> std::result::Result<bool, Fault> {
        let size = i64::try_from(self.size).unwrap_or(i64::MAX);
        let digest = &digest.as_bytes()[..];
        if self.insert.is_none() && !self.lost {
            self.drop_old_chunks()?;
            let sql = format!(
                "INSERT INTO <stashes> (namespace, key, envelope, digest, size, created, chunks) \
                 VALUES ($1, $2, $3, $4, $5, pg_catalog.now(), 0) {}",
                self.on_conflict(
                    "envelope = EXCLUDED.envelope, digest = EXCLUDED.digest, size = EXCLUDED.size, \
                     created = EXCLUDED.created, chunks = 0"
                )
            );
            let inserted = self.tx.execute(
                &self.shared.sql(&sql),
                &[&self.ns, &self.key, &self.buf.as_slice(), &digest, &size],
            )?;
            return Ok(inserted == 1);
        }
        if !self.buf.is_empty() {
            self.write_chunk()?;
        }
        if self.lost {
            return Ok(false);
        }
        self.tx.execute(
            &self.shared.sql(
                "UPDATE <stashes> SET digest = $3, size = $4, chunks = $5, created = pg_catalog.now() \
                 WHERE namespace = $1 AND key = $2",
            ),
            &[&self.ns, &self.key, &digest, &size, &self.seq],
        )?;
        Ok(true)
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
/// goes back to the pool at the end. Each chunk's read is bounded by the
/// store's `timeout`.
struct ChunkReader {
    client: Option<Conn>,
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
        if let Some(mut conn) = self.client.take() {
            conn.start_call(std::time::Instant::now() + self.shared.timeout);
            conn.rollback();
            self.shared.give_back(conn);
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.cur.len() {
            let (Some(conn), Some(stmt)) = (self.client.as_mut(), self.stmt.as_ref()) else {
                return Ok(0);
            };
            if self.next >= self.chunks {
                self.end();
                return Ok(0);
            }
            conn.start_call(std::time::Instant::now() + self.shared.timeout);
            match conn.query_opt(stmt, &[&self.ns, &self.key, &self.next]) {
                Ok(Some(row)) => {
                    self.cur = row.get(0);
                    self.at = 0;
                    self.next += 1;
                }
                // A missing chunk: the envelope ends short, which the
                // store's verification reports as truncated.
                Ok(None) => self.next = self.chunks,
                Err(Fault::TimedOut) => {
                    self.client = None;
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "timed out: the server did not answer within `timeout` while a chunk was read",
                    ));
                }
                Err(Fault::Pg(e)) => {
                    self.client = None;
                    return Err(io::Error::other(e));
                }
                Err(Fault::Local(e)) => {
                    self.client = None;
                    return Err(e);
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
