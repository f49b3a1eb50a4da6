"""The rollback guard, the retry decision and the held lock."""

import gc
import logging
import threading
import time
import warnings

import pytest

import safestash


def test_exception_inside_keeps_the_stash_and_propagates(store):
    with pytest.raises(RuntimeError, match="reload failed"):
        with store.begin("orders", {"rows": [1, 2]}) as guard:
            raise RuntimeError("reload failed")
    assert guard.open
    assert store.load("orders").value == {"rows": [1, 2]}
    # Still usable after the block: roll back explicitly.
    restored = []
    guard.rollback(lambda s: restored.append(s.value))
    assert restored == [{"rows": [1, 2]}] and store.load("orders") is None
    assert guard.state_name == "rolled_back"


def test_commit_clears(store):
    with store.begin("orders", [1]) as guard:
        assert store.load("orders").digest == guard.digest
        assert guard.commit() is True
    assert store.load("orders") is None
    with pytest.raises(RuntimeError, match="already committed"):
        guard.commit()


def test_leaving_without_commit_keeps_and_warns(store):
    with pytest.warns(safestash.StashKeptWarning):
        with store.begin("orders", [1]):
            pass
    assert store.load("orders").value == [1]


def test_a_failed_rollback_keeps_the_stash_and_the_guard_usable(store):
    guard = store.begin("orders", {"v": 1})
    calls = []

    def flaky(stashed):
        calls.append(stashed.value)
        if len(calls) == 1:
            raise ConnectionError("database is down")

    with pytest.raises(safestash.RestoreError) as e:
        guard.rollback(flaky)
    assert isinstance(e.value.__cause__, ConnectionError)
    assert e.value.restored is False
    assert guard.open and store.load("orders").value == {"v": 1}
    guard.rollback(flaky)  # the retry succeeds
    assert calls == [{"v": 1}, {"v": 1}] and store.load("orders") is None


def test_begin_refuses_to_replace_an_unseen_stash(store):
    store.save("orders", "the crashed run's only good copy")
    with pytest.raises(safestash.StashExistsError) as e:
        store.begin("orders", "a snapshot of what is already gone")
    assert e.value.digest == store.load("orders").digest
    assert store.load("orders").value == "the crashed run's only good copy"


def test_rollback_of_a_replaced_stash_is_refused(store):
    guard = store.begin("orders", 1)
    store.save("orders", 2)  # another writer
    with pytest.raises(safestash.ReplacedError):
        guard.rollback(lambda s: pytest.fail("must not restore another stash"))
    assert store.load("orders").value == 2


def test_a_stash_replaced_during_the_restore_is_left_in_place(store):
    guard = store.begin("orders", 1)

    def hook(stashed):
        store.save("orders", 2)  # another writer, during the restore

    guard.rollback(hook)
    assert store.load("orders").value == 2  # cleared only if unchanged


def test_retry_restore_path(store):
    """A worker stashes, drops the table and dies; the retry restores."""
    live = {"columns": ["amount"], "labels": {"amount": "Amount"}}
    first = store.resume("orders", live, kind="table-snapshot", origin="upload-1", max_age=3600, expect_origin="upload-1")
    assert first.decision == "live" and first.replaced is None
    first.guard.keep()  # ... the table is dropped, the worker dies here.

    decision, guard = store.resume("orders", None, max_age=3600, expect_origin="upload-1")
    assert decision == "stash"
    restored = []
    guard.rollback(lambda s: restored.append(s.value))
    assert restored == [live] and store.load("orders") is None

    assert tuple(store.resume("orders", None)) == ("nothing", None)


def test_live_wins_over_a_leftover_stash(store):
    store.save("orders", "left by a crashed run")
    r = store.resume("orders", "live now")
    assert r.decision == "live" and r.replaced is not None
    assert store.load("orders").value == "live now"
    r.guard.commit()


