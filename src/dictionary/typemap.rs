//! Type mapping: a [`TypeMap`] turns each field's type attribute into a
//! column type, and reports every fallback and normalisation it applied.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::field::{Field, FieldInfo};

/// A recreated column: a field with the type it was given.
///
/// # Examples
///
/// ```
/// use safestash::dictionary::{Field, TypeMap};
///
/// let restored = TypeMap::default().map_fields(&[Field::new("n").with("type_override", "numeric")]);
/// assert_eq!(restored.columns[0].column_type, "numeric");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Column {
    /// The field's id.
    pub id: String,
    /// The column type to create it with.
    pub column_type: String,
    /// The field's whole info map, verbatim and in order.
    pub info: FieldInfo,
}

/// Why a [`TypeMap`] used its fallback type.
///
/// # Examples
///
/// ```
/// use safestash::dictionary::{FallbackReason, Field, TypeMap};
///
/// let restored = TypeMap::default().map_fields(&[
///     Field::new("x").with("type_override", "money"),
///     Field::new("y").with("type_override", ""), // CKAN's "no override"
/// ]);
/// assert_eq!(restored.fallbacks[0].reason, FallbackReason::NotValid("money".into()));
/// assert_eq!(restored.fallbacks[1].reason, FallbackReason::Missing);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum FallbackReason {
    /// The field has no such attribute, or it is null — or, under
    /// [`Matching::Normalise`] (the default), an empty or whitespace-only
    /// string.
    Missing,
    /// The attribute is not a string (the JSON it holds).
    NotAString(String),
    /// The attribute names a type outside the valid set (as written).
    NotValid(String),
    /// A source type with no mapping (see [`TypeMap::map_source`]).
    UnknownSource(String),
    /// Under [`Matching::Normalise`], the attribute (as written) matches
    /// more than one valid type once case and surrounding whitespace are
    /// ignored (a custom map with, say, both `Int` and `int`), so no one of
    /// them is picked.
    Ambiguous(String),
}

impl fmt::Display for FallbackReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FallbackReason::Missing => f.write_str("no type given"),
            FallbackReason::NotAString(json) => write!(f, "type is not a string: {json}"),
            FallbackReason::NotValid(t) => write!(f, "type {t:?} is not a valid target type"),
            FallbackReason::UnknownSource(t) => write!(f, "source type {t:?} has no mapping"),
            FallbackReason::Ambiguous(t) => {
                write!(f, "type {t:?} matches several valid types but for case")
            }
        }
    }
}

/// A fallback a [`TypeMap`] applied: never silent.
///
/// # Examples
///
/// ```
/// use safestash::dictionary::{Field, TypeMap};
///
/// let restored = TypeMap::default().map_fields(&[Field::new("note")]);
/// let fb = &restored.fallbacks[0];
/// assert_eq!((fb.field.as_str(), fb.used.as_str()), ("note", "text"));
/// assert_eq!(fb.to_string(), "field `note`: no type given; using `text`");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Fallback {
    /// The field (or source type) it was applied to.
    pub field: String,
    /// Why.
    pub reason: FallbackReason,
    /// The type used instead.
    pub used: String,
}

impl fmt::Display for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "field `{}`: {}; using `{}`", self.field, self.reason, self.used)
    }
}

/// A type name a [`TypeMap`] accepted only after normalising it (case and
/// surrounding whitespace, see [`Matching::Normalise`]): the field got the
/// valid type it names, so this is **not** a [`Fallback`], but it is
/// reported, so the operator can fix the spelling.
///
/// # Examples
///
/// ```
/// use safestash::dictionary::{Field, TypeMap};
///
/// let restored = TypeMap::default().map_fields(&[Field::new("amount").with("type_override", " Numeric ")]);
/// assert_eq!(restored.columns[0].column_type, "numeric");
/// assert!(restored.fallbacks.is_empty());
/// let n = &restored.normalised[0];
/// assert_eq!((n.field.as_str(), n.from.as_str(), n.to.as_str()), ("amount", " Numeric ", "numeric"));
/// assert_eq!(n.to_string(), "field `amount`: type \" Numeric \" read as `numeric`");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Normalised {
    /// The field it was applied to.
    pub field: String,
    /// The type as written in the field's info map (which keeps it as is).
    pub from: String,
    /// The valid type it was read as, spelled as in the map's valid set.
    pub to: String,
}

