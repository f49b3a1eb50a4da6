//! JSON-compatible Python values <-> an owned JSON tree.
//!
//! A value is copied into a [`Json`] tree while the GIL is held, and the
//! tree is serialized (streamed into the envelope) with the GIL released.
//! Loading goes the other way. The tree keeps object members in their
//! order (a `serde_json::Value` without `preserve_order` would sort them),
//! so a dict comes back in the order it was saved, as with `json`.

use std::fmt;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyMapping, PySequence, PyString,
    PyTuple,
};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

/// How deep a value may nest (as `json`'s recursion limit, roughly).
const MAX_DEPTH: usize = 512;

/// A JSON value with object members in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    Str(String),
    List(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    /// Copies a JSON-compatible Python value: `None`, `bool`, `int` (64-bit),
    /// `float` (finite), `str`, `list`/`tuple`, `dict` with `str` keys.
    pub fn from_py(obj: &Bound<'_, PyAny>) -> PyResult<Json> {
        from_py(obj, 0, &mut String::from("value"))
    }

    /// A new Python object for this value.
    pub fn to_py<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(match self {
            Json::Null => py.None().into_bound(py),
            Json::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
            Json::I64(n) => n.into_pyobject(py)?.into_any(),
            Json::U64(n) => n.into_pyobject(py)?.into_any(),
            Json::F64(x) => PyFloat::new(py, *x).into_any(),
            Json::Str(s) => PyString::new(py, s).into_any(),
            Json::List(items) => {
                let list = PyList::empty(py);
                for item in items {
                    list.append(item.to_py(py)?)?;
                }
                list.into_any()
            }
            Json::Object(members) => {
                let dict = PyDict::new(py);
                for (k, v) in members {
                    dict.set_item(k, v.to_py(py)?)?;
                }
                dict.into_any()
            }
        })
    }

    /// The JSON text of this value.
    pub fn to_json_string(&self) -> String {
        serde_json::to_string(self).expect("a Json tree always serializes")
    }
}

fn from_py(obj: &Bound<'_, PyAny>, depth: usize, path: &mut String) -> PyResult<Json> {
    if depth > MAX_DEPTH {
        return Err(PyValueError::new_err(format!(
            "{path}: nested deeper than {MAX_DEPTH} levels"
        )));
    }
    if obj.is_none() {
        return Ok(Json::Null);
    }
    // bool before int: bool is a subclass of int.
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Json::Bool(b.is_true()));
    }
    if obj.is_instance_of::<PyInt>() {
        if let Ok(n) = obj.extract::<i64>() {
            return Ok(Json::I64(n));
        }
        if let Ok(n) = obj.extract::<u64>() {
            return Ok(Json::U64(n));
        }
        return Err(PyValueError::new_err(format!(
            "{path}: integer {} does not fit in 64 bits",
            obj.repr()?
        )));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        let x = f.value();
        if !x.is_finite() {
            return Err(PyValueError::new_err(format!(
                "{path}: {x} is not valid JSON (only finite floats are)"
            )));
        }
        return Ok(Json::F64(x));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Json::Str(s.to_cow()?.into_owned()));
    }
    if let Ok(dict) = obj.cast::<PyDict>() {
        let mut members = Vec::with_capacity(dict.len());
        for (k, v) in dict.iter() {
            let key = match k.cast::<PyString>() {
                Ok(s) => s.to_cow()?.into_owned(),
                Err(_) => {
                    return Err(PyTypeError::new_err(format!(
                        "{path}: dict keys must be str, not {}",
                        k.get_type().name()?
                    )));
                }
            };
            let len = path.len();
            path.push_str(&format!("[{key:?}]"));
            let value = from_py(&v, depth + 1, path)?;
            path.truncate(len);
            members.push((key, value));
        }
        return Ok(Json::Object(members));
    }
    // Any other mapping (`collections.abc.Mapping`): its items, in order.
    if let Ok(mapping) = obj.cast::<PyMapping>() {
        let items = mapping.items()?;
        let dict = PyDict::new(obj.py());
        for item in items.iter() {
            let (k, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item.extract()?;
            dict.set_item(k, v)?;
        }
        return from_py(dict.as_any(), depth, path);
    }
    let sequence = obj.is_instance_of::<PyList>()
        || obj.is_instance_of::<PyTuple>()
        || (obj.cast::<PySequence>().is_ok()
            && !obj.is_instance_of::<PyBytes>()
            && !obj.is_instance_of::<PyByteArray>());
    if sequence {
        let mut items = Vec::new();
        for (i, item) in obj.try_iter()?.enumerate() {
            let len = path.len();
            path.push_str(&format!("[{i}]"));
            items.push(from_py(&item?, depth + 1, path)?);
            path.truncate(len);
        }
        return Ok(Json::List(items));
    }
    Err(PyTypeError::new_err(format!(
        "{path}: {} is not JSON-compatible (use None, bool, int, float, str, a sequence such as \
         list or tuple, or a mapping such as dict)",
        obj.get_type().name()?
    )))
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => s.serialize_unit(),
            Json::Bool(b) => s.serialize_bool(*b),
            Json::I64(n) => s.serialize_i64(*n),
            Json::U64(n) => s.serialize_u64(*n),
            Json::F64(x) => s.serialize_f64(*x),
            Json::Str(v) => s.serialize_str(v),
            Json::List(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Json::Object(members) => {
                let mut map = s.serialize_map(Some(members.len()))?;
                for (k, v) in members {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Json, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_none<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Json, D::Error> {
        Json::deserialize(d)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Json, E> {
        Ok(Json::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Json, E> {
        Ok(Json::I64(n))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Json, E> {
        Ok(Json::U64(n))
    }
    fn visit_f64<E>(self, x: f64) -> Result<Json, E> {
        Ok(Json::F64(x))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Json, E> {
        Ok(Json::Str(s.to_owned()))
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<Json, E> {
        Ok(Json::Str(s))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::List(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(0).min(4096));
        while let Some((k, v)) = map.next_entry::<String, Json>()? {
            members.push((k, v));
        }
        Ok(Json::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_keep_their_order() {
        let text = r#"{"b":1,"a":[true,null,1.5,-3,18446744073709551615],"c":{"z":"x","y":{}}}"#;
        let tree: Json = serde_json::from_str(text).unwrap();
        assert_eq!(tree.to_json_string(), text);
    }
}
