//! What is in a store directory: every stash with its verified status, and
//! the files crashed writers and quarantines leave next to them, for the
//! user's keyspace and for each reserved namespace.
//!
//! Everything comes from the library ([`Store::inspect`], which classifies
//! each name with `EntryName` and verifies each stash): the CLI neither
//! parses on-disk names nor opens the files itself.

use std::time::{Duration, SystemTime};

use safestash::envelope::{self, Header};
use safestash::{Digest, EntryName, Error, StashKey, Store};

use crate::Failure;

/// What one entry of a store directory is, and whether it is intact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// A stash that passed every check (digest, header, key).
    Ok,
    /// A stash file that fails verification: damaged, truncated, written
    /// for another key, or not a stash at all.
    Corrupt,
    /// Something other than a regular file (a symlink, a directory) sits at
    /// a stash name; the library never follows or loads it.
    NotAFile,
    /// An intact-looking stash of a format version this build cannot read.
    Unsupported,
    /// A stash that could not be read (an I/O error such as EACCES).
    Unreadable,
    /// `.KEY.XXXXXXXX.tmp`: a save in progress, or left by a crashed writer.
    TempLeftover,
    /// `.KEY.quarantined.TIME`: a stash moved aside by `quarantine`.
    Quarantined,
}

impl Status {
    /// The stable name used in tables and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Corrupt => "corrupt",
            Status::NotAFile => "not-a-file",
            Status::Unsupported => "unsupported-version",
            Status::Unreadable => "unreadable",
            Status::TempLeftover => "temp-leftover",
            Status::Quarantined => "quarantined",
        }
    }

    /// Whether the entry is a stash (named after its key), as opposed to a
    /// temp leftover or a quarantined file.
    pub fn is_stash(self) -> bool {
        !matches!(self, Status::TempLeftover | Status::Quarantined)
    }

    /// What this status means for the exit code of `verify` and `gc`:
    /// damage is a finding (1); a stash that could not be checked is an
    /// error (2).
    pub fn outcome(self) -> Outcome {
        match self {
            Status::Corrupt | Status::NotAFile => Outcome::Finding,
            Status::Unsupported | Status::Unreadable => Outcome::Failed,
            Status::Ok | Status::TempLeftover | Status::Quarantined => Outcome::Ok,
        }
    }
}

/// How a command ended; the exit code is the discriminant. A worse outcome
/// compares greater, so `max` combines them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Exit 0: done, or nothing to do.
    Ok = 0,
    /// Exit 1: the command ran and found a damaged (or, for `show`, absent)
    /// stash.
    Finding = 1,
    /// Exit 2: usage error, I/O error, or something that could not be done
    /// or checked.
    Failed = 2,
}

/// One file of the store directory that `safestash` knows about.
#[derive(Debug)]
pub struct Entry {
    /// The key the file belongs to.
    pub key: StashKey,
    /// The file's name inside the store directory.
    pub file: String,
    /// What it is and whether it is intact.
    pub status: Status,
    /// The header: verified for [`Status::Ok`], read without checking the
    /// digest otherwise (absent when it cannot be read at all).
    pub header: Option<Header>,
    /// The file's size in bytes (absent for something that is not a file).
    pub size: Option<u64>,
    /// The verified SHA-256 ([`Status::Ok`] only).
    pub digest: Option<Digest>,
    /// Why a stash is not [`Status::Ok`], in one line.
    pub problem: Option<String>,
}

impl Entry {
    /// How long ago the header says the file was written (zero if that is in
    /// the future); absent without a readable header.
    pub fn age(&self, now: SystemTime) -> Option<Duration> {
        self.header.as_ref().map(|h| age_of(h.created(), now))
    }
}

/// `now - created`, or zero when `created` is in the future (clock skew).
pub fn age_of(created: SystemTime, now: SystemTime) -> Duration {
    now.duration_since(created).unwrap_or(Duration::ZERO)
}

/// Where a group of reserved records lives: a reserved namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// A reserved namespace.
    Namespace(String),
}

impl Place {
    /// The namespace these records belong to: the `--namespace` value that
    /// reaches them and their group in JSON.
    pub fn namespace(&self) -> &str {
        match self {
            Place::Namespace(ns) => ns,
        }
    }

    /// The heading of the group in `list`, without its count.
    pub fn heading(&self) -> String {
        match self {
            Place::Namespace(ns) => format!("namespace {ns}"),
        }
    }

