"""The store: what the original Python module's tests covered, and more."""

import datetime
import errno
import json
import math
import os
import pickle
import subprocess
import sys
import textwrap

import pytest

import safestash
from conftest import leftovers


def test_round_trip_keeps_value_order_and_metadata(store):
    value = {"b": 1, "a": [1.5, None, True, "é"], "nested": {"z": {}, "y": []}, "big": 2**64 - 1}
    receipt = store.save("orders.dictionary", value, kind="field-dictionary", origin="job-42")
    loaded = store.load("orders.dictionary")
    assert loaded.value == value
    assert list(loaded.value) == ["b", "a", "nested", "big"]  # dict order kept
    assert (loaded.kind, loaded.origin, loaded.key) == ("field-dictionary", "job-42", "orders.dictionary")
    assert loaded.digest == receipt.digest and len(loaded.digest) == 64
    assert loaded.created.tzinfo is not None and loaded.created.utcoffset() == datetime.timedelta(0)
    assert loaded.created == receipt.created
    assert datetime.timedelta(0) <= loaded.age < datetime.timedelta(minutes=1)
    assert loaded.size == receipt.bytes == os.path.getsize(receipt.path)
    assert isinstance(loaded.path, (str, os.PathLike))


def test_defaults_and_tuples(store):
    store.save("k", (1, 2, "x"))
    loaded = store.load("k")
    assert loaded.value == [1, 2, "x"] and loaded.kind == "value" and loaded.origin is None


def test_empty_map_is_a_stash_not_none(store):
    store.save("k", {})
    assert store.load("k").value == {}


def test_missing_stash_is_none(store):
    assert store.load("never-saved") is None
    assert store.load_checked("never-saved", max_age=60) is None


def test_clear_is_idempotent(store):
    store.save("k", 1)
    assert store.clear("k") is True
    assert store.clear("k") is False
    assert store.load("k") is None


@pytest.mark.parametrize("damage", ["garbage", "truncate", "flip"])
def test_corrupt_stash_is_an_error_never_absent(store, damage):
    receipt = store.save("k", {"label": "Amount"})
    data = open(receipt.path, "rb").read()
    if damage == "garbage":
        data = b"not a stash"
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:
        i = data.index(b"Amount")
        data = data[:i] + b"B" + data[i + 1 :]
    with open(receipt.path, "wb") as f:
        f.write(data)
    with pytest.raises(safestash.CorruptError) as e:
        store.load("k")
    assert isinstance(e.value, safestash.StashError)
    assert os.fspath(e.value.path) == os.fspath(receipt.path)
    [report] = store.verify()
    assert not report.ok and isinstance(report.error, safestash.CorruptError)
    moved = store.quarantine("k")
    assert moved is not None and os.path.exists(moved) and store.load("k") is None


def test_stash_copied_to_another_key_is_refused(store):
    receipt = store.save("a", 1)
    os.link(receipt.path, store.path_of("b"))
    with pytest.raises(safestash.CorruptError, match="written for key"):
        store.load("b")


def test_atomic_replace(store):
    first = store.save("k", {"v": 1})
    second = store.save("k", {"v": 2})
    assert first.digest != second.digest
    assert store.load("k").value == {"v": 2}
    assert leftovers(store.path) == []
    assert sorted(os.listdir(store.path)) == [".k.lock", "k"]


def test_a_value_that_fails_midway_leaves_the_old_stash(store):
    receipt = store.save("k", {"v": 1})
    before = open(receipt.path, "rb").read()
    with pytest.raises(TypeError, match=r"value\[\"rows\"\]\[2\]: object is not JSON-compatible"):
        store.save("k", {"rows": [1, 2, object()]})
    for bad in ({"x": float("nan")}, {"x": 2**64}, {1: "non-str key"}, {"s": {1, 2}}):
        with pytest.raises((TypeError, ValueError)):
            store.save("k", bad)
    assert open(receipt.path, "rb").read() == before
    assert leftovers(store.path) == []


