//! The `safestash` operator CLI, run as a real process against a real store
//! holding good, corrupt, stale and temp-leftover entries.
//!
//! The binary is built by a plain `cargo test`: the dev-dependency on
//! `safestash-testkit` with its `cli` feature turns on this crate's `cli`
//! feature, which the `[[bin]]` target requires, so
//! `CARGO_BIN_EXE_safestash` is always set here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, SystemTime};

use assert_cmd::Command;
use safestash::envelope::{Header, encode};
use safestash::{Digest, SaveOptions, StashKey, Store};
// The journal's public path (moving to `safestash::journal::`): this line only.
use safestash::journal::{Expect, Operation, PartState};
use serde::Serialize;
use serde_json::Value;

const TEMP: &str = ".old.ok.Ab3dE5gH.tmp";
const MONTH: Duration = Duration::from_secs(30 * 86_400);

fn key(s: &str) -> StashKey {
    StashKey::new(s).unwrap()
}

/// Members deliberately not in alphabetical order: `show` must keep them.
#[derive(Serialize)]
struct Row {
    zebra: u32,
    apple: &'static str,
}

fn envelope(
    key_: &str,
    kind: &str,
    origin: Option<&str>,
    created: SystemTime,
    payload: &[u8],
) -> Vec<u8> {
    encode(&Header::new(key(key_), kind, origin, created).unwrap(), payload)
}

/// A store directory with:
/// - `fresh.ok`: saved just now by the library (kind `field-dictionary`,
///   origin `job-42`);
/// - `old.ok`: intact, written 30 days ago, origin with a line break;
/// - `old.corrupt`: written 30 days ago, one payload byte changed since;
/// - `garbage`: not a stash at all (no readable header, so no age);
/// - `.old.ok.Ab3dE5gH.tmp`: a stash without its end, left by a crashed
///   writer.
struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    fresh_digest: Digest,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("stashes");
    let store = Store::open(&dir).unwrap();
    let opts = SaveOptions::new().kind("field-dictionary").origin("job-42");
    let receipt = store.save_with(&key("fresh.ok"), &Row { zebra: 1, apple: "x" }, &opts).unwrap();
    let month_ago = SystemTime::now() - MONTH;
    let old = envelope("old.ok", "rows", Some("job-7\nline two"), month_ago, b"[1,2,3]");
    std::fs::write(dir.join("old.ok"), &old).unwrap();
    let mut corrupt = envelope("old.corrupt", "rows", Some("job-8"), month_ago, b"[4,5,6]");
    let at = corrupt.windows(7).position(|w| w == b"[4,5,6]").unwrap() + 3;
    corrupt[at] = b'7';
    std::fs::write(dir.join("old.corrupt"), &corrupt).unwrap();
    std::fs::write(dir.join("garbage"), b"not a stash at all\n").unwrap();
    std::fs::write(dir.join(TEMP), &old[..old.len() - 40]).unwrap();
    Fixture { _tmp: tmp, dir, fresh_digest: receipt.digest }
}

/// A store holding only intact stashes.
fn good_store() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let store = Store::open(&dir).unwrap();
    store.save(&key("a"), &1).unwrap();
    store.save(&key("b"), &[2, 3]).unwrap();
    (tmp, dir)
}

fn safestash() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_safestash"));
    cmd.env_remove("RUST_LOG");
    cmd
}

/// Runs `safestash ARGS` with stdin closed (never a terminal).
fn run(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut cmd = safestash();
    for a in args {
        cmd.arg(a);
    }
    cmd.write_stdin("").output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited normally")
}

/// The error is one line on stderr, `safestash: ...`, mentioning `needle`.
#[track_caller]
fn assert_one_line_error(out: &Output, needle: &str) {
    let err = String::from_utf8(out.stderr.clone()).unwrap();
    assert!(err.starts_with("safestash: "), "stderr: {err:?}");
    assert!(err.ends_with('\n') && err.matches('\n').count() == 1, "not one line: {err:?}");
    assert!(err.contains(needle), "{needle:?} not in {err:?}");
}

/// Every name in `dir` with its contents (a symlink's target).
fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let path = e.path();
            let bytes = if e.file_type().unwrap().is_symlink() {
                std::fs::read_link(&path).unwrap().into_os_string().into_encoded_bytes()
            } else {
                std::fs::read(&path).unwrap()
            };
            (e.file_name().into_string().unwrap(), String::from_utf8_lossy(&bytes).into_owned())
        })
        .collect()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(out)))
}

const ENTRY_FIELDS: [&str; 10] = [
    "key",
    "file",
    "status",
    "kind",
    "origin",
    "created",
    "age_seconds",
    "size",
    "sha256",
    "error",
];

#[track_caller]
fn assert_entry_shape(entry: &Value) {
    let fields: Vec<&str> = entry.as_object().unwrap().keys().map(String::as_str).collect();
    let mut expected = ENTRY_FIELDS.to_vec();
    expected.sort_unstable();
    let mut fields = fields;
    fields.sort_unstable();
    assert_eq!(fields, expected, "{entry}");
}

// ---------------------------------------------------------------- list

