//! `safestash.journal`: multi-part operations whose aggregate never lies.

use std::str::FromStr;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use safestash::BoxError;
use safestash::journal::{
    Change, Derivation, Expect, Generation, Operation as RsOperation, OperationView, PartInfo,
    PartState, RollbackOutcome, RollbackReport as RsReport, Updated as RsUpdated,
};

use crate::errors::{CallbackError, journal_error};
use crate::store::{Stashed, Store};
use crate::time::datetime;
use crate::value::Json;

fn state(py: Python<'_>, s: &str) -> PyResult<PartState> {
    PartState::from_str(s).map_err(|e| journal_error(py, e))
}

fn expect(generation: Option<u64>, part_generation: Option<u64>) -> PyResult<Expect> {
    match (generation, part_generation) {
        (Some(g), None) => Ok(Expect::Operation(Generation::new(g))),
        (None, Some(g)) => Ok(Expect::Part(Generation::new(g))),
        _ => Err(PyTypeError::new_err(
            "pass exactly one of generation= (the operation's, from view()) or \
             part_generation= (the part's)",
        )),
    }
}

/// One part's record.
///
/// Attributes: ``name``, ``state`` (``"pending"``, ``"running"``,
/// ``"completed"``, ``"failed"``, ``"failed_retryable"``, ``"cancelled"``,
/// ``"rolled_back"``, ``"rollback_failed"``), ``generation`` (the part's),
/// ``op_generation`` (the operation's at its last change),
/// ``completed_at`` (the operation generation it completed at, or
/// ``None``), ``stash`` (the digest of its stash, or ``None``),
/// ``holds_stash``, ``updates`` (how many changes in all), ``history``
/// (the latest transitions: dicts with ``from``, ``to``, ``generation``,
/// ``at`` (aware ``datetime``), ``note``).
#[pyclass(frozen, module = "safestash.journal", get_all)]
pub struct Part {
    name: String,
    state: &'static str,
    generation: u64,
    op_generation: u64,
    completed_at: Option<u64>,
    stash: Option<String>,
    holds_stash: bool,
    updates: u64,
    history: Py<PyAny>,
}

#[pymethods]
impl Part {
    fn __repr__(&self) -> String {
        format!(
            "Part(name={:?}, state={:?}, holds_stash={})",
            self.name, self.state, self.holds_stash
        )
    }
}

fn part(py: Python<'_>, p: &PartInfo) -> PyResult<Part> {
    let history = pyo3::types::PyList::empty(py);
    for t in &p.history {
        let d = PyDict::new(py);
        d.set_item("from", t.from.as_str())?;
        d.set_item("to", t.to.as_str())?;
        d.set_item("generation", t.generation.get())?;
        d.set_item("at", datetime(py, t.at)?)?;
        d.set_item("note", t.note.as_deref())?;
        history.append(d)?;
    }
    Ok(Part {
        name: p.name.clone(),
        state: p.state.as_str(),
        generation: p.generation.get(),
        op_generation: p.op_generation.get(),
        completed_at: p.completed_at.map(Generation::get),
        stash: p.stash.map(|d| d.to_string()),
        holds_stash: p.holds_stash(),
        updates: p.updates,
        history: history.into_any().unbind(),
    })
}

/// A derivation as Python sees it.
struct Derived {
    aggregate: Option<&'static str>,
    determined: bool,
    possible: Vec<&'static str>,
    unreadable: Vec<(String, String)>,
}

fn derivation(d: &Derivation) -> Derived {
    match d {
        Derivation::Known(a) => Derived {
            aggregate: Some(a.as_str()),
            determined: true,
            possible: vec![a.as_str()],
            unreadable: Vec::new(),
        },
        Derivation::Undetermined { unreadable, possible } => Derived {
            aggregate: d.aggregate().map(|a| a.as_str()),
            determined: false,
            possible: possible.iter().map(|a| a.as_str()).collect(),
            unreadable: unreadable.iter().map(|u| (u.part.clone(), u.reason.clone())).collect(),
        },
        _ => Derived {
            aggregate: d.aggregate().map(|a| a.as_str()),
            determined: false,
            possible: Vec::new(),
            unreadable: Vec::new(),
        },
    }
}

