//! Envelopes over [`CHUNK_LEN`]: streamed into rows of `safestash_chunks`
//! as a save writes them, read back one chunk at a time in one snapshot.

use std::io::{self, Cursor, Read};
use std::sync::Arc;

use tokio_postgres::Statement;
use tokio_postgres::types::ToSql;

use super::conn::{Conn, Fault, Step};
use super::{CHUNK_LEN, Postgres, Shared};
use crate::backend::Fetched;
use crate::digest::Digest;
use crate::error::{BackendOp, Result};
use crate::key::StashKey;

impl Postgres {
    /// A chunked envelope, read in one snapshot, a chunk at a time.
    pub(super) fn get_chunked(&self, key: &StashKey) -> Result<Option<Fetched>> {
        let shared = &self.shared;
        let head = shared.sql(
            "SELECT s.chunks, s.envelope, \
               (SELECT COALESCE(pg_catalog.sum(pg_catalog.length(c.bytes)), 0)::pg_catalog.int8 \
                FROM <chunks> c WHERE c.namespace = s.namespace AND c.key = s.key) \
             FROM <stashes> s WHERE s.namespace = $1 AND s.key = $2",
        );
        let chunk =
            shared.sql("SELECT bytes FROM <chunks> WHERE namespace = $1 AND key = $2 AND seq = $3");
        let (conn, opened) = self.attempt(self.deadline(false), |conn| {
            let st = conn.statements(&[&head, &chunk])?;
            let steps = [
                Step::Simple("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"),
                Step::Query(&st[0], &[&self.ns, &key.as_str()]),
            ];
            let replies = conn.pipeline(&steps, false).map_err(|(_, f)| f)?;
            let rows = replies.into_iter().nth(1).map(|r| r.rows()).unwrap_or_default();
            let stmt = st[1].clone();
            Ok(rows
                .first()
                .map(|r| (r.get::<_, i32>(0), r.get::<_, Vec<u8>>(1), r.get::<_, i64>(2), stmt)))
        })?;
        let found = match opened {
            Ok(found) => found,
            Err(e) => {
                // The snapshot's transaction goes with the connection.
                drop(conn);
                return Err(self.fail(BackendOp::Load, Some(key))(e));
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
}

/// An envelope larger than [`CHUNK_LEN`] on its way into chunk rows, in
/// the transaction of its save, which has checked the save's condition
/// under the key's lock: first the row (a placeholder until
/// [`finish`](Self::finish)) and no old chunks, then each chunk as it fills.
pub(super) struct Chunker<'t> {
    shared: &'t Shared,
    ns: &'t str,
    key: &'t str,
    buf: Vec<u8>,
    /// Chunks written so far.
    seq: i32,
    /// Create-if-absent: the row is inserted only if there is none.
    absent: bool,
    /// Another writer's row was found at the first insert (create-if-absent).
    lost: bool,
    size: u64,
}

impl<'t> Chunker<'t> {
    pub(super) fn new(shared: &'t Shared, ns: &'t str, key: &'t str, absent: bool) -> Self {
        Chunker { shared, ns, key, buf: Vec::new(), seq: 0, absent, lost: false, size: 0 }
    }

    /// Takes `data`: a full chunk goes out when more comes, so the last
    /// chunk is never empty.
    pub(super) fn push(&mut self, conn: &mut Conn, data: &[u8]) -> std::result::Result<(), Fault> {
        let mut rest = data;
        while !rest.is_empty() {
            if self.buf.len() == CHUNK_LEN {
                self.write_chunk(conn)?;
            }
            let take = (CHUNK_LEN - self.buf.len()).min(rest.len());
            self.buf.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
        }
        self.size += data.len() as u64;
        Ok(())
    }

    /// Writes the full buffer as the next chunk; before the first, the row
    /// (a placeholder) and no old chunks, in the same exchange (a
    /// create-if-absent first learns whether its row went in).
    fn write_chunk(&mut self, conn: &mut Conn) -> std::result::Result<(), Fault> {
        self.write(conn, None).map_err(|(_, fault)| fault)
    }

    /// Sends the buffer as the next chunk (the row and no old chunks first,
    /// for the first), then the row's digest, size and chunk count when
    /// `last` is its digest, then `tail`: one exchange. On failure, the
    /// index of the step that failed (`tail` being the last) and why.
    fn write(
        &mut self,
        conn: &mut Conn,
        last: Option<(&Digest, Option<&str>)>,
    ) -> std::result::Result<(), (usize, Fault)> {
        let sql = |s: &str| self.shared.sql(s);
        let values = "INSERT INTO <stashes> (namespace, key, envelope, digest, size, created, chunks) \
             VALUES ($1, $2, ''::pg_catalog.bytea, ''::pg_catalog.bytea, 0, pg_catalog.now(), 0)";
        let texts = [
            sql(&format!("{values} ON CONFLICT (namespace, key) DO NOTHING")),
            sql(&format!(
                "{values} ON CONFLICT (namespace, key) DO UPDATE SET \
                 envelope = ''::pg_catalog.bytea, digest = ''::pg_catalog.bytea, size = 0, \
                 created = pg_catalog.now(), chunks = 0"
            )),
            sql("DELETE FROM <chunks> WHERE namespace = $1 AND key = $2"),
            sql("INSERT INTO <chunks> (namespace, key, seq, bytes) VALUES ($1, $2, $3, $4)"),
            sql("UPDATE <stashes> SET digest = $3, size = $4, chunks = $5, \
                 created = pg_catalog.now() WHERE namespace = $1 AND key = $2"),
        ];
        let st = conn.statements(&texts.iter().map(String::as_str).collect::<Vec<_>>());
        let st = st.map_err(|fault| (0, fault))?;
        let (ns, key) = (&self.ns, &self.key);
        let row: [&(dyn ToSql + Sync); 2] = [ns, key];
        if self.seq == 0 && self.absent && !self.lost {
            // A new row has no chunks (they reference it); another
            // writer's row must not get this one's chunks.
            let inserted = conn.pipeline(&[Step::Execute(&st[0], &row)], false)?;
            self.lost = inserted[0].count() == 0;
        }
        if self.lost {
            self.seq += 1;
            self.buf.clear();
            return Ok(());
        }
        let mut steps = Vec::new();
        if self.seq == 0 && !self.absent {
            steps.push(Step::Execute(&st[1], &row));
            steps.push(Step::Execute(&st[2], &row));
        }
        let (seq, bytes) = (self.seq, self.buf.as_slice());
        let chunk: [&(dyn ToSql + Sync); 4] = [ns, key, &seq, &bytes];
        if !bytes.is_empty() {
            steps.push(Step::Execute(&st[3], &chunk));
        }
        let chunks = if bytes.is_empty() { seq } else { seq + 1 };
        let size = i64::try_from(self.size).unwrap_or(i64::MAX);
        let digest = last.map(|(d, _)| d.as_bytes().to_vec()).unwrap_or_default();
        let update: [&(dyn ToSql + Sync); 5] = [ns, key, &digest, &size, &chunks];
        let mut commits = false;
        if let Some((_, tail)) = last {
            steps.push(Step::Execute(&st[4], &update));
            if let Some(tail) = tail {
                steps.push(Step::Simple(tail));
                commits = true;
            }
        }
        conn.pipeline(&steps, commits)?;
        self.seq = chunks;
        self.buf.clear();
        Ok(())
    }

    /// Writes the last chunk and the row's digest, size and chunk count,
    /// then `tail` (the transaction's `COMMIT`, when the save ends here), in
    /// one exchange. `Ok(false)` when a create-if-absent found another
    /// writer's row (nothing was written, nothing sent). On failure, the
    /// index of the step that failed (`tail`'s being the last) and why.
    pub(super) fn finish(
        mut self,
        conn: &mut Conn,
        digest: &Digest,
        tail: Option<&str>,
    ) -> std::result::Result<bool, Fault> {
        if self.lost {
            return Ok(false);
        }
        self.write(conn, Some((digest, tail))).map_err(|(_, fault)| fault)?;
        Ok(!self.lost)
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
            let last = self.next + 1 == self.chunks;
            let params: [&(dyn ToSql + Sync); 3] = [&self.ns, &self.key, &self.next];
            let mut steps = vec![Step::Query(stmt, &params)];
            if last {
                // The snapshot ends with the last chunk's read.
                steps.push(Step::Simple("ROLLBACK"));
            }
            let read = conn.pipeline(&steps, false).map_err(|(_, fault)| fault);
            let read = read.map(|replies| {
                replies.into_iter().next().and_then(|r| r.rows().into_iter().next())
            });
            if last && read.is_ok() {
                if let Some(conn) = self.client.take() {
                    self.shared.give_back(conn);
                }
            }
            match read {
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
