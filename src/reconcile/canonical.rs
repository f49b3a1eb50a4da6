//! Canonical ids: the only kind of id a reconciliation is computed on.
//!
//! A nightly sync once computed `local_tenants - auth_tenants` where one side
//! held UUID values and the other UUID strings. Nothing compared equal, so
//! every tenant looked deleted, and every tenant's call logs and recordings
//! were purged. This module makes that class of bug unrepresentable:
//!
//! **Canonical ids only.** Both sides are converted to one [`CanonicalId`]
//! type before any set arithmetic: an [`IdSet`] can only be built from
//! canonical ids, or by canonicalising raw inputs (any [`Canonicalize`]
//! type), and [`plan`](fn@crate::reconcile::plan) accepts nothing else. For UUIDs,
//! [`CanonicalUuid`] maps values and strings in any case, braced, with a
//! `urn:uuid:` prefix or without hyphens onto one form. An id that cannot be
//! canonicalised is reported ([`Unparseable`]), never deleted.
//!
//! The rest of the guard is in [`plan`](mod@crate::reconcile::plan) (what to delete, and
//! when to refuse) and [`reconcile`](crate::reconcile) (stash before delete).

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::Result;

/// An identifier type in canonical form: the only kind of id a plan is
/// computed on.
///
/// Implement it only for a type whose values are canonical, that is, one
/// value per identity (a newtype built by parsing, like [`CanonicalUuid`]),
/// never for a raw representation such as a `String` that may hold the same
/// id in several spellings. `Display` must be injective (two ids display the
/// same only if they are equal): it names the tenant's stash
/// ([`tenant_key`](crate::reconcile::tenant_key)) and feeds the plan's
/// [`Fingerprint`](crate::reconcile::Fingerprint). Raw inputs are turned into the type
/// through [`Canonicalize`].
///
/// # Examples
///
/// ```
/// use safestash::reconcile::{CanonicalId, Canonicalize, IdSet, Unparseable};
/// use serde::{Deserialize, Serialize};
///
/// /// Account numbers, canonically without leading zeros.
/// #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
/// struct Account(u64);
///
/// impl std::fmt::Display for Account {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         write!(f, "{}", self.0)
///     }
/// }
///
/// impl CanonicalId for Account {}
///
/// impl Canonicalize<Account> for str {
///     fn canonicalize(&self) -> Result<Account, Unparseable> {
///         self.parse().map(Account).map_err(|e| Unparseable::new(self, e))
///     }
/// }
///
/// let ids: IdSet<Account> = IdSet::canonicalize(["0042", "42", "x"]);
/// assert_eq!(ids.len(), 1);
/// assert_eq!(ids.unparseable().len(), 1);
/// ```
pub trait CanonicalId:
    Ord + Clone + fmt::Display + fmt::Debug + Serialize + DeserializeOwned
{
}

/// A raw input that can be turned into the canonical id type `I`.
///
/// Implemented for [`CanonicalUuid`] by `str`, `String`, [`uuid::Uuid`],
/// [`CanonicalUuid`] itself, and any reference to one of these.
///
/// # Errors
///
/// [`Unparseable`] when the input is not an id of type `I`.
///
/// # Examples
///
/// ```
/// use safestash::reconcile::{Canonicalize, CanonicalUuid};
///
/// let from_text: CanonicalUuid = "{6F9619FF-8B86-D011-B42D-00C04FC964FF}".canonicalize()?;
/// let from_value: CanonicalUuid = uuid::Uuid::from_u128(0x6f9619ff_8b86_d011_b42d_00c04fc964ff).canonicalize()?;
/// assert_eq!(from_text, from_value);
/// # Ok::<(), safestash::reconcile::Unparseable>(())
/// ```
pub trait Canonicalize<I: CanonicalId> {
    /// The canonical id this input denotes.
    ///
    /// # Errors
    ///
    /// [`Unparseable`], holding the input and the reason.
    ///
    /// # Examples
    ///
    /// See [`Canonicalize`].
    fn canonicalize(&self) -> Result<I, Unparseable>;
}

