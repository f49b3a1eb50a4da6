"""Typed use of the package, checked with ``mypy --strict`` by CI (not a
test module): ordinary typed values are JSON values without a cast."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

import safestash


def stash_dictionary(store: safestash.Store, fields: dict[str, dict[str, Any]]) -> str:
    receipt = store.save("orders.dictionary", fields, kind="field-dictionary", origin="job-1")
    return receipt.digest


def stash_rows(store: safestash.Store, rows: Sequence[Mapping[str, int | str | None]]) -> None:
    store.save(safestash.key_from_any("tables/orders"), rows)


def restore(store: safestash.Store) -> list[str]:
    stashed = store.load("orders.dictionary")
    if stashed is None:
        return []
    age: datetime.timedelta = stashed.age
    assert age >= datetime.timedelta(0)
    return sorted(stashed.value)


def locked_update(store: safestash.Store) -> None:
    try:
        with store.lock("orders.dictionary", timeout=2.5) as held:
            held.save({"updated": True})
    except TimeoutError:
        pass


def main(path: str) -> None:
    with safestash.Store(path) as store:
        stash_dictionary(store, {"amount": {"label": "Amount", "type_override": "numeric"}})
        stash_rows(store, [{"id": 1, "name": "a"}, {"id": 2, "name": None}])
        restore(store)
        locked_update(store)
