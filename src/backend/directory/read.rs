//! The directory's reads: an envelope, the entries, the namespaces, and
//! the cleanup of what crashed writers left.

use std::io::{self, Read};

use super::{Directory, Entry, Fetched, io_err};
use crate::error::{Error, IoOp, Result};
use crate::fs::{FileKind, Fs, Opened};
use crate::key::StashKey;
use crate::names::{EntryName, temp_file_key};

/// `load` reads files up to this size whole and verifies them in memory
/// (the value will be in memory anyway); larger ones are verified while
/// they are parsed, in one streaming pass.
pub(super) const LOAD_WHOLE_LIMIT: u64 = 256 << 20;
/// `verify` keeps no payload, so above this size it streams.
pub(super) const VERIFY_WHOLE_LIMIT: u64 = 1 << 20;

impl<F: Fs> Directory<F> {
    /// The file of `key`, open for reading, and its length.
    pub(super) fn fetch(&self, key: &StashKey) -> Result<Option<Fetched>> {
        let path = self.path_of(key);
        match self.fs.open_read(&path).map_err(io_err(IoOp::Open, &path))? {
            Opened::Missing => Ok(None),
            Opened::NotAFile(found) => {
                Err(Error::NotAFile { path, found, expected: FileKind::File })
            }
            Opened::File { reader, len } => Ok(Some(Fetched { len, reader: Box::new(reader) })),
        }
    }

    /// The directory's entries, sorted: only those named as stashes when
    /// `stashes_only`; with the first `head_len` bytes of each stash, temp
    /// file and quarantined stash.
    pub(super) fn scan(&self, head_len: usize, stashes_only: bool) -> Result<Vec<Entry>> {
        let entries = match self.fs.read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(IoOp::ReadDir, &self.dir)(e)),
        };
        let mut found: Vec<Entry> = entries
            .into_iter()
            .filter_map(|e| Some((e.name.into_string().ok()?, e.kind)))
            .filter(|(name, _)| !stashes_only || StashKey::new(name.as_str()).is_ok())
            .map(|(name, kind)| self.entry_of(name, kind, head_len))
            .collect();
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    /// The entry `name`, if there is one.
    pub(super) fn one_entry(&self, name: &str, head_len: usize) -> Result<Option<Entry>> {
        let path = self.dir.join(name);
        let Some(kind) = self.fs.metadata(&path).map_err(io_err(IoOp::Inspect, &path))? else {
            return Ok(None);
        };
        Ok(Some(self.entry_of(name.to_owned(), kind, head_len)))
    }

    fn entry_of(&self, name: String, kind: FileKind, head_len: usize) -> Entry {
        let has_head = matches!(
            EntryName::parse(&name),
            EntryName::Stash(_) | EntryName::Temp(_) | EntryName::Quarantined(_)
        );
        let (len, head) =
            if has_head { self.head_of(&name, kind, head_len) } else { (None, Ok(Vec::new())) };
        Entry { name, kind, len, head }
    }

    /// The length and first `head_len` bytes of the file `name`.
    fn head_of(
        &self,
        name: &str,
        kind: FileKind,
        head_len: usize,
    ) -> (Option<u64>, Result<Vec<u8>>) {
        let path = self.dir.join(name);
        if head_len == 0 && kind == FileKind::File {
            // Asked for names only: nothing is opened.
            return (None, Ok(Vec::new()));
        }
        if kind != FileKind::File {
            return (None, Err(Error::NotAFile { path, found: kind, expected: FileKind::File }));
        }
        let (reader, len) = match self.fs.open_read(&path) {
            Ok(Opened::File { reader, len }) => (reader, len),
            Ok(Opened::Missing) => {
                let e = io::Error::from(io::ErrorKind::NotFound);
                return (None, Err(io_err(IoOp::Open, &path)(e)));
            }
            Ok(Opened::NotAFile(found)) => {
                return (Some(0), Err(Error::NotAFile { path, found, expected: FileKind::File }));
            }
            Err(e) => return (None, Err(io_err(IoOp::Open, &path)(e))),
        };
        let mut head = Vec::with_capacity(head_len);
        if let Err(e) = reader.take(head_len as u64).read_to_end(&mut head) {
            return (Some(len), Err(io_err(IoOp::Read, &path)(e)));
        }
        (Some(len), Ok(head))
    }

    /// The reserved namespaces present, sorted.
    pub(super) fn namespaces(&self) -> Result<Vec<String>> {
        let entries = match self.fs.read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(IoOp::ReadDir, &self.dir)(e)),
        };
        let mut found: Vec<String> = entries
            .into_iter()
            .filter(|e| e.kind == FileKind::Dir)
            .filter_map(|e| match EntryName::parse(e.name.to_str()?) {
                EntryName::Namespace(ns) => Some(ns),
                _ => None,
            })
            .collect();
        found.sort();
        Ok(found)
    }

    /// Removes the temp files crashed writers left (those whose key's lock
    /// is free: a live writer holds it while its temp file exists), and
    /// returns their names, sorted.
    pub(super) fn remove_leftovers(&self) -> Result<Vec<String>> {
        let entries = match self.fs.read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(IoOp::ReadDir, &self.dir)(e)),
        };
        let mut removed = Vec::new();
        let mut first_error = None;
        for entry in entries {
            let Some(name) = entry.name.to_str() else { continue };
            let Some(key) = temp_file_key(name) else { continue };
            let path = self.dir.join(name);
            let outcome = match self.take_lock(&key, false, false) {
                Ok(None) => continue,
                Err(e) => Err(e),
                Ok(Some(_lock)) => match self.fs.remove_file(&path) {
                    Ok(()) => {
                        removed.push(name.to_owned());
                        Ok(())
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(io_err(IoOp::Remove, &path)(e)),
                },
            };
            // One bad entry does not stop the others from being cleaned.
            if let Err(e) = outcome {
                first_error.get_or_insert(e);
            }
        }
        if !removed.is_empty() {
            self.fs.sync_dir(&self.dir).map_err(io_err(IoOp::SyncDir, &self.dir))?;
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        removed.sort();
        Ok(removed)
    }
}