impl<I: CanonicalId, T: Canonicalize<I> + ?Sized> Canonicalize<I> for &T {
    fn canonicalize(&self) -> Result<I, Unparseable> {
        (**self).canonicalize()
    }
}

/// Canonicalises one raw id: the entry point for a single input.
///
/// # Errors
///
/// [`Unparseable`] when `raw` is not an id of type `I`.
///
/// # Examples
///
/// ```
/// use safestash::reconcile::{canonicalize, CanonicalUuid};
///
/// let id = canonicalize::<CanonicalUuid>("urn:uuid:6f9619ff-8b86-d011-b42d-00c04fc964ff")?;
/// assert_eq!(id.to_string(), "6f9619ff-8b86-d011-b42d-00c04fc964ff");
/// assert!(canonicalize::<CanonicalUuid>("6f9619ff").is_err());
/// # Ok::<(), safestash::reconcile::Unparseable>(())
/// ```
pub fn canonicalize<I: CanonicalId>(
    raw: &(impl Canonicalize<I> + ?Sized),
) -> Result<I, Unparseable> {
    raw.canonicalize()
}

/// An input id that could not be canonicalised: never planned for deletion,
/// always reported.
///
/// # Examples
///
/// ```
/// let err = "not-a-uuid".parse::<safestash::reconcile::CanonicalUuid>().unwrap_err();
/// assert_eq!(err.input(), "not-a-uuid");
/// assert!(err.to_string().starts_with("\"not-a-uuid\" is not a valid id: "));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Unparseable {
    input: String,
    reason: String,
}

impl Unparseable {
    /// The input `input` (as text) is not an id, because of `reason`.
    ///
    /// # Examples
    ///
    /// ```
    /// let u = safestash::reconcile::Unparseable::new("x", "too short");
    /// assert_eq!(u.reason(), "too short");
    /// ```
    pub fn new(input: impl Into<String>, reason: impl fmt::Display) -> Unparseable {
        Unparseable { input: input.into(), reason: reason.to_string() }
    }

    /// The rejected input.
    ///
    /// # Examples
    ///
    /// See [`Unparseable`].
    pub fn input(&self) -> &str {
        &self.input
    }

    /// Why it was rejected.
    ///
    /// # Examples
    ///
    /// See [`Unparseable::new`].
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for Unparseable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not a valid id: {}", self.input, self.reason)
    }
}

impl std::error::Error for Unparseable {}

/// A UUID in canonical form, the built-in [`CanonicalId`]: it can only be
/// built by canonicalising, and displays and serializes as lowercase
/// hyphenated text (`6f9619ff-8b86-d011-b42d-00c04fc964ff`).
///
/// Parsing accepts, in any letter case: hyphenated
/// (`6F9619FF-8B86-D011-B42D-00C04FC964FF`), simple
/// (`6f9619ff8b86d011b42d00c04fc964ff`), braced
/// (`{6f9619ff-8b86-d011-b42d-00c04fc964ff}`) and URN
/// (`urn:uuid:6f9619ff-8b86-d011-b42d-00c04fc964ff`). Nothing else: not
/// surrounding whitespace, not a truncated or padded form; such an input
/// is [`Unparseable`].
///
/// # Examples
///
/// ```
/// use safestash::reconcile::CanonicalUuid;
///
/// let spellings = [
///     "6f9619ff-8b86-d011-b42d-00c04fc964ff",
///     "6F9619FF-8B86-D011-B42D-00C04FC964FF",
///     "{6f9619ff-8b86-d011-b42d-00c04fc964ff}",
///     "URN:UUID:6F9619FF-8B86-D011-B42D-00C04FC964FF",
///     "6f9619ff8b86d011b42d00c04fc964ff",
/// ];
/// let ids: Vec<CanonicalUuid> = spellings.iter().map(|s| s.parse()).collect::<Result<_, _>>()?;
/// assert!(ids.iter().all(|id| *id == ids[0]));
/// assert_eq!(ids[0], CanonicalUuid::from(uuid::Uuid::from_u128(0x6f9619ff_8b86_d011_b42d_00c04fc964ff)));
/// assert_eq!(ids[0].to_string(), spellings[0]);
/// assert!(" 6f9619ff-8b86-d011-b42d-00c04fc964ff".parse::<CanonicalUuid>().is_err());
/// # Ok::<(), safestash::reconcile::Unparseable>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CanonicalUuid(Uuid);

