//! Keeping secrets out of messages: the one redaction of a database URL,
//! shared by the PostgreSQL and MySQL backends.

/// A query parameter's name, percent-decoded and lowercased.
pub(crate) fn param_name(name: &str) -> String {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).to_ascii_lowercase()
}

/// `url` with any password replaced by `***`: the userinfo's (everything
/// between the first `:` after the scheme and the last `@`, so a password
/// with `/`, `?` or `@` in it is covered too), and the value of every
/// query parameter whose raw name `secret` says is one. `None` when `url`
/// is not a URL (no `://`): the caller says what to show instead.
pub(crate) fn redact_url(url: &str, secret: impl Fn(&str) -> bool) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let (userinfo, after) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let userinfo = match userinfo {
        Some(u) => match u.split_once(':') {
            Some((user, _)) => format!("{user}:***@"),
            None => format!("{u}@"),
        },
        None => String::new(),
    };
    let after = match after.split_once('?') {
        Some((path, query)) => {
            let pairs: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((name, _)) if secret(name) => format!("{name}=***"),
                    _ => p.to_owned(),
                })
                .collect();
            format!("{path}?{}", pairs.join("&"))
        }
        None => after.to_owned(),
    };
    Some(format!("{scheme}://{userinfo}{after}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_go_wherever_they_are() {
        let secret = |n: &str| param_name(n) == "password";
        assert_eq!(
            redact_url(
                "postgresql://u:p@ss/w?rd@h:5/db?namespace=a&PassWord=x&%70assword=y",
                secret
            )
            .unwrap(),
            "postgresql://u:***@h:5/db?namespace=a&PassWord=***&%70assword=***"
        );
        assert_eq!(redact_url("mysql://u@h/db", secret).unwrap(), "mysql://u@h/db");
        assert!(redact_url("host=h password=x", secret).is_none());
    }
}
