//! PostgreSQL rows of the bench report: save and load of 1 KiB and 1 MiB
//! through safestash, next to the same statements written by hand with the
//! same durability (one transaction, `SET LOCAL synchronous_commit = on`,
//! `INSERT ... ON CONFLICT DO UPDATE`; a plain `SELECT` to load), as
//! ratios. Absolute times on shared machines are noise; the ratio is the
//! cost of the envelope, the checksum, the advisory lock and the checks.
//!
//! ```sh
//! SAFESTASH_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/safestash_test \
//!   cargo run --release --features postgres --example bench_postgres
//! ```

#[cfg(feature = "postgres")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    use std::time::{Duration, Instant};

    use postgres::{Client, NoTls};
    use safestash::{StashKey, Store};

    let Ok(base) = std::env::var("SAFESTASH_POSTGRES_URL") else {
        eprintln!("set SAFESTASH_POSTGRES_URL=postgresql://user@host:port/db to run this bench");
        return Ok(());
    };
    let ns = format!("bench-{}", std::process::id());
    let sep = if base.contains('?') { '&' } else { '?' };
    let store = Store::open_url(&format!("{base}{sep}namespace={ns}"))?;
    let mut client = Client::connect(&base, NoTls)?;
    client.batch_execute(
        "CREATE TABLE IF NOT EXISTS bench_by_hand (key text PRIMARY KEY, value bytea NOT NULL)",
    )?;
    let key = StashKey::new("bench")?;

    fn time(iters: u32, mut f: impl FnMut()) -> Duration {
        f(); // warm up
        let start = Instant::now();
        for _ in 0..iters {
            f();
        }
        start.elapsed() / iters
    }

    println!("| operation | safestash | by hand | ratio |");
    println!("|---|---|---|---|");
    for (label, size, iters) in [("1 KiB", 1usize << 10, 200u32), ("1 MiB", 1 << 20, 20)] {
        // A byte string as JSON: the payload safestash stores is its JSON.
        let value = vec![b'x'; size];
        let value = String::from_utf8(value)?;
        let json = serde_json::to_vec(&value)?;
        let ours = time(iters, || {
            store.save(&key, &value).unwrap();
        });
        let hand = time(iters, || {
            let mut tx = client.transaction().unwrap();
            tx.batch_execute("SET LOCAL synchronous_commit = on").unwrap();
            tx.execute(
                "INSERT INTO bench_by_hand (key, value) VALUES ($1, $2) \
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                &[&"bench", &json],
            )
            .unwrap();
            tx.commit().unwrap();
        });
        println!(
            "| save {label} | {ours:.2?} | {hand:.2?} | {:.2}x |",
            ours.as_secs_f64() / hand.as_secs_f64()
        );
        let ours = time(iters, || {
            let got = store.load::<String>(&key).unwrap().unwrap();
            assert_eq!(got.value().len(), size);
        });
        let hand = time(iters, || {
            let row = client
                .query_one("SELECT value FROM bench_by_hand WHERE key = $1", &[&"bench"])
                .unwrap();
            let bytes: Vec<u8> = row.get(0);
            let got: String = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(got.len(), size);
        });
        println!(
            "| load {label} | {ours:.2?} | {hand:.2?} | {:.2}x |",
            ours.as_secs_f64() / hand.as_secs_f64()
        );
    }
    store.clear(&key)?;
    client.batch_execute("DROP TABLE bench_by_hand")?;
    Ok(())
}

#[cfg(not(feature = "postgres"))]
fn main() {
    eprintln!("this bench needs --features postgres");
}
