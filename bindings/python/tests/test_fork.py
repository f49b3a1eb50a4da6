"""Fork safety: a child forked while a parent thread holds a key's lock
(inside a save) neither hangs nor stalls the parent, and a lock object a
child inherits is not the child's."""

import os
import sys
import threading
import time

import pytest

import safestash

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def wait_child(pid, timeout):
    """The child's exit status, or None if it is still running after
    ``timeout`` seconds (it is then killed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return None


def test_forks_during_saves_of_one_key_never_hang_the_child_or_stall_the_parent(tmp_path):
    store = safestash.Store(tmp_path / "stashes")
    store.save("busy", 0)
    stop = threading.Event()
    longest = [0.0]

    def saver():
        n = 0
        while not stop.is_set():
            began = time.monotonic()
            store.save("busy", {"n": n, "pad": "x" * 4096})
            longest[0] = max(longest[0], time.monotonic() - began)
            n += 1

    thread = threading.Thread(target=saver)
    thread.start()
    outcomes = []
    try:
        for _ in range(20):
            time.sleep(0.02)
            pid = os.fork()
            if pid == 0:  # the child: its own save of the same key
                code = 1
                try:
                    safestash.Store(tmp_path / "stashes").save("busy", "child")
                    code = 0
                finally:
                    os._exit(code)
            outcomes.append(wait_child(pid, timeout=10))
    finally:
        stop.set()
        thread.join()
    assert outcomes == [0] * 20, f"children that hung (None) or failed: {outcomes}"
    assert longest[0] < 5, f"the parent stalled {longest[0]:.1f} s in one save"
    assert store.load("busy") is not None


def test_a_lock_inherited_by_a_child_is_not_the_childs(tmp_path):
    store = safestash.Store(tmp_path / "stashes")
    held = store.lock("k")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        report = []
        try:
            report.append(f"locked={held.locked}")
            try:
                held.save("from the child")
                report.append("saved")
            except safestash.LockedError:
                report.append("refused")
            held.release()  # closes the child's copy; the parent's lock stays
            report.append("released")
        finally:
            os.write(write, " ".join(report).encode())
            os._exit(0)
    os.close(write)
    assert wait_child(pid, timeout=10) == 0
    report = os.read(read, 1000).decode()
    assert report == "locked=False refused released", report
    assert held.locked
    with pytest.raises(safestash.LockedError):
        store.lock("k", blocking=False)
    held.save("from the parent")
    held.release()
    assert store.load("k").value == "from the parent"
    store.lock("k", blocking=False).release()
