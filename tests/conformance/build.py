"""Builds the conformance functions: one zip per official runtime interface
client (RIC), each a ``provided`` function whose ``bootstrap`` starts the
RIC unmodified, as installed from its package registry.

    python  awslambdaric (PyPI)             pip install --target, the host's /usr/bin/python3.X
    node    aws-lambda-ric (npm)            npm ci (builds its native client), /usr/bin/node
                                            (4.0.2 declares Node >= 22; npm warns, it runs on 20)
    java    aws-lambda-java-runtime-        mvn compile dependency:copy-dependencies,
            interface-client (Maven)        a JDK under /usr/lib/jvm
    go      github.com/aws/aws-lambda-go    go build -tags lambda.norpc, static
    rust    lambda_runtime (crates.io)      cargo build --release --locked

Sources live in ``tests/conformance/<lang>/``. A build copies them into a
temporary work directory (outside ``tests/``, so that the style tests never
lint third-party code), runs the toolchain with a timeout per step, and
writes ``<lang>-<key>.zip`` under the build directory, where ``key`` hashes
the sources, this file and the toolchain's version: an unchanged package is
not rebuilt. Cargo's target directory is shared under the build directory.
Each build's output goes to ``<lang>.log`` beside the zip.

    python tests/conformance/build.py [LANG ...]     # prints each zip's path

A missing toolchain raises ``Unavailable`` (the tests skip); a failing or
stuck step raises ``BuildError`` with the end of its output.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUILD_DIR = Path(os.environ.get("RIC_BUILD_DIR", HERE / ".build"))
LANGUAGES = ("python", "node", "java", "go", "rust")
# Directories the sandbox bind-mounts from the host: an interpreter the
# bootstrap starts must live under one of them.
SANDBOX_DIRS = ("/usr/", "/lib/", "/lib64/", "/bin/")
# Seconds per build step: dependency downloads plus a cold compile on a
# loaded 2-core machine; a step that takes longer is stuck.
STEP_TIMEOUT_S = 900
# Files in a source directory that are outputs, never inputs.
IGNORED = {"target", "node_modules", "__pycache__", ".build"}


class Unavailable(Exception):
    """A toolchain the language needs is not installed."""


class BuildError(Exception):
    """A build step failed or timed out."""


def _which(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise Unavailable(f"`{tool}` is not on PATH")
    return path


def _version(cmd: list[str]) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    return (out.stdout + out.stderr).strip().splitlines()[0]


def _goarch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def _script(*lines: str) -> str:
    return "#!/bin/sh\n" + "\n".join(lines) + "\n"


class Step:
    """Runs one build's commands, appending their output to its log."""

    def __init__(self, lang: str, log: Path):
        self.lang = lang
        self.log = log

    def run(self, cmd: list[str], cwd: Path, env: dict[str, str] | None = None,
            timeout: float = STEP_TIMEOUT_S) -> None:
        with open(self.log, "a") as f:
            f.write(f"\n$ {' '.join(cmd)}    (in {cwd})\n")
            f.flush()
            start = time.monotonic()
            try:
                proc = subprocess.run(cmd, cwd=cwd, env={**os.environ, **(env or {})}, stdout=f,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=timeout)
            except subprocess.TimeoutExpired:
                raise BuildError(f"{self.lang}: `{' '.join(cmd)}` still running after {timeout:.0f} s "
                                 f"(stuck?)\n{self.tail()}") from None
            f.write(f"# exit {proc.returncode} after {time.monotonic() - start:.1f} s\n")
        if proc.returncode != 0:
            raise BuildError(f"{self.lang}: `{' '.join(cmd)}` exited with {proc.returncode}\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return f"--- last {lines} lines of {self.log} ---\n" + "\n".join(text[-lines:])


# --- one toolchain check and one recipe per language ------------------------
# A check returns what identifies the toolchain (its part of the cache key);
# a recipe fills ``stage`` (the zip's root) from the sources copied to ``work``.

def _python_target() -> str:
    """The newest /usr/bin/python3.X: awslambdaric's wheel is built for it."""
    found = [p for p in glob.glob("/usr/bin/python3.[0-9]*") if p.rsplit(".", 1)[1].isdigit()]
    found.sort(key=lambda p: int(p.rsplit(".", 1)[1]))
    if not found:
        raise Unavailable("no /usr/bin/python3.X for awslambdaric to run on")
    return found[-1]


def python_check() -> str:
    exe = _python_target()
    return f"{exe} {_version([exe, '--version'])}"


def python_recipe(step: Step, work: Path, stage: Path) -> None:
    exe = _python_target()
    minor = exe.rsplit(".", 1)[1]
    # The venv's pip installs for the sandbox's interpreter: wheels only, for
    # its ABI and for every manylinux the host's glibc runs (pip does not
    # widen an explicit --platform to older glibc versions by itself).
    glibc_minor = int(os.confstr("CS_GNU_LIBC_VERSION").split()[1].split(".")[1])
    arch = platform.machine()
    platforms = [f"manylinux_2_{m}_{arch}" for m in range(glibc_minor, 4, -1)]
    platforms += [f"manylinux{tag}_{arch}" for tag in ("2014", "2010", "1")]
    step.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
              "--no-compile", "--target", str(stage), "--only-binary", ":all:",
              "--implementation", "cp", "--python-version", f"3.{minor}", "--abi", f"cp3{minor}",
              *(arg for p in platforms for arg in ("--platform", p)),
              "-r", str(work / "requirements.txt")], cwd=work)
    shutil.copy(work / "app.py", stage / "app.py")
    (stage / "bootstrap").write_text(_script(
        "# awslambdaric from PyPI, unmodified; -m puts /var/task (the cwd) on sys.path.",
        f'exec {exe} -m awslambdaric "$_HANDLER"'))


