//! One connection of a MySQL store, and the store's pool of idle ones.
//!
//! Every read and write on the socket is bounded by the store's `timeout`
//! plus `lock_timeout` (the socket's own timeouts, set when it connects:
//! a stopped server whose kernel still acknowledges packets fails the
//! statement then). A statement that failed on the wire (a timeout, a
//! closed connection) leaves the session in an unknown state: the
//! connection is marked broken and never reused. A connection a forked
//! child inherited is the parent's: it is neither used nor closed.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;

/// Why a statement failed.
#[derive(Debug)]
pub(super) enum Fault {
    /// The client's or the server's error.
    My(mysql::Error),
    /// `GET_LOCK` waited `lock_timeout` for another holder.
    Locked,
}

impl From<mysql::Error> for Fault {
    fn from(e: mysql::Error) -> Fault {
        Fault::My(e)
    }
}

/// Server error codes that mean the session is gone: the server is
/// shutting down (1053), the connection was killed (1927 on MariaDB,
/// 4031 an idle disconnect on MySQL), and the client's "server has gone
/// away" and "lost connection" (2006, 2013).
const SESSION_GONE: [u16; 5] = [1053, 1927, 4031, 2006, 2013];

/// InnoDB's lock wait timeout.
pub(super) const LOCK_WAIT_TIMEOUT: u16 = 1205;

impl Fault {
    /// The server's error code, if it sent one.
    pub(super) fn code(&self) -> Option<u16> {
        match self {
            Fault::My(mysql::Error::MySqlError(e)) => Some(e.code),
            _ => None,
        }
    }

    /// The failure was on the wire (or the session ended): the connection
    /// cannot be used again.
    pub(super) fn breaks(&self) -> bool {
        match self {
            Fault::My(mysql::Error::MySqlError(e)) => SESSION_GONE.contains(&e.code),
            Fault::My(_) => true,
            Fault::Locked => false,
        }
    }

    /// The session was gone when this was found (a closed connection, a
    /// server shut down or restarted), as opposed to a statement that timed
    /// out, which the server may still be running.
    pub(super) fn session_gone(&self) -> bool {
        match self {
            Fault::My(mysql::Error::MySqlError(e)) => SESSION_GONE.contains(&e.code),
            Fault::My(mysql::Error::IoError(e)) => {
                !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
            }
            _ => false,
        }
    }

    /// The socket's timeout fired.
    pub(super) fn timed_out(&self) -> bool {
        match self {
            Fault::My(e) => io_error(e).is_some_and(timeout_kind),
            Fault::Locked => false,
        }
    }
}

/// The socket's error under a client error (directly, or under the
/// packet codec's).
fn io_error(e: &mysql::Error) -> Option<&std::io::Error> {
    match e {
        mysql::Error::IoError(e) => Some(e),
        mysql::Error::CodecError(c) => {
            std::error::Error::source(c).and_then(|s| s.downcast_ref::<std::io::Error>())
        }
        _ => None,
    }
}

/// A socket timeout (a read or write timeout shows as `WouldBlock`).
fn timeout_kind(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
}

/// One session with the server.
pub(super) struct Conn {
    conn: mysql::Conn,
    /// A statement failed on the wire: the session's state is unknown.
    broken: bool,
    /// Statements sent since the current call began.
    sent: u32,
    /// When it went back to the pool.
    idle_since: Instant,
    /// The fork generation it was opened in ([`crate::fork`]).
    generation: u64,
}

impl Conn {
    pub(super) fn connect(opts: &mysql::Opts) -> Result<Conn, Fault> {
        let conn = mysql::Conn::new(opts.clone())?;
        Ok(Conn {
            conn,
            broken: false,
            sent: 0,
            idle_since: Instant::now(),
            generation: crate::fork::generation(),
        })
    }

    /// Whether a forked child inherited this session from its parent.
    pub(super) fn inherited(&self) -> bool {
        self.generation != crate::fork::generation()
    }

    /// Lets go of a session this process must not touch: nothing is sent
    /// (dropping would send `COM_QUIT` on the parent's socket), nothing is
    /// closed; the descriptor and memory are left to the process's end.
    pub(super) fn abandon(self) {
        std::mem::forget(self);
    }

    pub(super) fn start_call(&mut self) {
        self.sent = 0;
    }

    pub(super) fn sent(&self) -> u32 {
        self.sent
    }

    pub(super) fn is_broken(&self) -> bool {
        self.broken
    }

    pub(super) fn mark_broken(&mut self) {
        self.broken = true;
    }

