//! Plans: which local tenants a reconciliation keeps and deletes, and the
//! rules that refuse a plan that looks wrong.
//!
//! [`plan`](fn@plan) compares two [`IdSet`]s of [canonical
//! ids](crate::canonical) and yields a [`Plan`].
//!
//! **Refuse plans that look wrong.**
//! [`Reconciler::execute`](crate::reconcile::Reconciler::execute) refuses an empty
//! source of truth, a delete of too many tenants or too large a share
//! ([`Limits`]), and unparseable input, unless the caller lifts the
//! [`Rule`] by name ([`Overrides`]). A plan only executes against the inputs
//! it was computed from (its [`Fingerprint`]).

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::canonical::{CanonicalId, IdSet, Unparseable};
use super::error::ReconcileError;
use super::rules::{Limits, Overrides, Refusal};
use crate::error::Result;

/// The SHA-256 of a plan's canonical, sorted inputs (both sides' ids and
/// unparseable inputs): a plan executes only against inputs with the same
/// fingerprint. Also the origin of every stash the plan writes.
///
/// # Examples
///
/// ```
/// use safestash::reconcile::{CanonicalUuid, IdSet, plan};
///
/// let a: IdSet<CanonicalUuid> = IdSet::canonicalize(["00000000-0000-0000-0000-000000000001"]);
/// let b: IdSet<CanonicalUuid> = IdSet::canonicalize([uuid::Uuid::from_u128(1)]);
/// assert_eq!(plan(&a, &a).fingerprint(), plan(&b, &b).fingerprint()); // same canonical inputs
/// assert_ne!(plan(&a, &a).fingerprint(), plan(&a, &IdSet::new()).fingerprint());
/// assert_eq!(plan(&a, &a).fingerprint().to_string().len(), 64);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The digest's bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// # let p = safestash::reconcile::plan::<safestash::reconcile::CanonicalUuid>(&Default::default(), &Default::default());
    /// assert_eq!(p.fingerprint().as_bytes().len(), 32);
    /// ```
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl FromStr for Fingerprint {
    type Err = Unparseable;

    fn from_str(s: &str) -> Result<Fingerprint, Unparseable> {
        let bad = || Unparseable::new(s, "a fingerprint is 64 lowercase hex digits");
        if s.len() != 64 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Fingerprint(out))
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

fn fingerprint<I: CanonicalId>(local: &IdSet<I>, authoritative: &IdSet<I>) -> Fingerprint {
    // Every field is length-prefixed, so no two inputs hash the same bytes.
    fn field(h: &mut Sha256, bytes: &[u8]) {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    }
    let mut h = Sha256::new();
    field(&mut h, b"safestash reconcile plan v1");
    for (side, set) in [("local", local), ("authoritative", authoritative)] {
        field(&mut h, side.as_bytes());
        h.update((set.ids.len() as u64).to_be_bytes());
        for id in &set.ids {
            field(&mut h, id.to_string().as_bytes());
        }
        let raw: BTreeSet<&str> = set.unparseable.iter().map(Unparseable::input).collect();
        h.update((raw.len() as u64).to_be_bytes());
        for input in raw {
            field(&mut h, input.as_bytes());
        }
    }
    Fingerprint(h.finalize().into())
}

/// The inputs of a plan that could not be canonicalised, per side.
///
/// # Examples
///
/// See [`Plan::unparseable`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct UnparseableIds {
    /// Local inputs (never deleted).
    pub local: Vec<Unparseable>,
    /// Inputs of the source of truth (the truth is uncertain).
    pub authoritative: Vec<Unparseable>,
}

impl UnparseableIds {
    /// How many inputs, on both sides.
    ///
    /// # Examples
    ///
    /// See [`Plan::unparseable`].
    pub fn len(&self) -> usize {
        self.local.len() + self.authoritative.len()
    }

