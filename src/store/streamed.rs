//! A verified envelope too large to read whole, whose payload a verb
//! reads again ([`Streamed`]), and the errors of encoding and decoding.

use super::*;
use sha2::{Digest as _, Sha256};

/// A verified remote envelope too large to read whole: its payload is read
/// by a second `get`, every byte re-hashed on the way, and accepted only if
/// the envelope hashes to the digest the verifying pass found. An envelope
/// that changed between the two reads (a concurrent save, damage) is an
/// error, never a wrong value.
pub(super) struct Streamed {
    backend: Arc<dyn Backend>,
    key: StashKey,
    path: PathBuf,
    size: u64,
    digest: Digest,
    offset: u64,
    len: u64,
}

impl Streamed {
    pub(super) fn new(
        backend: Arc<dyn Backend>,
        key: &StashKey,
        path: &Path,
        size: u64,
        layout: &envelope::Layout,
    ) -> Streamed {
        Streamed {
            backend,
            key: key.clone(),
            path: path.to_owned(),
            size,
            digest: layout.digest,
            offset: layout.payload_offset,
            len: layout.payload_len,
        }
    }

    /// Runs `read` on the payload (exactly its bytes), then checks the
    /// whole envelope against the verified digest; `read`'s result is
    /// returned only if it matches.
    pub(super) fn read_payload<T>(self, read: impl FnOnce(&mut dyn Read) -> T) -> Result<T> {
        let (offset, len) = (self.offset, self.len);
        self.reread(|reader| {
            let skipped = io::copy(&mut reader.take(offset), &mut io::sink())?;
            let out = read(&mut reader.take(len));
            Ok((skipped == offset).then_some(out))
        })
    }

    /// Copies the whole envelope to `out`, re-hashed; an error at the end
    /// if it was not the verified one.
    pub(super) fn copy_envelope(self, out: &mut dyn Write) -> Result<()> {
        let (path, size) = (self.path.clone(), self.size);
        let mut failed = None;
        let copied = self.reread(|reader| {
            let mut reader = reader.take(size);
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = reader.read(&mut buf)?;
                if n == 0 {
                    return Ok(Some(()));
                }
                if let Err(e) = out.write_all(&buf[..n]) {
                    failed = Some(e);
                    return Ok(None);
                }
            }
        });
        match failed {
            Some(e) => Err(Error::Io { op: IoOp::Write, path, source: e }),
            None => copied,
        }
    }

    /// A second `get`, handed to `read` as a re-hashing reader; what `read`
    /// leaves unread is drained. `read`'s result (`None`: the envelope
    /// ended early) is returned only if every byte hashed to the verified
    /// digest.
    fn reread<T>(&self, read: impl FnOnce(&mut Rehashing) -> io::Result<Option<T>>) -> Result<T> {
        let changed = |why: &str| Error::Backend {
            op: BackendOp::Load,
            target: self.path.display().to_string(),
            source: format!(
                "the stash changed while it was read ({why}; a concurrent save?): load it again"
            )
            .into(),
        };
        let Some(fetched) = self.backend.get(&self.key)? else {
            return Err(changed("it is gone"));
        };
        if fetched.len != self.size {
            return Err(changed("another length"));
        }
        let hashed = self.size - envelope::TRAILER_LEN as u64 + envelope::TRAILER_HASHED as u64;
        let mut reader = Rehashing {
            inner: fetched.reader,
            hasher: Sha256::new(),
            pos: 0,
            hashed,
            failed: None,
        };
        let out = read(&mut reader).map_err(io_err(IoOp::Read, &self.path))?;
        let rest = self.size.saturating_sub(reader.pos);
        let drained = io::copy(&mut (&mut reader).take(rest), &mut io::sink());
        // A read that failed is that error, not "changed", even when the
        // payload's reader swallowed it and the stream then ended early.
        if let Some(e) = reader.failed.take() {
            return Err(io_err(IoOp::Read, &self.path)(e));
        }
        let drained = drained.map_err(io_err(IoOp::Read, &self.path))?;
        let Some(out) = out else { return Err(changed("shorter")) };
        if drained != rest
            || reader.pos != self.size
            || Digest::from_bytes(reader.hasher.finalize().into()) != self.digest
        {
            return Err(changed("another digest"));
        }
        Ok(out)
    }
}

