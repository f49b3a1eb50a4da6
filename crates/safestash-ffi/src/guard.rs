//! `SsGuard`: the permit to destroy (begin, commit, rollback, keep) and the
//! retry decision (resume).

use std::ffi::{c_char, c_void};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use safestash::{Checked, GuardError, LoadPolicy, Resume, RollbackGuard, Stashed};
use serde_json::json;
use serde_json::value::RawValue;

use crate::store::{SsStore, save_options, store_ref};
use crate::{
    Fail, SS_ERR_GUARD_DONE, SsBytes, SsError, SsRestoreFn, call_hook, json_arg, json_bytes,
    key_arg, meta_json, need, opt_str_arg, put, put_bytes, rfc3339, run,
};

type Guard = RollbackGuard<Box<RawValue>>;

// One guard per handle; the size of the closed states does not matter.
#[allow(clippy::large_enum_variant)]
enum Slot {
    Open(Guard),
    Busy,
    Committed,
    RolledBack,
    Kept,
}

/// A rollback guard: proof that a snapshot is durably stashed. Commit it
/// (the stash is cleared), roll it back through a restore hook (the stash
/// is cleared only if the hook succeeded), or keep it; freeing an open
/// guard keeps the stash for the next attempt. Safe to share between
/// threads; one commit or rollback runs at a time.
pub struct SsGuard {
    slot: Mutex<Slot>,
    info: serde_json::Value,
}

impl SsGuard {
    fn new(guard: Guard) -> *mut SsGuard {
        let r = guard.receipt();
        let info = json!({
            "key": r.key.as_str(),
            "digest": r.digest.to_string(),
            "created": rfc3339(r.created),
            "size": r.bytes,
        });
        Box::into_raw(Box::new(SsGuard { slot: Mutex::new(Slot::Open(guard)), info }))
    }

    fn key(&self) -> &str {
        self.info["key"].as_str().unwrap_or_default()
    }

    /// Takes the open guard out (leaving `Busy`), or says why not.
    fn take(&self) -> Result<Guard, Fail> {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        match std::mem::replace(&mut *slot, Slot::Busy) {
            Slot::Open(g) => Ok(g),
            other => {
                let why = match other {
                    Slot::Committed => "was already committed",
                    Slot::RolledBack => "was already rolled back",
                    Slot::Kept => "was already kept",
                    _ => "is being committed or rolled back by another call",
                };
                *slot = other;
                Err(Fail::new(
                    SS_ERR_GUARD_DONE,
                    format!("the guard of stash `{}` {why}", self.key()),
                ))
            }
        }
    }

    fn set(&self, to: Slot) {
        *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = to;
    }

    /// A failed commit or rollback: the guard goes back, open, for a retry.
    fn failed(&self, e: GuardError<Box<RawValue>>) -> Fail {
        let GuardError { guard, error, restored } = e;
        self.set(Slot::Open(guard));
        let mut fail = Fail::from(error);
        if restored {
            fail.message = format!(
                "stash `{}` was restored, but clearing it failed (commit to retry the clear): {}",
                self.key(),
                fail.message
            );
        }
        fail
    }
}

/// Restores the slot if the body panics with the guard taken.
struct PutBack<'a>(&'a SsGuard, bool);

impl Drop for PutBack<'_> {
    fn drop(&mut self) {
        if !self.1 {
            // The guard itself was lost in the panic; its stash stays on
            // disk. Mark it kept so later calls say so instead of "busy".
            self.0.set(Slot::Kept);
        }
    }
}

pub(crate) fn guard_ref<'a>(p: *const SsGuard) -> Result<&'a SsGuard, Fail> {
    // SAFETY: the entry point's contract: `guard` is NULL or a live handle,
    // not freed during the call.
    unsafe { p.as_ref() }.ok_or_else(|| Fail::arg("guard is NULL"))
}

