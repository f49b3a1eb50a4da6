//! A batch: all its stashes in one transaction, one durable commit.
//!
//! The first exchange opens the transaction, takes every key's advisory
//! lock (in the order of their lock numbers, as every batch does, so two
//! batches never wait for each other in a cycle) and reads what is there,
//! the rows locked. Then, in order, each stash's condition is checked
//! against what is there (after the batch's earlier stashes): the first
//! that does not hold stops the batch, and the stashes before it are
//! committed. The envelopes go out with the `COMMIT`, in the second
//! exchange; an envelope over [`CHUNK_LEN`] streams its chunks in between
//! (after a savepoint, so that a fill that fails takes back only its own
//! rows).

use std::collections::HashMap;
use std::io::{self, Write};

use tokio_postgres::Statement;
use tokio_postgres::types::ToSql;

use super::chunks::Chunker;
use super::conn::{Conn, Fault, Step};
use super::save::{BEGIN, COMMIT, TxSession, refusal};
use super::{CHUNK_LEN, Postgres, digest_of};
use crate::backend::{BatchOutcome, BatchPut, Outcome};
use crate::digest::Digest;
use crate::error::{BackendOp, Doing, Result};

/// What a batch whose transaction failed before its commit says.
const NOTHING_SAVED: Doing =
    Doing::noted(BackendOp::SaveBatch, "the transaction failed: nothing of the batch was saved");
use crate::key::StashKey;

/// A small envelope waiting for the batch's last exchange.
struct Queued {
    key: String,
    envelope: Vec<u8>,
    digest: Vec<u8>,
    size: i64,
}

