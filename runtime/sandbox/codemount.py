"""Code handed to a running sandbox as a read-only detached mount.

A stem cell is started before anyone knows which function it will run, so
its ``/var/task`` cannot be a bind mount made at start. Instead ``/var/task``
is a symlink to ``/proc/1/fd/9``, and specialising hands the bootstrap an fd
from ``open_tree(OPEN_TREE_CLONE)``: a private, detached copy of the code's
mount, made read-only, nosuid and nodev with ``mount_setattr``. Path walks
cannot leave it: ``..`` at the root of a detached mount stays there, so the
fd reveals nothing of the code store around it. Needs root (CAP_SYS_ADMIN)
and Linux 5.12+; ``supported()`` says whether this host has both.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform

from runtime.errors import os_error

_SYSCALLS = {"x86_64": (428, 442), "aarch64": (428, 442)}
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
