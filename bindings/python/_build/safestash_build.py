"""The package's build backend: maturin's, except that a build from source
without the Rust toolchain fails at once, saying so, instead of
downloading a toolchain (maturin otherwise fetches about 1 GB of Rust
when ``cargo`` is not on PATH, and fails offline). A fleet installs the
wheel (``build-wheel.sh``), which needs no Rust at all."""

import os

os.environ["MATURIN_NO_INSTALL_RUST"] = "1"

from maturin import (  # noqa: E402  (after the variable maturin reads)
    build_editable,
    build_sdist,
    build_wheel,
    get_requires_for_build_editable,
    get_requires_for_build_sdist,
    get_requires_for_build_wheel,
    prepare_metadata_for_build_wheel,
)

__all__ = [
    "build_editable",
    "build_sdist",
    "build_wheel",
    "get_requires_for_build_editable",
    "get_requires_for_build_sdist",
    "get_requires_for_build_wheel",
    "prepare_metadata_for_build_wheel",
]
