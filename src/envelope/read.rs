//! Reading an envelope: [`decode`] from memory, [`verify_reader`] streaming,
//! [`read_header`] for listing.

use std::io::{self, Read, Seek, SeekFrom};

use sha2::{Digest as _, Sha256};

use super::header::{Header, WireHeader};
use super::{
    MAGIC, MAX_HEADER_LEN, MAX_PREFIX_LEN, MIN_LEN, TRAILER_HASHED, TRAILER_LEN, TRAILER_TAG,
    VERSION,
};
use crate::digest::Digest;
use crate::error::Corruption;

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
    let header_len = super::scan::line_feed(&header_area[..header_area.len().min(MAX_HEADER_LEN)])
        .ok_or_else(|| Corruption::BadHeader("no line feed within 8192 bytes".to_owned()))?;
    let wire = WireHeader::parse(&header_area[..header_len])
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
    Ok(checked_layout(&buf, body_end, &trailer))
}

/// Verifies an envelope of `len` bytes read once from `r`, front to back,
/// without holding it in memory and without seeking (a reader from a
/// server): the digest over every byte, the trailer, the header. Memory is
/// bounded by the header and a 1 MiB buffer, whatever `len`. A reader
/// that ends before `len` bytes is [`Corruption::Truncated`]; bytes after
/// `len` are not read.
///
/// # Errors
///
/// The outer error is an I/O error from `r`; the inner one is a
/// [`DecodeError`] as from [`decode`].
///
/// # Examples
///
/// ```
/// # use std::time::SystemTime;
/// # use safestash::{envelope::{encode, verify_stream, Header}, StashKey};
/// let h = Header::new(StashKey::new("k")?, "value", None, SystemTime::now())?;
/// let bytes = encode(&h, b"[1]");
/// let layout = verify_stream(&mut &bytes[..], bytes.len() as u64)??;
/// assert_eq!((layout.payload_len, layout.header), (3, h));
/// assert!(verify_stream(&mut &bytes[..9], bytes.len() as u64)?.is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn verify_stream<R: Read + ?Sized>(
    r: &mut R,
    len: u64,
) -> io::Result<Result<Layout, DecodeError>> {
    if len < MIN_LEN as u64 {
        // Too short to be an envelope: what it starts with decides the reason.
        let mut start = [0u8; MAGIC.len()];
        let n =
            read_up_to_stream(r, &mut start[..usize::try_from(len).unwrap_or(0).min(MAGIC.len())])?;
        return Ok(Err(check_start(&start[..n], len)
            .err()
            .unwrap_or(Corruption::Truncated { len })
            .into()));
    }
    let body_end = len - TRAILER_LEN as u64;
    let hashed_end = body_end + TRAILER_HASHED as u64;
    let prefix_len = usize::try_from(body_end).unwrap_or(usize::MAX).min(MAX_PREFIX_LEN);
    let mut prefix = Vec::with_capacity(prefix_len);
    let mut trailer = [0u8; TRAILER_LEN];
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos: u64 = 0;
    while pos < len {
        let want = usize::try_from(len - pos).unwrap_or(usize::MAX).min(buf.len());
        let got = match r.read(&mut buf[..want]) {
            Ok(0) => return Ok(Err(Corruption::Truncated { len: pos }.into())),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let chunk = &buf[..got];
        let end = pos + got as u64;
        if prefix.len() < prefix_len {
            let take = (prefix_len - prefix.len()).min(got);
            prefix.extend_from_slice(&chunk[..take]);
            if let Err(c) = check_start(&prefix, len) {
                return Ok(Err(c.into()));
            }
        }
        if pos < hashed_end {
            let upto = usize::try_from(hashed_end.min(end) - pos).unwrap_or(got);
            hasher.update(&chunk[..upto]);
        }
        if end > body_end {
            let from = usize::try_from(body_end.saturating_sub(pos)).unwrap_or(0);
            let at = usize::try_from(pos.saturating_sub(body_end)).unwrap_or(0);
            trailer[at..at + got - from].copy_from_slice(&chunk[from..]);
        }
        pos = end;
    }
    let trailer = match parse_trailer(&trailer) {
        Ok(t) => t,
        Err(c) => return Ok(Err(c.into())),
    };
    let actual = Digest::from_bytes(hasher.finalize().into());
    if actual != trailer.digest {
        return Ok(Err(Corruption::ChecksumMismatch { recorded: trailer.digest, actual }.into()));
    }
    Ok(checked_layout(&prefix, body_end, &trailer))
}

/// Reads an envelope of `len` bytes from `r` once, front to back, and
/// hands its payload (exactly its bytes) to `parse` while it streams past,
/// hashing every byte on the way: verification and deserialization in one
/// pass, with memory bounded by the header, `parse`'s own state and the
/// reader's chunk. `parse`'s result comes back only with the verified
/// layout, once the trailer's digest matched everything read; otherwise
/// it is dropped and the damage is the error (a payload that did not
/// parse because it was damaged is `Corrupt`, never a parse error). What
/// `parse` leaves unread is read and hashed; bytes after `len` are not
/// read.
///
/// Errors are as from [`verify_stream`]; the outer one is also a read
/// error met while `parse` was reading (even if `parse` swallowed it).
pub(crate) fn read_stream<R: Read + ?Sized, T>(
    r: &mut R,
    len: u64,
    parse: impl FnOnce(&mut dyn Read) -> T,
) -> io::Result<Result<(Layout, T), DecodeError>> {
    if len < MIN_LEN as u64 {
        return Ok(Err(match verify_stream(r, len)? {
            Err(e) => e,
            Ok(_) => Corruption::Truncated { len }.into(),
        }));
    }
    let body_end = len - TRAILER_LEN as u64;
    let prefix_len = usize::try_from(body_end).unwrap_or(usize::MAX).min(MAX_PREFIX_LEN);
    let mut prefix = vec![0u8; prefix_len];
    let n = read_up_to_stream(r, &mut prefix)?;
    if let Err(c) = check_start(&prefix[..n], len) {
        return Ok(Err(c.into()));
    }
    if n < prefix_len {
        return Ok(Err(Corruption::Truncated { len: n as u64 }.into()));
    }
    let mut hasher = Sha256::new();
    hasher.update(&prefix);
    let parsed = parse_prefix(&prefix);
    let mut payload = PayloadReader {
        head: &[],
        inner: r,
        left: body_end - prefix_len as u64,
        hasher: &mut hasher,
        failed: None,
        short: false,
    };
    let value = match &parsed {
        Ok((_, start)) => {
            payload.head = &prefix[*start..];
            Some(parse(&mut payload))
        }
        // Damage or another version: only the digest can say which.
        Err(_) => None,
    };
    // What `parse` left: read and hashed.
    payload.head = &[];
    let drained = io::copy(&mut payload, &mut io::sink());
    if let Some(e) = payload.failed.take() {
        return Err(e);
    }
    drained?;
    if payload.short {
        let read = body_end - payload.left;
        return Ok(Err(Corruption::Truncated { len: read }.into()));
    }
    let mut trailer = [0u8; TRAILER_LEN];
    let got = read_up_to_stream(r, &mut trailer)?;
    if got < TRAILER_LEN {
        return Ok(Err(Corruption::Truncated { len: body_end + got as u64 }.into()));
    }
    hasher.update(&trailer[..TRAILER_HASHED]);
    let trailer = match parse_trailer(&trailer) {
        Ok(t) => t,
        Err(c) => return Ok(Err(c.into())),
    };
    let actual = Digest::from_bytes(hasher.finalize().into());
    if actual != trailer.digest {
        return Ok(Err(Corruption::ChecksumMismatch { recorded: trailer.digest, actual }.into()));
    }
    let layout = match checked_layout(&prefix, body_end, &trailer) {
        Ok(layout) => layout,
        Err(e) => return Ok(Err(e)),
    };
    match value {
        Some(value) => Ok(Ok((layout, value))),
        // The digest matched, so the header parsed in `checked_layout`.
        None => Ok(Err(Corruption::BadHeader("unreadable header".to_owned()).into())),
    }
}

/// The payload of [`read_stream`]: the bytes after the header already read
/// (`head`), then `left` more from `inner`, every byte hashed as it passes.
struct PayloadReader<'a, R: ?Sized> {
    head: &'a [u8],
    inner: &'a mut R,
    left: u64,
    hasher: &'a mut Sha256,
    /// The first read error, kept: `parse` may swallow it.
    failed: Option<io::Error>,
    /// `inner` ended before `left` bytes.
    short: bool,
}

