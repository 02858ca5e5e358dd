"""Compiles the Java bootstrap into ``bootstrap.jar``; stdlib only.

Run by setup.py's build step (``pip install .``): no compiled jar is kept in
the repository. A host without a JDK 17 or newer gets no jar, and the agent
then simply offers no Java runtime. The jar holds the bootstrap
(``runtimeagent.*``) and the handler interfaces under
``com.amazonaws.services.lambda.runtime`` that functions compile against.

    python3 bootstraps/java/build.py OUT.jar      # by hand
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

SRC = Path(__file__).resolve().parent / "src"
JAR = "bootstrap.jar"   # the name runtime/core/runtimes.py looks for
# The oldest JDK the bootstrap runs on: System.inheritedChannel() returns an
# AF_UNIX socket from 16 on; 17 is the LTS release Lambda names (java17).
RELEASE = 17
# Fixed entry times make the jar byte-for-byte reproducible.
ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def find_javac() -> str | None:
    home = os.environ.get("JAVA_HOME")
    candidates = [os.path.join(home, "bin", "javac")] if home else []
    candidates.append(shutil.which("javac") or "")
    for javac in candidates:
        if javac and os.access(javac, os.X_OK):
            return javac
    return None


def javac_major(javac: str) -> int:
    out = subprocess.run([javac, "-version"], capture_output=True, text=True, timeout=60)
    m = re.search(r"javac (\d+)", out.stdout + out.stderr)
    return int(m.group(1)) if m else 0


def build(jar: Path, javac: str | None = None) -> str:
    """Writes ``jar``; returns "" on success, else why no jar was built (no
    usable JDK). A compile error is a bug in the sources and raises."""
    javac = javac or find_javac()
    if javac is None:
        return "no javac found (install a JDK 17+, e.g. openjdk-17-jdk-headless)"
    major = javac_major(javac)
    if major < RELEASE:
        return f"{javac} is JDK {major or 'unknown'}; the Java bootstrap needs JDK {RELEASE}+"
    sources = sorted(str(p) for p in SRC.rglob("*.java"))
    with tempfile.TemporaryDirectory(prefix="java-bootstrap-") as classes:
        # -XDstringConcat=inline: "a" + b as StringBuilder calls, not
        # invokedynamic, whose first use spins classes on every cold start.
        subprocess.run([javac, "--release", str(RELEASE), "-encoding", "UTF-8", "-Xlint:all", "-Werror",
                        "-XDstringConcat=inline", "-d", classes, *sources], check=True, timeout=600)
        files = sorted(p for p in Path(classes).rglob("*") if p.is_file())
        jar.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(jar, "w", zipfile.ZIP_DEFLATED) as zf:
            info = zipfile.ZipInfo("META-INF/MANIFEST.MF", ZIP_TIME)
            zf.writestr(info, "Manifest-Version: 1.0\r\nCreated-By: runtime-agent\r\n\r\n")
            for f in files:
                info = zipfile.ZipInfo(f.relative_to(classes).as_posix(), ZIP_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, f.read_bytes())
    return ""


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    why = build(Path(sys.argv[1]))
    if why:
        sys.exit(why)
