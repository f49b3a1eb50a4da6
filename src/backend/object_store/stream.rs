//! Reads: fetching an envelope (a reference's data too) as a bounded stream,
//! and listing.

use super::multipart::{parse_reference, trailer_digest};
use super::state::FromMeta;
use super::*;

impl ObjectStoreBackend {
    /// `name`'s object as a reader, following a reference; `None` for
    /// nothing or a tombstone.
    pub(super) fn fetch(&self, name: &str, op: BackendOp) -> Result<Option<Fetched>> {
        // A reference replaced (and its data deleted) between reading it and
        // reading its data is read again.
        for _ in 0..RETRIES {
            let got = match self.block_on(self.shared.store().get(&self.path(name))) {
                Ok(got) => got,
                Err(object_store::Error::NotFound { .. }) => {
                    self.remember(name, None);
                    return Ok(None);
                }
                Err(e) => return Err(self.fail(op, name)(e)),
            };
            let size = got.meta.size;
            let version = UpdateVersion::from_meta(&got.meta);
            // What is there, for the next write's guess (see `guess`).
            let seen =
                |digest, data| Some(Current::Stash { version: version.clone(), digest, data });
            if size == 0 {
                // Damage: the store finds no envelope in it.
                self.remember(name, seen(None, None));
                return Ok(Some(Fetched { len: 0, reader: Box::new(io::empty()) }));
            }
            if size > SMALL {
                self.remember(name, seen(None, None));
                return Ok(Some(Fetched {
                    len: size,
                    reader: Box::new(self.reader(got.into_stream())),
                }));
            }
            let bytes = self.block_on(got.bytes()).map_err(self.fail(op, name))?;
            if is_tombstone(&bytes) {
                self.remember(name, Some(Current::Tombstone(version, bytes)));
                return Ok(None);
            }
            let reference = parse_reference(&bytes);
            let data = reference.as_ref().map(|r| r.data.clone());
            self.remember(name, seen(trailer_digest(&bytes), data));
            let Some(reference) = reference else {
                return Ok(Some(Fetched {
                    len: bytes.len() as u64,
                    reader: Box::new(Cursor::new(bytes)),
                }));
            };
            match self.block_on(self.shared.store().get(&self.data_path(&reference.data))) {
                Ok(data) => {
                    return Ok(Some(Fetched {
                        len: data.meta.size,
                        reader: Box::new(self.reader(data.into_stream())),
                    }));
                }
                Err(object_store::Error::NotFound { .. }) => {
                    // Still this reference at the key: its data is gone,
                    // which is damage. Replaced since: read again.
                    let same = GetOptions {
                        if_match: version.e_tag.clone(),
                        version: version.version.clone(),
                        head: true,
                        ..Default::default()
                    };
                    match self.block_on(self.shared.store().get_opts(&self.path(name), same)) {
                        Ok(_) => {
                            return Err(Error::Corrupt {
                                path: self.target(Some(name)).into(),
                                reason: Corruption::MissingData(format!(
                                    ".data/{}",
                                    reference.data
                                )),
                            });
                        }
                        Err(
                            object_store::Error::Precondition { .. }
                            | object_store::Error::NotFound { .. },
                        ) => continue,
                        Err(e) => return Err(self.fail(op, name)(e)),
                    }
                }
                Err(e) => return Err(self.fail(op, name)(e)),
            }
        }
        Err(Error::Backend {
            op,
            target: self.target(Some(name)),
            source: "it kept changing while being read".into(),
        })
    }

    /// Whether `key` holds an intact envelope for it now (read whole).
    pub(super) fn verified_at(&self, key: &StashKey) -> bool {
        match self.fetch(key.as_str(), BackendOp::Quarantine) {
            Ok(Some(mut fetched)) => {
                matches!(crate::envelope::verify_stream(&mut fetched.reader, fetched.len),
                    Ok(Ok(layout)) if layout.header.key() == key)
            }
            _ => false,
        }
    }

    pub(super) fn reader(
        &self,
        stream: BoxStream<'static, object_store::Result<Bytes>>,
    ) -> StreamReader {
        StreamReader { shared: self.shared.clone(), stream, buf: Bytes::new() }
    }

    /// The stored length and first `head_len` bytes of one listed object;
    /// `None` for a tombstone.
    pub(super) async fn listed(
        &self,
        name: String,
        mut size: u64,
        mut e_tag: Option<String>,
        head_len: usize,
    ) -> Result<Option<Listed>> {
        let store = &self.shared.store();
        let path = self.path(&name);
        let want = head_len as u64;
        // Read as listed; when the key was replaced since the listing (the
        // ETag no longer matches), read what is there now instead of taking
        // the start of another object for the listed one.
        let mut attempts = 0;
        let bytes = loop {
            if size == 0 {
                // Damage, listed so that verify finds it.
                return Ok(Some(Listed { name, len: 0, head: Vec::new() }));
            }
            if size > SMALL && want == 0 {
                return Ok(Some(Listed { name, len: size, head: Vec::new() }));
            }
            let range = if size <= SMALL { 0..size } else { 0..want.min(size) };
            let opts = GetOptions {
                range: Some(GetRange::Bounded(range)),
                if_match: e_tag.clone(),
                ..Default::default()
            };
            let got = match store.get_opts(&path, opts).await {
                Ok(got) => got.bytes().await,
                Err(e) => Err(e),
            };
            match got {
                Ok(b) => break b,
                // Removed since the listing.
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(object_store::Error::Precondition { .. }) if attempts < 3 => {
                    attempts += 1;
                    match store.head(&path).await {
                        Ok(meta) => (size, e_tag) = (meta.size, meta.e_tag),
                        Err(object_store::Error::NotFound { .. }) => return Ok(None),
                        Err(e) => return Err(self.fail(BackendOp::List, &name)(e)),
                    }
                }
                Err(e) => return Err(self.fail(BackendOp::List, &name)(e)),
            }
        };
        if size <= SMALL {
            if is_tombstone(&bytes) {
                return Ok(None);
            }
            if let Some(r) = parse_reference(&bytes) {
                let head = if want == 0 || r.len == 0 {
                    Bytes::new()
                } else {
                    match store.get_range(&self.data_path(&r.data), 0..want.min(r.len)).await {
                        Ok(b) => b,
                        Err(object_store::Error::NotFound { .. }) => Bytes::new(),
                        Err(e) => return Err(self.fail(BackendOp::List, &name)(e)),
                    }
                };
                return Ok(Some(Listed { name, len: r.len, head: head.to_vec() }));
            }
        }
        let head = bytes.slice(..bytes.len().min(head_len)).to_vec();
        Ok(Some(Listed { name, len: size, head }))
    }
}

/// A reader over an object's byte stream, pulling one chunk at a time.
pub(super) struct StreamReader {
    pub(super) shared: Arc<Shared>,
    pub(super) stream: BoxStream<'static, object_store::Result<Bytes>>,
    pub(super) buf: Bytes,
}

impl Read for StreamReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.buf.is_empty() {
            match self.shared.block_on(self.stream.next()) {
                Some(Ok(chunk)) => self.buf = chunk,
                Some(Err(e)) => return Err(io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        let _ = self.buf.split_to(n);
        Ok(n)
    }
}
