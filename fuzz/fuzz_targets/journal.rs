//! Arbitrary sequences of part updates — each a (part, new state,
//! make-unreadable flag) — with stashes, repairs, refreshes and rollbacks
//! with failing restores, applied to an operation journal on the simulated
//! filesystem and compared step by step with a simple model: which updates
//! are refused and why, every part's state and generations, the stored and
//! the derived aggregate. The aggregate itself is checked against an oracle
//! written as ordered predicates over counts, for order independence, and
//! for failing closed: with an unreadable part it is never terminal and the
//! stored aggregate does not move (unless every possibility agrees).
//!
//! The stash rules of issue 12 are modelled too: a rollback restores every
//! part that holds a stash whatever its state, a failed or cancelled part
//! holding one keeps the aggregate non-terminal, an update never marks a
//! part rolled back, and a stash goes only by the restore that used it or
//! by an explicit discard.
#![no_main]

use PartState::{
    Cancelled, Completed, Failed, FailedRetryable, Pending, RollbackFailed, RolledBack, Running,
};
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use safestash::fs::Fs;
use safestash::sim::SimFs;
use safestash::{
    Stashed, Store,
    journal::{
        Aggregate, Derivation, Expect, JournalError, MAX_HISTORY, Operation, OperationView,
        PartState, PartStatus, RollbackOutcome, aggregate, aggregate_parts,
    },
};
use safestash_testkit::journal_oracle::{oracle, oracle_parts};

const DIR: &str = "/j";
const MAX_PARTS: u8 = 5;
const MAX_STEPS: usize = 48;

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Unread {
    No,
    Garbage,
    Missing,
    /// Another part's file copied over this one's.
    Foreign,
}

#[derive(Debug, Arbitrary)]
enum Step {
    /// Move a part to a state (compare-and-swap on the operation's
    /// generation, or the part's), then maybe make its record unreadable.
    Update { part: u8, state: u8, unreadable: Unread, stale: bool, by_part: bool },
    /// Put a damaged record's bytes back.
    Heal { part: u8 },
    /// Stash a snapshot for part `part % n`; with the high bit of `part`
    /// set, discard its stash instead (kept in one variant so the committed
    /// seeds decode as before).
    Stash { part: u8 },
    /// Roll back; restoring part `i` fails when bit `i` is set.
    Rollback { fail: u8 },
    /// Recompute the stored aggregate.
    Refresh,
}

#[derive(Debug, Arbitrary)]
struct Input {
    parts: u8,
    steps: Vec<Step>,
}

// The oracle (`oracle_parts`, `oracle`) is the test kit's, shared with
// tests/journal.rs.

/// Which changes an update accepts, stated from the other side (an update
/// to `rolled_back` is refused before this: only a rollback records it).
fn allowed(from: PartState, to: PartState) -> bool {
    match from {
        Pending | Running | FailedRetryable => !matches!(to, RolledBack | RollbackFailed),
        Completed | RollbackFailed => to == RollbackFailed,
        _ => false,
    }
}

#[derive(Debug, Clone)]
struct MPart {
    name: String,
    state: PartState,
    generation: u64,
    updates: u64,
    completed_at: Option<u64>,
    /// The record names a stash digest.
    stash: bool,
    /// The stash file is still there.
    stash_live: bool,
    readable: bool,
    /// The record's bytes from before it was damaged.
    saved: Option<Vec<u8>>,
}

struct Model {
    parts: Vec<MPart>,
    generation: u64,
    stored: Aggregate,
}

impl MPart {
    /// Holds a stash no rollback has restored.
    fn held(&self) -> bool {
        self.stash && self.state != RolledBack
    }
}

impl Model {
    fn states(&self) -> Vec<PartState> {
        self.parts.iter().map(|p| p.state).collect()
    }

    fn statuses(&self) -> Vec<(PartState, bool)> {
        self.parts.iter().map(|p| (p.state, p.held())).collect()
    }

