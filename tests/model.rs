//! Property test: random sequences of saves, loads, clears, quarantines,
//! cleanups, damage, power cuts and I/O errors on the simulated filesystem,
//! and the same operations with client restarts and ambiguous outcomes on
//! the simulated remote, checked against a BTreeMap model of what each key
//! may load as. The same runner backs the `store_ops` fuzz target.

use proptest::prelude::*;
use safestash_testkit::model::{ModelOp, Target, run, run_on};
use safestash_testkit::sim_remote::{Chances, Config, Protocol};

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

    #[test]
    fn simulated_remote_matches_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        if let Err(violation) = run_on(Target::SimRemote(Config::default()), &ops) {
            prop_assert!(false, "{}", violation);
        }
    }

    /// Ambiguous outcomes drawn at random by the simulated service (about
    /// one change in five), on top of the ones the sequence arms.
    #[test]
    fn simulated_remote_with_random_ambiguity_matches_the_model(
        seed in any::<u64>(),
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        if let Err(violation) = run_on(Target::SimRemote(noisy(seed, Protocol::Correct)), &ops) {
            prop_assert!(false, "seed {}: {}", seed, violation);
        }
    }
}

/// A simulated remote that draws an ambiguous outcome for about one change
/// request in five.
fn noisy(seed: u64, protocol: Protocol) -> Config {
    let chances = Chances { lost_reply: 50, error_before: 50, late: 50, retry_meets_own: 50 };
    Config { seed, chances, protocol, ..Config::default() }
}

/// Every ambiguous outcome (`Fail { at }`, `at % 4`: lost reply, error
/// before, late landing, retry meeting its own write) on every kind of
/// change, once and for the whole operation, and client restarts cut at
/// each change with the request in flight landing or not.
#[test]
fn every_ambiguous_outcome_on_every_change_matches_the_model() {
    let changes = [
        ModelOp::Save { key: 0, value: 9, len: 700 },
        ModelOp::Clear { key: 0 },
        ModelOp::Quarantine { key: 0 },
        ModelOp::Batch { keys: 0b111, value: 9, len: 20 },
    ];
    let mut runs = 0;
    for change in &changes {
        let mut faults: Vec<ModelOp> = (0..12)
            .flat_map(|at| [false, true].map(|persistent| ModelOp::Fail { at, persistent }))
            .collect();
        faults.extend((0..5).flat_map(|after| [0, 1].map(|image| ModelOp::Crash { after, image })));
        for fault in faults {
            let ops = [
                ModelOp::Save { key: 0, value: 1, len: 10 },
                ModelOp::Save { key: 1, value: 1, len: 10 },
                fault.clone(),
                change.clone(),
                ModelOp::Load { key: 0 },
                ModelOp::List,
                ModelOp::Load { key: 1 },
                ModelOp::Save { key: 0, value: 2, len: 10 },
                ModelOp::Load { key: 0 },
            ];
            run_on(Target::SimRemote(Config::default()), &ops)
                .unwrap_or_else(|v| panic!("{fault:?} on {change:?}: {v}"));
            runs += 1;
        }
    }
    assert_eq!(runs, 4 * (24 + 10));
}

/// The negative control: a remote protocol that deletes the key after an
/// ambiguous answer, or acknowledges a write it dropped, is caught by the
/// model check, by a fixed sequence and by random sequences alike.
#[test]
fn the_model_catches_broken_remote_protocols() {
    let fixed = [
        ModelOp::Save { key: 0, value: 1, len: 10 },
        ModelOp::Fail { at: 1, persistent: false }, // an error before the write
        ModelOp::Save { key: 0, value: 2, len: 10 },
        ModelOp::Load { key: 0 },
    ];
    assert!(run_on(Target::SimRemote(Config::default()), &fixed).is_ok());
    for (protocol, want) in [
        (Protocol::DeleteAfterAmbiguous, "load of `alpha` gave no stash, model allows"),
        (Protocol::AckDropped, "load of `alpha` gave \"v00001.v00\", model allows \"v00002.v00\""),
    ] {
        let broken = Config { protocol, ..Config::default() };
        let violation = run_on(Target::SimRemote(broken), &fixed).unwrap_err();
        assert!(violation.contains(want), "{protocol:?}: {violation}");
        // Random sequences on a noisy service find it too: count how many
        // of 64 fixed-seed runs of 30 operations do.
        let mut caught = 0;
        let mut rng = 0x1234_5678_u64;
        for seed in 0..64 {
            let ops: Vec<ModelOp> = (0..30)
                .map(|_| {
                    rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let r = (rng >> 33) as u16;
                    match r % 4 {
                        0 | 1 => ModelOp::Save { key: (r >> 2) as u8 % 3, value: r, len: 10 },
                        2 => ModelOp::Load { key: (r >> 2) as u8 % 3 },
                        _ => ModelOp::Clear { key: (r >> 2) as u8 % 3 },
                    }
                })
                .collect();
            caught += usize::from(run_on(Target::SimRemote(noisy(seed, protocol)), &ops).is_err());
            assert!(run_on(Target::SimRemote(noisy(seed, Protocol::Correct)), &ops).is_ok());
        }
        println!("{protocol:?}: caught in {caught} of 64 random runs");
        assert!(caught > 0, "{protocol:?} was never caught");
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
