"""Builds of the examples that tests and benchmarks share."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def c_runtime_bootstrap() -> bytes | None:
    """examples/custom-runtime-c's ``bootstrap``, built with its own Makefile
    in a scratch directory; None on a host without make or a C compiler."""
    if shutil.which("make") is None or shutil.which("cc") is None:
        return None
    src = ROOT / "examples" / "custom-runtime-c"
    with tempfile.TemporaryDirectory(prefix="custom-runtime-c-") as tmp:
        for name in ("bootstrap.c", "Makefile"):
            shutil.copy(src / name, tmp)
        subprocess.run(["make", "-s", "-C", tmp, "bootstrap"], check=True, capture_output=True)
        return (Path(tmp) / "bootstrap").read_bytes()
