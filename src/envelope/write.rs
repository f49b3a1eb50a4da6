//! Writing an envelope: in memory with [`encode`], or streaming with
//! [`EnvelopeWriter`].

use std::io::{self, Write};

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
/// It buffers 64 KiB itself: a small envelope reaches `inner` in a single
/// `write`, and small writes (as from `serde_json::to_writer`) need no
/// [`std::io::BufWriter`] around it.
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
    /// Bytes accepted but not yet hashed and written.
    buf: Vec<u8>,
    /// Bytes hashed (and written) so far.
    hashed: u64,
    /// Length of the magic line and header.
    prefix_len: u64,
}

/// The writer's buffer: small envelopes go out in one `write`, large ones
/// in writes of this size.
const WRITE_BUFFER: usize = 64 << 10;

/// After this many bytes, hashing moves to its own thread, so that a large
/// stream is hashed on one core while it is serialized and written on another.
const HASH_THREAD_AFTER: u64 = 256 << 10;

/// SHA-256, inline for small envelopes and on a helper thread for large ones.
#[derive(Debug)]
enum Hasher {
    Inline(Sha256),
    Threaded {
        chunks: std::sync::mpsc::SyncSender<Vec<u8>>,
        done: std::thread::JoinHandle<Sha256>,
    },
    /// Only while switching, or after the helper thread failed.
    Gone,
}

impl Hasher {
    fn update(&mut self, bytes: &[u8], total: u64) {
        if let Hasher::Inline(h) = self {
            if total < HASH_THREAD_AFTER {
                h.update(bytes);
                return;
            }
        }
        if let Hasher::Inline(_) = self {
            let Hasher::Inline(h) = std::mem::replace(self, Hasher::Gone) else { unreachable!() };
            let (chunks, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(16);
            let spawned =
                std::thread::Builder::new().name("safestash-sha256".into()).spawn(move || {
                    let mut h = h;
                    for chunk in rx {
                        h.update(&chunk);
                    }
                    h
                });
            *self = match spawned {
                Ok(done) => Hasher::Threaded { chunks, done },
                Err(_) => Hasher::Gone,
            };
        }
        if let Hasher::Threaded { chunks, .. } = self {
            if chunks.send(bytes.to_vec()).is_err() {
                *self = Hasher::Gone;
            }
        }
    }

    fn finish(self, last: &[u8]) -> io::Result<[u8; 32]> {
        let mut h = match self {
            Hasher::Inline(h) => h,
            Hasher::Threaded { chunks, done } => {
                drop(chunks);
                done.join().map_err(|_| io::Error::other("the hashing thread panicked"))?
            }
            Hasher::Gone => return Err(io::Error::other("the hashing thread could not run")),
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
        let mut buf = Vec::with_capacity(WRITE_BUFFER.max(prefix.len()));
        buf.extend_from_slice(&prefix);
        Ok(EnvelopeWriter {
            inner,
            hasher: Hasher::Inline(Sha256::new()),
            buf,
            hashed: 0,
            prefix_len: prefix.len() as u64,
        })
    }

    /// Hashes and writes `bytes`.
    fn emit(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hasher.update(bytes, self.hashed);
        self.hashed += bytes.len() as u64;
        self.inner.write_all(bytes)
    }

    #[cold]
    fn write_all_cold(&mut self, data: &[u8]) -> io::Result<()> {
        self.flush_buf()?;
        if data.len() >= WRITE_BUFFER {
            self.emit(data)
        } else {
            self.buf.extend_from_slice(data);
            Ok(())
        }
    }

    fn flush_buf(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let buf = std::mem::take(&mut self.buf);
            let result = self.emit(&buf);
            self.buf = buf;
            self.buf.clear();
            result?;
        }
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
        let mut trailer = Vec::with_capacity(TRAILER_LEN);
        trailer.extend_from_slice(TRAILER_TAG);
        let written = self.hashed + self.buf.len() as u64;
        let payload_len = written - self.prefix_len;
        trailer.extend_from_slice(format!("{payload_len:020} sha256=").as_bytes());
        debug_assert_eq!(trailer.len(), TRAILER_HASHED);
        // The buffered tail, the trailer and its digest go out in one write.
        let mut tail = std::mem::take(&mut self.buf);
        tail.extend_from_slice(&trailer);
        let digest = Digest::from_bytes(self.hasher.finish(&tail)?);
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
        if data.len() <= WRITE_BUFFER - self.buf.len() {
            self.buf.extend_from_slice(data);
            Ok(())
        } else {
            self.write_all_cold(data)
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_buf()?;
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
    }
}
