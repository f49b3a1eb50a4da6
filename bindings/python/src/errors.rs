//! Rust errors -> the exception classes of `safestash.errors`.
//!
//! The classes are defined in Python (python/safestash/errors.py), because
//! some have two bases (`InvalidKeyError` is also a `ValueError`,
//! `StashIOError` also an `OSError`); this module raises them with the
//! fields of the Rust error as attributes.

use std::fmt;
use std::io;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use safestash::Error;
use safestash::journal::JournalError;
use safestash::reconcile::ReconcileError;

/// A Python exception raised by a callback (a restore hook, an exporter),
/// carried through the Rust error as its source so it becomes the
/// `__cause__` of the exception the caller sees.
pub struct CallbackError(pub PyErr);

impl fmt::Debug for CallbackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CallbackError({})", self.0)
    }
}

impl fmt::Display for CallbackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Python::attach(|py| {
            let value = self.0.value(py);
            let name = value.get_type().name().map(|n| n.to_string()).unwrap_or_default();
            match value.str() {
                Ok(s) if !s.to_string_lossy().is_empty() => {
                    write!(f, "{name}: {}", s.to_string_lossy())
                }
                _ => f.write_str(&name),
            }
        })
    }
}

impl std::error::Error for CallbackError {}

/// The Python exception carried in `source`, if it is one.
fn callback_cause(py: Python<'_>, source: &(dyn std::error::Error + 'static)) -> Option<PyErr> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(source);
    while let Some(e) = cur {
        if let Some(cb) = e.downcast_ref::<CallbackError>() {
            return Some(cb.0.clone_ref(py));
        }
        cur = e.source();
    }
    None
}

fn class<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    py.import("safestash.errors")?.getattr(name)
}

/// Builds `name(*args)` with `attrs` set on it.
fn raise<'py>(
    py: Python<'py>,
    name: &str,
    args: impl pyo3::call::PyCallArgs<'py>,
    attrs: &[(&str, Bound<'py, PyAny>)],
    cause: Option<PyErr>,
) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let cls = class(py, name)?;
        let exc = cls.call1(args)?;
        for (k, v) in attrs {
            exc.setattr(*k, v)?;
        }
        let err = PyErr::from_value(exc);
        if let Some(c) = cause {
            err.set_cause(py, Some(c));
        }
        Ok(err)
    };
    build().unwrap_or_else(|e| e)
}

fn s<'py>(py: Python<'py>, v: impl ToString) -> Bound<'py, PyAny> {
    pyo3::types::PyString::new(py, &v.to_string()).into_any()
}

fn path<'py>(py: Python<'py>, p: &std::path::Path) -> Bound<'py, PyAny> {
    p.into_pyobject(py).map(|o| o.into_any()).unwrap_or_else(|_| py.None().into_bound(py))
}

/// A path as `str` (what `OSError.filename` holds).
fn fname<'py>(py: Python<'py>, p: &std::path::Path) -> Bound<'py, PyAny> {
    p.as_os_str()
        .into_pyobject(py)
        .map(|o| o.into_any())
        .unwrap_or_else(|_| py.None().into_bound(py))
}

