//! Multi-part operations: a durable journal whose aggregate state never lies.
//!
//! The documentation is on the re-exported items: [`Operation`] (motivation,
//! storage layout, compare-and-swap, fail-closed derivation, rollback),
//! [`PartState`] (the states and which are terminal) and [`aggregate`] (the
//! precedence table).

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::Error;
use crate::fs::{Fs, OsFs};
use crate::key::StashKey;
use crate::meta::{SaveOptions, Stashed};
use crate::store::KeyLock;
use crate::store::Restorer;
use crate::store::Store;

/// The version of the journal's records (inside the store's own envelope).
const RECORD_FORMAT: u32 = 1;
/// The longest operation id or part name, in bytes.
const MAX_NAME_LEN: usize = 128;
/// The most parts an operation may have.
const MAX_PARTS: usize = 4096;
/// Notes longer than this are cut (at a character boundary).
const MAX_NOTE_LEN: usize = 1024;
/// How many transitions each part record keeps (the most recent ones).
///
/// # Examples
///
/// ```
/// assert_eq!(safestash::MAX_HISTORY, 100);
/// ```
pub const MAX_HISTORY: usize = 100;
const HEADER_KIND: &str = "journal/operation";
const PART_KIND: &str = "journal/part";
const STASH_KIND: &str = "journal/stash";

// ---------------------------------------------------------------------------
// States and the aggregate
// ---------------------------------------------------------------------------

