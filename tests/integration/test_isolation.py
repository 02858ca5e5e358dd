"""What a function sees of the host: as little as possible.

Each test deploys a probe function into a real sandbox and asserts the
protection from inside, then checks the agent still serves another function.
"""

import json
import os

import pytest

from runtime.v1 import invoker_pb2

pytestmark = [pytest.mark.integration, pytest.mark.root]

PROBE = r'''
import errno, os, socket, json

def _try(fn):
    try:
        return {"ok": True, "value": fn()}
    except OSError as exc:
        return {"ok": False, "errno": exc.errno, "error": str(exc)}

def handler(event, context):
    what = event["probe"]
    if what == "ids":
        return {"uid": os.getuid(), "gid": os.getgid(), "euid": os.geteuid()}
    if what == "read":
        return _try(lambda: open(event["path"], "rb").read(64).decode("latin-1"))
    if what == "listdir":
        return _try(lambda: sorted(os.listdir(event["path"])))
    if what == "write":
        return _try(lambda: open(event["path"], "w").write("x"))
    if what == "tcp":
        def connect():
            s = socket.create_connection((event["host"], event["port"]), timeout=2)
            s.close()
            return "connected"
        return _try(connect)
    if what == "interfaces":
        return sorted(name for _, name in socket.if_nameindex())
    if what == "hostname":
        return socket.gethostname()
    if what == "pids":
        return sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    if what == "ptrace":
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.ptrace(0, 0, 0, 0)  # PTRACE_TRACEME: the filter kills the caller
    raise ValueError(what)
'''


@pytest.fixture(scope="module")
def probe(client):
    client.create("probe", {"app.py": PROBE})

    def run(**event):
        resp = client.invoke("probe", event)
        return resp, json.loads(resp.payload)

    return run


def test_runs_as_unprivileged_host_uid(probe):
    _, ids = probe(probe="ids")
    assert ids["uid"] != 0 and ids["euid"] != 0 and ids["gid"] != 0
    assert ids["uid"] >= 800_000, "a dedicated uid from the agent's range, not a real account"


def test_host_secrets_unreadable(probe, agent):
    _, r = probe(probe="read", path="/etc/shadow")
    assert not r["ok"], "no host /etc inside: the sandbox has its own minimal /etc"
    _, r = probe(probe="read", path=str(agent.data_dir / "registry.db"))
    assert not r["ok"]
    _, r = probe(probe="listdir", path=str(agent.data_dir))
    assert not r["ok"]
    _, r = probe(probe="listdir", path="/root")
    assert not r["ok"]


def test_task_dir_read_only(probe):
    _, r = probe(probe="read", path="/var/task/app.py")
    assert r["ok"]
    _, r = probe(probe="write", path="/var/task/app.py")
    assert not r["ok"] and r["errno"] in (13, 30)  # EACCES or EROFS
    _, r = probe(probe="write", path="/var/task/new.py")
    assert not r["ok"]
    _, r = probe(probe="write", path="/usr/evil")
    assert not r["ok"]
    _, r = probe(probe="write", path="/tmp/scratch")
    assert r["ok"], "/tmp is the writable scratch space"


def test_network_unreachable(probe, agent):
    _, ifaces = probe(probe="interfaces")
    assert ifaces == ["lo"]
    _, r = probe(probe="tcp", host="127.0.0.1", port=agent.port)
    assert not r["ok"], "the agent's API on the host loopback is not reachable from the sandbox"
    _, r = probe(probe="tcp", host="1.1.1.1", port=53)
    assert not r["ok"]


def test_own_hostname_and_pid_namespace(probe):
    _, name = probe(probe="hostname")
    assert name == "sandbox" and name != os.uname().nodename
    _, pids = probe(probe="pids")
    assert pids[0] == 1 and len(pids) < 5, f"only the sandbox's own processes are visible: {pids}"


def test_ptrace_kills_only_that_environment(client, probe):
    client.create("bystander", {"app.py": "def handler(e, c):\n    return 'still here'\n"})
    assert client.invoke_json("bystander")[1] == "still here"
    resp, body = probe(probe="ptrace")
    assert resp.function_error == "Unhandled"
    assert body["errorType"] == "Runtime.ExitError"
    assert "bad system call" in body["errorMessage"].lower()
    resp, body = client.invoke_json("bystander")
    assert body == "still here" and resp.start_kind == invoker_pb2.WARM
    _, ids = probe(probe="ids")
    assert ids["uid"] != 0, "the probe function itself recovers in a new environment"