impl<R: Read + ?Sized> Read for PayloadReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.head.is_empty() {
            // Hashed already, with the prefix.
            let n = buf.len().min(self.head.len());
            buf[..n].copy_from_slice(&self.head[..n]);
            self.head = &self.head[n..];
            return Ok(n);
        }
        if self.left == 0 || self.short {
            return Ok(0);
        }
        if let Some(e) = &self.failed {
            return Err(io::Error::new(e.kind(), e.to_string()));
        }
        let want = usize::try_from(self.left).unwrap_or(usize::MAX).min(buf.len());
        loop {
            match self.inner.read(&mut buf[..want]) {
                Ok(0) => {
                    self.short = true;
                    return Ok(0);
                }
                Ok(n) => {
                    self.hasher.update(&buf[..n]);
                    self.left -= n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let copy = io::Error::new(e.kind(), e.to_string());
                    self.failed = Some(e);
                    return Err(copy);
                }
            }
        }
    }
}

/// The layout of an envelope whose digest matched `trailer`: the header
/// parsed from `prefix` (the body's first bytes), and the payload's length
/// (from where the header ends to `body_end`) checked against the one the
/// trailer records.
fn checked_layout(prefix: &[u8], body_end: u64, trailer: &Trailer) -> Result<Layout, DecodeError> {
    let (header, payload_start) = parse_prefix(prefix)?;
    let actual_len = body_end - payload_start as u64;
    if actual_len != trailer.payload_len {
        return Err(Corruption::LengthMismatch {
            recorded: trailer.payload_len,
            actual: actual_len,
        }
        .into());
    }
    Ok(Layout {
        header,
        digest: trailer.digest,
        payload_offset: payload_start as u64,
        payload_len: actual_len,
    })
}

