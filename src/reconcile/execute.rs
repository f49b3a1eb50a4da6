//! [`Reconciler`]: a checked plan executed, stashing each tenant before
//! deleting it.

use super::tenants::{
    DEFAULT_RETENTION, RunLock, all_generations, generation_key, restore_from, snapshot_store,
    tenant_stashes,
};
use super::*;

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
pub struct Reconciler<F: Fs = OsFs> {
    store: Store<F>,
    /// The reserved namespace `tenants` of `store`, where the snapshots live.
    snapshots: Store<F>,
    limits: Limits,
    overrides: Overrides,
    retention: Duration,
}

impl<F: Fs> fmt::Debug for Reconciler<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reconciler")
            .field("store", &self.store.dir())
            .field("limits", &self.limits)
            .field("overrides", &self.overrides)
            .field("retention", &self.retention)
            .finish()
    }
}

impl<F: Fs> Reconciler<F> {
    /// A reconciler stashing into `store`, with the default [`Limits`], no
    /// overrides, and a retention of 30 days.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let store = safestash::Store::open(dir.path())?;
    /// let reconciler = safestash::reconcile::Reconciler::new(&store);
    /// assert_eq!(reconciler.retention(), std::time::Duration::from_secs(30 * 24 * 3600));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(store: &Store<F>) -> Reconciler<F> {
        Reconciler {
            store: store.clone(),
            snapshots: snapshot_store(store),
            limits: Limits::default(),
            overrides: Overrides::none(),
            retention: DEFAULT_RETENTION,
        }
    }

    /// The store of tenant snapshots: the reserved namespace `tenants` of
    /// the reconciler's store (see [`Store::namespace`]). No user key can
    /// collide with a snapshot's, and tools over the user's stashes (the
    /// operator CLI's `gc`, a plain [`Store::list`]) never reach them; its
    /// saves still reach the store's observers.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let store = safestash::Store::open(dir.path())?;
    /// let reconciler = safestash::reconcile::Reconciler::new(&store);
    /// assert_eq!(reconciler.snapshots().dir(), dir.path().join(".ns.tenants"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn snapshots(&self) -> &Store<F> {
        &self.snapshots
    }

    /// Sets the limits.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// let r = safestash::reconcile::Reconciler::new(&store).limits(safestash::reconcile::Limits::default().max_count(20));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Reconciler<F> {
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
    /// use safestash::reconcile::{Overrides, Reconciler, Rule};
    /// let r = Reconciler::new(&store).overrides(Overrides::allow(Rule::Unparseable));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn overrides(mut self, overrides: Overrides) -> Reconciler<F> {
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
    /// assert_eq!(safestash::reconcile::Reconciler::new(&store).retain_for(week).retention(), week);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn retain_for(mut self, retention: Duration) -> Reconciler<F> {
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
    /// use safestash::reconcile::{CanonicalUuid, IdSet, plan, Reconciler};
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
    /// use safestash::{Store, reconcile::{CanonicalUuid, IdSet, plan, Reconciler, tenant_key, TENANT_SNAPSHOT_KIND}};
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
    /// let stash = store.namespace("tenants")?.load::<Vec<String>>(&tenant_key(&gone))?.expect("stashed first");
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
        T: Serialize + Sync,
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
        let Some(first_tenant) = current.delete.first().cloned() else {
            return Ok(report);
        };
        // Phase 1: every snapshot of the plan, durable in one batch, before
        // the first delete. The run lock keeps two runs from choosing the
        // same generation keys (and, held by this thread, turns a callback
        // into a run on the same store into a clear error, not a wait).
        let prepared = RunLock::acquire(&self.snapshots)
            .and_then(|lock| Ok((lock, all_generations(&self.snapshots)?)));
        let (run_lock, generations) = match prepared {
            Ok(prepared) => prepared,
            Err(source) => {
                let error = ReconcileError::Stash {
                    tenant: first_tenant.to_string(),
                    key: tenant_key(&first_tenant),
                    source: Box::new(source),
                };
                tracing::warn!(tenant = %first_tenant, error = %error, "run stopped before any delete");
                report.stopped = Some(Stopped { tenant: first_tenant, error });
                report.not_attempted = current.delete.into_iter().skip(1).collect();
                return Ok(report);
            }
        };
        let mut chosen: Vec<(I, StashKey, u64, Vec<StashKey>)> = Vec::new();
        let mut snapshots = Vec::with_capacity(current.delete.len());
        let mut pending = current.delete.into_iter();
        while let Some(id) = pending.next() {
            match self.choose_key(&id, &generations).and_then(|(key, generation, earlier)| {
                let snapshot = exporter(&id).map_err(|e| ReconcileError::Export {
                    tenant: id.to_string(),
                    source: e.into(),
                })?;
                Ok((key, generation, earlier, snapshot))
            }) {
                Ok((key, generation, earlier, snapshot)) => {
                    chosen.push((id, key, generation, earlier));
                    snapshots.push(snapshot);
                }
                Err(error) => {
                    tracing::warn!(tenant = %id, error = %error, "run stopped before any delete");
                    report.stopped = Some(Stopped { tenant: id, error });
                    report.not_attempted =
                        chosen.into_iter().map(|(id, ..)| id).chain(pending).collect();
                    return Ok(report);
                }
            }
        }
        // Through the run lock's fencing: a run whose lock was lost (a
        // lease that ran out while it exported) writes no snapshot.
        let mut batch = self.snapshots.batch_under(&run_lock.lock);
        for ((id, key, ..), snapshot) in chosen.iter().zip(&snapshots) {
            batch.add_if(key, snapshot, &opts, Precondition::Absent).map_err(|source| {
                ReconcileError::Stash {
                    tenant: id.to_string(),
                    key: key.clone(),
                    source: Box::new(source),
                }
            })?;
        }
        let receipts = match batch.commit() {
            Ok(receipts) => receipts,
            Err(e) => {
                // Nothing is deleted: the plan's snapshots are not all durable.
                let failed = e.not_saved.first().cloned();
                let saved: Vec<StashKey> = e.saved.iter().map(|r| r.key.clone()).collect();
                let mut stopped_at = None;
                for ((id, key, generation, earlier), receipt) in
                    chosen.iter().filter(|(_, k, ..)| saved.contains(k)).zip(e.saved)
                {
                    debug_assert_eq!(&receipt.key, key);
                    report.stashed.push(StashedTenant {
                        tenant: id.clone(),
                        receipt,
                        generation: *generation,
                        earlier: earlier.clone(),
                    });
                }
                for (id, key, ..) in &chosen {
                    if Some(key) == failed.as_ref() && stopped_at.is_none() {
                        stopped_at = Some(id.clone());
                    } else {
                        report.not_attempted.push(id.clone());
                    }
                }
                let tenant = stopped_at.unwrap_or_else(|| chosen[0].0.clone());
                let key = failed.unwrap_or_else(|| chosen[0].1.clone());
                let error = match e.error {
                    Error::StashExists { .. } => {
                        let existing = self.snapshots.load::<IgnoredAny>(&key).ok().flatten();
                        ReconcileError::StashExists {
                            tenant: tenant.to_string(),
                            key: key.clone(),
                            origin: existing
                                .as_ref()
                                .and_then(|s| s.meta().header.origin().map(str::to_owned)),
                            created: existing
                                .as_ref()
                                .map_or(SystemTime::UNIX_EPOCH, |s| s.meta().header.created()),
                        }
                    }
                    other => ReconcileError::Stash {
                        tenant: tenant.to_string(),
                        key: key.clone(),
                        source: Box::new(other),
                    },
                };
                tracing::warn!(tenant = %tenant, error = %error, "run stopped before any delete");
                report.stopped = Some(Stopped { tenant, error });
                return Ok(report);
            }
        };
        drop(snapshots);
        drop(run_lock);
        // Phase 2: the snapshots are durable; only now may the tenants go.
        let mut rest = chosen.into_iter().zip(receipts);
        while let Some(((id, key, generation, earlier), receipt)) = rest.next() {
            if !earlier.is_empty() {
                tracing::info!(tenant = %id, key = %key, earlier = earlier.len(), "tenant stashed next to its earlier snapshots");
            }
            report.stashed.push(StashedTenant { tenant: id.clone(), receipt, generation, earlier });
            match deleter(&id) {
                Ok(()) => {
                    tracing::info!(tenant = %id, plan = %report.fingerprint, "tenant stashed and deleted");
                    report.deleted.push(id);
                }
                Err(e) => {
                    let error = ReconcileError::Delete {
                        tenant: id.to_string(),
                        key: key.clone(),
                        source: e.into(),
                    };
                    tracing::warn!(tenant = %id, error = %error, "run stopped");
                    report.stopped = Some(Stopped { tenant: id, error });
                    for ((id, _, generation, earlier), receipt) in rest.by_ref() {
                        report.stashed.push(StashedTenant {
                            tenant: id.clone(),
                            receipt,
                            generation,
                            earlier,
                        });
                        report.not_attempted.push(id);
                    }
                    break;
                }
            }
        }
        Ok(report)
    }

    /// The key of `id`'s next snapshot: generation 1, or one past the
    /// newest present.
    fn choose_key<I: CanonicalId>(
        &self,
        id: &I,
        generations: &std::collections::BTreeMap<StashKey, Vec<(u64, StashKey)>>,
    ) -> Result<(StashKey, u64, Vec<StashKey>), ReconcileError> {
        let first = tenant_key(id);
        let earlier: Vec<(u64, StashKey)> = generations.get(&first).cloned().unwrap_or_default();
        let generation = earlier.last().map_or(1, |(newest, _)| newest.saturating_add(1));
        let key = generation_key(&first, generation).map_err(|source| ReconcileError::Stash {
            tenant: id.to_string(),
            key: first.clone(),
            source: Box::new(source),
        })?;
        Ok((key, generation, earlier.into_iter().map(|(_, k)| k).collect()))
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
    /// use safestash::{SaveOptions, Stashed, Store, reconcile::{CanonicalUuid, Reconciler, tenant_key, TENANT_SNAPSHOT_KIND}};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let store = Store::open(dir.path())?;
    /// let id = CanonicalUuid::from(uuid::Uuid::from_u128(7));
    /// let opts = SaveOptions::new().kind(TENANT_SNAPSHOT_KIND);
    /// let reconciler = Reconciler::new(&store);
    /// let snapshots = reconciler.snapshots();
    /// snapshots.save_with(&tenant_key(&id), &"first life", &opts)?;
    /// let second = safestash::StashKey::new(format!("{}_g2", tenant_key(&id)))?; // as a run names it
    /// snapshots.save_with(&second, &"second life", &opts)?;
    ///
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
        restore_from(&self.snapshots, id, key, restorer)
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
    /// use safestash::{SaveOptions, Store, reconcile::{CanonicalUuid, Reconciler, tenant_key, TENANT_SNAPSHOT_KIND}};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let store = Store::open(dir.path())?;
    /// let id = CanonicalUuid::from(uuid::Uuid::from_u128(7));
    /// let reconciler = Reconciler::new(&store);
    /// assert!(reconciler.tenant_stashes(&id)?.is_empty());
    /// store.namespace("tenants")?.save_with(&tenant_key(&id), &"first life", &SaveOptions::new().kind(TENANT_SNAPSHOT_KIND))?;
    /// let stashes = reconciler.tenant_stashes(&id)?;
    /// assert_eq!(stashes.len(), 1);
    /// assert_eq!(stashes[0].key, tenant_key(&id));
    /// assert_eq!(stashes[0].header.as_ref().unwrap().kind(), TENANT_SNAPSHOT_KIND);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn tenant_stashes<I: CanonicalId>(&self, id: &I) -> Result<Vec<StashInfo>> {
        Ok(tenant_stashes(&self.snapshots, id)?.into_iter().map(|(_, info)| info).collect())
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
    /// let purged = safestash::reconcile::Reconciler::new(&store).purge_expired()?;
    /// assert!(purged.removed.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn purge_expired(&self) -> Result<PurgeReport> {
        purge_expired(&self.store, self.retention)
    }
}
