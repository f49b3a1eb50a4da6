//! The pure state fold: part states, the aggregate they add up to, and
//! its derivation when some parts cannot be read. No I/O: everything here
//! is a function of the states (and of which settled parts still hold a
//! stash), so it can be reviewed and tested alone.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

#[cfg(doc)]
use super::Operation;

/// The state of one part of an [`Operation`].
///
/// | state | meaning | terminal |
/// |---|---|---|
/// | `pending` | not started | no |
/// | `running` | a worker is on it | no |
/// | `failed_retryable` | failed; a retry may run it again | no |
/// | `completed` | done; may still be rolled back | yes |
/// | `failed` | failed for good | yes (final, unless it holds a stash) |
/// | `cancelled` | stopped before it finished, or never started | yes (final, unless it holds a stash) |
/// | `rolled_back` | a rollback restored its stash (or found none to restore) | yes (final) |
/// | `rollback_failed` | restoring its stash failed; the stash is kept | no |
///
/// A *terminal* part's work is over. The *final* ones never change again.
/// Workers move parts with [`Operation::update`](super::Operation::update)
/// ([`PartState::can_become`]): the active states (`pending`, `running`,
/// `failed_retryable`) may become any active state or `completed`,
/// `failed`, `cancelled`; `completed` may become `rollback_failed`.
///
/// `rolled_back` is recorded only by
/// [`Operation::rollback`](super::Operation::rollback), after it restored the
/// part's stash (or found none): never by an update. A part that holds a
/// stash no rollback has restored (see [`PartInfo::holds_stash`](super::PartInfo::holds_stash)) is
/// a half-destroyed resource whatever its state, so a rollback restores it
/// from any state but `running` — `completed`, `failed_retryable`, `failed`,
/// `cancelled`, `pending` or `rollback_failed` — to `rolled_back`, or to
/// `rollback_failed` if the restore fails. Such a `failed` or `cancelled`
/// part keeps the operation's aggregate non-terminal ([`PartStatus`]).
///
/// # Examples
///
/// ```
/// use safestash::journal::PartState;
///
/// assert!(PartState::Completed.is_terminal());
/// assert!(!PartState::FailedRetryable.is_terminal());
/// assert!(PartState::Running.can_become(PartState::Completed));
/// assert!(!PartState::Failed.can_become(PartState::Running)); // final
/// assert!(!PartState::Completed.can_become(PartState::RolledBack)); // only a rollback
/// assert_eq!("rolled_back".parse::<PartState>()?, PartState::RolledBack);
/// # Ok::<(), safestash::journal::JournalError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PartState {
    /// Not started.
    Pending,
    /// A worker is on it.
    Running,
    /// Done. Terminal, but a rollback may still undo it.
    Completed,
    /// Failed for good. Final.
    Failed,
    /// Failed; a retry may run it again. Not terminal.
    FailedRetryable,
    /// Stopped before it finished, or never started. Final.
    Cancelled,
    /// Was completed; its stash was restored. Final.
    RolledBack,
    /// Restoring its stash failed; the stash is kept for a retry or an
    /// operator. Not terminal.
    RollbackFailed,
}

impl PartState {
    /// Every state, in declaration order.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(safestash::journal::PartState::ALL.len(), 8);
    /// ```
    pub const ALL: [PartState; 8] = [
        PartState::Pending,
        PartState::Running,
        PartState::Completed,
        PartState::Failed,
        PartState::FailedRetryable,
        PartState::Cancelled,
        PartState::RolledBack,
        PartState::RollbackFailed,
    ];

