//! An arbitrary sequence of store operations, power cuts and I/O errors on
//! the simulated filesystem, checked against a BTreeMap model of what each
//! key may load as (see `safestash::model`).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use safestash::model::{ModelOp, run};

#[derive(Debug, Arbitrary)]
enum Op {
    Save { key: u8, value: u16, len: u16 },
    Load { key: u8 },
    Clear { key: u8 },
    Quarantine { key: u8 },
    Cleanup,
    List,
    Damage { key: u8 },
    Crash { after: u8, image: u16 },
    Fail { at: u8, persistent: bool },
}

impl From<&Op> for ModelOp {
    fn from(op: &Op) -> ModelOp {
        match *op {
            Op::Save { key, value, len } => ModelOp::Save { key, value, len: len % 3000 },
            Op::Load { key } => ModelOp::Load { key },
            Op::Clear { key } => ModelOp::Clear { key },
            Op::Quarantine { key } => ModelOp::Quarantine { key },
            Op::Cleanup => ModelOp::Cleanup,
            Op::List => ModelOp::List,
            Op::Damage { key } => ModelOp::Damage { key },
            Op::Crash { after, image } => ModelOp::Crash { after: after % 24, image },
            Op::Fail { at, persistent } => ModelOp::Fail { at: at % 24, persistent },
        }
    }
}

fuzz_target!(|ops: Vec<Op>| {
    if ops.len() > 64 {
        return;
    }
    let ops: Vec<ModelOp> = ops.iter().map(ModelOp::from).collect();
    if let Err(violation) = run(&ops) {
        panic!("model violation: {violation}");
    }
});