impl Postgres {
    /// Saves `items` in one transaction (see the [module docs](self)).
    pub(super) fn save_batch(&self, items: &[BatchPut<'_>]) -> BatchOutcome {
        let n = items.len();
        let first_key = items[0].key.clone();
        let fail = |op: Doing, key: &StashKey, fault| {
            BatchOutcome::of_prefix(n, vec![Err(self.fail(op, Some(key))(fault))])
        };
        let deadline = self.deadline(true);
        let mut session = match self.session(BackendOp::SaveBatch, Some(&first_key), deadline) {
            Ok(session) => session,
            Err(e) => return BatchOutcome::of_prefix(n, vec![Err(e)]),
        };
        let names: Vec<String> = items.iter().map(|i| self.lock_name(i.key)).collect();
        let keys: Vec<&str> = items.iter().map(|i| i.key.as_str()).collect();
        let locks_sql = "SELECT pg_catalog.pg_advisory_xact_lock(l.h) FROM \
             (SELECT DISTINCT pg_catalog.hashtextextended(u.n, 0::pg_catalog.int8) AS h \
              FROM pg_catalog.unnest($1::pg_catalog.text[]) AS u(n)) AS l ORDER BY l.h";
        let there_sql = self.shared.sql(
            "SELECT key, digest FROM <stashes> \
             WHERE namespace = $1 AND key = ANY($2::pg_catalog.text[]) FOR UPDATE",
        );
        let upsert_sql = self.save_sql().upsert;
        let opened = self.first(&mut session, deadline, |c| {
            let st = c.statements(&[locks_sql, &there_sql, &upsert_sql])?;
            let steps = [
                Step::Simple(BEGIN),
                Step::Query(&st[0], &[&names]),
                Step::Query(&st[1], &[&self.ns, &keys]),
            ];
            let replies = c.pipeline(&steps, false).map_err(|(_, f)| f)?;
            let rows = replies.into_iter().nth(2).map(|r| r.rows()).unwrap_or_default();
            let there: HashMap<String, Option<Digest>> = rows
                .iter()
                .map(|row| (row.get::<_, String>(0), digest_of(&row.get::<_, Vec<u8>>(1))))
                .collect();
            Ok((there, st[2].clone()))
        });
        let mut tx = TxSession::new(self, session);
        let (mut there, upsert) = match opened {
            Ok(Ok(opened)) => opened,
            Ok(Err(fault)) => return fail(BackendOp::SaveBatch.into(), &first_key, fault),
            Err(e) => return BatchOutcome::of_prefix(n, vec![Err(e)]),
        };
        let mut queued: Vec<Queued> = Vec::new();
        let mut written = 0;
        let mut stopped: Option<Result<Outcome>> = None;
        let mut unserializable = false;
        for item in items.iter() {
            let key = item.key;
            if let Some(current) = refusal(item.cond, there.get(key.as_str()).copied()) {
                stopped = Some(Ok(Outcome::Refused { current }));
                break;
            }
            tx.conn().set_deadline(self.deadline(false));
            let mut sink = Sink {
                pg: self,
                key,
                conn: tx.conn(),
                upsert: &upsert,
                queued: &mut queued,
                buf: Vec::new(),
                big: None,
                failed: None,
            };
            let filled = (item.fill)(&mut sink);
            let Sink { buf, big, failed, .. } = sink;
            if let Some(fault) = failed {
                // The transaction is lost with whatever it held.
                return fail(NOTHING_SAVED, key, fault);
            }
            match (filled, big) {
                (Err(e), _) => {
                    // A value that does not serialize stops the batch with
                    // nothing of it saved: the transaction is rolled back
                    // with it (dropped uncommitted).
                    stopped = Some(Err(e));
                    unserializable = true;
                    break;
                }
                (Ok(digest), Some(chunker)) => {
                    if let Err(fault) = chunker.finish(tx.conn(), &digest, None) {
                        return fail(NOTHING_SAVED, key, fault);
                    }
                    there.insert(key.as_str().to_owned(), Some(digest));
                }
                (Ok(digest), None) => {
                    queued.push(Queued {
                        key: key.as_str().to_owned(),
                        size: i64::try_from(buf.len()).unwrap_or(i64::MAX),
                        envelope: buf,
                        digest: digest.as_bytes().to_vec(),
                    });
                    there.insert(key.as_str().to_owned(), Some(digest));
                }
            }
            written += 1;
        }
        if unserializable {
            let failed = match stopped {
                Some(Err(e)) => Some((written, e)),
                _ => None,
            };
            return BatchOutcome { outcomes: vec![None; n], failed };
        }
        tx.conn().set_deadline(self.deadline(false));
        match send(tx.conn(), &upsert, &self.ns, &queued, COMMIT, true) {
            Ok(()) => tx.committed(),
            Err((i, fault)) if fault.is_server_error() => {
                let key = queued.get(i).map_or(first_key.as_str(), |q| q.key.as_str());
                let key = StashKey::new(key).unwrap_or(first_key.clone());
                return fail(NOTHING_SAVED, &key, fault);
            }
            Err((_, fault)) => {
                return fail(
                    Doing::noted(
                        BackendOp::SaveBatch,
                        "the commit failed: if the connection was lost, the batch may have committed",
                    ),
                    &first_key,
                    fault,
                );
            }
        }
        let mut results: Vec<Result<Outcome>> = (0..written).map(|_| Ok(Outcome::Done)).collect();
        results.extend(stopped);
        BatchOutcome::of_prefix(n, results)
    }
}

/// Sends the upserts of `queued`, then `tail`, in one exchange.
fn send(
    conn: &mut Conn,
    upsert: &Statement,
    ns: &str,
    queued: &[Queued],
    tail: &str,
    commits: bool,
) -> std::result::Result<(), (usize, Fault)> {
    let params: Vec<[&(dyn ToSql + Sync); 5]> = queued
        .iter()
        .map(|q| [&ns as _, &q.key as _, &q.envelope as _, &q.digest as _, &q.size as _])
        .collect();
    let mut steps: Vec<Step<'_>> = params.iter().map(|p| Step::Execute(upsert, p)).collect();
    steps.push(Step::Simple(tail));
    conn.pipeline(&steps, commits).map(drop)
}

/// The sink of one stash of a batch: up to [`CHUNK_LEN`] it is kept for
/// the last exchange; past it, what is queued goes out, a savepoint is
/// set, and the envelope streams into chunk rows.
struct Sink<'a, 'c> {
    pg: &'a Postgres,
    key: &'a StashKey,
    conn: &'c mut Conn,
    upsert: &'a Statement,
    queued: &'c mut Vec<Queued>,
    buf: Vec<u8>,
    big: Option<Chunker<'a>>,
    failed: Option<Fault>,
}

impl Write for Sink<'_, '_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.failed.is_some() {
            return Err(io::Error::other("the batch's transaction failed"));
        }
        let out = (|| {
            if self.big.is_none() {
                if self.buf.len() + data.len() <= CHUNK_LEN {
                    self.buf.extend_from_slice(data);
                    return Ok(());
                }
                let savepoint = "SAVEPOINT safestash_big";
                send(self.conn, self.upsert, &self.pg.ns, self.queued, savepoint, false)
                    .map_err(|(_, f)| f)?;
                self.queued.clear();
                let mut chunker =
                    Chunker::new(&self.pg.shared, &self.pg.ns, self.key.as_str(), false);
                chunker.push(self.conn, &std::mem::take(&mut self.buf))?;
                self.big = Some(chunker);
            }
            self.big.as_mut().expect("started above").push(self.conn, data)
        })();
        match out {
            Ok(()) => Ok(data.len()),
            Err(fault) => {
                self.failed = Some(fault);
                Err(io::Error::other("the server refused a part of the batch"))
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
