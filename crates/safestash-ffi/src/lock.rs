//! `SsLock`: a held per-key lock, and the writes made under it.

use std::ffi::c_char;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use safestash::{Error, KeyLock, StashKey, Store};

use crate::store::{SsStore, save_options, store_ref};
use crate::{Fail, SsError, json_arg, key_arg, need, put, run};

/// A held lock on one key: no other holder (thread, process, host) can
/// save or clear that key until it is freed. Write the key through
/// `ss_lock_save` / `ss_lock_clear` while holding it (a plain `ss_save` of
/// the same key waits for this very lock). Safe to share between threads.
pub struct SsLock {
    lock: Mutex<KeyLock>,
}

/// Takes the lock once (waiting or not) on a short-lived thread of its
/// own: the store refuses a second lock of a key by the thread that holds
/// it, and a caller's threads (Go's, say) run unrelated work in turn, so the
/// holder is recorded as that finished thread, never one of the caller's.
fn acquire(store: &Store, key: &StashKey, wait: bool) -> Result<KeyLock, Error> {
    std::thread::scope(|s| {
        s.spawn(|| if wait { store.lock(key) } else { store.try_lock(key) })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Locks `key`. `timeout_ms` < 0 waits as long as the backend does
/// (remote stores bound it with their `lock_timeout`); 0 tries once;
/// otherwise retries until the lock is free or `timeout_ms` has passed.
/// Held elsewhere past that: `SS_ERR_LOCKED`.
///
/// # Safety
///
/// `store` a live handle; `key` NUL-terminated; `out` valid; `err` NULL or
/// valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ss_lock(
    store: *const SsStore,
    key: *const c_char,
    timeout_ms: i64,
    out: *mut *mut SsLock,
    err: *mut SsError,
) -> i32 {
    run(err, || {
        let store = store_ref(store)?;
        need(out, "out")?;
        let key = key_arg(key)?;
        let lock = match u64::try_from(timeout_ms) {
            Err(_) => acquire(store, &key, true)?,
            Ok(ms) => {
                let deadline = Instant::now() + Duration::from_millis(ms);
                let mut pause = Duration::from_millis(1);
                loop {
                    match acquire(store, &key, false) {
                        Err(Error::Locked { .. }) if Instant::now() < deadline => {
                            let left = deadline.saturating_duration_since(Instant::now());
                            std::thread::sleep(pause.min(left));
                            pause = (pause * 2).min(Duration::from_millis(50));
                        }
                        other => break other?,
                    }
                }
            }
        };
        put(out, Box::into_raw(Box::new(SsLock { lock: Mutex::new(lock) })), "out")
    })
}

fn lock_ref<'a>(p: *const SsLock) -> Result<&'a SsLock, Fail> {
    // SAFETY: the entry point's contract: `lock` is NULL or a live handle,
    // not freed during the call.
    unsafe { p.as_ref() }.ok_or_else(|| Fail::arg("lock is NULL"))
}

/// Saves the JSON `value` under the held lock's key (through its fencing),
/// with an optional `kind` and `origin`.
///
/// # Safety
///
/// `lock` a live handle; `value` points to `value_len` readable bytes;
/// `kind`, `origin` NULL or NUL-terminated; `err` NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ss_lock_save(
    lock: *const SsLock,
    value: *const u8,
    value_len: usize,
    kind: *const c_char,
    origin: *const c_char,
    err: *mut SsError,
) -> i32 {
    run(err, || {
        let lock = lock_ref(lock)?;
        let value = json_arg(value, value_len, "value")?;
        let opts = save_options(kind, origin)?;
        lock.lock.lock().unwrap_or_else(PoisonError::into_inner).save_with(&value, &opts)?;
        Ok(())
    })
}

/// Clears the held lock's key; `*removed` says whether a stash was there.
///
/// # Safety
///
/// `lock` a live handle; `removed` valid; `err` NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ss_lock_clear(
    lock: *const SsLock,
    removed: *mut bool,
    err: *mut SsError,
) -> i32 {
    run(err, || {
        let lock = lock_ref(lock)?;
        need(removed, "removed")?;
        let r = lock.lock.lock().unwrap_or_else(PoisonError::into_inner).clear()?;
        put(removed, r, "removed")
    })
}

/// Releases the lock and frees the handle. NULL is fine.
///
/// # Safety
///
/// `lock` is NULL or a live handle that no other thread uses any more.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ss_lock_free(lock: *mut SsLock) {
    // SAFETY: the caller gives up its handle (NULL, or from Box::into_raw
    // in ss_lock), as this function's contract says.
    unsafe { crate::free_handle(lock) };
}
