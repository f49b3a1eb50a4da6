//! The destructive-plan guard through the public API: the regression test of
//! incident 2 on a real SQLite database, every refusal rule and its
//! override, unparseable ids, stale plans, stash-before-delete ordering,
//! fail-closed runs, restore and retention, and a property test of the
//! planner.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use proptest::prelude::*;
use rusqlite::{Connection, params};
use safestash::{
    Error, SaveOptions, Stashed, Store,
    reconcile::{
        CanonicalUuid, Canonicalize, IdSet, Limits, Overrides, Plan, ReconcileError, Reconciler,
        Rule, TENANT_SNAPSHOT_KIND, Unparseable, plan, purge_expired, restore_tenant, tenant_key,
    },
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The store of tenant snapshots: the reserved namespace `tenants`.
fn tenants<F: safestash::fs::Fs>(store: &safestash::Store<F>) -> safestash::Store<F> {
    store.namespace("tenants").unwrap()
}

fn uid(n: u128) -> Uuid {
    // Version-4-looking ids with every hex digit in play, so case matters.
    Uuid::from_u128(0xabcdef01_2345_4678_9abc_def000000000 | n)
}

fn cid(n: u128) -> CanonicalUuid {
    CanonicalUuid::from(uid(n))
}

fn ids(ns: impl IntoIterator<Item = u128>) -> IdSet<CanonicalUuid> {
    ns.into_iter().map(cid).collect()
}

// ---------------------------------------------------------------------------
// A real database: tenants, call logs and recordings, cascading.
// ---------------------------------------------------------------------------

/// Everything a tenant owns, as the exporter stashes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TenantSnapshot {
    name: String,
    call_logs: Vec<(i64, String, i64)>,
    recordings: Vec<(i64, i64, Vec<u8>)>,
}

struct Db {
    conn: Connection,
}

