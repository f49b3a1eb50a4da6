//! Writing an envelope: in memory with [`encode`], or streaming with
//! [`EnvelopeWriter`].

use std::io::{self, Write};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

use sha2::{Digest as _, Sha256};

use super::header::Header;
use super::{MAX_PREFIX_LEN, TRAILER_HASHED, TRAILER_LEN, TRAILER_TAG};
use crate::digest::Digest;

/// Encodes a whole envelope in memory.
///
/// # Examples
///
/// ```
/// # use std::time::SystemTime;
/// # use safestash::{envelope::{encode, Header}, StashKey};
/// let h = Header::new(StashKey::new("k")?, "value", None, SystemTime::now())?;
/// assert!(encode(&h, b"1").starts_with(b"SAFESTASH 1\n{\"key\":\"k\""));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn encode(header: &Header, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 512);
    // Writing into a Vec cannot fail.
    let mut w = EnvelopeWriter::new(&mut out, header).expect("write to Vec");
    w.write_all(payload).expect("write to Vec");
    w.finish().expect("write to Vec");
    out
}

/// Writes an envelope in one pass: header on creation, payload through
/// [`Write`], trailer on [`finish`](EnvelopeWriter::finish).
///
/// It buffers itself, so small writes (as from `serde_json::to_writer`)
/// need no [`std::io::BufWriter`] around it, and it hashes the bytes as
/// they arrive, a block at a time while the block is still in the cache.
/// An envelope of up to 256 KiB reaches `inner` in a single `write`, as a
/// hand-written serialize-then-write would; a larger one goes out in
/// writes of 256 KiB, so the store can start their writeback while the
/// rest is still being serialized, and a stream larger than memory is
/// written with a bounded buffer whose bytes are still in the cache when
/// the kernel copies them. The first 256 KiB are hashed on the caller's
/// thread; past that, a helper thread hashes each written chunk while the
/// next is serialized (see `HELPER_FROM` in the source for the
/// measurements behind that).
///
/// # Examples
///
/// ```
/// use std::io::Write;
/// # use std::time::SystemTime;
/// # use safestash::{envelope::{decode, EnvelopeWriter, Header}, StashKey};
/// let h = Header::new(StashKey::new("k")?, "value", None, SystemTime::now())?;
/// let mut w = EnvelopeWriter::new(Vec::new(), &h)?;
/// w.write_all(b"[1,")?;
/// w.write_all(b"2]")?;
/// let done = w.finish()?;
/// assert_eq!(done.payload_len, 5);
/// assert_eq!(decode(&done.inner)?.digest, done.digest);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct EnvelopeWriter<W: Write> {
    inner: W,
    /// The hash of everything before `buf[buf_hashed..]`, while hashing is
    /// inline; once a [`Helper`] runs, the helper has it.
    hasher: Sha256,
    /// Past [`HELPER_FROM`] bytes, the thread that hashes written chunks.
    helper: Option<Helper>,
    /// Bytes accepted but not yet written.
    buf: Vec<u8>,
    /// How many bytes at the start of `buf` are hashed already.
    buf_hashed: usize,
    /// When `buf` reaches this length, the slow path runs: a block to hash
    /// or a chunk to write.
    mark: usize,
    /// Bytes written to `inner` so far (all before `buf`).
    flushed: u64,
    /// Length of the magic line and header.
    prefix_len: u64,
    /// How large `buf` may grow before it is written: [`WRITE_CHUNK`],
    /// then [`STREAM_CHUNK`] once a first chunk was written.
    chunk: usize,
}

/// Bytes hashed at a time while a chunk is filled: small enough to be
/// hashed while still in the L1/L2 cache, large enough that the check is
/// rare. Used until [`HELPER_FROM`].
const HASH_BLOCK: usize = 64 << 10;

