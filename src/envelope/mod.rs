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

mod header;
mod read;
mod scan;
mod write;

pub use header::{Encoding, Header};
pub(crate) use read::read_stream;
pub use read::{
    DecodeError, Decoded, Layout, decode, read_header, recorded_digest, verify_reader,
    verify_stream,
};
pub use write::{EnvelopeWriter, Finished, encode};

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
pub(crate) const TRAILER_HASHED: usize = 47;
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

/// The header the unit tests write: a fixed time and an origin that needs
/// escaping.
#[cfg(test)]
fn test_header() -> Header {
    use std::time::{Duration, UNIX_EPOCH};
    let created = UNIX_EPOCH + Duration::new(1_795_000_000, 123_456_789);
    Header::new(crate::key::StashKey::new("k").unwrap(), "value", Some("job\n\"1\""), created)
        .unwrap()
}
