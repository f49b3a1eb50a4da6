//! Turning entries into text: aligned tables, ages, sizes, safe strings,
//! indented JSON, and the `--json` documents.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::scan::{Entry, Group, Status};

/// An age as its two most significant units, whole seconds at the finest:
/// `5s`, `24m 38s`, `3days 4h`, `26years 10months`.
pub fn age(d: Duration) -> String {
    let whole = Duration::from_secs(d.as_secs());
    let full = humantime::format_duration(whole).to_string();
    full.split(' ').take(2).collect::<Vec<_>>().join(" ")
}

/// An age in whole seconds, every unit: `24m 38s`.
pub fn age_exact(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// A time as RFC 3339 UTC with nanoseconds, as stash headers write it.
pub fn time(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

/// A size in bytes, KiB, MiB or GiB.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `s` with backslashes and control characters escaped (`\n`, `\u{1b}`, …),
/// so that an origin cannot break a table's lines or send escape sequences
/// to the operator's terminal.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
    }
    out
}

/// `s` cut to at most `max` characters, ending in `…` when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// How a table column is aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Padded on the right.
    Left,
    /// Padded on the left.
    Right,
}

/// Rows under a header row, columns two spaces apart; no trailing spaces.
pub fn table(columns: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let header: Vec<String> = columns.iter().map(|(name, _)| (*name).to_owned()).collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let pad = widths[i] - cell.chars().count();
            if i > 0 {
                line.push_str("  ");
            }
            match columns[i].1 {
                Align::Left => {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
                Align::Right => {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Re-indents valid JSON text the way `serde_json`'s pretty printer does (two
/// spaces, `": "`), keeping every token as written: object members stay in
/// their stored order and numbers keep their digits.
pub fn pretty_json(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len() * 2);
    let mut depth = 0usize;
    let newline = |out: &mut Vec<u8>, depth: usize| {
        out.push(b'\n');
        out.extend(std::iter::repeat_n(b' ', depth * 2));
    };
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        i += 1;
        match b {
            b'"' => {
                // Copy the string through; JSON's structural bytes are ASCII,
                // so they never occur inside a multi-byte UTF-8 sequence.
                out.push(b);
                while i < bytes.len() {
                    let c = bytes[i];
                    out.push(c);
                    i += 1;
                    if c == b'\\' && i < bytes.len() {
                        out.push(bytes[i]);
                        i += 1;
                    } else if c == b'"' {
                        break;
                    }
                }
            }
            b'{' | b'[' => {
                let close = if b == b'{' { b'}' } else { b']' };
                let mut j = i;
                while j < bytes.len() && bytes[j].is_ascii_whitespace() {
                    j += 1;
                }
                out.push(b);
                if bytes.get(j) == Some(&close) {
                    out.push(close);
                    i = j + 1;
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(b);
            }
            b',' => {
                out.push(b);
                newline(&mut out, depth);
            }
            b':' => out.extend_from_slice(b": "),
            b' ' | b'\t' | b'\n' | b'\r' => {}
            _ => out.push(b),
        }
    }
    // Only ASCII whitespace was dropped and ASCII added: still UTF-8.
    String::from_utf8(out).unwrap_or_else(|_| text.to_owned())
}

/// One entry in `--json` output (see docs/CLI.md).
#[derive(Debug, Serialize)]
pub struct JsonEntry<'a> {
    /// The key.
    pub key: &'a str,
    /// The file's name in the store directory.
    pub file: &'a str,
    /// The status name ([`Status::as_str`]).
    pub status: &'static str,
    /// The header's kind.
    pub kind: Option<&'a str>,
    /// The header's origin.
    pub origin: Option<&'a str>,
    /// The header's created time, RFC 3339.
    pub created: Option<String>,
    /// Whole seconds since `created`.
    pub age_seconds: Option<u64>,
    /// The file's size in bytes.
    pub size: Option<u64>,
    /// The verified SHA-256, for `ok` stashes.
    pub sha256: Option<String>,
    /// Why a stash is not `ok`.
    pub error: Option<&'a str>,
}

impl<'a> JsonEntry<'a> {
    /// The JSON form of `entry`, ages measured at `now`.
    pub fn new(entry: &'a Entry, now: SystemTime) -> JsonEntry<'a> {
        let header = entry.header.as_ref();
        JsonEntry {
            key: entry.key.as_str(),
            file: &entry.file,
            status: entry.status.as_str(),
            kind: header.map(|h| h.kind()),
            origin: header.and_then(|h| h.origin()),
            created: header.map(|h| time(h.created())),
            age_seconds: entry.age(now).map(|d| d.as_secs()),
            size: entry.size,
            sha256: entry.digest.map(|d| d.to_string()),
            error: entry.problem.as_deref(),
        }
    }
}

/// The library's own records in JSON, by namespace: `{"journal": [...]}`.
pub type JsonNamespaces<'a> = BTreeMap<&'a str, Vec<JsonEntry<'a>>>;

/// `safestash list --json`.
#[derive(Debug, Serialize)]
pub struct JsonList<'a> {
    /// The store directory, as given.
    pub dir: String,
    /// Every entry of the user's keyspace, sorted.
    pub entries: Vec<JsonEntry<'a>>,
    /// The library's own records, by namespace; absent when there are none.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub namespaces: JsonNamespaces<'a>,
}

/// `safestash verify --json`.
#[derive(Debug, Serialize)]
pub struct JsonVerify<'a> {
    /// The store directory, as given.
    pub dir: String,
    /// `ok`, `corrupt` or `error`, matching `exit_code` 0, 1, 2.
    pub result: &'static str,
    /// The exit code of the run.
    pub exit_code: u8,
    /// Every user stash checked, sorted by key.
    pub stashes: Vec<JsonEntry<'a>>,
    /// Every record of the library's checked, by namespace; absent when
    /// there are none.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub namespaces: JsonNamespaces<'a>,
}

/// The groups' entries that pass `keep`, by namespace, in JSON.
pub fn json_namespaces<'a>(
    groups: &'a [Group],
    now: SystemTime,
    keep: impl Fn(&Entry) -> bool,
) -> JsonNamespaces<'a> {
    let mut out = JsonNamespaces::new();
    for g in groups {
        let entries = g.entries.iter().filter(|e| keep(e)).map(|e| JsonEntry::new(e, now));
        out.entry(g.place.namespace()).or_default().extend(entries);
    }
    out
}