def node_check() -> str:
    node = os.path.realpath(_which("node"))
    _which("npm")
    if not node.startswith(SANDBOX_DIRS):
        raise Unavailable(f"node is {node}: not under {', '.join(SANDBOX_DIRS)}, so not in the sandbox")
    for tool in ("cmake", "make", "g++"):  # aws-lambda-ric builds curl and aws-lambda-cpp at install
        if shutil.which(tool) is None:
            raise Unavailable(f"`{tool}` is not on PATH (`make setup-test` installs it)")
    return f"{node} {_version([node, '--version'])} npm {_version(['npm', '--version'])}"


def node_recipe(step: Step, work: Path, stage: Path) -> None:
    node = os.path.realpath(_which("node"))
    env = {}
    # node-gyp fetches Node's headers unless told where they are.
    headers = Path(node).parent.parent / "include" / "node"
    if (headers / "node_api.h").exists():
        env["npm_config_nodedir"] = str(headers.parent.parent)
    step.run(["npm", "ci", "--no-audit", "--no-fund", "--foreground-scripts"], cwd=work, env=env)
    if not (work / "node_modules" / "aws-lambda-ric" / "rapid-client.node").exists():
        raise BuildError(f"node: npm ci did not build aws-lambda-ric's native client (install scripts "
                         f"not run?)\n{step.tail()}")
    for name in ("app.js", "package.json"):
        shutil.copy(work / name, stage / name)
    shutil.copytree(work / "node_modules", stage / "node_modules", symlinks=True)
    (stage / "bootstrap").write_text(_script(
        "# aws-lambda-ric from npm, unmodified (its native client, built at install).",
        f'exec {node} "$LAMBDA_TASK_ROOT/node_modules/aws-lambda-ric/index.mjs" "$_HANDLER"'))


def _java_home() -> str:
    """A JDK the sandbox can run: under /usr, and whose conf/ does not link
    into the host's /etc (the sandbox has a /etc of its own: Debian's
    OpenJDK then fails with "Error loading java.security file")."""
    default = os.path.realpath(shutil.which("java") or "")
    homes = sorted(glob.glob("/usr/lib/jvm/*/bin/java"), key=lambda p: os.path.realpath(p) != default)
    for java in homes:
        home = Path(java).parent.parent
        security = home / "conf" / "security" / "java.security"
        if os.path.realpath(security).startswith(SANDBOX_DIRS) and os.path.exists(security):
            return str(home)
    raise Unavailable("no JDK under /usr/lib/jvm whose conf/ stays under /usr (the sandbox has no host /etc)")


def java_check() -> str:
    _which("mvn")
    home = _java_home()
    return f"{home} {_version([home + '/bin/java', '-version'])} {_version(['mvn', '-v'])}"