impl Db {
    /// `n` tenants; tenant `i` has `i + 2` call logs, each with one
    /// recording, plus one extra recording on its first call.
    fn with_tenants(n: u128) -> Db {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "PRAGMA foreign_keys = ON;
             CREATE TABLE tenants (id BLOB PRIMARY KEY, name TEXT NOT NULL);
             CREATE TABLE call_logs (
                 id INTEGER PRIMARY KEY,
                 tenant_id BLOB NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
                 caller TEXT NOT NULL, seconds INTEGER NOT NULL);
             CREATE TABLE recordings (
                 id INTEGER PRIMARY KEY,
                 call_id INTEGER NOT NULL REFERENCES call_logs(id) ON DELETE CASCADE,
                 audio BLOB NOT NULL);",
        )
        .unwrap();
        let fk: i64 = conn.query_row("PRAGMA foreign_keys", [], |r| r.get(0)).unwrap();
        assert_eq!(fk, 1, "foreign keys are enforced");
        for t in 1..=n {
            let id = uid(t);
            conn.execute(
                "INSERT INTO tenants (id, name) VALUES (?1, ?2)",
                params![id.as_bytes(), format!("tenant {t}")],
            )
            .unwrap();
            for c in 0..(t as i64 + 2) {
                conn.execute(
                    "INSERT INTO call_logs (tenant_id, caller, seconds) VALUES (?1, ?2, ?3)",
                    params![id.as_bytes(), format!("+4930{t:03}{c:03}"), 30 + c],
                )
                .unwrap();
                let call = conn.last_insert_rowid();
                let copies = if c == 0 { 2 } else { 1 };
                for k in 0..copies {
                    conn.execute(
                        "INSERT INTO recordings (call_id, audio) VALUES (?1, ?2)",
                        params![call, vec![t as u8, c as u8, k as u8]],
                    )
                    .unwrap();
                }
            }
        }
        Db { conn }
    }

    /// The local side, as the application reads it: `uuid::Uuid` values.
    fn local_ids(&self) -> Vec<Uuid> {
        let mut stmt = self.conn.prepare("SELECT id FROM tenants").unwrap();
        stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))
            .unwrap()
            .map(|b| Uuid::from_slice(&b.unwrap()).unwrap())
            .collect()
    }

    fn count(&self, table: &str) -> i64 {
        self.conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0)).unwrap()
    }

    fn counts(&self) -> [i64; 3] {
        [self.count("tenants"), self.count("call_logs"), self.count("recordings")]
    }

    /// One tenant's rows per table: (tenants, call_logs, recordings).
    fn tenant_counts(&self, id: Uuid) -> [i64; 3] {
        let q =
            |sql: &str| -> i64 { self.conn.query_row(sql, [id.as_bytes()], |r| r.get(0)).unwrap() };
        [
            q("SELECT count(*) FROM tenants WHERE id = ?1"),
            q("SELECT count(*) FROM call_logs WHERE tenant_id = ?1"),
            q("SELECT count(*) FROM recordings r JOIN call_logs c ON r.call_id = c.id
               WHERE c.tenant_id = ?1"),
        ]
    }

    fn export(&self, id: &CanonicalUuid) -> Result<TenantSnapshot, BoxError> {
        let key = id.uuid();
        let name: String = self.conn.query_row(
            "SELECT name FROM tenants WHERE id = ?1",
            [key.as_bytes()],
            |r| r.get(0),
        )?;
        let mut stmt = self.conn.prepare(
            "SELECT id, caller, seconds FROM call_logs WHERE tenant_id = ?1 ORDER BY id",
        )?;
        let call_logs = stmt
            .query_map([key.as_bytes()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        let mut stmt = self.conn.prepare(
            "SELECT r.id, r.call_id, r.audio FROM recordings r JOIN call_logs c ON r.call_id = c.id
             WHERE c.tenant_id = ?1 ORDER BY r.id",
        )?;
        let recordings = stmt
            .query_map([key.as_bytes()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        Ok(TenantSnapshot { name, call_logs, recordings })
    }

    fn delete(&self, id: &CanonicalUuid) -> Result<(), BoxError> {
        let n = self.conn.execute("DELETE FROM tenants WHERE id = ?1", [id.uuid().as_bytes()])?;
        if n != 1 {
            return Err(format!("tenant {id}: {n} rows deleted").into());
        }
        Ok(())
    }

    fn restore(&self, id: &CanonicalUuid, snapshot: &TenantSnapshot) -> Result<(), BoxError> {
        let tx = self.conn.unchecked_transaction()?;
        tx.execute(
            "INSERT INTO tenants (id, name) VALUES (?1, ?2)",
            params![id.uuid().as_bytes(), snapshot.name],
        )?;
        for (call, caller, seconds) in &snapshot.call_logs {
            tx.execute(
                "INSERT INTO call_logs (id, tenant_id, caller, seconds) VALUES (?1, ?2, ?3, ?4)",
                params![call, id.uuid().as_bytes(), caller, seconds],
            )?;
        }
        for (rec, call, audio) in &snapshot.recordings {
            tx.execute(
                "INSERT INTO recordings (id, call_id, audio) VALUES (?1, ?2, ?3)",
                params![rec, call, audio],
            )?;
        }
        tx.commit()?;
        Ok(())
    }
}

/// `id` spelled as the source of truth of the incident might: the spelling
/// rotates through upper case, braces, URN, simple and mixed case.
fn spelled(id: Uuid, i: usize) -> String {
    let s = id.hyphenated().to_string();
    match i % 5 {
        0 => s.to_uppercase(),
        1 => format!("{{{s}}}"),
        2 => format!("urn:uuid:{s}"),
        3 => id.simple().to_string().to_uppercase(),
        _ => s
            .chars()
            .enumerate()
            .map(|(j, c)| if j % 2 == 0 { c.to_ascii_uppercase() } else { c })
            .collect(),
    }
}

#[test]
fn incident_2_regression_removes_exactly_the_gone_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let db = Db::with_tenants(12);
    let gone = uid(7);

    // Local: uuid values from the database. Truth: every tenant but one, as
    // strings, none of them in the lowercase form `Uuid` displays.
    let local_raw = db.local_ids();
    let truth_raw: Vec<String> =
        (1..=12).filter(|&t| t != 7).enumerate().map(|(i, t)| spelled(uid(t), i)).collect();

    // The inputs reproduce the incident: compared as strings, nothing matches.
    let naive_local: HashSet<String> = local_raw.iter().map(Uuid::to_string).collect();
    let naive_truth: HashSet<String> = truth_raw.iter().cloned().collect();
    assert_eq!(naive_local.difference(&naive_truth).count(), 12, "the naive diff deletes all");

    let local: IdSet<CanonicalUuid> = IdSet::canonicalize(&local_raw);
    let truth: IdSet<CanonicalUuid> = IdSet::canonicalize(&truth_raw);
    assert!(local.unparseable().is_empty() && truth.unparseable().is_empty());
    let p = plan(&local, &truth);
    assert_eq!(p.delete(), [CanonicalUuid::from(gone)]);
    assert_eq!(p.keep().len(), 11);

    let before_total = db.counts();
    let before: BTreeMap<u128, [i64; 3]> =
        (1..=12).map(|t| (t, db.tenant_counts(uid(t)))).collect();
    let gone_rows = before[&7];
    assert_eq!(gone_rows, [1, 9, 10], "tenant 7 has data to lose");

    // 1 of 12 tenants (8.3%): within the default limits, no override.
    let report = Reconciler::new(&store)
        .execute(&p, &local, &truth, |id| db.export(id), |id| db.delete(id))
        .unwrap();
    assert!(report.is_complete(), "{report}");
    assert_eq!(report.deleted, [CanonicalUuid::from(gone)]);
    assert!(report.overridden.is_empty());

    // Row-count deltas per table: exactly the gone tenant's rows.
    let after_total = db.counts();
    for (table, ((b, a), g)) in ["tenants", "call_logs", "recordings"]
        .iter()
        .zip(before_total.iter().zip(after_total).zip(gone_rows))
    {
        assert_eq!(b - a, g, "{table}: exactly the removed tenant's rows are gone");
    }
    // Every other tenant's rows are all present.
    for t in (1..=12).filter(|&t| t != 7) {
        assert_eq!(db.tenant_counts(uid(t)), before[&t], "tenant {t} untouched");
    }
    assert_eq!(db.tenant_counts(gone), [0, 0, 0]);

    // And the removed tenant is in the store, whole.
    let stash = tenants(&store)
        .load::<TenantSnapshot>(&tenant_key(&CanonicalUuid::from(gone)))
        .unwrap()
        .unwrap();
    assert_eq!(stash.value().call_logs.len(), 9);
    assert_eq!(stash.value().recordings.len(), 10);
}

#[test]
fn restore_puts_a_wrongly_deleted_tenant_back_with_all_rows() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let db = Db::with_tenants(10);
    let victim = cid(4);
    let original = db.export(&victim).unwrap();
    let before = db.counts();

    // The source of truth wrongly drops tenant 4.
    let local: IdSet<CanonicalUuid> = IdSet::canonicalize(db.local_ids());
    let truth: IdSet<CanonicalUuid> = IdSet::canonicalize(
        (1..=10).filter(|&t| t != 4).map(|t| uid(t).to_string().to_uppercase()),
    );
    let p = plan(&local, &truth);
    let report = Reconciler::new(&store)
        .execute(&p, &local, &truth, |id| db.export(id), |id| db.delete(id))
        .unwrap();
    assert_eq!(report.deleted, [victim]);
    assert_eq!(db.tenant_counts(victim.uuid()), [0, 0, 0]);

    let restored = restore_tenant(&store, &victim, &mut |s: Stashed<TenantSnapshot>| {
        db.restore(&victim, s.value())
    })
    .unwrap();
    assert_eq!(restored.meta.header.origin(), Some(p.fingerprint().to_string().as_str()));
    assert_eq!(db.export(&victim).unwrap(), original, "every row back, same ids and bytes");
    assert_eq!(db.counts(), before);
    assert!(
        tenants(&store).load::<TenantSnapshot>(&tenant_key(&victim)).unwrap().is_none(),
        "cleared"
    );
    // A second restore has nothing to restore.
    let again =
        restore_tenant(&store, &victim, &mut |_: Stashed<TenantSnapshot>| Ok::<(), BoxError>(()));
    assert!(matches!(again, Err(ReconcileError::NoStash { .. })), "{again:?}");
}

#[test]
fn a_failed_restore_keeps_the_stash_for_a_retry() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let id = cid(1);
    let opts = SaveOptions::new().kind(TENANT_SNAPSHOT_KIND);
    tenants(&store).save_with(&tenant_key(&id), &vec!["row"], &opts).unwrap();

    let err = restore_tenant(&store, &id, &mut |_: Stashed<Vec<String>>| Err::<(), _>("db down"))
        .unwrap_err();
    match &err {
        ReconcileError::Restore { source, .. } if matches!(**source, Error::Restore { .. }) => {}
        other => panic!("expected a restore error, got {other:?}"),
    }
    assert!(tenants(&store).load::<Vec<String>>(&tenant_key(&id)).unwrap().is_some(), "kept");

    let mut got = Vec::new();
    restore_tenant(&store, &id, &mut |s: Stashed<Vec<String>>| {
        got = s.into_value();
        Ok::<(), BoxError>(())
    })
    .unwrap();
    assert_eq!(got, ["row"]);
    assert!(tenants(&store).load::<Vec<String>>(&tenant_key(&id)).unwrap().is_none());
}

#[test]
fn restore_refuses_a_stash_of_another_kind_and_a_damaged_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (a, b) = (cid(1), cid(2));
    tenants(&store).save(&tenant_key(&a), &1).unwrap(); // kind "value"
    let hook = &mut |_: Stashed<i32>| -> Result<(), BoxError> { panic!("never restored") };
    let err = restore_tenant(&store, &a, hook).unwrap_err();
    assert!(matches!(err, ReconcileError::NotATenantSnapshot { ref kind, .. } if kind == "value"));

    let opts = SaveOptions::new().kind(TENANT_SNAPSHOT_KIND);
    let receipt = tenants(&store).save_with(&tenant_key(&b), &2, &opts).unwrap();
    flip_last_payload_byte(&receipt.path);
    let err = restore_tenant(&store, &b, hook).unwrap_err();
    assert!(
        matches!(&err, ReconcileError::Load { source, .. } if matches!(**source, Error::Corrupt { .. })),
        "{err:?}"
    );
    assert!(receipt.path.exists(), "a damaged stash is kept");
}

