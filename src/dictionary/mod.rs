//! Field dictionaries and type mapping, for restoring a data dictionary.
//!
//! The payload most often stashed before a destructive reload is a *field
//! dictionary*: the operator-written labels, notes and type overrides of a
//! table's columns, which live nowhere else. When the table is recreated,
//! each field's `type_override` is mapped back onto a column type by a
//! [`TypeMap`], which accepts only valid target types (forgiving, by
//! default, the case and surrounding whitespace a person typed, and saying
//! so) and falls back (to `text`, by default) otherwise — and reports every
//! fallback it applied. A field's info map is a [`FieldInfo`], which keeps
//! its attributes in the order they were stored.

mod field;
mod typemap;

pub use field::{Field, FieldDictionary, FieldInfo};
pub use typemap::{Column, Fallback, FallbackReason, Mapped, Matching, Normalised, TypeMap};
