"""Hostile functions against processes: seeing and signalling the host's
processes, reading the host's environment and hostname, setuid binaries,
processes left behind after the response, native crashes, and forged frames
on the agent's control socket.
"""

import os
import signal
import stat

import pytest

from framework.agent import Client
from framework.procfs import children
from runtime.v1 import functions_pb2, invoker_pb2
from seclib import (CANARY_KEY, CANARY_VALUE, PRELUDE, UID_BASE, UID_END, assert_agent_healthy,
                    assert_bystander_ok, assert_function_error, call, denied, sandbox_processes, wait_until)

pytestmark = [pytest.mark.integration, pytest.mark.root]

ENVIRON = '''
def handler(event, context):
    def read(path):
        with open(path, "rb") as f:
            return f.read().decode("latin-1")
    out = {"pid1_environ": read("/proc/1/environ"),
           "pid1_cmdline": read("/proc/1/cmdline"),
           "visible": {}}
    for p in os.listdir("/proc"):
        if p.isdigit():
            out["visible"][p] = attempt(read, f"/proc/{p}/environ")
    out["agent_environ"] = attempt(read, f"/proc/{event['agent_pid']}/environ")
    out["host_pid1_root"] = attempt(os.listdir, "/proc/1/root/root")
    return out
'''


def test_proc1_environ_is_own_bootstrap(deploy, client, agent):
    """namespace (pid) + agent: /proc/1 is the sandbox's own bootstrap, whose
    environment the agent builds from scratch; nothing of the host's
    environment (the canary, the agent's PATH, HOME=/root) reaches it."""
    with open(f"/proc/{agent.proc.pid}/environ", "rb") as f:
        host_env = dict(kv.split("=", 1) for kv in f.read().decode().split("\0") if "=" in kv)
    assert host_env.get(CANARY_KEY) == CANARY_VALUE, "precondition: the agent inherited the canary"
    deploy("sec-proc-environ", ENVIRON)
    _, r = call(client, "sec-proc-environ", {"agent_pid": agent.proc.pid})
    assert "bootstrap" in r["pid1_cmdline"], r["pid1_cmdline"]
    sandbox_env = r["pid1_environ"].split("\0")
    assert "HOME=/tmp" in sandbox_env and "HOME=/root" not in sandbox_env
    sandbox_path = "/usr/local/bin:/usr/bin:/bin:/opt/bin"  # the agent's fixed PATH for sandboxes
    assert f"PATH={sandbox_path}" in sandbox_env
    if host_env["PATH"] != sandbox_path:
        assert f"PATH={host_env['PATH']}" not in sandbox_env, "the agent's own PATH leaked"
    for pid, seen in r["visible"].items():
        text = seen.get("value", "")
        assert CANARY_VALUE not in text and CANARY_KEY not in text, f"/proc/{pid}/environ leaks the canary"
        assert "HOME=/root" not in text
    denied(r["agent_environ"], "ENOENT")
    denied(r["host_pid1_root"], "EACCES", "ENOENT")
    assert_bystander_ok(client)


PIDS = '''
def handler(event, context):
    return {"pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
            "me": os.getpid(), "ppid": os.getppid(),
            "host_pid_status": attempt(lambda: open(f"/proc/{event['host_pid']}/status").read())}
'''


def test_proc_lists_only_own_processes(deploy, client, agent):
    """namespace (pid): the sandbox's /proc lists only its own processes: the
    bootstrap is pid 1 and the host's processes (the agent, this test) are absent."""
    deploy("sec-proc-pids", PIDS)
    _, r = call(client, "sec-proc-pids", {"host_pid": agent.proc.pid})
    assert r["pids"] == [1] and r["me"] == 1 and r["ppid"] == 0, r
    denied(r["host_pid_status"], "ENOENT")
    assert_bystander_ok(client)


KILLER = '''
def handler(event, context):
    out = {}
    for name, pid in event["targets"].items():
        out[name] = attempt(os.kill, pid, signal.SIGKILL)
    out["own_pid1"] = attempt(os.kill, 1, signal.SIGKILL)   # that is us: init ignores it
    child = subprocess.Popen(["/bin/sleep", "1000"])
    out["everyone"] = attempt(os.kill, -1, signal.SIGKILL)  # every process we may signal
    out["child_status"] = child.wait()
    out["still_alive_as"] = os.getpid()
    return out
'''


