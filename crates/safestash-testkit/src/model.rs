//! A model check of the store: any sequence of operations, power cuts and
//! I/O errors on a [`SimFs`], or operations, client restarts and ambiguous
//! outcomes on the [simulated remote](crate::sim_remote), against a
//! `BTreeMap` of what each key may load as. Driven by the `store_ops` fuzz
//! target (with the `arbitrary` feature, [`ModelOp`] derives
//! `arbitrary::Arbitrary`) and by a property test.
//!
//! The model keeps, for every key, the **set** of outcomes `load` may give.
//! A successful operation makes it exact (a save that returned `Ok` must load
//! as its value, even after any later power cut); a failed or cut-off one
//! adds its outcome to the set (the old state or the new one). `load` must
//! always give a member of the set; after a power cut the run goes on from
//! one of the crash images.
//!
//! # Examples
//!
//! ```
//! use safestash_testkit::model::{run, ModelOp};
//!
//! let ops = [
//!     ModelOp::Save { key: 0, value: 7, len: 10 },
//!     ModelOp::Crash { after: 3, image: 5 },
//!     ModelOp::Save { key: 0, value: 8, len: 2000 },
//!     ModelOp::Load { key: 0 },
//!     ModelOp::Clear { key: 0 },
//!     ModelOp::Load { key: 0 },
//! ];
//! let stats = run(&ops).expect("no violation");
//! assert_eq!(stats.crashes, 1);
//! ```
//!
//! On the simulated remote a [`ModelOp::Fail`] arms an ambiguous outcome
//! for the next operation's first change request (`at % 4`: a lost reply,
//! an error before the write, a late landing, a retry that meets its own
//! write; `persistent`: every change request of the operation), and a
//! [`ModelOp::Crash`] cuts the client off after `after % 4` change requests
//! (the one in flight lands when `image` is odd) and restarts it; late
//! requests stay in flight across it. The same oracle applies, so a
//! protocol that acts on an ambiguous answer is caught:
//!
//! ```
//! use safestash_testkit::model::{run_on, ModelOp, Target};
//! use safestash_testkit::sim_remote::{Config, Protocol};
//!
//! let ops = [
//!     ModelOp::Save { key: 0, value: 1, len: 10 },
//!     ModelOp::Fail { at: 1, persistent: false }, // an error before the write
//!     ModelOp::Save { key: 0, value: 2, len: 10 },
//!     ModelOp::Load { key: 0 },
//! ];
//! assert!(run_on(Target::SimRemote(Config::default()), &ops).is_ok());
//! let broken = Config { protocol: Protocol::DeleteAfterAmbiguous, ..Config::default() };
//! let violation = run_on(Target::SimRemote(broken), &ops).unwrap_err();
//! assert!(violation.contains("gave no stash"), "{violation}");
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use std::sync::Arc;

use safestash::fs::Fs;
use safestash::sim::SimFs;
use safestash::{Error, SaveOptions, StashInfo, StashKey, Store, temp_file_key};

use crate::sim_remote::{Config, Fate, SimRemote};

/// Where a model run keeps its stashes.
///
/// # Examples
///
/// See the [module documentation](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A directory store on a [`SimFs`], at [`DIR`].
    Directory,
    /// A store over a [`SimRemote`] configured so: with chances of its own
    /// for ambiguous outcomes, any operation may fail.
    SimRemote(Config),
}

/// The store verbs a model run uses, on either kind of store.
trait Verbs {
    fn save(&self, key: &StashKey, value: &str) -> Result<(), Error>;
    fn load(&self, key: &StashKey) -> Result<Option<String>, Error>;
    fn clear(&self, key: &StashKey) -> Result<(), Error>;
    fn quarantine(&self, key: &StashKey) -> Result<(), Error>;
    fn batch(&self, items: &[(usize, StashKey, String)]) -> Result<(), Error>;
    fn cleanup(&self) -> Result<(), Error>;
    fn list(&self) -> Result<Vec<StashInfo>, Error>;
}