impl fmt::Display for Normalised {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "field `{}`: type {:?} read as `{}`", self.field, self.from, self.to)
    }
}

/// What [`TypeMap::map_fields`] produced: the columns in field order, every
/// fallback applied, and every type name that was normalised.
///
/// # Examples
///
/// See [`TypeMap`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Mapped {
    /// One column per field, in the fields' order.
    pub columns: Vec<Column>,
    /// Every fallback applied, in field order.
    pub fallbacks: Vec<Fallback>,
    /// Every field whose type was accepted only after normalising its case
    /// or surrounding whitespace, in field order. Never also a fallback.
    #[serde(default)]
    pub normalised: Vec<Normalised>,
}

/// How a [`TypeMap`] compares a field's type name with its valid types.
///
/// # Examples
///
/// ```
/// use safestash::dictionary::{FallbackReason, Field, Matching, TypeMap};
///
/// let fields = [Field::new("a").with("type_override", "NUMERIC"), Field::new("b").with("type_override", "")];
///
/// // The default: a person's spelling is normalised (and reported), "" is missing.
/// let lenient = TypeMap::default().map_fields(&fields);
/// assert_eq!(lenient.columns[0].column_type, "numeric");
/// assert_eq!(lenient.normalised[0].from, "NUMERIC");
/// assert_eq!(lenient.fallbacks[0].reason, FallbackReason::Missing);
///
/// // Exact: byte for byte, as written.
/// let exact = TypeMap::default().matching(Matching::Exact);
/// assert_eq!(exact.matching_mode(), Matching::Exact);
/// let strict = exact.map_fields(&fields);
/// assert_eq!(strict.columns[0].column_type, "text");
/// assert_eq!(strict.fallbacks[0].reason, FallbackReason::NotValid("NUMERIC".into()));
/// assert_eq!(strict.fallbacks[1].reason, FallbackReason::NotValid("".into()));
/// assert!(strict.normalised.is_empty());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Matching {
    /// The default, for names typed by a person. A name that is exactly a
    /// valid type is taken as is. Otherwise surrounding whitespace (Unicode
    /// `White_Space`, so a pasted no-break space too) is ignored and ASCII
    /// letters are compared without case; a name that then matches exactly
    /// one valid type gets that type, reported as [`Normalised`], not as a
    /// fallback. A name that is empty or only whitespace counts as
    /// [`FallbackReason::Missing`] (CKAN's "no override"). Non-ASCII letters
    /// must match exactly, so no look-alike character is folded onto a type.
    #[default]
    Normalise,
    /// Only a name that is exactly (byte for byte) a valid type is taken;
    /// anything else, `""` included, is [`FallbackReason::NotValid`]. This
    /// is how every `TypeMap` matched before normalising was added.
    Exact,
}