fn none(py: Python<'_>) -> Bound<'_, PyAny> {
    py.None().into_bound(py)
}

/// The OS error's message without the "(os error N)" Rust appends.
fn os_message(e: &io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// A store error as the Python exception for it.
/// An error opening a store: as [`store_error`], except that a location
/// that cannot be parsed is an ``InvalidOptionError`` (a ``ValueError``):
/// bad input, not a failure of the store.
pub fn open_error(py: Python<'_>, e: Error) -> PyErr {
    match &e {
        Error::Backend { op: safestash::BackendOp::ParseUrl, target, .. } => raise(
            py,
            "InvalidOptionError",
            (e.to_string(),),
            &[
                ("field", s(py, "url")),
                ("value", s(py, target)),
                ("rule", s(py, "a URL the store's client accepts")),
            ],
            None,
        ),
        _ => store_error(py, e),
    }
}

pub fn store_error(py: Python<'_>, e: Error) -> PyErr {
    let msg = e.to_string();
    match &e {
        Error::Io { op, path: p, source } => {
            let errno = source.raw_os_error();
            let strerror = format!("failed to {op}: {}", os_message(source));
            raise(py, "StashIOError", (errno, strerror, fname(py, p)), &[("op", s(py, op))], None)
        }
        Error::Rename { from, to, source } => {
            let errno = source.raw_os_error();
            let strerror = format!("failed to rename: {}", os_message(source));
            raise(
                py,
                "StashIOError",
                (errno, strerror, fname(py, from), none(py), fname(py, to)),
                &[("op", s(py, "rename"))],
                None,
            )
        }
        Error::Corrupt { path: p, reason } => raise(
            py,
            "CorruptError",
            (msg,),
            &[("path", path(py, p)), ("reason", s(py, reason))],
            None,
        ),
        Error::UnsupportedVersion { path: p, version } => raise(
            py,
            "UnsupportedVersionError",
            (msg,),
            &[("path", path(py, p)), ("version", version.into_pyobject(py).unwrap().into_any())],
            None,
        ),
        Error::NotAFile { path: p, found, expected } => raise(
            py,
            "NotAFileError",
            (msg,),
            &[("path", path(py, p)), ("found", s(py, found)), ("expected", s(py, expected))],
            None,
        ),
        Error::Locked { key, path: p } => {
            raise(py, "LockedError", (msg,), &[("key", s(py, key)), ("path", path(py, p))], None)
        }
        Error::LockedByThisThread { key, path: p } => raise(
            py,
            "LockedByThisThreadError",
            (msg,),
            &[("key", s(py, key)), ("path", path(py, p))],
            None,
        ),
        Error::StashExists { key, path: p, digest } => raise(
            py,
            "StashExistsError",
            (msg,),
            &[
                ("key", s(py, key)),
                ("path", path(py, p)),
                ("digest", digest.map_or_else(|| none(py), |d| s(py, d))),
            ],
            None,
        ),
        Error::InvalidOption { field, value, rule } => raise(
            py,
            "InvalidOptionError",
            (msg.clone(),),
            &[("field", s(py, field)), ("value", s(py, value)), ("rule", s(py, rule))],
            None,
        ),
        Error::Key(k) => raise(
            py,
            "InvalidKeyError",
            (msg.clone(),),
            &[("key", s(py, k.input())), ("reason", s(py, k.kind()))],
            None,
        ),
        Error::Restore { key, path: p, source } => {
            let cause = callback_cause(py, source.as_ref());
            let detail = match &cause {
                Some(_) => msg.clone(),
                None => format!("{msg}: {source}"),
            };
            raise(
                py,
                "RestoreError",
                (detail,),
                &[("key", s(py, key)), ("path", path(py, p))],
                cause,
            )
        }
        Error::Replaced { key, path: p, expected } => raise(
            py,
            "ReplacedError",
            (msg,),
            &[("key", s(py, key)), ("path", path(py, p)), ("expected", s(py, expected))],
            None,
        ),
        _ => {
            let full = chain(&e);
            raise(py, "StashError", (full,), &[], None)
        }
    }
}

/// The error and its causes, `: `-separated.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

/// A journal error as `safestash.journal.JournalError` (or a subclass),
/// with `kind` naming the variant; a store failure is its `__cause__`.
pub fn journal_error(py: Python<'_>, e: JournalError) -> PyErr {
    let msg = e.to_string();
    let (name, kind) = match &e {
        JournalError::Store { .. } => ("JournalError", "store"),
        JournalError::Invalid { .. } => ("JournalError", "invalid"),
        JournalError::NotFound { .. } => ("OperationNotFoundError", "not_found"),
        JournalError::AlreadyExists { .. } => ("OperationExistsError", "already_exists"),
        JournalError::BadHeader { .. } => ("JournalError", "bad_header"),
        JournalError::UnknownPart { .. } => ("JournalError", "unknown_part"),
        JournalError::Conflict { .. } => ("ConflictError", "conflict"),
        JournalError::Transition { .. } => ("JournalError", "transition"),
        JournalError::Finished { .. } => ("JournalError", "finished"),
        JournalError::PartUnreadable { .. } => ("JournalError", "part_unreadable"),
        JournalError::Undetermined { .. } => ("JournalError", "undetermined"),
        JournalError::Active { .. } => ("JournalError", "active"),
        JournalError::StashRefused { .. } => ("JournalError", "stash_refused"),
        JournalError::RestoreRequired { .. } => ("JournalError", "restore_required"),
        JournalError::InsideRestoreHook { .. } => ("JournalError", "inside_restore_hook"),
        JournalError::RollbackIncomplete { .. } => {
            ("RollbackIncompleteError", "rollback_incomplete")
        }
        _ => ("JournalError", "other"),
    };
    let mut attrs: Vec<(&str, Bound<'_, PyAny>)> = vec![("kind", s(py, kind))];
    let cause = match e {
        JournalError::Store { source, .. } => Some(store_error(py, *source)),
        JournalError::RollbackIncomplete { report, source, part, .. } => {
            attrs.push(("part", s(py, &part)));
            match crate::journal::report_to_py(py, *report) {
                Ok(r) => attrs.push(("report", r)),
                Err(err) => return err,
            }
            Some(store_error(py, *source))
        }
        JournalError::Conflict { found, .. } => {
            attrs.push(("found", found.get().into_pyobject(py).unwrap().into_any()));
            None
        }
        _ => None,
    };
    raise(py, name, (msg,), &attrs, cause)
}

/// A reconcile error as `safestash.reconcile.ReconcileError` (or
/// `RefusedError`, with the refused rules).
pub fn reconcile_error(py: Python<'_>, e: ReconcileError) -> PyErr {
    let msg = e.to_string();
    let rules: Vec<String> = e.refused_rules().iter().map(ToString::to_string).collect();
    let (name, kind) = match &e {
        ReconcileError::Refused { .. } => ("RefusedError", "refused"),
        ReconcileError::Stale { .. } => ("ReconcileError", "stale"),
        ReconcileError::Altered { .. } => ("ReconcileError", "altered"),
        ReconcileError::Export { .. } => ("ReconcileError", "export"),
        ReconcileError::Stash { .. } => ("ReconcileError", "stash"),
        ReconcileError::StashExists { .. } => ("ReconcileError", "stash_exists"),
        ReconcileError::Delete { .. } => ("ReconcileError", "delete"),
        ReconcileError::NoStash { .. } => ("ReconcileError", "no_stash"),
        ReconcileError::NotTheTenantsKey { .. } => ("ReconcileError", "not_the_tenants_key"),
        ReconcileError::NotATenantSnapshot { .. } => ("ReconcileError", "not_a_tenant_snapshot"),
        ReconcileError::Load { .. } => ("ReconcileError", "load"),
        ReconcileError::Restore { .. } => ("ReconcileError", "restore"),
        ReconcileError::ClearAfterRestore { .. } => ("ReconcileError", "clear_after_restore"),
        _ => ("ReconcileError", "other"),
    };
    let refusals: Vec<String> = match &e {
        ReconcileError::Refused { refusals } => refusals.iter().map(ToString::to_string).collect(),
        _ => Vec::new(),
    };
    let cause = match e {
        ReconcileError::Export { source, .. } | ReconcileError::Delete { source, .. } => {
            callback_cause(py, source.as_ref())
                .or_else(|| Some(PyRuntimeError::new_err(source.to_string())))
        }
        ReconcileError::Stash { source, .. }
        | ReconcileError::Load { source, .. }
        | ReconcileError::Restore { source, .. }
        | ReconcileError::ClearAfterRestore { source, .. } => Some(store_error(py, *source)),
        _ => None,
    };
    let attrs = [
        ("kind", s(py, kind)),
        ("rules", rules.into_pyobject(py).unwrap().into_any()),
        ("refusals", refusals.into_pyobject(py).unwrap().into_any()),
    ];
    raise(py, name, (msg,), &attrs, cause)
}

/// Keyword arguments as a dict (for building result objects in Python).
#[allow(dead_code)]
pub fn kwargs<'py>(
    py: Python<'py>,
    items: &[(&str, Bound<'py, PyAny>)],
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in items {
        d.set_item(*k, v)?;
    }
    Ok(d)
}