impl<F: Fs> Verbs for Store<F> {
    fn save(&self, key: &StashKey, value: &str) -> Result<(), Error> {
        Store::save(self, key, value).map(drop)
    }
    fn load(&self, key: &StashKey) -> Result<Option<String>, Error> {
        Ok(Store::load::<String>(self, key)?.map(safestash::Stashed::into_value))
    }
    fn clear(&self, key: &StashKey) -> Result<(), Error> {
        Store::clear(self, key).map(drop)
    }
    fn quarantine(&self, key: &StashKey) -> Result<(), Error> {
        Store::quarantine(self, key).map(drop)
    }
    fn batch(&self, items: &[(usize, StashKey, String)]) -> Result<(), Error> {
        let mut batch = Store::batch(self);
        for (_, key, v) in items {
            batch.add(key, v, &SaveOptions::new())?;
        }
        batch.commit().map(drop).map_err(Error::from)
    }
    fn cleanup(&self) -> Result<(), Error> {
        Store::cleanup(self).map(drop)
    }
    fn list(&self) -> Result<Vec<StashInfo>, Error> {
        Store::list(self)
    }
}

/// What the store of a run lives on.
enum Place {
    Dir(SimFs),
    Remote(SimRemote, bool),
}

/// The store's directory in a model run.
///
/// # Examples
///
/// ```
/// assert_eq!(safestash_testkit::model::DIR, "/model/stashes");
/// ```
pub const DIR: &str = "/model/stashes";
const KEYS: [&str; 3] = ["alpha", "b.c", "d-3"];

/// One step of a model run. Keys are taken modulo 3.
///
/// With the `arbitrary` feature it derives `arbitrary::Arbitrary`, variants
/// and fields in this order: a fuzz input's bytes keep their meaning only as
/// long as the order does (the committed `store_ops` seeds depend on it).
///
/// # Examples
///
/// See the [module documentation](self).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum ModelOp {
    /// Save a string of about `len` bytes derived from `value`.
    Save {
        /// Which key.
        key: u8,
        /// Makes the string distinct.
        value: u16,
        /// Its length in bytes (at most 4096 are used).
        len: u16,
    },
    /// Load and compare with the model.
    Load {
        /// Which key.
        key: u8,
    },
    /// Clear.
    Clear {
        /// Which key.
        key: u8,
    },
    /// Quarantine.
    Quarantine {
        /// Which key.
        key: u8,
    },
    /// Remove stale temp files; then none may be left.
    Cleanup,
    /// List, and compare the keys with the model.
    List,
    /// Replace a stash with garbage, as a bad disk would (only when the
    /// key's state is certain).
    Damage {
        /// Which key.
        key: u8,
    },
    /// Cut the power during the next operation, after its call number
    /// `after`, and go on from the crash image `image` selects (see
    /// [`SimFs::crash_image`]).
    Crash {
        /// The last call that happens.
        after: u8,
        /// Which crash image to go on from.
        image: u16,
    },
    /// Make the next operation's call number `at` fail (from 1), once or from
    /// then on.
    Fail {
        /// The failing call.
        at: u8,
        /// Whether every call after it fails too.
        persistent: bool,
    },
    /// Save the keys whose bits are set in `keys` (bit `i` for key `i`) in
    /// one [`Store::batch`], each a string derived from `value` and its key.
    /// Added last, so older fuzz inputs keep their meaning.
    Batch {
        /// Which keys (a bit set; no bit set is an empty batch).
        keys: u8,
        /// Makes the strings distinct.
        value: u16,
        /// Their length in bytes (at most 4096 are used).
        len: u16,
    },
}

/// What `load` gives, in the model's terms.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Missing,
    Value(String),
    Corrupt,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Missing => f.write_str("no stash"),
            Outcome::Value(v) => write!(f, "{:?}", &v[..v.len().min(16)]),
            Outcome::Corrupt => f.write_str("Corrupt"),
        }
    }
}

