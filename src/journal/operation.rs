//! [`Operation`]: the journal's I/O. Every change is a compare-and-swap
//! under the operation's lock, writing records through the [`Store`]. A
//! part's stash is in `stash.rs`, the rollback in `rollback.rs`.

use std::collections::BTreeSet;
use std::fmt;
use std::time::SystemTime;

use super::error::JournalError;
use super::keys::{JOURNAL_NS, check_name, header_key, part_key, stash_key};
#[cfg(doc)]
use super::record::MAX_HISTORY;
use super::record::{
    Change, Expect, Generation, HeaderRecord, OperationView, PartInfo, RECORD_FORMAT, Updated,
    transition,
};
#[cfg(doc)]
use super::state::aggregate;
use super::state::{Aggregate, Derivation, PartState, Unreadable};
use crate::digest::Digest;
use crate::fs::{Fs, OsFs};
use crate::key::StashKey;
use crate::meta::SaveOptions;
#[cfg(doc)]
use crate::store::Restorer;
use crate::store::Store;

/// The most parts an operation may have.
const MAX_PARTS: usize = 4096;
pub(super) const HEADER_KIND: &str = "journal/operation";
pub(super) const PART_KIND: &str = "journal/part";
pub(super) const STASH_KIND: &str = "journal/stash";

/// The state of an operation as read under its lock.
pub(super) struct State {
    pub(super) header: HeaderRecord,
    pub(super) parts: Vec<Result<PartInfo, Unreadable>>,
    /// The digest of each readable part's record as read: a part's record
    /// is replaced only if it is still that one.
    pub(super) digests: Vec<Option<Digest>>,
    pub(super) generation: Generation,
}

impl State {
    pub(super) fn derivation(&self) -> Derivation {
        Derivation::of(
            self.parts.iter().map(|p| p.as_ref().map(PartInfo::status).map_err(Clone::clone)),
        )
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
    pub(super) fn finished(&self) -> Option<Aggregate> {
        match self.derivation() {
            Derivation::Known(a) if a.is_terminal() => Some(a),
            _ => Some(self.header.aggregate).filter(|a| a.is_terminal()),
        }
    }

    pub(super) fn unreadable(&self) -> Vec<Unreadable> {
        self.parts.iter().filter_map(|p| p.as_ref().err().cloned()).collect()
    }

    pub(super) fn record(&self, idx: usize) -> &PartInfo {
        self.parts[idx].as_ref().expect("checked readable")
    }
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
/// use safestash::{Store, journal::{Aggregate, Derivation, Expect, JournalError, Operation, PartState}};
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
/// A part record that is missing, damaged ([`Error::Corrupt`](crate::Error::Corrupt)), of an unknown
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
/// Every record a change writes (the part's, a part's stash, the header)
/// goes through the held lock's fencing, and a part's record and stash are
/// written only over what the change read. On a shared store a holder can
/// lose its lock without knowing (a lease that ran out while it was
/// paused, on object storage; a lock session that died, on PostgreSQL):
/// when it resumes, its writes are refused, and the newer holder's updates
/// stand.
///
/// # Rollback across parts
///
/// [`Operation::rollback`] aborts and undoes: it settles what has not
/// finished, then restores every part that holds a stash, whatever its
/// state, through a [`Restorer`], clearing each stash only after its
/// restore succeeded; an operation is never terminal while a stash of one
/// of its parts is unrestored. The rules, and what a crash or a failing
/// restore leaves, are at [`rollback`](Operation::rollback); which states a
/// rollback moves parts to is at [`PartState`].
///
/// # Limitations
///
/// - The parts are fixed when the operation is created.
/// - Restore hooks must be idempotent: a crash between a restore and the
///   record of it makes the next rollback restore that part again.
/// - Each part keeps its last [`MAX_HISTORY`] transitions
///   ([`PartInfo::updates`] counts them all); the stashes of an operation
///   that completed are kept until discarded ([`Operation::discard_stash`]).
/// - Readers take the operation's lock too, so they need write access to the
///   store's directory (for the lock file) and wait while a rollback runs
///   (except inside that rollback's own restore hooks, on its thread).
///
/// # Examples
///
/// A worker's loop: read, decide, compare-and-swap, retry on conflict.
///
/// ```
/// use safestash::{Store, journal::{Expect, JournalError, Operation, PartState}};
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
pub struct Operation<F: Fs = OsFs> {
    /// The namespace `journal`, for the operation's own records (header,
    /// part records, lock): user observers never see them.
    pub(super) records: Store<F>,
    /// The same namespace, for the parts' stashes (user data): their saves,
    /// clears and restores reach the store's observers.
    pub(super) stashes: Store<F>,
    pub(super) id: String,
    pub(super) key: StashKey,
}

impl<F: Fs> fmt::Debug for Operation<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Operation").field("id", &self.id).field("key", &self.key).finish()
    }
}

