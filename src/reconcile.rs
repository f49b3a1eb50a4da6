//! The destructive-plan guard for tenant deletes: canonical ids,
//! blast-radius limits, and a stash before every delete.
//!
//! A nightly sync once computed `local_tenants - auth_tenants` where one side
//! held UUID values and the other UUID strings. Nothing compared equal, so
//! every tenant looked deleted, and every tenant's call logs and recordings
//! were purged. This module makes that class of bug unrepresentable and
//! survivable:
//!
//! 1. **Canonical ids only.** Both sides are converted to one
//!    [`CanonicalId`] type before any set arithmetic: an [`IdSet`] can only
//!    be built from canonical ids, or by canonicalising raw inputs (any
//!    [`Canonicalize`] type), and [`plan`] accepts nothing else. For UUIDs,
//!    [`CanonicalUuid`] maps values and strings in any case, braced, with a
//!    `urn:uuid:` prefix or without hyphens onto one form. An id that cannot
//!    be canonicalised is reported ([`Unparseable`]), never deleted.
//! 2. **Refuse plans that look wrong.** [`Reconciler::execute`] refuses an
//!    empty source of truth, a delete of too many tenants or too large a
//!    share ([`Limits`]), and unparseable input, unless the caller lifts the
//!    [`Rule`] by name ([`Overrides`]). A plan only executes against the
//!    inputs it was computed from (its [`Fingerprint`]).
//! 3. **Stash before delete.** Each tenant is exported, stashed durably
//!    under [`tenant_key`], and only then deleted; [`restore_tenant`] puts a
//!    wrongly deleted tenant back, and [`purge_expired`] ends the retention.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::fs::{Fs, OsFs};
use crate::key::StashKey;
use crate::meta::{Receipt, SaveOptions};
use crate::observe::{BoxError, Event};
use crate::restore::Restorer;
use crate::rollback::Restored;
use crate::store::Store;

/// The kind label of every tenant stash written by [`Reconciler::execute`].
///
/// # Examples
///
/// ```
/// assert_eq!(safestash::TENANT_SNAPSHOT_KIND, "tenant-snapshot");
/// ```
pub const TENANT_SNAPSHOT_KIND: &str = "tenant-snapshot";

/// What every tenant key starts with: `tenant/` escaped by
/// [`StashKey::from_any`].
const TENANT_KEY_PREFIX: &str = "tenant_2F";

/// The default retention of tenant stashes: 30 days.
const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// An identifier type in canonical form: the only kind of id a plan is
/// computed on.
///
/// Implement it only for a type whose values are canonical, that is, one
/// value per identity (a newtype built by parsing, like [`CanonicalUuid`]),
/// never for a raw representation such as a `String` that may hold the same
/// id in several spellings. `Display` must be injective (two ids display the
/// same only if they are equal): it names the tenant's stash
/// ([`tenant_key`]) and feeds the plan's [`Fingerprint`]. Raw inputs are
/// turned into the type through [`Canonicalize`].
///
/// # Examples
///
/// ```
/// use safestash::{CanonicalId, Canonicalize, IdSet, Unparseable};
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
/// use safestash::{CanonicalUuid, Canonicalize};
///
/// let from_text: CanonicalUuid = "{6F9619FF-8B86-D011-B42D-00C04FC964FF}".canonicalize()?;
/// let from_value: CanonicalUuid = uuid::Uuid::from_u128(0x6f9619ff_8b86_d011_b42d_00c04fc964ff).canonicalize()?;
/// assert_eq!(from_text, from_value);
/// # Ok::<(), safestash::Unparseable>(())
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
/// use safestash::{CanonicalUuid, canonicalize};
///
/// let id = canonicalize::<CanonicalUuid>("urn:uuid:6f9619ff-8b86-d011-b42d-00c04fc964ff")?;
/// assert_eq!(id.to_string(), "6f9619ff-8b86-d011-b42d-00c04fc964ff");
/// assert!(canonicalize::<CanonicalUuid>("6f9619ff").is_err());
/// # Ok::<(), safestash::Unparseable>(())
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
/// let err = "not-a-uuid".parse::<safestash::CanonicalUuid>().unwrap_err();
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
    /// let u = safestash::Unparseable::new("x", "too short");
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
/// use safestash::CanonicalUuid;
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
/// # Ok::<(), safestash::Unparseable>(())
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
    /// assert_eq!(safestash::CanonicalUuid::from(u).uuid(), u);
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
/// that could not be canonicalised. The only input [`plan`] takes.
///
/// # Examples
///
/// ```
/// use safestash::{CanonicalUuid, IdSet};
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
    ids: BTreeSet<I>,
    unparseable: Vec<Unparseable>,
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
    /// assert!(safestash::IdSet::<safestash::CanonicalUuid>::new().is_empty());
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
    /// use safestash::{CanonicalUuid, IdSet};
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
    /// let mut ids = safestash::IdSet::new();
    /// assert!(ids.insert(safestash::CanonicalUuid::from(uuid::Uuid::from_u128(1))));
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
    /// let mut ids = safestash::IdSet::<safestash::CanonicalUuid>::new();
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
    /// let id = safestash::CanonicalUuid::from(uuid::Uuid::from_u128(1));
    /// assert!(safestash::IdSet::from_iter([id]).contains(&id));
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
    /// let ids = safestash::IdSet::<safestash::CanonicalUuid>::canonicalize(["x"]);
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

