"""Language runtimes this host can run, named as AWS Lambda names them.

A runtime is an interpreter installed on the host plus a bootstrap shipped
with the agent. Discovery runs once at agent start: each candidate
interpreter is asked for its version and prefix, and only those that answer
are offered. The host directories a runtime needs are bind-mounted read-only
into every sandbox of that runtime.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

import runtime as _pkg

PYTHON_MINORS = range(8, 15)
# Host directories every runtime needs: the dynamic loader, libc, the
# interpreter's own tree. /lib and /bin are symlinks into /usr on merged-/usr
# hosts; bind mounts resolve them.
BASE_DIRS = ("/usr", "/lib", "/lib64", "/bin")
# The bootstrap is imported rather than run as a script so that its .pyc is
# used; /var/task goes first on sys.path once the bootstrap starts.
PYTHON_LAUNCH = "import sys;sys.path.insert(0,'/var/runtime');import bootstrap;sys.exit(bootstrap.main())"
# A custom runtime's sandbox starts the Runtime API relay (Python, shipped
# with the Python bootstrap), which starts the function's own ``bootstrap``.
RELAY_LAUNCH = "import sys;sys.path.insert(0,'/var/runtime');import relay;sys.exit(relay.main())"
# Lambda's names for the custom runtime; all are the same runtime here.
PROVIDED_NAMES = ("provided", "provided.al2", "provided.al2023")
# Node.js majors offered, named as Lambda names them ("nodejs20.x").
NODE_MIN_MAJOR = 16
# No start-up flags. Measured on Node 20: --v8-pool-size=1, --single-threaded,
# --max-lazy start no faster (~22 ms to ready either way); a larger
# --max-semi-space-size buys ~10% on allocation-heavy handlers for up to
# twice its size in young generation, too much at 128 MB. Heap sizes tied to
# a function's memory belong in its NODE_OPTIONS, which a function may set.
NODE_FLAGS: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Runtime:
    name: str              # "python3.11"; an alias's entry carries the canonical name
    family: str            # "python", "node" or "provided"
    executable: str        # host path of the interpreter
    version: str           # "3.11.2"
    host_dirs: tuple[str, ...]   # read-only bind mounts, same path inside
    bootstrap_dir: Path    # mounted at /var/runtime
    argv: tuple[str, ...]  # command inside the sandbox


def bootstrap_root() -> Path:
    """Installed bootstraps live in the package; a source checkout has them at the top."""
    installed = Path(_pkg.__file__).parent / "_bootstraps"
    if installed.is_dir():
        return installed
    return Path(_pkg.__file__).parent.parent / "bootstraps"


def _probe_python(exe: str) -> tuple[str, str] | None:
    try:
        out = subprocess.run(
            [exe, "-I", "-S", "-c", "import sys;print(sys.version.split()[0]);print(sys.base_prefix)"],
            capture_output=True, text=True, timeout=10, check=True).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return None
    return out[0], out[1]


def _candidates(*names: str) -> list[str]:
    """Executables named ``names`` in /usr/bin, /usr/local/bin and on PATH,
    each real file once."""
    paths = [p for n in names for p in (f"/usr/bin/{n}", f"/usr/local/bin/{n}", shutil.which(n))]
    seen, found = set(), []
    for path in paths:
        if path and os.access(path, os.X_OK):
            real = os.path.realpath(path)
            if real not in seen:
                seen.add(real)
                found.append(path)
    return found


def _probe_node(exe: str) -> tuple[str, str] | None:
    try:
        out = subprocess.run(
            [exe, "-e", "process.stdout.write(process.versions.node + '\\n' + process.execPath)"],
            capture_output=True, text=True, timeout=10, check=True).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return None
    return (out[0], out[1]) if len(out) == 2 and out[0][:1].isdigit() else None


def _node_runtimes(boot: Path) -> dict[str, Runtime]:
    """One runtime per Node.js major on the host, the first candidate of each."""
    runtimes: dict[str, Runtime] = {}
    for exe in _candidates("node", "nodejs"):
        probed = _probe_node(exe)
        if not probed:
            continue
        version, exec_path = probed
        major = int(version.split(".")[0])
        name = f"nodejs{major}.x"
        if major < NODE_MIN_MAJOR or name in runtimes:
            continue
        dirs = [d for d in BASE_DIRS if os.path.exists(d)]
        # A node outside /usr (/opt/node-v20..., nvm) brings its own tree
        # (bin/node, lib/node_modules); a lone binary elsewhere, its directory.
        bin_dir = os.path.dirname(os.path.realpath(exec_path))
        prefix = os.path.dirname(bin_dir)
        tree = prefix if os.path.isdir(os.path.join(prefix, "lib", "node_modules")) else bin_dir
        if not any(tree == d or tree.startswith(d + "/") for d in dirs):
            dirs.append(tree)
        runtimes[name] = Runtime(
            name=name, family="node", executable=exe, version=version, host_dirs=tuple(dirs),
            bootstrap_dir=boot / "node", argv=(exe, *NODE_FLAGS, "/var/runtime/bootstrap.js"))
    return runtimes


def discover() -> dict[str, Runtime]:
    runtimes: dict[str, Runtime] = {}
    boot = bootstrap_root()
    for minor in PYTHON_MINORS:
        for exe in _candidates(f"python3.{minor}"):
            probed = _probe_python(exe)
            if not probed:
                continue
            version, prefix = probed
            dirs = [d for d in BASE_DIRS if os.path.exists(d)]
            # An interpreter outside /usr (pyenv, /opt) brings its own tree.
            for extra in {prefix, os.path.dirname(os.path.realpath(exe))}:
                if not any(extra == d or extra.startswith(d + "/") for d in dirs):
                    dirs.append(extra)
            name = f"python3.{minor}"
            runtimes[name] = Runtime(
                name=name, family="python", executable=exe, version=version, host_dirs=tuple(dirs),
                bootstrap_dir=boot / "python",
                argv=(exe, "-I", "-S", "-B", "-c", PYTHON_LAUNCH))
            break
    runtimes.update(_node_runtimes(boot))
    runtimes.update(_provided_runtimes(runtimes))
    return runtimes


def _provided_runtimes(found: dict[str, Runtime]) -> dict[str, Runtime]:
    """``provided`` needs a Python for its relay: the first one under /usr
    if any (nothing extra to mount), else the first found."""
    pythons = [rt for rt in found.values() if rt.family == "python"]
    if not pythons:
        return {}
    py = next((rt for rt in pythons if set(rt.host_dirs) <= set(BASE_DIRS)), pythons[0])
    rt = dataclasses.replace(py, name=PROVIDED_NAMES[0], family="provided",
                             argv=(py.executable, "-I", "-S", "-B", "-c", RELAY_LAUNCH))
    return {name: rt for name in PROVIDED_NAMES}


def prepare(runtimes: dict[str, Runtime], run_dir: Path) -> dict[str, Runtime]:
    """Copies each runtime's bootstrap under ``run_dir`` and precompiles it
    with that runtime's own interpreter, so no sandbox compiles it again."""
    prepared: dict[str, Runtime] = {}
    for name, rt in runtimes.items():
        if rt.name != name and rt.name in prepared:  # an alias ("provided.al2023")
            prepared[name] = prepared[rt.name]
            continue
        dest = Path(run_dir) / "bootstraps" / rt.name
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(rt.bootstrap_dir, dest, ignore=shutil.ignore_patterns("__pycache__"))
        if rt.family in ("python", "provided"):
            for src in dest.glob("*.py"):
                subprocess.run([rt.executable, "-I", "-S", "-m", "py_compile", str(src)], check=True,
                               capture_output=True, timeout=60)
        for dirpath, _dirs, files in os.walk(dest):
            os.chmod(dirpath, 0o755)
            for f in files:
                os.chmod(os.path.join(dirpath, f), 0o644)
        prepared[name] = prepared[rt.name] = dataclasses.replace(rt, bootstrap_dir=dest)
    return {name: prepared[name] for name in runtimes}