    /// The state's name, as stored: `pending`, `running`, `completed`,
    /// `failed`, `failed_retryable`, `cancelled`, `rolled_back`,
    /// `rollback_failed`.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(safestash::journal::PartState::FailedRetryable.as_str(), "failed_retryable");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            PartState::Pending => "pending",
            PartState::Running => "running",
            PartState::Completed => "completed",
            PartState::Failed => "failed",
            PartState::FailedRetryable => "failed_retryable",
            PartState::Cancelled => "cancelled",
            PartState::RolledBack => "rolled_back",
            PartState::RollbackFailed => "rollback_failed",
        }
    }

    /// Whether the part's work is over: `completed`, `failed`, `cancelled`
    /// or `rolled_back`.
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::journal::PartState;
    /// let terminal: Vec<PartState> = PartState::ALL.into_iter().filter(|s| s.is_terminal()).collect();
    /// assert_eq!(terminal, [PartState::Completed, PartState::Failed, PartState::Cancelled, PartState::RolledBack]);
    /// ```
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            PartState::Completed | PartState::Failed | PartState::Cancelled | PartState::RolledBack
        )
    }

    /// Whether a worker may still move the part: `pending`, `running` or
    /// `failed_retryable`.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(safestash::journal::PartState::FailedRetryable.is_active());
    /// assert!(!safestash::journal::PartState::RollbackFailed.is_active());
    /// ```
    pub fn is_active(self) -> bool {
        matches!(self, PartState::Pending | PartState::Running | PartState::FailedRetryable)
    }

    /// Whether an update ([`Operation::update`](super::Operation::update))
    /// may move a part in this state to `to`:
    ///
    /// - an active state may become any active state, `completed`, `failed`
    ///   or `cancelled` (staying in the same active state records progress);
    /// - `completed` may become `rollback_failed`;
    /// - `rollback_failed` may stay `rollback_failed`;
    /// - `failed`, `cancelled` and `rolled_back` are final;
    /// - nothing becomes `rolled_back` by an update: only
    ///   [`Operation::rollback`](super::Operation::rollback) records it,
    ///   after restoring the part's stash.
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::journal::PartState::*;
    /// assert!(FailedRetryable.can_become(Running));
    /// assert!(Completed.can_become(RollbackFailed));
    /// assert!(!Completed.can_become(RolledBack));
    /// assert!(!Completed.can_become(Running));
    /// assert!(!RolledBack.can_become(Completed));
    /// ```
    pub fn can_become(self, to: PartState) -> bool {
        use PartState::*;
        match self {
            Pending | Running | FailedRetryable => {
                to.is_active() || matches!(to, Completed | Failed | Cancelled)
            }
            Completed | RollbackFailed => to == RollbackFailed,
            Failed | Cancelled | RolledBack => false,
        }
    }

    /// Whether the part's work is over but a stash it holds would still
    /// need restoring: `failed`, `cancelled`, `rolled_back`.
    fn is_settled(self) -> bool {
        matches!(self, PartState::Failed | PartState::Cancelled | PartState::RolledBack)
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for PartState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of a whole [`Operation`], derived from all of its parts by
/// [`aggregate`] (see the precedence table there).
///
/// Every [`PartState`] has an aggregate of the same name (the aggregate of
/// that part alone); two more describe mixes of parts.
///
/// # Examples
///
/// ```
/// use safestash::journal::{Aggregate, PartState};
///
/// assert_eq!(Aggregate::from(PartState::Cancelled), Aggregate::Cancelled);
/// assert!(Aggregate::Completed.is_terminal());
/// assert!(!Aggregate::NeedsRollback.is_terminal());
/// assert_eq!(Aggregate::Failing.to_string(), "failing");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Aggregate {
    /// Nothing started (or no parts).
    Pending,
    /// In progress: a part runs, or some parts settled and others have not
    /// started.
    Running,
    /// Every part completed. Terminal.
    Completed,
    /// A part failed and every other part is failed, cancelled or rolled
    /// back: nothing is active, nothing is half applied, and no part holds
    /// an unrestored stash. Terminal.
    Failed,
    /// A part failed and may be retried.
    FailedRetryable,
    /// Parts were cancelled and the rest rolled back, and no part holds an
    /// unrestored stash. Terminal.
    Cancelled,
    /// Every part was rolled back. Terminal.
    RolledBack,
    /// A part's restore failed; its stash is kept. Needs a retried rollback
    /// or an operator.
    RollbackFailed,
    /// A part failed for good while others are still active.
    Failing,
    /// Nothing is active, the operation cannot complete, and completed parts
    /// remain, or a failed or cancelled part holds a stash no rollback has
    /// restored: roll back ([`Operation::rollback`]).
    NeedsRollback,
}

impl Aggregate {
    /// Every aggregate, in declaration order.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(safestash::journal::Aggregate::ALL.len(), 10);
    /// ```
    pub const ALL: [Aggregate; 10] = [
        Aggregate::Pending,
        Aggregate::Running,
        Aggregate::Completed,
        Aggregate::Failed,
        Aggregate::FailedRetryable,
        Aggregate::Cancelled,
        Aggregate::RolledBack,
        Aggregate::RollbackFailed,
        Aggregate::Failing,
        Aggregate::NeedsRollback,
    ];