/// The state of one part of an [`Operation`].
///
/// | state | meaning | terminal |
/// |---|---|---|
/// | `pending` | not started | no |
/// | `running` | a worker is on it | no |
/// | `failed_retryable` | failed; a retry may run it again | no |
/// | `completed` | done; may still be rolled back | yes |
/// | `failed` | failed for good | yes (final) |
/// | `cancelled` | stopped before it finished, or never started | yes (final) |
/// | `rolled_back` | was completed, and its stash was restored | yes (final) |
/// | `rollback_failed` | restoring its stash failed; the stash is kept | no |
///
/// A *terminal* part's work is over. The *final* ones never change again;
/// `completed` may still become `rolled_back` or `rollback_failed`, and
/// `rollback_failed` may become `rolled_back` when a rollback is retried.
/// The active states (`pending`, `running`, `failed_retryable`) may become
/// any active state or `completed`, `failed`, `cancelled`
/// ([`PartState::can_become`]).
///
/// # Examples
///
/// ```
/// use safestash::PartState;
///
/// assert!(PartState::Completed.is_terminal());
/// assert!(!PartState::FailedRetryable.is_terminal());
/// assert!(PartState::Running.can_become(PartState::Completed));
/// assert!(!PartState::Failed.can_become(PartState::Running)); // final
/// assert_eq!("rolled_back".parse::<PartState>()?, PartState::RolledBack);
/// # Ok::<(), safestash::JournalError>(())
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
    /// assert_eq!(safestash::PartState::ALL.len(), 8);
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
    /// assert_eq!(safestash::PartState::FailedRetryable.as_str(), "failed_retryable");
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
    /// use safestash::PartState;
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
    /// assert!(safestash::PartState::FailedRetryable.is_active());
    /// assert!(!safestash::PartState::RollbackFailed.is_active());
    /// ```
    pub fn is_active(self) -> bool {
        matches!(self, PartState::Pending | PartState::Running | PartState::FailedRetryable)
    }

    /// Whether a part in this state may move to `to`:
    ///
    /// - an active state may become any active state, `completed`, `failed`
    ///   or `cancelled` (staying in the same active state records progress);
    /// - `completed` may become `rolled_back` or `rollback_failed`;
    /// - `rollback_failed` may become `rolled_back` or stay `rollback_failed`;
    /// - `failed`, `cancelled` and `rolled_back` are final.
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::PartState::*;
    /// assert!(FailedRetryable.can_become(Running));
    /// assert!(Completed.can_become(RolledBack));
    /// assert!(!Completed.can_become(Running));
    /// assert!(!RolledBack.can_become(Completed));
    /// ```
    pub fn can_become(self, to: PartState) -> bool {
        use PartState::*;
        match self {
            Pending | Running | FailedRetryable => {
                to.is_active() || matches!(to, Completed | Failed | Cancelled)
            }
            Completed => matches!(to, RolledBack | RollbackFailed),
            RollbackFailed => matches!(to, RolledBack | RollbackFailed),
            Failed | Cancelled | RolledBack => false,
        }
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

impl FromStr for PartState {
    type Err = JournalError;

    fn from_str(s: &str) -> Result<PartState, JournalError> {
        PartState::ALL.into_iter().find(|state| state.as_str() == s).ok_or_else(|| {
            JournalError::Invalid {
                what: "part state",
                value: s.to_owned(),
                rule: "not one of pending, running, completed, failed, failed_retryable, \
                       cancelled, rolled_back, rollback_failed",
            }
        })
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
/// use safestash::{Aggregate, PartState};
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
    /// back: nothing is active and nothing is half applied. Terminal.
    Failed,
    /// A part failed and may be retried.
    FailedRetryable,
    /// Parts were cancelled and the rest rolled back. Terminal.
    Cancelled,
    /// Every part was rolled back. Terminal.
    RolledBack,
    /// A part's restore failed; its stash is kept. Needs a retried rollback
    /// or an operator.
    RollbackFailed,
    /// A part failed for good while others are still active.
    Failing,
    /// Nothing is active, the operation cannot complete, and completed parts
    /// remain: roll them back ([`Operation::rollback`]).
    NeedsRollback,
}

impl Aggregate {
    /// Every aggregate, in declaration order.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(safestash::Aggregate::ALL.len(), 10);
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
    /// assert_eq!(safestash::Aggregate::NeedsRollback.as_str(), "needs_rollback");
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
    /// use safestash::Aggregate;
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

/// The set of states present among some parts: all the aggregate depends on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct StateSet(u16);

impl StateSet {
    fn of(states: &[PartState]) -> StateSet {
        states.iter().copied().collect()
    }

    fn has(self, state: PartState) -> bool {
        self.0 & state.bit() != 0
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
        StateSet(iter.into_iter().fold(0, |bits, state| bits | state.bit()))
    }
}

/// The aggregate state of parts in `states`. Pure: it depends only on which
/// states are present, never on their order or on which part holds them.
///
/// The first row that matches wins:
///
/// | # | the parts hold | aggregate | terminal |
/// |---|---|---|---|
/// | 1 | no parts at all | `pending` | no |
/// | 2 | any `rollback_failed` | `rollback_failed` | no |
/// | 3 | any `failed`, and any active part | `failing` | no |
/// | 4 | any `failed`, and any `completed` | `needs_rollback` | no |
/// | 5 | any `failed` (the rest `cancelled` or `rolled_back`) | `failed` | yes |
/// | 6 | any `failed_retryable` | `failed_retryable` | no |
/// | 7 | any `running` | `running` | no |
/// | 8 | only `pending` | `pending` | no |
/// | 9 | any `pending` (with `completed`, `cancelled`, `rolled_back`) | `running` | no |
/// | 10 | only `completed` | `completed` | yes |
/// | 11 | any `completed` (with `cancelled`, `rolled_back`) | `needs_rollback` | no |
/// | 12 | any `cancelled` (the rest `rolled_back`) | `cancelled` | yes |
/// | 13 | only `rolled_back` | `rolled_back` | yes |
///
/// So the aggregate is terminal only when no part is active, no rollback
/// failed, and nothing is half applied: either every part completed, or no
/// part is left completed. A terminal aggregate never changes again: every
/// part is final, or (for `completed`) the operation refuses further updates
/// and rollbacks. A single part's aggregate is its own state.
///
/// # Examples
///
/// ```
/// use safestash::{aggregate, Aggregate, PartState::*};
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
        } else if set.has(P::Completed) {
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
    } else if set.has(P::Cancelled) {
        Aggregate::Cancelled
    } else {
        Aggregate::RolledBack
    }
}

/// Every aggregate the parts could have, when `unknown` parts (at least one)
/// could be in any state.
fn possible_aggregates(known: StateSet, unknown: usize) -> BTreeSet<Aggregate> {
    let all = (1u16 << PartState::ALL.len()) - 1;
    (1..=all)
        .filter(|fill: &u16| fill.count_ones() as usize <= unknown)
        .map(|fill| aggregate_of(StateSet(known.0 | fill)))
        .collect()
}

/// A part whose record could not be read: missing, damaged, of an unknown
/// version, written for another part, or unreadable for an I/O error.
///
/// # Examples
///
/// ```
/// use safestash::{Derivation, PartState, Unreadable};
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
/// use safestash::{Aggregate, Derivation, PartState::*, Unreadable};
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
    /// Derives the aggregate from each part's state, or the reason it could
    /// not be read.
    ///
    /// # Examples
    ///
    /// See [`Derivation`].
    pub fn of<I>(parts: I) -> Derivation
    where
        I: IntoIterator<Item = Result<PartState, Unreadable>>,
    {
        let mut known = Vec::new();
        let mut unreadable = Vec::new();
        for part in parts {
            match part {
                Ok(state) => known.push(state),
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
    /// use safestash::{Aggregate, Derivation, PartState::*, Unreadable};
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
    /// use safestash::{Derivation, PartState::*};
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

// ---------------------------------------------------------------------------
// Generations, expectations, changes, records
// ---------------------------------------------------------------------------

/// A generation number: of a whole operation (bumped by every change to
/// it) or of one part (bumped by every change to that part). The token of
/// compare-and-swap ([`Expect`]).
///
/// # Examples
///
/// ```
/// use safestash::Generation;
/// assert!(Generation::new(2) > Generation::new(1));
/// assert_eq!(Generation::new(7).get(), 7);
/// assert_eq!(Generation::new(7).to_string(), "7");
/// ```
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Generation(u64);

impl Generation {
    /// The generation `n`.
    ///
    /// # Examples
    ///
    /// See [`Generation`].
    pub const fn new(n: u64) -> Generation {
        Generation(n)
    }

    /// Its number.
    ///
    /// # Examples
    ///
    /// See [`Generation`].
    pub const fn get(self) -> u64 {
        self.0
    }

    fn next(self) -> Generation {
        Generation(self.0.saturating_add(1))
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What an update expects to find, compared and swapped under the
/// operation's lock.
///
/// - `Operation(g)`: nothing in the operation changed since generation `g`
///   ([`OperationView::generation`], [`Updated::generation`]). The strict
///   form: any sibling's update makes it a conflict.
/// - `Part(g)`: this part did not change since its generation `g`
///   ([`PartInfo::generation`]). Updates of other parts do not conflict.
///
/// # Examples
///
/// ```
/// use safestash::{Expect, Operation, PartState, Store};
///
/// let dir = tempfile::tempdir()?;
/// let store = Store::open(dir.path())?;
/// let op = Operation::create(&store, "op", ["a", "b"])?;
/// let view = op.view()?;
/// let b_seen = view.part("b").unwrap().unwrap().generation;
/// op.update("a", Expect::Operation(view.generation), PartState::Running)?;
/// // `b` did not change, so its own generation still matches.
/// op.update("b", Expect::Part(b_seen), PartState::Running)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Expect {
    /// The operation's generation.
    Operation(Generation),
    /// The part's own generation.
    Part(Generation),
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Operation(g) => write!(f, "operation generation {g}"),
            Expect::Part(g) => write!(f, "part generation {g}"),
        }
    }
}

/// A change to one part: its new state and an optional note (kept in the
/// part's history, cut at 1024 bytes). A bare [`PartState`] converts into a
/// change without a note.
///
/// # Examples
///
/// ```
/// use safestash::{Change, PartState};
///
/// let change = Change::to(PartState::Running).note("worker 3 on host-a");
/// assert_eq!(change.state(), PartState::Running);
/// let plain: Change = PartState::Completed.into();
/// assert_eq!(plain.note_text(), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    to: PartState,
    note: Option<String>,
}

impl Change {
    /// A change to `state`.
    ///
    /// # Examples
    ///
    /// See [`Change`].
    pub fn to(state: PartState) -> Change {
        Change { to: state, note: None }
    }

    /// Adds a note.
    ///
    /// # Examples
    ///
    /// See [`Change`].
    #[must_use]
    pub fn note(mut self, note: impl Into<String>) -> Change {
        self.note = Some(note.into());
        self
    }

    /// The new state.
    ///
    /// # Examples
    ///
    /// See [`Change`].
    pub fn state(&self) -> PartState {
        self.to
    }

    /// The note, if any.
    ///
    /// # Examples
    ///
    /// See [`Change`].
    pub fn note_text(&self) -> Option<&str> {
        self.note.as_deref()
    }
}

impl From<PartState> for Change {
    fn from(state: PartState) -> Change {
        Change::to(state)
    }
}

/// One recorded change of a part.
///
/// # Examples
///
/// ```
/// use safestash::{Expect, Operation, PartState, Store};
///
/// let dir = tempfile::tempdir()?;
/// let store = Store::open(dir.path())?;
/// let op = Operation::create(&store, "op", ["a"])?;
/// let g = op.view()?.generation;
/// let done = op.update("a", Expect::Operation(g), PartState::Running)?;
/// let t = &done.part.history[0];
/// assert_eq!((t.from, t.to, t.generation), (PartState::Pending, PartState::Running, done.generation));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Transition {
    /// The state before.
    pub from: PartState,
    /// The state after.
    pub to: PartState,
    /// The operation's generation this change made.
    pub generation: Generation,
    /// When it was recorded (stored as RFC 3339, UTC).
    #[serde(with = "rfc3339")]
    pub at: SystemTime,
    /// The note given with the change, or one the journal wrote (a rollback
    /// step, a restore error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One part's record, as stored under `op.ID.part.NAME`.
///
/// # Examples
///
/// ```
/// use safestash::{Operation, PartState, Store};
///
/// let dir = tempfile::tempdir()?;
/// let store = Store::open(dir.path())?;
/// let op = Operation::create(&store, "op", ["a"])?;
/// let view = op.view()?;
/// let a = view.part("a").unwrap().unwrap();
/// assert_eq!((a.name.as_str(), a.state, a.updates), ("a", PartState::Pending, 0));
/// assert!(a.history.is_empty() && a.stash.is_none() && a.completed_at.is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PartInfo {
    format: u32,
    /// The operation's id.
    pub op: String,
    /// The part's name.
    pub name: String,
    /// Its state.
    pub state: PartState,
    /// Its own generation: bumped by every change to this part.
    pub generation: Generation,
    /// The operation's generation when this record was written.
    pub op_generation: Generation,
    /// The operation's generation when the part last became `completed`:
    /// the order in which a rollback undoes parts (latest first).
    pub completed_at: Option<Generation>,
    /// The digest of the snapshot the part stashed under `op.ID.stash.NAME`.
    /// Once a rollback restored it (`rolled_back`), the stash file is cleared
    /// and the digest stays as the record of what was restored.
    #[serde(with = "opt_digest")]
    pub stash: Option<Digest>,
    /// How many changes the part has had (the history keeps the last
    /// [`MAX_HISTORY`]).
    pub updates: u64,
    /// Its most recent changes, oldest first.
    pub history: Vec<Transition>,
}

/// What the header (`op.ID`) holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct HeaderRecord {
    format: u32,
    op: String,
    parts: Vec<String>,
    aggregate: Aggregate,
    generation: Generation,
    #[serde(with = "rfc3339")]
    created: SystemTime,
}

/// An operation as read under its lock: every part, and what they add up to.
///
/// # Examples
///
/// ```
/// use safestash::{Aggregate, Derivation, Operation, Store};
///
/// let dir = tempfile::tempdir()?;
/// let store = Store::open(dir.path())?;
/// let view = Operation::create(&store, "op", ["a", "b"])?.view()?;
/// assert_eq!(view.derivation, Derivation::Known(Aggregate::Pending));
/// assert_eq!(view.stored, Aggregate::Pending);
/// assert_eq!(view.parts.len(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OperationView {
    /// The operation's id.
    pub id: String,
    /// The operation's generation: the token for [`Expect::Operation`].
    pub generation: Generation,
    /// The aggregate stored in the header: the last one the parts
    /// determined.
    pub stored: Aggregate,
    /// The aggregate derived now from every part.
    pub derivation: Derivation,
    /// Every part, in the order given at creation.
    pub parts: Vec<Result<PartInfo, Unreadable>>,
}

