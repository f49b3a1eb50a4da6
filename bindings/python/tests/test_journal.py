"""The journal: compare-and-swap, the fail-closed aggregate, the rollback."""

import os

import pytest

import safestash
from safestash.journal import ConflictError, Operation, RollbackIncompleteError


def test_aggregate_from_every_part(store):
    op = Operation.create(store, "reload", ["orders", "customers"])
    g = op.view().generation
    u = op.update("orders", "running", generation=g)
    u = op.update("orders", "completed", generation=u.generation)
    assert u.aggregate == "running"  # a sibling still pending: never "completed"
    with pytest.raises(ConflictError):
        op.update("customers", "running", generation=g)  # stale view
    u = op.update("customers", "running", generation=u.generation)
    u = op.update("customers", "completed", part_generation=u.part.generation)
    assert u.aggregate == "completed" and op.view().terminal
    assert Operation.open(store, "reload").parts() == ["orders", "customers"]
    with pytest.raises(safestash.journal.OperationNotFoundError):
        Operation.open(store, "nope")
    with pytest.raises(TypeError):
        op.update("orders", "running")


def test_fails_closed_on_an_unreadable_part(store, tmp_path):
    op = Operation.create(store, "op", ["a", "b"])
    g = op.view().generation
    u = op.update("a", "running", generation=g)
    op.update("a", "completed", generation=u.generation)
    # Damage b's record on disk.
    ns = os.path.join(store.path, ".ns.journal")
    [rec] = [n for n in os.listdir(ns) if n.endswith(".part.b")]
    with open(os.path.join(ns, rec), "r+b") as f:
        f.seek(30)
        f.write(b"XXXX")
    v = op.view()
    assert v.aggregate is None or v.aggregate not in ("completed", "failed", "cancelled", "rolled_back")
    assert not v.determined and not v.terminal and v.unreadable[0][0] == "b"


def test_rollback_restores_every_stash_and_a_failure_keeps_it(store):
    op = Operation.create(store, "deploy", ["eu", "us"])
    g = op.view().generation
    for part, end in (("eu", "completed"), ("us", "failed")):
        g = op.update(part, "running", generation=g).generation
        g = op.stash(part, {"config": part}, generation=g).generation
        g = op.update(part, end, generation=g).generation
    assert op.view().aggregate == "needs_rollback"
    assert op.load_stash("eu").value == {"config": "eu"}
    restored = []

    def failing(part, stashed):
        if part == "us":
            raise OSError("us is unreachable")
        restored.append((part, stashed.value))

    with pytest.raises(RollbackIncompleteError) as e:
        op.rollback(failing)
    assert e.value.report.unrestored != [] and "us" in e.value.report.unrestored
    assert not op.view().terminal

    report = op.rollback(lambda part, s: restored.append((part, s.value)))
    assert report.aggregate == "rolled_back" and report.unrestored == []
    assert sorted(restored) == [("eu", {"config": "eu"}), ("us", {"config": "us"})]


def test_aggregate_function():
    assert safestash.journal.aggregate(["completed", "pending"]) == "running"
    assert safestash.journal.aggregate(["completed", "failed"]) == "needs_rollback"
