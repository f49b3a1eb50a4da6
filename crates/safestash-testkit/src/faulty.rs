//! A [`Backend`] wrapper that injects ambiguous outcomes into any inner
//! backend, at the boundary between the store and the backend.
//!
//! [`Faulty`] passes every call through to the backend it wraps, except
//! the change requests (puts, deletes, moves aside) that meet an armed
//! [`Fate`]:
//!
//! - [`Fate::LostReply`]: the inner call runs; the caller gets an error;
//! - [`Fate::ErrorBefore`]: the inner call does not run; the caller gets an
//!   error;
//! - [`Fate::Late`]: the caller gets an error at once; the inner call runs
//!   later, at the start of the next call to the wrapper (or at
//!   [`Faulty::settle`]), as a request that arrives after its client gave up
//!   would. Through a held lock it runs before the error is returned (the
//!   lock's view of the backend lives only as long as the call);
//! - [`Fate::RetryMeetsOwn`]: the inner call runs, then runs again, as a
//!   client that retries after a lost reply does, and the caller gets the
//!   second answer (for a conditional put, a refusal naming the envelope
//!   the first attempt wrote).
//!
//! # Examples
//!
//! ```
//! use std::sync::Arc;
//! use safestash::{StashKey, Store};
//! use safestash_testkit::faulty::Faulty;
//! use safestash_testkit::sim_remote::{Fate, SimRemote};
//!
//! let faulty = Faulty::new(Arc::new(SimRemote::new(0)));
//! let store = Store::with_backend(Arc::new(faulty.clone()));
//! let key = StashKey::new("k")?;
//! store.save(&key, &1)?;
//! faulty.arm([Fate::ErrorBefore]);
//! assert!(store.save(&key, &2).is_err());
//! assert_eq!(*store.load::<i32>(&key)?.unwrap().value(), 1);
//! # Ok::<(), safestash::Error>(())
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use safestash::backend::{
    Backend, Entry, Fetched, Fill, Held, Listed, Outcome, Precondition, WholeRead,
};
use safestash::{BackendOp, Digest, Error, Result, StashKey};

pub use crate::sim_remote::Fate;

/// A request that will arrive late.
enum Deferred {
    Put(StashKey, Vec<u8>, Digest, Precondition),
    Delete(StashKey, Precondition),
    Move(StashKey, String),
    Quarantine(StashKey, String),
}

#[derive(Default)]
struct Plan {
    armed: VecDeque<Fate>,
    late: Vec<(Arc<dyn Backend>, Deferred)>,
    met: u64,
}

/// The fault-injecting wrapper (clones share their armed fates).
///
/// # Examples
///
/// See the [module documentation](self).
#[derive(Clone)]
pub struct Faulty {
    inner: Arc<dyn Backend>,
    plan: Arc<Mutex<Plan>>,
}

impl fmt::Debug for Faulty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Faulty").field("inner", &self.inner).finish_non_exhaustive()
    }
}

fn failed(op: BackendOp, target: String, what: &str) -> Error {
    Error::Backend { op, target, source: format!("injected: {what}").into() }
}

fn run(via: &dyn Backend, d: &Deferred) -> Result<Outcome> {
    match d {
        Deferred::Put(key, bytes, digest, cond) => via.put(key, bytes, digest, *cond),
        Deferred::Delete(key, cond) => via.delete(key, *cond),
        Deferred::Move(key, aside) => {
            via.move_aside(key, aside).map(|m| if m { Outcome::Done } else { Outcome::Missing })
        }
        Deferred::Quarantine(key, base) => via
            .quarantine(key, base)
            .map(|m| if m.is_some() { Outcome::Done } else { Outcome::Missing }),
    }
}

impl Faulty {
    /// Wraps `inner`; nothing is injected until [armed](Faulty::arm).
    ///
    /// # Examples
    ///
    /// See the [module documentation](self).
    pub fn new(inner: Arc<dyn Backend>) -> Faulty {
        Faulty { inner, plan: Arc::default() }
    }

    fn plan(&self) -> MutexGuard<'_, Plan> {
        self.plan.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Arms the fates of the next change requests, in order.
    ///
    /// # Examples
    ///
    /// See the [module documentation](self).
    pub fn arm(&self, fates: impl IntoIterator<Item = Fate>) {
        self.plan().armed.extend(fates);
    }

    /// Drops the fates armed and not yet met.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use safestash_testkit::{faulty::{Fate, Faulty}, sim_remote::SimRemote};
    /// let f = Faulty::new(Arc::new(SimRemote::new(0)));
    /// f.arm([Fate::LostReply]);
    /// f.disarm();
    /// assert_eq!(f.met(), 0);
    /// ```
    pub fn disarm(&self) {
        self.plan().armed.clear();
    }

    /// How many armed fates other than [`Fate::Clean`] requests have met.
    ///
    /// # Examples
    ///
    /// See [`Faulty::disarm`].
    pub fn met(&self) -> u64 {
        self.plan().met
    }