def java_recipe(step: Step, work: Path, stage: Path) -> None:
    java = _java_home() + "/bin/java"
    step.run(["mvn", "-B", "-q", "compile", "dependency:copy-dependencies"], cwd=work)
    shutil.copytree(work / "target" / "classes", stage, dirs_exist_ok=True)
    shutil.copytree(work / "target" / "lib", stage / "lib")
    (stage / "bootstrap").write_text(_script(
        "# aws-lambda-java-runtime-interface-client from Maven Central, unmodified.",
        "# The sandbox has no /sys, so the JVM cannot see its cgroup: size it from the function's memory.",
        f"exec {java} -XX:MaxRAM=${{AWS_LAMBDA_FUNCTION_MEMORY_SIZE}}m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \\",
        "    -XX:-UsePerfData -cp \"$LAMBDA_TASK_ROOT/lib/*:$LAMBDA_TASK_ROOT\" \\",
        '    com.amazonaws.services.lambda.runtime.api.client.AWSLambda "$_HANDLER"'))


def go_check() -> str:
    return _version([_which("go"), "version"])


def go_recipe(step: Step, work: Path, stage: Path) -> None:
    env = {"GOOS": "linux", "GOARCH": _goarch(), "CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly",
           "GOTOOLCHAIN": "local"}
    step.run(["go", "build", "-trimpath", "-tags", "lambda.norpc", "-ldflags=-s -w",
              "-o", str(stage / "bootstrap"), "."], cwd=work, env=env)


def rust_check() -> str:
    return _version([_which("cargo"), "--version"])


def rust_recipe(step: Step, work: Path, stage: Path) -> None:
    target = BUILD_DIR / "cargo-target"
    step.run(["cargo", "build", "--release", "--locked"], cwd=work, env={"CARGO_TARGET_DIR": str(target)})
    shutil.copy(target / "release" / "bootstrap", stage / "bootstrap")


RECIPES = {lang: (globals()[f"{lang}_check"], globals()[f"{lang}_recipe"]) for lang in LANGUAGES}


# --- cache, staging, zip ------------------------------------------------------

def _sources(lang: str) -> list[Path]:
    root = HERE / lang
    out = []
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in IGNORED)
        out.extend(Path(dirpath) / f for f in sorted(files))
    return out


def cache_key(lang: str, toolchain: str) -> str:
    h = hashlib.sha256()
    h.update(Path(__file__).read_bytes())
    h.update(toolchain.encode())
    for path in _sources(lang):
        h.update(str(path.relative_to(HERE)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def write_zip(stage: Path, dest: Path) -> None:
    """Regular files only (npm's .bin symlinks are not needed); executables
    keep 0755, everything else is 0644."""
    tmp = dest.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for dirpath, dirs, files in os.walk(stage):
            dirs.sort()
            for name in sorted(files):
                path = Path(dirpath) / name
                if path.is_symlink() or not path.is_file():
                    continue
                info = zipfile.ZipInfo(str(path.relative_to(stage)), (1980, 1, 1, 0, 0, 0))
                mode = 0o755 if os.stat(path).st_mode & 0o111 else 0o644
                info.external_attr = (mode | 0o100000) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                with open(path, "rb") as src, zf.open(info, "w") as out:
                    shutil.copyfileobj(src, out, 1024 * 1024)
    os.replace(tmp, dest)


def build(lang: str) -> Path:
    """The zip for ``lang``, built unless an identical one is cached."""
    check, recipe = RECIPES[lang]
    toolchain = check()
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    dest = BUILD_DIR / f"{lang}-{cache_key(lang, toolchain)}.zip"
    with open(BUILD_DIR / f"{lang}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent test runs build once
        if dest.exists():
            return dest
        log = BUILD_DIR / f"{lang}.log"
        log.write_text(f"# {lang}: {toolchain}\n")
        step = Step(lang, log)
        start = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"ric-{lang}-") as tmp:
            work, stage = Path(tmp) / "work", Path(tmp) / "stage"
            shutil.copytree(HERE / lang, work, ignore=shutil.ignore_patterns(*IGNORED))
            stage.mkdir()
            recipe(step, work, stage)
            os.chmod(stage / "bootstrap", 0o755)
            for old in BUILD_DIR.glob(f"{lang}-*.zip"):
                old.unlink()
            write_zip(stage, dest)
        with open(log, "a") as f:
            f.write(f"# built {dest.name} ({dest.stat().st_size} bytes) in {time.monotonic() - start:.1f} s\n")
        return dest


def main(argv: list[str]) -> int:
    for lang in argv or LANGUAGES:
        start = time.monotonic()
        try:
            path = build(lang)
        except Unavailable as exc:
            print(f"{lang}: skipped: {exc}")
            continue
        print(f"{lang}: {path} ({time.monotonic() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