/// Changes a payload byte, keeping the header readable.
fn flip_last_payload_byte(path: &std::path::Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = bytes.len() - 113; // the payload's last byte, before the trailer
    bytes[at] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

// ---------------------------------------------------------------------------
// An in-memory model for the rules: records every exporter and deleter call.
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Model {
    tenants: RefCell<BTreeMap<CanonicalUuid, String>>,
    calls: RefCell<Vec<String>>,
}

impl Model {
    fn new(ns: impl IntoIterator<Item = u128>) -> Model {
        let m = Model::default();
        m.tenants.borrow_mut().extend(ns.into_iter().map(|n| (cid(n), format!("data of {n}"))));
        m
    }

    fn export(&self, id: &CanonicalUuid) -> Result<String, BoxError> {
        self.calls.borrow_mut().push(format!("export {id}"));
        self.tenants.borrow().get(id).cloned().ok_or_else(|| "no such tenant".into())
    }

    fn delete(&self, id: &CanonicalUuid) -> Result<(), BoxError> {
        self.calls.borrow_mut().push(format!("delete {id}"));
        self.tenants.borrow_mut().remove(id).map(drop).ok_or_else(|| "no such tenant".into())
    }

    fn run(
        &self,
        r: &Reconciler,
        p: &Plan<CanonicalUuid>,
        local: &IdSet<CanonicalUuid>,
        truth: &IdSet<CanonicalUuid>,
    ) -> Result<safestash::reconcile::ExecutionReport<CanonicalUuid>, ReconcileError> {
        r.execute(p, local, truth, |id| self.export(id), |id| self.delete(id))
    }
}

fn setup() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("stashes")).unwrap();
    (dir, store)
}

/// Asserts `result` is a refusal naming exactly `rules`, and that nothing
/// was exported, deleted or stashed.
fn assert_refused<T: std::fmt::Debug>(
    result: Result<T, ReconcileError>,
    rules: &[Rule],
    model: &Model,
    store: &Store,
) -> String {
    let err = result.unwrap_err();
    assert_eq!(err.refused_rules(), rules, "{err}");
    assert!(model.calls.borrow().is_empty(), "nothing exported or deleted");
    assert!(store.list().unwrap().is_empty(), "nothing stashed");
    err.to_string()
}

#[test]
fn empty_authority_is_refused_unless_overridden() {
    let (_dir, store) = setup();
    let model = Model::new(1..=3);
    let local = ids(1..=3);
    let truth = IdSet::<CanonicalUuid>::canonicalize(Vec::<String>::new());
    let p = plan(&local, &truth);
    assert_eq!(p.delete().len(), 3);

    let msg = assert_refused(
        model.run(&Reconciler::new(&store), &p, &local, &truth),
        &[Rule::EmptyAuthority, Rule::TooLargeShare],
        &model,
        &store,
    );
    assert!(msg.contains("the source of truth lists no tenants while 3 exist locally"), "{msg}");
    assert!(msg.contains("Overrides::allow(Rule::EmptyAuthority)"), "{msg}");

    // Lifting one rule leaves the other in force.
    let one = Reconciler::new(&store).overrides(Overrides::allow(Rule::EmptyAuthority));
    assert_refused(model.run(&one, &p, &local, &truth), &[Rule::TooLargeShare], &model, &store);

    let both = Overrides::allow(Rule::EmptyAuthority).and(Rule::TooLargeShare);
    let report = model.run(&Reconciler::new(&store).overrides(both), &p, &local, &truth).unwrap();
    assert!(report.is_complete());
    assert_eq!(report.deleted, p.delete());
    assert_eq!(
        report.overridden.iter().map(|r| r.rule()).collect::<Vec<_>>(),
        [Rule::EmptyAuthority, Rule::TooLargeShare]
    );
    assert!(model.tenants.borrow().is_empty());
    assert_eq!(tenants(&store).list().unwrap().len(), 3, "every deleted tenant stashed");
}

#[test]
fn too_many_is_refused_unless_overridden() {
    let (_dir, store) = setup();
    // 6 of 60 is exactly 10%: only the count limit fires.
    let model = Model::new(1..=60);
    let (local, truth) = (ids(1..=60), ids(7..=60));
    let p = plan(&local, &truth);
    let msg = assert_refused(
        model.run(&Reconciler::new(&store), &p, &local, &truth),
        &[Rule::TooMany],
        &model,
        &store,
    );
    assert_eq!(
        msg,
        "refusing to delete 6 of 60 tenants: more than the limit of 5 \
         (rule TooMany; override with Overrides::allow(Rule::TooMany))"
    );
    // A raised limit is enough, and so is the named override.
    let raised = Reconciler::new(&store).limits(Limits::default().max_count(6));
    assert!(raised.check(&p).unwrap().is_empty());
    let r = Reconciler::new(&store).overrides(Overrides::allow(Rule::TooMany));
    let report = model.run(&r, &p, &local, &truth).unwrap();
    assert_eq!(report.deleted, (1..=6).map(cid).collect::<Vec<_>>());
    assert_eq!(model.tenants.borrow().len(), 54);

    // 5 of 50 (10%): at both limits, allowed without override.
    let (local, truth) = (ids(1..=50), ids(6..=50));
    assert!(Reconciler::new(&store).check(&plan(&local, &truth)).unwrap().is_empty());
}

