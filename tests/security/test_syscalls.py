"""Hostile functions calling system calls that administer the kernel, inspect
other processes or build new namespaces.

seccomp: the kafel policy (runtime/jail/seccomp.py) KILLs the caller, so the
sandbox's pid 1 dies of SIGSYS and the caller gets "Runtime.ExitError" with
"signal: bad system call"; the next request gets a fresh environment. Every
call is made with raw x86_64 numbers through ctypes and harmless arguments, so
a call that slipped through would fail with EPERM/EFAULT/EINVAL and the test
would show it.
"""

import pytest

from runtime.v1 import invoker_pb2
from seclib import PRELUDE, assert_agent_healthy, assert_bystander_ok, assert_killed_by_seccomp, call, \
    delete_function

pytestmark = [pytest.mark.integration, pytest.mark.root]

SIGCHLD = 17
CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC = 0x20000, 0x02000000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
X32 = 0x40000000

SYSCALLER = '''
import mmap, struct

def int80(nr, a=0, b=0, c=0):
    """An i386 system call through int 0x80 from a small executable page."""
    code = (b"\\x53" + b"\\xb8" + struct.pack("<I", nr) + b"\\xbb" + struct.pack("<I", a) + b"\\xb9"
            + struct.pack("<I", b) + b"\\xba" + struct.pack("<I", c) + b"\\xcd\\x80\\x5b\\xc3")
    page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(code)
    fn = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
    return fn()

def handler(event, context):
    if event.get("ping"):
        return "pong"
    if "i386" in event:
        return {"result": int80(*event["i386"])}
    r, err = syscall(event["nr"], *event.get("args", []))
    if r == 0 and event.get("forks"):
        os._exit(0)  # we are the child of a clone that got through: vanish
    if r > 0 and event.get("forks"):
        os.waitpid(r, 0)
    return {"result": r, "errno": err, "pid": os.getpid()}
'''

# (id, x86_64 number, arguments)
KILLED = [
    ("ptrace", 101, [0, 0, 0, 0]),                      # PTRACE_TRACEME
    ("process_vm_readv", 310, [1, 0, 0, 0, 0, 0]),
    ("mount", 165, [0, 0, 0, 0, 0]),
    ("umount2", 166, [0, 0]),
    ("pivot_root", 155, [0, 0]),
    ("chroot", 161, [0]),
    ("unshare", 272, [CLONE_NEWUSER]),
    ("unshare-newns", 272, [CLONE_NEWNS]),
    ("setns", 308, [0, 0]),
    ("bpf", 321, [0, 0, 0]),
    ("perf_event_open", 298, [0, 0, -1, -1, 0]),
    ("userfaultfd", 323, [0]),
    ("keyctl", 250, [0, -3, 0]),                         # KEYCTL_GET_KEYRING_ID(session)
    ("add_key", 248, [0, 0, 0, 0, -3]),
    ("request_key", 249, [0, 0, 0, 0]),
    ("init_module", 175, [0, 0, 0]),
    ("finit_module", 313, [0, 0, 0]),
    ("delete_module", 176, [0, 0]),
    ("kexec_load", 246, [0, 0, 0, 0]),
    ("kexec_file_load", 320, [-1, -1, 0, 0, 0]),
    ("reboot", 169, [0, 0, 0, 0]),                       # wrong magic even if it got through
    ("swapon", 167, [0, 0]),
    ("swapoff", 168, [0]),
    ("open_by_handle_at", 304, [-1, 0, 0]),
    ("name_to_handle_at", 303, [-1, 0, 0, 0, 0]),
    ("syslog", 103, [10, 0, 0]),                         # SYSLOG_ACTION_SIZE_BUFFER
    ("acct", 163, [0]),
    ("quotactl", 179, [0, 0, 0, 0]),
    ("settimeofday", 164, [0, 0]),
    ("clock_settime", 227, [0, 0]),
    ("clock_adjtime", 305, [0, 0]),
    ("adjtimex", 159, [0]),
    ("iopl", 172, [3]),
    ("ioperm", 173, [0x80, 1, 1]),
    ("vhangup", 153, []),
    ("fsopen", 430, [0, 0]),
    ("fspick", 433, [-1, 0, 0]),
    ("open_tree", 428, [-1, 0, 0]),
    ("move_mount", 429, [-1, 0, -1, 0, 0]),
    ("fsmount", 432, [-1, 0, 0]),
    ("fsconfig", 431, [-1, 0, 0, 0, 0]),
    ("io_uring_setup", 425, [1, 0]),                     # io_uring ops bypass seccomp
    ("io_uring_enter", 426, [-1, 0, 0, 0, 0, 0]),
    ("io_uring_register", 427, [-1, 0, 0, 0]),
]

CLONES = [
    ("clone-newuser", CLONE_NEWUSER),
    ("clone-newns", CLONE_NEWNS),
    ("clone-newpid", CLONE_NEWPID),
    ("clone-newnet", CLONE_NEWNET),
    ("clone-newcgroup", CLONE_NEWCGROUP),
    ("clone-newuts-newipc", CLONE_NEWUTS | CLONE_NEWIPC),
]


