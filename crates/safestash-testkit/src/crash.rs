//! The crash harness: every store operation, cut off at every call, checked
//! in every state the disk could be left in.
//!
//! For a [`Scenario`] (an operation on a prepared store) and a [`Protocol`]
//! (the store's real save, or a deliberately broken one as a negative
//! control), [`explore`]:
//!
//! 1. runs the operation once on a [`SimFs`] and counts its calls, *K*;
//! 2. for every crash point *k* in `0..=K`, runs it again with the power cut
//!    after call *k*, and for every crash image
//!    ([`SimFs::for_each_crash_image`]) opens a fresh store and checks that
//!    `load` gives an allowed outcome: before the operation returned, the old
//!    or the new state; after it returned `Ok`, the new state only. It then
//!    runs `cleanup` and checks that no temp file is left and that `load` is
//!    unchanged (a temp file is never read as a stash);
//! 3. for every call *k*, injects an I/O error once and from *k* on, and
//!    checks the operation returns `Err`, never panics, leaves the old state
//!    (or the new one if the error came after the commit point), leaves no
//!    temp file behind once `cleanup` has run, and, for a one-off error, none
//!    even before.
//!
//! # Examples
//!
//! ```
//! use safestash_testkit::crash::{explore, Protocol, Scenario};
//!
//! let report = explore(Scenario::SaveOverExisting, Protocol::Correct, 2600);
//! assert!(report.states > 100);
//! assert_eq!(report.violations, 0, "{:?}", report.examples);
//!
//! // Negative control: without the directory fsync, acknowledged saves are lost.
//! let broken = explore(Scenario::SaveOverExisting, Protocol::NoDirSync, 1500);
//! assert!(broken.violations > 0);
//! ```

use std::cell::Cell;
use std::fmt;
use std::io::{self, Write};
use std::path::Path;
use std::time::SystemTime;

use safestash::envelope::{self, Header};
use safestash::fs::Fs;
use safestash::sim::SimFs;
use safestash::{Error, SaveOptions, StashKey, Stashed, Store, temp_file_key};

/// The store's directory in every scenario.
///
/// # Examples
///
/// ```
/// assert_eq!(safestash_testkit::crash::DIR, "/data/stashes");
/// ```
pub const DIR: &str = "/data/stashes";
/// How many violation descriptions a report keeps.
const MAX_EXAMPLES: usize = 8;
/// A crash point with more images than this is checked on
/// [`SAMPLED_IMAGES`] of them, chosen as [`SimFs::crash_image`] does (a
/// batch leaves several files unsynced at once, and their sector choices
/// multiply).
pub const MAX_ENUMERATED_IMAGES: u64 = 4096;
/// How many images a crash point with too many to enumerate is checked on.
///
/// # Examples
///
/// ```
/// use safestash_testkit::crash::{MAX_ENUMERATED_IMAGES, SAMPLED_IMAGES};
/// assert!(SAMPLED_IMAGES < MAX_ENUMERATED_IMAGES);
/// ```
pub const SAMPLED_IMAGES: u64 = 512;
/// How many stashes the batch scenario saves (the first over an old stash,
/// the others where there was none).
///
/// [`explore_all`] runs the batch scenario with the value lengths up to
/// [`MAX_BATCH_VALUE_LEN`] only: three files of a value written in several
/// chunks have too many sector variants to build for every crash point.
///
/// # Examples
///
/// ```
/// assert_eq!(safestash_testkit::crash::BATCH_LEN, 3);
/// ```
pub const BATCH_LEN: usize = 3;
/// The longest value [`explore_all`] gives the batch scenario (six sectors a
/// file: every sector combination of each file).
///
/// # Examples
///
/// ```
/// assert_eq!(safestash_testkit::crash::MAX_BATCH_VALUE_LEN, 2600);
/// ```
pub const MAX_BATCH_VALUE_LEN: usize = 2600;

/// A store operation to cut off at every call.
///
/// # Examples
///
/// ```
/// assert_eq!(safestash_testkit::crash::Scenario::Clear.to_string(), "clear");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scenario {
    /// Save where no stash and no directory exist (creates the directory chain).
    SaveCreatingDirs,
    /// Save into an existing, empty directory.
    SaveOverNothing,
    /// Save over an existing stash.
    SaveOverExisting,
    /// Clear an existing stash.
    Clear,
    /// Quarantine a corrupt stash.
    Quarantine,
    /// Clean up a temp file left by a crashed writer next to a stash.
    Cleanup,
    /// `begin` (stash a snapshot, get the permit to destroy), then
    /// `rollback` through a restore hook: once the permit is given the
    /// snapshot must survive until the hook has run.
    RollbackRestore,
    /// One [`Store::batch`] of [`BATCH_LEN`] stashes, the first over an
    /// existing stash: each key must hold its old stash (or none) or its new
    /// one, and all must be new once the batch returned `Ok`.
    Batch,
}