#[test]
fn list_shows_every_entry_sorted_in_an_aligned_table() {
    let f = fixture();
    let out = run(&[&"list", &f.dir]);
    assert_eq!(code(&out), 0, "a listing succeeds even when it shows damage");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    let status_col = lines[0].find("STATUS").unwrap();
    for column in ["KEY", "KIND", "ORIGIN", "AGE", "SIZE", "STATUS"] {
        assert!(lines[0].contains(column), "{}", lines[0]);
    }
    let expected = [
        ("fresh.ok", "field-dictionary", "job-42", "ok"),
        ("garbage", "-", "-", "corrupt"),
        ("old.corrupt", "rows", "job-8", "corrupt"),
        ("old.ok", "rows", "job-7\\nline two", "ok"),
        ("old.ok", "rows", "job-7\\nline two", "temp-leftover"),
    ];
    for (line, (key, kind, origin, status)) in lines[1..].iter().zip(expected) {
        assert!(line.starts_with(&format!("{key} ")), "{line}");
        assert!(line.contains(&format!(" {kind} ")), "{line}");
        assert!(line.contains(&format!(" {origin} ")), "{line}");
        assert_eq!(&line[status_col..], status, "aligned status column in {line}");
        assert_eq!(line.trim_end(), *line, "no trailing spaces");
    }
    assert!(lines[3].contains("30days"), "age of a month-old stash: {}", lines[3]);
    assert!(lines[1].contains("fresh.ok") && lines[1].contains(" B "), "size: {}", lines[1]);
    assert!(out.stderr.is_empty());
}

#[test]
fn list_json_has_the_documented_shape() {
    let f = fixture();
    let out = run(&[&"list", &f.dir, &"--json"]);
    assert_eq!(code(&out), 0);
    let doc = json(&out);
    assert_eq!(doc["dir"], f.dir.display().to_string());
    let entries = doc["entries"].as_array().unwrap();
    entries.iter().for_each(assert_entry_shape);
    let files: Vec<&str> = entries.iter().map(|e| e["file"].as_str().unwrap()).collect();
    assert_eq!(files, ["fresh.ok", "garbage", "old.corrupt", "old.ok", TEMP]);

    let fresh = &entries[0];
    assert_eq!(fresh["status"], "ok");
    assert_eq!(fresh["kind"], "field-dictionary");
    assert_eq!(fresh["origin"], "job-42");
    assert_eq!(fresh["sha256"], f.fresh_digest.to_string());
    assert_eq!(fresh["size"], std::fs::metadata(f.dir.join("fresh.ok")).unwrap().len());
    assert!(fresh["age_seconds"].as_u64().unwrap() < 600);
    assert_eq!(fresh["error"], Value::Null);

    let garbage = &entries[1];
    assert_eq!(garbage["status"], "corrupt");
    assert_eq!((&garbage["kind"], &garbage["age_seconds"]), (&Value::Null, &Value::Null));
    assert!(garbage["error"].as_str().unwrap().contains("not a stash"));

    let corrupt = &entries[2];
    assert_eq!(corrupt["status"], "corrupt");
    assert_eq!(corrupt["kind"], "rows", "from the unverified header");
    assert_eq!(corrupt["sha256"], Value::Null);
    assert!(corrupt["error"].as_str().unwrap().starts_with("checksum mismatch"));

    let old = &entries[3];
    assert_eq!(old["origin"], "job-7\nline two", "JSON keeps the origin exact");
    let age = old["age_seconds"].as_u64().unwrap();
    assert!(age.abs_diff(MONTH.as_secs()) < 600, "{age}");
    assert!(old["created"].as_str().unwrap().ends_with('Z'));

    let temp = &entries[4];
    assert_eq!(
        (&temp["key"], &temp["status"]),
        (&Value::from("old.ok"), &Value::from("temp-leftover"))
    );
}

#[test]
fn list_of_an_empty_store_and_of_a_missing_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(&[&"list", &tmp.path()]);
    assert_eq!(code(&out), 0);
    assert_eq!(stdout(&out), format!("no stashes in `{}`\n", tmp.path().display()));
    let out = run(&[&"list", &tmp.path(), &"--json"]);
    assert_eq!(json(&out)["entries"], Value::Array(vec![]));
    let out = run(&[&"verify", &tmp.path()]);
    assert_eq!(code(&out), 0);
    assert_eq!(
        stdout(&out),
        format!("no stashes in `{}`: nothing to verify\n", tmp.path().display())
    );

    let missing = tmp.path().join("nope");
    for cmd in ["list", "verify"] {
        let out = run(&[&cmd, &missing]);
        assert_eq!(code(&out), 2);
        assert!(out.stdout.is_empty());
        assert_one_line_error(
            &out,
            &format!(
                "failed to open store directory `{}`: No such file or directory (os error 2)",
                missing.display()
            ),
        );
    }
    assert!(!missing.exists(), "nothing is created");
}

// ---------------------------------------------------------------- show