    /// The aggregate's name, as stored (snake case).
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(safestash::journal::Aggregate::NeedsRollback.as_str(), "needs_rollback");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Aggregate::Pending => "pending",
            Aggregate::Running => "running",
            Aggregate::Completed => "completed",
            Aggregate::Failed => "failed",
            Aggregate::FailedRetryable => "failed_retryable",
            Aggregate::Cancelled => "cancelled",
            Aggregate::RolledBack => "rolled_back",
            Aggregate::RollbackFailed => "rollback_failed",
            Aggregate::Failing => "failing",
            Aggregate::NeedsRollback => "needs_rollback",
        }
    }

    /// Whether the operation is over and will never change again:
    /// `completed`, `failed`, `cancelled` or `rolled_back`.
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::journal::Aggregate;
    /// let terminal: Vec<Aggregate> = Aggregate::ALL.into_iter().filter(|a| a.is_terminal()).collect();
    /// assert_eq!(terminal, [Aggregate::Completed, Aggregate::Failed, Aggregate::Cancelled, Aggregate::RolledBack]);
    /// ```
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Aggregate::Completed | Aggregate::Failed | Aggregate::Cancelled | Aggregate::RolledBack
        )
    }
}

impl From<PartState> for Aggregate {
    fn from(state: PartState) -> Aggregate {
        match state {
            PartState::Pending => Aggregate::Pending,
            PartState::Running => Aggregate::Running,
            PartState::Completed => Aggregate::Completed,
            PartState::Failed => Aggregate::Failed,
            PartState::FailedRetryable => Aggregate::FailedRetryable,
            PartState::Cancelled => Aggregate::Cancelled,
            PartState::RolledBack => Aggregate::RolledBack,
            PartState::RollbackFailed => Aggregate::RollbackFailed,
        }
    }
}

impl fmt::Display for Aggregate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One part as the aggregate sees it: its state, and whether it holds a
/// stash that no rollback has restored (a snapshot taken before its
/// resource was destroyed; see [`PartInfo::holds_stash`](super::PartInfo::holds_stash)).
///
/// A settled part (`failed`, `cancelled`) that holds a stash is not over:
/// its resource may be half destroyed, so the operation needs a rollback
/// ([`aggregate_parts`]). A bare [`PartState`] converts into a status that
/// holds no stash.
///
/// # Examples
///
/// ```
/// use safestash::journal::{Aggregate, aggregate_parts, PartStatus, PartState::*};
///
/// let half_destroyed = PartStatus::new(Failed, true);
/// assert!(!half_destroyed.is_over());
/// assert_eq!(aggregate_parts([half_destroyed, Cancelled.into()]), Aggregate::NeedsRollback);
/// assert_eq!(aggregate_parts([Failed.into(), Cancelled.into()]), Aggregate::Failed);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct PartStatus {
    /// The part's state.
    pub state: PartState,
    /// Whether it holds a stash no rollback has restored.
    pub holds_stash: bool,
}

impl PartStatus {
    /// A part in `state`, holding an unrestored stash or not.
    ///
    /// # Examples
    ///
    /// See [`PartStatus`].
    pub const fn new(state: PartState, holds_stash: bool) -> PartStatus {
        PartStatus { state, holds_stash }
    }

    /// Whether the part's work is over and nothing of it is left to undo:
    /// its state is terminal, and it holds no stash unless it `completed`
    /// (a completed part's stash is the pre-image of a change that stands).
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::journal::{PartStatus, PartState::*};
    /// assert!(PartStatus::new(Completed, true).is_over());
    /// assert!(PartStatus::new(Cancelled, false).is_over());
    /// assert!(!PartStatus::new(Cancelled, true).is_over());
    /// ```
    pub fn is_over(self) -> bool {
        self.state.is_terminal() && !(self.holds_stash && self.state.is_settled())
    }
}

impl From<PartState> for PartStatus {
    fn from(state: PartState) -> PartStatus {
        PartStatus::new(state, false)
    }
}

/// The set of states present among some parts, and whether a settled part
/// holds a stash: all the aggregate depends on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct StateSet(u16);

/// The bit (above the states' bits) set when a `failed`, `cancelled` or
/// `rolled_back` part holds an unrestored stash.
const HELD: u16 = 1 << PartState::ALL.len();

impl StateSet {
    fn of(states: &[PartState]) -> StateSet {
        states.iter().copied().collect()
    }

    fn has(self, state: PartState) -> bool {
        self.0 & state.bit() != 0
    }

