//! `SsStore`: open, save, load, clear, list, verify, quarantine.

use std::ffi::c_char;

use safestash::{SaveOptions, Store};
use serde_json::json;

use crate::{
    Fail, SsBytes, SsError, json_arg, json_bytes, key_arg, meta_json, need, opt_str_arg, put,
    put_bytes, rfc3339, run, str_arg,
};

/// An open store (a directory, `postgresql://...`, `s3://...`: every URL
/// `Store::open_url` takes). Safe to use from several threads at once.
pub struct SsStore {
    pub(crate) store: Store,
}

pub(crate) fn store_ref<'a>(p: *const SsStore) -> Result<&'a Store, Fail> {
    // SAFETY: the entry point's contract: `store` is NULL or a live handle
    // from ss_store_open, not freed during the call.
    unsafe { p.as_ref() }.map(|s| &s.store).ok_or_else(|| Fail::arg("store is NULL"))
}

pub(crate) fn save_options(
    kind: *const c_char,
    origin: *const c_char,
) -> Result<SaveOptions, Fail> {
    let mut opts = SaveOptions::new();
    if let Some(k) = opt_str_arg(kind, "kind")? {
        opts = opts.kind(k);
    }
    if let Some(o) = opt_str_arg(origin, "origin")? {
        opts = opts.origin(o);
    }
    Ok(opts)
}

/// Opens the store at `url` (a directory path, `file://`, `postgresql://`,
/// `s3://`, `gs://`, `az://`, `memory://`) and writes its handle to `*out`.
/// A directory must exist.
///
/// # Safety
///
/// `url` is a NUL-terminated string; `out` is a valid `SsStore **`; `err` is
/// NULL or a valid `SsError *`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ss_store_open(
    url: *const c_char,
    out: *mut *mut SsStore,
    err: *mut SsError,
) -> i32 {
    run(err, || {
        need(out, "out")?;
        let store = Store::open_url(str_arg(url, "url")?)?;
        put(out, Box::into_raw(Box::new(SsStore { store })), "out")
    })
}

/// Closes a store handle. Guards, locks and operations opened from it stay
/// usable (they hold the store themselves). NULL is fine.
///
/// # Safety
///
/// `store` is NULL or a handle from `ss_store_open` not yet freed, and no
/// other thread uses it any more.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ss_store_free(store: *mut SsStore) {
    // SAFETY: the caller gives up its handle (NULL, or from Box::into_raw
    // in ss_store_open), as this function's contract says.
    unsafe { crate::free_handle(store) };
}

/// Stashes the JSON `value` (`value_len` bytes) under `key`, durably, with
/// an optional `kind` and `origin` (NULL for none). The bytes are stored as
/// given, after a check that they are one JSON value.
///
/// # Safety
///
/// `store` is a live handle; `key` a NUL-terminated string; `value` points to
/// `value_len` readable bytes; `kind` and `origin` are NULL or NUL-terminated;
/// `err` is NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ss_save(
    store: *const SsStore,
    key: *const c_char,
    value: *const u8,
    value_len: usize,
    kind: *const c_char,
    origin: *const c_char,
    err: *mut SsError,
) -> i32 {
    run(err, || {
        let store = store_ref(store)?;
        let key = key_arg(key)?;
        let value = json_arg(value, value_len, "value")?;
        let opts = save_options(kind, origin)?;
        store.save_with(&key, &value, &opts)?;
        Ok(())
    })
}

/// Loads and verifies the stash of `key`. Sets `*found`; when found, fills
/// `*value` with the stored JSON text, byte for byte, and `*meta` (if not
/// NULL) with a JSON object: key, kind, origin, created (RFC 3339), digest
/// (sha256 hex), size, path. A damaged stash is `SS_ERR_CORRUPT`, never
/// "not found".
///
/// # Safety
///
/// `store` is a live handle; `key` NUL-terminated; `found` and `value` valid
/// pointers; `meta` NULL or valid; `err` NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ss_load(
    store: *const SsStore,
    key: *const c_char,
    found: *mut bool,
    value: *mut SsBytes,
    meta: *mut SsBytes,
    err: *mut SsError,
) -> i32 {
    run(err, || {
        let store = store_ref(store)?;
        need(found, "found")?;
        need(value, "value")?;
        let key = key_arg(key)?;
        match store.read_raw(&key)? {
            None => put(found, false, "found"),
            Some(stashed) => {
                let m = json_bytes(&meta_json(stashed.meta()));
                put_bytes(value, stashed.into_value());
                put_bytes(meta, m);
                put(found, true, "found")
            }
        }
    })
}

