//! Tenant snapshots: their keys and generations, restore and retention.

use super::*;

/// The kind label of every tenant stash written by [`Reconciler::execute`].
///
/// # Examples
///
/// ```
/// assert_eq!(safestash::reconcile::TENANT_SNAPSHOT_KIND, "tenant-snapshot");
/// ```
pub const TENANT_SNAPSHOT_KIND: &str = "tenant-snapshot";

/// What every tenant key starts with: `tenant/` escaped by
/// [`StashKey::from_any`].
pub(super) const TENANT_KEY_PREFIX: &str = "tenant_2F";

/// Between a tenant's first key and the generation number of a later
/// snapshot. [`StashKey::from_any`] never yields `_g` (it only writes `_`
/// before two uppercase hex digits, or in `__` before lowercase hex), so a
/// generation key can never be another tenant's key.
pub(super) const GENERATION_INFIX: &str = "_g";

/// The default retention of tenant stashes: 30 days.
pub(super) const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// The stash key of a tenant's first snapshot (generation 1): `tenant/{id}`
/// made a valid key by [`StashKey::from_any`].
///
/// A tenant deleted again while an earlier snapshot is kept (re-created,
/// say) gets its next snapshot under the next generation's key: this key
/// followed by `_g2`, `_g3`, ... (one past the highest generation present).
/// [`Reconciler::tenant_stashes`] lists them all. (`_g` never occurs in a
/// key [`StashKey::from_any`] makes, so no tenant's key is another's
/// generation.) A generation key longer than [`MAX_KEY_LEN`](crate::MAX_KEY_LEN)
/// bytes, possible only for ids of over about 180 bytes, is not made: the
/// run stops at that tenant with [`ReconcileError::Stash`], nothing
/// overwritten or deleted.
///
/// # Examples
///
/// ```
/// let id: safestash::reconcile::CanonicalUuid = "6F9619FF-8B86-D011-B42D-00C04FC964FF".parse()?;
/// assert_eq!(safestash::reconcile::tenant_key(&id).as_str(), "tenant_2F6f9619ff-8b86-d011-b42d-00c04fc964ff");
/// # Ok::<(), safestash::reconcile::Unparseable>(())
/// ```
pub fn tenant_key<I: CanonicalId>(id: &I) -> StashKey {
    StashKey::from_any(&format!("tenant/{id}"))
}

/// The key of generation `generation` (from 1) of the tenant whose first
/// key is `first`.
pub(super) fn generation_key(first: &StashKey, generation: u64) -> Result<StashKey> {
    if generation <= 1 {
        return Ok(first.clone());
    }
    Ok(StashKey::new(format!("{first}{GENERATION_INFIX}{generation}"))?)
}

/// The generation of `key` if it is one of the keys of the tenant whose
/// first key is `first`.
pub(super) fn generation_of(first: &StashKey, key: &StashKey) -> Option<u64> {
    let rest = key.as_str().strip_prefix(first.as_str())?;
    if rest.is_empty() {
        return Some(1);
    }
    let digits = rest.strip_prefix(GENERATION_INFIX)?;
    // Exactly the spelling `generation_key` writes: no sign, no leading zero.
    if digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&g| g >= 2)
}

/// Every stash at one of `id`'s keys with its generation, oldest first.
pub(super) fn tenant_stashes<I: CanonicalId, F: Fs>(
    store: &Store<F>,
    id: &I,
) -> Result<Vec<(u64, StashInfo)>> {
    let first = tenant_key(id);
    let mut out: Vec<(u64, StashInfo)> = store
        .list()?
        .into_iter()
        .filter_map(|info| Some((generation_of(&first, &info.key)?, info)))
        .collect();
    out.sort_by_key(|(generation, _)| *generation);
    Ok(out)
}

/// The reserved namespace holding tenant snapshots.
pub(super) const TENANTS_NS: &str = "tenants";

/// `store`'s namespace of tenant snapshots. Its saves reach `store`'s
/// observers (a snapshot is user data), but no user key can collide with a
/// snapshot key, and tools over the user's stashes never reach them.
pub(super) fn snapshot_store<F: Fs>(store: &Store<F>) -> Store<F> {
    store.reserved(TENANTS_NS, true)
}

/// The key whose lock serialises runs on one store, so two runs never
/// choose the same generation keys. It is never a stash key, so a stash's
/// own lock is free while its observers run.
pub(super) fn run_lock_key() -> StashKey {
    StashKey::from_any("run")
}

/// A held run lock (see [`run_lock_key`]). This thread asking again (an
/// observer or hook calling back into a run on the same store) gets
/// [`Error::LockedByThisThread`] instead of waiting for itself.
pub(super) struct RunLock<F: Fs> {
    /// Held to the end of the run's first phase; its snapshots are written
    /// through it (through its fencing, on a shared store).
    pub(super) lock: KeyLock<F>,
}

impl<F: Fs> RunLock<F> {
    pub(super) fn acquire(snapshots: &Store<F>) -> Result<RunLock<F>> {
        Ok(RunLock { lock: snapshots.lock(&run_lock_key())? })
    }
}

