//! [`ReconcileError`]: everything the guard refuses or fails at.

use super::*;

/// Everything the guard refuses or fails at. Tenants are named by their
/// canonical id's text.
///
/// # Examples
///
/// ```
/// use safestash::reconcile::{CanonicalUuid, IdSet, Limits, Overrides, plan, ReconcileError, Rule};
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
