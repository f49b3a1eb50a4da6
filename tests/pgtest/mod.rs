//! The PostgreSQL server the tests run against, from the environment.
//!
//! `SAFESTASH_TEST_POSTGRES_URL` names a database the tests may write to
//! (`.ci/run` starts a throwaway server and exports it). When it is unset
//! a test prints why it skips its PostgreSQL part; under `CI=true` that is
//! a failure instead, so CI can never skip these tests silently.
#![allow(dead_code)] // each test crate uses a different subset

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// The server's URL, or `None` (with the reason printed) when the tests
/// should skip. Panics under `CI=true` when it is missing.
pub fn url(test: &str) -> Option<String> {
    match std::env::var("SAFESTASH_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "{test}: CI=true but SAFESTASH_TEST_POSTGRES_URL is not set; \
                     the PostgreSQL tests must never be skipped in CI"
                );
            }
            eprintln!(
                "{test}: skipping the PostgreSQL part: SAFESTASH_TEST_POSTGRES_URL is not set \
                 (bash .ci/run starts a server and sets it)"
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

/// The directory of PostgreSQL's programs (`SAFESTASH_TEST_PGBIN`, else
/// the Debian location of version 15).
pub fn pgbin() -> String {
    std::env::var("SAFESTASH_TEST_PGBIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into())
}

/// Runs `sql` with psql against `url` (no namespace parameter) and returns
/// its unaligned output. Panics when psql fails.
pub fn psql(url: &str, sql: &str) -> String {
    let psql = format!("{}/psql", pgbin());
    let psql = if std::path::Path::new(&psql).exists() { psql } else { "psql".into() };
    let out = Command::new(psql)
        .args([url, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("run psql");
    assert!(out.status.success(), "psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A SQL string literal for `s` (tests only: values here are test-made).
pub fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
