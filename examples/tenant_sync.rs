//! A nightly tenant sync on a real SQLite database, guarded by safestash.
//!
//! ```text
//! cargo run --example tenant_sync
//! ```
//!
//! The database holds `tenants`, their `call_logs`, and the `recordings` of
//! those calls, linked by foreign keys with `ON DELETE CASCADE`: deleting a
//! tenant row deletes everything it owns. The sync deletes the local tenants
//! a source of truth (a billing system, say) no longer lists. It once
//! deleted every tenant, because the local side held UUID values and the
//! source of truth UUID strings, and nothing compared equal. Four runs:
//!
//! 1. **Mixed representations**: the local side yields `uuid::Uuid` values,
//!    the source of truth strings in upper case, braces, URNs and without
//!    hyphens. Exactly the one tenant that is gone is removed, stashed
//!    first; every other tenant's rows are intact.
//! 2. **Empty source of truth**: the billing system returns an empty list.
//!    The plan is refused; nothing is touched.
//! 3. **Wrong delete undone**: the tenant removed in run 1 was dropped from
//!    billing by mistake; it is restored from its stash with all its rows.
//! 4. **Deleted twice**: that tenant is deleted again, signs up again with
//!    new calls, and is deleted once more while its first snapshot is still
//!    retained. Both snapshots are kept, each under its own key; neither
//!    run stops.
//!
//! The example checks every outcome itself and exits non-zero if one is
//! wrong.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rusqlite::{Connection, params};
use safestash::{
    Stashed, Store,
    reconcile::{
        CanonicalUuid, IdSet, ReconcileError, Reconciler, Rule, plan, restore_tenant, tenant_key,
    },
};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

type Error = Box<dyn std::error::Error + Send + Sync>;

const TENANTS: [&str; 12] = [
    "Acme Telecom",
    "Globex",
    "Initech",
    "Umbrella Care",
    "Hooli Voice",
    "Vandelay Import",
    "Stark Logistics",
    "Wayne Foundation",
    "Tyrell Support",
    "Cyberdyne Sales",
    "Soylent Foods",
    "Wonka Retail",
];

/// The tenant billing no longer lists.
const GONE: usize = 1; // Globex

