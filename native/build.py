"""Builds native/ into native/build/ (``make native`` from the repository root).

    build/lib/libimgresize.so                 the C++ library (native/Makefile: `make lib`)
    build/python/imgresize/__init__.py        the typed facade (copied from python/imgresize/)
    build/python/imgresize/_ffi.<abi>.so      its cffi extension, linked with an rpath to ../../lib

so that ``sys.path.insert(0, "native/build/python"); import imgresize`` works
in the interpreter that built it (``--python``, default this one; it needs
cffi and a C compiler with that Python's headers). Functions do not use this
tree: ``fnctl package`` compiles the same sources into a function's zip.

    python native/build.py [--build-dir DIR] [--python PY] [--test]

``--test`` also builds and runs the C++ unit tests (``make test``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

NATIVE = Path(__file__).resolve().parent
DEFAULT_BUILD = NATIVE / "build"
FACADE = NATIVE / "python" / "imgresize"
HEADER_DIR = NATIVE / "imgresize"

# Runs in the target interpreter: compiles the build script's ffibuilder in
# argv[2] and prints the path of the extension module it produced.
_COMPILE = """
import runpy, sys
ns = runpy.run_path(sys.argv[1], run_name="__cffi_build__")
print(ns["ffibuilder"].compile(tmpdir=sys.argv[2], verbose=False))
"""


def run(argv: list, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, argv))} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc


def build_lib(build_dir: Path, test: bool = False) -> Path:
    run(["make", "-s", "-C", NATIVE, "test" if test else "lib", f"BUILD={build_dir}"])
    return build_dir / "lib" / "libimgresize.so"


def build_python(build_dir: Path, python: str) -> Path:
    """The facade plus its extension in build_dir/python/imgresize; returns the extension."""
    pkg = build_dir / "python" / "imgresize"
    lib = build_dir / "lib" / "libimgresize.so"
    inputs = [lib, HEADER_DIR / "imgresize.h", *FACADE.glob("*.py")]
    existing = sorted(pkg.glob("_ffi.*.so"))
    if existing and all(existing[0].stat().st_mtime >= p.stat().st_mtime for p in inputs):
        return existing[0]  # up to date
    shutil.rmtree(pkg, ignore_errors=True)
    shutil.copytree(FACADE, pkg, ignore=shutil.ignore_patterns("__pycache__", "*_build.py"))
    tmp = build_dir / "cffi-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    env = dict(os.environ)
    env["CPPFLAGS"] = f"{env.get('CPPFLAGS', '')} -I{HEADER_DIR}".strip()
    # $ORIGIN: the extension finds libimgresize.so wherever build/ is moved.
    env["LDFLAGS"] = f"{env.get('LDFLAGS', '')} -L{lib.parent} -Wl,-rpath,$ORIGIN/../../lib".strip()
    out = run([python, "-c", _COMPILE, FACADE / "_ffi_build.py", tmp], env=env, cwd=FACADE)
    ext = Path(out.stdout.strip().splitlines()[-1])
    dest = pkg / ext.name
    shutil.copy2(ext, dest)
    shutil.rmtree(tmp, ignore_errors=True)
    return dest


def build(build_dir: Path = DEFAULT_BUILD, python: str = sys.executable, test: bool = False) -> Path:
    """Builds everything; returns the directory to put on sys.path."""
    build_dir = Path(build_dir).resolve()
    build_lib(build_dir, test)
    build_python(build_dir, python)
    return build_dir / "python"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build-dir", type=Path, default=DEFAULT_BUILD)
    parser.add_argument("--python", default=sys.executable, help="interpreter to build the extension for")
    parser.add_argument("--test", action="store_true", help="also build and run the C++ unit tests")
    args = parser.parse_args()
    path = build(args.build_dir, args.python, args.test)
    print(f"built {args.build_dir.resolve() / 'lib' / 'libimgresize.so'} and {path / 'imgresize'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
