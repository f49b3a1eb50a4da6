//! The Python package `safestash`, built from the Rust crate with PyO3.
//!
//! It wraps the crate; it never reimplements the format or the protocol,
//! so a stash written from Python is read by the CLI and by Rust, byte for
//! byte. The Python-facing layer (exception classes, submodules, type
//! stubs) lives in `python/safestash/`; this native module is
//! `safestash._safestash`.

use pyo3::prelude::*;

mod dictionary;
mod errors;
mod journal;
mod log;
mod reconcile;
mod store;
mod time;
mod value;

/// Run in a forked child (registered with ``os.register_at_fork``):
/// inherited locks are the parent's, inherited connections are abandoned
/// and reopened on first use. See the Rust crate's `safestash::fork`.
#[pyfunction]
fn after_fork_in_child() {
    safestash::fork::after_fork_in_child();
}

/// The valid key for any text: the same documented, injective escaping as
/// the Rust crate's ``StashKey::from_any`` (a valid key stays itself).
///
/// >>> import safestash
/// >>> safestash.key_from_any("tables/orders {x}") == safestash.key_from_any("tables/orders {x}")
/// True
#[pyfunction]
fn key_from_any(text: &str) -> String {
    safestash::StashKey::from_any(text).to_string()
}

/// The native part of the `safestash` package (import `safestash`).
#[pymodule]
fn _safestash(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<store::Store>()?;
    m.add_class::<store::Receipt>()?;
    m.add_class::<store::Stashed>()?;
    m.add_class::<store::Checked>()?;
    m.add_class::<store::StashInfo>()?;
    m.add_class::<store::KeyLock>()?;
    m.add_class::<store::Guard>()?;
    m.add_class::<store::Resumed>()?;
    m.add_function(wrap_pyfunction!(store::_bench_rust, m)?)?;
    m.add_function(wrap_pyfunction!(after_fork_in_child, m)?)?;
    m.add_function(wrap_pyfunction!(key_from_any, m)?)?;
    m.add_class::<dictionary::TypeMap>()?;
    m.add_class::<dictionary::Mapped>()?;
    m.add_class::<dictionary::Column>()?;
    m.add_class::<journal::Operation>()?;
    m.add_class::<journal::View>()?;
    m.add_class::<journal::Part>()?;
    m.add_class::<journal::Updated>()?;
    m.add_class::<journal::RollbackReport>()?;
    m.add_function(wrap_pyfunction!(journal::aggregate, m)?)?;
    m.add_class::<reconcile::Plan>()?;
    m.add_class::<reconcile::Reconciler>()?;
    m.add_class::<reconcile::ExecutionReport>()?;
    m.add_function(wrap_pyfunction!(reconcile::plan, m)?)?;
    m.add_function(wrap_pyfunction!(reconcile::restore_tenant, m)?)?;
    m.add_function(wrap_pyfunction!(reconcile::canonical, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    log::install(m.py())?;
    Ok(())
}
