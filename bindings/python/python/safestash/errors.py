"""The exceptions safestash raises.

Every exception derives from :class:`StashError`. Some have a second,
built-in base, so code that knows nothing of safestash still catches them:
an invalid key or option is also a ``ValueError``; a failed filesystem call
is also an ``OSError`` with ``errno``, ``strerror`` and ``filename`` set.

Stale, future-dated and foreign stashes are never exceptions: they are the
``verdict`` of a :class:`safestash.Checked` value, so the caller decides.
"""

from __future__ import annotations


class StashError(Exception):
    """Base class of every safestash error."""


class CorruptError(StashError):
    """The file at a stash path is damaged, truncated, written for another
    key, or not a stash at all. It is never treated as "no stash".

    Attributes: ``path``, ``reason``.
    """


class UnsupportedVersionError(StashError):
    """An intact stash of a format version this build cannot read.

    Attributes: ``path``, ``version``.
    """


class NotAFileError(StashError):
    """Something other than a regular file (a symlink, a directory, ...) is
    where a stash or the store's directory should be; it is neither
    followed nor replaced.

    Attributes: ``path``, ``found``, ``expected``.
    """


class LockedError(StashError, TimeoutError):
    """Another writer holds the key's lock (``store.lock(key,
    blocking=False)``, or ``timeout=`` ran out), or a forked child used a
    lock it inherited from its parent. Also a ``TimeoutError``.

    Attributes: ``key``, ``path`` (the lock file).
    """


class LockedByThisThreadError(StashError):
    """This thread already holds the key's lock: waiting would wait for
    itself forever. Use the held lock's own ``save``/``clear``.

    Attributes: ``key``, ``path``.
    """


class StashExistsError(StashError):
    """``store.begin`` found a stash already there: it is kept, never
    replaced unseen. Resume it with ``store.resume``.

    Attributes: ``key``, ``path``, ``digest`` (``None`` if unreadable).
    """


class ReplacedError(StashError):
    """The stash a guard holds, or a conditional clear expected, is gone or
    was replaced by another writer's; it is neither restored nor removed.

    Attributes: ``key``, ``path``, ``expected`` (the digest expected).
    """


class RestoreError(StashError):
    """A restore function raised; the stash is kept for a retry. The
    function's exception is ``__cause__``.

    Attributes: ``key``, ``path``, ``restored`` (``False``).
    """


class InvalidKeyError(StashError, ValueError):
    """A key was rejected by the allowlist (``../x``, an empty key, ...).

    Attributes: ``key`` (the rejected input), ``reason``.
    """


class InvalidOptionError(StashError, ValueError):
    """A save option (kind, origin), a digest or a type map setting breaks
    its rule.

    Attributes: ``field``, ``value``, ``rule``.
    """


class StashIOError(StashError, OSError):
    """A filesystem call failed. An ``OSError`` with ``errno``,
    ``strerror`` and ``filename`` (``filename2`` for a rename) set.

    Attributes: ``op`` (what was being done: ``"open"``, ``"sync"``,
    ``"rename"``, ...).
    """


class StashKeptWarning(UserWarning):
    """A rollback guard was left without ``commit()`` or ``rollback()``;
    the stash is kept for the next attempt."""


# The journal's and the tenant guard's errors (also exported by
# safestash.journal and safestash.reconcile).


class JournalError(StashError):
    """Something went wrong with a multi-part operation.

    Attributes: ``kind`` (``"not_found"``, ``"conflict"``,
    ``"transition"``, ``"finished"``, ``"active"``, ``"undetermined"``,
    ``"store"``, ...). A store failure is ``__cause__``.
    """


class OperationNotFoundError(JournalError):
    """The operation does not exist."""


class OperationExistsError(JournalError):
    """``Operation.create`` of an operation that exists."""


class ConflictError(JournalError):
    """A compare-and-swap saw a stale generation: re-read and retry.

    Attributes: ``found`` (the current generation).
    """


class RollbackIncompleteError(JournalError):
    """A rollback stopped at a part whose restore failed; its stash and
    those not yet attempted are kept.

    Attributes: ``part``, ``report`` (a ``RollbackReport``).
    """


class ReconcileError(StashError):
    """The tenant guard refused or failed.

    Attributes: ``kind`` (``"refused"``, ``"stale"``, ``"export"``,
    ``"delete"``, ``"no_stash"``, ...).
    """


class RefusedError(ReconcileError):
    """A plan breaks a rule that was not lifted.

    Attributes: ``rules`` (names), ``refusals`` (messages).
    """


__all__ = [
    "ConflictError",
    "CorruptError",
    "InvalidKeyError",
    "InvalidOptionError",
    "JournalError",
    "LockedByThisThreadError",
    "LockedError",
    "NotAFileError",
    "OperationExistsError",
    "OperationNotFoundError",
    "ReconcileError",
    "RefusedError",
    "ReplacedError",
    "RestoreError",
    "RollbackIncompleteError",
    "StashError",
    "StashExistsError",
    "StashIOError",
    "StashKeptWarning",
    "UnsupportedVersionError",
]
