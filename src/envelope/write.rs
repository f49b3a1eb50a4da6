//! Writing an envelope: in memory with [`encode`], or streaming with
//! [`EnvelopeWriter`].

use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, channel, sync_channel};

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
/// An envelope of up to 4 MiB reaches `inner` in a single `write`, as a
/// hand-written serialize-then-write would; a larger one goes out in
/// writes of 4 MiB, so a stream larger than memory is written with a
/// bounded buffer, and past its first 4 MiB it is hashed on a helper thread
/// (fed copies of 256 KiB blocks as they fill) while it is serialized.
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
    hasher: Hasher,
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
}

/// Bytes hashed at a time while a chunk is filled: small enough to be
/// hashed while still in the L1/L2 cache, large enough that the check is
/// rare.
const HASH_BLOCK: usize = 64 << 10;

/// The largest write: an envelope up to this size goes out in one `write`.
const WRITE_CHUNK: usize = 4 << 20;

/// After this many bytes, hashing moves to a helper thread, so that a large
/// stream is hashed on one core while it is serialized and written on
/// another. Below it the thread's start and hand-offs cost more than they
/// save: at 1 MiB on the 2-core machine of issue 16, a thread from 256 KiB
/// made saves 5-10 % slower than hashing inline (tmpfs, median of 60).
const HASH_THREAD_AFTER: u64 = WRITE_CHUNK as u64;

/// What the helper thread gets at a time: a copy of this much of the
/// buffer (copying costs about a twentieth of hashing).
const THREAD_BLOCK: usize = 256 << 10;

/// SHA-256, inline for small envelopes and on a helper thread for large ones.
#[derive(Debug)]
enum Hasher {
    Inline(Sha256),
    /// Copies of the buffer go to the helper on `chunks` and come back
    /// emptied on `spare` to be filled again: a few blocks allocated in all.
    Threaded {
        chunks: SyncSender<Vec<u8>>,
        spare: Receiver<Vec<u8>>,
        done: std::thread::JoinHandle<Sha256>,
    },
    /// After the helper thread failed.
    Gone,
}

impl Hasher {
    /// Starts a helper thread that continues from `h`; on failure to spawn,
    /// hashing stays inline.
    fn spawn(h: Sha256) -> Hasher {
        let (chunks, rx) = sync_channel::<Vec<u8>>(8);
        let (give_back, spare) = channel::<Vec<u8>>();
        // Kept in case the thread cannot start: then hashing stays inline.
        let backup = h.clone();
        let spawned =
            std::thread::Builder::new().name("safestash-sha256".into()).spawn(move || {
                let mut h = h;
                for mut chunk in rx {
                    h.update(&chunk);
                    chunk.clear();
                    // The writer may be gone already; the chunk is then freed.
                    let _ = give_back.send(chunk);
                }
                h
            });
        match spawned {
            Ok(done) => Hasher::Threaded { chunks, spare, done },
            Err(_) => Hasher::Inline(backup),
        }
    }

    fn finish(self, last: &[u8]) -> io::Result<[u8; 32]> {
        let mut h = match self {
            Hasher::Inline(h) => h,
            Hasher::Threaded { chunks, done, spare } => {
                drop(chunks);
                drop(spare);
                done.join().map_err(|_| io::Error::other("the hashing thread panicked"))?
            }
            Hasher::Gone => return Err(io::Error::other("the hashing thread stopped")),
        };
        h.update(last);
        Ok(h.finalize().into())
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
            hasher: Hasher::Inline(Sha256::new()),
            buf,
            buf_hashed: 0,
            mark: 0,
            flushed: 0,
            prefix_len: prefix.len() as u64,
        };
        w.catch_up();
        Ok(w)
    }

    /// Hands every whole block of `buf` not hashed yet to the hasher and
    /// sets the next mark.
    fn catch_up(&mut self) {
        let block = match self.hasher {
            Hasher::Threaded { .. } => THREAD_BLOCK,
            _ => HASH_BLOCK,
        };
        let whole = (self.buf.len() - self.buf_hashed) / block * block;
        if whole > 0 {
            self.hash(self.buf_hashed + whole);
        }
        let block = match self.hasher {
            Hasher::Threaded { .. } => THREAD_BLOCK,
            _ => HASH_BLOCK,
        };
        self.mark = (self.buf_hashed + block).min(WRITE_CHUNK);
    }

    /// Hashes `buf[buf_hashed..end]`: inline, or a copy of it on the
    /// helper thread, started once enough bytes went by.
    fn hash(&mut self, end: usize) {
        let range = self.buf_hashed..end;
        self.buf_hashed = end;
        if let Hasher::Inline(h) = &mut self.hasher {
            if self.flushed + (range.start as u64) < HASH_THREAD_AFTER {
                h.update(&self.buf[range]);
                return;
            }
            self.hasher = Hasher::spawn(h.clone());
        }
        if let Hasher::Inline(h) = &mut self.hasher {
            // The thread could not start.
            h.update(&self.buf[range]);
        } else if let Hasher::Threaded { chunks, spare, .. } = &self.hasher {
            let mut copy = spare.try_recv().unwrap_or_else(|_| Vec::with_capacity(THREAD_BLOCK));
            copy.extend_from_slice(&self.buf[range]);
            if chunks.send(copy).is_err() {
                self.hasher = Hasher::Gone;
            }
        }
    }

    #[cold]
    fn write_all_cold(&mut self, mut data: &[u8]) -> io::Result<()> {
        while self.buf.len() + data.len() >= WRITE_CHUNK {
            let (now, rest) = data.split_at(WRITE_CHUNK - self.buf.len());
            self.buf.extend_from_slice(now);
            data = rest;
            self.emit_buf()?;
        }
        self.buf.extend_from_slice(data);
        self.catch_up();
        Ok(())
    }

    /// Hashes the rest of `buf`, writes it to `inner` and empties it.
    fn emit_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.hash(self.buf.len());
        self.inner.write_all(&self.buf)?;
        self.flushed += self.buf.len() as u64;
        self.buf_hashed = 0;
        self.buf.clear();
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
        let digest = Digest::from_bytes(self.hasher.finish(&tail[self.buf_hashed..])?);
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
    fn large_envelopes_hash_on_a_thread_to_the_same_digest() {
        let payload: Vec<u8> =
            (0..(HASH_THREAD_AFTER as usize * 2 + 12345)).map(|i| (i % 251) as u8).collect();
        let mut w = EnvelopeWriter::new(Vec::new(), &header()).unwrap();
        for chunk in payload.chunks(65536) {
            w.write_all(chunk).unwrap();
        }
        assert!(matches!(w.hasher, Hasher::Threaded { .. }));
        let done = w.finish().unwrap();
        assert_eq!(done.digest, Digest::of(&done.inner[..done.inner.len() - 65]));
        assert_eq!(decode(&done.inner).unwrap().payload, &payload[..]);
        // One write larger than a chunk: the same bytes.
        let mut w = EnvelopeWriter::new(Vec::new(), &header()).unwrap();
        w.write_all(&payload).unwrap();
        assert_eq!(w.finish().unwrap().inner, done.inner);
    }
}
