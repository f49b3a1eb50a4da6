//! `safestash.reconcile`: the destructive-plan guard for tenant deletes.

use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyString;
use safestash::BoxError;
use safestash::reconcile::uuid::Uuid;
use safestash::reconcile::{
    CanonicalUuid, IdSet, Limits, Overrides, Plan as RsPlan, Reconciler as RsReconciler, Rule,
};

use crate::errors::{CallbackError, reconcile_error, store_error};
use crate::store::{Stashed, Store};
use crate::time::duration;
use crate::value::Json;

/// Canonicalises `uuid.UUID` objects and strings in any spelling (any case,
/// braced, `urn:uuid:`, no hyphens). A string that is no UUID is kept as
/// unparseable (reported, never deleted); any other type is a `TypeError`.
fn id_set(py: Python<'_>, ids: &Bound<'_, PyAny>) -> PyResult<IdSet<CanonicalUuid>> {
    if ids.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err("expected an iterable of ids, not a single str"));
    }
    let uuid_cls = py.import("uuid")?.getattr("UUID")?;
    let mut set = IdSet::new();
    for item in ids.try_iter()? {
        let item = item?;
        if item.is_instance(&uuid_cls)? {
            let bytes: [u8; 16] = item.getattr("bytes")?.extract()?;
            set.insert(CanonicalUuid::from(Uuid::from_bytes(bytes)));
        } else if let Ok(s) = item.cast::<PyString>() {
            set.insert_raw(s.to_cow()?.as_ref());
        } else {
            return Err(PyTypeError::new_err(format!(
                "a tenant id must be a uuid.UUID or a str, not {}",
                item.get_type().name()?
            )));
        }
    }
    Ok(set)
}

fn py_uuid<'py>(py: Python<'py>, id: &CanonicalUuid) -> PyResult<Bound<'py, PyAny>> {
    py.import("uuid")?.getattr("UUID")?.call1((id.to_string(),))
}

fn uuids<'py>(py: Python<'py>, ids: &[CanonicalUuid]) -> PyResult<Vec<Bound<'py, PyAny>>> {
    ids.iter().map(|i| py_uuid(py, i)).collect()
}

fn one_id(py: Python<'_>, id: &Bound<'_, PyAny>) -> PyResult<CanonicalUuid> {
    let list = pyo3::types::PyList::new(py, [id])?;
    let set = id_set(py, &list)?;
    match (set.ids().iter().next(), set.unparseable().first()) {
        (Some(id), _) => Ok(*id),
        (None, Some(u)) => Err(PyValueError::new_err(u.to_string())),
        _ => Err(PyValueError::new_err("no id given")),
    }
}

/// A delete plan: which local tenants the source of truth no longer lists.
///
/// Computed on canonical ids only, so a ``uuid.UUID`` and its string (in
/// any spelling) are the same tenant. Attributes: ``delete`` and ``keep``
/// (lists of ``uuid.UUID``, sorted), ``local_count``,
/// ``authoritative_count``, ``authoritative_only`` (listed by the source
/// of truth but not local), ``unparseable_local`` and
/// ``unparseable_authoritative`` (``(input, reason)`` pairs: never
/// deleted), ``fingerprint`` (SHA-256 of the canonical inputs, hex).
/// ``str(plan)`` is the dry run.
#[pyclass(frozen, module = "safestash.reconcile")]
pub struct Plan {
    inner: RsPlan<CanonicalUuid>,
}

#[pymethods]
impl Plan {
    #[getter]
    fn delete<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyAny>>> {
        uuids(py, self.inner.delete())
    }
    #[getter]
    fn keep<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyAny>>> {
        uuids(py, self.inner.keep())
    }
    #[getter]
    fn local_count(&self) -> usize {
        self.inner.local_count()
    }
    #[getter]
    fn authoritative_count(&self) -> usize {
        self.inner.authoritative_count()
    }
    #[getter]
    fn authoritative_only(&self) -> usize {
        self.inner.authoritative_only()
    }
    #[getter]
    fn unparseable_local(&self) -> Vec<(String, String)> {
        let u = &self.inner.unparseable().local;
        u.iter().map(|u| (u.input().to_owned(), u.reason().to_owned())).collect()
    }
    #[getter]
    fn unparseable_authoritative(&self) -> Vec<(String, String)> {
        let u = &self.inner.unparseable().authoritative;
        u.iter().map(|u| (u.input().to_owned(), u.reason().to_owned())).collect()
    }
    #[getter]
    fn fingerprint(&self) -> String {
        self.inner.fingerprint().to_string()
    }
    /// The rules this plan breaks under these limits (messages; empty when
    /// none).
    #[pyo3(signature = (*, max_count=5, max_share=0.10))]
    fn refusals(&self, max_count: usize, max_share: f64) -> Vec<String> {
        let limits = Limits::new().max_count(max_count).max_share(max_share);
        self.inner.refusals(&limits).iter().map(ToString::to_string).collect()
    }
    fn __str__(&self) -> String {
        self.inner.to_string()
    }
    fn __repr__(&self) -> String {
        format!(
            "Plan(delete={}, keep={}, fingerprint={:?})",
            self.inner.delete().len(),
            self.inner.keep().len(),
            self.inner.fingerprint().to_string()
        )
    }
}

