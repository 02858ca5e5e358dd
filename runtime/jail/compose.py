"""The one place that turns a ``SandboxSpec`` into an nsjail command line.

Each part of the jail is built by its own module, in a fixed order:

1. users    who the process is (uid/gid, user namespace or not)
2. netns    network namespace and hostname
3. mounts   the file system the process sees
4. cgroups  memory, pids and CPU limits
5. rlimits  per-process limits
6. seccomp  the system-call filter, applied last, just before execve

Every environment is a fresh nsjail process in MODE_STANDALONE_ONCE: pid,
mount, ipc, uts, network (and, rootless, user) namespaces; when its pid 1
exits, the namespace and every process in it die with it.
"""

from __future__ import annotations

from runtime.jail import cgroups, mounts, netns, rlimits, seccomp, users
from runtime.jail.spec import SandboxSpec


def build(spec: SandboxSpec) -> list[str]:
    # -q: warnings and errors only; they land in the function's log (stderr),
    # where a sandbox that failed to start says why.
    args = [str(spec.nsjail), "-Mo", "-q", "--time_limit", "0"]
    args += users.build(spec)
    args += netns.build(spec)
    args += mounts.build(spec)
    args += cgroups.build(spec)
    args += rlimits.build(spec)
    for fd in spec.pass_fds:
        args += ["--pass_fd", str(fd)]
    # Names only: nsjail copies the values from its own environment, so they
    # never appear in the host's process list (/proc/PID/cmdline).
    for key in spec.environ:
        args += ["-E", key]
    args += seccomp.build(spec)
    args += ["--", *spec.argv]
    return args