/// Once this many bytes are written, a helper thread hashes each chunk
/// after it is written, while the caller's thread serializes the next one
/// into a second buffer: the buffers are swapped, never copied.
///
/// Measured on this project's 2-core machine (issue 16, alternating runs on
/// a quiet machine):
/// - a 1 MiB save, `bench_report`, eight runs each: 1.07-1.29 × the floor
///   (median 1.11) inline, 0.97-1.14 (median 1.05) with the helper from
///   here;
/// - a 128 MiB streaming save on a tmpfs, × a raw serialize-and-write,
///   medians of 15: 0.89 inline, 0.91 with one chunk per hand-off, 1.00
///   with batches of [`HELPER_BATCH`] (a hand-off may cost the other core a
///   wake-up);
/// - at 1 GiB: 0.84 inline and 1.06 batched on a tmpfs, 1.01 and 1.07 on
///   the disk.
///
/// With two busy-loop processes competing for the two cores (load 3), the
/// 128 MiB stream still measured 0.93 × raw against 0.85 inline (8
/// alternating rounds). An earlier helper that hashed *copies* of each
/// block had lost on a machine busy with other builds (load 3-7).
const HELPER_FROM: u64 = WRITE_CHUNK as u64;

/// Chunks handed over one at a time before batches start.
const HELPER_SINGLES: usize = 16;

/// Written chunks handed to the helper at a time, past the first
/// [`HELPER_SINGLES`]: each hand-off may wake it, and a wake-up costs a
/// cross-CPU interrupt.
const HELPER_BATCH: usize = 8;

/// Buffers made at most with a helper (of [`STREAM_CHUNK`] each): two
/// batches round the helper and one being filled. The hasher is faster
/// than the serializer, so more only use memory.
const HELPER_BUFFERS: usize = 3 * HELPER_BATCH;

/// The first write: an envelope up to this size goes out in one `write`;
/// a larger one in writes of [`STREAM_CHUNK`] from here on, so that the
/// store can start their writeback while the rest is serialized and hashed
/// (see `WRITEBACK_CHUNK` in the store). It was 4 MiB: measured on this
/// project's machine (issue 16, `bench_report`, six alternating runs), 1 MiB
/// saves went from 1.21-1.36 to 1.12-1.22 × the floor with 256 KiB (the
/// floor plus SHA-256 alone measured 1.14-1.30 in the same runs), 64 MiB
/// saves from 213-223 ms to 186-194 ms, and the writer's peak memory
/// from 6 to 2 MiB; 1 GiB streaming saves ran at the same speed.
const WRITE_CHUNK: usize = 256 << 10;

/// The writes of a stream past its first [`WRITE_CHUNK`]: small enough that
/// the buffer is still in the L2 cache when the kernel copies it into the
/// page cache. Measured on this project's machine (issue 16), a 1 GiB
/// streaming save spent 31 % of its CPU time in that copy with 4 MiB
/// writes (4.6 s of system time, against 1.0 s for the same JSON written
/// through a 64 KiB `BufWriter`).
const STREAM_CHUNK: usize = 256 << 10;

/// The helper thread that hashes a large envelope's chunks in order, and
/// the channels its buffers go round on.
#[derive(Debug)]
struct Helper {
    /// Batches of written chunks, to be hashed.
    to_hash: Sender<Vec<Vec<u8>>>,
    /// Batches of hashed chunks, emptied, to be filled again.
    hashed: Receiver<Vec<Vec<u8>>>,
    /// Written chunks not yet handed over.
    pending: Vec<Vec<u8>>,
    /// Empty buffers to fill.
    spare: Vec<Vec<u8>>,
    /// Buffers made so far (at most [`HELPER_BUFFERS`]).
    buffers: usize,
    /// Chunks handed over so far.
    handed: usize,
    /// The thread; it hands back the hash when `to_hash` closes.
    thread: JoinHandle<Sha256>,
}

/// The error when the helper thread is gone (it panicked).
fn helper_gone() -> io::Error {
    io::Error::other("the SHA-256 helper thread stopped")
}

impl Helper {
    /// Starts a helper thread that continues from `hasher`; `None` if no
    /// thread could be started (then hashing stays inline).
    fn start(hasher: &Sha256) -> Option<Helper> {
        let (to_hash, batches) = channel::<Vec<Vec<u8>>>();
        let (give_back, hashed) = channel::<Vec<Vec<u8>>>();
        let mut h = hasher.clone();
        let thread = std::thread::Builder::new()
            .name("safestash-sha256".into())
            .spawn(move || {
                for mut batch in batches {
                    for chunk in &mut batch {
                        h.update(&chunk[..]);
                        chunk.clear();
                    }
                    // The writer may be gone (an error); the chunks are freed.
                    let _ = give_back.send(batch);
                }
                h
            })
            .ok()?;
        let pending = Vec::with_capacity(HELPER_BATCH);
        Some(Helper { to_hash, hashed, pending, spare: Vec::new(), buffers: 1, handed: 0, thread })
    }