    /// Whether every input was canonicalised.
    ///
    /// # Examples
    ///
    /// See [`Plan::unparseable`].
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a reconciliation would do: which local tenants to keep, which to
/// delete, and which inputs could not be canonicalised. Computed by
/// [`plan`], checked and run by [`Reconciler`](crate::reconcile::Reconciler).
///
/// A plan is `Serialize` (for a dry run's log or an approval step) and
/// `Display` (for a person). It can be deserialized too: execution
/// recomputes the plan from the inputs and refuses any difference, so an
/// edited plan never runs.
///
/// # Examples
///
/// ```
/// use safestash::reconcile::{CanonicalUuid, IdSet, plan};
///
/// let local: IdSet<CanonicalUuid> = IdSet::canonicalize([uuid::Uuid::from_u128(1), uuid::Uuid::from_u128(2)]);
/// let truth: IdSet<CanonicalUuid> = IdSet::canonicalize(["00000000-0000-0000-0000-000000000001"]);
/// let p = plan(&local, &truth);
/// assert_eq!(p.keep(), [CanonicalUuid::from(uuid::Uuid::from_u128(1))]);
/// assert_eq!(p.delete(), [CanonicalUuid::from(uuid::Uuid::from_u128(2))]);
/// println!("{p}"); // the dry run
/// let json = serde_json::to_string(&p)?;
/// assert!(json.contains("\"delete\":[\"00000000-0000-0000-0000-000000000002\"]"));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan<I> {
    pub(crate) fingerprint: Fingerprint,
    local: usize,
    authoritative: usize,
    authoritative_only: usize,
    keep: Vec<I>,
    pub(crate) delete: Vec<I>,
    unparseable: UnparseableIds,
}

/// Computes the plan that makes `local` match `authoritative`: keep the
/// tenants on both sides, delete the local tenants the source of truth does
/// not list. Only canonical ids take part; unparseable inputs are carried
/// into the plan's report and never deleted.
///
/// Both sides must be [`IdSet`]s of the same canonical type, so comparing
/// raw strings with parsed values does not compile:
///
/// ```compile_fail,E0308
/// use std::collections::HashSet;
/// use safestash::reconcile::{CanonicalUuid, IdSet, plan};
///
/// let local: HashSet<String> = HashSet::from(["6f9619ff-8b86-d011-b42d-00c04fc964ff".to_owned()]);
/// let truth: IdSet<CanonicalUuid> = IdSet::canonicalize(["6F9619FF-8B86-D011-B42D-00C04FC964FF"]);
/// let p = plan(&local, &truth); // expected `&IdSet<_>`, found `&HashSet<String>`
/// ```
///
/// Nor does a set of raw strings dressed as an `IdSet`: `String` is not a
/// [`CanonicalId`].
///
/// ```compile_fail,E0277
/// use safestash::reconcile::{IdSet, plan};
///
/// let local: IdSet<String> = Default::default();
/// let p = plan(&local, &local); // the trait `CanonicalId` is not implemented for `String`
/// ```
///
/// # Examples
///
/// The incident, done right: the local side yields uuid values, the source
/// of truth the same ids as upper-case strings, and one tenant is gone.
///
/// ```
/// use safestash::reconcile::{CanonicalUuid, IdSet, plan};
/// use uuid::Uuid;
///
/// let local: IdSet<CanonicalUuid> = IdSet::canonicalize((1..=3).map(Uuid::from_u128));
/// let truth: IdSet<CanonicalUuid> = IdSet::canonicalize([
///     "00000000-0000-0000-0000-000000000001",
///     "{00000000-0000-0000-0000-000000000003}",
/// ]);
/// let p = plan(&local, &truth);
/// assert_eq!(p.delete(), [CanonicalUuid::from(Uuid::from_u128(2))]);
/// assert_eq!(p.keep().len(), 2);
/// ```
pub fn plan<I: CanonicalId>(local: &IdSet<I>, authoritative: &IdSet<I>) -> Plan<I> {
    let sorted = |u: &[Unparseable]| -> Vec<Unparseable> {
        u.iter().cloned().collect::<BTreeSet<_>>().into_iter().collect()
    };
    Plan {
        fingerprint: fingerprint(local, authoritative),
        local: local.ids.len(),
        authoritative: authoritative.ids.len(),
        authoritative_only: authoritative.ids.difference(&local.ids).count(),
        keep: local.ids.intersection(&authoritative.ids).cloned().collect(),
        delete: local.ids.difference(&authoritative.ids).cloned().collect(),
        unparseable: UnparseableIds {
            local: sorted(&local.unparseable),
            authoritative: sorted(&authoritative.unparseable),
        },
    }
}

