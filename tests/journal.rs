//! The multi-part operation journal through the public API: the aggregate's
//! precedence against an independent oracle, fail-closed derivation with
//! unreadable parts, compare-and-swap from eight real processes, rollback
//! across parts, and power cuts during an update.
//!
//! `eight_processes_drive_their_own_parts_and_lose_no_update` re-executes
//! this test binary once per worker, running only `journal_child_worker`
//! with the store directory and worker id in the environment. Without that
//! environment `journal_child_worker` returns at once.

mod harness;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use safestash::journal::PartState::{
    Cancelled, Completed, Failed, FailedRetryable, Pending, RollbackFailed, RolledBack, Running,
};
use safestash::sim::SimFs;
use safestash::{
    Error, Stashed, Store,
    journal::{
        Aggregate, Change, Derivation, Expect, JournalError, Operation, PartState, PartStatus,
        RollbackOutcome, Unreadable, aggregate, aggregate_parts,
    },
};
use safestash_testkit::journal_oracle::{
    must_be_terminal, must_be_terminal_parts, oracle, oracle_parts,
};

// ---------------------------------------------------------------------------
// The oracle: the documented precedence, written as an ordered list of
// predicates over counts (the implementation folds a bit set instead).
// ---------------------------------------------------------------------------

//
// The same oracle is in fuzz/fuzz_targets/journal.rs (`oracle_parts`,
// `oracle`); keep the two in step.

fn any_state() -> impl Strategy<Value = PartState> {
    prop::sample::select(PartState::ALL.to_vec())
}

#[test]
fn documented_precedence_table() {
    // One row per line of the table in `aggregate`'s documentation.
    let rows: &[(&[PartState], Aggregate)] = &[
        (&[], Aggregate::Pending),
        (&[RollbackFailed, Completed, Failed], Aggregate::RollbackFailed),
        (&[Failed, Running, Completed], Aggregate::Failing),
        (&[Failed, Pending], Aggregate::Failing),
        (&[Failed, FailedRetryable], Aggregate::Failing),
        (&[Failed, Completed, RolledBack], Aggregate::NeedsRollback),
        (&[Failed, Cancelled, RolledBack], Aggregate::Failed),
        (&[FailedRetryable, Running, Completed], Aggregate::FailedRetryable),
        (&[Running, Completed, Cancelled], Aggregate::Running),
        (&[Pending, Pending], Aggregate::Pending),
        (&[Pending, Completed], Aggregate::Running),
        (&[Pending, Cancelled], Aggregate::Running),
        (&[Completed, Completed], Aggregate::Completed),
        (&[Completed, Cancelled], Aggregate::NeedsRollback),
        (&[Completed, RolledBack], Aggregate::NeedsRollback),
        (&[Cancelled, RolledBack], Aggregate::Cancelled),
        (&[RolledBack, RolledBack], Aggregate::RolledBack),
    ];
    for &(states, want) in rows {
        assert_eq!(aggregate(states.iter().copied()), want, "{states:?}");
        assert_eq!(oracle(states), want, "oracle on {states:?}");
    }
}

#[test]
fn single_part_aggregate_is_its_own_state() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for state in PartState::ALL {
        assert_eq!(aggregate([state]), Aggregate::from(state));
        assert_eq!(aggregate([state]).as_str(), state.as_str());
        assert_eq!(Aggregate::from(state).is_terminal(), state.is_terminal(), "{state}");
        // And through the store: one part driven there, then read back.
        let op = Operation::create(&store, &format!("single {state}"), ["only"]).unwrap();
        let path = path_to(state);
        let (last, before) = path.split_last().map_or((None, path), |(l, b)| (Some(*l), b));
        drive(&op, "only", before);
        let g = op.view().unwrap().generation;
        match last.map(|l| op.update("only", Expect::Operation(g), l)) {
            None | Some(Ok(_)) => {
                let view = op.view().unwrap();
                assert_eq!(view.derivation, Derivation::Known(Aggregate::from(state)), "{state}");
                assert_eq!(view.stored, Aggregate::from(state), "{state}");
            }
            // A lone completed part is a completed operation, which is final:
            // rolling it back (by hand or by `rollback`) is refused.
            Some(Err(JournalError::Finished { aggregate: Aggregate::Completed, .. }))
                if matches!(state, RolledBack | RollbackFailed) =>
            {
                assert_eq!(op.view().unwrap().stored, Aggregate::Completed);
            }
            Some(Err(e)) => panic!("{state}: {e}"),
        }
    }
}

#[test]
fn pending_sibling_keeps_the_aggregate_non_terminal() {
    for a in PartState::ALL {
        assert!(!aggregate([a, Pending]).is_terminal(), "{a} + pending");
        for b in PartState::ALL {
            assert!(!aggregate([a, b, Pending]).is_terminal(), "{a} + {b} + pending");
        }
    }
    // Incident 4: the first part to finish must not decide for the rest.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let op = Operation::create(&store, "rollout", ["eu", "us", "ap"]).unwrap();
    drive(&op, "eu", &[Running, Completed]);
    let u = drive(&op, "us", &[Running, Completed]);
    assert_eq!(u.derivation, Derivation::Known(Aggregate::Running));
    assert_eq!(u.stored, Aggregate::Running);
    let u = drive(&op, "ap", &[Running, Completed]);
    assert_eq!(
        (u.derivation, u.stored),
        (Derivation::Known(Aggregate::Completed), Aggregate::Completed)
    );
}

