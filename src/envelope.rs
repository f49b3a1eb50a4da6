//! The on-disk envelope, format version 1: encoding and decoding of bytes.
//!
//! This module knows bytes, not files. The exact layout is specified in
//! `docs/FORMAT.md`; in short:
//!
//! ```text
//! SAFESTASH 1\n
//! {"key":…,"kind":…,"created":…,"origin":…,"encoding":"json","writer":…}\n
//! <payload>
//! \nSAFESTASH-END len=<20 digits> sha256=<64 hex>\n
//! ```
//!
//! The SHA-256 covers every byte before its own 64 digits.
//!
//! # Examples
//!
//! ```
//! use std::time::SystemTime;
//! use safestash::envelope::{decode, encode, Header};
//! use safestash::StashKey;
//!
//! let header = Header::new(StashKey::new("k")?, "value", Some("job-1"), SystemTime::now())?;
//! let bytes = encode(&header, br#"{"a":1}"#);
//! let decoded = decode(&bytes)?;
//! assert_eq!(decoded.payload, br#"{"a":1}"#);
//! assert_eq!(decoded.header.origin(), Some("job-1"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::error::{Corruption, Error};
use crate::key::StashKey;

/// The first bytes of every envelope: the magic and the space before the version.
///
/// # Examples
///
/// ```
/// assert!(safestash::envelope::encode(
///     &safestash::envelope::Header::new(safestash::StashKey::new("k").unwrap(), "value", None, std::time::SystemTime::now()).unwrap(),
///     b"1",
/// ).starts_with(safestash::envelope::MAGIC));
/// ```
pub const MAGIC: &[u8; 10] = b"SAFESTASH ";
/// The format version this build writes.
///
/// # Examples
///
/// ```
/// assert_eq!(safestash::envelope::VERSION, 1);
/// ```
pub const VERSION: u32 = 1;
/// The fixed length of the trailer.
///
/// # Examples
///
/// ```
/// assert_eq!(safestash::envelope::TRAILER_LEN, 112);
/// ```
pub const TRAILER_LEN: usize = 112;
/// The longest header line, its line feed included.
///
/// # Examples
///
/// ```
/// assert_eq!(safestash::envelope::MAX_HEADER_LEN, 8192);
/// ```
pub const MAX_HEADER_LEN: usize = 8192;
/// The longest `kind` label, in bytes.
///
/// # Examples
///
/// ```
/// assert_eq!(safestash::envelope::MAX_KIND_LEN, 64);
/// ```
pub const MAX_KIND_LEN: usize = 64;
/// The longest `origin`, in bytes.
///
/// # Examples
///
/// ```
/// assert_eq!(safestash::envelope::MAX_ORIGIN_LEN, 1024);
/// ```
pub const MAX_ORIGIN_LEN: usize = 1024;
/// The longest `writer`, in bytes.
///
/// # Examples
///
/// ```
/// assert_eq!(safestash::envelope::MAX_WRITER_LEN, 64);
/// ```
pub const MAX_WRITER_LEN: usize = 64;

const TRAILER_TAG: &[u8] = b"\nSAFESTASH-END len=";
/// Bytes of the trailer before the digest digits.
const TRAILER_HASHED: usize = 47;
/// The shortest possible envelope: `SAFESTASH 1\n`, an empty header line, the trailer.
const MIN_LEN: usize = MAGIC.len() + 2 + 1 + TRAILER_LEN;
/// The longest magic-and-version line: `SAFESTASH ` and five digits and `\n`.
const MAX_VERSION_LINE: usize = MAGIC.len() + 5 + 1;
/// How many bytes from the start of a file hold the magic line and the header.
///
/// # Examples
///
/// ```
/// assert_eq!(safestash::envelope::MAX_PREFIX_LEN, 10 + 5 + 1 + 8192);
/// ```
pub const MAX_PREFIX_LEN: usize = MAX_VERSION_LINE + MAX_HEADER_LEN;
const WRITER: &str = concat!("safestash ", env!("CARGO_PKG_VERSION"));
/// 10000-01-01T00:00:00Z, the first instant RFC 3339 cannot write.
const MAX_UNIX_SECS: u64 = 253_402_300_800;