/// Plans the delete of every ``local`` tenant the ``authoritative`` side
/// no longer lists. Both are iterables of ``uuid.UUID`` or ``str`` (any
/// spelling, mixed freely): each side is canonicalised before any set
/// arithmetic, so ``{UUID(x)} - {str(x).upper()}`` plans no delete.
#[pyfunction]
pub fn plan(
    py: Python<'_>,
    local: &Bound<'_, PyAny>,
    authoritative: &Bound<'_, PyAny>,
) -> PyResult<Plan> {
    let local = id_set(py, local)?;
    let auth = id_set(py, authoritative)?;
    Ok(Plan { inner: safestash::reconcile::plan(&local, &auth) })
}

fn rule(name: &str) -> PyResult<Rule> {
    Ok(match name {
        "EmptyAuthority" => Rule::EmptyAuthority,
        "TooMany" => Rule::TooMany,
        "TooLargeShare" => Rule::TooLargeShare,
        "Unparseable" => Rule::Unparseable,
        other => {
            return Err(PyValueError::new_err(format!(
                "unknown rule {other:?}: one of EmptyAuthority, TooMany, TooLargeShare, Unparseable"
            )));
        }
    })
}

/// What an execution did: ``deleted`` (``uuid.UUID`` list), ``stashed``
/// (``(uuid.UUID, key)`` pairs: every tenant stashed before its delete),
/// ``stopped`` (``None``, or ``(uuid.UUID, exception)`` where the run
/// stopped), ``not_attempted``, ``overridden`` (refusals lifted by
/// ``allow``), ``fingerprint``, ``complete``.
#[pyclass(frozen, module = "safestash.reconcile", get_all)]
pub struct ExecutionReport {
    deleted: Vec<Py<PyAny>>,
    stashed: Vec<(Py<PyAny>, String)>,
    stopped: Option<(Py<PyAny>, Py<PyAny>)>,
    not_attempted: Vec<Py<PyAny>>,
    overridden: Vec<String>,
    fingerprint: String,
    complete: bool,
}

#[pymethods]
impl ExecutionReport {
    fn __repr__(&self) -> String {
        format!(
            "ExecutionReport(deleted={}, complete={}, fingerprint={:?})",
            self.deleted.len(),
            self.complete,
            self.fingerprint
        )
    }
}

/// Executes delete plans, refusing those that look wrong, and stashes
/// every tenant before deleting it.
///
/// ``Reconciler(store, *, max_count=5, max_share=0.10, allow=(),
/// retention=timedelta(days=30))``. ``allow`` names rules to lift
/// (``"EmptyAuthority"``, ``"TooMany"``, ``"TooLargeShare"``,
/// ``"Unparseable"``).
#[pyclass(frozen, module = "safestash.reconcile")]
pub struct Reconciler {
    store: Py<Store>,
    limits: Limits,
    overrides: Overrides,
    retention: Option<Duration>,
}

impl Reconciler {
    fn build(&self, store: &safestash::Store) -> RsReconciler {
        let r = RsReconciler::new(store).limits(self.limits).overrides(self.overrides.clone());
        match self.retention {
            Some(d) => r.retain_for(d),
            None => r,
        }
    }
}