#[test]
fn show_prints_the_header_and_the_payload_in_stored_order() {
    let f = fixture();
    let out = run(&[&"show", &f.dir, &"fresh.ok"]);
    assert_eq!(code(&out), 0);
    let text = stdout(&out);
    for line in [
        "key:      fresh.ok".to_owned(),
        "kind:     field-dictionary".to_owned(),
        "origin:   job-42".to_owned(),
        "encoding: json".to_owned(),
        format!("sha256:   {}", f.fresh_digest),
        format!("file:     {}", f.dir.join("fresh.ok").display()),
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} not in\n{text}");
    }
    assert!(text.lines().any(|l| l.starts_with("created:  ") && l.ends_with("s ago)")), "{text}");
    assert!(text.ends_with("\n\n{\n  \"zebra\": 1,\n  \"apple\": \"x\"\n}\n"), "{text}");

    let out = run(&[&"show", &f.dir, &"old.ok"]);
    assert!(stdout(&out).contains("origin:   job-7\\nline two\n"), "escaped on a terminal");
}

#[test]
fn show_raw_prints_the_payload_bytes_only() {
    let f = fixture();
    let out = run(&[&"show", &f.dir, &"fresh.ok", &"--raw"]);
    assert_eq!(code(&out), 0);
    assert_eq!(out.stdout, br#"{"zebra":1,"apple":"x"}"#);
    let out = run(&[&"show", &f.dir, &"old.ok", &"--raw"]);
    assert_eq!(out.stdout, b"[1,2,3]");
}

#[test]
fn export_writes_the_envelope_byte_for_byte() {
    let f = fixture();
    let out = run(&[&"export", &f.dir, &"old.ok"]);
    assert_eq!(code(&out), 0);
    assert_eq!(out.stdout, std::fs::read(f.dir.join("old.ok")).unwrap());
    // To a file: it is a stash file that loads in another store.
    let other = tempfile::tempdir().unwrap();
    let file = other.path().join("fresh.ok");
    let out = run(&[&"export", &f.dir, &"fresh.ok", &"-o", &file]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty());
    assert_eq!(std::fs::read(&file).unwrap(), std::fs::read(f.dir.join("fresh.ok")).unwrap());
    let loaded = Store::open(other.path()).unwrap().load::<Value>(&key("fresh.ok")).unwrap();
    assert_eq!(loaded.unwrap().meta().digest, f.fresh_digest);
    // The temp file is a fresh one: a file at any other name beside the
    // output (here the name a fixed-name temp file would take) is never
    // opened, truncated or renamed, and nothing else is left behind.
    let bystander = other.path().join("again.ok.export-tmp");
    std::fs::write(&bystander, b"someone else's").unwrap();
    let again = other.path().join("again.ok");
    let out = run(&[&"export", &f.dir, &"fresh.ok", &"-o", &again]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(&again).unwrap(), std::fs::read(&file).unwrap());
    assert_eq!(std::fs::read(&bystander).unwrap(), b"someone else's");
    std::fs::remove_file(&bystander).unwrap();
    std::fs::remove_file(&again).unwrap();
    // Damaged or absent: exit 1, and no file left behind.
    for k in ["old.corrupt", "missing"] {
        let file = other.path().join(k);
        let out = run(&[&"export", &f.dir, &k, &"-o", &file]);
        assert_eq!(code(&out), 1, "{k}");
        assert!(!file.exists(), "{k}: nothing written");
        let names: Vec<_> = std::fs::read_dir(other.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "{k}: no temp file left");
    }
}

#[test]
fn show_of_a_damaged_or_absent_stash_exits_1() {
    let f = fixture();
    let out = run(&[&"show", &f.dir, &"old.corrupt"]);
    assert_eq!(code(&out), 1);
    assert!(out.stdout.is_empty(), "nothing unverified is shown");
    assert_one_line_error(&out, "is corrupt: checksum mismatch");
    assert_one_line_error(&out, &format!("safestash quarantine {} old.corrupt", f.dir.display()));

    let out = run(&[&"show", &f.dir, &"garbage", &"--raw"]);
    assert_eq!(code(&out), 1);
    assert!(out.stdout.is_empty());
    assert_one_line_error(&out, "not a stash");

    // A symlink is never followed, and cannot be quarantined either.
    std::os::unix::fs::symlink("/etc/passwd", f.dir.join("link")).unwrap();
    let out = run(&[&"show", &f.dir, &"link"]);
    assert_eq!(code(&out), 1);
    assert!(out.stdout.is_empty());
    assert_one_line_error(&out, "is a symbolic link, not a regular file");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("quarantine"));

    let out = run(&[&"show", &f.dir, &"nope"]);
    assert_eq!(code(&out), 1);
    assert_one_line_error(&out, &format!("no stash `nope` in `{}`", f.dir.display()));
}

#[test]
fn an_invalid_key_is_a_usage_error() {
    let f = fixture();
    for cmd in ["show", "quarantine", "clear"] {
        let out = run(&[&cmd, &f.dir, &"../escape"]);
        assert_eq!(code(&out), 2, "{cmd}");
        assert_one_line_error(&out, "invalid stash key \"../escape\"");
    }
}

// ---------------------------------------------------------------- verify