    /// A settled part holds a stash.
    fn held(self) -> bool {
        self.0 & HELD != 0
    }

    fn intersects(self, other: StateSet) -> bool {
        self.0 & other.0 != 0
    }

    fn is_only(self, state: PartState) -> bool {
        self.0 == state.bit()
    }
}

impl FromIterator<PartState> for StateSet {
    fn from_iter<I: IntoIterator<Item = PartState>>(iter: I) -> StateSet {
        iter.into_iter().map(PartStatus::from).collect()
    }
}

impl FromIterator<PartStatus> for StateSet {
    fn from_iter<I: IntoIterator<Item = PartStatus>>(iter: I) -> StateSet {
        StateSet(iter.into_iter().fold(0, |bits, p| {
            let held = if p.holds_stash && p.state.is_settled() { HELD } else { 0 };
            bits | p.state.bit() | held
        }))
    }
}

/// The aggregate state of parts in `states`, none of which holds a stash
/// (the journal itself derives with [`aggregate_parts`]). Pure: it depends
/// only on which states are present, never on their order or on which part
/// holds them.
///
/// The first row that matches wins (rows 4 and 12 only matter for
/// [`aggregate_parts`]: "held" is a `failed`, `cancelled` or `rolled_back`
/// part that holds an unrestored stash):
///
/// | # | the parts hold | aggregate | terminal |
/// |---|---|---|---|
/// | 1 | no parts at all | `pending` | no |
/// | 2 | any `rollback_failed` | `rollback_failed` | no |
/// | 3 | any `failed`, and any active part | `failing` | no |
/// | 4 | any `failed`, and any `completed` or held part | `needs_rollback` | no |
/// | 5 | any `failed` (the rest `cancelled` or `rolled_back`) | `failed` | yes |
/// | 6 | any `failed_retryable` | `failed_retryable` | no |
/// | 7 | any `running` | `running` | no |
/// | 8 | only `pending` | `pending` | no |
/// | 9 | any `pending` (with `completed`, `cancelled`, `rolled_back`) | `running` | no |
/// | 10 | only `completed` | `completed` | yes |
/// | 11 | any `completed` (with `cancelled`, `rolled_back`) | `needs_rollback` | no |
/// | 12 | any held part (the rest `cancelled` or `rolled_back`) | `needs_rollback` | no |
/// | 13 | any `cancelled` (the rest `rolled_back`) | `cancelled` | yes |
/// | 14 | only `rolled_back` | `rolled_back` | yes |
///
/// So the aggregate is terminal only when no part is active, no rollback
/// failed, and nothing is half applied: either every part completed, or no
/// part is left completed and no settled part holds an unrestored stash. A
/// terminal aggregate never changes again: every part is final, or (for
/// `completed`) the operation refuses further updates and rollbacks. A
/// single part's aggregate is its own state (a held one's is
/// `needs_rollback`).
///
/// # Examples
///
/// ```
/// use safestash::journal::{Aggregate, aggregate, PartState::*};
///
/// assert_eq!(aggregate([Completed, Completed]), Aggregate::Completed);
/// assert_eq!(aggregate([Completed, Pending]), Aggregate::Running); // never "completed"
/// assert_eq!(aggregate([RolledBack, Running]), Aggregate::Running); // never "rolled back"
/// assert_eq!(aggregate([Failed, Running]), Aggregate::Failing);    // a sibling still runs
/// assert_eq!(aggregate([Failed, Completed]), Aggregate::NeedsRollback);
/// assert_eq!(aggregate([Failed, RolledBack]), Aggregate::Failed);
/// assert_eq!(aggregate([]), Aggregate::Pending);
/// ```
pub fn aggregate(states: impl IntoIterator<Item = PartState>) -> Aggregate {
    aggregate_of(states.into_iter().collect())
}

/// The aggregate of parts given with whether each holds an unrestored
/// stash: [`aggregate`]'s table, rows 4 and 12 included. This is what an
/// [`Operation`](super::Operation) derives.
///
/// # Examples
///
/// See [`PartStatus`].
pub fn aggregate_parts(parts: impl IntoIterator<Item = PartStatus>) -> Aggregate {
    aggregate_of(parts.into_iter().collect())
}

