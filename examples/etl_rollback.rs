//! An ETL worker reloading a table in an embedded SQLite database, made safe
//! with safestash.
//!
//! ```text
//! cargo run --example etl_rollback
//! ```
//!
//! The table `orders` has typed columns, rows, and a data dictionary that
//! operators wrote by hand (labels, notes, type overrides) and that lives
//! nowhere else. A reload drops the table and loads a new upload. Four runs:
//!
//! 1. **Failed reload, rolled back**: the new upload has a bad row halfway;
//!    the rollback hook recreates the table from the stash, with the column
//!    types mapped back from each field's `type_override`, the dictionary
//!    and the old rows restored.
//! 2. **Retry after a crash outside the rollback**: a worker process is
//!    killed (it aborts) after dropping the table, before any hook can run;
//!    the next attempt finds no live table, picks the stash up, restores it,
//!    and then reloads successfully.
//! 3. **Successful reload**: the dictionary is carried over onto the new
//!    table and the stash is cleared.
//! 4. **Left for the operator**: one more worker is killed after dropping the
//!    table, and this time nobody retries: its stash stays in the store for
//!    the operator CLI (`safestash list`, `show`, `verify`) and the next run.
//!
//! The example checks every outcome itself and exits non-zero if one is
//! wrong.

use std::path::Path;
use std::process::Command;

use rusqlite::{Connection, params, types::Value as SqlValue};
use safestash::{
    LoadPolicy, Resume, SaveOptions, StashKey, Stashed, Store,
    dictionary::{Field, FieldDictionary, TypeMap},
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// What the worker stashes before it drops the table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TableSnapshot {
    dictionary: FieldDictionary,
    rows: Vec<Vec<Value>>,
}

/// One column's state, as compared before and after.
#[derive(Debug, Clone, PartialEq)]
struct ColumnState {
    name: String,
    declared_type: String,
    label: Option<String>,
    type_override: Option<String>,
}

const TABLE: &str = "orders";

fn open(db: &Path) -> Result<Connection, Error> {
    let conn = Connection::open(db)?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS data_dictionary (
             table_name TEXT NOT NULL, position INTEGER NOT NULL,
             field_id TEXT NOT NULL, info TEXT NOT NULL,
             PRIMARY KEY (table_name, field_id));",
    )?;
    Ok(conn)
}

/// The operator-written dictionary of the original table.
fn original_dictionary() -> FieldDictionary {
    vec![
        Field::new("order_id").with("label", "Order").with("type_override", "numeric"),
        Field::new("amount")
            .with("label", "Amount")
            .with("notes", "EUR, VAT included")
            .with("type_override", "numeric"),
        Field::new("placed").with("label", "Placed at").with("type_override", "timestamp"),
        Field::new("shipped").with("label", "Shipped on").with("type_override", "date"),
        // An override the loader never accepted: the column stayed text.
        Field::new("legacy_code").with("label", "Legacy code").with("type_override", "money"),
        Field::new("comment").with("label", "Comment").with("notes", "free text from the web form"),
    ]
}

/// Creates `orders` with the columns the type map gives the dictionary, and
/// writes the dictionary.
fn create_table(conn: &Connection, dictionary: &[Field], map: &TypeMap) -> Result<(), Error> {
    // Every fallback the map applies is reported (logged as a warning).
    let mapped = map.map_fields(dictionary);
    let columns: Vec<String> = mapped
        .columns
        .iter()
        .map(|c| format!("\"{}\" {}", c.id, c.column_type.to_uppercase()))
        .collect();
    conn.execute(&format!("CREATE TABLE {TABLE} ({})", columns.join(", ")), [])?;
    conn.execute("DELETE FROM data_dictionary WHERE table_name = ?1", [TABLE])?;
    for (position, column) in mapped.columns.iter().enumerate() {
        conn.execute(
            "INSERT INTO data_dictionary (table_name, position, field_id, info) VALUES (?1, ?2, ?3, ?4)",
            params![TABLE, position as i64, column.id, serde_json::to_string(&column.info)?],
        )?;
    }
    Ok(())
}

fn insert_row(conn: &Connection, row: &[Value]) -> Result<(), Error> {
    let values: Vec<SqlValue> = row.iter().map(to_sql).collect::<Result<_, _>>()?;
    let marks = vec!["?"; values.len()].join(", ");
    conn.execute(
        &format!("INSERT INTO {TABLE} VALUES ({marks})"),
        rusqlite::params_from_iter(values),
    )?;
    Ok(())
}