/// How a payload is encoded. Version 1 knows one encoding.
///
/// # Examples
///
/// ```
/// assert_eq!(safestash::envelope::Encoding::Json.as_str(), "json");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Encoding {
    /// One JSON value, as `serde_json` writes it.
    Json,
}

impl Encoding {
    /// The name written in the header.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(safestash::envelope::Encoding::Json.to_string(), "json");
    /// ```
    pub fn as_str(&self) -> &'static str {
        match self {
            Encoding::Json => "json",
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The person-readable header of an envelope.
///
/// # Examples
///
/// ```
/// use std::time::SystemTime;
/// use safestash::envelope::Header;
/// use safestash::StashKey;
///
/// let h = Header::new(StashKey::new("k")?, "field-dictionary", None, SystemTime::now())?;
/// assert_eq!(h.kind(), "field-dictionary");
/// assert!(h.writer().starts_with("safestash "));
/// assert!(Header::new(StashKey::new("k")?, "no spaces", None, SystemTime::now()).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    key: StashKey,
    kind: String,
    created: SystemTime,
    origin: Option<String>,
    encoding: Encoding,
    writer: String,
}

impl Header {
    /// A header for a JSON payload written now by this library.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOption`] when `kind` is not 1–64 bytes of
    /// `[A-Za-z0-9._:/-]`, `origin` is longer than 1024 bytes, or `created`
    /// is before 1970 or after 9999.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::SystemTime;
    /// # use safestash::{envelope::Header, StashKey};
    /// let h = Header::new(StashKey::new("k")?, "value", Some("job"), SystemTime::now())?;
    /// assert_eq!(h.key().as_str(), "k");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(
        key: StashKey,
        kind: &str,
        origin: Option<&str>,
        created: SystemTime,
    ) -> Result<Header, Error> {
        check_kind(kind)?;
        if let Some(origin) = origin {
            check_origin(origin)?;
        }
        check_created(created)?;
        Ok(Header {
            key,
            kind: kind.to_owned(),
            created,
            origin: origin.map(str::to_owned),
            encoding: Encoding::Json,
            writer: WRITER.to_owned(),
        })
    }

    /// The key the stash was written for.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::SystemTime;
    /// # use safestash::{envelope::Header, StashKey};
    /// let h = Header::new(StashKey::new("k")?, "value", None, SystemTime::now())?;
    /// assert_eq!(h.key().as_str(), "k");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn key(&self) -> &StashKey {
        &self.key
    }

    /// The payload's kind label.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::SystemTime;
    /// # use safestash::{envelope::Header, StashKey};
    /// let h = Header::new(StashKey::new("k")?, "rows", None, SystemTime::now())?;
    /// assert_eq!(h.kind(), "rows");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// When the stash was written.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::SystemTime;
    /// # use safestash::{envelope::Header, StashKey};
    /// let now = SystemTime::now();
    /// let h = Header::new(StashKey::new("k")?, "value", None, now)?;
    /// assert_eq!(h.created(), now);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn created(&self) -> SystemTime {
        self.created
    }

    /// Who or what wrote the stash, if the writer said.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::SystemTime;
    /// # use safestash::{envelope::Header, StashKey};
    /// let h = Header::new(StashKey::new("k")?, "value", Some("upload-7f"), SystemTime::now())?;
    /// assert_eq!(h.origin(), Some("upload-7f"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }

    /// How the payload is encoded.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::SystemTime;
    /// # use safestash::{StashKey, envelope::{Encoding, Header}};
    /// let h = Header::new(StashKey::new("k")?, "value", None, SystemTime::now())?;
    /// assert_eq!(h.encoding(), Encoding::Json);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// The library and version that wrote the stash (informative only).
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::SystemTime;
    /// # use safestash::{envelope::Header, StashKey};
    /// let h = Header::new(StashKey::new("k")?, "value", None, SystemTime::now())?;
    /// assert!(h.writer().starts_with("safestash "));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn writer(&self) -> &str {
        &self.writer
    }

    /// The magic line and header line, as written at the start of a file.
    fn encode_prefix(&self) -> Vec<u8> {
        let wire = WireHeader {
            key: self.key.as_str().to_owned(),
            kind: self.kind.clone(),
            created: humantime::format_rfc3339_nanos(self.created).to_string(),
            origin: self.origin.clone(),
            encoding: self.encoding.as_str().to_owned(),
            writer: self.writer.clone(),
        };
        let mut out = Vec::with_capacity(MAGIC.len() + 2 + 256);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(VERSION.to_string().as_bytes());
        out.push(b'\n');
        // Serializing strings into a Vec cannot fail.
        serde_json::to_writer(&mut out, &wire).expect("header serializes");
        out.push(b'\n');
        out
    }
}