/// Removes the stash of `key`; `*removed` says whether there was one.
///
/// # Safety
///
/// `store` is a live handle; `key` NUL-terminated; `removed` valid; `err`
/// NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ss_clear(
    store: *const SsStore,
    key: *const c_char,
    removed: *mut bool,
    err: *mut SsError,
) -> i32 {
    run(err, || {
        let store = store_ref(store)?;
        need(removed, "removed")?;
        let key = key_arg(key)?;
        let r = store.clear(&key)?;
        put(removed, r, "removed")
    })
}

fn error_json(e: &safestash::Error) -> serde_json::Value {
    let (code, reason) = crate::code_of(e);
    json!({ "code": code, "message": crate::chain(e), "reason": reason })
}

/// Lists the stashes (headers only) as a JSON array in `*out`: per stash
/// `key`, `path`, `size`, and either `kind`, `origin`, `created` or an
/// `error` object (`code`, `message`, `reason`) for an unreadable header.
///
/// # Safety
///
/// `store` is a live handle; `out` valid; `err` NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ss_list(
    store: *const SsStore,
    out: *mut SsBytes,
    err: *mut SsError,
) -> i32 {
    run(err, || {
        let store = store_ref(store)?;
        need(out, "out")?;
        let items: Vec<serde_json::Value> = store
            .list()?
            .iter()
            .map(|info| {
                let mut v = json!({
                    "key": info.key.as_str(),
                    "path": info.path.to_string_lossy(),
                    "size": info.size,
                });
                match &info.header {
                    Ok(h) => {
                        v["kind"] = json!(h.kind());
                        v["origin"] = json!(h.origin());
                        v["created"] = json!(rfc3339(h.created()));
                    }
                    Err(e) => v["error"] = error_json(e),
                }
                v
            })
            .collect();
        put_bytes(out, json_bytes(&json!(items)));
        Ok(())
    })
}

/// Verifies every stash in full; `*out` is a JSON array, per stash `key`,
/// `path`, `ok`, and when not ok an `error` object (`code`, `message`,
/// `reason`).
///
/// # Safety
///
/// `store` is a live handle; `out` valid; `err` NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ss_verify(
    store: *const SsStore,
    out: *mut SsBytes,
    err: *mut SsError,
) -> i32 {
    run(err, || {
        let store = store_ref(store)?;
        need(out, "out")?;
        let items: Vec<serde_json::Value> = store
            .verify()?
            .iter()
            .map(|r| {
                let mut v = json!({
                    "key": r.key.as_str(),
                    "path": r.path.to_string_lossy(),
                    "ok": r.result.is_ok(),
                });
                if let Err(e) = &r.result {
                    v["error"] = error_json(e);
                }
                v
            })
            .collect();
        put_bytes(out, json_bytes(&json!(items)));
        Ok(())
    })
}

/// Moves the stash of `key` aside for inspection (never deletes it).
/// `*moved` says whether there was one; then `*path` (if not NULL) holds
/// where it went.
///
/// # Safety
///
/// `store` is a live handle; `key` NUL-terminated; `moved` valid; `path`
/// NULL or valid; `err` NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ss_quarantine(
    store: *const SsStore,
    key: *const c_char,
    moved: *mut bool,
    path: *mut SsBytes,
    err: *mut SsError,
) -> i32 {
    run(err, || {
        let store = store_ref(store)?;
        need(moved, "moved")?;
        let key = key_arg(key)?;
        match store.quarantine(&key)? {
            Some(p) => {
                put_bytes(path, p.to_string_lossy().into_owned().into_bytes());
                put(moved, true, "moved")
            }
            None => put(moved, false, "moved"),
        }
    })
}
