//! `SsOperation`: a multi-part operation of the journal, whose aggregate is
//! derived from all of its parts and never goes terminal while a part is
//! active or unreadable.

use std::ffi::{c_char, c_void};

use safestash::Stashed;
use safestash::journal::{
    Change, Derivation, Expect, Generation, Operation, OperationView, PartInfo, PartState,
    RollbackOutcome, Updated,
};
use serde_json::json;
use serde_json::value::RawValue;

use crate::store::{SsStore, store_ref};
use crate::{
    Fail, SsBytes, SsError, SsRestoreFn, call_hook, json_arg, json_bytes, need, opt_str_arg, put,
    put_bytes, run, str_arg,
};

/// A handle to one journal operation. Safe to share between threads; every
/// change is a compare-and-swap on a generation.
pub struct SsOperation {
    op: Operation,
}

/// `expect_kind` of `ss_op_update` / `ss_op_stash`: the generation is the
/// whole operation's (any change to any part since makes it a conflict).
pub const SS_EXPECT_OPERATION: i32 = 0;
/// `expect_kind`: the generation is the part's own.
pub const SS_EXPECT_PART: i32 = 1;

fn op_ref<'a>(p: *const SsOperation) -> Result<&'a Operation, Fail> {
    // SAFETY: the entry point's contract: `op` is NULL or a live handle, not
    // freed during the call.
    unsafe { p.as_ref() }.map(|o| &o.op).ok_or_else(|| Fail::arg("operation is NULL"))
}

fn expect(kind: i32, generation: u64) -> Result<Expect, Fail> {
    let g = Generation::new(generation);
    match kind {
        SS_EXPECT_OPERATION => Ok(Expect::Operation(g)),
        SS_EXPECT_PART => Ok(Expect::Part(g)),
        other => Err(Fail::arg(format!(
            "expect_kind {other} is neither SS_EXPECT_OPERATION (0) nor SS_EXPECT_PART (1)"
        ))),
    }
}

fn derivation_json(d: &Derivation) -> serde_json::Value {
    let mut v = json!({
        "aggregate": d.aggregate().map(|a| a.as_str()),
        "terminal": d.is_terminal(),
        "undetermined": !d.unreadable().is_empty(),
        "unreadable": d.unreadable().iter()
            .map(|u| json!({ "part": u.part, "reason": u.reason }))
            .collect::<Vec<_>>(),
    });
    if let Derivation::Undetermined { possible, .. } = d {
        v["possible"] = json!(possible.iter().map(|a| a.as_str()).collect::<Vec<_>>());
    }
    v
}

fn part_json(p: &PartInfo) -> serde_json::Value {
    json!({
        "name": p.name,
        "state": p.state.as_str(),
        "generation": p.generation.get(),
        "holds_stash": p.holds_stash(),
        "updates": p.updates,
        "note": p.history.last().and_then(|t| t.note.clone()),
    })
}

fn view_json(v: &OperationView) -> serde_json::Value {
    let mut out = derivation_json(&v.derivation);
    out["id"] = json!(v.id);
    out["generation"] = json!(v.generation.get());
    out["stored"] = json!(v.stored.as_str());
    out["parts"] = json!(
        v.parts
            .iter()
            .map(|p| match p {
                Ok(info) => part_json(info),
                Err(u) => json!({ "name": u.part, "unreadable": u.reason }),
            })
            .collect::<Vec<_>>()
    );
    out
}

fn updated_json(u: &Updated) -> serde_json::Value {
    let mut out = derivation_json(&u.derivation);
    out["generation"] = json!(u.generation.get());
    out["stored"] = json!(u.stored.as_str());
    out["part"] = part_json(&u.part);
    out
}

fn new_handle(op: Operation) -> *mut SsOperation {
    Box::into_raw(Box::new(SsOperation { op }))
}

/// Creates the operation `id` with the parts named in `parts_json` (a JSON
/// array of strings), all `pending`, and writes its handle to `*out`.
/// `SS_ERR_ALREADY_EXISTS` when it exists.
///
/// # Safety
///
/// `store` a live handle; `id`, `parts_json` NUL-terminated; `out` valid;
/// `err` NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ss_op_create(
    store: *const SsStore,
    id: *const c_char,
    parts_json: *const c_char,
    out: *mut *mut SsOperation,
    err: *mut SsError,
) -> i32 {
    run(err, || {
        let store = store_ref(store)?;
        need(out, "out")?;
        let id = str_arg(id, "id")?;
        let parts: Vec<String> = serde_json::from_str(str_arg(parts_json, "parts_json")?)
            .map_err(|e| Fail::arg(format!("parts_json is not a JSON array of strings: {e}")))?;
        let op = Operation::create(store, id, &parts)?;
        put(out, new_handle(op), "out")
    })
}

/// Opens the existing operation `id`; `SS_ERR_NOT_FOUND` when there is none.
///
/// # Safety
///
/// `store` a live handle; `id` NUL-terminated; `out` valid; `err` NULL or
/// valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ss_op_open(
    store: *const SsStore,
    id: *const c_char,
    out: *mut *mut SsOperation,
    err: *mut SsError,
) -> i32 {
    run(err, || {
        let store = store_ref(store)?;
        need(out, "out")?;
        let op = Operation::open(store, str_arg(id, "id")?)?;
        put(out, new_handle(op), "out")
    })
}