/// The SHA-256 of a plan's canonical, sorted inputs (both sides' ids and
/// unparseable inputs): a plan executes only against inputs with the same
/// fingerprint. Also the origin of every stash the plan writes.
///
/// # Examples
///
/// ```
/// use safestash::{CanonicalUuid, IdSet, plan};
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
    /// # let p = safestash::plan::<safestash::CanonicalUuid>(&Default::default(), &Default::default());
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
/// [`plan`], checked and run by [`Reconciler`].
///
/// A plan is `Serialize` (for a dry run's log or an approval step) and
/// `Display` (for a person). It can be deserialized too: execution
/// recomputes the plan from the inputs and refuses any difference, so an
/// edited plan never runs.
///
/// # Examples
///
/// ```
/// use safestash::{CanonicalUuid, IdSet, plan};
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
    fingerprint: Fingerprint,
    local: usize,
    authoritative: usize,
    authoritative_only: usize,
    keep: Vec<I>,
    delete: Vec<I>,
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
/// use safestash::{CanonicalUuid, IdSet, plan};
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
/// use safestash::{IdSet, plan};
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
/// use safestash::{CanonicalUuid, IdSet, plan};
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
    /// use safestash::{CanonicalUuid, IdSet, plan};
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
    /// # use safestash::{CanonicalUuid, IdSet, plan};
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
    /// # use safestash::{CanonicalUuid, IdSet, plan};
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
    /// # use safestash::{CanonicalUuid, IdSet, plan};
    /// let truth: IdSet<CanonicalUuid> = IdSet::canonicalize((1..=3).map(uuid::Uuid::from_u128));
    /// assert_eq!(plan(&IdSet::new(), &truth).authoritative_only(), 3);
    /// ```
    pub fn authoritative_only(&self) -> usize {
        self.authoritative_only
    }

    /// Every rule the plan breaks under `limits`, whatever the overrides.
    ///
    /// - [`Rule::EmptyAuthority`]: the source of truth lists no tenant while
    ///   the local side has some;
    /// - [`Rule::TooMany`]: more than `limits.max_count` tenants to delete;
    /// - [`Rule::TooLargeShare`]: more than `limits.max_share` of the local
    ///   tenants to delete (a `max_share` that is NaN refuses any delete);
    /// - [`Rule::Unparseable`]: any input, on either side, could not be
    ///   canonicalised.
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::{CanonicalUuid, IdSet, Limits, Rule, plan};
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
        if !self.unparseable.is_empty() {
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
    /// use safestash::{CanonicalUuid, IdSet, Limits, Overrides, Rule, plan};
    ///
    /// let local: IdSet<CanonicalUuid> = IdSet::canonicalize((1..=3).map(uuid::Uuid::from_u128));
    /// let p = plan(&local, &IdSet::new()); // the source of truth returned nothing
    /// let err = p.check(&Limits::default(), &Overrides::none()).unwrap_err();
    /// assert_eq!(err.refused_rules(), [Rule::EmptyAuthority, Rule::TooLargeShare]);
    ///
    /// // Deleting every tenant takes lifting both rules, by name.
    /// let both = Overrides::allow(Rule::EmptyAuthority).and(Rule::TooLargeShare);
    /// assert_eq!(p.check(&Limits::default(), &both)?.len(), 2);
    /// # Ok::<(), safestash::ReconcileError>(())
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

/// A rule that refuses a plan unless the caller lifts it by name.
///
/// # Examples
///
/// ```
/// use safestash::{Overrides, Rule};
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
    /// An input id, on either side, could not be canonicalised.
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
/// use safestash::{Overrides, Rule};
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
/// use safestash::Limits;
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
    /// assert_eq!(safestash::Limits::new(), safestash::Limits::default());
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
/// See [`Plan::refusals`].
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
    /// See [`Plan::refusals`].
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

fn join_refusals(refusals: &[Refusal]) -> String {
    refusals.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// Everything the guard refuses or fails at. Tenants are named by their
/// canonical id's text.
///
/// # Examples
///
/// ```
/// use safestash::{CanonicalUuid, IdSet, Limits, Overrides, ReconcileError, Rule, plan};
///
/// let local: IdSet<CanonicalUuid> = IdSet::canonicalize(["not-a-uuid"]);
/// match plan(&local, &IdSet::new()).check(&Limits::default(), &Overrides::none()) {
///     Err(ReconcileError::Refused { refusals }) => assert_eq!(refusals[0].rule(), Rule::Unparseable),
///     other => panic!("expected a refusal, got {other:?}"),
/// }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReconcileError {
    /// The plan breaks rules the caller did not lift. Nothing was done.
    #[error("{}", join_refusals(refusals))]
    Refused {
        /// Every rule that fired and was not lifted.
        refusals: Vec<Refusal>,
    },
    /// The inputs are not the ones the plan was computed from. Nothing was
    /// done.
    #[error(
        "refusing to execute a stale plan: it was computed from inputs with fingerprint \
         {planned}, the inputs now have fingerprint {current}; compute a new plan"
    )]
    Stale {
        /// The plan's fingerprint.
        planned: Fingerprint,
        /// The fingerprint of the inputs given to execute it.
        current: Fingerprint,
    },
    /// The plan differs from the one its inputs give (it was edited after
    /// it was computed). Nothing was done.
    #[error(
        "refusing to execute plan {fingerprint}: it differs from the plan its inputs give \
         (was it edited?)"
    )]
    Altered {
        /// The plan's fingerprint.
        fingerprint: Fingerprint,
    },
    /// The exporter failed: nothing was stashed or deleted for the tenant.
    #[error("failed to export tenant {tenant}; nothing was deleted for it")]
    Export {
        /// The tenant.
        tenant: String,
        /// The exporter's error.
        #[source]
        source: BoxError,
    },
    /// The snapshot could not be stashed (or an existing stash read):
    /// the tenant was not deleted.
    #[error("failed to stash tenant {tenant} under `{key}`; nothing was deleted for it")]
    Stash {
        /// The tenant.
        tenant: String,
        /// Its stash key.
        key: StashKey,
        /// The store's error.
        #[source]
        source: Box<Error>,
    },
    /// The tenant already has a stash (from an earlier run whose delete
    /// failed, say). It is never overwritten, and the tenant is not deleted.
    #[error(
        "tenant {tenant} already has a stash `{key}` (origin {}, created {}); it is never \
         overwritten: restore it with restore_tenant, or inspect and clear it, then run again",
        origin.as_deref().unwrap_or("none"),
        humantime::format_rfc3339_seconds(*created)
    )]
    StashExists {
        /// The tenant.
        tenant: String,
        /// Its stash key.
        key: StashKey,
        /// The existing stash's origin.
        origin: Option<String>,
        /// When the existing stash was written.
        created: SystemTime,
    },
    /// The deleter failed. The tenant's stash is kept.
    #[error("failed to delete tenant {tenant}; its stash `{key}` is kept")]
    Delete {
        /// The tenant.
        tenant: String,
        /// Its stash key.
        key: StashKey,
        /// The deleter's error.
        #[source]
        source: BoxError,
    },
    /// There is no stash to restore the tenant from.
    #[error("no stash for tenant {tenant} (key `{key}`)")]
    NoStash {
        /// The tenant.
        tenant: String,
        /// The key looked at.
        key: StashKey,
    },
    /// The stash at the tenant's key is not a tenant snapshot; it is not
    /// restored.
    #[error(
        "stash `{key}` of tenant {tenant} has kind `{kind}`, not `tenant-snapshot`; not restored"
    )]
    NotATenantSnapshot {
        /// The tenant.
        tenant: String,
        /// The key.
        key: StashKey,
        /// The stash's kind.
        kind: String,
    },
    /// The tenant's stash could not be loaded (it may be damaged: it is
    /// never restored then).
    #[error("failed to load the stash of tenant {tenant} (key `{key}`)")]
    Load {
        /// The tenant.
        tenant: String,
        /// The key.
        key: StashKey,
        /// The store's error.
        #[source]
        source: Box<Error>,
    },
    /// The restore hook failed; the stash is kept for a retry.
    #[error("failed to restore tenant {tenant}")]
    Restore {
        /// The tenant.
        tenant: String,
        /// An [`Error::Restore`] naming the kept stash, with the hook's
        /// error as its source.
        #[source]
        source: Box<Error>,
    },
    /// The tenant was restored, but its stash could not be cleared: clear
    /// it once checked rather than restoring twice.
    #[error("tenant {tenant} was restored, but clearing its stash `{key}` failed")]
    ClearAfterRestore {
        /// The tenant.
        tenant: String,
        /// The key.
        key: StashKey,
        /// The store's error.
        #[source]
        source: Box<Error>,
    },
}

