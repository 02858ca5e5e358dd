"""Plain helpers of the hostile-function corpus, imported by conftest.py and
the test modules (``from seclib import ...``); the fixtures live in conftest.py.

A canary variable is put into this process's environment at import time
(conftest.py imports this module during collection, before the session agent
starts), so the agent inherits it: no sandbox may ever see it.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2

from framework.agent import Client
from runtime.v1 import functions_pb2

CANARY_KEY = "RUNTIME_AGENT_SECURITY_CANARY"
os.environ.setdefault(CANARY_KEY, f"host-secret-{uuid.uuid4().hex}")
CANARY_VALUE = os.environ[CANARY_KEY]

UID_BASE, UID_END = 800_000, 800_000 + 65_536
MAX_RESPONSE = 6 * 1024 * 1024
LOG_CAP = 64 * 1024 * 1024

BYSTANDER = "sec-bystander"
BYSTANDER_CODE = '''
def handler(event, context):
    return {"echo": event.get("nonce"), "sum": sum(event.get("numbers", [])),
            "function": context.function_name}
'''

# Prepended to every attack's app.py: run a call, report errno instead of raising.
PRELUDE = '''
import ctypes, errno, os, signal, socket, subprocess, sys, time

def attempt(fn, *args):
    try:
        return {"ok": True, "value": fn(*args)}
    except OSError as exc:
        return {"ok": False, "errno": errno.errorcode.get(exc.errno, exc.errno), "error": str(exc)}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

def syscall(nr, *args):
    """Raw x86_64 system call; returns (result, errno name or "")."""
    r = _libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return r, (errno.errorcode.get(ctypes.get_errno(), "") if r == -1 else "")
'''


# -- the bystander ------------------------------------------------------------
def assert_bystander_ok(client) -> None:
    """The pre-deployed innocent function answers with exactly its result."""
    nonce = uuid.uuid4().hex
    resp = client.invoke(BYSTANDER, {"nonce": nonce, "numbers": [1, 2, 3, 4]}, timeout=60)
    assert resp.function_error == "", resp.payload
    assert json.loads(resp.payload) == {"echo": nonce, "sum": 10, "function": BYSTANDER}


def assert_agent_healthy(agent) -> None:
    """The agent process lives and its health service answers SERVING."""
    assert agent.alive(), f"agent died:\n{agent.log()}"
    c = Client(agent.target)
    try:
        r = c.health.Check(health_pb2.HealthCheckRequest(), timeout=30)
        assert r.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        c.close()


# -- invoking -------------------------------------------------------------------
def call(client, name: str, event=None, **kw):
    """Invokes ``name``; returns (InvokeResponse, decoded JSON payload)."""
    resp = client.invoke(name, {} if event is None else event, timeout=120, **kw)
    return resp, json.loads(resp.payload)


def delete_function(client, name: str) -> None:
    try:
        client.functions.DeleteFunction(functions_pb2.DeleteFunctionRequest(name=name), timeout=60)
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.NOT_FOUND:
            raise


def assert_function_error(resp, body, error_type: str, *fragments: str) -> None:
    assert resp.function_error == "Unhandled", body
    assert body["errorType"] == error_type, body
    for fragment in fragments:
        assert fragment in body["errorMessage"], body


def assert_killed_by_seccomp(resp, body) -> None:
    """The filter's KILL action: the sandbox's pid 1 died of SIGSYS."""
    assert resp.function_error == "Unhandled", body
    assert body["errorType"] == "Runtime.ExitError", body
    assert "bad system call" in body["errorMessage"].lower(), body


def denied(result: dict, *errnos: str) -> None:
    """An ``attempt`` result from inside: the call failed with one of ``errnos``."""
    assert result["ok"] is False, f"the attack succeeded: {result}"
    assert result["errno"] in errnos, result


# -- looking at the host --------------------------------------------------------
def host_processes() -> list[tuple[int, int, list[str]]]:
    """(pid, real uid, argv) of every process on the host."""
    procs = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                uid = next(int(line.split()[1]) for line in f if line.startswith("Uid:"))
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except (OSError, StopIteration, ValueError):
            continue  # gone meanwhile
        procs.append((int(entry), uid, argv))
    return procs


def _environ(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read()
    except OSError:
        return b""


def sandbox_processes(agent, function: str, argv: list[str] | None = None,
                      uid: int | None = None) -> list[int]:
    """Host pids of processes started in ``function``'s sandboxes by this agent.

    Other agents on the host hand out the same uids, so processes are told
    apart by the log-stream variable every sandbox process inherits, which
    holds the environment id ``<function>-<agent pid>-<n>``.
    """
    marker = f"]{function}-{agent.proc.pid}-".encode()
    return [pid for pid, u, a in host_processes()
            if u >= UID_BASE and (uid is None or u == uid) and (argv is None or a == argv)
            and marker in _environ(pid)]


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def log_sizes(agent, name: str) -> dict[str, int]:
    d = Path(agent.data_dir) / "logs"
    return {p.name: p.stat().st_size for p in d.iterdir() if p.name in (f"{name}.log", f"{name}.log.1")}
