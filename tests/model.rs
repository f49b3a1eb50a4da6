//! Property test: random sequences of saves, loads, clears, quarantines,
//! cleanups, damage, power cuts and I/O errors on the simulated filesystem,
//! checked against a BTreeMap model of what each key may load as. The same
//! runner backs the `store_ops` fuzz target.

use proptest::prelude::*;
use safestash_testkit::model::{ModelOp, run};

fn op() -> impl Strategy<Value = ModelOp> {
    prop_oneof![
        4 => (0u8..3, any::<u16>(), prop_oneof![0u16..100, 400u16..3000])
            .prop_map(|(key, value, len)| ModelOp::Save { key, value, len }),
        3 => (0u8..3).prop_map(|key| ModelOp::Load { key }),
        2 => (0u8..3).prop_map(|key| ModelOp::Clear { key }),
        1 => (0u8..3).prop_map(|key| ModelOp::Quarantine { key }),
        1 => Just(ModelOp::Cleanup),
        1 => Just(ModelOp::List),
        1 => (0u8..3).prop_map(|key| ModelOp::Damage { key }),
        2 => (0u8..14, any::<u16>()).prop_map(|(after, image)| ModelOp::Crash { after, image }),
        2 => (1u8..14, any::<bool>()).prop_map(|(at, persistent)| ModelOp::Fail { at, persistent }),
        2 => (0u8..8, any::<u16>(), prop_oneof![0u16..100, 400u16..3000])
            .prop_map(|(keys, value, len)| ModelOp::Batch { keys, value, len }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn store_matches_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        if let Err(violation) = run(&ops) {
            prop_assert!(false, "{}", violation);
        }
    }
}

/// Two fixed sequences: damage is reported as Corrupt, and an acknowledged
/// save survives a power cut right after it. (That the model has teeth is
/// shown by the regression tests below: each fails without its fix.)
#[test]
fn damage_is_corrupt_and_an_acknowledged_save_survives_a_crash() {
    // Damage makes the stash corrupt; the model expects exactly that...
    let ok = [
        ModelOp::Save { key: 0, value: 1, len: 10 },
        ModelOp::Damage { key: 0 },
        ModelOp::Load { key: 0 },
    ];
    assert!(run(&ok).is_ok());
    // ...and a crash image where the save was acknowledged always has it.
    let acked = [
        ModelOp::Save { key: 1, value: 2, len: 900 },
        ModelOp::Crash { after: 0, image: 3 },
        ModelOp::Load { key: 1 },
    ];
    assert!(run(&acked).is_ok());
}

/// Found by this property test: a first save failed at the fsync that makes
/// a new directory durable in its parent; a second save found the directory
/// present, did not fsync its parent, returned Ok, and a power cut then lost
/// the whole chain and the acknowledged stash. Stores now fsync every
/// ancestor of their directory before their first save.
#[test]
fn a_batch_cut_at_every_call_leaves_each_key_old_or_new() {
    for after in 0..30 {
        for image in 0..4 {
            let ops = [
                ModelOp::Save { key: 0, value: 1, len: 10 },
                ModelOp::Crash { after, image },
                ModelOp::Batch { keys: 0b111, value: 9, len: 600 },
                ModelOp::Load { key: 0 },
                ModelOp::Load { key: 1 },
                ModelOp::Load { key: 2 },
                ModelOp::Batch { keys: 0b011, value: 4, len: 10 },
                ModelOp::Load { key: 0 },
                ModelOp::Load { key: 1 },
            ];
            run(&ops).unwrap_or_else(|v| panic!("cut after {after}, image {image}: {v}"));
        }
    }
}

#[test]
fn regression_directory_left_unsynced_by_a_failed_save() {
    let ops = [
        ModelOp::Fail { at: 6, persistent: false },
        ModelOp::Save { key: 0, value: 0, len: 0 },
        ModelOp::Save { key: 0, value: 0, len: 0 },
        ModelOp::Crash { after: 0, image: 8294 },
        ModelOp::Cleanup,
    ];
    run(&ops).unwrap();
}

/// Found by this property test: a clear failed at its directory fsync,
/// leaving the removal pending; the next clear found no file and returned
/// Ok without syncing, and a power cut brought the "cleared" stash back.
/// A clear (and a quarantine) of nothing now fsyncs the directory too.
#[test]
fn regression_clear_of_nothing_after_a_failed_clear() {
    let ops = [
        ModelOp::Save { key: 1, value: 0, len: 0 },
        ModelOp::Fail { at: 5, persistent: false },
        ModelOp::Clear { key: 1 },
        ModelOp::Crash { after: 1, image: 31434 },
        ModelOp::Clear { key: 1 },
        ModelOp::Save { key: 2, value: 0, len: 0 },
    ];
    run(&ops).unwrap();
}

#[test]
fn stats_count_operations_crashes_and_loads() {
    let ops = [
        ModelOp::Save { key: 0, value: 7, len: 10 },
        ModelOp::Crash { after: 3, image: 5 },
        ModelOp::Save { key: 0, value: 8, len: 2000 },
        ModelOp::Load { key: 0 },
        ModelOp::Clear { key: 0 },
        ModelOp::Load { key: 0 },
    ];
    let stats = run(&ops).expect("no violation");
    // The final cleanup counts as an operation; the final loads of every key too.
    assert_eq!(stats.ops, 7);
    assert_eq!(stats.crashes, 1);
    assert_eq!(stats.failed, 1, "the save cut off by the power cut");
    assert_eq!(stats.loads, 2 + 3);
}

#[test]
fn an_operation_failed_by_an_injected_error_is_counted() {
    let ops =
        [ModelOp::Fail { at: 1, persistent: true }, ModelOp::Save { key: 2, value: 1, len: 5 }];
    let stats = run(&ops).expect("no violation");
    assert_eq!((stats.crashes, stats.failed), (0, 1));
    assert_eq!(safestash_testkit::model::DIR, "/model/stashes");
}