impl ReconcileError {
    /// The rules of a [`Refused`](ReconcileError::Refused) error (empty for
    /// any other error).
    ///
    /// # Examples
    ///
    /// See [`Plan::check`].
    pub fn refused_rules(&self) -> Vec<Rule> {
        match self {
            ReconcileError::Refused { refusals } => refusals.iter().map(Refusal::rule).collect(),
            _ => Vec::new(),
        }
    }
}

/// The stash key of a tenant: `tenant/{id}` made a valid key by
/// [`StashKey::from_any`].
///
/// # Examples
///
/// ```
/// let id: safestash::CanonicalUuid = "6F9619FF-8B86-D011-B42D-00C04FC964FF".parse()?;
/// assert_eq!(safestash::tenant_key(&id).as_str(), "tenant_2F6f9619ff-8b86-d011-b42d-00c04fc964ff");
/// # Ok::<(), safestash::Unparseable>(())
/// ```
pub fn tenant_key<I: CanonicalId>(id: &I) -> StashKey {
    StashKey::from_any(&format!("tenant/{id}"))
}

/// A tenant stashed by a run.
///
/// # Examples
///
/// See [`Reconciler::execute`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StashedTenant<I> {
    /// The tenant.
    pub tenant: I,
    /// The durable stash of its snapshot.
    pub receipt: Receipt,
}