    /// Runs the late requests now.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use safestash::{StashKey, Store};
    /// use safestash_testkit::{faulty::{Fate, Faulty}, sim_remote::SimRemote};
    /// let sim = SimRemote::new(0);
    /// let faulty = Faulty::new(Arc::new(sim.clone()));
    /// let store = Store::with_backend(Arc::new(faulty.clone()));
    /// faulty.arm([Fate::Late { after: 1 }]);
    /// assert!(store.save(&StashKey::new("k")?, &1).is_err());
    /// assert!(sim.raw("k").is_none());
    /// faulty.settle();
    /// assert!(sim.raw("k").is_some());
    /// # Ok::<(), safestash::Error>(())
    /// ```
    pub fn settle(&self) {
        let late = std::mem::take(&mut self.plan().late);
        for (via, d) in late {
            // Whatever it meets on arrival, nobody waits for its answer.
            let _ = run(via.as_ref(), &d);
        }
    }

    fn next_fate(&self) -> Fate {
        let mut plan = self.plan();
        let fate = plan.armed.pop_front().unwrap_or(Fate::Clean);
        if fate != Fate::Clean {
            plan.met += 1;
        }
        fate
    }

    fn armed(&self) -> bool {
        !self.plan().armed.is_empty()
    }

    /// One change request through `via` (`Some`: a view that outlives the
    /// call, so a late request can wait; `None`: a held lock's view).
    fn change(
        &self,
        op: BackendOp,
        via: &dyn Backend,
        keep: Option<&Arc<dyn Backend>>,
        d: Deferred,
    ) -> Result<Outcome> {
        self.settle();
        let target = match &d {
            Deferred::Put(k, ..)
            | Deferred::Delete(k, _)
            | Deferred::Move(k, _)
            | Deferred::Quarantine(k, _) => {
                format!("{}/{k}", via.location())
            }
        };
        match self.next_fate() {
            Fate::Clean => run(via, &d),
            Fate::ErrorBefore => Err(failed(op, target, "failed before reaching the service")),
            Fate::LostReply => {
                run(via, &d)?;
                Err(failed(op, target, "the reply was lost"))
            }
            Fate::Late { .. } => {
                match keep {
                    Some(view) => self.plan().late.push((view.clone(), d)),
                    None => drop(run(via, &d)),
                }
                Err(failed(op, target, "timed out (the request may still arrive)"))
            }
            Fate::RetryMeetsOwn => {
                run(via, &d)?;
                run(via, &d)
            }
        }
    }

    fn put_on(
        &self,
        via: &dyn Backend,
        keep: Option<&Arc<dyn Backend>>,
        key: &StashKey,
        envelope: &[u8],
        digest: &Digest,
        cond: Precondition,
    ) -> Result<Outcome> {
        let d = Deferred::Put(key.clone(), envelope.to_vec(), *digest, cond);
        self.change(BackendOp::Save, via, keep, d)
    }

    fn put_with_on(
        &self,
        via: &dyn Backend,
        keep: Option<&Arc<dyn Backend>>,
        key: &StashKey,
        cond: Precondition,
        fill: &mut Fill<'_>,
    ) -> Result<Outcome> {
        if !self.armed() {
            self.settle();
            // Nothing to inject: the inner backend streams as it would.
            return via.put_with(key, cond, fill);
        }
        let mut envelope = Vec::new();
        let digest = fill(&mut envelope)?;
        self.put_on(via, keep, key, &envelope, &digest, cond)
    }

    fn move_on(
        &self,
        via: &dyn Backend,
        keep: Option<&Arc<dyn Backend>>,
        key: &StashKey,
        aside: &str,
    ) -> Result<bool> {
        let d = Deferred::Move(key.clone(), aside.to_owned());
        Ok(self.change(BackendOp::Quarantine, via, keep, d)? == Outcome::Done)
    }
}

impl Backend for Faulty {
    fn location(&self) -> &str {
        self.inner.location()
    }

    fn put(
        &self,
        key: &StashKey,
        envelope: &[u8],
        digest: &Digest,
        cond: Precondition,
    ) -> Result<Outcome> {
        self.put_on(self.inner.as_ref(), Some(&self.inner), key, envelope, digest, cond)
    }

    fn put_with(&self, key: &StashKey, cond: Precondition, fill: &mut Fill<'_>) -> Result<Outcome> {
        self.put_with_on(self.inner.as_ref(), Some(&self.inner), key, cond, fill)
    }

    fn get(&self, key: &StashKey) -> Result<Option<Fetched>> {
        self.settle();
        self.inner.get(key)
    }

    fn delete(&self, key: &StashKey, cond: Precondition) -> Result<Outcome> {
        let d = Deferred::Delete(key.clone(), cond);
        self.change(BackendOp::Clear, self.inner.as_ref(), Some(&self.inner), d)
    }

    fn list(&self, head_len: usize) -> Result<Vec<Listed>> {
        self.settle();
        self.inner.list(head_len)
    }