/// What a model run did.
///
/// # Examples
///
/// See the [module documentation](self).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Operations run.
    pub ops: u64,
    /// Power cuts.
    pub crashes: u64,
    /// Operations that failed under an injected error or a power cut.
    pub failed: u64,
    /// Loads compared with the model.
    pub loads: u64,
}

#[derive(Clone, Copy)]
enum Fault {
    Crash { after: u8, image: u16 },
    Fail { at: u8, persistent: bool },
}

struct Run {
    place: Place,
    store: Box<dyn Verbs>,
    model: BTreeMap<usize, BTreeSet<Outcome>>,
    fault: Option<Fault>,
    stats: Stats,
    /// The last operation's result, between its run and its bookkeeping.
    result: Option<Result<(), Error>>,
}

/// The ambiguous outcome a [`ModelOp::Fail`] arms on the simulated remote.
fn remote_fate(at: u8) -> Fate {
    match at % 4 {
        0 => Fate::LostReply,
        1 => Fate::ErrorBefore,
        2 => Fate::Late { after: 1 + (at / 4) % 3 },
        _ => Fate::RetryMeetsOwn,
    }
}

fn value_of(value: u16, len: u16) -> String {
    let unit = format!("v{value:05}.");
    let len = usize::from(len.min(4096)).max(1);
    unit.repeat(len.div_ceil(unit.len()))[..len].to_owned()
}

fn key(i: u8) -> (usize, StashKey) {
    let i = usize::from(i) % KEYS.len();
    (i, StashKey::new(KEYS[i]).expect("valid key"))
}

impl Run {
    fn possible(&mut self, key: usize) -> &mut BTreeSet<Outcome> {
        self.model.entry(key).or_insert_with(|| [Outcome::Missing].into())
    }

    fn load(&self, key: &StashKey) -> Result<Outcome, Error> {
        match self.store.load(key) {
            Ok(None) => Ok(Outcome::Missing),
            Ok(Some(s)) => Ok(Outcome::Value(s)),
            Err(Error::Corrupt { .. }) => Ok(Outcome::Corrupt),
            Err(e) => Err(e),
        }
    }

    fn check_load(&mut self, i: usize, key: &StashKey) -> Result<(), String> {
        self.stats.loads += 1;
        let got = self.load(key).map_err(|e| format!("load of `{key}` failed: {e}"))?;
        let possible = self.possible(i);
        if !possible.contains(&got) {
            let want: Vec<String> = possible.iter().map(Outcome::to_string).collect();
            return Err(format!("load of `{key}` gave {got}, model allows {}", want.join(" or ")));
        }
        Ok(())
    }