def test_a_failed_write_leaves_the_old_stash_byte_identical_and_no_temp_file(store, tmp_path):
    # A real I/O failure as root: a file-size limit makes write(2) fail with
    # EFBIG in the middle of the envelope (in a child, so the limit stays there).
    receipt = store.save("k", {"v": "old"})
    before = open(receipt.path, "rb").read()
    script = textwrap.dedent(
        f"""
        import errno, resource, signal, safestash
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        store = safestash.Store({os.fspath(store.path)!r})
        try:
            store.save("k", {{"v": "x" * 100_000}})
        except OSError as e:
            assert isinstance(e, safestash.StashIOError), type(e)
            assert e.errno == errno.EFBIG, e.errno
            assert e.filename is not None
            print("failed as expected:", e)
        else:
            raise SystemExit("the save should have failed")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "failed as expected" in out.stdout
    assert open(receipt.path, "rb").read() == before
    assert leftovers(store.path) == []
    assert store.load("k").value == {"v": "old"}


@pytest.mark.parametrize("key", ["../x", "a/b", "", "/etc/passwd", "..", ".hidden", "a\x00b", "x" * 300])
def test_traversal_guard(store, tmp_path, key):
    with pytest.raises(ValueError) as e:
        store.save(key, 1)
    assert isinstance(e.value, safestash.InvalidKeyError)
    assert isinstance(e.value, safestash.StashError)
    assert e.value.key == key
    for verb in (store.load, store.clear, store.quarantine):
        with pytest.raises(safestash.InvalidKeyError):
            verb(key)
    assert not os.path.exists(tmp_path / "x")
    assert not os.path.exists(store.path)


def test_lazy_directory_creation(tmp_path):
    target = tmp_path / "not" / "yet" / "there"
    store = safestash.Store(target)
    assert store.load("k") is None
    assert store.clear("k") is False
    assert store.list() == [] and store.verify() == [] and store.cleanup() == []
    assert not os.path.exists(tmp_path / "not")
    store.save("k", 1)
    assert oct(os.stat(target).st_mode & 0o777) == "0o700"


def test_store_takes_str_and_pathlike_and_pickles(tmp_path):
    a = safestash.Store(str(tmp_path))
    b = safestash.Store(tmp_path)
    a.save("k", 1)
    assert b.load("k").value == 1
    c = pickle.loads(pickle.dumps(b))
    assert c.load("k").value == 1 and os.fspath(c) == os.fspath(tmp_path)


def test_store_on_a_file_is_not_a_file_error(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(safestash.NotAFileError):
        safestash.Store(tmp_path / "f")


def test_io_errors_are_oserrors_with_errno_and_filename(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OSError) as e:
        safestash.Store(tmp_path / "f" / "sub").save("k", 1)
    assert isinstance(e.value, safestash.StashIOError)
    assert e.value.errno == errno.ENOTDIR and e.value.filename == str(tmp_path / "f" / "sub")
    assert e.value.op


def test_invalid_kind_is_a_value_error(store):
    with pytest.raises(ValueError) as e:
        store.save("k", 1, kind="no spaces allowed")
    assert isinstance(e.value, safestash.InvalidOptionError)


def test_list_and_verify(store):
    store.save("a", 1, kind="one", origin="o")
    store.save("b", 2)
    infos = store.list()
    assert [i.key for i in infos] == ["a", "b"]
    assert infos[0].kind == "one" and infos[0].origin == "o" and infos[0].ok
    assert all(r.ok and len(r.digest) == 64 for r in store.verify())


def test_load_checked_verdicts_are_values(store):
    store.save("k", 1, origin="job-1")
    assert store.load_checked("k", max_age=datetime.timedelta(hours=1), origin="job-1").verdict == "fresh"
    foreign = store.load_checked("k", origin="job-2")
    assert (foreign.verdict, foreign.expected, foreign.found) == ("foreign", "job-2", "job-1")
    assert foreign.stashed.value == 1 and not foreign.fresh
    stale = store.load_checked("k", max_age=0)
    assert stale.verdict == "stale" and stale.max_age == datetime.timedelta(0)


def test_cleanup_removes_temp_leftovers(store):
    store.save("k", 1)
    tmp = os.path.join(store.path, ".k.deadbeef.tmp")
    open(tmp, "w").write("half a stash")
    assert [os.fspath(p) for p in store.cleanup()] == [tmp]
    assert store.load("k").value == 1


def test_help_reads_like_the_rust_docs():
    doc = safestash.Store.save.__doc__
    assert "durably" in doc and "Raises" in doc and "InvalidKeyError" in doc
    assert safestash.Store.__doc__ and safestash.Guard.__doc__ and safestash.Store.resume.__doc__


def test_a_file_url_opens_the_same_directory_store_and_pickles_as_its_url(tmp_path):
    by_path = safestash.Store(tmp_path / "s")
    by_path.save("k", {"a": 1})
    by_url = safestash.Store(f"file://{tmp_path / 's'}")
    assert by_url.load("k").value == {"a": 1}
    assert by_url.path == tmp_path / "s"
    again = pickle.loads(pickle.dumps(by_url))
    assert again.load("k").value == {"a": 1}


def test_an_unknown_url_scheme_is_a_clear_error(tmp_path):
    with pytest.raises(safestash.StashError) as caught:
        safestash.Store("s3x://bucket/prefix")
    assert "s3x://bucket/prefix" in str(caught.value)
    with pytest.raises(ValueError):
        safestash.Store("file://relative/dir")


def test_a_load_gives_what_json_would(store):
    """A load builds the same Python objects as ``json.loads`` of the saved
    value's JSON: every type, 64-bit edges, dict order at every level, and
    records that repeat the same keys stay independent objects."""
    records = [{"id": f"c{i}", "info": {"label": "L", "n": i, "ok": i % 2 == 0}} for i in range(50)]
    value = {
        "records": records,
        "big": 2**64 - 1,
        "small": -(2**63),
        "f": 1e300,
        "neg0": -0.0,
        "text": 'é \u2603 \U0001F600 "q" \\ \n',
        "empty": {},
        "none": None,
        "nested": [[[]], [{}]],
        "tuple": (1, 2.5),
    }
    store.save("k", value)
    got = store.load("k").value
    expected = json.loads(json.dumps(value))
    assert got == expected
    assert list(got) == list(expected) and [list(r) for r in got["records"]] == [["id", "info"]] * 50
    assert type(got["big"]) is int and type(got["f"]) is float and math.copysign(1, got["neg0"]) == -1
    got["records"][0]["info"]["label"] = "changed"
    assert got["records"][1]["info"]["label"] == "L"
    assert store.load_checked("k").stashed.value == expected


def test_a_value_that_is_not_json_is_named_by_its_path(store):
    with pytest.raises(TypeError, match=r'^value\["a"\]\[1\]\["b"\]: set is not JSON-compatible'):
        store.save("k", {"a": [0, {"b": {1}}]})
    with pytest.raises(ValueError, match=r"^value\[0\]: integer 18446744073709551616 does not fit in 64 bits"):
        store.save("k", [2**64])
    with pytest.raises(ValueError, match=r'^value\["x"\]: NaN is not valid JSON'):
        store.save("k", {"x": float("nan")})
    with pytest.raises(TypeError, match=r"^value\[0\]: dict keys must be str, not int"):
        store.save("k", [{1: 2}])
    deep: list = []
    inner = deep
    for _ in range(600):
        inner.append([])
        inner = inner[0]
    with pytest.raises(ValueError, match=r"^value(\[0\]){513}: nested deeper than 512 levels"):
        store.save("k", deep)
    assert store.load("k") is None