#[test]
fn aggregate_matches_the_oracle_on_every_sequence_of_up_to_four_parts() {
    let mut seqs: Vec<Vec<PartState>> = vec![Vec::new()];
    let mut checked = 0;
    for _ in 0..4 {
        seqs = seqs
            .iter()
            .flat_map(|s| PartState::ALL.iter().map(move |&x| [s.as_slice(), &[x]].concat()))
            .collect();
        for s in &seqs {
            let got = aggregate(s.iter().copied());
            assert_eq!(got, oracle(s), "{s:?}");
            assert_eq!(got.is_terminal(), must_be_terminal(s), "{s:?} gave {got}");
            if s.iter().any(|p| p.is_active()) {
                assert!(!got.is_terminal(), "{s:?}: an active part, yet {got}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 8 + 64 + 512 + 4096);
}

#[test]
fn aggregate_parts_matches_the_oracle_on_every_sequence_of_up_to_three_parts() {
    let all: Vec<(PartState, bool)> =
        PartState::ALL.iter().flat_map(|&s| [(s, false), (s, true)]).collect();
    let mut seqs: Vec<Vec<(PartState, bool)>> = vec![Vec::new()];
    let mut checked = 0;
    for _ in 0..3 {
        seqs = seqs
            .iter()
            .flat_map(|s| all.iter().map(move |&x| [s.as_slice(), &[x]].concat()))
            .collect();
        for s in &seqs {
            let got = aggregate_parts(s.iter().map(|&(st, h)| PartStatus::new(st, h)));
            assert_eq!(got, oracle_parts(s), "{s:?}");
            // A held completed part does not matter for "terminal": the
            // operation succeeded, its stashes are pre-images of what stands.
            let settled: Vec<(PartState, bool)> =
                s.iter().map(|&(st, h)| (st, h && st != Completed)).collect();
            assert_eq!(got.is_terminal(), must_be_terminal_parts(&settled), "{s:?} gave {got}");
            checked += 1;
        }
    }
    assert_eq!(checked, 16 + 256 + 4096);
}

proptest! {
    #[test]
    fn aggregate_does_not_depend_on_part_order(
        (states, shuffled) in prop::collection::vec(any_state(), 0..40)
            .prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle()))
    ) {
        let want = aggregate(states.clone());
        prop_assert_eq!(aggregate(shuffled.clone()), want);
        prop_assert_eq!(aggregate(states.iter().rev().copied()), want);
        prop_assert_eq!(oracle(&shuffled), want);
        prop_assert_eq!(want.is_terminal(), must_be_terminal(&states));
    }

    #[test]
    fn unreadable_parts_never_give_a_terminal_derivation(
        known in prop::collection::vec(any_state(), 0..8),
        hidden in prop::collection::vec(any_state(), 1..4),
    ) {
        let parts = known.iter().map(|&s| Ok(s)).chain(
            hidden.iter().enumerate().map(|(i, _)| Err(Unreadable::new(format!("h{i}"), "damaged"))),
        );
        let d = Derivation::of(parts);
        prop_assert!(!d.is_terminal());
        prop_assert_eq!(d.unreadable().len(), hidden.len());
        let truth = aggregate(known.iter().chain(&hidden).copied());
        let Derivation::Undetermined { possible, .. } = &d else {
            return Err(TestCaseError::fail("unreadable parts must make it undetermined"));
        };
        prop_assert!(possible.contains(&truth), "{:?} misses the real {}", possible, truth);
        if let Some(a) = d.aggregate() {
            prop_assert!(!a.is_terminal());
            prop_assert_eq!(a, truth);
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers over a real store
// ---------------------------------------------------------------------------

/// The transitions that take a fresh part to `state`.
fn path_to(state: PartState) -> &'static [PartState] {
    match state {
        Pending => &[],
        Running => &[Running],
        Completed => &[Running, Completed],
        Failed => &[Running, Failed],
        FailedRetryable => &[Running, FailedRetryable],
        Cancelled => &[Cancelled],
        RolledBack => &[Running, Completed, RolledBack],
        RollbackFailed => &[Running, Completed, RollbackFailed],
        other => panic!("no path to {other}"),
    }
}

/// Applies `steps` to `part`, each a compare-and-swap on a fresh view.
fn drive<F: safestash::fs::Fs>(
    op: &Operation<F>,
    part: &str,
    steps: &[PartState],
) -> safestash::journal::Updated {
    let mut last = None;
    for &step in steps {
        let g = op.view().unwrap().generation;
        last = Some(op.update(part, Expect::Operation(g), step).unwrap());
    }
    last.unwrap_or_else(|| {
        // No step: a no-op progress note keeps the signature simple.
        let g = op.view().unwrap().generation;
        op.update(part, Expect::Operation(g), Change::to(Pending).note("untouched")).unwrap()
    })
}

fn stash_and_complete(op: &Operation, part: &str) {
    let u = drive(op, part, &[Running]);
    let u = op.stash(part, Expect::Part(u.part.generation), &format!("{part} before")).unwrap();
    op.update(part, Expect::Operation(u.generation), Completed).unwrap();
}

fn state_of(op: &Operation, part: &str) -> PartState {
    op.view().unwrap().part(part).unwrap().unwrap().state
}

// ---------------------------------------------------------------------------
// Fail closed
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Damage {
    Garbage,
    Truncated,
    Missing,
    /// Another part's intact record copied over this one's.
    Foreign,
}

fn damage(op: &Operation, part: &str, how: Damage) {
    let path = op.records().path_of(&op.part_key(part));
    match how {
        Damage::Garbage => std::fs::write(&path, b"SAFESTASH 1\nnot a record").unwrap(),
        Damage::Truncated => {
            let bytes = std::fs::read(&path).unwrap();
            std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        }
        Damage::Missing => std::fs::remove_file(&path).unwrap(),
        Damage::Foreign => {
            let other = op.parts().unwrap().into_iter().find(|p| p != part).unwrap();
            std::fs::copy(op.records().path_of(&op.part_key(&other)), &path).unwrap();
        }
    }
}

#[test]
fn unreadable_sibling_with_a_terminal_current_part_leaves_the_stored_aggregate_unchanged() {
    for how in [Damage::Garbage, Damage::Truncated, Damage::Missing, Damage::Foreign] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let op = Operation::create(&store, "sync", ["a", "b"]).unwrap();
        drive(&op, "a", &[Running, Completed]);
        drive(&op, "b", &[Running]);
        assert_eq!(op.view().unwrap().stored, Aggregate::Running);

        let a_path = op.records().path_of(&op.part_key("a"));
        let a_bytes = std::fs::read(&a_path).unwrap();
        damage(&op, "a", how);
        let damaged = std::fs::read(&a_path).ok();

        // `b` reaches a terminal state: its update is made, the aggregate is not.
        let g = op.view().unwrap().generation;
        let u = op.update("b", Expect::Operation(g), Completed).unwrap();
        assert_eq!(u.part.state, Completed);
        assert_eq!(u.stored, Aggregate::Running, "{how:?}: stored aggregate changed");
        assert!(!u.derivation.is_terminal() && u.derivation.aggregate().is_none(), "{how:?}");
        let Derivation::Undetermined { unreadable, possible } = &u.derivation else {
            panic!("{how:?}: expected undetermined, got {}", u.derivation);
        };
        assert_eq!(unreadable.len(), 1);
        assert_eq!(unreadable[0].part, "a");
        assert!(!unreadable[0].reason.is_empty());
        assert!(
            possible.contains(&Aggregate::Completed)
                && possible.contains(&Aggregate::RollbackFailed)
        );
        println!("{how:?}: {}", u.derivation);

        let view = op.view().unwrap();
        assert_eq!(view.stored, Aggregate::Running);
        assert!(view.part("a").unwrap().is_err() && view.part("b").unwrap().is_ok());
        // Refreshing cannot decide either.
        assert_eq!(op.refresh().unwrap().stored, Aggregate::Running);
        // The unreadable part itself is never overwritten, nor rolled back.
        let g = view.generation;
        let err = op.update("a", Expect::Operation(g), RolledBack).unwrap_err();
        assert!(matches!(err, JournalError::PartUnreadable { .. }), "{err}");
        let err = op.rollback(&mut |_: Stashed<String>| Ok::<(), Error>(())).unwrap_err();
        assert!(matches!(err, JournalError::Undetermined { .. }), "{err}");
        assert_eq!(std::fs::read(&a_path).ok(), damaged, "{how:?}: the damaged record was touched");

        // Repaired, the aggregate is determined again, and stored on refresh.
        std::fs::write(&a_path, &a_bytes).unwrap();
        let view = op.view().unwrap();
        assert_eq!(view.derivation, Derivation::Known(Aggregate::Completed));
        assert_eq!(view.stored, Aggregate::Running);
        let view = op.refresh().unwrap();
        assert_eq!(view.stored, Aggregate::Completed);
    }
}

#[test]
fn non_terminal_updates_proceed_next_to_an_unreadable_part() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let op = Operation::create(&store, "op", ["a", "b", "c"]).unwrap();
    damage(&op, "c", Damage::Garbage);
    // Undetermined: the update is made, the stored aggregate stays.
    let u = drive(&op, "a", &[Running, Completed]);
    assert_eq!((u.part.state, u.stored), (Completed, Aggregate::Pending));
    // Whatever `c` holds, a failed restore decides the aggregate: stored.
    let u = drive(&op, "a", &[RollbackFailed]);
    assert_eq!(u.derivation.aggregate(), Some(Aggregate::RollbackFailed));
    assert_eq!(u.stored, Aggregate::RollbackFailed);
    let u = drive(&op, "b", &[Running]);
    assert_eq!(u.stored, Aggregate::RollbackFailed);
    assert!(matches!(u.derivation, Derivation::Undetermined { .. }));
}

// ---------------------------------------------------------------------------
// Compare-and-swap
// ---------------------------------------------------------------------------

#[test]
fn a_stale_update_is_a_conflict_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (store1, store2) = (Store::open(dir.path()).unwrap(), Store::open(dir.path()).unwrap());
    let op1 = Operation::create(&store1, "op", ["a", "b"]).unwrap();
    let op2 = Operation::open(&store2, "op").unwrap();

    // Two workers read the same generation.
    let seen1 = op1.view().unwrap();
    let seen2 = op2.view().unwrap();
    assert_eq!(seen1.generation, seen2.generation);
    op1.update("a", Expect::Operation(seen1.generation), Running).unwrap();

    let b_path = op2.records().path_of(&op2.part_key("b"));
    let b_before = std::fs::read(&b_path).unwrap();
    let err = op2.update("b", Expect::Operation(seen2.generation), Running).unwrap_err();
    match &err {
        JournalError::Conflict { part, expected, found, .. } => {
            assert_eq!(part, "b");
            assert_eq!(*expected, Expect::Operation(seen2.generation));
            assert_eq!(found.get(), seen2.generation.get() + 1);
        }
        other => panic!("expected a conflict, got {other}"),
    }
    assert!(err.to_string().contains("re-read and retry"), "{err}");
    assert_eq!(std::fs::read(&b_path).unwrap(), b_before, "a refused update wrote");

    // The part's own generation did not move: that form goes through.
    let b_gen = seen2.part("b").unwrap().unwrap().generation;
    op2.update("b", Expect::Part(b_gen), Running).unwrap();
    let err = op2.update("b", Expect::Part(b_gen), Completed).unwrap_err();
    assert!(matches!(err, JournalError::Conflict { .. }), "{err}");

    let view = op1.view().unwrap();
    assert_eq!(view.generation.get(), seen1.generation.get() + 2);
    for part in ["a", "b"] {
        let p = view.part(part).unwrap().unwrap();
        assert_eq!((p.state, p.updates, p.history.len()), (Running, 1, 1), "{part}");
    }
}

#[test]
fn invalid_changes_are_refused_and_a_finished_operation_takes_no_more() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let op = Operation::create(&store, "op", ["a", "b"]).unwrap();
    drive(&op, "a", &[Running, Failed]);
    let g = op.view().unwrap().generation;
    let err = op.update("a", Expect::Operation(g), Running).unwrap_err();
    assert!(matches!(err, JournalError::Transition { from: Failed, to: Running, .. }), "{err}");
    let err = op.update("zzz", Expect::Operation(g), Running).unwrap_err();
    assert!(matches!(err, JournalError::UnknownPart { .. }), "{err}");
    assert_eq!(op.view().unwrap().generation, g, "a refused update bumped the generation");

    let done = Operation::create(&store, "done", ["a"]).unwrap();
    drive(&done, "a", &[Running, Completed]);
    let g = done.view().unwrap().generation;
    let err = done.update("a", Expect::Operation(g), RolledBack).unwrap_err();
    assert!(matches!(err, JournalError::Finished { aggregate: Aggregate::Completed, .. }), "{err}");
    let err = done.rollback(&mut |_: Stashed<String>| Ok::<(), Error>(())).unwrap_err();
    assert!(matches!(err, JournalError::Finished { .. }), "{err}");
    // A record damaged afterwards does not reopen it.
    let two = Operation::create(&store, "two", ["a", "b"]).unwrap();
    drive(&two, "a", &[Running, Completed]);
    drive(&two, "b", &[Running, Completed]);
    damage(&two, "a", Damage::Garbage);
    let g = two.view().unwrap().generation;
    let err = two.update("b", Expect::Operation(g), RolledBack).unwrap_err();
    assert!(matches!(err, JournalError::Finished { aggregate: Aggregate::Completed, .. }), "{err}");

    let long = "x".repeat(129);
    for bad in ["", "x\ny", long.as_str()] {
        assert!(matches!(Operation::create(&store, bad, ["a"]), Err(JournalError::Invalid { .. })));
        assert!(matches!(
            Operation::create(&store, "ok", [bad]),
            Err(JournalError::Invalid { .. })
        ));
    }
    assert!(Operation::create(&store, "ok", Vec::<String>::new()).is_err());
    assert!(matches!(Operation::open(&store, "ok"), Err(JournalError::NotFound { .. })));
}