impl Scenario {
    /// Every scenario.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(safestash_testkit::crash::Scenario::ALL.contains(&safestash_testkit::crash::Scenario::Clear));
    /// ```
    pub const ALL: [Scenario; 8] = [
        Scenario::SaveCreatingDirs,
        Scenario::SaveOverNothing,
        Scenario::SaveOverExisting,
        Scenario::Clear,
        Scenario::Quarantine,
        Scenario::Cleanup,
        Scenario::RollbackRestore,
        Scenario::Batch,
    ];

    fn is_save(self) -> bool {
        matches!(
            self,
            Scenario::SaveCreatingDirs | Scenario::SaveOverNothing | Scenario::SaveOverExisting
        )
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scenario::SaveCreatingDirs => "save, creating directories",
            Scenario::SaveOverNothing => "save over nothing",
            Scenario::SaveOverExisting => "save over a stash",
            Scenario::Clear => "clear",
            Scenario::Quarantine => "quarantine",
            Scenario::Cleanup => "cleanup of stale temps",
            Scenario::RollbackRestore => "begin + rollback-restore",
            Scenario::Batch => "batch of 3 saves",
        })
    }
}

/// How saves are done: the store's protocol, or a broken one that a working
/// harness must catch.
///
/// # Examples
///
/// ```
/// assert_eq!(safestash_testkit::crash::Protocol::NoFileSync.to_string(), "no file fsync");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Protocol {
    /// [`Store::save`] itself.
    Correct,
    /// Temp file, rename, directory fsync — but the file is never fsynced
    /// (in a batch: the temp files are never flushed with
    /// [`Fs::sync_files`]).
    NoFileSync,
    /// Temp file, fsync, rename — but the directory is never fsynced (in a
    /// batch: temp files flushed together, renamed, and no directory fsync).
    NoDirSync,
    /// Overwrite the stash file in place, then fsync it.
    InPlace,
    /// Roll back by clearing the stash first and restoring after.
    ClearBeforeRestore,
}

impl Protocol {
    /// The broken protocols.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!safestash_testkit::crash::Protocol::BROKEN.contains(&safestash_testkit::crash::Protocol::Correct));
    /// ```
    pub const BROKEN: [Protocol; 4] = [
        Protocol::NoFileSync,
        Protocol::NoDirSync,
        Protocol::InPlace,
        Protocol::ClearBeforeRestore,
    ];
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Correct => "correct",
            Protocol::NoFileSync => "no file fsync",
            Protocol::NoDirSync => "no directory fsync",
            Protocol::InPlace => "write in place",
            Protocol::ClearBeforeRestore => "clear before restore",
        })
    }
}

/// What `load` found, as the harness compares it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Missing,
    Value(String),
    Corrupt,
    Failed(String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Missing => f.write_str("no stash"),
            Outcome::Value(v) => write!(f, "value {:?}…", &v[..v.len().min(12)]),
            Outcome::Corrupt => f.write_str("Corrupt"),
            Outcome::Failed(e) => write!(f, "error: {e}"),
        }
    }
}

/// What [`explore`] found for one scenario and protocol.
///
/// # Examples
///
/// See the [module documentation](self).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// Calls the operation makes when nothing goes wrong (*K*).
    pub calls: u64,
    /// Crash points tried (*K* + 1).
    pub crash_points: u64,
    /// Crash images checked.
    pub states: u64,
    /// I/O-error cases tried (2*K*: once and persistent at every call).
    pub io_error_cases: u64,
    /// Checks that failed.
    pub violations: u64,
    /// Of those, crash images taken after the operation had returned `Ok`:
    /// acknowledged work that a power cut undid.
    pub lost_after_ok: u64,
    /// The first few violations, described.
    pub examples: Vec<String>,
}

impl Report {
    fn violation(&mut self, what: String) {
        self.violations += 1;
        if self.examples.len() < MAX_EXAMPLES && !self.examples.contains(&what) {
            self.examples.push(what);
        }
    }
}

/// How far a rollback scenario got before it stopped: whether `begin`
/// handed out the permit to destroy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Progress {
    permit: bool,
}