    fn has_locks(&self) -> bool {
        self.inner.has_locks()
    }

    fn lock(&self, key: &StashKey, wait: bool) -> Result<Option<Box<dyn Held>>> {
        self.settle();
        Ok(self
            .inner
            .lock(key, wait)?
            .map(|held| Box::new(FaultyHeld { held, faulty: self.clone() }) as Box<dyn Held>))
    }

    fn move_aside(&self, key: &StashKey, aside: &str) -> Result<bool> {
        self.move_on(self.inner.as_ref(), Some(&self.inner), key, aside)
    }

    fn child(&self, ns: &str) -> Box<dyn Backend> {
        Box::new(Faulty { inner: Arc::from(self.inner.child(ns)), plan: self.plan.clone() })
    }

    fn children(&self) -> Result<Vec<String>> {
        self.settle();
        self.inner.children()
    }

    fn concurrent_puts(&self) -> usize {
        self.inner.concurrent_puts()
    }

    fn cleanup(&self) -> Result<Vec<String>> {
        self.settle();
        self.inner.cleanup()
    }

    fn whole_read(&self) -> WholeRead {
        self.inner.whole_read()
    }

    fn entries(&self, head_len: usize, stashes_only: bool) -> Result<Vec<Entry>> {
        self.settle();
        self.inner.entries(head_len, stashes_only)
    }

    fn entry(&self, name: &str, head_len: usize) -> Result<Option<Entry>> {
        self.settle();
        self.inner.entry(name, head_len)
    }

    fn is_locked(&self, key: &StashKey) -> Result<bool> {
        self.settle();
        self.inner.is_locked(key)
    }

    fn quarantine(&self, key: &StashKey, base: &str) -> Result<Option<String>> {
        self.settle();
        let target = format!("{}/{key}", self.inner.location());
        match self.next_fate() {
            Fate::Clean => self.inner.quarantine(key, base),
            Fate::ErrorBefore => {
                Err(failed(BackendOp::Quarantine, target, "failed before reaching the service"))
            }
            Fate::LostReply => {
                self.inner.quarantine(key, base)?;
                Err(failed(BackendOp::Quarantine, target, "the reply was lost"))
            }
            Fate::Late { .. } => {
                let d = Deferred::Quarantine(key.clone(), base.to_owned());
                self.plan().late.push((self.inner.clone(), d));
                Err(failed(
                    BackendOp::Quarantine,
                    target,
                    "timed out (the request may still arrive)",
                ))
            }
            Fate::RetryMeetsOwn => {
                self.inner.quarantine(key, base)?;
                self.inner.quarantine(key, base)
            }
        }
    }
}

/// A held lock of the inner backend, whose changes meet the same fates.
#[derive(Debug)]
struct FaultyHeld {
    held: Box<dyn Held>,
    faulty: Faulty,
}

impl Held for FaultyHeld {
    fn backend(&self) -> &dyn Backend {
        self
    }
}

impl Backend for FaultyHeld {
    fn location(&self) -> &str {
        self.held.backend().location()
    }

    fn put(
        &self,
        key: &StashKey,
        envelope: &[u8],
        digest: &Digest,
        cond: Precondition,
    ) -> Result<Outcome> {
        self.faulty.put_on(self.held.backend(), None, key, envelope, digest, cond)
    }

    fn put_with(&self, key: &StashKey, cond: Precondition, fill: &mut Fill<'_>) -> Result<Outcome> {
        self.faulty.put_with_on(self.held.backend(), None, key, cond, fill)
    }

    fn get(&self, key: &StashKey) -> Result<Option<Fetched>> {
        self.faulty.settle();
        self.held.backend().get(key)
    }

    fn delete(&self, key: &StashKey, cond: Precondition) -> Result<Outcome> {
        let d = Deferred::Delete(key.clone(), cond);
        self.faulty.change(BackendOp::Clear, self.held.backend(), None, d)
    }

    fn list(&self, head_len: usize) -> Result<Vec<Listed>> {
        self.faulty.settle();
        self.held.backend().list(head_len)
    }

    fn has_locks(&self) -> bool {
        self.held.backend().has_locks()
    }

    fn lock(&self, key: &StashKey, wait: bool) -> Result<Option<Box<dyn Held>>> {
        self.held.backend().lock(key, wait)
    }

    fn move_aside(&self, key: &StashKey, aside: &str) -> Result<bool> {
        self.faulty.move_on(self.held.backend(), None, key, aside)
    }

    fn child(&self, ns: &str) -> Box<dyn Backend> {
        Box::new(Faulty {
            inner: Arc::from(self.held.backend().child(ns)),
            plan: self.faulty.plan.clone(),
        })
    }

    fn children(&self) -> Result<Vec<String>> {
        self.held.backend().children()
    }

    fn concurrent_puts(&self) -> usize {
        self.held.backend().concurrent_puts()
    }

    fn cleanup(&self) -> Result<Vec<String>> {
        self.held.backend().cleanup()
    }
}