/// Maps stashed fields onto column types, with a safe, reported fallback.
///
/// A field's type is read from an info attribute (default `type_override`)
/// and accepted if it names one of the valid target types. By default
/// ([`Matching::Normalise`]) the case and surrounding whitespace of a name
/// are forgiven — `" Numeric "` and `"NUMERIC"` are `numeric`, reported in
/// [`Mapped::normalised`] — and an empty name counts as missing; with
/// [`Matching::Exact`] only the exact spelling is accepted. Any other case
/// (missing, not a string, unknown) uses the fallback type (default
/// `text`) and is reported as a [`Fallback`].
///
/// The default map is the one of the ingestion worker this library comes
/// from: valid targets `text`, `numeric`, `timestamp`, `date`; source types
/// `String`→`text`, `Integer`→`numeric`, `Float`→`numeric`,
/// `DateTime`→`timestamp`, `Date`→`date`, `NULL`→`text`.
///
/// # Examples
///
/// ```
/// use safestash::dictionary::{Field, Matching, TypeMap};
///
/// let dictionary = vec![
///     Field::new("amount").with("label", "Amount").with("type_override", "numeric"),
///     Field::new("code").with("type_override", "money"),
///     Field::new("comment"),
///     Field::new("placed").with("type_override", " Timestamp"),
/// ];
/// let restored = TypeMap::default().map_fields(&dictionary);
/// let types: Vec<&str> = restored.columns.iter().map(|c| c.column_type.as_str()).collect();
/// assert_eq!(types, ["numeric", "text", "text", "timestamp"]);
/// assert_eq!(restored.fallbacks.len(), 2); // `code` and `comment`, both reported
/// assert_eq!(restored.normalised[0].field, "placed"); // reported, not a fallback
/// assert_eq!(restored.columns[0].info["label"], "Amount");
///
/// // A custom map: other attribute, other targets, other fallback, exact matching.
/// let custom = TypeMap::new(["int4", "varchar"], "varchar")?.attribute("pg_type").matching(Matching::Exact);
/// let c = custom.map_fields(&[Field::new("n").with("pg_type", "int4"), Field::new("m").with("pg_type", "INT4")]);
/// assert_eq!((c.columns[0].column_type.as_str(), c.columns[1].column_type.as_str()), ("int4", "varchar"));
/// # Ok::<(), safestash::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeMap {
    attribute: String,
    valid: BTreeSet<String>,
    fallback: String,
    sources: Vec<(String, String)>,
    matching: Matching,
}

/// What a [`TypeMap`] made of one field's attribute.
enum Decision<'a> {
    /// Exactly a valid type.
    Exact(&'a str),
    /// The valid type `to`, after normalising `from`.
    Normalised { from: &'a str, to: &'a str },
    /// No valid type: use the fallback.
    Fallback(FallbackReason),
}

impl Default for TypeMap {
    fn default() -> TypeMap {
        let pairs = [
            ("String", "text"),
            ("Integer", "numeric"),
            ("Float", "numeric"),
            ("DateTime", "timestamp"),
            ("Date", "date"),
            ("NULL", "text"),
        ];
        TypeMap {
            attribute: "type_override".to_owned(),
            valid: ["text", "numeric", "timestamp", "date"].map(str::to_owned).into(),
            fallback: "text".to_owned(),
            sources: pairs.iter().map(|(s, t)| ((*s).to_owned(), (*t).to_owned())).collect(),
            matching: Matching::default(),
        }
    }
}

impl TypeMap {
    /// A map with these valid target types and this fallback, reading
    /// `type_override`, with no source types and [`Matching::Normalise`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOption`](crate::Error::InvalidOption) when the fallback
    /// is not one of the valid types (a fallback must always be safe).
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::dictionary::TypeMap;
    /// assert!(TypeMap::new(["int", "text"], "text").is_ok());
    /// assert!(TypeMap::new(["int"], "text").is_err());
    /// ```
    pub fn new(
        valid: impl IntoIterator<Item = impl Into<String>>,
        fallback: impl Into<String>,
    ) -> Result<TypeMap, crate::Error> {
        let valid: BTreeSet<String> = valid.into_iter().map(Into::into).collect();
        let fallback = fallback.into();
        if !valid.contains(&fallback) {
            return Err(crate::Error::InvalidOption {
                field: "fallback",
                value: fallback,
                rule: "the fallback type must be one of the valid types",
            });
        }
        Ok(TypeMap {
            attribute: "type_override".to_owned(),
            valid,
            fallback,
            sources: Vec::new(),
            matching: Matching::default(),
        })
    }

    /// Reads the type from this info attribute instead of `type_override`.
    ///
    /// # Examples
    ///
    /// ```
    /// let map = safestash::dictionary::TypeMap::default().attribute("pg_type");
    /// assert_eq!(map.attribute_name(), "pg_type");
    /// ```
    #[must_use]
    pub fn attribute(mut self, name: impl Into<String>) -> TypeMap {
        self.attribute = name.into();
        self
    }

