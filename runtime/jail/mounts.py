"""The sandbox's file system.

nsjail starts from an empty tmpfs root; only what is listed here exists
inside: the runtime's host directories and the function's code read-only,
the function's layers read-only at ``/opt`` when it has any (one unpacked
tree, or a merged tree of hardlinks: the same inodes, so the same page-cache
pages, in every sandbox), four device nodes, a private ``/tmp`` of bounded
size, and a fresh ``/proc`` of the sandbox's own pid namespace. No ``/sys``,
no host ``/etc``, no host ``/proc``.
"""

from __future__ import annotations

from runtime.jail.spec import SandboxSpec

DEVICES = ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom")


def build(spec: SandboxSpec) -> list[str]:
    args: list[str] = []
    for m in spec.mounts:
        args += ["-B" if m.writable else "-R", f"{m.src}:{m.dst}"]
    for dev in DEVICES:
        # Device nodes need a bind mount without MS_NODEV; nsjail's -B keeps
        # them usable and the node itself decides what writes do.
        args += ["-B", f"{dev}:{dev}"]
    args += ["-m", f"none:/tmp:tmpfs:size={spec.tmp_mb * 1024 * 1024},mode=1777"]
    args += ["-m", "none:/dev/shm:tmpfs:size=67108864,mode=1777"]
    args += ["-s", "/proc/self/fd:/dev/fd"]
    args += ["-D", spec.cwd]
    return args
