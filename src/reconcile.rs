//! The destructive-plan guard for tenant deletes: canonical ids,
//! blast-radius limits, and a stash before every delete.
//!
//! A nightly sync once computed `local_tenants - auth_tenants` where one side
//! held UUID values and the other UUID strings. Nothing compared equal, so
//! every tenant looked deleted, and every tenant's call logs and recordings
//! were purged. This module and its two companions make that class of bug
//! unrepresentable and survivable:
//!
//! 1. **Canonical ids only** ([`canonical`](crate::canonical)). Both sides
//!    are converted to one [`CanonicalId`] type before any set arithmetic:
//!    an [`IdSet`] can only be built from canonical ids, or by
//!    canonicalising raw inputs (any [`Canonicalize`](crate::Canonicalize)
//!    type), and [`plan`] accepts nothing else. For UUIDs,
//!    [`CanonicalUuid`](crate::CanonicalUuid) maps values and strings in any
//!    case, braced, with a `urn:uuid:` prefix or without hyphens onto one
//!    form. An id that cannot be canonicalised is reported
//!    ([`Unparseable`](crate::Unparseable)), never deleted.
//! 2. **Refuse plans that look wrong** ([`plan`](mod@crate::plan)).
//!    [`Reconciler::execute`] refuses an empty source of truth, a delete of
//!    too many tenants or too large a share ([`Limits`]), and a delete
//!    while some input is unparseable, unless the caller lifts the [`Rule`]
//!    by name ([`Overrides`]). A plan that deletes nothing is never
//!    refused; its unparseable ids are reported. A plan only executes
//!    against the inputs it was computed from (its [`Fingerprint`]).
//! 3. **Stash before delete** (this module). Each tenant is exported,
//!    stashed durably under a key of its own (the first snapshot under
//!    [`tenant_key`], a later one, of a tenant re-created and deleted
//!    again, under the next generation: see [`Reconciler::tenant_stashes`]), and only
//!    then deleted; a snapshot is never overwritten. [`restore_tenant`]
//!    puts a wrongly deleted tenant back from its newest snapshot
//!    ([`Reconciler::restore_tenant_stash`] from a chosen one), and [`purge_expired`]
//!    ends the retention of each snapshot on its own.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde::de::{DeserializeOwned, IgnoredAny};

use crate::canonical::{CanonicalId, IdSet};
use crate::error::BoxError;
use crate::error::{Error, Result};
use crate::fs::{Fs, OsFs};
use crate::key::StashKey;
use crate::meta::{Receipt, SaveOptions, StashInfo};
use crate::plan::{
    Fingerprint, Limits, Overrides, Plan, Refusal, Rule, UnparseableIds, join_refusals, plan,
};
use crate::rollback::Restored;
use crate::store::KeyLock;
use crate::store::Store;
use crate::store::{RestoreFailure, RestoreOutcome, Restorer};

/// The kind label of every tenant stash written by [`Reconciler::execute`].
///
/// # Examples
///
/// ```
/// assert_eq!(safestash::TENANT_SNAPSHOT_KIND, "tenant-snapshot");
/// ```
pub const TENANT_SNAPSHOT_KIND: &str = "tenant-snapshot";

/// What every tenant key starts with: `tenant/` escaped by
/// [`StashKey::from_any`].
const TENANT_KEY_PREFIX: &str = "tenant_2F";

/// Between a tenant's first key and the generation number of a later
/// snapshot. [`StashKey::from_any`] never yields `_g` (it only writes `_`
/// before two uppercase hex digits, or in `__` before lowercase hex), so a
/// generation key can never be another tenant's key.
const GENERATION_INFIX: &str = "_g";

