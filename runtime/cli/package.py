"""fnctl package: builds a function folder that carries native code into a zip
that ``fnctl deploy --code`` takes as it is.

What SRC may hold, and what becomes of it (everything but the Python code is
optional):

    SRC/app.py, packages, data     copied (symlinks followed, so a function may
                                   pull shared sources in from elsewhere)
    SRC/lib/*.so                   prebuilt libraries, copied as they are
    SRC/native/NAME/               one shared library, built into lib/libNAME.so:
        Makefile                     ``make -C native/NAME LIBDIR=<lib> BUILD=<tmp>``,
                                     which must leave libNAME.so in $(LIBDIR)
        CMakeLists.txt               configured Release with CMAKE_LIBRARY_OUTPUT_DIRECTORY=<lib>
        neither                      every *.c, *.cc, *.cpp, *.cxx below it compiled
                                     (-O2 -fPIC, $CC/$CXX, $CFLAGS/$CXXFLAGS/$CPPFLAGS,
                                     native/NAME on the include path) and linked into
                                     lib/libNAME.so ($LDFLAGS)
    SRC/**/*_build.py              cffi build scripts defining ``ffibuilder`` (API
                                   mode, ``set_source`` + ``cdef``): compiled by the
                                   --python interpreter with CPPFLAGS -I<each native/NAME>
                                   and LDFLAGS -L<lib>; the extension lands where its
                                   module name says (``_x`` at the top, ``pkg._x`` in pkg/)

The zip holds the copied sources without native/, the build scripts,
``__pycache__`` and version-control or build folders (.git, .build, ...),
plus lib/libNAME.so, the extensions and, when there are extensions, cffi's
runtime half ``_cffi_backend`` from the --python interpreter (sandboxes see no
site-packages). Files are 0644, shared libraries and executables 0755,
entries sorted with fixed times (fnctl.build_zip).

Compatibility: everything is compiled on this host, against its glibc,
libstdc++ and Python headers, and the sandboxes run on this host's /usr, so
what is built here runs there. An extension is built for one Python version
(the --python interpreter's, e.g. cpython-311): the function's runtime must be
that version. A zip built on another host runs only if that host's glibc is
not newer than this one's.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

from runtime.cli.fnctl import UsageError, build_zip

C_SUFFIXES = {".c"}
CXX_SUFFIXES = {".cc", ".cpp", ".cxx"}
# Never copied into a zip: build and version-control leftovers.
SKIPPED_NAMES = {"__pycache__", ".git", ".hg", ".svn", ".build", ".venv", ".pytest_cache", ".mypy_cache"}
LIBRARY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
OUTPUT_TAIL = 4000  # characters of a failed command's output quoted in the error

# Runs in the --python interpreter, in the build script's directory: loads the
# script without running its __main__ block, compiles its ffibuilder into
# argv[2] and prints a JSON line with the extension's path.
_CFFI_COMPILE = """
import json, runpy, sys
try:
    import cffi
except ImportError as exc:
    sys.exit(f"{sys.executable} cannot import cffi ({exc}): install it there, or pass --python")
sys.path.insert(0, ".")
ns = runpy.run_path(sys.argv[1], run_name="__cffi_build__")
ffi = ns.get("ffibuilder")
if not isinstance(ffi, cffi.FFI):
    sys.exit(f"{sys.argv[1]} defines no ffibuilder (a cffi.FFI with set_source and cdef)")
