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

#[derive(Serialize, Deserialize)]
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{MAX_PREFIX_LEN, decode, encode};

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
