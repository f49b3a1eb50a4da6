//! The directory's write protocols: save, batch, clear, quarantine.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use super::{BatchOutcome, BatchPut, Directory, Fill, Outcome, Precondition, io_err};
use crate::digest::Digest;
use crate::envelope;
use crate::error::{Error, IoOp, Result};
use crate::fs::{FileKind, Fs};
use crate::key::StashKey;
use crate::names::{self, TEMP_SUFFIX};

/// How many temp files a [`Batch`](crate::Batch) writes before it makes
/// them durable together ([`Fs::sync_files`]): the open descriptors a batch
/// holds at most.
///
/// # Examples
///
/// ```
/// assert_eq!(safestash::FLUSH_GROUP, 256);
/// ```
pub const FLUSH_GROUP: usize = 256;

/// How many bytes of a temp file are written before their writeback is
/// started ([`Fs::start_writeback`]): a large stash's writeback overlaps
/// with serializing and hashing the rest instead of all waiting for the
/// final `fsync` (a 1 MiB save's `fsync` went from 1.1 ms to 0.4 ms).
/// Smaller stashes never reach it. Measured on this project's disk
/// (issue 16), every 256 KiB cost more in `fadvise` calls than it saved
/// (1.19-1.23 × the floor at 1 MiB), every 512 KiB measured 1.12-1.22,
/// every 768 KiB 1.11-1.21, and every 8 MiB 1.21-1.36.
const WRITEBACK_CHUNK: u64 = 512 << 10;

/// A temp file being written, which starts the writeback of every
/// [`WRITEBACK_CHUNK`] written, and remembers whether a write failed (the
/// error then names the temp file).
struct Writeback<'f, F: Fs> {
    fs: &'f F,
    file: F::File,
    written: u64,
    started: u64,
    failed: bool,
}

impl<F: Fs> Write for Writeback<'_, F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf).inspect_err(|_| self.failed = true)?;
        self.written += n as u64;
        if self.written - self.started >= WRITEBACK_CHUNK {
            self.fs
                .start_writeback(&mut self.file, self.started, self.written - self.started)
                .inspect_err(|_| self.failed = true)?;
            self.started = self.written;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush().inspect_err(|_| self.failed = true)
    }
}

/// A batch's stash between its two steps: its temp file, written.
struct Written {
    tmp: PathBuf,
}

impl<F: Fs> Directory<F> {
    /// The save protocol: take the key's lock; check `cond`; create
    /// `.KEY.XXXXXXXX.tmp` with `O_CREAT|O_EXCL`, mode 0600; `fill` it in
    /// one pass; `fsync` it; close it; rename it over `KEY`; `fsync` the
    /// directory. The directory (and missing parents) are created first
    /// if needed, each fsynced into its parent.
    pub(super) fn save(
        &self,
        key: &StashKey,
        cond: Precondition,
        fill: &mut Fill<'_>,
    ) -> Result<Outcome> {
        let _lock = self.wait_lock(key, true)?;
        if let Some(refused) = self.check(key, cond)? {
            return Ok(refused);
        }
        let path = self.path_of(key);
        self.expect_file_or_nothing(&path)?;
        self.sync_chain()?;
        let (file, tmp) = self
            .fs
            .create_temp(&self.dir, &names::temp_prefix(key), TEMP_SUFFIX)
            .map_err(io_err(IoOp::CreateTemp, &self.dir))?;
        let written = self.fill_temp(file, &tmp, fill).and_then(|()| {
            self.fs.rename(&tmp, &path).map_err(|source| Error::Rename {
                from: tmp.clone(),
                to: path.clone(),
                source,
            })
        });
        if let Err(e) = written {
            // Best effort: a leftover is recognised and removed by `cleanup`.
            let _ = self.fs.remove_file(&tmp);
            return Err(e);
        }
        self.fs.sync_dir(&self.dir).map_err(io_err(IoOp::SyncDir, &self.dir))?;
        Ok(Outcome::Done)
    }