def test_signals_cannot_reach_host_processes(deploy, client, agent):
    """namespace (pid) + uid: the agent's and the test's pids do not exist in the
    sandbox (ESRCH); kill(1) reaches the sandbox's own init, which ignores it;
    kill(-1) reaches only the sandbox's own processes."""
    deploy("sec-proc-kill", KILLER)
    targets = {"agent": agent.proc.pid, "test": os.getpid(), "nsjail_like": agent.proc.pid + 1}
    targets = {k: v for k, v in targets.items() if v > 64}  # never a sandbox-local pid number
    _, r = call(client, "sec-proc-kill", {"targets": targets})
    for name in targets:
        denied(r[name], "ESRCH")
    assert r["own_pid1"] == {"ok": True, "value": None}
    assert r["everyone"] == {"ok": True, "value": None}
    assert r["child_status"] == -signal.SIGKILL
    assert r["still_alive_as"] == 1
    assert agent.alive() and os.getpid() > 0
    assert_agent_healthy(agent)
    assert_bystander_ok(client)


HOSTNAME = '''
def handler(event, context):
    return {"uname": os.uname().nodename, "gethostname": socket.gethostname(),
            "proc": open("/proc/sys/kernel/hostname").read().strip(),
            "sethostname": attempt(socket.sethostname, "pwned"),
            "setdomainname": attempt(lambda: syscall(171, 0, 0))}
'''


def test_host_hostname_hidden(deploy, client):
    """namespace (uts): the sandbox's hostname is "sandbox", never the host's,
    and it cannot be changed (no CAP_SYS_ADMIN: EPERM)."""
    host = os.uname().nodename
    deploy("sec-proc-hostname", HOSTNAME)
    _, r = call(client, "sec-proc-hostname")
    assert r["uname"] == r["gethostname"] == r["proc"] == "sandbox" != host
    denied(r["sethostname"], "EPERM")
    assert r["setdomainname"]["value"] == [-1, "EPERM"]
    assert os.uname().nodename == host
    assert_bystander_ok(client)


SETUID = '''
def _watch(argv, stdin):
    """Runs a setuid binary and samples its credentials while it runs."""
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = set()
    for _ in range(50):
        try:
            with open(f"/proc/{p.pid}/status") as f:
                seen.update(l for l in f.read().splitlines() if l.startswith(("Uid:", "Gid:", "CapEff:")))
        except OSError:
            break
        if p.poll() is not None:
            break
        time.sleep(0.01)
    out, err = p.communicate(stdin, timeout=20)
    return {"rc": p.returncode, "out": out.decode(errors="replace"), "err": err.decode(errors="replace"),
            "seen": sorted(seen)}

def handler(event, context):
    status = dict(l.split(":\\t", 1) for l in open("/proc/self/status").read().splitlines() if ":\\t" in l)
    return {
        "status": {k: status[k].strip() for k in ("Uid", "Gid", "CapInh", "CapPrm", "CapEff", "CapBnd",
                                                     "CapAmb", "NoNewPrivs", "Seccomp")},
        "su": _watch(["/usr/bin/su", "root", "-c", "id -u"], b"wrong-password\\n"),
        "passwd": _watch(["/usr/bin/passwd", "root"], b"x\\nx\\nx\\n"),
        "mount": _watch(["/usr/bin/mount", "-t", "tmpfs", "none", "/tmp"], b""),
        "newgrp": _watch(["/usr/bin/newgrp", "root"], b"id -u\\n"),
    }
'''


def test_setuid_binaries_gain_nothing(deploy, client):
    """uid + NO_NEW_PRIVS (nsjail sets it before exec; seccomp requires it): the
    host's setuid-root binaries (su, passwd, mount, newgrp) run as the
    sandbox's own uid and get no capability, so none of them becomes root."""
    for binary in ("/usr/bin/su", "/usr/bin/passwd", "/usr/bin/mount", "/usr/bin/newgrp"):
        st = os.stat(binary)
        assert st.st_uid == 0 and st.st_mode & stat.S_ISUID, f"precondition: {binary} is setuid root"
    deploy("sec-proc-setuid", SETUID, memory_mb=256, timeout_seconds=30)
    resp, r = call(client, "sec-proc-setuid")
    assert resp.function_error == "", r
    st = r["status"]
    uid = int(st["Uid"].split()[0])
    assert UID_BASE <= uid < UID_END and st["Uid"].split() == [str(uid)] * 4
    assert st["NoNewPrivs"] == "1" and st["Seccomp"] == "2"
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(st[cap], 16) == 0, st
    for name in ("su", "passwd", "mount", "newgrp"):
        run = r[name]
        assert run["rc"] != 0, f"{name} succeeded: {run}"
        assert run["out"].strip() != "0", f"{name} ran a command as root: {run}"
        for line in run["seen"]:
            if line.startswith(("Uid:", "Gid:")):
                assert line.split()[1:] == [str(uid)] * 4, f"{name} changed credentials: {line}"
            else:
                assert int(line.split()[1], 16) == 0, f"{name} gained capabilities: {line}"
    assert_bystander_ok(client)


