//! The sessions of a call: a pooled connection (or a new one), the
//! retry when a pooled one turns out to be gone, the held lock's pinned
//! session, the call's deadline, and the errors named after the call.

use std::sync::PoisonError;
use std::time::Duration;

use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use super::conn::{Conn, Fault};
use super::url::Tls;
use super::{POOL_IDLE_TIME, Postgres};
use crate::error::{Error, Result};
use crate::key::StashKey;

/// What every session runs first.
pub(super) const SESSION_SETUP: &str = "SET search_path = pg_catalog, pg_temp";

impl Postgres {
    /// The end of a call starting now: `timeout`, plus `lock_timeout` for
    /// a call that may wait for a key's lock.
    pub(super) fn deadline(&self, waits: bool) -> std::time::Instant {
        let wait = if waits { self.shared.lock_timeout } else { Duration::ZERO };
        std::time::Instant::now() + self.shared.timeout + wait
    }

    pub(super) fn fail(
        &self,
        op: &'static str,
        key: Option<&StashKey>,
    ) -> impl FnOnce(Fault) -> Error + '_ {
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
    pub(super) fn new_client(&self, deadline: std::time::Instant) -> Result<Conn> {
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
    pub(super) fn take_client(&self, deadline: std::time::Instant) -> Result<(Conn, bool)> {
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

    pub(super) fn give_back(&self, conn: Conn) {
        self.shared.give_back(conn);
    }

    /// Runs `f` on a session before `deadline`: a pooled one, and once more
    /// on a new one when the pooled one's session turns out to be gone at
    /// `f`'s first statement. That statement (of every call: a `BEGIN`, a
    /// read, or a lock that dies with its session) was then not executed,
    /// or executed in a session that ended without committing anything.
    /// Nothing later is retried: a failed `COMMIT` may have committed.
    pub(super) fn attempt<R>(
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

    /// Runs `f` on the pinned connection of a held lock, or on a pooled one
    /// (see [`attempt`](Self::attempt)), all before the call's deadline
    /// (`waits`: it may wait for a key's lock). A connection that failed is
    /// not reused.
    pub(super) fn run<R>(
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
}
