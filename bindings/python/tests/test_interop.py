"""Same store, same files: the Rust crate, its CLI and Python read each other's stashes."""

import hashlib
import json
import os
import shutil
import subprocess

import pytest

import safestash
from conftest import REPO

FIXTURES = REPO / "tests" / "fixtures" / "v1"


@pytest.fixture(scope="session")
def cli():
    """The `safestash` binary: $SAFESTASH_CLI, target/debug/safestash, or built here."""
    candidates = [os.environ.get("SAFESTASH_CLI"), REPO / "target" / "debug" / "safestash"]
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return str(c)
    if shutil.which("cargo") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no safestash CLI and no cargo to build it")
        pytest.skip("no safestash CLI and no cargo to build it")
    subprocess.run(
        ["cargo", "build", "--quiet", "--features", "cli", "--bin", "safestash"], cwd=REPO, check=True
    )
    return str(REPO / "target" / "debug" / "safestash")


def test_python_stash_is_read_by_the_cli(store, cli):
    value = {"id": "amount", "info": {"label": "Amount", "notes": "in EUR", "type_override": "numeric"}, "n": [1, 2.5, None]}
    store.save("orders.dictionary", value, kind="field-dictionary", origin="upload-7f3a")
    raw = subprocess.run([cli, "show", os.fspath(store.path), "orders.dictionary", "--raw"], capture_output=True, check=True)
    assert json.loads(raw.stdout) == value
    shown = subprocess.run([cli, "show", os.fspath(store.path), "orders.dictionary"], capture_output=True, text=True, check=True)
    assert "field-dictionary" in shown.stdout and "upload-7f3a" in shown.stdout
    listed = json.loads(subprocess.run([cli, "list", os.fspath(store.path), "--json"], capture_output=True, check=True).stdout)
    [entry] = listed["entries"]
    assert (entry["key"], entry["status"], entry["sha256"]) == ("orders.dictionary", "ok", store.load("orders.dictionary").digest)
    assert subprocess.run([cli, "verify", os.fspath(store.path)], capture_output=True).returncode == 0


def test_cli_sees_damage_python_made(store, cli):
    r = store.save("k", 1)
    with open(r.path, "ab") as f:
        f.write(b"x")
    assert subprocess.run([cli, "verify", os.fspath(store.path)], capture_output=True).returncode == 1


def test_cli_clear_of_a_python_stash(store, cli):
    store.save("k", [1])
    subprocess.run([cli, "clear", os.fspath(store.path), "k", "--yes"], capture_output=True, check=True)
    assert store.load("k") is None


def test_rust_golden_files_load_in_python(tmp_path):
    for f in FIXTURES.iterdir():
        shutil.copy(f, tmp_path / f.name)
    store = safestash.Store(tmp_path)
    orders = store.load("orders.dictionary")
    assert orders.kind == "field-dictionary" and orders.origin == "upload-7f3a"
    assert [f["id"] for f in orders.value] == ["amount", "placed", "comment"]
    assert list(orders.value[0]["info"]) == ["label", "notes", "type_override"]
    assert orders.created.isoformat() == "2026-11-22T13:20:01.123456+00:00"
    assert orders.digest == "748388f2fd080768b8af2c883d2273f7cb2abe982cfd8624aa7273485192e566"
    assert store.load("empty-map").value == {}
    assert store.load("tables_2Forders_20_7Bx_7D") is not None
    assert all(r.ok for r in store.verify())


def test_python_writes_the_same_bytes_as_rust(store):
    """The payload and the envelope's framing are byte for byte the format
    the Rust crate writes (the golden file differs only in its created time
    and writer, which are recorded)."""
    golden = (FIXTURES / "orders.dictionary").read_bytes()
    value = safestash.Store(FIXTURES).load("orders.dictionary").value
    r = store.save("orders.dictionary", value, kind="field-dictionary", origin="upload-7f3a")
    ours = open(r.path, "rb").read()
    g_magic, g_header, g_payload, g_trailer = golden.split(b"\n", 3)
    o_magic, o_header, o_payload, o_trailer = ours.split(b"\n", 3)
    assert o_magic == g_magic == b"SAFESTASH 1"
    assert o_payload == g_payload
    gh, oh = json.loads(g_header), json.loads(o_header)
    assert list(oh) == list(gh)
    assert {k: oh[k] for k in ("key", "kind", "origin", "encoding")} == {k: gh[k] for k in ("key", "kind", "origin", "encoding")}
    assert o_trailer.startswith(b"SAFESTASH-END len=") and o_trailer.endswith(b"\n")
    # docs/FORMAT.md: the digest covers every byte before its 64 digits.
    assert hashlib.sha256(ours[:-65]).hexdigest() == r.digest == ours[-65:-1].decode()
    assert int(o_trailer[len(b"SAFESTASH-END len="):][:20]) == len(o_payload)
