//! `safestash`: the operator's view of a store directory.
//!
//! See what was stashed, whether it is intact, how old it is and where it
//! came from, and tidy up — without writing code:
//!
//! ```text
//! safestash list DIR [--json]          every stash, temp leftover and quarantined file
//! safestash show DIR KEY [--raw]       header fields and the payload
//! safestash export DIR KEY [-o FILE]   the stored envelope, byte for byte
//! safestash verify DIR [--json]        exit 0 all intact, 1 any corrupt, 2 error
//! safestash quarantine DIR KEY [--yes] move a stash aside for inspection
//! safestash clear DIR KEY [--yes]      delete a stash
//! safestash gc DIR --older-than 7d [--dry-run]
//! ```
//!
//! The library's own records (reserved namespaces such as `journal` and
//! `tenants`) are listed and
//! verified in groups of their own, never removed by `gc`, and reached by
//! `show`, `quarantine` and `clear` only with `--namespace NAME`. Every file
//! is reached through the library's `Store`: the CLI never builds an
//! on-disk name or opens a stash file itself.
//!
//! Built with `--features cli`. Exit codes: 0 done (or nothing to do), 1 a
//! damaged stash was found (or, for `show`, the stash is absent), 2 usage or
//! I/O error, or something could not be done or checked. Errors are one line
//! on stderr, `safestash: ` then the error and its causes.

use std::error::Error as StdError;
use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Parser, Subcommand};
use safestash::fs::{Fs, OsFs};
use safestash::{Error, KeyError, StashKey, Store};
use serde_json::value::RawValue;

#[path = "safestash/gc.rs"]
mod gc;
#[path = "safestash/remove.rs"]
mod remove;
#[path = "safestash/render.rs"]
mod render;
#[path = "safestash/scan.rs"]
mod scan;

use scan::{Outcome, Status};

const ABOUT: &str = "Inspect and tidy a safestash store: what was stashed, whether it is intact, \
how old it is and where it came from.";

const EXAMPLES: &str = "\
Examples:
  safestash list /var/lib/etl/stashes
  safestash show /var/lib/etl/stashes orders.dictionary
  safestash verify /var/lib/etl/stashes || echo 'damaged stash found'
  safestash gc /var/lib/etl/stashes --older-than 7d --dry-run

Exit codes: 0 done (or nothing to do); 1 a damaged stash was found (for
`show`: the stash is damaged or absent); 2 usage or I/O error, or something
could not be done or checked.";

/// The command line.
#[derive(Debug, Parser)]
#[command(name = "safestash", version, about = ABOUT, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// List every stash with its kind, origin, age, size and status (ok,
    /// corrupt, temp-leftover, quarantined, …), sorted by key.
    ///
    /// Every stash is read in full to check its SHA-256. Kind, origin and
    /// age of a damaged stash come from its unverified header. The
    /// library's own records follow, each group under a heading of its own
    /// (`namespace journal`, `namespace tenants`, …).
    #[command(after_help = "\
Examples:
  safestash list /var/lib/etl/stashes
  safestash list /var/lib/etl/stashes --json | jq -r '.entries[] | select(.status != \"ok\") | .file'")]
    List {
        /// The store directory.
        dir: PathBuf,
        /// Print a JSON document instead of a table (shape in docs/CLI.md).
        #[arg(long)]
        json: bool,
    },
    /// Show a stash's header fields and its payload, pretty-printed, after
    /// verifying it.
    ///
    /// Exit 1 when the stash is damaged or absent.
    #[command(after_help = "\
Examples:
  safestash show /var/lib/etl/stashes orders.dictionary
  safestash show /var/lib/etl/stashes orders.dictionary --raw | jq '.[0]'")]
    Show {
        /// The store directory.
        dir: PathBuf,
        /// The stash's key (its file name).
        #[arg(value_parser = parse_key)]
        key: StashKey,
        /// The reserved namespace holding the record (`journal`,
        /// `tenants`, …): the library's own records are reached with it.
        #[arg(long, value_name = "NAME")]
        namespace: Option<String>,
        /// Print only the payload, byte for byte as stored, for piping.
        #[arg(long)]
        raw: bool,
    },
    /// Write a stash's whole envelope, byte for byte as stored, after
    /// verifying it: to FILE, or to standard output.
    ///
    /// The bytes are a stash file: copied under the key's name into a
    /// directory store, they load there (a PostgreSQL stash moved to a
    /// directory, say). FILE is written beside itself and renamed into
    /// place once complete and synced, so it never holds a partial
    /// envelope. Exit 1 when the stash is damaged or absent.
    #[command(after_help = "\
