//! The crate's events, in Python's `logging`: every `tracing` event of the
//! Rust crate (a stash written, loaded, cleared, restored, quarantined, a
//! damaged stash found, a stale or foreign stash refused, a type fallback)
//! becomes a record of the logger `safestash`, at the matching level,
//! with the event's fields as attributes of the record (`record.key`,
//! `record.digest`, ...) and in its message.
//!
//! A record is made only when the logger is enabled for its level (one
//! `isEnabledFor` call, which `logging` caches); otherwise the event costs
//! that call and nothing else.

use std::fmt;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

/// Attributes a `logging.LogRecord` has of its own: an event field of one
/// of these names goes in as `safestash_NAME`.
const RESERVED: &[&str] = &[
    "args",
    "asctime",
    "created",
    "exc_info",
    "exc_text",
    "filename",
    "funcName",
    "levelname",
    "levelno",
    "lineno",
    "message",
    "module",
    "msecs",
    "msg",
    "name",
    "pathname",
    "process",
    "processName",
    "relativeCreated",
    "stack_info",
    "taskName",
    "thread",
    "threadName",
];

/// The `logging` level of a `tracing` level.
fn level(l: &Level) -> i32 {
    match *l {
        Level::ERROR => 40,
        Level::WARN => 30,
        Level::INFO => 20,
        Level::DEBUG => 10,
        _ => 5,
    }
}

/// A field's value, as Python will get it.
enum Value {
    Str(String),
    Int(i64),
    UInt(u64),
    Float(f64),
    Bool(bool),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(s) => f.write_str(s),
            Value::Int(n) => write!(f, "{n}"),
            Value::UInt(n) => write!(f, "{n}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Bool(b) => write!(f, "{b}"),
        }
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    fields: Vec<(&'static str, Value)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.fields.push((field.name(), Value::Str(format!("{value:?}"))));
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.fields.push((field.name(), Value::Str(value.to_owned())));
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields.push((field.name(), Value::Int(value)));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields.push((field.name(), Value::UInt(value)));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.fields.push((field.name(), Value::Float(value)));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.push((field.name(), Value::Bool(value)));
    }
}

/// The layer: each event to the logger `safestash`.
struct ToLogging {
    logger: Py<PyAny>,
}

impl ToLogging {
    fn emit(&self, py: Python<'_>, lvl: i32, event: &Event<'_>) -> PyResult<()> {
        let logger = self.logger.bind(py);
        if !logger.call_method1("isEnabledFor", (lvl,))?.is_truthy()? {
            return Ok(());
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let extra = PyDict::new(py);
        let mut message = fields.message;
        for (name, value) in &fields.fields {
            message.push_str(&format!(" {name}={value}"));
            let attr = if RESERVED.contains(name) {
                format!("safestash_{name}")
            } else {
                (*name).to_owned()
            };
            match value {
                Value::Str(s) => extra.set_item(attr, s)?,
                Value::Int(n) => extra.set_item(attr, n)?,
                Value::UInt(n) => extra.set_item(attr, n)?,
                Value::Float(x) => extra.set_item(attr, x)?,
                Value::Bool(b) => extra.set_item(attr, b)?,
            }
        }
        let kwargs = PyDict::new(py);
        kwargs.set_item("extra", extra)?;
        // `%s` and one argument: a `%` in the message is not a format.
        logger.call_method("log", (lvl, "%s", message), Some(&kwargs))?;
        Ok(())
    }
}

impl<S: Subscriber> Layer<S> for ToLogging {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let lvl = level(event.metadata().level());
        Python::attach(|py| {
            // A logging handler that fails is logging's own business
            // (it prints its error); it never fails the store's call.
            if let Err(e) = self.emit(py, lvl, event) {
                e.print(py);
            }
        });
    }
}

/// Sends the crate's events to `logging.getLogger("safestash")`, once per
/// process (a later call, or another subscriber already set, changes
/// nothing).
pub fn install(py: Python<'_>) -> PyResult<()> {
    let logger = py.import("logging")?.call_method1("getLogger", ("safestash",))?.unbind();
    let subscriber = tracing_subscriber::registry().with(ToLogging { logger });
    let _ = tracing::subscriber::set_global_default(subscriber);
    Ok(())
}
