//! The MySQL/MariaDB server the tests run against, from the environment.
//!
//! `SAFESTASH_TEST_MYSQL_URL` names a database the tests may write to
//! (`.ci/mariadb.sh`, run by `.ci/run`, starts a throwaway MariaDB and
//! exports it). When it is unset a test prints why it skips its MySQL part;
//! under `CI=true` that is a failure instead, so CI can never skip these
//! tests silently. Raw SQL (damage, server settings) goes through the
//! `mysql` client crate directly, never through the store.
#![allow(dead_code)] // each test crate uses a different subset

use std::sync::atomic::{AtomicU32, Ordering};

/// The server's URL, or `None` (with the reason printed) when the tests
/// should skip. Panics under `CI=true` when it is missing.
pub fn url(test: &str) -> Option<String> {
    match std::env::var("SAFESTASH_TEST_MYSQL_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "{test}: CI=true but SAFESTASH_TEST_MYSQL_URL is not set; \
                     the MySQL tests must never be skipped in CI"
                );
            }
            eprintln!(
                "{test}: skipping the MySQL part: SAFESTASH_TEST_MYSQL_URL is not set \
                 (bash .ci/run starts a server and sets it; or \
                 eval \"$(bash .ci/mariadb.sh start)\")"
            );
            None
        }
    }
}

/// A namespace no other test (or earlier run) uses.
pub fn fresh_namespace(test: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{test}-{}-{nanos}-{n}", std::process::id())
}

/// `url` with `?namespace=ns` (or `&namespace=ns`) appended.
pub fn with_namespace(url: &str, ns: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}namespace={ns}")
}

/// A raw client connection to the server of `url` (the store's own
/// parameters removed).
#[cfg(feature = "mysql")]
pub fn raw(url: &str) -> mysql::Conn {
    let base = url.split('?').next().unwrap();
    let opts =
        mysql::OptsBuilder::from_opts(mysql::Opts::from_url(base).unwrap()).prefer_socket(false);
    mysql::Conn::new(opts).expect("connect to the test server")
}

/// The `host:port` of a `mysql://user@host:port/db...` URL.
pub fn host_port(url: &str) -> String {
    let rest = url.split_once("://").expect("a URL").1;
    let authority = rest.split(['/', '?']).next().unwrap();
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if hostport.contains(':') { hostport.to_owned() } else { format!("{hostport}:3306") }
}

/// `url` with its `host:port` replaced by `127.0.0.1:port`.
pub fn via_port(url: &str, port: u16) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let authority = match authority.rsplit_once('@') {
        Some((user, _)) => format!("{user}@127.0.0.1:{port}"),
        None => format!("127.0.0.1:{port}"),
    };
    format!("{scheme}://{authority}{tail}")
}