Examples:
  safestash export 'postgresql://etl@db/etl?namespace=orders' orders.dictionary \\
      -o /var/lib/etl/stashes/orders.dictionary
  safestash export /var/lib/etl/stashes orders.dictionary | sha256sum")]
    Export {
        /// The store directory or URL.
        dir: PathBuf,
        /// The stash's key.
        #[arg(value_parser = parse_key)]
        key: StashKey,
        /// The reserved namespace holding the record (`journal`, …).
        #[arg(long, value_name = "NAME")]
        namespace: Option<String>,
        /// Write to this file (replaced atomically) instead of standard output.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Check every stash's SHA-256, header and key, the library's own
    /// records included (reported in their groups).
    ///
    /// Exit 0 when every stash is intact (or there are none), 1 when any is
    /// corrupt (each is listed), 2 on usage or I/O error or when a stash
    /// could not be checked (unreadable, or of a newer format version).
    #[command(after_help = "\
Examples:
  safestash verify /var/lib/etl/stashes
  safestash verify /var/lib/etl/stashes --json > verify.json; echo \"exit $?\"")]
    Verify {
        /// The store directory.
        dir: PathBuf,
        /// Print a JSON document instead of text (shape in docs/CLI.md).
        #[arg(long)]
        json: bool,
    },
    /// Move a stash aside to `.KEY.quarantined.TIME` for inspection; a job
    /// loading the key then finds no stash.
    ///
    /// Asks for confirmation on a terminal; without a terminal, refuses
    /// unless `--yes` is given. Fails rather than waits when a writer holds
    /// the key's lock. A record of the library's own (a journal record, a
    /// tenant snapshot) is refused unless `--namespace` names its namespace.
    #[command(after_help = "\
Examples:
  safestash quarantine /var/lib/etl/stashes orders.dictionary
  safestash quarantine /var/lib/etl/stashes orders.dictionary --yes")]
    Quarantine {
        /// The store directory.
        dir: PathBuf,
        /// The stash's key (its file name).
        #[arg(value_parser = parse_key)]
        key: StashKey,
        /// The reserved namespace holding the record (`journal`,
        /// `tenants`, …): the library's own records are reached only with it.
        #[arg(long, value_name = "NAME")]
        namespace: Option<String>,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        yes: bool,
    },
    /// Delete a stash for good.
    ///
    /// Asks for confirmation on a terminal; without a terminal, refuses
    /// unless `--yes` is given. Fails rather than waits when a writer holds
    /// the key's lock. A record of the library's own (a journal record, a
    /// tenant snapshot) is refused unless `--namespace` names its namespace.
    #[command(after_help = "\
Examples:
  safestash clear /var/lib/etl/stashes orders.dictionary
  safestash clear /var/lib/etl/stashes orders.dictionary --yes")]
    Clear {
        /// The store directory.
        dir: PathBuf,
        /// The stash's key (its file name).
        #[arg(value_parser = parse_key)]
        key: StashKey,
        /// The reserved namespace holding the record (`journal`,
        /// `tenants`, …): the library's own records are reached only with it.
        #[arg(long, value_name = "NAME")]
        namespace: Option<String>,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        yes: bool,
    },
    /// Remove intact stashes older than an age, and temp files left by
    /// crashed writers, printing each removal.
    ///
    /// Age is measured from the `created` time in a stash's header. A
    /// damaged stash is never removed: when it is older than the age (or
    /// its age cannot be read) it is reported, with a hint to quarantine it,
    /// and the exit code is 1. A temp file is removed whatever its age, but
    /// only while no writer holds its key's lock. Quarantined files and lock
    /// files are left alone. A stash whose key is locked is skipped. The
    /// library's own records are never removed: nothing in a reserved
    /// namespace.
    #[command(after_help = "\