@pytest.fixture(scope="module")
def syscaller(client):
    name = "sec-sys-caller"
    client.create(name, {"app.py": PRELUDE + SYSCALLER}, memory_mb=128, timeout_seconds=5)
    yield name
    delete_function(client, name)


def _assert_killed_and_recovered(client, name, event):
    resp, body = call(client, name, event)
    assert_killed_by_seccomp(resp, body)
    resp, body = call(client, name, {"ping": True})
    assert body == "pong" and resp.start_kind == invoker_pb2.COLD, "only that environment died"
    assert_bystander_ok(client)


@pytest.mark.parametrize("nr,args", [pytest.param(nr, args, id=name) for name, nr, args in KILLED])
def test_dangerous_syscall_kills_sandbox(client, syscaller, nr, args):
    """seccomp: the KILL list (ptrace, mount/umount2, pivot_root, chroot,
    unshare, setns, bpf, perf_event_open, userfaultfd, keyctl/add_key/
    request_key, module loading, kexec, reboot, swapon/off, handle syscalls,
    syslog, clock setting, iopl/ioperm, the new mount API) ends the sandbox
    with SIGSYS before the kernel runs the call."""
    _assert_killed_and_recovered(client, syscaller, {"nr": nr, "args": args})


@pytest.mark.parametrize("flags", [pytest.param(flags, id=name) for name, flags in CLONES])
def test_clone_into_new_namespace_kills_sandbox(client, syscaller, flags):
    """seccomp: clone() asking for any new namespace (CLONE_NEWUSER first of
    all: the usual door to kernel attack surface) is killed; plain fork and
    threads stay allowed."""
    _assert_killed_and_recovered(client, syscaller, {"nr": 56, "args": [flags | SIGCHLD, 0, 0, 0, 0],
                                                     "forks": True})


def test_plain_fork_still_allowed(client, syscaller):
    """seccomp (no false positive): clone without namespace flags, i.e. fork, works."""
    resp, body = call(client, syscaller, {"nr": 57, "args": [], "forks": True})  # fork()
    assert resp.function_error == "" and body["result"] > 1 and body["pid"] == 1, body
    assert_bystander_ok(client)


def test_clone3_hides_flags_and_gets_enosys(client, syscaller):
    """seccomp: clone3 carries its flags in memory the filter cannot read, so
    it answers ENOSYS (libc falls back to the checked clone); the function lives on."""
    # struct clone_args {flags = CLONE_NEWUSER, ...}: the pointer is never read.
    resp, body = call(client, syscaller, {"nr": 435, "args": [0, 88]})
    assert resp.function_error == "" and body["result"] == -1 and body["errno"] == "ENOSYS", body
    resp, body = call(client, syscaller, {"ping": True})
    assert resp.start_kind == invoker_pb2.WARM
    assert_bystander_ok(client)


@pytest.mark.parametrize("nr", [pytest.param(20, id="getpid"), pytest.param(26, id="ptrace"),
                                pytest.param(21, id="mount"), pytest.param(310, id="unshare"),
                                pytest.param(288, id="keyctl")])
def test_i386_abi_kills_sandbox(client, syscaller, nr):
    """seccomp: the filter allows only the x86_64 ABI; any i386 system call
    (int 0x80, where numbers differ: 26 is ptrace, 21 mount...) kills the sandbox."""
    _assert_killed_and_recovered(client, syscaller, {"i386": [nr, 0, 0, 0]})


X32_CALLS = [pytest.param(X32 | 272, [CLONE_NEWUSER], id="unshare"), pytest.param(X32 | 250, [0, -3, 0], id="keyctl"),
             pytest.param(X32 | 165, [0, 0, 0, 0, 0], id="mount"), pytest.param(X32 | 521, [0, 0, 0, 0], id="ptrace")]


@pytest.mark.parametrize("nr,args", X32_CALLS)
def test_x32_abi_does_not_run(client, syscaller, nr, args):
    """kernel + seccomp: x32 aliases (nr | 0x40000000) of killed calls never
    run: the filter kills them, or (this host) the kernel has no x32 ABI and
    answers ENOSYS. test_x32_abi_killed_by_filter checks the filter's part."""
    resp, body = call(client, syscaller, {"nr": nr, "args": args})
    if resp.function_error:
        assert_killed_by_seccomp(resp, body)
    else:
        assert body["result"] == -1 and body["errno"] == "ENOSYS", f"an x32 call ran: {body}"
    assert_bystander_ok(client)


def test_x32_abi_killed_by_filter(client, syscaller):
    """seccomp: defence in depth, the filter itself kills x32 calls."""
    resp, body = call(client, syscaller, {"nr": X32 | 272, "args": [CLONE_NEWUSER]})
    assert_bystander_ok(client)
    assert_killed_by_seccomp(resp, body)


def test_many_kills_leave_agent_healthy(client, syscaller, agent):
    """agent: after every environment above died of SIGSYS the agent still
    serves, and the function is answered from a fresh environment."""
    assert_agent_healthy(agent)
    assert call(client, syscaller, {"ping": True})[1] == "pong"
    assert_bystander_ok(client)