/// Reads until `buf` is full or the end; returns bytes read.
fn read_up_to_stream<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
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

/// Reads from `offset` until `buf` is full or the end; returns bytes read.
fn read_up_to<R: Read + Seek>(r: &mut R, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    r.seek(SeekFrom::Start(offset))?;
    read_up_to_stream(r, buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::encode;
    use crate::envelope::test_header as header;
    use std::io::Cursor;

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
    fn one_pass_read_agrees_with_verify_stream_and_hands_back_only_verified_payloads() {
        // The payload, as the parser saw it, and whether the parser ran.
        let read_all = |bytes: &[u8], len: u64| {
            read_stream(&mut &bytes[..], len, |r| {
                let mut seen = Vec::new();
                r.read_to_end(&mut seen).map(|_| seen)
            })
            .unwrap()
        };
        let bytes = encode(&header(), &vec![b'7'; (3 << 20) + 5]);
        let (layout, seen) = read_all(&bytes, bytes.len() as u64).unwrap();
        let d = decode(&bytes).unwrap();
        assert_eq!((layout.header, layout.digest), (d.header, d.digest));
        assert_eq!(seen.unwrap(), d.payload, "exactly the payload's bytes");
        let small = encode(&header(), b"[1,2]");
        for bytes in [bytes, small] {
            let len = bytes.len();
            let mut cases: Vec<(Vec<u8>, u64)> = Vec::new();
            for at in [0, 3, 9, 30, 200, len / 2, len - 113, len - 70, len - 2, len - 1] {
                let mut damaged = bytes.clone();
                damaged[at] ^= 4;
                cases.push((damaged, len as u64));
            }
            for cut in [0, 5, 30, len - 113, len - 112, len - 1] {
                cases.push((bytes[..cut].to_vec(), len as u64));
                cases.push((bytes[..cut].to_vec(), cut as u64));
            }
            for (input, len) in cases {
                let streamed = verify_stream(&mut &input[..], len).unwrap();
                let one_pass = read_all(&input, len);
                match (&streamed, &one_pass) {
                    (Err(a), Err(b)) => assert_eq!(a, b, "len {len}"),
                    (Ok(a), Ok((b, _))) => assert_eq!(a.digest, b.digest),
                    _ => panic!("disagree at len {len}: {streamed:?} / {:?}", one_pass.is_ok()),
                }
            }
        }
        // Another version, intact: refused after the digest, as everywhere.
        let other = encode(&header(), b"1");
        let mut v2 = other.clone();
        v2[MAGIC.len()] = b'2';
        let body_end = v2.len() - TRAILER_LEN;
        let digest = Digest::of(&v2[..body_end + TRAILER_HASHED]);
        let hex = digest.to_string();
        v2[body_end + TRAILER_HASHED..body_end + TRAILER_HASHED + 64]
            .copy_from_slice(hex.as_bytes());
        let got = read_all(&v2, v2.len() as u64);
        assert!(matches!(got, Err(DecodeError::UnsupportedVersion(2))), "{:?}", got.is_ok());
    }

    #[test]
    fn one_pass_read_keeps_a_read_error_the_parser_swallowed() {
        struct Failing<'a>(&'a [u8]);
        impl Read for Failing<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() {
                    return Err(io::Error::other("connection reset"));
                }
                let n = buf.len().min(self.0.len()).min(1000);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let bytes = encode(&header(), &vec![b'7'; 100_000]);
        let mut r = Failing(&bytes[..50_000]);
        let got = read_stream(&mut r, bytes.len() as u64, |r| {
            let _ = r.read_to_end(&mut Vec::new());
        });
        assert_eq!(got.unwrap_err().to_string(), "connection reset");
    }

    #[test]
    fn stream_agrees_with_slice() {
        let bytes = encode(&header(), &vec![b'7'; (3 << 20) + 5]);
        let d = decode(&bytes).unwrap();
        let layout = verify_stream(&mut &bytes[..], bytes.len() as u64).unwrap().unwrap();
        assert_eq!((layout.header, layout.digest), (d.header, d.digest));
        assert_eq!(layout.payload_len, (3 << 20) + 5);
        for at in [3, 200, 2 << 20, bytes.len() - 70, bytes.len() - 2] {
            let mut damaged = bytes.clone();
            damaged[at] ^= 4;
            let got = verify_stream(&mut &damaged[..], bytes.len() as u64).unwrap();
            assert!(matches!(got, Err(DecodeError::Corrupt(_))), "flip at {at}: {got:?}");
        }
        let short = &bytes[..bytes.len() - 1];
        let got = verify_stream(&mut &short[..], bytes.len() as u64).unwrap();
        assert!(matches!(got, Err(DecodeError::Corrupt(Corruption::Truncated { .. }))));
        for n in [0, 5, 30] {
            let got = verify_stream(&mut &bytes[..n], n as u64).unwrap();
            assert!(got.is_err(), "{n} bytes");
        }
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
}