fn invalid(field: &'static str, value: &str, rule: &'static str) -> Error {
    Error::InvalidOption { field, value: value.to_owned(), rule }
}

pub(crate) fn check_kind(kind: &str) -> Result<(), Error> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "._:/-".contains(c);
    if kind.is_empty() || kind.len() > MAX_KIND_LEN || !kind.chars().all(ok_char) {
        return Err(invalid("kind", kind, "1 to 64 bytes of [A-Za-z0-9._:/-]"));
    }
    Ok(())
}

pub(crate) fn check_origin(origin: &str) -> Result<(), Error> {
    if origin.len() > MAX_ORIGIN_LEN {
        return Err(invalid("origin", origin, "at most 1024 bytes"));
    }
    Ok(())
}

fn check_created(created: SystemTime) -> Result<(), Error> {
    match created.duration_since(UNIX_EPOCH) {
        Ok(d) if d < Duration::from_secs(MAX_UNIX_SECS) => Ok(()),
        _ => Err(invalid("created", &format!("{created:?}"), "a time in the years 1970 to 9999")),
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireHeader {
    key: String,
    kind: String,
    created: String,
    // `deserialize_with` makes the member required even though it may be null.
    #[serde(deserialize_with = "Option::deserialize")]
    origin: Option<String>,
    encoding: String,
    writer: String,
}

impl WireHeader {
    fn validate(self) -> Result<Header, String> {
        let key = StashKey::new(self.key).map_err(|e| e.to_string())?;
        check_kind(&self.kind).map_err(|e| e.to_string())?;
        if let Some(origin) = &self.origin {
            check_origin(origin).map_err(|e| e.to_string())?;
        }
        let created = humantime::parse_rfc3339(&self.created)
            .map_err(|e| format!("invalid created time {:?}: {e}", self.created))?;
        check_created(created).map_err(|e| e.to_string())?;
        let encoding = match self.encoding.as_str() {
            "json" => Encoding::Json,
            other => return Err(format!("unknown encoding {other:?}")),
        };
        if self.writer.len() > MAX_WRITER_LEN {
            return Err("writer is longer than 64 bytes".to_owned());
        }
        Ok(Header {
            key,
            kind: self.kind,
            created,
            origin: self.origin,
            encoding,
            writer: self.writer,
        })
    }
}

/// Why bytes do not decode as an envelope.
///
/// # Examples
///
/// ```
/// use safestash::envelope::{decode, DecodeError};
/// use safestash::Corruption;
///
/// assert_eq!(decode(b"").unwrap_err(), DecodeError::Corrupt(Corruption::Truncated { len: 0 }));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes are damaged or not an envelope.
    #[error("{0}")]
    Corrupt(Corruption),
    /// The bytes are an intact envelope of a version this build cannot read.
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u32),
}

