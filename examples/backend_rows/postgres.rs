//! The PostgreSQL rows: safestash save and load of 1 KiB and 1 MiB next to
//! the same statements written by hand with the same durability (one
//! transaction, `SET LOCAL synchronous_commit = on`,
//! `INSERT ... ON CONFLICT DO UPDATE` of the JSON; a plain `SELECT` and
//! `serde_json::from_slice` to load). The ratio is the cost of the
//! envelope, the checksum, the advisory lock and the condition's check.

use postgres::{Client, NoTls};
use safestash::{StashKey, Store};

use super::{Row, interleaved};

/// The rows, medians over `rounds` interleaved rounds, for the database at
/// `base` (a `postgresql://` URL without a `namespace` parameter: the rows
/// use a fresh namespace and a scratch table, both removed at the end).
///
/// # Errors
///
/// When the store cannot be opened or a statement fails.
pub fn rows(base: &str, rounds: usize) -> Result<Vec<Row>, Box<dyn std::error::Error>> {
    let ns = format!("bench-{}", std::process::id());
    let sep = if base.contains('?') { '&' } else { '?' };
    let store = Store::open_url(&format!("{base}{sep}namespace={ns}"))?;
    let mut client = Client::connect(base, NoTls)?;
    let table = format!("bench_by_hand_{}", std::process::id());
    client.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {table} (key text PRIMARY KEY, value bytea NOT NULL)"
    ))?;
    let upsert = format!(
        "INSERT INTO {table} (key, value) VALUES ($1, $2) \
         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
    );
    let select = format!("SELECT value FROM {table} WHERE key = $1");
    let key = StashKey::new("bench")?;
    let mut out = Vec::new();
    for (label, size, iters) in [("1 KiB", 1usize << 10, 20u32), ("1 MiB", 1 << 20, 3)] {
        let value = "x".repeat(size);
        let json = serde_json::to_vec(&value)?;
        // The client is used by the by-hand side of both the save and the
        // load rows, one at a time: a RefCell lends it to each closure.
        let client = std::cell::RefCell::new(&mut client);
        let hand_save = || {
            let mut c = client.borrow_mut();
            let mut tx = c.transaction().unwrap();
            tx.batch_execute("SET LOCAL synchronous_commit = on").unwrap();
            tx.execute(&upsert, &[&"bench", &json]).unwrap();
            tx.commit().unwrap();
        };
        let ours_save = || {
            store.save(&key, &value).unwrap();
        };
        let (a, b) = interleaved(rounds, iters, ours_save, hand_save);
        out.push((format!("save {label}"), a, b));
        let ours_load = || {
            let got = store.load::<String>(&key).unwrap().unwrap();
            assert_eq!(got.value().len(), size);
        };
        let hand_load = || {
            let row = client.borrow_mut().query_one(&select, &[&"bench"]).unwrap();
            let bytes: Vec<u8> = row.get(0);
            let got: String = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(got.len(), size);
        };
        let (a, b) = interleaved(rounds, iters, ours_load, hand_load);
        out.push((format!("load {label}"), a, b));
    }
    store.clear(&key)?;
    client.batch_execute(&format!("DROP TABLE {table}"))?;
    Ok(out)
}
