"""Control groups: memory, pids and CPU limits of one environment.

Layout (v1, one tree per controller; v2 the same under the unified mount):

    <mount>/runtime-agent/<agent>/                 one per agent (data dir)
    <mount>/runtime-agent/<agent>/<env_id>/        one per environment, owns the limits
    <mount>/runtime-agent/<agent>/<env_id>/NSJAIL.<pid>/   only with an nsjail that
                                                   lacks --cgroup_procs: holds the tasks

``<agent>`` is derived from the agent's data dir, so a restarted agent finds
(and sweeps) what its predecessor left, and two agents never touch each
other's environments.

The agent sets the limits on ``<env_id>`` itself. On v1 the sandbox joins
that directory in every controller before its first instruction (nsjail
--cgroup_procs, scripts/nsjail-cgroup-procs.patch): one write per
controller, cpuacct included. An nsjail without the option makes a
NSJAIL.<pid> child per controller instead, with a looser memory limit so
that the environment's own directory is the one that hits the limit, and
the agent moves the sandbox into cpuacct after the start. The directory
outlives the sandbox's processes, so the agent can still read after a death
whether memory ran out (``failcnt``/``oom_kill``) and how much was used at
peak. ``EnvCgroup.remove`` deletes every level, killing anything left (no
process outlives its sandbox).
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
CPU_PERIOD_US = 100_000
OOM_SLACK_BYTES = 2 * 1024 * 1024
V1_CONTROLLERS = ("memory", "pids", "cpu", "cpuacct")
V1_BASE = Path("/sys/fs/cgroup")
HOST_CPU_MS = (os.cpu_count() or 1) * 1000
# AWS Lambda's rule: 1,769 MB of memory buys one full vCPU.
MB_PER_VCPU = 1769


def cpu_ms_for_memory(memory_mb: int) -> int:
    """CPU quota proportional to memory, capped at the host's cores."""
    return max(1, min(memory_mb * 1000 // MB_PER_VCPU, HOST_CPU_MS))


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
        # v1: the sandbox joins its environment's directories itself (nsjail
        # --cgroup_procs), set by the host when its nsjail can.
        self.join = False
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
                              v1_mounts={c: str(self.base / c) for c in self.dirs}, join=self.join)
        if self.version == 2:
            return CgroupPlan(2, f"{self.rel}/{env_id}", v2_mount=str(self.base))
        return CgroupPlan(0)


class EnvCgroup:
    """One environment's cgroup directories (see the module docstring)."""

    def __init__(self, root: CgroupRoot, env_id: str):
        self.root = root
        self.dirs = {c: d / env_id for c, d in root.dirs.items()}
        # Counters read on every invocation stay open: pread beats open+read+close.
        self._fds: dict[str, int] = {}
        self._leaves: list[Path] = []   # nsjail's cpu leaf, once found (it lives as long as the sandbox)

    def _pread_int(self, controller: str, name: str) -> int:
        fd = self._fds.get(name)
        if fd is None:
            try:
                fd = self._fds[name] = os.open(self.dirs[controller] / name, os.O_RDONLY | os.O_CLOEXEC)
            except (OSError, KeyError):
                return 0
        try:
            return int(os.pread(fd, 64, 0) or 0)
        except (OSError, ValueError):
            return 0

    def create(self, memory_mb: int, pids_max: int, cpu_ms_per_sec: int) -> None:
        """Makes the directories with their limits; ``cpu_ms_per_sec`` 0 means no quota."""
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
        elif self.root.version == 2:
            d = self.dirs["unified"]
            _write(d / "memory.max", mem)
            try:
                _write(d / "memory.swap.max", "0")
            except OSError:
                pass
            _write(d / "pids.max", str(pids_max))
            _write(d / "cgroup.subtree_control", "+memory +pids +cpu")
        self.set_cpu(cpu_ms_per_sec)

    def set_memory(self, memory_mb: int) -> None:
        """Changes the limit of a live environment (stem cell specialisation)."""
        new = memory_mb * 1024 * 1024
        if self.root.version == 1:
            limit = self.dirs["memory"] / "memory.limit_in_bytes"
            memsw = self.dirs["memory"] / "memory.memsw.limit_in_bytes"
            # The kernel keeps memsw >= memory at every step: raise memsw
            # first, lower it last.
            raising = new > int(self._read("memory", "memory.limit_in_bytes") or 0)
            for path in ((memsw, limit) if raising else (limit, memsw)):
                try:
                    _write(path, str(new))
                except OSError:
                    if path == limit:
                        raise  # no swap accounting is fine; the memory limit is not optional
        elif self.root.version == 2:
            _write(self.dirs["unified"] / "memory.max", str(new))

    def cpu_leaves(self) -> list[Path]:
        """The v1 cpu directories holding the sandbox: the environment's own
        when it joined it, else nsjail's NSJAIL.<pid> directories under it,
        found once: scandir's entry types, no stat per file (~0.3 ms saved on
        the path that specialises a stem cell)."""
        if self.root.join:
            return [self.dirs["cpu"]] if "cpu" in self.dirs else []
        if not self._leaves and "cpu" in self.dirs:
            try:
                with os.scandir(self.dirs["cpu"]) as entries:
                    self._leaves = [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]
            except OSError:
                return []
        return self._leaves

    def set_cpu(self, ms_per_sec: int) -> None:
        """CPU quota in ms of CPU per second of wall time (1000 = one core); 0 lifts it.

        v1 sets it where the sandbox is (cpu_leaves): on nsjail's leaf, not
        its parent, since lowering a leaf is always allowed while a parent
        below its child's quota is refused (EINVAL). A joined directory has
        the kernel's default period, CPU_PERIOD_US; nsjail's leaf has 1 s.
        Each write walks every cpu cgroup of the host (tg_set_cfs_bandwidth)."""
        if self.root.version == 1:
            quota = str(ms_per_sec * CPU_PERIOD_US // 1000) if ms_per_sec else "-1"
            for leaf in self.cpu_leaves():
                _write(leaf / "cpu.cfs_quota_us", quota)
                if not self.root.join:
                    _write(leaf / "cpu.cfs_period_us", str(CPU_PERIOD_US))
        elif self.root.version == 2:
            quota = str(ms_per_sec * CPU_PERIOD_US // 1000) if ms_per_sec else "max"
            _write(self.dirs["unified"] / "cpu.max", f"{quota} {CPU_PERIOD_US}")

    def attach_all(self) -> int:
        """Moves every task of the environment into the v1 controller nsjail
        cannot join (cpuacct, for CPU-seconds); returns how many. Repeats
        until no new task appears, so a fork racing the move is caught too.
        A v1 migration takes milliseconds: call it off the event loop.
        Nothing to do when the sandbox joined cpuacct itself."""
        if self.root.version != 1 or self.root.join:
            return 0
        targets = [self.dirs[c] / "cgroup.procs" for c in ("cpuacct",) if c in self.dirs]
        moved: set[int] = set()
        for _ in range(10):
            pids = self._tasks("pids") - moved
            if not pids:
                break
            for pid in pids:
                for target in targets:
                    try:
                        _write(target, str(pid))
                    except OSError as exc:
                        if exc.errno not in (errno.ESRCH, errno.ENOENT):  # exited or torn down meanwhile
                            raise
            moved |= pids
        return len(moved)

    def _tasks(self, controller: str) -> set[int]:
        found: set[int] = set()
        for dirpath, _dirs, _files in os.walk(self.dirs[controller]):
            try:
                with open(os.path.join(dirpath, "cgroup.procs")) as f:
                    found.update(int(p) for p in f.read().split())
            except OSError:
                pass
        return found

    def cpu_usage_ns(self) -> int:
        if self.root.version == 1:
            return self._pread_int("cpuacct", "cpuacct.usage")
        for line in self._read("unified", "cpu.stat").splitlines():
            if line.startswith("usage_usec "):
                return int(line.split()[1]) * 1000
        return 0

    def limits(self) -> dict[str, int]:
        """The limits as the kernel holds them, for tests and introspection."""
        if self.root.version == 1:
            leaves = self.cpu_leaves()
            quota = int((leaves[0] / "cpu.cfs_quota_us").read_text()) if leaves else -1
            period = int((leaves[0] / "cpu.cfs_period_us").read_text()) if leaves else CPU_PERIOD_US
            return {"memory_bytes": int(self._read("memory", "memory.limit_in_bytes") or 0),
                    "pids_max": int(self._read("pids", "pids.max") or 0),
                    "cpu_ms_per_sec": quota * 1000 // period if quota > 0 else 0}
        mem = self._read("unified", "memory.max").strip()
        quota, _, period = self._read("unified", "cpu.max").strip().partition(" ")
        return {"memory_bytes": int(mem) if mem.isdigit() else 0,
                "pids_max": int(self._read("unified", "pids.max").strip() or 0),
                "cpu_ms_per_sec": int(quota) * 1000 // int(period) if quota.isdigit() else 0}

    def _read(self, controller: str, name: str) -> str:
        try:
            return (self.dirs[controller] / name).read_text()
        except (OSError, KeyError):
            return ""

    def memory_peak_bytes(self) -> int:
        if self.root.version == 1:
            return self._pread_int("memory", "memory.max_usage_in_bytes")
        return self._pread_int("unified", "memory.peak")

    def out_of_memory(self) -> bool:
        """Whether the kernel refused memory to this environment (hit its limit)."""
        if self.root.version == 1:
            oom = self._read("memory", "memory.oom_control")
            kills = next((int(l.split()[1]) for l in oom.splitlines() if l.startswith("oom_kill ")), 0)
            if kills > 0 or any(int(self._read("memory", f) or 0) > 0
                                for f in ("memory.failcnt", "memory.memsw.failcnt")):
                return True
            # Some kernels count neither for a v1 OOM kill; a peak at the limit
            # (within reclaim slack) together with the SIGKILL the caller saw
            # is then the evidence.
            limit = int(self._read("memory", "memory.limit_in_bytes") or 0)
            return limit > 0 and self.memory_peak_bytes() >= limit - OOM_SLACK_BYTES
        events = self._read("unified", "memory.events")
        return any(l.split()[0] in ("oom_kill", "max") and int(l.split()[1]) > 0
                   for l in events.splitlines() if l)

    def pids(self) -> set[int]:
        pids: set[int] = set()
        for controller in self.dirs:  # vanishing dirs are skipped by os.walk
            pids |= self._tasks(controller)
        return pids

    def remove(self, attempts: int = 50) -> None:
        """Kills what is left inside and removes the directories (idempotent).
        Between attempts it sleeps; the event loop passes ``attempts=1`` and
        retries later itself (EBUSY while the last tasks finish exiting)."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        for attempt in range(attempts):
            pids = self.pids()
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
            if attempt + 1 < attempts:
                time.sleep(0.002 * (attempt + 1))
        raise os_error(f"rmdir({list(self.dirs.values())})", err=errno.EBUSY)


def build(spec: SandboxSpec) -> list[str]:
    plan = spec.cgroups
    mem_bytes = spec.memory_mb * 1024 * 1024
    # nsjail's own limit is looser, so the environment's directory trips first.
    child_mem = str(mem_bytes * 2)
    if plan.version == 1 and plan.join:
        # The limits are on the environment's directories already (EnvCgroup.create):
        # one write per controller, and CPU is counted (cpuacct) from the first
        # instruction, instead of a new directory per controller with its own
        # limits, made by nsjail, removed at exit, and a later cpuacct migration.
        return [arg for c, mount in plan.v1_mounts.items()
                for arg in ("--cgroup_procs", f"{mount}/{plan.parent}/cgroup.procs")]
    if plan.version == 1:
        args = ["--cgroup_mem_max", child_mem, "--cgroup_mem_parent", plan.parent,
                "--cgroup_mem_mount", plan.v1_mounts["memory"],
                "--cgroup_pids_max", str(spec.pids_max), "--cgroup_pids_parent", plan.parent,
                "--cgroup_pids_mount", plan.v1_mounts["pids"]]
        if "cpu" in plan.v1_mounts:
            # nsjail puts the sandbox into the cpu controller at clone time (a
            # later migration costs milliseconds on v1) with the init quota;
            # EnvCgroup.set_cpu lowers that leaf's quota once init is done.
            args += ["--cgroup_cpu_ms_per_sec", str(spec.init_cpu_ms_per_sec or HOST_CPU_MS),
                     "--cgroup_cpu_parent", plan.parent, "--cgroup_cpu_mount", plan.v1_mounts["cpu"]]
        return args
    if plan.version == 2:
        return ["--use_cgroupv2", "--cgroupv2_mount", f"{plan.v2_mount}/{plan.parent}",
                "--cgroup_mem_max", child_mem, "--cgroup_pids_max", str(spec.pids_max)]
    return []
