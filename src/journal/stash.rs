//! A part's stash: taken once while it runs ([`Operation::stash`]), read
//! back verified ([`Operation::load_stash`]), and removed only by the
//! restore that used it or on the caller's explicit request
//! ([`Operation::discard_stash`]).

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::JournalError;
use super::keys::stash_key;
use super::operation::{Operation, STASH_KIND};
#[cfg(doc)]
use super::record::PartInfo;
use super::record::{Expect, Updated, transition};
use super::state::PartState;
use crate::error::Error;
use crate::fs::Fs;
use crate::meta::{SaveOptions, Stashed};
use crate::store::Precondition;

impl<F: Fs> Operation<F> {
    /// Stashes `snapshot` for `part` (durably, under `op.ID.stash.NAME`)
    /// and records its digest in the part, so a rollback of the operation
    /// can restore it. Call it while the part is `running`, before
    /// destroying what the snapshot holds. A compare-and-swap like
    /// [`update`](Operation::update); the snapshot is written under the
    /// operation's lock.
    ///
    /// A part holds one stash: a retried part that stashed before must pick
    /// up its old snapshot ([`load_stash`](Operation::load_stash)) rather than
    /// overwrite it with what may already be half destroyed. From then on the
    /// part holds it ([`PartInfo::holds_stash`]) until a rollback restores
    /// it or the caller discards it ([`discard_stash`](Operation::discard_stash)),
    /// whatever state the part moves to.
    ///
    /// # Errors
    ///
    /// As [`update`](Operation::update), and [`JournalError::StashRefused`]
    /// when the part is not `running` or already holds a stash.
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::{Store, journal::{Expect, Operation, PartState}};
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
        self.change(part, expect, "stash", false, |rec, at, lock| {
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
            // Under the operation's lock, through its fencing: a created
            // stash, or one over a leftover that no record names (a crash
            // between this save and the record's write), only ever the
            // leftover seen here.
            let save = |expect| self.stashes.save_if_under(lock, &key, snapshot, &opts, expect);
            let receipt = match save(Precondition::Absent) {
                Err(Error::StashExists { digest: Some(leftover), .. }) => {
                    tracing::info!(op = %rec.op, part = %rec.name, leftover = %leftover, "replacing a stash no record names");
                    save(Precondition::Unchanged(leftover))
                }
                other => other,
            }
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
        let _lock = self.read_lock()?;
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

    /// Discards `part`'s stash on the caller's explicit request: the part
    /// no longer holds it, so a rollback will not restore it, and the stash
    /// file is removed (only if it is still the one the part recorded). The
    /// only way, besides the rollback that restored it, that a stash goes.
    ///
    /// Use it when the snapshot is of no more use: the operation completed
    /// and its pre-images can go, or an operator restored the resource by
    /// hand. The part keeps its state; its history records the discard. A
    /// compare-and-swap like [`update`](Operation::update), allowed on a
    /// finished operation too. The record is written first, then the file
    /// removed: a crash in between leaves an orphan file, never a record
    /// naming a stash that is gone.
    ///
    /// # Errors
    ///
    /// As [`update`](Operation::update) (but not [`JournalError::Finished`]);
    /// [`JournalError::StashRefused`] when the part holds no stash.
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::{Store, journal::{Aggregate, Expect, Operation, PartState}};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let store = Store::open(dir.path())?;
    /// let op = Operation::create(&store, "reload", ["orders"])?;
    /// let u = op.update("orders", Expect::Operation(op.view()?.generation), PartState::Running)?;
    /// let u = op.stash("orders", Expect::Part(u.part.generation), &"orders before")?;
    /// let u = op.update("orders", Expect::Part(u.part.generation), PartState::Completed)?;
    /// assert_eq!(u.stored, Aggregate::Completed);
    ///
    /// // The reload stands: the pre-image can go, by name.
    /// let u = op.discard_stash("orders", Expect::Part(u.part.generation))?;
    /// assert!(!u.part.holds_stash());
    /// assert!(store.load::<String>(&op.stash_key("orders"))?.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn discard_stash(&self, part: &str, expect: Expect) -> Result<Updated, JournalError> {
        let mut discarded = None;
        let updated = self.change(part, expect, "discard_stash", true, |rec, at, _| {
            let digest = match rec.stash {
                Some(digest) if rec.holds_stash() => digest,
                _ => {
                    return Err(JournalError::StashRefused {
                        op: rec.op.clone(),
                        part: rec.name.clone(),
                        reason: "it holds no stash to discard",
                    });
                }
            };
            let note = format!("stash sha256 {digest} discarded at the caller's request");
            rec.stash = None;
            transition(rec, rec.state, at, Some(note));
            discarded = Some(digest);
            Ok(())
        })?;
        if let Some(digest) = discarded {
            tracing::info!(op = %self.id, part, "stash discarded on request");
            self.stashes
                .clear_if(&stash_key(&self.id, part), &digest)
                .map_err(|e| self.store_err(&format!("discard the stash of part `{part}`"), e))?;
        }
        Ok(updated)
    }
}