#[test]
fn records_are_checksummed_stashes_under_readable_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let op = Operation::create(&store, "deploy.42", ["eu west", "us"]).unwrap();
    let keys: Vec<String> =
        op.records().list().unwrap().into_iter().map(|i| i.key.into_string()).collect();
    assert_eq!(
        keys,
        ["op.deploy_252E42", "op.deploy_252E42.part.eu_20west", "op.deploy_252E42.part.us"]
    );
    assert!(op.records().verify().unwrap().iter().all(|r| r.result.is_ok()));
    // In the reserved namespace `journal`: not among the user's stashes.
    assert!(store.list().unwrap().is_empty());
    // A flipped byte in the header is an error naming the file, never a guess.
    let path = op.records().path_of(op.key());
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.iter().position(|&b| b == b'"').unwrap() + 1;
    bytes[at] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();
    let err = op.view().unwrap_err();
    match &err {
        JournalError::Store { source, .. } => {
            assert!(matches!(**source, Error::Corrupt { .. }), "{source}")
        }
        other => panic!("expected a store error, got {other}"),
    }
    assert!(
        err.to_string().contains("failed to read the header of operation `deploy.42`"),
        "{err}"
    );
    // And a corrupt header is never overwritten by a new creation.
    assert!(Operation::create(&store, "deploy.42", ["x"]).is_err());
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

