//! The rules a plan is checked against: [`Rule`], [`Limits`], [`Overrides`]
//! and the [`Refusal`]s they give.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A rule that refuses a plan unless the caller lifts it by name.
///
/// # Examples
///
/// ```
/// use safestash::reconcile::{Overrides, Rule};
///
/// let overrides = Overrides::allow(Rule::TooMany);
/// assert!(overrides.allows(Rule::TooMany));
/// assert_eq!(Rule::TooMany.to_string(), "TooMany");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Rule {
    /// The source of truth lists no tenant while the local side has some:
    /// it probably failed or returned nothing.
    EmptyAuthority,
    /// More tenants to delete than [`Limits::max_count`].
    TooMany,
    /// A larger share of the local tenants to delete than
    /// [`Limits::max_share`].
    TooLargeShare,
    /// An input id, on either side, could not be canonicalised, and the
    /// plan deletes something (a plan that deletes nothing is never
    /// refused for it).
    Unparseable,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rule::EmptyAuthority => "EmptyAuthority",
            Rule::TooMany => "TooMany",
            Rule::TooLargeShare => "TooLargeShare",
            Rule::Unparseable => "Unparseable",
        })
    }
}

/// The rules a caller explicitly lifts for one run. None by default.
///
/// Lifting a rule lifts it entirely; to allow a somewhat larger run, prefer
/// raising [`Limits`], which keeps a ceiling in place.
///
/// # Examples
///
/// ```
/// use safestash::reconcile::{Overrides, Rule};
///
/// let o = Overrides::allow(Rule::EmptyAuthority).and(Rule::TooLargeShare);
/// assert!(o.allows(Rule::TooLargeShare));
/// assert!(!o.allows(Rule::TooMany));
/// assert!(!Overrides::none().allows(Rule::Unparseable));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    rules: BTreeSet<Rule>,
}

impl Overrides {
    /// No rule lifted.
    ///
    /// # Examples
    ///
    /// See [`Overrides`].
    pub fn none() -> Overrides {
        Overrides::default()
    }

    /// Lifts `rule`.
    ///
    /// # Examples
    ///
    /// See [`Overrides`].
    pub fn allow(rule: Rule) -> Overrides {
        Overrides::none().and(rule)
    }

    /// Lifts `rule` too.
    ///
    /// # Examples
    ///
    /// See [`Overrides`].
    #[must_use]
    pub fn and(mut self, rule: Rule) -> Overrides {
        self.rules.insert(rule);
        self
    }

    /// Whether `rule` is lifted.
    ///
    /// # Examples
    ///
    /// See [`Overrides`].
    pub fn allows(&self, rule: Rule) -> bool {
        self.rules.contains(&rule)
    }
}

impl FromIterator<Rule> for Overrides {
    fn from_iter<T: IntoIterator<Item = Rule>>(iter: T) -> Self {
        Overrides { rules: iter.into_iter().collect() }
    }
}

/// The blast-radius limits of one run. A plan *exceeds* a limit when it
/// deletes strictly more: by default more than 10% of the local tenants or
/// more than 5 tenants.
///
/// # Examples
///
/// ```
/// use safestash::reconcile::Limits;
///
/// let limits = Limits::default();
/// assert_eq!((limits.max_share, limits.max_count), (0.10, 5));
/// // A migration that retires a batch of 20 tenants, and says so:
/// let batch = Limits::default().max_count(20).max_share(0.25);
/// assert_eq!(batch.max_count, 20);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Limits {
    /// The largest share of the local tenants one run may delete, from 0.0
    /// to 1.0.
    pub max_share: f64,
    /// The most tenants one run may delete.
    pub max_count: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_share: 0.10, max_count: 5 }
    }
}

impl Limits {
    /// The defaults: 10%, 5 tenants.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(safestash::reconcile::Limits::new(), safestash::reconcile::Limits::default());
    /// ```
    pub fn new() -> Limits {
        Limits::default()
    }

    /// Sets the largest share of local tenants to delete.
    ///
    /// # Examples
    ///
    /// See [`Limits`].
    #[must_use]
    pub fn max_share(mut self, share: f64) -> Limits {
        self.max_share = share;
        self
    }

    /// Sets the most tenants to delete.
    ///
    /// # Examples
    ///
    /// See [`Limits`].
    #[must_use]
    pub fn max_count(mut self, count: usize) -> Limits {
        self.max_count = count;
        self
    }
}

/// Why a plan is refused: the rule that fired, with the numbers.
///
/// # Examples
///
/// See [`Plan::refusals`](super::Plan::refusals).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub enum Refusal {
    /// [`Rule::EmptyAuthority`].
    EmptyAuthority {
        /// Local tenants.
        local: usize,
    },
    /// [`Rule::TooMany`].
    TooMany {
        /// Tenants to delete.
        delete: usize,
        /// Local tenants.
        local: usize,
        /// The limit.
        max_count: usize,
    },
    /// [`Rule::TooLargeShare`].
    TooLargeShare {
        /// Tenants to delete.
        delete: usize,
        /// Local tenants.
        local: usize,
        /// The limit.
        max_share: f64,
    },
    /// [`Rule::Unparseable`].
    Unparseable {
        /// Local inputs that could not be canonicalised.
        local: usize,
        /// Inputs of the source of truth that could not be canonicalised.
        authoritative: usize,
    },
}

impl Refusal {
    /// The rule that fired.
    ///
    /// # Examples
    ///
    /// See [`Plan::refusals`](super::Plan::refusals).
    pub fn rule(&self) -> Rule {
        match self {
            Refusal::EmptyAuthority { .. } => Rule::EmptyAuthority,
            Refusal::TooMany { .. } => Rule::TooMany,
            Refusal::TooLargeShare { .. } => Rule::TooLargeShare,
            Refusal::Unparseable { .. } => Rule::Unparseable,
        }
    }
}

/// `share` as a percentage with at most two decimals, without trailing zeros.
fn percent(share: f64) -> String {
    let s = format!("{:.2}", share * 100.0);
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Refusal::EmptyAuthority { local } => write!(
                f,
                "refusing to delete: the source of truth lists no tenants while {local} exist \
                 locally (it may have failed)"
            )?,
            Refusal::TooMany { delete, local, max_count } => write!(
                f,
                "refusing to delete {delete} of {local} tenants: more than the limit of {max_count}"
            )?,
            Refusal::TooLargeShare { delete, local, max_share } => write!(
                f,
                "refusing to delete {delete} of {local} tenants ({}%): more than the limit of {}%",
                percent(delete as f64 / local as f64),
                percent(max_share)
            )?,
            Refusal::Unparseable { local, authoritative } => write!(
                f,
                "refusing to delete: {} input ids could not be canonicalised ({local} local, \
                 {authoritative} in the source of truth)",
                local + authoritative
            )?,
        }
        let rule = self.rule();
        write!(f, " (rule {rule}; override with Overrides::allow(Rule::{rule}))")
    }
}

pub(crate) fn join_refusals(refusals: &[Refusal]) -> String {
    refusals.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}