impl<I: CanonicalId> Plan<I> {
    /// The fingerprint of the inputs the plan was computed from.
    ///
    /// # Examples
    ///
    /// See [`Fingerprint`].
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// Local tenants the source of truth lists, sorted.
    ///
    /// # Examples
    ///
    /// See [`Plan`].
    pub fn keep(&self) -> &[I] {
        &self.keep
    }

    /// Local tenants the source of truth does not list, sorted: the order
    /// execution deletes them in.
    ///
    /// # Examples
    ///
    /// See [`Plan`].
    pub fn delete(&self) -> &[I] {
        &self.delete
    }

    /// The inputs that could not be canonicalised, per side, sorted.
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::reconcile::{CanonicalUuid, IdSet, plan};
    ///
    /// let local: IdSet<CanonicalUuid> = IdSet::canonicalize(["tenant-7"]);
    /// let p = plan(&local, &IdSet::new());
    /// assert_eq!(p.unparseable().local[0].input(), "tenant-7");
    /// assert_eq!(p.unparseable().len(), 1);
    /// assert!(p.delete().is_empty()); // never deleted
    /// ```
    pub fn unparseable(&self) -> &UnparseableIds {
        &self.unparseable
    }

    /// How many canonical tenants the local side holds.
    ///
    /// # Examples
    ///
    /// ```
    /// # use safestash::reconcile::{CanonicalUuid, IdSet, plan};
    /// let local: IdSet<CanonicalUuid> = IdSet::canonicalize((1..=3).map(uuid::Uuid::from_u128));
    /// assert_eq!(plan(&local, &IdSet::new()).local_count(), 3);
    /// ```
    pub fn local_count(&self) -> usize {
        self.local
    }

    /// How many canonical tenants the source of truth lists.
    ///
    /// # Examples
    ///
    /// ```
    /// # use safestash::reconcile::{CanonicalUuid, IdSet, plan};
    /// let truth: IdSet<CanonicalUuid> = IdSet::canonicalize((1..=3).map(uuid::Uuid::from_u128));
    /// assert_eq!(plan(&IdSet::new(), &truth).authoritative_count(), 3);
    /// ```
    pub fn authoritative_count(&self) -> usize {
        self.authoritative
    }

    /// How many tenants the source of truth lists that do not exist
    /// locally (not this plan's business, but worth seeing in a dry run).
    ///
    /// # Examples
    ///
    /// ```
    /// # use safestash::reconcile::{CanonicalUuid, IdSet, plan};
    /// let truth: IdSet<CanonicalUuid> = IdSet::canonicalize((1..=3).map(uuid::Uuid::from_u128));
    /// assert_eq!(plan(&IdSet::new(), &truth).authoritative_only(), 3);
    /// ```
    pub fn authoritative_only(&self) -> usize {
        self.authoritative_only
    }