fn aggregate_of(set: StateSet) -> Aggregate {
    use PartState as P;
    let active = StateSet::of(&[P::Pending, P::Running, P::FailedRetryable]);
    if set == StateSet::default() {
        Aggregate::Pending
    } else if set.has(P::RollbackFailed) {
        Aggregate::RollbackFailed
    } else if set.has(P::Failed) {
        if set.intersects(active) {
            Aggregate::Failing
        } else if set.has(P::Completed) || set.held() {
            Aggregate::NeedsRollback
        } else {
            Aggregate::Failed
        }
    } else if set.has(P::FailedRetryable) {
        Aggregate::FailedRetryable
    } else if set.has(P::Running) {
        Aggregate::Running
    } else if set.has(P::Pending) {
        if set.is_only(P::Pending) { Aggregate::Pending } else { Aggregate::Running }
    } else if set.has(P::Completed) {
        if set.is_only(P::Completed) { Aggregate::Completed } else { Aggregate::NeedsRollback }
    } else if set.held() {
        Aggregate::NeedsRollback
    } else if set.has(P::Cancelled) {
        Aggregate::Cancelled
    } else {
        Aggregate::RolledBack
    }
}

/// Every aggregate the parts could have, when `unknown` parts (at least one)
/// could be in any state, holding a stash or not.
fn possible_aggregates(known: StateSet, unknown: usize) -> BTreeSet<Aggregate> {
    let all = (1u16 << PartState::ALL.len()) - 1;
    let settled = StateSet::of(&[PartState::Failed, PartState::Cancelled, PartState::RolledBack]);
    (1..=all)
        .filter(|fill: &u16| fill.count_ones() as usize <= unknown)
        .flat_map(|fill| {
            // An unknown settled part may hold a stash.
            let may_hold = StateSet(fill).intersects(settled);
            [false, true]
                .into_iter()
                .filter(move |&held| !held || may_hold)
                .map(move |held| StateSet(known.0 | fill | if held { HELD } else { 0 }))
        })
        .map(aggregate_of)
        .collect()
}

/// A part whose record could not be read: missing, damaged, of an unknown
/// version, written for another part, or unreadable for an I/O error.
///
/// # Examples
///
/// ```
/// use safestash::journal::{Derivation, PartState, Unreadable};
///
/// let lost = Unreadable::new("orders", "stash is corrupt");
/// let d = Derivation::of([Ok(PartState::Completed), Err(lost)]);
/// assert!(!d.is_terminal());
/// assert_eq!(d.unreadable()[0].to_string(), "part `orders` is unreadable: stash is corrupt");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Unreadable {
    /// The part's name.
    pub part: String,
    /// Why it could not be read.
    pub reason: String,
}

impl Unreadable {
    /// A part `part` that could not be read, and why.
    ///
    /// # Examples
    ///
    /// See [`Unreadable`].
    pub fn new(part: impl Into<String>, reason: impl Into<String>) -> Unreadable {
        Unreadable { part: part.into(), reason: reason.into() }
    }
}

impl fmt::Display for Unreadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "part `{}` is unreadable: {}", self.part, self.reason)
    }
}

/// The aggregate derived from every part of an operation, or why it cannot
/// be.
///
/// # Examples
///
/// ```
/// use safestash::journal::{Aggregate, Derivation, Unreadable, PartState::*};
///
/// assert_eq!(Derivation::of([Ok(Completed), Ok(Completed)]), Derivation::Known(Aggregate::Completed));
///
/// // A sibling that cannot be read: never terminal, whatever the others hold.
/// let d = Derivation::of([Ok(Completed), Err(Unreadable::new("b", "missing"))]);
/// assert_eq!(d.aggregate(), None);
/// assert!(!d.is_terminal());
/// let Derivation::Undetermined { possible, .. } = &d else { unreachable!() };
/// assert!(possible.contains(&Aggregate::Completed) && possible.contains(&Aggregate::Running));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Derivation {
    /// Every part was read; this is the aggregate.
    Known(Aggregate),
    /// Some parts could not be read.
    Undetermined {
        /// The parts that could not be read, and why.
        unreadable: Vec<Unreadable>,
        /// Every aggregate the operation could have, whatever states the
        /// unreadable parts are really in.
        possible: BTreeSet<Aggregate>,
    },
}

