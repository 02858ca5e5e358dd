"""Hostile functions against shared resources: memory, processes, threads,
/tmp and /dev/shm space, file size, file descriptors, CPU time, the log
store and the response path.

Each test asserts the limit that stops the attack and that the agent and an
innocent function are unaffected afterwards.
"""

import json
import re
import time

import pytest

from runtime.v1 import invoker_pb2
from seclib import (LOG_CAP, MAX_RESPONSE, assert_agent_healthy, assert_bystander_ok, assert_function_error,
                    call, delete_function, denied, log_sizes, sandbox_processes, wait_until)

pytestmark = [pytest.mark.integration, pytest.mark.root]

MIB = 1024 * 1024

# -- memory -------------------------------------------------------------------
MEMORY_BOMB = '''
def handler(event, context):
    hoard = []
    for i in range(event["mib"]):
        hoard.append(b"\\xab" * (1 << 20))  # touched pages, not just reserved
        print("allocated", i + 1, "MiB", flush=True)
    return len(hoard)
'''


def test_memory_bomb_killed_at_memory_size(deploy, client, agent):
    """cgroup (memory): the environment's memory cgroup holds it to its 128 MB;
    the kernel OOM-kills the sandbox, the agent reports Runtime.OutOfMemory
    ("Runtime exited with error: signal: killed"), and the next request gets a
    fresh environment."""
    deploy("sec-res-membomb", MEMORY_BOMB, memory_mb=128, timeout_seconds=10)
    resp, body = call(client, "sec-res-membomb", {"mib": 1024}, log_type=invoker_pb2.LOG_TAIL)
    allocated = [int(n) for n in re.findall(r"allocated (\d+) MiB", resp.log_result)]
    assert_function_error(resp, body, "Runtime.OutOfMemory", "signal: killed")
    assert allocated and max(allocated) < 128, f"killed before 128 MiB: {allocated[-3:]}"
    resp, body = call(client, "sec-res-membomb", {"mib": 8})
    assert body == 8 and resp.start_kind == invoker_pb2.COLD
    assert_agent_healthy(agent)
    assert_bystander_ok(client)


# -- processes and threads ------------------------------------------------------
FORK_BOMB = '''
def handler(event, context):
    if event.get("whoami"):
        return os.getuid()
    while True:          # every process forks forever: 2, 4, 8, ... until a limit bites
        try:
            os.fork()
        except OSError:
            pass
'''


def test_fork_bomb_contained(deploy, client, agent):
    """cgroup (pids, memory) + agent limit (timeout): a classic exponential fork
    bomb is stopped by the environment's pids/memory limits and killed at the
    timeout (or by the OOM killer); no process of it survives on the host."""
    deploy("sec-res-forkbomb", FORK_BOMB, memory_mb=128, timeout_seconds=3)
    uid = call(client, "sec-res-forkbomb", {"whoami": True})[1]
    resp, body = call(client, "sec-res-forkbomb")
    assert resp.function_error == "Unhandled", body
    assert body["errorType"] in ("Sandbox.Timedout", "Runtime.OutOfMemory", "Runtime.ExitError"), body
    assert wait_until(lambda: not sandbox_processes(agent, "sec-res-forkbomb", uid=uid), timeout=30), \
        f"fork bomb processes survive: {sandbox_processes(agent, 'sec-res-forkbomb', uid=uid)[:10]}"
    assert_agent_healthy(agent)
    assert_bystander_ok(client)


PROCESS_LIMIT = '''
def handler(event, context):
    n = 0
    try:
        while True:
            os.posix_spawn("/bin/sleep", ["sleep", "1000"], os.environ)
            n += 1
    except OSError as exc:
        return {"spawned": n, "errno": errno.errorcode[exc.errno]}
'''