    /// Compares type names this way (default [`Matching::Normalise`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::dictionary::{Field, Matching, TypeMap};
    ///
    /// let field = Field::new("n").with("type_override", "Numeric");
    /// assert_eq!(TypeMap::default().map_field(&field).0.column_type, "numeric");
    /// let exact = TypeMap::default().matching(Matching::Exact);
    /// assert_eq!(exact.map_field(&field).0.column_type, "text");
    /// ```
    #[must_use]
    pub fn matching(mut self, matching: Matching) -> TypeMap {
        self.matching = matching;
        self
    }

    /// How this map compares type names.
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::dictionary::{Matching, TypeMap};
    /// assert_eq!(TypeMap::default().matching_mode(), Matching::Normalise);
    /// ```
    pub fn matching_mode(&self) -> Matching {
        self.matching
    }

    /// Maps the source type `source` to `target` in
    /// [`map_source`](TypeMap::map_source).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOption`](crate::Error::InvalidOption) when `target` is
    /// not a valid type.
    ///
    /// # Examples
    ///
    /// ```
    /// let map = safestash::dictionary::TypeMap::default().source("Decimal", "numeric")?;
    /// assert_eq!(map.map_source("Decimal"), Ok("numeric"));
    /// # Ok::<(), safestash::Error>(())
    /// ```
    pub fn source(
        mut self,
        source: impl Into<String>,
        target: impl Into<String>,
    ) -> Result<TypeMap, crate::Error> {
        let target = target.into();
        if !self.valid.contains(&target) {
            return Err(crate::Error::InvalidOption {
                field: "target type",
                value: target,
                rule: "a source type must map to one of the valid types",
            });
        }
        let source = source.into();
        self.sources.retain(|(s, _)| *s != source);
        self.sources.push((source, target));
        Ok(self)
    }

    /// The attribute the type is read from.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(safestash::dictionary::TypeMap::default().attribute_name(), "type_override");
    /// ```
    pub fn attribute_name(&self) -> &str {
        &self.attribute
    }

    /// The fallback type.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(safestash::dictionary::TypeMap::default().fallback(), "text");
    /// ```
    pub fn fallback(&self) -> &str {
        &self.fallback
    }

    /// Whether `t` is exactly (byte for byte) a valid target type, whatever
    /// the map's [`Matching`].
    ///
    /// # Examples
    ///
    /// ```
    /// let map = safestash::dictionary::TypeMap::default();
    /// assert!(map.is_valid("date") && !map.is_valid("Date"));
    /// ```
    pub fn is_valid(&self, t: &str) -> bool {
        self.valid.contains(t)
    }

    /// The column type for a source data type (as a loader detects it), or
    /// the fallback with the reason. Source types come from a program, not
    /// a person: they are always matched exactly.
    ///
    /// # Errors
    ///
    /// A [`Fallback`] naming the unknown source type and the type to use.
    ///
    /// # Examples
    ///
    /// ```
    /// let map = safestash::dictionary::TypeMap::default();
    /// assert_eq!(map.map_source("Integer"), Ok("numeric"));
    /// assert_eq!(map.map_source("Blob").unwrap_err().used, "text");
    /// ```
    pub fn map_source(&self, source: &str) -> Result<&str, Fallback> {
        self.sources.iter().find(|(s, _)| s == source).map(|(_, t)| t.as_str()).ok_or_else(|| {
            Fallback {
                field: source.to_owned(),
                reason: FallbackReason::UnknownSource(source.to_owned()),
                used: self.fallback.clone(),
            }
        })
    }