def test_distinct_unprivileged_uid_per_function(deploy, client):
    """uid: every environment runs as its own host uid from 800000+, never 0,
    so two functions share no file ownership, signals or RLIMIT_NPROC budget."""
    deploy("sec-proc-uid-a", "def handler(e, c):\n    return [os.getuid(), os.geteuid(), os.getgid()]\n")
    deploy("sec-proc-uid-b", "def handler(e, c):\n    return [os.getuid(), os.geteuid(), os.getgid()]\n")
    a = call(client, "sec-proc-uid-a")[1]
    b = call(client, "sec-proc-uid-b")[1]
    assert a[0] == a[1] == a[2] and b[0] == b[1] == b[2]
    assert UID_BASE <= a[0] < UID_END and UID_BASE <= b[0] < UID_END and a[0] != b[0]
    assert_bystander_ok(client)


SLEEPER = '''
def handler(event, context):
    if event.get("spawn"):
        pid = os.fork()
        if pid == 0:                     # double fork + setsid: detached, reparented to pid 1
            os.setsid()
            if os.fork() == 0:
                os.execv("/bin/sleep", ["sleep", "1000"])
            os._exit(0)
        os.waitpid(pid, 0)
    if event.get("spin"):
        while True:
            pass
    return {"uid": os.getuid()}
'''


def _sleepers(agent, name, uid):
    return sandbox_processes(agent, name, argv=["sleep", "1000"], uid=uid)


def test_sleepers_die_with_replaced_environment(deploy, client, agent):
    """namespace (pid) + cgroup: a detached `sleep 1000` left behind after the
    response lives only as long as its environment; when the configuration
    changes the environment is destroyed and, seen from the host (/proc/*/cmdline
    and Uid), no `sleep 1000` of that uid from this agent remains."""
    deploy("sec-proc-sleeper", SLEEPER, memory_mb=256)
    _, r = call(client, "sec-proc-sleeper", {"spawn": True})
    uid = r["uid"]
    assert wait_until(lambda: len(_sleepers(agent, "sec-proc-sleeper", uid)) == 1, timeout=10), \
        "precondition: the sleeper outlives the response while the environment is warm"
    client.functions.UpdateFunctionConfiguration(
        functions_pb2.UpdateFunctionConfigurationRequest(name="sec-proc-sleeper", description="retire it"),
        timeout=30)
    resp, r = call(client, "sec-proc-sleeper")
    assert resp.start_kind == invoker_pb2.COLD and resp.function_error == ""
    assert wait_until(lambda: not _sleepers(agent, "sec-proc-sleeper", uid), timeout=20), \
        f"sleep 1000 survived its environment: {_sleepers(agent, 'sec-proc-sleeper', uid)}"
    assert_bystander_ok(client)


def test_sleepers_die_with_timed_out_environment(deploy, client, agent):
    """namespace (pid) + cgroup + agent limit (timeout): a function that leaves a
    detached `sleep 1000` and then hangs is killed at the timeout, and the
    sleeper dies with its environment."""
    deploy("sec-proc-sleeper-timeout", SLEEPER, memory_mb=256, timeout_seconds=3)
    uid = call(client, "sec-proc-sleeper-timeout")[1]["uid"]
    request = invoker_pb2.InvokeRequest(function_name="sec-proc-sleeper-timeout", payload=b'{"spawn": true, "spin": true}')
    future = client.invoker.Invoke.future(request, timeout=120)
    saw_sleeper = wait_until(lambda: len(_sleepers(agent, "sec-proc-sleeper-timeout", uid)) == 1 or future.done(),
                             timeout=10) and not future.done()
    resp = future.result()
    assert resp.function_error == "Unhandled"
    assert b"Task timed out after 3.00 seconds" in resp.payload, resp.payload
    assert saw_sleeper, "precondition: the sleeper ran while the function hung"
    assert wait_until(lambda: not _sleepers(agent, "sec-proc-sleeper-timeout", uid), timeout=20)
    assert_bystander_ok(client)