print(json.dumps({"path": ffi.compile(tmpdir=sys.argv[2], verbose=False)}))
"""
_BACKEND_PATH = "import _cffi_backend; print(_cffi_backend.__file__)"


class PackageError(Exception):
    """A build step failed; the message names it and quotes its output."""


@dataclasses.dataclass(frozen=True)
class PackageResult:
    zip_path: Path
    libraries: tuple[str, ...]    # paths inside the zip: lib/libNAME.so
    extensions: tuple[str, ...]   # cffi extension modules, and _cffi_backend
    files: int
    size: int                     # bytes of the zip


def package(src: str | os.PathLike, out: str | os.PathLike, python: str = sys.executable,
            log: Callable[[str], None] | None = None) -> PackageResult:
    """Builds the function folder ``src`` into the zip ``out`` (see the module docstring)."""
    src, out = Path(src).resolve(), Path(out).resolve()
    if not src.is_dir():
        raise PackageError(f"{src}: not a directory")
    say = log or (lambda line: None)
    with tempfile.TemporaryDirectory(prefix="fnctl-package-") as tmp:
        work = Path(tmp)
        tree, stage = work / "src", work / "stage"
        _copy_tree(src, tree, skip=out)     # symlinks resolved once, here
        _copy_tree(tree, stage, skip=None, sources_only=True)
        try:
            libraries, extensions = _build(tree, stage, work, python, say)
        except PackageError as exc:  # name the user's files, not their copies
            raise PackageError(str(exc).replace(str(tree), str(src))) from None
        _normalise_modes(stage)
        data = build_zip(stage)
        files = sum(1 for p in stage.rglob("*") if not p.is_dir())
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, out)
    return PackageResult(out, tuple(str(p) for p in libraries), tuple(str(p) for p in extensions), files, len(data))


def _build(tree: Path, stage: Path, work: Path, python: str,
           say: Callable[[str], None]) -> tuple[list[Path], list[Path]]:
    """Builds native/* and the cffi build scripts of ``tree`` into ``stage``."""
    entries = sorted((tree / "native").iterdir()) if (tree / "native").is_dir() else []
    stray = [p.name for p in entries if p.is_file() and p.suffix in C_SUFFIXES | CXX_SUFFIXES | {".h", ".hpp"}]
    if stray:
        raise PackageError(f"native/{stray[0]}: a library's sources go in native/NAME/ (built into lib/libNAME.so)")
    native = [d for d in entries if d.is_dir()]
    libdir = stage / "lib"
    libraries = [_build_library(d, libdir, work / "native" / d.name, say) for d in native]
    scripts = sorted(p for p in tree.rglob("*_build.py") if p.relative_to(tree).parts[0] != "native")
    extensions = [_build_cffi(s, tree, stage, native, libdir, work / "cffi" / str(i), python, say)
                  for i, s in enumerate(scripts)]
    if extensions and not list(stage.glob("_cffi_backend*.so")):
        extensions.append(_copy_cffi_backend(stage, python, say))
    return libraries, extensions


def _copy_tree(src: Path, dest: Path, skip: Path | None, sources_only: bool = False) -> None:
    """Copies src to dest following symlinks, leaving out SKIPPED_NAMES, *.pyc
    and ``skip``; with ``sources_only`` also native/ (at the top) and *_build.py."""
    def ignore(directory: str, names: list[str]) -> set[str]:
        d = Path(directory)
        left_out = {n for n in names if n in SKIPPED_NAMES or n.endswith(".pyc") or d / n == skip}
        if sources_only:
            left_out |= {n for n in names if n.endswith("_build.py") or (d == src and n == "native")}
        return left_out

    try:
        shutil.copytree(src, dest, symlinks=False, ignore=ignore)
    except shutil.Error as exc:  # one (src, dst, why) per file that failed, e.g. a dangling symlink
        first = exc.args[0][0] if exc.args and exc.args[0] else exc
        raise PackageError(f"copying {src}: {first[2] if isinstance(first, tuple) else first}") from None
    except OSError as exc:
        raise PackageError(f"copying {src}: {exc}") from None


def _run(argv: list, what: str, say: Callable[[str], None], **kw) -> subprocess.CompletedProcess:
    argv = [str(a) for a in argv]
    say("+ " + " ".join("'<script>'" if "\n" in a else a for a in argv))
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, **kw)
    except FileNotFoundError:
        raise PackageError(f"{what}: {argv[0]} not found (on Debian: apt-get install g++ make)") from None
    if proc.returncode != 0:
        output = (proc.stdout + proc.stderr)[-OUTPUT_TAIL:]
        hint = ("\n(the Python headers are missing: on Debian, apt-get install python3-dev)"
                if "Python.h" in output else "")
        raise PackageError(f"{what} failed (exit {proc.returncode}): {' '.join(argv)}\n{output}{hint}")
    return proc


def _build_library(src: Path, libdir: Path, build: Path, say: Callable[[str], None]) -> Path:
    """native/NAME → libdir/libNAME.so; returns its path relative to the zip root."""
    name = src.name
    if not LIBRARY_NAME.fullmatch(name):
        raise PackageError(f"native/{name}: a library name may hold letters, digits and _.+- only")
    libdir.mkdir(parents=True, exist_ok=True)
    build.mkdir(parents=True, exist_ok=True)
    target = libdir / f"lib{name}.so"
    what = f"building native/{name}"
    if (src / "Makefile").is_file():
        _run(["make", "-C", src, f"LIBDIR={libdir}", f"BUILD={build}", f"-j{os.cpu_count() or 1}"], what, say)
    elif (src / "CMakeLists.txt").is_file():
        _run(["cmake", "-S", src, "-B", build, "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=ON",
              f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={libdir}"], what, say)
        _run(["cmake", "--build", build, "-j", str(os.cpu_count() or 1)], what, say)
    else:
        _compile_sources(src, target, build, what, say)
    if not target.is_file():
        raise PackageError(f"{what}: no lib/{target.name} was produced")
    return target.relative_to(libdir.parent)


def _compile_sources(src: Path, target: Path, build: Path, what: str, say: Callable[[str], None]) -> None:
    sources = sorted(p for p in src.rglob("*") if p.suffix in C_SUFFIXES | CXX_SUFFIXES and p.is_file())
    if not sources:
        raise PackageError(f"{what}: no Makefile, CMakeLists.txt or C/C++ source (*.c, *.cc, *.cpp, *.cxx)")
    env = os.environ
    cpp = env.get("CPPFLAGS", "").split() + [f"-I{src}"]

    def compile_one(source: Path) -> Path:
        obj = build / (source.relative_to(src).as_posix().replace("/", "__") + ".o")
        if source.suffix in CXX_SUFFIXES:
            cmd = [env.get("CXX", "c++"), *env.get("CXXFLAGS", "-O2").split()]
        else:
            cmd = [env.get("CC", "cc"), *env.get("CFLAGS", "-O2").split()]
        _run([*cmd, *cpp, "-fPIC", "-c", source, "-o", obj], what, say)
        return obj

    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        objects = list(pool.map(compile_one, sources))
    cxx = any(s.suffix in CXX_SUFFIXES for s in sources)
    linker = env.get("CXX", "c++") if cxx else env.get("CC", "cc")
    _run([linker, "-shared", f"-Wl,-soname,{target.name}", "-o", target, *objects,
          *env.get("LDFLAGS", "").split()], what, say)


def _build_cffi(script: Path, tree: Path, stage: Path, native: list[Path], libdir: Path, tmp: Path,
                python: str, say: Callable[[str], None]) -> Path:
    """Compiles one cffi build script; returns the extension's path relative to the zip root."""
    rel = script.relative_to(tree)
    env = dict(os.environ)
    env["CPPFLAGS"] = " ".join([env.get("CPPFLAGS", ""), *(f"-I{d}" for d in native)]).strip()
    env["LDFLAGS"] = f"{env.get('LDFLAGS', '')} -L{libdir}".strip()
    tmp.mkdir(parents=True)
    proc = _run([python, "-c", _CFFI_COMPILE, script, tmp], f"cffi build script {rel}", say,
                cwd=script.parent, env=env)
    try:
        built = Path(json.loads(proc.stdout.strip().splitlines()[-1])["path"])
        module = built.relative_to(tmp)
    except (ValueError, KeyError, IndexError) as exc:
        raise PackageError(f"cffi build script {rel}: unexpected output {proc.stdout[-OUTPUT_TAIL:]!r}") from exc
    dest = stage / module
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(built, dest)
    return module


def _copy_cffi_backend(stage: Path, python: str, say: Callable[[str], None]) -> Path:
    proc = _run([python, "-c", _BACKEND_PATH], "finding _cffi_backend", say)
    backend = Path(proc.stdout.strip())
    shutil.copy2(backend, stage / backend.name)
    return Path(backend.name)


def _normalise_modes(stage: Path) -> None:
    for path in stage.rglob("*"):
        st = path.lstat()
        if stat.S_ISDIR(st.st_mode):
            os.chmod(path, 0o755)
        else:
            executable = path.suffix == ".so" or ".so." in path.name or st.st_mode & 0o111
            os.chmod(path, 0o755 if executable else 0o644)


# --- the fnctl subcommand ---------------------------------------------------------

def register(command) -> None:
    """Adds ``fnctl package`` through fnctl's ``command(name, func, help, takes_name)``."""
    p = command("package", cmd_package, "build a function folder with native code (C/C++, cffi) into a zip",
                takes_name=False)
    p.add_argument("src", metavar="SRC_DIR", help="the function's folder")
    p.add_argument("-o", "--output", metavar="ZIP", help="where to write the zip (default SRC_DIR's name + .zip)")
    p.add_argument("--python", default=sys.executable, metavar="PY",
                   help="interpreter that builds the cffi extensions: its version must be the function "
                        f"runtime's (default {sys.executable})")
    p.add_argument("--verbose", "-v", action="store_true", help="print every build command")


def cmd_package(args, client=None) -> int:
    src = Path(args.src)
    if not src.is_dir():
        raise UsageError(f"package {args.src}: not a directory")
    out = Path(args.output) if args.output else Path(f"{src.resolve().name}.zip")
    try:
        result = package(src, out, args.python, log=(lambda line: print(line, file=sys.stderr))
                         if args.verbose else None)
    except PackageError as exc:
        print(f"fnctl: package: {exc}", file=sys.stderr)
        return 2
    summary = {"zip": str(result.zip_path), "size": result.size, "files": result.files,
               "libraries": list(result.libraries), "extensions": list(result.extensions)}
    text = (f"wrote {result.zip_path}: {result.files} files, {result.size:,} bytes"
            + "".join(f"\n  {kind}: {', '.join(items)}" for kind, items in
                      (("libraries", result.libraries), ("extensions", result.extensions)) if items))
    print(json.dumps(summary, indent=2) if getattr(args, "json", False) else text)
    return 0