    /// Runs a state-changing operation under the pending fault, if any, and
    /// updates the model with `effect` (the outcome it leads to, if any).
    fn mutate(
        &mut self,
        targets: Vec<(usize, Outcome)>,
        op: impl FnOnce(&dyn Verbs) -> Result<(), Error>,
    ) -> Result<(), String> {
        let fault = self.fault.take();
        let (crashed, random) = match &self.place {
            Place::Dir(fs) => {
                let base = fs.calls();
                match fault {
                    Some(Fault::Crash { after, .. }) => fs.crash_after(base + u64::from(after)),
                    Some(Fault::Fail { at, persistent }) => {
                        fs.fail_at(base + u64::from(at.max(1)), persistent);
                    }
                    None => {}
                }
                let result = op(&*self.store);
                let crashed = fs.is_crashed();
                fs.clear_faults();
                self.result = Some(result);
                (crashed, false)
            }
            Place::Remote(sim, random) => {
                match fault {
                    Some(Fault::Crash { after, image }) => {
                        let boundary =
                            if image % 2 == 1 { Fate::LostReply } else { Fate::ErrorBefore };
                        let clean = std::iter::repeat_n(Fate::Clean, usize::from(after % 4));
                        sim.arm(clean.chain([boundary]).chain([Fate::ErrorBefore; 8]));
                    }
                    Some(Fault::Fail { at, persistent }) => {
                        let fate = remote_fate(at);
                        sim.arm(std::iter::repeat_n(fate, if persistent { 8 } else { 1 }));
                    }
                    None => {}
                }
                let result = op(&*self.store);
                sim.disarm();
                self.result = Some(result);
                (matches!(fault, Some(Fault::Crash { .. })), *random)
            }
        };
        let result = self.result.take().expect("set above");
        match (&result, fault) {
            (Err(_), None) if random => {
                self.stats.failed += 1;
                for (i, effect) in targets {
                    self.possible(i).insert(effect);
                }
            }
            (Err(e), None) => return Err(format!("operation failed with no fault injected: {e}")),
            (Ok(()), _) if !crashed => {
                for (i, effect) in targets {
                    *self.possible(i) = [effect].into();
                }
            }
            _ => {
                self.stats.failed += 1;
                for (i, effect) in targets {
                    self.possible(i).insert(effect);
                }
            }
        }
        if let Some(Fault::Crash { image, .. }) = fault {
            self.stats.crashes += 1;
            match &mut self.place {
                Place::Dir(fs) => {
                    *fs = fs.crash_image(u64::from(image));
                    let store = Store::with_fs(DIR, fs.clone()).map_err(|e| e.to_string())?;
                    self.store = Box::new(store);
                }
                // The client restarts; the service, and what is in flight
                // to it, stay.
                Place::Remote(sim, _) => {
                    self.store = Box::new(Store::with_backend(Arc::new(sim.clone())));
                }
            }
        }
        Ok(())
    }

    fn step(&mut self, op: &ModelOp) -> Result<(), String> {
        self.stats.ops += 1;
        match *op {
            ModelOp::Save { key: k, value, len } => {
                let (i, key) = key(k);
                let v = value_of(value, len);
                self.mutate(vec![(i, Outcome::Value(v.clone()))], |s| s.save(&key, &v))
            }
            ModelOp::Batch { keys, value, len } => {
                let chosen: Vec<(usize, StashKey, String)> = (0..KEYS.len())
                    .filter(|i| keys & (1 << i) != 0)
                    .map(|i| {
                        let (i, key) = key(i as u8);
                        (i, key, value_of(value.wrapping_add(i as u16), len))
                    })
                    .collect();
                let targets =
                    chosen.iter().map(|(i, _, v)| (*i, Outcome::Value(v.clone()))).collect();
                self.mutate(targets, |s| s.batch(&chosen))
            }
            ModelOp::Clear { key: k } => {
                let (i, key) = key(k);
                self.mutate(vec![(i, Outcome::Missing)], |s| s.clear(&key))
            }
            ModelOp::Quarantine { key: k } => {
                let (i, key) = key(k);
                self.mutate(vec![(i, Outcome::Missing)], |s| s.quarantine(&key))
            }
            ModelOp::Cleanup => {
                let faulty = self.fault.is_some();
                self.mutate(Vec::new(), |s| s.cleanup())?;
                let Place::Dir(fs) = &self.place else { return Ok(()) };
                let temps = fs.list(DIR).into_iter().filter(|n| temp_file_key(n).is_some());
                match temps.collect::<Vec<_>>().first() {
                    Some(tmp) if !faulty => Err(format!("cleanup left {tmp}")),
                    _ => Ok(()),
                }
            }
            ModelOp::Load { key: k } => {
                let (i, key) = key(k);
                match (self.fault.take(), &self.place) {
                    (Some(Fault::Fail { at, persistent }), Place::Dir(fs)) => {
                        let base = fs.calls();
                        fs.fail_at(base + u64::from(at.max(1)), persistent);
                        let got = self.load(&key);
                        fs.clear_faults();
                        match got {
                            Ok(got) if !self.possible(i).contains(&got) => {
                                Err(format!("load of `{key}` under a fault gave {got}"))
                            }
                            _ => Ok(()),
                        }
                    }
                    _ => self.check_load(i, &key),
                }
            }
            ModelOp::List => {
                let listed = self.store.list().map_err(|e| format!("list failed: {e}"))?;
                let listed: BTreeSet<&str> = listed.iter().map(|info| info.key.as_str()).collect();
                for (i, name) in KEYS.iter().enumerate() {
                    let possible = self.possible(i);
                    let must = !possible.contains(&Outcome::Missing);
                    let may = possible.iter().any(|o| *o != Outcome::Missing);
                    if (must && !listed.contains(name)) || (!may && listed.contains(name)) {
                        return Err(format!(
                            "list shows {listed:?}, model has `{name}`: {possible:?}"
                        ));
                    }
                }
                Ok(())
            }
            ModelOp::Damage { key: k } => {
                let (i, key) = key(k);
                let possible = self.possible(i);
                if possible.len() == 1 && !possible.contains(&Outcome::Missing) {
                    let garbage = b"SAFESTASH 1\ndamaged";
                    match &self.place {
                        Place::Dir(fs) => {
                            let path = std::path::Path::new(DIR).join(key.as_str());
                            fs.write_durable(path, garbage).map_err(|e| e.to_string())?;
                        }
                        Place::Remote(sim, _) => sim.raw_put(key.as_str(), garbage.to_vec()),
                    }
                    *self.possible(i) = [Outcome::Corrupt].into();
                }
                Ok(())
            }
            ModelOp::Crash { after, image } => {
                self.fault = Some(Fault::Crash { after, image });
                Ok(())
            }
            ModelOp::Fail { at, persistent } => {
                self.fault = Some(Fault::Fail { at, persistent });
                Ok(())
            }
        }
    }
}