SEGFAULT = '''
def handler(event, context):
    if event.get("crash"):
        return ctypes.string_at(0)  # read from NULL in native code
    return "fine"
'''


def test_native_segfault_contained(deploy, client, agent):
    """namespace (pid) + agent: a segfault in native code kills only the
    sandbox's pid 1; the caller gets Runtime.ExitError "signal: segmentation
    fault" and the next request a fresh environment."""
    deploy("sec-proc-segv", SEGFAULT)
    resp, body = call(client, "sec-proc-segv", {"crash": True})
    assert_function_error(resp, body, "Runtime.ExitError", "segmentation fault")
    resp, body = call(client, "sec-proc-segv")
    assert body == "fine" and resp.start_kind == invoker_pb2.COLD
    assert_agent_healthy(agent)
    assert_bystander_ok(client)


FORGER = '''
import struct

def _control_fd():
    for fd in sorted(int(n) for n in os.listdir("/proc/self/fd")):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                return fd
        except OSError:
            pass
    raise RuntimeError("no socket")

def handler(event, context):
    fd = _control_fd()
    if event["forge"] == "huge":
        os.write(fd, struct.pack(">cI", b"S", 0xFFFFFFF0) + b"\\0" * 64)
    elif event["forge"] == "ready":
        os.write(fd, struct.pack(">cI", b"R", 16) + b"\\0" * 16)
    elif event["forge"] == "none":
        return "honest"
    time.sleep(2)
    return "after forging"
'''


@pytest.mark.parametrize("forge,error_type,fragment", [
    ("huge", "Function.ResponseSizeTooLarge", "exceeded maximum"),
    ("ready", "Runtime.InvalidResponse", "unexpected frame")])
def test_forged_control_frames(deploy, client, agent, forge, error_type, fragment):
    """agent limit (control protocol): a function that writes its own frames
    to the control socket, a 4 GiB response or a frame of the wrong kind,
    gets an error; the environment is destroyed, nothing is read beyond the
    frame limit, and the agent is unharmed."""
    name = f"sec-proc-forge-{forge}"
    deploy(name, FORGER)
    resp, body = call(client, name, {"forge": forge})
    assert_function_error(resp, body, error_type, fragment)
    resp, body = call(client, name, {"forge": "none"})
    assert body == "honest" and resp.start_kind == invoker_pb2.COLD
    assert_agent_healthy(agent)
    assert_bystander_ok(client)


IPC = '''
_libc.shmget.argtypes = [ctypes.c_int, ctypes.c_size_t, ctypes.c_int]
_libc.msgget.argtypes = [ctypes.c_int, ctypes.c_int]
KEY = 0x5EC0DE

def _ipc(call, *args):
    r = call(*args)
    return [r, errno.errorcode.get(ctypes.get_errno(), "") if r == -1 else ""]

def handler(event, context):
    if event["op"] == "create":  # IPC_CREAT | 0666
        return {"shm": _ipc(_libc.shmget, KEY, 4096, 0o1666), "msg": _ipc(_libc.msgget, KEY, 0o1666)}
    return {"shm": _ipc(_libc.shmget, KEY, 0, 0), "msg": _ipc(_libc.msgget, KEY, 0)}
'''


def test_sysv_ipc_of_other_function_invisible(deploy, client):
    """namespace (ipc): System V shared memory and message queues live in the
    sandbox's own IPC namespace; another function looking up the same key
    finds nothing (ENOENT), while the creator still does."""
    deploy("sec-proc-ipc-owner", IPC)
    deploy("sec-proc-ipc-thief", IPC)
    _, r = call(client, "sec-proc-ipc-owner", {"op": "create"})
    assert r["shm"][0] >= 0 and r["msg"][0] >= 0, r
    _, r = call(client, "sec-proc-ipc-thief", {"op": "lookup"})
    assert r == {"shm": [-1, "ENOENT"], "msg": [-1, "ENOENT"]}
    _, r = call(client, "sec-proc-ipc-owner", {"op": "lookup"})
    assert r["shm"][0] >= 0 and r["msg"][0] >= 0, "the creator's own (warm) namespace still has them"
    for table in ("/proc/sysvipc/shm", "/proc/sysvipc/msg"):
        with open(table) as f:
            keys = [int(line.split()[0]) for line in f.read().splitlines()[1:]]
        assert 0x5EC0DE not in keys, f"the segment leaked into the host's IPC namespace ({table})"
    assert_bystander_ok(client)


