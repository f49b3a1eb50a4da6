//! The ETL reload across two "hosts": two worker processes share one
//! PostgreSQL stash store. Worker A stashes the column dictionary of
//! `orders`, drops the table (the destructive step) and is SIGKILLed before
//! it reloads. Worker B (another process, as on another host: it shares
//! nothing with A but the database) finds no live dictionary, resumes A's
//! stash, recreates the table and restores the dictionary onto it.
//!
//! ```sh
//! SAFESTASH_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/safestash_test \
//!   cargo run --features postgres --example etl_multihost
//! ```
//!
//! The table itself lives in a SQLite file both workers open (standing
//! for the datastore both hosts reach); the stash lives in PostgreSQL.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use rusqlite::Connection;
use safestash::{LoadPolicy, Resume, SaveOptions, StashKey, Stashed, Store};

type Dictionary = BTreeMap<String, String>;

const ORIGIN: &str = "upload-7f3a";

fn key() -> StashKey {
    StashKey::new("orders.dictionary").unwrap()
}

fn read_dictionary(db: &Connection) -> Option<Dictionary> {
    let mut stmt = db.prepare("SELECT column, label FROM dictionary WHERE tbl = 'orders'").ok()?;
    let rows: Dictionary =
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).ok()?.collect::<Result<_, _>>().ok()?;
    let exists: bool = db
        .query_row("SELECT count(*) > 0 FROM sqlite_master WHERE name = 'orders'", [], |r| r.get(0))
        .ok()?;
    (exists && !rows.is_empty()).then_some(rows)
}

/// Worker A: stash, destroy, then hang until killed (a crash mid-reload).
fn worker_a(url: &str, db_path: &str) -> Result<(), Box<dyn std::error::Error>> {
    let store = Store::open_url(url)?;
    let db = Connection::open(db_path)?;
    let dict = read_dictionary(&db).expect("the live dictionary");
    let guard = store.begin_with(&key(), &dict, &SaveOptions::new().origin(ORIGIN))?;
    println!("A: stashed {} labels in {}", dict.len(), store.dir().display());
    db.execute_batch("DROP TABLE orders; DELETE FROM dictionary WHERE tbl = 'orders';")?;
    println!("A: dropped orders");
    guard.keep(); // as if A died here: the stash stays for whoever retries
    loop {
        std::thread::sleep(Duration::from_secs(1)); // reloading... until killed
    }
}

/// Worker B: the retry, on "another host".
fn worker_b(url: &str, db_path: &str) -> Result<(), Box<dyn std::error::Error>> {
    let store = Store::open_url(url)?;
    let db = Connection::open(db_path)?;
    let live = read_dictionary(&db);
    let policy = LoadPolicy::new().max_age(Duration::from_secs(3600)).origin(ORIGIN);
    match store.resume(&key(), live.as_ref(), &SaveOptions::new().origin(ORIGIN), &policy)? {
        Resume::Stash(guard) => {
            db.execute_batch("CREATE TABLE orders (id INTEGER, amount REAL);")?;
            guard
                .rollback(&mut |s: Stashed<Dictionary>| -> rusqlite::Result<()> {
                    for (col, label) in s.value() {
                        db.execute(
                            "INSERT INTO dictionary (tbl, column, label) VALUES ('orders', ?1, ?2)",
                            (col, label),
                        )?;
                    }
                    Ok(())
                })
                .map_err(safestash::Error::from)?;
            println!("B: resumed A's stash and restored the dictionary onto the new table");
        }
        Resume::Live { guard, .. } => {
            guard.keep();
            return Err("B found a live table: A did not destroy it".into());
        }
        _ => return Err("B found no stash to resume".into()),
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 4 {
        return match args[1].as_str() {
            "a" => worker_a(&args[2], &args[3]),
            _ => worker_b(&args[2], &args[3]),
        };
    }
    let Ok(base) = std::env::var("SAFESTASH_POSTGRES_URL") else {
        eprintln!("set SAFESTASH_POSTGRES_URL=postgresql://user@host:port/db to run this example");
        return Ok(());
    };
    let ns = format!("etl-multihost-{}", std::process::id());
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}namespace={ns}");
    let dir = tempfile::tempdir()?;
    let db_path = dir.path().join("datastore.sqlite");
    let db_path = db_path.to_str().unwrap().to_owned();
    {
        let db = Connection::open(&db_path)?;
        db.execute_batch(
            "CREATE TABLE orders (id INTEGER, amount REAL);
             CREATE TABLE dictionary (tbl TEXT, column TEXT, label TEXT);
             INSERT INTO dictionary VALUES ('orders', 'amount', 'Amount in EUR'),
                                           ('orders', 'id', 'Order number');",
        )?;
    }
    let me = std::env::current_exe()?;
    let mut a = Command::new(&me).args(["a", &url, &db_path]).stdout(Stdio::piped()).spawn()?;
    let mut lines = BufReader::new(a.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line?;
        println!("{line}");
        if line.contains("dropped") {
            break;
        }
    }
    a.kill()?; // SIGKILL after the destructive step
    a.wait()?;
    println!("A: killed");
    let b = Command::new(&me).args(["b", &url, &db_path]).status()?;
    assert!(b.success(), "worker B failed");
    let db = Connection::open(&db_path)?;
    let restored = read_dictionary(&db).expect("restored");
    assert_eq!(restored["amount"], "Amount in EUR");
    assert!(Store::open_url(&url)?.load::<Dictionary>(&key())?.is_none(), "the stash is cleared");
    println!("restored on the second worker: {restored:?}");
    Ok(())
}