    /// Every rule the plan breaks under `limits`, whatever the overrides.
    ///
    /// - [`Rule::EmptyAuthority`](super::Rule::EmptyAuthority): the source of truth lists no tenant while
    ///   the local side has some;
    /// - [`Rule::TooMany`](super::Rule::TooMany): more than `limits.max_count` tenants to delete;
    /// - [`Rule::TooLargeShare`](super::Rule::TooLargeShare): more than `limits.max_share` of the local
    ///   tenants to delete (a `max_share` that is NaN refuses any delete);
    /// - [`Rule::Unparseable`](super::Rule::Unparseable): the plan deletes something and any input,
    ///   on either side, could not be canonicalised.
    ///
    /// A plan that deletes nothing breaks no rule: an unparseable id then
    /// cannot make a nightly run fail, and is still reported in
    /// [`unparseable`](Plan::unparseable) (and in
    /// [`ExecutionReport::unparseable`](crate::reconcile::ExecutionReport::unparseable)).
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::reconcile::{CanonicalUuid, IdSet, Limits, plan, Rule};
    ///
    /// let local: IdSet<CanonicalUuid> = IdSet::canonicalize((1..=9).map(uuid::Uuid::from_u128));
    /// let truth: IdSet<CanonicalUuid> = IdSet::canonicalize((1..=2).map(uuid::Uuid::from_u128));
    /// let refusals = plan(&local, &truth).refusals(&Limits::default());
    /// let rules: Vec<Rule> = refusals.iter().map(|r| r.rule()).collect();
    /// assert_eq!(rules, [Rule::TooMany, Rule::TooLargeShare]);
    /// assert_eq!(
    ///     refusals[0].to_string(),
    ///     "refusing to delete 7 of 9 tenants: more than the limit of 5 \
    ///      (rule TooMany; override with Overrides::allow(Rule::TooMany))"
    /// );
    ///
    /// // An id that is not a uuid: refused only when the plan deletes.
    /// let mut raw: Vec<String> = (1..=20).map(|n| uuid::Uuid::from_u128(n).to_string()).collect();
    /// raw.push("legacy-42".into());
    /// let local: IdSet<CanonicalUuid> = IdSet::canonicalize(&raw);
    /// let all: IdSet<CanonicalUuid> = IdSet::canonicalize((1..=20).map(uuid::Uuid::from_u128));
    /// let nothing_gone = plan(&local, &all);
    /// assert!(nothing_gone.refusals(&Limits::default()).is_empty());
    /// assert_eq!(nothing_gone.unparseable().local[0].input(), "legacy-42"); // still reported
    /// let one_gone = plan(&local, &IdSet::canonicalize((2..=20).map(uuid::Uuid::from_u128)));
    /// let rules: Vec<Rule> = one_gone.refusals(&Limits::default()).iter().map(|r| r.rule()).collect();
    /// assert_eq!(rules, [Rule::Unparseable]);
    /// ```
    pub fn refusals(&self, limits: &Limits) -> Vec<Refusal> {
        let mut out = Vec::new();
        if self.authoritative == 0 && self.local > 0 {
            out.push(Refusal::EmptyAuthority { local: self.local });
        }
        let (delete, local) = (self.delete.len(), self.local);
        if delete > 0 {
            if delete > limits.max_count {
                out.push(Refusal::TooMany { delete, local, max_count: limits.max_count });
            }
            let share = delete as f64 / local as f64;
            // Written so that a NaN limit refuses (fails closed).
            #[allow(clippy::neg_cmp_op_on_partial_ord)]
            if !(share <= limits.max_share) {
                out.push(Refusal::TooLargeShare { delete, local, max_share: limits.max_share });
            }
        }
        // Unparseable ids make the deletes uncertain; with nothing to delete
        // there is nothing to refuse (they are still in `unparseable()`).
        if delete > 0 && !self.unparseable.is_empty() {
            out.push(Refusal::Unparseable {
                local: self.unparseable.local.len(),
                authoritative: self.unparseable.authoritative.len(),
            });
        }
        out
    }

    /// Checks the plan under `limits`: refuses it if any rule fires that
    /// `overrides` does not lift, and otherwise returns the refusals the
    /// overrides lifted (empty when none was needed).
    ///
    /// # Errors
    ///
    /// [`ReconcileError::Refused`], naming every rule that fired and was not
    /// lifted, with the numbers.
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::reconcile::{CanonicalUuid, IdSet, Limits, Overrides, plan, Rule};
    ///
    /// let local: IdSet<CanonicalUuid> = IdSet::canonicalize((1..=3).map(uuid::Uuid::from_u128));
    /// let p = plan(&local, &IdSet::new()); // the source of truth returned nothing
    /// let err = p.check(&Limits::default(), &Overrides::none()).unwrap_err();
    /// assert_eq!(err.refused_rules(), [Rule::EmptyAuthority, Rule::TooLargeShare]);
    ///
    /// // Deleting every tenant takes lifting both rules, by name.
    /// let both = Overrides::allow(Rule::EmptyAuthority).and(Rule::TooLargeShare);
    /// assert_eq!(p.check(&Limits::default(), &both)?.len(), 2);
    /// # Ok::<(), safestash::reconcile::ReconcileError>(())
    /// ```
    pub fn check(
        &self,
        limits: &Limits,
        overrides: &Overrides,
    ) -> Result<Vec<Refusal>, ReconcileError> {
        let (lifted, refusals): (Vec<_>, Vec<_>) =
            self.refusals(limits).into_iter().partition(|r| overrides.allows(r.rule()));
        if refusals.is_empty() { Ok(lifted) } else { Err(ReconcileError::Refused { refusals }) }
    }
}

