//! The journal's oracle: the aggregate of an operation's parts, and what
//! "terminal" must mean, each written a second way, independently of
//! `safestash::journal`'s fold, for `tests/journal.rs` and the `journal`
//! fuzz target to check the fold against.

use safestash::journal::Aggregate;
use safestash::journal::PartState::{self, *};

/// The aggregate of parts given as (state, holds an unrestored stash).
///
/// # Examples
///
/// ```
/// use safestash::journal::{Aggregate, PartState::*};
/// use safestash_testkit::journal_oracle::oracle_parts;
///
/// assert_eq!(oracle_parts(&[(Completed, false), (Running, false)]), Aggregate::Running);
/// assert_eq!(oracle_parts(&[(Failed, true)]), Aggregate::NeedsRollback);
/// ```
pub fn oracle_parts(parts: &[(PartState, bool)]) -> Aggregate {
    let n = |s: PartState| parts.iter().filter(|&&(x, _)| x == s).count();
    let total = parts.len();
    let active = n(Pending) + n(Running) + n(FailedRetryable);
    // A settled part whose resource may be half destroyed.
    let held = parts.iter().any(|&(s, h)| h && matches!(s, Failed | Cancelled | RolledBack));
    let rules = [
        (total == 0, Aggregate::Pending),
        (n(RollbackFailed) > 0, Aggregate::RollbackFailed),
        (n(Failed) > 0 && active > 0, Aggregate::Failing),
        (n(Failed) > 0 && (n(Completed) > 0 || held), Aggregate::NeedsRollback),
        (n(Failed) > 0, Aggregate::Failed),
        (n(FailedRetryable) > 0, Aggregate::FailedRetryable),
        (n(Running) > 0, Aggregate::Running),
        (n(Pending) == total, Aggregate::Pending),
        (n(Pending) > 0, Aggregate::Running),
        (n(Completed) == total, Aggregate::Completed),
        (n(Completed) > 0, Aggregate::NeedsRollback),
        (held, Aggregate::NeedsRollback),
        (n(Cancelled) > 0, Aggregate::Cancelled),
        (n(RolledBack) == total, Aggregate::RolledBack),
    ];
    rules.iter().find(|(hit, _)| *hit).map(|&(_, a)| a).expect("the table covers every multiset")
}

/// The aggregate of parts none of which holds a stash.
///
/// # Examples
///
/// ```
/// use safestash::journal::{Aggregate, PartState::*};
/// assert_eq!(safestash_testkit::journal_oracle::oracle(&[Completed]), Aggregate::Completed);
/// ```
pub fn oracle(states: &[PartState]) -> Aggregate {
    oracle_parts(&states.iter().map(|&s| (s, false)).collect::<Vec<_>>())
}

/// What "terminal" must mean, stated a third way: nothing left to happen,
/// nothing half applied, no stash of an undone part left unrestored.
///
/// # Examples
///
/// ```
/// use safestash::journal::PartState::*;
/// use safestash_testkit::journal_oracle::must_be_terminal_parts;
/// assert!(must_be_terminal_parts(&[(Completed, false)]));
/// assert!(!must_be_terminal_parts(&[(Failed, true)]));
/// ```
pub fn must_be_terminal_parts(parts: &[(PartState, bool)]) -> bool {
    let all = |allowed: &[PartState]| parts.iter().all(|(s, _)| allowed.contains(s));
    let none_held = parts.iter().all(|&(_, held)| !held);
    !parts.is_empty() && (all(&[Completed]) || (all(&[Failed, Cancelled, RolledBack]) && none_held))
}

/// [`must_be_terminal_parts`] of parts none of which holds a stash.
///
/// # Examples
///
/// ```
/// use safestash::journal::PartState::*;
/// assert!(!safestash_testkit::journal_oracle::must_be_terminal(&[Running]));
/// ```
pub fn must_be_terminal(states: &[PartState]) -> bool {
    must_be_terminal_parts(&states.iter().map(|&s| (s, false)).collect::<Vec<_>>())
}
