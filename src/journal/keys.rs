//! How an operation's records and stashes are named in the store.

use super::error::JournalError;
use crate::key::StashKey;

/// The reserved namespace of the store that holds every operation's
/// records and its parts' stashes.
pub(super) const JOURNAL_NS: &str = "journal";

/// The longest operation id or part name, in bytes.
pub(super) const MAX_NAME_LEN: usize = 128;

/// Escapes `%` and `.` so a name holds no `.` and the key's structure is
/// unambiguous; `from_any` then makes it a valid key, injectively.
fn escape(name: &str) -> String {
    name.replace('%', "%25").replace('.', "%2E")
}

pub(super) fn header_key(id: &str) -> StashKey {
    StashKey::from_any(&format!("op.{}", escape(id)))
}

pub(super) fn part_key(id: &str, part: &str) -> StashKey {
    StashKey::from_any(&format!("op.{}.part.{}", escape(id), escape(part)))
}

pub(super) fn stash_key(id: &str, part: &str) -> StashKey {
    StashKey::from_any(&format!("op.{}.stash.{}", escape(id), escape(part)))
}

pub(super) fn check_name(what: &'static str, value: &str) -> Result<(), JournalError> {
    let rule = if value.is_empty() {
        "must not be empty"
    } else if value.len() > MAX_NAME_LEN {
        "must be at most 128 bytes"
    } else if value.chars().any(char::is_control) {
        "must not contain control characters"
    } else {
        return Ok(());
    };
    Err(JournalError::Invalid { what, value: value.to_owned(), rule })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_injective_over_id_and_part() {
        // Without escaping, both would be `op.a.part.b.part.c`.
        assert_ne!(part_key("a.part.b", "c"), part_key("a", "b.part.c"));
        assert_ne!(part_key("a%2Eb", "c"), part_key("a.b", "c"));
        assert_ne!(header_key("a.part.b"), part_key("a", "b"));
        assert_ne!(part_key("a", "b"), stash_key("a", "b"));
        assert_eq!(part_key("deploy", "eu-west").as_str(), "op.deploy.part.eu-west");
        // Long names still give valid keys (hashed by `from_any`).
        let long = "x".repeat(MAX_NAME_LEN);
        assert!(StashKey::new(part_key(&long, &long).as_str()).is_ok());
    }
}
