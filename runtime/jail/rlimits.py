"""Per-process resource limits (setrlimit) inside the sandbox.

These back the cgroups up and bound what cgroups do not: file size, open
files, core dumps. RLIMIT_AS bounds memory only in rootless mode without
cgroups, since it breaks runtimes that reserve large address space (JVM).
RLIMIT_CPU is unlimited because an environment lives across invocations;
the agent enforces each invocation's timeout itself.
"""

from __future__ import annotations

from runtime.jail.spec import SandboxSpec


def build(spec: SandboxSpec) -> list[str]:
    address_space = "inf" if spec.cgroups.version else str(spec.memory_mb)
    return [
        "--rlimit_as", address_space,
        "--rlimit_cpu", "inf",
        "--rlimit_fsize", str(spec.tmp_mb),
        "--rlimit_nofile", str(spec.nofile_max),
        # Rootless: every environment shares the agent's uid, whose process
        # count RLIMIT_NPROC measures, and an unprivileged nsjail may not
        # raise it: keep the host's hard limit.
        "--rlimit_nproc", "max" if spec.rootless else str(spec.pids_max),
        "--rlimit_core", "0",
        "--rlimit_stack", "8",
    ]
