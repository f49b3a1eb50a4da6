//! [`StashKey`]: the validated name of a stash.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// The longest key, in bytes.
///
/// # Examples
///
/// ```
/// assert!(safestash::StashKey::new("k".repeat(safestash::MAX_KEY_LEN)).is_ok());
/// assert!(safestash::StashKey::new("k".repeat(safestash::MAX_KEY_LEN + 1)).is_err());
/// ```
pub const MAX_KEY_LEN: usize = 200;

/// Windows device names, reserved with or without an extension.
const DEVICE_NAMES: [&str; 22] = [
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
    "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

/// The name of a stash, checked once at construction.
///
/// A key is also the stash's file name inside the store's directory, so it is
/// validated by an allowlist: only `[A-Za-z0-9._-]`, 1 to 200 bytes, not
/// starting with `.` (names starting with a dot are reserved for the store's
/// temp, lock and quarantine files, and this also rules out `.` and `..`), not
/// ending with `.`, and not a Windows device name (`CON`, `PRN`, `AUX`, `NUL`,
/// `COM1`–`COM9`, `LPT1`–`LPT9`, in any case, with or without an extension).
/// No key can name a path outside the store's directory.
///
/// To turn an arbitrary identifier (a resource path, a UUID in braces, any
/// Unicode) into a key, use [`StashKey::from_any`] instead of inventing an
/// escaping of your own.
///
/// # Examples
///
/// ```
/// use safestash::StashKey;
///
/// let key = StashKey::new("orders.dictionary")?;
/// assert_eq!(key.as_str(), "orders.dictionary");
///
/// let err = StashKey::new("../etc/passwd").unwrap_err();
/// assert_eq!(err.input(), "../etc/passwd");
/// # Ok::<(), safestash::KeyError>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StashKey(String);

impl StashKey {
    /// Validates `s` as a key.
    ///
    /// # Errors
    ///
    /// Returns a [`KeyError`] that says which rule `s` breaks and holds `s`.
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::StashKey;
    ///
    /// assert!(StashKey::new("tenant-42.snapshot").is_ok());
    /// assert!(StashKey::new("foo/bar").is_err());
    /// assert!(StashKey::new("CON.txt").is_err());
    /// ```
    pub fn new(s: impl Into<String>) -> Result<StashKey, KeyError> {
        let s = s.into();
        match check(&s) {
            Ok(()) => Ok(StashKey(s)),
            Err(kind) => Err(KeyError::new(s, kind)),
        }
    }

    /// Turns any string into a valid key, deterministically and injectively.
    ///
    /// The mapping is an **escaping**, with a hash only for very long inputs:
    ///
    /// - bytes in `[A-Za-z0-9-]`, and `.` except in first or last position, are
    ///   kept; every other byte (including `_` itself) becomes `_XX`, its two
    ///   uppercase hex digits;
    /// - if the result would be a Windows device name, its first byte is
    ///   escaped too;
    /// - the empty string maps to `_`;
    /// - if the escaped form is longer than 200 bytes, the key is its first
    ///   up to 130 bytes (cut at an escape boundary), `__`, and the SHA-256 of
    ///   the input in lowercase hex.
    ///
    /// An escaped key never contains `__` and a hashed one always does, so the
    /// two forms cannot meet. Escaped keys are exactly injective (and
    /// reversible); hashed keys are injective unless SHA-256 collides. Any
    /// input of at most 66 bytes is always escaped, never hashed.
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::StashKey;
    ///
    /// assert_eq!(StashKey::from_any("tables/orders").as_str(), "tables_2Forders");
    /// assert_eq!(StashKey::from_any("{6F9619FF}").as_str(), "_7B6F9619FF_7D");
    /// assert_eq!(StashKey::from_any("orders").as_str(), "orders");
    /// assert_ne!(StashKey::from_any("a/b"), StashKey::from_any("a_2Fb"));
    /// ```
    pub fn from_any(s: &str) -> StashKey {
        let bytes = s.as_bytes();
        if bytes.is_empty() {
            return StashKey("_".to_owned());
        }
        let mut out = String::with_capacity(bytes.len());
        // Byte offsets in `out` where an input byte's encoding ends.
        let mut boundaries = Vec::with_capacity(bytes.len());
        let last = bytes.len() - 1;
        for (i, &b) in bytes.iter().enumerate() {
            let keep = b.is_ascii_alphanumeric() || b == b'-' || (b == b'.' && i != 0 && i != last);
            if keep {
                out.push(char::from(b));
            } else {
                push_escape(&mut out, b);
            }
            boundaries.push(out.len());
        }
        if is_device_name(&out) {
            let first = out.as_bytes()[0];
            let mut escaped = String::with_capacity(out.len() + 2);
            push_escape(&mut escaped, first);
            escaped.push_str(&out[1..]);
            // Only the first boundary moved; shift them all by two.
            boundaries.iter_mut().for_each(|b| *b += 2);
            out = escaped;
        }
        if out.len() <= MAX_KEY_LEN {
            debug_assert!(check(&out).is_ok(), "escaped key {out:?} must be valid");
            return StashKey(out);
        }
        let cut = boundaries.iter().copied().take_while(|&b| b <= 130).last().unwrap_or(0);
        let digest = Sha256::digest(bytes);
        let mut hashed = String::with_capacity(cut + 2 + 64);
        hashed.push_str(&out[..cut]);
        hashed.push_str("__");
        for b in digest {
            hashed.push_str(&format!("{b:02x}"));
        }
        debug_assert!(check(&hashed).is_ok(), "hashed key {hashed:?} must be valid");
        StashKey(hashed)
    }

    /// The key as a string slice.
    ///
    /// # Examples
    ///
    /// ```
    /// let key = safestash::StashKey::new("a.b")?;
    /// assert_eq!(key.as_str(), "a.b");
    /// # Ok::<(), safestash::KeyError>(())
    /// ```
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Gives the key's string back.
    ///
    /// # Examples
    ///
    /// ```
    /// let key = safestash::StashKey::new("a.b")?;
    /// assert_eq!(key.into_string(), "a.b");
    /// # Ok::<(), safestash::KeyError>(())
    /// ```
    pub fn into_string(self) -> String {
        self.0
    }
}

fn push_escape(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('_');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 0xF)]));
}