/// The default retention of tenant stashes: 30 days.
const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Everything the guard refuses or fails at. Tenants are named by their
/// canonical id's text.
///
/// # Examples
///
/// ```
/// use safestash::{CanonicalUuid, IdSet, Limits, Overrides, ReconcileError, Rule, plan};
///
/// let mut raw: Vec<String> = (1..=20).map(|n| uuid::Uuid::from_u128(n).to_string()).collect();
/// raw.push("not-a-uuid".into());
/// let local: IdSet<CanonicalUuid> = IdSet::canonicalize(&raw);
/// let truth: IdSet<CanonicalUuid> = IdSet::canonicalize((2..=20).map(uuid::Uuid::from_u128));
/// match plan(&local, &truth).check(&Limits::default(), &Overrides::none()) {
///     Err(ReconcileError::Refused { refusals }) => assert_eq!(refusals[0].rule(), Rule::Unparseable),
///     other => panic!("expected a refusal, got {other:?}"),
/// }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReconcileError {
    /// The plan breaks rules the caller did not lift. Nothing was done.
    #[error("{}", join_refusals(refusals))]
    Refused {
        /// Every rule that fired and was not lifted.
        refusals: Vec<Refusal>,
    },
    /// The inputs are not the ones the plan was computed from. Nothing was
    /// done.
    #[error(
        "refusing to execute a stale plan: it was computed from inputs with fingerprint \
         {planned}, the inputs now have fingerprint {current}; compute a new plan"
    )]
    Stale {
        /// The plan's fingerprint.
        planned: Fingerprint,
        /// The fingerprint of the inputs given to execute it.
        current: Fingerprint,
    },
    /// The plan differs from the one its inputs give (it was edited after
    /// it was computed). Nothing was done.
    #[error(
        "refusing to execute plan {fingerprint}: it differs from the plan its inputs give \
         (was it edited?)"
    )]
    Altered {
        /// The plan's fingerprint.
        fingerprint: Fingerprint,
    },
    /// The exporter failed: nothing was stashed or deleted for the tenant.
    #[error("failed to export tenant {tenant}; nothing was deleted for it")]
    Export {
        /// The tenant.
        tenant: String,
        /// The exporter's error.
        #[source]
        source: BoxError,
    },
    /// The snapshot could not be stashed (or an existing stash read):
    /// the tenant was not deleted.
    #[error("failed to stash tenant {tenant} under `{key}`; nothing was deleted for it")]
    Stash {
        /// The tenant.
        tenant: String,
        /// Its stash key.
        key: StashKey,
        /// The store's error.
        #[source]
        source: Box<Error>,
    },
    /// A stash appeared at the key chosen for the tenant's new snapshot
    /// (written by something other than a reconciler, between the look and
    /// the save). It is never overwritten, and the tenant is not deleted.
    ///
    /// An earlier snapshot of the tenant does not stop a run: the new one
    /// gets a key of its own (see [`Reconciler::tenant_stashes`]).
    #[error(
        "tenant {tenant} already has a stash `{key}` (origin {}, created {}); it is never \
         overwritten: restore it with restore_tenant, or inspect and clear it, then run again",
        origin.as_deref().unwrap_or("none"),
        humantime::format_rfc3339_seconds(*created)
    )]
    StashExists {
        /// The tenant.
        tenant: String,
        /// Its stash key.
        key: StashKey,
        /// The existing stash's origin.
        origin: Option<String>,
        /// When the existing stash was written.
        created: SystemTime,
    },
    /// The deleter failed. The tenant's stash is kept.
    #[error("failed to delete tenant {tenant}; its stash `{key}` is kept")]
    Delete {
        /// The tenant.
        tenant: String,
        /// Its stash key.
        key: StashKey,
        /// The deleter's error.
        #[source]
        source: BoxError,
    },
    /// There is no stash to restore the tenant from.
    #[error("no stash for tenant {tenant} (key `{key}`)")]
    NoStash {
        /// The tenant.
        tenant: String,
        /// The key looked at.
        key: StashKey,
    },
    /// [`Reconciler::restore_tenant_stash`] was given a key that is not one of the
    /// tenant's snapshot keys; nothing was restored.
    #[error("`{key}` is not a snapshot key of tenant {tenant}; not restored")]
    NotTheTenantsKey {
        /// The tenant.
        tenant: String,
        /// The key given.
        key: StashKey,
    },
    /// The stash at the tenant's key is not a tenant snapshot; it is not
    /// restored.
    #[error(
        "stash `{key}` of tenant {tenant} has kind `{kind}`, not `tenant-snapshot`; not restored"
    )]
    NotATenantSnapshot {
        /// The tenant.
        tenant: String,
        /// The key.
        key: StashKey,
        /// The stash's kind.
        kind: String,
    },
    /// The tenant's stash could not be loaded (it may be damaged: it is
    /// never restored then).
    #[error("failed to load the stash of tenant {tenant} (key `{key}`)")]
    Load {
        /// The tenant.
        tenant: String,
        /// The key.
        key: StashKey,
        /// The store's error.
        #[source]
        source: Box<Error>,
    },
    /// The restore hook failed; the stash is kept for a retry.
    #[error("failed to restore tenant {tenant}")]
    Restore {
        /// The tenant.
        tenant: String,
        /// An [`Error::Restore`] naming the kept stash, with the hook's
        /// error as its source.
        #[source]
        source: Box<Error>,
    },
    /// The tenant was restored, but its stash could not be cleared: clear
    /// it once checked rather than restoring twice.
    #[error("tenant {tenant} was restored, but clearing its stash `{key}` failed")]
    ClearAfterRestore {
        /// The tenant.
        tenant: String,
        /// The key.
        key: StashKey,
        /// The store's error.
        #[source]
        source: Box<Error>,
    },
}