    /// Writes the envelope into the temp file, fsyncs and closes it.
    fn fill_temp(&self, file: F::File, tmp: &Path, fill: &mut Fill<'_>) -> Result<()> {
        let mut file = self.write_temp(file, tmp, fill)?;
        self.fs.sync_file(&mut file).map_err(io_err(IoOp::SyncFile, tmp))
    }

    /// Writes the envelope into the temp file and hands the file back,
    /// not yet synced. A failed write names the temp file.
    fn write_temp(&self, file: F::File, tmp: &Path, fill: &mut Fill<'_>) -> Result<F::File> {
        let mut sink = Writeback { fs: &self.fs, file, written: 0, started: 0, failed: false };
        match fill(&mut sink) {
            Ok(_) => Ok(sink.file),
            Err(Error::Io { op: IoOp::Write, source, .. }) if sink.failed => {
                Err(Error::Io { op: IoOp::Write, path: tmp.to_owned(), source })
            }
            Err(e) => Err(e),
        }
    }

    /// `None` when `cond` holds for `key`'s stash (the caller holds the
    /// lock), else the refusal.
    fn check(&self, key: &StashKey, cond: Precondition) -> Result<Option<Outcome>> {
        Ok(match cond {
            Precondition::Any => None,
            Precondition::Absent => {
                if self.expect_file_or_nothing(&self.path_of(key))? {
                    Some(Outcome::Refused { current: self.recorded_digest(key)? })
                } else {
                    None
                }
            }
            Precondition::Unchanged(expected) => match self.recorded_digest(key)? {
                Some(found) if found == expected => None,
                current => Some(Outcome::Refused { current }),
            },
        })
    }