impl CanonicalUuid {
    /// The UUID value.
    ///
    /// # Examples
    ///
    /// ```
    /// let u = uuid::Uuid::from_u128(7);
    /// assert_eq!(safestash::reconcile::CanonicalUuid::from(u).uuid(), u);
    /// ```
    pub fn uuid(&self) -> Uuid {
        self.0
    }
}

fn parse_uuid(raw: &str) -> Result<Uuid, Unparseable> {
    const URN: &str = "urn:uuid:";
    let body = match raw.get(..URN.len()) {
        // The URN prefix is case-insensitive (RFC 9562); the uuid crate
        // only knows it in lowercase.
        Some(prefix) if prefix.eq_ignore_ascii_case(URN) => {
            let body = &raw[URN.len()..];
            if body.len() != 36 {
                return Err(Unparseable::new(raw, "a urn:uuid: must hold a hyphenated UUID"));
            }
            body
        }
        _ => raw,
    };
    Uuid::try_parse(body).map_err(|e| Unparseable::new(raw, e))
}

impl Canonicalize<CanonicalUuid> for str {
    fn canonicalize(&self) -> Result<CanonicalUuid, Unparseable> {
        parse_uuid(self).map(CanonicalUuid)
    }
}

impl Canonicalize<CanonicalUuid> for String {
    fn canonicalize(&self) -> Result<CanonicalUuid, Unparseable> {
        self.as_str().canonicalize()
    }
}

impl Canonicalize<CanonicalUuid> for Uuid {
    fn canonicalize(&self) -> Result<CanonicalUuid, Unparseable> {
        Ok(CanonicalUuid(*self))
    }
}

impl Canonicalize<CanonicalUuid> for CanonicalUuid {
    fn canonicalize(&self) -> Result<CanonicalUuid, Unparseable> {
        Ok(*self)
    }
}

impl CanonicalId for CanonicalUuid {}

impl From<Uuid> for CanonicalUuid {
    fn from(uuid: Uuid) -> CanonicalUuid {
        CanonicalUuid(uuid)
    }
}

impl From<CanonicalUuid> for Uuid {
    fn from(id: CanonicalUuid) -> Uuid {
        id.0
    }
}

impl TryFrom<&str> for CanonicalUuid {
    type Error = Unparseable;

    fn try_from(s: &str) -> Result<CanonicalUuid, Unparseable> {
        s.canonicalize()
    }
}

impl TryFrom<String> for CanonicalUuid {
    type Error = Unparseable;

    fn try_from(s: String) -> Result<CanonicalUuid, Unparseable> {
        s.canonicalize()
    }
}

impl FromStr for CanonicalUuid {
    type Err = Unparseable;

    fn from_str(s: &str) -> Result<CanonicalUuid, Unparseable> {
        s.canonicalize()
    }
}

impl fmt::Display for CanonicalUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for CanonicalUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CanonicalUuid({})", self.0.hyphenated())
    }
}

impl Serialize for CanonicalUuid {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0.hyphenated())
    }
}

impl<'de> Deserialize<'de> for CanonicalUuid {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.canonicalize().map_err(serde::de::Error::custom)
    }
}