    /// The aggregate of every part, read or not.
    fn truth(&self) -> Aggregate {
        oracle_parts(&self.statuses())
    }

    fn all_readable(&self) -> bool {
        self.parts.iter().all(|p| p.readable)
    }

    /// The aggregate the parts determine, if they do.
    fn determined(&self) -> Option<Aggregate> {
        if self.all_readable() {
            Some(self.truth())
        } else if self.parts.iter().any(|p| p.readable && p.state == RollbackFailed) {
            Some(Aggregate::RollbackFailed)
        } else {
            None
        }
    }

    /// The operation finished: derived terminal, or stored terminal earlier.
    fn terminal(&self) -> bool {
        (self.all_readable() && self.truth().is_terminal()) || self.stored.is_terminal()
    }

    /// A change of part `i` to `to` was written.
    fn wrote(&mut self, i: usize, to: PartState) {
        self.generation += 1;
        let p = &mut self.parts[i];
        if to == Completed && p.state != Completed {
            p.completed_at = Some(self.generation);
        }
        p.state = to;
        p.generation += 1;
        p.updates += 1;
        if let Some(a) = self.determined() {
            self.stored = a;
        }
    }
}

fn kind<T>(r: &Result<T, JournalError>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(JournalError::Conflict { .. }) => "conflict",
        Err(JournalError::PartUnreadable { .. }) => "part unreadable",
        Err(JournalError::Finished { .. }) => "finished",
        Err(JournalError::Transition { .. }) => "transition",
        Err(JournalError::StashRefused { .. }) => "stash refused",
        Err(JournalError::Undetermined { .. }) => "undetermined",
        Err(JournalError::Active { .. }) => "active",
        Err(JournalError::RollbackIncomplete { .. }) => "rollback incomplete",
        Err(JournalError::RestoreRequired { .. }) => "restore required",
        Err(JournalError::InsideRestoreHook { .. }) => "inside restore hook",
        Err(e) => panic!("unexpected error: {e}"),
    }
}

fn check_view(model: &Model, view: &OperationView, op: &Operation<SimFs>) {
    assert_eq!(view.generation.get(), model.generation, "generation");
    assert_eq!(view.stored, model.stored, "stored aggregate");
    let truth = model.truth();
    // The pure functions: the oracle, in any order.
    let statuses = || model.statuses().into_iter().map(|(s, h)| PartStatus::new(s, h));
    assert_eq!(aggregate_parts(statuses()), truth);
    assert_eq!(aggregate_parts(statuses().rev()), truth);
    let mut rotated: Vec<PartStatus> = statuses().collect();
    rotated.rotate_left(1);
    assert_eq!(aggregate_parts(rotated), truth);
    assert_eq!(aggregate(model.states()), oracle(&model.states()));
    // Never over while a settled part's stash is unrestored.
    if model.parts.iter().any(|p| p.held() && matches!(p.state, Failed | Cancelled)) {
        assert!(!truth.is_terminal(), "terminal ({truth}) with an unrestored stash");
    }
    match &view.derivation {
        Derivation::Known(a) => {
            assert!(model.all_readable(), "known with an unreadable part");
            assert_eq!(*a, truth);
        }
        Derivation::Undetermined { unreadable, possible } => {
            assert!(!model.all_readable(), "undetermined with every part readable");
            let names: Vec<&str> = unreadable.iter().map(|u| u.part.as_str()).collect();
            let want: Vec<&str> =
                model.parts.iter().filter(|p| !p.readable).map(|p| p.name.as_str()).collect();
            assert_eq!(names, want);
            assert!(possible.contains(&truth), "{possible:?} misses the real {truth}");
            assert!(!view.derivation.is_terminal());
            assert_eq!(view.derivation.aggregate(), model.determined());
        }
        other => panic!("unknown derivation {other:?}"),
    }
    for (m, p) in model.parts.iter().zip(&view.parts) {
        match p {
            Ok(p) => {
                assert!(m.readable, "{}: read although damaged", m.name);
                assert_eq!(p.name, m.name);
                assert_eq!(p.state, m.state, "{}", m.name);
                assert_eq!(p.generation.get(), m.generation, "{}", m.name);
                assert_eq!(p.updates, m.updates, "{}", m.name);
                assert_eq!(p.completed_at.map(|g| g.get()), m.completed_at, "{}", m.name);
                assert_eq!(p.stash.is_some(), m.stash, "{}", m.name);
                assert_eq!(p.holds_stash(), m.held(), "{}", m.name);
                assert_eq!(p.history.len() as u64, m.updates.min(MAX_HISTORY as u64));
                assert!(p.op_generation.get() <= model.generation);
                let live =
                    op.records().load::<String>(&op.stash_key(&m.name)).expect("stash loads");
                assert_eq!(live.is_some(), m.stash_live, "{}: stash file", m.name);
            }
            Err(u) => {
                assert!(!m.readable, "{}: unreadable although intact: {u}", m.name);
                assert_eq!(u.part, m.name);
            }
        }
    }
}

