//! The MySQL and MariaDB backend (feature `mysql`): stashes in InnoDB
//! tables, shared by workers on any host.
//!
//! Open it through [`Store::open_url`](crate::Store::open_url) with a
//! `mysql://user:password@host:3306/db` URL (the `mysql` crate's URL
//! syntax: percent-encode a password's special characters), plus
//! parameters of its own that are removed before the URL reaches the
//! client:
//!
//! - `namespace=NAME` (a valid key; default `default`): several stores share
//!   one database, each in its namespace;
//! - `lock_timeout=DURATION` (`humantime` syntax, default `60s`): how long a
//!   lock or a change waits for another holder of the key's lock before it
//!   fails with [`Error::Locked`];
//! - `timeout=DURATION` (default `30s`): the client-side bound of each read
//!   and write on the connection (see *Timeouts* below);
//! - `durability=commit|server` (default `commit`; see *Durability*).
//!
//! The client's own parameters (`tcp_connect_timeout_ms`, `compress`, TLS
//! ones such as `root_cert_path` with the feature `mysql-tls`, ...) pass
//! through; those of its pool are refused (the store pools connections
//! itself). TLS (feature `mysql-tls`) is the `mysql` crate's rustls option:
//! `tls=on` turns it on, checking the server's certificate and host name
//! against the Mozilla roots (webpki-roots), and `root_cert_path=FILE`
//! (PEM) adds a CA and turns it on too; the client's other TLS parameters
//! pass through (`danger_accept_invalid_certs=true` skips the check, for a
//! test server only). With TLS on, a server that does not offer it is
//! refused; without the feature, a URL that asks for TLS is refused when
//! the store is opened.
//!
//! # Schema (version 1)
//!
//! The tables live in the URL's database. Created on first use when the
//! user may create tables; otherwise a DBA creates them with:
//!
//! ```sql
//! CREATE TABLE safestash_schema (version INT NOT NULL) ENGINE=InnoDB;
//! INSERT INTO safestash_schema (version) VALUES (1);
//! CREATE TABLE safestash_stashes (
//!     namespace VARBINARY(768) NOT NULL,
//!     `key`     VARBINARY(255) NOT NULL,
//!     envelope  LONGBLOB       NOT NULL, -- the v1 envelope, byte for byte a stash file
//!                                        -- (empty when chunks > 0)
//!     digest    VARBINARY(32)  NOT NULL, -- its sha256 as recorded at save (for conditions)
//!     size      BIGINT         NOT NULL, -- its length at save
//!     created   DATETIME(6)    NOT NULL, -- UTC
//!     chunks    INT            NOT NULL DEFAULT 0, -- 0: inline; N: in safestash_chunks,
//!                                                  -- seq 0..N-1
//!     PRIMARY KEY (namespace, `key`)
//! ) ENGINE=InnoDB;
//! CREATE TABLE safestash_chunks (
//!     namespace VARBINARY(768) NOT NULL,
//!     `key`     VARBINARY(255) NOT NULL,
//!     seq       INT            NOT NULL,
//!     bytes     LONGBLOB       NOT NULL, -- the envelope's next chunk
//!     PRIMARY KEY (namespace, `key`, seq),
//!     FOREIGN KEY (namespace, `key`) REFERENCES safestash_stashes (namespace, `key`)
//!         ON UPDATE CASCADE ON DELETE CASCADE
//! ) ENGINE=InnoDB;
//! GRANT SELECT, INSERT, UPDATE, DELETE ON db.safestash_stashes TO worker;
//! GRANT SELECT, INSERT, UPDATE, DELETE ON db.safestash_chunks TO worker;
//! GRANT SELECT ON db.safestash_schema TO worker;
//! ```
//!
//! Changes run at `READ COMMITTED` (a `SELECT ... FOR UPDATE` of a key
//! that is not there takes no gap lock that would make saves of
//! neighbouring keys deadlock), so a server with the binary log on needs
//! `binlog_format` `ROW` or `MIXED` (the defaults of MySQL 8 and MariaDB).
//! Keys and namespaces are binary strings (compared byte for byte, never
//! through a collation that would make `A` and `a` one key), and always
//! bound parameters. Every session runs in strict SQL mode with
//! `NO_ENGINE_SUBSTITUTION`, so nothing is truncated silently and no
//! table is created on another engine; opening a store refuses tables
//! that are not InnoDB, and a schema of another version.
//!
//! An envelope of at most the chunk length is one row. A larger one is
//! streamed in: the row (with `chunks = N`) and N chunk rows, written in
//! the same transaction as the condition check, which comes first, and
//! replacing the old chunks in it; so a client killed mid-save leaves the
//! old stash or the new one. The chunk length is [`CHUNK_LEN`] (1 MiB), or
//! half the session's `max_allowed_packet` when that is smaller, so every
//! statement and every row read back fits in a packet. A load reads the
//! chunks one at a time in one consistent snapshot (`REPEATABLE READ`,
//! read only): memory on both sides stays at a few chunks whatever the
//! size. Reserved namespaces of a store (the journal's, the tenant
//! guard's) are the rows of namespace `NAMESPACE/journal` and so on; a
//! quarantined stash is the row renamed to `.KEY.quarantined.STAMP` in its
//! namespace (its chunks follow by the foreign key's `ON UPDATE CASCADE`).
//!
//! # Durability
//!
//! A commit is durable only if the server flushes its redo log at every
//! commit (`innodb_flush_log_at_trx_commit = 1`) and, when the binary log
//! is on, the binary log too (`sync_binlog = 1`: with two-phase commit
//! between them, a transaction missing from the binary log is rolled back
//! at recovery). Opening a store reads both (global values) and refuses
//! with [`Error::Backend`] naming the setting when
//! either falls short; with `durability=server` in the URL it opens anyway
//! and the server's settings decide (a crash may then lose the last
//! second of acknowledged saves). The check is made at open: a server
//! changed afterwards (`SET GLOBAL`) is not seen until the next open.
//! Each save is one transaction: `save` returns `Ok` only after the
//! server acknowledged its `COMMIT`. That is a power-cut promise only on
//! storage that honours flushes; with asynchronous replication a failover
//! can lose acknowledged saves, and a Galera cluster's certification is
//! not checked. A save that fails before `COMMIT` is rolled back by the
//! server: the previous stash is intact. When the connection is lost
//! during the `COMMIT` itself the outcome is unknown; the error names the
//! commit.
//!
//! # Locks
//!
//! - Per-key locks are named locks, `GET_LOCK(name, lock_timeout)`, held on
//!   a connection of the [`KeyLock`](crate::KeyLock) and released when it is
//!   dropped or when that connection ends (a killed worker's lock goes with
//!   its TCP connection; a vanished host's when the server notices). The
//!   name is `safestash:` and 54 hex digits of the sha256 of the database,
//!   the namespace and the key (named locks are server-wide and at most 64
//!   characters), so keys of different namespaces or databases never
//!   share a lock.
//! - Every change also takes the key's lock on its own connection (a
//!   held lock's connection takes it again: named locks nest), then checks
//!   its condition inside its transaction with `SELECT ... FOR UPDATE`, so
//!   the condition holds without the lock too; a create-if-absent save
//!   inserts, and a duplicate key is a refusal. Changes made through a held
//!   lock run on the lock's connection.
//! - **Vitess-based services** (PlanetScale and others) restrict named
//!   locks: `GET_LOCK` is served only by a reserved connection on one
//!   shard, and some deployments refuse it. A store there cannot give
//!   per-key locks; use object storage or PostgreSQL instead. Behind
//!   ProxySQL, named locks pin the connection (its default), which works.
//!
//! # Connections, restarts, timeouts
//!
//! - Connections are pooled per store (and shared with its child
//!   namespaces): at most [`POOL_MAX_IDLE`] (8) are kept idle, and one idle
//!   for more than [`POOL_IDLE_TIME`] (5 minutes) is closed instead of
//!   reused. A held lock keeps its own connection until it is dropped.
//! - A restart of the server ends every pooled session. When the first
//!   statement of a call on a pooled connection (always a lock, a read or
//!   a `START TRANSACTION`) fails because the session is gone, the call is
//!   run once more on a new connection. Nothing later is retried: a failed
//!   `COMMIT` may have committed, and the error says so. A held lock's
//!   connection is never replaced: a call through a lock whose connection
//!   died fails.
//! - Timeouts: every read and write on a connection is bounded by
//!   `timeout` plus `lock_timeout` (the socket's timeouts), connecting by
//!   `timeout`; a server that stops answering (a stopped process, whose
//!   kernel still acknowledges packets) fails the waiting statement then,
//!   with an [`Error::Backend`] whose source says it
//!   timed out, and whether what it sent took effect is unknown. InnoDB's
//!   row-lock waits are bounded by `lock_timeout` too
//!   (`innodb_lock_wait_timeout`, whole seconds, at least 1). Unlike the
//!   PostgreSQL backend this bounds each statement, not the call as a
//!   whole: a call of N statements against a server answering each just
//!   in time can take longer.
//! - Forked children abandon the connections they inherited (without a
//!   word to the server) and open their own; see [`crate::fork`].
//!
//! # Secrets
//!
//! The password of the URL (userinfo, or a `password` parameter) never
//! reaches an error, a location or `Debug`: they name
//! `mysql://user@host:port/db`.
//!
//! # Size
//!
//! Unbounded by memory (see the schema above); a save of N bytes writes
//! them to the redo log, the tables and (when on) the binary log.

