//! Opening a store from its URL: the parameters of its own, libpq's
//! environment variables, the TLS mode, and the URL as it may be shown
//! (without its password).

use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio_postgres::Config;
use tokio_postgres::config::Host;

use super::{DEFAULT_NAMESPACE, Postgres, Shared, Tls, Verify};
use crate::backend::redact::{param_name, redact_url};
use crate::error::{BackendOp, Error, Result};
use crate::key::StashKey;

const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(60);

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

impl Tls {
    /// The connector for libpq's `sslmode` (default `prefer`) and
    /// `sslrootcert`, setting the client's own mode to match.
    fn for_mode(
        url: &str,
        sslmode: Option<&str>,
        root_cert: Option<&str>,
        config: &mut Config,
    ) -> Result<Tls> {
        use postgres::config::SslMode;
        let (mode, verify) = match sslmode.unwrap_or("prefer") {
            "disable" => (SslMode::Disable, Verify::None),
            "prefer" => (SslMode::Prefer, Verify::None),
            "require" if root_cert.is_some() => (SslMode::Require, Verify::Ca),
            "require" => (SslMode::Require, Verify::None),
            "verify-ca" => (SslMode::Require, Verify::Ca),
            "verify-full" => (SslMode::Require, Verify::Full),
            _ => {
                return Err(url_error(
                    url,
                    "sslmode must be disable, prefer, require, verify-ca or verify-full",
                ));
            }
        };
        config.ssl_mode(mode);
        if mode == SslMode::Disable {
            return Ok(Tls::Plain);
        }
        #[cfg(feature = "postgres-tls")]
        {
            super::tls::connector(verify, root_cert).map(Tls::Rustls).map_err(|reason| {
                Error::Backend {
                    op: BackendOp::SetUpTls,
                    target: redact(url),
                    source: reason.into(),
                }
            })
        }
        #[cfg(not(feature = "postgres-tls"))]
        {
            let _ = (verify, root_cert);
            if mode == SslMode::Require {
                return Err(url_error(
                    url,
                    "TLS (sslmode require, verify-ca, verify-full) needs safestash built with the cargo feature `postgres-tls`",
                ));
            }
            Ok(Tls::Plain)
        }
    }
}

fn url_error(url: &str, rule: &'static str) -> Error {
    Error::InvalidOption { field: "url", value: redact(url), rule }
}

/// `url` with any password replaced by `***`: the userinfo's (everything
/// between the first `:` after the scheme and the last `@`, so a password
/// with `/`, `?` or `@` in it is covered too), and every query parameter
/// whose name is `password` in any case or percent-encoding. A string that
/// is not a URL is a libpq `key=value` string: its `password` values go.
pub(crate) fn redact(url: &str) -> String {
    redact_url(url, |name| param_name(name) == "password").unwrap_or_else(|| redact_conninfo(url))
}

/// A libpq `key=value` string with every `password` value (any case,
/// quoted or not) replaced by `***`.
pub(crate) fn redact_conninfo(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while !rest.is_empty() {
        let ws = rest.len() - rest.trim_start().len();
        out.push_str(&rest[..ws]);
        rest = &rest[ws..];
        let Some(eq) = rest.find('=') else {
            out.push_str(rest);
            break;
        };
        let name = &rest[..eq];
        let is_password = name.trim().eq_ignore_ascii_case("password");
        out.push_str(&rest[..=eq]);
        rest = rest[eq + 1..].trim_start();
        // The value: quoted (with \' and \\ escapes) or up to whitespace.
        let end = if let Some(quoted) = rest.strip_prefix('\'') {
            let mut esc = false;
            quoted
                .find(|c| {
                    let stop = !esc && c == '\'';
                    esc = !esc && c == '\\';
                    stop
                })
                .map_or(rest.len(), |i| i + 2)
        } else {
            rest.find(char::is_whitespace).unwrap_or(rest.len())
        };
        out.push_str(if is_password { "***" } else { &rest[..end] });
        rest = &rest[end..];
    }
    out
}

