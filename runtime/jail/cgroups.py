"""Control groups: memory, pids and CPU limits of one environment.

Layout (v1, one tree per controller; v2 the same under the unified mount):

    <mount>/runtime-agent/<agent>/                 one per agent (data dir)
    <mount>/runtime-agent/<agent>/<env_id>/        one per environment, owns the limits
    <mount>/runtime-agent/<agent>/<env_id>/NSJAIL.<pid>/   made by nsjail, holds the tasks

``<agent>`` is derived from the agent's data dir, so a restarted agent finds
(and sweeps) what its predecessor left, and two agents never touch each
other's environments.

The agent sets the limits on ``<env_id>`` itself and gives nsjail a looser
limit for its child, so the environment's own directory is the one that hits
the limit. That directory outlives the sandbox's processes, so the agent can
still read after a death whether memory ran out (``failcnt``/``oom_kill``)
and how much was used at peak. ``EnvCgroup.remove`` deletes both levels,
killing anything left (no process outlives its sandbox).
"""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path

from runtime.errors import os_error
from runtime.jail.spec import CgroupPlan, SandboxSpec

ROOT_NAME = "runtime-agent"
V1_CONTROLLERS = ("memory", "pids", "cpu")
V1_BASE = Path("/sys/fs/cgroup")


def detect(base: Path = V1_BASE) -> int:
    """2 on a pure v2 host with the memory controller, 1 on v1 or hybrid, 0 if unusable."""
    if (base / "cgroup.controllers").exists():
        ctrls = (base / "cgroup.controllers").read_text().split()
        return 2 if "memory" in ctrls and "pids" in ctrls else 0
    if all((base / c / "cgroup.procs").exists() for c in ("memory", "pids")):
        return 1
    return 0