#[test]
fn verify_exits_1_and_lists_each_corrupt_stash() {
    let f = fixture();
    let out = run(&[&"verify", &f.dir]);
    assert_eq!(code(&out), 1);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("`garbage` is corrupt: not a stash"), "{text}");
    assert!(lines[1].starts_with("`old.corrupt` is corrupt: checksum mismatch"), "{text}");
    assert_eq!(
        lines[2],
        format!("verified 4 stashes in `{}`: 2 intact, 2 corrupt", f.dir.display())
    );
    assert!(lines[3].contains("safestash quarantine"), "{text}");
    assert_eq!(lines.len(), 4, "intact stashes and temp leftovers are not listed: {text}");
    assert!(out.stderr.is_empty());
}

#[test]
fn verify_exits_0_when_every_stash_is_intact() {
    let (_tmp, dir) = good_store();
    let out = run(&[&"verify", &dir]);
    assert_eq!(code(&out), 0);
    assert_eq!(stdout(&out), format!("verified 2 stashes in `{}`: 2 intact\n", dir.display()));

    // And after an operator quarantined the damaged ones of the fixture.
    let f = fixture();
    let store = Store::open(&f.dir).unwrap();
    store.quarantine(&key("old.corrupt")).unwrap();
    store.quarantine(&key("garbage")).unwrap();
    let out = run(&[&"verify", &f.dir]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
}

#[test]
fn verify_exits_2_when_a_stash_cannot_be_checked() {
    // An intact stash of format version 2, which this build cannot read.
    let (_tmp, dir) = good_store();
    let mut bytes = std::fs::read(dir.join("a")).unwrap();
    bytes[10] = b'2';
    let body = bytes.len() - 65;
    let digest = Digest::of(&bytes[..body]).to_string();
    bytes[body..body + 64].copy_from_slice(digest.as_bytes());
    std::fs::write(dir.join("a"), &bytes).unwrap();

    let out = run(&[&"verify", &dir]);
    assert_eq!(code(&out), 2);
    assert!(stdout(&out).contains("`a` is of an unsupported format version: format version 2"));
    let out = run(&[&"verify", &dir, &"--json"]);
    assert_eq!(code(&out), 2);
    let doc = json(&out);
    assert_eq!((&doc["result"], &doc["exit_code"]), (&Value::from("error"), &Value::from(2)));
    assert_eq!(doc["stashes"][0]["status"], "unsupported-version");
}

#[test]
fn verify_json_has_the_documented_shape() {
    let f = fixture();
    // Something that is not a regular file at a stash name is damage too.
    std::os::unix::fs::symlink("/etc/passwd", f.dir.join("link")).unwrap();
    let out = run(&[&"verify", &f.dir, &"--json"]);
    assert_eq!(code(&out), 1);
    let doc = json(&out);
    let fields: Vec<&str> = doc.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(fields.len(), 4);
    for field in ["dir", "result", "exit_code", "stashes"] {
        assert!(fields.contains(&field), "{doc}");
    }
    assert_eq!(doc["result"], "corrupt");
    assert_eq!(doc["exit_code"], 1);
    let stashes = doc["stashes"].as_array().unwrap();
    stashes.iter().for_each(assert_entry_shape);
    let statuses: Vec<(&str, &str)> = stashes
        .iter()
        .map(|s| (s["key"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("fresh.ok", "ok"),
            ("garbage", "corrupt"),
            ("link", "not-a-file"),
            ("old.corrupt", "corrupt"),
            ("old.ok", "ok"),
        ],
        "temp leftovers are not stashes"
    );
    assert_eq!(stashes[0]["sha256"], f.fresh_digest.to_string());

    let (_tmp, dir) = good_store();
    let out = run(&[&"verify", &dir, &"--json"]);
    assert_eq!(code(&out), 0);
    let doc = json(&out);
    assert_eq!((&doc["result"], &doc["exit_code"]), (&Value::from("ok"), &Value::from(0)));
}

// ------------------------------------------------------ quarantine, clear

#[test]
fn quarantine_and_clear_refuse_without_a_terminal_or_yes() {
    let f = fixture();
    let before = snapshot(&f.dir);
    for cmd in ["quarantine", "clear"] {
        let out = run(&[&cmd, &f.dir, &"old.corrupt"]);
        assert_eq!(code(&out), 2, "{cmd}");
        assert!(out.stdout.is_empty());
        assert_one_line_error(
            &out,
            &format!(
                "refusing to {cmd} `old.corrupt` without confirmation: standard input is not a terminal; pass --yes"
            ),
        );
    }
    assert_eq!(snapshot(&f.dir), before, "nothing changed");
}

#[test]
fn quarantine_moves_a_stash_aside() {
    let f = fixture();
    let bytes = std::fs::read(f.dir.join("old.corrupt")).unwrap();
    let out = run(&[&"quarantine", &f.dir, &"old.corrupt", &"--yes"]);
    assert_eq!(code(&out), 0);
    let text = stdout(&out);
    let aside = text
        .strip_prefix("quarantined `old.corrupt`: moved to `")
        .and_then(|t| t.strip_suffix("`\n"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(aside.starts_with(&format!("{}/.old.corrupt.quarantined.", f.dir.display())));
    assert_eq!(std::fs::read(aside).unwrap(), bytes, "moved, not changed");
    assert!(!f.dir.join("old.corrupt").exists());

    let list = json(&run(&[&"list", &f.dir, &"--json"]));
    let quarantined: Vec<&Value> = list["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["status"] == "quarantined")
        .collect();
    assert_eq!(quarantined.len(), 1);
    assert_eq!(quarantined[0]["key"], "old.corrupt");

    let out = run(&[&"quarantine", &f.dir, &"old.corrupt", &"-y"]);
    assert_eq!(code(&out), 0, "nothing to do is success");
    assert_eq!(
        stdout(&out),
        format!("no stash `old.corrupt` in `{}`: nothing to quarantine\n", f.dir.display())
    );
}

#[test]
fn clear_deletes_a_stash() {
    let f = fixture();
    let out = run(&[&"clear", &f.dir, &"fresh.ok", &"--yes"]);
    assert_eq!(code(&out), 0);
    assert_eq!(stdout(&out), format!("cleared `fresh.ok` in `{}`\n", f.dir.display()));
    assert!(!f.dir.join("fresh.ok").exists());
    let out = run(&[&"clear", &f.dir, &"fresh.ok", &"--yes"]);
    assert_eq!(code(&out), 0);
    assert_eq!(
        stdout(&out),
        format!("no stash `fresh.ok` in `{}`: nothing to clear\n", f.dir.display())
    );
}

#[test]
fn quarantine_and_clear_fail_rather_than_wait_for_a_held_lock() {
    let f = fixture();
    let store = Store::open(&f.dir).unwrap();
    let held = store.lock(&key("fresh.ok")).unwrap();
    for cmd in ["quarantine", "clear"] {
        let out = run(&[&cmd, &f.dir, &"fresh.ok", &"--yes"]);
        assert_eq!(code(&out), 2, "{cmd}");
        assert_one_line_error(&out, "stash `fresh.ok` is locked by another writer");
    }
    assert!(f.dir.join("fresh.ok").exists());
    drop(held);
    assert_eq!(code(&run(&[&"clear", &f.dir, &"fresh.ok", &"--yes"])), 0);
}

/// Answers the confirmation question on a real pseudo-terminal, through
/// util-linux `script`.
#[test]
fn clear_asks_on_a_terminal() {
    let script_ok = std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("util-linux"));
    if !script_ok {
        eprintln!("skipped: util-linux `script` is not available to provide a terminal");
        return;
    }
    let f = fixture();
    let quote = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', r"'\''"));
    let command = format!(
        "{} clear {} fresh.ok",
        quote(Path::new(env!("CARGO_BIN_EXE_safestash"))),
        quote(&f.dir)
    );
    let answer = |text: &str| {
        std::process::Command::new("script")
            .args(["-q", "-e", "-c", &command, "/dev/null"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().unwrap().write_all(text.as_bytes())?;
                child.wait_with_output()
            })
            .unwrap()
    };
    let out = answer("n\n");
    let text = String::from_utf8_lossy(&out.stdout);
    let script_err = String::from_utf8_lossy(&out.stderr);
    if script_err.contains("pseudo-terminal") {
        eprintln!("skipped: `script` cannot open a terminal here: {script_err}");
        return;
    }
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("Delete stash `fresh.ok`"), "{text}");
    assert!(text.contains("kind field-dictionary, origin `job-42`"), "{text}");
    assert!(text.contains("[y/N]") && text.contains("not confirmed"), "{text}");
    assert!(f.dir.join("fresh.ok").exists());

    let out = answer("y\n");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("cleared `fresh.ok`"), "{text}");
    assert!(!f.dir.join("fresh.ok").exists());
}

// ---------------------------------------------------------------- gc

#[test]
fn gc_dry_run_prints_the_plan_and_changes_nothing() {
    let f = fixture();
    let before = snapshot(&f.dir);
    let out = run(&[&"gc", &f.dir, &"--older-than", &"7d", &"--dry-run"]);
    assert_eq!(code(&out), 1, "damaged stashes past the age are kept and reported");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("kept stash `garbage` (age unknown): it is corrupt: not a stash"),
        "{text}"
    );
    assert!(lines[1].starts_with("kept stash `old.corrupt` (30days"), "{text}");
    assert!(lines[1].contains("it is corrupt: checksum mismatch"), "{text}");
    assert!(
        lines[1].ends_with(&format!("safestash quarantine {} old.corrupt", f.dir.display())),
        "{text}"
    );
    assert!(lines[2].starts_with("would remove stash `old.ok` (created "), "{text}");
    assert_eq!(lines[3], format!("would remove temp file `{TEMP}` (left by a crashed writer)"));
    assert_eq!(
        lines[4],
        format!(
            "dry run: would remove 1 stash and 1 temp file in `{}`; kept 2 damaged stashes (see above); nothing was changed",
            f.dir.display()
        )
    );
    assert_eq!(lines.len(), 5, "{text}");
    assert!(!text.contains("fresh.ok"));
    assert_eq!(snapshot(&f.dir), before, "a dry run creates and removes nothing");
}

#[test]
fn gc_removes_old_intact_stashes_and_temp_leftovers_and_keeps_damaged_ones() {
    let f = fixture();
    let damaged: Vec<Vec<u8>> =
        ["old.corrupt", "garbage"].iter().map(|k| std::fs::read(f.dir.join(k)).unwrap()).collect();
    let out = run(&[&"gc", &f.dir, &"--older-than", &"7d"]);
    assert_eq!(code(&out), 1);
    let text = stdout(&out);
    assert!(text.contains("\nremoved stash `old.ok` (created "), "{text}");
    assert!(
        text.contains(&format!("\nremoved temp file `{TEMP}` (left by a crashed writer)\n")),
        "{text}"
    );
    assert!(text.ends_with(&format!(
        "removed 1 stash and 1 temp file in `{}`; kept 2 damaged stashes (see above)\n",
        f.dir.display()
    )));
    assert!(!f.dir.join("old.ok").exists() && !f.dir.join(TEMP).exists());
    assert!(f.dir.join("fresh.ok").exists(), "younger than the age");
    assert_eq!(std::fs::read(f.dir.join("old.corrupt")).unwrap(), damaged[0]);
    assert_eq!(std::fs::read(f.dir.join("garbage")).unwrap(), damaged[1]);

    // Once the damaged ones are quarantined there is nothing left to do.
    let store = Store::open(&f.dir).unwrap();
    store.quarantine(&key("old.corrupt")).unwrap();
    store.quarantine(&key("garbage")).unwrap();
    let out = run(&[&"gc", &f.dir, &"--older-than", &"7d"]);
    assert_eq!(code(&out), 0);
    assert_eq!(
        stdout(&out),
        format!(
            "nothing to remove in `{}` (no intact stash older than 7days, no temp leftover)\n",
            f.dir.display()
        )
    );
    assert!(f.dir.join("fresh.ok").exists());
}

#[test]
fn gc_skips_locked_keys_instead_of_waiting() {
    let f = fixture();
    let store = Store::open(&f.dir).unwrap();
    // A live writer of `old.ok`: holds the lock its temp file belongs to.
    let held = store.lock(&key("old.ok")).unwrap();
    let out = run(&[&"gc", &f.dir, &"--older-than", &"7d"]);
    let text = stdout(&out);
    assert!(
        text.contains("skipped stash `old.ok`: another writer holds its lock; try again later\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "skipped temp file `{TEMP}`: a writer holding `old.ok`'s lock is saving it\n"
        )),
        "{text}"
    );
    assert!(f.dir.join("old.ok").exists() && f.dir.join(TEMP).exists());
    let out = run(&[&"gc", &f.dir, &"--older-than", &"7d", &"--dry-run"]);
    assert!(stdout(&out).contains(&format!("skipped temp file `{TEMP}`")), "{}", stdout(&out));
    drop(held);
    run(&[&"gc", &f.dir, &"--older-than", &"7d"]);
    assert!(!f.dir.join("old.ok").exists() && !f.dir.join(TEMP).exists());
}

