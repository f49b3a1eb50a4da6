//! The C ABI of [safestash](safestash): the same store, guards, locks and
//! journal, for any language that can call C (the Go package in
//! `bindings/go` is built on it).
//!
//! # Conventions
//!
//! - **Handles** (`SsStore`, `SsGuard`, `SsLock`, `SsOperation`) are opaque
//!   pointers, safe to use from several threads at once. Each has a `_free`
//!   function; freeing a handle while another thread still uses it is the
//!   caller's bug (as with `free`).
//! - **Values** go in and out as UTF-8 JSON text. A value is validated and
//!   then stored exactly as given, so what one language saves, another
//!   reads back byte for byte.
//! - **Every call** returns a status code (`SS_OK` or one of the `SS_ERR_*`
//!   codes) and, on failure, fills the `SsError` the caller passed (which
//!   may be NULL): the same code, a message naming what failed and why, and
//!   for a damaged stash the reason. Free its strings with
//!   [`ss_error_free`].
//! - **No panic crosses the boundary**: every entry point catches it and
//!   returns `SS_ERR_PANIC`.
//! - **Ownership is explicit**: every `SsBytes` the library fills is freed
//!   with [`ss_bytes_free`]; every handle with its own `_free`.
//! - **Restore hooks** are a C function pointer and a `user_data` pointer;
//!   the hook returns 0 when it restored the value. It must not unwind
//!   (throw) across the call.
//!
//! # Example (C)
//!
//! ```c
//! SsStore *store = NULL;
//! SsError err = {0};
//! if (ss_store_open("/var/lib/etl/stashes", &store, &err) != SS_OK) {
//!     fprintf(stderr, "%s\n", err.message);
//!     ss_error_free(&err);
//!     return 1;
//! }
//! const char *v = "{\"rows\":[1,2]}";
//! ss_save(store, "orders", (const uint8_t *)v, strlen(v), NULL, NULL, &err);
//! ss_store_free(store);
//! ```

