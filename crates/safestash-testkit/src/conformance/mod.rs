//! The conformance suite every backend runs: one behaviour suite and one
//! fault suite, through the public API of `safestash` only, so a promise
//! cannot hold on one backend and silently not on another.
//!
//! - [`run`] (behaviour): round trip and absence, an empty value, replace
//!   and idempotent clear, conditional save and clear, hostile keys, locks
//!   (where the backend has them), begin / rollback / resume, batches,
//!   namespaces, a journal operation, and, given a [`Damage`] callback,
//!   damage read back as [`Error::Corrupt`](safestash::Error::Corrupt). Each check opens a fresh,
//!   empty store with the subject's `open`.
//! - [`run_faults`] (faults): the same verbs under ambiguous outcomes
//!   injected at the backend boundary, through a [`Rig`]: the kit's
//!   [`Faulty`] wrapper around any backend ([`Rig::wrapping`]), the
//!   simulated remote's own fates ([`Rig::sim`]), or a hook of the caller's
//!   ([`Rig::new`]). The promises checked: an ambiguous outcome never loses
//!   or overwrites data (the old stash stays unless the new one landed); a
//!   save that errored leaves its key absent, old or new, intact, never
//!   [`Error::Corrupt`](safestash::Error::Corrupt); an acknowledged save loads, and no late request
//!   overwrites a newer acknowledged one; a stash a guard or a batch wrote
//!   is never lost; a holder paused past its lease cannot write over a newer
//!   holder (given a pause hook).
//!
//! [`run`] and [`run_faults`] panic naming the failed check and the
//! subject; [`check`] and [`check_faults`] return the [`Failure`] instead
//! (for negative controls: a deliberately broken protocol must fail).
//!
//! # Examples
//!
//! The suite on a directory store, with damage done to its files:
//!
//! ```
//! use safestash::Store;
//! use safestash_testkit::conformance::{self, Damage, Opened, Subject};
//!
//! let subject = Subject::new("directory", || {
//!     let dir = tempfile::tempdir().unwrap();
//!     let root = dir.path().join("stashes");
//!     let store = Store::open(&root).unwrap();
//!     let damage = move |d: Damage<'_>| {
//!         let path = |k: &safestash::StashKey| root.join(k.as_str());
//!         match d {
//!             Damage::Rewrite(k, f) => {
//!                 let mut bytes = std::fs::read(path(k)).unwrap();
//!                 f(&mut bytes);
//!                 std::fs::write(path(k), bytes).unwrap();
//!             }
//!             Damage::Copy(a, b) => drop(std::fs::copy(path(a), path(b)).unwrap()),
//!         }
//!     };
//!     Opened::new(store).with_damage(damage).keeping(dir)
//! });
//! let report = conformance::run(&subject);
//! assert!(report.passed.contains(&"flipped_byte_is_corrupt"), "{report}");
//! ```
//!
//! The fault suite, on the simulated remote behind the kit's wrapper, and
//! a broken protocol caught by it:
//!
//! ```
//! use std::sync::Arc;
//! use safestash_testkit::conformance::{self, FaultSubject, Rig};
//! use safestash_testkit::sim_remote::{Config, Protocol, SimRemote};
//!
//! let wrapped = FaultSubject::new("wrapped sim", || Rig::wrapping(Arc::new(SimRemote::new(1))));
//! conformance::run_faults(&wrapped);
//!
//! let broken = FaultSubject::new("broken sim", || {
//!     Rig::sim(SimRemote::with(Config { protocol: Protocol::DeleteAfterAmbiguous, ..Config::default() }))
//! });
//! let failure = conformance::check_faults(&broken).unwrap_err();
//! assert_eq!(failure.check, "a_lost_reply_on_a_save_leaves_the_new_stash");
//! assert!(failure.message.contains("loads as None"), "{failure}");
//! ```

use std::any::Any;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use safestash::backend::Backend;
use safestash::{StashKey, Store};

use crate::faulty::Faulty;
use crate::sim_remote::{Fate, SimRemote};

mod behaviour;
mod faults;

/// Damage done where a stash's bytes live (the file, the row, the object),
/// by the subject's own means.
///
/// # Examples
///
/// See the [module documentation](self).
pub enum Damage<'a> {
    /// Change the stored bytes of a key with this function.
    Rewrite(&'a StashKey, &'a dyn Fn(&mut Vec<u8>)),
    /// Copy one key's stored bytes to another key's place.
    Copy(&'a StashKey, &'a StashKey),
}