use std::fmt;
use std::io::Cursor;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::{Backend, BatchOutcome, BatchPut, Fetched, Fill, Held, Listed, Outcome, Precondition};
use crate::digest::Digest;
use crate::error::{BackendOp, Doing, Error, Result};
use crate::key::StashKey;

mod chunks;
mod conn;
mod locks;
mod schema;
mod url;
mod write;

use conn::{Conn, Fault, Pinned, Pool};
pub use conn::{POOL_IDLE_TIME, POOL_MAX_IDLE};

/// The schema version this build reads and writes.
///
/// ```
/// assert_eq!(safestash::backend::mysql::SCHEMA_VERSION, 1);
/// ```
pub const SCHEMA_VERSION: i32 = 1;

/// The largest chunk a store writes (less when the server's
/// `max_allowed_packet` is under twice this).
///
/// ```
/// assert_eq!(safestash::backend::mysql::CHUNK_LEN, 1 << 20);
/// ```
pub const CHUNK_LEN: usize = 1 << 20;

/// The namespace of a URL without `namespace=`.
pub const DEFAULT_NAMESPACE: &str = "default";

const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(60);

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// What every connection of a store (and its children) shares.
struct Shared {
    /// The client's options; they hold the password, so `Shared` has no
    /// `Debug`.
    opts: mysql::Opts,
    /// `mysql://user@host:port/db`, no password.
    base: String,
    /// The database, for lock names.
    db: String,
    lock_timeout: Duration,
    timeout: Duration,
    chunk_len: usize,
    pool: Pool,
}

