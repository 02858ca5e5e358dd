"""Language runtimes this host can run, named as AWS Lambda names them.

A runtime is an interpreter installed on the host plus a bootstrap shipped
with the agent. Discovery runs once at agent start: each candidate
interpreter is asked for its version and prefix, and only those that answer
are offered. The host directories a runtime needs are bind-mounted read-only
into every sandbox of that runtime.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import zipfile
from pathlib import Path

import runtime as _pkg
from runtime.sandbox import placement

PYTHON_MINORS = range(8, 15)
# Host directories every runtime needs: the dynamic loader, libc, the
# interpreter's own tree. /lib and /bin are symlinks into /usr on merged-/usr
# hosts; bind mounts resolve them.
BASE_DIRS = ("/usr", "/lib", "/lib64", "/bin")
# The bootstrap is imported rather than run as a script so that its .pyc is
# used; /var/task goes first on sys.path once the bootstrap starts.
PYTHON_LAUNCH = "import sys;sys.path.insert(0,'/var/runtime');import bootstrap;sys.exit(bootstrap.main())"
# A custom runtime's sandbox starts the Runtime API relay (bootstraps/relay,
# a static C binary built at install), which starts the function's own
# ``bootstrap``; its version is the Runtime API's.
RELAY = "relay"
RUNTIME_API_VERSION = "2018-06-01"
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
# Java majors offered, named as Lambda names them ("java17"); 17 is the
# release the bootstrap is compiled for (bootstraps/java/build.py). JDKs are
# looked for on PATH, in JAVA_HOME and where distributions install them.
JAVA_MIN_MAJOR = 17
JAVA_HOMES = "/usr/lib/jvm/*"
JAVA_JAR = "bootstrap.jar"
JAVA_ARCHIVE = "bootstrap.jsa"
# /bin/sh sizes the heap from the function's memory, then execs the JVM (so
# java is the sandbox's pid 1). Heap = 85% of memory as on Lambda, but at
# least 44 MB left to the JVM itself: 84 MB at 128, 212 at 256, 435 at 512.
# Measured at 128 MB (JDK 17): an idle JVM charges 16 MB to the memory
# cgroup, a full 68 MB heap 82 MB; so a function that allocates too much gets
# java.lang.OutOfMemoryError, not a killed sandbox, and loading classes has
# some room. Memory is bounded by the cgroup, not RLIMIT_AS (rlimits.py), so
# the JVM's large address-space reservations are free. C1 only unless the
# function's JAVA_TOOL_OPTIONS says otherwise (read before the command line,
# which would win). The class path is relative to /var/task because a JDK 17
# class-data-sharing archive only matches the class path it was dumped with,
# and prepare() dumps it from a directory laid out the same.
#
# Without a memory cgroup (rootless mode) memory is bounded by RLIMIT_AS
# instead, and the JVM, which reserves far more address space than it uses
# (class space, code cache, heap), cannot start: measured, JDK 17 needs
# ~768 MB of address space for a 64 MB heap even with every reservation cut
# down. The launcher then answers with an init error frame itself.
_JAVA_NEEDS_CGROUP = json.dumps({
    "errorType": "Runtime.Unsupported",
    "errorMessage": "Java functions need the memory cgroup of root mode: this agent bounds memory with RLIMIT_AS "
                    "(rootless mode), which leaves the JVM too little address space to start"})
_JAVA_E_FRAME = "".join(f"\\{b:03o}" for b in b"E" + struct.pack(">I", len(_JAVA_NEEDS_CGROUP)))
JAVA_LAUNCH = (f'[ "$(ulimit -v)" = unlimited ] || {{ printf \'{_JAVA_E_FRAME}%s\' \'{_JAVA_NEEDS_CGROUP}\' >&0; '
               'exit 1; }; '
               'm=${AWS_LAMBDA_FUNCTION_MEMORY_SIZE:-128}; t=-XX:TieredStopAtLevel=1; '
               'case "$JAVA_TOOL_OPTIONS" in *Tiered*) t=;; esac; '
               'exec "$0" -XX:MaxHeapSize=$((m * 85 / 100 < m - 44 ? m * 85 / 100 : m - 44))m $t "$@" '
               f'-cp ../runtime/{JAVA_JAR} runtimeagent.Bootstrap')
# JVM flags. Cold start of a trivial (event, Context) POJO handler, JDK
# 17.0.15, -Xmx64m, ready + first invoke, median of 15 on a 2-core host, the
# bootstrap driven over a socketpair outside the sandbox (see
# bootstraps/java/build.py for the bootstrap's own start-up choices):
#   default JVM 50.6 ms (57.6 ms CPU); -Xshare:off 85.9 ms
#   + AppCDS archive of the bootstrap (prepare() below)  44.8 ms; all but it 52.9
#   + -XX:TieredStopAtLevel=1                            46.8 ms; all but it 51.4
#   + -XX:-UsePerfData                                   49.8 ms; all but it 49.7
#     (no start-up difference; kept so no hsperfdata file lands in /tmp)
#   + -XX:+UseSerialGC                                   59.7 ms (+9 ms): JDK 17
#     maps the archived heap objects (module graph, interned strings) only
#     with G1, so Serial rebuilds them on every start; G1 kept before JDK 25.
#     JDK 25.0.3: Serial and G1 start alike (30.5 vs 30.4 ms to ready), Serial
#     with 6% less CPU and 1.5 MB less RSS.
#   all of them, G1: 40.0 ms (47.9 ms CPU, 35.5 MB RSS).
# In the sandbox, through the agent (128 MB): Init Duration ~40 ms, ~34 of
# them nsjail, /bin/sh and the JVM's boot, ~6 loading bootstrap and handler.
# A function's first invocation then runs on its own CPU share (7% of a core
# at 128 MB) and pays for its first string concatenations (invokedynamic:
# classes spun per new shape, which JDK 17 cannot archive): examples/
# hello-java's first call takes 0.6-1.3 s at 128-512 MB, 15 ms at 1,769 MB.
# Linking 12 common shapes during init cut that call to 1.7 ms (outside the
# sandbox) but added 47 ms to every init, so it is not done.
# -Xss is left at 1 MB: it reserves, it does not start faster. -Djava.net.
# preferIPv4Stack=true as on Lambda (the sandbox network is IPv4).
JAVA_FLAGS = ("-XX:-UsePerfData", "-Djava.net.preferIPv4Stack=true")
JAVA_SERIAL_GC_FROM = 25


@dataclasses.dataclass(frozen=True)
class Runtime:
    name: str              # "python3.11"; an alias's entry carries the canonical name
    family: str            # "python", "node" or "provided"
    executable: str        # host path of the interpreter
    version: str           # "3.11.2"
    host_dirs: tuple[str, ...]   # read-only bind mounts, same path inside
    bootstrap_dir: Path    # mounted at /var/runtime
    argv: tuple[str, ...]  # command inside the sandbox
    # The control socket as the sandbox's stdin (fd 0) instead of an fd of
    # the same number as the agent's: for a runtime that can name no other.
    control_stdin: bool = False


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
    runtimes.update(_java_runtimes(boot))
    runtimes.update(_provided_runtimes(boot))
    return runtimes


def _java_version(home: str, exe: str) -> str:
    """The JDK's version from its ``release`` file, else from ``java -version``."""
    try:
        with open(os.path.join(home, "release"), encoding="utf-8") as f:
            m = re.search(r'^JAVA_VERSION="([^"]+)"', f.read(), re.M)
    except OSError:
        m = None
    if m is None:
        try:
            out = subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return ""
        m = re.search(r'version "([^"]+)"', out.stderr)
    return m.group(1) if m else ""


