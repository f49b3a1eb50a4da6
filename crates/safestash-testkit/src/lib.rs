//! The test kit of `safestash`: the crash harness and the model check.
//!
//! Not published, not part of the shipped library: the root package's
//! tests, `examples/crash_report` and the `store_ops` fuzz target use it.
//! It drives the store through the public API of `safestash` only, on the
//! simulated filesystem [`safestash::sim::SimFs`] (feature `sim`, which this
//! crate turns on).
//!
//! - [`crash`]: every store operation, cut off at every call, checked in
//!   every state the disk could be left in, plus negative controls (broken
//!   protocols the harness must catch).
//! - [`model`]: any sequence of operations, power cuts and I/O errors,
//!   checked against a `BTreeMap` of what each key may load as.
//! - [`conformance`]: the behaviour and fault suites every backend runs.
//! - [`sim_remote`]: a simulated remote backend with deterministic,
//!   seedable ambiguous outcomes (lost replies, late landings, retries that
//!   meet their own write, holders paused past their lease).
//! - [`faulty`]: a backend wrapper that injects those outcomes into any
//!   backend.
//! - [`journal_oracle`]: the journal's aggregate and terminal rules written
//!   a second way, shared by `tests/journal.rs` and the `journal` fuzz
//!   target.
//!
//! # Cargo features
//!
//! - `arbitrary`: derives `arbitrary::Arbitrary` on [`model::ModelOp`], so
//!   a fuzz target can take a `Vec<ModelOp>` as its input.
//! - `cli`: turns on safestash's `cli` feature. The root package enables it
//!   in its dev-dependency on this crate, so every test build of the root
//!   package also builds the `safestash` operator binary (tests/cli.rs
//!   runs it).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod conformance;
pub mod crash;
pub mod faulty;
pub mod journal_oracle;
pub mod model;
pub mod sim_remote;