impl<F: Fs> Operation<F> {
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
    /// use safestash::{Store, journal::{JournalError, Operation}};
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
    pub fn create<I>(store: &Store<F>, id: &str, parts: I) -> Result<Operation<F>, JournalError>
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
        let op = Operation::handle(store, id);
        let lock = op.lock("create")?;
        match op.records.load::<serde::de::IgnoredAny>(&op.key) {
            Ok(None) => {}
            Ok(Some(_)) => return Err(JournalError::AlreadyExists { op: op.id }),
            Err(e) => return Err(op.store_err("read the existing header", e)),
        }
        let first = Generation::new(1);
        let records: Vec<PartInfo> = parts
            .iter()
            .map(|part| PartInfo {
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
            })
            .collect();
        // Every part record in one batch (one directory fsync), durable
        // before the header that makes the operation exist.
        let opts = SaveOptions::new().kind(PART_KIND);
        let mut batch = op.records.batch_under(&lock);
        for rec in &records {
            batch
                .add(&part_key(&op.id, &rec.name), rec, &opts)
                .map_err(|e| op.store_err(&format!("write part `{}`", rec.name), e))?;
        }
        batch.commit().map_err(|e| op.store_err("write the part records", e.into()))?;
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
    /// safestash::journal::Operation::create(&store, "op", ["a"])?;
    /// let op = safestash::journal::Operation::open(&store, "op")?;
    /// assert_eq!(op.parts()?, ["a"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(store: &Store<F>, id: &str) -> Result<Operation<F>, JournalError> {
        check_name("operation id", id)?;
        let op = Operation::handle(store, id);
        op.read_header()?;
        Ok(op)
    }

    /// A handle on operation `id` of `store`, reading and writing nothing.
    fn handle(store: &Store<F>, id: &str) -> Operation<F> {
        Operation {
            records: store.reserved(JOURNAL_NS, false),
            stashes: store.reserved(JOURNAL_NS, true),
            id: id.to_owned(),
            key: header_key(id),
        }
    }

    /// The operation's id.
    ///
    /// # Examples
    ///
    /// See [`Operation::create`].
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The store that holds this operation's records and its parts'
    /// stashes: the reserved namespace `journal` of the store it was opened
    /// on (see [`Store::namespace`]). User keys cannot collide with its keys,
    /// and tools over the user's stashes (the CLI's `gc`, [`Store::list`])
    /// never reach them. Read it to inspect; write through the operation.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let store = safestash::Store::open(dir.path())?;
    /// let op = safestash::journal::Operation::create(&store, "nightly", ["orders"])?;
    /// assert_eq!(op.records().dir(), dir.path().join(".ns.journal"));
    /// assert!(op.records().load::<serde_json::Value>(op.key())?.is_some());
    /// assert!(store.list()?.is_empty()); // not among the user's stashes
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn records(&self) -> &Store<F> {
        &self.records
    }

    /// The key of the operation's header (and of its lock).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// let op = safestash::journal::Operation::create(&store, "nightly.v2", ["orders"])?;
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
    /// Inside a restore hook of this operation's own rollback (on the
    /// rollback's thread) it reads without taking the lock again: the
    /// rollback holds it and writes nothing while its hook runs.
    ///
    /// # Examples
    ///
    /// See [`OperationView`].
    pub fn view(&self) -> Result<OperationView, JournalError> {
        let _lock = self.read_lock()?;
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
    /// - [`JournalError::RestoreRequired`] for `rolled_back`: only
    ///   [`rollback`](Operation::rollback) records it, after restoring the
    ///   part's stash, so no stash is ever dropped unrestored;
    /// - [`JournalError::Transition`] when the part cannot make this change
    ///   ([`PartState::can_become`]);
    /// - [`JournalError::InsideRestoreHook`] from inside a restore hook of
    ///   this operation's rollback.
    ///
    /// [`JournalError::Store`] when a read or write fails. If the header
    /// write fails after the part's record was written, the change is made
    /// (a later view shows it, and its generation counts) but the stored
    /// aggregate is stale until the next change or [`Operation::refresh`].
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::{Store, journal::{Aggregate, Change, Expect, Operation, PartState}};
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
        self.change(part, expect, "update", false, |rec, at, _| {
            if to == PartState::RolledBack {
                return Err(JournalError::RestoreRequired {
                    op: rec.op.clone(),
                    part: rec.name.clone(),
                });
            }
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
    /// let op = safestash::journal::Operation::create(&store, "op", ["a"])?;
    /// let view = op.refresh()?;
    /// assert_eq!(Some(view.stored), view.derivation.aggregate());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn refresh(&self) -> Result<OperationView, JournalError> {
        let lock = self.lock("refresh")?;
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
}