Examples:
  safestash gc /var/lib/etl/stashes --older-than 7d --dry-run
  safestash gc /var/lib/etl/stashes --older-than '2weeks 3days'")]
    Gc {
        /// The store directory.
        dir: PathBuf,
        /// Remove stashes older than this: `7d`, `12h`, `2weeks`, `90min`, …
        #[arg(long, value_name = "AGE", value_parser = parse_age)]
        older_than: Duration,
        /// Print what would be removed; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

fn parse_key(s: &str) -> Result<StashKey, KeyError> {
    StashKey::new(s)
}

fn parse_age(s: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(s)
}

/// Why a command stopped: printed as one line, exit code 2.
#[derive(Debug)]
enum Failure {
    /// A store operation failed.
    Store(Error),
    /// A filesystem call the CLI made itself failed.
    Io {
        /// What was being done, naming the path.
        message: String,
        /// The OS error.
        source: io::Error,
    },
    /// Writing to standard output failed (a closed pipe ends quietly).
    Output(io::Error),
    /// Anything else, said in full.
    Plain(String),
}

impl Failure {
    /// A failed filesystem call, `message` naming what and where.
    fn io(message: String, source: io::Error) -> Failure {
        Failure::Io { message, source }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Store(e) => e.fmt(f),
            Failure::Io { message, .. } => f.write_str(message),
            Failure::Output(_) => f.write_str("failed to write to standard output"),
            Failure::Plain(message) => f.write_str(message),
        }
    }
}

impl StdError for Failure {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Failure::Store(e) => e.source(),
            Failure::Io { source, .. } | Failure::Output(source) => Some(source),
            Failure::Plain(_) => None,
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::Store(e)
    }
}

/// An error and its causes on one line, `: `-separated, with any line
/// breaks inside them escaped.
fn one_line(e: &dyn StdError) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(cause) = cur {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        cur = cause.source();
    }
    out.replace('\n', "\\n")
}

/// Standard output, written line by line; a write error becomes
/// [`Failure::Output`].
struct Out(io::StdoutLock<'static>);

impl Out {
    fn new() -> Out {
        Out(io::stdout().lock())
    }

    /// Writes `text` and a line feed.
    fn line(&mut self, text: impl fmt::Display) -> Result<(), Failure> {
        writeln!(self.0, "{text}").map_err(Failure::Output)
    }

    /// Writes `bytes` as they are.
    fn bytes(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        self.0.write_all(bytes).map_err(Failure::Output)
    }

    fn flush(&mut self) -> Result<(), Failure> {
        self.0.flush().map_err(Failure::Output)
    }
}

/// Prints `safestash: MESSAGE` on stderr.
fn warn(message: impl fmt::Display) {
    eprintln!("safestash: {message}");
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help, --version: print and succeed.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // `safestash` alone: the help, on stderr, and a usage error.
            let _ = e.print();
            return ExitCode::from(Outcome::Failed as u8);
        }
        Err(e) => {
            warn(clap_one_line(&e));
            return ExitCode::from(Outcome::Failed as u8);
        }
    };
    let mut out = Out::new();
    let result = run(cli.command, &mut out).and_then(|outcome| out.flush().map(|()| outcome));
    match result {
        Ok(outcome) => ExitCode::from(outcome as u8),
        // The reader went away (`safestash list DIR | head`): nothing to say.
        Err(Failure::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            warn(one_line(&e));
            ExitCode::from(Outcome::Failed as u8)
        }
    }
}

/// A clap usage error in one line: its message and tips, then its usage
/// line.
fn clap_one_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let mut message = String::new();
    let mut usage = None;
    for line in text.lines().map(str::trim) {
        if let Some(u) = line.strip_prefix("Usage: ") {
            usage = Some(u);
            break;
        }
        if line.is_empty() || line.starts_with("For more information") {
            continue;
        }
        if !message.is_empty() {
            // "…not provided:" continues on the next line; a tip is separate.
            message.push_str(if message.ends_with(':') { " " } else { "; " });
        }
        message.push_str(line.strip_prefix("error: ").unwrap_or(line));
    }
    match usage {
        Some(usage) => format!("{message} (usage: {usage}; see --help)"),
        None => format!("{message} (see --help)"),
    }
}