def test_process_limit(deploy, client, agent):
    """cgroup (pids.max 1024) + rlimit (RLIMIT_NPROC 1024): spawning processes
    stops with EAGAIN at the limit; deleting the function kills them all."""
    deploy("sec-res-nproc", PROCESS_LIMIT, memory_mb=256, timeout_seconds=60)
    _, r = call(client, "sec-res-nproc")
    assert r["errno"] == "EAGAIN", r
    assert 900 <= r["spawned"] <= 1023, r
    assert len(sandbox_processes(agent, "sec-res-nproc", argv=["sleep", "1000"])) == r["spawned"]
    delete_function(client, "sec-res-nproc")
    assert wait_until(lambda: not sandbox_processes(agent, "sec-res-nproc"), timeout=30)
    assert_agent_healthy(agent)
    assert_bystander_ok(client)


THREAD_BOMB = '''
import threading

def handler(event, context):
    stop = threading.Event()
    threads = []
    try:
        while True:
            t = threading.Thread(target=stop.wait, daemon=True)
            t.start()
            threads.append(t)
    except RuntimeError as exc:
        error = str(exc)
    stop.set()
    for t in threads:
        t.join()
    return {"threads": len(threads), "error": error}
'''


def test_thread_bomb(deploy, client, agent):
    """cgroup (pids.max counts threads) + rlimit (RLIMIT_NPROC): thread creation
    fails at about 1,024 tasks ("can't start new thread"); the environment lives on."""
    deploy("sec-res-threads", THREAD_BOMB, memory_mb=256, timeout_seconds=30)
    resp, r = call(client, "sec-res-threads")
    assert resp.function_error == "", r
    assert r["error"] == "can't start new thread"
    assert 900 <= r["threads"] <= 1023, r
    resp, r = call(client, "sec-res-threads")
    assert resp.start_kind == invoker_pb2.WARM and r["threads"] <= 1023, "the same environment recovers"
    assert_agent_healthy(agent)
    assert_bystander_ok(client)


# -- disk-like space ---------------------------------------------------------------
FILL = '''
def handler(event, context):
    written = 0
    chunk = b"\\0" * (1 << 20)
    try:
        with open(event["path"], "wb") as f:
            while True:
                written += f.write(chunk)
                f.flush()
    except OSError as exc:
        return {"written": written, "errno": errno.errorcode[exc.errno]}
'''


def test_tmp_flood_stops_at_ephemeral_storage(deploy, client):
    """mount (tmpfs size=ephemeral_storage_mb): with memory to spare, writing /tmp
    beyond its 512 MB fails with ENOSPC (or EFBIG from RLIMIT_FSIZE, set to the
    same size). Memory is 1,024 MB here only so the tmpfs limit, not the memory
    cgroup, is the one reached."""
    deploy("sec-res-tmpfull", FILL, memory_mb=1024, ephemeral_storage_mb=512, timeout_seconds=60)
    resp, r = call(client, "sec-res-tmpfull", {"path": "/tmp/flood"})
    assert resp.function_error == "", r
    assert r["errno"] in ("ENOSPC", "EFBIG"), r
    assert 500 * MIB <= r["written"] <= 512 * MIB, r
    assert_bystander_ok(client)


def test_tmp_flood_charged_to_memory(deploy, client, agent):
    """cgroup (memory): /tmp is a tmpfs whose pages are charged to the
    environment's memory cgroup, so at 256 MB of memory a /tmp flood is
    OOM-killed long before the 512 MB tmpfs fills; the host's RAM and disk are safe."""
    deploy("sec-res-tmpmem", FILL, memory_mb=256, ephemeral_storage_mb=512, timeout_seconds=30)
    resp, body = call(client, "sec-res-tmpmem", {"path": "/tmp/flood"})
    assert_function_error(resp, body, "Runtime.OutOfMemory", "signal: killed")
    resp, body = call(client, "sec-res-tmpmem", {"path": "/dev/null/nope"})
    assert body["errno"] == "ENOTDIR" and resp.start_kind == invoker_pb2.COLD
    assert_agent_healthy(agent)
    assert_bystander_ok(client)


def test_dev_shm_flood(deploy, client):
    """mount (/dev/shm is a 64 MiB tmpfs): shared-memory flooding fails with ENOSPC."""
    deploy("sec-res-shm", FILL, memory_mb=256, timeout_seconds=30)
    resp, r = call(client, "sec-res-shm", {"path": "/dev/shm/flood"})
    assert r == {"written": 64 * MIB, "errno": "ENOSPC"}
    assert_bystander_ok(client)


