//! An arbitrary sequence of store operations checked against a BTreeMap
//! model of what each key may load as (see `safestash_testkit::model`),
//! twice: on the simulated filesystem (power cuts and I/O errors) and on
//! the simulated remote (client restarts and ambiguous outcomes: lost
//! replies, late landings, retries meeting their own write). Every input
//! runs on both, so the committed seeds keep their meaning.
#![no_main]

use libfuzzer_sys::fuzz_target;
use safestash_testkit::model::{ModelOp, Target, run_on};
use safestash_testkit::sim_remote::Config;

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
    for target in [Target::Directory, Target::SimRemote(Config::default())] {
        if let Err(violation) = run_on(target, &ops) {
            panic!("model violation on {target:?}: {violation}");
        }
    }
});
