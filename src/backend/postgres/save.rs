//! Changes: a save's transaction (its lock, its condition, the row or the
//! chunks) and a clear's, each sent as one pipeline where it can be.
//!
//! A save of an envelope of at most [`CHUNK_LEN`](super::CHUNK_LEN) is one
//! exchange: `BEGIN; SET LOCAL synchronous_commit = on`, the key's
//! transaction advisory lock, the write (whose statement carries the
//! condition: an upsert, an insert `ON CONFLICT DO NOTHING`, or an update
//! `WHERE digest = $6`), the digest in place, and `COMMIT`, all sent
//! together. The server runs them in order; if one fails, the transaction
//! is aborted, every later statement fails and the `COMMIT` rolls back. A
//! clear is the same with a `DELETE`. A larger envelope checks its
//! condition first (one exchange), then streams its chunks.

use std::io::{self, Write};

use super::LOCK_ID;
use super::chunks::Chunker;
use super::conn::{Conn, Fault, Step};
use super::session::Session;
use super::{CHUNK_LEN, Postgres, digest_of};
use crate::backend::{Fill, Outcome, Precondition};
use crate::digest::Digest;
use crate::error::{BackendOp, Doing, Error, Result};
use crate::key::StashKey;

/// The start of every change's transaction.
pub(super) const BEGIN: &str = "BEGIN; SET LOCAL synchronous_commit = on";

/// Its end (a simple-protocol statement of its own, so that its failure is
/// told apart: its outcome may be unknown).
pub(super) const COMMIT: &str = "COMMIT";

/// The operation named when a save's outcome is unknown.
pub(super) const SAVE_UNKNOWN: Doing = Doing::noted(
    BackendOp::Save,
    "the commit failed: if the connection was lost, the save may have committed",
);

/// The key's transaction advisory lock (`$1`: `NAMESPACE/KEY`).
pub(super) fn lock_sql() -> String {
    format!("SELECT pg_catalog.pg_advisory_xact_lock({LOCK_ID})")
}

/// What the statements of a small save are, in the store's schema.
pub(super) struct SaveSql {
    pub(super) lock: String,
    /// `$1..$5`: namespace, key, envelope, digest, size; any old chunks go.
    pub(super) upsert: String,
    /// The same, only where there is no row.
    pub(super) insert_absent: String,
    /// The same, only where the row's digest is `$6`.
    pub(super) update_if: String,
    /// The digest in place.
    pub(super) current: String,
    /// The digest and chunk count in place, the row locked.
    pub(super) current_for_update: String,
}

impl Postgres {
    pub(super) fn save_sql(&self) -> SaveSql {
        let sql = |s: &str| self.shared.sql(s);
        let columns = "INSERT INTO <stashes> (namespace, key, envelope, digest, size, created, chunks) \
                       VALUES ($1, $2, $3, $4, $5, pg_catalog.now(), 0)";
        SaveSql {
            lock: lock_sql(),
            upsert: sql(&format!(
                "WITH gone AS (DELETE FROM <chunks> WHERE namespace = $1 AND key = $2) \
                 {columns} ON CONFLICT (namespace, key) DO UPDATE SET envelope = EXCLUDED.envelope, \
                 digest = EXCLUDED.digest, size = EXCLUDED.size, created = EXCLUDED.created, chunks = 0"
            )),
            insert_absent: sql(&format!("{columns} ON CONFLICT (namespace, key) DO NOTHING")),
            update_if: sql(
                "WITH gone AS (DELETE FROM <chunks> c WHERE c.namespace = $1 AND c.key = $2 \
                   AND EXISTS (SELECT 1 FROM <stashes> s \
                               WHERE s.namespace = $1 AND s.key = $2 AND s.digest = $6)) \
                 UPDATE <stashes> SET envelope = $3, digest = $4, size = $5, \
                   created = pg_catalog.now(), chunks = 0 \
                 WHERE namespace = $1 AND key = $2 AND digest = $6",
            ),
            current: sql("SELECT digest FROM <stashes> WHERE namespace = $1 AND key = $2"),
            current_for_update: sql(
                "SELECT digest, chunks FROM <stashes> WHERE namespace = $1 AND key = $2 FOR UPDATE",
            ),
        }
    }