fuzz_target!(|input: Input| {
    let n = usize::from(input.parts % MAX_PARTS) + 1;
    let fs = SimFs::new();
    let store = Store::with_fs(DIR, fs.clone()).expect("store");
    let names: Vec<String> = (0..n).map(|i| format!("p{i}")).collect();
    let op = Operation::create(&store, "fuzz", &names).expect("create");
    let mut model = Model {
        parts: names
            .iter()
            .map(|name| MPart {
                name: name.clone(),
                state: Pending,
                generation: 1,
                updates: 0,
                completed_at: None,
                stash: false,
                stash_live: false,
                readable: true,
                saved: None,
            })
            .collect(),
        generation: 1,
        stored: Aggregate::Pending,
    };
    let path_of = |i: usize| op.records().path_of(&op.part_key(&names[i]));

    for step in input.steps.iter().take(MAX_STEPS) {
        match *step {
            Step::Update { part, state, unreadable, stale, by_part } => {
                let i = usize::from(part) % n;
                let to = PartState::ALL[usize::from(state) % PartState::ALL.len()];
                let m = &model.parts[i];
                let expect = match (by_part, stale) {
                    (false, false) => {
                        Expect::Operation(safestash::journal::Generation::new(model.generation))
                    }
                    (false, true) => {
                        Expect::Operation(safestash::journal::Generation::new(model.generation - 1))
                    }
                    (true, false) => {
                        Expect::Part(safestash::journal::Generation::new(m.generation))
                    }
                    (true, true) => {
                        Expect::Part(safestash::journal::Generation::new(m.generation - 1))
                    }
                };
                let want = if stale && !by_part {
                    "conflict"
                } else if !m.readable {
                    "part unreadable"
                } else if stale {
                    "conflict"
                } else if model.terminal() {
                    "finished"
                } else if to == RolledBack {
                    "restore required"
                } else if !allowed(m.state, to) {
                    "transition"
                } else {
                    "ok"
                };
                let got = op.update(&names[i], expect, to);
                assert_eq!(
                    kind(&got),
                    want,
                    "update {} to {to}: {:?}",
                    names[i],
                    got.as_ref().err()
                );
                if let Ok(u) = got {
                    model.wrote(i, to);
                    assert_eq!(u.generation.get(), model.generation);
                    assert_eq!(u.part.state, to);
                    assert_eq!(u.stored, model.stored);
                    assert!(!u.derivation.is_terminal() || model.all_readable());
                }
                let how = unreadable;
                if !matches!(how, Unread::No) {
                    let path = path_of(i);
                    let m = &mut model.parts[i];
                    if m.readable {
                        m.saved = Some(fs.read(&path).expect("an intact record exists"));
                    }
                    match how {
                        Unread::Garbage => {
                            fs.write_durable(&path, b"SAFESTASH 1\nnot a record").unwrap()
                        }
                        Unread::Missing => {
                            let _ = fs.remove_file(&path);
                        }
                        Unread::Foreign | Unread::No => {
                            // An intact sibling's record (a damaged one may be a
                            // copy of this very part's).
                            let j = (i + 1) % n;
                            let intact = j != i && model.parts[j].readable;
                            let bytes = if intact { fs.read(path_of(j)) } else { None };
                            fs.write_durable(&path, &bytes.unwrap_or_else(|| b"garbage".to_vec()))
                                .unwrap();
                        }
                    }
                    model.parts[i].readable = false;
                }
            }
            Step::Heal { part } => {
                let i = usize::from(part) % n;
                let m = &mut model.parts[i];
                if !m.readable {
                    fs.write_durable(path_of(i), m.saved.as_ref().expect("saved before damage"))
                        .unwrap();
                    m.readable = true;
                }
            }
            Step::Stash { part } if part & 0x80 != 0 => {
                let i = usize::from(part & 0x7f) % n;
                let m = &model.parts[i];
                let want = if !m.readable {
                    "part unreadable"
                } else if !m.held() {
                    "stash refused"
                } else {
                    "ok"
                };
                let expect = Expect::Part(safestash::journal::Generation::new(m.generation));
                let got = op.discard_stash(&names[i], expect);
                assert_eq!(kind(&got), want, "discard {}: {:?}", names[i], got.as_ref().err());
                if got.is_ok() {
                    let state = model.parts[i].state;
                    model.parts[i].stash = false;
                    model.parts[i].stash_live = false;
                    model.wrote(i, state);
                }
            }
            Step::Stash { part } => {
                let i = usize::from(part) % n;
                let m = &model.parts[i];
                let want = if !m.readable {
                    "part unreadable"
                } else if model.terminal() {
                    "finished"
                } else if m.state != Running || m.stash {
                    "stash refused"
                } else {
                    "ok"
                };
                let expect = Expect::Part(safestash::journal::Generation::new(m.generation));
                let got = op.stash(&names[i], expect, &format!("snapshot of {}", names[i]));
                assert_eq!(kind(&got), want, "stash {}: {:?}", names[i], got.as_ref().err());
                if got.is_ok() {
                    model.parts[i].stash = true;
                    model.parts[i].stash_live = true;
                    model.wrote(i, Running);
                }
            }
            Step::Rollback { fail } => {
                let running: Vec<String> = model
                    .parts
                    .iter()
                    .filter(|p| p.state == Running)
                    .map(|p| p.name.clone())
                    .collect();
                let precheck = if !model.all_readable() {
                    Some("undetermined")
                } else if model.truth() == Aggregate::Completed {
                    Some("finished")
                } else if !running.is_empty() {
                    Some("active")
                } else {
                    None
                };
                let mut calls: Vec<String> = Vec::new();
                let got = op.rollback(&mut |s: Stashed<String>| -> Result<(), String> {
                    // Calling back: reads work, changes are refused, nothing hangs.
                    op.view().expect("view from inside a restore hook");
                    assert_eq!(kind(&op.refresh()), "inside restore hook");
                    let name = s.meta().header.origin().expect("origin is the part").to_owned();
                    assert_eq!(s.value(), &format!("snapshot of {name}"));
                    calls.push(name.clone());
                    let i: usize = name[1..].parse().unwrap();
                    if fail & (1 << i) != 0 {
                        Err(format!("injected failure restoring {name}"))
                    } else {
                        Ok(())
                    }
                });
                if let Some(want) = precheck {
                    assert_eq!(kind(&got), want, "rollback: {:?}", got.as_ref().err());
                    if let Err(JournalError::Active { parts, .. }) = &got {
                        assert_eq!(parts, &running);
                    }
                    assert!(calls.is_empty());
                } else {
                    // The model's rollback.
                    let mut outcomes: Vec<(String, RollbackOutcome)> = Vec::new();
                    for i in 0..n {
                        match model.parts[i].state {
                            Pending => {
                                model.wrote(i, Cancelled);
                                outcomes.push((names[i].clone(), RollbackOutcome::Cancelled));
                            }
                            FailedRetryable => {
                                model.wrote(i, Failed);
                                outcomes.push((names[i].clone(), RollbackOutcome::Abandoned));
                            }
                            _ => {}
                        }
                    }
                    // Only a rollback's restore makes a part with a stash
                    // rolled back, and it cleared the stash then.
                    for p in model.parts.iter().filter(|p| p.state == RolledBack && p.stash) {
                        assert!(!p.stash_live, "{}: restored, stash file left", p.name);
                    }
                    // Every part holding a stash, whatever its state, and
                    // every completed one: never-completed first, then latest
                    // completed first.
                    let mut targets: Vec<usize> = (0..n)
                        .filter(|&i| {
                            let p = &model.parts[i];
                            p.held() || matches!(p.state, Completed | RollbackFailed)
                        })
                        .collect();
                    targets.sort_by_key(|&i| {
                        std::cmp::Reverse((model.parts[i].completed_at.unwrap_or(u64::MAX), i))
                    });
                    let mut stopped = None;
                    let mut want_calls = Vec::new();
                    for i in targets {
                        let name = names[i].clone();
                        if stopped.is_some() {
                            outcomes.push((name, RollbackOutcome::NotAttempted));
                        } else if !model.parts[i].held() {
                            model.wrote(i, RolledBack);
                            outcomes.push((name, RollbackOutcome::NothingToRestore));
                        } else {
                            want_calls.push(name.clone());
                            if fail & (1 << i) != 0 {
                                model.wrote(i, RollbackFailed);
                                stopped = Some(name.clone());
                                outcomes.push((
                                    name,
                                    RollbackOutcome::RestoreFailed { error: String::new() },
                                ));
                            } else {
                                model.wrote(i, RolledBack);
                                model.parts[i].stash_live = false;
                                outcomes.push((name, RollbackOutcome::Restored));
                            }
                        }
                    }
                    assert_eq!(calls, want_calls, "restore order");
                    let report = match (&got, &stopped) {
                        (Ok(report), None) => report,
                        (Err(JournalError::RollbackIncomplete { part, report, .. }), Some(s)) => {
                            assert_eq!(part, s);
                            report.as_ref()
                        }
                        (got, _) => panic!(
                            "rollback: want stop at {stopped:?}, got {:?}",
                            got.as_ref().err()
                        ),
                    };
                    let got_outcomes: Vec<(String, RollbackOutcome)> = report
                        .outcomes
                        .iter()
                        .map(|o| match &o.outcome {
                            RollbackOutcome::RestoreFailed { error } => {
                                assert!(error.contains("injected failure"), "{error}");
                                (
                                    o.part.clone(),
                                    RollbackOutcome::RestoreFailed { error: String::new() },
                                )
                            }
                            other => (o.part.clone(), other.clone()),
                        })
                        .collect();
                    assert_eq!(got_outcomes, outcomes);
                    assert_eq!(report.generation.get(), model.generation);
                    assert_eq!(report.derivation, Derivation::Known(model.truth()));
                    let unrestored: Vec<&str> =
                        model.parts.iter().filter(|p| p.held()).map(|p| p.name.as_str()).collect();
                    assert_eq!(report.unrestored, unrestored, "unrestored parts");
                    if !unrestored.is_empty() {
                        assert!(!report.derivation.is_terminal(), "over with unrestored stashes");
                    }
                }
            }
            Step::Refresh => {
                let view = op.refresh().expect("refresh");
                if let Some(a) = model.determined() {
                    if a != model.stored {
                        model.generation += 1;
                        model.stored = a;
                    }
                }
                check_view(&model, &view, &op);
            }
        }
        let view = op.view().expect("view");
        check_view(&model, &view, &op);
    }
});
