use super::streamed::{Streamed, decode_error};
use super::*;

/// The read buffer of small stashes, kept per thread for the next load.
///
/// A fresh buffer for every load costs a 1 KiB load a tenth of its
/// user-space instructions: any allocation over 1 KiB makes glibc's malloc
/// consolidate its fast bins first, and the payload's many small
/// allocations then miss them (callgrind: 131.7 k instructions a load
/// with a fresh buffer). One buffer of at most [`spare::MAX`] bytes stays
/// with each thread that loads; its old bytes are cleared before a read
/// and never returned.
pub(super) mod spare {
    use std::cell::Cell;

    /// The largest buffer a thread keeps.
    pub(crate) const MAX: usize = 64 << 10;

    thread_local! {
        static SPARE: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
    }

    /// An empty buffer with room for `len` bytes: the thread's spare one
    /// when `len` is at most [`MAX`], else a new one.
    pub(crate) fn take(len: usize) -> Vec<u8> {
        let mut bytes =
            if len <= MAX { SPARE.try_with(Cell::take).unwrap_or_default() } else { Vec::new() };
        bytes.clear();
        bytes.reserve_exact(len);
        bytes
    }

    /// Keeps `bytes` as the thread's spare buffer if it is small enough.
    pub(crate) fn give(bytes: Vec<u8>) {
        if bytes.capacity() <= MAX {
            // During thread teardown there is nowhere to keep it: it is dropped.
            let _ = SPARE.try_with(|spare| spare.set(bytes));
        }
    }
}

/// The payload of a verified stash: in memory, or left to a second read
/// ([`Streamed`](super::streamed::Streamed)) for an envelope too large to
/// read whole.
pub(super) enum Payload {
    Bytes { bytes: Vec<u8>, range: std::ops::Range<usize> },
    Streamed(super::streamed::Streamed),
}

