//! `SystemTime` / `Duration` <-> aware `datetime` (UTC) / `timedelta`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// `t` as an aware `datetime.datetime` in UTC (microsecond precision, as
/// `datetime` has).
pub fn datetime<'py>(py: Python<'py>, t: SystemTime) -> PyResult<Bound<'py, PyAny>> {
    let dt = py.import("datetime")?;
    let utc = dt.getattr("timezone")?.getattr("utc")?;
    let epoch = dt.getattr("datetime")?.call1((1970, 1, 1, 0, 0, 0, 0, utc))?;
    let delta = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => timedelta(py, d)?,
        Err(e) => timedelta(py, e.duration())?.neg()?,
    };
    epoch.add(delta)
}

/// `d` as a `datetime.timedelta` (microsecond precision).
pub fn timedelta<'py>(py: Python<'py>, d: Duration) -> PyResult<Bound<'py, PyAny>> {
    let kw = PyDict::new(py);
    kw.set_item("seconds", d.as_secs())?;
    kw.set_item("microseconds", d.subsec_micros())?;
    py.import("datetime")?.getattr("timedelta")?.call((), Some(&kw))
}

/// A `timedelta` or a number of seconds, as a `Duration`.
pub fn duration(obj: &Bound<'_, PyAny>) -> PyResult<Duration> {
    let secs: f64 = if obj.hasattr("total_seconds")? {
        obj.call_method0("total_seconds")?.extract()?
    } else if let Ok(x) = obj.extract::<f64>() {
        x
    } else {
        return Err(PyTypeError::new_err("expected a datetime.timedelta or a number of seconds"));
    };
    Duration::try_from_secs_f64(secs)
        .map_err(|_| PyValueError::new_err(format!("not a valid duration: {secs} seconds")))
}

/// How long ago `t` was (zero if it is in the future).
pub fn age(t: SystemTime) -> Duration {
    SystemTime::now().duration_since(t).unwrap_or(Duration::ZERO)
}