/// Where the rollback scenario's restore hook recreates the resource,
/// durably, through the same simulated filesystem.
const RESOURCE: &str = "/data/resource";

struct Case {
    scenario: Scenario,
    protocol: Protocol,
    key: StashKey,
    old: String,
    new: String,
}

impl Case {
    fn setup(&self) -> SimFs {
        let fs = SimFs::new();
        match self.scenario {
            Scenario::SaveCreatingDirs => {}
            Scenario::SaveOverNothing | Scenario::RollbackRestore => {
                fs.mkdir_durable(DIR).expect("setup");
            }
            Scenario::SaveOverExisting | Scenario::Clear | Scenario::Cleanup | Scenario::Batch => {
                let store = Store::with_fs(DIR, fs.clone()).expect("setup");
                store.save(&self.key, &self.old).expect("setup");
                if self.scenario == Scenario::Cleanup {
                    let tmp = Path::new(DIR).join(format!(".{}.Zz9Yy8Xx.tmp", self.key));
                    fs.write_durable(tmp, b"SAFESTASH 1\n{\"key\":\"half a stash").expect("setup");
                }
            }
            Scenario::Quarantine => {
                fs.mkdir_durable(DIR).expect("setup");
                fs.write_durable(Path::new(DIR).join(self.key.as_str()), self.old.as_bytes())
                    .expect("setup");
            }
        }
        fs
    }

    /// The outcomes `load` may give before the operation returned, and after.
    fn allowed(&self) -> (Vec<Outcome>, Outcome) {
        let old = Outcome::Value(self.old.clone());
        let new = Outcome::Value(self.new.clone());
        match self.scenario {
            Scenario::SaveCreatingDirs | Scenario::SaveOverNothing => {
                (vec![Outcome::Missing, new.clone()], new)
            }
            Scenario::SaveOverExisting | Scenario::Batch => (vec![old, new.clone()], new),
            Scenario::Clear => (vec![old, Outcome::Missing], Outcome::Missing),
            Scenario::Quarantine => (vec![Outcome::Corrupt, Outcome::Missing], Outcome::Missing),
            Scenario::Cleanup => (vec![old.clone()], old),
            Scenario::RollbackRestore => (vec![Outcome::Missing, new], Outcome::Missing),
        }
    }

    /// The outcomes allowed once the operation stopped (returned, failed or
    /// lost power) having made `progress`; `before_commit` is whether an
    /// injected error hit before the commit call.
    fn allowed_after(
        &self,
        progress: Progress,
        returned_ok: bool,
        before_commit: bool,
    ) -> Vec<Outcome> {
        let (before, after) = self.allowed();
        if self.scenario == Scenario::RollbackRestore {
            let new = Outcome::Value(self.new.clone());
            // Once the permit was given, "no stash" is only allowed if the
            // resource was durably restored: `check` verifies that.
            return match progress {
                _ if returned_ok => vec![Outcome::Missing],
                Progress { permit: true } => vec![new, Outcome::Missing],
                Progress { permit: false } => before,
            };
        }
        if returned_ok {
            vec![after]
        } else if before_commit {
            vec![before[0].clone()]
        } else {
            before
        }
    }

