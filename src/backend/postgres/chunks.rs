//! Envelopes over [`CHUNK_LEN`]: streamed into rows of `safestash_chunks`
//! as a save writes them, read back one chunk at a time in one snapshot.

use std::io::{self, Cursor, Read, Write};
use std::sync::Arc;

use tokio_postgres::Statement;

use super::conn::{Conn, Fault, Tx};
use super::{CHUNK_LEN, Postgres, Shared};
use crate::backend::Fetched;
use crate::digest::Digest;
use crate::error::Result;
use crate::key::StashKey;

impl Postgres {
    /// A chunked envelope, read in one snapshot, a chunk at a time.
    pub(super) fn get_chunked(&self, key: &StashKey) -> Result<Option<Fetched>> {
        let shared = &self.shared;
        let (conn, opened) = self.attempt(self.deadline(false), |conn| {
            conn.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
            let row = conn.query_opt(
                &shared.sql(
                    "SELECT s.chunks, s.envelope, \
                       (SELECT COALESCE(pg_catalog.sum(pg_catalog.length(c.bytes)), 0)::pg_catalog.int8 \
                        FROM <chunks> c WHERE c.namespace = s.namespace AND c.key = s.key) \
                     FROM <stashes> s WHERE s.namespace = $1 AND s.key = $2",
                ),
                &[&self.ns, &key.as_str()],
            )?;
            let stmt = conn.prepare(&shared.sql(
                "SELECT bytes FROM <chunks> WHERE namespace = $1 AND key = $2 AND seq = $3",
            ))?;
            Ok(row.map(|r| (r.get::<_, i32>(0), r.get::<_, Vec<u8>>(1), r.get::<_, i64>(2), stmt)))
        })?;
        let found = match opened {
            Ok(found) => found,
            Err(e) => {
                // The snapshot's transaction goes with the connection.
                drop(conn);
                return Err(self.fail("load", Some(key))(e));
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

/// The sink a save streams its envelope into: up to [`CHUNK_LEN`] it is
/// kept for one inline row; past it, it goes out in chunk rows as it comes.
pub(super) struct Chunker<'t, 'c> {
    tx: &'t mut Tx<'c>,
    shared: &'t Shared,
    ns: &'t str,
    key: &'t str,
    buf: Vec<u8>,
    /// Chunks written so far.
    seq: i32,
    /// The old envelope has chunks still to remove.
    had_chunks: bool,
    /// Create-if-absent: the row is inserted only if there is none.
    absent: bool,
    /// Another writer's row was found at the first insert (create-if-absent).
    lost: bool,
    size: u64,
    insert: Option<Statement>,
    /// The server's error, when a statement failed (the transaction is lost).
    pub(super) failed: Option<Fault>,
}

impl<'t, 'c> Chunker<'t, 'c> {
    pub(super) fn new(
        tx: &'t mut Tx<'c>,
        shared: &'t Shared,
        ns: &'t str,
        key: &'t str,
        had_chunks: bool,
        absent: bool,
    ) -> Self {
        Chunker {
            tx,
            shared,
            ns,
            key,
            buf: Vec::new(),
            seq: 0,
            had_chunks,
            absent,
            lost: false,
            size: 0,
            insert: None,
            failed: None,
        }
    }

    fn drop_old_chunks(&mut self) -> std::result::Result<(), Fault> {
        if std::mem::take(&mut self.had_chunks) {
            self.tx.execute(
                &self.shared.sql("DELETE FROM <chunks> WHERE namespace = $1 AND key = $2"),
                &[&self.ns, &self.key],
            )?;
        }
        Ok(())
    }

    /// What an insert of the row does when a row is there: replace it, or
    /// (create-if-absent) nothing, which the row count then tells.
    fn on_conflict(&self, update: &str) -> String {
        if self.absent {
            "ON CONFLICT (namespace, key) DO NOTHING".to_owned()
        } else {
            format!("ON CONFLICT (namespace, key) DO UPDATE SET {update}")
        }
    }

    /// Writes the full buffer as the next chunk; before the first, the row
    /// (a placeholder until [`finish`](Self::finish)) and no old chunks.
    fn write_chunk(&mut self) -> std::result::Result<(), Fault> {
        if self.lost {
            return Ok(());
        }
        if self.insert.is_none() {
            let sql = format!(
                "INSERT INTO <stashes> (namespace, key, envelope, digest, size, created, chunks) \
                 VALUES ($1, $2, ''::pg_catalog.bytea, ''::pg_catalog.bytea, 0, pg_catalog.now(), 0) {}",
                self.on_conflict(
                    "envelope = ''::pg_catalog.bytea, digest = ''::pg_catalog.bytea, size = 0, \
                     created = pg_catalog.now(), chunks = 0"
                )
            );
            let inserted = self.tx.execute(&self.shared.sql(&sql), &[&self.ns, &self.key])?;
            if inserted == 0 {
                self.lost = true;
                return Ok(());
            }
            self.drop_old_chunks()?;
            self.insert = Some(self.tx.prepare(&self.shared.sql(
                "INSERT INTO <chunks> (namespace, key, seq, bytes) VALUES ($1, $2, $3, $4)",
            ))?);
        }
        if let Some(insert) = &self.insert {
            let insert = insert.clone();
            self.tx.execute(&insert, &[&self.ns, &self.key, &self.seq, &self.buf.as_slice()])?;
        }
        self.seq += 1;
        self.buf.clear();
        Ok(())
    }

    /// Writes what is left: the whole envelope in its row, or the last
    /// chunk and the row's digest, size and chunk count. `false` when a
    /// create-if-absent found another writer's row (nothing was written).
    pub(super) fn finish(mut self, digest: &Digest) -> std::result::Result<bool, Fault> {
        let size = i64::try_from(self.size).unwrap_or(i64::MAX);
        let digest = &digest.as_bytes()[..];
        if self.insert.is_none() && !self.lost {
            self.drop_old_chunks()?;
            let sql = format!(
                "INSERT INTO <stashes> (namespace, key, envelope, digest, size, created, chunks) \
                 VALUES ($1, $2, $3, $4, $5, pg_catalog.now(), 0) {}",
                self.on_conflict(
                    "envelope = EXCLUDED.envelope, digest = EXCLUDED.digest, size = EXCLUDED.size, \
                     created = EXCLUDED.created, chunks = 0"
                )
            );
            let inserted = self.tx.execute(
                &self.shared.sql(&sql),
                &[&self.ns, &self.key, &self.buf.as_slice(), &digest, &size],
            )?;
            return Ok(inserted == 1);
        }
        if !self.buf.is_empty() {
            self.write_chunk()?;
        }
        if self.lost {
            return Ok(false);
        }
        self.tx.execute(
            &self.shared.sql(
                "UPDATE <stashes> SET digest = $3, size = $4, chunks = $5, created = pg_catalog.now() \
                 WHERE namespace = $1 AND key = $2",
            ),
            &[&self.ns, &self.key, &digest, &size, &self.seq],
        )?;
        Ok(true)
    }
}

impl Write for Chunker<'_, '_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.failed.is_some() {
            return Err(io::Error::other("the save's transaction failed"));
        }
        let mut rest = data;
        while !rest.is_empty() {
            // A full buffer goes out only when more comes: an envelope of
            // exactly CHUNK_LEN stays inline.
            if self.buf.len() == CHUNK_LEN {
                if let Err(e) = self.write_chunk() {
                    self.failed = Some(e);
                    return Err(io::Error::other("the server refused a chunk of the envelope"));
                }
            }
            let take = (CHUNK_LEN - self.buf.len()).min(rest.len());
            self.buf.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
        }
        self.size += data.len() as u64;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
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
            match conn.query_opt(stmt, &[&self.ns, &self.key, &self.next]) {
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
