//! A simulated remote backend: in memory, shared like a service, with
//! deterministic, seedable ambiguous outcomes.
//!
//! [`SimRemote`] implements [`Backend`] over a simulated service that keeps
//! envelopes by namespace and name, each with a version that every change
//! moves (a delete of nothing too: absence is versioned, so a request that
//! arrives late lands only on the state its sender saw). Each change request
//! (a put, a delete, a move aside) meets a [`Fate`]: armed in advance with
//! [`SimRemote::arm`], or drawn from a seeded generator with the
//! [`Chances`] of [`Config`]:
//!
//! - [`Fate::LostReply`]: the change happens, the caller gets an error;
//! - [`Fate::ErrorBefore`]: nothing happens, the caller gets an error;
//! - [`Fate::Late`]: the caller gets an error at once, and the request lands
//!   later (at the start of a later request, or at [`SimRemote::settle`]),
//!   if its key's version is still the one it was sent against;
//! - [`Fate::RetryMeetsOwn`]: the change happens, its reply is lost, and the
//!   client's retry meets the change it made.
//!
//! Conditional puts and deletes are checked atomically with the change, as
//! the trait requires. Locks are leases with fencing tokens:
//! [`SimRemote::expire_leases`] pauses every holder past its lease, so a
//! newer holder can take the key, and every later change through the old
//! holder's lock is refused.
//!
//! The client side of the protocol is a [`Protocol`]: the correct one
//! reports every ambiguous outcome as an error and never acts on it (a retry
//! that meets its own write is found out by reading back); the others are
//! deliberately broken, as negative controls for the model check and the
//! conformance suite.
//!
//! # Examples
//!
//! ```
//! use std::sync::Arc;
//! use safestash::{StashKey, Store};
//! use safestash_testkit::sim_remote::{Fate, SimRemote};
//!
//! let sim = SimRemote::new(7);
//! let store = Store::with_backend(Arc::new(sim.clone()));
//! let key = StashKey::new("k")?;
//! store.save(&key, &1)?;
//! // The next change lands, but its reply is lost: the save reports an
//! // error, and the stash it wrote is there.
//! sim.arm([Fate::LostReply]);
//! assert!(store.save(&key, &2).is_err());
//! assert_eq!(*store.load::<i32>(&key)?.unwrap().value(), 2);
//! // A request that arrives late lands after its error was reported.
//! sim.arm([Fate::Late { after: 3 }]);
//! assert!(store.save(&key, &3).is_err());
//! sim.settle();
//! assert_eq!(*store.load::<i32>(&key)?.unwrap().value(), 3);
//! assert_eq!(sim.stats().late_landed, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use safestash::backend::{Backend, Fetched, Held, Listed, Outcome, Precondition};
use safestash::{BackendOp, Digest, Error, Result, StashKey};

/// What happens to one change request.
///
/// # Examples
///
/// See the [module documentation](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// It lands and its reply arrives.
    Clean,
    /// It lands; its reply is lost (the caller sees an error).
    LostReply,
    /// It fails before reaching the service: nothing changes.
    ErrorBefore,
    /// The caller sees an error at once; the request lands at the start of
    /// the `after`-th request from now (at least the next one), if its key
    /// is still at the version it was sent against.
    Late {
        /// How many requests later it arrives.
        after: u8,
    },
    /// It lands, its reply is lost, and the client's retry meets it.
    RetryMeetsOwn,
}

/// The client side of the simulated protocol.
///
/// # Examples
///
/// See [`crate::model::Target`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// Reports every ambiguous outcome as an error and acts on none; finds
    /// out by reading back when a retry meets a write.
    #[default]
    Correct,
    /// Broken: after a change that failed or whose outcome is unknown, it
    /// "tidies up" by deleting the key, on the strength of that ambiguous
    /// answer.
    DeleteAfterAmbiguous,
    /// Broken: reports a change that never reached the service (or has not
    /// landed yet) as done.
    AckDropped,
    /// Broken: a lock holder's changes carry no fencing token, so a holder
    /// paused past its lease writes over a newer holder (the conformance
    /// suite's paused-holder check catches it; the model check takes no
    /// locks).
    Unfenced,
}

