//! The MySQL/MariaDB rows: safestash's save and load next to the durable
//! statement written by hand, each in one round trip: an autocommit
//! `INSERT ... ON DUPLICATE KEY UPDATE` of the JSON as a hex literal (the
//! server's `innodb_flush_log_at_trx_commit = 1`, which the store checks at
//! open, makes that commit durable), and a prepared `SELECT` and
//! `serde_json::from_slice` to load. Both sides go through the bench's
//! proxy in front of the server. The ratio is the cost of the envelope, the
//! checksum, the named lock, the condition's check in a transaction and
//! every round trip beyond the hand-written call's.

use mysql::prelude::Queryable;
use safestash::{StashKey, Store};

use super::proxy::{Proxy, delay_from_env};
use super::{Contender, Row, interleaved};

/// `url` with its `host:port` replaced by a proxy's in front of it, and
/// the proxy; `None` when the URL names no TCP `host:port`.
fn proxied(url: &str) -> Result<Option<(String, Proxy)>, Box<dyn std::error::Error>> {
    let Some((scheme, rest)) = url.split_once("://") else { return Ok(None) };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let hostport = authority.rsplit('@').next().unwrap_or(authority);
    if !hostport.contains(':') {
        return Ok(None);
    }
    let proxy = Proxy::start(hostport, delay_from_env())?;
    let at = authority.len() - hostport.len();
    let new = format!("{scheme}://{}{}{}", &authority[..at], proxy.addr, &rest[end..]);
    Ok(Some((new, proxy)))
}

/// The rows, medians over `rounds` interleaved rounds, for the database at
/// `base` (a `mysql://` URL without a `namespace` parameter: the rows use a
/// fresh namespace and a scratch table, both removed at the end), and
/// whether they went through the proxy.
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
    let opts = mysql::OptsBuilder::from_opts(mysql::Opts::from_url(&base)?).prefer_socket(false);
    let mut client = mysql::Conn::new(opts)?;
    let table = format!("bench_by_hand_{}", std::process::id());
    client.query_drop(format!(
        "CREATE TABLE IF NOT EXISTS {table} (k VARBINARY(255) PRIMARY KEY, v LONGBLOB NOT NULL) \
         ENGINE=InnoDB"
    ))?;
    let upsert = |json: &[u8]| {
        let mut s = format!("INSERT INTO {table} (k, v) VALUES ('bench', X'");
        for b in json {
            s.push_str(&format!("{b:02x}"));
        }
        s.push_str("') ON DUPLICATE KEY UPDATE v = VALUES(v)");
        s
    };
    let select = client.prep(format!("SELECT v FROM {table} WHERE k = ?"))?;
    let key = StashKey::new("bench")?;
    let mut out = Vec::new();
    let client = std::cell::RefCell::new(&mut client);
    for (label, size, iters) in [("1 KiB", 1usize << 10, 20u32), ("1 MiB", 1 << 20, 3)] {
        let value = "x".repeat(size);
        let json = serde_json::to_vec(&value)?;
        let envelope = store.save(&key, &value)?.bytes;
        let save_sql = upsert(&json);
        client.borrow_mut().query_drop(&save_sql)?;
        let (a, b) = interleaved(
            proxy,
            rounds,
            iters,
            Contender::call(|| drop(store.save(&key, &value).unwrap())),
            Contender::call(|| client.borrow_mut().query_drop(&save_sql).unwrap()),
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
                let bytes: Vec<u8> =
                    client.borrow_mut().exec_first(&select, ("bench",)).unwrap().unwrap();
                let got: String = serde_json::from_slice(&bytes).unwrap();
                assert_eq!(got.len(), size);
            }),
        );
        out.push(Row { op: format!("load {label}"), ours: a, hand: b, envelope: Some(envelope) });
    }
    store.clear(&key)?;
    client.borrow_mut().query_drop(format!("DROP TABLE {table}"))?;
    Ok((out, proxy.is_some()))
}