#[test]
fn gc_needs_a_valid_older_than() {
    let f = fixture();
    let out = run(&[&"gc", &f.dir]);
    assert_eq!(code(&out), 2);
    assert_one_line_error(&out, "--older-than <AGE>");
    let out = run(&[&"gc", &f.dir, &"--older-than", &"7 fortnights"]);
    assert_eq!(code(&out), 2);
    assert_one_line_error(&out, "invalid value '7 fortnights' for '--older-than <AGE>'");
    assert!(f.dir.join("old.ok").exists());
}

// ---------------------------------------------------------------- help

#[test]
fn every_command_has_help_with_an_example() {
    let out = run(&[&"--help"]);
    assert_eq!(code(&out), 0);
    assert!(stdout(&out).contains("Examples:\n  safestash list "), "{}", stdout(&out));
    assert!(stdout(&out).contains("Exit codes: 0"));
    for cmd in ["list", "show", "verify", "quarantine", "clear", "gc"] {
        for flag in ["--help", "-h"] {
            let out = run(&[&cmd, &flag]);
            assert_eq!(code(&out), 0, "{cmd} {flag}");
            assert!(
                stdout(&out).contains(&format!("Examples:\n  safestash {cmd} ")),
                "{cmd} {flag}: {}",
                stdout(&out)
            );
        }
    }
}

