//! The store's tables: where they are, creating them, migrating them from
//! an older version, and refusing a pooler they cannot work behind.

use std::sync::PoisonError;

use super::conn::{Conn, Fault};
use super::session::SESSION_SETUP;
use super::{Postgres, SCHEMA_VERSION};
use crate::error::{BackendOp, Doing, Error, Result};

/// The advisory lock taken while creating or migrating the schema (so that
/// concurrent first uses do not race).
const SCHEMA_LOCK: i64 = 0x5afe_57a5_0000_0001;

const CREATE_CHUNKS: &str = "
CREATE TABLE IF NOT EXISTS <chunks> (
    namespace pg_catalog.text    NOT NULL,
    key       pg_catalog.text    NOT NULL,
    seq       pg_catalog.int4    NOT NULL,
    bytes     pg_catalog.bytea   NOT NULL,
    PRIMARY KEY (namespace, key, seq),
    FOREIGN KEY (namespace, key) REFERENCES <stashes> (namespace, key)
        ON UPDATE CASCADE ON DELETE CASCADE
);
ALTER TABLE <chunks> ALTER COLUMN bytes SET STORAGE EXTERNAL;
";

const CREATE_STASHES: &str = "
CREATE TABLE IF NOT EXISTS <schema> (version pg_catalog.int4 NOT NULL);
CREATE TABLE IF NOT EXISTS <stashes> (
    namespace pg_catalog.text        NOT NULL,
    key       pg_catalog.text        NOT NULL,
    envelope  pg_catalog.bytea       NOT NULL,
    digest    pg_catalog.bytea       NOT NULL,
    size      pg_catalog.int8        NOT NULL,
    created   pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now(),
    chunks    pg_catalog.int4        NOT NULL DEFAULT 0,
    PRIMARY KEY (namespace, key)
);
INSERT INTO <schema> (version)
    SELECT 2 WHERE NOT EXISTS (SELECT 1 FROM <schema>);
";

const MIGRATE_1_TO_2: &str = "
ALTER TABLE <stashes> ADD COLUMN chunks pg_catalog.int4 NOT NULL DEFAULT 0;
";

impl Postgres {
    /// Opens the store: refuses a transaction-mode pooler, finds (or
    /// creates) the schema, checks its version. One call, one deadline.
    pub(super) fn open(&self) -> Result<()> {
        let deadline = self.deadline(true);
        let mut first = self.new_client(deadline)?;
        first.start_call(deadline);
        let located = self.locate_schema(&mut first);
        let located = located.map_err(self.fail(BackendOp::FindSchema, None))?;
        *self.shared.schema.lock().unwrap_or_else(PoisonError::into_inner) = located;
        let second = self.new_client(deadline)?;
        self.refuse_transaction_pooling(first, second, deadline)?;
        self.ensure_schema()
    }

    /// The schema holding the tables: the first schema of the role's own
    /// `search_path` that has `safestash_stashes`, else the first that
    /// exists (where `CREATE TABLE` would put it). Read from the session's
    /// default search path, before [`SESSION_SETUP`] pins it, by functions
    /// named in `pg_catalog`.
    fn locate_schema(&self, conn: &mut Conn) -> std::result::Result<String, Fault> {
        conn.batch_execute("RESET search_path")?;
        let schemas: Vec<String> = conn
            .query_one("SELECT pg_catalog.current_schemas(false)::pg_catalog.text[]", &[])?
            .get(0);
        conn.batch_execute(SESSION_SETUP)?;
        let with_table: Vec<String> = conn
            .query(
                "SELECT n.nspname::pg_catalog.text FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relname = 'safestash_stashes' AND c.relkind = 'r'",
                &[],
            )?
            .into_iter()
            .map(|row| row.get(0))
            .collect();
        let chosen = schemas
            .iter()
            .find(|s| with_table.contains(s))
            .or_else(|| schemas.iter().find(|s| *s != "pg_catalog"))
            .cloned()
            .unwrap_or_else(|| "public".to_owned());
        Ok(format!("\"{}\".", chosen.replace('"', "\"\"")))
    }

