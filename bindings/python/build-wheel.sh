#!/usr/bin/env bash
# Builds the Python package into OUTDIR: one abi3 wheel for CPython 3.9 and
# later that installs on glibc 2.28 and newer (manylinux_2_28: RHEL 8,
# Debian 11, Ubuntu 20.04 and later) with every backend in it, and an
# sdist. Needs maturin and ziglang (zig is the linker that targets the old
# glibc) on PATH's Python, and the Rust toolchain; installing the wheel
# needs neither.
#
#   python3 -m venv /tmp/build && /tmp/build/bin/pip install maturin==1.16.0 ziglang==0.17.1
#   PATH=/tmp/build/bin:$PATH bindings/python/build-wheel.sh dist/
#   pip install --no-index --find-links dist/ safestash
set -euo pipefail
out=${1:?usage: build-wheel.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$(dirname "${BASH_SOURCE[0]}")"
command -v maturin >/dev/null || { echo "build-wheel.sh: maturin is not on PATH" >&2; exit 2; }
python3 -c 'import ziglang' 2>/dev/null || python -c 'import ziglang' 2>/dev/null || {
    echo "build-wheel.sh: the ziglang package is not installed (pip install ziglang)" >&2
    exit 2
}
maturin build --release --zig --compatibility manylinux_2_28 --out "$out"
maturin sdist --out "$out"
ls -1 "$out"
