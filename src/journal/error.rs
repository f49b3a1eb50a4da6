//! What can go wrong with an operation.

#[cfg(doc)]
use super::Operation;
use super::record::{Expect, Generation, RollbackReport};
use super::state::{Aggregate, PartState, Unreadable};
use crate::error::Error;

/// Everything that can go wrong with an [`Operation`].
///
/// # Examples
///
/// ```
/// use safestash::{Store, journal::{JournalError, Operation}};
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
    /// A stash is taken only by a running part that holds none yet, and
    /// discarded only from a part that holds one.
    #[error("part `{part}` of operation `{op}` cannot stash or discard: {reason}")]
    StashRefused {
        /// The operation's id.
        op: String,
        /// The part.
        part: String,
        /// Why.
        reason: &'static str,
    },
    /// An update asked for `rolled_back`: only [`Operation::rollback`]
    /// records it, after restoring the part's stash (or finding none), so a
    /// stash is never dropped unrestored. Nothing was written. To give up a
    /// stash on purpose, use [`Operation::discard_stash`].
    #[error(
        "part `{part}` of operation `{op}` cannot be marked rolled_back by an update; \
         only a rollback records it, after restoring the part's stash"
    )]
    RestoreRequired {
        /// The operation's id.
        op: String,
        /// The part.
        part: String,
    },
    /// A restore hook of this operation's rollback called back into the
    /// operation with a call that changes it (or takes its lock). Reading
    /// ([`Operation::view`], [`Operation::load_stash`], [`Operation::parts`])
    /// works from inside a hook; changes wait until the rollback returns.
    #[error(
        "`{call}` on operation `{op}` was called from inside one of its own restore hooks; \
         only view, load_stash and parts work there"
    )]
    InsideRestoreHook {
        /// The operation's id.
        op: String,
        /// The call refused.
        call: &'static str,
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

pub(super) fn list_unreadable(unreadable: &[Unreadable]) -> String {
    unreadable.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// An error and its causes, on one line.
pub(super) fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// Parsing a part state from its name (`"completed"`, ...): the error is
/// the journal's, so the impl lives beside it.
impl std::str::FromStr for PartState {
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