// ---------------------------------------------------------------------------
// Eight processes
// ---------------------------------------------------------------------------

const DIR_VAR: &str = "SAFESTASH_TEST_JOURNAL_DIR";
const WORKER_VAR: &str = "SAFESTASH_TEST_JOURNAL_WORKER";
const WORKERS: usize = 8;
/// Progress notes between `running` and `completed`.
const PROGRESS: usize = 10;
const OP: &str = "fleet upgrade";

fn part_name(worker: usize) -> String {
    format!("host-{worker}")
}

fn steps() -> Vec<Change> {
    harness::journal_steps(PROGRESS)
}

/// The child: drives its own part through every step, each a
/// compare-and-swap on the whole operation's generation (so any sibling's
/// update in between is a conflict), retried until it lands.
#[test]
fn journal_child_worker() {
    let (Ok(dir), Ok(worker)) = (std::env::var(DIR_VAR), std::env::var(WORKER_VAR)) else {
        return;
    };
    let worker: usize = worker.parse().unwrap();
    let dir = PathBuf::from(dir);
    let store = Store::open(dir.join("store")).unwrap();
    let op = Operation::open(&store, OP).unwrap();
    let part = part_name(worker);
    let mut rng = harness::Rng::new(worker as u64);

    let deadline = Instant::now() + Duration::from_secs(60);
    while !dir.join("go").exists() {
        assert!(Instant::now() < deadline, "no go signal");
        std::thread::sleep(Duration::from_millis(1));
    }
    let conflicts = harness::drive_journal_part(
        &op,
        &part,
        steps(),
        &mut rng,
        Duration::from_micros(2000),
        deadline,
    );
    std::fs::write(dir.join(format!("done-{worker}")), conflicts.to_string()).unwrap();
}

fn spawn(root: &Path, worker: usize) -> Child {
    let out = File::create(root.join(format!("out-{worker}"))).unwrap();
    let err = File::create(root.join(format!("err-{worker}"))).unwrap();
    harness::self_command("journal_child_worker")
        .env(DIR_VAR, root)
        .env(WORKER_VAR, worker.to_string())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap()
}

#[test]
fn eight_processes_drive_their_own_parts_and_lose_no_update() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path().join("store")).unwrap();
    let names: Vec<String> = (0..WORKERS).map(part_name).collect();
    let op = Operation::create(&store, OP, &names).unwrap();
    let start = op.view().unwrap().generation;

    let began = Instant::now();
    let children: Vec<(usize, Child)> = (0..WORKERS).map(|w| (w, spawn(root.path(), w))).collect();
    File::create(root.path().join("go")).unwrap();
    harness::wait_for_workers(root.path(), children, Duration::from_secs(120));

    let conflicts: u32 = (0..WORKERS)
        .map(|w| {
            std::fs::read_to_string(root.path().join(format!("done-{w}")))
                .unwrap()
                .parse::<u32>()
                .unwrap()
        })
        .sum();
    let view = op.view().unwrap();
    let per_part = steps().len();
    println!(
        "{WORKERS} processes x {per_part} updates in {:.1?}: {conflicts} conflicts retried",
        began.elapsed()
    );
    assert_eq!(view.derivation, Derivation::Known(Aggregate::Completed));
    assert_eq!(view.stored, Aggregate::Completed);
    // Every update got its own generation: none lost, none merged.
    assert_eq!(view.generation.get(), start.get() + (WORKERS * per_part) as u64);
    let mut generations = Vec::new();
    let want_notes: Vec<Option<String>> =
        steps().iter().map(|c| c.note_text().map(str::to_owned)).collect();
    for name in &names {
        let p = view.part(name).unwrap().unwrap();
        assert_eq!(p.updates, per_part as u64, "{name}");
        let notes: Vec<Option<String>> = p.history.iter().map(|t| t.note.clone()).collect();
        assert_eq!(notes, want_notes, "{name}: history");
        let moves: Vec<(PartState, PartState)> = p.history.iter().map(|t| (t.from, t.to)).collect();
        assert_eq!(moves[0], (Pending, Running));
        assert_eq!(moves[per_part - 1], (Running, Completed));
        generations.extend(p.history.iter().map(|t| t.generation.get()));
    }
    generations.sort_unstable();
    let want: Vec<u64> = (start.get() + 1..=view.generation.get()).collect();
    assert_eq!(generations, want, "generations are not exactly one per update");
    assert!(conflicts > 0, "no update conflicted: the processes did not overlap");
}

// ---------------------------------------------------------------------------
// Rollback across parts
// ---------------------------------------------------------------------------