/// One namespace of a MySQL or MariaDB database. See the [module docs](self).
pub struct Mysql {
    shared: Arc<Shared>,
    ns: String,
    location: String,
    /// The connection of a held lock: every call runs on it.
    pinned: Option<Pinned>,
}

impl fmt::Debug for Mysql {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mysql")
            .field("location", &self.location)
            .field("pinned", &self.pinned.is_some())
            .finish()
    }
}

/// What a save's transaction came to.
enum PutStep {
    Refused(Option<Digest>),
    FillFailed(Error),
    Committed,
}

fn digest_of(bytes: &[u8]) -> Option<Digest> {
    <[u8; 32]>::try_from(bytes).ok().map(Digest::from_bytes)
}

impl Mysql {
    /// Connects to the database of `url` (see the [module docs](self)),
    /// checks that commits are durable (unless `durability=server`),
    /// creates the schema if it is missing and the user may, and checks
    /// its engine and version; then closes that connection, so a store
    /// that is never used holds none.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOption`] for a malformed URL or parameter,
    /// [`Error::Backend`] when the server cannot be reached in time, does
    /// not flush at every commit, or the schema cannot be created or is of
    /// another version or engine.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let backend = safestash::backend::mysql::Mysql::connect(
    ///     "mysql://worker@db.internal:3306/etl?namespace=orders",
    /// )?;
    /// let store = safestash::Store::with_backend(std::sync::Arc::new(backend));
    /// # Ok::<(), safestash::Error>(())
    /// ```
    pub fn connect(url: &str) -> Result<Mysql> {
        let parsed = url::parse(url)?;
        let wait = parsed.timeout + parsed.lock_timeout;
        let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX).max(1);
        let lock_wait_secs = parsed.lock_timeout.as_secs_f64().ceil().max(1.0) as u64;
        let opts: mysql::Opts = mysql::OptsBuilder::from_opts(parsed.opts)
            // Never a Unix socket found through the server: the URL's
            // address is where the store connects.
            .prefer_socket(false)
            .tcp_connect_timeout(Some(parsed.timeout))
            .read_timeout(Some(wait))
            .write_timeout(Some(wait))
            .tcp_keepalive_time_ms(Some(ms(parsed.timeout)))
            .tcp_user_timeout_ms(Some(ms(parsed.timeout)))
            .init(vec![
                "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'".to_owned(),
                format!("SET SESSION innodb_lock_wait_timeout = {lock_wait_secs}"),
                // No gap locks: a `SELECT ... FOR UPDATE` of an absent key
                // must not lock its neighbours (other keys' inserts would
                // deadlock with it).
                "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED".to_owned(),
            ])
            .into();
        #[cfg(feature = "mysql-tls")]
        if opts.get_ssl_opts().is_some() {
            // The client builds its TLS configuration on rustls's
            // process-wide provider; a build that also has aws-lc-rs (object
            // storage) has none by default. An error means one is installed.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let base = parsed.base.clone();
        let fail = |op: BackendOp, source: Box<dyn std::error::Error + Send + Sync>| {
            Error::Backend { op, target: format!("{base}?namespace={}", parsed.ns), source }
        };
        let mut conn =
            Conn::connect(&opts).map_err(|e| fail(BackendOp::Connect, fault_source(e, wait)))?;
        let server = schema::open(&mut conn, parsed.durability).map_err(|r| match r {
            schema::Refusal::Fault(e) => fail(BackendOp::Open, fault_source(e, wait)),
            schema::Refusal::Other(why) => fail(BackendOp::Use, why.into()),
        })?;
        let db = opts.get_db_name().unwrap_or_default().to_owned();
        // A store that is never used holds nothing.
        drop(conn);
        let shared = Arc::new(Shared {
            opts,
            base: parsed.base,
            db,
            lock_timeout: parsed.lock_timeout,
            timeout: parsed.timeout,
            chunk_len: server.chunk_len,
            pool: Pool::new(),
        });
        Ok(Mysql::in_namespace(shared, parsed.ns))
    }

