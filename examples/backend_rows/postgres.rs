//! The PostgreSQL rows: safestash's verbs next to the same statements
//! written by hand with the same durability, each in one round trip: a
//! simple-query batch `BEGIN; SET LOCAL synchronous_commit = on; INSERT
//! ... ON CONFLICT DO UPDATE` (or `DO NOTHING` for a create, or a
//! `DELETE`) `; COMMIT`, the JSON as a hex `bytea` literal, a batch's
//! upserts all in one such transaction; a prepared `SELECT` and
//! `serde_json::from_slice` to load. Both sides go through the bench's
//! proxy in front of the server. The ratio is the cost of the envelope, the checksum, the
//! advisory lock, the condition's check and every round trip beyond the
//! hand-written call's.

use postgres::{Client, NoTls};
use safestash::{Precondition, SaveOptions, StashKey, Store};

use super::proxy::{Proxy, delay_from_env};
use super::{Contender, Row, interleaved};

/// The label of the row of one batch of 1,000 stashes of 1 KiB against
/// 1,000 single saves.
pub const BATCH_1000: &str = "one batch of 1,000 × 1 KiB";

/// The done-when targets of the PostgreSQL rows, as markdown table rows:
/// save and load of 1 KiB against the hand-written call, round trips, and
/// the batch's speed-up.
pub fn targets(rows: &[Row]) -> String {
    let find = |op: &str| rows.iter().find(|r| r.op.starts_with(op));
    let mut s = String::new();
    let mut line = |what: &str, got: f64, ok: bool| {
        s.push_str(&format!("| {what} | {got:.2} | {} |\n", if ok { "yes" } else { "**no**" }));
    };
    if let Some(r) = find("save 1 KiB") {
        line(
            "PostgreSQL save 1 KiB ≤ 1.2 × by hand",
            r.ours.secs / r.hand.secs,
            r.ours.secs <= 1.2 * r.hand.secs,
        );
        line(
            "PostgreSQL round trips per plain small save ≤ 1",
            r.ours.round_trips,
            r.ours.round_trips <= 1.0,
        );
    }
    if let Some(r) = find("load 1 KiB") {
        line(
            "PostgreSQL load 1 KiB ≤ 1.1 × by hand",
            r.ours.secs / r.hand.secs,
            r.ours.secs <= 1.1 * r.hand.secs,
        );
        line(
            "PostgreSQL round trips per small load ≤ 1",
            r.ours.round_trips,
            r.ours.round_trips <= 1.0,
        );
    }
    if let Some(r) = find("save if absent 1 KiB") {
        line(
            "PostgreSQL round trips per conditional small save ≤ 2",
            r.ours.round_trips,
            r.ours.round_trips <= 2.0,
        );
    }
    if let Some(r) = find(BATCH_1000) {
        let speedup = r.hand.secs / r.ours.secs;
        line(
            "PostgreSQL 1,000 × 1 KiB: one batch ≥ 10 × faster than single saves",
            speedup,
            speedup >= 10.0,
        );
    }
    s
}

/// `url` with its `host:port` replaced by a proxy's in front of it, and
/// the proxy; `None` when the URL names no TCP `host:port`.
fn proxied(url: &str) -> Result<Option<(String, Proxy)>, Box<dyn std::error::Error>> {
    let Some((scheme, rest)) = url.split_once("://") else { return Ok(None) };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let hostport = authority.rsplit('@').next().unwrap_or(authority);
    if !hostport.contains(':') || hostport.starts_with('%') {
        return Ok(None);
    }
    let proxy = Proxy::start(hostport, delay_from_env())?;
    let at = authority.len() - hostport.len();
    let new = format!("{scheme}://{}{}{}", &authority[..at], proxy.addr, &rest[end..]);
    Ok(Some((new, proxy)))
}

