//! One connection of a PostgreSQL store: a synchronous face over
//! `tokio-postgres` on a current-thread runtime of its own (as the
//! `postgres` crate does), with every statement bounded by the deadline of
//! the call it belongs to.
//!
//! The bound is a wall clock on the client: it holds whatever the server
//! or the network does (a stopped server process, whose kernel still
//! acknowledges every packet, fires neither TCP's user timeout nor its
//! keepalives, nor the server's `statement_timeout`). A statement that
//! times out leaves the session in an unknown state, so the connection is
//! marked broken and never reused.

use std::future::Future;
use std::io;
use std::time::Instant;

use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, Row, SimpleQueryMessage, Socket, Statement, ToStatement};

/// Why a statement failed.
#[derive(Debug)]
pub(super) enum Fault {
    /// The client's or the server's error.
    Pg(tokio_postgres::Error),
    /// No answer before the call's deadline.
    TimedOut,
    /// The connection's runtime could not be made.
    Local(io::Error),
}

impl From<tokio_postgres::Error> for Fault {
    fn from(e: tokio_postgres::Error) -> Fault {
        Fault::Pg(e)
    }
}

impl Fault {
    /// The server's SQLSTATE, if it sent one.
    pub(super) fn code(&self) -> Option<&tokio_postgres::error::SqlState> {
        match self {
            Fault::Pg(e) => e.code(),
            Fault::TimedOut | Fault::Local(_) => None,
        }
    }

    /// The session was gone when this was found: the connection is closed
    /// (the stream ended, a socket error), or the server ended the session
    /// for a shutdown or a restart (SQLSTATE 57P01, 57P02, 57P03). A time
    /// out is not: the server may be working on the statement.
    pub(super) fn session_gone(&self) -> bool {
        use tokio_postgres::error::SqlState;
        let Fault::Pg(e) = self else { return false };
        if e.is_closed() {
            return true;
        }
        if let Some(code) = e.code() {
            return [
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CRASH_SHUTDOWN,
                SqlState::CANNOT_CONNECT_NOW,
            ]
            .contains(code);
        }
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            if s.is::<io::Error>() {
                return true;
            }
            source = s.source();
        }
        false
    }
}

/// One session with the server.
pub(super) struct Conn {
    rt: tokio::runtime::Runtime,
    client: Client,
    /// The end of the current call.
    deadline: Instant,
    /// A statement timed out or a transaction could not be ended: the
    /// session's state is unknown.
    broken: bool,
    /// Statements sent since the current call began.
    sent: u32,
    /// When it went back to the pool.
    pub(super) idle_since: Instant,
    /// The fork generation it was opened in ([`crate::fork`]).
    generation: u64,
}