    fn track<T>(&mut self, out: mysql::Result<T>) -> Result<T, Fault> {
        out.map_err(|e| {
            let fault = Fault::My(e);
            if fault.breaks() {
                self.broken = true;
            }
            fault
        })
    }

    /// A statement with bound parameters, its rows discarded.
    pub(super) fn exec_drop<P: Into<mysql::Params>>(
        &mut self,
        sql: &str,
        params: P,
    ) -> Result<u64, Fault> {
        self.sent += 1;
        let out = self.conn.exec_drop(sql, params).map(|()| self.conn.affected_rows());
        self.track(out)
    }

    /// A statement with bound parameters and its first row.
    pub(super) fn exec_first<T: mysql::prelude::FromRow, P: Into<mysql::Params>>(
        &mut self,
        sql: &str,
        params: P,
    ) -> Result<Option<T>, Fault> {
        self.sent += 1;
        let out = self.conn.exec_first(sql, params);
        self.track(out)
    }

    /// A statement with bound parameters and all its rows.
    pub(super) fn exec<T: mysql::prelude::FromRow, P: Into<mysql::Params>>(
        &mut self,
        sql: &str,
        params: P,
    ) -> Result<Vec<T>, Fault> {
        self.sent += 1;
        let out = self.conn.exec(sql, params);
        self.track(out)
    }

    /// Statements without parameters (the text protocol).
    pub(super) fn query_drop(&mut self, sql: &str) -> Result<(), Fault> {
        self.sent += 1;
        let out = self.conn.query_drop(sql);
        self.track(out)
    }

    /// The first row of a statement without parameters.
    pub(super) fn query_first<T: mysql::prelude::FromRow>(
        &mut self,
        sql: &str,
    ) -> Result<Option<T>, Fault> {
        self.sent += 1;
        let out = self.conn.query_first(sql);
        self.track(out)
    }

    /// Statements without parameters, several in one round trip (`;`
    /// between them): the rows of each, in order. The server stops at the
    /// first that fails, and its error is returned.
    pub(super) fn multi(&mut self, sql: &str) -> Result<Vec<Vec<mysql::Row>>, Fault> {
        self.sent += 1;
        let out = (|| {
            let mut result = self.conn.query_iter(sql)?;
            let mut sets = Vec::new();
            while let Some(set) = result.iter() {
                sets.push(set.collect::<mysql::Result<Vec<mysql::Row>>>()?);
            }
            Ok(sets)
        })();
        self.track(out)
    }

    /// Ends an open transaction; a connection whose `ROLLBACK` fails is
    /// marked broken.
    pub(super) fn rollback(&mut self) {
        if self.broken || self.query_drop("ROLLBACK").is_err() {
            self.broken = true;
        }
    }
}

/// The idle connections of a store and its child namespaces.
pub(super) struct Pool {
    idle: Mutex<Vec<Conn>>,
}

impl Pool {
    pub(super) fn new() -> Pool {
        Pool { idle: Mutex::new(Vec::new()) }
    }

    /// An idle connection of this process that is not too old; `None`
    /// when there is none. Inherited ones are abandoned on the way.
    pub(super) fn take(&self) -> Option<Conn> {
        loop {
            let conn = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop()?;
            if conn.inherited() {
                conn.abandon();
                continue;
            }
            if conn.idle_since.elapsed() > POOL_IDLE_TIME {
                continue;
            }
            return Some(conn);
        }
    }

    /// Returns a healthy connection, unless the pool is full.
    pub(super) fn give_back(&self, mut conn: Conn) {
        if conn.inherited() {
            return conn.abandon();
        }
        if conn.broken {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < POOL_MAX_IDLE {
            conn.idle_since = Instant::now();
            idle.push(conn);
        }
    }

    /// Closes every idle connection (a restart ended them all).
    pub(super) fn clear(&self) {
        let drained: Vec<Conn> =
            std::mem::take(&mut *self.idle.lock().unwrap_or_else(PoisonError::into_inner));
        for conn in drained {
            if conn.inherited() {
                conn.abandon();
            }
        }
    }
}

/// The most connections a store keeps idle for reuse.
///
/// ```
/// assert_eq!(safestash::backend::mysql::POOL_MAX_IDLE, 8);
/// ```
pub const POOL_MAX_IDLE: usize = 8;

/// How long an idle connection is kept.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(safestash::backend::mysql::POOL_IDLE_TIME, Duration::from_secs(300));
/// ```
pub const POOL_IDLE_TIME: Duration = Duration::from_secs(300);

/// A held lock's connection, shared by the lock and the fenced store it
/// hands out (`None` once released).
pub(super) type Pinned = Arc<Mutex<Option<Conn>>>;