impl<I: CanonicalId> fmt::Display for Plan<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "plan {}", self.fingerprint)?;
        writeln!(f, "  local tenants:    {}", self.local)?;
        writeln!(
            f,
            "  source of truth:  {} ({} not present locally)",
            self.authoritative, self.authoritative_only
        )?;
        writeln!(f, "  keep:             {}", self.keep.len())?;
        writeln!(f, "  delete:           {}", self.delete.len())?;
        for id in &self.delete {
            writeln!(f, "    - {id}")?;
        }
        if self.unparseable.is_empty() {
            write!(f, "  unparseable ids:  none")
        } else {
            write!(f, "  unparseable ids:  {} (never deleted)", self.unparseable.len())?;
            let sides =
                [("local", &self.unparseable.local), ("truth", &self.unparseable.authoritative)];
            for (side, list) in sides {
                for u in list {
                    write!(f, "\n    - {side}: {u}")?;
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::{CanonicalUuid, Rule};
    use uuid::Uuid;

    fn id(n: u128) -> CanonicalUuid {
        CanonicalUuid::from(Uuid::from_u128(n))
    }

    fn set(ns: impl IntoIterator<Item = u128>) -> IdSet<CanonicalUuid> {
        ns.into_iter().map(id).collect()
    }

    #[test]
    fn fingerprint_depends_on_canonical_content_only() {
        let a = IdSet::<CanonicalUuid>::canonicalize([
            "00000000-0000-0000-0000-000000000001",
            "x",
            "y",
        ]);
        let b = IdSet::<CanonicalUuid>::canonicalize([
            "y",
            "{00000000-0000-0000-0000-000000000001}",
            "x",
            "x",
        ]);
        assert_eq!(fingerprint(&a, &set([2])), fingerprint(&b, &set([2])));
        assert_eq!(plan(&a, &set([2])), plan(&b, &set([2])));
        // Sides are not interchangeable, and every id counts.
        assert_ne!(fingerprint(&set([1]), &set([2])), fingerprint(&set([2]), &set([1])));
        assert_ne!(fingerprint(&set([1]), &set([])), fingerprint(&set([1]), &set([1])));
        let c = IdSet::<CanonicalUuid>::canonicalize(["00000000-0000-0000-0000-000000000001", "x"]);
        assert_ne!(fingerprint(&a, &set([2])), fingerprint(&c, &set([2])));
        let fp = fingerprint(&a, &set([2]));
        assert_eq!(fp.to_string().parse::<Fingerprint>().unwrap(), fp);
        assert!("ABC".parse::<Fingerprint>().is_err());
        assert!(fp.to_string().to_uppercase().parse::<Fingerprint>().is_err());
    }

    #[test]
    fn limits_are_exceeded_only_strictly() {
        let limits = Limits::default();
        // 5 of 50 (10%): at both limits, allowed.
        assert!(plan(&set(1..=50), &set(6..=50)).refusals(&limits).is_empty());
        // 6 of 60 (10%): one too many, share exactly at the limit.
        let r = plan(&set(1..=60), &set(7..=60)).refusals(&limits);
        assert_eq!(r, [Refusal::TooMany { delete: 6, local: 60, max_count: 5 }]);
        // 2 of 10 (20%): few, but too large a share.
        let r = plan(&set(1..=10), &set(3..=10)).refusals(&limits);
        assert_eq!(r, [Refusal::TooLargeShare { delete: 2, local: 10, max_share: 0.10 }]);
        // 1 of 10 (10%): allowed.
        assert!(plan(&set(1..=10), &set(2..=10)).refusals(&limits).is_empty());
        // Nothing to delete: no limit applies, even a negative one.
        let strict = Limits::default().max_share(-1.0).max_count(0);
        assert!(plan(&set(1..=3), &set(1..=3)).refusals(&strict).is_empty());
    }

    #[test]
    fn a_nan_share_limit_fails_closed() {
        let r = plan(&set(1..=100), &set(2..=100)).refusals(&Limits::default().max_share(f64::NAN));
        assert_eq!(r.iter().map(Refusal::rule).collect::<Vec<_>>(), [Rule::TooLargeShare]);
    }

    #[test]
    fn empty_authority_fires_only_with_local_tenants() {
        let limits = Limits::default();
        assert!(plan(&set([]), &set([])).refusals(&limits).is_empty());
        let rules: Vec<Rule> =
            plan(&set([1]), &set([])).refusals(&limits).iter().map(Refusal::rule).collect();
        assert_eq!(rules, [Rule::EmptyAuthority, Rule::TooLargeShare]);
        // Only unparseable ids in the truth: it is empty, and uncertain.
        let truth = IdSet::canonicalize(["garbled"]);
        let rules: Vec<Rule> =
            plan(&set([1]), &truth).refusals(&limits).iter().map(Refusal::rule).collect();
        assert_eq!(rules, [Rule::EmptyAuthority, Rule::TooLargeShare, Rule::Unparseable]);
    }

    #[test]
    fn unparseable_ids_refuse_only_a_plan_that_deletes() {
        let limits = Limits::default();
        let local = IdSet::canonicalize(["00000000-0000-0000-0000-000000000001", "bad"]);
        let truth = IdSet::canonicalize(["00000000-0000-0000-0000-000000000001", "BAD"]);
        let p = plan::<CanonicalUuid>(&local, &truth);
        assert!(p.delete().is_empty() && p.unparseable().len() == 2);
        assert!(p.refusals(&limits).is_empty());
        assert!(p.check(&limits, &Overrides::none()).unwrap().is_empty());
        // No ids at all locally but junk: nothing to delete either.
        let junk = IdSet::canonicalize(["bad"]);
        assert!(plan::<CanonicalUuid>(&junk, &IdSet::new()).refusals(&limits).is_empty());
    }

    #[test]
    fn refusal_messages_name_rule_numbers_and_override() {
        let msg = |r: Refusal| r.to_string();
        assert_eq!(
            msg(Refusal::TooMany { delete: 7, local: 9, max_count: 5 }),
            "refusing to delete 7 of 9 tenants: more than the limit of 5 \
             (rule TooMany; override with Overrides::allow(Rule::TooMany))"
        );
        assert_eq!(
            msg(Refusal::TooLargeShare { delete: 2, local: 3, max_share: 0.07 }),
            "refusing to delete 2 of 3 tenants (66.67%): more than the limit of 7% \
             (rule TooLargeShare; override with Overrides::allow(Rule::TooLargeShare))"
        );
        assert_eq!(
            msg(Refusal::EmptyAuthority { local: 4 }),
            "refusing to delete: the source of truth lists no tenants while 4 exist locally \
             (it may have failed) (rule EmptyAuthority; override with \
             Overrides::allow(Rule::EmptyAuthority))"
        );
        assert_eq!(
            msg(Refusal::Unparseable { local: 1, authoritative: 2 }),
            "refusing to delete: 3 input ids could not be canonicalised (1 local, 2 in the \
             source of truth) (rule Unparseable; override with Overrides::allow(Rule::Unparseable))"
        );
        let err = plan(&set(1..=9), &set([8, 9])).check(&Limits::default(), &Overrides::none());
        let err = err.unwrap_err().to_string();
        assert!(
            err.contains("rule TooMany")
                && err.contains("; refusing to delete 7 of 9 tenants (77.78%)"),
            "{err}"
        );
    }

    #[test]
    fn plan_display_lists_deletions_and_unparseable_ids() {
        let local = IdSet::canonicalize(["00000000-0000-0000-0000-000000000001", "bad local"]);
        let truth = IdSet::canonicalize(["BAD"]);
        let text = plan::<CanonicalUuid>(&local, &truth).to_string();
        assert!(
            text.contains("  delete:           1\n    - 00000000-0000-0000-0000-000000000001\n"),
            "{text}"
        );
        assert!(text.contains("unparseable ids:  2 (never deleted)"), "{text}");
        assert!(text.contains("- local: \"bad local\" is not a valid id"), "{text}");
        assert!(text.contains("- truth: \"BAD\" is not a valid id"), "{text}");
    }
}