#[test]
fn usage_errors_are_one_line_and_exit_2() {
    for (args, needle) in [
        (&["lst"][..], "unrecognized subcommand 'lst'; tip: a similar subcommand exists: 'list'"),
        (&["list"][..], "the following required arguments were not provided: <DIR>"),
        (&["verify", "/tmp", "--jsn"][..], "unexpected argument '--jsn'"),
    ] {
        let args: Vec<&dyn AsRef<std::ffi::OsStr>> =
            args.iter().map(|a| a as &dyn AsRef<std::ffi::OsStr>).collect();
        let out = run(&args);
        assert_eq!(code(&out), 2);
        assert!(out.stdout.is_empty());
        assert_one_line_error(&out, needle);
    }
}

// ---------------------------------------------------------------- reserved records

/// Every journal record in the store at `dir`, by file (relative to `dir`),
/// with its verified digest: the records in the reserved namespace
/// `journal`, and the transitional `op.*` keys of the user keyspace.
fn journal_records(dir: &Path) -> BTreeMap<String, Digest> {
    let store = Store::open(dir).unwrap();
    let journal = store.namespace("journal").unwrap();
    let mut records = BTreeMap::new();
    for (prefix, s) in [(".ns.journal/", &journal), ("", &store)] {
        for r in s.verify().unwrap() {
            if prefix.is_empty() && !r.key.as_str().starts_with("op.") {
                continue;
            }
            let meta = r.result.unwrap_or_else(|e| panic!("journal record {}: {e}", r.key));
            records.insert(format!("{prefix}{}", r.key), meta.digest);
        }
    }
    records
}

