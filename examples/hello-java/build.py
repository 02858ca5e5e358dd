"""Compiles src/ into .build/ against the agent's own bootstrap.jar, which
holds the AWS-style handler interfaces (RequestHandler, Context, ...).

Run by examples/run_examples.py (the "build" of function.json) with the
agent's virtualenv first on PATH.
"""

import shutil
import subprocess
import sys
from pathlib import Path

from runtime.core.runtimes import JAVA_JAR, bootstrap_root

HERE = Path(__file__).resolve().parent
OUT = HERE / ".build"

javac = shutil.which("javac")
if javac is None:
    sys.exit("no javac on PATH: install a JDK 17+ (scripts/setup-host.sh installs openjdk-17-jdk-headless)")
shutil.rmtree(OUT, ignore_errors=True)
subprocess.run([javac, "--release", "17", "-cp", str(bootstrap_root() / "java" / JAVA_JAR), "-d", str(OUT),
                *sorted(str(p) for p in (HERE / "src").rglob("*.java"))], check=True)