impl OperationView {
    /// The part named `name`, or `None` if the operation has no such part.
    ///
    /// # Examples
    ///
    /// See [`OperationView`] and [`Expect`].
    pub fn part(&self, name: &str) -> Option<Result<&PartInfo, &Unreadable>> {
        self.parts
            .iter()
            .find(|p| match p {
                Ok(info) => info.name == name,
                Err(u) => u.part == name,
            })
            .map(Result::as_ref)
    }
}

/// What a successful update did.
///
/// # Examples
///
/// ```
/// use safestash::{Aggregate, Expect, Operation, PartState, Store};
///
/// let dir = tempfile::tempdir()?;
/// let store = Store::open(dir.path())?;
/// let op = Operation::create(&store, "op", ["a"])?;
/// let before = op.view()?.generation;
/// let updated = op.update("a", Expect::Operation(before), PartState::Completed)?;
/// assert!(updated.generation > before);
/// assert_eq!(updated.part.state, PartState::Completed);
/// assert_eq!(updated.stored, Aggregate::Completed);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Updated {
    /// The operation's new generation.
    pub generation: Generation,
    /// The part as written.
    pub part: PartInfo,
    /// The aggregate derived from every part after the change.
    pub derivation: Derivation,
    /// The aggregate now stored in the header (unchanged when the
    /// derivation is undetermined).
    pub stored: Aggregate,
}

/// What [`Operation::rollback`] did to one part.
///
/// # Examples
///
/// ```
/// assert_eq!(safestash::RollbackOutcome::Restored.to_string(), "restored from its stash");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RollbackOutcome {
    /// It was pending: now `cancelled`.
    Cancelled,
    /// It was `failed_retryable`: the retry is abandoned, now `failed`.
    Abandoned,
    /// Its stash was restored and cleared: now `rolled_back`.
    Restored,
    /// It completed without stashing anything: now `rolled_back`, with
    /// nothing restored.
    NothingToRestore,
    /// Its restore failed: now `rollback_failed`, the stash kept.
    RestoreFailed {
        /// The error, with its causes.
        error: String,
    },
    /// Not tried, because an earlier part's restore failed: still
    /// `completed` (or `rollback_failed`), the stash kept.
    NotAttempted,
}

impl fmt::Display for RollbackOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RollbackOutcome::Cancelled => f.write_str("cancelled before it started"),
            RollbackOutcome::Abandoned => f.write_str("retry abandoned; now failed"),
            RollbackOutcome::Restored => f.write_str("restored from its stash"),
            RollbackOutcome::NothingToRestore => f.write_str("nothing was stashed to restore"),
            RollbackOutcome::RestoreFailed { error } => {
                write!(f, "restore failed, stash kept: {error}")
            }
            RollbackOutcome::NotAttempted => f.write_str("not attempted after an earlier failure"),
        }
    }
}

/// One part's line in a [`RollbackReport`].
///
/// # Examples
///
/// See [`Operation::rollback`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartRollback {
    /// The part.
    pub part: String,
    /// What happened to it.
    pub outcome: RollbackOutcome,
}

/// What [`Operation::rollback`] did, part by part, in the order it did it.
///
/// # Examples
///
/// See [`Operation::rollback`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RollbackReport {
    /// The operation's id.
    pub op: String,
    /// Each part touched, in order: pending and retryable parts first, then
    /// completed parts latest-completed first.
    pub outcomes: Vec<PartRollback>,
    /// The operation's generation afterwards.
    pub generation: Generation,
    /// The aggregate afterwards.
    pub derivation: Derivation,
}

impl RollbackReport {
    /// The outcome for `part`, if the rollback touched it.
    ///
    /// # Examples
    ///
    /// See [`Operation::rollback`].
    pub fn outcome(&self, part: &str) -> Option<&RollbackOutcome> {
        self.outcomes.iter().find(|o| o.part == part).map(|o| &o.outcome)
    }
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Everything that can go wrong with an [`Operation`].
///
/// # Examples
///
/// ```
/// use safestash::{JournalError, Operation, Store};
///
/// let dir = tempfile::tempdir()?;
/// let store = Store::open(dir.path())?;
/// match Operation::open(&store, "never-created") {
///     Err(JournalError::NotFound { op }) => assert_eq!(op, "never-created"),
///     other => panic!("expected NotFound, got {other:?}"),
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// A store operation failed; the store's error is the source.
    #[error("failed to {what} of operation `{op}`")]
    Store {
        /// The operation's id.
        op: String,
        /// What was being done.
        what: String,
        /// The store's error.
        #[source]
        source: Box<Error>,
    },
    /// An id, part name or state is not acceptable.
    #[error("invalid {what} {value:?}: {rule}")]
    Invalid {
        /// What was rejected.
        what: &'static str,
        /// The rejected value.
        value: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// No operation with this id.
    #[error("operation `{op}` does not exist")]
    NotFound {
        /// The operation's id.
        op: String,
    },
    /// An operation with this id exists already.
    #[error("operation `{op}` already exists")]
    AlreadyExists {
        /// The operation's id.
        op: String,
    },
    /// The header is an intact stash but does not describe this operation
    /// sensibly (another id, no parts, duplicate parts, unknown version).
    #[error("the header of operation `{op}` is invalid: {reason}")]
    BadHeader {
        /// The operation's id.
        op: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The operation has no such part.
    #[error("operation `{op}` has no part `{part}`")]
    UnknownPart {
        /// The operation's id.
        op: String,
        /// The part asked for.
        part: String,
    },
    /// The expected generation is stale: something changed since the caller
    /// looked. Nothing was written; re-read and retry.
    #[error(
        "conflict on part `{part}` of operation `{op}`: expected {expected}, found {found}; \
         re-read and retry"
    )]
    Conflict {
        /// The operation's id.
        op: String,
        /// The part being updated.
        part: String,
        /// What the caller expected.
        expected: Expect,
        /// The generation found (of the operation or of the part, as
        /// expected).
        found: Generation,
    },
    /// The part cannot go from its state to the one asked for
    /// ([`PartState::can_become`]).
    #[error("part `{part}` of operation `{op}` cannot go from {from} to {to}")]
    Transition {
        /// The operation's id.
        op: String,
        /// The part.
        part: String,
        /// Its current state.
        from: PartState,
        /// The state asked for.
        to: PartState,
    },
    /// The operation's aggregate is terminal: it takes no more changes.
    #[error("operation `{op}` is {aggregate}, which is final; it takes no more changes")]
    Finished {
        /// The operation's id.
        op: String,
        /// Its aggregate.
        aggregate: Aggregate,
    },
    /// The part to change cannot be read; it is not overwritten (its history
    /// and stash reference would be lost).
    #[error("part `{}` of operation `{op}` is unreadable ({}); it is not changed", unreadable.part, unreadable.reason)]
    PartUnreadable {
        /// The operation's id.
        op: String,
        /// The part and why.
        unreadable: Unreadable,
    },
    /// Some parts cannot be read, so the operation's state is unknown and a
    /// rollback does not start.
    #[error("the state of operation `{op}` is undetermined: {}", list_unreadable(unreadable))]
    Undetermined {
        /// The operation's id.
        op: String,
        /// The parts that cannot be read.
        unreadable: Vec<Unreadable>,
    },
    /// Parts are still running, so a rollback does not start.
    #[error("operation `{op}` still has running parts ({}); a rollback waits for them", parts.join(", "))]
    Active {
        /// The operation's id.
        op: String,
        /// The running parts.
        parts: Vec<String>,
    },
    /// A stash is taken only by a running part that holds none yet.
    #[error("part `{part}` of operation `{op}` cannot stash: {reason}")]
    StashRefused {
        /// The operation's id.
        op: String,
        /// The part.
        part: String,
        /// Why.
        reason: &'static str,
    },
    /// A rollback stopped at a part whose restore failed. That part is
    /// `rollback_failed` and keeps its stash; the report says what happened
    /// to every part. Retry the rollback once the cause is fixed.
    #[error("rollback of operation `{op}` stopped at part `{part}`, whose stash is kept; the operation is {}", report.derivation)]
    RollbackIncomplete {
        /// The operation's id.
        op: String,
        /// The part whose restore failed.
        part: String,
        /// What the rollback did before it stopped.
        report: Box<RollbackReport>,
        /// The restore's error ([`Error::Restore`], or why the stash could
        /// not be loaded).
        #[source]
        source: Box<Error>,
    },
}

