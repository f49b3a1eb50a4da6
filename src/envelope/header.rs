//! The envelope's header: what it says, and the checks on its options.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{MAGIC, MAX_KIND_LEN, MAX_ORIGIN_LEN, MAX_UNIX_SECS, MAX_WRITER_LEN, VERSION, WRITER};
use crate::error::Error;
use crate::key::StashKey;

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
    pub(super) fn encode_prefix(&self) -> Vec<u8> {
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

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WireHeader {
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
    /// Parses a header line, `line` without its line feed: the fast path
    /// for the exact form [`Header::encode_prefix`] writes when no string
    /// needs an escape, the strict `serde_json` parse for anything else, so
    /// what is accepted and what it means are the same either way.
    pub(super) fn parse(line: &[u8]) -> Result<WireHeader, serde_json::Error> {
        match WireHeader::parse_canonical(line) {
            Some(wire) => Ok(wire),
            None => serde_json::from_slice(line),
        }
    }

    /// The header line if it is exactly `{"key":"…","kind":"…","created":"…",
    /// "origin":"…"|null,"encoding":"…","writer":"…"}` (no whitespace) with
    /// no escape, no control character and only valid UTF-8 in its strings;
    /// `None` otherwise. Where this gives `Some`, `serde_json` gives the
    /// same value (the unit tests check it on arbitrary lines).
    fn parse_canonical(line: &[u8]) -> Option<WireHeader> {
        let mut rest = line;
        let key = member(&mut rest, b"{\"key\":")?;
        let kind = member(&mut rest, b",\"kind\":")?;
        let created = member(&mut rest, b",\"created\":")?;
        let origin = match rest.strip_prefix(b",\"origin\":null") {
            Some(after) => {
                rest = after;
                None
            }
            None => Some(member(&mut rest, b",\"origin\":")?),
        };
        let encoding = member(&mut rest, b",\"encoding\":")?;
        let writer = member(&mut rest, b",\"writer\":")?;
        (rest == b"}").then_some(WireHeader { key, kind, created, origin, encoding, writer })
    }

    pub(super) fn validate(self) -> Result<Header, String> {
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

/// `tag` then a JSON string without escapes or control characters, taken
/// off the front of `rest`.
fn member(rest: &mut &[u8], tag: &[u8]) -> Option<String> {
    let after = rest.strip_prefix(tag)?.strip_prefix(b"\"")?;
    let end = super::scan::string_end(after)?;
    if after[end] != b'"' {
        return None;
    }
    let s = std::str::from_utf8(&after[..end]).ok()?.to_owned();
    *rest = &after[end + 1..];
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{MAX_PREFIX_LEN, decode, encode};
    use proptest::prelude::*;

    fn wire_line(key: &str, kind: &str, created: &str, origin: Option<&str>) -> Vec<u8> {
        let wire = WireHeader {
            key: key.to_owned(),
            kind: kind.to_owned(),
            created: created.to_owned(),
            origin: origin.map(str::to_owned),
            encoding: "json".to_owned(),
            writer: WRITER.to_owned(),
        };
        serde_json::to_vec(&wire).unwrap()
    }

    /// The fast path agrees with serde_json wherever it answers.
    fn agrees(line: &[u8]) -> Result<(), TestCaseError> {
        if let Some(fast) = WireHeader::parse_canonical(line) {
            let strict: Result<WireHeader, _> = serde_json::from_slice(line);
            prop_assert_eq!(
                strict.as_ref().ok(),
                Some(&fast),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
        let via_parse = WireHeader::parse(line).ok();
        let strict = serde_json::from_slice::<WireHeader>(line).ok();
        prop_assert_eq!(via_parse, strict);
        Ok(())
    }

    #[test]
    fn the_writers_own_lines_take_the_fast_path() {
        let now = SystemTime::now();
        for origin in [None, Some("upload-7f3a"), Some("café ☕")] {
            let h = Header::new(StashKey::new("orders.dictionary").unwrap(), "value", origin, now)
                .unwrap();
            let prefix = h.encode_prefix();
            let line = &prefix[12..prefix.len() - 1];
            let fast = WireHeader::parse_canonical(line).expect("canonical");
            assert_eq!(fast.validate().unwrap(), h);
        }
        // Escapes, whitespace, another order: the strict path, same result.
        let escaped = wire_line("k", "value", "2026-01-01T00:00:00Z", Some("a\"b\n"));
        assert!(WireHeader::parse_canonical(&escaped).is_none());
        assert_eq!(WireHeader::parse(&escaped).unwrap().origin.as_deref(), Some("a\"b\n"));
        let spaced = br#"{"key": "k","kind":"v","created":"2026-01-01T00:00:00Z","origin":null,"encoding":"json","writer":"w"}"#;
        assert!(WireHeader::parse_canonical(spaced).is_none());
        assert!(WireHeader::parse(spaced).is_ok());
        let trailing = br#"{"key":"k","kind":"v","created":"c","origin":null,"encoding":"json","writer":"w"} "#;
        assert!(WireHeader::parse_canonical(trailing).is_none());
        assert!(WireHeader::parse(trailing).is_ok());
    }

    proptest! {
        #[test]
        fn fast_and_strict_header_parses_agree(
            key in "[a-z.\\\\\"\\x00-\\x1f\u{e9}]{0,12}",
            kind in "[a-z:/\\\\\"]{0,8}",
            created in "[0-9TZ:.\\-]{0,30}",
            origin in proptest::option::of("\\PC{0,12}|[\\x00-\\x7f]{0,12}"),
            cut in 0usize..200,
            flip in proptest::option::of((0usize..200, any::<u8>())),
        ) {
            let mut line = wire_line(&key, &kind, &created, origin.as_deref());
            agrees(&line)?;
            if let Some((at, byte)) = flip {
                let at = at % line.len();
                line[at] = byte;
                agrees(&line)?;
            }
            line.truncate(cut.min(line.len()));
            agrees(&line)?;
        }

        #[test]
        fn fast_and_strict_header_parses_agree_on_raw_members(
            members in proptest::collection::vec(
                proptest::collection::vec(proptest::sample::select(
                    vec![b'a', b'Z', b'0', b' ', b'\\', b'"', b'u', 0x00, 0x09, 0x1f, 0x7f, 0xc3, 0xa9, 0xe2, 0x98, 0x95, 0xff],
                ), 0..6),
                6,
            ),
            null_origin in any::<bool>(),
        ) {
            // The canonical layout with raw, unescaped bytes in each string.
            let names = ["key", "kind", "created", "origin", "encoding", "writer"];
            let mut line = Vec::new();
            for (i, (name, raw)) in names.iter().zip(&members).enumerate() {
                line.extend_from_slice(if i == 0 { b"{\"" } else { b",\"" });
                line.extend_from_slice(name.as_bytes());
                line.extend_from_slice(b"\":");
                if *name == "origin" && null_origin {
                    line.extend_from_slice(b"null");
                    continue;
                }
                line.push(b'"');
                line.extend_from_slice(raw);
                line.push(b'"');
            }
            line.push(b'}');
            agrees(&line)?;
        }

        #[test]
        fn fast_and_strict_header_parses_agree_on_any_bytes(
            line in proptest::collection::vec(any::<u8>(), 0..160),
            prefix in proptest::sample::select(vec![&b""[..], b"{\"key\":\"", b"{\"key\":\"k\",\"kind\":\"v\",\"created\":\"c\",\"origin\":"]),
        ) {
            let mut bytes = prefix.to_vec();
            bytes.extend_from_slice(&line);
            agrees(&bytes)?;
        }
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