/// Whether the part of `s` before its first `.` is a Windows device name.
fn is_device_name(s: &str) -> bool {
    let stem = s.split('.').next().unwrap_or(s);
    DEVICE_NAMES.iter().any(|d| d.eq_ignore_ascii_case(stem))
}

/// Checks `s` against the key rules.
pub(crate) fn check(s: &str) -> Result<(), KeyErrorKind> {
    if s.is_empty() {
        return Err(KeyErrorKind::Empty);
    }
    if s.len() > MAX_KEY_LEN {
        return Err(KeyErrorKind::TooLong { len: s.len() });
    }
    if let Some((index, ch)) = s
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-'))
    {
        return Err(KeyErrorKind::InvalidChar { ch, index });
    }
    if s.starts_with('.') {
        return Err(KeyErrorKind::LeadingDot);
    }
    if s.ends_with('.') {
        return Err(KeyErrorKind::TrailingDot);
    }
    if is_device_name(s) {
        return Err(KeyErrorKind::Reserved);
    }
    Ok(())
}

impl fmt::Display for StashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StashKey({:?})", self.0)
    }
}

impl AsRef<str> for StashKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for StashKey {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl FromStr for StashKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StashKey::new(s)
    }
}

impl TryFrom<String> for StashKey {
    type Error = KeyError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        StashKey::new(s)
    }
}

impl TryFrom<&str> for StashKey {
    type Error = KeyError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        StashKey::new(s)
    }
}