/// Where and why a run stopped.
///
/// # Examples
///
/// See [`Reconciler::execute`].
#[derive(Debug)]
#[non_exhaustive]
pub struct Stopped<I> {
    /// The tenant the run stopped at. It was not deleted, or not completely:
    /// if it was stashed, the stash is kept.
    pub tenant: I,
    /// What went wrong: [`ReconcileError::Export`], [`Stash`](ReconcileError::Stash),
    /// [`StashExists`](ReconcileError::StashExists) or
    /// [`Delete`](ReconcileError::Delete).
    pub error: ReconcileError,
}

/// What a run did. A run stops at the first tenant that fails (fail
/// closed): check [`is_complete`](ExecutionReport::is_complete).
///
/// # Examples
///
/// See [`Reconciler::execute`].
#[derive(Debug)]
#[non_exhaustive]
#[must_use = "a run may have stopped early: check `is_complete` or `stopped`"]
pub struct ExecutionReport<I> {
    /// The executed plan's fingerprint (the origin of every stash written).
    pub fingerprint: Fingerprint,
    /// Tenants deleted, in order. Each was stashed first.
    pub deleted: Vec<I>,
    /// Stashes written, in order (including that of a tenant whose delete
    /// failed).
    pub stashed: Vec<StashedTenant<I>>,
    /// Where the run stopped, if it did not complete.
    pub stopped: Option<Stopped<I>>,
    /// Tenants planned for deletion and not attempted because the run
    /// stopped.
    pub not_attempted: Vec<I>,
    /// The refusals that explicit overrides lifted for this run.
    pub overridden: Vec<Refusal>,
    /// How long the stashes are to be kept (see [`purge_expired`]).
    pub retention: Duration,
}

impl<I> ExecutionReport<I> {
    /// Whether every planned tenant was stashed and deleted.
    ///
    /// # Examples
    ///
    /// See [`Reconciler::execute`].
    pub fn is_complete(&self) -> bool {
        self.stopped.is_none()
    }
}

impl<I: fmt::Display> fmt::Display for ExecutionReport<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} deleted, {} stashed", self.deleted.len(), self.stashed.len())?;
        if let Some(stopped) = &self.stopped {
            write!(
                f,
                "; stopped at tenant {}: {} ({} not attempted)",
                stopped.tenant,
                stopped.error,
                self.not_attempted.len()
            )?;
        }
        Ok(())
    }
}

/// Runs plans against a store: checks them against [`Limits`] and
/// [`Overrides`], then stashes each tenant before deleting it.
///
/// # Examples
///
/// See [`Reconciler::execute`].
pub struct Reconciler<'s, F: Fs = OsFs> {
    store: &'s Store<F>,
    limits: Limits,
    overrides: Overrides,
    retention: Duration,
}