/// The rows, medians over `rounds` interleaved rounds, for the database at
/// `base` (a `postgresql://` URL without a `namespace` parameter: the rows
/// use a fresh namespace and a scratch table, both removed at the end),
/// and whether they went through the proxy.
///
/// # Errors
///
/// When the store cannot be opened or a statement fails.
pub fn rows(base: &str, rounds: usize) -> Result<(Vec<Row>, bool), Box<dyn std::error::Error>> {
    let (base, proxy) = match proxied(base)? {
        Some((url, proxy)) => (url, Some(proxy)),
        None => (base.to_owned(), None),
    };
    let proxy = proxy.as_ref();
    let ns = format!("bench-{}", std::process::id());
    let sep = if base.contains('?') { '&' } else { '?' };
    let store = Store::open_url(&format!("{base}{sep}namespace={ns}"))?;
    let mut client = Client::connect(&base, NoTls)?;
    let table = format!("bench_by_hand_{}", std::process::id());
    client.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {table} (key text PRIMARY KEY, value bytea NOT NULL)"
    ))?;
    let hex = |json: &[u8]| {
        let mut s = String::with_capacity(2 * json.len() + 2);
        s.push_str("\\x");
        for b in json {
            s.push_str(&format!("{b:02x}"));
        }
        s
    };
    let upsert = |key: &str, json: &[u8]| {
        format!(
            "INSERT INTO {table} (key, value) VALUES ('{key}', '{}') \
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;",
            hex(json)
        )
    };
    let create = |key: &str, json: &[u8]| {
        format!(
            "INSERT INTO {table} (key, value) VALUES ('{key}', '{}') ON CONFLICT (key) DO NOTHING;",
            hex(json)
        )
    };
    let delete = format!("DELETE FROM {table} WHERE key = 'bench';");
    let select = client.prepare(&format!("SELECT value FROM {table} WHERE key = $1"))?;
    let key = StashKey::new("bench")?;
    let opts = SaveOptions::new();
    let mut out = Vec::new();
    // The client is used by the by-hand side of every row, one call at a
    // time: a RefCell lends it to each closure.
    let client = std::cell::RefCell::new(&mut client);
    // One round trip: the whole transaction as one simple-query batch.
    let in_tx = |sql: &str| {
        let batch = format!("BEGIN; SET LOCAL synchronous_commit = on; {sql} COMMIT;");
        client.borrow_mut().batch_execute(&batch).unwrap();
    };
    for (label, size, iters) in [("1 KiB", 1usize << 10, 20u32), ("1 MiB", 1 << 20, 3)] {
        let value = "x".repeat(size);
        let json = serde_json::to_vec(&value)?;
        let envelope = store.save(&key, &value)?.bytes;
        let save_sql = upsert("bench", &json);
        let create_sql = create("bench", &json);
        in_tx(&save_sql);
        let (a, b) = interleaved(
            proxy,
            rounds,
            iters,
            Contender::call(|| drop(store.save(&key, &value).unwrap())),
            Contender::call(|| in_tx(&save_sql)),
        );
        out.push(Row { op: format!("save {label}"), ours: a, hand: b, envelope: None });
        let (a, b) = interleaved(
            proxy,
            rounds,
            iters,
            Contender::call(|| {
                let got = store.load::<String>(&key).unwrap().unwrap();
                assert_eq!(got.value().len(), size);
            }),
            Contender::call(|| {
                let row = client.borrow_mut().query_one(&select, &[&"bench"]).unwrap();
                let bytes: &[u8] = row.get(0);
                let got: String = serde_json::from_slice(bytes).unwrap();
                assert_eq!(got.len(), size);
            }),
        );
        out.push(Row { op: format!("load {label}"), ours: a, hand: b, envelope: Some(envelope) });
        if size != 1 << 10 {
            continue;
        }
        let delete_hand = || in_tx(&delete);
        let (a, b) = interleaved(
            proxy,
            rounds,
            iters,
            Contender::after(
                || {
                    store.clear(&key).unwrap();
                },
                || drop(store.save_if(&key, &value, &opts, Precondition::Absent).unwrap()),
            ),
            Contender::after(delete_hand, || in_tx(&create_sql)),
        );
        out.push(Row { op: format!("save if absent {label}"), ours: a, hand: b, envelope: None });
        let (a, b) = interleaved(
            proxy,
            rounds,
            iters,
            Contender::after(
                || drop(store.save(&key, &value).unwrap()),
                || assert!(store.clear(&key).unwrap()),
            ),
            Contender::after(|| in_tx(&save_sql), delete_hand),
        );
        out.push(Row { op: format!("clear {label}"), ours: a, hand: b, envelope: None });
        // A batch of 100 stashes, against 100 upserts in one transaction.
        let keys: Vec<StashKey> =
            (0..100).map(|i| StashKey::new(format!("batch-{i:03}")).unwrap()).collect();
        let all: String = (0..100).map(|i| upsert(&format!("batch-{i:03}"), &json)).collect();
        let (a, b) = interleaved(
            proxy,
            rounds,
            1,
            Contender::call(|| {
                let mut batch = store.batch();
                for k in &keys {
                    batch.add(k, &value, &opts).unwrap();
                }
                batch.commit().unwrap();
            }),
            Contender::call(|| in_tx(&all)),
        );
        out.push(Row { op: format!("batch of 100 × {label}"), ours: a, hand: b, envelope: None });
        for k in &keys {
            store.clear(k)?;
        }
        // 1,000 stashes in one batch, against the same 1,000 saved one by
        // one (safestash on both sides: the batch's own speed-up).
        let keys: Vec<StashKey> =
            (0..1000).map(|i| StashKey::new(format!("many-{i:04}")).unwrap()).collect();
        let (a, b) = interleaved(
            proxy,
            rounds,
            1,
            Contender::call(|| {
                let mut batch = store.batch();
                for k in &keys {
                    batch.add(k, &value, &opts).unwrap();
                }
                batch.commit().unwrap();
            }),
            Contender::call(|| {
                for k in &keys {
                    store.save(k, &value).unwrap();
                }
            }),
        );
        out.push(Row {
            op: format!("{BATCH_1000} (by hand: the same 1,000 saved one at a time)"),
            ours: a,
            hand: b,
            envelope: None,
        });
        for k in &keys {
            store.clear(k)?;
        }
        store.save(&key, &value)?;
    }
    store.clear(&key)?;
    client.borrow_mut().batch_execute(&format!("DROP TABLE {table}"))?;
    Ok((out, proxy.is_some()))
}