    fn in_namespace(shared: Arc<Shared>, ns: String) -> Mysql {
        let location = format!("{}?namespace={ns}", shared.base);
        Mysql { shared, ns, location, pinned: None }
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// The length of the chunks this store writes (see [`CHUNK_LEN`]).
    pub fn chunk_len(&self) -> usize {
        self.shared.chunk_len
    }

    fn target(&self, key: Option<&StashKey>) -> String {
        match key {
            Some(key) => format!("{}/{key}", self.location),
            None => self.location.clone(),
        }
    }

    fn lock_name(&self, key: &StashKey) -> String {
        locks::lock_name(&self.shared.db, &self.ns, key.as_str())
    }

    fn fail(&self, op: BackendOp, key: Option<&StashKey>) -> impl FnOnce(Fault) -> Error + '_ {
        let target = self.target(key);
        let key = key.cloned();
        let wait = self.shared.timeout + self.shared.lock_timeout;
        move |e| match (e, key) {
            (e, Some(key))
                if matches!(e, Fault::Locked) || e.code() == Some(conn::LOCK_WAIT_TIMEOUT) =>
            {
                Error::Locked { path: target.into(), key }
            }
            (e, _) => Error::Backend { op, target, source: fault_source(e, wait) },
        }
    }

    fn new_conn(&self) -> Result<Conn> {
        Conn::connect(&self.shared.opts).map_err(self.fail(BackendOp::Connect, None))
    }

    /// Runs `f` on a pooled connection, and once more on a new one when
    /// the pooled one's session turns out to be gone at `f`'s first
    /// statement (which then did nothing). Nothing later is retried.
    fn attempt<R>(
        &self,
        mut f: impl FnMut(&mut Conn) -> std::result::Result<R, Fault>,
    ) -> Result<(Conn, std::result::Result<R, Fault>)> {
        let pooled = self.shared.pool.take();
        let was_pooled = pooled.is_some();
        let mut conn = match pooled {
            Some(c) => c,
            None => self.new_conn()?,
        };
        conn.start_call();
        let out = f(&mut conn);
        match out {
            Err(fault) if was_pooled && conn.sent() == 1 && fault.session_gone() => {
                tracing::debug!(store = %self.location, "a pooled connection was closed; retrying on a new one");
                self.shared.pool.clear();
                drop(conn);
                let mut conn = self.new_conn()?;
                conn.start_call();
                let out = f(&mut conn);
                Ok((conn, out))
            }
            out => Ok((conn, out)),
        }
    }

