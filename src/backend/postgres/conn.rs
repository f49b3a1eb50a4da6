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
//!
//! Statements are prepared once per connection and kept (a connection made
//! again, after a restart or in a forked child, prepares them again), and
//! the statements of one step of a call are sent together
//! ([`Conn::pipeline`]): tokio-postgres writes the requests of futures
//! polled together in one burst, and the server answers them in order, so
//! a whole transaction costs one round trip.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::Poll;
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

    /// An answer from the server (an `ErrorResponse`): the statement and
    /// everything sent after it in its transaction did not commit. Anything
    /// else (a lost connection, a time out) leaves what was sent unknown.
    pub(super) fn is_server_error(&self) -> bool {
        matches!(self, Fault::Pg(e) if e.as_db_error().is_some())
    }
}

/// One statement of a [`Conn::pipeline`].
pub(super) enum Step<'a> {
    /// Statements in the simple protocol, no parameters (`BEGIN ...`,
    /// `COMMIT`).
    Simple(&'a str),
    /// A prepared statement whose row count comes back.
    Execute(&'a Statement, &'a [&'a (dyn ToSql + Sync)]),
    /// A prepared statement whose rows come back.
    Query(&'a Statement, &'a [&'a (dyn ToSql + Sync)]),
}

/// The answer to one [`Step`].
pub(super) enum Reply {
    /// A simple-protocol step ran.
    Done,
    /// The rows an [`Step::Execute`] changed.
    Count(u64),
    /// The rows of a [`Step::Query`].
    Rows(Vec<Row>),
}

impl Reply {
    /// The row count of an `Execute` (0 for anything else).
    pub(super) fn count(&self) -> u64 {
        match self {
            Reply::Count(n) => *n,
            _ => 0,
        }
    }

    /// The rows of a `Query` (none for anything else).
    pub(super) fn rows(self) -> Vec<Row> {
        match self {
            Reply::Rows(rows) => rows,
            _ => Vec::new(),
        }
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
    /// Exchanges (round trips) since the current call began.
    exchanges: u32,
    /// The call's first exchange carried a `COMMIT`: if it went unanswered,
    /// the change may have committed, so it is not simply sent again.
    first_commits: bool,
    /// The statements prepared on this session, by their text.
    prepared: HashMap<String, Statement>,
    /// The server process and its start time (`pg_stat_activity`), as
    /// the session's setup read them: what names this session to another.
    identity: Option<(i32, String)>,
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
            exchanges: 0,
            first_commits: false,
            prepared: HashMap::new(),
            identity: None,
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
        self.exchanges = 0;
        self.first_commits = false;
    }

    /// Moves the end of the current call to `deadline` (a batch bounds
    /// each of its steps).
    pub(super) fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = deadline;
    }

    /// Exchanges (round trips) since the call began.
    pub(super) fn exchanges(&self) -> u32 {
        self.exchanges
    }

    /// Whether the call's first exchange carried a `COMMIT`.
    pub(super) fn first_commits(&self) -> bool {
        self.first_commits
    }

    /// The server process of this session and its start time, once set.
    pub(super) fn identity(&self) -> Option<&(i32, String)> {
        self.identity.as_ref()
    }

    /// Records the server process of this session (see [`identity`](Self::identity)).
    pub(super) fn set_identity(&mut self, pid: i32, started: String) {
        self.identity = Some((pid, started));
    }

    /// The statements of `sqls`, prepared on this session: those it has
    /// not prepared yet are prepared together, in one exchange (which
    /// changes nothing, so it is safe to send again).
    pub(super) fn statements(&mut self, sqls: &[&str]) -> Result<Vec<Statement>, Fault> {
        let mut missing: Vec<&str> = Vec::new();
        for sql in sqls {
            if !self.prepared.contains_key(*sql) && !missing.contains(sql) {
                missing.push(sql);
            }
        }
        if !missing.is_empty() {
            self.exchanges += 1;
            let client = &self.client;
            let mut futs: Vec<Pin<Box<dyn Future<Output = _> + '_>>> =
                missing.iter().map(|sql| Box::pin(client.prepare(sql)) as Pin<Box<_>>).collect();
            let deadline = self.deadline;
            let out = self.rt.block_on(async {
                tokio::time::timeout_at(deadline.into(), join_all(&mut futs)).await
            });
            drop(futs);
            let Ok(results) = out else {
                self.broken = true;
                return Err(Fault::TimedOut);
            };
            for (sql, result) in missing.iter().zip(results) {
                self.prepared.insert((*sql).to_owned(), result?);
            }
        }
        Ok(sqls.iter().map(|sql| self.prepared[*sql].clone()).collect())
    }

    /// Sends `steps` together and waits for every answer: one exchange.
    /// The server runs them in order; `commits` says whether they may
    /// commit a change. On failure, the index of the first step that
    /// failed and why (the steps after it may have failed too: in an
    /// aborted transaction every statement fails, and a `COMMIT` there
    /// rolls back).
    pub(super) fn pipeline(
        &mut self,
        steps: &[Step<'_>],
        commits: bool,
    ) -> Result<Vec<Reply>, (usize, Fault)> {
        self.exchanges += 1;
        if self.exchanges == 1 {
            self.first_commits = commits;
        }
        let client = &self.client;
        type Answer<'f> = Pin<Box<dyn Future<Output = Result<Reply, tokio_postgres::Error>> + 'f>>;
        let mut futs: Vec<Answer<'_>> = steps
            .iter()
            .map(|step| match *step {
                Step::Simple(sql) => {
                    Box::pin(async move { client.batch_execute(sql).await.map(|()| Reply::Done) })
                        as Answer<'_>
                }
                Step::Execute(st, params) => {
                    Box::pin(async move { client.execute(st, params).await.map(Reply::Count) })
                }
                Step::Query(st, params) => {
                    Box::pin(async move { client.query(st, params).await.map(Reply::Rows) })
                }
            })
            .collect();
        let deadline = self.deadline;
        let out = self.rt.block_on(async {
            tokio::time::timeout_at(deadline.into(), join_all(&mut futs)).await
        });
        drop(futs);
        let Ok(results) = out else {
            self.broken = true;
            return Err((0, Fault::TimedOut));
        };
        let mut replies = Vec::with_capacity(results.len());
        for (i, result) in results.into_iter().enumerate() {
            replies.push(result.map_err(|e| (i, Fault::Pg(e)))?);
        }
        Ok(replies)
    }

    /// A prepared statement's rows, prepared first if this session has not
    /// yet (one more exchange, once per session).
    pub(super) fn query_prepared(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Fault> {
        let st = self.statements(&[sql])?.remove(0);
        self.query(&st, params)
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
        run(&self.rt, self.deadline, &mut self.exchanges, &mut self.broken, fut)
    }

    pub(super) fn query<Q: ?Sized + ToStatement>(
        &mut self,
        query: &Q,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Fault> {
        let fut = self.client.query(query, params);
        run(&self.rt, self.deadline, &mut self.exchanges, &mut self.broken, fut)
    }

    pub(super) fn query_one<Q: ?Sized + ToStatement>(
        &mut self,
        query: &Q,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, Fault> {
        let fut = self.client.query_one(query, params);
        run(&self.rt, self.deadline, &mut self.exchanges, &mut self.broken, fut)
    }

    /// Statements in the simple protocol (no parameters).
    pub(super) fn batch_execute(&mut self, sql: &str) -> Result<(), Fault> {
        let fut = self.client.batch_execute(sql);
        run(&self.rt, self.deadline, &mut self.exchanges, &mut self.broken, fut)
    }

    /// The first column of the first row of `sql`, in the simple protocol.
    pub(super) fn simple_value(&mut self, sql: &str) -> Result<Option<String>, Fault> {
        Ok(self.simple_row(sql)?.into_iter().next().flatten())
    }

    /// The columns of the first row of `sql` (statements in the simple
    /// protocol; the last one's first row), as text.
    pub(super) fn simple_row(&mut self, sql: &str) -> Result<Vec<Option<String>>, Fault> {
        let fut = self.client.simple_query(sql);
        let messages = run(&self.rt, self.deadline, &mut self.exchanges, &mut self.broken, fut)?;
        Ok(messages
            .into_iter()
            .find_map(|m| match m {
                SimpleQueryMessage::Row(row) => {
                    Some((0..row.len()).map(|i| row.get(i).map(str::to_owned)).collect())
                }
                _ => None,
            })
            .unwrap_or_default())
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
    exchanges: &mut u32,
    broken: &mut bool,
    fut: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, Fault> {
    *exchanges += 1;
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

/// Polls every future of `futs`, in order, until all are ready: the
/// requests of the first poll go out together.
async fn join_all<T>(futs: &mut [Pin<Box<dyn Future<Output = T> + '_>>]) -> Vec<T> {
    let mut out: Vec<Option<T>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (fut, slot) in futs.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match fut.as_mut().poll(cx) {
                    Poll::Ready(v) => *slot = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending { Poll::Pending } else { Poll::Ready(()) }
    })
    .await;
    out.into_iter().flatten().collect()
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