    /// A save (see [`Backend::put_with`](crate::backend::Backend::put_with)):
    /// the envelope is collected up to [`CHUNK_LEN`] and saved in one
    /// exchange; a larger one opens the transaction when it outgrows that,
    /// checks the condition, and streams the rest into chunk rows.
    pub(super) fn save_streamed(
        &self,
        key: &StashKey,
        cond: Precondition,
        fill: &mut Fill<'_>,
    ) -> Result<Outcome> {
        let mut spool = Spool { pg: self, key, cond, buf: Vec::new(), big: None, stop: None };
        let filled = fill(&mut spool);
        let Spool { buf, big, stop, .. } = spool;
        match stop {
            Some(Stop::Refused(current)) => return Ok(Outcome::Refused { current }),
            Some(Stop::Failed(e)) => return Err(e),
            None => {}
        }
        let digest = filled?;
        match big {
            None => self.save_small(key, &buf, &digest, cond),
            Some(big) => big.finish(&digest),
        }
    }

    /// A save of an envelope held in memory, of at most [`CHUNK_LEN`].
    pub(super) fn save_small(
        &self,
        key: &StashKey,
        envelope: &[u8],
        digest: &Digest,
        cond: Precondition,
    ) -> Result<Outcome> {
        let deadline = self.deadline(true);
        let mut session = self.session(BackendOp::Save, Some(key), deadline)?;
        let sql = self.save_sql();
        let lock = self.lock_name(key);
        let mut sent = false;
        let out = self.first(&mut session, deadline, |c| {
            sent = false;
            let st = c.statements(&[
                &sql.lock,
                &sql.upsert,
                &sql.insert_absent,
                &sql.update_if,
                &sql.current,
            ])?;
            sent = true;
            self.small_save(c, &st, &lock, key, envelope, digest, cond)
        })?;
        match out {
            Ok(outcome) => {
                self.end(session);
                Ok(outcome)
            }
            Err(fault) => {
                if let Some(lost) = session.lost_first_commit(&fault) {
                    drop(session);
                    return self.settle_lost_save(key, envelope, digest, cond, &lost, deadline);
                }
                self.end(session);
                let op = if sent && lost_connection(&fault) {
                    SAVE_UNKNOWN
                } else {
                    BackendOp::Save.into()
                };
                Err(self.fail(op, Some(key))(fault))
            }
        }
    }

