"""The Python call overhead against the Rust call, for a 1 KiB save and load.

Both sides save and load the same ~1 KiB field dictionary under one key in
the same store, in one run, interleaved call by call: the Python side
calls ``store.save`` / ``store.load`` (converting the value from and to
Python objects, releasing the GIL around the I/O); the Rust side is the same
loop run inside the extension by ``_bench_rust`` (the value converted once,
up front; no Python per call). Reported: medians, Python / Rust ratios,
and the median of the paired differences (the overhead per call).

    python bindings/python/bench_overhead.py [--rounds N] [--per-round N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import safestash
from safestash._safestash import _bench_rust


def value_1kib() -> list:
    fields = [
        {"id": f"column_{i}", "info": {"label": f"Column {i}", "notes": "operator note " * 2, "type_override": "numeric"}}
        for i in range(9)
    ]
    assert 900 < len(json.dumps(fields)) < 1200, len(json.dumps(fields))
    return fields


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--per-round", type=int, default=20)
    args = ap.parse_args()
    value = value_1kib()
    with tempfile.TemporaryDirectory() as d:
        store = safestash.Store(d)
        store.save("warmup", value)
        py_save: list[int] = []
        py_load: list[int] = []
        rs_save: list[int] = []
        rs_load: list[int] = []
        # Interleaved call by call (the order alternating), so both sides
        # see the same disk and the same load on the machine.
        for i in range(args.rounds * args.per_round):
            for side in (("py", "rs") if i % 2 == 0 else ("rs", "py")):
                if side == "py":
                    t = time.perf_counter_ns()
                    store.save("k", value)
                    py_save.append(time.perf_counter_ns() - t)
                    t = time.perf_counter_ns()
                    loaded = store.load("k")
                    py_load.append(time.perf_counter_ns() - t)
                    # Freed after the clock stops, as the Rust loop drops
                    # its value after its own clock stops.
                    del loaded
                else:
                    s, l = _bench_rust(store, "k", value, 1)  # timed inside Rust
                    rs_save += s
                    rs_load += l
    n = len(py_save)
    print(f"1 KiB field dictionary ({len(json.dumps(value))} bytes of JSON), {n} calls per side, interleaved")
    print(f"{'op':<6} {'python median':>14} {'rust median':>12} {'python / rust':>14} {'paired overhead':>16}")
    for op, p, r in (("save", py_save, rs_save), ("load", py_load, rs_load)):
        mp, mr = statistics.median(p), statistics.median(r)
        extra = statistics.median(a - b for a, b in zip(p, r))
        print(f"{op:<6} {mp / 1000:>11.1f} µs {mr / 1000:>9.1f} µs {mp / mr:>14.3f} {extra / 1000:>13.1f} µs")


if __name__ == "__main__":
    main()
