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
//!   previous stash is intact. A small save sends its whole transaction at
//!   once (see *Round trips*), so when the connection is lost before any
//!   answer the outcome is unknown; the error names the commit (except on
//!   a pooled session's first exchange, where the store finds out; see
//!   below). An answer from the server (an error at any statement) is
//!   definite: the transaction was rolled back.
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
//!   was idle; a closed one empties the pool. When the first exchange of
//!   a call on a pooled session fails because the session is gone (the
//!   connection closed, or the server's `57P01`/`57P02`/`57P03`), and that
//!   exchange changed nothing (a read, a lock that dies with its session,
//!   the statements' preparation, a change's `BEGIN` and condition check,
//!   or any exchange the server answered with the session's end), the
//!   call is run once more on a new connection. A small save or clear
//!   sends its `COMMIT` in its first exchange; when that gets no answer at
//!   all, the session may have been dead before it was sent, or lost after
//!   the server committed, so it is not sent again blindly: the store
//!   ends the lost session on the server (`pg_terminate_backend` on its
//!   process, matched by its start time; the same role may, otherwise it
//!   waits for the server to drop it) and waits until it is gone, so its
//!   transaction has committed or never will. Then, on a new session,
//!   under the key's lock: a save that finds its own envelope is done; any
//!   other is checked against its condition again, as if it came now, and
//!   written if that holds (so a save without a condition may come after
//!   another writer's save that landed meanwhile, as if it had been sent
//!   later). A clear that finds nothing is reported as finding nothing; a
//!   conditional one whose stash is still there clears it; a clear without
//!   a condition that finds a stash leaves it, and fails saying the outcome
//!   is unknown. Nothing later in a call is retried: a failed `COMMIT` may
//!   have committed, and the error says so. A held lock's session is never
//!   replaced: a call through a lock whose session died fails.
//!
//! # Round trips
//!
//! Each session prepares its statements once (a new session, after a
//! restart or in a forked child, prepares them again, all in one
//! exchange), and the statements of one step are sent together
//! (pipelined) and answered together, so on a session that has them:
//!
//! | call | exchanges (round trips) |
//! |---|---|
//! | save of an envelope up to [`CHUNK_LEN`], with or without a condition | 1: `BEGIN; SET LOCAL synchronous_commit = on`, the key's lock, the write (its statement carries the condition), the digest in place (conditional saves), `COMMIT` |
//! | load of such an envelope | 1 |
//! | clear | 1 |
//! | a larger save | 1 (`BEGIN`, lock, condition) + 1 per MiB of chunks (the first with the row and no old chunks, the last with the row's digest and `COMMIT`; a create-if-absent inserts its row alone first: 1 more) |
//! | a larger load | 1 (the row) + 1 (the snapshot and the size) + 1 per MiB of chunks (the last with the snapshot's end) |
//! | a [`Batch`](crate::Batch) of many stashes | 2 (`BEGIN`, every lock, every condition; every write and `COMMIT`), plus the chunks of any over [`CHUNK_LEN`] |
//!
//! Keys, namespaces and envelopes are always bound parameters of prepared
//! statements, never SQL text.
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
use std::io::Cursor;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio_postgres::Config;

use super::{Backend, BatchOutcome, BatchPut, Fetched, Fill, Held, Listed, Outcome, Precondition};
use crate::digest::Digest;
use crate::error::{BackendOp, Error, Result};
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

mod batch;
mod chunks;
mod conn;
mod locks;
mod save;
mod schema;
mod session;
#[cfg(feature = "postgres-tls")]
mod tls;
mod url;

use conn::Conn;

/// The advisory lock of a key, `$1` being `NAMESPACE/KEY`: the same number
/// as `hashtextextended(namespace || '/' || key, 0)` of earlier builds.
pub(super) const LOCK_ID: &str =
    "pg_catalog.hashtextextended($1::pg_catalog.text, 0::pg_catalog.int8)";

/// How much of the server's certificate is checked (see `sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "postgres-tls"), allow(dead_code))]
pub(super) enum Verify {
    /// Nothing (libpq's `prefer` and `require`).
    None,
    /// That it chains to `sslrootcert` (`verify-ca`).
    Ca,
    /// That, and that it names the host (`verify-full`).
    Full,
}

/// The connector of a store's connections.
pub(super) enum Tls {
    /// No TLS: `sslmode=disable`, or `prefer` in a build without TLS.
    Plain,
    /// rustls (feature `postgres-tls`).
    #[cfg(feature = "postgres-tls")]
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
}

// Statements name the store's tables as `<stashes>`, `<chunks>` and
// `<schema>`, replaced by their schema-qualified names (see `Shared::sql`);
// every function is `pg_catalog.`-qualified and every literal cast to its
// exact type, and sessions run with `search_path = pg_catalog, pg_temp`, so
// nothing another role creates in a schema can change what they call.

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

impl Postgres {
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
        if envelope.len() <= CHUNK_LEN {
            return self.save_small(key, envelope, digest, cond);
        }
        self.put_with(key, cond, &mut |sink| {
            sink.write_all(envelope).map_err(|e| Error::Backend {
                op: BackendOp::Save,
                target: self.target(Some(key)),
                source: e.into(),
            })?;
            Ok(*digest)
        })
    }

    fn put_with(&self, key: &StashKey, cond: Precondition, fill: &mut Fill<'_>) -> Result<Outcome> {
        self.save_streamed(key, cond, fill)
    }

    fn get(&self, key: &StashKey) -> Result<Option<Fetched>> {
        // One statement for the common case: the envelope inline in its row.
        let sql = self
            .shared
            .sql("SELECT chunks, envelope FROM <stashes> WHERE namespace = $1 AND key = $2");
        let row: Option<(i32, Vec<u8>)> = self.run(BackendOp::Load, Some(key), false, |c| {
            let rows = c.query_prepared(&sql, &[&self.ns, &key.as_str()])?;
            Ok(rows.first().map(|row| (row.get(0), row.get(1))))
        })?;
        match row {
            None => Ok(None),
            Some((0, b)) => {
                Ok(Some(Fetched { len: b.len() as u64, reader: Box::new(Cursor::new(b)) }))
            }
            Some(_) => self.get_chunked(key),
        }
    }

    fn put_batch(&self, items: &[BatchPut<'_>]) -> BatchOutcome {
        if items.len() < 2 {
            // One stash: a save as any other (one exchange when small).
            let results =
                items.iter().map(|i| self.put_with(i.key, i.cond, &mut |w| (i.fill)(w))).collect();
            return BatchOutcome::of_prefix(items.len(), results);
        }
        self.save_batch(items)
    }

    fn delete(&self, key: &StashKey, cond: Precondition) -> Result<Outcome> {
        self.remove(key, cond)
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
        let rows = self.run(BackendOp::List, None, false, |c| {
            c.query_prepared(&sql, &[&self.ns, &head_len])
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
        self.take_lock(key, wait)
    }

    fn move_aside(&self, key: &StashKey, aside: &str) -> Result<bool> {
        let shared = &self.shared;
        let lock = self.lock_name(key);
        self.run(BackendOp::Quarantine, Some(key), true, |c| {
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
        let rows = self
            .run(BackendOp::ListNamespaces, None, false, |c| c.query_prepared(&sql, &[&self.ns]))?;
        let mut found: Vec<String> =
            rows.into_iter().map(|r| r.get::<_, String>(0)).filter(|n| !n.contains('/')).collect();
        found.sort();
        Ok(found)
    }
}