fn list_unreadable(unreadable: &[Unreadable]) -> String {
    unreadable.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// An error and its causes, on one line.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

fn cut(mut note: String) -> String {
    if note.len() > MAX_NOTE_LEN {
        let mut end = MAX_NOTE_LEN;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
    }
    note
}

// ---------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------

/// Escapes `%` and `.` so a name holds no `.` and the key's structure is
/// unambiguous; `from_any` then makes it a valid key, injectively.
fn escape(name: &str) -> String {
    name.replace('%', "%25").replace('.', "%2E")
}

fn header_key(id: &str) -> StashKey {
    StashKey::from_any(&format!("op.{}", escape(id)))
}

fn part_key(id: &str, part: &str) -> StashKey {
    StashKey::from_any(&format!("op.{}.part.{}", escape(id), escape(part)))
}

fn stash_key(id: &str, part: &str) -> StashKey {
    StashKey::from_any(&format!("op.{}.stash.{}", escape(id), escape(part)))
}

fn check_name(what: &'static str, value: &str) -> Result<(), JournalError> {
    let rule = if value.is_empty() {
        "must not be empty"
    } else if value.len() > MAX_NAME_LEN {
        "must be at most 128 bytes"
    } else if value.chars().any(char::is_control) {
        "must not contain control characters"
    } else {
        return Ok(());
    };
    Err(JournalError::Invalid { what, value: value.to_owned(), rule })
}

// ---------------------------------------------------------------------------
// The operation
// ---------------------------------------------------------------------------

/// The state of an operation as read under its lock.
struct State {
    header: HeaderRecord,
    parts: Vec<Result<PartInfo, Unreadable>>,
    generation: Generation,
}

impl State {
    fn derivation(&self) -> Derivation {
        Derivation::of(self.parts.iter().map(|p| p.as_ref().map(|r| r.state).map_err(Clone::clone)))
    }

    fn view(&self) -> OperationView {
        OperationView {
            id: self.header.op.clone(),
            generation: self.generation,
            stored: self.header.aggregate,
            derivation: self.derivation(),
            parts: self.parts.clone(),
        }
    }

    /// The terminal aggregate, if the operation reached one: derived now, or
    /// stored (a stored terminal aggregate was derived from every part, and
    /// nothing has changed since; it holds even if a part became unreadable
    /// later, so a damaged record never reopens a finished operation).
    fn finished(&self) -> Option<Aggregate> {
        match self.derivation() {
            Derivation::Known(a) if a.is_terminal() => Some(a),
            _ => Some(self.header.aggregate).filter(|a| a.is_terminal()),
        }
    }

    fn unreadable(&self) -> Vec<Unreadable> {
        self.parts.iter().filter_map(|p| p.as_ref().err().cloned()).collect()
    }

    fn record(&self, idx: usize) -> &PartInfo {
        self.parts[idx].as_ref().expect("checked readable")
    }
}

/// Records a change of `rec` to `to`, made at the operation's generation `at`.
fn transition(rec: &mut PartInfo, to: PartState, at: Generation, note: Option<String>) {
    if to == PartState::Completed && rec.state != PartState::Completed {
        rec.completed_at = Some(at);
    }
    rec.history.push(Transition {
        from: rec.state,
        to,
        generation: at,
        at: SystemTime::now(),
        note: note.map(cut),
    });
    let excess = rec.history.len().saturating_sub(MAX_HISTORY);
    rec.history.drain(..excess);
    rec.state = to;
}

/// A multi-part operation in a [`Store`]: named parts, each with a
/// [`PartState`], and an [`Aggregate`] derived from all of them.
///
/// # Motivation
///
/// A rollback often spans several parts: one stash per table, tenant or
/// deployment. A rollout once derived its overall state from *one* part and
/// reported "completed" while siblings were still running:
///
/// ```no_run
/// # #[derive(PartialEq)] enum State { Running, Completed }
/// # let parts = vec![State::Completed, State::Running];
/// // Looks reasonable; is not.
/// let overall = &parts[0];                 // "the" part: here, the first to finish
/// let done = *overall == State::Completed; // true while parts[1] still runs
/// ```
///
/// An operation derives its [`Aggregate`] from **every** part, with one
/// documented precedence ([`aggregate`]); it **fails closed** (a part whose
/// record cannot be read makes the aggregate [`Derivation::Undetermined`],
/// never terminal, and the stored aggregate is left alone); and every update
/// is a **compare-and-swap** on a [`Generation`] under the operation's lock,
/// so workers in different processes never lose each other's updates.
///
/// ```
/// use safestash::{Aggregate, Derivation, Expect, JournalError, Operation, PartState, Store};
///
/// let dir = tempfile::tempdir()?;
/// let store = Store::open(dir.path())?;
/// let op = Operation::create(&store, "reload-2026-11-22", ["orders", "customers"])?;
///
/// // A worker reads the generation, then compares and swaps.
/// let seen = op.view()?.generation;
/// let running = op.update("orders", Expect::Operation(seen), PartState::Running)?;
/// let done = op.update("orders", Expect::Operation(running.generation), PartState::Completed)?;
///
/// // One part completed, its sibling still pending: never "completed".
/// assert_eq!(done.derivation, Derivation::Known(Aggregate::Running));
///
/// // An update computed from a stale view is a conflict, not a lost update.
/// let stale = op.update("customers", Expect::Operation(seen), PartState::Running);
/// assert!(matches!(stale, Err(JournalError::Conflict { .. })));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Fail closed
///
/// A part record that is missing, damaged ([`Error::Corrupt`]), of an unknown
/// version, or unreadable for any other reason makes the derivation
/// [`Derivation::Undetermined`], naming the parts and why, with the set of
/// aggregates the operation could have for any states of those parts. The
/// aggregate stored in the operation's header is then left unchanged —
/// unless every possibility agrees (a readable `rollback_failed` part decides
/// the aggregate whatever the others hold), which is never a terminal
/// aggregate. Updates of the readable parts proceed; an unreadable part
/// itself is never overwritten ([`JournalError::PartUnreadable`]), and a
/// rollback refuses to start ([`JournalError::Undetermined`]).
///
/// # Storage layout
///
/// Everything is a stash in the [`Store`] (checksummed, written atomically
/// and durably), with keys built by [`StashKey::from_any`] from the
/// operation id and part names (each with `%` and `.` escaped as `%25` and
/// `%2E` first, so the mapping is injective):
///
/// | key | holds |
/// |---|---|
/// | `op.ID` | the header: the part names, the stored aggregate, the generation |
/// | `op.ID.part.NAME` | one record per part: state, generations, completion order, stash digest, history |
/// | `op.ID.stash.NAME` | the part's snapshot, if it stashed one ([`Operation::stash`]) |
///
/// One record per part is what makes "an unreadable sibling" meaningful: a
/// damaged part record costs that part, not the whole operation, and a
/// worker writes only its own part's record (plus the header).
///
/// # Compare-and-swap
///
/// Every change takes the advisory lock of the header's key
/// ([`Store::lock`]), reads the header and every part, checks the caller's
/// [`Expect`]ed generation (of the whole operation, or of the one part),
/// writes the part record, then the header. The operation's generation is
/// the largest of the header's and of every part record's `op_generation`,
/// so a power cut between the two writes never hands out a generation
/// twice. A stale expectation is [`JournalError::Conflict`]: re-read with
/// [`Operation::view`] and retry.
///
/// # Rollback across parts
///
/// [`Operation::rollback`] aborts and undoes: it cancels pending parts,
/// gives up on retryable ones (`failed`), then restores the stash of every
/// completed part in reverse order of completion through a [`Restorer`],
/// marking each `rolled_back` and clearing its stash only after the restore
/// succeeded. It stops at the first restore that fails: that part becomes
/// `rollback_failed` and keeps its stash, the parts that completed before it
/// are not attempted (still `completed`, stashes kept), and the operation stays non-terminal and visible
/// until a retried rollback gets through.
///
/// # Limitations
///
/// - The parts are fixed when the operation is created.
/// - A failed part's own stash is not restored by the operation's rollback
///   (only completed parts are undone); its worker should restore it, e.g.
///   from [`Operation::load_stash`], before reporting the failure.
/// - Restore hooks must be idempotent: a crash between a restore and the
///   record of it makes the next rollback restore that part again.
/// - Each part keeps its last [`MAX_HISTORY`] transitions
///   ([`PartInfo::updates`] counts them all); stashes of an operation that
///   completed are kept until removed by hand.
/// - Readers take the operation's lock too, so they need write access to the
///   store's directory (for the lock file) and wait while a rollback runs.
///
/// # Examples
///
/// A worker's loop: read, decide, compare-and-swap, retry on conflict.
///
/// ```
/// use safestash::{Expect, JournalError, Operation, PartState, Store};
///
/// let dir = tempfile::tempdir()?;
/// let store = Store::open(dir.path())?;
/// Operation::create(&store, "sync", ["tenant-a", "tenant-b"])?;
///
/// let op = Operation::open(&store, "sync")?; // in each worker
/// for step in [PartState::Running, PartState::Completed] {
///     loop {
///         let seen = op.view()?.generation;
///         match op.update("tenant-a", Expect::Operation(seen), step) {
///             Ok(_) => break,
///             Err(JournalError::Conflict { .. }) => continue, // someone else wrote; re-read
///             Err(e) => return Err(e.into()),
///         }
///     }
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Operation<'s, F: Fs = OsFs> {
    store: &'s Store<F>,
    id: String,
    key: StashKey,
}

