"""Python's protocols: close and ``with``, lock timeouts that are
TimeoutErrors, key_from_any, bad locations refused at construction, and
the crate's events in ``logging``."""

import collections
import logging
import threading
import time
import types

import pytest

import safestash


def test_a_closed_store_refuses_every_call_and_with_closes_it(tmp_path):
    with safestash.Store(tmp_path / "s") as store:
        store.save("k", 1)
        assert not store.closed
    assert store.closed
    with pytest.raises(ValueError, match="closed"):
        store.load("k")
    with pytest.raises(ValueError, match="closed"):
        store.lock("k")
    store.close()  # idempotent
    assert safestash.Store(tmp_path / "s").load("k").value == 1


def test_a_lock_timeout_raises_a_locked_error_that_is_a_timeout_error(tmp_path):
    store = safestash.Store(tmp_path / "s")
    held = store.lock("k")
    took = []

    def other():
        began = time.monotonic()
        try:
            store.lock("k", timeout=0.3)
        except TimeoutError as e:
            took.append((time.monotonic() - began, e))

    t = threading.Thread(target=other)
    t.start()
    t.join(10)
    (elapsed, error), = took
    assert isinstance(error, safestash.LockedError)
    assert 0.25 < elapsed < 3, elapsed
    # Released within the timeout: taken.
    threading.Timer(0.2, held.release).start()
    with store.lock("k", timeout=5) as again:
        assert again.locked


def test_key_from_any_is_the_crates_escaping(tmp_path):
    store = safestash.Store(tmp_path / "s")
    assert safestash.key_from_any("orders") == "orders"  # a valid key stays itself
    texts = ["tables/orders {x}", "tables_orders {x}", "../etc/passwd", "é", "", "a" * 500]
    keys = [safestash.key_from_any(t) for t in texts]
    assert len(set(keys)) == len(keys), keys  # injective
    for k in keys:
        store.save(k, k)
        assert store.load(k).value == k
    assert all("/" not in k and not k.startswith(".") for k in keys)


@pytest.mark.parametrize("location", ["", "   ", "ftp://host/x", "postgresql://h:notaport/db"])
def test_an_unusable_location_is_a_value_error_at_construction(location):
    with pytest.raises(ValueError):
        safestash.Store(location)


def test_any_sequence_and_mapping_of_json_values_is_a_value(tmp_path):
    store = safestash.Store(tmp_path / "s")
    value = collections.OrderedDict(
        a=types.MappingProxyType({"x": range(3)}), b=collections.deque([1, "two"])
    )
    store.save("k", value)
    assert store.load("k").value == {"a": {"x": [0, 1, 2]}, "b": [1, "two"]}
    with pytest.raises(TypeError):
        store.save("k", b"bytes are not JSON")


def test_the_crates_events_reach_logging_with_their_fields(tmp_path, caplog):
    store = safestash.Store(tmp_path / "s")
    caplog.set_level(logging.DEBUG, logger="safestash")
    store.save("orders", {"n": 1}, origin="job-1")
    store.load("orders")
    by_message = {r.getMessage().split(" key=")[0]: r for r in caplog.records}
    written = by_message["stash written"]
    assert written.name == "safestash" and written.levelno == logging.INFO
    assert written.key == "orders" and written.bytes > 0 and len(written.digest) == 64
    loaded = by_message["stash loaded"]
    assert loaded.levelno == logging.DEBUG and loaded.key == "orders"
    # Damage: a warning naming the key, and the error to the caller.
    with open(store.path_of("orders"), "r+b") as f:
        f.seek(40)
        f.write(b"#")
    caplog.clear()
    with pytest.raises(safestash.CorruptError):
        store.load("orders")
    damaged = [r for r in caplog.records if r.getMessage().startswith("damaged stash found")]
    assert damaged and damaged[0].levelno == logging.WARNING and damaged[0].key == "orders"
    # A foreign stash refused by the retry decision.
    store.quarantine("orders")
    store.save("orders", [1], origin="job-1")
    caplog.clear()
    r = store.resume("orders", None, expect_origin="job-2")
    assert r.decision == "refused"
    refused = [r for r in caplog.records if "not applied" in r.getMessage() or "not resumed" in r.getMessage()]
    assert refused and all(r.levelno == logging.WARNING for r in refused), caplog.records
    assert refused[0].key == "orders"


def test_no_record_is_made_while_the_logger_is_disabled(tmp_path, caplog):
    store = safestash.Store(tmp_path / "s")
    caplog.set_level(logging.ERROR, logger="safestash")
    store.save("k", 1)
    store.load("k")
    assert [r for r in caplog.records if r.name == "safestash"] == []