    /// The pipeline of a small save: `BEGIN`, lock, conditional write,
    /// (the digest in place), `COMMIT`.
    #[allow(clippy::too_many_arguments)]
    fn small_save(
        &self,
        c: &mut Conn,
        st: &[tokio_postgres::Statement],
        lock: &str,
        key: &StashKey,
        envelope: &[u8],
        digest: &Digest,
        cond: Precondition,
    ) -> std::result::Result<Outcome, Fault> {
        let size = i64::try_from(envelope.len()).unwrap_or(i64::MAX);
        let digest = &digest.as_bytes()[..];
        let (ns, k) = (&self.ns, key.as_str());
        let expected = match cond {
            Precondition::Unchanged(d) => d.as_bytes().to_vec(),
            _ => Vec::new(),
        };
        let write: &[&(dyn tokio_postgres::types::ToSql + Sync)] =
            &[ns, &k, &envelope, &digest, &size, &expected.as_slice()];
        let (statement, params) = match cond {
            Precondition::Any => (&st[1], &write[..5]),
            Precondition::Absent => (&st[2], &write[..5]),
            Precondition::Unchanged(_) => (&st[3], write),
        };
        let lock: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&lock];
        let mut steps = vec![
            Step::Simple(BEGIN),
            Step::Execute(&st[0], &lock),
            Step::Execute(statement, params),
        ];
        let conditional = cond != Precondition::Any;
        if conditional {
            steps.push(Step::Query(&st[4], &write[..2]));
        }
        steps.push(Step::Simple(COMMIT));
        let replies = c.pipeline(&steps, true).map_err(|(_, f)| f)?;
        if replies[2].count() == 1 || !conditional {
            return Ok(Outcome::Done);
        }
        let mut replies = replies;
        let current = replies.swap_remove(3).rows();
        let current = current.first().and_then(|row| digest_of(&row.get::<_, Vec<u8>>(0)));
        Ok(Outcome::Refused { current })
    }

    /// A small save whose first exchange, on a pooled session, got no
    /// answer: the session was dead before it was sent, or was lost after
    /// the server ran it, which may have committed. Sending it again
    /// blindly could apply it twice, so first the lost session is ended
    /// (its server process terminated, and gone: its transaction then
    /// committed or never will), then, under the key's lock, what is there
    /// decides: this save's own envelope means it committed; otherwise the
    /// condition is checked again as if the save came now, and the write
    /// made if it holds (for a save without a condition, or a create when
    /// nothing is there, that is the save, once).
    fn settle_lost_save(
        &self,
        key: &StashKey,
        envelope: &[u8],
        digest: &Digest,
        cond: Precondition,
        lost: &(i32, String),
        deadline: std::time::Instant,
    ) -> Result<Outcome> {
        tracing::debug!(store = %self.location, key = %key, "a save's pooled session was lost at its first exchange; finding out whether it committed");
        let mut conn = self.new_client(deadline)?;
        conn.start_call(deadline);
        let sql = self.save_sql();
        let lock = self.lock_name(key);
        let settled = (|| {
            end_session(&mut conn, lost, deadline)?;
            let st = conn.statements(&[
                &sql.lock,
                &sql.current_for_update,
                &sql.upsert,
                &sql.insert_absent,
                &sql.update_if,
            ])?;
            let (ns, k) = (&self.ns, key.as_str());
            let steps = [
                Step::Simple(BEGIN),
                Step::Execute(&st[0], &[&lock]),
                Step::Query(&st[1], &[ns, &k]),
            ];
            let replies = conn.pipeline(&steps, false).map_err(|(_, f)| f)?;
            let there = replies.into_iter().nth(2).map(|r| r.rows()).unwrap_or_default();
            let there = there.first().map(|row| digest_of(&row.get::<_, Vec<u8>>(0)));
            if there == Some(Some(*digest)) {
                conn.rollback();
                return Ok(Outcome::Done);
            }
            if let Some(current) = refusal(cond, there) {
                conn.rollback();
                return Ok(Outcome::Refused { current });
            }
            let size = i64::try_from(envelope.len()).unwrap_or(i64::MAX);
            let (d, expected) = (&digest.as_bytes()[..], expected_bytes(cond));
            let write: &[&(dyn tokio_postgres::types::ToSql + Sync)] =
                &[ns, &k, &envelope, &d, &size, &expected.as_slice()];
            let step = match cond {
                Precondition::Any => Step::Execute(&st[2], &write[..5]),
                Precondition::Absent => Step::Execute(&st[3], &write[..5]),
                Precondition::Unchanged(_) => Step::Execute(&st[4], write),
            };
            conn.pipeline(&[step, Step::Simple(COMMIT)], true).map_err(|(_, f)| f)?;
            Ok(Outcome::Done)
        })();
        match settled {
            Ok(outcome) => {
                self.give_back(conn);
                Ok(outcome)
            }
            Err(fault) => Err(self.fail(SAVE_UNKNOWN, Some(key))(fault)),
        }
    }

    /// Opens a change's transaction on a session of the call, takes the
    /// key's lock and reads what is there (row locked): one exchange, sent
    /// again on a new session if a pooled one was gone (it changes
    /// nothing).
    pub(super) fn begin_checked(
        &self,
        key: &StashKey,
        deadline: std::time::Instant,
    ) -> Result<(TxSession<'_>, Option<Option<Digest>>)> {
        let mut session = self.session(BackendOp::Save, Some(key), deadline)?;
        let sql = self.save_sql();
        let lock = self.lock_name(key);
        let out = self.first(&mut session, deadline, |c| {
            let st = c.statements(&[&sql.lock, &sql.current_for_update])?;
            let steps = [
                Step::Simple(BEGIN),
                Step::Execute(&st[0], &[&lock]),
                Step::Query(&st[1], &[&self.ns, &key.as_str()]),
            ];
            let replies = c.pipeline(&steps, false).map_err(|(_, f)| f)?;
            let rows = replies.into_iter().nth(2).map(|r| r.rows()).unwrap_or_default();
            Ok(rows.first().map(|row| digest_of(&row.get::<_, Vec<u8>>(0))))
        });
        let tx = TxSession { pg: self, session: Some(session) };
        match out? {
            Ok(current) => Ok((tx, current)),
            Err(fault) => Err(self.fail(BackendOp::Save, Some(key))(fault)),
        }
    }

    /// A clear (see [`Backend::delete`](crate::backend::Backend::delete)):
    /// one exchange.
    pub(super) fn remove(&self, key: &StashKey, cond: Precondition) -> Result<Outcome> {
        let deadline = self.deadline(true);
        let mut session = self.session(BackendOp::Clear, Some(key), deadline)?;
        let (lock_sql, delete_sql) = (lock_sql(), self.delete_sql());
        let lock = self.lock_name(key);
        let (any, expected) = (cond == Precondition::Any, expected_bytes(cond));
        let mut sent = false;
        let out = self.first(&mut session, deadline, |c| {
            sent = false;
            let st = c.statements(&[&lock_sql, &delete_sql])?;
            sent = true;
            let steps = [
                Step::Simple(BEGIN),
                Step::Execute(&st[0], &[&lock]),
                Step::Query(&st[1], &[&self.ns, &key.as_str(), &any, &expected.as_slice()]),
                Step::Simple(COMMIT),
            ];
            let replies = c.pipeline(&steps, true).map_err(|(_, f)| f)?;
            let rows = replies.into_iter().nth(2).map(|r| r.rows()).unwrap_or_default();
            let Some(row) = rows.first() else { return Ok(Outcome::Missing) };
            let (there, deleted): (Option<Vec<u8>>, i64) = (row.get(0), row.get(1));
            Ok(match there {
                _ if deleted > 0 => Outcome::Done,
                None => Outcome::Missing,
                Some(d) => Outcome::Refused { current: digest_of(&d) },
            })
        })?;
        match out {
            Ok(outcome) => {
                self.end(session);
                Ok(outcome)
            }
            Err(fault) => {
                if let Some(lost) = session.lost_first_commit(&fault) {
                    drop(session);
                    return self.settle_lost_clear(key, cond, &lost, deadline);
                }
                self.end(session);
                let op = if sent && lost_connection(&fault) {
                    Doing::noted(
                        BackendOp::Clear,
                        "the commit failed: if the connection was lost, the clear may have committed",
                    )
                } else {
                    BackendOp::Clear.into()
                };
                Err(self.fail(op, Some(key))(fault))
            }
        }
    }

    /// The clear's statement: the digest in place, and whether it was
    /// deleted (`$3`: any; else only if its digest is `$4`).
    fn delete_sql(&self) -> String {
        self.shared.sql(
            "WITH there AS (SELECT digest FROM <stashes> WHERE namespace = $1 AND key = $2), \
             gone AS (DELETE FROM <stashes> WHERE namespace = $1 AND key = $2 \
                      AND ($3::pg_catalog.bool OR digest = $4::pg_catalog.bytea) RETURNING 1) \
             SELECT (SELECT digest FROM there), (SELECT pg_catalog.count(*) FROM gone)::pg_catalog.int8",
        )
    }

    /// A clear whose first exchange, on a pooled session, got no answer
    /// (see [`settle_lost_save`](Self::settle_lost_save)): once the lost
    /// session is gone, nothing there means nothing is left to clear; the
    /// digest the clear expected is cleared now; a stash that a clear
    /// without a condition may or may not have been sent for is left as it
    /// is, and the error says so.
    fn settle_lost_clear(
        &self,
        key: &StashKey,
        cond: Precondition,
        lost: &(i32, String),
        deadline: std::time::Instant,
    ) -> Result<Outcome> {
        const UNKNOWN: Doing = Doing::noted(
            BackendOp::Clear,
            "the connection was lost during the commit: the clear may have committed, \
             and a stash is there now, left as it is",
        );
        let mut conn = self.new_client(deadline)?;
        conn.start_call(deadline);
        let sql = self.save_sql();
        let (lock, delete_sql) = (self.lock_name(key), self.delete_sql());
        let settled = (|| {
            end_session(&mut conn, lost, deadline)?;
            let st = conn.statements(&[&sql.lock, &sql.current_for_update, &delete_sql])?;
            let (ns, k) = (&self.ns, key.as_str());
            let steps = [
                Step::Simple(BEGIN),
                Step::Execute(&st[0], &[&lock]),
                Step::Query(&st[1], &[ns, &k]),
            ];
            let replies = conn.pipeline(&steps, false).map_err(|(_, f)| f)?;
            let there = replies.into_iter().nth(2).map(|r| r.rows()).unwrap_or_default();
            let Some(there) = there.first().map(|row| digest_of(&row.get::<_, Vec<u8>>(0))) else {
                conn.rollback();
                return Ok(Some(Outcome::Missing));
            };
            match cond {
                Precondition::Unchanged(d) if there == Some(d) => {
                    let expected = expected_bytes(cond);
                    let step = Step::Query(&st[2], &[ns, &k, &false, &expected.as_slice()]);
                    conn.pipeline(&[step, Step::Simple(COMMIT)], true).map_err(|(_, f)| f)?;
                    Ok(Some(Outcome::Done))
                }
                Precondition::Any => {
                    conn.rollback();
                    Ok(None)
                }
                _ => {
                    conn.rollback();
                    Ok(Some(Outcome::Refused { current: there }))
                }
            }
        })();
        match settled {
            Ok(Some(outcome)) => {
                self.give_back(conn);
                Ok(outcome)
            }
            Ok(None) => {
                self.give_back(conn);
                Err(UNKNOWN.error(
                    self.target(Some(key)),
                    "the connection was lost after the clear was sent".into(),
                ))
            }
            Err(fault) => Err(self.fail(UNKNOWN, Some(key))(fault)),
        }
    }
}

