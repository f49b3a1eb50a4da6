import os
import pathlib

import pytest

import safestash

REPO = pathlib.Path(__file__).resolve().parents[3]


@pytest.fixture
def store(tmp_path):
    return safestash.Store(tmp_path / "stashes")


def leftovers(path):
    """Temp files a save left behind in the store's directory."""
    if not os.path.isdir(path):
        return []
    return [n for n in os.listdir(path) if n.endswith(".tmp")]