    /// Refuses a pooler that hands consecutive statements of one client
    /// connection to different server sessions (pgbouncer's
    /// `pool_mode = transaction` or `statement`): session advisory locks
    /// and session settings would not hold there. `a` asks for its server
    /// session's pid, `b` holds a transaction open (so a transaction pooler
    /// must give `b` a session of its own, usually the one `a` just used),
    /// then `a` asks again. Directly or through session pooling, `a`'s pid
    /// never changes and `b`'s is another.
    fn refuse_transaction_pooling(
        &self,
        mut a: Conn,
        mut b: Conn,
        deadline: std::time::Instant,
    ) -> Result<()> {
        a.start_call(deadline);
        b.start_call(deadline);
        let pid = "SELECT pg_catalog.pg_backend_pid()";
        let probe = (|| {
            let a1 = a.simple_value(pid)?;
            b.batch_execute("BEGIN")?;
            let b1 = b.simple_value(pid)?;
            let a2 = a.simple_value(pid)?;
            b.batch_execute("ROLLBACK")?;
            Ok::<_, Fault>((a1, b1, a2))
        })();
        let (a1, b1, a2) = probe.map_err(self.fail(BackendOp::CheckSessions, None))?;
        if a1 != a2 || a1 == b1 {
            return Err(Error::Backend {
                op: BackendOp::Use,
                target: self.location.clone(),
                source: format!(
                    "one connection's statements ran in different server sessions (pids {}, {}; \
                     another connection's {}): a pooler in transaction or statement mode \
                     (pgbouncer pool_mode=transaction) is in between, and the store's session \
                     advisory locks and session settings would not hold there; connect to the \
                     server directly or through a pooler in session mode",
                    a1.as_deref().unwrap_or("?"),
                    a2.as_deref().unwrap_or("?"),
                    b1.as_deref().unwrap_or("?"),
                )
                .into(),
            });
        }
        self.give_back(a);
        self.give_back(b);
        Ok(())
    }

    fn ensure_schema(&self) -> Result<()> {
        let shared = &self.shared;
        let version = self.run(BackendOp::CreateSchema, None, true, |c| {
            let exists: bool = c
                .query_one(
                    &shared.sql(
                        "SELECT pg_catalog.to_regclass($1::pg_catalog.text) IS NOT NULL \
                         AND pg_catalog.to_regclass($2::pg_catalog.text) IS NOT NULL",
                    ),
                    &[&shared.sql("<stashes>"), &shared.sql("<schema>")],
                )?
                .get(0);
            if !exists {
                let mut tx = c.transaction()?;
                tx.execute(
                    "SELECT pg_catalog.pg_advisory_xact_lock($1::pg_catalog.int8)",
                    &[&SCHEMA_LOCK],
                )?;
                tx.batch_execute(&shared.sql(CREATE_STASHES))?;
                // Tables that an older build created stay as they are: the
                // version below tells, and a migration follows.
                let version: Option<i32> = tx
                    .query_one(&shared.sql("SELECT pg_catalog.max(version) FROM <schema>"), &[])?
                    .get(0);
                if version == Some(SCHEMA_VERSION) {
                    tx.batch_execute(&shared.sql(CREATE_CHUNKS))?;
                }
                tx.commit()?;
            }
            let version: Option<i32> = c
                .query_one(&shared.sql("SELECT pg_catalog.max(version) FROM <schema>"), &[])?
                .get(0);
            Ok(version)
        })?;
        match version {
            Some(SCHEMA_VERSION) => Ok(()),
            Some(1) => self.migrate_from_1(),
            other => Err(Error::Backend {
                op: BackendOp::UseSchema,
                target: self.location.clone(),
                source: format!(
                    "safestash_schema holds version {other:?}; this build uses version {SCHEMA_VERSION}"
                )
                .into(),
            }),
        }
    }

    /// Schema version 1 to 2 (see the [backend docs](super)), in one
    /// transaction under the schema lock; a no-op if another process did it.
    fn migrate_from_1(&self) -> Result<()> {
        let shared = &self.shared;
        self.run(
            Doing::noted(
                BackendOp::UseSchema,
                "migrating the schema from version 1 to 2 failed (the docs of \
                 safestash::backend::postgres give its SQL)",
            ),
            None,
            true,
            |c| {
                let mut tx = c.transaction()?;
                tx.execute(
                    "SELECT pg_catalog.pg_advisory_xact_lock($1::pg_catalog.int8)",
                    &[&SCHEMA_LOCK],
                )?;
                let version: Option<i32> = tx
                    .query_one(&shared.sql("SELECT pg_catalog.max(version) FROM <schema>"), &[])?
                    .get(0);
                if version == Some(1) {
                    tx.batch_execute(&shared.sql(MIGRATE_1_TO_2))?;
                    tx.batch_execute(&shared.sql(CREATE_CHUNKS))?;
                    tx.execute(
                        &shared.sql("UPDATE <schema> SET version = $1"),
                        &[&SCHEMA_VERSION],
                    )?;
                }
                tx.commit()
            },
        )
    }
}