/// A lost connection, not an answer from the server nor a time out (whose
/// error already says that what was sent may have taken effect).
fn lost_connection(fault: &Fault) -> bool {
    !fault.is_server_error() && !matches!(fault, Fault::TimedOut)
}

/// The digest a change expects, as its statements take it (empty, which
/// no row has, when it expects none).
pub(super) fn expected_bytes(cond: Precondition) -> Vec<u8> {
    match cond {
        Precondition::Unchanged(d) => d.as_bytes().to_vec(),
        _ => Vec::new(),
    }
}

/// When `cond` does not hold for what is there (`None`: nothing; else the
/// digest recorded with it), the digest to report as the refusal's.
pub(super) fn refusal(cond: Precondition, there: Option<Option<Digest>>) -> Option<Option<Digest>> {
    match (cond, there) {
        (Precondition::Any, _) => None,
        (Precondition::Absent, None) => None,
        (Precondition::Absent, Some(current)) => Some(current),
        (Precondition::Unchanged(d), Some(Some(current))) if current == d => None,
        (Precondition::Unchanged(_), there) => Some(there.flatten()),
    }
}

/// Ends the server session `lost` (a process and its start time) that a
/// call lost, and waits until it is gone, before `deadline`: its
/// transaction has then committed or never will. Terminating it needs the
/// same role (or `pg_signal_backend`); without, this waits for the server
/// to notice the lost connection.
fn end_session(
    conn: &mut Conn,
    lost: &(i32, String),
    deadline: std::time::Instant,
) -> std::result::Result<(), Fault> {
    let (pid, started) = (&lost.0, &lost.1);
    let matches = "FROM pg_catalog.pg_stat_activity a \
                   WHERE a.pid = $1 AND a.backend_start::pg_catalog.text = $2";
    let alive = format!("SELECT EXISTS (SELECT 1 {matches})");
    let terminate = format!("SELECT pg_catalog.pg_terminate_backend(a.pid) {matches}");
    let mut asked = false;
    loop {
        let rows = conn.query_prepared(&alive, &[pid, started])?;
        if !rows.first().is_some_and(|row| row.get::<_, bool>(0)) {
            return Ok(());
        }
        if !asked {
            asked = true;
            // Refused without the privilege: then the wait alone decides.
            match conn.query_prepared(&terminate, &[pid, started]) {
                Err(fault) if fault.is_server_error() => {}
                other => drop(other?),
            }
            continue;
        }
        if std::time::Instant::now() >= deadline {
            return Err(Fault::TimedOut);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// A change's open transaction on the session of its call: rolled back
/// (and the session ended) when dropped without [`commit`](Self::commit).
pub(super) struct TxSession<'a> {
    pg: &'a Postgres,
    session: Option<Session<'a>>,
}

impl<'a> TxSession<'a> {
    /// Wraps a session whose transaction is open.
    pub(super) fn new(pg: &'a Postgres, session: Session<'a>) -> Self {
        TxSession { pg, session: Some(session) }
    }

    pub(super) fn conn(&mut self) -> &mut Conn {
        self.session.as_mut().expect("an open transaction").conn()
    }

    /// Ends the session of a transaction that a pipeline committed.
    pub(super) fn committed(mut self) {
        if let Some(session) = self.session.take() {
            self.pg.end(session);
        }
    }
}

impl Drop for TxSession<'_> {
    fn drop(&mut self) {
        if let Some(mut session) = self.session.take() {
            session.conn().rollback();
            self.pg.end(session);
        }
    }
}

/// Why a streamed save stopped before its fill finished.
enum Stop {
    /// The condition did not hold (the digest in place).
    Refused(Option<Digest>),
    /// The server or the connection failed.
    Failed(Error),
}

/// The sink a save's fill writes into: up to [`CHUNK_LEN`] bytes are kept
/// for one small save; past that, the transaction opens, the condition is
/// checked, and the bytes go out in chunk rows.
struct Spool<'a> {
    pg: &'a Postgres,
    key: &'a StashKey,
    cond: Precondition,
    buf: Vec<u8>,
    big: Option<Big<'a>>,
    stop: Option<Stop>,
}