/// The `list` table: key, kind, origin, age, size, status.
pub fn list_table(entries: &[Entry], now: SystemTime) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let header = e.header.as_ref();
            vec![
                e.key.to_string(),
                header.map_or("-".to_owned(), |h| h.kind().to_owned()),
                header
                    .and_then(|h| h.origin())
                    .map_or("-".to_owned(), |o| truncate(&escape(o), 40)),
                e.age(now).map_or("-".to_owned(), age),
                e.size.map_or("-".to_owned(), size),
                e.status.as_str().to_owned(),
            ]
        })
        .collect();
    table(
        &[
            ("KEY", Align::Left),
            ("KIND", Align::Left),
            ("ORIGIN", Align::Left),
            ("AGE", Align::Left),
            ("SIZE", Align::Right),
            ("STATUS", Align::Left),
        ],
        &rows,
    )
}

/// How `verify` and `gc` describe a stash that is not intact, as in
/// "`k` is corrupt".
pub fn status_phrase(status: Status) -> &'static str {
    match status {
        Status::Ok => "intact",
        Status::Corrupt => "corrupt",
        Status::NotAFile => "not a regular file",
        Status::Unsupported => "of an unsupported format version",
        Status::Unreadable => "unreadable",
        Status::TempLeftover => "a temp leftover",
        Status::Quarantined => "quarantined",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_json_is_serde_jsons_layout_with_tokens_kept() {
        // Members already in sorted order and canonical numbers: exactly
        // what serde_json's pretty printer writes.
        for text in [
            r#"[{"id":"amount","info":{"label":"Amount","notes":"in EUR"}},{"id":"c","info":{}}]"#,
            r#"{"a":[1,-2.5,{"y":"x,\"]}:","z":null}],"e":{},"f":[]}"#,
            r#""just a string""#,
            "42",
            "[]",
        ] {
            let value: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(pretty_json(text), serde_json::to_string_pretty(&value).unwrap(), "{text}");
        }
        // Stored member order and number spelling are kept; whitespace goes.
        assert_eq!(pretty_json(r#"{"b":1, "a":2.50}"#), "{\n  \"b\": 1,\n  \"a\": 2.50\n}");
        assert_eq!(pretty_json(r#"{"e":{ },"f":[ ]}"#), "{\n  \"e\": {},\n  \"f\": []\n}");
    }

    #[test]
    fn ages_show_two_units() {
        assert_eq!(age(Duration::from_millis(5_900)), "5s");
        assert_eq!(age(Duration::from_secs(24 * 60 + 38)), "24m 38s");
        assert_eq!(age(Duration::from_secs(3 * 86_400 + 4 * 3600 + 5)), "3days 4h");
        assert_eq!(age(Duration::ZERO), "0s");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape("job \"4\"\nline\t\u{1b}[31m\\"), "job \"4\"\\nline\\t\\u{1b}[31m\\\\");
    }

    #[test]
    fn tables_align_without_trailing_spaces() {
        let t = table(
            &[("A", Align::Left), ("N", Align::Right), ("Z", Align::Left)],
            &[
                vec!["long".into(), "1".into(), "x".into()],
                vec!["s".into(), "100".into(), "".into()],
            ],
        );
        assert_eq!(t, "A       N  Z\nlong    1  x\ns     100\n");
    }

    #[test]
    fn sizes() {
        assert_eq!(size(492), "492 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(5 << 20), "5.0 MiB");
    }
}