/// Stashes `snapshot` under `key` durably and returns the permit to destroy
/// it in `*out`. Refuses (`SS_ERR_STASH_EXISTS`, nothing written) when a
/// stash is already there: use `ss_resume` to decide what to do with it.
///
/// # Safety
///
/// `store` is a live handle; `key` NUL-terminated; `snapshot` points to
/// `snapshot_len` readable bytes; `kind`, `origin` NULL or NUL-terminated;
/// `out` valid; `err` NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ss_begin(
    store: *const SsStore,
    key: *const c_char,
    snapshot: *const u8,
    snapshot_len: usize,
    kind: *const c_char,
    origin: *const c_char,
    out: *mut *mut SsGuard,
    err: *mut SsError,
) -> i32 {
    run(err, || {
        let store = store_ref(store)?;
        need(out, "out")?;
        let key = key_arg(key)?;
        let snapshot = json_arg(snapshot, snapshot_len, "snapshot")?;
        let opts = save_options(kind, origin)?;
        let guard = store.begin_with(&key, &snapshot, &opts)?;
        put(out, SsGuard::new(guard), "out")
    })
}

/// The rebuild succeeded: clears the stash if it is still the one this
/// guard wrote. `*removed` (if not NULL) says whether it was removed. A
/// second commit is `SS_ERR_GUARD_DONE`; a failed commit leaves the guard
/// open for a retry.
///
/// # Safety
///
/// `guard` is a live handle; `removed` NULL or valid; `err` NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ss_guard_commit(
    guard: *const SsGuard,
    removed: *mut bool,
    err: *mut SsError,
) -> i32 {
    run(err, || {
        let handle = guard_ref(guard)?;
        let g = handle.take()?;
        let mut put_back = PutBack(handle, false);
        let result = g.commit();
        put_back.1 = true;
        match result {
            Ok(r) => {
                handle.set(Slot::Committed);
                if !removed.is_null() {
                    put(removed, r, "removed")?;
                }
                Ok(())
            }
            Err(e) => Err(handle.failed(e)),
        }
    })
}

/// The rebuild failed: loads and verifies the stash, calls `hook` with it,
/// and only if the hook returned 0, clears the stash. On any failure the
/// stash and the guard stay, for a retry. A NULL hook is
/// `SS_ERR_INVALID_ARGUMENT` and does nothing.
///
/// # Safety
///
/// `guard` is a live handle; `hook` NULL or a function that does not
/// unwind; `user_data` is passed to it untouched; `err` NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ss_guard_rollback(
    guard: *const SsGuard,
    hook: SsRestoreFn,
    user_data: *mut c_void,
    err: *mut SsError,
) -> i32 {
    run(err, || {
        let handle = guard_ref(guard)?;
        let hook = hook.ok_or_else(|| Fail::arg("restore hook is NULL"))?;
        let g = handle.take()?;
        let mut put_back = PutBack(handle, false);
        let result = g.rollback(&mut |s: Stashed<Box<RawValue>>| call_hook(hook, user_data, s));
        put_back.1 = true;
        match result {
            Ok(_) => {
                handle.set(Slot::RolledBack);
                Ok(())
            }
            Err(e) => Err(handle.failed(e)),
        }
    })
}

/// Keeps the stash on purpose (for an operator or a later attempt); the
/// guard is done.
///
/// # Safety
///
/// `guard` is a live handle; `err` NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ss_guard_keep(guard: *const SsGuard, err: *mut SsError) -> i32 {
    run(err, || {
        let handle = guard_ref(guard)?;
        let g = handle.take()?;
        g.keep();
        handle.set(Slot::Kept);
        Ok(())
    })
}

/// The guard's stash as a JSON object in `*out`: key, digest, created, size.
///
/// # Safety
///
/// `guard` is a live handle; `out` valid; `err` NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ss_guard_info(
    guard: *const SsGuard,
    out: *mut SsBytes,
    err: *mut SsError,
) -> i32 {
    run(err, || {
        let handle = guard_ref(guard)?;
        need(out, "out")?;
        put_bytes(out, json_bytes(&handle.info));
        Ok(())
    })
}

/// Frees a guard handle. An open guard keeps its stash (the next attempt
/// finds it). NULL is fine.
///
/// # Safety
///
/// `guard` is NULL or a live handle that no other thread uses any more.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ss_guard_free(guard: *mut SsGuard) {
    // SAFETY: the caller gives up its handle (NULL, or from Box::into_raw
    // in SsGuard::new), as this function's contract says.
    unsafe { crate::free_handle(guard) };
}