impl Postgres {
    /// Connects to the database of `url` (see the [module docs](super)),
    /// refusing a transaction-mode pooler, creating the schema if it is
    /// missing and the role may, and checking its version; then closes
    /// those sessions, so a store that is never used holds no connection.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOption`] for a malformed URL or parameter,
    /// [`Error::Backend`] when the server cannot be reached in time, sits
    /// behind a transaction-mode pooler, or the schema cannot be created
    /// or is of another version.
    pub fn connect(url: &str) -> Result<Postgres> {
        let (base_url, query) = match url.split_once('?') {
            Some((b, q)) => (b, q),
            None => (url, ""),
        };
        let mut ns = DEFAULT_NAMESPACE.to_owned();
        let mut lock_timeout = DEFAULT_LOCK_TIMEOUT;
        let mut timeout = DEFAULT_TIMEOUT;
        let mut passed = Vec::new();
        let (mut sslmode, mut root_cert) = (None, None);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "namespace" => {
                    ns = StashKey::new(value)
                        .map_err(|_| url_error(url, "namespace must be a valid key ([A-Za-z0-9._-], not starting with '.')"))?
                        .into_string();
                }
                "sslmode" => sslmode = Some(value.to_owned()),
                "sslrootcert" => root_cert = Some(value.to_owned()),
                "lock_timeout" => {
                    lock_timeout = humantime::parse_duration(value).map_err(|_| {
                        url_error(url, "lock_timeout must be a duration such as 30s")
                    })?;
                }
                "timeout" => {
                    timeout = humantime::parse_duration(value)
                        .ok()
                        .filter(|t| !t.is_zero())
                        .ok_or_else(|| url_error(url, "timeout must be a duration such as 30s"))?;
                }
                _ if param_name(name) == "password" && name != "password" => {
                    return Err(url_error(url, "the password parameter is spelled `password`"));
                }
                _ => passed.push(pair),
            }
        }
        let client_url = if passed.is_empty() {
            base_url.to_owned()
        } else {
            format!("{base_url}?{}", passed.join("&"))
        };
        let mut config = Config::from_str(&client_url).map_err(|e| Error::Backend {
            op: BackendOp::ParseUrl,
            target: redact(url),
            source: e.into(),
        })?;
        fill_from_env(&mut config);
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let sslmode = sslmode.or_else(|| env("PGSSLMODE"));
        let root_cert = root_cert.or_else(|| env("PGSSLROOTCERT"));
        let tls = Tls::for_mode(url, sslmode.as_deref(), root_cert.as_deref(), &mut config)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(timeout);
        }
        // A partition (unacknowledged data, a silent peer) also ends the
        // connection in the kernel, which frees a held lock's session.
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(timeout);
        }
        config.keepalives(true);
        config.keepalives_idle(timeout.max(Duration::from_secs(1)));
        if config.get_application_name().is_none() {
            config.application_name("safestash");
        }
        let base = describe(&config);
        let shared = Arc::new(Shared {
            config,
            tls,
            base,
            lock_timeout,
            timeout,
            schema: Mutex::new(String::new()),
            pool: Mutex::new(Vec::new()),
        });
        let store = Postgres::in_namespace(shared, ns);
        store.open()?;
        // A store that is never used holds nothing: the sessions the checks
        // opened are closed now, and calls open their own (a forked child
        // then has nothing of its parent's to abandon).
        store.shared.pool.lock().unwrap_or_else(PoisonError::into_inner).clear();
        Ok(store)
    }
}

/// libpq's environment variables for what the URL leaves out.
fn fill_from_env(config: &mut Config) {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if config.get_hosts().is_empty() {
        config.host(var("PGHOST").as_deref().unwrap_or("localhost"));
    }
    if config.get_ports().is_empty() {
        if let Some(port) = var("PGPORT").and_then(|p| p.parse().ok()) {
            config.port(port);
        }
    }
    if config.get_user().is_none() {
        if let Some(user) = var("PGUSER").or_else(|| var("USER")) {
            config.user(&user);
        }
    }
    if config.get_password().is_none() {
        if let Some(password) = var("PGPASSWORD") {
            config.password(password);
        }
    }
    if config.get_dbname().is_none() {
        if let Some(db) = var("PGDATABASE") {
            config.dbname(&db);
        }
    }
}

/// `postgresql://user@host:port/db`, never the password.
fn describe(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(Host::Unix(p)) => p.display().to_string(),
        None => String::new(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().map(|u| format!("{u}@")).unwrap_or_default();
    let db = config.get_dbname().or(config.get_user()).unwrap_or("");
    format!("postgresql://{user}{host}:{port}/{db}")
}