SPARSE = '''
import resource

def handler(event, context):
    def sparse():
        with open("/tmp/sparse", "wb") as f:
            f.seek(600 << 20)
            f.write(b"x")
    def truncate():
        with open("/tmp/truncated", "wb") as f:
            f.truncate(1 << 40)
    def raise_limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    out = {"limit": list(resource.getrlimit(resource.RLIMIT_FSIZE)),
           "sparse": attempt(sparse), "truncate": attempt(truncate)}
    try:
        raise_limit()
        out["raise"] = "raised"
    except ValueError as exc:
        out["raise"] = str(exc)
    return out
'''


def test_sparse_file_beyond_file_size_limit(deploy, client):
    """rlimit (RLIMIT_FSIZE = ephemeral storage): a sparse file, which would take
    no tmpfs blocks, still cannot grow past 512 MiB (EFBIG), and the process
    cannot raise its hard limit."""
    deploy("sec-res-sparse", SPARSE)
    _, r = call(client, "sec-res-sparse")
    assert r["limit"] == [512 * MIB, 512 * MIB]
    denied(r["sparse"], "EFBIG")
    denied(r["truncate"], "EFBIG")
    assert r["raise"] == "not allowed to raise maximum limit"
    assert_bystander_ok(client)


FD_BOMB = '''
import resource

def handler(event, context):
    fds = []
    try:
        while True:
            fds.append(os.open("/dev/null", os.O_RDONLY))
    except OSError as exc:
        error = errno.errorcode[exc.errno]
    top = max(fds)
    for fd in fds:
        os.close(fd)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
        raised = "raised"
    except ValueError as exc:
        raised = str(exc)
    return {"opened": len(fds), "top": top, "errno": error,
            "limit": list(resource.getrlimit(resource.RLIMIT_NOFILE)), "raise": raised}
'''


def test_fd_exhaustion(deploy, client):
    """rlimit (RLIMIT_NOFILE 1024): opening files stops with EMFILE below fd
    1024; the hard limit cannot be raised; the environment lives on."""
    deploy("sec-res-fds", FD_BOMB)
    resp, r = call(client, "sec-res-fds")
    assert r["errno"] == "EMFILE"
    assert r["limit"] == [1024, 1024]
    assert r["top"] == 1023 and 1000 <= r["opened"] < 1024, r
    assert r["raise"] == "not allowed to raise maximum limit"
    resp2, r2 = call(client, "sec-res-fds")
    assert resp2.start_kind == invoker_pb2.WARM and r2["opened"] == r["opened"], "no descriptor leaked"
    assert_bystander_ok(client)


# -- CPU time ---------------------------------------------------------------------------
SPIN = '''
def handler(event, context):
    if event.get("ignore"):
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1):
            signal.signal(sig, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_BLOCK, set(signal.Signals) - {signal.SIGKILL, signal.SIGSTOP})
    if event.get("quick"):
        return "quick"
    while True:
        pass
'''


def test_cpu_spin_killed_at_timeout(deploy, client, agent):
    """agent limit (timeout): a handler spinning forever is killed at its 1 s
    timeout with Sandbox.Timedout; the next request gets a fresh environment."""
    deploy("sec-res-spin", SPIN, timeout_seconds=1)
    resp, body = call(client, "sec-res-spin")
    assert_function_error(resp, body, "Sandbox.Timedout", "Task timed out after 1.00 seconds")
    assert resp.timings.total_us < 30_000_000
    resp, body = call(client, "sec-res-spin", {"quick": True})
    assert body == "quick" and resp.start_kind == invoker_pb2.COLD
    assert_agent_healthy(agent)
    assert_bystander_ok(client)


