//! The journal's records and what callers see of them: generations,
//! expectations and changes, part records and their history, views,
//! update results and rollback reports.

use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::state::Aggregate;
use super::state::{Derivation, PartState, PartStatus, Unreadable};
#[cfg(doc)]
use super::{JournalError, Operation};
use crate::digest::Digest;

/// The version of the journal's records (inside the store's own envelope).
pub(super) const RECORD_FORMAT: u32 = 1;
/// Notes longer than this are cut (at a character boundary).
pub(super) const MAX_NOTE_LEN: usize = 1024;
/// How many transitions each part record keeps (the most recent ones).
///
/// # Examples
///
/// ```
/// assert_eq!(safestash::journal::MAX_HISTORY, 100);
/// ```
pub const MAX_HISTORY: usize = 100;

/// A generation number: of a whole operation (bumped by every change to
/// it) or of one part (bumped by every change to that part). The token of
/// compare-and-swap ([`Expect`]).
///
/// # Examples
///
/// ```
/// use safestash::journal::Generation;
/// assert!(Generation::new(2) > Generation::new(1));
/// assert_eq!(Generation::new(7).get(), 7);
/// assert_eq!(Generation::new(7).to_string(), "7");
/// ```
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Generation(pub(super) u64);

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

    pub(super) fn next(self) -> Generation {
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
/// use safestash::{Store, journal::{Expect, Operation, PartState}};
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
/// use safestash::journal::{Change, PartState};
///
/// let change = Change::to(PartState::Running).note("worker 3 on host-a");
/// assert_eq!(change.state(), PartState::Running);
/// let plain: Change = PartState::Completed.into();
/// assert_eq!(plain.note_text(), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub(super) to: PartState,
    pub(super) note: Option<String>,
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
/// use safestash::{Store, journal::{Expect, Operation, PartState}};
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
/// use safestash::{Store, journal::{Operation, PartState}};
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
    pub(super) format: u32,
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
    /// and the digest stays as the record of what was restored; a stash
    /// discarded on request ([`Operation::discard_stash`]) leaves `None`.
    #[serde(with = "opt_digest")]
    pub stash: Option<Digest>,
    /// How many changes the part has had (the history keeps the last
    /// [`MAX_HISTORY`]).
    pub updates: u64,
    /// Its most recent changes, oldest first.
    pub history: Vec<Transition>,
}

impl PartInfo {
    /// Whether the part holds a stash that no rollback has restored: it
    /// recorded a snapshot, and is not `rolled_back`. Such a part's resource
    /// may be half destroyed: [`Operation::rollback`] restores it, whatever
    /// the part's state, and the operation is never terminal while a
    /// `failed` or `cancelled` part holds one. Only the rollback that
    /// restored a stash, or [`Operation::discard_stash`], removes it.
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::{Store, journal::{Expect, Operation, PartState}};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let store = Store::open(dir.path())?;
    /// let op = Operation::create(&store, "op", ["a"])?;
    /// let u = op.update("a", Expect::Operation(op.view()?.generation), PartState::Running)?;
    /// assert!(!u.part.holds_stash());
    /// let u = op.stash("a", Expect::Part(u.part.generation), &"before")?;
    /// assert!(u.part.holds_stash());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn holds_stash(&self) -> bool {
        self.stash.is_some() && self.state != PartState::RolledBack
    }

    /// The part as the aggregate sees it.
    pub(super) fn status(&self) -> PartStatus {
        PartStatus::new(self.state, self.holds_stash())
    }
}

/// What the header (`op.ID`) holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct HeaderRecord {
    pub(super) format: u32,
    pub(super) op: String,
    pub(super) parts: Vec<String>,
    pub(super) aggregate: Aggregate,
    pub(super) generation: Generation,
    #[serde(with = "rfc3339")]
    pub(super) created: SystemTime,
}

/// An operation as read under its lock: every part, and what they add up to.
///
/// # Examples
///
/// ```
/// use safestash::{Store, journal::{Aggregate, Derivation, Operation}};
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
/// use safestash::{Store, journal::{Aggregate, Expect, Operation, PartState}};
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
/// assert_eq!(safestash::journal::RollbackOutcome::Restored.to_string(), "restored from its stash");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RollbackOutcome {
    /// It was pending: now `cancelled`.
    Cancelled,
    /// It was `failed_retryable`: the retry is abandoned, now `failed` (a
    /// stash it holds is then restored: a second line for the part).
    Abandoned,
    /// Its stash was restored and cleared: now `rolled_back`, whatever state
    /// it was in.
    Restored,
    /// It completed without stashing anything: now `rolled_back`, with
    /// nothing restored.
    NothingToRestore,
    /// Its restore failed: now `rollback_failed`, the stash kept.
    RestoreFailed {
        /// The error, with its causes.
        error: String,
    },
    /// Not tried, because an earlier part's restore failed: still in its
    /// state, the stash kept.
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
    /// Each part touched, in order: pending and retryable parts settled
    /// first, then every part holding a stash (and every completed part)
    /// restored: parts that never completed first, then completed parts
    /// latest-completed first. A part may have two lines (abandoned, then
    /// restored).
    pub outcomes: Vec<PartRollback>,
    /// The parts that still hold a stash no rollback has restored: their
    /// data is not back yet, and the operation stays non-terminal until a
    /// retried rollback restores them (or the caller discards the stash).
    /// Empty when the rollback got through.
    pub unrestored: Vec<String>,
    /// The operation's generation afterwards.
    pub generation: Generation,
    /// The aggregate afterwards.
    pub derivation: Derivation,
}

impl RollbackReport {
    /// The last outcome for `part` (what finally happened to it), if the
    /// rollback touched it.
    ///
    /// # Examples
    ///
    /// See [`Operation::rollback`].
    pub fn outcome(&self, part: &str) -> Option<&RollbackOutcome> {
        self.outcomes.iter().rev().find(|o| o.part == part).map(|o| &o.outcome)
    }
}

/// Records a change of `rec` to `to`, made at the operation's generation `at`.
pub(super) fn transition(rec: &mut PartInfo, to: PartState, at: Generation, note: Option<String>) {
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

// serde helpers

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
}
