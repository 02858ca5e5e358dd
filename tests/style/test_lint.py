"""pyflakes over every Python file of the project: no unused imports, no
undefined names, no shadowed definitions."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
DIRS = ["runtime", "bootstraps", "tests", "bench", "examples", "native", "setup.py"]


def test_pyflakes_clean():
    out = subprocess.run([sys.executable, "-m", "pyflakes", *[str(ROOT / d) for d in DIRS]],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