/// An operation's state, read under its lock.
///
/// ``aggregate`` is derived from **every** part; it is ``None`` when a
/// part cannot be read and the readable ones do not decide it (fail
/// closed: ``determined`` is ``False``, ``possible`` lists what it could
/// be, ``unreadable`` the parts and why). ``stored`` is the aggregate
/// recorded in the header, which an unreadable part leaves unchanged.
/// ``generation`` is what ``update(..., generation=...)`` expects.
/// ``parts`` lists the readable parts' :class:`Part` records.
#[pyclass(frozen, module = "safestash.journal", get_all)]
pub struct View {
    id: String,
    generation: u64,
    stored: &'static str,
    aggregate: Option<&'static str>,
    determined: bool,
    possible: Vec<&'static str>,
    unreadable: Vec<(String, String)>,
    parts: Vec<Py<Part>>,
}

#[pymethods]
impl View {
    /// The :class:`Part` named ``name``, or ``None`` (unknown or unreadable).
    fn part(&self, py: Python<'_>, name: &str) -> Option<Py<Part>> {
        self.parts.iter().find(|p| p.get().name == name).map(|p| p.clone_ref(py))
    }
    /// Whether the aggregate is terminal (``completed``, ``failed``,
    /// ``cancelled``, ``rolled_back``). Never true while undetermined.
    #[getter]
    fn terminal(&self) -> bool {
        self.determined
            && matches!(self.aggregate, Some("completed" | "failed" | "cancelled" | "rolled_back"))
    }
    fn __repr__(&self) -> String {
        format!(
            "View(id={:?}, generation={}, aggregate={:?}, stored={:?})",
            self.id, self.generation, self.aggregate, self.stored
        )
    }
}

fn view(py: Python<'_>, v: OperationView) -> PyResult<View> {
    let Derived { aggregate, determined, possible, unreadable } = derivation(&v.derivation);
    let parts = v
        .parts
        .iter()
        .filter_map(|p| p.as_ref().ok())
        .map(|p| Py::new(py, part(py, p)?))
        .collect::<PyResult<_>>()?;
    Ok(View {
        id: v.id,
        generation: v.generation.get(),
        stored: v.stored.as_str(),
        aggregate,
        determined,
        possible,
        unreadable,
        parts,
    })
}

/// What a change did: the operation's new ``generation``, the changed
/// ``part``, the derived ``aggregate`` (``None`` when undetermined) and the
/// ``stored`` one.
#[pyclass(frozen, module = "safestash.journal", get_all)]
pub struct Updated {
    generation: u64,
    part: Py<Part>,
    aggregate: Option<&'static str>,
    determined: bool,
    stored: &'static str,
}

#[pymethods]
impl Updated {
    fn __repr__(&self) -> String {
        format!("Updated(generation={}, aggregate={:?})", self.generation, self.aggregate)
    }
}

fn updated(py: Python<'_>, u: RsUpdated) -> PyResult<Updated> {
    let Derived { aggregate, determined, .. } = derivation(&u.derivation);
    Ok(Updated {
        generation: u.generation.get(),
        part: Py::new(py, part(py, &u.part)?)?,
        aggregate,
        determined,
        stored: u.stored.as_str(),
    })
}

/// What a rollback did: ``outcomes`` (``(part, outcome, error)`` tuples,
/// outcome one of ``"cancelled"``, ``"abandoned"``, ``"restored"``,
/// ``"nothing_to_restore"``, ``"restore_failed"``, ``"not_attempted"``),
/// ``unrestored`` (parts still holding a stash), ``generation``, and the
/// ``aggregate`` after it.
#[pyclass(frozen, module = "safestash.journal", get_all)]
pub struct RollbackReport {
    op: String,
    outcomes: Vec<(String, &'static str, Option<String>)>,
    unrestored: Vec<String>,
    generation: u64,
    aggregate: Option<&'static str>,
}

#[pymethods]
impl RollbackReport {
    /// The last outcome recorded for ``part``, or ``None``.
    fn outcome(&self, part: &str) -> Option<&'static str> {
        self.outcomes.iter().rev().find(|o| o.0 == part).map(|o| o.1)
    }
    fn __repr__(&self) -> String {
        format!(
            "RollbackReport(op={:?}, aggregate={:?}, unrestored={:?})",
            self.op, self.aggregate, self.unrestored
        )
    }
}