/// What damages a stash where it lives.
type DamageFn = dyn Fn(Damage<'_>);
/// What arms the fates of the next change requests.
type ArmFn = dyn Fn(&[Fate]);
/// A named check.
type Check<T> = (&'static str, fn(&T) -> Checked);

/// A fresh, empty store of the subject, with what the checks need.
///
/// # Examples
///
/// See the [module documentation](self).
pub struct Opened {
    /// The store.
    pub store: Store,
    damage: Option<Box<DamageFn>>,
    keep: Vec<Box<dyn Any>>,
}

impl Opened {
    /// A store with no damage callback (the damage checks are skipped).
    ///
    /// # Examples
    ///
    /// See the [module documentation](self).
    pub fn new(store: Store) -> Opened {
        Opened { store, damage: None, keep: Vec::new() }
    }

    /// With the callback that damages what the store keeps.
    ///
    /// # Examples
    ///
    /// See the [module documentation](self).
    pub fn with_damage(mut self, damage: impl Fn(Damage<'_>) + 'static) -> Opened {
        self.damage = Some(Box::new(damage));
        self
    }

    /// Keeps `value` (a temporary directory, a server handle) alive as long
    /// as the store.
    ///
    /// # Examples
    ///
    /// See the [module documentation](self).
    pub fn keeping(mut self, value: impl Any) -> Opened {
        self.keep.push(Box::new(value));
        self
    }
}

/// What the behaviour suite runs on.
///
/// # Examples
///
/// See the [module documentation](self).
pub struct Subject {
    /// Its name in reports and failures.
    pub name: String,
    /// Opens a fresh, empty store (each check calls it once).
    pub open: Box<dyn Fn() -> Opened>,
}

impl Subject {
    /// A subject named `name`, opened by `open`.
    ///
    /// # Examples
    ///
    /// See the [module documentation](self).
    pub fn new(name: impl Into<String>, open: impl Fn() -> Opened + 'static) -> Subject {
        Subject { name: name.into(), open: Box::new(open) }
    }
}

/// A store whose backend's change requests can be made to meet a [`Fate`].
///
/// # Examples
///
/// See the [module documentation](self).
pub struct Rig {
    /// The store over the faulty backend.
    pub store: Store,
    arm: Box<ArmFn>,
    settle: Box<dyn Fn()>,
    pause: Option<Box<dyn Fn()>>,
    keep: Vec<Box<dyn Any>>,
}

impl Rig {
    /// A rig from the caller's own hooks: `arm` makes the next change
    /// requests meet the given fates in order, `settle` makes every late
    /// request arrive.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use safestash_testkit::{conformance::Rig, faulty::Faulty, sim_remote::SimRemote};
    /// let faulty = Faulty::new(Arc::new(SimRemote::new(0)));
    /// let (a, s) = (faulty.clone(), faulty.clone());
    /// let rig = Rig::new(
    ///     safestash::Store::with_backend(Arc::new(faulty)),
    ///     move |fates| a.arm(fates.iter().copied()),
    ///     move || s.settle(),
    /// );
    /// # drop(rig);
    /// ```
    pub fn new(store: Store, arm: impl Fn(&[Fate]) + 'static, settle: impl Fn() + 'static) -> Rig {
        Rig { store, arm: Box::new(arm), settle: Box::new(settle), pause: None, keep: Vec::new() }
    }

    /// `inner` behind the kit's [`Faulty`] wrapper.
    ///
    /// # Examples
    ///
    /// See the [module documentation](self).
    pub fn wrapping(inner: Arc<dyn Backend>) -> Rig {
        let faulty = Faulty::new(inner);
        let (a, s) = (faulty.clone(), faulty.clone());
        Rig::new(
            Store::with_backend(Arc::new(faulty)),
            move |fates| a.arm(fates.iter().copied()),
            move || s.settle(),
        )
    }

    /// The simulated remote, its fates armed through its own protocol (so a
    /// broken [`Protocol`](crate::sim_remote::Protocol) is what meets them),
    /// with a pause hook that expires every lease.
    ///
    /// # Examples
    ///
    /// See the [module documentation](self).
    pub fn sim(sim: SimRemote) -> Rig {
        let (a, s, p) = (sim.clone(), sim.clone(), sim.clone());
        Rig::new(
            Store::with_backend(Arc::new(sim)),
            move |fates| a.arm(fates.iter().copied()),
            move || s.settle(),
        )
        .with_pause(move || p.expire_leases())
    }

    /// With a hook that makes every current lock holder lose its lock
    /// while it still holds the handle: paused past its lease, or its
    /// session killed (the paused-holder check runs only with one).
    ///
    /// # Examples
    ///
    /// See [`Rig::sim`].
    pub fn with_pause(mut self, pause: impl Fn() + 'static) -> Rig {
        self.pause = Some(Box::new(pause));
        self
    }

    /// Keeps `value` alive as long as the store.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use safestash_testkit::{conformance::Rig, sim_remote::SimRemote};
    /// let rig = Rig::wrapping(Arc::new(SimRemote::new(0))).keeping(42u8);
    /// # drop(rig);
    /// ```
    pub fn keeping(mut self, value: impl Any) -> Rig {
        self.keep.push(Box::new(value));
        self
    }

    fn arm(&self, fates: &[Fate]) {
        (self.arm)(fates)
    }

    fn settle(&self) {
        (self.settle)()
    }
}

/// What the fault suite runs on.
///
/// # Examples
///
/// See the [module documentation](self).
pub struct FaultSubject {
    /// Its name in reports and failures.
    pub name: String,
    /// Opens a fresh, empty rig (each check calls it once).
    pub open: Box<dyn Fn() -> Rig>,
}

impl FaultSubject {
    /// A subject named `name`, opened by `open`.
    ///
    /// # Examples
    ///
    /// See the [module documentation](self).
    pub fn new(name: impl Into<String>, open: impl Fn() -> Rig + 'static) -> FaultSubject {
        FaultSubject { name: name.into(), open: Box::new(open) }
    }
}

/// What a suite checked on one subject.
///
/// # Examples
///
/// See the [module documentation](self).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// The subject's name.
    pub subject: String,
    /// The checks that passed.
    pub passed: Vec<&'static str>,
    /// The checks skipped, each with why.
    pub skipped: Vec<(&'static str, String)>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} checks passed", self.subject, self.passed.len())?;
        for (check, why) in &self.skipped {
            write!(f, "; {check} skipped ({why})")?;
        }
        Ok(())
    }
}

/// The first check that failed.
///
/// # Examples
///
/// See the [module documentation](self).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Failure {
    /// The subject's name.
    pub subject: String,
    /// The check's name.
    pub check: &'static str,
    /// What went wrong.
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conformance check `{}` failed on {}: {}", self.check, self.subject, self.message)
    }
}