/// A store with a user stash and a live operation: part `orders` running
/// with a stash, part `invoices` pending.
fn live_operation(dir: &Path) {
    let store = Store::open(dir).unwrap();
    store.save(&key("user.stash"), &"mine").unwrap();
    let op = Operation::create(&store, "nightly reload", ["orders", "invoices"]).unwrap();
    let g = op.view().unwrap().generation;
    op.update("orders", Expect::Operation(g), PartState::Running).unwrap();
    let g = op.view().unwrap().generation;
    op.stash("orders", Expect::Operation(g), &vec!["row 1", "row 2"]).unwrap();
}

#[test]
fn gc_never_removes_the_records_of_a_live_journal_operation() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("stashes");
    live_operation(&dir);
    let before = journal_records(&dir);
    assert!(before.len() >= 4, "header, two parts, one stash: {before:?}");
    std::thread::sleep(Duration::from_millis(1100));

    let out = run(&[&"gc", &dir, &"--older-than", &"1s"]);
    let text = stdout(&out);
    assert_eq!(code(&out), 0, "{text}");
    assert!(text.contains("removed stash `user.stash`"), "gc did run: {text}");
    assert!(!dir.join("user.stash").exists());
    assert!(!text.contains("op."), "no journal record named as removed: {text}");

    assert_eq!(journal_records(&dir), before, "every record kept, unchanged");
    let store = Store::open(&dir).unwrap();
    let op = Operation::open(&store, "nightly reload").unwrap();
    let view = op.view().unwrap();
    assert_eq!(view.part("orders").unwrap().unwrap().state, PartState::Running);
    assert_eq!(view.part("invoices").unwrap().unwrap().state, PartState::Pending);
    let stash = op.load_stash::<Vec<String>>("orders").unwrap().expect("the part's stash");
    assert_eq!(stash.value(), &["row 1", "row 2"]);
}

/// The table rows (first column) of each group of `list`'s output: the
/// user stashes under `""`, then each group under its heading.
fn list_groups(text: &str) -> Vec<(String, Vec<String>)> {
    let mut groups = vec![(String::new(), Vec::new())];
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if line.starts_with("namespace ") || line.starts_with("journal records") {
            groups.push((line.to_owned(), Vec::new()));
        } else if !line.starts_with("KEY ") && !line.starts_with("no stashes") {
            let first = line.split_whitespace().next().unwrap().to_owned();
            groups.last_mut().unwrap().1.push(first);
        }
    }
    groups
}

#[test]
fn list_shows_journal_records_apart_from_user_stashes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("stashes");
    live_operation(&dir);
    let records = journal_records(&dir);

    let out = run(&[&"list", &dir]);
    let text = stdout(&out);
    assert_eq!(code(&out), 0, "{text}");
    let groups = list_groups(&text);
    assert_eq!(groups[0].1, ["user.stash"], "only user stashes in the first table: {text}");
    let journal: Vec<&(String, Vec<String>)> = groups[1..]
        .iter()
        .filter(|(h, _)| h.starts_with("namespace journal") || h.starts_with("journal records"))
        .collect();
    assert!(!journal.is_empty(), "a journal heading: {text}");
    let listed: Vec<&String> = journal.iter().flat_map(|(_, rows)| rows).collect();
    assert_eq!(listed.len(), records.len(), "{text}");
    for (heading, rows) in &journal {
        let n = match rows.len() {
            1 => "(1 entry)".to_owned(),
            n => format!("({n} entries)"),
        };
        assert!(heading.ends_with(&n), "{heading:?} counts its entries: {n}");
    }

    let doc = json(&run(&[&"list", &dir, &"--json"]));
    let files: Vec<&str> =
        doc["entries"].as_array().unwrap().iter().map(|e| e["file"].as_str().unwrap()).collect();
    assert_eq!(files, ["user.stash"], "{doc}");
    let in_journal = doc["namespaces"]["journal"].as_array().expect("a journal group");
    in_journal.iter().for_each(assert_entry_shape);
    let mut files: Vec<&str> = in_journal.iter().map(|e| e["file"].as_str().unwrap()).collect();
    files.sort_unstable();
    let expected: Vec<&str> = records.keys().map(String::as_str).collect();
    assert_eq!(files, expected, "{doc}");
    assert!(in_journal.iter().all(|e| e["status"] == "ok"), "{doc}");
}