fn run(command: Command, out: &mut Out) -> Result<Outcome, Failure> {
    match command {
        Command::List { dir, json } => list(&dir, json, out),
        Command::Show { dir, key, namespace, raw } => {
            show(&dir, &key, namespace.as_deref(), raw, out)
        }
        Command::Export { dir, key, namespace, output } => {
            export(&dir, &key, namespace.as_deref(), output.as_deref(), out)
        }
        Command::Verify { dir, json } => verify(&dir, json, out),
        Command::Quarantine { dir, key, namespace, yes } => {
            remove::run(&dir, &key, namespace.as_deref(), remove::Removal::Quarantine, yes, out)
        }
        Command::Clear { dir, key, namespace, yes } => {
            remove::run(&dir, &key, namespace.as_deref(), remove::Removal::Clear, yes, out)
        }
        Command::Gc { dir, older_than, dry_run } => gc::run(&dir, older_than, dry_run, out),
    }
}

/// The store in `dir`, which must exist: a missing directory is an error
/// here, not an empty store, since an operator who names one means a store
/// that should be there.
///
/// A URL (`postgresql://...?namespace=NAME`, `mysql://...`, `file:///dir`) opens the
/// store it names through [`Store::open_url`].
fn open_store(dir: &Path) -> Result<Store, Failure> {
    if let Some(url) = dir.to_str().filter(|s| s.contains("://")) {
        let opened = match url.strip_prefix("file://") {
            Some(path) if path.starts_with('/') => Store::open_existing(path),
            _ => Store::open_url(url),
        };
        return opened.map_err(Failure::from);
    }
    Store::open_existing(dir).map_err(|e| match e {
        Error::Io { source, .. } => {
            Failure::io(format!("failed to open store directory `{}`", dir.display()), source)
        }
        other => other.into(),
    })
}

fn list(dir: &Path, json: bool, out: &mut Out) -> Result<Outcome, Failure> {
    let store = open_store(dir)?;
    let found = scan::scan(&store)?;
    let now = SystemTime::now();
    if json {
        let doc = render::JsonList {
            dir: dir.display().to_string(),
            entries: found.user.iter().map(|e| render::JsonEntry::new(e, now)).collect(),
            namespaces: render::json_namespaces(&found.groups, now, |_| true),
        };
        out.line(to_json(&doc))?;
        return Ok(Outcome::Ok);
    }
    if found.user.is_empty() {
        let whose = if found.groups.is_empty() { "" } else { "user " };
        out.line(format_args!("no {whose}stashes in `{}`", dir.display()))?;
    } else {
        out.bytes(render::list_table(&found.user, now).as_bytes())?;
    }
    // The library's own records, each group under its heading.
    for g in &found.groups {
        out.line("")?;
        let n = plural(g.entries.len(), "entry", "entries");
        out.line(format_args!("{} ({n})", g.place.heading()))?;
        if !g.entries.is_empty() {
            out.bytes(render::list_table(&g.entries, now).as_bytes())?;
        }
    }
    Ok(Outcome::Ok)
}

fn to_json(doc: &impl serde::Serialize) -> String {
    // Plain structs of strings and numbers always serialize.
    serde_json::to_string_pretty(doc).expect("JSON output serializes")
}

/// The store at `dir`, or its `namespace`, and how messages name it.
fn open_in(dir: &Path, namespace: Option<&str>) -> Result<(Store, String), Failure> {
    let store = open_store(dir)?;
    Ok(match namespace {
        Some(ns) => (store.namespace(ns)?, format!("namespace {ns} of `{}`", dir.display())),
        None => (store, format!("`{}`", dir.display())),
    })
}

fn export(
    dir: &Path,
    key: &StashKey,
    namespace: Option<&str>,
    output: Option<&Path>,
    out: &mut Out,
) -> Result<Outcome, Failure> {
    let (store, place) = open_in(dir, namespace)?;
    let exported = match output {
        None => store.export(key, &mut out.0),
        Some(file) => export_to_file(&store, key, file)?,
    };
    match exported {
        Ok(Some(_)) => Ok(Outcome::Ok),
        Ok(None) => {
            warn(format_args!("no stash `{key}` in {place}"));
            Ok(Outcome::Finding)
        }
        Err(e @ (Error::Corrupt { .. } | Error::NotAFile { .. })) => {
            warn(one_line(&e));
            Ok(Outcome::Finding)
        }
        Err(e) => Err(e.into()),
    }
}

