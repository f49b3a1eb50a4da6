//! JSON-compatible Python values <-> an owned JSON tree.
//!
//! A value is copied into a [`Json`] tree while the GIL is held, and the
//! tree is serialized (streamed into the envelope) with the GIL released.
//! Loading goes the other way. The tree keeps object members in their
//! order (a `serde_json::Value` without `preserve_order` would sort them),
//! so a dict comes back in the order it was saved, as with `json`.

use std::cell::RefCell;
use std::fmt;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyMapping, PySequence, PyString,
    PyTuple,
};
use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
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
        from_py(obj, 0).map_err(Fail::into_py)
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

/// A loaded value on its way to Python: a [`Json`] tree (parsed without
/// the GIL, converted with it) or a [`PyValue`] (parsed straight into
/// Python objects).
pub trait IntoPython: serde::de::DeserializeOwned + Send {
    /// The Python object.
    fn into_python(self, py: Python<'_>) -> PyResult<Py<PyAny>>;
}

impl IntoPython for Json {
    fn into_python(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(self.to_py(py)?.unbind())
    }
}

impl IntoPython for PyValue {
    fn into_python(self, _py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(self.0)
    }
}

/// One step of the path to a value that is not JSON-compatible.
enum Step {
    Key(String),
    Index(usize),
}

/// Why [`from_py`] failed. The path to the offending value is collected as
/// the recursion unwinds, so a value that converts formats nothing.
enum Fail {
    /// A Python call failed: raised as it is.
    Py(PyErr),
    /// The value at `steps` (innermost first) is not JSON-compatible.
    At { steps: Vec<Step>, type_error: bool, what: String },
}

impl From<PyErr> for Fail {
    fn from(e: PyErr) -> Fail {
        Fail::Py(e)
    }
}

impl Fail {
    fn value(what: String) -> Fail {
        Fail::At { steps: Vec::new(), type_error: false, what }
    }

    fn type_(what: String) -> Fail {
        Fail::At { steps: Vec::new(), type_error: true, what }
    }

    /// The failure one level up: `step` leads from there to here.
    fn under(mut self, step: Step) -> Fail {
        if let Fail::At { steps, .. } = &mut self {
            steps.push(step);
        }
        self
    }