/// How often each ambiguous fate is drawn for a change request that has
/// none armed, in parts per thousand.
///
/// # Examples
///
/// ```
/// let c = safestash_testkit::sim_remote::Chances { lost_reply: 100, ..Default::default() };
/// assert_eq!(c.late, 0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Chances {
    /// [`Fate::LostReply`].
    pub lost_reply: u16,
    /// [`Fate::ErrorBefore`].
    pub error_before: u16,
    /// [`Fate::Late`] (arriving one to three requests later).
    pub late: u16,
    /// [`Fate::RetryMeetsOwn`].
    pub retry_meets_own: u16,
}

/// How a [`SimRemote`] behaves.
///
/// # Examples
///
/// ```
/// use safestash_testkit::sim_remote::{Chances, Config, SimRemote};
/// let sim = SimRemote::with(Config {
///     seed: 42,
///     chances: Chances { lost_reply: 50, late: 50, ..Chances::default() },
///     ..Config::default()
/// });
/// assert_eq!(sim.stats().requests, 0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// The seed of the fate generator.
    pub seed: u64,
    /// How often each fate is drawn.
    pub chances: Chances,
    /// The client protocol.
    pub protocol: Protocol,
    /// How long a lock or a change waits for another holder's lease.
    pub lock_timeout: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            seed: 0,
            chances: Chances::default(),
            protocol: Protocol::Correct,
            lock_timeout: Duration::from_secs(5),
        }
    }
}

/// What the simulated service has seen.
///
/// # Examples
///
/// See the [module documentation](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SimStats {
    /// Requests of every kind.
    pub requests: u64,
    /// Changes that landed with their reply lost.
    pub lost_replies: u64,
    /// Changes that failed before reaching the service.
    pub errors_before: u64,
    /// Changes sent to arrive late.
    pub late_sent: u64,
    /// Late changes that landed.
    pub late_landed: u64,
    /// Late changes refused on arrival (their key had moved on).
    pub late_refused: u64,
    /// Retries that met their own write.
    pub retries_met_own: u64,
    /// Changes refused by fencing (a holder past its lease).
    pub fenced: u64,
}

#[derive(Debug, Clone, Default)]
struct Obj {
    /// `None`: absent (a tombstone that keeps the version).
    bytes: Option<Vec<u8>>,
    digest: Option<Digest>,
    version: u64,
}

#[derive(Debug, Clone)]
enum Change {
    Put(Vec<u8>, Digest),
    Delete,
    Move(String),
}

#[derive(Debug)]
struct Pending {
    due: u64,
    ns: String,
    name: String,
    version: u64,
    fence: Option<u64>,
    change: Change,
}

#[derive(Debug, Clone, Copy)]
struct Lease {
    token: u64,
    expired: bool,
}

#[derive(Debug)]
struct State {
    objects: BTreeMap<(String, String), Obj>,
    next_version: u64,
    tick: u64,
    rng: u64,
    armed: VecDeque<Fate>,
    pending: Vec<Pending>,
    leases: BTreeMap<(String, String), Lease>,
    next_token: u64,
    stats: SimStats,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    freed: Condvar,
    config: Config,
}

/// The simulated remote backend (a view of one namespace; clones share the
/// service).
///
/// # Examples
///
/// See the [module documentation](self).
#[derive(Clone)]
pub struct SimRemote {
    shared: Arc<Shared>,
    ns: String,
    location: String,
    /// Set on a lock holder's view: the key and the lease token its changes
    /// to that key carry.
    fence: Option<(String, u64)>,
}