def test_sigterm_ignoring_spin_still_killed(deploy, client, agent):
    """agent limit (timeout, SIGKILL): ignoring SIGTERM/SIGINT/SIGHUP and blocking
    every blockable signal does not help; the sandbox is killed at the timeout."""
    deploy("sec-res-stubborn", SPIN, timeout_seconds=1)
    resp, body = call(client, "sec-res-stubborn", {"ignore": True})
    assert_function_error(resp, body, "Sandbox.Timedout", "Task timed out after 1.00 seconds")
    assert wait_until(lambda: not sandbox_processes(agent, "sec-res-stubborn"), timeout=30)
    resp, body = call(client, "sec-res-stubborn", {"ignore": True, "quick": True})
    assert body == "quick" and resp.start_kind == invoker_pb2.COLD
    assert_bystander_ok(client)


# -- the log store and the response path ---------------------------------------------------
LOG_FLOOD = '''
def handler(event, context):
    line = "F" * 8191 + "\\n"
    for _ in range(event["mib"] * 128):
        sys.stdout.write(line)
    sys.stdout.flush()
    print("last line of the flood")
    return event["mib"]
'''


def test_log_flood_capped(deploy, client, agent):
    """agent limit (log cap 64 MiB per function): 100 MiB printed keeps the
    function's <name>.log + <name>.log.1 within the cap, newest lines kept."""
    deploy("sec-res-logflood", LOG_FLOOD, timeout_seconds=60)
    resp, body = call(client, "sec-res-logflood", {"mib": 100})
    assert resp.function_error == "" and body == 100, body

    def stable():  # the agent flushes its log buffers on a short timer
        before = log_sizes(agent, "sec-res-logflood")
        time.sleep(0.5)
        return log_sizes(agent, "sec-res-logflood") == before

    assert wait_until(stable, timeout=30)
    sizes = log_sizes(agent, "sec-res-logflood")
    assert set(sizes) == {"sec-res-logflood.log", "sec-res-logflood.log.1"}, sizes
    assert sum(sizes.values()) <= LOG_CAP, sizes
    tail = (agent.data_dir / "logs" / "sec-res-logflood.log").read_bytes().splitlines()[-8:]
    assert any(json.loads(line)["m"] == "last line of the flood" for line in tail)
    assert_agent_healthy(agent)
    assert_bystander_ok(client)


RESPONSE = '''
def handler(event, context):
    return "x" * event["chars"]  # JSON adds two quotes
'''


def test_response_just_over_limit(deploy, client):
    """agent limit (6 MB response): one byte over 6,291,456 is refused with
    Function.ResponseSizeTooLarge; exactly the limit still passes."""
    deploy("sec-res-response", RESPONSE, memory_mb=256)
    resp, body = call(client, "sec-res-response", {"chars": MAX_RESPONSE - 1})
    assert_function_error(resp, body, "Function.ResponseSizeTooLarge",
                          f"({MAX_RESPONSE + 1} bytes) exceeded maximum allowed payload size ({MAX_RESPONSE} bytes)")
    resp = client.invoke("sec-res-response", {"chars": MAX_RESPONSE - 2})
    assert resp.function_error == "" and len(resp.payload) == MAX_RESPONSE
    assert_bystander_ok(client)


def test_response_far_over_limit_contained(deploy, client, agent):
    """agent limit (6 MB response, 7 MiB control frame): a 20 MB response never
    reaches the caller; the environment is replaced and the agent is unharmed."""
    deploy("sec-res-bigresponse", RESPONSE, memory_mb=256)
    resp, body = call(client, "sec-res-bigresponse", {"chars": 20_000_000})
    assert resp.function_error == "Unhandled" and len(resp.payload) < 4096, body
    assert body["errorType"] in ("Function.ResponseSizeTooLarge", "Runtime.InvalidResponse"), body
    resp, body = call(client, "sec-res-bigresponse", {"chars": 3})
    assert body == "xxx"
    assert_agent_healthy(agent)
    assert_bystander_ok(client)


def test_response_far_over_limit_error_type(deploy, client):
    """agent limit: far over the limit is still Function.ResponseSizeTooLarge."""
    deploy("sec-res-bigresponse-type", RESPONSE, memory_mb=256)
    resp, body = call(client, "sec-res-bigresponse-type", {"chars": 20_000_000})
    assert_bystander_ok(client)
    assert_function_error(resp, body, "Function.ResponseSizeTooLarge")
