//! `safestash gc`: remove intact stashes older than an age and temp files
//! left by crashed writers; keep and report damaged ones.

use std::path::Path;
use std::time::{Duration, SystemTime};

use safestash::{Error, Store};

use crate::render;
use crate::scan::{self, Entry, Outcome, Status};
use crate::{Failure, Out, plural};

/// What happened to one old, intact stash once its lock was taken.
enum Fate {
    /// Removed.
    Removed,
    /// Another writer holds the key's lock: skipped, for the next run.
    Locked,
    /// Replaced by a newer stash since the scan: kept.
    Rewritten,
    /// Gone since the scan.
    Gone,
    /// Damaged since the scan: kept.
    Damaged(Status, Option<String>),
}

/// Runs `gc` on `dir`. See the `Gc` command's help for the rules.
///
/// # Errors
///
/// When the directory cannot be listed, or a removal fails.
pub fn run(
    dir: &Path,
    older_than: Duration,
    dry_run: bool,
    out: &mut Out,
) -> Result<Outcome, Failure> {
    let store = crate::open_store(dir)?;
    let now = SystemTime::now();
    let found = scan::scan(&store)?;
    // Only the user's stashes: the library's own records (reserved
    // namespaces, which `scan` groups apart) have their own lifecycle and
    // are never collected here.
    let entries = &found.user;
    let did = if dry_run { "would remove" } else { "removed" };
    let mut outcome = Outcome::Ok;
    let (mut stashes_removed, mut kept_damaged) = (0usize, 0usize);

    for e in entries.iter().filter(|e| e.status.is_stash()) {
        let age = e.age(now);
        if e.status != Status::Ok {
            // Never deleted: a damaged stash is evidence. Reported when it
            // is due, or when its age cannot be read.
            if age.is_none_or(|a| a > older_than) {
                report_damaged(dir, e, e.status, e.problem.as_deref(), age, out)?;
                outcome = outcome.max(e.status.outcome());
                kept_damaged += 1;
            }
            continue;
        }
        let Some(age) = age.filter(|a| *a > older_than) else { continue };
        let created = e.header.as_ref().map(|h| render::time(h.created())).unwrap_or_default();
        let fate = if dry_run { Fate::Removed } else { remove_if_due(&store, e, older_than, now)? };
        match fate {
            Fate::Removed => {
                stashes_removed += 1;
                out.line(format_args!(
                    "{did} stash `{}` (created {created}, {} old)",
                    e.key,
                    render::age(age)
                ))?;
            }
            Fate::Locked => out.line(format_args!(
                "skipped stash `{}`: another writer holds its lock; try again later",
                e.key
            ))?,
            Fate::Rewritten => {
                out.line(format_args!("kept stash `{}`: rewritten since it was checked", e.key))?
            }
            Fate::Gone => {}
            Fate::Damaged(status, problem) => {
                report_damaged(dir, e, status, problem.as_deref(), Some(age), out)?;
                outcome = outcome.max(status.outcome());
                kept_damaged += 1;
            }
        }
    }

    let temps: Vec<&Entry> = entries.iter().filter(|e| e.status == Status::TempLeftover).collect();
    let temps_removed = if dry_run {
        let mut n = 0;
        for t in &temps {
            if store.is_locked(&t.key)? {
                out.line(format_args!(
                    "skipped temp file `{}`: a writer holding `{}`'s lock is saving it",
                    t.file, t.key
                ))?;
            } else {
                n += 1;
                out.line(format_args!("{did} temp file `{}` (left by a crashed writer)", t.file))?;
            }
        }
        n
    } else {
        let removed = store.cleanup()?;
        for path in &removed {
            let name = path.strip_prefix(store.dir()).unwrap_or(path).display().to_string();
            if safestash::temp_file_key(&name).is_none() {
                // Object storage: the data objects no reference names, older
                // than the backend's grace period.
                out.line(format_args!(
                    "{did} data object `{name}` (no stash names it: replaced, cleared or failed)"
                ))?;
                continue;
            }
            out.line(format_args!("{did} temp file `{name}` (left by a crashed writer)"))?;
        }
        for t in &temps {
            let path = store.dir().join(&t.file);
            if !removed.contains(&path) && store.is_locked(&t.key)? {
                out.line(format_args!(
                    "skipped temp file `{}`: a writer holding `{}`'s lock is saving it",
                    t.file, t.key
                ))?;
            }
        }
        removed.len()
    };

    let reserved: Vec<String> = found
        .groups
        .iter()
        .filter(|g| !g.entries.is_empty())
        .map(|g| format!("{} ({})", g.place.heading(), g.entries.len()))
        .collect();
    if !reserved.is_empty() {
        out.line(format_args!(
            "left the library's own records alone: {}; gc never removes them",
            reserved.join(", ")
        ))?;
    }

    let age = humantime::format_duration(older_than);
    let mut summary = if stashes_removed + temps_removed == 0 {
        format!(
            "nothing to remove in `{}` (no intact stash older than {age}, no temp leftover)",
            dir.display()
        )
    } else {
        format!(
            "{}{did} {} and {} in `{}`",
            if dry_run { "dry run: " } else { "" },
            plural(stashes_removed, "stash", "stashes"),
            plural(temps_removed, "temp file", "temp files"),
            dir.display()
        )
    };
    if kept_damaged > 0 {
        summary.push_str(&format!(
            "; kept {} (see above)",
            plural(kept_damaged, "damaged stash", "damaged stashes")
        ));
    }
    if dry_run && stashes_removed + temps_removed > 0 {
        summary.push_str("; nothing was changed");
    }
    out.line(summary)?;
    Ok(outcome)
}

fn report_damaged(
    dir: &Path,
    e: &Entry,
    status: Status,
    problem: Option<&str>,
    age: Option<Duration>,
    out: &mut Out,
) -> Result<(), Failure> {
    let age = age.map_or("age unknown".to_owned(), |a| format!("{} old", render::age(a)));
    let advice = match status {
        Status::Corrupt => {
            format!(
                "inspect it, then move it aside: safestash quarantine {} {}",
                dir.display(),
                e.key
            )
        }
        Status::Unsupported => "read it with a newer safestash".to_owned(),
        _ => "inspect it".to_owned(),
    };
    out.line(format_args!(
        "kept stash `{}` ({age}): it is {}: {}; {advice}",
        e.key,
        render::status_phrase(status),
        problem.unwrap_or("unknown problem"),
    ))
}

/// Removes an old, intact stash under its lock, after checking again that it
/// is the one the scan saw and still old: never waits for a lock, never
/// removes a stash written since the scan.
fn remove_if_due(
    store: &Store,
    e: &Entry,
    older_than: Duration,
    now: SystemTime,
) -> Result<Fate, Failure> {
    let lock = match store.try_lock(&e.key) {
        Ok(lock) => lock,
        Err(Error::Locked { .. }) => return Ok(Fate::Locked),
        Err(other) => return Err(other.into()),
    };
    let meta = match store.load::<serde::de::IgnoredAny>(&e.key) {
        Ok(Some(stashed)) => stashed.into_parts().1,
        Ok(None) => return Ok(Fate::Gone),
        Err(err) => {
            let (status, problem) = scan::classify(&err);
            return Ok(Fate::Damaged(status, problem));
        }
    };
    if Some(meta.digest) != e.digest || scan::age_of(meta.header.created(), now) <= older_than {
        return Ok(Fate::Rewritten);
    }
    Ok(if lock.clear()? { Fate::Removed } else { Fate::Gone })
}