    /// Hands over the pending chunks.
    fn send(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.pending, Vec::with_capacity(HELPER_BATCH));
        self.to_hash.send(batch).map_err(|_| helper_gone())
    }

    /// Queues the written chunk `full` for hashing and returns an empty
    /// buffer to fill: one the thread has hashed, or a new one while fewer
    /// than [`HELPER_BUFFERS`] exist.
    fn swap(&mut self, full: Vec<u8>) -> io::Result<Vec<u8>> {
        let capacity = full.capacity();
        self.pending.push(full);
        self.handed += 1;
        // One at a time at first, so that a short stream's few chunks are
        // hashed while the next is serialized, then in batches.
        let batch = if self.handed <= HELPER_SINGLES { 1 } else { HELPER_BATCH };
        if self.pending.len() >= batch {
            self.send()?;
        }
        loop {
            if let Some(buf) = self.spare.pop() {
                return Ok(buf);
            }
            if let Ok(batch) = self.hashed.try_recv() {
                self.spare.extend(batch);
                continue;
            }
            if self.buffers < HELPER_BUFFERS {
                self.buffers += 1;
                return Ok(Vec::with_capacity(capacity));
            }
            // Every buffer is with the thread or pending: hand the pending
            // ones over too, so that there is something to wait for.
            self.send()?;
            let batch = self.hashed.recv().map_err(|_| helper_gone())?;
            self.spare.extend(batch);
        }
    }

    /// Waits for every chunk to be hashed and returns the hash.
    fn finish(mut self) -> io::Result<Sha256> {
        self.send()?;
        drop(self.to_hash);
        self.thread.join().map_err(|_| helper_gone())
    }
}

/// What [`EnvelopeWriter::finish`] hands back.
///
/// # Examples
///
/// ```
/// # use std::time::SystemTime;
/// # use safestash::{envelope::{EnvelopeWriter, Header}, StashKey};
/// let h = Header::new(StashKey::new("k")?, "value", None, SystemTime::now())?;
/// let done = EnvelopeWriter::new(Vec::new(), &h)?.finish()?;
/// assert_eq!(done.len, done.inner.len() as u64);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct Finished<W> {
    /// The writer, with the whole envelope written to it.
    pub inner: W,
    /// The digest written in the trailer.
    pub digest: Digest,
    /// Bytes written in all.
    pub len: u64,
    /// Bytes of payload.
    pub payload_len: u64,
}