impl Derivation {
    /// Derives the aggregate ([`aggregate_parts`]) from each part's state
    /// (a [`PartState`], or a [`PartStatus`] saying whether it holds a
    /// stash), or the reason it could not be read.
    ///
    /// # Examples
    ///
    /// See [`Derivation`].
    pub fn of<I, P>(parts: I) -> Derivation
    where
        I: IntoIterator<Item = Result<P, Unreadable>>,
        P: Into<PartStatus>,
    {
        let mut known: Vec<PartStatus> = Vec::new();
        let mut unreadable = Vec::new();
        for part in parts {
            match part {
                Ok(status) => known.push(status.into()),
                Err(u) => unreadable.push(u),
            }
        }
        let known: StateSet = known.into_iter().collect();
        if unreadable.is_empty() {
            return Derivation::Known(aggregate_of(known));
        }
        let possible = possible_aggregates(known, unreadable.len());
        Derivation::Undetermined { unreadable, possible }
    }

    /// The aggregate, if the parts determine it: always when every part was
    /// read; with unreadable parts only when every possibility agrees (a
    /// readable `rollback_failed` part decides it), which is never terminal.
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::journal::{Aggregate, Derivation, Unreadable, PartState::*};
    ///
    /// let lost = || Err(Unreadable::new("x", "missing"));
    /// assert_eq!(Derivation::of([Ok(Running), lost()]).aggregate(), None);
    /// assert_eq!(Derivation::of([Ok(RollbackFailed), lost()]).aggregate(), Some(Aggregate::RollbackFailed));
    /// ```
    pub fn aggregate(&self) -> Option<Aggregate> {
        match self {
            Derivation::Known(a) => Some(*a),
            Derivation::Undetermined { possible, .. } if possible.len() == 1 => {
                possible.first().copied().filter(|a| !a.is_terminal())
            }
            Derivation::Undetermined { .. } => None,
        }
    }

    /// Whether every part was read and the aggregate is terminal.
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::journal::{Derivation, PartState::*};
    /// assert!(Derivation::of([Ok(Failed), Ok(RolledBack)]).is_terminal());
    /// ```
    pub fn is_terminal(&self) -> bool {
        matches!(self, Derivation::Known(a) if a.is_terminal())
    }

    /// The parts that could not be read (none when the aggregate is known).
    ///
    /// # Examples
    ///
    /// See [`Unreadable`].
    pub fn unreadable(&self) -> &[Unreadable] {
        match self {
            Derivation::Known(_) => &[],
            Derivation::Undetermined { unreadable, .. } => unreadable,
        }
    }
}

impl fmt::Display for Derivation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Derivation::Known(a) => write!(f, "{a}"),
            Derivation::Undetermined { unreadable, .. } => {
                f.write_str("undetermined (")?;
                for (i, u) in unreadable.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{u}")?;
                }
                f.write_str(")")
            }
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use PartState::*;

    #[test]
    fn a_set_determines_the_aggregate() {
        let set: StateSet = [Running, Completed, Running].into_iter().collect();
        assert!(set.has(Running) && set.has(Completed) && !set.has(Pending));
        assert_eq!(aggregate_of(set), aggregate([Completed, Running]));
    }

    #[test]
    fn only_rollback_failed_survives_any_unknown_sibling() {
        for fill in 0u16..(1 << 9) {
            let known = StateSet(fill);
            for unknown in 1..=3 {
                let possible = possible_aggregates(known, unknown);
                assert!(possible.contains(&Aggregate::RollbackFailed));
                if possible.len() == 1 {
                    assert!(known.has(RollbackFailed), "{fill:#b} decided {possible:?}");
                }
            }
        }
    }

    #[test]
    fn a_settled_part_holding_a_stash_is_never_terminal() {
        for state in PartState::ALL {
            let held = PartStatus::new(state, true);
            let a = aggregate_parts([held]);
            assert_eq!(a.is_terminal(), state == Completed, "{state} holding a stash: {a}");
            for other in PartState::ALL {
                let a = aggregate_parts([held, other.into()]);
                if state != Completed {
                    assert!(!a.is_terminal(), "{state} (held) + {other}: {a}");
                }
            }
        }
        // Stashes of active parts change nothing: they are not over anyway.
        assert_eq!(aggregate_parts([PartStatus::new(Running, true)]), Aggregate::Running);
    }

    #[test]
    fn names_are_stable() {
        for s in PartState::ALL {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{s}\""));
            assert_eq!(s.as_str().parse::<PartState>().unwrap(), s);
            assert_eq!(Aggregate::from(s).as_str(), s.as_str());
        }
        for a in Aggregate::ALL {
            assert_eq!(serde_json::to_string(&a).unwrap(), format!("\"{a}\""));
        }
        assert!("done".parse::<PartState>().is_err());
    }
}