DESCRIPTORS = '''
def handler(event, context):
    out = {}
    for n in os.listdir("/proc/self/fd"):
        try:
            out[n] = os.readlink(f"/proc/self/fd/{n}")
        except OSError:
            pass  # the directory listdir had open
    return out
'''


def _task_tables(pid: int) -> dict[int, int]:
    """Descriptors open in each thread's table, by thread id."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            out[int(tid)] = len(os.listdir(f"/proc/{pid}/task/{tid}/fd"))
        except FileNotFoundError:
            pass  # the thread ended
    return out


def _blocked(status_path: str) -> set[int]:
    """Signals a task blocks (SigBlk of /proc/.../status)."""
    with open(status_path) as f:
        mask = int(next(line for line in f if line.startswith("SigBlk:")).split()[1], 16)
    return {sig for sig in range(1, 65) if mask >> (sig - 1) & 1}


def _spawner_table(pid: int) -> tuple[int, int]:
    """(thread id, descriptors) of the one thread with a small table of its own."""
    tables = _task_tables(pid)
    small = [(tid, n) for tid, n in tables.items() if n < 16]
    assert len(small) == 1, f"one thread, the spawner, has a small table of its own: {tables}"
    return small[0]


def _assert_own_descriptors_only(client, agent_pid: int, create) -> None:
    spawner, spawner_table = _spawner_table(agent_pid)
    names = [f"sec-proc-fds-{i}" for i in range(6)]  # more environments: more descriptors in the agent
    for name in names:
        create(name)
    for name in names:
        resp, fds = call(client, name)
        assert resp.start_kind == invoker_pb2.COLD
        kinds = {n: target.split(":")[0] for n, target in fds.items()}
        control = [n for n, kind in kinds.items() if kind == "socket"]
        assert kinds.pop("0") == "/dev/null" and kinds.pop("1") == kinds.pop("2") == "pipe", fds
        assert len(control) == 1 and kinds == {control[0]: "socket"}, f"unexpected descriptors: {fds}"
    tables = _task_tables(agent_pid)
    assert tables[agent_pid] >= 4 * len(names), tables
    assert tables[spawner] == spawner_table, "the spawner's table does not grow with the environments"
    # Signals are handled by the agent's other threads, not by the spawner
    # (its table need not hold what a handler writes to); the sandboxes start
    # with none blocked.
    assert {signal.SIGTERM, signal.SIGINT} <= _blocked(f"/proc/{agent_pid}/task/{spawner}/status")
    assert signal.SIGTERM not in _blocked(f"/proc/{agent_pid}/task/{agent_pid}/status")
    for nsjail in children(agent_pid):
        with open(f"/proc/{nsjail}/comm") as f:
            if f.read().strip() != "nsjail":
                continue
        assert not {signal.SIGTERM, signal.SIGINT, signal.SIGALRM} & _blocked(f"/proc/{nsjail}/status")
        for pid1 in children(nsjail):
            assert _blocked(f"/proc/{pid1}/status") == set(), f"sandbox pid 1 {pid1} blocks signals"


def test_sandbox_inherits_only_its_own_descriptors(deploy, client, agent):
    """agent (spawning): a sandbox holds exactly stdin (/dev/null), the two
    log pipes and its control socket, none of the agent's descriptors. Here
    the agent starts nsjail in its event-loop thread, as it does while it
    holds few descriptors."""
    _assert_own_descriptors_only(client, agent.proc.pid, lambda name: deploy(name, DESCRIPTORS))


def test_sandbox_descriptors_through_the_spawner_thread(fresh_agent, monkeypatch):
    """agent (spawning): the same when the start is handed to the spawner
    thread, as the agent does once it holds many descriptors (forced here
    from the first): the thread's own table stays a handful while the
    agent's grows with every environment; signals stay blocked in the thread
    and none is blocked in what it starts; SIGTERM still stops the agent."""
    monkeypatch.setenv("RUNTIME_AGENT_SPAWN_INLINE_BELOW_FD", "0")
    fresh_agent.start()
    client = Client(fresh_agent.target)
    try:
        _assert_own_descriptors_only(client, fresh_agent.proc.pid, lambda name: client.create(
            name, {"app.py": PRELUDE + DESCRIPTORS}, memory_mb=128, timeout_seconds=5))
    finally:
        client.close()
    assert fresh_agent.stop() == 0, fresh_agent.log()