    /// A batch: every temp file written and made durable in groups of
    /// [`FLUSH_GROUP`], nothing renamed yet; then each rename under its
    /// key's lock, after its condition; then one directory `fsync`. When
    /// that `fsync` fails, none of the renamed stashes is acknowledged.
    pub(super) fn save_batch(&self, puts: &[BatchPut<'_>]) -> BatchOutcome {
        let mut out = BatchOutcome { outcomes: vec![None; puts.len()], failed: None };
        if let Err(e) = self.ensure_dir().and_then(|()| self.sync_chain()) {
            out.failed = Some((0, e));
            return out;
        }
        // Step 1: every temp file written and durable, nothing renamed yet.
        let mut written: Vec<Written> = Vec::with_capacity(puts.len());
        let mut group: Vec<F::File> = Vec::with_capacity(puts.len().min(FLUSH_GROUP));
        for (i, put) in puts.iter().enumerate() {
            let step = self.batch_temp(put).and_then(|(file, w)| {
                group.push(file);
                written.push(w);
                if group.len() < FLUSH_GROUP && i + 1 < puts.len() {
                    return Ok(());
                }
                let synced = self.fs.sync_files(&mut group);
                group.clear(); // closes them
                synced.map_err(io_err(IoOp::SyncFile, &self.dir))
            });
            if let Err(e) = step {
                drop(group);
                for w in &written {
                    let _ = self.fs.remove_file(&w.tmp);
                }
                out.failed = Some((i, e));
                return out;
            }
        }
        // Step 2: each rename under its key's lock, after its condition.
        let mut renamed = 0;
        for (i, (put, w)) in puts.iter().zip(&written).enumerate() {
            match self.rename_in(put, w) {
                Ok(None) => renamed += 1,
                Ok(Some(refused)) => {
                    out.outcomes[i] = Some(refused);
                    break;
                }
                Err(e) => {
                    out.failed = Some((i, e));
                    break;
                }
            }
        }
        for w in &written[renamed..] {
            let _ = self.fs.remove_file(&w.tmp);
        }
        // Step 3: one directory fsync makes every rename durable.
        if let Err(e) = self.fs.sync_dir(&self.dir) {
            // Renamed but maybe not durable: acknowledge none of them.
            out.outcomes = vec![None; puts.len()];
            out.failed = Some((0, io_err(IoOp::SyncDir, &self.dir)(e)));
            return out;
        }
        for o in &mut out.outcomes[..renamed] {
            *o = Some(Outcome::Done);
        }
        tracing::info!(stashes = renamed, "batch written");
        out
    }

    /// Step 1 of a batch for one stash: its temp file, written, not yet
    /// durable, and handed back open.
    fn batch_temp(&self, put: &BatchPut<'_>) -> Result<(F::File, Written)> {
        self.expect_file_or_nothing(&self.path_of(put.key))?;
        let (file, tmp) = self
            .fs
            .create_temp(&self.dir, &names::temp_prefix(put.key), TEMP_SUFFIX)
            .map_err(io_err(IoOp::CreateTemp, &self.dir))?;
        match self.write_temp(file, &tmp, &mut |sink| (put.fill)(sink)) {
            Ok(file) => Ok((file, Written { tmp })),
            Err(e) => {
                let _ = self.fs.remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Step 2 of a batch for one stash: the rename, under the key's lock.
    fn rename_in(&self, put: &BatchPut<'_>, w: &Written) -> Result<Option<Outcome>> {
        let path = self.path_of(put.key);
        let _lock = self.wait_lock(put.key, false)?;
        if let Some(refused) = self.check(put.key, put.cond)? {
            return Ok(Some(refused));
        }
        self.expect_file_or_nothing(&path)?;
        self.fs.rename(&w.tmp, &path).map_err(|source| Error::Rename {
            from: w.tmp.clone(),
            to: path.clone(),
            source,
        })?;
        Ok(None)
    }

    /// Removes `key`'s stash if `cond` holds, durably; a missing stash's
    /// absence is made durable too (a directory `fsync`).
    pub(super) fn remove(&self, key: &StashKey, cond: Precondition) -> Result<Outcome> {
        let held = self.locked.as_ref() == Some(key);
        if !held && !self.expect_file_or_nothing(&self.path_of(key))? {
            self.sync_absence()?;
            return Ok(Outcome::Missing);
        }
        let _lock = self.wait_lock(key, false)?;
        if let Precondition::Unchanged(expected) = cond {
            match self.recorded_digest(key)? {
                Some(found) if found == expected => {}
                current => return Ok(Outcome::Refused { current }),
            }
        }
        let path = self.path_of(key);
        if !self.expect_file_or_nothing(&path)? {
            self.sync_absence()?;
            return Ok(Outcome::Missing);
        }
        match self.fs.remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.sync_absence()?;
                return Ok(Outcome::Missing);
            }
            Err(e) => return Err(io_err(IoOp::Remove, &path)(e)),
        }
        self.fs.sync_dir(&self.dir).map_err(io_err(IoOp::SyncDir, &self.dir))?;
        Ok(Outcome::Done)
    }

    /// Moves `key`'s stash to `.KEY.quarantined.STAMP` (`base`), or to
    /// `base-N` if that name is taken, durably; the name used, or `None`
    /// when there is no stash.
    pub(super) fn set_aside(&self, key: &StashKey, base: &str) -> Result<Option<String>> {
        let held = self.locked.as_ref() == Some(key);
        if !held && !self.expect_file_or_nothing(&self.path_of(key))? {
            self.sync_absence()?;
            return Ok(None);
        }
        let _lock = self.wait_lock(key, false)?;
        let path = self.path_of(key);
        if !self.expect_file_or_nothing(&path)? {
            self.sync_absence()?;
            return Ok(None);
        }
        // Quarantine names are only made under the key's lock, so checking
        // for a free name first cannot race with another quarantine.
        let mut name = base.to_owned();
        let mut n = 1;
        while self
            .fs
            .metadata(&self.dir.join(&name))
            .map_err(io_err(IoOp::Inspect, &self.dir.join(&name)))?
            .is_some()
        {
            name = format!("{base}-{n}");
            n += 1;
        }
        let aside = self.dir.join(&name);
        self.fs.rename(&path, &aside).map_err(|source| Error::Rename {
            from: path.clone(),
            to: aside.clone(),
            source,
        })?;
        self.fs.sync_dir(&self.dir).map_err(io_err(IoOp::SyncDir, &self.dir))?;
        Ok(Some(name))
    }

    /// The digest recorded in the trailer of `key`'s stash (not verified);
    /// `None` when there is no stash or it is too short to have one.
    fn recorded_digest(&self, key: &StashKey) -> Result<Option<Digest>> {
        let path = self.path_of(key);
        let (mut reader, len) = match self.fs.open_read(&path).map_err(io_err(IoOp::Open, &path))? {
            crate::fs::Opened::File { reader, len } => (reader, len),
            crate::fs::Opened::Missing => return Ok(None),
            crate::fs::Opened::NotAFile(found) => {
                return Err(Error::NotAFile { path, found, expected: FileKind::File });
            }
        };
        let Some(start) = len.checked_sub(envelope::TRAILER_LEN as u64) else {
            return Ok(None);
        };
        let mut trailer = [0u8; envelope::TRAILER_LEN];
        reader.seek(SeekFrom::Start(start)).map_err(io_err(IoOp::Read, &path))?;
        reader.read_exact(&mut trailer).map_err(io_err(IoOp::Read, &path))?;
        Ok(envelope::recorded_digest(&trailer))
    }

    /// Makes the absence of an entry durable: a missing directory has
    /// nothing to sync.
    fn sync_absence(&self) -> Result<()> {
        match self.fs.sync_dir(&self.dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(io_err(IoOp::SyncDir, &self.dir)(e))
            }
            _ => Ok(()),
        }
    }

    /// Refuses a symlink, directory or special file at a stash path.
    pub(super) fn expect_file_or_nothing(&self, path: &Path) -> Result<bool> {
        match self.fs.metadata(path).map_err(io_err(IoOp::Inspect, path))? {
            None => Ok(false),
            Some(FileKind::File) => Ok(true),
            Some(found) => {
                Err(Error::NotAFile { path: path.to_owned(), found, expected: FileKind::File })
            }
        }
    }

    /// Once per directory: fsyncs every ancestor, so that the directory
    /// itself is durably reachable even if whoever created it (another
    /// process, or an earlier failed save) never synced it.
    fn sync_chain(&self) -> Result<()> {
        if self.chain_synced.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut cur = self.dir.as_path();
        while let Some(parent) = cur.parent() {
            let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
            match self.fs.sync_dir(parent) {
                Ok(()) => {}
                // An ancestor this user may pass through but not open (mode
                // 0711, say) cannot be synced by anyone but its owner; it
                // was not created by this store.
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {}
                Err(e) => return Err(io_err(IoOp::SyncDir, parent)(e)),
            }
            if parent == Path::new(".") {
                break;
            }
            cur = parent;
        }
        self.chain_synced.store(true, Ordering::Release);
        Ok(())
    }

    /// Creates the directory and missing parents, each fsynced into its
    /// parent.
    pub(super) fn ensure_dir(&self) -> Result<()> {
        let mut missing = Vec::new();
        let mut cur = self.dir.as_path();
        loop {
            match self.fs.metadata(cur).map_err(io_err(IoOp::Inspect, cur))? {
                Some(FileKind::Dir | FileKind::Symlink) => break,
                Some(found) => {
                    return Err(Error::NotAFile {
                        path: cur.to_owned(),
                        found,
                        expected: FileKind::Dir,
                    });
                }
                None => missing.push(cur),
            }
            match cur.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => cur = parent,
                _ => break,
            }
        }
        for dir in missing.into_iter().rev() {
            match self.fs.create_dir(dir) {
                Ok(()) => {}
                // Another writer created it first; it syncs it too, but so do we.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err(IoOp::CreateDir, dir)(e)),
            }
            let parent = match dir.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            self.fs.sync_dir(parent).map_err(io_err(IoOp::SyncDir, parent))?;
        }
        Ok(())
    }
}