    /// How `verify` names an entry of the group: "`KEY` in namespace NS".
    pub fn describe(&self, key: &StashKey) -> String {
        match self {
            Place::Namespace(ns) => format!("`{key}` in namespace {ns}"),
        }
    }
}

/// The library's own records: a reserved namespace.
#[derive(Debug)]
pub struct Group {
    /// Where they are.
    pub place: Place,
    /// Every entry, sorted as [`scan`] sorts; `file` is relative to the
    /// store directory.
    pub entries: Vec<Entry>,
}

/// A store directory's contents: the user's stashes, then the library's
/// own records, group by group.
#[derive(Debug)]
pub struct Scan {
    /// The user's stashes, temp leftovers and quarantined files.
    pub user: Vec<Entry>,
    /// Each reserved namespace, sorted by name.
    pub groups: Vec<Group>,
}

impl Scan {
    /// Every entry, the user's and the groups'.
    pub fn all(&self) -> impl Iterator<Item = &Entry> {
        self.user.iter().chain(self.groups.iter().flat_map(|g| &g.entries))
    }
}

/// Every stash, temp leftover and quarantined file in the store and in each
/// of its reserved namespaces, each list sorted by key, then stashes before
/// temp leftovers before quarantined files, then by file name. Reads every
/// stash in full to verify it.
///
/// # Errors
///
/// When a directory cannot be listed.
pub fn scan(store: &Store) -> Result<Scan, Failure> {
    let user = entries_of(store, "")?;
    let mut groups = Vec::new();
    for ns in store.namespaces()? {
        let records = store.namespace(&ns)?;
        // Files of the namespace are named relative to the store directory.
        let prefix = records.dir().strip_prefix(store.dir()).unwrap_or(records.dir());
        let prefix = format!("{}/", prefix.display());
        groups.push(Group { place: Place::Namespace(ns), entries: entries_of(&records, &prefix)? });
    }
    Ok(Scan { user, groups })
}

/// The entries of one store directory, `prefix` before each file name.
fn entries_of(store: &Store, prefix: &str) -> Result<Vec<Entry>, Failure> {
    let mut entries = Vec::new();
    for found in store.inspect()? {
        let file = format!("{prefix}{}", found.file);
        let header = found.header.and_then(Result::ok);
        let entry = match found.name {
            EntryName::Stash(key) => match found.verified {
                Some(Ok(meta)) => Entry {
                    key,
                    file,
                    status: Status::Ok,
                    header: Some(meta.header),
                    size: Some(meta.size),
                    digest: Some(meta.digest),
                    problem: None,
                },
                Some(Err(e)) => {
                    let (status, problem) = classify(&e);
                    Entry { key, file, status, header, size: found.size, digest: None, problem }
                }
                None => continue,
            },
            EntryName::Temp(key) => Entry {
                key,
                file,
                status: Status::TempLeftover,
                header,
                size: found.size,
                digest: None,
                problem: None,
            },
            EntryName::Quarantined(key) => Entry {
                key,
                file,
                status: Status::Quarantined,
                header,
                size: found.size,
                digest: None,
                problem: None,
            },
            _ => continue,
        };
        entries.push(entry);
    }
    entries
        .sort_by(|a, b| (&a.key, rank(a.status), &a.file).cmp(&(&b.key, rank(b.status), &b.file)));
    Ok(entries)
}

/// Stashes first, then temp leftovers, then quarantined files.
fn rank(status: Status) -> u8 {
    match status {
        Status::TempLeftover => 1,
        Status::Quarantined => 2,
        _ => 0,
    }
}

/// The status of a stash that failed verification, and why, in one line.
pub fn classify(e: &Error) -> (Status, Option<String>) {
    match e {
        Error::Corrupt { reason, .. } => (Status::Corrupt, Some(reason.to_string())),
        Error::NotAFile { found, .. } => {
            (Status::NotAFile, Some(format!("a {found} is where the stash file should be")))
        }
        Error::UnsupportedVersion { version, .. } => (
            Status::Unsupported,
            Some(format!(
                "format version {version}, written by a newer safestash; this one reads version {}",
                envelope::VERSION
            )),
        ),
        other => (Status::Unreadable, Some(crate::one_line(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worse_outcomes_compare_greater() {
        assert!(Outcome::Failed > Outcome::Finding && Outcome::Finding > Outcome::Ok);
        assert_eq!(Status::Corrupt.outcome(), Outcome::Finding);
        assert_eq!(Status::Unreadable.outcome(), Outcome::Failed);
    }
}