/// One side of a reconciliation: a set of canonical ids, and the inputs
/// that could not be canonicalised. The only input [`plan`](fn@crate::reconcile::plan)
/// takes.
///
/// # Examples
///
/// ```
/// use safestash::reconcile::{CanonicalUuid, IdSet};
///
/// // The local side yields uuid values, the source of truth strings.
/// let local: IdSet<CanonicalUuid> = IdSet::canonicalize([uuid::Uuid::from_u128(1)]);
/// let truth: IdSet<CanonicalUuid> =
///     IdSet::canonicalize(["00000000-0000-0000-0000-000000000001", "garbage"]);
/// assert_eq!(local.ids(), truth.ids());
/// assert_eq!(truth.unparseable()[0].input(), "garbage");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdSet<I> {
    pub(crate) ids: BTreeSet<I>,
    pub(crate) unparseable: Vec<Unparseable>,
}

impl<I> Default for IdSet<I> {
    fn default() -> Self {
        IdSet { ids: BTreeSet::new(), unparseable: Vec::new() }
    }
}

impl<I: CanonicalId> IdSet<I> {
    /// An empty set.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(safestash::reconcile::IdSet::<safestash::reconcile::CanonicalUuid>::new().is_empty());
    /// ```
    pub fn new() -> IdSet<I> {
        IdSet::default()
    }

    /// Canonicalises every raw input: ids go into the set (duplicates in
    /// different spellings collapse), the rest into
    /// [`unparseable`](IdSet::unparseable).
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::reconcile::{CanonicalUuid, IdSet};
    ///
    /// let ids: IdSet<CanonicalUuid> = IdSet::canonicalize(vec![
    ///     "6f9619ff-8b86-d011-b42d-00c04fc964ff".to_owned(),
    ///     "6F9619FF8B86D011B42D00C04FC964FF".to_owned(),
    /// ]);
    /// assert_eq!(ids.len(), 1);
    /// ```
    pub fn canonicalize<R: Canonicalize<I>>(raw: impl IntoIterator<Item = R>) -> IdSet<I> {
        let mut set = IdSet::new();
        for r in raw {
            set.insert_raw(&r);
        }
        set
    }

    /// Adds a canonical id; returns whether it was new.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut ids = safestash::reconcile::IdSet::new();
    /// assert!(ids.insert(safestash::reconcile::CanonicalUuid::from(uuid::Uuid::from_u128(1))));
    /// ```
    pub fn insert(&mut self, id: I) -> bool {
        self.ids.insert(id)
    }

    /// Canonicalises and adds one raw input; returns whether a new id was
    /// added. An input that cannot be canonicalised is recorded in
    /// [`unparseable`](IdSet::unparseable).
    ///
    /// # Examples
    ///
    /// ```
    /// let mut ids = safestash::reconcile::IdSet::<safestash::reconcile::CanonicalUuid>::new();
    /// assert!(ids.insert_raw("00000000000000000000000000000001"));
    /// assert!(!ids.insert_raw("not an id"));
    /// assert_eq!((ids.len(), ids.unparseable().len()), (1, 1));
    /// ```
    pub fn insert_raw<R: Canonicalize<I> + ?Sized>(&mut self, raw: &R) -> bool {
        match raw.canonicalize() {
            Ok(id) => self.ids.insert(id),
            Err(u) => {
                self.unparseable.push(u);
                false
            }
        }
    }

    /// The canonical ids, sorted.
    ///
    /// # Examples
    ///
    /// See [`IdSet`].
    pub fn ids(&self) -> &BTreeSet<I> {
        &self.ids
    }

    /// The inputs that could not be canonicalised, in input order.
    ///
    /// # Examples
    ///
    /// See [`IdSet`].
    pub fn unparseable(&self) -> &[Unparseable] {
        &self.unparseable
    }