#[test]
fn rollback_across_three_parts_with_one_failing_restore() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let op =
        Operation::create(&store, "nightly", ["orders", "customers", "invoices", "audit"]).unwrap();
    // Completion order differs from declaration order.
    for part in ["customers", "orders", "invoices"] {
        stash_and_complete(&op, part);
    }
    drive(&op, "audit", &[Running, Failed]);
    let view = op.view().unwrap();
    assert_eq!(view.stored, Aggregate::NeedsRollback);

    let mut calls: Vec<String> = Vec::new();
    let mut failing = |s: Stashed<String>| -> Result<(), std::io::Error> {
        let part = s.meta().header.origin().unwrap().to_owned();
        assert_eq!(s.value(), &format!("{part} before"));
        calls.push(part.clone());
        if part == "orders" {
            return Err(std::io::Error::other("injected: database is down"));
        }
        Ok(())
    };
    let err = op.rollback(&mut failing).unwrap_err();
    assert_eq!(
        calls,
        ["invoices", "orders"],
        "reverse order of completion, stopping at the failure"
    );
    let JournalError::RollbackIncomplete { part, report, source, .. } = &err else {
        panic!("expected an incomplete rollback, got {err}");
    };
    assert_eq!(part, "orders");
    assert!(matches!(**source, Error::Restore { .. }), "{source}");
    assert!(err.to_string().contains("stopped at part `orders`"), "{err}");
    assert_eq!(report.outcome("invoices"), Some(&RollbackOutcome::Restored));
    assert!(
        matches!(report.outcome("orders"), Some(RollbackOutcome::RestoreFailed { error }) if error.contains("injected"))
    );
    assert_eq!(report.outcome("customers"), Some(&RollbackOutcome::NotAttempted));
    assert_eq!(report.outcome("audit"), None);
    assert_eq!(report.derivation, Derivation::Known(Aggregate::RollbackFailed));

    // Visible and non-terminal; the failed part keeps its stash.
    let view = op.view().unwrap();
    assert_eq!(view.stored, Aggregate::RollbackFailed);
    assert!(!view.derivation.is_terminal());
    assert_eq!(state_of(&op, "invoices"), RolledBack);
    assert_eq!(state_of(&op, "orders"), RollbackFailed);
    assert_eq!(state_of(&op, "customers"), Completed);
    assert_eq!(state_of(&op, "audit"), Failed);
    let orders = view.part("orders").unwrap().unwrap();
    assert!(orders.history.last().unwrap().note.as_deref().unwrap().contains("injected"));
    let stash =
        |p: &str| op.records().load::<String>(&op.stash_key(p)).unwrap().map(Stashed::into_value);
    assert_eq!(stash("invoices"), None, "a restored stash is cleared");
    assert_eq!(stash("orders").as_deref(), Some("orders before"));
    assert_eq!(stash("customers").as_deref(), Some("customers before"));
    assert_eq!(op.load_stash::<String>("orders").unwrap().unwrap().value(), "orders before");

    // Fixed and retried: goes on from where it stopped, nothing restored twice.
    let mut calls = Vec::new();
    let report = op
        .rollback(&mut |s: Stashed<String>| -> Result<(), std::io::Error> {
            calls.push(s.meta().header.origin().unwrap().to_owned());
            Ok(())
        })
        .unwrap();
    assert_eq!(calls, ["orders", "customers"]);
    assert_eq!(report.outcomes.len(), 2);
    assert_eq!(report.derivation, Derivation::Known(Aggregate::Failed));
    let view = op.view().unwrap();
    assert_eq!(view.stored, Aggregate::Failed);
    assert!(view.derivation.is_terminal());
    for p in ["orders", "customers", "invoices"] {
        assert_eq!(state_of(&op, p), RolledBack, "{p}");
        assert_eq!(stash(p), None, "{p}");
    }
    // Rolling back a rolled-back operation is a no-op.
    let again = op.rollback(&mut |_: Stashed<String>| -> Result<(), std::io::Error> {
        panic!("restored twice")
    });
    assert!(again.unwrap().outcomes.is_empty());
}

#[test]
fn rollback_waits_for_running_parts_then_cancels_and_abandons_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let op = Operation::create(&store, "op", ["run", "wait", "done", "retry", "plain"]).unwrap();
    drive(&op, "run", &[Running]);
    stash_and_complete(&op, "done");
    drive(&op, "retry", &[Running, FailedRetryable]);
    drive(&op, "plain", &[Running, Completed]); // stashed nothing
    let restore_nothing = |_: Stashed<String>| -> Result<(), std::io::Error> { Ok(()) };

    let g = op.view().unwrap().generation;
    let err = op.rollback(&mut { restore_nothing }).unwrap_err();
    assert!(matches!(&err, JournalError::Active { parts, .. } if parts == &["run"]), "{err}");
    assert_eq!(op.view().unwrap().generation, g, "a refused rollback changed something");

    drive(&op, "run", &[Failed]);
    let mut restored = Vec::new();
    let report = op
        .rollback(&mut |s: Stashed<String>| -> Result<(), std::io::Error> {
            restored.push(s.into_value());
            Ok(())
        })
        .unwrap();
    assert_eq!(restored, ["done before"]);
    assert_eq!(report.outcome("wait"), Some(&RollbackOutcome::Cancelled));
    assert_eq!(report.outcome("retry"), Some(&RollbackOutcome::Abandoned));
    assert_eq!(report.outcome("plain"), Some(&RollbackOutcome::NothingToRestore));
    assert_eq!(report.outcome("done"), Some(&RollbackOutcome::Restored));
    assert_eq!(report.outcome("run"), None);
    let states: Vec<PartState> =
        ["run", "wait", "done", "retry", "plain"].iter().map(|p| state_of(&op, p)).collect();
    assert_eq!(states, [Failed, Cancelled, RolledBack, Failed, RolledBack]);
    assert_eq!(op.view().unwrap().stored, Aggregate::Failed);

    // An abort with nothing failed: completed parts undone, pending cancelled.
    let abort = Operation::create(&store, "abort", ["a", "b"]).unwrap();
    stash_and_complete(&abort, "a");
    let report = abort.rollback(&mut { restore_nothing }).unwrap();
    assert_eq!(report.derivation, Derivation::Known(Aggregate::Cancelled));
}

