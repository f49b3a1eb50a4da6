//! Read-only views of a store's directory for tools (the operator CLI):
//! every entry with what it is, a key's stash in detail, whether a key is
//! locked, a stash's payload bytes. Nothing here creates or changes a file.

use super::load::Payload;
use super::streamed::decode_error;
use super::*;

/// One entry of a store's directory, from [`Store::inspect`] or
/// [`Store::inspect_key`].
///
/// # Examples
///
/// ```
/// use safestash::{EntryName, StashKey, Store};
///
/// let dir = tempfile::tempdir()?;
/// let store = Store::open(dir.path())?;
/// store.save(&StashKey::new("k")?, &1)?;
/// let found = store.inspect_key(&StashKey::new("k")?)?.expect("saved");
/// assert_eq!(found.name, EntryName::Stash(StashKey::new("k")?));
/// assert!(found.verified.expect("a stash is verified").is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct Inspected {
    /// The entry's file name in the store's directory.
    pub file: String,
    /// What the name says it is.
    pub name: EntryName,
    /// What is there (symbolic links are not followed).
    pub kind: FileKind,
    /// The size in bytes, for a regular file.
    pub size: Option<u64>,
    /// For a stash, temp file or quarantined file: its header, read without
    /// checking the digest (an error when it cannot be read, or when the
    /// entry is not a regular file). `None` for other entries.
    pub header: Option<Result<Header>>,
    /// For a stash: the result of full verification (digest, header, key),
    /// as [`Store::verify`] reports it. `None` for other entries.
    pub verified: Option<Result<StashMeta>>,
}

impl Store<OsFs> {
    /// A store in `dir`, which must exist: for tools where a missing
    /// directory is a mistake (an operator naming a store means one that
    /// is there), not an empty store. Creates nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] (operation [`IoOp::Inspect`]) when nothing is at `dir`
    /// or it cannot be inspected; as [`Store::open`].
    ///
    /// # Examples
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// assert!(safestash::Store::open_existing(dir.path()).is_ok());
    /// assert!(safestash::Store::open_existing(dir.path().join("nope")).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_existing(dir: impl AsRef<Path>) -> Result<Store> {
        let dir = dir.as_ref();
        if OsFs.metadata(dir).map_err(io_err(IoOp::Inspect, dir))?.is_none() {
            let missing = io::Error::from_raw_os_error(libc::ENOENT);
            return Err(io_err(IoOp::Inspect, dir)(missing));
        }
        Store::open(dir)
    }
}

