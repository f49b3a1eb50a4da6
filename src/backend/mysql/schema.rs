//! The store's tables (created on first use), the checks made when a store
//! is opened: the schema's version, InnoDB, and durable commits.

use super::conn::{Conn, Fault};
use super::url::Durability;
use super::{CHUNK_LEN, SCHEMA_VERSION};

/// The named lock taken while creating the schema, so that concurrent
/// first uses do not race (`GET_LOCK` names are server-wide: the database
/// is in the name).
pub(super) fn schema_lock_name(db: &str) -> String {
    super::locks::lock_name(db, "\u{0}schema", "")
}

/// The tables, in the order they are created. The statements are also the
/// documented DDL (module docs).
pub(super) const CREATE: [&str; 3] = [
    "CREATE TABLE IF NOT EXISTS safestash_schema (
    version INT NOT NULL
) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS safestash_stashes (
    namespace VARBINARY(768) NOT NULL,
    `key`     VARBINARY(255) NOT NULL,
    envelope  LONGBLOB       NOT NULL,
    digest    VARBINARY(32)  NOT NULL,
    size      BIGINT         NOT NULL,
    created   DATETIME(6)    NOT NULL,
    chunks    INT            NOT NULL DEFAULT 0,
    PRIMARY KEY (namespace, `key`)
) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS safestash_chunks (
    namespace VARBINARY(768) NOT NULL,
    `key`     VARBINARY(255) NOT NULL,
    seq       INT            NOT NULL,
    bytes     LONGBLOB       NOT NULL,
    PRIMARY KEY (namespace, `key`, seq),
    FOREIGN KEY (namespace, `key`) REFERENCES safestash_stashes (namespace, `key`)
        ON UPDATE CASCADE ON DELETE CASCADE
) ENGINE=InnoDB",
];

/// What opening found out about the server.
pub(super) struct Server {
    /// The chunk length this store writes (`max_allowed_packet` allowing).
    pub(super) chunk_len: usize,
}

/// Why a store refuses a server.
pub(super) enum Refusal {
    Fault(Fault),
    Other(String),
}

impl From<Fault> for Refusal {
    fn from(f: Fault) -> Refusal {
        Refusal::Fault(f)
    }
}

/// Checks durability, creates the tables if missing (under the schema
/// lock), checks their engine and version.
pub(super) fn open(conn: &mut Conn, durability: Durability) -> Result<Server, Refusal> {
    let (flush, log_bin, sync_binlog, packet, db): (String, String, String, u64, Option<String>) =
        conn.query_first(
            "SELECT CAST(@@GLOBAL.innodb_flush_log_at_trx_commit AS CHAR), \
                    CAST(@@GLOBAL.log_bin AS CHAR), CAST(@@GLOBAL.sync_binlog AS CHAR), \
                    @@SESSION.max_allowed_packet, DATABASE()",
        )?
        .ok_or_else(|| Refusal::Other("the server returned no settings".into()))?;
    let binlog_on = log_bin == "1" || log_bin.eq_ignore_ascii_case("ON");
    if durability == Durability::Commit {
        let mut unsafe_settings = Vec::new();
        if flush != "1" {
            unsafe_settings.push(format!(
                "innodb_flush_log_at_trx_commit = {flush} (a commit is durable only with 1)"
            ));
        }
        if binlog_on && sync_binlog != "1" {
            unsafe_settings.push(format!(
                "sync_binlog = {sync_binlog} with the binary log on (a commit is durable only with 1)"
            ));
        }
        if !unsafe_settings.is_empty() {
            return Err(Refusal::Other(format!(
                "the server does not flush at every commit: {}; an acknowledged save could be \
                 lost in a crash. Set it on the server, or add `durability=server` to the URL to \
                 let the server's settings decide",
                unsafe_settings.join(", ")
            )));
        }
    }
    let db = db.unwrap_or_default();
    let has_tables: u64 = conn
        .query_first(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() \
             AND TABLE_NAME IN ('safestash_schema', 'safestash_stashes', 'safestash_chunks')",
        )?
        .unwrap_or(0);
    if has_tables < 3 {
        let lock = schema_lock_name(&db);
        let got: Option<Option<i64>> =
            conn.exec_first("SELECT GET_LOCK(?, 60)", (lock.as_str(),))?;
        if got.flatten() != Some(1) {
            return Err(Refusal::Other("timed out waiting for the schema lock".into()));
        }
        let created = (|| {
            for ddl in CREATE {
                conn.query_drop(ddl)?;
            }
            conn.query_drop(&format!(
                "INSERT INTO safestash_schema (version) SELECT {SCHEMA_VERSION} FROM DUAL \
                 WHERE NOT EXISTS (SELECT 1 FROM safestash_schema)"
            ))
        })();
        let released = conn.exec_drop("DO RELEASE_LOCK(?)", (lock.as_str(),));
        created?;
        released?;
    }
    let engines: Vec<(String, Option<String>)> = conn.exec(
        "SELECT TABLE_NAME, ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() \
         AND TABLE_NAME IN ('safestash_schema', 'safestash_stashes', 'safestash_chunks')",
        (),
    )?;
    for (table, engine) in &engines {
        if !engine.as_deref().is_some_and(|e| e.eq_ignore_ascii_case("InnoDB")) {
            return Err(Refusal::Other(format!(
                "table {table} uses the {} engine; the store needs InnoDB (transactions, crash \
                 recovery)",
                engine.as_deref().unwrap_or("unknown")
            )));
        }
    }
    let version: Option<Option<i32>> =
        conn.query_first("SELECT MAX(version) FROM safestash_schema")?;
    match version.flatten() {
        Some(SCHEMA_VERSION) => {}
        other => {
            return Err(Refusal::Other(format!(
                "safestash_schema holds version {other:?}; this build uses version {SCHEMA_VERSION}"
            )));
        }
    }
    Ok(Server { chunk_len: chunk_len(packet) })
}

/// The chunk length for a `max_allowed_packet`: [`CHUNK_LEN`], or half
/// the packet when that is smaller (a statement carries a chunk and a
/// little more; a row read back carries a chunk), never under 512 bytes.
pub(super) fn chunk_len(max_allowed_packet: u64) -> usize {
    let half = usize::try_from(max_allowed_packet / 2).unwrap_or(usize::MAX);
    half.clamp(512, CHUNK_LEN)
}

#[cfg(test)]
mod tests {
    #[test]
    fn chunks_fit_the_packet() {
        assert_eq!(super::chunk_len(64 << 20), 1 << 20);
        assert_eq!(super::chunk_len(1 << 20), 512 << 10);
        assert_eq!(super::chunk_len(1024), 512);
    }
}