    /// What a field's type attribute comes to under this map's matching.
    fn decide<'a>(&'a self, value: Option<&'a Value>) -> Decision<'a> {
        let t = match value {
            None | Some(Value::Null) => return Decision::Fallback(FallbackReason::Missing),
            Some(Value::String(t)) => t.as_str(),
            Some(other) => {
                return Decision::Fallback(FallbackReason::NotAString(other.to_string()));
            }
        };
        let trimmed = t.trim();
        if self.matching == Matching::Normalise && trimmed.is_empty() {
            return Decision::Fallback(FallbackReason::Missing);
        }
        if let Some(valid) = self.valid.get(t) {
            return Decision::Exact(valid);
        }
        if self.matching == Matching::Exact {
            return Decision::Fallback(FallbackReason::NotValid(t.to_owned()));
        }
        let mut candidates = self.valid.iter().filter(|v| v.trim().eq_ignore_ascii_case(trimmed));
        match (candidates.next(), candidates.next()) {
            (Some(to), None) => Decision::Normalised { from: t, to },
            (Some(_), Some(_)) => Decision::Fallback(FallbackReason::Ambiguous(t.to_owned())),
            (None, _) => Decision::Fallback(FallbackReason::NotValid(t.to_owned())),
        }
    }

    /// One field: its column, the fallback applied, or the normalisation.
    fn map_one(&self, field: &Field) -> (Column, Option<Fallback>, Option<Normalised>) {
        let (column_type, fallback, normalised) = match self.decide(field.info.get(&self.attribute))
        {
            Decision::Exact(t) => (t.to_owned(), None, None),
            Decision::Normalised { from, to } => (
                to.to_owned(),
                None,
                Some(Normalised {
                    field: field.id.clone(),
                    from: from.to_owned(),
                    to: to.to_owned(),
                }),
            ),
            Decision::Fallback(reason) => (
                self.fallback.clone(),
                Some(Fallback { field: field.id.clone(), reason, used: self.fallback.clone() }),
                None,
            ),
        };
        let column = Column { id: field.id.clone(), column_type, info: field.info.clone() };
        (column, fallback, normalised)
    }

    /// The column for one field, and the fallback if one was applied.
    ///
    /// A normalised type name (see [`Matching::Normalise`]) is not a
    /// fallback: the column gets the valid type, and the normalisation is
    /// reported by [`map_fields`](TypeMap::map_fields) in
    /// [`Mapped::normalised`].
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::dictionary::{Field, TypeMap};
    /// let (col, fallback) = TypeMap::default().map_field(&Field::new("d").with("type_override", "date"));
    /// assert_eq!((col.column_type.as_str(), fallback), ("date", None));
    /// let (col, fallback) = TypeMap::default().map_field(&Field::new("d").with("type_override", "DATE "));
    /// assert_eq!((col.column_type.as_str(), fallback), ("date", None));
    /// ```
    pub fn map_field(&self, field: &Field) -> (Column, Option<Fallback>) {
        let (column, fallback, _) = self.map_one(field);
        (column, fallback)
    }

    /// Maps every field, keeping their order and whole info maps, and
    /// reports every fallback (also as a `tracing` warning) and every
    /// normalised type name (also as a `tracing` info event).
    ///
    /// # Examples
    ///
    /// See [`TypeMap`].
    pub fn map_fields(&self, fields: &[Field]) -> Mapped {
        let mut columns = Vec::with_capacity(fields.len());
        let mut fallbacks = Vec::new();
        let mut normalised = Vec::new();
        for field in fields {
            let (column, fallback, normalisation) = self.map_one(field);
            if let Some(fb) = fallback {
                tracing::warn!(field = %fb.field, reason = %fb.reason, used = %fb.used, "type fallback applied");
                fallbacks.push(fb);
            }
            if let Some(n) = normalisation {
                tracing::info!(field = %n.field, from = ?n.from, to = %n.to, "type name normalised");
                normalised.push(n);
            }
            columns.push(column);
        }
        Mapped { columns, fallbacks, normalised }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_a_string_is_reported_with_its_json() {
        let (col, fb) = TypeMap::default().map_field(&Field::new("n").with("type_override", 5));
        assert_eq!(col.column_type, "text");
        assert_eq!(fb.unwrap().reason, FallbackReason::NotAString("5".into()));
    }
}