impl<F: Fs> Store<F> {
    /// Every entry of the store's directory, sorted by file name: stashes
    /// (each fully verified, as [`verify`](Store::verify) does), temp files,
    /// lock files, quarantined files, reserved namespaces (see
    /// [`namespace`](Store::namespace)) and names that are not the store's
    /// ([`EntryName::Other`]). Names that are not UTF-8 are skipped. A
    /// missing directory has no entries.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the directory cannot be listed. A problem with one
    /// entry is reported in that entry.
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::{EntryName, StashKey, Store};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let store = Store::open(dir.path())?;
    /// store.save(&StashKey::new("k")?, &1)?;
    /// std::fs::write(dir.path().join(".k.Ab3dE5gH.tmp"), b"half a stash")?;
    /// let names: Vec<EntryName> = store.inspect()?.into_iter().map(|e| e.name).collect();
    /// let k = StashKey::new("k")?;
    /// // Sorted by file name: `.k.Ab3dE5gH.tmp`, `.k.lock`, `k`.
    /// assert_eq!(names, [EntryName::Temp(k.clone()), EntryName::Lock(k.clone()), EntryName::Stash(k)]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn inspect(&self) -> Result<Vec<Inspected>> {
        Ok(self
            .backend
            .entries(MAX_PREFIX_LEN, false)?
            .into_iter()
            .map(|e| self.inspect_entry(e))
            .collect())
    }

    /// `key`'s stash as [`inspect`](Store::inspect) describes it (verified
    /// in full), or `None` when nothing is at its name. Whatever is there
    /// is described, a symbolic link or directory included.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the path cannot be inspected.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// let key = safestash::StashKey::new("k")?;
    /// assert!(store.inspect_key(&key)?.is_none());
    /// std::fs::write(store.path_of(&key), b"garbage")?;
    /// let found = store.inspect_key(&key)?.expect("a file is there");
    /// assert_eq!(found.size, Some(7));
    /// assert!(found.verified.expect("a stash name").is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn inspect_key(&self, key: &StashKey) -> Result<Option<Inspected>> {
        Ok(self.backend.entry(key.as_str(), MAX_PREFIX_LEN)?.map(|e| self.inspect_entry(e)))
    }

    fn inspect_entry(&self, entry: crate::backend::Entry) -> Inspected {
        let crate::backend::Entry { name: file, kind, len, head } = entry;
        let name = EntryName::parse(&file);
        let path = self.dir.join(&file);
        let has_header =
            matches!(name, EntryName::Stash(_) | EntryName::Temp(_) | EntryName::Quarantined(_));
        let header = has_header.then(|| {
            head.and_then(|head| {
                envelope::read_header(&head).map_err(|err| decode_error(&path, err))
            })
        });
        // A non-file has no size.
        let size = if kind == FileKind::File { len } else { None };
        let verified = match &name {
            EntryName::Stash(key) => {
                Some(match self.open_verified(key, self.backend.whole_read().verify) {
                    Ok(Some((meta, _))) => Ok(meta),
                    Ok(None) => Err(io_err(IoOp::Open, &path)(io::ErrorKind::NotFound.into())),
                    Err(e) => Err(e),
                })
            }
            _ => None,
        };
        Inspected { file, name, kind, size, header, verified }
    }

    /// Whether another holder has `key`'s lock (see [`KeyLock`]) right now.
    /// Creates nothing: with no lock file, nobody can hold it. Takes the
    /// lock for an instant if it is free.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the lock file cannot be inspected, opened or
    /// locked.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// let key = safestash::StashKey::new("k")?;
    /// assert!(!store.is_locked(&key)?);
    /// let held = store.lock(&key)?;
    /// assert!(store.is_locked(&key)?);
    /// drop(held);
    /// assert!(!store.is_locked(&key)?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_locked(&self, key: &StashKey) -> Result<bool> {
        self.require_locks(key)?;
        let _claim = match self.claim_thread(key, false) {
            Ok(claim) => claim,
            Err(Error::Locked { .. }) => return Ok(true),
            Err(e) => return Err(e),
        };
        self.backend.is_locked(key)
    }

    /// Writes `key`'s whole envelope to `out`, byte for byte as stored
    /// (on any backend), after verifying it; `None` (nothing written) when
    /// there is no stash. The bytes are a stash file: written under the
    /// key's name in a directory store, they load there. Memory stays
    /// bounded whatever the size: a large envelope is verified in one
    /// streaming pass, then read again and re-hashed on the way, so if it
    /// changed in between the copy ends with an error (what was written is
    /// then not to be trusted).
    ///
    /// # Errors
    ///
    /// As [`load`](Store::load) (never [`Error::Deserialize`]), and
    /// [`Error::Io`] (op `write`) when `out` fails.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// let key = safestash::StashKey::new("k")?;
    /// let receipt = store.save(&key, &[1, 2])?;
    /// let mut bytes = Vec::new();
    /// let meta = store.export(&key, &mut bytes)?.expect("saved");
    /// assert_eq!(bytes, std::fs::read(&receipt.path)?);
    /// assert_eq!((meta.size, meta.digest), (receipt.bytes, receipt.digest));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn export(&self, key: &StashKey, out: &mut dyn io::Write) -> Result<Option<StashMeta>> {
        let Some((meta, payload)) = self.open_verified(key, self.backend.whole_read().load)? else {
            return Ok(None);
        };
        let write_err = |e| Error::Io { op: IoOp::Write, path: meta.path.clone(), source: e };
        match payload {
            Payload::Bytes { bytes, .. } => out.write_all(&bytes).map_err(write_err)?,
            Payload::Streamed(streamed) => streamed.copy_envelope(out)?,
        }
        out.flush().map_err(write_err)?;
        Ok(Some(meta))
    }

    /// `key`'s payload, byte for byte as stored, after full verification;
    /// `None` when there is no stash. For tools that pass a payload on
    /// without interpreting it (`safestash show --raw`).
    ///
    /// # Errors
    ///
    /// As [`load`](Store::load), except that the payload is not
    /// deserialized (so never [`Error::Deserialize`]).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// let key = safestash::StashKey::new("k")?;
    /// store.save(&key, &[1, 2])?;
    /// let raw = store.read_raw(&key)?.expect("saved");
    /// assert_eq!(raw.value(), b"[1,2]");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read_raw(&self, key: &StashKey) -> Result<Option<Stashed<Vec<u8>>>> {
        let Some((meta, payload)) = self.open_verified(key, self.backend.whole_read().load)? else {
            return Ok(None);
        };
        let value = match payload {
            Payload::Bytes { mut bytes, range } => {
                bytes.truncate(range.end);
                bytes.drain(..range.start);
                bytes
            }
            Payload::Streamed(streamed) => streamed
                .read_payload(|r| {
                    let mut bytes = Vec::new();
                    r.read_to_end(&mut bytes).map(|_| bytes)
                })?
                .map_err(io_err(IoOp::Read, &meta.path))?,
        };
        Ok(Some(Stashed { value, meta }))
    }
}