impl ReconcileError {
    /// The rules of a [`Refused`](ReconcileError::Refused) error (empty for
    /// any other error).
    ///
    /// # Examples
    ///
    /// See [`Plan::check`].
    pub fn refused_rules(&self) -> Vec<Rule> {
        match self {
            ReconcileError::Refused { refusals } => refusals.iter().map(Refusal::rule).collect(),
            _ => Vec::new(),
        }
    }
}

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
/// let id: safestash::CanonicalUuid = "6F9619FF-8B86-D011-B42D-00C04FC964FF".parse()?;
/// assert_eq!(safestash::tenant_key(&id).as_str(), "tenant_2F6f9619ff-8b86-d011-b42d-00c04fc964ff");
/// # Ok::<(), safestash::Unparseable>(())
/// ```
pub fn tenant_key<I: CanonicalId>(id: &I) -> StashKey {
    StashKey::from_any(&format!("tenant/{id}"))
}

/// The key of generation `generation` (from 1) of the tenant whose first
/// key is `first`.
fn generation_key(first: &StashKey, generation: u64) -> Result<StashKey> {
    if generation <= 1 {
        return Ok(first.clone());
    }
    Ok(StashKey::new(format!("{first}{GENERATION_INFIX}{generation}"))?)
}

/// The generation of `key` if it is one of the keys of the tenant whose
/// first key is `first`.
fn generation_of(first: &StashKey, key: &StashKey) -> Option<u64> {
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
fn tenant_stashes<I: CanonicalId, F: Fs>(
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

/// The key whose lock serialises reconcilers choosing and writing a
/// tenant's next snapshot. It is never a stash key, so a stash's own lock
/// is free while its observers run.
fn tenant_lock_key<I: CanonicalId>(id: &I) -> StashKey {
    StashKey::from_any(&format!("tenant-lock/{id}"))
}

thread_local! {
    /// The tenant locks this thread holds, by store directory and key: an
    /// observer or hook that calls back into a reconciler for the same
    /// tenant gets [`Error::Locked`] instead of waiting for itself.
    static HELD: std::cell::RefCell<Vec<(std::path::PathBuf, StashKey)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// A held tenant lock (see [`tenant_lock_key`]).
struct TenantLock<'s, F: Fs> {
    _lock: KeyLock<'s, F>,
    slot: (std::path::PathBuf, StashKey),
}

impl<'s, F: Fs> TenantLock<'s, F> {
    fn acquire<I: CanonicalId>(store: &'s Store<F>, id: &I) -> Result<TenantLock<'s, F>> {
        let key = tenant_lock_key(id);
        let slot = (store.dir().to_owned(), key);
        let reentrant = HELD.with(|held| held.borrow().contains(&slot));
        // Waiting for a lock this thread holds would wait forever.
        let lock = if reentrant { store.try_lock(&slot.1)? } else { store.lock(&slot.1)? };
        HELD.with(|held| held.borrow_mut().push(slot.clone()));
        Ok(TenantLock { _lock: lock, slot })
    }
}

impl<F: Fs> Drop for TenantLock<'_, F> {
    fn drop(&mut self) {
        HELD.with(|held| {
            let mut held = held.borrow_mut();
            if let Some(at) = held.iter().rposition(|s| *s == self.slot) {
                held.remove(at);
            }
        });
    }
}

/// A tenant stashed by a run.
///
/// # Examples
///
/// See [`Reconciler::execute`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StashedTenant<I> {
    /// The tenant.
    pub tenant: I,
    /// The durable stash of its snapshot.
    pub receipt: Receipt,
    /// The snapshot's generation (1 unless earlier ones were kept).
    pub generation: u64,
    /// The tenant's earlier stashes, oldest first, all kept untouched.
    pub earlier: Vec<StashKey>,
}

/// Where and why a run stopped.
///
/// # Examples
///
/// See [`Reconciler::execute`].
#[derive(Debug)]
#[non_exhaustive]
pub struct Stopped<I> {
    /// The tenant the run stopped at. It was not deleted, or not completely:
    /// if it was stashed, the stash is kept.
    pub tenant: I,
    /// What went wrong: [`ReconcileError::Export`], [`Stash`](ReconcileError::Stash)
    /// (also when a hook or observer calls back into a run for a tenant its
    /// own thread is stashing: [`Error::Locked`] as the source),
    /// [`StashExists`](ReconcileError::StashExists) or
    /// [`Delete`](ReconcileError::Delete).
    pub error: ReconcileError,
}

/// What a run did. A run stops at the first tenant that fails (fail
/// closed): check [`is_complete`](ExecutionReport::is_complete).
///
/// # Examples
///
/// See [`Reconciler::execute`].
#[derive(Debug)]
#[non_exhaustive]
#[must_use = "a run may have stopped early: check `is_complete` or `stopped`"]
pub struct ExecutionReport<I> {
    /// The executed plan's fingerprint (the origin of every stash written).
    pub fingerprint: Fingerprint,
    /// Tenants deleted, in order. Each was stashed first.
    pub deleted: Vec<I>,
    /// Stashes written, in order (including that of a tenant whose delete
    /// failed).
    pub stashed: Vec<StashedTenant<I>>,
    /// Where the run stopped, if it did not complete.
    pub stopped: Option<Stopped<I>>,
    /// Tenants planned for deletion and not attempted because the run
    /// stopped.
    pub not_attempted: Vec<I>,
    /// The refusals that explicit overrides lifted for this run.
    pub overridden: Vec<Refusal>,
    /// The inputs that could not be canonicalised (as in
    /// [`Plan::unparseable`]): never deleted, and reported even when the
    /// plan deletes nothing and so was not refused for them.
    pub unparseable: UnparseableIds,
    /// How long the stashes are to be kept (see [`purge_expired`]).
    pub retention: Duration,
}

impl<I> ExecutionReport<I> {
    /// Whether every planned tenant was stashed and deleted.
    ///
    /// # Examples
    ///
    /// See [`Reconciler::execute`].
    pub fn is_complete(&self) -> bool {
        self.stopped.is_none()
    }
}

impl<I: fmt::Display> fmt::Display for ExecutionReport<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} deleted, {} stashed", self.deleted.len(), self.stashed.len())?;
        if !self.unparseable.is_empty() {
            write!(f, ", {} unparseable ids left alone", self.unparseable.len())?;
        }
        if let Some(stopped) = &self.stopped {
            write!(
                f,
                "; stopped at tenant {}: {} ({} not attempted)",
                stopped.tenant,
                stopped.error,
                self.not_attempted.len()
            )?;
        }
        Ok(())
    }
}