#[test]
fn a_part_stashes_once_and_a_retry_picks_the_stash_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let op = Operation::create(&store, "op", ["t", "u"]).unwrap();
    let g = op.view().unwrap().generation;
    let err = op.stash("t", Expect::Operation(g), &"too early").unwrap_err();
    assert!(matches!(err, JournalError::StashRefused { .. }), "{err}");
    let u = drive(&op, "t", &[Running]);
    let u = op.stash("t", Expect::Operation(u.generation), &"original").unwrap();
    assert!(u.part.stash.is_some());
    let err = op.stash("t", Expect::Operation(u.generation), &"half destroyed").unwrap_err();
    assert!(matches!(err, JournalError::StashRefused { .. }), "{err}");
    // The attempt fails retryably; the retry finds the original snapshot.
    drive(&op, "t", &[FailedRetryable, Running]);
    assert_eq!(op.load_stash::<String>("t").unwrap().unwrap().value(), "original");
    // Someone else's stash under the part's key is never taken for it.
    op.records().save(&op.stash_key("t"), &"foreign").unwrap();
    let err = op.load_stash::<String>("t").unwrap_err();
    match &err {
        JournalError::Store { source, .. } => {
            assert!(matches!(**source, Error::Replaced { .. }), "{source}")
        }
        other => panic!("expected Replaced, got {other}"),
    }
    drive(&op, "t", &[Completed]);
    drive(&op, "u", &[Running, Failed]);
    let err = op.rollback(&mut |_: Stashed<String>| -> Result<(), std::io::Error> {
        panic!("restored a foreign stash")
    });
    assert!(matches!(err, Err(JournalError::RollbackIncomplete { .. })));
    assert_eq!(state_of(&op, "t"), RollbackFailed);
}

// ---------------------------------------------------------------------------
// Power cuts
// ---------------------------------------------------------------------------

#[test]
fn a_power_cut_during_an_update_leaves_the_old_or_the_new_state_and_a_fresh_generation() {
    const DIR: &str = "/journal";
    let fs = SimFs::new();
    let store = Store::with_fs(DIR, fs.clone()).unwrap();
    let op = Operation::create(&store, "op", ["a", "b"]).unwrap();
    drive(&op, "a", &[Running, Completed]);
    drive(&op, "b", &[Running]);
    let before = op.view().unwrap();

    // How many calls the update that completes the operation makes.
    let probe = fs.fork();
    let probe_store = Store::with_fs(DIR, probe.clone()).unwrap();
    let start = probe.calls();
    Operation::open(&probe_store, "op")
        .unwrap()
        .update("b", Expect::Operation(before.generation), Completed)
        .unwrap();
    let calls = probe.calls() - start;

    let mut images = 0;
    let mut seen_states = std::collections::BTreeSet::new();
    for cut in 0..=calls {
        let live = fs.fork();
        let live_store = Store::with_fs(DIR, live.clone()).unwrap();
        live.crash_after(live.calls() + cut);
        let result = Operation::open(&live_store, "op")
            .and_then(|op| op.update("b", Expect::Operation(before.generation), Completed));
        assert_eq!(
            result.is_ok(),
            cut == calls && !live.is_crashed(),
            "cut after {cut} of {calls}"
        );
        let count = live.crash_image_count();
        for n in 0..count.min(24) {
            let image = live.crash_image(n);
            let store = Store::with_fs(DIR, image).unwrap();
            let op = Operation::open(&store, "op").unwrap();
            let view = op.view().unwrap();
            let b = view.part("b").unwrap().unwrap().state;
            seen_states.insert(b);
            let want = match b {
                Running => {
                    assert_eq!(view.generation, before.generation, "cut {cut} image {n}");
                    Aggregate::Running
                }
                Completed => {
                    assert!(
                        view.generation > before.generation,
                        "cut {cut} image {n}: generation reused"
                    );
                    Aggregate::Completed
                }
                other => panic!("cut {cut} image {n}: b is {other}"),
            };
            assert_eq!(view.derivation, Derivation::Known(want), "cut {cut} image {n}");
            assert!(
                view.stored == Aggregate::Running || view.stored == want,
                "cut {cut} image {n}"
            );
            // The journal goes on from there: the generation read is the CAS token.
            if b == Running {
                let u = op.update("b", Expect::Operation(view.generation), Completed).unwrap();
                assert_eq!(u.stored, Aggregate::Completed);
            } else {
                let view = op.refresh().unwrap();
                assert_eq!(view.stored, Aggregate::Completed);
                let err =
                    op.update("a", Expect::Operation(view.generation), RolledBack).unwrap_err();
                assert!(matches!(err, JournalError::Finished { .. }), "{err}");
            }
            images += 1;
        }
    }
    println!("{calls} calls, {images} crash images checked");
    assert_eq!(seen_states, [Running, Completed].into(), "both outcomes should be reachable");
}

// ---------------------------------------------------------------------------
// Issue 12: a rollback never abandons a stash (12.1, 12.2), hooks that call
// back never hang (12.5)
// ---------------------------------------------------------------------------

/// Runs `part` to `running`, stashes `"{part} before"`, then applies `then`.
fn stash_then(op: &Operation, part: &str, then: &[PartState]) {
    let u = drive(op, part, &[Running]);
    op.stash(part, Expect::Part(u.part.generation), &format!("{part} before")).unwrap();
    if !then.is_empty() {
        drive(op, part, then);
    }
}

fn stash_of(op: &Operation, part: &str) -> Option<String> {
    op.records().load::<String>(&op.stash_key(part)).unwrap().map(Stashed::into_value)
}

#[test]
fn a_rollback_restores_every_part_that_holds_a_stash_whatever_its_state() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let parts = ["retryable", "abandoned", "cancelled", "completed", "plain"];
    let op = Operation::create(&store, "reload", parts).unwrap();
    // Each stashed, destroyed its resource, then ended in a different state.
    stash_then(&op, "retryable", &[FailedRetryable]);
    stash_then(&op, "abandoned", &[Failed]); // its worker died running; the operator failed it
    stash_then(&op, "cancelled", &[Cancelled]);
    stash_then(&op, "completed", &[Completed]);
    drive(&op, "plain", &[Running, Failed]); // stashed nothing
    assert!(!op.view().unwrap().derivation.is_terminal());

    let mut restored = Vec::new();
    let report = op
        .rollback(&mut |s: Stashed<String>| -> Result<(), std::io::Error> {
            restored.push(s.into_value());
            Ok(())
        })
        .unwrap();
    restored.sort();
    assert_eq!(
        restored,
        ["abandoned before", "cancelled before", "completed before", "retryable before"]
    );
    for part in ["retryable", "abandoned", "cancelled", "completed"] {
        assert_eq!(report.outcome(part), Some(&RollbackOutcome::Restored), "{part}");
        assert_eq!(state_of(&op, part), RolledBack, "{part}");
        assert_eq!(stash_of(&op, part), None, "{part}: a restored stash is cleared");
    }
    assert_eq!(state_of(&op, "plain"), Failed);
    assert_eq!(report.derivation, Derivation::Known(Aggregate::Failed));
}