fn to_sql(v: &Value) -> Result<SqlValue, Error> {
    Ok(match v {
        Value::Null => SqlValue::Null,
        Value::Number(n) if n.is_i64() => SqlValue::Integer(n.as_i64().unwrap_or_default()),
        Value::Number(n) => SqlValue::Real(n.as_f64().ok_or("number out of range")?),
        Value::String(s) => SqlValue::Text(s.clone()),
        other => return Err(format!("unsupported value {other}").into()),
    })
}

fn from_sql(v: SqlValue) -> Value {
    match v {
        SqlValue::Null => Value::Null,
        SqlValue::Integer(i) => json!(i),
        SqlValue::Real(f) => json!(f),
        SqlValue::Text(s) => json!(s),
        SqlValue::Blob(b) => json!(b),
    }
}

fn table_exists(conn: &Connection) -> Result<bool, Error> {
    let n: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [TABLE],
        |r| r.get(0),
    )?;
    Ok(n == 1)
}

/// The live table's snapshot, or `None` if the table does not exist.
fn snapshot(conn: &Connection) -> Result<Option<TableSnapshot>, Error> {
    if !table_exists(conn)? {
        return Ok(None);
    }
    let mut stmt = conn.prepare(
        "SELECT field_id, info FROM data_dictionary WHERE table_name = ?1 ORDER BY position",
    )?;
    let dictionary = stmt
        .query_map([TABLE], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
        .map(|row| {
            let (id, info) = row?;
            Ok(Field { id, info: serde_json::from_str(&info)? })
        })
        .collect::<Result<FieldDictionary, Error>>()?;
    let mut stmt = conn.prepare(&format!("SELECT * FROM {TABLE} ORDER BY rowid"))?;
    let width = stmt.column_count();
    let rows = stmt
        .query_map([], |r| (0..width).map(|i| r.get::<_, SqlValue>(i).map(from_sql)).collect())?
        .collect::<Result<Vec<Vec<Value>>, _>>()?;
    Ok(Some(TableSnapshot { dictionary, rows }))
}

fn columns(conn: &Connection) -> Result<Vec<ColumnState>, Error> {
    let live = snapshot(conn)?.ok_or("no table")?;
    let mut stmt = conn.prepare(&format!("PRAGMA table_info({TABLE})"))?;
    let declared: Vec<(String, String)> =
        stmt.query_map([], |r| Ok((r.get(1)?, r.get(2)?)))?.collect::<Result<_, _>>()?;
    Ok(declared
        .into_iter()
        .map(|(name, declared_type)| {
            let field = live.dictionary.iter().find(|f| f.id == name);
            ColumnState {
                label: field.and_then(|f| f.get("label")).map(str::to_owned),
                type_override: field.and_then(|f| f.get("type_override")).map(str::to_owned),
                name,
                declared_type,
            }
        })
        .collect())
}

fn print_comparison(before: &[ColumnState], after: &[ColumnState]) {
    println!(
        "    {:<12} {:<10} {:<10} {:<12} {:<12}",
        "column", "type was", "type now", "label was", "label now"
    );
    for (b, a) in before.iter().zip(after) {
        println!(
            "    {:<12} {:<10} {:<10} {:<12} {:<12}",
            b.name,
            b.declared_type,
            a.declared_type,
            b.label.as_deref().unwrap_or("-"),
            a.label.as_deref().unwrap_or("-")
        );
    }
}

/// A new upload: rows, and the source types the loader detected.
fn upload(bad_row_at: Option<usize>) -> Vec<Vec<Value>> {
    (0..10)
        .map(|i| {
            let amount = if Some(i) == bad_row_at {
                json!({"not": "a number"})
            } else {
                json!(100.5 + i as f64)
            };
            vec![
                json!(1000 + i),
                amount,
                json!(format!("2026-11-{:02} 09:30:00", i + 1)),
                json!(format!("2026-11-{:02}", i + 3)),
                json!(format!("LC-{i}")),
                json!("reloaded"),
            ]
        })
        .collect()
}

/// How old a stash this job will resume on its own: older ones, or another
/// upload's, are the operator's to decide.
const MAX_STASH_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The reload job: the retry decision first (a crashed earlier attempt may
/// have left the only copy of the table in the stash), then stash, drop,
/// rebuild; roll back on failure.
fn reload(
    conn: &Connection,
    store: &Store,
    key: &StashKey,
    upload_id: &str,
    rows: &[Vec<Value>],
) -> Result<(), Error> {
    let map = TypeMap::default();
    let opts = SaveOptions::new().kind("table-snapshot").origin(upload_id);
    let policy = LoadPolicy::new().origin(upload_id).max_age(MAX_STASH_AGE);
    let live = snapshot(conn)?;
    let guard = match store.resume(key, live.as_ref(), &opts, &policy)? {
        // The table exists: it is stashed now, the permit to destroy it.
        Resume::Live { guard, replaced } => {
            if let Some(old) = replaced {
                println!(
                    "    the live table wins over a leftover stash of {:?}",
                    old.header.origin()
                );
            }
            guard
        }
        // No table, and this upload's fresh stash: an earlier attempt died
        // after the drop. Put the table back from the stash, then reload.
        Resume::Stash(guard) => {
            println!(
                "    no live table; resuming from the stash written {:?} ago",
                age(guard.receipt())
            );
            guard
                .rollback(&mut |stashed: Stashed<TableSnapshot>| {
                    restore_table(conn, stashed.value(), &map)
                })
                .map_err(safestash::Error::from)?;
            println!("    restored the table from the stash; retrying the reload");
            return reload(conn, store, key, upload_id, rows);
        }
        // A stash that is too old or another upload's is never applied unasked.
        Resume::Refused(checked) => {
            return Err(format!("stash is not this job's to apply: {checked:?}").into());
        }
        Resume::Nothing => return Err("nothing to reload: no table and no stash".into()),
        _ => return Err("unexpected retry decision".into()),
    };
    let live = live.ok_or("no live table")?;
    println!(
        "    stashed {} fields and {} rows ({} bytes)",
        live.dictionary.len(),
        live.rows.len(),
        guard.receipt().bytes
    );

    conn.execute(&format!("DROP TABLE {TABLE}"), [])?;
    conn.execute("DELETE FROM data_dictionary WHERE table_name = ?1", [TABLE])?;
    if std::env::args().any(|a| a == "--die-after-drop") {
        // A worker killed here: no hook, no rollback, only the stash survives.
        std::process::abort();
    }
    create_table(conn, &live.dictionary, &map)?;
    let loaded = rows
        .iter()
        .enumerate()
        .try_for_each(|(i, row)| insert_row(conn, row).map_err(|e| format!("row {i}: {e}")));
    match loaded {
        Ok(()) => {
            let removed = guard.commit().map_err(safestash::Error::from)?;
            println!("    loaded {} rows; committed, stash cleared: {removed}", rows.len());
            Ok(())
        }
        Err(why) => {
            println!("    load failed at {why}; rolling back");
            guard
                .rollback(&mut |stashed: Stashed<TableSnapshot>| {
                    restore_table(conn, stashed.value(), &map)
                })
                .map_err(safestash::Error::from)?;
            Err(format!("reload of upload {upload_id} failed and was rolled back: {why}").into())
        }
    }
}

/// How long ago a receipt's stash was written.
fn age(receipt: &safestash::Receipt) -> std::time::Duration {
    std::time::SystemTime::now().duration_since(receipt.created).unwrap_or_default()
}

/// The restore hook: recreate the table exactly as stashed.
fn restore_table(conn: &Connection, snapshot: &TableSnapshot, map: &TypeMap) -> Result<(), Error> {
    conn.execute(&format!("DROP TABLE IF EXISTS {TABLE}"), [])?;
    create_table(conn, &snapshot.dictionary, map)?;
    for row in &snapshot.rows {
        insert_row(conn, row)?;
    }
    Ok(())
}

fn main() -> Result<(), Error> {
    tracing_subscriber::fmt().with_target(false).without_time().compact().init();
    let child = std::env::args().any(|a| a == "--die-after-drop");
    let work: std::path::PathBuf = match std::env::var_os("ETL_WORKDIR") {
        Some(dir) => dir.into(),
        None => std::env::temp_dir().join("safestash-etl-example"),
    };
    if !child {
        // A fresh start each run; the directory is left for inspection.
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work)?;
    }
    let db = work.join("warehouse.sqlite");
    let store = Store::open(work.join("stashes"))?;
    let key = StashKey::from_any(&format!("table/{TABLE}"));

    if child {
        // The child of run 2: reload, and die halfway.
        let conn = open(&db)?;
        let upload_id = std::env::var("ETL_UPLOAD").unwrap_or_else(|_| "upload-2".to_owned());
        reload(&conn, &store, &key, &upload_id, &upload(None))?;
        unreachable!("the worker aborts after dropping the table");
    }

    // The original table, with its hand-written dictionary and 3 rows.
    let conn = open(&db)?;
    let original = TableSnapshot {
        dictionary: original_dictionary(),
        rows: vec![
            vec![
                json!(1),
                json!(19.99),
                json!("2026-10-01 12:00:00"),
                json!("2026-10-03"),
                json!("A7"),
                json!("gift"),
            ],
            vec![
                json!(2),
                json!(250),
                json!("2026-10-02 08:15:00"),
                Value::Null,
                json!("B2"),
                Value::Null,
            ],
            vec![
                json!(3),
                json!(5.5),
                json!("2026-10-05 17:45:00"),
                json!("2026-10-06"),
                json!("C9"),
                json!("fragile"),
            ],
        ],
    };
    println!("database: {}\nstashes:  {}\n", db.display(), store.dir().display());
    println!("setting up `{TABLE}`:");
    restore_table(&conn, &original, &TypeMap::default())?;
    let before = columns(&conn)?;
    let before_snapshot = snapshot(&conn)?.ok_or("no table")?;

    // Run 1: the upload has a bad row halfway; the rollback puts everything back.
    println!("\nrun 1: reload with a bad row halfway");
    let err =
        reload(&conn, &store, &key, "upload-1", &upload(Some(5))).expect_err("run 1 must fail");
    println!("    job reported: {err}");
    let after = columns(&conn)?;
    print_comparison(&before, &after);
    assert_eq!(after, before, "column types and dictionary are back after the rollback");
    assert_eq!(
        snapshot(&conn)?,
        Some(before_snapshot.clone()),
        "rows and dictionary restored exactly"
    );
    assert!(store.load::<TableSnapshot>(&key)?.is_none(), "a successful rollback clears the stash");
    println!(
        "    ok: table recreated with the original types, dictionary and {} rows",
        before_snapshot.rows.len()
    );
    drop(conn);

    // Run 2: the worker dies after dropping the table; the next attempt picks the stash up.
    println!("\nrun 2: the worker is killed after dropping the table");
    let status = Command::new(std::env::current_exe()?)
        .arg("--die-after-drop")
        .env("ETL_WORKDIR", &work)
        .status()?;
    assert!(!status.success(), "the worker was meant to die");
    println!("    worker died: {status}");
    let conn = open(&db)?;
    assert!(!table_exists(&conn)?, "the table is gone");
    // The retry runs the same job: its retry decision finds no table and
    // this upload's fresh stash, restores the table from it, then reloads.
    let before_retry = before_snapshot.clone();
    reload(&conn, &store, &key, "upload-2", &upload(None))?;
    assert_eq!(columns(&conn)?, before, "the retry kept the types and dictionary");
    let reloaded = snapshot(&conn)?.ok_or("no table after the retry")?;
    assert_eq!(reloaded.dictionary, before_retry.dictionary);
    assert_eq!(reloaded.rows.len(), 10, "the retry loaded the upload");
    assert!(store.load::<TableSnapshot>(&key)?.is_none(), "the retry's commit cleared the stash");
    println!("    ok: resumed from the stash, table restored, upload reloaded");

    // Run 3: a clean reload carries the dictionary over and clears the stash.
    println!("\nrun 3: a clean reload");
    reload(&conn, &store, &key, "upload-3", &upload(None))?;
    let after = columns(&conn)?;
    print_comparison(&before, &after);
    assert_eq!(after, before, "the dictionary and types carry over to the new data");
    let rows = snapshot(&conn)?.ok_or("no table")?.rows;
    assert_eq!(rows.len(), 10, "the new upload is loaded");
    assert!(store.load::<TableSnapshot>(&key)?.is_none(), "commit cleared the stash");
    assert!(store.verify()?.is_empty(), "no stash left behind");
    println!("    ok: {} new rows, dictionary kept, no stash left", rows.len());
    drop(conn);

    // Run 4: a worker dies and nobody retries: the stash waits for the operator.
    println!("\nrun 4: another worker is killed after dropping the table; nobody retries");
    let status = Command::new(std::env::current_exe()?)
        .arg("--die-after-drop")
        .env("ETL_WORKDIR", &work)
        .env("ETL_UPLOAD", "upload-4")
        .status()?;
    assert!(!status.success(), "the worker was meant to die");
    let left =
        store.load::<TableSnapshot>(&key)?.ok_or("the dead worker's stash must survive it")?;
    assert_eq!(left.meta().header.origin(), Some("upload-4"));
    assert_eq!(left.value().rows.len(), 10, "the stash holds the table the worker dropped");
    assert!(store.verify()?.iter().all(|r| r.result.is_ok()), "the stash is intact");
    println!(
        "    ok: the stash of upload-4 is intact in {}\n    inspect it with: cargo run --features cli -- list {}",
        store.dir().display(),
        store.dir().display()
    );
    println!("\nall four runs behaved as promised");
    Ok(())
}
