//! Cleanup on object storage: the data objects of multipart saves that no
//! reference names any more (replaced, cleared, or left by a save that
//! failed or was killed after its upload), once older than the grace
//! period. See [`Options::gc_grace`] and the module docs of
//! [`object_store`](super).
//!
//! What is not removed: incomplete multipart uploads. `object_store` 0.14
//! has no call that lists them (its `MultipartStore` creates, completes and
//! aborts an upload it knows the id of, and nothing else), so they are
//! invisible here; the backend aborts its own upload when the upload fails
//! with a clear answer, and a bucket lifecycle rule ("abort incomplete
//! multipart uploads after N days") removes the rest.

use std::collections::{BTreeMap, HashSet};
use std::time::SystemTime;

use futures_util::stream::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt};

use super::multipart::{Reference, parse_reference};
use super::state::service_error;
use super::{ObjectStoreBackend, SMALL};
use crate::error::{BackendOp, Error, Result};

/// What the store puts between a key and the time in a quarantined copy's
/// name (`.KEY.quarantined.TIME`).
const QUARANTINED: &str = ".quarantined.";

impl ObjectStoreBackend {
    /// Removes the data objects under this namespace (children included)
    /// that are older than the grace period and that no reference names;
    /// returns their names relative to the namespace.
    ///
    /// A data object `.data/KEY.ID` is named only by the reference at `KEY`
    /// or by a quarantined copy of it (`.KEY.quarantined.*`), in the same
    /// namespace. The key is read first and the quarantined copies listed
    /// after: a quarantine copies a reference aside before it tombstones
    /// the key, so a copy made before the key was read is listed. A save
    /// writes its reference within half the grace period after its upload
    /// began, so a data object a reference is about to name is never old
    /// enough to be removed (hosts' clocks must agree to well within the
    /// grace period, as they must within a lease).
    pub(super) fn collect_garbage(&self) -> Result<Vec<String>> {
        let now = SystemTime::now();
        let grace = self.shared.gc_grace;
        let store = &self.shared.store();
        let fail = |e: object_store::Error| Error::Backend {
            op: BackendOp::CleanUp,
            target: self.location.clone(),
            source: service_error(e),
        };
        let all: Vec<ObjectMeta> =
            self.block_on(store.list(Some(&self.prefix)).try_collect()).map_err(fail)?;
        // Old data objects, by namespace.
        let mut old: BTreeMap<Path, Vec<String>> = BTreeMap::new();
        for meta in all {
            let parts: Vec<_> = meta.location.parts().collect();
            let n = parts.len();
            if n < 2 || parts[n - 2].as_ref() != ".data" {
                continue;
            }
            let age = now.duration_since(SystemTime::from(meta.last_modified)).unwrap_or_default();
            if age <= grace {
                continue;
            }
            let ns: Path = parts[..n - 2].iter().cloned().collect();
            old.entry(ns).or_default().push(parts[n - 1].as_ref().to_owned());
        }
        let mut removed = Vec::new();
        for (ns, names) in old {
            // Only names this backend made: `KEY.ID`.
            let keyed: Vec<(&str, &String)> =
                names.iter().filter_map(|name| Some((name.rsplit_once('.')?.0, name))).collect();
            let keys: HashSet<&str> = keyed.iter().map(|(k, _)| *k).collect();
            let mut named: HashSet<String> = HashSet::new();
            // First the keys...
            for key in &keys {
                if let Some(r) = self.block_on(self.read_reference(&ns.clone().join(*key)))? {
                    named.insert(r.data);
                }
            }
            // ...then the quarantined copies, listed after the keys were read.
            let listing = self.block_on(store.list_with_delimiter(Some(&ns))).map_err(fail)?;
            for meta in listing.objects {
                let Some(file) = meta.location.filename() else { continue };
                let copy_of = file
                    .strip_prefix('.')
                    .and_then(|f| f.split_once(QUARANTINED))
                    .map(|(key, _)| key);
                if copy_of.is_some_and(|k| keys.contains(k)) {
                    if let Some(r) = self.block_on(self.read_reference(&meta.location))? {
                        named.insert(r.data);
                    }
                }
            }
            for (_, name) in keyed {
                if named.contains(name) {
                    continue;
                }
                let path = ns.clone().join(".data").join(name.as_str());
                match self.block_on(store.delete(&path)) {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(fail(e)),
                }
                tracing::info!(object = %path, "removed an unreferenced data object");
                let skip = self.prefix.as_ref().len();
                let relative = path.as_ref()[skip..].trim_start_matches('/').to_owned();
                removed.push(relative);
            }
        }
        removed.sort();
        Ok(removed)
    }

    /// The reference at `path`, if a reference is there.
    async fn read_reference(&self, path: &Path) -> Result<Option<Reference>> {
        let fail = |e: object_store::Error| Error::Backend {
            op: BackendOp::CleanUp,
            target: format!("{}/{}", self.shared.base, path),
            source: service_error(e),
        };
        let got = match self.shared.store().get(path).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(fail(e)),
        };
        if got.meta.size > SMALL {
            return Ok(None);
        }
        let bytes = got.bytes().await.map_err(fail)?;
        Ok(parse_reference(&bytes))
    }
}