    /// Whether `id` is in the set.
    ///
    /// # Examples
    ///
    /// ```
    /// let id = safestash::reconcile::CanonicalUuid::from(uuid::Uuid::from_u128(1));
    /// assert!(safestash::reconcile::IdSet::from_iter([id]).contains(&id));
    /// ```
    pub fn contains(&self, id: &I) -> bool {
        self.ids.contains(id)
    }

    /// How many canonical ids the set holds.
    ///
    /// # Examples
    ///
    /// See [`IdSet::canonicalize`].
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the set holds no canonical id (it may still have
    /// [`unparseable`](IdSet::unparseable) inputs).
    ///
    /// # Examples
    ///
    /// ```
    /// let ids = safestash::reconcile::IdSet::<safestash::reconcile::CanonicalUuid>::canonicalize(["x"]);
    /// assert!(ids.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

impl<I: CanonicalId> FromIterator<I> for IdSet<I> {
    fn from_iter<T: IntoIterator<Item = I>>(iter: T) -> Self {
        IdSet { ids: iter.into_iter().collect(), unparseable: Vec::new() }
    }
}

impl<I: CanonicalId> From<BTreeSet<I>> for IdSet<I> {
    fn from(ids: BTreeSet<I>) -> Self {
        IdSet { ids, unparseable: Vec::new() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> CanonicalUuid {
        CanonicalUuid::from(Uuid::from_u128(n))
    }

    #[test]
    fn every_spelling_maps_to_one_canonical_form() {
        let want = "6f9619ff-8b86-d011-b42d-00c04fc964ff";
        for raw in [
            want,
            "6F9619FF-8B86-D011-B42D-00C04FC964FF",
            "6f9619FF-8b86-D011-b42d-00C04fc964ff",
            "{6f9619ff-8b86-d011-b42d-00c04fc964ff}",
            "{6F9619FF-8B86-D011-B42D-00C04FC964FF}",
            "urn:uuid:6f9619ff-8b86-d011-b42d-00c04fc964ff",
            "URN:UUID:6F9619FF-8B86-D011-B42D-00C04FC964FF",
            "Urn:Uuid:6f9619ff-8b86-d011-b42d-00c04fc964ff",
            "6f9619ff8b86d011b42d00c04fc964ff",
            "6F9619FF8B86D011B42D00C04FC964FF",
        ] {
            let got: CanonicalUuid = raw.parse().unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(got.to_string(), want, "{raw}");
        }
    }

    #[test]
    fn rejects_everything_else_with_the_input() {
        for raw in [
            "",
            "6f9619ff",
            " 6f9619ff-8b86-d011-b42d-00c04fc964ff",
            "6f9619ff-8b86-d011-b42d-00c04fc964ff\n",
            "6f9619ff-8b86-d011-b42d-00c04fc964fg",
            "6f9619ff-8b86-d011-b42d-00c04fc964ff0",
            "{6f9619ff-8b86-d011-b42d-00c04fc964ff",
            "urn:uuid:6f9619ff8b86d011b42d00c04fc964ff",
            "urn:uuid:{6f9619ff-8b86-d011-b42d-00c04fc964ff}",
            "urn:6f9619ff-8b86-d011-b42d-00c04fc964ff",
            "6f9619ff_8b86_d011_b42d_00c04fc964ff",
            "ééééééééé",
        ] {
            let err = raw.parse::<CanonicalUuid>().unwrap_err();
            assert_eq!(err.input(), raw);
            assert!(!err.reason().is_empty());
        }
    }

    #[test]
    fn serde_round_trips_in_canonical_form() {
        let x = id(0xabc);
        let json = serde_json::to_string(&x).unwrap();
        assert_eq!(json, "\"00000000-0000-0000-0000-000000000abc\"");
        assert_eq!(
            serde_json::from_str::<CanonicalUuid>("\"{00000000-0000-0000-0000-000000000ABC}\"")
                .unwrap(),
            x
        );
        assert!(serde_json::from_str::<CanonicalUuid>("\"abc\"").is_err());
    }
}