impl<F: Fs> fmt::Debug for Reconciler<'_, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reconciler")
            .field("store", &self.store.dir())
            .field("limits", &self.limits)
            .field("overrides", &self.overrides)
            .field("retention", &self.retention)
            .finish()
    }
}

impl<'s, F: Fs> Reconciler<'s, F> {
    /// A reconciler stashing into `store`, with the default [`Limits`], no
    /// overrides, and a retention of 30 days.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let store = safestash::Store::open(dir.path())?;
    /// let reconciler = safestash::Reconciler::new(&store);
    /// assert_eq!(reconciler.retention(), std::time::Duration::from_secs(30 * 24 * 3600));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(store: &'s Store<F>) -> Reconciler<'s, F> {
        Reconciler {
            store,
            limits: Limits::default(),
            overrides: Overrides::none(),
            retention: DEFAULT_RETENTION,
        }
    }

    /// Sets the limits.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// let r = safestash::Reconciler::new(&store).limits(safestash::Limits::default().max_count(20));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Reconciler<'s, F> {
        self.limits = limits;
        self
    }

    /// Sets the rules lifted for this reconciler's runs.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// use safestash::{Overrides, Reconciler, Rule};
    /// let r = Reconciler::new(&store).overrides(Overrides::allow(Rule::Unparseable));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn overrides(mut self, overrides: Overrides) -> Reconciler<'s, F> {
        self.overrides = overrides;
        self
    }

    /// Sets how long tenant stashes are kept (see
    /// [`purge_expired`](Reconciler::purge_expired)).
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// let week = std::time::Duration::from_secs(7 * 24 * 3600);
    /// assert_eq!(safestash::Reconciler::new(&store).retain_for(week).retention(), week);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn retain_for(mut self, retention: Duration) -> Reconciler<'s, F> {
        self.retention = retention;
        self
    }

    /// How long tenant stashes are kept.
    ///
    /// # Examples
    ///
    /// See [`Reconciler::new`].
    pub fn retention(&self) -> Duration {
        self.retention
    }

    /// [`Plan::check`] with this reconciler's limits and overrides: the
    /// dry run's verdict.
    ///
    /// # Errors
    ///
    /// [`ReconcileError::Refused`].
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// use safestash::{CanonicalUuid, IdSet, Reconciler, plan};
    /// let local: IdSet<CanonicalUuid> = IdSet::canonicalize((1..=20).map(uuid::Uuid::from_u128));
    /// let truth: IdSet<CanonicalUuid> = IdSet::canonicalize((1..=19).map(uuid::Uuid::from_u128));
    /// assert!(Reconciler::new(&store).check(&plan(&local, &truth))?.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn check<I: CanonicalId>(&self, plan: &Plan<I>) -> Result<Vec<Refusal>, ReconcileError> {
        plan.check(&self.limits, &self.overrides)
    }

    /// Executes `plan` against the inputs it was computed from.
    ///
    /// First, with nothing done yet: recomputes the plan from `local` and
    /// `authoritative` and refuses a different fingerprint
    /// ([`ReconcileError::Stale`]) or a different plan
    /// ([`ReconcileError::Altered`]), then refuses a plan that breaks a rule
    /// not lifted ([`ReconcileError::Refused`]).
    ///
    /// Then, for each tenant to delete, in the plan's (sorted) order, with
    /// the tenant's stash key ([`tenant_key`]) locked:
    ///
    /// 1. a stash already at the key stops the run
    ///    ([`ReconcileError::StashExists`]): it is never overwritten;
    /// 2. `exporter(id)` takes the snapshot;
    /// 3. the snapshot is saved durably, with kind
    ///    [`TENANT_SNAPSHOT_KIND`] and the plan's fingerprint as origin;
    /// 4. only then, `deleter(id)` deletes the tenant.
    ///
    /// The first failure stops the run (fail closed): a failed export or
    /// stash deletes nothing for that tenant, a failed delete keeps its
    /// stash. The report says what was done and where the run stopped.
    ///
    /// # Errors
    ///
    /// `Stale`, `Altered` or `Refused`, before anything is done. Failures
    /// during the run are in [`ExecutionReport::stopped`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::cell::RefCell;
    /// use std::collections::BTreeMap;
    /// use safestash::{CanonicalUuid, IdSet, Reconciler, Store, TENANT_SNAPSHOT_KIND, plan, tenant_key};
    /// use uuid::Uuid;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let store = Store::open(dir.path())?;
    /// // Twenty tenants and their data; the source of truth lists all but one.
    /// let db: RefCell<BTreeMap<Uuid, Vec<String>>> =
    ///     RefCell::new((1..=20).map(|n| (Uuid::from_u128(n), vec![format!("call {n}")])).collect());
    /// let local: IdSet<CanonicalUuid> = IdSet::canonicalize(db.borrow().keys().copied());
    /// let truth: Vec<String> = (2..=20).map(|n| Uuid::from_u128(n).simple().to_string().to_uppercase()).collect();
    /// let truth: IdSet<CanonicalUuid> = IdSet::canonicalize(&truth);
    ///
    /// let p = plan(&local, &truth);
    /// let report = Reconciler::new(&store).execute(
    ///     &p,
    ///     &local,
    ///     &truth,
    ///     |id| db.borrow().get(&id.uuid()).cloned().ok_or("no such tenant"),
    ///     |id| db.borrow_mut().remove(&id.uuid()).map(drop).ok_or("no such tenant"),
    /// )?;
    /// assert!(report.is_complete());
    /// let gone = CanonicalUuid::from(Uuid::from_u128(1));
    /// assert_eq!(report.deleted, [gone]);
    /// assert_eq!(db.borrow().len(), 19);
    /// let stash = store.load::<Vec<String>>(&tenant_key(&gone))?.expect("stashed first");
    /// assert_eq!(stash.value(), &["call 1"]);
    /// assert_eq!(stash.meta().header.kind(), TENANT_SNAPSHOT_KIND);
    /// assert_eq!(stash.meta().header.origin(), Some(p.fingerprint().to_string().as_str()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn execute<I, T, X, XE, D, DE>(
        &self,
        plan: &Plan<I>,
        local: &IdSet<I>,
        authoritative: &IdSet<I>,
        mut exporter: X,
        mut deleter: D,
    ) -> Result<ExecutionReport<I>, ReconcileError>
    where
        I: CanonicalId,
        T: Serialize,
        X: FnMut(&I) -> Result<T, XE>,
        XE: Into<BoxError>,
        D: FnMut(&I) -> Result<(), DE>,
        DE: Into<BoxError>,
    {
        let current = self::plan(local, authoritative);
        if current.fingerprint != plan.fingerprint {
            return Err(ReconcileError::Stale {
                planned: plan.fingerprint,
                current: current.fingerprint,
            });
        }
        if current != *plan {
            return Err(ReconcileError::Altered { fingerprint: plan.fingerprint });
        }
        let overridden = self.check(&current)?;
        for refusal in &overridden {
            tracing::warn!(rule = %refusal.rule(), plan = %current.fingerprint, "explicit override: {refusal}");
        }
        let opts =
            SaveOptions::new().kind(TENANT_SNAPSHOT_KIND).origin(current.fingerprint.to_string());
        let mut report = ExecutionReport {
            fingerprint: current.fingerprint,
            deleted: Vec::new(),
            stashed: Vec::new(),
            stopped: None,
            not_attempted: Vec::new(),
            overridden,
            retention: self.retention,
        };
        let mut pending = current.delete.into_iter();
        while let Some(id) = pending.next() {
            match self.stash_and_delete(&id, &opts, &mut exporter, &mut deleter, &mut report) {
                Ok(()) => {
                    tracing::info!(tenant = %id, plan = %report.fingerprint, "tenant stashed and deleted");
                    report.deleted.push(id);
                }
                Err(error) => {
                    tracing::warn!(tenant = %id, error = %error, "run stopped");
                    report.stopped = Some(Stopped { tenant: id, error });
                    report.not_attempted = pending.collect();
                    break;
                }
            }
        }
        Ok(report)
    }

    fn stash_and_delete<I, T, X, XE, D, DE>(
        &self,
        id: &I,
        opts: &SaveOptions,
        exporter: &mut X,
        deleter: &mut D,
        report: &mut ExecutionReport<I>,
    ) -> Result<(), ReconcileError>
    where
        I: CanonicalId,
        T: Serialize,
        X: FnMut(&I) -> Result<T, XE>,
        XE: Into<BoxError>,
        D: FnMut(&I) -> Result<(), DE>,
        DE: Into<BoxError>,
    {
        let key = tenant_key(id);
        let stash_err = |source| ReconcileError::Stash {
            tenant: id.to_string(),
            key: key.clone(),
            source: Box::new(source),
        };
        // Held from the check to the save, so two runs cannot both stash
        // (and the second overwrite the first's snapshot with what is left).
        let lock = self.store.lock(&key).map_err(stash_err)?;
        // A stash already there (a damaged one too) is never overwritten:
        // after a failed delete it may be the only full copy of the tenant.
        if let Some(existing) = self.store.load::<IgnoredAny>(&key).map_err(stash_err)? {
            let header = &existing.meta().header;
            return Err(ReconcileError::StashExists {
                tenant: id.to_string(),
                key: key.clone(),
                origin: header.origin().map(str::to_owned),
                created: header.created(),
            });
        }
        let snapshot = exporter(id)
            .map_err(|e| ReconcileError::Export { tenant: id.to_string(), source: e.into() })?;
        let receipt = lock.save_with(&snapshot, opts).map_err(stash_err)?;
        drop(lock);
        report.stashed.push(StashedTenant { tenant: id.clone(), receipt });
        // The stash is durable: only now may the tenant go.
        deleter(id).map_err(|e| ReconcileError::Delete {
            tenant: id.to_string(),
            key: key.clone(),
            source: e.into(),
        })
    }

    /// [`purge_expired`] with this reconciler's retention.
    ///
    /// # Errors
    ///
    /// As [`purge_expired`].
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let store = safestash::Store::open(dir.path())?;
    /// let purged = safestash::Reconciler::new(&store).purge_expired()?;
    /// assert!(purged.removed.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn purge_expired(&self) -> Result<PurgeReport> {
        purge_expired(self.store, self.retention)
    }
}

