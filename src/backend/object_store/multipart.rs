//! Large stashes: the multipart upload's sink and the reference that names
//! the uploaded data.

use super::*;

/// A parsed reference: the data object's name (under `.data/`) and length.
pub(super) struct Reference {
    pub(super) data: String,
    pub(super) len: u64,
}

pub(super) fn parse_reference(bytes: &[u8]) -> Option<Reference> {
    let rest = bytes.strip_prefix(REF_MAGIC)?;
    let json_end = rest.iter().position(|&b| b == b'\n')?;
    let value: serde_json::Value = serde_json::from_slice(&rest[..json_end]).ok()?;
    let data = value.get("data")?.as_str()?.to_owned();
    let len = value.get("len")?.as_u64()?;
    if data.is_empty() || data.contains('/') || rest.len() != json_end + 1 + TRAILER_LEN {
        return None;
    }
    Some(Reference { data, len })
}

pub(super) fn make_reference(data: &str, len: u64, trailer: &[u8]) -> Vec<u8> {
    let mut out = REF_MAGIC.to_vec();
    out.extend_from_slice(serde_json::json!({ "data": data, "len": len }).to_string().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(trailer);
    out
}

/// The digest recorded in the trailer at the end of `bytes`.
pub(super) fn trailer_digest(bytes: &[u8]) -> Option<Digest> {
    bytes.len().checked_sub(TRAILER_LEN).and_then(|at| recorded_digest(&bytes[at..]))
}

/// The sink `put_with` fills: memory up to the threshold, then a multipart
/// upload of a fresh data object.
pub(super) struct Sink<'a> {
    pub(super) backend: &'a ObjectStoreBackend,
    pub(super) key: &'a StashKey,
    pub(super) buf: Vec<u8>,
    pub(super) upload: Option<(String, WriteMultipart)>,
    pub(super) written: u64,
    /// The last `TRAILER_LEN` bytes written (once spilled).
    pub(super) tail: Vec<u8>,
    /// When the upload was started.
    pub(super) started: Option<Instant>,
    /// The service's error that failed the upload, reported as such (the
    /// envelope writer only sees an I/O error).
    pub(super) failed: Option<Error>,
}

impl Sink<'_> {
    pub(super) fn spill(&mut self) -> io::Result<()> {
        let backend = self.backend;
        let key = self.key.as_str();
        let (_, upload) = match &mut self.upload {
            Some(u) => u,
            None => {
                let data = format!("{}.{}", self.key, uuid::Uuid::new_v4().simple());
                let path = backend.data_path(&data);
                self.started = Some(Instant::now());
                let started = match backend.block_on(backend.shared.store().put_multipart(&path)) {
                    Ok(started) => started,
                    Err(e) => {
                        self.failed = Some(backend.fail(BackendOp::Save, key)(e));
                        return Err(io::Error::other("the upload could not start"));
                    }
                };
                self.upload.insert((data, WriteMultipart::new_with_chunk_size(started, PART_SIZE)))
            }
        };
        let buf = std::mem::take(&mut self.buf);
        let sent = backend.block_on(async {
            upload.write(&buf);
            upload.wait_for_capacity(PARTS_IN_FLIGHT).await
        });
        sent.map_err(|e| {
            self.failed = Some(backend.fail(BackendOp::Save, key)(e));
            io::Error::other("the upload failed")
        })
    }
}

impl Write for Sink<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.written += data.len() as u64;
        if data.len() >= TRAILER_LEN {
            self.tail.clear();
            self.tail.extend_from_slice(&data[data.len() - TRAILER_LEN..]);
        } else {
            self.tail.extend_from_slice(data);
            let cut = self.tail.len().saturating_sub(TRAILER_LEN);
            self.tail.drain(..cut);
        }
        self.buf.extend_from_slice(data);
        let spill = match self.upload {
            None => self.buf.len() > self.backend.shared.threshold,
            Some(_) => self.buf.len() >= PART_SIZE,
        };
        if spill {
            self.spill()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