impl<F: Fs> fmt::Debug for Operation<'_, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Operation").field("id", &self.id).field("key", &self.key).finish()
    }
}

impl<'s, F: Fs> Operation<'s, F> {
    /// Creates the operation `id` with these parts, all `pending`, and
    /// returns a handle to it. Part records are written first and the header
    /// last, so an operation exists once it is whole; leftovers of an
    /// interrupted creation are overwritten.
    ///
    /// # Errors
    ///
    /// - [`JournalError::Invalid`] for an empty, overlong (over 128 bytes)
    ///   or control-character id or part name, no parts, more than 4096
    ///   parts, or a repeated part name;
    /// - [`JournalError::AlreadyExists`] when the operation exists;
    /// - [`JournalError::Store`] when the header exists but cannot be read
    ///   (it is never overwritten), or a write fails.
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::{JournalError, Operation, Store};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let store = Store::open(dir.path())?;
    /// let op = Operation::create(&store, "deploy 42", ["eu-west", "us-east"])?;
    /// assert_eq!(op.id(), "deploy 42");
    /// assert!(matches!(
    ///     Operation::create(&store, "deploy 42", ["eu-west"]),
    ///     Err(JournalError::AlreadyExists { .. })
    /// ));
    /// assert!(Operation::create(&store, "x", ["a", "a"]).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn create<I>(
        store: &'s Store<F>,
        id: &str,
        parts: I,
    ) -> Result<Operation<'s, F>, JournalError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        check_name("operation id", id)?;
        let parts: Vec<String> = parts.into_iter().map(|p| p.as_ref().to_owned()).collect();
        if parts.is_empty() || parts.len() > MAX_PARTS {
            return Err(JournalError::Invalid {
                what: "number of parts",
                value: parts.len().to_string(),
                rule: "an operation has 1 to 4096 parts",
            });
        }
        let mut seen = BTreeSet::new();
        for part in &parts {
            check_name("part name", part)?;
            if !seen.insert(part.as_str()) {
                return Err(JournalError::Invalid {
                    what: "part name",
                    value: part.clone(),
                    rule: "part names must be distinct",
                });
            }
        }
        let op = Operation { store, id: id.to_owned(), key: header_key(id) };
        let lock = op.lock()?;
        match store.load::<serde::de::IgnoredAny>(&op.key) {
            Ok(None) => {}
            Ok(Some(_)) => return Err(JournalError::AlreadyExists { op: op.id }),
            Err(e) => return Err(op.store_err("read the existing header", e)),
        }
        let first = Generation(1);
        for part in &parts {
            let rec = PartInfo {
                format: RECORD_FORMAT,
                op: id.to_owned(),
                name: part.clone(),
                state: PartState::Pending,
                generation: first,
                op_generation: first,
                completed_at: None,
                stash: None,
                updates: 0,
                history: Vec::new(),
            };
            op.write_part(&rec)?;
        }
        let header = HeaderRecord {
            format: RECORD_FORMAT,
            op: id.to_owned(),
            parts,
            aggregate: Aggregate::Pending,
            generation: first,
            created: SystemTime::now(),
        };
        op.write_header(&lock, &header)?;
        tracing::info!(op = %op.id, parts = header.parts.len(), "operation created");
        drop(lock);
        Ok(op)
    }

    /// A handle to the existing operation `id`.
    ///
    /// # Errors
    ///
    /// [`JournalError::NotFound`] when there is no such operation;
    /// [`JournalError::Store`] or [`JournalError::BadHeader`] when its header
    /// cannot be read; [`JournalError::Invalid`] for an invalid id.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// safestash::Operation::create(&store, "op", ["a"])?;
    /// let op = safestash::Operation::open(&store, "op")?;
    /// assert_eq!(op.parts()?, ["a"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(store: &'s Store<F>, id: &str) -> Result<Operation<'s, F>, JournalError> {
        check_name("operation id", id)?;
        let op = Operation { store, id: id.to_owned(), key: header_key(id) };
        op.read_header()?;
        Ok(op)
    }

    /// The operation's id.
    ///
    /// # Examples
    ///
    /// See [`Operation::create`].
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The key of the operation's header (and of its lock).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// let op = safestash::Operation::create(&store, "nightly.v2", ["orders"])?;
    /// assert_eq!(op.key().as_str(), "op.nightly_252Ev2");
    /// assert_eq!(op.part_key("orders").as_str(), "op.nightly_252Ev2.part.orders");
    /// assert_eq!(op.stash_key("orders").as_str(), "op.nightly_252Ev2.stash.orders");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn key(&self) -> &StashKey {
        &self.key
    }

    /// The key of `part`'s record.
    ///
    /// # Examples
    ///
    /// See [`Operation::key`].
    pub fn part_key(&self, part: &str) -> StashKey {
        part_key(&self.id, part)
    }

    /// The key of `part`'s stash.
    ///
    /// # Examples
    ///
    /// See [`Operation::key`].
    pub fn stash_key(&self, part: &str) -> StashKey {
        stash_key(&self.id, part)
    }

    /// The part names, in the order given at creation (from the header, read
    /// without the lock).
    ///
    /// # Errors
    ///
    /// As [`Operation::open`].
    ///
    /// # Examples
    ///
    /// See [`Operation::open`].
    pub fn parts(&self) -> Result<Vec<String>, JournalError> {
        Ok(self.read_header()?.parts)
    }

    /// Reads the header and every part under the operation's lock, and
    /// derives the aggregate. A part that cannot be read is reported in
    /// [`OperationView::parts`] and makes the derivation undetermined; it is
    /// not an error.
    ///
    /// # Errors
    ///
    /// [`JournalError::NotFound`], [`JournalError::BadHeader`] or
    /// [`JournalError::Store`] when the header cannot be read or the lock
    /// taken.
    ///
    /// # Examples
    ///
    /// See [`OperationView`].
    pub fn view(&self) -> Result<OperationView, JournalError> {
        let _lock = self.lock()?;
        Ok(self.read_state()?.view())
    }

    /// Changes `part`'s state, if the operation (or the part) is still at
    /// the generation the caller expects: a compare-and-swap under the
    /// operation's lock. The part's record is written first, then the
    /// header with the new generation and — when the parts determine it —
    /// the new aggregate (with an unreadable sibling the stored aggregate is
    /// left unchanged; see [`Derivation::aggregate`]).
    ///
    /// # Errors
    ///
    /// Nothing is written when the update is refused:
    /// - [`JournalError::UnknownPart`];
    /// - [`JournalError::Conflict`] when the expected generation is stale;
    /// - [`JournalError::PartUnreadable`] when the part's own record cannot
    ///   be read;
    /// - [`JournalError::Finished`] when the aggregate is terminal (derived
    ///   now, or stored before some part became unreadable: a damaged record
    ///   never reopens a finished operation);
    /// - [`JournalError::Transition`] when the part cannot make this change.
    ///
    /// [`JournalError::Store`] when a read or write fails. If the header
    /// write fails after the part's record was written, the change is made
    /// (a later view shows it, and its generation counts) but the stored
    /// aggregate is stale until the next change or [`Operation::refresh`].
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::{Aggregate, Change, Expect, Operation, PartState, Store};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let store = Store::open(dir.path())?;
    /// let op = Operation::create(&store, "op", ["a", "b"])?;
    /// let g = op.view()?.generation;
    /// let u = op.update("a", Expect::Operation(g), Change::to(PartState::Failed).note("disk full"))?;
    /// assert_eq!(u.stored, Aggregate::Failing); // `b` is still pending
    /// assert_eq!(u.part.history[0].note.as_deref(), Some("disk full"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn update(
        &self,
        part: &str,
        expect: Expect,
        change: impl Into<Change>,
    ) -> Result<Updated, JournalError> {
        let Change { to, note } = change.into();
        self.change(part, expect, |rec, at| {
            if !rec.state.can_become(to) {
                return Err(JournalError::Transition {
                    op: rec.op.clone(),
                    part: rec.name.clone(),
                    from: rec.state,
                    to,
                });
            }
            transition(rec, to, at, note);
            Ok(())
        })
    }

    /// Stashes `snapshot` for `part` (durably, under `op.ID.stash.NAME`)
    /// and records its digest in the part, so a rollback of the operation
    /// can restore it. Call it while the part is `running`, before
    /// destroying what the snapshot holds. A compare-and-swap like
    /// [`update`](Operation::update); the snapshot is written under the
    /// operation's lock.
    ///
    /// A part holds one stash: a retried part that stashed before must pick
    /// up its old snapshot ([`load_stash`](Operation::load_stash)) rather than
    /// overwrite it with what may already be half destroyed.
    ///
    /// # Errors
    ///
    /// As [`update`](Operation::update), and [`JournalError::StashRefused`]
    /// when the part is not `running` or already holds a stash.
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::{Expect, Operation, PartState, Store};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let store = Store::open(dir.path())?;
    /// let op = Operation::create(&store, "reload", ["orders"])?;
    /// let g = op.view()?.generation;
    /// let u = op.update("orders", Expect::Operation(g), PartState::Running)?;
    /// let u = op.stash("orders", Expect::Part(u.part.generation), &vec!["row 1", "row 2"])?;
    /// assert!(u.part.stash.is_some());
    /// // ... DROP TABLE orders; reload ...
    /// let back = op.load_stash::<Vec<String>>("orders")?.expect("stashed");
    /// assert_eq!(back.value().len(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stash<T: Serialize + ?Sized>(
        &self,
        part: &str,
        expect: Expect,
        snapshot: &T,
    ) -> Result<Updated, JournalError> {
        self.change(part, expect, |rec, at| {
            let refuse = |reason| JournalError::StashRefused {
                op: rec.op.clone(),
                part: rec.name.clone(),
                reason,
            };
            if rec.state != PartState::Running {
                return Err(refuse("only a running part stashes"));
            }
            if rec.stash.is_some() {
                return Err(refuse("it holds a stash already; load it instead of replacing it"));
            }
            let key = stash_key(&self.id, &rec.name);
            let opts = SaveOptions::new().kind(STASH_KIND).origin(rec.name.clone());
            let receipt = self
                .store
                .save_with(&key, snapshot, &opts)
                .map_err(|e| self.store_err(&format!("stash part `{}`", rec.name), e))?;
            let note = format!("stashed a snapshot (sha256 {})", receipt.digest);
            rec.stash = Some(receipt.digest);
            transition(rec, PartState::Running, at, Some(note));
            Ok(())
        })
    }

    /// The snapshot `part` holds, verified against the digest its record
    /// holds; `None` when it holds none.
    ///
    /// # Errors
    ///
    /// [`JournalError::UnknownPart`], [`JournalError::PartUnreadable`];
    /// [`JournalError::Store`] when the stash cannot be loaded, or is not the
    /// one the part recorded ([`Error::Replaced`]).
    ///
    /// # Examples
    ///
    /// See [`Operation::stash`].
    pub fn load_stash<T: DeserializeOwned>(
        &self,
        part: &str,
    ) -> Result<Option<Stashed<T>>, JournalError> {
        let _lock = self.lock()?;
        let state = self.read_state()?;
        let idx = self.index(&state, part)?;
        let rec = state.parts[idx].as_ref().map_err(|u| JournalError::PartUnreadable {
            op: self.id.clone(),
            unreadable: u.clone(),
        })?;
        let Some(digest) = rec.stash else {
            return Ok(None);
        };
        self.load_verified(part, digest)
            .map(Some)
            .map_err(|e| self.store_err(&format!("load the stash of part `{part}`"), e))
    }

    /// Recomputes the aggregate from every part and stores it if the parts
    /// determine it (after an unreadable record was repaired, say, or a
    /// header write failed). Bumps the generation only if the stored
    /// aggregate changed.
    ///
    /// # Errors
    ///
    /// As [`view`](Operation::view), and [`JournalError::Store`] when the
    /// header cannot be written.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// let op = safestash::Operation::create(&store, "op", ["a"])?;
    /// let view = op.refresh()?;
    /// assert_eq!(Some(view.stored), view.derivation.aggregate());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn refresh(&self) -> Result<OperationView, JournalError> {
        let lock = self.lock()?;
        let mut state = self.read_state()?;
        let derivation = state.derivation();
        if let Some(a) = derivation.aggregate() {
            if a != state.header.aggregate {
                state.generation = state.generation.next();
                state.header.generation = state.generation;
                state.header.aggregate = a;
                self.write_header(&lock, &state.header)?;
            }
        }
        Ok(state.view())
    }

    /// Aborts and undoes the operation, under its lock:
    ///
    /// 1. refuses if some part cannot be read ([`JournalError::Undetermined`]),
    ///    if a part is `running` ([`JournalError::Active`]: wait for it, or
    ///    mark it failed), or if the operation completed
    ///    ([`JournalError::Finished`]: a success is final);
    /// 2. cancels `pending` parts and makes `failed_retryable` ones `failed`;
    /// 3. restores each `completed` (or earlier `rollback_failed`) part,
    ///    latest completed first: loads its stash, checks it is the one the
    ///    part recorded, hands it to `restorer`, records `rolled_back`, then
    ///    clears the stash. A part that stashed nothing is recorded
    ///    `rolled_back` with nothing restored.
    ///
    /// It stops at the first restore that fails: that part becomes
    /// `rollback_failed` and keeps its stash, the parts after it in the
    /// order are not attempted, and the error holds the report. Every step
    /// is its own compare-and-swap write, so a crash leaves a journal that
    /// says exactly how far the rollback got; calling `rollback` again goes
    /// on from there (an operation already rolled back is a no-op).
    ///
    /// The stash handed to `restorer` has the part's name as its origin
    /// (`stashed.meta().header.origin()`).
    ///
    /// # Errors
    ///
    /// The refusals above; [`JournalError::RollbackIncomplete`] when a
    /// restore fails; [`JournalError::Store`] when a read or write fails.
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::{Aggregate, Expect, Operation, PartState, RollbackOutcome, Stashed, Store};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let store = Store::open(dir.path())?;
    /// let op = Operation::create(&store, "reload", ["orders", "customers"])?;
    ///
    /// // `orders` stashes, destroys and completes; `customers` fails.
    /// let g = op.view()?.generation;
    /// let u = op.update("orders", Expect::Operation(g), PartState::Running)?;
    /// let u = op.stash("orders", Expect::Operation(u.generation), &"orders before")?;
    /// let u = op.update("orders", Expect::Operation(u.generation), PartState::Completed)?;
    /// let u = op.update("customers", Expect::Operation(u.generation), PartState::Failed)?;
    /// assert_eq!(u.stored, Aggregate::NeedsRollback);
    ///
    /// let mut restored = Vec::new();
    /// let report = op.rollback(&mut |s: Stashed<String>| -> Result<(), std::io::Error> {
    ///     restored.push(s.into_value());
    ///     Ok(())
    /// })?;
    /// assert_eq!(restored, ["orders before"]);
    /// assert_eq!(report.outcome("orders"), Some(&RollbackOutcome::Restored));
    /// assert_eq!(report.derivation.aggregate(), Some(Aggregate::Failed)); // terminal now
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn rollback<T, R>(&self, restorer: &mut R) -> Result<RollbackReport, JournalError>
    where
        T: DeserializeOwned,
        R: Restorer<T>,
    {
        let lock = self.lock()?;
        let mut state = self.read_state()?;
        let unreadable = state.unreadable();
        if !unreadable.is_empty() {
            return Err(JournalError::Undetermined { op: self.id.clone(), unreadable });
        }
        if let Some(Aggregate::Completed) = state.finished() {
            return Err(JournalError::Finished {
                op: self.id.clone(),
                aggregate: Aggregate::Completed,
            });
        }
        let running: Vec<String> = (0..state.parts.len())
            .map(|i| state.record(i))
            .filter(|r| r.state == PartState::Running)
            .map(|r| r.name.clone())
            .collect();
        if !running.is_empty() {
            return Err(JournalError::Active { op: self.id.clone(), parts: running });
        }
        tracing::info!(op = %self.id, "rolling back");
        let mut outcomes = Vec::new();

        // Settle what has not finished: nothing may start after this.
        for idx in 0..state.parts.len() {
            let (to, note, outcome) = match state.record(idx).state {
                PartState::Pending => {
                    (PartState::Cancelled, "cancelled by rollback", RollbackOutcome::Cancelled)
                }
                PartState::FailedRetryable => (
                    PartState::Failed,
                    "retry abandoned: operation rolled back",
                    RollbackOutcome::Abandoned,
                ),
                _ => continue,
            };
            let part = self.step(&lock, &mut state, idx, to, note.to_owned())?;
            outcomes.push(PartRollback { part, outcome });
        }

        // A crash between recording a restore and clearing its stash leaves
        // the stash behind; it is no longer needed.
        for idx in 0..state.parts.len() {
            let rec = state.record(idx);
            if let (PartState::RolledBack, Some(digest)) = (rec.state, rec.stash) {
                self.clear_stash(&rec.name, digest)?;
            }
        }

        // Undo completed parts, latest completed first.
        let mut targets: Vec<usize> = (0..state.parts.len())
            .filter(|&i| {
                matches!(state.record(i).state, PartState::Completed | PartState::RollbackFailed)
            })
            .collect();
        targets.sort_by_key(|&i| std::cmp::Reverse((state.record(i).completed_at, i)));
        let mut failure: Option<(String, Error)> = None;
        for idx in targets {
            let rec = state.record(idx).clone();
            if failure.is_some() {
                outcomes
                    .push(PartRollback { part: rec.name, outcome: RollbackOutcome::NotAttempted });
                continue;
            }
            let Some(digest) = rec.stash else {
                let note = "nothing was stashed: nothing to restore".to_owned();
                let part = self.step(&lock, &mut state, idx, PartState::RolledBack, note)?;
                outcomes.push(PartRollback { part, outcome: RollbackOutcome::NothingToRestore });
                continue;
            };
            match self.restore_part(&rec.name, digest, restorer) {
                Ok(()) => {
                    let note = format!("restored from stash sha256 {digest}");
                    let part = self.step(&lock, &mut state, idx, PartState::RolledBack, note)?;
                    tracing::info!(op = %self.id, part = %part, "part rolled back");
                    self.clear_stash(&part, digest)?;
                    outcomes.push(PartRollback { part, outcome: RollbackOutcome::Restored });
                }
                Err(e) => {
                    let error = describe(&e);
                    tracing::warn!(op = %self.id, part = %rec.name, error = %error, "restore failed; stash kept");
                    let part = self.step(
                        &lock,
                        &mut state,
                        idx,
                        PartState::RollbackFailed,
                        format!("restore failed: {error}"),
                    )?;
                    outcomes.push(PartRollback {
                        part: part.clone(),
                        outcome: RollbackOutcome::RestoreFailed { error },
                    });
                    failure = Some((part, e));
                }
            }
        }
        let report = RollbackReport {
            op: self.id.clone(),
            outcomes,
            generation: state.generation,
            derivation: state.derivation(),
        };
        match failure {
            None => Ok(report),
            Some((part, source)) => Err(JournalError::RollbackIncomplete {
                op: self.id.clone(),
                part,
                report: Box::new(report),
                source: Box::new(source),
            }),
        }
    }

    // --- internals --------------------------------------------------------

    fn store_err(&self, what: &str, source: Error) -> JournalError {
        JournalError::Store { op: self.id.clone(), what: what.to_owned(), source: Box::new(source) }
    }

    fn lock(&self) -> Result<KeyLock<'s, F>, JournalError> {
        self.store.lock(&self.key).map_err(|e| self.store_err("lock", e))
    }

    fn read_header(&self) -> Result<HeaderRecord, JournalError> {
        let header = match self.store.load::<HeaderRecord>(&self.key) {
            Ok(Some(stashed)) => stashed.into_value(),
            Ok(None) => return Err(JournalError::NotFound { op: self.id.clone() }),
            Err(e) => return Err(self.store_err("read the header", e)),
        };
        let bad = |reason: String| JournalError::BadHeader { op: self.id.clone(), reason };
        if header.format != RECORD_FORMAT {
            return Err(bad(format!("record format {}; this build reads 1", header.format)));
        }
        if header.op != self.id {
            return Err(bad(format!("it describes operation `{}`", header.op)));
        }
        let distinct: BTreeSet<&String> = header.parts.iter().collect();
        if header.parts.is_empty() || distinct.len() != header.parts.len() {
            return Err(bad("its part list is empty or repeats a part".to_owned()));
        }
        Ok(header)
    }

    fn read_part(&self, name: &str) -> Result<PartInfo, Unreadable> {
        let unreadable = |reason: String| Unreadable { part: name.to_owned(), reason };
        let rec = match self.store.load::<PartInfo>(&part_key(&self.id, name)) {
            Ok(Some(stashed)) => stashed.into_value(),
            Ok(None) => return Err(unreadable("its record is missing".to_owned())),
            Err(e) => return Err(unreadable(describe(&e))),
        };
        if rec.format != RECORD_FORMAT {
            return Err(unreadable(format!("record format {}; this build reads 1", rec.format)));
        }
        if rec.op != self.id || rec.name != name {
            return Err(unreadable(format!(
                "the record belongs to part `{}` of operation `{}`",
                rec.name, rec.op
            )));
        }
        Ok(rec)
    }

    /// Reads the header and every part. Call with the lock held.
    fn read_state(&self) -> Result<State, JournalError> {
        let header = self.read_header()?;
        let parts: Vec<_> = header.parts.iter().map(|name| self.read_part(name)).collect();
        let generation = parts
            .iter()
            .filter_map(|p| p.as_ref().ok().map(|r| r.op_generation))
            .fold(header.generation, Generation::max);
        Ok(State { header, parts, generation })
    }

    fn index(&self, state: &State, part: &str) -> Result<usize, JournalError> {
        state
            .header
            .parts
            .iter()
            .position(|p| p == part)
            .ok_or_else(|| JournalError::UnknownPart { op: self.id.clone(), part: part.to_owned() })
    }

    fn write_part(&self, rec: &PartInfo) -> Result<(), JournalError> {
        let opts = SaveOptions::new().kind(PART_KIND);
        self.store
            .save_with(&part_key(&self.id, &rec.name), rec, &opts)
            .map(drop)
            .map_err(|e| self.store_err(&format!("write part `{}`", rec.name), e))
    }

    fn write_header(
        &self,
        lock: &KeyLock<'_, F>,
        header: &HeaderRecord,
    ) -> Result<(), JournalError> {
        let opts = SaveOptions::new().kind(HEADER_KIND);
        lock.save_with(header, &opts).map(drop).map_err(|e| self.store_err("write the header", e))
    }

    /// Writes `rec` as part `idx` at the next generation, then the header.
    fn commit(
        &self,
        lock: &KeyLock<'_, F>,
        state: &mut State,
        idx: usize,
        mut rec: PartInfo,
    ) -> Result<(), JournalError> {
        let at = state.generation.next();
        rec.generation = rec.generation.next();
        rec.op_generation = at;
        rec.updates += 1;
        self.write_part(&rec)?;
        state.parts[idx] = Ok(rec);
        state.generation = at;
        state.header.generation = at;
        if let Some(a) = state.derivation().aggregate() {
            state.header.aggregate = a;
        }
        self.write_header(lock, &state.header)
    }

    /// One rollback step: part `idx` to `to`, committed. Returns its name.
    fn step(
        &self,
        lock: &KeyLock<'_, F>,
        state: &mut State,
        idx: usize,
        to: PartState,
        note: String,
    ) -> Result<String, JournalError> {
        let mut rec = state.record(idx).clone();
        debug_assert!(rec.state.can_become(to), "{} -> {to}", rec.state);
        transition(&mut rec, to, state.generation.next(), Some(note));
        let name = rec.name.clone();
        self.commit(lock, state, idx, rec)?;
        Ok(name)
    }

    /// The compare-and-swap every change goes through.
    fn change(
        &self,
        part: &str,
        expect: Expect,
        apply: impl FnOnce(&mut PartInfo, Generation) -> Result<(), JournalError>,
    ) -> Result<Updated, JournalError> {
        let lock = self.lock()?;
        let mut state = self.read_state()?;
        let idx = self.index(&state, part)?;
        let conflict = |found| JournalError::Conflict {
            op: self.id.clone(),
            part: part.to_owned(),
            expected: expect,
            found,
        };
        if let Expect::Operation(g) = expect {
            if g != state.generation {
                return Err(conflict(state.generation));
            }
        }
        let mut rec = match &state.parts[idx] {
            Ok(rec) => rec.clone(),
            Err(u) => {
                return Err(JournalError::PartUnreadable {
                    op: self.id.clone(),
                    unreadable: u.clone(),
                });
            }
        };
        if let Expect::Part(g) = expect {
            if g != rec.generation {
                return Err(conflict(rec.generation));
            }
        }
        if let Some(aggregate) = state.finished() {
            return Err(JournalError::Finished { op: self.id.clone(), aggregate });
        }
        apply(&mut rec, state.generation.next())?;
        self.commit(&lock, &mut state, idx, rec)?;
        let derivation = state.derivation();
        if let Derivation::Undetermined { unreadable, .. } = &derivation {
            tracing::warn!(
                op = %self.id,
                unreadable = %list_unreadable(unreadable),
                stored = %state.header.aggregate,
                "aggregate undetermined; stored aggregate left as it was"
            );
        }
        Ok(Updated {
            generation: state.generation,
            part: state.record(idx).clone(),
            derivation,
            stored: state.header.aggregate,
        })
    }

    fn load_verified<T: DeserializeOwned>(
        &self,
        part: &str,
        digest: Digest,
    ) -> Result<Stashed<T>, Error> {
        let key = stash_key(&self.id, part);
        match self.store.load::<T>(&key)? {
            Some(stashed) if stashed.meta().digest == digest => Ok(stashed),
            _ => Err(Error::Replaced { path: self.store.path_of(&key), key, expected: digest }),
        }
    }

    fn restore_part<T, R>(&self, part: &str, digest: Digest, restorer: &mut R) -> Result<(), Error>
    where
        T: DeserializeOwned,
        R: Restorer<T>,
    {
        let stashed = self.load_verified::<T>(part, digest)?;
        restorer.restore(stashed).map_err(|e| {
            let key = stash_key(&self.id, part);
            Error::Restore { path: self.store.path_of(&key), key, source: e.into() }
        })
    }

    fn clear_stash(&self, part: &str, digest: Digest) -> Result<(), JournalError> {
        self.store
            .clear_if(&stash_key(&self.id, part), &digest)
            .map(drop)
            .map_err(|e| self.store_err(&format!("clear the stash of part `{part}`"), e))
    }
}