/// Every tenant's snapshot keys with their generations, oldest first, by
/// the tenant's first key: one listing for a whole run.
pub(super) fn all_generations<F: Fs>(
    snapshots: &Store<F>,
) -> Result<std::collections::BTreeMap<StashKey, Vec<(u64, StashKey)>>> {
    let mut by_first: std::collections::BTreeMap<StashKey, Vec<(u64, StashKey)>> =
        std::collections::BTreeMap::new();
    for info in snapshots.list()? {
        let split = info.key.as_str().rsplit_once(GENERATION_INFIX);
        let (first, generation) = split
            .and_then(|(first, _)| StashKey::new(first).ok())
            .and_then(|first| Some((generation_of(&first, &info.key)?, first)))
            .map_or_else(|| (info.key.clone(), 1), |(g, first)| (first, g));
        by_first.entry(first).or_default().push((generation, info.key));
    }
    for list in by_first.values_mut() {
        list.sort_by_key(|(g, _)| *g);
    }
    Ok(by_first)
}

/// Restores a deleted tenant from its **newest** snapshot: the highest
/// generation [`Reconciler::tenant_stashes`] lists (the snapshot taken at its latest
/// delete). Exactly [`Reconciler::restore_tenant_stash`] with that key: loads and
/// verifies it, hands it to `restorer` to put the tenant back, and only if
/// that succeeded, clears it (if it is still the one restored). Earlier
/// snapshots are left alone; a next call restores the next newest.
///
/// A newest snapshot that is damaged is never restored and never skipped
/// silently: the error names it, and [`Reconciler::restore_tenant_stash`] can restore
/// an older one on purpose. After a failed delete was run again, the
/// newest snapshot holds what the failed delete left: list the stashes and
/// choose.
///
/// # Errors
///
/// [`ReconcileError::NoStash`] when the tenant has none; otherwise as
/// [`Reconciler::restore_tenant_stash`].
///
/// # Examples
///
/// ```
/// use std::cell::RefCell;
/// use std::collections::BTreeMap;
/// use safestash::reconcile::{
///     CanonicalUuid, IdSet, Overrides, Reconciler, Rule, plan, restore_tenant, tenant_key,
/// };
/// use safestash::{Stashed, Store};
///
/// let dir = tempfile::tempdir()?;
/// let store = Store::open(dir.path())?;
/// let id = CanonicalUuid::from(uuid::Uuid::from_u128(7));
/// let db = RefCell::new(BTreeMap::from([(id, vec!["call 1".to_owned()])]));
/// let local = IdSet::from_iter([id]);
/// let truth = IdSet::new(); // wrongly empty: deleting everything takes two overrides
/// let all = Overrides::allow(Rule::EmptyAuthority).and(Rule::TooLargeShare);
/// let report = Reconciler::new(&store).overrides(all).execute(
///     &plan(&local, &truth),
///     &local,
///     &truth,
///     |id| db.borrow().get(id).cloned().ok_or("gone"),
///     |id| db.borrow_mut().remove(id).map(drop).ok_or("gone"),
/// )?;
/// assert!(report.is_complete() && db.borrow().is_empty());
///
/// restore_tenant(&store, &id, &mut |s: Stashed<Vec<String>>| {
///     db.borrow_mut().insert(id, s.into_value());
///     Ok::<(), std::io::Error>(())
/// })?;
/// assert_eq!(db.borrow()[&id], ["call 1"]);
/// assert!(store.load::<Vec<String>>(&tenant_key(&id))?.is_none()); // cleared after the restore
/// assert!(Reconciler::new(&store).tenant_stashes(&id)?.is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn restore_tenant<I, T, R, F>(
    store: &Store<F>,
    id: &I,
    restorer: &mut R,
) -> Result<Restored, ReconcileError>
where
    I: CanonicalId,
    T: DeserializeOwned,
    R: Restorer<T>,
    F: Fs,
{
    let store = &snapshot_store(store);
    let first = tenant_key(id);
    let stashes = tenant_stashes(store, id).map_err(|source| ReconcileError::Load {
        tenant: id.to_string(),
        key: first.clone(),
        source: Box::new(source),
    })?;
    match stashes.into_iter().next_back() {
        Some((_, newest)) => restore_from(store, id, &newest.key, restorer),
        None => Err(ReconcileError::NoStash { tenant: id.to_string(), key: first }),
    }
}