impl<W: Write> EnvelopeWriter<W> {
    /// Writes the magic line and `header` to `inner`.
    ///
    /// # Errors
    ///
    /// The error of `inner`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::SystemTime;
    /// # use safestash::{envelope::{EnvelopeWriter, Header}, StashKey};
    /// let h = Header::new(StashKey::new("k")?, "value", None, SystemTime::now())?;
    /// let w = EnvelopeWriter::new(Vec::new(), &h)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(inner: W, header: &Header) -> io::Result<EnvelopeWriter<W>> {
        let prefix = header.encode_prefix();
        debug_assert!(prefix.len() <= MAX_PREFIX_LEN, "Header::new bounds the header");
        let mut buf = Vec::with_capacity(HASH_BLOCK.max(prefix.len() + TRAILER_LEN));
        buf.extend_from_slice(&prefix);
        let mut w = EnvelopeWriter {
            inner,
            hasher: Sha256::new(),
            helper: None,
            buf,
            buf_hashed: 0,
            mark: 0,
            flushed: 0,
            prefix_len: prefix.len() as u64,
            chunk: WRITE_CHUNK,
        };
        w.catch_up();
        Ok(w)
    }

    /// Hashes every whole block of `buf` not hashed yet and sets the next
    /// mark; with a helper, `buf` is hashed when it is written.
    fn catch_up(&mut self) {
        if self.helper.is_some() {
            self.mark = self.chunk;
            return;
        }
        let whole = (self.buf.len() - self.buf_hashed) / HASH_BLOCK * HASH_BLOCK;
        if whole > 0 {
            self.hasher.update(&self.buf[self.buf_hashed..self.buf_hashed + whole]);
            self.buf_hashed += whole;
        }
        self.mark = (self.buf_hashed + HASH_BLOCK).min(self.chunk);
    }

    #[cold]
    fn write_all_cold(&mut self, mut data: &[u8]) -> io::Result<()> {
        while self.buf.len() + data.len() >= self.chunk {
            let (now, rest) = data.split_at(self.chunk - self.buf.len());
            self.buf.extend_from_slice(now);
            data = rest;
            self.emit_buf()?;
            self.chunk = STREAM_CHUNK;
            self.catch_up();
        }
        self.buf.extend_from_slice(data);
        self.catch_up();
        Ok(())
    }

    /// Writes `buf` to `inner`, has the rest of it hashed, and empties it.
    fn emit_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.flushed += self.buf.len() as u64;
        match &mut self.helper {
            None => {
                self.hasher.update(&self.buf[self.buf_hashed..]);
                self.inner.write_all(&self.buf)?;
                self.buf.clear();
            }
            Some(helper) => {
                self.inner.write_all(&self.buf)?;
                let empty = helper.swap(std::mem::take(&mut self.buf))?;
                self.buf = empty;
            }
        }
        self.buf_hashed = 0;
        if self.helper.is_none() && self.flushed >= HELPER_FROM {
            // Everything written is hashed: the thread continues from here.
            self.helper = Helper::start(&self.hasher);
        }
        self.catch_up();
        Ok(())
    }

    /// Writes the trailer and hands the writer back with the digest.
    ///
    /// # Errors
    ///
    /// The error of `inner`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::SystemTime;
    /// # use safestash::{envelope::{EnvelopeWriter, Header}, StashKey};
    /// let h = Header::new(StashKey::new("k")?, "value", None, SystemTime::now())?;
    /// let done = EnvelopeWriter::new(Vec::new(), &h)?.finish()?;
    /// assert!(done.inner.ends_with(format!("sha256={}\n", done.digest).as_bytes()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn finish(mut self) -> io::Result<Finished<W>> {
        let written = self.flushed + self.buf.len() as u64;
        let payload_len = written - self.prefix_len;
        // The buffered tail, the trailer and its digest go out in one write.
        let mut tail = std::mem::take(&mut self.buf);
        let tail_start = tail.len();
        tail.extend_from_slice(TRAILER_TAG);
        // `{:020}` by hand: the 20 digits, zero-padded.
        let mut digits = [b'0'; 20];
        let mut n = payload_len;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        tail.extend_from_slice(&digits);
        tail.extend_from_slice(b" sha256=");
        debug_assert_eq!(tail.len() - tail_start, TRAILER_HASHED);
        let mut hasher = match self.helper.take() {
            None => self.hasher,
            Some(helper) => helper.finish()?,
        };
        hasher.update(&tail[self.buf_hashed..]);
        let digest = Digest::from_bytes(hasher.finalize().into());
        tail.extend_from_slice(&digest.hex());
        tail.push(b'\n');
        self.inner.write_all(&tail)?;
        self.inner.flush()?;
        Ok(Finished { inner: self.inner, digest, len: written + TRAILER_LEN as u64, payload_len })
    }
}