def _outside_links(home: str, inside: list[str]) -> list[str]:
    """Directories outside ``inside`` that the JDK's symlinks point into:
    Debian keeps jvm.cfg, java.security and cacerts under /etc."""
    found: set[str] = set()
    for dirpath, _dirs, files in os.walk(home):
        for f in files:
            path = os.path.join(dirpath, f)
            if not os.path.islink(path):
                continue
            target = os.path.realpath(path)
            if os.path.isfile(target) and not any(target.startswith(d + "/") for d in inside):
                found.add(os.path.dirname(target))
    return [d for d in sorted(found) if not any(d.startswith(o + "/") for o in found)]


def _java_runtimes(boot: Path) -> dict[str, Runtime]:
    """One runtime per JDK major (17+) on the host, the first found of each;
    none without the bootstrap jar, which setup.py builds only where a JDK is."""
    if not (boot / "java" / JAVA_JAR).is_file():
        return {}
    home = os.environ.get("JAVA_HOME")
    exes = [os.path.join(home, "bin", "java")] if home else []
    exes += _candidates("java") + sorted(glob.glob(os.path.join(JAVA_HOMES, "bin", "java")))
    runtimes: dict[str, Runtime] = {}
    seen = set()
    for exe in exes:
        # The real path: /usr/bin/java leads through /etc/alternatives, which
        # the sandbox's /etc does not have.
        real = os.path.realpath(exe)
        if real in seen or not os.access(real, os.X_OK):
            continue
        seen.add(real)
        jdk = os.path.dirname(os.path.dirname(real))
        version = _java_version(jdk, real)
        major = int(version.split(".")[0]) if version.split(".")[0].isdigit() else 0
        name = f"java{major}"
        if major < JAVA_MIN_MAJOR or name in runtimes:
            continue
        dirs = [d for d in BASE_DIRS if os.path.exists(d)]
        if not any(jdk == d or jdk.startswith(d + "/") for d in dirs):
            dirs.append(jdk)
        dirs += _outside_links(jdk, dirs)
        gc = "-XX:+UseSerialGC" if major >= JAVA_SERIAL_GC_FROM else "-XX:+UseG1GC"
        runtimes[name] = Runtime(
            name=name, family="java", executable=real, version=version, host_dirs=tuple(dirs),
            bootstrap_dir=boot / "java", argv=("/bin/sh", "-c", JAVA_LAUNCH, real, gc, *JAVA_FLAGS),
            control_stdin=True)
    return runtimes