/// `ss_resume`: no live resource, no stash.
pub const SS_RESUME_NOTHING: i32 = 0;
/// `ss_resume`: the live resource was stashed; the guard is the permit.
pub const SS_RESUME_LIVE: i32 = 1;
/// `ss_resume`: no live resource; the stash passed the policy; the guard is
/// over it, to roll back onto the recreated resource.
pub const SS_RESUME_STASH: i32 = 2;
/// `ss_resume`: no live resource; the stash failed the policy (stale,
/// future, foreign) and is left untouched; no guard.
pub const SS_RESUME_REFUSED: i32 = 3;

/// The retry decision (`Store::resume`): with `live` (JSON, not NULL) the
/// live resource is stashed (replacing an earlier run's stash only because
/// it was seen here); without it, a stash that passes the policy
/// (`max_age_ms` >= 0, and `policy_origin` if not NULL) is resumed, one that
/// fails it is refused and untouched. Sets `*outcome` to an `SS_RESUME_*`
/// value and, for LIVE and STASH, `*guard`. `*info` (if not NULL) is a JSON
/// object: `replaced` (LIVE: the replaced stash's metadata or null),
/// `stash` (STASH, REFUSED: its metadata), `verdict` (REFUSED: `stale`,
/// `future` or `foreign`). A damaged stash is `SS_ERR_CORRUPT`.
///
/// # Safety
///
/// `store` a live handle; `key` NUL-terminated; `live` NULL or pointing to
/// `live_len` readable bytes; `kind`, `origin`, `policy_origin` NULL or
/// NUL-terminated; `outcome`, `guard` valid; `info` NULL or valid; `err`
/// NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ss_resume(
    store: *const SsStore,
    key: *const c_char,
    live: *const u8,
    live_len: usize,
    kind: *const c_char,
    origin: *const c_char,
    max_age_ms: i64,
    policy_origin: *const c_char,
    outcome: *mut i32,
    guard: *mut *mut SsGuard,
    info: *mut SsBytes,
    err: *mut SsError,
) -> i32 {
    run(err, || {
        let store = store_ref(store)?;
        need(outcome, "outcome")?;
        need(guard, "guard")?;
        let key = key_arg(key)?;
        let live = if live.is_null() { None } else { Some(json_arg(live, live_len, "live")?) };
        let opts = save_options(kind, origin)?;
        let mut policy = LoadPolicy::new();
        if let Ok(ms) = u64::try_from(max_age_ms) {
            policy = policy.max_age(Duration::from_millis(ms));
        }
        if let Some(o) = opt_str_arg(policy_origin, "policy_origin")? {
            policy = policy.origin(o);
        }
        let (code, g, details) = match store.resume(&key, live.as_ref(), &opts, &policy)? {
            Resume::Live { guard, replaced } => (
                crate::SS_RESUME_LIVE,
                SsGuard::new(guard),
                json!({ "replaced": replaced.as_ref().map(meta_json) }),
            ),
            Resume::Stash(guard) => {
                let stash = guard.receipt().clone();
                let details = json!({ "stash": {
                    "key": stash.key.as_str(),
                    "digest": stash.digest.to_string(),
                    "created": rfc3339(stash.created),
                    "size": stash.bytes,
                    "path": stash.path.to_string_lossy(),
                }});
                (crate::SS_RESUME_STASH, SsGuard::new(guard), details)
            }
            Resume::Refused(checked) => {
                let verdict = match &checked {
                    Checked::Fresh(_) => "fresh",
                    Checked::Stale { .. } => "stale",
                    Checked::Future { .. } => "future",
                    Checked::Foreign { .. } => "foreign",
                };
                (
                    crate::SS_RESUME_REFUSED,
                    std::ptr::null_mut(),
                    json!({ "verdict": verdict, "stash": meta_json(checked.stashed().meta()) }),
                )
            }
            Resume::Nothing => (crate::SS_RESUME_NOTHING, std::ptr::null_mut(), json!({})),
            _ => return Err(Fail::new(crate::SS_ERR_OTHER, "unknown resume outcome")),
        };
        put_bytes(info, json_bytes(&details));
        put(guard, g, "guard")?;
        put(outcome, code, "outcome")
    })
}