impl From<StashKey> for String {
    fn from(key: StashKey) -> String {
        key.0
    }
}

impl serde::Serialize for StashKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for StashKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        StashKey::new(s).map_err(serde::de::Error::custom)
    }
}

/// A string rejected by [`StashKey::new`], with the reason and the input.
///
/// # Examples
///
/// ```
/// use safestash::{KeyErrorKind, StashKey};
///
/// let err = StashKey::new("foo/bar").unwrap_err();
/// assert_eq!(err.kind(), &KeyErrorKind::InvalidChar { ch: '/', index: 3 });
/// assert_eq!(err.to_string(), "invalid stash key \"foo/bar\": character '/' at byte 3 is not in [A-Za-z0-9._-]");
/// assert_eq!(err.into_input(), "foo/bar");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid stash key {input:?}: {kind}")]
pub struct KeyError {
    input: String,
    kind: KeyErrorKind,
}

impl KeyError {
    pub(crate) fn new(input: String, kind: KeyErrorKind) -> KeyError {
        KeyError { input, kind }
    }

    /// The rejected input.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(safestash::StashKey::new("a/b").unwrap_err().input(), "a/b");
    /// ```
    pub fn input(&self) -> &str {
        &self.input
    }

    /// Gives the rejected input back.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(safestash::StashKey::new("a/b").unwrap_err().into_input(), "a/b");
    /// ```
    pub fn into_input(self) -> String {
        self.input
    }

    /// Which rule the input breaks.
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::{KeyErrorKind, StashKey};
    /// assert_eq!(StashKey::new("").unwrap_err().kind(), &KeyErrorKind::Empty);
    /// ```
    pub fn kind(&self) -> &KeyErrorKind {
        &self.kind
    }
}

/// The rule a rejected key breaks.
///
/// # Examples
///
/// ```
/// use safestash::{KeyErrorKind, StashKey};
/// assert_eq!(StashKey::new("NUL.txt").unwrap_err().kind(), &KeyErrorKind::Reserved);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyErrorKind {
    /// The key is empty.
    Empty,
    /// The key is longer than 200 bytes.
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The key holds a character outside `[A-Za-z0-9._-]`.
    InvalidChar {
        /// The first such character.
        ch: char,
        /// Its byte offset.
        index: usize,
    },
    /// The key starts with `.` (reserved for the store's own files; this also
    /// rejects `.` and `..`).
    LeadingDot,
    /// The key ends with `.`.
    TrailingDot,
    /// The key is a Windows device name, with or without an extension.
    Reserved,
}