#[test]
fn tenant_snapshots_are_listed_under_their_namespace_and_never_removed_by_gc() {
    use safestash::reconcile::{CanonicalUuid, IdSet, Reconciler, plan};
    use std::cell::RefCell;
    use uuid::Uuid;

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("stashes");
    let store = Store::open(&dir).unwrap();
    store.save(&key("user.stash"), &"mine").unwrap();
    let db: RefCell<BTreeMap<Uuid, Vec<String>>> =
        RefCell::new((1..=10).map(|n| (Uuid::from_u128(n), vec![format!("call {n}")])).collect());
    let local: IdSet<CanonicalUuid> = IdSet::canonicalize(db.borrow().keys().copied());
    let truth: Vec<String> = (2..=10).map(|n| Uuid::from_u128(n).to_string()).collect();
    let truth: IdSet<CanonicalUuid> = IdSet::canonicalize(&truth);
    let report = Reconciler::new(&store)
        .execute(
            &plan(&local, &truth),
            &local,
            &truth,
            |id| db.borrow().get(&id.uuid()).cloned().ok_or("no such tenant"),
            |id| db.borrow_mut().remove(&id.uuid()).map(drop).ok_or("no such tenant"),
        )
        .unwrap();
    assert!(report.is_complete());
    let tenants = store.namespace("tenants").unwrap();
    let snapshots: Vec<String> =
        tenants.list().unwrap().into_iter().map(|i| i.key.into_string()).collect();
    assert_eq!(snapshots.len(), 1, "one tenant deleted, one snapshot");

    let groups = list_groups(&stdout(&run(&[&"list", &dir])));
    assert_eq!(groups[0].1, ["user.stash"]);
    let group = groups.iter().find(|(h, _)| h.starts_with("namespace tenants"));
    assert_eq!(group.map(|g| &g.1), Some(&snapshots), "{groups:?}");
    let doc = json(&run(&[&"list", &dir, &"--json"]));
    assert_eq!(doc["namespaces"]["tenants"][0]["key"], snapshots[0].as_str(), "{doc}");
    assert_eq!(doc["namespaces"]["tenants"][0]["status"], "ok", "{doc}");

    std::thread::sleep(Duration::from_millis(1100));
    let out = run(&[&"gc", &dir, &"--older-than", &"1s"]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    assert!(!dir.join("user.stash").exists(), "gc did run");
    let after: Vec<String> =
        tenants.list().unwrap().into_iter().map(|i| i.key.into_string()).collect();
    assert_eq!(after, snapshots, "the snapshot is kept");
    assert!(tenants.verify().unwrap().iter().all(|r| r.result.is_ok()));
}

#[test]
fn verify_reports_damage_in_journal_records_and_removals_need_the_namespace() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("stashes");
    live_operation(&dir);
    let records = journal_records(&dir);
    // A part's record (any record would do, should record names change).
    let (damaged, _) =
        records.iter().find(|(f, _)| f.contains("invoices")).or(records.iter().last()).unwrap();
    let path = dir.join(damaged);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 70;
    bytes[at] ^= 1;
    std::fs::write(&path, &bytes).unwrap();

    let out = run(&[&"verify", &dir]);
    let text = stdout(&out);
    assert_eq!(code(&out), 1, "damage in a journal record is damage: {text}");
    let record = path.file_name().unwrap().to_str().unwrap();
    let line = text.lines().find(|l| l.contains(record)).expect("the record is named");
    assert!(line.contains("journal") && line.contains("is corrupt"), "{text}");
    assert!(text.lines().any(|l| l.contains("--namespace journal")), "{text}");
    let doc = json(&run(&[&"verify", &dir, &"--json"]));
    assert_eq!(doc["result"], "corrupt");
    let in_journal = doc["namespaces"]["journal"].as_array().expect("a journal group");
    assert!(in_journal.iter().any(|e| e["key"] == record && e["status"] == "corrupt"), "{doc}");
    let stashes: Vec<&Value> = doc["stashes"].as_array().unwrap().iter().collect();
    assert!(stashes.iter().all(|e| e["key"] == "user.stash"), "user stashes apart: {doc}");

    // gc keeps it, like every record, and says nothing of removing it.
    let out = run(&[&"gc", &dir, &"--older-than", &"0s"]);
    assert!(!stdout(&out).contains(record), "{}", stdout(&out));
    assert_eq!(std::fs::read(&path).unwrap(), bytes);

    // A removal of a journal record without --namespace is refused.
    for cmd in ["clear", "quarantine"] {
        let out = run(&[&cmd, &dir, &record, &"--yes"]);
        assert_eq!(code(&out), 2, "{cmd}");
        assert_one_line_error(&out, "pass --namespace journal");
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "{cmd} left it alone");
    }
    let out = run(&[&"quarantine", &dir, &record, &"--namespace", &"journal", &"--yes"]);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout(&out).starts_with(&format!("quarantined `{record}`")), "{}", stdout(&out));
    assert!(!journal_records(&dir).contains_key(damaged.as_str()));
}