#[test]
fn too_large_a_share_is_refused_unless_overridden() {
    let (_dir, store) = setup();
    // 2 of 10 (20%): under the count limit, over the share.
    let model = Model::new(1..=10);
    let (local, truth) = (ids(1..=10), ids(3..=10));
    let p = plan(&local, &truth);
    let msg = assert_refused(
        model.run(&Reconciler::new(&store), &p, &local, &truth),
        &[Rule::TooLargeShare],
        &model,
        &store,
    );
    assert!(
        msg.starts_with("refusing to delete 2 of 10 tenants (20%): more than the limit of 10%"),
        "{msg}"
    );
    let r = Reconciler::new(&store).overrides(Overrides::allow(Rule::TooLargeShare));
    let report = model.run(&r, &p, &local, &truth).unwrap();
    assert_eq!(report.deleted, [cid(1), cid(2)]);
    // 1 of 10 (exactly 10%) is allowed.
    assert!(Reconciler::new(&store).check(&plan(&ids(1..=10), &ids(2..=10))).unwrap().is_empty());
}

#[test]
fn unparseable_ids_are_reported_never_deleted_and_refused_unless_overridden() {
    let (_dir, store) = setup();
    let model = Model::new(1..=20);
    // Local side: 20 tenants and two ids that are not uuids.
    let mut local_raw: Vec<String> = (1..=20).map(|t| uid(t).to_string()).collect();
    local_raw.extend(["tenant-21".to_owned(), String::new()]);
    let local: IdSet<CanonicalUuid> = IdSet::canonicalize(&local_raw);
    let truth = ids(2..=20);
    let p = plan(&local, &truth);
    assert_eq!(p.delete(), [cid(1)]);
    let inputs: Vec<&str> = p.unparseable().local.iter().map(Unparseable::input).collect();
    assert_eq!(inputs, ["", "tenant-21"]);
    assert!(p.to_string().contains("\"tenant-21\" is not a valid id"));

    let msg = assert_refused(
        model.run(&Reconciler::new(&store), &p, &local, &truth),
        &[Rule::Unparseable],
        &model,
        &store,
    );
    assert!(
        msg.contains("2 input ids could not be canonicalised (2 local, 0 in the source of truth)"),
        "{msg}"
    );
    let r = Reconciler::new(&store).overrides(Overrides::allow(Rule::Unparseable));
    let report = model.run(&r, &p, &local, &truth).unwrap();
    assert_eq!(report.deleted, [cid(1)], "only the canonical tenant that is gone");
    assert_eq!(*model.calls.borrow(), [format!("export {}", cid(1)), format!("delete {}", cid(1))]);
}

#[test]
fn a_garbled_authoritative_id_makes_the_truth_uncertain() {
    let (_dir, store) = setup();
    let model = Model::new(1..=20);
    // Tenant 5 is listed, but truncated: canonically it looks gone.
    let mut truth_raw: Vec<String> =
        (1..=20).filter(|&t| t != 5).map(|t| uid(t).simple().to_string()).collect();
    truth_raw.push(uid(5).simple().to_string()[..31].to_owned());
    let (local, truth) = (ids(1..=20), IdSet::canonicalize(&truth_raw));
    let p = plan(&local, &truth);
    assert_eq!(p.delete(), [cid(5)]);
    assert_eq!(p.unparseable().authoritative.len(), 1);
    assert_refused(
        model.run(&Reconciler::new(&store), &p, &local, &truth),
        &[Rule::Unparseable],
        &model,
        &store,
    );
}

#[test]
fn a_stale_plan_is_refused() {
    let (_dir, store) = setup();
    let model = Model::new(1..=20);
    let (local, truth) = (ids(1..=20), ids(2..=20));
    let p = plan(&local, &truth);

    // The source of truth changed since the plan was made.
    let newer_truth = ids(3..=20);
    let err = model.run(&Reconciler::new(&store), &p, &local, &newer_truth).unwrap_err();
    match &err {
        ReconcileError::Stale { planned, current } => {
            assert_eq!(*planned, p.fingerprint());
            assert_eq!(*current, plan(&local, &newer_truth).fingerprint());
        }
        other => panic!("expected a stale plan, got {other:?}"),
    }
    assert!(err.to_string().contains("compute a new plan"));
    // So did the local side; and a plan for other inputs is stale too.
    assert!(matches!(
        model.run(&Reconciler::new(&store), &p, &ids(1..=21), &truth),
        Err(ReconcileError::Stale { .. })
    ));
    // The same inputs in another spelling are the same inputs.
    let respelled: IdSet<CanonicalUuid> =
        IdSet::canonicalize((2..=20).map(|t| format!("{{{}}}", uid(t).to_string().to_uppercase())));
    assert_eq!(plan(&local, &respelled).fingerprint(), p.fingerprint());
    assert!(model.calls.borrow().is_empty());

    let report = model.run(&Reconciler::new(&store), &p, &local, &respelled).unwrap();
    assert_eq!(report.deleted, [cid(1)]);
}

#[test]
fn an_edited_plan_is_refused() {
    let (_dir, store) = setup();
    let model = Model::new(1..=20);
    let (local, truth) = (ids(1..=20), ids(2..=20));
    let p = plan(&local, &truth);
    // A plan reviewed as JSON and edited to delete a second tenant.
    let json = serde_json::to_string(&p).unwrap();
    let edited = json.replace(
        &format!("\"delete\":[\"{}\"]", cid(1)),
        &format!("\"delete\":[\"{}\",\"{}\"]", cid(1), cid(2)),
    );
    assert_ne!(json, edited);
    let edited: Plan<CanonicalUuid> = serde_json::from_str(&edited).unwrap();
    let err = model.run(&Reconciler::new(&store), &edited, &local, &truth).unwrap_err();
    assert!(matches!(err, ReconcileError::Altered { .. }), "{err:?}");
    assert!(model.calls.borrow().is_empty());
    // The unedited plan survives the round trip and runs.
    let back: Plan<CanonicalUuid> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, p);
    assert!(model.run(&Reconciler::new(&store), &back, &local, &truth).unwrap().is_complete());
}

