//! The crash harness as tests: every store operation, power cut at every
//! call, every crash image checked; I/O errors at every call; and the
//! negative controls that show the harness catches broken protocols.
//!
//! This is the bounded version (small values); the exhaustive one is
//! `cargo run --release --example crash_report`.

use safestash::crash::{Protocol, Scenario, explore};

/// Values from under one sector to six sectors (every sector combination).
const SIZES: [usize; 4] = [40, 700, 1500, 2600];

fn assert_clean(scenario: Scenario) {
    for len in SIZES {
        let r = explore(scenario, Protocol::Correct, len);
        assert!(r.crash_points >= 3, "{scenario}: {r:?}");
        assert!(r.states >= r.crash_points, "{scenario}: {r:?}");
        assert_eq!(r.io_error_cases, 2 * r.calls);
        assert_eq!(r.violations, 0, "{scenario} with {len}-byte values: {:#?}", r.examples);
    }
}

#[test]
fn save_creating_directories_survives_every_crash() {
    assert_clean(Scenario::SaveCreatingDirs);
}

#[test]
fn save_over_nothing_survives_every_crash() {
    assert_clean(Scenario::SaveOverNothing);
}

#[test]
fn save_over_a_stash_survives_every_crash() {
    assert_clean(Scenario::SaveOverExisting);
}

#[test]
fn clear_survives_every_crash() {
    assert_clean(Scenario::Clear);
}

#[test]
fn quarantine_survives_every_crash() {
    assert_clean(Scenario::Quarantine);
}

#[test]
fn cleanup_survives_every_crash() {
    assert_clean(Scenario::Cleanup);
}

fn assert_caught(protocol: Protocol, expect: &str) -> safestash::crash::Report {
    let r = explore(Scenario::SaveOverExisting, protocol, 1500);
    assert!(r.violations > 0, "{protocol} went undetected: {r:?}");
    assert!(
        r.examples.iter().any(|e| e.contains(expect)),
        "{protocol}: expected a violation mentioning {expect:?}, got {:#?}",
        r.examples
    );
    r
}

#[test]
fn negative_control_no_file_fsync_is_caught() {
    // Renamed into place but never synced: the data can be lost after Ok.
    let r = assert_caught(Protocol::NoFileSync, "load gave Corrupt");
    assert!(r.lost_after_ok > 0, "{r:?}");
}

#[test]
fn negative_control_no_directory_fsync_is_caught() {
    // The rename itself can be lost after Ok: the old value comes back.
    let r = assert_caught(Protocol::NoDirSync, "after it returned Ok): load gave value \"old");
    assert!(r.lost_after_ok > 0, "{r:?}");
}

#[test]
fn negative_control_write_in_place_is_caught() {
    // A torn overwrite is neither the old nor the new value.
    assert_caught(Protocol::InPlace, "mid-operation): load gave Corrupt");
}

#[test]
fn rollback_restore_survives_every_crash() {
    // Once begin has handed out the permit to destroy, the snapshot survives
    // every crash until the restore hook has run.
    assert_clean(Scenario::RollbackRestore);
}

#[test]
fn negative_control_clear_before_restore_is_caught() {
    // A rollback that clears the stash before the restore hook has made the
    // resource durable can lose the only copy.
    let r = explore(Scenario::RollbackRestore, Protocol::ClearBeforeRestore, 1500);
    assert!(
        r.examples.iter().any(|e| e.contains("the snapshot is lost")),
        "clear-before-restore went undetected: {r:?}"
    );
}