    /// The call that makes the operation's effect visible.
    fn commit_op(&self) -> &'static str {
        match (self.scenario, self.protocol) {
            (Scenario::Clear | Scenario::Cleanup | Scenario::RollbackRestore, _) => "remove_file",
            (_, Protocol::InPlace) => "overwrite_in_place",
            _ => "rename",
        }
    }

    fn run(&self, store: &Store<SimFs>) -> (Result<(), String>, Progress) {
        let progress = Cell::new(Progress::default());
        let result = self.run_op(store, &progress);
        (result, progress.get())
    }

    fn run_op(&self, store: &Store<SimFs>, progress: &Cell<Progress>) -> Result<(), String> {
        if self.scenario == Scenario::RollbackRestore {
            let guard = store.begin(&self.key, &self.new).map_err(|e| e.to_string())?;
            progress.set(Progress { permit: true });
            let mut hook = |s: Stashed<String>| -> io::Result<()> {
                // Recreate the resource durably: temp, fsync, rename, fsync.
                let fs = store.fs();
                let (mut file, tmp) = fs.create_temp(Path::new("/data"), ".resource.", ".tmp")?;
                file.write_all(s.value().as_bytes())?;
                fs.sync_file(&mut file)?;
                fs.rename(&tmp, Path::new(RESOURCE))?;
                fs.sync_dir(Path::new("/data"))
            };
            if self.protocol == Protocol::ClearBeforeRestore {
                let stashed = store.load::<String>(&self.key).map_err(|e| e.to_string())?;
                store.clear(&self.key).map_err(|e| e.to_string())?;
                let _ = guard.keep();
                return hook(stashed.ok_or("no stash")?).map_err(|e| e.to_string());
            }
            return guard.rollback(&mut hook).map(drop).map_err(|e| e.error.to_string());
        }
        let result = match (self.scenario, self.protocol) {
            (s, Protocol::Correct) if s.is_save() => store.save(&self.key, &self.new).map(drop),
            (s, broken) if s.is_save() => return broken_save(store, &self.key, &self.new, broken),
            (Scenario::Batch, Protocol::Correct) => {
                let keys = self.batch_keys();
                let mut batch = store.batch();
                for key in &keys {
                    batch.add(key, &self.new, &SaveOptions::new()).map_err(|e| e.to_string())?;
                }
                batch.commit().map(drop).map_err(Error::from)
            }
            (Scenario::Batch, broken) => {
                return broken_batch(store, &self.batch_keys(), &self.new, broken);
            }
            (Scenario::Clear, _) => store.clear(&self.key).map(drop),
            (Scenario::Quarantine, _) => store.quarantine(&self.key).map(drop),
            (Scenario::Cleanup, _) => store.cleanup().map(drop),
            _ => unreachable!("every scenario is covered"),
        };
        result.map_err(|e| e.to_string())
    }

    /// The keys of the batch scenario: the case's key (over its old
    /// stash), then keys that had none.
    fn batch_keys(&self) -> Vec<StashKey> {
        let mut keys = vec![self.key.clone()];
        for i in 1..BATCH_LEN {
            keys.push(StashKey::new(format!("{}.{i}", self.key)).expect("valid key"));
        }
        keys
    }

    fn load(&self, store: &Store<SimFs>) -> Outcome {
        Case::load_key(store, &self.key)
    }

    fn load_key(store: &Store<SimFs>, key: &StashKey) -> Outcome {
        match store.load::<String>(key) {
            Ok(None) => Outcome::Missing,
            Ok(Some(s)) => Outcome::Value(s.into_value()),
            Err(Error::Corrupt { .. }) => Outcome::Corrupt,
            Err(e) => Outcome::Failed(e.to_string()),
        }
    }

    /// Checks one crash image or post-error state; returns what is wrong.
    fn check(&self, fs: SimFs, allowed: &[Outcome], progress: Progress) -> Option<String> {
        let store = match Store::with_fs(DIR, fs.clone()) {
            Ok(store) => store,
            Err(e) => return Some(format!("reopening failed: {e}")),
        };
        let outcome = self.load(&store);
        if !allowed.contains(&outcome) {
            let allowed: Vec<String> = allowed.iter().map(Outcome::to_string).collect();
            return Some(format!("load gave {outcome}, allowed: {}", allowed.join(" or ")));
        }
        // The other keys of a batch had no stash: where the first key may
        // keep its old value, they may have none.
        let others = if self.scenario == Scenario::Batch { self.batch_keys() } else { Vec::new() };
        let old = Outcome::Value(self.old.clone());
        let fresh: Vec<Outcome> =
            allowed.iter().map(|o| if *o == old { Outcome::Missing } else { o.clone() }).collect();
        let mut before_cleanup = Vec::new();
        for key in others.iter().skip(1) {
            let found = Case::load_key(&store, key);
            if !fresh.contains(&found) {
                let fresh: Vec<String> = fresh.iter().map(Outcome::to_string).collect();
                return Some(format!("{key}: load gave {found}, allowed: {}", fresh.join(" or ")));
            }
            before_cleanup.push(found);
        }
        if self.scenario == Scenario::RollbackRestore
            && progress.permit
            && outcome == Outcome::Missing
            && fs.read(RESOURCE).as_deref() != Some(self.new.as_bytes())
        {
            return Some("the snapshot is lost: no stash and no restored resource".to_owned());
        }
        if self.scenario == Scenario::Quarantine && outcome == Outcome::Missing {
            let kept = fs.list(DIR).iter().any(|name| {
                name.starts_with(&format!(".{}.quarantined.", self.key))
                    && fs.read(Path::new(DIR).join(name)).as_deref() == Some(self.old.as_bytes())
            });
            if !kept {
                return Some("the corrupt stash vanished instead of being quarantined".to_owned());
            }
        }
        if let Err(e) = store.cleanup() {
            return Some(format!("cleanup failed: {e}"));
        }
        if let Some(tmp) = temp_files(&fs).first() {
            return Some(format!("temp file {tmp} left after cleanup"));
        }
        let again = self.load(&store);
        if again != outcome {
            return Some(format!("load changed after cleanup: {outcome} then {again}"));
        }
        for (key, before) in others.iter().skip(1).zip(before_cleanup) {
            let again = Case::load_key(&store, key);
            if again != before {
                return Some(format!("{key}: load changed after cleanup: {before} then {again}"));
            }
        }
        None
    }
}