#[test]
fn each_tenant_is_durably_stashed_before_its_delete() {
    let (_dir, store) = setup();
    let model = Model::new(1..=40);
    let (local, truth) = (ids(1..=40), ids(4..=40));
    let p = plan(&local, &truth);
    let origin = p.fingerprint().to_string();
    let seen = RefCell::new(Vec::new());
    let r = Reconciler::new(&store).limits(Limits::default().max_share(0.5));
    let report = r
        .execute(
            &p,
            &local,
            &truth,
            |id| model.export(id),
            |id| {
                // At the first delete every snapshot of the plan is durable.
                for n in 1..=3 {
                    assert!(
                        tenants(&store).load::<String>(&tenant_key(&cid(n))).unwrap().is_some()
                    );
                }
                // Each verified, with the plan's origin.
                let stash = tenants(&store)
                    .load::<String>(&tenant_key(id))
                    .unwrap()
                    .expect("stashed before delete");
                assert_eq!(
                    stash.value(),
                    &format!("data of {}", (1..=3).find(|&n| cid(n) == *id).unwrap())
                );
                assert_eq!(stash.meta().header.kind(), TENANT_SNAPSHOT_KIND);
                assert_eq!(stash.meta().header.origin(), Some(origin.as_str()));
                seen.borrow_mut().push(*id);
                model.delete(id)
            },
        )
        .unwrap();
    assert!(report.is_complete());
    assert_eq!(*seen.borrow(), [cid(1), cid(2), cid(3)]);
    // Every export (and one batch of stashes) before the first delete, in sorted order.
    let expected: Vec<String> = (1..=3)
        .map(|n| format!("export {}", cid(n)))
        .chain((1..=3).map(|n| format!("delete {}", cid(n))))
        .collect();
    assert_eq!(*model.calls.borrow(), expected);
    let keys: Vec<_> = report.stashed.iter().map(|s| s.receipt.key.clone()).collect();
    assert_eq!(keys, (1..=3).map(|n| tenant_key(&cid(n))).collect::<Vec<_>>());
    assert_eq!(report.retention, r.retention());
}

#[test]
fn a_failing_exporter_deletes_nothing_and_stops_the_run() {
    let (_dir, store) = setup();
    let model = Model::new(1..=40);
    let (local, truth) = (ids(1..=40), ids(4..=40));
    let p = plan(&local, &truth);
    let r = Reconciler::new(&store).limits(Limits::default().max_share(0.5));
    let report = r
        .execute(
            &p,
            &local,
            &truth,
            |id| if *id == cid(2) { Err("export timed out".into()) } else { model.export(id) },
            |id| model.delete(id),
        )
        .unwrap();
    assert!(!report.is_complete());
    // Nothing is deleted before every snapshot of the plan is durable.
    assert!(report.deleted.is_empty());
    assert!(report.stashed.is_empty());
    let stopped = report.stopped.as_ref().unwrap();
    assert_eq!(stopped.tenant, cid(2));
    assert!(matches!(stopped.error, ReconcileError::Export { .. }), "{:?}", stopped.error);
    assert_eq!(report.not_attempted, [cid(1), cid(3)]);
    // Every tenant is untouched and none has a stash.
    assert!((1..=3).all(|n| model.tenants.borrow().contains_key(&cid(n))));
    assert_eq!(*model.calls.borrow(), [format!("export {}", cid(1))]);
    assert!(
        (1..=3).all(|n| tenants(&store).load::<String>(&tenant_key(&cid(n))).unwrap().is_none())
    );
    assert!(report.to_string().contains("stopped at tenant"), "{report}");
}

#[test]
fn a_failed_stash_deletes_nothing() {
    let (dir, store) = setup();
    let model = Model::new(1..=20);
    let (local, truth) = (ids(1..=20), ids(2..=20));
    // The store's directory cannot be created: a file is in the way.
    std::fs::write(dir.path().join("stashes"), b"not a directory").unwrap();
    let report =
        model.run(&Reconciler::new(&store), &plan(&local, &truth), &local, &truth).unwrap();
    let stopped = report.stopped.unwrap();
    assert!(matches!(stopped.error, ReconcileError::Stash { .. }), "{:?}", stopped.error);
    assert!(report.deleted.is_empty());
    assert_eq!(*model.calls.borrow(), Vec::<String>::new(), "not even exported");
}

#[test]
fn a_failing_deleter_keeps_the_stash_and_stops_and_a_rerun_never_overwrites_it() {
    let (_dir, store) = setup();
    let model = Model::new(1..=40);
    let (local, truth) = (ids(1..=40), ids(4..=40));
    let p = plan(&local, &truth);
    let r = Reconciler::new(&store).limits(Limits::default().max_share(0.5));
    let report = r
        .execute(
            &p,
            &local,
            &truth,
            |id| model.export(id),
            |id| -> Result<(), BoxError> {
                if *id == cid(1) {
                    // Half deleted, then the database went away.
                    model.tenants.borrow_mut().insert(*id, "half deleted".into());
                    return Err("connection reset".into());
                }
                model.delete(id)
            },
        )
        .unwrap();
    let stopped = report.stopped.as_ref().unwrap();
    assert_eq!(stopped.tenant, cid(1));
    assert!(matches!(stopped.error, ReconcileError::Delete { .. }));
    assert!(stopped.error.to_string().contains("is kept"));
    assert!(report.deleted.is_empty());
    assert_eq!(report.stashed.len(), 3, "the whole plan was stashed before the first delete");
    assert_eq!(report.not_attempted, [cid(2), cid(3)]);
    let key = tenant_key(&cid(1));
    assert_eq!(tenants(&store).load::<String>(&key).unwrap().unwrap().value(), "data of 1");

    // A rerun never overwrites the full snapshot with what is left: what is
    // left gets a snapshot of its own, and the run goes on.
    model.calls.borrow_mut().clear();
    let rerun = model.run(&r, &p, &local, &truth).unwrap();
    assert!(rerun.is_complete(), "{rerun}");
    assert_eq!(rerun.deleted, [cid(1), cid(2), cid(3)]);
    let second = &rerun.stashed[0];
    assert_eq!((second.generation, &second.earlier), (2, &vec![key.clone()]));
    assert_ne!(second.receipt.key, key);
    assert_eq!(tenants(&store).load::<String>(&key).unwrap().unwrap().value(), "data of 1");
    assert_eq!(
        tenants(&store).load::<String>(&second.receipt.key).unwrap().unwrap().value(),
        "half deleted"
    );

    // The full copy is the older one: listed, and restored by choice.
    let stashes = r.tenant_stashes(&cid(1)).unwrap();
    let keys: Vec<_> = stashes.iter().map(|s| s.key.clone()).collect();
    assert_eq!(keys, [key.clone(), second.receipt.key.clone()]);
    r.restore_tenant_stash(&cid(1), &stashes[0].key, &mut |s: Stashed<String>| {
        model.tenants.borrow_mut().insert(cid(1), s.into_value());
        Ok::<(), BoxError>(())
    })
    .unwrap();
    assert_eq!(model.tenants.borrow()[&cid(1)], "data of 1");
    assert!(tenants(&store).load::<String>(&key).unwrap().is_none(), "the restored one is cleared");
    let left: Vec<_> = r.tenant_stashes(&cid(1)).unwrap().into_iter().map(|s| s.key).collect();
    assert_eq!(left, std::slice::from_ref(&second.receipt.key), "the other one is kept");
}