def _provided_runtimes(boot: Path) -> dict[str, Runtime]:
    """``provided`` needs only the relay (and the host's /usr, /lib for the
    function's own bootstrap); none when the install could not build it."""
    relay = boot / RELAY / RELAY
    if not os.access(relay, os.X_OK):
        return {}
    rt = Runtime(name=PROVIDED_NAMES[0], family="provided", executable=str(relay), version=RUNTIME_API_VERSION,
                 host_dirs=tuple(d for d in BASE_DIRS if os.path.exists(d)), bootstrap_dir=boot / RELAY,
                 argv=(f"/var/runtime/{RELAY}",))
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
        if rt.family == "python":
            for src in dest.glob("*.py"):
                subprocess.run([rt.executable, "-I", "-S", "-m", "py_compile", str(src)], check=True,
                               capture_output=True, timeout=60)
        if rt.family == "java":
            rt = _archive_java_classes(rt, dest)
        for dirpath, _dirs, files in os.walk(dest):
            os.chmod(dirpath, 0o755)
            for f in files:
                path = os.path.join(dirpath, f)
                os.chmod(path, 0o755 if os.stat(path).st_mode & 0o100 else 0o644)
        prepared[name] = prepared[rt.name] = dataclasses.replace(rt, bootstrap_dir=dest)
    return {name: prepared[name] for name in runtimes}


def _archive_java_classes(rt: Runtime, dest: Path) -> Runtime:
    """Runs the bootstrap's warm-up handler (runtimeagent.Warmup: two
    invocations, one failing) through the runtime's own command, with
    -XX:ArchiveClassesAtExit, so that what a cold start loads is mapped from
    ``dest/bootstrap.jsa`` instead. ~0.25 s per agent start. The work
    directory mirrors the sandbox (task/ as the cwd, runtime/ the bootstrap)
    so that the archive's relative class path matches there. Returns ``rt``
    with the archive in its flags, or unchanged when the dump failed (the
    runtime then works without it)."""
    log = logging.getLogger("runtime.runtimes")
    work = Path(tempfile.mkdtemp(prefix=f".{rt.name}-cds-", dir=dest.parent))
    proc = None
    try:
        task = work / "task"
        (task / "runtimeagent").mkdir(parents=True)
        # A class file in the task directory, loaded as a function's are.
        with zipfile.ZipFile(dest / JAVA_JAR) as jar:
            (task / "runtimeagent" / "Warmup$Bean.class").write_bytes(jar.read("runtimeagent/Warmup$Bean.class"))
        (work / "runtime").symlink_to(dest)
        env = {"_HANDLER": "runtimeagent.Warmup", "_RUNTIME_CONTROL_FD": "0", "LAMBDA_TASK_ROOT": str(task),
               "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128", "LANG": "C.UTF-8", "TZ": "UTC", "PATH": "/usr/bin:/bin"}
        ours, theirs = socket.socketpair()
        with ours:
            try:
                with placement.children_anywhere():  # seconds of JVM work: not on the agent's CPU
                    proc = subprocess.Popen([*rt.argv, f"-XX:ArchiveClassesAtExit={dest / JAVA_ARCHIVE}"],
                                            stdin=theirs.fileno(), stdout=subprocess.DEVNULL,
                                            stderr=subprocess.PIPE, cwd=task, env=env)
            finally:
                theirs.close()
            ours.settimeout(30)
            replies = [_frame(ours)]
            for event in (b'{"bean": {"name": "n", "count": 1, "note": "x", "tags": ["t"]}}', b'{"fail": true}'):
                header = b"warm-up\n%d\narn\n\n" % (time.time() * 1000 + 30_000)
                ours.sendall(struct.pack(">cI", b"I", len(header) + len(event)) + header + event)
                replies.append(_frame(ours))
        _, err = proc.communicate(timeout=60)  # EOF on the socket: the JVM exits and writes the archive
        if [kind for kind, _ in replies] != [b"R", b"S", b"F"] or proc.returncode != 0:
            raise OSError(f"warm-up replied {[k for k, _ in replies]}, exit status {proc.returncode}: "
                          f"{err.decode(errors='replace')[-500:]}")
        if not (dest / JAVA_ARCHIVE).is_file():
            raise OSError(f"the JVM wrote no {dest / JAVA_ARCHIVE}")
    except (OSError, subprocess.SubprocessError, zipfile.BadZipFile, KeyError) as exc:
        log.warning("%s: no class-data-sharing archive, cold starts will be slower: %s", rt.name, exc)
        return rt
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    return dataclasses.replace(rt, argv=(*rt.argv, f"-XX:SharedArchiveFile=/var/runtime/{JAVA_ARCHIVE}"))


def _frame(sock: socket.socket) -> tuple[bytes, bytes]:
    """One control frame (see bootstraps/python/bootstrap.py), read whole."""
    data = b""
    while len(data) < 5 or len(data) < 5 + struct.unpack_from(">cI", data)[1]:
        chunk = sock.recv(65536)
        if not chunk:
            raise OSError("recv(control socket): EOF before a whole frame")
        data += chunk
    kind, length = struct.unpack_from(">cI", data)
    return kind, data[5:5 + length]
