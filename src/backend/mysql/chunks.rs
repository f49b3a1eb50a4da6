//! Envelopes in rows: one inline row up to the store's chunk length, else
//! a row and its chunk rows, streamed in by the save's transaction and
//! read back one chunk at a time in one snapshot.

use std::io::{self, Cursor, Read, Write};
use std::sync::Arc;

use super::conn::{Conn, Fault};
use super::{Mysql, Shared};
use crate::backend::Fetched;
use crate::digest::Digest;
use crate::error::{BackendOp, Result};
use crate::key::StashKey;

/// Duplicate entry for a key: another writer's row is there.
const DUP_ENTRY: u16 = 1062;

/// The sink a save streams its envelope into: up to the chunk length it
/// is kept for one inline row; past it, it goes out in chunk rows as it
/// comes, all in the save's transaction.
pub(super) struct Chunker<'t> {
    conn: &'t mut Conn,
    ns: &'t str,
    key: &'t str,
    chunk_len: usize,
    buf: Vec<u8>,
    /// Chunks written so far.
    seq: i32,
    /// A row is there (locked `FOR UPDATE`): it is updated, not inserted.
    exists: bool,
    /// The old envelope has chunks still to remove.
    had_chunks: bool,
    /// The row was written (the placeholder of a chunked envelope).
    started: bool,
    /// Another writer's row was found at the insert (create-if-absent).
    pub(super) lost: bool,
    size: u64,
    /// The server's error, when a statement failed.
    pub(super) failed: Option<Fault>,
}

impl<'t> Chunker<'t> {
    pub(super) fn new(
        conn: &'t mut Conn,
        shared: &Shared,
        ns: &'t str,
        key: &'t str,
        exists: bool,
        had_chunks: bool,
    ) -> Self {
        Chunker {
            conn,
            ns,
            key,
            chunk_len: shared.chunk_len,
            buf: Vec::new(),
            seq: 0,
            exists,
            had_chunks,
            started: false,
            lost: false,
            size: 0,
            failed: None,
        }
    }

    fn drop_old_chunks(&mut self) -> Result<(), Fault> {
        if std::mem::take(&mut self.had_chunks) {
            self.conn.exec_drop(
                "DELETE FROM safestash_chunks WHERE namespace = ? AND `key` = ?",
                (self.ns, self.key),
            )?;
        }
        Ok(())
    }