impl Conn {
    /// Connects (TCP or TLS, and the startup exchange) before `deadline`.
    pub(super) fn connect<T>(config: &Config, tls: T, deadline: Instant) -> Result<Conn, Fault>
    where
        T: MakeTlsConnect<Socket> + 'static + Send,
        T::TlsConnect: Send,
        T::Stream: Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Fault::Local)?;
        let connected = rt.block_on(async {
            tokio::time::timeout_at(deadline.into(), config.connect(tls)).await
        });
        let (client, connection) = match connected {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => return Err(Fault::Pg(e)),
            Err(_) => return Err(Fault::TimedOut),
        };
        // The connection's I/O runs whenever this runtime is blocked on.
        rt.spawn(async move {
            let _ = connection.await;
        });
        Ok(Conn {
            rt,
            client,
            deadline,
            broken: false,
            sent: 0,
            idle_since: Instant::now(),
            generation: crate::fork::generation(),
        })
    }

    /// Whether a forked child inherited this session from its parent: the
    /// session is the parent's, and the child must neither use it nor
    /// close it (closing sends the server a goodbye on the parent's
    /// socket).
    pub(super) fn inherited(&self) -> bool {
        self.generation != crate::fork::generation()
    }

    /// Lets go of a session this process must not touch: nothing is sent,
    /// nothing is closed (the descriptor and memory are left to the
    /// process's end).
    pub(super) fn abandon(self) {
        std::mem::forget(self);
    }

    /// Starts a call that must end by `deadline`.
    pub(super) fn start_call(&mut self, deadline: Instant) {
        self.deadline = deadline;
        self.sent = 0;
    }

    /// Statements sent since the call began.
    pub(super) fn sent(&self) -> u32 {
        self.sent
    }

    /// Gone, or in an unknown state.
    pub(super) fn is_closed(&self) -> bool {
        self.broken || self.client.is_closed()
    }

    /// Lets the connection read what the server sent while it sat idle (a
    /// shutdown's `FATAL`, the end of the stream), so that
    /// [`is_closed`](Self::is_closed) tells the truth. No round trip.
    pub(super) fn refresh(&mut self) {
        self.rt.block_on(async {
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
        });
    }

    pub(super) fn execute<Q: ?Sized + ToStatement>(
        &mut self,
        query: &Q,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, Fault> {
        let fut = self.client.execute(query, params);
        run(&self.rt, self.deadline, &mut self.sent, &mut self.broken, fut)
    }

    pub(super) fn query<Q: ?Sized + ToStatement>(
        &mut self,
        query: &Q,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Fault> {
        let fut = self.client.query(query, params);
        run(&self.rt, self.deadline, &mut self.sent, &mut self.broken, fut)
    }

    pub(super) fn query_one<Q: ?Sized + ToStatement>(
        &mut self,
        query: &Q,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, Fault> {
        let fut = self.client.query_one(query, params);
        run(&self.rt, self.deadline, &mut self.sent, &mut self.broken, fut)
    }

    pub(super) fn query_opt<Q: ?Sized + ToStatement>(
        &mut self,
        query: &Q,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, Fault> {
        let fut = self.client.query_opt(query, params);
        run(&self.rt, self.deadline, &mut self.sent, &mut self.broken, fut)
    }

    pub(super) fn prepare(&mut self, query: &str) -> Result<Statement, Fault> {
        let fut = self.client.prepare(query);
        run(&self.rt, self.deadline, &mut self.sent, &mut self.broken, fut)
    }

    /// Statements in the simple protocol (no parameters).
    pub(super) fn batch_execute(&mut self, sql: &str) -> Result<(), Fault> {
        let fut = self.client.batch_execute(sql);
        run(&self.rt, self.deadline, &mut self.sent, &mut self.broken, fut)
    }

    /// The first column of the first row of `sql`, in the simple protocol.
    pub(super) fn simple_value(&mut self, sql: &str) -> Result<Option<String>, Fault> {
        let fut = self.client.simple_query(sql);
        let messages = run(&self.rt, self.deadline, &mut self.sent, &mut self.broken, fut)?;
        Ok(messages
            .into_iter()
            .find_map(|m| match m {
                SimpleQueryMessage::Row(row) => Some(row.get(0).map(str::to_owned)),
                _ => None,
            })
            .flatten())
    }

    /// `BEGIN`; the transaction is rolled back when the guard is dropped
    /// without [`Tx::commit`].
    pub(super) fn transaction(&mut self) -> Result<Tx<'_>, Fault> {
        self.batch_execute("BEGIN")?;
        Ok(Tx { conn: self, done: false })
    }

    /// Ends an open transaction (a reader's snapshot); a connection whose
    /// `ROLLBACK` fails is marked broken.
    pub(super) fn rollback(&mut self) {
        if self.is_closed() || self.batch_execute("ROLLBACK").is_err() {
            self.broken = true;
        }
    }
}

fn run<T>(
    rt: &tokio::runtime::Runtime,
    deadline: Instant,
    sent: &mut u32,
    broken: &mut bool,
    fut: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, Fault> {
    *sent += 1;
    let out = rt.block_on(async {
        match tokio::time::timeout_at(deadline.into(), fut).await {
            Ok(r) => r.map_err(Fault::Pg),
            Err(_) => Err(Fault::TimedOut),
        }
    });
    if matches!(out, Err(Fault::TimedOut)) {
        *broken = true;
    }
    out
}

/// An open transaction on a [`Conn`].
pub(super) struct Tx<'c> {
    conn: &'c mut Conn,
    done: bool,
}

impl Tx<'_> {
    /// Sends `COMMIT`. An error here may come after the server committed:
    /// the caller says so.
    pub(super) fn commit(mut self) -> Result<(), Fault> {
        self.done = true;
        self.conn.batch_execute("COMMIT")
    }
}

impl std::ops::Deref for Tx<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn
    }
}

impl std::ops::DerefMut for Tx<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.conn.rollback();
        }
    }
}
