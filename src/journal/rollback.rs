//! [`Operation::rollback`]: settle, then restore every part that holds a
//! stash, each through one verified-restore step ([`Operation::restore_part`]).

use std::cell::RefCell;
use std::cmp::Reverse;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::error::{JournalError, describe};
use super::keys::stash_key;
use super::operation::{Operation, State};
use super::record::{
    Generation, PartInfo, PartRollback, RollbackOutcome, RollbackReport, transition,
};
use super::state::{Aggregate, PartState};
use crate::digest::Digest;
use crate::error::BoxError;
use crate::error::Error;
use crate::fs::Fs;
use crate::meta::Stashed;
use crate::store::KeyLock;
use crate::store::{RestoreFailure, Restorer};

thread_local! {
    /// The header paths of the operations whose rollback is running a
    /// restore hook on this thread (holding the operation's lock).
    static IN_HOOK: RefCell<Vec<PathBuf>> = const { RefCell::new(Vec::new()) };
}

/// Whether this thread is inside a restore hook of the operation whose
/// header is at `path`.
pub(super) fn inside_hook(path: &Path) -> bool {
    IN_HOOK.with(|held| held.borrow().iter().any(|p| p == path))
}

/// Marks this thread as inside a restore hook of one operation until
/// dropped (also when the hook panics).
struct HookScope;

impl HookScope {
    fn enter(path: PathBuf) -> HookScope {
        IN_HOOK.with(|held| held.borrow_mut().push(path));
        HookScope
    }
}

impl Drop for HookScope {
    fn drop(&mut self) {
        IN_HOOK.with(|held| held.borrow_mut().pop());
    }
}

/// The note a rollback records with `rolled_back` after restoring the stash
/// with `digest`.
fn restored_note(digest: Digest) -> String {
    format!("restored from stash sha256 {digest}")
}

/// Whether `rec`'s last change is a rollback's record of restoring the
/// stash with `digest` (`rolled_back` is final, so it stays the last).
fn restored(rec: &PartInfo, digest: Digest) -> bool {
    rec.history.last().and_then(|t| t.note.as_deref()) == Some(restored_note(digest).as_str())
}

/// What [`Operation::restore_part`] did.
enum Restore {
    /// Restored, recorded `rolled_back`, stash cleared.
    Restored,
    /// Recorded `rolled_back` by an earlier rollback: only the clear was left.
    AlreadyRestored,
    /// Not restored: recorded `rollback_failed`, stash kept.
    Failed(Error),
}

