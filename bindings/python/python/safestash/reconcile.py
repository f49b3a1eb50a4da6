"""The destructive-plan guard for tenant deletes.

A nightly sync once computed ``local_tenants - auth_tenants`` where one side
held ``uuid.UUID`` objects and the other strings. Nothing compared equal, so
every tenant looked gone and was purged. :func:`plan` canonicalises both
sides first (``uuid.UUID`` objects and strings in any spelling: any case,
braced, ``urn:uuid:``, without hyphens), :class:`Reconciler` refuses plans
that look wrong (an empty source of truth, too many or too large a share of
deletes, unparseable ids) and stashes every tenant before deleting it, and
:func:`restore_tenant` puts a wrongly deleted one back.

>>> import uuid
>>> a = uuid.UUID("0670f6a2-41b8-4a5e-9f3c-6d2d7c1e9b01")
>>> plan([a], ["{0670F6A2-41B8-4A5E-9F3C-6D2D7C1E9B01}"]).delete
[]
"""

from __future__ import annotations

from ._safestash import ExecutionReport, Plan, Reconciler, canonical, plan, restore_tenant
from .errors import ReconcileError, RefusedError

RULES = ("EmptyAuthority", "TooMany", "TooLargeShare", "Unparseable")
"""The rules a plan is checked against (names for ``Reconciler(allow=...)``)."""

__all__ = [
    "RULES",
    "ExecutionReport",
    "Plan",
    "Reconciler",
    "ReconcileError",
    "RefusedError",
    "canonical",
    "plan",
    "restore_tenant",
]