fn temp_files(fs: &SimFs) -> Vec<String> {
    fs.list(DIR).into_iter().filter(|name| temp_file_key(name).is_some()).collect()
}

/// The negative controls: saves that each skip one step of the protocol.
fn broken_save(
    store: &Store<SimFs>,
    key: &StashKey,
    value: &String,
    protocol: Protocol,
) -> Result<(), String> {
    let err = |e: std::io::Error| e.to_string();
    let fs = store.fs();
    let (dir, path) = (store.dir(), store.path_of(key));
    let header =
        Header::new(key.clone(), "value", None, SystemTime::now()).map_err(|e| e.to_string())?;
    let payload = serde_json::to_vec(value).map_err(|e| e.to_string())?;
    let bytes = envelope::encode(&header, &payload);
    if protocol == Protocol::InPlace {
        fs.overwrite_in_place(&path, &bytes).map_err(err)?;
        // Durable once synced, but not atomic: a crash before leaves a mix.
        return fs.sync_in_place(&path).map_err(err);
    }
    let (mut file, tmp) = fs.create_temp(dir, &format!(".{key}."), ".tmp").map_err(err)?;
    file.write_all(&bytes).map_err(err)?;
    if protocol != Protocol::NoFileSync {
        fs.sync_file(&mut file).map_err(err)?;
    }
    drop(file);
    fs.rename(&tmp, &path).map_err(err)?;
    if protocol != Protocol::NoDirSync {
        fs.sync_dir(dir).map_err(err)?;
    }
    Ok(())
}

/// The negative controls for batches: the batch protocol (every temp file
/// written, flushed together, each renamed, the directory fsynced once)
/// with one step skipped.
fn broken_batch(
    store: &Store<SimFs>,
    keys: &[StashKey],
    value: &String,
    protocol: Protocol,
) -> Result<(), String> {
    let err = |e: std::io::Error| e.to_string();
    let fs = store.fs();
    let dir = store.dir();
    let payload = serde_json::to_vec(value).map_err(|e| e.to_string())?;
    let (mut files, mut temps) = (Vec::new(), Vec::new());
    for key in keys {
        let header = Header::new(key.clone(), "value", None, SystemTime::now())
            .map_err(|e| e.to_string())?;
        let (mut file, tmp) = fs.create_temp(dir, &format!(".{key}."), ".tmp").map_err(err)?;
        file.write_all(&envelope::encode(&header, &payload)).map_err(err)?;
        files.push(file);
        temps.push((tmp, store.path_of(key)));
    }
    if protocol != Protocol::NoFileSync {
        fs.sync_files(&mut files).map_err(err)?;
    }
    drop(files);
    for (tmp, path) in &temps {
        fs.rename(tmp, path).map_err(err)?;
    }
    if protocol != Protocol::NoDirSync {
        fs.sync_dir(dir).map_err(err)?;
    }
    Ok(())
}

