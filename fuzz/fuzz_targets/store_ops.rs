//! An arbitrary sequence of store operations, power cuts and I/O errors on
//! the simulated filesystem, checked against a BTreeMap model of what each
//! key may load as (see `safestash_testkit::model`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use safestash_testkit::model::{ModelOp, run};

/// Keeps values and call numbers in a useful range: values up to 3000
/// bytes, faults within the first 24 calls of an operation.
fn bounded(op: ModelOp) -> ModelOp {
    match op {
        ModelOp::Save { key, value, len } => ModelOp::Save { key, value, len: len % 3000 },
        ModelOp::Crash { after, image } => ModelOp::Crash { after: after % 24, image },
        ModelOp::Fail { at, persistent } => ModelOp::Fail { at: at % 24, persistent },
        other => other,
    }
}

fuzz_target!(|ops: Vec<ModelOp>| {
    if ops.len() > 64 {
        return;
    }
    let ops: Vec<ModelOp> = ops.into_iter().map(bounded).collect();
    if let Err(violation) = run(&ops) {
        panic!("model violation: {violation}");
    }
});