/// Exports into a fresh temp file beside `file` (`.NAME.XXXX.export-tmp`,
/// created `O_EXCL`, mode 0600, so it never opens or clobbers an existing
/// file), synced, renamed over `file`, then the directory synced: the
/// store's own protocol, through its `Fs` seam. The temp file is removed
/// if anything before the rename fails.
fn export_to_file(
    store: &Store,
    key: &StashKey,
    file: &Path,
) -> Result<Result<Option<safestash::StashMeta>, Error>, Failure> {
    let Some(name) = file.file_name() else {
        return Err(Failure::Plain(format!("`{}` does not name a file", file.display())));
    };
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    let (mut f, tmp) = OsFs.create_temp(dir, &prefix, ".export-tmp").map_err(|e| {
        Failure::io(format!("failed to create a temp file in `{}`", dir.display()), e)
    })?;
    let exported = store.export(key, &mut f);
    if !matches!(exported, Ok(Some(_))) {
        drop(f);
        let _ = OsFs.remove_file(&tmp);
        return Ok(exported);
    }
    if let Err(e) = OsFs.sync_file(&mut f) {
        drop(f);
        let _ = OsFs.remove_file(&tmp);
        return Err(Failure::io(format!("failed to sync `{}`", tmp.display()), e));
    }
    drop(f);
    OsFs.rename(&tmp, file).map_err(|e| {
        let _ = OsFs.remove_file(&tmp);
        Failure::io(format!("failed to rename `{}` to `{}`", tmp.display(), file.display()), e)
    })?;
    OsFs.sync_dir(dir)
        .map_err(|e| Failure::io(format!("failed to sync directory `{}`", dir.display()), e))?;
    Ok(exported)
}

fn show(
    dir: &Path,
    key: &StashKey,
    namespace: Option<&str>,
    raw: bool,
    out: &mut Out,
) -> Result<Outcome, Failure> {
    let (store, place) = open_in(dir, namespace)?;
    let ns_flag = namespace.map(|ns| format!(" --namespace {ns}")).unwrap_or_default();
    let damaged = |e: &Error| {
        warn(format_args!(
            "{}; to move it aside for inspection: safestash quarantine {}{ns_flag} {key}",
            one_line(e),
            dir.display()
        ));
        Ok(Outcome::Finding)
    };
    if raw {
        return match store.read_raw(key) {
            Ok(Some(stashed)) => {
                out.bytes(stashed.value())?;
                Ok(Outcome::Ok)
            }
            Ok(None) => {
                warn(format_args!("no stash `{key}` in {place}"));
                Ok(Outcome::Finding)
            }
            Err(e @ Error::Corrupt { .. }) => damaged(&e),
            Err(e @ Error::NotAFile { .. }) => {
                warn(one_line(&e));
                Ok(Outcome::Finding)
            }
            Err(e) => Err(e.into()),
        };
    }
    let stashed = match store.load::<Box<RawValue>>(key) {
        Ok(Some(stashed)) => stashed,
        Ok(None) => {
            warn(format_args!("no stash `{key}` in {place}"));
            return Ok(Outcome::Finding);
        }
        Err(e @ (Error::Corrupt { .. } | Error::Deserialize { .. })) => return damaged(&e),
        Err(e @ Error::NotAFile { .. }) => {
            warn(one_line(&e));
            return Ok(Outcome::Finding);
        }
        Err(e) => return Err(e.into()),
    };
    let (payload, meta) = stashed.into_parts();
    let h = &meta.header;
    let age = scan::age_of(h.created(), SystemTime::now());
    let fields = [
        ("key", h.key().to_string()),
        ("kind", h.kind().to_owned()),
        ("created", format!("{} ({} ago)", render::time(h.created()), render::age_exact(age))),
        ("origin", h.origin().map_or("(none)".to_owned(), render::escape)),
        ("encoding", h.encoding().to_string()),
        ("writer", render::escape(h.writer())),
        ("size", format!("{} bytes", meta.size)),
        ("sha256", meta.digest.to_string()),
        ("file", meta.path.display().to_string()),
    ];
    for (name, value) in fields {
        out.line(format_args!("{:<10}{value}", format!("{name}:")))?;
    }
    out.line("")?;
    out.line(render::pretty_json(payload.get()))?;
    Ok(Outcome::Ok)
}