#[pymethods]
impl Reconciler {
    #[new]
    #[pyo3(signature = (store, *, max_count=5, max_share=0.10, allow=Vec::new(), retention=None))]
    fn new(
        store: Py<Store>,
        max_count: usize,
        max_share: f64,
        allow: Vec<String>,
        retention: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Reconciler> {
        let overrides = allow.iter().map(|r| rule(r)).collect::<PyResult<Overrides>>()?;
        Ok(Reconciler {
            store,
            limits: Limits::new().max_count(max_count).max_share(max_share),
            overrides,
            retention: retention.map(duration).transpose()?,
        })
    }

    /// The refusals ``allow`` lifts for this plan (messages). Raises
    /// ``RefusedError`` (``.rules``, ``.refusals``) when it breaks a rule
    /// that is not lifted.
    fn check(&self, py: Python<'_>, plan: &Plan) -> PyResult<Vec<String>> {
        let store = &self.store.get().inner()?;
        let r = self.build(store);
        r.check(&plan.inner)
            .map(|v| v.iter().map(ToString::to_string).collect())
            .map_err(|e| reconcile_error(py, e))
    }

    /// Executes ``plan`` against the inputs it was computed from
    /// (``local``, ``authoritative``: recomputed here; a stale or edited
    /// plan raises ``ReconcileError``). Refuses (``RefusedError``) a plan
    /// that breaks a rule not lifted by ``allow``. Then, in sorted order,
    /// ``export(tenant)`` returns each tenant's JSON-compatible snapshot;
    /// all snapshots are stashed durably in one batch; and only then is
    /// ``delete(tenant)`` called for each (``tenant`` a ``uuid.UUID``). The
    /// first failure stops the run: the report says what was done, and a
    /// failed delete keeps its tenant's stash.
    fn execute(
        &self,
        py: Python<'_>,
        plan: &Plan,
        local: &Bound<'_, PyAny>,
        authoritative: &Bound<'_, PyAny>,
        export: Py<PyAny>,
        delete: Py<PyAny>,
    ) -> PyResult<ExecutionReport> {
        let local = id_set(py, local)?;
        let auth = id_set(py, authoritative)?;
        let store = &self.store.get().inner()?;
        let r = self.build(store);
        let exporter = |id: &CanonicalUuid| -> Result<Json, BoxError> {
            Python::attach(|py| {
                let value = export.call1(py, (py_uuid(py, id)?,))?;
                Json::from_py(value.bind(py))
            })
            .map_err(|e| Box::new(CallbackError(e)) as BoxError)
        };
        let deleter = |id: &CanonicalUuid| -> Result<(), BoxError> {
            Python::attach(|py| delete.call1(py, (py_uuid(py, id)?,)).map(drop))
                .map_err(|e| Box::new(CallbackError(e)) as BoxError)
        };
        let report = py
            .detach(|| r.execute(&plan.inner, &local, &auth, exporter, deleter))
            .map_err(|e| reconcile_error(py, e))?;
        let complete = report.is_complete();
        let to_py = |ids: &[CanonicalUuid]| -> PyResult<Vec<Py<PyAny>>> {
            Ok(uuids(py, ids)?.into_iter().map(Bound::unbind).collect())
        };
        let stashed = report
            .stashed
            .iter()
            .map(|s| Ok((py_uuid(py, &s.tenant)?.unbind(), s.receipt.key.to_string())))
            .collect::<PyResult<_>>()?;
        let stopped = match report.stopped {
            Some(s) => Some((
                py_uuid(py, &s.tenant)?.unbind(),
                reconcile_error(py, s.error).into_value(py).into_any(),
            )),
            None => None,
        };
        Ok(ExecutionReport {
            deleted: to_py(&report.deleted)?,
            stashed,
            stopped,
            not_attempted: to_py(&report.not_attempted)?,
            overridden: report.overridden.iter().map(ToString::to_string).collect(),
            fingerprint: report.fingerprint.to_string(),
            complete,
        })
    }

    /// Removes intact tenant stashes older than the retention (never
    /// damaged ones): ``(removed_keys, retained_count)``.
    fn purge_expired(&self, py: Python<'_>) -> PyResult<(Vec<String>, usize)> {
        let store = &self.store.get().inner()?;
        let r = self.build(store);
        let report = py.detach(|| r.purge_expired()).map_err(|e| store_error(py, e))?;
        Ok((report.removed.iter().map(ToString::to_string).collect(), report.retained))
    }
}

/// Puts tenant ``tenant`` (a ``uuid.UUID`` or ``str``) back from its
/// newest snapshot through ``restore_fn(stashed)``, clearing the snapshot
/// only if ``restore_fn`` returned normally. Raises ``ReconcileError``
/// (``kind`` ``"no_stash"``, ``"restore"``, ...) otherwise; the snapshot
/// is kept.
#[pyfunction]
pub fn restore_tenant(
    py: Python<'_>,
    store: &Store,
    tenant: &Bound<'_, PyAny>,
    restore_fn: Py<PyAny>,
) -> PyResult<()> {
    let id = one_id(py, tenant)?;
    let mut hook = |s: safestash::Stashed<Json>| -> Result<(), BoxError> {
        Python::attach(|py| {
            let arg = Stashed::new(py, s)?;
            restore_fn.call1(py, (arg,)).map(drop)
        })
        .map_err(|e| Box::new(CallbackError(e)) as BoxError)
    };
    let store = &store.inner()?;
    py.detach(|| safestash::reconcile::restore_tenant(store, &id, &mut hook))
        .map(drop)
        .map_err(|e| reconcile_error(py, e))
}

/// The canonical spelling of a tenant id (``uuid.UUID`` or ``str`` in any
/// spelling): lowercase, hyphenated. Raises ``ValueError`` for a string
/// that is no UUID.
#[pyfunction]
pub fn canonical(py: Python<'_>, tenant: &Bound<'_, PyAny>) -> PyResult<String> {
    Ok(one_id(py, tenant)?.to_string())
}
