//! A `mysql://` URL: the store's own parameters taken out, the rest handed
//! to the client, and the password kept out of every message.

use std::time::Duration;

use crate::backend::redact::{param_name, redact_url};
use crate::error::{BackendOp, Error, Result};
use crate::key::StashKey;

use super::{DEFAULT_LOCK_TIMEOUT, DEFAULT_NAMESPACE, DEFAULT_TIMEOUT};

/// Whether commits must be durable on the server (checked at open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Durability {
    /// The default: refuse a server that does not flush at every commit.
    Commit,
    /// `durability=server`: the server's settings decide.
    Server,
}

/// What a store URL says.
pub(super) struct Parsed {
    /// The client's options (with the password: never printed).
    pub(super) opts: mysql::Opts,
    pub(super) ns: String,
    pub(super) timeout: Duration,
    pub(super) lock_timeout: Duration,
    pub(super) durability: Durability,
    /// `mysql://user@host:port/db`, no password.
    pub(super) base: String,
}

pub(super) fn url_error(url: &str, rule: &'static str) -> Error {
    Error::InvalidOption { field: "url", value: redact(url), rule }
}

/// `url` with any password replaced by `***`: the userinfo's (everything
/// between the first `:` after the scheme and the last `@`, so a password
/// with `/`, `?` or `@` in it is covered too) and every query parameter
/// whose name holds `pass` or `secret` (any case or percent-encoding).
pub(super) fn redact(url: &str) -> String {
    redact_url(url, is_secret)
        .unwrap_or_else(|| "(not a URL; not shown, it may hold a password)".to_owned())
}

fn is_secret(name: &str) -> bool {
    let name = param_name(name);
    name.contains("pass") || name.contains("secret")
}