impl<W: Write> Write for EnvelopeWriter<W> {
    #[inline]
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.write_all(data)?;
        Ok(data.len())
    }

    // The serializer calls this once per token: the common case must be a
    // bounds check and a copy, inlined into the serializer.
    #[inline]
    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        if data.len() < self.mark - self.buf.len() {
            self.buf.extend_from_slice(data);
            Ok(())
        } else {
            self.write_all_cold(data)
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.emit_buf()?;
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::test_header as header;
    use crate::envelope::{TRAILER_LEN, decode};

    #[test]
    fn round_trips_and_lays_out_as_specified() {
        let bytes = encode(&header(), b"{\"a\":[1,2]}");
        let text = String::from_utf8(bytes.clone()).unwrap();
        let mut lines = text.split('\n');
        assert_eq!(lines.next(), Some("SAFESTASH 1"));
        assert_eq!(
            lines.next(),
            Some(
                r#"{"key":"k","kind":"value","created":"2026-11-18T11:06:40.123456789Z","origin":"job\n\"1\"","encoding":"json","writer":"safestash 0.1.0"}"#
            )
        );
        let trailer = &bytes[bytes.len() - TRAILER_LEN..];
        assert!(trailer.starts_with(b"\nSAFESTASH-END len=00000000000000000011 sha256="));
        let d = decode(&bytes).unwrap();
        assert_eq!(d.header, header());
        assert_eq!(d.payload, b"{\"a\":[1,2]}");
        assert_eq!(d.digest, Digest::of(&bytes[..bytes.len() - 65]));
    }

    #[test]
    fn any_chunking_writes_the_same_bytes() {
        let payload: Vec<u8> = (0..(HASH_BLOCK * 3 + 777)).map(|i| (i % 253) as u8).collect();
        let whole = encode(&header(), &payload);
        for step in [1, 7, 4096, HASH_BLOCK - 1, HASH_BLOCK, HASH_BLOCK + 1, payload.len()] {
            let mut w = EnvelopeWriter::new(Vec::new(), &header()).unwrap();
            for (i, chunk) in payload.chunks(step).enumerate() {
                w.write_all(chunk).unwrap();
                if i % 5 == 3 {
                    w.flush().unwrap(); // a flush mid-stream changes nothing
                }
            }
            let done = w.finish().unwrap();
            assert_eq!(done.inner, whole, "step {step}");
            assert_eq!(done.digest, Digest::of(&whole[..whole.len() - 65]));
        }
    }

    #[test]
    fn large_envelopes_go_out_in_chunks_with_the_same_digest() {
        let payload: Vec<u8> = (0..(WRITE_CHUNK * 2 + 12345)).map(|i| (i % 251) as u8).collect();
        let mut w = EnvelopeWriter::new(Vec::new(), &header()).unwrap();
        for chunk in payload.chunks(65536) {
            w.write_all(chunk).unwrap();
        }
        // One write of WRITE_CHUNK, then writes of STREAM_CHUNK.
        let prefix = header().encode_prefix().len();
        let streamed = (prefix + payload.len() - WRITE_CHUNK) / STREAM_CHUNK * STREAM_CHUNK;
        assert_eq!(w.flushed, (WRITE_CHUNK + streamed) as u64);
        let done = w.finish().unwrap();
        assert_eq!(done.digest, Digest::of(&done.inner[..done.inner.len() - 65]));
        assert_eq!(decode(&done.inner).unwrap().payload, &payload[..]);
        // One write larger than a chunk: the same bytes.
        let mut w = EnvelopeWriter::new(Vec::new(), &header()).unwrap();
        w.write_all(&payload).unwrap();
        assert_eq!(w.finish().unwrap().inner, done.inner);
    }

    #[test]
    fn a_long_stream_is_hashed_on_the_helper_to_the_same_digest() {
        // Past HELPER_FROM: ending with a batch not yet full, once before
        // every buffer is made, once long enough that the writer has to
        // wait for the helper to give some back.
        for chunks in [HELPER_SINGLES + 3, 2 * HELPER_BUFFERS + 3] {
            let len = HELPER_FROM as usize + chunks * STREAM_CHUNK + 12345;
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut want: Option<Vec<u8>> = None;
            for step in [len, 65536, 4099] {
                let mut w = EnvelopeWriter::new(Vec::new(), &header()).unwrap();
                for (i, chunk) in payload.chunks(step).enumerate() {
                    w.write_all(chunk).unwrap();
                    if i % 997 == 5 {
                        w.flush().unwrap(); // a short chunk for the helper
                    }
                }
                let helper = w.helper.as_ref().expect("the helper hashes a long stream");
                assert!(helper.buffers <= HELPER_BUFFERS, "{} buffers", helper.buffers);
                let done = w.finish().unwrap();
                let at = format!("{chunks} chunks, step {step}");
                assert_eq!(done.digest, Digest::of(&done.inner[..done.inner.len() - 65]), "{at}");
                assert_eq!(decode(&done.inner).unwrap().payload, &payload[..], "{at}");
                match &want {
                    None => want = Some(done.inner),
                    Some(w) => assert!(w == &done.inner, "{at}: other bytes"),
                }
            }
        }
    }
}
