//! A field dictionary: fields, their ordered info maps, and the dictionary itself.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One field of a [`FieldDictionary`]: its id and an info map (label, notes,
/// `type_override`, anything else), kept verbatim and in order.
///
/// The info map is a [`FieldInfo`]: its keys come back in the order they
/// were stored — through `serde_json` and through a [`Store`](crate::Store)
/// save and load — whether or not anything in the build enables
/// `serde_json`'s `preserve_order`. On disk it is a plain JSON object, as it
/// always was.
///
/// # Examples
///
/// ```
/// use safestash::dictionary::Field;
///
/// let f = Field::new("amount").with("type_override", "numeric").with("label", "Amount");
/// assert_eq!(f.get("label"), Some("Amount"));
/// let keys: Vec<&str> = f.info.keys().collect();
/// assert_eq!(keys, ["type_override", "label"]); // as written, not sorted
/// assert_eq!(
///     serde_json::to_string(&f)?,
///     r#"{"id":"amount","info":{"type_override":"numeric","label":"Amount"}}"#,
/// );
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Field {
    /// The column's id.
    pub id: String,
    /// Everything the operator wrote about it, in the order it was written.
    #[serde(default)]
    pub info: FieldInfo,
}

impl Field {
    /// A field with an empty info map.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(safestash::dictionary::Field::new("id").info.is_empty());
    /// ```
    pub fn new(id: impl Into<String>) -> Field {
        Field { id: id.into(), info: FieldInfo::new() }
    }

    /// Sets an info attribute: appended if new, replaced in place if the
    /// field already has it (see [`FieldInfo::insert`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let f = safestash::dictionary::Field::new("id").with("notes", "primary key");
    /// assert_eq!(f.get("notes"), Some("primary key"));
    /// ```
    #[must_use]
    pub fn with(mut self, name: &str, value: impl Into<Value>) -> Field {
        self.info.insert(name, value);
        self
    }

    /// A string info attribute.
    ///
    /// # Examples
    ///
    /// ```
    /// let f = safestash::dictionary::Field::new("id").with("n", 1);
    /// assert_eq!(f.get("n"), None); // not a string
    /// ```
    pub fn get(&self, name: &str) -> Option<&str> {
        self.info.get(name).and_then(Value::as_str)
    }
}

/// A field's info map: attribute names and JSON values, **in the order they
/// were stored**.
///
/// It serializes as a JSON object written in that order, and deserializes
/// from a JSON object read in document order, without going through
/// [`serde_json::Map`] (which sorts its keys unless some crate in the build
/// turns on `serde_json`'s `preserve_order`). So the on-disk shape is the
/// same JSON object as before, and a stash written with sorted keys loads
/// unchanged.
///
/// - **Duplicate keys** in the input: the last value wins, at the position
///   of the key's first occurrence — what Python's `json` module (and so
///   CKAN) and JavaScript's `JSON.parse` do. [`insert`](FieldInfo::insert)
///   and [`FromIterator`] follow the same rule, so a `FieldInfo` never holds
///   a key twice.
/// - **Equality** is order-sensitive: the same entries in another order are
///   a different (not verbatim) info map.
/// - Only the top level is ordered by this type. A value that is itself a
///   JSON object is a [`serde_json::Value`], whose object keys follow
///   `serde_json`'s `Map` (sorted unless `preserve_order` is on).
/// - Lookups are linear scans: it is sized for a field's handful of
///   attributes (deserializing a large object stays linear).
///
/// # Examples
///
/// ```
/// use safestash::dictionary::FieldInfo;
/// use serde_json::json;
///
/// let mut info = FieldInfo::new();
/// info.insert("type_override", "numeric");
/// info.insert("label", "Amount");
/// assert_eq!(info.insert("type_override", "date"), Some(json!("numeric"))); // replaced in place
/// assert_eq!(info.keys().collect::<Vec<_>>(), ["type_override", "label"]);
/// assert_eq!(info["label"], "Amount");
///
/// // A JSON object, read and written in document order; duplicates: last wins.
/// let read: FieldInfo = serde_json::from_str(r#"{"z": 1, "a": 2, "z": 3}"#)?;
/// assert_eq!(serde_json::to_string(&read)?, r#"{"z":3,"a":2}"#);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldInfo {
    entries: Vec<(String, Value)>,
}