def test_stale_and_foreign_stashes_are_refused_not_applied(store):
    store.save("orders", "old", origin="upload-1")
    r = store.resume("orders", None, expect_origin="upload-2")
    assert r.decision == "refused" and r.guard is None
    assert r.checked.verdict == "foreign" and r.checked.found == "upload-1"
    assert store.resume("orders", None, max_age=0).checked.verdict == "stale"
    assert store.load("orders").value == "old"  # untouched
    guard = store.adopt(r.checked.stashed)  # the caller accepts it anyway
    got = []
    guard.rollback(lambda s: got.append(s.value))
    assert got == ["old"] and store.load("orders") is None


def test_held_lock(store, tmp_path):
    with store.lock("k") as held:
        assert held.locked
        with pytest.raises(safestash.LockedByThisThreadError):
            store.save("k", 1)
        held.save({"v": 1}, kind="x")
        assert store.load("k").kind == "x"
        other = safestash.Store(store.path)
        errors = []

        def try_elsewhere():
            try:
                other.lock("k", blocking=False)
            except safestash.LockedError as e:
                errors.append(e)

        t = threading.Thread(target=try_elsewhere)
        t.start()
        t.join()
        assert len(errors) == 1
        assert held.clear() is True
    assert not held.locked
    store.lock("k", blocking=False).release()


def test_the_gil_is_released_while_waiting_for_a_lock(store):
    """A thread waiting on a lock (in flock) must not hold the GIL, or the
    holder could never run Python code to release it."""
    held = store.lock("k")
    got = threading.Event()

    def waiter():
        with store.lock("k"):
            got.set()

    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    time.sleep(0.2)
    counter = sum(range(100_000))  # Python code runs meanwhile
    assert counter and not got.is_set()
    held.release()
    t.join(timeout=10)
    assert got.is_set()


def test_saves_from_threads_overlap(store):
    """fsync-bound saves from 4 threads: with the GIL released they overlap."""
    errors = []

    def work(i):
        try:
            for n in range(10):
                store.save(f"t{i}", {"n": n})
        except Exception as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(i.key for i in store.list()) == ["t0", "t1", "t2", "t3"]


def test_guard_repr_and_warnings_filter(store):
    guard = store.begin("k", 1)
    assert "open" in repr(guard)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        guard.commit()


def test_a_guard_dropped_open_logs_that_the_stash_is_kept(store, caplog):
    """The Python guard is the crate's guard: dropped while open, it keeps
    the stash and says so (a WARNING record), as in Rust; a guard that was
    committed, rolled back or kept says nothing."""
    caplog.set_level(logging.WARNING, logger="safestash")
    guard = store.begin("orders", [1])
    del guard
    gc.collect()
    dropped = [r for r in caplog.records if "dropped without commit or rollback" in r.getMessage()]
    assert len(dropped) == 1 and dropped[0].levelno == logging.WARNING, caplog.records
    assert dropped[0].key == "orders"
    assert store.load("orders").value == [1]
    caplog.clear()
    store.begin("a", 1).commit()
    store.begin("b", 1).keep()
    store.begin("c", 1).rollback(lambda s: None)
    gc.collect()
    assert [r for r in caplog.records if "dropped without" in r.getMessage()] == []


def test_a_commit_from_inside_the_restore_is_refused(store):
    """While a rollback runs, the guard is in use: a commit from the
    restore hook must not clear the stash being restored."""
    guard = store.begin("orders", 1)
    seen = []

    def hook(stashed):
        seen.append(guard.state_name)
        guard.commit()

    with pytest.raises(safestash.RestoreError) as e:
        guard.rollback(hook)
    assert isinstance(e.value.__cause__, RuntimeError), e.value.__cause__
    assert "in use" in str(e.value.__cause__)
    assert seen == ["open"] and guard.open and store.load("orders").value == 1
    guard.rollback(lambda s: None)
    assert guard.state_name == "rolled_back" and store.load("orders") is None