use std::ffi::{CStr, CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::SystemTime;

use safestash::journal::JournalError;
use safestash::{Error, StashKey, StashMeta};
use serde_json::value::RawValue;

mod guard;
mod journal;
mod lock;
mod store;

pub use guard::*;
pub use journal::*;
pub use lock::*;
pub use store::*;

/// The call succeeded.
pub const SS_OK: i32 = 0;
/// A required pointer was NULL, a string was not UTF-8, a JSON input was
/// malformed, or an option (kind, origin, state name) was invalid.
pub const SS_ERR_INVALID_ARGUMENT: i32 = 1;
/// The key is not a valid stash key (see `StashKey::new`).
pub const SS_ERR_INVALID_KEY: i32 = 2;
/// A file system call failed.
pub const SS_ERR_IO: i32 = 3;
/// A stash is damaged; `SsError.reason` says how. Never reported as absent.
pub const SS_ERR_CORRUPT: i32 = 4;
/// A stash has a format version this build does not read.
pub const SS_ERR_UNSUPPORTED_VERSION: i32 = 5;
/// The key is locked by another holder.
pub const SS_ERR_LOCKED: i32 = 6;
/// A stash already exists under the key (`ss_begin` never replaces one
/// the caller has not seen).
pub const SS_ERR_STASH_EXISTS: i32 = 7;
/// The stash is gone or is no longer the one expected; nothing was written.
pub const SS_ERR_REPLACED: i32 = 8;
/// The restore hook failed; the stash is kept.
pub const SS_ERR_RESTORE: i32 = 9;
/// The PostgreSQL or object storage backend failed or timed out (the
/// outcome of a write may be unknown: find out before acting on it).
pub const SS_ERR_BACKEND: i32 = 10;
/// A stored value could not be decoded as JSON.
pub const SS_ERR_VALUE: i32 = 11;
/// The guard was already committed, rolled back or kept, or is in use.
pub const SS_ERR_GUARD_DONE: i32 = 12;
/// A journal update expected a generation that is no longer current:
/// re-read the operation and retry.
pub const SS_ERR_CONFLICT: i32 = 13;
/// The journal operation does not exist.
pub const SS_ERR_NOT_FOUND: i32 = 14;
/// The journal operation already exists.
pub const SS_ERR_ALREADY_EXISTS: i32 = 15;
/// A part of a journal operation cannot be read: its state is
/// undetermined, and nothing terminal is decided on it.
pub const SS_ERR_UNDETERMINED: i32 = 16;
/// The journal refused the change (a transition not allowed, a finished
/// operation, running parts, a stash refused).
pub const SS_ERR_JOURNAL: i32 = 17;
/// A panic inside the library was caught at the boundary.
pub const SS_ERR_PANIC: i32 = 98;
/// Any other error.
pub const SS_ERR_OTHER: i32 = 99;

/// The error object every call fills on failure.
///
/// Start with a zeroed struct; after a failure, release its strings with
/// [`ss_error_free`] (which zeroes it again, so it can be reused).
#[repr(C)]
pub struct SsError {
    /// The status code the call returned.
    pub code: i32,
    /// What failed and why, NUL-terminated UTF-8; NULL when `code` is `SS_OK`.
    pub message: *mut c_char,
    /// For `SS_ERR_CORRUPT` (and `SS_ERR_UNDETERMINED`), the damage in a
    /// few words; NULL otherwise.
    pub reason: *mut c_char,
}

/// Bytes the library allocated (a JSON text, a path). Release with
/// [`ss_bytes_free`]. `ptr` is NULL and `len` 0 when empty.
#[repr(C)]
pub struct SsBytes {
    /// The first byte.
    pub ptr: *mut u8,
    /// How many bytes.
    pub len: usize,
}

/// A restore hook: called with the stashed value (JSON text) and its
/// metadata (a JSON object: key, kind, origin, created, digest, size,
/// path); returns 0 when it restored the value, anything else when it
/// failed (the stash is then kept). It must not unwind across the call.
/// NULL is refused with `SS_ERR_INVALID_ARGUMENT`.
pub type SsRestoreFn = Option<
    unsafe extern "C" fn(
        user_data: *mut std::ffi::c_void,
        value: *const u8,
        value_len: usize,
        meta: *const u8,
        meta_len: usize,
    ) -> i32,
>;

/// A restore hook that is not NULL.
pub(crate) type Hook = unsafe extern "C" fn(
    user_data: *mut std::ffi::c_void,
    value: *const u8,
    value_len: usize,
    meta: *const u8,
    meta_len: usize,
) -> i32;

/// Frees the strings of an error object filled by a failed call and zeroes
/// it. NULL, or a zeroed object, is fine.
///
/// # Safety
///
/// `err` is NULL or points to an `SsError` whose strings this library set.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ss_error_free(err: *mut SsError) {
    let _ = catch_unwind(|| {
        // SAFETY: the caller promises `err` is NULL or a valid SsError.
        let Some(err) = (unsafe { err.as_mut() }) else { return };
        for p in [&mut err.message, &mut err.reason] {
            if !p.is_null() {
                // SAFETY: non-NULL strings in an SsError come from
                // CString::into_raw in `fill`, and are freed only here (then
                // set to NULL).
                drop(unsafe { CString::from_raw(*p) });
                *p = std::ptr::null_mut();
            }
        }
        err.code = SS_OK;
    });
}

/// Frees bytes this library handed out and zeroes the struct. NULL, or a
/// zeroed struct, is fine.
///
/// # Safety
///
/// `bytes` is NULL or points to an `SsBytes` filled by this library.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ss_bytes_free(bytes: *mut SsBytes) {
    let _ = catch_unwind(|| {
        // SAFETY: the caller promises `bytes` is NULL or a valid SsBytes.
        let Some(b) = (unsafe { bytes.as_mut() }) else { return };
        if !b.ptr.is_null() {
            let slice = std::ptr::slice_from_raw_parts_mut(b.ptr, b.len);
            // SAFETY: a non-NULL `ptr` comes from Box::<[u8]>::into_raw in
            // `put_bytes` with this exact length, and is freed only here.
            drop(unsafe { Box::from_raw(slice) });
        }
        b.ptr = std::ptr::null_mut();
        b.len = 0;
    });
}

/// An error on its way to C: a code, a message, maybe a reason.
#[derive(Debug)]
pub(crate) struct Fail {
    pub(crate) code: i32,
    pub(crate) message: String,
    pub(crate) reason: Option<String>,
}

impl Fail {
    pub(crate) fn new(code: i32, message: impl Into<String>) -> Fail {
        Fail { code, message: message.into(), reason: None }
    }

    pub(crate) fn arg(message: impl Into<String>) -> Fail {
        Fail::new(SS_ERR_INVALID_ARGUMENT, message)
    }
}

/// The message with every cause, `outer: inner: innermost`.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.ends_with(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    msg
}