/// Restores a deleted tenant from its stash: loads and verifies the stash at
/// [`tenant_key`]`(id)`, hands it to `restorer` to put the tenant back, and
/// only if that succeeded, clears the stash (if it is still the one
/// restored). The same semantics as
/// [`RollbackGuard::rollback`](crate::RollbackGuard::rollback).
///
/// # Errors
///
/// - [`ReconcileError::NoStash`] when there is none;
/// - [`ReconcileError::Load`] when it cannot be loaded (a damaged stash is
///   never restored);
/// - [`ReconcileError::NotATenantSnapshot`] when the stash there has
///   another kind;
/// - [`ReconcileError::Restore`] when the hook fails (the stash is kept);
/// - [`ReconcileError::ClearAfterRestore`] when the tenant was restored but
///   its stash could not be cleared.
///
/// # Examples
///
/// ```
/// use std::cell::RefCell;
/// use std::collections::BTreeMap;
/// use safestash::{
///     CanonicalUuid, IdSet, Overrides, Reconciler, Rule, Stashed, Store, plan, restore_tenant,
///     tenant_key,
/// };
///
/// let dir = tempfile::tempdir()?;
/// let store = Store::open(dir.path())?;
/// let id = CanonicalUuid::from(uuid::Uuid::from_u128(7));
/// let db = RefCell::new(BTreeMap::from([(id, vec!["call 1".to_owned()])]));
/// let local = IdSet::from_iter([id]);
/// let truth = IdSet::new(); // wrongly empty: deleting everything takes two overrides
/// let all = Overrides::allow(Rule::EmptyAuthority).and(Rule::TooLargeShare);
/// let report = Reconciler::new(&store).overrides(all).execute(
///     &plan(&local, &truth),
///     &local,
///     &truth,
///     |id| db.borrow().get(id).cloned().ok_or("gone"),
///     |id| db.borrow_mut().remove(id).map(drop).ok_or("gone"),
/// )?;
/// assert!(report.is_complete() && db.borrow().is_empty());
///
/// restore_tenant(&store, &id, &mut |s: Stashed<Vec<String>>| {
///     db.borrow_mut().insert(id, s.into_value());
///     Ok::<(), std::io::Error>(())
/// })?;
/// assert_eq!(db.borrow()[&id], ["call 1"]);
/// assert!(store.load::<Vec<String>>(&tenant_key(&id))?.is_none()); // cleared after the restore
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn restore_tenant<I, T, R, F>(
    store: &Store<F>,
    id: &I,
    restorer: &mut R,
) -> Result<Restored, ReconcileError>
where
    I: CanonicalId,
    T: DeserializeOwned,
    R: Restorer<T>,
    F: Fs,
{
    let key = tenant_key(id);
    let tenant = id.to_string();
    let stashed = match store.load::<T>(&key) {
        Ok(Some(stashed)) => stashed,
        Ok(None) => return Err(ReconcileError::NoStash { tenant, key }),
        Err(source) => return Err(ReconcileError::Load { tenant, key, source: Box::new(source) }),
    };
    let kind = stashed.meta().header.kind();
    if kind != TENANT_SNAPSHOT_KIND {
        return Err(ReconcileError::NotATenantSnapshot { tenant, key, kind: kind.to_owned() });
    }
    let meta = stashed.meta().clone();
    if let Err(e) = restorer.restore(stashed) {
        let source = Error::Restore { key, path: meta.path.clone(), source: e.into() };
        tracing::warn!(tenant = %tenant, error = %source, "tenant restore failed; stash kept");
        return Err(ReconcileError::Restore { tenant, source: Box::new(source) });
    }
    tracing::info!(tenant = %tenant, age_secs = meta.age().as_secs_f64(), "tenant restored");
    // The tenant is back: only now may the stash go.
    match store.clear_if(&key, &meta.digest) {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(key = %key, "restored stash was replaced meanwhile; left in place")
        }
        Err(source) => {
            return Err(ReconcileError::ClearAfterRestore {
                tenant,
                key,
                source: Box::new(source),
            });
        }
    }
    let observer_errors = store.notify(&Event::Restored { meta: &meta });
    Ok(Restored { meta, observer_errors })
}

