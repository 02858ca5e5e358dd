"""Without root the agent still runs, in rootless mode, and says what it lacks.

The agent is installed into a virtual environment of the host's system
Python (readable by an unprivileged user) and started as ``nobody``.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

from pathlib import Path

import pytest

from framework.agent import Client, free_port

pytestmark = [pytest.mark.integration, pytest.mark.root]

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="module")
def base_dir():
    # Not pytest's tmp_path: it sits under a 0700 directory nobody cannot enter.
    base = Path(tempfile.mkdtemp(prefix="ra-rootless-"))
    os.chmod(base, 0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def nobody_venv(base_dir):
    if not os.path.exists(SYSTEM_PYTHON) or not shutil.which("runuser"):
        pytest.skip(f"needs {SYSTEM_PYTHON} and runuser to run an agent as an unprivileged user")
    base = base_dir
    wheels = base / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)],
                   check=True, timeout=600)
    venv = base / "venv"
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *map(str, wheels.glob("*.whl"))],
                   check=True, timeout=900)
    subprocess.run(["chmod", "-R", "a+rX", str(base)], check=True)
    return venv


def test_rootless_agent_runs_functions_and_names_missing_protections(nobody_venv, base_dir):
    data = base_dir / "home"
    data.mkdir()
    shutil.chown(data, "nobody")
    port = free_port()
    proc = subprocess.Popen(
        ["runuser", "-u", "nobody", "--", "env", f"HOME={data}", str(nobody_venv / "bin" / "runtime-agent"),
         "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data / "agent")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("{"), proc.stderr.read() if proc.poll() is not None else line
        assert json.loads(line)["event"] == "serving", line
        c = Client(f"127.0.0.1:{port}")
        c.create("rootless", {"app.py": "import os\ndef handler(e, c):\n"
                              "    return {'uid': os.getuid(), 'root': sorted(os.listdir('/')),"
                              " 'net': __import__('socket').if_nameindex()}\n"})
        resp, body = c.invoke_json("rootless")
        assert resp.function_error == "", body
        assert body["uid"] == 1000
        assert "home" not in body["root"] and "root" not in body["root"]
        assert [name for _, name in body["net"]] == ["lo"]
        c.close()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "mode rootless" in err
    assert "isolation reduced on this host: no memory, pids and CPU cgroup limits" in err
    assert "no uid isolation between environments" in err