impl<F: Fs> Operation<F> {
    /// Aborts and undoes the operation, under its lock:
    ///
    /// 1. refuses if some part cannot be read ([`JournalError::Undetermined`]),
    ///    if a part is `running` ([`JournalError::Active`]: wait for it, or
    ///    mark it `failed` if its worker is gone; its stash is then restored
    ///    like any other), or if the operation completed
    ///    ([`JournalError::Finished`]: a success is final);
    /// 2. cancels `pending` parts and makes `failed_retryable` ones `failed`,
    ///    so nothing starts again;
    /// 3. restores every part that holds a stash
    ///    ([`PartInfo::holds_stash`](super::PartInfo::holds_stash)),
    ///    **whatever its state** — completed, failed-retryable (now failed),
    ///    failed, cancelled, or rollback-failed — parts that never completed
    ///    first, then completed parts latest completed first. Each restore
    ///    loads the stash, checks it is the one the part recorded (its
    ///    digest), hands it to `restorer`, records `rolled_back`, and only
    ///    then clears the stash, and only if it is still that stash
    ///    ([`Store::clear_if`](crate::Store::clear_if)). A completed part that
    ///    stashed nothing is recorded `rolled_back` with nothing restored.
    ///
    /// It stops at the first restore that fails: that part becomes
    /// `rollback_failed` and keeps its stash, the parts after it in the
    /// order are not attempted (their stashes kept), the operation stays
    /// non-terminal, and the error holds the report, whose
    /// [`unrestored`](RollbackReport::unrestored) names every part whose data
    /// is not back. An operation is never terminal while a stash of one of
    /// its parts is unrestored. Every step is its own compare-and-swap write,
    /// so a crash leaves a journal that says exactly how far the rollback
    /// got; calling `rollback` again retries what is left (an operation
    /// already rolled back is a no-op).
    ///
    /// The stash handed to `restorer` has the part's name as its origin
    /// (`stashed.meta().header.origin()`). The hook runs under the
    /// operation's lock: from inside it, [`view`](Operation::view),
    /// [`load_stash`](Operation::load_stash) and [`parts`](Operation::parts)
    /// work, and calls that change the operation return
    /// [`JournalError::InsideRestoreHook`] (rather than wait for the lock
    /// this very rollback holds).
    ///
    /// # Errors
    ///
    /// The refusals above; [`JournalError::RollbackIncomplete`] when a
    /// restore fails; [`JournalError::InsideRestoreHook`] when called from a
    /// restore hook of this operation; [`JournalError::Store`] when a read or
    /// write fails.
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::{Stashed, Store, journal::{Aggregate, Expect, Operation, PartState, RollbackOutcome}};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let store = Store::open(dir.path())?;
    /// let op = Operation::create(&store, "reload", ["orders", "customers"])?;
    ///
    /// // `orders` stashes, destroys and completes; `customers` stashes,
    /// // destroys half, and fails retryably.
    /// let g = op.view()?.generation;
    /// let u = op.update("orders", Expect::Operation(g), PartState::Running)?;
    /// let u = op.stash("orders", Expect::Operation(u.generation), &"orders before")?;
    /// let u = op.update("orders", Expect::Operation(u.generation), PartState::Completed)?;
    /// let u = op.update("customers", Expect::Operation(u.generation), PartState::Running)?;
    /// let u = op.stash("customers", Expect::Operation(u.generation), &"customers before")?;
    /// op.update("customers", Expect::Operation(u.generation), PartState::FailedRetryable)?;
    ///
    /// // The operator gives up: both stashes go back.
    /// let mut restored = Vec::new();
    /// let report = op.rollback(&mut |s: Stashed<String>| -> Result<(), std::io::Error> {
    ///     restored.push(s.into_value());
    ///     Ok(())
    /// })?;
    /// assert_eq!(restored, ["customers before", "orders before"]);
    /// assert_eq!(report.outcome("customers"), Some(&RollbackOutcome::Restored));
    /// assert!(report.unrestored.is_empty());
    /// assert_eq!(report.derivation.aggregate(), Some(Aggregate::RolledBack)); // terminal now
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn rollback<T, R>(&self, restorer: &mut R) -> Result<RollbackReport, JournalError>
    where
        T: DeserializeOwned,
        R: Restorer<T>,
    {
        let lock = self.lock("rollback")?;
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
        // the stash behind: finish those restores. Only where the record
        // says a rollback restored that very stash (a part an older version
        // let an update mark rolled back keeps its stash).
        for idx in 0..state.parts.len() {
            let rec = state.record(idx);
            if rec.state == PartState::RolledBack && rec.stash.is_some_and(|d| restored(rec, d)) {
                self.restore_part(&lock, &mut state, idx, restorer)?;
            }
        }

        // Undo every part that holds a stash, and every completed one: those
        // that never completed first, then latest completed first.
        let mut targets: Vec<usize> = (0..state.parts.len())
            .filter(|&i| {
                let rec = state.record(i);
                rec.holds_stash()
                    || matches!(rec.state, PartState::Completed | PartState::RollbackFailed)
            })
            .collect();
        let never = Generation::new(u64::MAX);
        targets.sort_by_key(|&i| Reverse((state.record(i).completed_at.unwrap_or(never), i)));
        let mut failure: Option<(String, Error)> = None;
        for idx in targets {
            let rec = state.record(idx).clone();
            if failure.is_some() {
                outcomes
                    .push(PartRollback { part: rec.name, outcome: RollbackOutcome::NotAttempted });
                continue;
            }
            if !rec.holds_stash() {
                let note = "nothing was stashed: nothing to restore".to_owned();
                let part = self.step(&lock, &mut state, idx, PartState::RolledBack, note)?;
                outcomes.push(PartRollback { part, outcome: RollbackOutcome::NothingToRestore });
                continue;
            }
            match self.restore_part(&lock, &mut state, idx, restorer)? {
                Restore::Restored | Restore::AlreadyRestored => {
                    outcomes
                        .push(PartRollback { part: rec.name, outcome: RollbackOutcome::Restored });
                }
                Restore::Failed(e) => {
                    let error = describe(&e);
                    outcomes.push(PartRollback {
                        part: rec.name.clone(),
                        outcome: RollbackOutcome::RestoreFailed { error },
                    });
                    failure = Some((rec.name, e));
                }
            }
        }
        let unrestored = (0..state.parts.len())
            .map(|i| state.record(i))
            .filter(|r| r.holds_stash())
            .map(|r| r.name.clone())
            .collect();
        let report = RollbackReport {
            op: self.id.clone(),
            outcomes,
            unrestored,
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

    /// One rollback step: part `idx` to `to`, committed. Returns its name.
    fn step(
        &self,
        lock: &KeyLock<F>,
        state: &mut State,
        idx: usize,
        to: PartState,
        note: String,
    ) -> Result<String, JournalError> {
        let mut rec = state.record(idx).clone();
        transition(&mut rec, to, state.generation.next(), Some(note));
        let name = rec.name.clone();
        self.commit(lock, state, idx, rec)?;
        Ok(name)
    }

    /// The journal's one verified-restore step for part `idx`, which holds
    /// the stash with digest `rec.stash`: load the stash, check it is that
    /// one, hand it to `restorer`, record the outcome (`rolled_back` or
    /// `rollback_failed`), and only after a successful restore clear the
    /// stash, if it is still that one. A part already recorded `rolled_back`
    /// (a crash came before the clear) only has its stash cleared. The only
    /// place a rollback removes a stash.
    fn restore_part<T, R>(
        &self,
        lock: &KeyLock<F>,
        state: &mut State,
        idx: usize,
        restorer: &mut R,
    ) -> Result<Restore, JournalError>
    where
        T: DeserializeOwned,
        R: Restorer<T>,
    {
        let rec = state.record(idx).clone();
        let digest = rec.stash.expect("restore_part is called for a part with a stash");
        let key = stash_key(&self.id, &rec.name);
        let clear_err =
            |e: Error| self.store_err(&format!("clear the stash of part `{}`", rec.name), e);
        if rec.state == PartState::RolledBack {
            // A crash came between the record of the restore and the clear.
            self.stashes.clear_if(&key, &digest).map_err(clear_err)?;
            return Ok(Restore::AlreadyRestored);
        }
        // The store's one verified-restore step: the same checks and events
        // as a rollback guard's or the tenant guard's restore. The restore
        // is recorded before its stash is cleared.
        let hook_path = self.records.path_of(&self.key);
        let mut hook = |stashed: Stashed<T>| -> Result<(), BoxError> {
            let _inside = HookScope::enter(hook_path.clone());
            restorer.restore(stashed).map_err(Into::into)
        };
        let restoring = match self.stashes.restore_verified(&key, &digest, &mut hook) {
            Ok(restoring) => restoring,
            Err(RestoreFailure { error: e, .. }) => {
                let error = describe(&e);
                tracing::warn!(op = %self.id, part = %rec.name, error = %error, "restore failed; stash kept");
                let note = format!("restore failed: {error}");
                self.step(lock, state, idx, PartState::RollbackFailed, note)?;
                return Ok(Restore::Failed(e));
            }
        };
        self.step(lock, state, idx, PartState::RolledBack, restored_note(digest))?;
        tracing::info!(op = %self.id, part = %rec.name, "part rolled back");
        restoring.clear().map_err(|f| clear_err(f.error))?;
        let outcome = Restore::Restored;
        Ok(outcome)
    }
}