fn verify(dir: &Path, json: bool, out: &mut Out) -> Result<Outcome, Failure> {
    let store = open_store(dir)?;
    let now = SystemTime::now();
    let found = scan::scan(&store)?;
    // Damage in the library's own records (a journal record, a tenant
    // snapshot) is damage too: they count for the outcome.
    let outcome = found
        .all()
        .filter(|e| e.status.is_stash())
        .map(|e| e.status.outcome())
        .max()
        .unwrap_or(Outcome::Ok);
    let stashes: Vec<&scan::Entry> = found.user.iter().filter(|e| e.status.is_stash()).collect();
    if json {
        let doc = render::JsonVerify {
            dir: dir.display().to_string(),
            result: match outcome {
                Outcome::Ok => "ok",
                Outcome::Finding => "corrupt",
                Outcome::Failed => "error",
            },
            exit_code: outcome as u8,
            stashes: stashes.iter().map(|e| render::JsonEntry::new(e, now)).collect(),
            namespaces: render::json_namespaces(&found.groups, now, |e| e.status.is_stash()),
        };
        out.line(to_json(&doc))?;
        return Ok(outcome);
    }
    let groups: Vec<(&scan::Place, Vec<&scan::Entry>)> = found
        .groups
        .iter()
        .map(|g| (&g.place, g.entries.iter().filter(|e| e.status.is_stash()).collect()))
        .filter(|(_, records): &(_, Vec<_>)| !records.is_empty())
        .collect();
    if stashes.is_empty() && groups.is_empty() {
        out.line(format_args!("no stashes in `{}`: nothing to verify", dir.display()))?;
        return Ok(outcome);
    }
    if !stashes.is_empty() {
        for e in stashes.iter().filter(|e| e.status != Status::Ok) {
            let problem = e.problem.as_deref().unwrap_or("unknown problem");
            out.line(format_args!(
                "`{}` is {}: {problem}",
                e.key,
                render::status_phrase(e.status)
            ))?;
        }
        let what = plural(stashes.len(), "stash", "stashes");
        out.line(format_args!("verified {what} in `{}`: {}", dir.display(), tally(&stashes)))?;
    }
    for (place, records) in &groups {
        for e in records.iter().filter(|e| e.status != Status::Ok) {
            let problem = e.problem.as_deref().unwrap_or("unknown problem");
            let status = render::status_phrase(e.status);
            out.line(format_args!("{} is {status}: {problem}", place.describe(&e.key)))?;
        }
        let what = match place {
            scan::Place::Namespace(ns) => {
                format!("{} in namespace {ns}", plural(records.len(), "record", "records"))
            }
        };
        out.line(format_args!("verified {what}: {}", tally(records)))?;
    }
    if stashes.iter().any(|e| e.status == Status::Corrupt) {
        out.line(format_args!(
            "to move a damaged stash aside for inspection: safestash quarantine {} KEY",
            dir.display()
        ))?;
    }
    let damaged: std::collections::BTreeSet<&str> = groups
        .iter()
        .filter(|(_, records)| records.iter().any(|e| e.status == Status::Corrupt))
        .map(|(place, _)| place.namespace())
        .collect();
    for ns in damaged {
        out.line(format_args!(
            "to move a damaged record aside for inspection: safestash quarantine {} --namespace {ns} KEY",
            dir.display()
        ))?;
    }
    Ok(outcome)
}

/// "N intact, M corrupt, …" for `verify`'s summary lines.
fn tally(stashes: &[&scan::Entry]) -> String {
    let intact = stashes.iter().filter(|e| e.status == Status::Ok).count();
    let mut summary = format!("{intact} intact");
    for status in [Status::Corrupt, Status::NotAFile, Status::Unsupported, Status::Unreadable] {
        let n = stashes.iter().filter(|e| e.status == status).count();
        if n > 0 {
            summary.push_str(&format!(", {n} {}", render::status_phrase(status)));
        }
    }
    summary
}

/// `count` and the noun, singular or plural.
fn plural(count: usize, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}
