//! Per-key locks: `GET_LOCK` on the holder's connection.
//!
//! A named lock is server-wide and its name at most 64 characters, so a
//! key's lock is named by a hash: `safestash:` followed by the first 54 hex
//! digits (216 bits) of the sha256 of `DATABASE \0 NAMESPACE \0 KEY`.
//! Neither part can hold a NUL, so two different keys (of any namespace or
//! database) hash different inputs; a collision of 216-bit prefixes would
//! only make two keys share a lock (a wait, never a wrong result).

use std::fmt;
use std::sync::PoisonError;

use sha2::{Digest as _, Sha256};

use super::Mysql;
use crate::backend::{Backend, Held};
use crate::key::StashKey;

/// The `GET_LOCK` name of `key` in namespace `ns` of database `db`.
pub(super) fn lock_name(db: &str, ns: &str, key: &str) -> String {
    let mut h = Sha256::new();
    h.update(db.as_bytes());
    h.update([0]);
    h.update(ns.as_bytes());
    h.update([0]);
    h.update(key.as_bytes());
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("safestash:{}", &hex[..54])
}

/// `lock_timeout` as `GET_LOCK`'s timeout, in seconds.
pub(super) fn wait_secs(lock_timeout: std::time::Duration) -> f64 {
    lock_timeout.as_secs_f64()
}

/// A held named lock and the connection that holds it.
pub(super) struct MyHeld {
    pub(super) store: Mysql,
    pub(super) key: StashKey,
    pub(super) name: String,
}

impl fmt::Debug for MyHeld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MyHeld").field("key", &self.key).finish_non_exhaustive()
    }
}

impl Held for MyHeld {
    fn backend(&self) -> &dyn Backend {
        &self.store
    }
}

impl Mysql {
    /// This store (pinned to the lock's connection) as the holder of
    /// `key`'s lock `name`.
    pub(super) fn into_held(self, key: StashKey, name: String) -> Box<dyn Held> {
        Box::new(MyHeld { store: self, key, name })
    }
}

impl Drop for MyHeld {
    fn drop(&mut self) {
        let Some(pinned) = &self.store.pinned else { return };
        let conn = pinned.lock().unwrap_or_else(PoisonError::into_inner).take();
        let Some(mut conn) = conn else { return };
        if conn.inherited() {
            // The parent's session, and its lock: left alone.
            return conn.abandon();
        }
        if conn.is_broken() {
            return;
        }
        conn.start_call();
        let released: Result<Option<Option<i64>>, _> =
            conn.exec_first("SELECT RELEASE_LOCK(?)", (self.name.as_str(),));
        match released {
            // Held once more by this session (a nested take) is not
            // possible here: every change releases what it took.
            Ok(Some(Some(1))) => self.store.shared.pool.give_back(conn),
            // Closing the session releases whatever it still holds.
            _ => drop(conn),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_fit_and_differ() {
        let a = super::lock_name("db", "ns", "a/b");
        assert_eq!(a.len(), 64);
        assert_ne!(a, super::lock_name("db", "ns/a", "b"));
        assert_ne!(a, super::lock_name("db2", "ns", "a/b"));
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == ':'));
    }
}
