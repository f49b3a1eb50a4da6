"""A datastore-style table reload on sqlite3, with its data dictionary
stashed before the table is dropped.

The incident: a CKAN ingestion worker kept the operator-written column
labels, descriptions and type overrides in memory, dropped the table to
reload it, and crashed; the annotations died with the worker. Here the
dictionary is stashed durably (safestash) before the DROP, and:

1. a first upload creates the table; an operator annotates its columns;
2. a reload fails after the DROP: the table is recreated from the stash,
   with each column's type mapped back from its ``type_override`` by a
   TypeMap (an invalid override falls back to ``text``, reported);
3. a reload worker (a child process) is SIGKILLed right after the DROP,
   and a second one exits with os._exit: the stash outlives them;
4. the retry finds no table and a fresh stash, restores, reloads, and
   clears the stash on success.

It checks its own outcome and exits non-zero when anything is wrong.

    python bindings/python/examples/ckan_reload.py [WORKDIR]
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
from typing import Any, Callable

import safestash

TABLE = "orders"
KEY = "datastore.orders.dictionary"
MAX_AGE = datetime.timedelta(hours=24)

UPLOAD_1: dict[str, Any] = {"id": "upload-1", "columns": ["order_id", "amount", "placed", "code"],
            "rows": [["1", "10.50", "2026-11-20 10:00", "A"], ["2", "7.25", "2026-11-21 09:30", "B"]]}
UPLOAD_2: dict[str, Any] = {"id": "upload-2", "columns": ["order_id", "amount", "placed", "code"],
            "rows": [["1", "10.50", "2026-11-20 10:00", "A"], ["2", "7.25", "2026-11-21 09:30", "B"],
                     ["3", "99.00", "2026-11-22 12:00", "C"]]}
BROKEN: dict[str, Any] = {"id": "upload-2", "columns": UPLOAD_2["columns"],
          "rows": UPLOAD_2["rows"] + [["4", "1.00"]]}  # a short row: the reload fails


# --- the datastore: a table plus its data dictionary --------------------------


def connect(db: str) -> sqlite3.Connection:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS _fields (tbl TEXT, pos INTEGER, id TEXT, info TEXT, "
                 "PRIMARY KEY (tbl, id))")
    return conn


def table_exists(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (TABLE,)).fetchone() is not None


def dictionary(conn: sqlite3.Connection) -> list[dict[str, Any]] | None:
    """The live data dictionary (the stash's payload), or None without a table."""
    if not table_exists(conn):
        return None
    rows = conn.execute("SELECT id, info FROM _fields WHERE tbl=? ORDER BY pos", (TABLE,)).fetchall()
    return [{"id": fid, "info": json.loads(info)} for fid, info in rows]


def column_types(conn: sqlite3.Connection) -> dict[str, str]:
    return {r[1]: r[2].lower() for r in conn.execute(f"PRAGMA table_info({TABLE})")}


def create_table(
    conn: sqlite3.Connection, columns: list[tuple[str, str]], infos: dict[str, dict[str, Any]]
) -> None:
    cols = ", ".join(f'"{c}" {t}' for c, t in columns)
    conn.execute("BEGIN")
    conn.execute(f"CREATE TABLE {TABLE} ({cols})")
    conn.execute("DELETE FROM _fields WHERE tbl=?", (TABLE,))
    for pos, (c, _) in enumerate(columns):
        conn.execute("INSERT INTO _fields VALUES (?, ?, ?, ?)", (TABLE, pos, c, json.dumps(infos.get(c, {}))))
    conn.execute("COMMIT")


def drop_table(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN")
    conn.execute(f"DROP TABLE {TABLE}")
    conn.execute("DELETE FROM _fields WHERE tbl=?", (TABLE,))
    conn.execute("COMMIT")


def load_rows(conn: sqlite3.Connection, upload: dict[str, Any]) -> None:
    marks = ", ".join("?" for _ in upload["columns"])
    conn.execute("BEGIN")
    try:
        for row in upload["rows"]:
            if len(row) != len(upload["columns"]):
                raise ValueError(f"row {row!r} has {len(row)} values, not {len(upload['columns'])}")
            conn.execute(f"INSERT INTO {TABLE} VALUES ({marks})", row)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def restore(conn: sqlite3.Connection, report: list[str]) -> Callable[[safestash.Stashed], None]:
    """The restore function: recreate the table with types mapped back."""

    def restore_fn(stashed: safestash.Stashed) -> None:
        mapped = safestash.TypeMap().map_fields(stashed.value)
        for field, reason, used in mapped.fallbacks:
            report.append(f"field {field}: {reason}; using {used}")
        create_table(conn, [(c.id, c.column_type) for c in mapped.columns], {c.id: c.info for c in mapped.columns})

    return restore_fn


# --- the worker ---------------------------------------------------------------


def reload(db: str, stashes: str, upload: dict[str, Any], *, die_after_drop: str | None = None) -> str:
    """Reloads the table from `upload`, keeping its data dictionary. Returns what happened."""
    store = safestash.Store(stashes)
    conn = connect(db)
    notes: list[str] = []
    r = store.resume(KEY, dictionary(conn), kind="field-dictionary", origin=upload["id"],
                     max_age=MAX_AGE, expect_origin=upload["id"])
    if r.decision == "stash":
        # An earlier worker died after the DROP: put the table back first.
        assert r.guard is not None
        r.guard.rollback(restore(conn, notes))
        r = store.resume(KEY, dictionary(conn), kind="field-dictionary", origin=upload["id"])
        notes.append("restored the dictionary a dead worker stashed")
    if r.decision == "refused":
        assert r.checked is not None
        return f"refused: {r.checked.verdict} stash left for the operator"
    if r.decision == "nothing":
        create_table(conn, [(c, "text") for c in upload["columns"]], {})
        load_rows(conn, upload)
        return "created"
    guard = r.guard
    assert guard is not None  # "live": the dictionary was just stashed
    stashed = store.load(KEY)
    kept = {f["id"]: f["info"] for f in (stashed.value if stashed else [])}
    with guard:
        drop_table(conn)  # the destructive step: the dictionary is durable in the stash
        if die_after_drop == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        if die_after_drop == "exit":
            os._exit(3)
        mapped = safestash.TypeMap().map_fields([{"id": c, "info": kept.get(c, {})} for c in upload["columns"]])
        create_table(conn, [(c.id, c.column_type) for c in mapped.columns], {c.id: c.info for c in mapped.columns})
        try:
            load_rows(conn, upload)
        except ValueError as e:
            drop_table(conn)
            guard.rollback(restore(conn, notes))
            return f"rolled back ({e}); " + "; ".join(notes)
        guard.commit()
    return "reloaded" + ("; " + "; ".join(notes) if notes else "")


# --- the run, with its own checks --------------------------------------------

FAILURES: list[str] = []


def check(what: str, ok: bool) -> None:
    print(f"  [{'ok' if ok else 'FAIL'}] {what}")
    if not ok:
        FAILURES.append(what)


def annotate(db: str) -> list[dict[str, Any]]:
    conn = connect(db)
    infos = {
        "order_id": {"label": "Order", "type_override": "numeric"},
        "amount": {"label": "Amount", "notes": "EUR, VAT included", "type_override": " Numeric "},
        "placed": {"label": "Placed at", "type_override": "timestamp"},
        "code": {"label": "Code", "notes": "typed by an operator", "type_override": "money"},
    }
    conn.execute("BEGIN")
    for fid, info in infos.items():
        conn.execute("UPDATE _fields SET info=? WHERE tbl=? AND id=?", (json.dumps(info), TABLE, fid))
    conn.execute("COMMIT")
    annotated = dictionary(conn)
    assert annotated is not None
    return annotated


def worker_main(argv: list[str]) -> None:
    db, stashes, how = argv
    reload(db, stashes, UPLOAD_2, die_after_drop=how)
    raise SystemExit("the worker should have died after the DROP")


def main() -> int:
    work = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="safestash-ckan-")
    db, stashes = os.path.join(work, "datastore.db"), os.path.join(work, "stashes")
    for p in (db,):
        if os.path.exists(p):
            os.remove(p)
    if os.path.isdir(stashes):
        for n in os.listdir(stashes):
            os.remove(os.path.join(stashes, n))
    store = safestash.Store(stashes)
    print(f"workdir {work}")

    print("run 1: first upload, then an operator annotates the columns")
    check("table created", reload(db, stashes, UPLOAD_1) == "created")
    annotated = annotate(db)
    check("no stash left", store.load(KEY) is None)

    print("run 2: the reload fails after DROP TABLE")
    outcome = reload(db, stashes, BROKEN)
    print(f"  -> {outcome}")
    conn = connect(db)
    check("rolled back", outcome.startswith("rolled back"))
    check("dictionary restored exactly", dictionary(conn) == annotated)
    types = column_types(conn)
    check(f"types mapped back from type_override: {types}",
          types == {"order_id": "numeric", "amount": "numeric", "placed": "timestamp", "code": "text"})
    check("the invalid override 'money' fell back to text, reported", "field code" in outcome)
    check("stash cleared after the restore", store.load(KEY) is None)

    for how, expect_rc in (("sigkill", -signal.SIGKILL), ("exit", 3)):
        print(f"run 3 ({how}): a worker process dies right after DROP TABLE")
        child = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", db, stashes, how])
        check(f"worker died ({child.returncode})", child.returncode == expect_rc)
        conn = connect(db)
        check("table gone", not table_exists(conn))
        left = store.load_checked(KEY, max_age=MAX_AGE, origin="upload-2")
        check("the dead worker's stash is there, fresh, ours", left is not None and left.verdict == "fresh")
        check("it holds the annotations", left is not None and left.stashed.value == annotated)

        print("run 4: the retry restores, reloads and clears")
        outcome = reload(db, stashes, UPLOAD_2)
        print(f"  -> {outcome}")
        conn = connect(db)
        check("reloaded after restoring", outcome.startswith("reloaded; ") and "dead worker" in outcome)
        check("dictionary kept across the reload", dictionary(conn) == annotated)
        check("new rows loaded", conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0] == 3)
        check("types mapped", column_types(conn)["amount"] == "numeric")
        check("stash cleared on success", store.load(KEY) is None and store.list() == [])
        drop_table(conn)  # start the next variant from the annotated table
        create_table(conn, [(f["id"], "text") for f in annotated], {f["id"]: f["info"] for f in annotated})

    check("no temp files", not [n for n in os.listdir(stashes) if n.endswith(".tmp")])
    if FAILURES:
        print(f"FAILED: {len(FAILURES)} check(s): {FAILURES}")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker_main(sys.argv[2:])
    sys.exit(main())
