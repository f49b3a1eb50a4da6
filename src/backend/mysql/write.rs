//! Writes: one stash's put inside a change's transaction, and a batch as
//! one transaction.

use super::chunks::Chunker;
use super::{Conn, Fault, Mysql, PutStep, digest_of};
use crate::backend::{Backend, BatchOutcome, BatchPut, Fill, Outcome, Precondition};
use crate::error::{BackendOp, Result};
use crate::key::StashKey;

impl Mysql {
    /// One stash's put in the open transaction of `c`, under its lock:
    /// its condition checked with `SELECT ... FOR UPDATE`, then its row
    /// (and chunk rows) written; what to commit is the caller's.
    pub(super) fn put_in(
        &self,
        c: &mut Conn,
        key: &StashKey,
        cond: Precondition,
        fill: &mut Fill<'_>,
    ) -> std::result::Result<PutStep, Fault> {
        let shared = &self.shared;
        let current: Option<(Vec<u8>, i32)> = c.exec_first(
            "SELECT digest, chunks FROM safestash_stashes \
             WHERE namespace = ? AND `key` = ? FOR UPDATE",
            (self.ns.as_str(), key.as_str()),
        )?;
        let current_digest = current.as_ref().map(|(d, _)| digest_of(d));
        let refused = match cond {
            Precondition::Any => false,
            Precondition::Absent => current.is_some(),
            Precondition::Unchanged(d) => current_digest != Some(Some(d)),
        };
        if refused {
            return Ok(PutStep::Refused(current_digest.flatten()));
        }
        let exists = current.is_some();
        let had_chunks = current.is_some_and(|(_, n)| n > 0);
        let mut sink = Chunker::new(c, shared, &self.ns, key.as_str(), exists, had_chunks);
        let filled = fill(&mut sink);
        if let Some(e) = sink.failed.take() {
            return Err(e);
        }
        let digest = match filled {
            Ok(d) => d,
            Err(e) => return Ok(PutStep::FillFailed(e)),
        };
        if !sink.finish(&digest)? {
            // Another create-if-absent committed first.
            let theirs: Option<Vec<u8>> = c.exec_first(
                "SELECT digest FROM safestash_stashes WHERE namespace = ? AND `key` = ?",
                (self.ns.as_str(), key.as_str()),
            )?;
            return Ok(PutStep::Refused(theirs.as_deref().and_then(digest_of)));
        }
        Ok(PutStep::Committed)
    }

    /// A batch: one transaction under every key's lock (one stash alone
    /// is a save as any other).
    pub(super) fn save_batch(&self, items: &[BatchPut<'_>]) -> BatchOutcome {
        if items.len() < 2 {
            let results =
                items.iter().map(|i| self.put_with(i.key, i.cond, &mut |w| (i.fill)(w))).collect();
            return BatchOutcome::of_prefix(items.len(), results);
        }
        let keys: Vec<&StashKey> = items.iter().map(|i| i.key).collect();
        // One transaction: each stash after a savepoint, so one that is
        // refused once written is undone alone and the stashes before it
        // commit together; a value that does not serialize rolls back the
        // whole batch (nothing of it is saved).
        let done = self.change_keys(BackendOp::SaveBatch, &keys, |c| {
            let mut results: Vec<Result<Outcome>> = Vec::with_capacity(items.len());
            let mut unserializable = false;
            for item in items {
                c.query_drop("SAVEPOINT safestash_item")?;
                let step = self.put_in(c, item.key, item.cond, &mut |w| (item.fill)(w))?;
                let stop = !matches!(step, PutStep::Committed);
                results.push(match step {
                    PutStep::Refused(current) => {
                        c.query_drop("ROLLBACK TO SAVEPOINT safestash_item")?;
                        Ok(Outcome::Refused { current })
                    }
                    PutStep::FillFailed(e) => {
                        unserializable = true;
                        Err(e)
                    }
                    PutStep::Committed => Ok(Outcome::Done),
                });
                if stop {
                    break;
                }
            }
            let commit =
                !unserializable && results.first().is_some_and(|r| matches!(r, Ok(Outcome::Done)));
            Ok(((results, unserializable), commit))
        });
        match done {
            Ok((mut results, true)) => {
                // Rolled back: nothing saved, the failing stash named.
                let at = results.len() - 1;
                let failed = results.pop().and_then(Result::err).map(|e| (at, e));
                BatchOutcome { outcomes: vec![None; items.len()], failed }
            }
            Ok((results, false)) => BatchOutcome::of_prefix(items.len(), results),
            // Nothing of the transaction was kept, or (a lost commit) all of
            // it may have been: the error says which, and nothing is
            // acknowledged.
            Err(e) => BatchOutcome::of_prefix(items.len(), vec![Err(e)]),
        }
    }
}