    /// Runs `f` on the pinned connection of a held lock, or on a pooled
    /// one (see [`attempt`](Self::attempt)). A broken connection is not
    /// reused.
    fn run<R>(
        &self,
        op: BackendOp,
        key: Option<&StashKey>,
        f: impl FnMut(&mut Conn) -> std::result::Result<R, Fault>,
    ) -> Result<R> {
        if let Some(pinned) = &self.pinned {
            let mut f = f;
            let mut guard = pinned.lock().unwrap_or_else(PoisonError::into_inner);
            let gone = |why: &str| Error::Backend {
                op,
                target: self.target(key),
                source: why.to_owned().into(),
            };
            let Some(conn) = guard.as_mut() else {
                return Err(gone("the lock's connection is gone"));
            };
            if conn.inherited() {
                return Err(gone(
                    "the lock's connection belongs to the parent process this one was forked \
                     from: the lock is not held here",
                ));
            }
            if conn.is_broken() {
                return Err(gone(
                    "the lock's connection failed (a call on it failed or timed out): the lock \
                     is no longer held",
                ));
            }
            conn.start_call();
            return f(conn).map_err(self.fail(op, key));
        }
        let (conn, out) = self.attempt(f)?;
        self.shared.pool.give_back(conn);
        out.map_err(self.fail(op, key))
    }

    /// Runs a change in three round trips besides `f`'s statements: the
    /// key's named lock and `START TRANSACTION` in one; then `f` (`Ok((r,
    /// true))` to commit, `Ok((r, false))` to roll back); then `COMMIT`
    /// (or `ROLLBACK`) and the lock's release in one. The lock's name is
    /// the store's own hex digest, never caller text. A commit that fails
    /// is `commit_op`'s error (it may have committed), and its connection
    /// is closed, which releases the lock; so is one whose release fails.
    fn change<R>(
        &self,
        op: BackendOp,
        key: &StashKey,
        f: impl FnMut(&mut Conn) -> std::result::Result<(R, bool), Fault>,
    ) -> Result<R> {
        self.change_keys(op, &[key], f)
    }

    /// [`change`](Self::change) under the named locks of several keys
    /// (a batch's), taken in one statement in the order of their names so
    /// two batches never wait for each other in a cycle; `keys[0]` is the
    /// one an error names.
    fn change_keys<R>(
        &self,
        op: BackendOp,
        keys: &[&StashKey],
        mut f: impl FnMut(&mut Conn) -> std::result::Result<(R, bool), Fault>,
    ) -> Result<R> {
        let mut names: Vec<String> = keys.iter().map(|k| self.lock_name(k)).collect();
        names.sort();
        names.dedup();
        let secs = locks::wait_secs(self.shared.lock_timeout);
        // One SELECT per 100 locks, each lock a column: a long expression
        // would overrun the server's thread stack.
        let take = names
            .chunks(100)
            .map(|chunk| {
                let cols: Vec<String> =
                    chunk.iter().map(|n| format!("GET_LOCK('{n}', {secs})")).collect();
                format!("SELECT {}", cols.join(", "))
            })
            .collect::<Vec<_>>()
            .join("; ");
        let selects = names.len().div_ceil(100);
        let release =
            names.iter().map(|n| format!("RELEASE_LOCK('{n}')")).collect::<Vec<_>>().join(", ");
        let mut committing = false;
        let out = self.run(op, keys.first().copied(), |c| {
            committing = false;
            let sets = c.multi(&format!("{take}; START TRANSACTION")).inspect_err(|_| {
                // A lock may have been taken before the failure: the
                // connection goes (which releases it), never to the pool.
                c.mark_broken();
            })?;
            // Every lock's answer: 1 taken, 0 timed out, NULL an error.
            let answers: Vec<Option<i64>> = sets
                .iter()
                .take(selects)
                .flat_map(|rows| rows.first())
                .flat_map(|row| (0..row.len()).map(move |i| row.get::<Option<i64>, _>(i).flatten()))
                .collect();
            let got = if answers.len() == names.len() && answers.iter().all(|a| *a == Some(1)) {
                Some(1)
            } else if answers.iter().any(Option::is_none) {
                None
            } else {
                Some(0)
            };
            if got != Some(1) {
                if got.is_some() && names.len() > 1 {
                    // Some of the locks may be held: the connection goes
                    // (which releases them all), never to the pool.
                    c.mark_broken();
                }
                // Nothing was done in the transaction; NULL is an error.
                if got.is_none() || c.query_drop("ROLLBACK").is_err() {
                    c.mark_broken();
                }
                return Err(Fault::Locked);
            }
            let out = f(c);
            let end = match out {
                Ok((_, true)) => "COMMIT",
                _ => "ROLLBACK",
            };
            committing = end == "COMMIT";
            if c.is_broken() {
                return out.map(|(r, _)| r);
            }
            match c.multi(&format!("{end}; DO {release}")) {
                Ok(_) => {}
                Err(e) => {
                    c.mark_broken();
                    if out.is_ok() {
                        return Err(e);
                    }
                }
            }
            committing = false;
            out.map(|(r, _)| r)
        });
        match out {
            Err(Error::Backend { target, source, .. }) if committing => {
                let note = "the commit failed: if the connection was lost, it may have committed";
                Err(Doing::noted(op, note).error(target, source))
            }
            out => out,
        }
    }
}