/// What [`purge_expired`] did.
///
/// # Examples
///
/// See [`purge_expired`].
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct PurgeReport {
    /// Tenant stashes removed: intact, and older than the retention.
    pub removed: Vec<StashKey>,
    /// Tenant stashes within the retention, kept.
    pub retained: usize,
    /// Tenant stashes kept because they could not be verified (damaged,
    /// unreadable) or removed, with the reason. Never removed.
    pub kept: Vec<(StashKey, Error)>,
}

fn expired(created: SystemTime, now: SystemTime, retention: Duration) -> bool {
    // A creation time in the future has no known age: not expired.
    now.duration_since(created).is_ok_and(|age| age > retention)
}

/// Ends the retention: removes every intact tenant stash (kind
/// [`TENANT_SNAPSHOT_KIND`] at a [`tenant_key`]) written more than
/// `retention` ago. Each is verified first and removed only if it is still
/// the stash verified; a damaged one is never removed, only reported in
/// [`PurgeReport::kept`]. Other stashes are left alone.
///
/// # Errors
///
/// [`Error::Io`] when the store's directory cannot be listed. Problems with
/// single stashes are in the report.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use safestash::{CanonicalUuid, SaveOptions, Store, purge_expired, tenant_key, TENANT_SNAPSHOT_KIND};
///
/// let dir = tempfile::tempdir()?;
/// let store = Store::open(dir.path())?;
/// let id = CanonicalUuid::from(uuid::Uuid::from_u128(1));
/// store.save_with(&tenant_key(&id), &"snapshot", &SaveOptions::new().kind(TENANT_SNAPSHOT_KIND))?;
///
/// let report = purge_expired(&store, Duration::from_secs(3600))?;
/// assert_eq!((report.removed.len(), report.retained), (0, 1)); // young: kept
/// std::thread::sleep(Duration::from_millis(5));
/// let report = purge_expired(&store, Duration::from_millis(1))?;
/// assert_eq!(report.removed, [tenant_key(&id)]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn purge_expired<F: Fs>(store: &Store<F>, retention: Duration) -> Result<PurgeReport> {
    let now = SystemTime::now();
    let mut report = PurgeReport::default();
    for info in store.list()? {
        if !info.key.as_str().starts_with(TENANT_KEY_PREFIX) {
            continue;
        }
        let header = match info.header {
            Ok(header) => header,
            Err(e) => {
                report.kept.push((info.key, e));
                continue;
            }
        };
        if header.kind() != TENANT_SNAPSHOT_KIND {
            continue;
        }
        if !expired(header.created(), now, retention) {
            report.retained += 1;
            continue;
        }
        // The header alone is unverified: check the whole stash first.
        let verified = match store.load::<IgnoredAny>(&info.key) {
            Ok(Some(stashed)) => stashed,
            Ok(None) => continue,
            Err(e) => {
                report.kept.push((info.key, e));
                continue;
            }
        };
        let header = &verified.meta().header;
        if header.kind() != TENANT_SNAPSHOT_KIND || !expired(header.created(), now, retention) {
            report.retained += 1;
            continue;
        }
        match store.clear_if(&info.key, &verified.meta().digest) {
            Ok(true) => {
                tracing::info!(key = %info.key, "expired tenant stash removed");
                report.removed.push(info.key);
            }
            Ok(false) => {}
            Err(e) => report.kept.push((info.key, e)),
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> CanonicalUuid {
        CanonicalUuid::from(Uuid::from_u128(n))
    }

    fn set(ns: impl IntoIterator<Item = u128>) -> IdSet<CanonicalUuid> {
        ns.into_iter().map(id).collect()
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