/// Everything a tenant owns, as stashed before its delete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TenantSnapshot {
    name: String,
    call_logs: Vec<CallLog>,
    recordings: Vec<Recording>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CallLog {
    id: i64,
    caller: String,
    started: String,
    seconds: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Recording {
    id: i64,
    call_id: i64,
    audio: Vec<u8>,
}

/// A stable, realistic-looking (version 4) id for tenant `i`.
fn tenant_id(i: usize) -> Uuid {
    let digest = Sha256::digest(format!("tenant-{i}"));
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

fn open(path: &std::path::Path) -> Result<Connection, Error> {
    let conn = Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA foreign_keys = ON;
         CREATE TABLE IF NOT EXISTS tenants (id BLOB PRIMARY KEY, name TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS call_logs (
             id INTEGER PRIMARY KEY,
             tenant_id BLOB NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
             caller TEXT NOT NULL, started TEXT NOT NULL, seconds INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS recordings (
             id INTEGER PRIMARY KEY,
             call_id INTEGER NOT NULL REFERENCES call_logs(id) ON DELETE CASCADE,
             audio BLOB NOT NULL);",
    )?;
    let fk: i64 = conn.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?;
    assert_eq!(fk, 1, "this SQLite enforces foreign keys");
    Ok(conn)
}

fn populate(conn: &Connection) -> Result<(), Error> {
    let tx = conn.unchecked_transaction()?;
    for (i, name) in TENANTS.iter().enumerate() {
        let id = tenant_id(i);
        tx.execute("INSERT INTO tenants (id, name) VALUES (?1, ?2)", params![id.as_bytes(), name])?;
        for c in 0..(3 + i % 4) {
            tx.execute(
                "INSERT INTO call_logs (tenant_id, caller, started, seconds) VALUES (?1, ?2, ?3, ?4)",
                params![
                    id.as_bytes(),
                    format!("+49 30 {:04} {:03}", 1000 + i, c),
                    format!("2026-11-{:02} {:02}:15:00", 1 + c, 8 + i % 10),
                    45 + 17 * c as i64
                ],
            )?;
            let call = tx.last_insert_rowid();
            // Every second call was recorded, some in two parts.
            for part in 0..(c % 2 + c % 3 / 2) {
                tx.execute(
                    "INSERT INTO recordings (call_id, audio) VALUES (?1, ?2)",
                    params![call, format!("RIFF {name} call {c} part {part}").into_bytes()],
                )?;
            }
        }
    }
    tx.commit()?;
    Ok(())
}

/// The local side, as the application's data layer yields it: uuid values.
fn local_tenants(conn: &Connection) -> Result<Vec<Uuid>, Error> {
    let mut stmt = conn.prepare("SELECT id FROM tenants ORDER BY name")?;
    let ids = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
    ids.map(|b| Ok(Uuid::from_slice(&b?)?)).collect()
}

/// The source of truth, as billing's API returns it: strings, spelled
/// however that system likes.
fn billing_tenants(skip: &[usize]) -> Vec<String> {
    (0..TENANTS.len())
        .filter(|i| !skip.contains(i))
        .map(|i| {
            let id = tenant_id(i);
            match i % 4 {
                0 => id.hyphenated().to_string().to_uppercase(),
                1 => format!("{{{}}}", id.hyphenated()),
                2 => id.urn().to_string().to_uppercase(),
                _ => id.simple().to_string().to_uppercase(),
            }
        })
        .collect()
}

fn count(conn: &Connection, sql: &str, id: Option<Uuid>) -> Result<i64, Error> {
    Ok(match id {
        Some(id) => conn.query_row(sql, [id.as_bytes()], |r| r.get(0))?,
        None => conn.query_row(sql, [], |r| r.get(0))?,
    })
}

/// Rows per table, (tenants, call_logs, recordings), for one tenant or all.
fn rows(conn: &Connection, tenant: Option<Uuid>) -> Result<[i64; 3], Error> {
    let filter =
        |col: &str| if tenant.is_some() { format!(" WHERE {col} = ?1") } else { String::new() };
    Ok([
        count(conn, &format!("SELECT count(*) FROM tenants{}", filter("id")), tenant)?,
        count(conn, &format!("SELECT count(*) FROM call_logs{}", filter("tenant_id")), tenant)?,
        count(
            conn,
            &format!(
                "SELECT count(*) FROM recordings r JOIN call_logs c ON r.call_id = c.id{}",
                filter("c.tenant_id")
            ),
            tenant,
        )?,
    ])
}

fn rows_per_tenant(conn: &Connection) -> Result<BTreeMap<usize, [i64; 3]>, Error> {
    (0..TENANTS.len()).map(|i| Ok((i, rows(conn, Some(tenant_id(i)))?))).collect()
}

/// The exporter: everything the tenant owns.
fn export(conn: &Connection, id: &CanonicalUuid) -> Result<TenantSnapshot, Error> {
    let key = id.uuid();
    let name =
        conn.query_row("SELECT name FROM tenants WHERE id = ?1", [key.as_bytes()], |r| r.get(0))?;
    let mut stmt = conn.prepare(
        "SELECT id, caller, started, seconds FROM call_logs WHERE tenant_id = ?1 ORDER BY id",
    )?;
    let call_logs = stmt
        .query_map([key.as_bytes()], |r| {
            Ok(CallLog { id: r.get(0)?, caller: r.get(1)?, started: r.get(2)?, seconds: r.get(3)? })
        })?
        .collect::<Result<_, _>>()?;
    let mut stmt = conn.prepare(
        "SELECT r.id, r.call_id, r.audio FROM recordings r JOIN call_logs c ON r.call_id = c.id
         WHERE c.tenant_id = ?1 ORDER BY r.id",
    )?;
    let recordings = stmt
        .query_map([key.as_bytes()], |r| {
            Ok(Recording { id: r.get(0)?, call_id: r.get(1)?, audio: r.get(2)? })
        })?
        .collect::<Result<_, _>>()?;
    Ok(TenantSnapshot { name, call_logs, recordings })
}

/// The deleter: one row, and the cascade takes the rest.
fn delete(conn: &Connection, id: &CanonicalUuid) -> Result<(), Error> {
    match conn.execute("DELETE FROM tenants WHERE id = ?1", [id.uuid().as_bytes()])? {
        1 => Ok(()),
        n => Err(format!("deleting tenant {id} matched {n} rows").into()),
    }
}

/// The restore hook: the tenant and its rows, with their original ids.
fn restore(conn: &Connection, id: &CanonicalUuid, snapshot: &TenantSnapshot) -> Result<(), Error> {
    let tx = conn.unchecked_transaction()?;
    let key = id.uuid();
    tx.execute(
        "INSERT INTO tenants (id, name) VALUES (?1, ?2)",
        params![key.as_bytes(), snapshot.name],
    )?;
    for c in &snapshot.call_logs {
        tx.execute(
            "INSERT INTO call_logs (id, tenant_id, caller, started, seconds) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![c.id, key.as_bytes(), c.caller, c.started, c.seconds],
        )?;
    }
    for r in &snapshot.recordings {
        tx.execute(
            "INSERT INTO recordings (id, call_id, audio) VALUES (?1, ?2, ?3)",
            params![r.id, r.call_id, r.audio],
        )?;
    }
    tx.commit()?;
    Ok(())
}

fn print_rows(title: &str, before: [i64; 3], after: [i64; 3], expected_gone: [i64; 3]) {
    println!("    {title}");
    println!("      {:<11} {:>6} {:>6} {:>8}", "table", "before", "after", "removed");
    for (i, table) in ["tenants", "call_logs", "recordings"].iter().enumerate() {
        println!(
            "      {:<11} {:>6} {:>6} {:>8}",
            table,
            before[i],
            after[i],
            before[i] - after[i]
        );
        assert_eq!(
            before[i] - after[i],
            expected_gone[i],
            "{table}: exactly the removed tenant's rows are gone"
        );
    }
}

fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_target(false)
        .without_time()
        .compact()
        .init();
    let work: PathBuf = match std::env::var_os("TENANT_SYNC_WORKDIR") {
        Some(dir) => dir.into(),
        None => std::env::temp_dir().join("safestash-tenant-sync-example"),
    };
    // A fresh start each run; the directory is left for inspection.
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let db = work.join("crm.sqlite");
    let store = Store::open(work.join("stashes"))?;
    let conn = open(&db)?;
    populate(&conn)?;
    println!("database: {}\nstashes:  {}\n", db.display(), store.dir().display());

    let original = rows_per_tenant(&conn)?;
    let total = rows(&conn, None)?;
    let gone = CanonicalUuid::from(tenant_id(GONE));
    let gone_snapshot = export(&conn, &gone)?;
    println!(
        "{} tenants, {} call logs, {} recordings; billing no longer lists {} ({gone})",
        total[0], total[1], total[2], TENANTS[GONE]
    );
    let reconciler = Reconciler::new(&store);

    // Run 1: uuid values locally, strings in mixed spellings from billing.
    println!("\nrun 1: nightly sync; local ids are uuid values, billing sends strings");
    let local_raw = local_tenants(&conn)?;
    let billing_raw = billing_tenants(&[GONE]);
    for s in billing_raw.iter().take(4) {
        println!("    billing says: {s}");
    }
    // What the incident's code did: compare the two sides as strings.
    let naive_local: std::collections::HashSet<String> =
        local_raw.iter().map(Uuid::to_string).collect();
    let naive_billing: std::collections::HashSet<&str> =
        billing_raw.iter().map(String::as_str).collect();
    let naive = naive_local.iter().filter(|s| !naive_billing.contains(s.as_str())).count();
    println!("    a string comparison would delete {naive} of {} tenants", local_raw.len());
    assert_eq!(naive, TENANTS.len(), "these inputs reproduce the incident");

    let local: IdSet<CanonicalUuid> = IdSet::canonicalize(&local_raw);
    let billing: IdSet<CanonicalUuid> = IdSet::canonicalize(&billing_raw);
    let p = plan(&local, &billing);
    println!("    dry run:");
    for line in p.to_string().lines() {
        println!("      {line}");
    }
    assert_eq!(p.delete(), [gone], "exactly the tenant that is gone");
    assert!(reconciler.check(&p)?.is_empty(), "1 of 12 is within the default limits");
    let report =
        reconciler.execute(&p, &local, &billing, |id| export(&conn, id), |id| delete(&conn, id))?;
    println!("    executed: {report}");
    assert!(report.is_complete());
    assert_eq!(report.deleted, [gone]);
    let stash = &report.stashed[0].receipt;
    println!("    stashed {} first: {} ({} bytes)", TENANTS[GONE], stash.key, stash.bytes);
    print_rows("rows before and after the run:", total, rows(&conn, None)?, original[&GONE]);
    for (i, name) in TENANTS.iter().enumerate().filter(|(i, _)| *i != GONE) {
        assert_eq!(rows(&conn, Some(tenant_id(i)))?, original[&i], "{name} is intact");
    }
    assert_eq!(rows(&conn, Some(gone.uuid()))?, [0, 0, 0]);
    println!("    ok: {} removed with all its rows; the other 11 tenants intact", TENANTS[GONE]);

    // Run 2: billing returns nothing.
    println!("\nrun 2: billing's API returns an empty list");
    let after_run_1 = rows(&conn, None)?;
    let local: IdSet<CanonicalUuid> = IdSet::canonicalize(local_tenants(&conn)?);
    let billing: IdSet<CanonicalUuid> = IdSet::canonicalize(Vec::<String>::new());
    let p = plan(&local, &billing);
    println!("    the plan would delete {} of {} tenants", p.delete().len(), p.local_count());
    let refused =
        reconciler.execute(&p, &local, &billing, |id| export(&conn, id), |id| delete(&conn, id));
    let Err(ReconcileError::Refused { refusals }) = refused else {
        return Err(format!("expected a refusal, got {refused:?}").into());
    };
    println!("    refused:");
    for refusal in &refusals {
        println!("      - {refusal}");
    }
    let rules: Vec<Rule> = refusals.iter().map(|r| r.rule()).collect();
    assert_eq!(rules, [Rule::EmptyAuthority, Rule::TooMany, Rule::TooLargeShare]);
    assert_eq!(rows(&conn, None)?, after_run_1, "nothing was touched");
    assert_eq!(reconciler.snapshots().list()?.len(), 1, "and nothing new was stashed");
    println!("    ok: nothing deleted, nothing stashed");

    // Run 3: the tenant removed in run 1 was dropped from billing by mistake.
    println!("\nrun 3: {} was dropped from billing by mistake; restore it", TENANTS[GONE]);
    let restored = restore_tenant(&store, &gone, &mut |s: Stashed<TenantSnapshot>| {
        restore(&conn, &gone, s.value())
    })?;
    println!(
        "    restored from the stash written by plan {}",
        restored.meta.header.origin().unwrap_or("?")
    );
    assert_eq!(export(&conn, &gone)?, gone_snapshot, "every row back, same ids and bytes");
    assert_eq!(rows_per_tenant(&conn)?, original, "every tenant as before run 1");
    print_rows("rows before run 1 and now:", total, rows(&conn, None)?, [0, 0, 0]);
    assert!(
        store.namespace("tenants")?.load::<TenantSnapshot>(&tenant_key(&gone))?.is_none(),
        "the stash is cleared"
    );
    println!(
        "    ok: {} is back with {} call logs and {} recordings; stash cleared",
        TENANTS[GONE],
        gone_snapshot.call_logs.len(),
        gone_snapshot.recordings.len()
    );

    // Run 4: deleted again, re-created, deleted once more within retention.
    println!("\nrun 4: {} is deleted, signs up again, and is deleted again", TENANTS[GONE]);
    let sync = |what: &str| -> Result<safestash::reconcile::ExecutionReport<CanonicalUuid>, Error> {
        let local: IdSet<CanonicalUuid> = IdSet::canonicalize(local_tenants(&conn)?);
        let billing: IdSet<CanonicalUuid> = IdSet::canonicalize(billing_tenants(&[GONE]));
        let p = plan(&local, &billing);
        let report = reconciler.execute(
            &p,
            &local,
            &billing,
            |id| export(&conn, id),
            |id| delete(&conn, id),
        )?;
        println!("    {what}: {report}");
        assert!(report.is_complete(), "an earlier snapshot never stops a run");
        assert_eq!(report.deleted, [gone]);
        Ok(report)
    };
    let first = sync("nightly sync")?;
    conn.execute(
        "INSERT INTO tenants (id, name) VALUES (?1, ?2)",
        params![gone.uuid().as_bytes(), TENANTS[GONE]],
    )?;
    conn.execute(
        "INSERT INTO call_logs (tenant_id, caller, started, seconds) VALUES (?1, ?2, ?3, ?4)",
        params![gone.uuid().as_bytes(), "+49 30 2001 000", "2026-12-01 09:30:00", 61],
    )?;
    let second = sync("the next night")?;
    let (old, new) = (&first.stashed[0], &second.stashed[0]);
    println!(
        "    snapshots kept: {} (generation 1), {} (generation 2)",
        old.receipt.key, new.receipt.key
    );
    assert_eq!(new.earlier, std::slice::from_ref(&old.receipt.key));
    assert_eq!(new.generation, 2);
    let kept: Vec<_> = reconciler.tenant_stashes(&gone)?.into_iter().map(|s| s.key).collect();
    assert_eq!(kept, [old.receipt.key.clone(), new.receipt.key.clone()]);
    let full = reconciler
        .snapshots()
        .load::<TenantSnapshot>(&old.receipt.key)?
        .ok_or("first snapshot gone")?;
    assert_eq!(full.value(), &gone_snapshot, "the first life, untouched");
    let newest = reconciler
        .snapshots()
        .load::<TenantSnapshot>(&new.receipt.key)?
        .ok_or("second snapshot gone")?;
    assert_eq!(newest.value().call_logs.len(), 1, "the second life: one new call");
    println!(
        "    ok: both kept; restore_tenant would restore the newest, \
         Reconciler::restore_tenant_stash the one chosen"
    );
    println!("\nall four runs behaved as promised");
    Ok(())
}