/// The error a fault becomes, as a source: a timeout says what it means.
fn fault_source(e: Fault, wait: Duration) -> Box<dyn std::error::Error + Send + Sync> {
    if e.timed_out() {
        return format!(
            "timed out: the server did not answer within the connection's bound (`timeout` plus \
             `lock_timeout`, {}); the connection was closed, and whether what it sent took \
             effect is unknown",
            humantime::format_duration(wait)
        )
        .into();
    }
    match e {
        Fault::My(e) => e.into(),
        Fault::Locked => "the key's lock could not be taken".into(),
    }
}

impl Backend for Mysql {
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
                op: BackendOp::Save,
                target: self.target(Some(key)),
                source: e.into(),
            })?;
            Ok(*digest)
        })
    }

    fn put_with(&self, key: &StashKey, cond: Precondition, fill: &mut Fill<'_>) -> Result<Outcome> {
        let step = self.change(BackendOp::Save, key, |c| {
            let step = self.put_in(c, key, cond, fill)?;
            let commit = matches!(step, PutStep::Committed);
            Ok((step, commit))
        })?;
        match step {
            PutStep::Refused(current) => Ok(Outcome::Refused { current }),
            PutStep::FillFailed(e) => Err(e),
            PutStep::Committed => Ok(Outcome::Done),
        }
    }

    fn put_batch(&self, items: &[BatchPut<'_>]) -> BatchOutcome {
        self.save_batch(items)
    }

    fn get(&self, key: &StashKey) -> Result<Option<Fetched>> {
        let row: Option<(i32, Vec<u8>)> = self.run(BackendOp::Load, Some(key), |c| {
            c.exec_first(
                "SELECT chunks, envelope FROM safestash_stashes WHERE namespace = ? AND `key` = ?",
                (self.ns.as_str(), key.as_str()),
            )
        })?;
        match row {
            None => Ok(None),
            Some((0, b)) => {
                Ok(Some(Fetched { len: b.len() as u64, reader: Box::new(Cursor::new(b)) }))
            }
            Some(_) => chunks::get_chunked(self, key),
        }
    }

    fn delete(&self, key: &StashKey, cond: Precondition) -> Result<Outcome> {
        self.change(BackendOp::Clear, key, |c| {
            let current: Option<Vec<u8>> = c.exec_first(
                "SELECT digest FROM safestash_stashes WHERE namespace = ? AND `key` = ? FOR UPDATE",
                (self.ns.as_str(), key.as_str()),
            )?;
            let Some(current) = current else { return Ok((Outcome::Missing, false)) };
            let current = digest_of(&current);
            match cond {
                Precondition::Absent => return Ok((Outcome::Refused { current }, false)),
                Precondition::Unchanged(d) if current != Some(d) => {
                    return Ok((Outcome::Refused { current }, false));
                }
                _ => {}
            }
            c.exec_drop(
                "DELETE FROM safestash_stashes WHERE namespace = ? AND `key` = ?",
                (self.ns.as_str(), key.as_str()),
            )?;
            Ok((Outcome::Done, true))
        })
    }

    fn list(&self, head_len: usize) -> Result<Vec<Listed>> {
        let head_len = i64::try_from(head_len).unwrap_or(i64::MAX);
        let rows: Vec<(Vec<u8>, i64, Vec<u8>)> = self.run(BackendOp::List, None, |c| {
            c.exec(
                "SELECT s.`key`, \
                   CASE WHEN s.chunks = 0 THEN LENGTH(s.envelope) \
                   ELSE (SELECT CAST(COALESCE(SUM(LENGTH(c.bytes)), 0) AS SIGNED) \
                         FROM safestash_chunks c \
                         WHERE c.namespace = s.namespace AND c.`key` = s.`key`) END, \
                   CASE WHEN s.chunks = 0 THEN SUBSTRING(s.envelope, 1, ?) \
                   ELSE COALESCE((SELECT SUBSTRING(c.bytes, 1, ?) FROM safestash_chunks c \
                         WHERE c.namespace = s.namespace AND c.`key` = s.`key` AND c.seq = 0), \
                         x'') END \
                 FROM safestash_stashes s WHERE s.namespace = ? ORDER BY s.`key`",
                (head_len, head_len, self.ns.as_str()),
            )
        })?;
        Ok(rows
            .into_iter()
            .map(|(name, len, head)| Listed {
                name: String::from_utf8_lossy(&name).into_owned(),
                len: u64::try_from(len).unwrap_or(0),
                head,
            })
            .collect())
    }

    fn has_locks(&self) -> bool {
        true
    }

    fn lock(&self, key: &StashKey, wait: bool) -> Result<Option<Box<dyn Held>>> {
        let name = self.lock_name(key);
        let secs = if wait { locks::wait_secs(self.shared.lock_timeout) } else { 0.0 };
        let (mut conn, taken) = self.attempt(|c| {
            c.exec_first::<Option<i64>, _>("SELECT GET_LOCK(?, ?)", (name.as_str(), secs))
        })?;
        match taken {
            Ok(Some(Some(1))) => {
                let store = Mysql {
                    shared: self.shared.clone(),
                    ns: self.ns.clone(),
                    location: self.location.clone(),
                    pinned: Some(Arc::new(Mutex::new(Some(conn)))),
                };
                Ok(Some(store.into_held(key.clone(), name)))
            }
            Ok(Some(Some(_))) => {
                self.shared.pool.give_back(conn);
                if wait {
                    Err(self.fail(BackendOp::Lock, Some(key))(Fault::Locked))
                } else {
                    Ok(None)
                }
            }
            Ok(_) => {
                conn.mark_broken();
                Err(Error::Backend {
                    op: BackendOp::Lock,
                    target: self.target(Some(key)),
                    source: "GET_LOCK returned NULL (the server refused the named lock)".into(),
                })
            }
            Err(e) => {
                self.shared.pool.give_back(conn);
                Err(self.fail(BackendOp::Lock, Some(key))(e))
            }
        }
    }

    fn move_aside(&self, key: &StashKey, aside: &str) -> Result<bool> {
        self.change(BackendOp::Quarantine, key, |c| {
            let moved = c.exec_drop(
                "UPDATE safestash_stashes SET `key` = ? WHERE namespace = ? AND `key` = ?",
                (aside, self.ns.as_str(), key.as_str()),
            )?;
            Ok((moved > 0, true))
        })
    }

    fn child(&self, ns: &str) -> Box<dyn Backend> {
        Box::new(Mysql::in_namespace(self.shared.clone(), format!("{}/{ns}", self.ns)))
    }

    fn children(&self) -> Result<Vec<String>> {
        let rows: Vec<Vec<u8>> = self.run(BackendOp::ListNamespaces, None, |c| {
            c.exec(
                "SELECT DISTINCT SUBSTRING(namespace, LENGTH(?) + 2) FROM safestash_stashes \
                 WHERE LEFT(namespace, LENGTH(?) + 1) = CONCAT(?, '/')",
                (self.ns.as_str(), self.ns.as_str(), self.ns.as_str()),
            )
        })?;
        let mut found: Vec<String> = rows
            .into_iter()
            .map(|r| String::from_utf8_lossy(&r).into_owned())
            .filter(|n| !n.contains('/'))
            .collect();
        found.sort();
        found.dedup();
        Ok(found)
    }
}
