//! A model check of the store: any sequence of operations, power cuts and
//! I/O errors on a [`SimFs`], against a `BTreeMap` of what each key may
//! load as. Driven by the `store_ops` fuzz target (with the `arbitrary`
//! feature, [`ModelOp`] derives `arbitrary::Arbitrary`) and by a property
//! test.
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

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use safestash::sim::SimFs;
use safestash::{Error, StashKey, Store, temp_file_key};

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
    fs: SimFs,
    store: Store<SimFs>,
    model: BTreeMap<usize, BTreeSet<Outcome>>,
    fault: Option<Fault>,
    stats: Stats,
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
        match self.store.load::<String>(key) {
            Ok(None) => Ok(Outcome::Missing),
            Ok(Some(s)) => Ok(Outcome::Value(s.into_value())),
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
        op: impl FnOnce(&Store<SimFs>) -> Result<(), Error>,
    ) -> Result<(), String> {
        let base = self.fs.calls();
        let fault = self.fault.take();
        match fault {
            Some(Fault::Crash { after, .. }) => self.fs.crash_after(base + u64::from(after)),
            Some(Fault::Fail { at, persistent }) => {
                self.fs.fail_at(base + u64::from(at.max(1)), persistent);
            }
            None => {}
        }
        let result = op(&self.store);
        let crashed = self.fs.is_crashed();
        self.fs.clear_faults();
        match (&result, fault) {
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
            self.fs = self.fs.crash_image(u64::from(image));
            self.store = Store::with_fs(DIR, self.fs.clone()).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn step(&mut self, op: &ModelOp) -> Result<(), String> {
        self.stats.ops += 1;
        match *op {
            ModelOp::Save { key: k, value, len } => {
                let (i, key) = key(k);
                let v = value_of(value, len);
                self.mutate(vec![(i, Outcome::Value(v.clone()))], |s| s.save(&key, &v).map(drop))
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
                self.mutate(targets, |s| {
                    let mut batch = s.batch();
                    for (_, key, v) in &chosen {
                        batch.add(key, v, &safestash::SaveOptions::new())?;
                    }
                    batch.commit().map(drop).map_err(Error::from)
                })
            }
            ModelOp::Clear { key: k } => {
                let (i, key) = key(k);
                self.mutate(vec![(i, Outcome::Missing)], |s| s.clear(&key).map(drop))
            }
            ModelOp::Quarantine { key: k } => {
                let (i, key) = key(k);
                self.mutate(vec![(i, Outcome::Missing)], |s| s.quarantine(&key).map(drop))
            }
            ModelOp::Cleanup => {
                let faulty = self.fault.is_some();
                self.mutate(Vec::new(), |s| s.cleanup().map(drop))?;
                let temps = self.fs.list(DIR).into_iter().filter(|n| temp_file_key(n).is_some());
                match temps.collect::<Vec<_>>().first() {
                    Some(tmp) if !faulty => Err(format!("cleanup left {tmp}")),
                    _ => Ok(()),
                }
            }
            ModelOp::Load { key: k } => {
                let (i, key) = key(k);
                match self.fault.take() {
                    Some(Fault::Fail { at, persistent }) => {
                        let base = self.fs.calls();
                        self.fs.fail_at(base + u64::from(at.max(1)), persistent);
                        let got = self.load(&key);
                        self.fs.clear_faults();
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
                    let path = self.store.path_of(&key);
                    self.fs
                        .write_durable(path, b"SAFESTASH 1\ndamaged")
                        .map_err(|e| e.to_string())?;
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
    let fs = SimFs::new();
    let store = Store::with_fs(DIR, fs.clone()).map_err(|e| e.to_string())?;
    let mut run = Run { fs, store, model: BTreeMap::new(), fault: None, stats: Stats::default() };
    for (n, op) in ops.iter().enumerate() {
        run.step(op).map_err(|e| format!("step {n} ({op:?}): {e}"))?;
    }
    run.fault = None;
    for k in 0..KEYS.len() {
        let (i, key) = key(k as u8);
        run.check_load(i, &key).map_err(|e| format!("at the end: {e}"))?;
    }
    run.step(&ModelOp::Cleanup).map_err(|e| format!("at the end: {e}"))?;
    Ok(run.stats)
}
