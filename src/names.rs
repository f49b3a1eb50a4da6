//! The one owner of on-disk names in a store's directory.
//!
//! | name | what |
//! |---|---|
//! | `KEY` | the stash of `KEY` (a [`StashKey`] never starts with `.`) |
//! | `.KEY.XXXXXXXX.tmp` | a save of `KEY` in progress, or one a crashed writer left |
//! | `.KEY.lock` | `KEY`'s advisory lock file |
//! | `.KEY.quarantined.TIME[-N]` | a stash of `KEY` moved aside by `quarantine` |
//! | `.ns.NAME/` | a reserved namespace: a store of the library's own records (the journal, the tenant guard) |
//!
//! Nothing else in the crate (the CLI included) builds or parses these
//! names; it asks this module, through [`EntryName::parse`].

use crate::key::StashKey;

pub(crate) const TEMP_SUFFIX: &str = ".tmp";
const TEMP_RAND_LEN: usize = 8;
pub(crate) const LOCK_SUFFIX: &str = ".lock";
pub(crate) const QUARANTINE_INFIX: &str = ".quarantined.";
const NAMESPACE_PREFIX: &str = ".ns.";

/// The lock file name of `key`.
pub(crate) fn lock_name(key: &StashKey) -> String {
    format!(".{key}{LOCK_SUFFIX}")
}

/// The prefix of `key`'s temp files (the random part and [`TEMP_SUFFIX`]
/// follow).
pub(crate) fn temp_prefix(key: &StashKey) -> String {
    format!(".{key}.")
}

/// The first name tried when quarantining `key` at `stamp`.
pub(crate) fn quarantine_base(key: &StashKey, stamp: &str) -> String {
    format!(".{key}{QUARANTINE_INFIX}{stamp}")
}

/// The directory name of namespace `ns`.
pub(crate) fn namespace_dir(ns: &str) -> String {
    format!("{NAMESPACE_PREFIX}{ns}")
}

/// What a name in a store's directory is.
///
/// # Examples
///
/// ```
/// use safestash::{EntryName, StashKey};
///
/// let k = StashKey::new("orders")?;
/// assert_eq!(EntryName::parse("orders"), EntryName::Stash(k.clone()));
/// assert_eq!(EntryName::parse(".orders.Ab3dE5gH.tmp"), EntryName::Temp(k.clone()));
/// assert_eq!(EntryName::parse(".orders.lock"), EntryName::Lock(k.clone()));
/// assert_eq!(
///     EntryName::parse(".orders.quarantined.2026-11-22T132001.123456789Z"),
///     EntryName::Quarantined(k),
/// );
/// assert_eq!(EntryName::parse(".ns.journal"), EntryName::Namespace("journal".into()));
/// assert_eq!(EntryName::parse(".bashrc"), EntryName::Other);
/// # Ok::<(), safestash::KeyError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EntryName {
    /// `KEY`: a stash.
    Stash(StashKey),
    /// `.KEY.XXXXXXXX.tmp`: a save in progress or a crashed writer's leftover.
    Temp(StashKey),
    /// `.KEY.lock`: a key's lock file.
    Lock(StashKey),
    /// `.KEY.quarantined.TIME[-N]`: a stash moved aside.
    Quarantined(StashKey),
    /// `.ns.NAME`: a reserved namespace (a directory of the library's own
    /// records).
    Namespace(String),
    /// Anything else: not the store's.
    Other,
}

impl EntryName {
    /// Classifies one file name of a store's directory.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(safestash::EntryName::parse("a/b"), safestash::EntryName::Other);
    /// ```
    pub fn parse(name: &str) -> EntryName {
        if let Ok(key) = StashKey::new(name) {
            return EntryName::Stash(key);
        }
        if let Some(key) = temp_file_key(name) {
            return EntryName::Temp(key);
        }
        if let Some(ns) = name.strip_prefix(NAMESPACE_PREFIX) {
            if StashKey::new(ns).is_ok() {
                return EntryName::Namespace(ns.to_owned());
            }
            return EntryName::Other;
        }
        if let Some(inner) = name.strip_prefix('.') {
            if let Some(key) = inner.strip_suffix(LOCK_SUFFIX).and_then(|k| StashKey::new(k).ok()) {
                return EntryName::Lock(key);
            }
            if let Some((key, stamp)) = inner.rsplit_once(QUARANTINE_INFIX) {
                if let (false, Ok(key)) = (stamp.is_empty(), StashKey::new(key)) {
                    return EntryName::Quarantined(key);
                }
            }
        }
        EntryName::Other
    }
}

/// The key of a temp file name `.KEY.XXXXXXXX.tmp` (a save in progress, or
/// one a crashed writer left), if `name` is one; see `docs/FORMAT.md`.
///
/// # Examples
///
/// ```
/// use safestash::temp_file_key;
///
/// assert_eq!(temp_file_key(".orders.Ab3dE5gH.tmp").unwrap().as_str(), "orders");
/// assert!(temp_file_key("orders").is_none());
/// assert!(temp_file_key(".orders.lock").is_none());
/// ```
pub fn temp_file_key(name: &str) -> Option<StashKey> {
    let inner = name.strip_prefix('.')?.strip_suffix(TEMP_SUFFIX)?;
    let (key, rand) = inner.rsplit_once('.')?;
    if rand.len() != TEMP_RAND_LEN || !rand.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    StashKey::new(key).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_recognised_exactly() {
        assert_eq!(temp_file_key(".a.b.Ab3dE5gH.tmp").unwrap().as_str(), "a.b");
        for not in [
            ".a.Ab3dE5g.tmp",
            "a.Ab3dE5gH.tmp",
            ".a.Ab3dE5gH.tmpx",
            ".a.lock",
            ".Ab3dE5gH.tmp",
            "..Ab3dE5gH.tmp",
        ] {
            assert!(temp_file_key(not).is_none(), "{not}");
        }
    }

    #[test]
    fn side_files_are_recognised_by_name() {
        let key = |s: &str| StashKey::new(s).unwrap();
        assert_eq!(EntryName::parse(".a.b.Ab3dE5gH.tmp"), EntryName::Temp(key("a.b")));
        assert_eq!(
            EntryName::parse(".a.quarantined.2026-11-22T134439.123456789Z-1"),
            EntryName::Quarantined(key("a"))
        );
        assert_eq!(EntryName::parse(".a.lock"), EntryName::Lock(key("a")));
        assert_eq!(EntryName::parse("a.b"), EntryName::Stash(key("a.b")));
        for other in [
            ".a.Ab3dE5g.tmp",
            ".a.Ab3dE5gH.tmpx",
            "..Ab3dE5gH.tmp",
            ".a.quarantined.",
            ".ns.",
            ".ns.a/b",
        ] {
            assert_eq!(EntryName::parse(other), EntryName::Other, "{other}");
        }
    }
}