#[test]
fn a_failed_retryable_part_whose_restore_fails_keeps_the_operation_open_until_retried() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let op = Operation::create(&store, "reload", ["orders", "customers"]).unwrap();
    stash_then(&op, "orders", &[FailedRetryable]); // half destroyed
    stash_and_complete(&op, "customers");

    let err = op
        .rollback(&mut |s: Stashed<String>| -> Result<(), std::io::Error> {
            if s.value() == "orders before" {
                return Err(std::io::Error::other("injected: database is down"));
            }
            Ok(())
        })
        .unwrap_err();
    let JournalError::RollbackIncomplete { part, report, .. } = &err else {
        panic!("expected an incomplete rollback, got {err}");
    };
    assert_eq!(part, "orders", "{err}");
    assert!(!report.derivation.is_terminal(), "{}", report.derivation);
    let view = op.view().unwrap();
    assert!(!view.derivation.is_terminal() && !view.stored.is_terminal(), "{}", view.derivation);
    // The report names every part still holding data: the failed one and
    // the one not attempted after it.
    assert_eq!(report.unrestored, ["orders", "customers"]);
    assert!(view.part("orders").unwrap().unwrap().holds_stash());
    assert_eq!(state_of(&op, "orders"), RollbackFailed);
    assert_eq!(stash_of(&op, "orders").as_deref(), Some("orders before"));

    // A second rollback retries what is left, and only then is it over.
    let mut restored = Vec::new();
    let report = op
        .rollback(&mut |s: Stashed<String>| -> Result<(), std::io::Error> {
            restored.push(s.into_value());
            Ok(())
        })
        .unwrap();
    assert!(restored.contains(&"orders before".to_owned()), "{restored:?}");
    assert_eq!(report.outcome("orders"), Some(&RollbackOutcome::Restored));
    assert!(report.derivation.is_terminal(), "{}", report.derivation);
    assert!(report.unrestored.is_empty());
    assert_eq!(stash_of(&op, "orders"), None);
}

#[test]
fn a_settled_part_that_holds_a_stash_keeps_the_aggregate_non_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let op = Operation::create(&store, "op", ["a", "b"]).unwrap();
    stash_then(&op, "a", &[Cancelled]);
    let u = drive(&op, "b", &[Running, Failed]);
    // `a`'s resource may be half destroyed: the operation is not over.
    assert!(!u.derivation.is_terminal(), "{}", u.derivation);
    assert!(!u.stored.is_terminal(), "{}", u.stored);
    assert_eq!(u.stored, Aggregate::NeedsRollback);
}

#[test]
fn update_cannot_mark_a_part_rolled_back_and_a_rollback_never_drops_an_unrestored_stash() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let op = Operation::create(&store, "op", ["t", "u"]).unwrap();
    stash_and_complete(&op, "t");
    let g = op.view().unwrap().generation;
    let err = op.update("t", Expect::Operation(g), RolledBack);
    assert!(err.is_err(), "a completed part was marked rolled back without a restore");
    assert!(matches!(err, Err(JournalError::RestoreRequired { .. })), "{err:?}");
    assert_eq!(op.view().unwrap().generation, g, "a refused update wrote");
    drive(&op, "u", &[Running, Failed]);
    let mut restored = Vec::new();
    op.rollback(&mut |s: Stashed<String>| -> Result<(), std::io::Error> {
        restored.push(s.into_value());
        Ok(())
    })
    .unwrap();
    assert_eq!(restored, ["t before"], "the stash was not handed to the restorer");
    assert_eq!(state_of(&op, "t"), RolledBack);
}

/// Runs `f` on a thread and fails (instead of hanging) if it does not finish
/// within a minute.
fn within_a_minute<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Ok(value)) => value,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("{what} hung for a minute"),
    }
}

#[test]
fn a_restore_hook_that_calls_back_into_the_operation_does_not_hang() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    within_a_minute("a restore hook calling back into its operation", move || {
        let store = Store::open(&path).unwrap();
        let op = Operation::create(&store, "op", ["a", "b"]).unwrap();
        stash_and_complete(&op, "a");
        drive(&op, "b", &[Running, Failed]);
        let mut seen = Vec::new();
        let report = op
            .rollback(&mut |s: Stashed<String>| -> Result<(), std::io::Error> {
                // Reading works, and shows the part still completed.
                let view = op.view().expect("view from inside a restore hook");
                seen.push(view.part("a").unwrap().unwrap().state);
                assert!(op.load_stash::<String>("a").unwrap().is_some());
                // Changing the operation under its own rollback is refused.
                let g = view.generation;
                let refused = |r: Result<(), JournalError>, call: &str| match r {
                    Err(JournalError::InsideRestoreHook { call: c, .. }) => assert_eq!(c, call),
                    other => panic!("{call} from inside a hook gave {other:?}"),
                };
                refused(op.update("b", Expect::Operation(g), Failed).map(drop), "update");
                refused(op.refresh().map(drop), "refresh");
                let nested = op.rollback(&mut |_: Stashed<String>| Ok::<(), Error>(()));
                refused(nested.map(drop), "rollback");
                refused(op.discard_stash("a", Expect::Operation(g)).map(drop), "discard_stash");
                assert_eq!(s.value(), "a before");
                Ok(())
            })
            .unwrap();
        assert_eq!(seen, [Completed]);
        assert_eq!(report.outcome("a"), Some(&RollbackOutcome::Restored));
        // Outside the hook everything works again.
        assert!(op.view().unwrap().derivation.is_terminal());
    });
}

// ---------------------------------------------------------------------------
// Power cuts during a rollback that restores a failed-retryable part
// ---------------------------------------------------------------------------

const RESOURCE_DIR: &str = "/data";
const RESOURCE: &str = "/data/orders";