/// Reads every part and derives the aggregate; `*out` is a JSON object:
/// `id`, `generation`, `stored` (the aggregate last recorded), `aggregate`
/// (derived from all parts; null when unreadable parts leave it open),
/// `terminal`, `undetermined`, `unreadable` (`part`, `reason`), `possible`
/// (when undetermined), and `parts` (`name`, `state`, `generation`,
/// `holds_stash`, `updates`, `note`; or `name` and `unreadable`).
///
/// # Safety
///
/// `op` a live handle; `out` valid; `err` NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ss_op_view(
    op: *const SsOperation,
    out: *mut SsBytes,
    err: *mut SsError,
) -> i32 {
    run(err, || {
        let op = op_ref(op)?;
        need(out, "out")?;
        put_bytes(out, json_bytes(&view_json(&op.view()?)));
        Ok(())
    })
}

/// Moves `part` to `state` (`pending`, `running`, `completed`, `failed`,
/// `failed_retryable`, `cancelled`, `rollback_failed`) with an optional
/// `note`, if the generation (of the operation or the part, per
/// `expect_kind`) is still `generation`; else `SS_ERR_CONFLICT` and nothing
/// changes. `*out` (if not NULL): `generation`, `stored`, `aggregate`,
/// `terminal`, `undetermined`, `unreadable`, `part`.
///
/// # Safety
///
/// `op` a live handle; `part`, `state` NUL-terminated; `note` NULL or
/// NUL-terminated; `out` NULL or valid; `err` NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ss_op_update(
    op: *const SsOperation,
    part: *const c_char,
    expect_kind: i32,
    generation: u64,
    state: *const c_char,
    note: *const c_char,
    out: *mut SsBytes,
    err: *mut SsError,
) -> i32 {
    run(err, || {
        let op = op_ref(op)?;
        let part = str_arg(part, "part")?;
        let expect = expect(expect_kind, generation)?;
        let state: PartState = str_arg(state, "state")?.parse()?;
        let mut change = Change::to(state);
        if let Some(n) = opt_str_arg(note, "note")? {
            change = change.note(n);
        }
        let updated = op.update(part, expect, change)?;
        put_bytes(out, json_bytes(&updated_json(&updated)));
        Ok(())
    })
}

/// Stashes the JSON `value` for `part` (a running part, before it destroys
/// anything), under the same compare-and-swap as `ss_op_update`.
///
/// # Safety
///
/// `op` a live handle; `part` NUL-terminated; `value` points to `value_len`
/// readable bytes; `out` NULL or valid; `err` NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ss_op_stash(
    op: *const SsOperation,
    part: *const c_char,
    expect_kind: i32,
    generation: u64,
    value: *const u8,
    value_len: usize,
    out: *mut SsBytes,
    err: *mut SsError,
) -> i32 {
    run(err, || {
        let op = op_ref(op)?;
        let part = str_arg(part, "part")?;
        let expect = expect(expect_kind, generation)?;
        let value = json_arg(value, value_len, "value")?;
        let updated = op.stash(part, expect, &value)?;
        put_bytes(out, json_bytes(&updated_json(&updated)));
        Ok(())
    })
}

/// Rolls the operation back: pending parts are cancelled, retryable ones
/// failed, and each part's stash is handed to `hook` (its metadata's
/// `origin` is the part name) and cleared only if the hook returned 0.
/// Refused while a part runs or is unreadable. `*out` (if not NULL):
/// `op`, `generation`, `aggregate`, `terminal`, `undetermined`,
/// `unreadable`, `outcomes` (`part`, `outcome`, `error`), `unrestored`.
///
/// # Safety
///
/// `op` a live handle; `hook` NULL or a function that does not unwind;
/// `out` NULL or valid; `err` NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ss_op_rollback(
    op: *const SsOperation,
    hook: SsRestoreFn,
    user_data: *mut c_void,
    out: *mut SsBytes,
    err: *mut SsError,
) -> i32 {
    run(err, || {
        let op = op_ref(op)?;
        let hook = hook.ok_or_else(|| Fail::arg("restore hook is NULL"))?;
        let report = op.rollback(&mut |s: Stashed<Box<RawValue>>| call_hook(hook, user_data, s))?;
        let mut v = derivation_json(&report.derivation);
        v["op"] = json!(report.op);
        v["generation"] = json!(report.generation.get());
        v["unrestored"] = json!(report.unrestored);
        v["outcomes"] = json!(
            report
                .outcomes
                .iter()
                .map(|o| {
                    let (name, error) = match &o.outcome {
                        RollbackOutcome::Cancelled => ("cancelled", None),
                        RollbackOutcome::Abandoned => ("abandoned", None),
                        RollbackOutcome::Restored => ("restored", None),
                        RollbackOutcome::NothingToRestore => ("nothing_to_restore", None),
                        RollbackOutcome::RestoreFailed { error } => {
                            ("restore_failed", Some(error.clone()))
                        }
                        RollbackOutcome::NotAttempted => ("not_attempted", None),
                        _ => ("other", Some(o.outcome.to_string())),
                    };
                    json!({ "part": o.part, "outcome": name, "error": error })
                })
                .collect::<Vec<_>>()
        );
        put_bytes(out, json_bytes(&v));
        Ok(())
    })
}

/// Frees an operation handle (the operation itself stays in the store).
/// NULL is fine.
///
/// # Safety
///
/// `op` is NULL or a live handle that no other thread uses any more.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ss_op_free(op: *mut SsOperation) {
    // SAFETY: the caller gives up its handle (NULL, or from Box::into_raw
    // in new_handle), as this function's contract says.
    unsafe { crate::free_handle(op) };
}

#[cfg(test)]
mod tests {
    /// Handles are shared between threads: their contents must allow it.
    #[test]
    fn handles_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<super::SsOperation>();
        check::<crate::SsStore>();
        check::<crate::SsGuard>();
        check::<crate::SsLock>();
    }
}