impl From<Corruption> for DecodeError {
    fn from(c: Corruption) -> DecodeError {
        DecodeError::Corrupt(c)
    }
}

/// A verified envelope.
///
/// # Examples
///
/// ```
/// # use std::time::SystemTime;
/// # use safestash::{envelope::{decode, encode, Header}, StashKey};
/// let h = Header::new(StashKey::new("k")?, "value", None, SystemTime::now())?;
/// let bytes = encode(&h, b"[]");
/// let d = decode(&bytes)?;
/// assert_eq!((d.header.key().as_str(), d.payload), ("k", &b"[]"[..]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Decoded<'a> {
    /// The header.
    pub header: Header,
    /// The payload bytes.
    pub payload: &'a [u8],
    /// The digest recorded in the trailer, verified.
    pub digest: Digest,
}

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

/// Checks the magic and the minimum length.
fn check_start(bytes_start: &[u8], len: u64) -> Result<(), Corruption> {
    let n = bytes_start.len().min(MAGIC.len());
    if bytes_start[..n] != MAGIC[..n] {
        return Err(Corruption::NotAStash);
    }
    if len < MIN_LEN as u64 {
        return Err(Corruption::Truncated { len });
    }
    Ok(())
}

struct Trailer {
    payload_len: u64,
    digest: Digest,
}

fn parse_trailer(t: &[u8]) -> Result<Trailer, Corruption> {
    if t.len() != TRAILER_LEN
        || !t.starts_with(TRAILER_TAG)
        || &t[39..TRAILER_HASHED] != b" sha256="
        || t[TRAILER_LEN - 1] != b'\n'
    {
        return Err(Corruption::BadTrailer);
    }
    let mut payload_len: u64 = 0;
    for &c in &t[TRAILER_TAG.len()..39] {
        if !c.is_ascii_digit() {
            return Err(Corruption::BadTrailer);
        }
        payload_len = payload_len
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(c - b'0')))
            .ok_or(Corruption::BadTrailer)?;
    }
    let digest =
        Digest::from_hex(&t[TRAILER_HASHED..TRAILER_LEN - 1]).ok_or(Corruption::BadTrailer)?;
    Ok(Trailer { payload_len, digest })
}

/// The digest recorded in a file's last [`TRAILER_LEN`] bytes, without
/// verifying anything else (used to tell whose stash a file is).
///
/// # Examples
///
/// ```
/// # use std::time::SystemTime;
/// # use safestash::{envelope::{encode, recorded_digest, decode, Header, TRAILER_LEN}, StashKey};
/// let h = Header::new(StashKey::new("k")?, "value", None, SystemTime::now())?;
/// let bytes = encode(&h, b"1");
/// assert_eq!(recorded_digest(&bytes[bytes.len() - TRAILER_LEN..]), Some(decode(&bytes)?.digest));
/// assert_eq!(recorded_digest(b"short"), None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn recorded_digest(trailer: &[u8]) -> Option<Digest> {
    parse_trailer(trailer).ok().map(|t| t.digest)
}

/// Parses the magic line and header at the start of `body` (the file without
/// its trailer). Returns the header and the offset where the payload starts.
fn parse_prefix(body: &[u8]) -> Result<(Header, usize), DecodeError> {
    if !body.starts_with(MAGIC) {
        return Err(Corruption::NotAStash.into());
    }
    let rest = &body[MAGIC.len()..];
    let line_end = rest.iter().take(6).position(|&b| b == b'\n').ok_or(Corruption::BadVersion)?;
    let digits = &rest[..line_end];
    if digits.is_empty() || digits[0] == b'0' || !digits.iter().all(u8::is_ascii_digit) {
        return Err(Corruption::BadVersion.into());
    }
    // At most five digits: no overflow.
    let version = digits.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'));
    if version != VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let header_start = MAGIC.len() + line_end + 1;
    let header_area = &body[header_start..];
    let header_len = header_area
        .iter()
        .take(MAX_HEADER_LEN)
        .position(|&b| b == b'\n')
        .ok_or_else(|| Corruption::BadHeader("no line feed within 8192 bytes".to_owned()))?;
    let wire: WireHeader = serde_json::from_slice(&header_area[..header_len])
        .map_err(|e| Corruption::BadHeader(e.to_string()))?;
    let header = wire.validate().map_err(Corruption::BadHeader)?;
    Ok((header, header_start + header_len + 1))
}