/// A reader that hashes the first `hashed` bytes it passes on.
struct Rehashing {
    inner: Box<dyn Read + Send>,
    hasher: Sha256,
    pos: u64,
    hashed: u64,
    /// The first read error, kept: the reader's user (serde) may swallow
    /// it, and the stream may then just end.
    failed: Option<io::Error>,
}

impl Read for Rehashing {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted && self.failed.is_none() {
                    self.failed = Some(io::Error::new(e.kind(), e.to_string()));
                }
                return Err(e);
            }
        };
        if self.pos < self.hashed {
            let upto = usize::try_from(self.hashed - self.pos).unwrap_or(usize::MAX).min(n);
            self.hasher.update(&buf[..upto]);
        }
        self.pos += n as u64;
        Ok(n)
    }
}

pub(super) fn serialize_error(header: &Header, path: &Path, e: serde_json::Error) -> Error {
    if e.is_io() {
        Error::Io { op: IoOp::Write, path: path.to_owned(), source: e.into() }
    } else {
        Error::Serialize { key: header.key().clone(), source: e }
    }
}

pub(super) fn decode_error(path: &Path, e: DecodeError) -> Error {
    match e {
        DecodeError::Corrupt(reason) => Error::Corrupt { path: path.to_owned(), reason },
        DecodeError::UnsupportedVersion(version) => {
            Error::UnsupportedVersion { path: path.to_owned(), version }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{self, Read};
    use std::sync::{Arc, Mutex};

    const REMOTE_WHOLE_LIMIT: u64 = 4 << 20;
    use crate::backend::{Backend, Fetched, Held, Listed, Outcome, Precondition};
    use crate::digest::Digest;
    use crate::error::{Error, IoOp, Result};
    use crate::fs::OsFs;
    use crate::key::StashKey;
    use crate::store::Store;

    /// A backend keeping one envelope in memory, whose reads from the
    /// `first_failing`-th on (1: every read; 2: the second pass of a large
    /// `read_raw` or `export`) fail with `ConnectionReset` after `fail_at`
    /// bytes and then end, as a dropped stream does.
    #[derive(Debug)]
    struct FlakyReads {
        envelope: Mutex<Option<Vec<u8>>>,
        gets: Mutex<u32>,
        first_failing: Mutex<u32>,
        fail_at: usize,
    }

    /// The envelope's bytes up to `fail_at`, then one error, then the end.
    struct Dropped {
        bytes: io::Cursor<Vec<u8>>,
        fail_at: u64,
        failed: bool,
    }

    impl Read for Dropped {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let left = self.fail_at.saturating_sub(self.bytes.position());
            if left == 0 {
                if self.failed {
                    return Ok(0);
                }
                self.failed = true;
                return Err(io::Error::new(io::ErrorKind::ConnectionReset, "peer went away"));
            }
            let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            self.bytes.read(&mut buf[..n])
        }
    }

    impl Backend for FlakyReads {
        fn location(&self) -> &str {
            "flaky://ns"
        }
        fn put(
            &self,
            _: &StashKey,
            envelope: &[u8],
            _: &Digest,
            _: Precondition,
        ) -> Result<Outcome> {
            *self.envelope.lock().unwrap() = Some(envelope.to_vec());
            Ok(Outcome::Done)
        }
        fn get(&self, _: &StashKey) -> Result<Option<Fetched>> {
            let Some(bytes) = self.envelope.lock().unwrap().clone() else { return Ok(None) };
            let mut gets = self.gets.lock().unwrap();
            *gets += 1;
            let len = bytes.len() as u64;
            let failing = *gets >= *self.first_failing.lock().unwrap();
            let fail_at = if failing { self.fail_at as u64 } else { u64::MAX };
            let reader = Dropped { bytes: io::Cursor::new(bytes), fail_at, failed: false };
            Ok(Some(Fetched { len, reader: Box::new(reader) }))
        }
        fn delete(&self, _: &StashKey, _: Precondition) -> Result<Outcome> {
            Ok(if self.envelope.lock().unwrap().take().is_some() {
                Outcome::Done
            } else {
                Outcome::Missing
            })
        }
        fn list(&self, _: usize) -> Result<Vec<Listed>> {
            Ok(Vec::new())
        }
        fn has_locks(&self) -> bool {
            false
        }
        fn lock(&self, _: &StashKey, _: bool) -> Result<Option<Box<dyn Held>>> {
            unreachable!("a backend without locks is never asked for one")
        }
        fn move_aside(&self, _: &StashKey, _: &str) -> Result<bool> {
            Ok(false)
        }
        fn child(&self, _: &str) -> Box<dyn Backend> {
            unreachable!("not used here")
        }
        fn children(&self) -> Result<Vec<String>> {
            Ok(Vec::new())
        }
    }

    fn assert_reset(what: &str, result: Result<impl std::fmt::Debug>) {
        match result {
            Err(Error::Io { op: IoOp::Read, path, source }) => {
                assert_eq!(source.kind(), io::ErrorKind::ConnectionReset, "{what}: {source}");
                assert_eq!(path.to_string_lossy(), "flaky://ns/big", "{what}");
            }
            other => panic!("{what}: a failed read must be reported as that read error: {other:?}"),
        }
    }

    /// A read error in the one pass of a large remote load, or in the
    /// second pass of a large `read_raw` or `export` (the payload read, or
    /// the drain of the trailer behind it), is reported as that I/O error,
    /// not as damage or "the stash changed": a retry is the answer, but
    /// only the truth tells an operator where to look.
    #[test]
    fn a_read_error_in_the_second_pass_of_a_large_load_is_that_error() {
        let value = "x".repeat(usize::try_from(REMOTE_WHOLE_LIMIT).unwrap() + 1000);
        let key = StashKey::new("big").unwrap();
        let size = {
            let backend = FlakyReads {
                envelope: Mutex::new(None),
                gets: Mutex::new(0),
                first_failing: Mutex::new(2),
                fail_at: 0,
            };
            let store = Store::over_backend(Arc::new(backend), OsFs, Vec::new());
            store.save(&key, &value).unwrap().bytes
        };
        assert!(size > REMOTE_WHOLE_LIMIT, "{size}: large enough to be read twice");
        // In the payload, and in the trailer after it (where the payload's
        // reader has already finished).
        for fail_at in [1 << 20, usize::try_from(size).unwrap() - 10] {
            let backend = Arc::new(FlakyReads {
                envelope: Mutex::new(None),
                gets: Mutex::new(0),
                first_failing: Mutex::new(1),
                fail_at,
            });
            let store = Store::over_backend(backend.clone(), OsFs, Vec::new());
            store.save(&key, &value).unwrap();
            // A load reads once, verifying while it parses: a read error
            // there is that error.
            *backend.gets.lock().unwrap() = 0;
            assert_reset(&format!("load, failing at {fail_at}"), store.load::<String>(&key));
            assert_eq!(*backend.gets.lock().unwrap(), 1, "one pass");

            // `read_raw` and `export` verify, then read again.
            *backend.first_failing.lock().unwrap() = 2;
            *backend.gets.lock().unwrap() = 0;
            assert_reset(&format!("read_raw, failing at {fail_at}"), store.read_raw(&key));

            *backend.gets.lock().unwrap() = 0;
            let mut out = Vec::new();
            assert_reset(&format!("export, failing at {fail_at}"), store.export(&key, &mut out));

            // And with reads that do not fail, the value comes back whole.
            *backend.gets.lock().unwrap() = 0;
            let healthy = FlakyReads {
                envelope: Mutex::new(backend.envelope.lock().unwrap().clone()),
                gets: Mutex::new(0),
                first_failing: Mutex::new(1),
                fail_at: usize::MAX,
            };
            let store = Store::over_backend(Arc::new(healthy), OsFs, Vec::new());
            assert_eq!(store.load::<String>(&key).unwrap().unwrap().into_value(), value);
        }
    }
}
