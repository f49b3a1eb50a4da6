//! The destructive-plan guard for tenant deletes: canonical ids,
//! blast-radius limits, and a stash before every delete.
//!
//! A nightly sync once computed `local_tenants - auth_tenants` where one side
//! held UUID values and the other UUID strings. Nothing compared equal, so
//! every tenant looked deleted, and every tenant's call logs and recordings
//! were purged. This module and its two companions make that class of bug
//! unrepresentable and survivable:
//!
//! 1. **Canonical ids only.** Both sides
//!    are converted to one [`CanonicalId`] type before any set arithmetic:
//!    an [`IdSet`] can only be built from canonical ids, or by
//!    canonicalising raw inputs (any [`Canonicalize`]
//!    type), and [`plan`] accepts nothing else. For UUIDs,
//!    [`CanonicalUuid`] maps values and strings in any
//!    case, braced, with a `urn:uuid:` prefix or without hyphens onto one
//!    form. An id that cannot be canonicalised is reported
//!    ([`Unparseable`]), never deleted.
//! 2. **Refuse plans that look wrong** ([`plan`] and [`Rule`]).
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

use crate::error::{BoxError, Error, Result};
use crate::fs::{Fs, OsFs};
use crate::key::StashKey;
use crate::meta::{Receipt, SaveOptions, StashInfo};
use crate::rollback::Restored;
use crate::store::{KeyLock, Precondition, RestoreFailure, RestoreOutcome, Restorer, Store};

mod canonical;
mod error;
mod execute;
mod plan;
mod rules;
mod tenants;

pub use canonical::{CanonicalId, CanonicalUuid, Canonicalize, IdSet, Unparseable, canonicalize};
pub use error::ReconcileError;
pub use execute::{ExecutionReport, Reconciler, StashedTenant, Stopped};
pub use plan::{Fingerprint, Plan, UnparseableIds, plan};
use rules::join_refusals;
pub use rules::{Limits, Overrides, Refusal, Rule};

pub use tenants::{PurgeReport, TENANT_SNAPSHOT_KIND, purge_expired, restore_tenant, tenant_key};
/// The `uuid` crate, re-exported: [`CanonicalUuid`] converts from its
/// `Uuid`, so callers use the same major version.
pub use uuid;