#[test]
fn purge_expired_removes_only_old_intact_tenant_stashes() {
    let (_dir, store) = setup();
    let kind = SaveOptions::new().kind(TENANT_SNAPSHOT_KIND);
    tenants(&store).save_with(&tenant_key(&cid(1)), &"intact", &kind).unwrap();
    let damaged = tenants(&store).save_with(&tenant_key(&cid(2)), &"damaged", &kind).unwrap();
    flip_last_payload_byte(&damaged.path);
    // Not tenant snapshots: another kind at a tenant key, and the kind elsewhere.
    tenants(&store).save(&tenant_key(&cid(3)), &"value").unwrap();
    let elsewhere = safestash::StashKey::new("orders.dictionary").unwrap();
    store.save_with(&elsewhere, &"other", &kind).unwrap();

    let young = purge_expired(&store, Duration::from_secs(3600)).unwrap();
    assert!(young.removed.is_empty() && young.kept.is_empty());
    assert_eq!(young.retained, 2);

    std::thread::sleep(Duration::from_millis(20));
    let old =
        Reconciler::new(&store).retain_for(Duration::from_millis(10)).purge_expired().unwrap();
    assert_eq!(old.removed, [tenant_key(&cid(1))]);
    assert_eq!(old.kept.len(), 1);
    assert_eq!(old.kept[0].0, tenant_key(&cid(2)));
    assert!(matches!(old.kept[0].1, Error::Corrupt { .. }));
    assert!(damaged.path.exists(), "a damaged stash is never removed");
    let left: BTreeSet<String> =
        tenants(&store).list().unwrap().into_iter().map(|i| i.key.into_string()).collect();
    let want: BTreeSet<String> =
        [tenant_key(&cid(2)), tenant_key(&cid(3))].into_iter().map(|k| k.into_string()).collect();
    assert_eq!(left, want);
    // The user's own stashes are another keyspace: never a tenant's, never purged.
    let user: Vec<_> = store.list().unwrap().into_iter().map(|i| i.key).collect();
    assert_eq!(user, [elsewhere]);
}

// ---------------------------------------------------------------------------
// The property: no tenant of the source of truth is ever planned for
// deletion, whatever the spellings.
// ---------------------------------------------------------------------------

/// A raw id as a sync job might see one.
#[derive(Debug, Clone)]
enum Raw {
    Value(Uuid),
    Text(String),
}

impl Canonicalize<CanonicalUuid> for Raw {
    fn canonicalize(&self) -> Result<CanonicalUuid, Unparseable> {
        match self {
            Raw::Value(u) => u.canonicalize(),
            Raw::Text(s) => s.canonicalize(),
        }
    }
}

/// `id` in representation `how`, with letter case from `case_bits`.
fn render(id: Uuid, how: u8, case_bits: u64) -> Raw {
    let recase = |s: String| -> String {
        s.chars()
            .enumerate()
            .map(|(i, c)| if case_bits >> (i % 64) & 1 == 1 { c.to_ascii_uppercase() } else { c })
            .collect()
    };
    match how % 6 {
        0 => Raw::Value(id),
        1 => Raw::Text(recase(id.hyphenated().to_string())),
        2 => Raw::Text(id.hyphenated().to_string().to_uppercase()),
        3 => Raw::Text(recase(format!("{{{}}}", id.hyphenated()))),
        4 => Raw::Text(recase(id.urn().to_string())),
        _ => Raw::Text(recase(id.simple().to_string())),
    }
}

/// One or two spellings: (representation, letter-case bits).
fn spellings() -> impl Strategy<Value = Vec<(u8, u64)>> {
    proptest::collection::vec((any::<u8>(), any::<u64>()), 1..3)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn no_authoritative_tenant_is_ever_planned_for_deletion(
        // Each id is local only (0), on both sides (1) or authoritative only
        // (2), and is spelled once or twice on each side it is on.
        universe in proptest::collection::btree_map(
            any::<u128>(),
            (0u8..3, spellings(), spellings()),
            0..40,
        ),
        garbage in proptest::collection::vec("[0-9a-zA-Z{}:-]{0,40}", 0..4),
    ) {
        let mut local_raw = Vec::new();
        let mut truth_raw = Vec::new();
        let (mut local_ids, mut truth_ids) = (BTreeSet::new(), BTreeSet::new());
        for (&n, (side, local_spellings, truth_spellings)) in &universe {
            let id = Uuid::from_u128(n);
            if *side <= 1 {
                local_ids.insert(CanonicalUuid::from(id));
                local_raw.extend(local_spellings.iter().map(|&(how, bits)| render(id, how, bits)));
            }
            if *side >= 1 {
                truth_ids.insert(CanonicalUuid::from(id));
                truth_raw.extend(truth_spellings.iter().map(|&(how, bits)| render(id, how, bits)));
            }
        }
        // Junk on the local side is reported, never deleted (junk that
        // happens to be a valid spelling is an id like any other).
        local_raw.extend(garbage.iter().cloned().map(Raw::Text));
        local_ids.extend(garbage.iter().filter_map(|g| g.parse::<CanonicalUuid>().ok()));
        let junk = garbage.iter().filter(|g| g.parse::<CanonicalUuid>().is_err()).count();

        let local: IdSet<CanonicalUuid> = IdSet::canonicalize(&local_raw);
        let truth: IdSet<CanonicalUuid> = IdSet::canonicalize(&truth_raw);
        let p = plan(&local, &truth);

        prop_assert!(truth.unparseable().is_empty(), "every authoritative spelling parses");
        prop_assert_eq!(truth.ids(), &truth_ids);
        prop_assert_eq!(local.unparseable().len(), junk);
        for id in p.delete() {
            prop_assert!(!truth_ids.contains(id), "authoritative tenant {} planned for deletion", id);
        }
        let want_delete: Vec<CanonicalUuid> = local_ids.difference(&truth_ids).copied().collect();
        prop_assert_eq!(p.delete(), want_delete.as_slice());
        let want_keep: Vec<CanonicalUuid> = local_ids.intersection(&truth_ids).copied().collect();
        prop_assert_eq!(p.keep(), want_keep.as_slice());
    }
}

// ---------------------------------------------------------------------------
// Issue 12, behaviour 8 and the tenant half of behaviour 5.
// ---------------------------------------------------------------------------