pub(crate) fn code_of(e: &Error) -> (i32, Option<String>) {
    match e {
        Error::Io { .. } | Error::Rename { .. } | Error::NotAFile { .. } => (SS_ERR_IO, None),
        Error::Corrupt { reason, .. } => (SS_ERR_CORRUPT, Some(reason.to_string())),
        Error::UnsupportedVersion { .. } => (SS_ERR_UNSUPPORTED_VERSION, None),
        Error::Locked { .. } | Error::LockedByThisThread { .. } => (SS_ERR_LOCKED, None),
        Error::StashExists { .. } => (SS_ERR_STASH_EXISTS, None),
        Error::Serialize { .. } | Error::Deserialize { .. } => (SS_ERR_VALUE, None),
        Error::InvalidOption { .. } => (SS_ERR_INVALID_ARGUMENT, None),
        Error::Key(_) => (SS_ERR_INVALID_KEY, None),
        Error::Restore { .. } => (SS_ERR_RESTORE, None),
        Error::Backend { .. } => (SS_ERR_BACKEND, None),
        Error::Replaced { .. } => (SS_ERR_REPLACED, None),
        _ => (SS_ERR_OTHER, None),
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        let (code, reason) = code_of(&e);
        Fail { code, message: chain(&e), reason }
    }
}

impl From<safestash::KeyError> for Fail {
    fn from(e: safestash::KeyError) -> Fail {
        Fail::new(SS_ERR_INVALID_KEY, chain(&e))
    }
}

impl From<JournalError> for Fail {
    fn from(e: JournalError) -> Fail {
        let message = chain(&e);
        let (code, reason) = match &e {
            JournalError::Store { source, .. } => code_of(source),
            JournalError::RollbackIncomplete { source, .. } => code_of(source),
            JournalError::Invalid { .. } => (SS_ERR_INVALID_ARGUMENT, None),
            JournalError::NotFound { .. } => (SS_ERR_NOT_FOUND, None),
            JournalError::AlreadyExists { .. } => (SS_ERR_ALREADY_EXISTS, None),
            JournalError::Conflict { .. } => (SS_ERR_CONFLICT, None),
            JournalError::PartUnreadable { unreadable, .. } => {
                (SS_ERR_UNDETERMINED, Some(unreadable.reason.clone()))
            }
            JournalError::Undetermined { unreadable, .. } => (
                SS_ERR_UNDETERMINED,
                Some(unreadable.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")),
            ),
            JournalError::BadHeader { reason, .. } => (SS_ERR_CORRUPT, Some(reason.clone())),
            _ => (SS_ERR_JOURNAL, None),
        };
        Fail { code, message, reason }
    }
}

fn c_string(s: String) -> *mut c_char {
    // Interior NULs cannot cross as a C string: show them escaped.
    let s = if s.contains('\0') { s.replace('\0', "\\0") } else { s };
    CString::new(s).map(CString::into_raw).unwrap_or(std::ptr::null_mut())
}

fn fill(err: *mut SsError, fail: Fail) -> i32 {
    let code = fail.code;
    // SAFETY: every entry point's contract says `err` is NULL or a valid,
    // writable SsError.
    if let Some(e) = unsafe { err.as_mut() } {
        // A caller that reuses an error object without freeing it would
        // leak its strings; free them first (they are ours or NULL).
        // SAFETY: as above; strings in it are NULL or ours.
        unsafe { ss_error_free(e) };
        e.code = code;
        e.message = c_string(fail.message);
        e.reason = fail.reason.map_or(std::ptr::null_mut(), c_string);
    }
    code
}

/// Runs one entry point's body: a panic becomes `SS_ERR_PANIC`, an error
/// fills `err`.
pub(crate) fn run(err: *mut SsError, body: impl FnOnce() -> Result<(), Fail>) -> i32 {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => SS_OK,
        Ok(Err(fail)) => fill(err, fail),
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            fill(err, Fail::new(SS_ERR_PANIC, format!("internal error (panic): {what}")))
        }
    }
}

/// A required UTF-8 string argument.
pub(crate) fn str_arg<'a>(p: *const c_char, what: &str) -> Result<&'a str, Fail> {
    if p.is_null() {
        return Err(Fail::arg(format!("{what} is NULL")));
    }
    // SAFETY: the entry point's contract: a non-NULL string argument is a
    // NUL-terminated string valid for the duration of the call.
    let c = unsafe { CStr::from_ptr(p) };
    c.to_str().map_err(|_| Fail::arg(format!("{what} is not UTF-8")))
}