/// Reads the header from the first bytes of a file, without verifying the
/// digest (which needs the whole file). Used to list stashes cheaply; use
/// [`decode`] to trust anything.
///
/// `prefix` should hold the first [`MAX_PREFIX_LEN`] bytes of the file, or
/// all of it if shorter.
///
/// # Errors
///
/// A [`DecodeError`] when the prefix is not a version-1 magic line and header.
///
/// # Examples
///
/// ```
/// # use std::time::SystemTime;
/// # use safestash::{envelope::{encode, read_header, Header}, StashKey};
/// let h = Header::new(StashKey::new("k")?, "value", None, SystemTime::now())?;
/// let bytes = encode(&h, b"{}");
/// assert_eq!(read_header(&bytes[..60.min(bytes.len())]).is_err(), true);
/// assert_eq!(read_header(&bytes)?, h);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn read_header(prefix: &[u8]) -> Result<Header, DecodeError> {
    check_start(prefix, prefix.len() as u64)?;
    parse_prefix(prefix).map(|(header, _)| header)
}

/// Decodes and verifies a whole envelope.
///
/// Never panics and never allocates according to a length read from the
/// bytes. The key is not checked against anything: the store does that.
///
/// # Errors
///
/// [`DecodeError::Corrupt`] when the bytes are damaged or not an envelope,
/// [`DecodeError::UnsupportedVersion`] when they are an intact envelope of an
/// unknown version.
///
/// # Examples
///
/// ```
/// # use std::time::SystemTime;
/// # use safestash::{envelope::{decode, encode, Header}, StashKey};
/// let h = Header::new(StashKey::new("k")?, "value", None, SystemTime::now())?;
/// let mut bytes = encode(&h, b"{}");
/// assert!(decode(&bytes).is_ok());
/// bytes[20] ^= 1;
/// assert!(decode(&bytes).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn decode(bytes: &[u8]) -> Result<Decoded<'_>, DecodeError> {
    check_start(bytes, bytes.len() as u64)?;
    let body_end = bytes.len() - TRAILER_LEN;
    let trailer = parse_trailer(&bytes[body_end..])?;
    let actual = Digest::of(&bytes[..body_end + TRAILER_HASHED]);
    if actual != trailer.digest {
        return Err(Corruption::ChecksumMismatch { recorded: trailer.digest, actual }.into());
    }
    let (header, payload_start) = parse_prefix(&bytes[..body_end])?;
    let payload = &bytes[payload_start..body_end];
    if payload.len() as u64 != trailer.payload_len {
        return Err(Corruption::LengthMismatch {
            recorded: trailer.payload_len,
            actual: payload.len() as u64,
        }
        .into());
    }
    Ok(Decoded { header, payload, digest: trailer.digest })
}

/// Where a verified envelope's payload sits in a file read by [`verify_reader`].
///
/// # Examples
///
/// ```
/// # use std::{io::Cursor, time::SystemTime};
/// # use safestash::{envelope::{encode, verify_reader, Header}, StashKey};
/// let h = Header::new(StashKey::new("k")?, "value", None, SystemTime::now())?;
/// let bytes = encode(&h, b"[1]");
/// let layout = verify_reader(&mut Cursor::new(&bytes), bytes.len() as u64)??;
/// assert_eq!(layout.payload_len, 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Layout {
    /// The header.
    pub header: Header,
    /// The verified digest.
    pub digest: Digest,
    /// Where the payload starts.
    pub payload_offset: u64,
    /// How long the payload is.
    pub payload_len: u64,
}

