"""Worker fleets: a store opened and used in a parent, then a
multiprocessing Pool(4) of children, under each start method, on a
directory, PostgreSQL and S3. Every task returns, no server error, and the
parent's next call works (its connections were not touched)."""

import multiprocessing
import os

import pytest

import safestash
from backends import url_for

STORE = None  # set in the parent before the pool forks


def work(store, n):
    """A few saves and loads: enough that four processes overlap."""
    for round in range(5):
        store.save(f"k{n}", {"n": n, "round": round, "pid": os.getpid(), "pad": "x" * 2000})
        got = store.load(f"k{n}").value
        assert (got["n"], got["round"]) == (n, round), got
    return n


def task_inherited(n):
    return work(STORE, n)


def task_passed(args):
    store, n = args  # pickled as its path or URL
    return work(store, n)


@pytest.mark.parametrize("kind", ["directory", "postgres", "mysql", "s3"])
@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_a_pool_of_four_under_every_start_method(kind, method, tmp_path):
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method} start method here")
    global STORE
    STORE = safestash.Store(url_for(kind, tmp_path, "fleet"))
    with STORE.lock("held-by-parent"):
        # Connections open (pooled, and the lock's) when the pool forks.
        STORE.save("before", "the parent's")
        assert STORE.load("before").value == "the parent's"
        ctx = multiprocessing.get_context(method)
        with ctx.Pool(4) as pool:
            if method == "fork":
                result = pool.map_async(task_inherited, range(40))
            else:
                result = pool.map_async(task_passed, [(STORE, n) for n in range(40)])
            assert sorted(result.get(timeout=120)) == list(range(40))
    # The parent's own connections still work.
    STORE.save("after", "the parent's again")
    assert STORE.load("after").value == "the parent's again"
    assert STORE.load("k7").value["n"] == 7
    STORE.close()
