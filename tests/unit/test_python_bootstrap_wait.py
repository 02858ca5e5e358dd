"""The Python bootstrap sleeps between events until input arrives, and is not
woken when the agent reads its reply.

A reader blocked in read(2) on a Unix stream socket is woken each time its
peer consumes data the reader sent (the socket becomes writable again). The
bootstrap waits in poll(2) for input instead; this test plays the agent's
side of the control socket and counts the bootstrap's context switches
around the moment it reads a reply."""

from __future__ import annotations

import os
import select
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import runtime

BOOTSTRAP_DIR = Path(runtime.__file__).parent / "_bootstraps" / "python"
HDR = struct.Struct(">cI")


def _frame(sock: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while len(data) < 5 or len(data) < 5 + HDR.unpack_from(data)[1]:
        chunk = sock.recv(65536)
        assert chunk, "the bootstrap closed the control socket"
        data += chunk
    kind, length = HDR.unpack_from(data)
    return kind, data[5:5 + length]


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def _switches(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches in /proc/PID/status")


def _asleep(pid: int) -> int:
    """Waits until the process has been asleep for a while; returns its switch count."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        before = _switches(pid)
        time.sleep(0.02)
        if _state(pid) == "S" and _switches(pid) == before:
            return before
    raise AssertionError(f"bootstrap {pid} never settled asleep")


def test_reading_a_reply_does_not_wake_the_bootstrap(tmp_path):
    (tmp_path / "app.py").write_text("def handler(event, context):\n    return event\n")
    agent, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    env = {"_HANDLER": "app.handler", "LAMBDA_TASK_ROOT": str(tmp_path), "_RUNTIME_CONTROL_FD": str(peer.fileno()),
           "AWS_LAMBDA_FUNCTION_NAME": "waiter", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    code = f"import sys;sys.path.insert(0,{str(BOOTSTRAP_DIR)!r});import bootstrap;sys.exit(bootstrap.main())"
    proc = subprocess.Popen([sys.executable, "-I", "-S", "-B", "-c", code], env=env, pass_fds=(peer.fileno(),))
    peer.close()
    try:
        assert _frame(agent)[0] == b"R"
        for i in range(5):
            payload = b'{"n": %d}' % i
            body = b"req-%d\n%d\narn:aws:lambda:local:0:function:waiter\n\n%s" % (
                i, int(time.time() * 1000) + 60_000, payload)
            agent.sendall(HDR.pack(b"I", len(body)) + body)
            # The reply waits in our socket while the bootstrap goes back to sleep ...
            assert select.select([agent], [], [], 10)[0], "no reply within 10 s"
            before = _asleep(proc.pid)
            # ... and taking it out must leave the bootstrap asleep.
            kind, reply = _frame(agent)
            assert kind == b"S" and reply[8:] == payload
            time.sleep(0.05)
            assert _switches(proc.pid) == before, f"call {i}: reading the reply woke the bootstrap"
            assert _state(proc.pid) == "S"
    finally:
        agent.close()
        proc.wait(10)
