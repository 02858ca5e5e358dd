"""Code handed to a running sandbox as a read-only mount at ``/var/task``,
and its layers at ``/opt``.

A stem cell is started before anyone knows which function it will run, so
its ``/var/task`` and ``/opt`` cannot be bind mounts made at start: they
start as empty read-only directories. Specialising makes
``open_tree(OPEN_TREE_CLONE)`` of the code (and of the layers' tree when the
function has layers): a private, detached copy of the mount, made read-only,
nosuid and nodev with ``mount_setattr``, and attaches it over that directory
inside the sandbox's own mount namespace with ``move_mount``. Path walks
cannot leave it (``..`` at /var/task is the sandbox's /var), so nothing of
the code store around it shows, and ``getcwd()`` inside works as in a cold
sandbox.

``setns`` into a mount namespace is refused to a process with threads (they
share CLONE_FS), and the agent has threads; so an ``Injector`` child process,
single-threaded and started once, joins each sandbox's namespace and attaches
the trees. Its wire: agent -> injector, one byte with two or three fds in
SCM_RIGHTS (the sandbox's mount namespace, the code's tree, the layers'
tree); injector -> agent, a u32 errno (0 = attached). Needs root
(CAP_SYS_ADMIN) and Linux 5.12+; ``supported()`` says whether this host has
both.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import socket
import struct
import subprocess
import sys

from runtime.errors import os_error

_SYSCALLS = {"x86_64": (428, 442), "aarch64": (428, 442)}
_MOVE_MOUNT = 429
MOVE_MOUNT_F_EMPTY_PATH = 0x4
CLONE_NEWNS = 0x20000
TASK_DIR = b"/var/task"
OPT_DIR = b"/opt"
_ERRNO = struct.Struct(">I")
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
AT_EMPTY_PATH = 0x1000
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV = 0x1, 0x2, 0x4

_libc = ctypes.CDLL(None, use_errno=True)


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _numbers() -> tuple[int, int]:
    nums = _SYSCALLS.get(platform.machine())
    if nums is None:
        raise os_error(f"open_tree on {platform.machine()}", err=errno.ENOSYS)
    return nums


def open_code_tree(path: str) -> int:
    """A new fd (CLOEXEC) of a read-only detached copy of the tree at ``path``;
    the caller owns it and closes it once sent."""
    sys_open_tree, sys_mount_setattr = _numbers()
    fd = _libc.syscall(sys_open_tree, AT_FDCWD, os.fsencode(path),
                       OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE)
    if fd < 0:
        raise os_error(f"open_tree({path}, OPEN_TREE_CLONE)", err=ctypes.get_errno())
    # SAFETY: fd is ours until returned; closed here on every failure path.
    attr = _MountAttr(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 0, 0, 0)
    if _libc.syscall(sys_mount_setattr, fd, b"", AT_EMPTY_PATH | AT_RECURSIVE, ctypes.byref(attr),
                     ctypes.sizeof(attr)) < 0:
        err = ctypes.get_errno()
        os.close(fd)
        raise os_error(f"mount_setattr({path}, MOUNT_ATTR_RDONLY)", err=err)
    return fd


def supported(probe_dir: str = "/") -> bool:
    try:
        os.close(open_code_tree(probe_dir if os.path.isdir(probe_dir) else "/"))
        return True
    except OSError:
        return False


def _attach(ns_fd: int, trees: list[int]) -> int:
    """In the injector: join the namespace, attach the code's tree at
    /var/task and the layers' (if sent) at /opt; 0 or errno."""
    if _libc.setns(ns_fd, CLONE_NEWNS) < 0:
        return ctypes.get_errno()
    for tree_fd, where in zip(trees, (TASK_DIR, OPT_DIR)):
        if _libc.syscall(_MOVE_MOUNT, tree_fd, b"", AT_FDCWD, where, MOVE_MOUNT_F_EMPTY_PATH) < 0:
            return ctypes.get_errno()
    return 0


def serve(fd: int) -> None:
    """The injector's loop, until the agent closes its end."""
    sock = socket.socket(fileno=fd)
    while True:
        msg, fds, _flags, _addr = socket.recv_fds(sock, 1, 3)
        if not msg:
            return
        err = _attach(fds[0], fds[1:]) if len(fds) in (2, 3) else errno.EINVAL
        for f in fds:
            os.close(f)
        sock.sendall(_ERRNO.pack(err))


def sandbox_init_pid(pids: set[int]) -> int:
    """The host pid of a sandbox's pid 1 among the processes of its cgroup."""
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("NSpid:"):
                        if line.split()[-1] == "1":
                            return pid
                        break
        except OSError:
            continue
    raise os_error("find sandbox pid 1 in /proc/<pid>/status", err=errno.ESRCH)


class Injector:
    """The agent's handle on the injector process; closed by ``close``."""

    def __init__(self):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-c", f"from runtime.sandbox.codemount import serve; serve({theirs.fileno()})"],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, close_fds=True)
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        self._sock = ours
        self._sock.settimeout(5.0)

    def attach(self, sandbox_pid: int, tree_fd: int, opt_fd: int | None = None) -> None:
        """Attaches ``tree_fd`` at /var/task (and ``opt_fd``, if given, at
        /opt) inside the sandbox whose pid 1 is ``sandbox_pid``. Blocks for
        well under a millisecond."""
        path = f"/proc/{sandbox_pid}/ns/mnt"
        try:
            ns_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise os_error(f"open({path})", exc) from exc
        try:
            socket.send_fds(self._sock, [b"A"], [ns_fd, tree_fd] + ([] if opt_fd is None else [opt_fd]))
            reply = self._sock.recv(_ERRNO.size)
        except OSError as exc:
            raise os_error("injector sendmsg/recv", exc) from exc
        finally:
            os.close(ns_fd)
        if len(reply) != _ERRNO.size:
            raise os_error("injector recv (process gone)", err=errno.EPIPE)
        err = _ERRNO.unpack(reply)[0]
        if err:
            what = "/var/task" if opt_fd is None else "/var/task, /opt"
            raise os_error(f"setns+move_mount({what}) in pid {sandbox_pid}", err=err)

    def close(self) -> None:
        self._sock.close()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
