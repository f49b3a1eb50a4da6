//! An operation's records under its lock: its lock, reading the header
//! and the parts as they are (the [`State`](super::operation::State)), and
//! the compare-and-swap writes of one change. [`Operation`]'s public verbs
//! are in `operation.rs`.

use std::collections::BTreeSet;

use serde::de::DeserializeOwned;

use super::error::{JournalError, describe, list_unreadable};
use super::keys::{part_key, stash_key};
use super::operation::{HEADER_KIND, Operation, PART_KIND, State};
use super::record::{Expect, Generation, HeaderRecord, PartInfo, RECORD_FORMAT, Updated};
use super::rollback::inside_hook;
use super::state::{Derivation, Unreadable};
use crate::digest::Digest;
use crate::error::Error;
use crate::fs::Fs;
use crate::meta::{SaveOptions, Stashed};
use crate::store::{KeyLock, Precondition};

impl<F: Fs> Operation<F> {
    pub(super) fn store_err(&self, what: &str, source: Error) -> JournalError {
        JournalError::Store { op: self.id.clone(), what: what.to_owned(), source: Box::new(source) }
    }

    /// Takes the operation's lock for `call`. Refused inside one of this
    /// operation's own restore hooks, where this thread holds it already
    /// (taking it again would wait forever).
    pub(super) fn lock(&self, call: &'static str) -> Result<KeyLock<F>, JournalError> {
        if self.in_own_hook() {
            return Err(JournalError::InsideRestoreHook { op: self.id.clone(), call });
        }
        self.records.lock(&self.key).map_err(|e| self.store_err("lock", e))
    }

    /// The lock for a read: `None` inside one of this operation's own
    /// restore hooks, where this thread's rollback holds it and writes
    /// nothing until the hook returns.
    pub(super) fn read_lock(&self) -> Result<Option<KeyLock<F>>, JournalError> {
        if self.in_own_hook() {
            return Ok(None);
        }
        self.lock("view").map(Some)
    }

    pub(super) fn in_own_hook(&self) -> bool {
        inside_hook(&self.records.path_of(&self.key))
    }

    pub(super) fn read_header(&self) -> Result<HeaderRecord, JournalError> {
        let header = match self.records.load::<HeaderRecord>(&self.key) {
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

    /// Part `name`'s record and the digest of its stash.
    pub(super) fn read_part(&self, name: &str) -> Result<(PartInfo, Digest), Unreadable> {
        let unreadable = |reason: String| Unreadable { part: name.to_owned(), reason };
        let (rec, digest) = match self.records.load::<PartInfo>(&part_key(&self.id, name)) {
            Ok(Some(stashed)) => {
                let digest = stashed.meta().digest;
                (stashed.into_value(), digest)
            }
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
        Ok((rec, digest))
    }

    /// Reads the header and every part. Call with the lock held.
    pub(super) fn read_state(&self) -> Result<State, JournalError> {
        let header = self.read_header()?;
        let (parts, digests): (Vec<_>, Vec<_>) = header
            .parts
            .iter()
            .map(|name| match self.read_part(name) {
                Ok((rec, digest)) => (Ok(rec), Some(digest)),
                Err(u) => (Err(u), None),
            })
            .unzip();
        let generation = parts
            .iter()
            .filter_map(|p| p.as_ref().ok().map(|r| r.op_generation))
            .fold(header.generation, Generation::max);
        Ok(State { header, parts, digests, generation })
    }

    pub(super) fn index(&self, state: &State, part: &str) -> Result<usize, JournalError> {
        state
            .header
            .parts
            .iter()
            .position(|p| p == part)
            .ok_or_else(|| JournalError::UnknownPart { op: self.id.clone(), part: part.to_owned() })
    }

    /// Writes part `idx`'s record `rec` under `lock`, through its fencing,
    /// and only over the record read into `state`: a holder whose lock was
    /// lost (a lease that ran out, a lock session that died) and that
    /// resumes cannot overwrite a newer holder's update.
    pub(super) fn write_part(
        &self,
        lock: &KeyLock<F>,
        state: &mut State,
        idx: usize,
        rec: &PartInfo,
    ) -> Result<(), JournalError> {
        let opts = SaveOptions::new().kind(PART_KIND);
        let expect = state.digests[idx].map_or(Precondition::Absent, Precondition::Unchanged);
        let receipt = self
            .records
            .save_if_under(lock, &part_key(&self.id, &rec.name), rec, &opts, expect)
            .map_err(|e| self.store_err(&format!("write part `{}`", rec.name), e))?;
        state.digests[idx] = Some(receipt.digest);
        Ok(())
    }

    pub(super) fn write_header(
        &self,
        lock: &KeyLock<F>,
        header: &HeaderRecord,
    ) -> Result<(), JournalError> {
        let opts = SaveOptions::new().kind(HEADER_KIND);
        lock.save_with(header, &opts).map(drop).map_err(|e| self.store_err("write the header", e))
    }

    /// Writes `rec` as part `idx` at the next generation, then the header.
    pub(super) fn commit(
        &self,
        lock: &KeyLock<F>,
        state: &mut State,
        idx: usize,
        mut rec: PartInfo,
    ) -> Result<(), JournalError> {
        let at = state.generation.next();
        rec.generation = rec.generation.next();
        rec.op_generation = at;
        rec.updates += 1;
        self.write_part(lock, state, idx, &rec)?;
        state.parts[idx] = Ok(rec);
        state.generation = at;
        state.header.generation = at;
        if let Some(a) = state.derivation().aggregate() {
            state.header.aggregate = a;
        }
        self.write_header(lock, &state.header)
    }

    /// The compare-and-swap every change goes through.
    /// `call` names the caller for [`JournalError::InsideRestoreHook`];
    /// `on_finished` lets the change through on a finished operation.
    pub(super) fn change(
        &self,
        part: &str,
        expect: Expect,
        call: &'static str,
        on_finished: bool,
        apply: impl FnOnce(&mut PartInfo, Generation, &KeyLock<F>) -> Result<(), JournalError>,
    ) -> Result<Updated, JournalError> {
        let lock = self.lock(call)?;
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
        if let Some(aggregate) = state.finished().filter(|_| !on_finished) {
            return Err(JournalError::Finished { op: self.id.clone(), aggregate });
        }
        apply(&mut rec, state.generation.next(), &lock)?;
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

    pub(super) fn load_verified<T: DeserializeOwned>(
        &self,
        part: &str,
        digest: Digest,
    ) -> Result<Stashed<T>, Error> {
        let key = stash_key(&self.id, part);
        match self.stashes.load::<T>(&key)? {
            Some(stashed) if stashed.meta().digest == digest => Ok(stashed),
            _ => Err(Error::Replaced { path: self.stashes.path_of(&key), key, expected: digest }),
        }
    }
}