impl std::error::Error for Failure {}

/// Why a check did not pass.
enum Stop {
    Skip(String),
    Fail(String),
}

impl From<String> for Stop {
    fn from(s: String) -> Stop {
        Stop::Fail(s)
    }
}

type Checked = std::result::Result<(), Stop>;

/// `?` on a store result inside a check, naming what was being done.
trait Ctx<T> {
    fn ctx(self, what: &str) -> std::result::Result<T, Stop>;
}

impl<T, E: fmt::Display> Ctx<T> for std::result::Result<T, E> {
    fn ctx(self, what: &str) -> std::result::Result<T, Stop> {
        self.map_err(|e| Stop::Fail(format!("{what}: {e}")))
    }
}

macro_rules! ensure_ {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(Stop::Fail(format!($($msg)+)));
        }
    };
}

use ensure_ as ensure;

fn key(s: &str) -> StashKey {
    StashKey::new(s).expect("a valid key")
}

fn drive<T>(name: &str, checks: &[Check<T>], open: &dyn Fn() -> T) -> Result<Report, Failure> {
    let mut report = Report { subject: name.to_owned(), passed: Vec::new(), skipped: Vec::new() };
    for (check, f) in checks {
        let fail = |message: String| Failure { subject: name.to_owned(), check, message };
        match catch_unwind(AssertUnwindSafe(|| f(&open()))) {
            Ok(Ok(())) => report.passed.push(check),
            Ok(Err(Stop::Skip(why))) => report.skipped.push((check, why)),
            Ok(Err(Stop::Fail(message))) => return Err(fail(message)),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "panicked".to_owned());
                return Err(fail(format!("panicked: {message}")));
            }
        }
    }
    Ok(report)
}

/// Runs the behaviour suite on `subject`.
///
/// # Panics
///
/// With the [`Failure`] of the first check that fails.
///
/// # Examples
///
/// See the [module documentation](self).
pub fn run(subject: &Subject) -> Report {
    check(subject).unwrap_or_else(|f| panic!("{f}"))
}

/// Runs the behaviour suite on `subject`.
///
/// # Errors
///
/// The first check that fails.
///
/// # Examples
///
/// See the [module documentation](self).
pub fn check(subject: &Subject) -> Result<Report, Failure> {
    drive(&subject.name, &behaviour::CHECKS, &*subject.open)
}

/// Runs the fault suite on `subject`.
///
/// # Panics
///
/// With the [`Failure`] of the first check that fails.
///
/// # Examples
///
/// See the [module documentation](self).
pub fn run_faults(subject: &FaultSubject) -> Report {
    check_faults(subject).unwrap_or_else(|f| panic!("{f}"))
}

/// Runs the fault suite on `subject`.
///
/// # Errors
///
/// The first check that fails.
///
/// # Examples
///
/// See the [module documentation](self).
pub fn check_faults(subject: &FaultSubject) -> Result<Report, Failure> {
    drive(&subject.name, &faults::CHECKS, &*subject.open)
}
