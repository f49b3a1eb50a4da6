//! The sessions of a call: a pooled connection (or a new one), the
//! retry when a pooled one turns out to be gone, the held lock's pinned
//! session, the call's deadline, and the errors named after the call.

use std::sync::{MutexGuard, PoisonError};
use std::time::Duration;

use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use super::Tls;
use super::conn::{Conn, Fault};
use super::{POOL_IDLE_TIME, Postgres};
use crate::error::{BackendOp, Doing, Error, Result};
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
        op: impl Into<Doing>,
        key: Option<&StashKey>,
    ) -> impl FnOnce(Fault) -> Error + '_ {
        let (doing, target) = (op.into(), self.target(key));
        let key = key.cloned();
        move |e| match (e, key) {
            (e, Some(key)) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                Error::Locked { path: target.into(), key }
            }
            (Fault::Pg(e), _) => doing.error(target, e.into()),
            (Fault::Local(e), _) => doing.error(target, e.into()),
            (Fault::TimedOut, _) => doing.error(
                target,
                format!(
                    "timed out: the server did not answer within the call's bound (`timeout` {}, \
                     plus `lock_timeout` {} for a call that may wait for a key's lock); the \
                     connection was closed, and whether what it sent took effect is unknown",
                    humantime::format_duration(self.shared.timeout),
                    humantime::format_duration(self.shared.lock_timeout),
                )
                .into(),
            ),
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
        let mut conn = connected.map_err(self.fail(BackendOp::Connect, None))?;
        conn.start_call(deadline);
        let ms = self.shared.lock_timeout.as_millis().max(1);
        // The server process and its start time name this session to
        // another one (to end it, when a call lost it mid-save).
        let row = conn
            .simple_row(&format!(
                "{SESSION_SETUP}; SET lock_timeout = {ms}; \
                 SELECT a.pid, a.backend_start::pg_catalog.text FROM pg_catalog.pg_stat_activity a \
                 WHERE a.pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid()"
            ))
            .map_err(self.fail(BackendOp::SetUpSession, None))?;
        if let [Some(pid), Some(started)] = row.as_slice() {
            if let Ok(pid) = pid.parse() {
                conn.set_identity(pid, started.clone());
            }
        }
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

    /// Whether a failure of a pooled session's first exchange may be
    /// followed by sending the same exchange again on a new session: the
    /// session was gone, and the exchange changed nothing (it carried no
    /// `COMMIT`, or the server answered that the session ended, so nothing
    /// after that answer ran). A first exchange that carried a `COMMIT` and
    /// got no answer may have committed: it is never sent again blindly
    /// (see [`Session::lost_first_commit`]).
    fn may_resend(pooled: bool, conn: &Conn, fault: &Fault) -> bool {
        pooled
            && conn.exchanges() == 1
            && fault.session_gone()
            && (!conn.first_commits() || fault.is_server_error())
    }

    /// Runs `f` on a session before `deadline`: a pooled one, and once more
    /// on a new one when the pooled one's session turns out to be gone at
    /// `f`'s first exchange ([`may_resend`](Self::may_resend)). Nothing
    /// later is retried: a failed `COMMIT` may have committed.
    pub(super) fn attempt<R>(
        &self,
        deadline: std::time::Instant,
        mut f: impl FnMut(&mut Conn) -> std::result::Result<R, Fault>,
    ) -> Result<(Conn, std::result::Result<R, Fault>)> {
        let (mut conn, pooled) = self.take_client(deadline)?;
        conn.start_call(deadline);
        let out = f(&mut conn);
        match out {
            Err(fault) if Self::may_resend(pooled, &conn, &fault) => {
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

    /// The session of a call before `deadline`: the held lock's (checked
    /// to be usable here; it is never replaced), or a pooled one, or a new
    /// one.
    pub(super) fn session(
        &self,
        op: BackendOp,
        key: Option<&StashKey>,
        deadline: std::time::Instant,
    ) -> Result<Session<'_>> {
        let Some(pinned) = &self.pinned else {
            let (mut conn, pooled) = self.take_client(deadline)?;
            conn.start_call(deadline);
            return Ok(Session::Own { conn: Some(conn), pooled });
        };
        let mut guard = pinned.lock().unwrap_or_else(PoisonError::into_inner);
        let refused =
            |why: &'static str| Error::Backend { op, target: self.target(key), source: why.into() };
        let Some(conn) = guard.as_mut() else {
            return Err(refused("the lock's connection is gone"));
        };
        // No retry here: the lock lives and dies with this session.
        if conn.inherited() {
            return Err(refused(
                "the lock's session belongs to the parent process this one was \
                 forked from: the lock is not held here",
            ));
        }
        if conn.is_closed() {
            return Err(refused(
                "the lock's connection was closed (a call on it failed or timed out): \
                 the lock is no longer held",
            ));
        }
        conn.start_call(deadline);
        Ok(Session::Pinned(guard))
    }

    /// Runs `f` on `session`, and once more on a new session when a pooled
    /// one was gone at `f`'s first exchange ([`may_resend`](Self::may_resend)).
    pub(super) fn first<R>(
        &self,
        session: &mut Session<'_>,
        deadline: std::time::Instant,
        mut f: impl FnMut(&mut Conn) -> std::result::Result<R, Fault>,
    ) -> Result<std::result::Result<R, Fault>> {
        let out = f(session.conn());
        match out {
            Err(fault) if session.may_resend(&fault) => {
                tracing::debug!(store = %self.location, "a pooled connection was closed; retrying on a new one");
                self.shared.pool.lock().unwrap_or_else(PoisonError::into_inner).clear();
                let mut conn = self.new_client(deadline)?;
                conn.start_call(deadline);
                *session = Session::Own { conn: Some(conn), pooled: false };
                Ok(f(session.conn()))
            }
            out => Ok(out),
        }
    }

    /// Ends a call on `session`: a session of its own goes back to the
    /// pool (unless it closed or broke: a failed statement leaves it
    /// usable, a failed transaction was rolled back), a held lock's stays.
    pub(super) fn end(&self, session: Session<'_>) {
        if let Session::Own { conn: Some(conn), .. } = session {
            self.give_back(conn);
        }
    }

    /// Runs `f` on the pinned connection of a held lock, or on a pooled one
    /// (see [`first`](Self::first)), all before the call's deadline
    /// (`waits`: it may wait for a key's lock). A connection that failed is
    /// not reused.
    pub(super) fn run<R>(
        &self,
        op: impl Into<Doing>,
        key: Option<&StashKey>,
        waits: bool,
        f: impl FnMut(&mut Conn) -> std::result::Result<R, Fault>,
    ) -> Result<R> {
        let op = op.into();
        let deadline = self.deadline(waits);
        let mut session = self.session(op.op, key, deadline)?;
        let out = self.first(&mut session, deadline, f)?;
        self.end(session);
        out.map_err(self.fail(op, key))
    }
}

/// The session a call runs on (on the call's stack: not boxed).
#[allow(clippy::large_enum_variant)]
pub(super) enum Session<'a> {
    /// A held lock's: every change through the lock runs on it.
    Pinned(MutexGuard<'a, Option<Conn>>),
    /// One of the call's own, from the pool (`pooled`) or new.
    Own { conn: Option<Conn>, pooled: bool },
}

impl Session<'_> {
    /// The connection.
    pub(super) fn conn(&mut self) -> &mut Conn {
        match self {
            Session::Pinned(guard) => guard.as_mut().expect("checked when the call began"),
            Session::Own { conn, .. } => conn.as_mut().expect("a call's own session"),
        }
    }

    fn may_resend(&mut self, fault: &Fault) -> bool {
        let pooled = matches!(self, Session::Own { pooled: true, .. });
        Postgres::may_resend(pooled, self.conn(), fault)
    }

    /// When `fault` ended a pooled session at the call's first exchange,
    /// which carried a `COMMIT` and got no answer (the connection closed:
    /// dead before the exchange was sent, or lost after the server ran
    /// it): the server process and start time of that session, to find out
    /// what became of it ([`Postgres::settle_lost_save`]).
    pub(super) fn lost_first_commit(&mut self, fault: &Fault) -> Option<(i32, String)> {
        let pooled = matches!(self, Session::Own { pooled: true, .. });
        let conn = self.conn();
        let lost = pooled
            && conn.exchanges() == 1
            && conn.first_commits()
            && fault.session_gone()
            && !fault.is_server_error();
        if lost { conn.identity().cloned() } else { None }
    }
}
