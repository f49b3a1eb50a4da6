//! Changes: a save's transaction (its lock, its condition, the row or
//! the chunks) and a clear's.

use super::chunks::Chunker;
use super::conn::Fault;
use super::locks::LOCK_ID;
use super::{Postgres, digest_of};
use crate::backend::{Condition, Fill, Outcome};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::key::StashKey;

impl Postgres {
    /// A save (see [`Backend::put_with`](crate::backend::Backend::put_with)).
    pub(super) fn save_streamed(
        &self,
        key: &StashKey,
        cond: Condition,
        fill: &mut Fill<'_>,
    ) -> Result<Outcome> {
        let shared = &self.shared;
        let lock = self.lock_name(key);
        let step = self.run("save", Some(key), true, |c| {
            let mut tx = c.transaction()?;
            tx.batch_execute("SET LOCAL synchronous_commit = on")?;
            tx.execute(&format!("SELECT pg_catalog.pg_advisory_xact_lock({LOCK_ID})"), &[&lock])?;
            let current: Option<(Vec<u8>, i32)> = tx
                .query_opt(
                    &shared.sql(
                        "SELECT digest, chunks FROM <stashes> \
                         WHERE namespace = $1 AND key = $2 FOR UPDATE",
                    ),
                    &[&self.ns, &key.as_str()],
                )?
                .map(|row| (row.get(0), row.get(1)));
            let current_digest = current.as_ref().map(|(d, _)| digest_of(d));
            let refused = match cond {
                Condition::Any => false,
                Condition::Absent => current.is_some(),
                Condition::Unchanged(d) => current_digest != Some(Some(d)),
            };
            if refused {
                return Ok(PutStep::Refused(current_digest.flatten()));
            }
            // The condition holds under the lock, and without it: a
            // replaced row is locked (FOR UPDATE) until the commit, and a
            // create-if-absent inserts with ON CONFLICT DO NOTHING.
            let had_chunks = current.is_some_and(|(_, n)| n > 0);
            let absent = cond == Condition::Absent;
            let mut sink =
                Chunker::new(&mut tx, shared, &self.ns, key.as_str(), had_chunks, absent);
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
                let theirs: Option<Vec<u8>> = tx
                    .query_opt(
                        &shared
                            .sql("SELECT digest FROM <stashes> WHERE namespace = $1 AND key = $2"),
                        &[&self.ns, &key.as_str()],
                    )?
                    .map(|row| row.get(0));
                return Ok(PutStep::Refused(theirs.as_deref().and_then(digest_of)));
            }
            // The commit's own failure is told apart: its outcome may be unknown.
            Ok(PutStep::Commit(tx.commit()))
        })?;
        match step {
            PutStep::Refused(current) => Ok(Outcome::Refused { current }),
            PutStep::FillFailed(e) => Err(e),
            PutStep::Commit(Ok(())) => Ok(Outcome::Done),
            PutStep::Commit(Err(e)) => Err(self.fail(
                "commit the save (if the connection was lost, it may have committed) of",
                Some(key),
            )(e)),
        }
    }

    /// A clear (see [`Backend::delete`](crate::backend::Backend::delete)).
    pub(super) fn remove(&self, key: &StashKey, cond: Condition) -> Result<Outcome> {
        let shared = &self.shared;
        let lock = self.lock_name(key);
        self.run("clear", Some(key), true, |c| {
            let mut tx = c.transaction()?;
            tx.batch_execute("SET LOCAL synchronous_commit = on")?;
            tx.execute(&format!("SELECT pg_catalog.pg_advisory_xact_lock({LOCK_ID})"), &[&lock])?;
            let current: Option<Vec<u8>> = tx
                .query_opt(
                    &shared.sql(
                        "SELECT digest FROM <stashes> WHERE namespace = $1 AND key = $2 FOR UPDATE",
                    ),
                    &[&self.ns, &key.as_str()],
                )?
                .map(|row| row.get(0));
            let Some(current) = current else { return Ok(Outcome::Missing) };
            let current = digest_of(&current);
            match cond {
                Condition::Absent => return Ok(Outcome::Refused { current }),
                Condition::Unchanged(d) if current != Some(d) => {
                    return Ok(Outcome::Refused { current });
                }
                _ => {}
            }
            tx.execute(
                &shared.sql("DELETE FROM <stashes> WHERE namespace = $1 AND key = $2"),
                &[&self.ns, &key.as_str()],
            )?;
            tx.commit()?;
            Ok(Outcome::Done)
        })
    }
}

/// What a save's transaction came to.
enum PutStep {
    Refused(Option<Digest>),
    FillFailed(Error),
    Commit(std::result::Result<(), Fault>),
}