/// Verifies an envelope of `len` bytes read from `r` without holding it in
/// memory: one pass to check the digest, then a read of the header. The
/// payload can then be read from `payload_offset`.
///
/// # Errors
///
/// The outer error is an I/O error from `r`; the inner one is a
/// [`DecodeError`] as from [`decode`].
///
/// # Examples
///
/// See [`Layout`].
pub fn verify_reader<R: Read + Seek>(
    r: &mut R,
    len: u64,
) -> io::Result<Result<Layout, DecodeError>> {
    let mut start = [0u8; MAGIC.len()];
    let n = read_up_to(r, 0, &mut start)?;
    if let Err(c) = check_start(&start[..n], len) {
        return Ok(Err(c.into()));
    }
    let mut trailer = [0u8; TRAILER_LEN];
    let body_end = len - TRAILER_LEN as u64;
    if read_up_to(r, body_end, &mut trailer)? != TRAILER_LEN {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let trailer = match parse_trailer(&trailer) {
        Ok(t) => t,
        Err(c) => return Ok(Err(c.into())),
    };
    r.seek(SeekFrom::Start(0))?;
    let mut hasher = Sha256::new();
    let mut remaining = body_end + TRAILER_HASHED as u64;
    let mut buf = vec![0u8; 1 << 20];
    while remaining > 0 {
        let want = usize::try_from(remaining).unwrap_or(usize::MAX).min(buf.len());
        let got = r.read(&mut buf[..want])?;
        if got == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        hasher.update(&buf[..got]);
        remaining -= got as u64;
    }
    let actual = Digest::from_bytes(hasher.finalize().into());
    if actual != trailer.digest {
        return Ok(Err(Corruption::ChecksumMismatch { recorded: trailer.digest, actual }.into()));
    }
    let prefix_len = usize::try_from(body_end).unwrap_or(usize::MAX).min(MAX_PREFIX_LEN);
    buf.truncate(prefix_len);
    if read_up_to(r, 0, &mut buf)? != prefix_len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let (header, payload_start) = match parse_prefix(&buf) {
        Ok(p) => p,
        Err(e) => return Ok(Err(e)),
    };
    let actual_len = body_end - payload_start as u64;
    if actual_len != trailer.payload_len {
        return Ok(Err(Corruption::LengthMismatch {
            recorded: trailer.payload_len,
            actual: actual_len,
        }
        .into()));
    }
    Ok(Ok(Layout {
        header,
        digest: trailer.digest,
        payload_offset: payload_start as u64,
        payload_len: actual_len,
    }))
}

/// Reads from `offset` until `buf` is full or the end; returns bytes read.
fn read_up_to<R: Read + Seek>(r: &mut R, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    r.seek(SeekFrom::Start(offset))?;
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn header() -> Header {
        let created = UNIX_EPOCH + Duration::new(1_795_000_000, 123_456_789);
        Header::new(StashKey::new("k").unwrap(), "value", Some("job\n\"1\""), created).unwrap()
    }

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

    #[test]
    fn empty_payload_decodes() {
        let bytes = encode(&header(), b"");
        assert_eq!(decode(&bytes).unwrap().payload, b"");
    }

    #[test]
    fn reader_agrees_with_slice() {
        let bytes = encode(&header(), &vec![b'7'; 3 << 20]);
        let layout = verify_reader(&mut Cursor::new(&bytes), bytes.len() as u64).unwrap().unwrap();
        let d = decode(&bytes).unwrap();
        assert_eq!(layout.header, d.header);
        assert_eq!(layout.digest, d.digest);
        assert_eq!(layout.payload_len, 3 << 20);
        let mut damaged = bytes.clone();
        damaged[2 << 20] ^= 4;
        let err = verify_reader(&mut Cursor::new(&damaged), bytes.len() as u64).unwrap();
        assert!(matches!(err, Err(DecodeError::Corrupt(Corruption::ChecksumMismatch { .. }))));
    }

    #[test]
    fn version_is_checked_after_the_digest() {
        let good = encode(&header(), b"1");
        // A flipped version digit is corruption, not a newer format.
        let mut flipped = good.clone();
        flipped[10] = b'2';
        assert!(matches!(
            decode(&flipped),
            Err(DecodeError::Corrupt(Corruption::ChecksumMismatch { .. }))
        ));
        // A genuine version 2 file (valid digest) is reported as such.
        let mut v2 = good[..good.len() - TRAILER_LEN].to_vec();
        v2[10] = b'2';
        let mut w = Vec::new();
        w.extend_from_slice(&v2);
        w.extend_from_slice(TRAILER_TAG);
        w.extend_from_slice(b"00000000000000000001 sha256=");
        let d = Digest::of(&w);
        w.extend_from_slice(&d.hex());
        w.push(b'\n');
        assert_eq!(decode(&w).unwrap_err(), DecodeError::UnsupportedVersion(2));
    }

    #[test]
    fn rejects_uppercase_digest_and_unknown_members() {
        let good = encode(&header(), b"1");
        let mut upper = good.clone();
        let pos = upper.len() - 2;
        upper[pos] = upper[pos].to_ascii_uppercase();
        if upper != good {
            assert_eq!(decode(&upper).unwrap_err(), DecodeError::Corrupt(Corruption::BadTrailer));
        }
        let body = b"SAFESTASH 1\n{\"key\":\"k\",\"kind\":\"v\",\"created\":\"2026-01-01T00:00:00Z\",\"origin\":null,\"encoding\":\"json\",\"writer\":\"x\",\"extra\":1}\n1";
        let mut w = body.to_vec();
        w.extend_from_slice(TRAILER_TAG);
        w.extend_from_slice(b"00000000000000000001 sha256=");
        let d = Digest::of(&w);
        w.extend_from_slice(&d.hex());
        w.push(b'\n');
        assert!(matches!(decode(&w), Err(DecodeError::Corrupt(Corruption::BadHeader(_)))));
    }

    #[test]
    fn short_inputs() {
        assert_eq!(
            decode(b"SAFE").unwrap_err(),
            DecodeError::Corrupt(Corruption::Truncated { len: 4 })
        );
        assert_eq!(decode(b"nope").unwrap_err(), DecodeError::Corrupt(Corruption::NotAStash));
        assert_eq!(decode(&[0xFF; 500]).unwrap_err(), DecodeError::Corrupt(Corruption::NotAStash));
    }

    #[test]
    fn header_options_are_checked() {
        let key = StashKey::new("k").unwrap();
        let now = SystemTime::now();
        assert!(Header::new(key.clone(), "", None, now).is_err());
        assert!(Header::new(key.clone(), &"k".repeat(65), None, now).is_err());
        assert!(Header::new(key.clone(), "a/b:c", Some(&"o".repeat(1024)), now).is_ok());
        assert!(Header::new(key.clone(), "v", Some(&"o".repeat(1025)), now).is_err());
        assert!(Header::new(key.clone(), "v", None, UNIX_EPOCH - Duration::from_secs(1)).is_err());
        // The longest header, all escapes, still fits the limit.
        let worst = "\u{1}".repeat(1024);
        let h = Header::new(
            StashKey::new("k".repeat(200)).unwrap(),
            &"k".repeat(64),
            Some(&worst),
            now,
        )
        .unwrap();
        assert!(h.encode_prefix().len() <= MAX_PREFIX_LEN);
        assert!(decode(&encode(&h, b"0")).is_ok());
    }
}