/// The restore hook of a real user: recreates the resource durably on the
/// same filesystem (temp file, fsync, rename, fsync of the directory).
fn restore_resource(fs: &SimFs, s: &Stashed<String>) -> std::io::Result<()> {
    use safestash::fs::Fs;
    use std::io::Write;
    let (mut file, tmp) = fs.create_temp(Path::new(RESOURCE_DIR), ".orders.", ".tmp")?;
    file.write_all(s.value().as_bytes())?;
    fs.sync_file(&mut file)?;
    drop(file);
    fs.rename(&tmp, Path::new(RESOURCE))?;
    fs.sync_dir(Path::new(RESOURCE_DIR))
}

/// Every crash image of a rollback cut at every call: the part's data is
/// restored, or the operation is non-terminal with its stash in place.
/// Returns the violations found and the number of images checked.
fn crash_rollback_of_a_failed_retryable_part() -> (Vec<String>, u64) {
    const DIR: &str = "/journal";
    const ORIGINAL: &str = "orders: 3 rows";
    let fs = SimFs::new();
    fs.mkdir_durable(RESOURCE_DIR).unwrap();
    fs.write_durable(RESOURCE, ORIGINAL.as_bytes()).unwrap();
    let store = Store::with_fs(DIR, fs.clone()).unwrap();
    let op = Operation::create(&store, "reload", ["orders", "audit"]).unwrap();
    // `orders` stashes, destroys its resource half way, fails retryably.
    let u = drive(&op, "orders", &[Running]);
    op.stash("orders", Expect::Part(u.part.generation), ORIGINAL).unwrap();
    fs.write_durable(RESOURCE, b"orders: 1 ro").unwrap();
    drive(&op, "orders", &[FailedRetryable]);
    drive(&op, "audit", &[Running, Failed]);
    drop(op);

    let rollback = |fs: &SimFs| {
        let store = Store::with_fs(DIR, fs.clone()).map_err(|e| e.to_string())?;
        let op = Operation::open(&store, "reload").map_err(|e| e.to_string())?;
        op.rollback(&mut |s: Stashed<String>| restore_resource(fs, &s))
            .map(drop)
            .map_err(|e| e.to_string())
    };
    let probe = fs.fork();
    let start = probe.calls();
    rollback(&probe).unwrap();
    let calls = probe.calls() - start;
    assert!(calls > 10, "{calls} calls");

    let mut violations = Vec::new();
    let mut images = 0;
    for cut in 0..=calls {
        let live = fs.fork();
        live.crash_after(live.calls() + cut);
        let _ = rollback(&live);
        live.for_each_crash_image(|image| {
            images += 1;
            let at = format!("cut after {cut}/{calls}, image {images}");
            let restored = image.read(RESOURCE).as_deref() == Some(ORIGINAL.as_bytes());
            let store = Store::with_fs(DIR, image.clone()).unwrap();
            let op = Operation::open(&store, "reload").unwrap();
            let view = op.view().unwrap();
            let stash = op.records().load::<String>(&op.stash_key("orders")).unwrap();
            let terminal = view.derivation.is_terminal() || view.stored.is_terminal();
            if !restored && terminal {
                violations.push(format!(
                    "{at}: terminal (derived {}, stored {}) with orders unrestored",
                    view.derivation, view.stored
                ));
            }
            if !restored && stash.as_ref().map(Stashed::value).map(String::as_str) != Some(ORIGINAL)
            {
                violations.push(format!("{at}: orders unrestored and its stash is gone"));
            }
            // From any image a rollback goes on and finishes the job.
            match op.rollback(&mut |s: Stashed<String>| restore_resource(&image, &s)) {
                Ok(report) if report.derivation.is_terminal() => {}
                other => violations.push(format!("{at}: the next rollback gave {other:?}")),
            }
            if image.read(RESOURCE).as_deref() != Some(ORIGINAL.as_bytes()) {
                violations.push(format!("{at}: orders unrestored after the next rollback"));
            }
            if op.records().load::<String>(&op.stash_key("orders")).unwrap().is_some() {
                violations.push(format!("{at}: stash left after the next rollback"));
            }
        });
    }
    (violations, images)
}

#[test]
fn a_power_cut_during_a_rollback_of_a_failed_retryable_part_never_loses_its_data() {
    let (violations, images) = crash_rollback_of_a_failed_retryable_part();
    println!("{images} crash images checked");
    assert!(images > 20, "{images} images");
    assert!(
        violations.is_empty(),
        "{} violations: {:#?}",
        violations.len(),
        &violations[..violations.len().min(10)]
    );
}

#[test]
fn a_stash_goes_only_when_the_caller_discards_it_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let op = Operation::create(&store, "op", ["t", "u"]).unwrap();
    // Nothing to discard yet.
    let g = op.view().unwrap().generation;
    let err = op.discard_stash("t", Expect::Operation(g)).unwrap_err();
    assert!(matches!(err, JournalError::StashRefused { .. }), "{err}");
    // An operator restored `t` by hand and discards its stash: the rollback
    // then has nothing to restore for it.
    stash_then(&op, "t", &[Failed]);
    let g = op.view().unwrap().generation;
    let u = op.discard_stash("t", Expect::Operation(g)).unwrap();
    assert!(!u.part.holds_stash() && u.part.stash.is_none());
    assert_eq!(u.part.state, Failed);
    assert!(u.part.history.last().unwrap().note.as_deref().unwrap().contains("discarded"));
    assert_eq!(stash_of(&op, "t"), None);
    assert_eq!(u.stored, Aggregate::Failing, "u is still pending");
    drive(&op, "u", &[Cancelled]);
    assert_eq!(op.view().unwrap().stored, Aggregate::Failed);

    // On a completed operation too: its pre-images can go.
    let done = Operation::create(&store, "done", ["a"]).unwrap();
    stash_and_complete(&done, "a");
    let g = done.view().unwrap().generation;
    let u = done.discard_stash("a", Expect::Operation(g)).unwrap();
    assert_eq!(u.stored, Aggregate::Completed);
    assert_eq!(stash_of(&done, "a"), None);
    // A stale expectation discards nothing.
    let again = Operation::create(&store, "again", ["a"]).unwrap();
    stash_and_complete(&again, "a");
    let stale = Expect::Operation(safestash::journal::Generation::new(1));
    let err = again.discard_stash("a", stale).unwrap_err();
    assert!(matches!(err, JournalError::Conflict { .. }), "{err}");
    assert!(stash_of(&again, "a").is_some());
}