/// Runs `ops` from an empty filesystem, then loads every key and cleans up.
///
/// # Errors
///
/// A description of the first violation: a load outside the model, an
/// operation failing with no fault injected, or temp files left by cleanup.
///
/// # Examples
///
/// See the [module documentation](self).
pub fn run(ops: &[ModelOp]) -> Result<Stats, String> {
    run_on(Target::Directory, ops)
}

/// Runs `ops` on an empty store of `target`, then (once every late request
/// has arrived) loads every key and cleans up.
///
/// # Errors
///
/// As [`run`].
///
/// # Examples
///
/// See the [module documentation](self).
pub fn run_on(target: Target, ops: &[ModelOp]) -> Result<Stats, String> {
    let (place, store): (Place, Box<dyn Verbs>) = match target {
        Target::Directory => {
            let fs = SimFs::new();
            let store = Store::with_fs(DIR, fs.clone()).map_err(|e| e.to_string())?;
            (Place::Dir(fs), Box::new(store))
        }
        Target::SimRemote(config) => {
            let sim = SimRemote::with(config);
            let store = Store::with_backend(Arc::new(sim.clone()));
            let c = config.chances;
            let random = c.lost_reply + c.error_before + c.late + c.retry_meets_own > 0;
            (Place::Remote(sim, random), Box::new(store))
        }
    };
    let mut run = Run {
        place,
        store,
        model: BTreeMap::new(),
        fault: None,
        stats: Stats::default(),
        result: None,
    };
    for (n, op) in ops.iter().enumerate() {
        run.step(op).map_err(|e| format!("step {n} ({op:?}): {e}"))?;
    }
    run.fault = None;
    if let Place::Remote(sim, _) = &run.place {
        sim.settle();
    }
    for k in 0..KEYS.len() {
        let (i, key) = key(k as u8);
        run.check_load(i, &key).map_err(|e| format!("at the end: {e}"))?;
    }
    run.step(&ModelOp::Cleanup).map_err(|e| format!("at the end: {e}"))?;
    Ok(run.stats)
}