impl FieldInfo {
    /// An empty info map.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(safestash::dictionary::FieldInfo::new().is_empty());
    /// ```
    pub fn new() -> FieldInfo {
        FieldInfo { entries: Vec::new() }
    }

    /// How many attributes it holds.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(safestash::dictionary::Field::new("c").with("a", 1).with("a", 2).info.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds no attribute.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!safestash::dictionary::Field::new("c").with("a", 1).info.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The value of an attribute.
    ///
    /// # Examples
    ///
    /// ```
    /// let f = safestash::dictionary::Field::new("c").with("n", 1);
    /// assert_eq!(f.info.get("n"), Some(&serde_json::json!(1)));
    /// assert_eq!(f.info.get("m"), None);
    /// ```
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.entries.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// The value of an attribute, to change it in place.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut f = safestash::dictionary::Field::new("c").with("n", 1);
    /// *f.info.get_mut("n").unwrap() = 2.into();
    /// assert_eq!(f.info["n"], 2);
    /// ```
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Value> {
        self.entries.iter_mut().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// Whether it holds this attribute.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(safestash::dictionary::Field::new("c").with("n", 1).info.contains_key("n"));
    /// ```
    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Sets an attribute and returns its previous value. A new attribute is
    /// appended; an existing one keeps its position and gets the new value.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut info = safestash::dictionary::FieldInfo::new();
    /// assert_eq!(info.insert("b", 1), None);
    /// info.insert("a", 2);
    /// assert_eq!(info.insert("b", 3), Some(1.into()));
    /// assert_eq!(info.keys().collect::<Vec<_>>(), ["b", "a"]);
    /// ```
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<Value>) -> Option<Value> {
        let name = name.into();
        let value = value.into();
        match self.get_mut(&name) {
            Some(slot) => Some(std::mem::replace(slot, value)),
            None => {
                self.entries.push((name, value));
                None
            }
        }
    }

    /// Removes an attribute and returns its value; the others keep their
    /// order.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut f = safestash::dictionary::Field::new("c").with("a", 1).with("b", 2).with("c", 3);
    /// assert_eq!(f.info.remove("b"), Some(2.into()));
    /// assert_eq!(f.info.keys().collect::<Vec<_>>(), ["a", "c"]);
    /// ```
    pub fn remove(&mut self, name: &str) -> Option<Value> {
        let at = self.entries.iter().position(|(k, _)| k == name)?;
        Some(self.entries.remove(at).1)
    }

    /// The attributes, in order.
    ///
    /// # Examples
    ///
    /// ```
    /// let f = safestash::dictionary::Field::new("c").with("z", 1).with("a", 2);
    /// let pairs: Vec<(&String, &serde_json::Value)> = f.info.iter().collect();
    /// assert_eq!(pairs[0].0, "z");
    /// ```
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&String, &Value)> + ExactSizeIterator {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    /// The attribute names, in order.
    ///
    /// # Examples
    ///
    /// ```
    /// let f = safestash::dictionary::Field::new("c").with("z", 1).with("a", 2);
    /// assert_eq!(f.info.keys().collect::<Vec<_>>(), ["z", "a"]);
    /// ```
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &str> + ExactSizeIterator {
        self.entries.iter().map(|(k, _)| k.as_str())
    }

    /// The attribute values, in order.
    ///
    /// # Examples
    ///
    /// ```
    /// let f = safestash::dictionary::Field::new("c").with("z", 1).with("a", 2);
    /// assert_eq!(f.info.values().collect::<Vec<_>>(), [&1.into(), &2.into()] as [&serde_json::Value; 2]);
    /// ```
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &Value> + ExactSizeIterator {
        self.entries.iter().map(|(_, v)| v)
    }

    /// Adds entries, under [`insert`](FieldInfo::insert)'s rule, staying
    /// linear however many there are.
    fn extend_entries(&mut self, entries: impl IntoIterator<Item = (String, Value)>) {
        let mut index: std::collections::HashMap<String, usize> =
            self.entries.iter().enumerate().map(|(i, (k, _))| (k.clone(), i)).collect();
        for (name, value) in entries {
            match index.get(&name) {
                Some(&at) => self.entries[at].1 = value,
                None => {
                    index.insert(name.clone(), self.entries.len());
                    self.entries.push((name, value));
                }
            }
        }
    }
}

