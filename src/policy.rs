//! Freshness and origin checks on load.
//!
//! A stash left by a failure long ago, or by an unrelated job, must not be
//! applied to today's resource without the caller seeing it: a
//! [`LoadPolicy`] sets a maximum age and an expected origin, and
//! [`Store::load_checked`] returns a [`Checked`] the caller has to match on.

use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;

use crate::error::Result;
use crate::fs::Fs;
use crate::key::StashKey;
use crate::meta::Stashed;
use crate::store::Store;

/// How far in the future a creation time may be before its age is
/// considered unknown (clocks of one host disagree by less).
const FUTURE_TOLERANCE: Duration = Duration::from_secs(1);

/// What a loaded stash must satisfy to be applied without question.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use safestash::LoadPolicy;
///
/// let policy = LoadPolicy::new().max_age(Duration::from_secs(24 * 3600)).origin("upload-7f3a");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadPolicy {
    max_age: Option<Duration>,
    origin: Option<String>,
}

impl LoadPolicy {
    /// No requirement: every stash is fresh.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(safestash::LoadPolicy::new(), safestash::LoadPolicy::default());
    /// ```
    pub fn new() -> LoadPolicy {
        LoadPolicy::default()
    }

    /// A stash older than `age` is [`Checked::Stale`].
    ///
    /// # Examples
    ///
    /// ```
    /// let p = safestash::LoadPolicy::new().max_age(std::time::Duration::from_secs(60));
    /// ```
    #[must_use]
    pub fn max_age(mut self, age: Duration) -> LoadPolicy {
        self.max_age = Some(age);
        self
    }

    /// A stash whose origin is not exactly `origin` (or has none) is
    /// [`Checked::Foreign`].
    ///
    /// # Examples
    ///
    /// ```
    /// let p = safestash::LoadPolicy::new().origin("job-42");
    /// ```
    #[must_use]
    pub fn origin(mut self, origin: impl Into<String>) -> LoadPolicy {
        self.origin = Some(origin.into());
        self
    }

    /// Classifies a loaded stash. A foreign origin is reported first (a
    /// stash from another job is wrong at any age); then, with a maximum
    /// age, a creation time in the future (its age is unknown), then
    /// staleness.
    ///
    /// # Examples
    ///
    /// See [`Store::load_checked`].
    pub fn check<T>(&self, stashed: Stashed<T>) -> Checked<T> {
        let key = stashed.meta().header.key().clone();
        let age = stashed.meta().age();
        if let Some(expected) = &self.origin {
            let found = stashed.meta().header.origin().map(str::to_owned);
            if found.as_deref() != Some(expected.as_str()) {
                tracing::warn!(%key, expected = %expected, found = ?found, age_secs = age.as_secs_f64(), "stash from another origin not applied");
                return Checked::Foreign { stashed, expected: expected.clone(), found };
            }
        }
        if let Some(max_age) = self.max_age {
            let created = stashed.meta().header.created();
            if let Ok(ahead) = created.duration_since(SystemTime::now()) {
                if ahead > FUTURE_TOLERANCE {
                    tracing::warn!(%key, ahead_secs = ahead.as_secs_f64(), "stash dated in the future not applied: its age is unknown");
                    return Checked::Future { stashed, ahead };
                }
            }
            if age > max_age {
                tracing::warn!(%key, age_secs = age.as_secs_f64(), max_age_secs = max_age.as_secs_f64(), "stale stash not applied");
                return Checked::Stale { stashed, age, max_age };
            }
        }
        Checked::Fresh(stashed)
    }
}

/// A loaded stash, classified by a [`LoadPolicy`]. Only `Fresh` should be
/// applied without an explicit decision.
///
/// # Examples
///
/// See [`Store::load_checked`].
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub enum Checked<T> {
    /// Within the age limit and from the expected origin.
    Fresh(Stashed<T>),
    /// Older than the policy allows.
    Stale {
        /// The stash.
        stashed: Stashed<T>,
        /// Its age.
        age: Duration,
        /// The policy's limit.
        max_age: Duration,
    },
    /// Dated more than a second in the future (a clock was wrong when it was
    /// written, or is now): its age cannot be known, so a policy with a
    /// maximum age does not call it fresh.
    Future {
        /// The stash.
        stashed: Stashed<T>,
        /// How far ahead of now its creation time is.
        ahead: Duration,
    },
    /// Written by another origin than expected.
    Foreign {
        /// The stash.
        stashed: Stashed<T>,
        /// The origin the policy expects.
        expected: String,
        /// The origin the stash records.
        found: Option<String>,
    },
}

impl<T> Checked<T> {
    /// The stash, whatever its classification.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// # let key = safestash::StashKey::new("k")?;
    /// store.save(&key, &1)?;
    /// let checked = store.load_checked::<i32>(&key, &safestash::LoadPolicy::new())?.unwrap();
    /// assert_eq!(*checked.stashed().value(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stashed(&self) -> &Stashed<T> {
        match self {
            Checked::Fresh(s)
            | Checked::Stale { stashed: s, .. }
            | Checked::Future { stashed: s, .. }
            | Checked::Foreign { stashed: s, .. } => s,
        }
    }
}

impl<F: Fs> Store<F> {
    /// [`load`](Store::load), then classify the stash by `policy`: a stash
    /// too old or from another origin comes back marked as such, never as
    /// plain data, and is logged with its age.
    ///
    /// # Errors
    ///
    /// As [`load`](Store::load).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use safestash::{Checked, LoadPolicy, SaveOptions, StashKey, Store};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let store = Store::open(dir.path())?;
    /// let key = StashKey::new("orders.dictionary")?;
    /// store.save_with(&key, &["label"], &SaveOptions::new().origin("upload-1"))?;
    ///
    /// // The stash belongs to upload-1; this job is upload-2.
    /// let policy = LoadPolicy::new().max_age(Duration::from_secs(3600)).origin("upload-2");
    /// match store.load_checked::<Vec<String>>(&key, &policy)? {
    ///     Some(Checked::Fresh(stashed)) => { /* apply it */ }
    ///     Some(Checked::Foreign { found, .. }) => assert_eq!(found.as_deref(), Some("upload-1")),
    ///     Some(Checked::Stale { age, .. }) => println!("stash is {age:?} old; not applied"),
    ///     Some(Checked::Future { ahead, .. }) => println!("stash is dated {ahead:?} ahead; not applied"),
    ///     None => { /* nothing stashed */ }
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn load_checked<T: DeserializeOwned>(
        &self,
        key: &StashKey,
        policy: &LoadPolicy,
    ) -> Result<Option<Checked<T>>> {
        Ok(self.load(key)?.map(|stashed| policy.check(stashed)))
    }
}