impl fmt::Debug for SimRemote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimRemote")
            .field("location", &self.location)
            .field("fence", &self.fence)
            .finish_non_exhaustive()
    }
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl State {
    fn obj(&self, ns: &str, name: &str) -> Obj {
        self.objects.get(&(ns.to_owned(), name.to_owned())).cloned().unwrap_or_default()
    }

    fn set(&mut self, ns: &str, name: &str, bytes: Option<Vec<u8>>, digest: Option<Digest>) {
        self.next_version += 1;
        let version = self.next_version;
        self.objects.insert((ns.to_owned(), name.to_owned()), Obj { bytes, digest, version });
    }

    fn fenced_out(&self, ns: &str, name: &str, fence: Option<u64>) -> bool {
        match fence {
            None => false,
            Some(token) => !matches!(
                self.leases.get(&(ns.to_owned(), name.to_owned())),
                Some(l) if l.token == token && !l.expired
            ),
        }
    }

    fn apply(&mut self, ns: &str, name: &str, change: &Change) -> Result<(), String> {
        match change {
            Change::Put(bytes, digest) => self.set(ns, name, Some(bytes.clone()), Some(*digest)),
            Change::Delete => self.set(ns, name, None, None),
            Change::Move(aside) => {
                let from = self.obj(ns, name);
                if from.bytes.is_some() && self.obj(ns, aside).bytes.is_some() {
                    return Err(format!("something is already at `{aside}`"));
                }
                self.set(ns, name, None, None);
                if from.bytes.is_some() {
                    self.set(ns, aside, from.bytes, from.digest);
                }
            }
        }
        Ok(())
    }

    /// Lands the late requests that are due (all of them with `all`).
    fn land(&mut self, all: bool) {
        let tick = self.tick;
        let (due, waiting): (Vec<Pending>, Vec<Pending>) =
            std::mem::take(&mut self.pending).into_iter().partition(|p| all || p.due <= tick);
        self.pending = waiting;
        for p in due {
            let current = self.obj(&p.ns, &p.name);
            if current.version != p.version || self.fenced_out(&p.ns, &p.name, p.fence) {
                self.stats.late_refused += 1;
            } else if self.apply(&p.ns, &p.name, &p.change).is_ok() {
                self.stats.late_landed += 1;
            } else {
                self.stats.late_refused += 1;
            }
        }
    }

    fn fate(&mut self, chances: &Chances) -> Fate {
        if let Some(f) = self.armed.pop_front() {
            return f;
        }
        let total = u64::from(chances.lost_reply)
            + u64::from(chances.error_before)
            + u64::from(chances.late)
            + u64::from(chances.retry_meets_own);
        if total == 0 {
            return Fate::Clean;
        }
        let mut draw = splitmix(&mut self.rng) % 1000;
        for (chance, fate) in [
            (chances.lost_reply, Fate::LostReply),
            (chances.error_before, Fate::ErrorBefore),
            (chances.late, Fate::Late { after: 0 }),
            (chances.retry_meets_own, Fate::RetryMeetsOwn),
        ] {
            let chance = u64::from(chance);
            if draw < chance {
                return match fate {
                    Fate::Late { .. } => {
                        Fate::Late { after: 1 + (splitmix(&mut self.rng) % 3) as u8 }
                    }
                    f => f,
                };
            }
            draw -= chance;
        }
        Fate::Clean
    }
}

fn ambiguous(op: BackendOp, target: String, what: &str) -> Error {
    Error::Backend { op, target, source: format!("simulated: {what}").into() }
}

impl SimRemote {
    /// A simulated remote with the correct protocol and no random faults
    /// (faults only when [armed](SimRemote::arm)), its generator seeded
    /// with `seed`.
    ///
    /// # Examples
    ///
    /// See the [module documentation](self).
    pub fn new(seed: u64) -> SimRemote {
        SimRemote::with(Config { seed, ..Config::default() })
    }