impl<K: Into<String>, V: Into<Value>> FromIterator<(K, V)> for FieldInfo {
    /// Collects entries in order; a repeated key: last value, first position.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> FieldInfo {
        let mut info = FieldInfo::new();
        info.extend(iter);
        info
    }
}

impl<K: Into<String>, V: Into<Value>> Extend<(K, V)> for FieldInfo {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        self.extend_entries(iter.into_iter().map(|(k, v)| (k.into(), v.into())));
    }
}

impl IntoIterator for FieldInfo {
    type Item = (String, Value);
    type IntoIter = std::vec::IntoIter<(String, Value)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl<'a> IntoIterator for &'a FieldInfo {
    type Item = (&'a String, &'a Value);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, Value)>,
        fn(&'a (String, Value)) -> (&'a String, &'a Value),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter().map(|(k, v)| (k, v))
    }
}

impl std::ops::Index<&str> for FieldInfo {
    type Output = Value;

    /// The value of an attribute.
    ///
    /// # Panics
    ///
    /// When there is no such attribute (use [`FieldInfo::get`] to ask), as
    /// with [`serde_json::Map`].
    fn index(&self, name: &str) -> &Value {
        self.get(name).unwrap_or_else(|| panic!("no info attribute {name:?}"))
    }
}

impl From<Map<String, Value>> for FieldInfo {
    /// In the map's own iteration order (sorted, unless `preserve_order`).
    fn from(map: Map<String, Value>) -> FieldInfo {
        map.into_iter().collect()
    }
}

impl From<FieldInfo> for Map<String, Value> {
    /// Into a `serde_json` map, which may sort the keys.
    fn from(info: FieldInfo) -> Map<String, Value> {
        info.entries.into_iter().collect()
    }
}

impl From<FieldInfo> for Value {
    /// Into a JSON object value, which may sort the keys.
    fn from(info: FieldInfo) -> Value {
        Value::Object(info.into())
    }
}

impl Serialize for FieldInfo {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.entries.len()))?;
        for (k, v) in &self.entries {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for FieldInfo {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<FieldInfo, D::Error> {
        struct Visitor;

        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = FieldInfo;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object of field info attributes")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut access: A,
            ) -> Result<FieldInfo, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = access.next_entry::<String, Value>()? {
                    entries.push(entry);
                }
                let mut info = FieldInfo::new();
                info.extend_entries(entries);
                Ok(info)
            }
        }

        deserializer.deserialize_map(Visitor)
    }
}

/// A table's data dictionary: its fields, in column order.
///
/// # Examples
///
/// ```
/// let dictionary: safestash::dictionary::FieldDictionary = vec![safestash::dictionary::Field::new("id")];
/// assert_eq!(dictionary[0].id, "id");
/// ```
pub type FieldDictionary = Vec<Field>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_json_shape_is_id_and_info() {
        let f: Field = serde_json::from_str(r#"{"id":"a","info":{"label":"A","x":[1]}}"#).unwrap();
        assert_eq!(f.get("label"), Some("A"));
        assert_eq!(f.info["x"], serde_json::json!([1]));
        let bare: Field = serde_json::from_str(r#"{"id":"b"}"#).unwrap();
        assert!(bare.info.is_empty());
    }
}