#[test]
fn a_plan_with_no_deletes_is_never_refused_and_still_reports_unparseable_ids() {
    let (_dir, store) = setup();
    let model = Model::new(1..=20);
    // One local id the nightly run cannot canonicalise; nothing is gone.
    let mut local_raw: Vec<String> = (1..=20).map(|t| uid(t).to_string()).collect();
    local_raw.push("legacy-tenant-0042".to_owned());
    let local: IdSet<CanonicalUuid> = IdSet::canonicalize(&local_raw);
    let truth = ids(1..=20);
    let p = plan(&local, &truth);
    assert!(p.delete().is_empty());
    assert_eq!(p.unparseable().local[0].input(), "legacy-tenant-0042");

    let r = Reconciler::new(&store);
    assert!(r.check(&p).unwrap().is_empty(), "nothing to delete: nothing to refuse");
    let report = model.run(&r, &p, &local, &truth).unwrap();
    assert!(report.is_complete() && report.deleted.is_empty());
    assert!(model.calls.borrow().is_empty(), "nothing exported or deleted");
    // Reported to the caller, not silently dropped.
    let inputs: Vec<&str> = report.unparseable.local.iter().map(Unparseable::input).collect();
    assert_eq!(inputs, ["legacy-tenant-0042"]);
    assert!(report.unparseable.authoritative.is_empty());
    assert!(report.to_string().contains("1 unparseable ids left alone"), "{report}");
    assert!(p.to_string().contains("\"legacy-tenant-0042\" is not a valid id"), "{p}");

    // With a delete in the plan, the same id still refuses it.
    let fewer = ids(2..=20);
    let p = plan(&local, &fewer);
    assert_eq!(p.delete(), [cid(1)]);
    assert_refused(model.run(&r, &p, &local, &fewer), &[Rule::Unparseable], &model, &store);
}

#[test]
fn a_recreated_tenant_due_again_keeps_both_snapshots_and_the_run_goes_on() {
    let (_dir, store) = setup();
    let model = Model::new(1..=40);
    let (local, truth) = (ids(1..=40), ids(3..=40));
    let p = plan(&local, &truth);
    let r = Reconciler::new(&store).limits(Limits::default().max_share(0.5));
    let first = model.run(&r, &p, &local, &truth).unwrap();
    assert!(first.is_complete(), "{first}");
    assert_eq!(first.deleted, [cid(1), cid(2)]);

    // The next day tenant 1 is re-created with new data, and is gone from
    // the source of truth again while its first snapshot is retained.
    model.tenants.borrow_mut().insert(cid(1), "data of 1, second life".to_owned());
    let local = ids((1..=1).chain(3..=40));
    let p = plan(&local, &truth);
    assert_eq!(p.delete(), [cid(1)]);
    let second = model.run(&r, &p, &local, &truth).unwrap();
    assert!(second.is_complete(), "{second}");
    assert_eq!(second.deleted, [cid(1)]);
    assert_ne!(second.stashed[0].receipt.key, tenant_key(&cid(1)), "a name of its own");
    // The first snapshot is untouched.
    let first_stash = tenants(&store).load::<String>(&tenant_key(&cid(1))).unwrap().unwrap();
    assert_eq!(first_stash.value(), "data of 1");
    let stashed = &second.stashed[0];
    assert_eq!(stashed.generation, 2);
    assert_eq!(stashed.earlier, [tenant_key(&cid(1))]);
    assert!(stashed.receipt.key.as_str().starts_with(tenant_key(&cid(1)).as_str()));
    let new_stash = tenants(&store).load::<String>(&stashed.receipt.key).unwrap().unwrap();
    assert_eq!(new_stash.value(), "data of 1, second life");
    assert_eq!(new_stash.meta().header.kind(), TENANT_SNAPSHOT_KIND);
    assert_eq!(new_stash.meta().header.origin(), Some(p.fingerprint().to_string().as_str()));
    // Listed oldest first; tenant 2's stash is not tenant 1's.
    let keys: Vec<_> = r.tenant_stashes(&cid(1)).unwrap().into_iter().map(|s| s.key).collect();
    assert_eq!(keys, [tenant_key(&cid(1)), stashed.receipt.key.clone()]);
    assert_eq!(r.tenant_stashes(&cid(2)).unwrap().len(), 1);

    // A third life: one generation past the newest.
    model.tenants.borrow_mut().insert(cid(1), "data of 1, third life".to_owned());
    let third = model.run(&r, &p, &local, &truth).unwrap();
    assert!(third.is_complete(), "{third}");
    assert_eq!(third.stashed[0].generation, 3);
    assert_eq!(r.tenant_stashes(&cid(1)).unwrap().len(), 3);

    // restore_tenant restores the newest; the next call the next newest.
    let mut restored = Vec::new();
    for _ in 0..3 {
        restore_tenant(&store, &cid(1), &mut |s: Stashed<String>| {
            restored.push(s.into_value());
            Ok::<(), BoxError>(())
        })
        .unwrap();
    }
    assert_eq!(restored, ["data of 1, third life", "data of 1, second life", "data of 1"]);
    assert!(r.tenant_stashes(&cid(1)).unwrap().is_empty());
    // A key of another tenant is refused, nothing restored.
    let err = r
        .restore_tenant_stash(&cid(1), &tenant_key(&cid(2)), &mut |_: Stashed<String>| {
            Err::<(), BoxError>("never called".into())
        })
        .unwrap_err();
    assert!(matches!(err, ReconcileError::NotTheTenantsKey { .. }), "{err:?}");
    assert!(tenants(&store).load::<String>(&tenant_key(&cid(2))).unwrap().is_some());
}

#[test]
fn retention_purges_each_expired_snapshot_of_a_tenant_on_its_own() {
    let (_dir, store) = setup();
    let model = Model::new(1..=20);
    let (local, truth) = (ids(1..=20), ids(2..=20));
    let p = plan(&local, &truth);
    let r = Reconciler::new(&store).retain_for(Duration::from_millis(600));
    assert!(model.run(&r, &p, &local, &truth).unwrap().is_complete());
    std::thread::sleep(Duration::from_millis(900));
    // Re-created and deleted again: the second snapshot is young.
    model.tenants.borrow_mut().insert(cid(1), "second life".to_owned());
    let second = model.run(&r, &p, &local, &truth).unwrap();
    assert!(second.is_complete(), "{second}");
    let young = second.stashed[0].receipt.key.clone();

    let purged = r.purge_expired().unwrap();
    assert_eq!(purged.removed, [tenant_key(&cid(1))], "only the expired one");
    assert_eq!(purged.retained, 1);
    let keys: Vec<_> = r.tenant_stashes(&cid(1)).unwrap().into_iter().map(|s| s.key).collect();
    assert_eq!(keys, std::slice::from_ref(&young));
    // The next snapshot is one past the newest still there, never a reuse
    // of a younger one's key.
    model.tenants.borrow_mut().insert(cid(1), "third life".to_owned());
    let third = model.run(&r, &p, &local, &truth).unwrap();
    assert_eq!(third.stashed[0].generation, 3);
    assert_eq!(tenants(&store).load::<String>(&young).unwrap().unwrap().value(), "second life");
}

