"""Installing from source without the Rust toolchain fails at once and
says why: it never downloads a toolchain (maturin would fetch about 1 GB of
Rust, and fail offline). A fleet installs the wheel instead."""

import os
import pathlib
import shutil
import subprocess
import sys

PACKAGE = pathlib.Path(__file__).resolve().parents[1]


def test_a_build_without_cargo_fails_clearly_and_downloads_no_toolchain(tmp_path):
    path = os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep)
        if p and not shutil.which("cargo", path=p) and not shutil.which("rustc", path=p)
    )
    env = {k: v for k, v in os.environ.items() if k not in ("CARGO_HOME", "RUSTUP_HOME")}
    env["PATH"] = path
    env["HOME"] = str(tmp_path)  # no toolchain under ~/.cargo or ~/.rustup either
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-w",
         str(tmp_path / "wheels"), str(PACKAGE)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    text = out.stdout + out.stderr
    assert out.returncode != 0, text
    assert "Cargo, the Rust package manager, is not installed" in text, text
    assert "puccinialin" not in text and "rustup-init" not in text, text
    assert not (tmp_path / ".cache" / "puccinialin").exists()
    assert not (tmp_path / ".rustup").exists() and not (tmp_path / ".cargo").exists()