/// What [`Reconciler::restore_tenant_stash`] does, on any store.
pub(super) fn restore_from<I, T, R, F>(
    store: &Store<F>,
    id: &I,
    key: &StashKey,
    restorer: &mut R,
) -> Result<Restored, ReconcileError>
where
    I: CanonicalId,
    T: DeserializeOwned,
    R: Restorer<T>,
    F: Fs,
{
    let key = key.clone();
    let tenant = id.to_string();
    if generation_of(&tenant_key(id), &key).is_none() {
        return Err(ReconcileError::NotTheTenantsKey { tenant, key });
    }
    let stashed = match store.load::<T>(&key) {
        Ok(Some(stashed)) => stashed,
        Ok(None) => return Err(ReconcileError::NoStash { tenant, key }),
        Err(source) => return Err(ReconcileError::Load { tenant, key, source: Box::new(source) }),
    };
    let kind = stashed.meta().header.kind();
    if kind != TENANT_SNAPSHOT_KIND {
        return Err(ReconcileError::NotATenantSnapshot { tenant, key, kind: kind.to_owned() });
    }
    // The one verified-restore step: the snapshot checked above (by digest)
    // is restored, cleared only if that succeeded and it is unchanged, and
    // observers are told as for any rollback.
    let digest = stashed.meta().digest;
    drop(stashed);
    match store.restore_and_clear::<T, R>(&key, &digest, restorer) {
        Ok(RestoreOutcome { meta, observer_errors }) => {
            tracing::info!(tenant = %tenant, age_secs = meta.age().as_secs_f64(), "tenant restored");
            Ok(Restored { meta, observer_errors })
        }
        Err(RestoreFailure { error, restored: true }) => {
            Err(ReconcileError::ClearAfterRestore { tenant, key, source: Box::new(error) })
        }
        Err(RestoreFailure { error: error @ Error::Restore { .. }, .. }) => {
            Err(ReconcileError::Restore { tenant, source: Box::new(error) })
        }
        Err(RestoreFailure { error, .. }) => {
            Err(ReconcileError::Load { tenant, key, source: Box::new(error) })
        }
    }
}

/// What [`purge_expired`] did.
///
/// # Examples
///
/// See [`purge_expired`].
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct PurgeReport {
    /// Tenant stashes removed: intact, and older than the retention.
    pub removed: Vec<StashKey>,
    /// Tenant stashes within the retention, kept.
    pub retained: usize,
    /// Tenant stashes kept because they could not be verified (damaged,
    /// unreadable) or removed, with the reason. Never removed.
    pub kept: Vec<(StashKey, Error)>,
}

pub(super) fn expired(created: SystemTime, now: SystemTime, retention: Duration) -> bool {
    // A creation time in the future has no known age: not expired.
    now.duration_since(created).is_ok_and(|age| age > retention)
}

/// Ends the retention: removes every intact tenant stash (kind
/// [`TENANT_SNAPSHOT_KIND`] at any tenant's key, of any generation) written
/// more than `retention` ago. Each snapshot is judged on its own: of a
/// tenant's several snapshots only the expired ones go. Each is verified first and removed only if it is still
/// the stash verified; a damaged one is never removed, only reported in
/// [`PurgeReport::kept`]. Other stashes are left alone.
///
/// # Errors
///
/// [`Error::Io`] when the store's directory cannot be listed. Problems with
/// single stashes are in the report.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use safestash::{SaveOptions, Store, reconcile::{CanonicalUuid, purge_expired, tenant_key, TENANT_SNAPSHOT_KIND}};
///
/// let dir = tempfile::tempdir()?;
/// let store = Store::open(dir.path())?;
/// let id = CanonicalUuid::from(uuid::Uuid::from_u128(1));
/// let snapshots = store.namespace("tenants")?; // where a run keeps them
/// snapshots.save_with(&tenant_key(&id), &"snapshot", &SaveOptions::new().kind(TENANT_SNAPSHOT_KIND))?;
///
/// let report = purge_expired(&store, Duration::from_secs(3600))?;
/// assert_eq!((report.removed.len(), report.retained), (0, 1)); // young: kept
/// std::thread::sleep(Duration::from_millis(5));
/// let report = purge_expired(&store, Duration::from_millis(1))?;
/// assert_eq!(report.removed, [tenant_key(&id)]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn purge_expired<F: Fs>(store: &Store<F>, retention: Duration) -> Result<PurgeReport> {
    let store = &snapshot_store(store);
    let now = SystemTime::now();
    let mut report = PurgeReport::default();
    for info in store.list()? {
        if !info.key.as_str().starts_with(TENANT_KEY_PREFIX) {
            continue;
        }
        let header = match info.header {
            Ok(header) => header,
            Err(e) => {
                report.kept.push((info.key, e));
                continue;
            }
        };
        if header.kind() != TENANT_SNAPSHOT_KIND {
            continue;
        }
        if !expired(header.created(), now, retention) {
            report.retained += 1;
            continue;
        }
        // The header alone is unverified: check the whole stash first.
        let verified = match store.load::<IgnoredAny>(&info.key) {
            Ok(Some(stashed)) => stashed,
            Ok(None) => continue,
            Err(e) => {
                report.kept.push((info.key, e));
                continue;
            }
        };
        let header = &verified.meta().header;
        if header.kind() != TENANT_SNAPSHOT_KIND || !expired(header.created(), now, retention) {
            report.retained += 1;
            continue;
        }
        match store.clear_if(&info.key, &verified.meta().digest) {
            Ok(true) => {
                tracing::info!(key = %info.key, "expired tenant stash removed");
                report.removed.push(info.key);
            }
            Ok(false) => {}
            Err(e) => report.kept.push((info.key, e)),
        }
    }
    Ok(report)
}
