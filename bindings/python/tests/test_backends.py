"""The package's verbs on every backend it carries: a directory, memory://,
PostgreSQL and S3 (moto in CI), with the same results and the same errors."""

import pytest

import safestash
from backends import ALL, url_for


@pytest.fixture(params=ALL)
def store(request, tmp_path):
    with safestash.Store(url_for(request.param, tmp_path)) as s:
        yield s


def test_round_trip_clear_and_list(store):
    assert store.load("k") is None
    receipt = store.save("k", {"rows": [1, 2, {"x": None}]}, kind="snapshot", origin="job-1")
    got = store.load("k")
    assert got.value == {"rows": [1, 2, {"x": None}]}
    assert (got.kind, got.origin, got.digest) == ("snapshot", "job-1", receipt.digest)
    assert [i.key for i in store.list()] == ["k"]
    assert all(i.ok for i in store.verify())
    assert store.clear("k") and not store.clear("k")
    assert store.load("k") is None


def test_create_if_absent_and_the_guard(store):
    guard = store.begin("t", ["snapshot"])
    with pytest.raises(safestash.StashExistsError):
        store.begin("t", ["another"])
    restored = []
    guard.rollback(lambda s: restored.append(s.value))
    assert restored == [["snapshot"]]
    assert store.load("t") is None


def test_locks_exclude_and_time_out(store):
    with store.lock("k") as held:
        with pytest.raises(safestash.LockedError):
            store.lock("k", blocking=False)
        with pytest.raises(TimeoutError):
            store.lock("k", timeout=0.2)
        held.save("under the lock")
    assert store.load("k").value == "under the lock"


def test_an_invalid_key_is_a_value_error(store):
    with pytest.raises(ValueError):
        store.save("../escape", 1)