/// Runs plans against a store: checks them against [`Limits`] and
/// [`Overrides`], then stashes each tenant before deleting it.
///
/// # Examples
///
/// See [`Reconciler::execute`].
pub struct Reconciler<'s, F: Fs = OsFs> {
    store: &'s Store<F>,
    limits: Limits,
    overrides: Overrides,
    retention: Duration,
}

impl<F: Fs> fmt::Debug for Reconciler<'_, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reconciler")
            .field("store", &self.store.dir())
            .field("limits", &self.limits)
            .field("overrides", &self.overrides)
            .field("retention", &self.retention)
            .finish()
    }
}

impl<'s, F: Fs> Reconciler<'s, F> {
    /// A reconciler stashing into `store`, with the default [`Limits`], no
    /// overrides, and a retention of 30 days.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let store = safestash::Store::open(dir.path())?;
    /// let reconciler = safestash::Reconciler::new(&store);
    /// assert_eq!(reconciler.retention(), std::time::Duration::from_secs(30 * 24 * 3600));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(store: &'s Store<F>) -> Reconciler<'s, F> {
        Reconciler {
            store,
            limits: Limits::default(),
            overrides: Overrides::none(),
            retention: DEFAULT_RETENTION,
        }
    }

    /// Sets the limits.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// let r = safestash::Reconciler::new(&store).limits(safestash::Limits::default().max_count(20));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Reconciler<'s, F> {
        self.limits = limits;
        self
    }

    /// Sets the rules lifted for this reconciler's runs.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// use safestash::{Overrides, Reconciler, Rule};
    /// let r = Reconciler::new(&store).overrides(Overrides::allow(Rule::Unparseable));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn overrides(mut self, overrides: Overrides) -> Reconciler<'s, F> {
        self.overrides = overrides;
        self
    }

    /// Sets how long tenant stashes are kept (see
    /// [`purge_expired`](Reconciler::purge_expired)).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// let week = std::time::Duration::from_secs(7 * 24 * 3600);
    /// assert_eq!(safestash::Reconciler::new(&store).retain_for(week).retention(), week);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn retain_for(mut self, retention: Duration) -> Reconciler<'s, F> {
        self.retention = retention;
        self
    }

    /// How long tenant stashes are kept.
    ///
    /// # Examples
    ///
    /// See [`Reconciler::new`].
    pub fn retention(&self) -> Duration {
        self.retention
    }

    /// [`Plan::check`] with this reconciler's limits and overrides: the
    /// dry run's verdict.
    ///
    /// # Errors
    ///
    /// [`ReconcileError::Refused`].
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// use safestash::{CanonicalUuid, IdSet, Reconciler, plan};
    /// let local: IdSet<CanonicalUuid> = IdSet::canonicalize((1..=20).map(uuid::Uuid::from_u128));
    /// let truth: IdSet<CanonicalUuid> = IdSet::canonicalize((1..=19).map(uuid::Uuid::from_u128));
    /// assert!(Reconciler::new(&store).check(&plan(&local, &truth))?.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn check<I: CanonicalId>(&self, plan: &Plan<I>) -> Result<Vec<Refusal>, ReconcileError> {
        plan.check(&self.limits, &self.overrides)
    }

    /// Executes `plan` against the inputs it was computed from.
    ///
    /// First, with nothing done yet: recomputes the plan from `local` and
    /// `authoritative` and refuses a different fingerprint
    /// ([`ReconcileError::Stale`]) or a different plan
    /// ([`ReconcileError::Altered`]), then refuses a plan that breaks a rule
    /// not lifted ([`ReconcileError::Refused`]).
    ///
    /// A plan that deletes nothing is never refused, whatever its
    /// unparseable ids; they are reported in
    /// [`ExecutionReport::unparseable`].
    ///
    /// Then, for each tenant to delete, in the plan's (sorted) order:
    ///
    /// 1. with the tenant locked against other reconcilers, the tenant's
    ///    stashes are listed ([`Reconciler::tenant_stashes`]) and the new snapshot's
    ///    key chosen: [`tenant_key`] if there is none, else one generation
    ///    past the newest. An earlier snapshot (of a tenant re-created and
    ///    due for deletion again, or of a run whose delete failed) is never
    ///    overwritten and does not stop the run;
    /// 2. `exporter(id)` takes the snapshot;
    /// 3. the snapshot is saved durably under that key, with kind
    ///    [`TENANT_SNAPSHOT_KIND`] and the plan's fingerprint as origin;
    /// 4. only then, `deleter(id)` deletes the tenant (the tenant lock
    ///    released).
    ///
    /// The first failure stops the run (fail closed): a failed export or
    /// stash deletes nothing for that tenant, a failed delete keeps its
    /// stash. The report says what was done and where the run stopped.
    ///
    /// Observers of the store see each snapshot's `Saved` event with no
    /// lock on the snapshot's key held, so one may read, rewrite or clear
    /// that key; one that calls back into a run for the same tenant on the
    /// same thread gets a [`ReconcileError::Stash`] (source
    /// [`Error::Locked`]) rather than waiting for itself.
    ///
    /// # Errors
    ///
    /// `Stale`, `Altered` or `Refused`, before anything is done. Failures
    /// during the run are in [`ExecutionReport::stopped`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::cell::RefCell;
    /// use std::collections::BTreeMap;
    /// use safestash::{CanonicalUuid, IdSet, Reconciler, Store, TENANT_SNAPSHOT_KIND, plan, tenant_key};
    /// use uuid::Uuid;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let store = Store::open(dir.path())?;
    /// // Twenty tenants and their data; the source of truth lists all but one.
    /// let db: RefCell<BTreeMap<Uuid, Vec<String>>> =
    ///     RefCell::new((1..=20).map(|n| (Uuid::from_u128(n), vec![format!("call {n}")])).collect());
    /// let local: IdSet<CanonicalUuid> = IdSet::canonicalize(db.borrow().keys().copied());
    /// let truth: Vec<String> = (2..=20).map(|n| Uuid::from_u128(n).simple().to_string().to_uppercase()).collect();
    /// let truth: IdSet<CanonicalUuid> = IdSet::canonicalize(&truth);
    ///
    /// let p = plan(&local, &truth);
    /// let report = Reconciler::new(&store).execute(
    ///     &p,
    ///     &local,
    ///     &truth,
    ///     |id| db.borrow().get(&id.uuid()).cloned().ok_or("no such tenant"),
    ///     |id| db.borrow_mut().remove(&id.uuid()).map(drop).ok_or("no such tenant"),
    /// )?;
    /// assert!(report.is_complete());
    /// let gone = CanonicalUuid::from(Uuid::from_u128(1));
    /// assert_eq!(report.deleted, [gone]);
    /// assert_eq!(db.borrow().len(), 19);
    /// let stash = store.load::<Vec<String>>(&tenant_key(&gone))?.expect("stashed first");
    /// assert_eq!(stash.value(), &["call 1"]);
    /// assert_eq!(stash.meta().header.kind(), TENANT_SNAPSHOT_KIND);
    /// assert_eq!(stash.meta().header.origin(), Some(p.fingerprint().to_string().as_str()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn execute<I, T, X, XE, D, DE>(
        &self,
        plan: &Plan<I>,
        local: &IdSet<I>,
        authoritative: &IdSet<I>,
        mut exporter: X,
        mut deleter: D,
    ) -> Result<ExecutionReport<I>, ReconcileError>
    where
        I: CanonicalId,
        T: Serialize,
        X: FnMut(&I) -> Result<T, XE>,
        XE: Into<BoxError>,
        D: FnMut(&I) -> Result<(), DE>,
        DE: Into<BoxError>,
    {
        let current = self::plan(local, authoritative);
        if current.fingerprint != plan.fingerprint {
            return Err(ReconcileError::Stale {
                planned: plan.fingerprint,
                current: current.fingerprint,
            });
        }
        if current != *plan {
            return Err(ReconcileError::Altered { fingerprint: plan.fingerprint });
        }
        let overridden = self.check(&current)?;
        for refusal in &overridden {
            tracing::warn!(rule = %refusal.rule(), plan = %current.fingerprint, "explicit override: {refusal}");
        }
        if !current.unparseable().is_empty() {
            tracing::warn!(
                plan = %current.fingerprint,
                local = current.unparseable().local.len(),
                authoritative = current.unparseable().authoritative.len(),
                "input ids could not be canonicalised; they are left alone"
            );
        }
        let opts =
            SaveOptions::new().kind(TENANT_SNAPSHOT_KIND).origin(current.fingerprint.to_string());
        let mut report = ExecutionReport {
            fingerprint: current.fingerprint,
            deleted: Vec::new(),
            stashed: Vec::new(),
            stopped: None,
            not_attempted: Vec::new(),
            overridden,
            unparseable: current.unparseable().clone(),
            retention: self.retention,
        };
        let mut pending = current.delete.into_iter();
        while let Some(id) = pending.next() {
            match self.stash_and_delete(&id, &opts, &mut exporter, &mut deleter, &mut report) {
                Ok(()) => {
                    tracing::info!(tenant = %id, plan = %report.fingerprint, "tenant stashed and deleted");
                    report.deleted.push(id);
                }
                Err(error) => {
                    tracing::warn!(tenant = %id, error = %error, "run stopped");
                    report.stopped = Some(Stopped { tenant: id, error });
                    report.not_attempted = pending.collect();
                    break;
                }
            }
        }
        Ok(report)
    }

    fn stash_and_delete<I, T, X, XE, D, DE>(
        &self,
        id: &I,
        opts: &SaveOptions,
        exporter: &mut X,
        deleter: &mut D,
        report: &mut ExecutionReport<I>,
    ) -> Result<(), ReconcileError>
    where
        I: CanonicalId,
        T: Serialize,
        X: FnMut(&I) -> Result<T, XE>,
        XE: Into<BoxError>,
        D: FnMut(&I) -> Result<(), DE>,
        DE: Into<BoxError>,
    {
        let first = tenant_key(id);
        let stash_err = |key: &StashKey| {
            let key = key.clone();
            move |source| ReconcileError::Stash {
                tenant: id.to_string(),
                key,
                source: Box::new(source),
            }
        };
        // Held from the look to the save, so two runs cannot pick the same
        // key (and the second overwrite the first's snapshot). It is not the
        // snapshot key's own lock: the store releases that one before it
        // notifies observers, so an observer may write the key.
        let tenant_lock = TenantLock::acquire(self.store, id).map_err(stash_err(&first))?;
        let earlier = tenant_stashes(self.store, id).map_err(stash_err(&first))?;
        let generation = match earlier.last() {
            None => 1,
            Some((newest, _)) => newest.saturating_add(1),
        };
        let key = generation_key(&first, generation).map_err(stash_err(&first))?;
        // Only a writer that ignores the tenant lock can have put one there.
        if let Some(existing) = self.store.load::<IgnoredAny>(&key).map_err(stash_err(&key))? {
            let header = &existing.meta().header;
            return Err(ReconcileError::StashExists {
                tenant: id.to_string(),
                key: key.clone(),
                origin: header.origin().map(str::to_owned),
                created: header.created(),
            });
        }
        let snapshot = exporter(id)
            .map_err(|e| ReconcileError::Export { tenant: id.to_string(), source: e.into() })?;
        let receipt = self.store.save_with(&key, &snapshot, opts).map_err(stash_err(&key))?;
        drop(tenant_lock);
        let earlier: Vec<StashKey> = earlier.into_iter().map(|(_, info)| info.key).collect();
        if !earlier.is_empty() {
            tracing::info!(tenant = %id, key = %key, earlier = earlier.len(), "tenant stashed next to its earlier snapshots");
        }
        report.stashed.push(StashedTenant { tenant: id.clone(), receipt, generation, earlier });
        // The stash is durable: only now may the tenant go.
        deleter(id).map_err(|e| ReconcileError::Delete {
            tenant: id.to_string(),
            key: key.clone(),
            source: e.into(),
        })
    }

    /// Restores a deleted tenant from the snapshot at `key`, one of its keys
    /// (from [`Reconciler::tenant_stashes`] or a [`StashedTenant`]): loads and verifies it,
    /// hands it to `restorer` to put the tenant back, and only if that
    /// succeeded, clears it (if it is still the one restored). The same
    /// semantics as [`RollbackGuard::rollback`](crate::RollbackGuard::rollback),
    /// and what [`restore_tenant`] does with the newest key.
    /// Observers are notified with no lock held.
    ///
    /// # Errors
    ///
    /// - [`ReconcileError::NotTheTenantsKey`] when `key` is not one of the
    ///   tenant's keys;
    /// - [`ReconcileError::NoStash`] when there is no stash at `key`;
    /// - [`ReconcileError::Load`] when it cannot be loaded (a damaged stash is
    ///   never restored);
    /// - [`ReconcileError::NotATenantSnapshot`] when the stash there has
    ///   another kind;
    /// - [`ReconcileError::Restore`] when the hook fails (the stash is kept);
    /// - [`ReconcileError::ClearAfterRestore`] when the tenant was restored but
    ///   its stash could not be cleared.
    ///
    /// # Examples
    ///
    /// A tenant deleted twice has two snapshots; restore the first life's.
    ///
    /// ```
    /// use safestash::{CanonicalUuid, Reconciler, SaveOptions, Stashed, Store, TENANT_SNAPSHOT_KIND, tenant_key};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let store = Store::open(dir.path())?;
    /// let id = CanonicalUuid::from(uuid::Uuid::from_u128(7));
    /// let opts = SaveOptions::new().kind(TENANT_SNAPSHOT_KIND);
    /// store.save_with(&tenant_key(&id), &"first life", &opts)?;
    /// let second = safestash::StashKey::new(format!("{}_g2", tenant_key(&id)))?; // as a run names it
    /// store.save_with(&second, &"second life", &opts)?;
    ///
    /// let reconciler = Reconciler::new(&store);
    /// let stashes = reconciler.tenant_stashes(&id)?;
    /// assert_eq!(stashes.iter().map(|s| &s.key).collect::<Vec<_>>(), [&tenant_key(&id), &second]);
    /// let mut got = String::new();
    /// reconciler.restore_tenant_stash(&id, &stashes[0].key, &mut |s: Stashed<String>| {
    ///     got = s.into_value();
    ///     Ok::<(), std::io::Error>(())
    /// })?;
    /// assert_eq!(got, "first life");
    /// assert_eq!(reconciler.tenant_stashes(&id)?[0].key, second); // the other one is kept
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn restore_tenant_stash<I, T, R>(
        &self,
        id: &I,
        key: &StashKey,
        restorer: &mut R,
    ) -> Result<Restored, ReconcileError>
    where
        I: CanonicalId,
        T: DeserializeOwned,
        R: Restorer<T>,
    {
        restore_from(self.store, id, key, restorer)
    }

    /// Every stash at one of `id`'s snapshot keys, oldest first: the first
    /// snapshot at [`tenant_key`], later ones (of a tenant deleted again
    /// while an earlier snapshot was kept) at that key followed by `_g2`,
    /// `_g3`, ... Damaged stashes, and stashes of another kind at a tenant
    /// key, are listed too (with the reason in [`StashInfo::header`]):
    /// they are never overwritten either, and count when a run chooses the
    /// next generation. Reads only the headers.
    ///
    /// [`restore_tenant`] restores the last (newest) one;
    /// [`restore_tenant_stash`](Reconciler::restore_tenant_stash) the one
    /// you choose.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the store's directory cannot be listed.
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::{CanonicalUuid, Reconciler, SaveOptions, Store, TENANT_SNAPSHOT_KIND, tenant_key};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let store = Store::open(dir.path())?;
    /// let id = CanonicalUuid::from(uuid::Uuid::from_u128(7));
    /// let reconciler = Reconciler::new(&store);
    /// assert!(reconciler.tenant_stashes(&id)?.is_empty());
    /// store.save_with(&tenant_key(&id), &"first life", &SaveOptions::new().kind(TENANT_SNAPSHOT_KIND))?;
    /// let stashes = reconciler.tenant_stashes(&id)?;
    /// assert_eq!(stashes.len(), 1);
    /// assert_eq!(stashes[0].key, tenant_key(&id));
    /// assert_eq!(stashes[0].header.as_ref().unwrap().kind(), TENANT_SNAPSHOT_KIND);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn tenant_stashes<I: CanonicalId>(&self, id: &I) -> Result<Vec<StashInfo>> {
        Ok(tenant_stashes(self.store, id)?.into_iter().map(|(_, info)| info).collect())
    }

    /// [`purge_expired`] with this reconciler's retention.
    ///
    /// # Errors
    ///
    /// As [`purge_expired`].
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// let purged = safestash::Reconciler::new(&store).purge_expired()?;
    /// assert!(purged.removed.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn purge_expired(&self) -> Result<PurgeReport> {
        purge_expired(self.store, self.retention)
    }
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
/// use safestash::{
///     CanonicalUuid, IdSet, Overrides, Reconciler, Rule, Stashed, Store, plan, restore_tenant,
///     tenant_key,
/// };
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
fn restore_from<I, T, R, F>(
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
    match store.restore_verified::<T, R>(&key, &digest, restorer) {
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

fn expired(created: SystemTime, now: SystemTime, retention: Duration) -> bool {
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
/// use safestash::{CanonicalUuid, SaveOptions, Store, purge_expired, tenant_key, TENANT_SNAPSHOT_KIND};
///
/// let dir = tempfile::tempdir()?;
/// let store = Store::open(dir.path())?;
/// let id = CanonicalUuid::from(uuid::Uuid::from_u128(1));
/// store.save_with(&tenant_key(&id), &"snapshot", &SaveOptions::new().kind(TENANT_SNAPSHOT_KIND))?;
///
/// let report = purge_expired(&store, Duration::from_secs(3600))?;
/// assert_eq!((report.removed.len(), report.retained), (0, 1)); // young: kept
/// std::thread::sleep(Duration::from_millis(5));
/// let report = purge_expired(&store, Duration::from_millis(1))?;
/// assert_eq!(report.removed, [tenant_key(&id)]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn purge_expired<F: Fs>(store: &Store<F>, retention: Duration) -> Result<PurgeReport> {
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
