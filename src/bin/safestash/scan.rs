//! What is in a store directory: every stash with its verified status, and
//! the files crashed writers and quarantines leave next to them.
//!
//! Stashes come from the library ([`Store::list`] for headers,
//! [`Store::verify`] for status); temp leftovers and quarantined files are
//! recognised from the name patterns in docs/FORMAT.md.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use safestash::envelope::{self, MAX_PREFIX_LEN};
use safestash::{Digest, Error, StashKey, Store, envelope::Header};

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

/// Every stash, temp leftover and quarantined file in the store, sorted by
/// key, then stashes before temp leftovers before quarantined files, then by
/// file name. Reads every stash in full to verify it.
///
/// # Errors
///
/// When the directory cannot be listed (a missing directory included: an
/// operator who names one means a store that should be there).
pub fn scan(store: &Store) -> Result<Vec<Entry>, Failure> {
    let dir = store.dir();
    let listing = std::fs::read_dir(dir)
        .map_err(|e| Failure::io(format!("failed to list directory `{}`", dir.display()), e))?;
    let mut entries = Vec::new();
    for item in listing {
        let item = item
            .map_err(|e| Failure::io(format!("failed to list directory `{}`", dir.display()), e))?;
        let Ok(name) = item.file_name().into_string() else { continue };
        let Some((key, status)) = side_file(&name) else { continue };
        // `DirEntry::metadata` does not follow symlinks; only regular files
        // are opened, so a FIFO named like a temp file cannot block us.
        let meta = item.metadata().ok().filter(|m| m.is_file());
        let header = meta.as_ref().and_then(|_| peek_header(&dir.join(&name)));
        entries.push(Entry {
            key,
            file: name,
            status,
            header,
            size: meta.map(|m| m.len()),
            digest: None,
            problem: None,
        });
    }

    let mut headers: std::collections::BTreeMap<StashKey, _> =
        store.list()?.into_iter().map(|info| (info.key.clone(), info)).collect();
    for report in store.verify()? {
        let listed = headers.remove(&report.key);
        let file = report.key.as_str().to_owned();
        let entry = match report.result {
            Ok(meta) => Entry {
                key: report.key,
                file,
                status: Status::Ok,
                header: Some(meta.header),
                size: Some(meta.size),
                digest: Some(meta.digest),
                problem: None,
            },
            Err(e) => {
                let (status, problem) = classify(&e);
                let (header, size) = match listed {
                    Some(info) => (info.header.ok(), Some(info.size)),
                    None => (None, None),
                };
                let size = if status == Status::NotAFile { None } else { size };
                Entry { key: report.key, file, status, header, size, digest: None, problem }
            }
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

/// The key and status of a temp leftover (`.KEY.XXXXXXXX.tmp`) or a
/// quarantined file (`.KEY.quarantined.TIME`), from its name.
pub fn side_file(name: &str) -> Option<(StashKey, Status)> {
    if let Some(key) = safestash::temp_file_key(name) {
        return Some((key, Status::TempLeftover));
    }
    let (key, stamp) = name.strip_prefix('.')?.rsplit_once(".quarantined.")?;
    if stamp.is_empty() {
        return None;
    }
    Some((StashKey::new(key).ok()?, Status::Quarantined))
}

/// The header of the file at `path`, read without checking the digest, if
/// it is a regular file that starts with a readable header. Never follows a
/// symlink and never blocks on a FIFO.
pub fn peek_header(path: &Path) -> Option<Header> {
    let file: File = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut prefix = Vec::with_capacity(MAX_PREFIX_LEN);
    file.take(MAX_PREFIX_LEN as u64).read_to_end(&mut prefix).ok()?;
    envelope::read_header(&prefix).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn side_files_are_recognised_by_name() {
        let key = |s: &str| StashKey::new(s).unwrap();
        assert_eq!(side_file(".a.b.Ab3dE5gH.tmp"), Some((key("a.b"), Status::TempLeftover)));
        assert_eq!(
            side_file(".a.quarantined.2026-11-22T134439.123456789Z-1"),
            Some((key("a"), Status::Quarantined))
        );
        for not in [
            "a.b",
            ".a.lock",
            ".a.Ab3dE5g.tmp",
            ".a.Ab3dE5gH.tmpx",
            "..Ab3dE5gH.tmp",
            ".a.quarantined.",
            "a.quarantined.x",
        ] {
            assert_eq!(side_file(not), None, "{not}");
        }
    }

    #[test]
    fn worse_outcomes_compare_greater() {
        assert!(Outcome::Failed > Outcome::Finding && Outcome::Finding > Outcome::Ok);
        assert_eq!(Status::Corrupt.outcome(), Outcome::Finding);
        assert_eq!(Status::Unreadable.outcome(), Outcome::Failed);
    }
}
