"""Multi-part operations: a durable journal whose aggregate state never lies.

An :class:`Operation` has named parts, each with a state (``"pending"``,
``"running"``, ``"completed"``, ``"failed"``, ``"failed_retryable"``,
``"cancelled"``, ``"rolled_back"``, ``"rollback_failed"``), and an aggregate
derived from **every** part. It fails closed: a part whose record cannot be
read makes the aggregate undetermined (``View.aggregate is None``), never
terminal. Every change is a compare-and-swap on a generation under the
operation's lock (a stale one raises :class:`ConflictError`).

>>> op = Operation.create(store, "reload-2026-11-22", ["orders", "customers"])
>>> g = op.view().generation
>>> u = op.update("orders", "running", generation=g)
>>> u = op.update("orders", "completed", generation=u.generation)
>>> u.aggregate        # a sibling is still pending: never "completed"
'running'
"""

from __future__ import annotations

from ._safestash import Operation, Part, RollbackReport, Updated, View, aggregate
from .errors import (
    ConflictError,
    JournalError,
    OperationExistsError,
    OperationNotFoundError,
    RollbackIncompleteError,
)

PART_STATES = (
    "pending",
    "running",
    "completed",
    "failed",
    "failed_retryable",
    "cancelled",
    "rolled_back",
    "rollback_failed",
)
"""Every part state."""

__all__ = [
    "PART_STATES",
    "ConflictError",
    "JournalError",
    "Operation",
    "OperationExistsError",
    "OperationNotFoundError",
    "Part",
    "RollbackIncompleteError",
    "RollbackReport",
    "Updated",
    "View",
    "aggregate",
]