    /// Writes the row: an update of the locked row, or an insert, which a
    /// concurrent writer's row refuses (`lost`).
    fn write_row(
        &mut self,
        envelope: &[u8],
        digest: &[u8],
        size: i64,
        chunks: i32,
    ) -> Result<(), Fault> {
        if self.exists {
            self.conn.exec_drop(
                "UPDATE safestash_stashes SET envelope = ?, digest = ?, size = ?, chunks = ?, \
                 created = UTC_TIMESTAMP(6) WHERE namespace = ? AND `key` = ?",
                (envelope, digest, size, chunks, self.ns, self.key),
            )?;
            return Ok(());
        }
        let inserted = self.conn.exec_drop(
            "INSERT INTO safestash_stashes (namespace, `key`, envelope, digest, size, created, chunks) \
             VALUES (?, ?, ?, ?, ?, UTC_TIMESTAMP(6), ?)",
            (self.ns, self.key, envelope, digest, size, chunks),
        );
        match inserted {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(DUP_ENTRY) => {
                self.lost = true;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Writes the full buffer as the next chunk; before the first, the row
    /// (a placeholder until [`finish`](Self::finish)) and no old chunks.
    fn write_chunk(&mut self) -> Result<(), Fault> {
        if self.lost {
            return Ok(());
        }
        if !self.started {
            self.started = true;
            self.write_row(b"", b"", 0, 0)?;
            if self.lost {
                return Ok(());
            }
            self.exists = true;
            self.drop_old_chunks()?;
        }
        self.conn.exec_drop(
            "INSERT INTO safestash_chunks (namespace, `key`, seq, bytes) VALUES (?, ?, ?, ?)",
            (self.ns, self.key, self.seq, self.buf.as_slice()),
        )?;
        self.seq += 1;
        self.buf.clear();
        Ok(())
    }

    /// Writes what is left: the whole envelope in its row, or the last
    /// chunk and the row's digest, size and chunk count. `false` when a
    /// create-if-absent found another writer's row (nothing was written).
    pub(super) fn finish(mut self, digest: &Digest) -> Result<bool, Fault> {
        let size = i64::try_from(self.size).unwrap_or(i64::MAX);
        let digest = &digest.as_bytes()[..];
        if !self.started {
            self.drop_old_chunks()?;
            let envelope = std::mem::take(&mut self.buf);
            self.write_row(&envelope, digest, size, 0)?;
            return Ok(!self.lost);
        }
        if !self.buf.is_empty() {
            self.write_chunk()?;
        }
        if self.lost {
            return Ok(false);
        }
        self.conn.exec_drop(
            "UPDATE safestash_stashes SET digest = ?, size = ?, chunks = ? \
             WHERE namespace = ? AND `key` = ?",
            (digest, size, self.seq, self.ns, self.key),
        )?;
        Ok(true)
    }
}

impl Write for Chunker<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.failed.is_some() {
            return Err(io::Error::other("the save's transaction failed"));
        }
        let mut rest = data;
        while !rest.is_empty() {
            // A full buffer goes out only when more comes: an envelope of
            // exactly the chunk length stays inline.
            if self.buf.len() == self.chunk_len {
                if let Err(e) = self.write_chunk() {
                    self.failed = Some(e);
                    return Err(io::Error::other("the server refused a chunk of the envelope"));
                }
            }
            let take = (self.chunk_len - self.buf.len()).min(rest.len());
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
/// goes back to the pool at the end.
pub(super) struct ChunkReader {
    pub(super) conn: Option<Conn>,
    pub(super) shared: Arc<Shared>,
    pub(super) ns: String,
    pub(super) key: String,
    pub(super) next: i32,
    pub(super) chunks: i32,
    pub(super) cur: Vec<u8>,
    pub(super) at: usize,
}

impl ChunkReader {
    /// Ends the snapshot and returns the connection.
    pub(super) fn end(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            if conn.inherited() {
                // A forked child's copy of its parent's session.
                return conn.abandon();
            }
            conn.rollback();
            self.shared.pool.give_back(conn);
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.cur.len() {
            let Some(conn) = self.conn.as_mut() else { return Ok(0) };
            if conn.inherited() {
                self.end();
                return Err(io::Error::other(
                    "the load's connection belongs to the parent process this one was forked from",
                ));
            }
            if self.next >= self.chunks {
                self.end();
                return Ok(0);
            }
            conn.start_call();
            let row: Result<Option<Vec<u8>>, Fault> = conn.exec_first(
                "SELECT bytes FROM safestash_chunks WHERE namespace = ? AND `key` = ? AND seq = ?",
                (self.ns.as_str(), self.key.as_str(), self.next),
            );
            match row {
                Ok(Some(bytes)) => {
                    self.cur = bytes;
                    self.at = 0;
                    self.next += 1;
                }
                // A missing chunk: the envelope ends short, which the
                // store's verification reports as truncated.
                Ok(None) => self.next = self.chunks,
                Err(e) => {
                    let timed_out = e.timed_out();
                    if let Some(conn) = self.conn.take() {
                        drop(conn);
                    }
                    return Err(if timed_out {
                        io::Error::new(
                            io::ErrorKind::TimedOut,
                            "timed out: the server did not answer within `timeout` while a \
                             chunk was read",
                        )
                    } else {
                        match e {
                            Fault::My(e) => io::Error::other(e),
                            Fault::Locked => io::Error::other("locked"),
                        }
                    });
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

/// A chunked envelope, read in one snapshot, a chunk at a time.
pub(super) fn get_chunked(store: &Mysql, key: &StashKey) -> Result<Option<Fetched>> {
    type Head = (i32, Vec<u8>, i64);
    let (conn, opened) = store.attempt(|c| {
        c.multi(
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ; \
             START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY",
        )?;
        c.exec_first::<Head, _>(
            "SELECT s.chunks, s.envelope, \
               (SELECT CAST(COALESCE(SUM(LENGTH(c.bytes)), 0) AS SIGNED) FROM safestash_chunks c \
                WHERE c.namespace = s.namespace AND c.`key` = s.`key`) \
             FROM safestash_stashes s WHERE s.namespace = ? AND s.`key` = ?",
            (store.ns.as_str(), key.as_str()),
        )
    })?;
    let found = match opened {
        Ok(found) => found,
        Err(e) => {
            drop(conn);
            return Err(store.fail(BackendOp::Load, Some(key))(e));
        }
    };
    let mut reader = ChunkReader {
        conn: Some(conn),
        shared: store.shared.clone(),
        ns: store.ns.clone(),
        key: key.as_str().to_owned(),
        next: 0,
        chunks: 0,
        cur: Vec::new(),
        at: 0,
    };
    let Some((chunks, inline, total)) = found else {
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
    Ok(Some(Fetched { len: u64::try_from(total).unwrap_or(0), reader: Box::new(reader) }))
}
