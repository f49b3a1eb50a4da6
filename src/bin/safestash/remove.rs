//! `safestash quarantine` and `safestash clear`: confirm, lock, act.

use std::io::{self, IsTerminal, Write};
use std::path::Path;
use std::time::SystemTime;

use safestash::{Error, KeyLock, StashKey, Store};

use crate::scan::{self, Outcome};
use crate::{Failure, Out, open_store, render, warn};

/// What the command does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// `safestash quarantine`: move the stash aside.
    Quarantine,
    /// `safestash clear`: delete the stash.
    Clear,
}

/// Runs `quarantine` or `clear` of `key` in `dir` (in its reserved
/// namespace `namespace`, if given): nothing to do when there is no stash;
/// otherwise confirm, take the key's lock without waiting, and act under it.
///
/// # Errors
///
/// When the store cannot be opened, the key is one of the library's own
/// records and `--namespace` was not given, the question cannot be asked
/// (no terminal and no `--yes`), the key is locked, or the removal fails.
pub fn run(
    dir: &Path,
    key: &StashKey,
    namespace: Option<&str>,
    removal: Removal,
    yes: bool,
    out: &mut Out,
) -> Result<Outcome, Failure> {
    let verb = match removal {
        Removal::Quarantine => "quarantine",
        Removal::Clear => "clear",
    };
    let store = open_store(dir)?;
    let (store, place) = target(store, dir, key, namespace, verb)?;
    let Some(found) = store.inspect_key(key)? else {
        out.line(format_args!("no stash `{key}` in {place}: nothing to {verb}"))?;
        return Ok(Outcome::Ok);
    };
    if !yes {
        let question = || match removal {
            Removal::Quarantine => {
                format!("Move stash `{key}` in {place} ({}) aside for inspection?", describe(found))
            }
            Removal::Clear => {
                format!("Delete stash `{key}` in {place} ({}) for good?", describe(found))
            }
        };
        if !confirm(question, &format!("{verb} `{key}`"))? {
            warn(format_args!("not confirmed: `{key}` was left as it is"));
            return Ok(Outcome::Failed);
        }
    }
    let lock = try_lock(&store, key)?;
    match removal {
        Removal::Quarantine => match lock.quarantine()? {
            Some(aside) => {
                out.line(format_args!("quarantined `{key}`: moved to `{}`", aside.display()))?
            }
            None => out.line(format_args!("no stash `{key}` in {place}: nothing to {verb}"))?,
        },
        Removal::Clear => {
            if lock.clear()? {
                out.line(format_args!("cleared `{key}` in {place}"))?;
            } else {
                out.line(format_args!("no stash `{key}` in {place}: nothing to {verb}"))?;
            }
        }
    }
    Ok(Outcome::Ok)
}

/// The store holding `key` for a removal, and how to name it ("`DIR`",
/// "namespace journal of `DIR`"). The library's own records are reached
/// only through `--namespace`: a removal that names one without it is
/// refused, saying which namespace has it.
fn target(
    store: Store,
    dir: &Path,
    key: &StashKey,
    namespace: Option<&str>,
    verb: &str,
) -> Result<(Store, String), Failure> {
    let user_place = format!("`{}`", dir.display());
    let Some(ns) = namespace else {
        if store.inspect_key(key)?.is_none() {
            for ns in store.namespaces()? {
                if store.namespace(&ns)?.inspect_key(key)?.is_some() {
                    return Err(Failure::Plain(format!(
                        "no stash `{key}` among the user stashes in `{}`; namespace {ns} has \
                         one: pass --namespace {ns} to {verb} it",
                        dir.display()
                    )));
                }
            }
        }
        return Ok((store, user_place));
    };
    let records = store.namespace(ns)?;
    Ok((records, format!("namespace {ns} of `{}`", dir.display())))
}

/// Takes `key`'s lock without waiting: an operator command fails rather than
/// hangs behind a writer.
fn try_lock(store: &Store, key: &StashKey) -> Result<KeyLock, Failure> {
    store.try_lock(key).map_err(|e| match e {
        Error::Locked { .. } => Failure::Plain(format!("{e}; try again when it is done")),
        other => other.into(),
    })
}

/// A stash in a few words for a confirmation question: kind, origin, age,
/// and whether it is intact.
fn describe(found: safestash::Inspected) -> String {
    let status = match found.verified {
        Some(Ok(_)) => "intact".to_owned(),
        Some(Err(e)) => {
            let (status, problem) = scan::classify(&e);
            format!("{}: {}", render::status_phrase(status), problem.unwrap_or_default())
        }
        None => "not a stash".to_owned(),
    };
    match found.header.and_then(Result::ok) {
        Some(h) => format!(
            "kind {}, origin {}, {} old, {status}",
            h.kind(),
            h.origin().map_or("none".to_owned(), |o| format!(
                "`{}`",
                render::truncate(&render::escape(o), 60)
            )),
            render::age(scan::age_of(h.created(), SystemTime::now()))
        ),
        None => status,
    }
}

/// Asks the question on the terminal; without a terminal on stdin, refuses
/// to `action` (never waits for input that cannot come).
fn confirm(question: impl FnOnce() -> String, action: &str) -> Result<bool, Failure> {
    let stdin = io::stdin();
    if !stdin.is_terminal() {
        return Err(Failure::Plain(format!(
            "refusing to {action} without confirmation: standard input is not a terminal; pass --yes to confirm"
        )));
    }
    eprint!("{} [y/N] ", question());
    let _ = io::stderr().flush();
    let mut answer = String::new();
    stdin
        .read_line(&mut answer)
        .map_err(|e| Failure::io("failed to read the answer from standard input".to_owned(), e))?;
    Ok(matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}