/// A large save under way: its transaction and its chunks.
struct Big<'a> {
    tx: TxSession<'a>,
    chunker: Chunker<'a>,
    key: &'a StashKey,
}

impl<'a> Spool<'a> {
    /// Opens the transaction, checks the condition, and starts the chunks
    /// with what was kept so far.
    fn open_big(&mut self) -> std::result::Result<(), Stop> {
        let pg = self.pg;
        let (mut tx, current) =
            pg.begin_checked(self.key, pg.deadline(true)).map_err(Stop::Failed)?;
        if let Some(current) = refusal(self.cond, current) {
            return Err(Stop::Refused(current));
        }
        let absent = self.cond == Precondition::Absent;
        let mut chunker = Chunker::new(&pg.shared, &pg.ns, self.key.as_str(), absent);
        let kept = std::mem::take(&mut self.buf);
        if let Err(fault) = chunker.push(tx.conn(), &kept) {
            return Err(Stop::Failed(pg.fail(BackendOp::Save, Some(self.key))(fault)));
        }
        self.big = Some(Big { tx, chunker, key: self.key });
        Ok(())
    }
}

impl Write for Spool<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.stop.is_some() {
            return Err(io::Error::other("the save stopped"));
        }
        if self.big.is_none() {
            if self.buf.len() + data.len() <= CHUNK_LEN {
                self.buf.extend_from_slice(data);
                return Ok(data.len());
            }
            if let Err(stop) = self.open_big() {
                self.stop = Some(stop);
                return Err(io::Error::other("the save stopped"));
            }
        }
        let big = self.big.as_mut().expect("opened above");
        if let Err(fault) = big.chunker.push(big.tx.conn(), data) {
            self.stop = Some(Stop::Failed(self.pg.fail(BackendOp::Save, Some(self.key))(fault)));
            self.big = None;
            return Err(io::Error::other("the server refused a chunk of the envelope"));
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Big<'_> {
    /// Ends a large save: the last chunk, the row and `COMMIT`, in one
    /// exchange.
    fn finish(mut self, digest: &Digest) -> Result<Outcome> {
        let pg = self.tx.pg;
        let key = self.key;
        match self.chunker.finish(self.tx.conn(), digest, Some(COMMIT)) {
            Err(fault) => {
                let op =
                    if lost_connection(&fault) { SAVE_UNKNOWN } else { BackendOp::Save.into() };
                Err(pg.fail(op, Some(key))(fault))
            }
            Ok(false) => {
                // Another create-if-absent committed first.
                let sql = pg.save_sql().current;
                let rows = self.tx.conn().query_prepared(&sql, &[&pg.ns, &key.as_str()]);
                let rows = rows.map_err(pg.fail(BackendOp::Save, Some(key)))?;
                let current = rows.first().and_then(|row| digest_of(&row.get::<_, Vec<u8>>(0)));
                Ok(Outcome::Refused { current })
            }
            Ok(true) => {
                self.tx.committed();
                Ok(Outcome::Done)
            }
        }
    }
}