/// Runs one scenario under one protocol, with string values of about
/// `value_len` bytes, and reports what it checked and what failed.
///
/// # Panics
///
/// If the scenario's setup fails, or the operation fails with no fault
/// injected (both are bugs in the harness or the store, not findings).
///
/// # Examples
///
/// See the [module documentation](self).
pub fn explore(scenario: Scenario, protocol: Protocol, value_len: usize) -> Report {
    let fill = |tag: &str| {
        let mut s = String::with_capacity(value_len);
        let mut i = 0u32;
        while s.len() < value_len {
            s.push_str(&format!("{tag}{i:05} "));
            i += 1;
        }
        s.truncate(value_len.max(1));
        s
    };
    let case = Case {
        scenario,
        protocol,
        key: StashKey::new("orders.dictionary").expect("valid key"),
        old: fill("old"),
        new: fill("new"),
    };
    let mut report = Report::default();

    // The clean run: K calls, and where the commit happens.
    let initial = case.setup();
    let dry = initial.fork();
    let store = Store::with_fs(DIR, dry.clone()).expect("open");
    let base = dry.calls();
    if let (Err(e), _) = case.run(&store) {
        panic!("{scenario} ({protocol}) failed with no fault: {e}");
    }
    let log: Vec<_> = dry.log().into_iter().filter(|c| c.seq > base).collect();
    let calls = log.len() as u64;
    let commit = log.iter().find(|c| c.op == case.commit_op()).map_or(calls + 1, |c| c.seq - base);
    report.calls = calls;

    // Power cuts at every call.
    for k in 0..=calls {
        report.crash_points += 1;
        let fs = initial.fork();
        let store = Store::with_fs(DIR, fs.clone()).expect("open");
        fs.crash_after(base + k);
        let (result, progress) = case.run(&store);
        let returned_ok = result.is_ok() && !fs.is_crashed();
        let allowed = case.allowed_after(progress, returned_ok, false);
        let check = |image: SimFs| {
            report.states += 1;
            if let Some(what) = case.check(image, &allowed, progress) {
                report.lost_after_ok += u64::from(returned_ok);
                let when = if returned_ok { "after it returned Ok" } else { "mid-operation" };
                report.violation(format!("crash after call {k}/{calls} ({when}): {what}"));
            }
        };
        if fs.crash_image_count() <= MAX_ENUMERATED_IMAGES {
            fs.for_each_crash_image(check);
        } else {
            fs.for_each_sampled_crash_image(SAMPLED_IMAGES, check);
        }
    }

    // I/O errors at every call, once and from then on.
    for k in 1..=calls {
        for persistent in [false, true] {
            report.io_error_cases += 1;
            let fs = initial.fork();
            let store = Store::with_fs(DIR, fs.clone()).expect("open");
            fs.fail_at(base + k, persistent);
            let how = if persistent { "persistent" } else { "one-off" };
            let op = &log[(k - 1) as usize].op;
            let (result, progress) = case.run(&store);
            if result.is_ok() {
                report.violation(format!("{how} error at call {k} ({op}) was not reported"));
                continue;
            }
            fs.clear_faults();
            if !persistent && case.scenario != Scenario::Cleanup {
                if let Some(tmp) = temp_files(&fs).first() {
                    report.violation(format!("{how} error at call {k} ({op}) left {tmp}"));
                }
            }
            let allowed = case.allowed_after(progress, false, k < commit);
            if let Some(what) = case.check(fs, &allowed, progress) {
                report.violation(format!("{how} error at call {k} ({op}): {what}"));
            }
        }
    }
    report
}

/// Every scenario under the correct protocol, and the save scenarios under
/// each broken one: `(scenario, protocol, report)`.
///
/// # Examples
///
/// ```no_run
/// for (scenario, protocol, report) in safestash_testkit::crash::explore_all(&[64, 1500]) {
///     println!("{scenario} ({protocol}): {} states, {} violations", report.states, report.violations);
/// }
/// ```
pub fn explore_all(value_lens: &[usize]) -> Vec<(Scenario, Protocol, Report)> {
    let mut out = Vec::new();
    for scenario in Scenario::ALL {
        let protocols: &[Protocol] = match scenario {
            Scenario::SaveOverExisting => {
                &[Protocol::Correct, Protocol::NoFileSync, Protocol::NoDirSync, Protocol::InPlace]
            }
            Scenario::RollbackRestore => &[Protocol::Correct, Protocol::ClearBeforeRestore],
            Scenario::Batch => &[Protocol::Correct, Protocol::NoFileSync, Protocol::NoDirSync],
            _ => &[Protocol::Correct],
        };
        for &protocol in protocols {
            let mut total = Report::default();
            for &len in value_lens {
                if scenario == Scenario::Batch && len > MAX_BATCH_VALUE_LEN {
                    continue;
                }
                let r = explore(scenario, protocol, len);
                total.calls = total.calls.max(r.calls);
                total.crash_points += r.crash_points;
                total.states += r.states;
                total.io_error_cases += r.io_error_cases;
                total.violations += r.violations;
                total.lost_after_ok += r.lost_after_ok;
                for e in r.examples {
                    if total.examples.len() < MAX_EXAMPLES {
                        total.examples.push(format!("[{len} B] {e}"));
                    }
                }
            }
            out.push((scenario, protocol, total));
        }
    }
    out
}