/// Parses a store URL (see the [module docs](super)).
pub(super) fn parse(url: &str) -> Result<Parsed> {
    let (base_url, query) = url.split_once('?').unwrap_or((url, ""));
    let mut ns = DEFAULT_NAMESPACE.to_owned();
    let mut lock_timeout = DEFAULT_LOCK_TIMEOUT;
    let mut timeout = DEFAULT_TIMEOUT;
    let mut durability = Durability::Commit;
    let mut tls = false;
    let mut passed = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "namespace" => {
                ns = StashKey::new(value)
                    .map_err(|_| {
                        url_error(
                            url,
                            "namespace must be a valid key ([A-Za-z0-9._-], not starting with '.')",
                        )
                    })?
                    .into_string();
            }
            "lock_timeout" => {
                lock_timeout = humantime::parse_duration(value)
                    .map_err(|_| url_error(url, "lock_timeout must be a duration such as 30s"))?;
            }
            "timeout" => {
                timeout = humantime::parse_duration(value)
                    .ok()
                    .filter(|t| !t.is_zero())
                    .ok_or_else(|| url_error(url, "timeout must be a duration such as 30s"))?;
            }
            "tls" => {
                tls = match value {
                    "on" | "true" => true,
                    "off" | "false" => false,
                    _ => return Err(url_error(url, "tls must be `on` or `off`")),
                };
            }
            "durability" => {
                durability = match value {
                    "commit" => Durability::Commit,
                    "server" => Durability::Server,
                    _ => return Err(url_error(url, "durability must be `commit` or `server`")),
                };
            }
            // The client's own parameters that would change what the store
            // relies on (its pool, a server-side reset, a socket).
            "pool_min" | "pool_max" | "reset_connection" | "check_health" | "stmt_cache_size" => {
                return Err(url_error(
                    url,
                    "pool_min, pool_max, reset_connection, check_health and stmt_cache_size are \
                     set by the store",
                ));
            }
            _ if is_secret(name) && name != "password" => {
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
    // The client's URL errors can echo a parameter's value: only the
    // parameter's name reaches the message.
    let opts = mysql::Opts::from_url(&client_url).map_err(|e| Error::Backend {
        op: BackendOp::ParseUrl,
        target: redact(url),
        source: match e {
            mysql::UrlError::InvalidValue(param, _) => {
                format!("invalid value for the URL parameter `{param}`").into()
            }
            mysql::UrlError::UnknownParameter(param) => {
                format!("unknown URL parameter `{param}`").into()
            }
            mysql::UrlError::FeatureRequired(feature, param) => format!(
                "the URL parameter `{param}` needs TLS: build safestash with the cargo feature \
                 `mysql-tls` (the client's `{feature}`)"
            )
            .into(),
            mysql::UrlError::UnsupportedScheme(_) => "the scheme must be mysql://".into(),
            _ => "not a valid mysql://user@host:port/db URL".into(),
        },
    })?;
    // `tls=on`: TLS with the default roots, when no TLS parameter of the
    // client's turned it on already.
    let opts = if tls && opts.get_ssl_opts().is_none() {
        mysql::OptsBuilder::from_opts(opts).ssl_opts(mysql::SslOpts::default()).into()
    } else {
        opts
    };
    // Without a TLS stack the client would panic at the first connection.
    if opts.get_ssl_opts().is_some() && !cfg!(feature = "mysql-tls") {
        return Err(url_error(
            url,
            "TLS (tls=on, root_cert_path, ...) needs safestash built with the cargo feature \
             `mysql-tls`",
        ));
    }
    if opts.get_db_name().is_none_or(str::is_empty) {
        return Err(url_error(
            url,
            "a mysql:// store URL names its database: mysql://user@host:port/db",
        ));
    }
    let user = opts.get_user().map(|u| format!("{u}@")).unwrap_or_default();
    let base = format!(
        "mysql://{user}{}:{}/{}",
        opts.get_ip_or_hostname(),
        opts.get_tcp_port(),
        opts.get_db_name().unwrap_or("")
    );
    Ok(Parsed { opts, ns, timeout, lock_timeout, durability, base })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_userinfo_and_password_parameters() {
        assert_eq!(redact("mysql://u:p@ss/w?rd@h:1/db?x=1"), "mysql://u:***@h:1/db?x=1");
        assert_eq!(
            redact("mysql://u@h/db?password=s&PASS%77ord=t"),
            "mysql://u@h/db?password=***&PASS%77ord=***"
        );
        assert!(!redact("u:secret@host").contains("secret"));
    }

    #[test]
    fn takes_the_store_parameters_out() {
        let p = parse("mysql://u:pw@127.0.0.1:3307/db?namespace=etl&timeout=2s&lock_timeout=1s&durability=server")
            .unwrap();
        assert_eq!(p.ns, "etl");
        assert_eq!(p.timeout, Duration::from_secs(2));
        assert_eq!(p.lock_timeout, Duration::from_secs(1));
        assert_eq!(p.durability, Durability::Server);
        assert_eq!(p.base, "mysql://u@127.0.0.1:3307/db");
        let e = parse("mysql://u:pw@h/db?durability=maybe").err().unwrap().to_string();
        assert!(!e.contains("pw"), "{e}");
        let e = parse("mysql://u:hunter2@h/db?bogus=1").err().unwrap();
        let all = format!("{e} {:?}", std::error::Error::source(&e));
        assert!(!all.contains("hunter2") && all.contains("bogus"), "{all}");
        // The client's own error would echo the value: only the name shows.
        let e = parse("mysql://u@h/db?tcp_connect_timeout_ms=hunter3").err().unwrap();
        let all = format!("{:?}", std::error::Error::source(&e));
        assert!(all.contains("tcp_connect_timeout_ms") && !all.contains("hunter3"), "{all}");
        assert!(parse("mysql://u@h/").is_err());
        // TLS without its feature is refused, never a panic at connect.
        let tls = parse("mysql://u@h/db?tls=on");
        let ca = parse("mysql://u@h/db?root_cert_path=/ca.pem");
        if cfg!(feature = "mysql-tls") {
            assert!(tls.unwrap().opts.get_ssl_opts().is_some());
            assert!(ca.unwrap().opts.get_ssl_opts().is_some());
        } else {
            assert!(tls.is_err() && ca.is_err());
        }
        assert!(parse("mysql://u@h/db?tls=off").unwrap().opts.get_ssl_opts().is_none());
    }
}
