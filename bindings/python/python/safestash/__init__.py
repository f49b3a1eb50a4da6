"""safestash: stash data durably before a destructive operation, and get it
back verified when the rebuild fails.

The Python package of the Rust crate ``safestash``: the same envelope, the
same protocol, the same files (a stash written here is read by the Rust
crate and its ``safestash`` CLI, and the other way round).

>>> import safestash
>>> store = safestash.Store("/tmp/stashes")           # creates nothing yet
>>> store.save("orders.dictionary", [{"id": "amount", "info": {"label": "Amount"}}],
...            kind="field-dictionary", origin="job-42")   # durable when it returns
>>> store.load("orders.dictionary").value[0]["info"]["label"]
'Amount'
>>> store.clear("orders.dictionary")
True

Submodules: :mod:`safestash.journal` (multi-part operations),
:mod:`safestash.reconcile` (the destructive-plan guard for tenant deletes),
:mod:`safestash.errors` (the exceptions, also exported here).
"""

from __future__ import annotations

from . import _safestash as _safestash_native
from . import errors
from ._safestash import (
    Checked,
    Column,
    Guard,
    KeyLock,
    Mapped,
    Receipt,
    Resumed,
    StashInfo,
    Stashed,
    Store,
    TypeMap,
    __version__,
    key_from_any,
)
from .errors import (
    ConflictError,
    CorruptError,
    InvalidKeyError,
    InvalidOptionError,
    JournalError,
    LockedByThisThreadError,
    LockedError,
    NotAFileError,
    ReconcileError,
    RefusedError,
    ReplacedError,
    RestoreError,
    RollbackIncompleteError,
    StashError,
    StashExistsError,
    StashIOError,
    StashKeptWarning,
    UnsupportedVersionError,
)

from . import journal, reconcile  # noqa: E402  (they import the above)

# A forked child (multiprocessing's fork start method, Celery's prefork
# pool) must not use what it inherited: locks a parent thread held at the
# fork are the parent's, connections are the parent's sessions.
import os as _os

if hasattr(_os, "register_at_fork"):
    _os.register_at_fork(after_in_child=_safestash_native.after_fork_in_child)

__all__ = [
    "Checked",
    "Column",
    "ConflictError",
    "CorruptError",
    "Guard",
    "InvalidKeyError",
    "InvalidOptionError",
    "JournalError",
    "KeyLock",
    "LockedByThisThreadError",
    "LockedError",
    "Mapped",
    "NotAFileError",
    "Receipt",
    "ReconcileError",
    "RefusedError",
    "ReplacedError",
    "RestoreError",
    "Resumed",
    "RollbackIncompleteError",
    "StashError",
    "StashExistsError",
    "StashIOError",
    "StashInfo",
    "StashKeptWarning",
    "Stashed",
    "Store",
    "TypeMap",
    "UnsupportedVersionError",
    "__version__",
    "errors",
    "key_from_any",
    "journal",
    "reconcile",
]