/// An optional UTF-8 string argument (NULL = none).
pub(crate) fn opt_str_arg<'a>(p: *const c_char, what: &str) -> Result<Option<&'a str>, Fail> {
    if p.is_null() { Ok(None) } else { str_arg(p, what).map(Some) }
}

pub(crate) fn key_arg(p: *const c_char) -> Result<StashKey, Fail> {
    Ok(StashKey::new(str_arg(p, "key")?)?)
}

/// A required byte buffer holding JSON text, validated.
pub(crate) fn json_arg(p: *const u8, len: usize, what: &str) -> Result<Box<RawValue>, Fail> {
    if p.is_null() {
        return Err(Fail::arg(format!("{what} is NULL")));
    }
    // SAFETY: the entry point's contract: `p` points to `len` readable
    // bytes for the duration of the call.
    let bytes = unsafe { std::slice::from_raw_parts(p, len) };
    let text = std::str::from_utf8(bytes).map_err(|_| Fail::arg(format!("{what} is not UTF-8")))?;
    serde_json::from_str::<Box<RawValue>>(text)
        .map_err(|e| Fail::arg(format!("{what} is not one JSON value: {e}")))
}

/// Writes `value` through an out pointer that must not be NULL.
pub(crate) fn put<T>(out: *mut T, value: T, what: &str) -> Result<(), Fail> {
    if out.is_null() {
        return Err(Fail::arg(format!("{what} is NULL")));
    }
    // SAFETY: the entry point's contract: a non-NULL out pointer is valid
    // and writable.
    unsafe { out.write(value) };
    Ok(())
}

/// Checks an out pointer before any work, so nothing happens when it is NULL.
pub(crate) fn need<T>(out: *mut T, what: &str) -> Result<(), Fail> {
    if out.is_null() { Err(Fail::arg(format!("{what} is NULL"))) } else { Ok(()) }
}

/// Hands `bytes` to the caller through `out` (optional out pointer: NULL
/// means the caller does not want them).
pub(crate) fn put_bytes(out: *mut SsBytes, bytes: Vec<u8>) {
    if out.is_null() {
        return;
    }
    let len = bytes.len();
    let ptr = if len == 0 {
        std::ptr::null_mut()
    } else {
        Box::into_raw(bytes.into_boxed_slice()).cast::<u8>()
    };
    // SAFETY: `out` is non-NULL and, by the entry point's contract, valid
    // and writable.
    unsafe { out.write(SsBytes { ptr, len }) };
}

pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

/// A stash's metadata as a JSON object.
pub(crate) fn meta_json(m: &StashMeta) -> serde_json::Value {
    serde_json::json!({
        "key": m.header.key().as_str(),
        "kind": m.header.kind(),
        "origin": m.header.origin(),
        "created": rfc3339(m.header.created()),
        "digest": m.digest.to_string(),
        "size": m.size,
        "path": m.path.to_string_lossy(),
    })
}

/// Frees a handle the library handed out with `Box::into_raw`: NULL is
/// fine, and a panic in the value's drop does not cross the boundary.
///
/// # Safety
///
/// `handle` is NULL or came from `Box::into_raw` of a `Box<T>` and is not
/// freed yet; the caller gives it up (no other thread uses it any more).
pub(crate) unsafe fn free_handle<T>(handle: *mut T) {
    if handle.is_null() {
        return;
    }
    // SAFETY: per this function's contract, a live Box<T> that the caller
    // gives up.
    let boxed = unsafe { Box::from_raw(handle) };
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(boxed)));
}

pub(crate) fn json_bytes(v: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// Calls a C restore hook with a stash; Ok when it returned 0.
pub(crate) fn call_hook(
    hook: Hook,
    user_data: *mut std::ffi::c_void,
    stashed: safestash::Stashed<Box<RawValue>>,
) -> Result<(), HookFailed> {
    let meta = json_bytes(&meta_json(stashed.meta()));
    let value = stashed.value().get().as_bytes();
    // SAFETY: the entry point's contract: `hook` is a function of this
    // signature that does not unwind; it gets `user_data` back untouched and
    // two buffers valid for the duration of the call.
    let rc = unsafe { hook(user_data, value.as_ptr(), value.len(), meta.as_ptr(), meta.len()) };
    if rc == 0 { Ok(()) } else { Err(HookFailed(rc)) }
}

/// A restore hook's non-zero return.
#[derive(Debug)]
pub(crate) struct HookFailed(i32);

impl std::fmt::Display for HookFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the restore hook returned {}", self.0)
    }
}

impl std::error::Error for HookFailed {}