pub fn report_to_py(py: Python<'_>, r: RsReport) -> PyResult<Bound<'_, PyAny>> {
    let outcomes = r
        .outcomes
        .iter()
        .map(|o| {
            let (name, error) = match &o.outcome {
                RollbackOutcome::Cancelled => ("cancelled", None),
                RollbackOutcome::Abandoned => ("abandoned", None),
                RollbackOutcome::Restored => ("restored", None),
                RollbackOutcome::NothingToRestore => ("nothing_to_restore", None),
                RollbackOutcome::RestoreFailed { error } => ("restore_failed", Some(error.clone())),
                RollbackOutcome::NotAttempted => ("not_attempted", None),
                _ => ("other", None),
            };
            (o.part.clone(), name, error)
        })
        .collect();
    let aggregate = derivation(&r.derivation).aggregate;
    Ok(Bound::new(
        py,
        RollbackReport {
            op: r.op,
            outcomes,
            unrestored: r.unrestored,
            generation: r.generation.get(),
            aggregate,
        },
    )?
    .into_any())
}

/// A multi-part operation in a store: named parts, each with a state, and
/// an aggregate derived from all of them — failing closed: a part whose
/// record cannot be read never lets the aggregate become terminal.
///
/// Every change is a compare-and-swap under the operation's lock: pass the
/// ``generation`` you read from :meth:`view` (or the part's
/// ``part_generation``); a stale one raises ``ConflictError`` (re-read and
/// retry), so workers in different processes never lose each other's
/// updates.
///
/// ``Operation.create(store, id, parts)`` makes a new one,
/// ``Operation.open(store, id)`` opens an existing one.
#[pyclass(frozen, module = "safestash.journal")]
pub struct Operation {
    op: RsOperation,
}

impl Operation {
    fn op(&self) -> &RsOperation {
        &self.op
    }
}

#[pymethods]
impl Operation {
    /// Creates the operation ``id`` with these ``parts`` (all
    /// ``"pending"``). Raises ``OperationExistsError`` when it exists,
    /// ``JournalError`` for an invalid id or part list.
    #[staticmethod]
    fn create(py: Python<'_>, store: &Store, id: &str, parts: Vec<String>) -> PyResult<Operation> {
        let store = store.inner()?;
        let op = py
            .detach(|| RsOperation::create(&store, id, &parts))
            .map_err(|e| journal_error(py, e))?;
        Ok(Operation { op })
    }

    /// Opens the existing operation ``id``. Raises
    /// ``OperationNotFoundError`` when there is none.
    #[staticmethod]
    fn open(py: Python<'_>, store: &Store, id: &str) -> PyResult<Operation> {
        let store = store.inner()?;
        let op = py.detach(|| RsOperation::open(&store, id)).map_err(|e| journal_error(py, e))?;
        Ok(Operation { op })
    }

    /// The operation's id.
    #[getter]
    fn id(&self) -> String {
        self.op().id().to_owned()
    }

    /// The part names, in creation order.
    fn parts(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        py.detach(|| self.op().parts()).map_err(|e| journal_error(py, e))
    }

    /// Reads every part under the lock and derives the aggregate: a
    /// :class:`View`. An unreadable part is reported in it, not raised.
    fn view(&self, py: Python<'_>) -> PyResult<View> {
        let v = py.detach(|| self.op().view()).map_err(|e| journal_error(py, e))?;
        view(py, v)
    }

    /// Moves ``part`` to ``state`` if the operation is still at
    /// ``generation`` (or the part at ``part_generation``): an
    /// :class:`Updated`. ``note`` is kept in the part's history.
    ///
    /// Raises ``ConflictError`` for a stale generation, ``JournalError``
    /// with ``kind`` ``"transition"`` (not allowed from the current
    /// state), ``"finished"`` (the aggregate is terminal),
    /// ``"restore_required"`` (``"rolled_back"`` is only recorded by
    /// :meth:`rollback`), ``"unknown_part"``, ``"part_unreadable"``.
    #[pyo3(signature = (part, state, *, generation=None, part_generation=None, note=None))]
    fn update(
        &self,
        py: Python<'_>,
        part: &str,
        state: &str,
        generation: Option<u64>,
        part_generation: Option<u64>,
        note: Option<String>,
    ) -> PyResult<Updated> {
        let expect = expect(generation, part_generation)?;
        let mut change = Change::to(self::state(py, state)?);
        if let Some(n) = note {
            change = change.note(n);
        }
        let u = py
            .detach(|| self.op().update(part, expect, change))
            .map_err(|e| journal_error(py, e))?;
        updated(py, u)
    }

    /// Stashes ``snapshot`` (JSON-compatible) for ``part``, which must be
    /// ``"running"`` and hold no stash yet: an :class:`Updated`. From now
    /// on the part holds a stash until :meth:`rollback` restores it or
    /// :meth:`discard_stash` drops it.
    #[pyo3(signature = (part, snapshot, *, generation=None, part_generation=None))]
    fn stash(
        &self,
        py: Python<'_>,
        part: &str,
        snapshot: &Bound<'_, PyAny>,
        generation: Option<u64>,
        part_generation: Option<u64>,
    ) -> PyResult<Updated> {
        let expect = expect(generation, part_generation)?;
        let snapshot = Json::from_py(snapshot)?;
        let u = py
            .detach(|| self.op().stash(part, expect, &snapshot))
            .map_err(|e| journal_error(py, e))?;
        updated(py, u)
    }

    /// ``part``'s stash, verified against the digest its record holds: a
    /// :class:`~safestash.Stashed`, or ``None`` when it holds none.
    fn load_stash(&self, py: Python<'_>, part: &str) -> PyResult<Option<Stashed>> {
        let s =
            py.detach(|| self.op().load_stash::<Json>(part)).map_err(|e| journal_error(py, e))?;
        s.map(|s| Stashed::new(py, s)).transpose()
    }

    /// Drops ``part``'s stash at the caller's request (recorded in its
    /// history): an :class:`Updated`.
    #[pyo3(signature = (part, *, generation=None, part_generation=None))]
    fn discard_stash(
        &self,
        py: Python<'_>,
        part: &str,
        generation: Option<u64>,
        part_generation: Option<u64>,
    ) -> PyResult<Updated> {
        let expect = expect(generation, part_generation)?;
        let u = py
            .detach(|| self.op().discard_stash(part, expect))
            .map_err(|e| journal_error(py, e))?;
        updated(py, u)
    }

    /// Aborts and undoes: pending parts become ``"cancelled"``, retryable
    /// ones ``"failed"``; then every part that holds a stash is restored
    /// through ``restore_fn(part, stashed)`` (``stashed`` a verified
    /// :class:`~safestash.Stashed`), its stash cleared only after the
    /// restore succeeded. Returns a :class:`RollbackReport`.
    ///
    /// When ``restore_fn`` raises, that part becomes ``"rollback_failed"``,
    /// its stash and those not yet attempted are kept, and
    /// ``RollbackIncompleteError`` is raised (``.report`` says what was
    /// done, ``__cause__`` is the restore's error); a second rollback
    /// retries what is left. Raises ``JournalError`` with ``kind``
    /// ``"active"`` while a part is running, ``"undetermined"`` when a part
    /// cannot be read.
    ///
    /// ``restore_fn`` runs under the operation's lock; from inside it,
    /// :meth:`view` and :meth:`load_stash` work, changes raise.
    fn rollback(&self, py: Python<'_>, restore_fn: Py<PyAny>) -> PyResult<Py<RollbackReport>> {
        let mut hook = |s: safestash::Stashed<Json>| -> Result<(), BoxError> {
            Python::attach(|py| {
                let part = s.meta().header.origin().unwrap_or_default().to_owned();
                let arg = Stashed::new(py, s)?;
                restore_fn.call1(py, (part, arg)).map(drop)
            })
            .map_err(|e| Box::new(CallbackError(e)) as BoxError)
        };
        let r = py.detach(|| self.op().rollback(&mut hook)).map_err(|e| journal_error(py, e))?;
        Ok(report_to_py(py, r)?.cast_into::<RollbackReport>()?.unbind())
    }

    /// Recomputes the aggregate from every part and stores it if the parts
    /// determine it: a :class:`View`.
    fn refresh(&self, py: Python<'_>) -> PyResult<View> {
        let v = py.detach(|| self.op().refresh()).map_err(|e| journal_error(py, e))?;
        view(py, v)
    }

    fn __repr__(&self) -> String {
        format!("Operation(id={:?})", self.op().id())
    }
}

/// The aggregate of parts in these states (``"pending"``, ...), by the
/// journal's one precedence table, with no stash held.
#[pyfunction]
pub fn aggregate(py: Python<'_>, states: Vec<String>) -> PyResult<&'static str> {
    let states = states.iter().map(|s| state(py, s)).collect::<PyResult<Vec<_>>>()?;
    Ok(safestash::journal::aggregate(states).as_str())
}
