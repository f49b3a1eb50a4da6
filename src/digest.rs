//! [`Digest`]: the SHA-256 that covers every stash. A leaf: it imports
//! nothing else of this crate.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// A SHA-256 digest, shown as 64 lowercase hex digits.
///
/// # Examples
///
/// ```
/// use safestash::Digest;
///
/// let d = Digest::of(b"abc");
/// assert_eq!(d.to_string(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
/// assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The SHA-256 of `bytes`.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(safestash::Digest::of(b"").as_bytes().len(), 32);
    /// ```
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(Sha256::digest(bytes).into())
    }

    pub(crate) fn from_bytes(bytes: [u8; 32]) -> Digest {
        Digest(bytes)
    }

    /// The raw 32 bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// let d = safestash::Digest::of(b"x");
    /// assert_eq!(d.as_bytes()[0], 0x2d);
    /// ```
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub(crate) fn hex(&self) -> [u8; 64] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 64];
        for (i, b) in self.0.iter().enumerate() {
            out[2 * i] = HEX[usize::from(b >> 4)];
            out[2 * i + 1] = HEX[usize::from(b & 0xF)];
        }
        out
    }

    /// Parses exactly 64 lowercase hex digits.
    pub(crate) fn from_hex(hex: &[u8]) -> Option<Digest> {
        fn nibble(c: u8) -> Option<u8> {
            match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                _ => None,
            }
        }
        if hex.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in hex.chunks_exact(2).enumerate() {
            out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Some(Digest(out))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.hex();
        // The hex digits are ASCII.
        f.write_str(std::str::from_utf8(&hex).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl FromStr for Digest {
    type Err = DigestParseError;

    fn from_str(s: &str) -> Result<Digest, DigestParseError> {
        Digest::from_hex(s.as_bytes()).ok_or_else(|| DigestParseError { input: s.to_owned() })
    }
}

/// A string that is not 64 lowercase hex digits, from `str::parse::<Digest>`.
///
/// # Examples
///
/// ```
/// let err = "xyz".parse::<safestash::Digest>().unwrap_err();
/// assert_eq!(err.to_string(), "invalid digest \"xyz\": expected 64 lowercase hex digits");
/// assert_eq!(err.input(), "xyz");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid digest {input:?}: expected 64 lowercase hex digits")]
pub struct DigestParseError {
    input: String,
}

impl DigestParseError {
    /// The rejected input.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!("".parse::<safestash::Digest>().unwrap_err().input(), "");
    /// ```
    pub fn input(&self) -> &str {
        &self.input
    }
}
