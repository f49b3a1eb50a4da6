//! Per-key locks: session advisory locks held on a connection of their
//! own, and the backend a holder writes through.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use super::{LOCK_ID, Postgres};
use crate::backend::{Backend, Held};
use crate::error::{BackendOp, Result};
use crate::key::StashKey;

impl Postgres {
    /// `NAMESPACE/KEY`, the text of a key's advisory lock.
    pub(super) fn lock_name(&self, key: &StashKey) -> String {
        format!("{}/{key}", self.ns)
    }

    /// Takes `key`'s session advisory lock (see [`Backend::lock`]).
    pub(super) fn take_lock(&self, key: &StashKey, wait: bool) -> Result<Option<Box<dyn Held>>> {
        let lock = self.lock_name(key);
        let (conn, taken) = self.attempt(self.deadline(wait), |c| {
            if wait {
                c.query_prepared(
                    &format!("SELECT pg_catalog.pg_advisory_lock({LOCK_ID})"),
                    &[&lock],
                )
                .map(|_| true)
            } else {
                let sql = format!("SELECT pg_catalog.pg_try_advisory_lock({LOCK_ID})");
                let rows = c.query_prepared(&sql, &[&lock])?;
                Ok(rows.first().is_some_and(|row| row.get::<_, bool>(0)))
            }
        })?;
        match taken {
            Ok(true) => {
                let store = Postgres {
                    shared: self.shared.clone(),
                    ns: self.ns.clone(),
                    location: self.location.clone(),
                    pinned: Some(Arc::new(Mutex::new(Some(conn)))),
                };
                Ok(Some(Box::new(PgHeld { store, key: key.clone() })))
            }
            Ok(false) => {
                self.give_back(conn);
                Ok(None)
            }
            Err(e) => {
                self.give_back(conn);
                Err(self.fail(BackendOp::Lock, Some(key))(e))
            }
        }
    }
}

/// A held advisory lock and the session that holds it.
struct PgHeld {
    store: Postgres,
    key: StashKey,
}

impl fmt::Debug for PgHeld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgHeld").field("key", &self.key).finish_non_exhaustive()
    }
}

impl Held for PgHeld {
    fn backend(&self) -> &dyn Backend {
        &self.store
    }
}

impl Drop for PgHeld {
    fn drop(&mut self) {
        let Some(pinned) = &self.store.pinned else { return };
        let conn = pinned.lock().unwrap_or_else(PoisonError::into_inner).take();
        let Some(mut conn) = conn else { return };
        if conn.inherited() {
            // The parent's session, and its lock: left alone.
            return conn.abandon();
        }
        if conn.is_closed() {
            return;
        }
        conn.start_call(self.store.deadline(false));
        let unlocked = conn
            .query_prepared(
                &format!("SELECT pg_catalog.pg_advisory_unlock({LOCK_ID})"),
                &[&self.store.lock_name(&self.key)],
            )
            .map(|rows| rows.first().is_some_and(|row| row.get::<_, bool>(0)));
        match unlocked {
            Ok(true) => self.store.give_back(conn),
            // Closing the session releases whatever it still holds.
            _ => drop(conn),
        }
    }
}
