//! Multi-part operations: a durable journal whose aggregate state never lies,
//! and whose rollback never abandons a stash.
//!
//! The documentation of each piece is on the re-exported items:
//! [`Operation`] (motivation, storage layout, compare-and-swap, fail-closed
//! derivation), [`PartState`] (the states and which are terminal),
//! [`aggregate`] (the precedence table) and [`Operation::rollback`].
//!
//! # Part states
//!
//! | state | meaning | terminal | moved there by |
//! |---|---|---|---|
//! | `pending` | not started | no | creation, `update` |
//! | `running` | a worker is on it | no | `update` |
//! | `failed_retryable` | failed; a retry may run it again | no | `update` |
//! | `completed` | done; may still be rolled back | yes | `update` |
//! | `failed` | failed for good | yes, unless it holds a stash | `update`, `rollback` (abandons a retry) |
//! | `cancelled` | stopped before it finished | yes, unless it holds a stash | `update`, `rollback` (a pending part) |
//! | `rolled_back` | a rollback restored its stash, or found none | yes | `rollback` only |
//! | `rollback_failed` | restoring its stash failed; the stash is kept | no | `rollback` (or `update` from `completed`) |
//!
//! A part *holds a stash* ([`PartInfo::holds_stash`]) from
//! [`Operation::stash`] until a rollback restores it or the caller discards
//! it with [`Operation::discard_stash`], whatever states it moves through in
//! between. The operation's aggregate ([`aggregate_parts`]) counts a
//! `failed` or `cancelled` part that holds a stash as needing a rollback:
//! it is never terminal while such a stash is unrestored.
//!
//! # Rollback
//!
//! [`Operation::rollback`] settles the parts (pending ones `cancelled`,
//! retryable ones `failed`), then restores **every part that holds a
//! stash, whatever its state** (completed, failed-retryable, failed after
//! its worker was abandoned, cancelled, rollback-failed) and records
//! `rolled_back` for completed parts that stashed nothing. Each restore is
//! one step: load the stash, check its digest against the part's record,
//! run the restore hook, record `rolled_back`, and only then clear the stash
//! if it is still that one. When a restore fails the part is
//! `rollback_failed`, its stash and those of the parts not yet attempted are
//! kept, the aggregate stays non-terminal, and the report names the parts
//! still holding unrestored data ([`RollbackReport::unrestored`]); a second
//! rollback retries what is left.
//!
//! So a stash is only ever removed by the step that restored it, or by an
//! explicit [`Operation::discard_stash`]: an `update` cannot mark a part
//! `rolled_back` ([`JournalError::RestoreRequired`]), and the journal never
//! deletes a stash it did not restore. A power cut anywhere in a rollback
//! leaves either the part's data restored or the operation non-terminal
//! with the stash in place; the next rollback goes on from there.
//!
//! A restore hook runs under the operation's lock. From inside it, reading
//! the operation ([`Operation::view`], [`Operation::load_stash`]) works;
//! changing it returns [`JournalError::InsideRestoreHook`]. Nothing waits
//! on the lock the rollback itself holds.
//!
//! # Layout of this module
//!
//! - `state`: the pure state fold (part states, aggregate, derivation);
//! - `record`: records, views, reports;
//! - `error`: [`JournalError`];
//! - `keys`: how records and stashes are named in the store;
//! - `operation`: [`Operation`] and its compare-and-swap;
//! - `stash`: a part's stash: take, load, discard;
//! - `rollback`: [`Operation::rollback`] and its verified-restore step.

mod cas;
mod error;
mod keys;
mod operation;
mod record;
mod rollback;
mod stash;
mod state;

pub use error::JournalError;
pub use operation::Operation;
pub use record::{
    Change, Expect, Generation, MAX_HISTORY, OperationView, PartInfo, PartRollback,
    RollbackOutcome, RollbackReport, Transition, Updated,
};
pub use state::{
    Aggregate, Derivation, PartState, PartStatus, Unreadable, aggregate, aggregate_parts,
};
