//! `TypeMap`: maps a field dictionary's type overrides back onto column types.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use safestash::dictionary::{Field, Matching, TypeMap as RsTypeMap};

use crate::errors::store_error;
use crate::value::Json;

/// One column of a restored table: ``id``, ``column_type`` (always a valid
/// type), ``info`` (the field's info dict, in stored order).
#[pyclass(frozen, module = "safestash", get_all)]
pub struct Column {
    id: String,
    column_type: String,
    info: Py<PyAny>,
}

#[pymethods]
impl Column {
    fn __repr__(&self) -> String {
        format!("Column(id={:?}, column_type={:?})", self.id, self.column_type)
    }
}

/// What :meth:`TypeMap.map_fields` produced: ``columns`` (one
/// :class:`Column` per field, in order), ``fallbacks`` (every fallback
/// applied: ``(field, reason, used)`` tuples — never silent) and
/// ``normalised`` (``(field, from, to)``: accepted after normalising case
/// or whitespace; not a fallback).
#[pyclass(frozen, module = "safestash", get_all)]
pub struct Mapped {
    columns: Vec<Py<Column>>,
    fallbacks: Vec<(String, String, String)>,
    normalised: Vec<(String, String, String)>,
}

#[pymethods]
impl Mapped {
    fn __repr__(&self) -> String {
        format!("Mapped(columns={}, fallbacks={})", self.columns.len(), self.fallbacks.len())
    }
}

/// Maps each field's type override (the ``type_override`` attribute of its
/// ``info``) onto a column type, accepting only valid types and falling
/// back otherwise, reporting every fallback.
///
/// ``TypeMap()`` is the default: valid ``text``, ``numeric``,
/// ``timestamp``, ``date``, fallback ``text``; a person's spelling
/// (case, surrounding whitespace) is forgiven and reported as normalised;
/// an empty override counts as missing. ``TypeMap(valid, fallback)`` sets
/// others (``fallback`` must be valid); ``attribute`` names another
/// attribute; ``exact=True`` compares byte for byte; ``sources`` maps
/// source types (``{"Integer": "numeric"}``) for fields without an
/// override.
///
/// Fields are dicts as stashed: ``{"id": "amount", "info": {"label": ...,
/// "type_override": "numeric"}}``.
#[pyclass(frozen, module = "safestash")]
pub struct TypeMap {
    inner: RsTypeMap,
}

#[pymethods]
impl TypeMap {
    #[new]
    #[pyo3(signature = (valid=None, fallback=None, *, attribute=None, exact=false, sources=None))]
    fn new(
        py: Python<'_>,
        valid: Option<Vec<String>>,
        fallback: Option<String>,
        attribute: Option<String>,
        exact: bool,
        sources: Option<Vec<(String, String)>>,
    ) -> PyResult<TypeMap> {
        let mut m = match (valid, fallback) {
            (None, None) => RsTypeMap::default(),
            (Some(v), Some(f)) => RsTypeMap::new(v, f).map_err(|e| store_error(py, e))?,
            (Some(v), None) => RsTypeMap::new(v, "text").map_err(|e| store_error(py, e))?,
            (None, Some(f)) => RsTypeMap::new(["text", "numeric", "timestamp", "date"], f)
                .map_err(|e| store_error(py, e))?,
        };
        if let Some(a) = attribute {
            m = m.attribute(a);
        }
        if exact {
            m = m.matching(Matching::Exact);
        }
        for (s, t) in sources.unwrap_or_default() {
            m = m.source(s, t).map_err(|e| store_error(py, e))?;
        }
        Ok(TypeMap { inner: m })
    }

    /// The fallback type.
    #[getter]
    fn fallback(&self) -> String {
        self.inner.fallback().to_owned()
    }

    /// Whether ``t`` is a valid target type.
    fn is_valid(&self, t: &str) -> bool {
        self.inner.is_valid(t)
    }

    /// Maps a list of field dicts: a :class:`Mapped`, columns in the
    /// fields' order.
    fn map_fields(&self, py: Python<'_>, fields: &Bound<'_, PyAny>) -> PyResult<Mapped> {
        let json = Json::from_py(fields)?.to_json_string();
        let fields: Vec<Field> = serde_json::from_str(&json)
            .map_err(|e| PyValueError::new_err(format!("not a field dictionary: {e}")))?;
        let mapped = self.inner.map_fields(&fields);
        let columns = mapped
            .columns
            .iter()
            .map(|c| {
                let info: Json =
                    serde_json::from_str(&serde_json::to_string(&c.info).expect("info serializes"))
                        .expect("info parses");
                Py::new(
                    py,
                    Column {
                        id: c.id.clone(),
                        column_type: c.column_type.clone(),
                        info: info.to_py(py)?.unbind(),
                    },
                )
            })
            .collect::<PyResult<_>>()?;
        Ok(Mapped {
            columns,
            fallbacks: mapped
                .fallbacks
                .iter()
                .map(|f| (f.field.clone(), f.reason.to_string(), f.used.clone()))
                .collect(),
            normalised: mapped
                .normalised
                .iter()
                .map(|n| (n.field.clone(), n.from.clone(), n.to.clone()))
                .collect(),
        })
    }
}