// ---------------------------------------------------------------------------
// serde helpers
// ---------------------------------------------------------------------------

mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_nanos(*t))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}

mod opt_digest {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::digest::Digest;

    pub(super) fn serialize<S: Serializer>(d: &Option<Digest>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.collect_str(d),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Digest>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| s.parse::<Digest>().map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PartState::*;

    #[test]
    fn keys_are_injective_over_id_and_part() {
        // Without escaping, both would be `op.a.part.b.part.c`.
        assert_ne!(part_key("a.part.b", "c"), part_key("a", "b.part.c"));
        assert_ne!(part_key("a%2Eb", "c"), part_key("a.b", "c"));
        assert_ne!(header_key("a.part.b"), part_key("a", "b"));
        assert_ne!(part_key("a", "b"), stash_key("a", "b"));
        assert_eq!(part_key("deploy", "eu-west").as_str(), "op.deploy.part.eu-west");
        // Long names still give valid keys (hashed by `from_any`).
        let long = "x".repeat(MAX_NAME_LEN);
        assert!(StashKey::new(part_key(&long, &long).as_str()).is_ok());
    }

    #[test]
    fn a_set_determines_the_aggregate() {
        let set: StateSet = [Running, Completed, Running].into_iter().collect();
        assert!(set.has(Running) && set.has(Completed) && !set.has(Pending));
        assert_eq!(aggregate_of(set), aggregate([Completed, Running]));
    }

    #[test]
    fn only_rollback_failed_survives_any_unknown_sibling() {
        for fill in 0u16..(1 << 8) {
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
    fn history_keeps_the_latest_entries() {
        let mut rec = PartInfo {
            format: RECORD_FORMAT,
            op: "o".into(),
            name: "p".into(),
            state: Pending,
            generation: Generation(1),
            op_generation: Generation(1),
            completed_at: None,
            stash: None,
            updates: 0,
            history: Vec::new(),
        };
        for g in 0..(MAX_HISTORY as u64 + 10) {
            transition(&mut rec, Running, Generation(g), Some("é".repeat(MAX_NOTE_LEN)));
        }
        assert_eq!(rec.history.len(), MAX_HISTORY);
        assert_eq!(rec.history[0].generation, Generation(10));
        let note = rec.history[0].note.as_ref().unwrap();
        assert!(note.len() <= MAX_NOTE_LEN && note.chars().all(|c| c == 'é'));
    }

    #[test]
    fn records_round_trip_through_json() {
        let mut rec = PartInfo {
            format: RECORD_FORMAT,
            op: "o".into(),
            name: "p".into(),
            state: Pending,
            generation: Generation(1),
            op_generation: Generation(1),
            completed_at: None,
            stash: Some(Digest::of(b"x")),
            updates: 0,
            history: Vec::new(),
        };
        transition(&mut rec, Completed, Generation(2), None);
        let json = serde_json::to_string(&rec).unwrap();
        assert!(json.contains(r#""state":"completed""#), "{json}");
        assert!(json.contains(&Digest::of(b"x").to_string()), "{json}");
        assert_eq!(serde_json::from_str::<PartInfo>(&json).unwrap(), rec);
        assert_eq!(rec.completed_at, Some(Generation(2)));
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