    /// A simulated remote configured by `config`.
    ///
    /// # Examples
    ///
    /// See [`Config`].
    pub fn with(config: Config) -> SimRemote {
        let state = State {
            objects: BTreeMap::new(),
            next_version: 0,
            tick: 0,
            rng: config.seed,
            armed: VecDeque::new(),
            pending: Vec::new(),
            leases: BTreeMap::new(),
            next_token: 0,
            stats: SimStats::default(),
        };
        SimRemote {
            shared: Arc::new(Shared { state: Mutex::new(state), freed: Condvar::new(), config }),
            ns: String::new(),
            location: "sim://remote".to_owned(),
            fence: None,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Arms the fates of the next change requests, in order (before any
    /// drawn at random).
    ///
    /// # Examples
    ///
    /// See the [module documentation](self).
    pub fn arm(&self, fates: impl IntoIterator<Item = Fate>) {
        self.state().armed.extend(fates);
    }

    /// Drops the fates armed and not yet met.
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash_testkit::sim_remote::{Fate, SimRemote};
    /// let sim = SimRemote::new(0);
    /// sim.arm([Fate::ErrorBefore]);
    /// sim.disarm();
    /// ```
    pub fn disarm(&self) {
        self.state().armed.clear();
    }

    /// Lands every late request still in flight (those whose key moved on
    /// are refused).
    ///
    /// # Examples
    ///
    /// See the [module documentation](self).
    pub fn settle(&self) {
        self.state().land(true);
    }

    /// Whether a late request is still in flight.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!safestash_testkit::sim_remote::SimRemote::new(0).in_flight());
    /// ```
    pub fn in_flight(&self) -> bool {
        !self.state().pending.is_empty()
    }

    /// Pauses every lock holder past its lease: a newer holder can take the
    /// key, and the old holder's changes are refused from now on.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use safestash::{StashKey, Store};
    /// let sim = safestash_testkit::sim_remote::SimRemote::new(0);
    /// let store = Store::with_backend(Arc::new(sim.clone()));
    /// let key = StashKey::new("k")?;
    /// let old = store.lock(&key)?;
    /// sim.expire_leases();
    /// assert!(old.save(&1).is_err());
    /// # Ok::<(), safestash::Error>(())
    /// ```
    pub fn expire_leases(&self) {
        for lease in self.state().leases.values_mut() {
            lease.expired = true;
        }
        self.shared.freed.notify_all();
    }

    /// The stored bytes of `name` in this view's namespace, as they are.
    ///
    /// # Examples
    ///
    /// ```
    /// let sim = safestash_testkit::sim_remote::SimRemote::new(0);
    /// assert!(sim.raw("k").is_none());
    /// ```
    pub fn raw(&self, name: &str) -> Option<Vec<u8>> {
        self.state().obj(&self.ns, name).bytes
    }

    /// Replaces the stored bytes of `name` (keeping the digest recorded
    /// with them), as a bad disk at the service would: for damage tests.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use safestash::{Error, StashKey, Store};
    /// let sim = safestash_testkit::sim_remote::SimRemote::new(0);
    /// let store = Store::with_backend(Arc::new(sim.clone()));
    /// let key = StashKey::new("k")?;
    /// store.save(&key, &1)?;
    /// sim.raw_put("k", b"SAFESTASH 1\ndamaged".to_vec());
    /// assert!(matches!(store.load::<i32>(&key), Err(Error::Corrupt { .. })));
    /// # Ok::<(), safestash::Error>(())
    /// ```
    pub fn raw_put(&self, name: &str, bytes: Vec<u8>) {
        let mut state = self.state();
        let digest = state.obj(&self.ns, name).digest;
        state.set(&self.ns, name, Some(bytes), digest);
    }

    /// What the service has seen so far.
    ///
    /// # Examples
    ///
    /// See the [module documentation](self).
    pub fn stats(&self) -> SimStats {
        self.state().stats
    }

    fn target(&self, name: &str) -> String {
        format!("{}/{name}", self.location)
    }

    /// Starts a request: counts it and lands what is due.
    fn begin(&self) -> MutexGuard<'_, State> {
        let mut state = self.state();
        state.tick += 1;
        state.stats.requests += 1;
        state.land(false);
        state
    }

    /// Waits while another holder's live lease covers `name`; the lease
    /// this view holds (if any) lets it through.
    fn wait_free<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
        key: &StashKey,
        mine: Option<u64>,
    ) -> Result<MutexGuard<'a, State>> {
        let id = (self.ns.clone(), key.as_str().to_owned());
        let deadline = Instant::now() + self.shared.config.lock_timeout;
        loop {
            match state.leases.get(&id) {
                Some(l) if !l.expired && Some(l.token) != mine => {}
                _ => return Ok(state),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Locked {
                    key: key.clone(),
                    path: PathBuf::from(self.target(key.as_str())),
                });
            }
            state =
                self.shared.freed.wait_timeout(state, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    fn my_fence(&self, key: &str) -> Option<u64> {
        self.fence.as_ref().filter(|(k, _)| k == key).map(|(_, t)| *t)
    }

    /// One change request: `check` decides from the current object whether
    /// the condition holds (`Err(outcome)`: it does not; nothing changes),
    /// then the change meets its fate.
    fn change(
        &self,
        op: BackendOp,
        key: &StashKey,
        change: Change,
        check: impl FnOnce(&Obj) -> Option<Outcome>,
    ) -> Result<Outcome> {
        let name = key.as_str();
        let state = self.begin();
        let fence = self.my_fence(name);
        let mut state = self.wait_free(state, key, fence)?;
        let fence = fence.filter(|_| self.shared.config.protocol != Protocol::Unfenced);
        if state.fenced_out(&self.ns, name, fence) {
            state.stats.fenced += 1;
            return Err(ambiguous(op, self.target(name), "refused: this holder's lease was lost"));
        }
        let current = state.obj(&self.ns, name);
        if let Some(refused) = check(&current) {
            return Ok(refused);
        }
        let fate = state.fate(&self.shared.config.chances);
        let protocol = self.shared.config.protocol;
        let target = self.target(name);
        let apply = |state: &mut State, change: &Change| {
            state.apply(&self.ns, name, change).map_err(|e| ambiguous(op, target.clone(), &e))
        };
        let done = match &change {
            Change::Delete | Change::Move(_) if current.bytes.is_none() => Outcome::Missing,
            _ => Outcome::Done,
        };
        let failed = match fate {
            Fate::Clean => {
                apply(&mut state, &change)?;
                return Ok(done);
            }
            Fate::RetryMeetsOwn => {
                apply(&mut state, &change)?;
                state.stats.retries_met_own += 1;
                // The retry is refused (the version moved); reading back
                // shows the change this client made.
                return Ok(done);
            }
            Fate::LostReply => {
                apply(&mut state, &change)?;
                state.stats.lost_replies += 1;
                "the reply was lost"
            }
            Fate::ErrorBefore => {
                state.stats.errors_before += 1;
                if protocol == Protocol::AckDropped {
                    return Ok(done);
                }
                "the request failed before reaching the service"
            }
            Fate::Late { after } => {
                state.stats.late_sent += 1;
                let due = state.tick + u64::from(after.max(1));
                state.pending.push(Pending {
                    due,
                    ns: self.ns.clone(),
                    name: name.to_owned(),
                    version: current.version,
                    fence,
                    change,
                });
                if protocol == Protocol::AckDropped {
                    return Ok(done);
                }
                "the request timed out (it may still arrive)"
            }
        };
        if protocol == Protocol::DeleteAfterAmbiguous {
            // The planted fault: acting on an ambiguous answer.
            state.set(&self.ns, name, None, None);
        }
        Err(ambiguous(op, self.target(name), failed))
    }
}

fn refusal(cond: Precondition, current: &Obj) -> Option<Outcome> {
    let holds = match cond {
        Precondition::Any => true,
        Precondition::Absent => current.bytes.is_none(),
        Precondition::Unchanged(d) => current.bytes.is_some() && current.digest == Some(d),
    };
    (!holds).then_some(Outcome::Refused { current: current.bytes.as_ref().and(current.digest) })
}

impl Backend for SimRemote {
    fn location(&self) -> &str {
        &self.location
    }

    fn put(
        &self,
        key: &StashKey,
        envelope: &[u8],
        digest: &Digest,
        cond: Precondition,
    ) -> Result<Outcome> {
        self.change(BackendOp::Save, key, Change::Put(envelope.to_vec(), *digest), |cur| {
            refusal(cond, cur)
        })
    }

    fn get(&self, key: &StashKey) -> Result<Option<Fetched>> {
        let state = self.begin();
        Ok(state
            .obj(&self.ns, key.as_str())
            .bytes
            .map(|bytes| Fetched { len: bytes.len() as u64, reader: Box::new(Cursor::new(bytes)) }))
    }

    fn delete(&self, key: &StashKey, cond: Precondition) -> Result<Outcome> {
        self.change(BackendOp::Clear, key, Change::Delete, |cur| match cond {
            Precondition::Unchanged(_) if cur.bytes.is_none() => Some(Outcome::Missing),
            _ => refusal(cond, cur),
        })
    }

    fn list(&self, head_len: usize) -> Result<Vec<Listed>> {
        let state = self.begin();
        Ok(state
            .objects
            .iter()
            .filter(|((ns, _), o)| *ns == self.ns && o.bytes.is_some())
            .map(|((_, name), o)| {
                let bytes = o.bytes.as_deref().unwrap_or_default();
                Listed {
                    name: name.clone(),
                    len: bytes.len() as u64,
                    head: bytes[..bytes.len().min(head_len)].to_vec(),
                }
            })
            .collect())
    }

    fn has_locks(&self) -> bool {
        true
    }

    fn lock(&self, key: &StashKey, wait: bool) -> Result<Option<Box<dyn Held>>> {
        let id = (self.ns.clone(), key.as_str().to_owned());
        let mut state = self.begin();
        let live = |s: &State| s.leases.get(&id).is_some_and(|l| !l.expired);
        if live(&state) {
            if !wait {
                return Ok(None);
            }
            state = self.wait_free(state, key, None)?;
        }
        state.next_token += 1;
        let token = state.next_token;
        state.leases.insert(id, Lease { token, expired: false });
        Ok(Some(Box::new(SimHeld {
            view: SimRemote { fence: Some((key.as_str().to_owned(), token)), ..self.clone() },
        })))
    }

    fn move_aside(&self, key: &StashKey, aside: &str) -> Result<bool> {
        {
            let state = self.state();
            if state.obj(&self.ns, aside).bytes.is_some() {
                return Err(ambiguous(
                    BackendOp::Quarantine,
                    self.target(key.as_str()),
                    "something is already at the quarantine name",
                ));
            }
        }
        // Nothing to move: the change is a tombstone (absence versioned, as
        // for a delete of nothing), answered Missing.
        let outcome =
            self.change(BackendOp::Quarantine, key, Change::Move(aside.to_owned()), |_| None)?;
        Ok(outcome == Outcome::Done)
    }

    fn child(&self, ns: &str) -> Box<dyn Backend> {
        let child = if self.ns.is_empty() { ns.to_owned() } else { format!("{}/{ns}", self.ns) };
        Box::new(SimRemote {
            location: format!("{}/{ns}", self.location),
            ns: child,
            fence: None,
            shared: self.shared.clone(),
        })
    }

    fn children(&self) -> Result<Vec<String>> {
        let state = self.begin();
        let prefix = if self.ns.is_empty() { String::new() } else { format!("{}/", self.ns) };
        let found: BTreeSet<String> = state
            .objects
            .iter()
            .filter(|(_, o)| o.bytes.is_some())
            .filter_map(|((ns, _), _)| {
                let rest = ns.strip_prefix(&prefix)?;
                let first = rest.split('/').next()?;
                (!first.is_empty()).then(|| first.to_owned())
            })
            .collect();
        Ok(found.into_iter().collect())
    }
}

/// A lease on one key of a [`SimRemote`]; released when dropped.
#[derive(Debug)]
struct SimHeld {
    view: SimRemote,
}

impl Held for SimHeld {
    fn backend(&self) -> &dyn Backend {
        &self.view
    }
}

impl Drop for SimHeld {
    fn drop(&mut self) {
        let Some((key, token)) = &self.view.fence else { return };
        let id = (self.view.ns.clone(), key.clone());
        let mut state = self.view.state();
        if state.leases.get(&id).is_some_and(|l| l.token == *token) {
            state.leases.remove(&id);
        }
        drop(state);
        self.view.shared.freed.notify_all();
    }
}
