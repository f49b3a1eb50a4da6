"""The stores the backend tests run on, from the environment.

``SAFESTASH_TEST_POSTGRES_URL`` names a PostgreSQL database,
``SAFESTASH_TEST_MYSQL_URL`` a MySQL/MariaDB database and
``SAFESTASH_TEST_S3_URL`` an S3 bucket (with the usual ``AWS_*`` variables);
``.ci/run`` starts the servers and sets them. Without one, its tests skip
with the reason; under ``CI=true`` they fail instead, so CI never skips
them silently.
"""

import os
import uuid

import pytest

SHARED = ["postgres", "mysql", "s3"]
ALL = ["directory", "memory"] + SHARED


def url_for(kind, tmp_path, name="t"):
    """A fresh, empty store of ``kind`` (a URL or a path)."""
    unique = f"{name}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    if kind == "directory":
        return str(tmp_path / unique)
    if kind == "memory":
        return f"memory:///{unique}"
    var = {
        "postgres": "SAFESTASH_TEST_POSTGRES_URL",
        "mysql": "SAFESTASH_TEST_MYSQL_URL",
        "s3": "SAFESTASH_TEST_S3_URL",
    }[kind]
    base = os.environ.get(var, "")
    if not base:
        reason = f"{var} is not set (bash .ci/run starts the server and sets it)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}: the {kind} tests must never be skipped in CI")
        pytest.skip(reason)
    if kind in ("postgres", "mysql"):
        sep = "&" if "?" in base else "?"
        return f"{base}{sep}namespace={unique}"
    return f"{base.rstrip('/')}/{unique}"