    /// The exception: `value["a"][0]: what`.
    fn into_py(self) -> PyErr {
        match self {
            Fail::Py(e) => e,
            Fail::At { steps, type_error, what } => {
                let mut path = String::from("value");
                for step in steps.iter().rev() {
                    match step {
                        Step::Key(k) => path.push_str(&format!("[{k:?}]")),
                        Step::Index(i) => path.push_str(&format!("[{i}]")),
                    }
                }
                let msg = format!("{path}: {what}");
                if type_error { PyTypeError::new_err(msg) } else { PyValueError::new_err(msg) }
            }
        }
    }
}

fn from_py(obj: &Bound<'_, PyAny>, depth: usize) -> Result<Json, Fail> {
    if depth > MAX_DEPTH {
        return Err(Fail::value(format!("nested deeper than {MAX_DEPTH} levels")));
    }
    // The common types first, by their exact type (one pointer compare
    // each); subclasses fall through to the isinstance checks below.
    if let Ok(s) = obj.cast_exact::<PyString>() {
        return Ok(Json::Str(s.to_cow()?.into_owned()));
    }
    if let Ok(dict) = obj.cast_exact::<PyDict>() {
        return from_dict(dict, depth);
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
        return Err(Fail::value(format!("integer {} does not fit in 64 bits", obj.repr()?)));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        let x = f.value();
        if !x.is_finite() {
            return Err(Fail::value(format!("{x} is not valid JSON (only finite floats are)")));
        }
        return Ok(Json::F64(x));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Json::Str(s.to_cow()?.into_owned()));
    }
    if let Ok(dict) = obj.cast::<PyDict>() {
        return from_dict(dict, depth);
    }
    // Any other mapping (`collections.abc.Mapping`): its items, in order.
    if let Ok(mapping) = obj.cast::<PyMapping>() {
        let items = mapping.items()?;
        let dict = PyDict::new(obj.py());
        for item in items.iter() {
            let (k, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item.extract()?;
            dict.set_item(k, v)?;
        }
        return from_dict(&dict, depth);
    }
    if let Ok(list) = obj.cast::<PyList>() {
        let mut items = Vec::with_capacity(list.len());
        for (i, item) in list.iter().enumerate() {
            items.push(from_py(&item, depth + 1).map_err(|f| f.under(Step::Index(i)))?);
        }
        return Ok(Json::List(items));
    }
    let sequence = obj.is_instance_of::<PyTuple>()
        || (obj.cast::<PySequence>().is_ok()
            && !obj.is_instance_of::<PyBytes>()
            && !obj.is_instance_of::<PyByteArray>());
    if sequence {
        let mut items = Vec::new();
        for (i, item) in obj.try_iter()?.enumerate() {
            items.push(from_py(&item?, depth + 1).map_err(|f| f.under(Step::Index(i)))?);
        }
        return Ok(Json::List(items));
    }
    Err(Fail::type_(format!(
        "{} is not JSON-compatible (use None, bool, int, float, str, a sequence such as \
         list or tuple, or a mapping such as dict)",
        obj.get_type().name()?
    )))
}

fn from_dict(dict: &Bound<'_, PyDict>, depth: usize) -> Result<Json, Fail> {
    let mut members = Vec::with_capacity(dict.len());
    for (k, v) in dict.iter() {
        let key = match k.cast::<PyString>() {
            Ok(s) => s.to_cow()?.into_owned(),
            Err(_) => {
                return Err(Fail::type_(format!(
                    "dict keys must be str, not {}",
                    k.get_type().name()?
                )));
            }
        };
        match from_py(&v, depth + 1) {
            Ok(value) => members.push((key, value)),
            Err(f) => return Err(f.under(Step::Key(key))),
        }
    }
    Ok(Json::Object(members))
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

/// A stash's value parsed straight into Python objects, with no tree in
/// between: the GIL is taken once, for the parse (every object made needs
/// it). Dict keys that repeat (the field names of a list of records) are
/// made once per parse and shared, as `json` does.
///
/// The parse runs inside the store's load; a stash read in one piece (up
/// to the store's whole-read limit) is read before the GIL is taken, a
/// larger one streams, so its later reads happen with the GIL held.
pub struct PyValue(pub Py<PyAny>);

impl<'de> Deserialize<'de> for PyValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<PyValue, D::Error> {
        Python::attach(|py| {
            let keys = RefCell::new(Keys::default());
            PySeed { py, keys: &keys }.deserialize(d).map(|v| PyValue(v.unbind()))
        })
    }
}

/// At most this many distinct keys are shared per parse (keys past it
/// are made each time), so a miss costs a bounded scan.
const MAX_SHARED_KEYS: usize = 64;

/// The dict keys made so far in one parse, in the order first seen.
#[derive(Default)]
struct Keys<'py> {
    known: Vec<(Box<str>, Bound<'py, PyString>)>,
    /// Where the next key probably is: records repeat their keys in the
    /// same order, so the one after the last hit is tried first.
    next: usize,
}

impl<'py> Keys<'py> {
    fn get(&mut self, py: Python<'py>, s: &str) -> Bound<'py, PyString> {
        let at = match self.known.get(self.next) {
            Some((k, _)) if **k == *s => Some(self.next),
            _ => self.known.iter().position(|(k, _)| **k == *s),
        };
        if let Some(i) = at {
            self.next = i + 1;
            return self.known[i].1.clone();
        }
        let k = PyString::new(py, s);
        if self.known.len() < MAX_SHARED_KEYS {
            self.known.push((s.into(), k.clone()));
            self.next = self.known.len();
        }
        k
    }
}

/// Makes one Python value of the payload.
#[derive(Clone, Copy)]
struct PySeed<'k, 'py> {
    py: Python<'py>,
    keys: &'k RefCell<Keys<'py>>,
}

fn py_err<E: de::Error>(e: PyErr) -> E {
    E::custom(e)
}

impl<'de, 'py> DeserializeSeed<'de> for PySeed<'_, 'py> {
    type Value = Bound<'py, PyAny>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, 'py> Visitor<'de> for PySeed<'_, 'py> {
    type Value = Bound<'py, PyAny>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(self.py.None().into_bound(self.py))
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(self.py.None().into_bound(self.py))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.deserialize(d)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Self::Value, E> {
        Ok(PyBool::new(self.py, b).to_owned().into_any())
    }
    fn visit_i64<E>(self, n: i64) -> Result<Self::Value, E> {
        let Ok(n) = n.into_pyobject(self.py);
        Ok(n.into_any())
    }
    fn visit_u64<E>(self, n: u64) -> Result<Self::Value, E> {
        let Ok(n) = n.into_pyobject(self.py);
        Ok(n.into_any())
    }
    fn visit_f64<E>(self, x: f64) -> Result<Self::Value, E> {
        Ok(PyFloat::new(self.py, x).into_any())
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(PyString::new(self.py, s).into_any())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        PyList::new(self.py, items).map(Bound::into_any).map_err(py_err)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let dict = PyDict::new(self.py);
        while let Some(k) = map.next_key_seed(KeySeed(self))? {
            let v = map.next_value_seed(self)?;
            dict.set_item(k, v).map_err(py_err)?;
        }
        Ok(dict.into_any())
    }
}

/// Makes one dict key, shared with the earlier ones of the same text.
struct KeySeed<'k, 'py>(PySeed<'k, 'py>);

impl<'de, 'py> DeserializeSeed<'de> for KeySeed<'_, 'py> {
    type Value = Bound<'py, PyString>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, 'py> Visitor<'de> for KeySeed<'_, 'py> {
    type Value = Bound<'py, PyString>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        let PySeed { py, keys } = self.0;
        Ok(keys.borrow_mut().get(py, s))
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