/// Runs `f` on a thread and fails the test if it does not finish in time
/// (instead of hanging the suite).
fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(Ok(value)) => value,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("hung: did not finish within {secs} s"),
    }
}

#[test]
fn an_observer_that_writes_the_tenant_stash_key_does_not_hang_the_run() {
    within(20, || {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stashes");
        let mut store = Store::open(&path).unwrap();
        // Re-writes every tenant stash it is told about, through another
        // handle on the same directory (a mirror or re-encryption step).
        store.observe("rewrite", move |event| {
            if let safestash::Event::Saved(receipt) = event {
                // The snapshot's own directory: the tenant guard's namespace.
                let other = Store::open(receipt.path.parent().ok_or("no parent")?)?;
                let stash = other.load::<serde_json::Value>(&receipt.key)?.ok_or("no stash")?;
                let header = &stash.meta().header;
                let mut opts = SaveOptions::new().kind(header.kind());
                if let Some(origin) = header.origin() {
                    opts = opts.origin(origin);
                }
                other.save_with(&receipt.key, stash.value(), &opts)?;
            }
            Ok(())
        });
        let model = Model::new(1..=20);
        let (local, truth) = (ids(1..=20), ids(2..=20));
        let report = model.run(&Reconciler::new(&store), &plan(&local, &truth), &local, &truth);
        let report = report.unwrap();
        assert!(report.is_complete(), "{report}");
        assert!(report.stashed[0].receipt.observer_errors.is_empty());
        let stash =
            tenants(&store).load::<String>(&report.stashed[0].receipt.key).unwrap().unwrap();
        assert_eq!(stash.value(), "data of 1");
        assert_eq!(stash.meta().header.kind(), TENANT_SNAPSHOT_KIND);

        // Restoring notifies with no lock held too (the observer sees no
        // `Saved` here, but a restore must not hang either).
        restore_tenant(&store, &cid(1), &mut |s: Stashed<String>| {
            model.tenants.borrow_mut().insert(cid(1), s.into_value());
            Ok::<(), BoxError>(())
        })
        .unwrap();
        assert!(tenants(&store).load::<String>(&tenant_key(&cid(1))).unwrap().is_none());
    });
}

#[test]
fn an_observer_that_reruns_the_same_tenant_gets_a_clear_error_not_a_hang() {
    within(20, || {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stashes");
        let mut store = Store::open(&path).unwrap();
        let (local, truth) = (ids(1..=20), ids(2..=20));
        let inner: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let seen = inner.clone();
        let (l, t) = (local.clone(), truth.clone());
        let observer_dir = path.clone();
        // Calls back into a reconciler for the tenant being stashed, on the
        // same thread, while the outer run still holds the tenant.
        store.observe("rerun", move |event| {
            if let safestash::Event::Saved(receipt) = event {
                if receipt.key != tenant_key(&cid(1)) {
                    return Ok(());
                }
                let other = Store::open(&observer_dir)?;
                let report = Reconciler::new(&other).execute(
                    &plan(&l, &t),
                    &l,
                    &t,
                    |_| Ok::<_, BoxError>("inner"),
                    |_| Ok::<_, BoxError>(()),
                )?;
                let stopped = report.stopped.ok_or("the inner run went through")?;
                seen.lock().unwrap().push(format!("{:?}", stopped.error));
            }
            Ok(())
        });
        let model = Model::new(1..=20);
        let report = model.run(&Reconciler::new(&store), &plan(&local, &truth), &local, &truth);
        let report = report.unwrap();
        assert!(report.is_complete(), "{report}");
        assert!(report.stashed[0].receipt.observer_errors.is_empty());
        let seen = inner.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert!(
            seen[0].starts_with("Stash {") && seen[0].contains("LockedByThisThread {"),
            "{}",
            seen[0]
        );
        // Only the outer run's snapshot was written.
        assert_eq!(Reconciler::new(&store).tenant_stashes(&cid(1)).unwrap().len(), 1);
    });
}

/// A power cut at every call of a run: a delete happens only after the
/// whole plan's snapshots are durable, so a cut during the batch deletes
/// nothing, and in every crash image after a delete every snapshot of the
/// plan is there, intact.
#[test]
fn a_power_cut_mid_batch_deletes_nothing() {
    use safestash::sim::SimFs;
    let (local, truth) = (ids(1..=10), ids(4..=10));
    let p = plan(&local, &truth);
    let limits = Limits::default().max_share(0.5);
    let run = |sim: &SimFs, cut: Option<u64>| -> Vec<CanonicalUuid> {
        let store = Store::with_fs("/s", sim.clone()).unwrap();
        if let Some(k) = cut {
            sim.crash_after(sim.calls() + k);
        }
        let deleted = RefCell::new(Vec::new());
        let _ = Reconciler::new(&store).limits(limits).execute(
            &p,
            &local,
            &truth,
            |id| Ok::<_, BoxError>(format!("data of {id}")),
            |id| {
                deleted.borrow_mut().push(*id);
                Ok::<_, BoxError>(())
            },
        );
        deleted.into_inner()
    };
    let total = {
        let sim = SimFs::new();
        let start = sim.calls();
        assert_eq!(run(&sim, None).len(), 3);
        sim.calls() - start
    };
    let (mut cut_before_deletes, mut images) = (0, 0);
    for k in 0..total {
        let sim = SimFs::new();
        let deleted = run(&sim, Some(k));
        if deleted.is_empty() {
            cut_before_deletes += 1;
        }
        let check = |image: SimFs| {
            let snapshots = Store::with_fs("/s", image).unwrap().namespace("tenants").unwrap();
            for id in &deleted {
                let s = snapshots.load::<String>(&tenant_key(id)).unwrap();
                assert_eq!(s.map(|s| s.into_value()), Some(format!("data of {id}")), "cut {k}");
            }
            // Whatever was deleted, the plan's snapshots are all there or
            // (when nothing was deleted) each intact or absent.
            for n in 1..=3 {
                let _ = snapshots.load::<String>(&tenant_key(&cid(n))).expect("never corrupt");
            }
        };
        if sim.crash_image_count() <= 64 {
            sim.for_each_crash_image(|image| {
                images += 1;
                check(image);
            });
        } else {
            for m in 0..64 {
                images += 1;
                check(sim.crash_image(m));
            }
        }
    }
    println!(
        "{total} crash points ({cut_before_deletes} before the first delete), {images} images"
    );
    assert!(cut_before_deletes > 10, "the batch spans many calls, and a cut in it deletes nothing");
}
