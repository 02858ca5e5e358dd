"""``SandboxSpec``: everything the jail needs to know about one environment.

The spec is plain data, built by the sandbox layer from a function's
configuration; ``compose.build`` is the only code that turns it into nsjail
arguments. Units are in the field names.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping, Sequence


@dataclasses.dataclass(frozen=True)
class Mount:
    """A bind mount. ``src`` on the host appears at ``dst`` inside."""

    src: Path
    dst: str
    writable: bool = False


@dataclasses.dataclass(frozen=True)
class Outbound:
    """One environment's address on the sandbox network."""

    iface: str      # host interface the macvlan hangs off
    address: str    # this environment's IPv4 address
    netmask: str
    gateway: str


@dataclasses.dataclass(frozen=True)
class CgroupPlan:
    """Where this environment's cgroups live.

    ``version`` is 1 or 2, or 0 when the host gives no usable cgroups (then
    memory is bounded by RLIMIT_AS only). ``parent`` is the environment's own
    directory relative to each controller's mount (v1) or to the unified
    mount (v2); the agent creates it. With ``join`` (v1, an nsjail that has
    --cgroup_procs) the sandbox joins that directory in every controller
    before it runs; otherwise nsjail creates a child directory inside it.
    """

    version: int
    parent: str = ""
    v1_mounts: Mapping[str, str] = dataclasses.field(default_factory=dict)
    v2_mount: str = "/sys/fs/cgroup"
    join: bool = False


@dataclasses.dataclass(frozen=True)
class SandboxSpec:
    env_id: str
    nsjail: Path
    # Command run inside the sandbox as its pid 1, and its environment.
    argv: Sequence[str]
    environ: Mapping[str, str]
    cwd: str = "/var/task"
    # Host uid/gid the sandbox runs as when the agent is root; ignored in
    # rootless mode, where the agent's own uid is mapped instead.
    uid: int = 65534
    gid: int = 65534
    rootless: bool = False
    # Read-only (unless Mount.writable) bind mounts, mounted in order.
    mounts: Sequence[Mount] = ()
    tmp_mb: int = 512
    memory_mb: int = 128
    pids_max: int = 1024
    nofile_max: int = 1024
    # CPU quota in milliseconds of CPU per wall-clock second (1000 = 1 core)
    # during invocations; 0 means no quota. The init phase runs with
    # ``init_cpu_ms_per_sec`` (at least one core) so cold starts stay fast.
    cpu_ms_per_sec: int = 0
    init_cpu_ms_per_sec: int = 0
    cgroups: CgroupPlan = CgroupPlan(version=0)
    # Loopback only when None; otherwise a macvlan on the operator's sandbox
    # network with this address (see netns.py).
    outbound: "Outbound | None" = None
    hostname: str = "sandbox"
    # File descriptors of the agent that the sandbox keeps (same numbers).
    pass_fds: Sequence[int] = ()
    # The control socket goes in as the sandbox's stdin (fd 0) rather than as
    # a passed fd (nsjail's once mode gives pid 1 its own stdin): for
    # bootstraps that can name no other inherited fd (the JVM).
    control_stdin: bool = False