impl fmt::Display for KeyErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyErrorKind::Empty => f.write_str("empty"),
            KeyErrorKind::TooLong { len } => {
                write!(f, "{len} bytes long, the limit is {MAX_KEY_LEN}")
            }
            KeyErrorKind::InvalidChar { ch, index } => {
                write!(f, "character {ch:?} at byte {index} is not in [A-Za-z0-9._-]")
            }
            KeyErrorKind::LeadingDot => {
                f.write_str("starts with '.', which is reserved for the store's own files")
            }
            KeyErrorKind::TrailingDot => f.write_str("ends with '.'"),
            KeyErrorKind::Reserved => f.write_str("is a reserved device name"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(s: &str) -> KeyErrorKind {
        StashKey::new(s).unwrap_err().kind().clone()
    }

    #[test]
    fn accepts_the_allowlist() {
        for ok in ["a", "A-b_c.d", "0", "x.y.z", "_", "-", "a..b", "COM10", "CONSOLE", "NULL.x"] {
            assert!(StashKey::new(ok).is_ok(), "{ok} should be valid");
        }
        assert!(StashKey::new("a".repeat(200)).is_ok());
    }

    #[test]
    fn rejects_with_the_reason() {
        assert_eq!(kind(""), KeyErrorKind::Empty);
        assert_eq!(kind(&"a".repeat(201)), KeyErrorKind::TooLong { len: 201 });
        assert_eq!(kind("foo/bar"), KeyErrorKind::InvalidChar { ch: '/', index: 3 });
        assert_eq!(kind("foo\\bar"), KeyErrorKind::InvalidChar { ch: '\\', index: 3 });
        assert_eq!(kind("a\0b"), KeyErrorKind::InvalidChar { ch: '\0', index: 1 });
        assert_eq!(kind("é"), KeyErrorKind::InvalidChar { ch: 'é', index: 0 });
        assert_eq!(kind("a b"), KeyErrorKind::InvalidChar { ch: ' ', index: 1 });
        assert_eq!(kind("."), KeyErrorKind::LeadingDot);
        assert_eq!(kind(".."), KeyErrorKind::LeadingDot);
        assert_eq!(kind(".hidden"), KeyErrorKind::LeadingDot);
        assert_eq!(kind("a."), KeyErrorKind::TrailingDot);
        for dev in ["CON", "con", "Prn", "aux", "NUL", "com1", "COM9", "lpt1", "LPT9"] {
            assert_eq!(kind(dev), KeyErrorKind::Reserved, "{dev}");
            assert_eq!(kind(&format!("{dev}.txt")), KeyErrorKind::Reserved, "{dev}.txt");
            assert_eq!(kind(&format!("{dev}.tar.gz")), KeyErrorKind::Reserved);
        }
    }

    #[test]
    fn error_gives_the_input_back() {
        let err = StashKey::try_from("../x".to_owned()).unwrap_err();
        assert_eq!(err.input(), "../x");
        assert_eq!(err.into_input(), "../x");
    }

    #[test]
    fn from_any_escapes() {
        let cases = [
            ("", "_"),
            ("a", "a"),
            (".", "_2E"),
            ("..", "_2E_2E"),
            ("a.b", "a.b"),
            (".a.", "_2Ea_2E"),
            ("a_b", "a_5Fb"),
            ("con", "_63on"),
            ("LPT1.x", "_4CPT1.x"),
            ("ü", "_C3_BC"),
            ("a/b\\c", "a_2Fb_5Cc"),
        ];
        for (input, want) in cases {
            assert_eq!(StashKey::from_any(input).as_str(), want, "{input:?}");
        }
    }

    #[test]
    fn from_any_hashes_long_inputs() {
        let long = "/".repeat(67);
        let key = StashKey::from_any(&long);
        assert!(key.as_str().len() <= MAX_KEY_LEN);
        assert!(key.as_str().contains("__"));
        assert_eq!(key, StashKey::from_any(&long));
        assert_ne!(key, StashKey::from_any(&"/".repeat(68)));
        // 66 bytes always escape.
        assert!(!StashKey::from_any(&"/".repeat(66)).as_str().contains("__"));
    }

    #[test]
    fn serde_validates() {
        let key: StashKey = serde_json::from_str("\"ok.key\"").unwrap();
        assert_eq!(key.as_str(), "ok.key");
        assert!(serde_json::from_str::<StashKey>("\"../x\"").is_err());
        assert_eq!(serde_json::to_string(&key).unwrap(), "\"ok.key\"");
    }

    proptest::proptest! {
        #[test]
        fn from_any_is_valid_and_injective(a in ".{0,80}", b in ".{0,80}") {
            let (ka, kb) = (StashKey::from_any(&a), StashKey::from_any(&b));
            proptest::prop_assert!(check(ka.as_str()).is_ok());
            proptest::prop_assert_eq!(a == b, ka == kb);
        }

        #[test]
        fn from_any_is_valid_for_bytes(s in proptest::collection::vec(proptest::char::any(), 0..120)) {
            let s: String = s.into_iter().collect();
            proptest::prop_assert!(check(StashKey::from_any(&s).as_str()).is_ok());
        }
    }
}