def _write(path: Path, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as exc:
        raise os_error(f"write({path}, {value!r})", exc) from exc


def _mkdir(path: Path) -> None:
    try:
        path.mkdir(exist_ok=True)
    except OSError as exc:
        raise os_error(f"mkdir({path})", exc) from exc


class CgroupRoot:
    """The agent's own subtree under each controller."""

    def __init__(self, version: int, agent_id: str, base: Path = V1_BASE):
        self.version = version
        self.base = base
        self.rel = f"{ROOT_NAME}/{agent_id}"
        if version == 1:
            self.dirs = {c: base / c / self.rel for c in V1_CONTROLLERS if (base / c).is_dir()}
        elif version == 2:
            self.dirs = {"unified": base / self.rel}
        else:
            self.dirs = {}

    def setup(self) -> None:
        for d in self.dirs.values():
            _mkdir(d.parent)
            _mkdir(d)
        if self.version == 2:
            _write(self.base / "cgroup.subtree_control", "+memory +pids +cpu")
            _write(self.dirs["unified"].parent / "cgroup.subtree_control", "+memory +pids +cpu")
            _write(self.dirs["unified"] / "cgroup.subtree_control", "+memory +pids +cpu")

    def sweep(self) -> int:
        """Kills and removes environments left by an earlier agent; returns how many."""
        names: set[str] = set()
        for d in self.dirs.values():
            names.update(p.name for p in d.iterdir() if p.is_dir())
        for name in names:
            EnvCgroup(self, name).remove()
        return len(names)

    def teardown(self) -> None:
        """Sweeps what is left and removes the agent's own directories."""
        self.sweep()
        for d in self.dirs.values():
            try:
                d.rmdir()
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise os_error(f"rmdir({d})", exc) from exc

    def plan(self, env_id: str) -> CgroupPlan:
        if self.version == 1:
            return CgroupPlan(1, f"{self.rel}/{env_id}",
                              v1_mounts={c: str(self.base / c) for c in self.dirs})
        if self.version == 2:
            return CgroupPlan(2, f"{self.rel}/{env_id}", v2_mount=str(self.base))
        return CgroupPlan(0)


class EnvCgroup:
    """One environment's cgroup directories (see the module docstring)."""

    def __init__(self, root: CgroupRoot, env_id: str):
        self.root = root
        self.dirs = {c: d / env_id for c, d in root.dirs.items()}

    def create(self, memory_mb: int, pids_max: int, cpu_ms_per_sec: int) -> None:
        mem = str(memory_mb * 1024 * 1024)
        for d in self.dirs.values():
            _mkdir(d)
        if self.root.version == 1:
            _write(self.dirs["memory"] / "memory.limit_in_bytes", mem)
            try:  # no swap beyond the limit, where swap accounting exists
                _write(self.dirs["memory"] / "memory.memsw.limit_in_bytes", mem)
            except OSError:
                pass
            _write(self.dirs["pids"] / "pids.max", str(pids_max))
            if cpu_ms_per_sec and "cpu" in self.dirs:
                _write(self.dirs["cpu"] / "cpu.cfs_period_us", "100000")
                _write(self.dirs["cpu"] / "cpu.cfs_quota_us", str(cpu_ms_per_sec * 100))
        elif self.root.version == 2:
            d = self.dirs["unified"]
            _write(d / "memory.max", mem)
            _write(d / "memory.swap.max", "0")
            _write(d / "pids.max", str(pids_max))
            if cpu_ms_per_sec:
                _write(d / "cpu.max", f"{cpu_ms_per_sec * 100} 100000")
            _write(d / "cgroup.subtree_control", "+memory +pids +cpu")

    def _read(self, controller: str, name: str) -> str:
        try:
            return (self.dirs[controller] / name).read_text()
        except (OSError, KeyError):
            return ""

    def memory_peak_bytes(self) -> int:
        if self.root.version == 1:
            return int(self._read("memory", "memory.max_usage_in_bytes") or 0)
        return int(self._read("unified", "memory.peak") or 0)

    def out_of_memory(self) -> bool:
        """Whether the kernel refused memory to this environment (hit its limit)."""
        if self.root.version == 1:
            oom = self._read("memory", "memory.oom_control")
            kills = next((int(l.split()[1]) for l in oom.splitlines() if l.startswith("oom_kill ")), 0)
            return kills > 0 or int(self._read("memory", "memory.failcnt") or 0) > 0
        events = self._read("unified", "memory.events")
        return any(l.split()[0] in ("oom_kill", "max") and int(l.split()[1]) > 0
                   for l in events.splitlines() if l)

    def _pids(self) -> set[int]:
        pids: set[int] = set()
        for d in self.dirs.values():
            for dirpath, _dirs, _files in os.walk(d):  # vanishing dirs are skipped
                try:
                    with open(os.path.join(dirpath, "cgroup.procs")) as f:
                        pids.update(int(p) for p in f.read().split())
                except OSError:
                    pass
        return pids

    def remove(self) -> None:
        """Kills what is left inside and removes the directories (idempotent)."""
        for attempt in range(50):
            pids = self._pids()
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            busy = False
            for d in self.dirs.values():
                subs = [Path(dirpath) for dirpath, _dirs, _files in os.walk(d, topdown=False)]
                for sub in subs:  # deepest first
                    try:
                        sub.rmdir()
                    except FileNotFoundError:
                        pass
                    except OSError as exc:
                        if exc.errno != errno.EBUSY:
                            raise os_error(f"rmdir({sub})", exc) from exc
                        busy = True
            if not busy:
                return
            time.sleep(0.002 * (attempt + 1))
        raise os_error(f"rmdir({list(self.dirs.values())})", err=errno.EBUSY)


def build(spec: SandboxSpec) -> list[str]:
    plan = spec.cgroups
    mem_bytes = spec.memory_mb * 1024 * 1024
    # nsjail's own limit is looser, so the environment's directory trips first.
    child_mem = str(mem_bytes * 2)
    if plan.version == 1:
        args = ["--cgroup_mem_max", child_mem, "--cgroup_mem_parent", plan.parent,
                "--cgroup_mem_mount", plan.v1_mounts["memory"],
                "--cgroup_pids_max", str(spec.pids_max), "--cgroup_pids_parent", plan.parent,
                "--cgroup_pids_mount", plan.v1_mounts["pids"]]
        return args
    if plan.version == 2:
        return ["--use_cgroupv2", "--cgroupv2_mount", f"{plan.v2_mount}/{plan.parent}",
                "--cgroup_mem_max", child_mem, "--cgroup_pids_max", str(spec.pids_max)]
    return []