impl<F: Fs> Store<F> {
    /// Loads and verifies `key`'s stash.
    ///
    /// `Ok(None)` means there is no stash (and nothing is created). A file
    /// that is damaged, truncated, written for another key, or not a stash is
    /// an error, never `None`.
    ///
    /// # Errors
    ///
    /// - [`Error::Corrupt`] when the file fails verification;
    /// - [`Error::UnsupportedVersion`] for an intact file of a newer format;
    /// - [`Error::NotAFile`] when a symlink, directory or special file is at
    ///   the path (never followed);
    /// - [`Error::Deserialize`] when the intact payload is not a `T`;
    /// - [`Error::Io`] when reading fails.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// let key = safestash::StashKey::new("k")?;
    /// assert!(store.load::<Vec<u8>>(&key)?.is_none());
    /// store.save(&key, &Vec::<u8>::new())?;
    /// assert_eq!(store.load::<Vec<u8>>(&key)?.unwrap().value(), &Vec::<u8>::new());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn load<T: DeserializeOwned>(&self, key: &StashKey) -> Result<Option<Stashed<T>>> {
        let loaded = self.load_quietly(key);
        match &loaded {
            Ok(Some(s)) => {
                tracing::debug!(key = %key, bytes = s.meta().size, digest = %s.meta().digest, "stash loaded");
            }
            Ok(None) => tracing::debug!(key = %key, "no stash"),
            Err(e) => log_damage(key, e),
        }
        loaded
    }

    /// [`load`](Store::load), with no event of its own.
    fn load_quietly<T: DeserializeOwned>(&self, key: &StashKey) -> Result<Option<Stashed<T>>> {
        let Some((meta, parsed)) = self.open_parsed(key)? else {
            return Ok(None);
        };
        match parsed {
            Ok(value) => Ok(Some(Stashed { value, meta })),
            Err(e) if e.is_io() => {
                Err(Error::Io { op: IoOp::Read, path: meta.path, source: e.into() })
            }
            Err(source) => Err(Error::Deserialize { path: meta.path, source }),
        }
    }

    /// Opens, verifies and deserializes `key`'s stash: in memory up to
    /// the whole-read limit, above it in one streaming pass that hashes
    /// while it parses ([`envelope::read_stream`]), the value handed back
    /// only once the trailer's digest matched. The parse's own result
    /// (a value, or why the verified payload is not a `T`) is the caller's.
    fn open_parsed<T: DeserializeOwned>(
        &self,
        key: &StashKey,
    ) -> Result<Option<(StashMeta, serde_json::Result<T>)>> {
        let parse =
            |r: &mut dyn Read| serde_json::from_reader(BufReader::with_capacity(1 << 20, r));
        let path = self.path_of(key);
        let Some(fetched) = self.backend.get(key)? else { return Ok(None) };
        let (mut reader, len) = (fetched.reader, fetched.len);
        let whole_limit = self.backend.whole_read().load;
        let (header, digest, parsed) = if len <= whole_limit {
            // The length bounds the allocation and the read, even if the file grows.
            let mut bytes = spare::take(usize::try_from(len).unwrap_or(0));
            (&mut reader).take(len).read_to_end(&mut bytes).map_err(io_err(IoOp::Read, &path))?;
            let decoded = envelope::decode(&bytes).map_err(|e| decode_error(&path, e))?;
            let parsed = if decoded.header.key() == key {
                serde_json::from_slice(decoded.payload)
            } else {
                // Not parsed: the key check below fails.
                Err(serde::de::Error::custom("another key's stash"))
            };
            let (header, digest) = (decoded.header, decoded.digest);
            spare::give(bytes);
            (header, digest, parsed)
        } else {
            let (layout, parsed) = envelope::read_stream(&mut reader, len, parse)
                .map_err(io_err(IoOp::Read, &path))?
                .map_err(|e| decode_error(&path, e))?;
            (layout.header, layout.digest, parsed)
        };
        if header.key() != key {
            let reason = Corruption::KeyMismatch {
                expected: key.to_string(),
                found: header.key().to_string(),
            };
            return Err(Error::Corrupt { path, reason });
        }
        Ok(Some((StashMeta { header, digest, size: len, path }, parsed)))
    }

    /// Opens and fully verifies `key`'s stash: read whole when it is at
    /// most `whole_limit` bytes; otherwise verified in one streaming pass,
    /// its payload left to a second read ([`Streamed`](super::streamed::Streamed))
    /// that the caller makes only if it wants the payload.
    pub(super) fn open_verified(
        &self,
        key: &StashKey,
        whole_limit: u64,
    ) -> Result<Option<(StashMeta, Payload)>> {
        let path = self.path_of(key);
        let Some(fetched) = self.backend.get(key)? else {
            return Ok(None);
        };
        let len = fetched.len;
        let (header, digest, payload) = if len <= whole_limit {
            // The length bounds the allocation and the read, even if the file grows.
            let mut bytes = spare::take(usize::try_from(len).unwrap_or(0));
            fetched.reader.take(len).read_to_end(&mut bytes).map_err(io_err(IoOp::Read, &path))?;
            let decoded = envelope::decode(&bytes).map_err(|e| decode_error(&path, e))?;
            let end = bytes.len() - envelope::TRAILER_LEN;
            let range = end - decoded.payload.len()..end;
            let (header, digest) = (decoded.header, decoded.digest);
            (header, digest, Payload::Bytes { bytes, range })
        } else {
            let mut reader = fetched.reader;
            let layout = envelope::verify_stream(&mut reader, len)
                .map_err(io_err(IoOp::Read, &path))?
                .map_err(|e| decode_error(&path, e))?;
            drop(reader);
            let streamed = Streamed::new(self.backend.clone(), key, &path, len, &layout);
            (layout.header, layout.digest, Payload::Streamed(streamed))
        };
        if header.key() != key {
            let reason = Corruption::KeyMismatch {
                expected: key.to_string(),
                found: header.key().to_string(),
            };
            return Err(Error::Corrupt { path, reason });
        }
        Ok(Some((StashMeta { header, digest, size: len, path }, payload)))
    }
}

/// A damaged stash found by a read: an event, at warning level (the error
/// goes to the caller too; the event reaches the operator's logs).
pub(super) fn log_damage(key: &StashKey, e: &Error) {
    if let Error::Corrupt { path, reason } = e {
        tracing::warn!(key = %key, path = %path.display(), reason = %reason, "damaged stash found");
    }
}

#[cfg(test)]
mod tests {
    use super::spare;

    #[test]
    fn a_small_buffer_is_kept_empty_for_the_next_load_and_a_large_one_is_not() {
        std::thread::spawn(|| {
            let mut first = spare::take(100);
            first.extend_from_slice(b"previous stash");
            let kept = first.as_ptr();
            spare::give(first);
            let again = spare::take(50);
            assert!(again.is_empty(), "old bytes must never be handed out");
            assert_eq!(again.as_ptr(), kept, "the spare buffer is reused");
            assert!(again.capacity() >= 50);
            // Taken: a second take while it is out gets a fresh buffer.
            let other = spare::take(50);
            assert_ne!(other.as_ptr(), kept);
            spare::give(again);

            let big = vec![0u8; spare::MAX + 1];
            spare::give(big);
            let after = spare::take(10);
            assert_eq!(after.as_ptr(), kept, "a buffer over MAX replaces nothing");
            assert!(after.capacity() <= spare::MAX);
            // A request over MAX never takes the spare.
            let huge = spare::take(spare::MAX + 1);
            assert!(huge.capacity() > spare::MAX);
            spare::give(after);
            let last = spare::take(1);
            assert_eq!(last.as_ptr(), kept);
        })
        .join()
        .unwrap();
    }
}
