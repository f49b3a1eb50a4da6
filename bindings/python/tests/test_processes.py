"""multiprocessing workers (fork and spawn): no torn value, no temp file."""

import hashlib
import json
import multiprocessing
import os

import pytest

import safestash
from conftest import leftovers

ROUNDS = 25


def payload(worker, n):
    body = {"worker": worker, "n": n, "rows": [f"{worker}-{n}-{i}" * 8 for i in range(40)]}
    return {"body": body, "sha": hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()}


def worker(store, w, errors):
    try:
        for n in range(ROUNDS):
            store.save("shared", payload(w, n), origin=f"worker-{w}")
            loaded = store.load("shared")
            if loaded is not None:
                v = loaded.value
                if hashlib.sha256(json.dumps(v["body"], sort_keys=True).encode()).hexdigest() != v["sha"]:
                    errors.put(f"torn value in worker {w}")
                if loaded.origin != f"worker-{v['body']['worker']}":
                    errors.put("origin does not match the value")
            if n % 7 == 0:
                store.clear("shared")
    except Exception as e:  # pragma: no cover - reported below
        errors.put(repr(e))


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_eight_processes_never_see_a_torn_value(tmp_path, method):
    ctx = multiprocessing.get_context(method)
    store = safestash.Store(tmp_path / "s")  # created before fork; pickled for spawn
    errors = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(store, w, errors)) for w in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert found == []
    assert leftovers(store.path) == []
    last = store.load("shared")
    if last is not None:
        assert last.value["sha"] == payload(last.value["body"]["worker"], last.value["body"]["n"])["sha"]


def _pool_job(args):
    path, i = args
    s = safestash.Store(path)
    s.save(f"k{i}", {"i": i})
    return s.load(f"k{i}").value["i"]


def test_pool_workers(tmp_path):
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        assert sorted(pool.map(_pool_job, [(os.fspath(tmp_path), i) for i in range(8)])) == list(range(8))
