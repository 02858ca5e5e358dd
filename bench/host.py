"""The machine a run happened on, and how busy others kept it meanwhile.

Benchmarks on a shared host are only as good as what they say about the
host: ``machine_info`` names the hardware, kernel and code (commit, whether
the installed package is the source tree's); ``CpuMeter`` measures, over a
section, how much CPU went to processes that are *not* this suite (the
benchmark process, its children, the echo server, the agent and its
sandboxes), which is what turns a puzzling figure into an explained one.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except OSError:
        return ""


def progress(msg: str) -> None:
    """One line of progress on stderr, time-stamped (every section uses it)."""
    import sys

    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def installed_matches_source() -> str:
    """Which code the installed ``runtime`` package (non-editable) is: the
    working tree's, the last commit's, or neither. A benchmark of stale code
    is worse than no benchmark, and others may be editing the tree meanwhile."""
    import runtime

    installed = Path(runtime.__file__).parent
    if installed == ROOT / "runtime":
        return "yes (running from the source tree)"
    vs_tree, vs_head = [], []
    # runtime/ is installed as is; setup.py copies bootstraps/ to runtime/_bootstraps,
    # less what only builds them (Java's build script).
    build_only = {ROOT / "bootstraps" / "java" / "build.py"}
    for src_root, dst_root in ((ROOT / "runtime", installed), (ROOT / "bootstraps", installed / "_bootstraps")):
        for src in sorted(set(src_root.rglob("*.py")) - build_only):
            dst = dst_root / src.relative_to(src_root)
            got = dst.read_bytes() if dst.exists() else None
            rel = str(src.relative_to(ROOT))
            if got != src.read_bytes():
                vs_tree.append(rel)
                head = subprocess.run(["git", "-C", str(ROOT), "show", f"HEAD:{rel}"], capture_output=True)
                if head.returncode != 0 or head.stdout != got:
                    vs_head.append(rel)
    if not vs_tree:
        return "yes (working tree)"
    if not vs_head:
        return (f"matches the commit, not the working tree ({len(vs_tree)} uncommitted file(s): "
                f"{', '.join(vs_tree[:4])})")
    return (f"NO: {len(vs_head)} file(s) match neither the tree nor the commit ({', '.join(vs_head[:4])}); "
            "run `.venv/bin/pip install -q .`")


def machine_info() -> dict[str, str]:
    import grpc

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor() or "unknown")
    mem_kb = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    os_name = next((line.split("=", 1)[1].strip().strip('"') for line in open("/etc/os-release")
                    if line.startswith("PRETTY_NAME=")), "unknown")
    dirty = [line for line in _git("status", "--porcelain").splitlines() if line]
    commit = _git("rev-parse", "HEAD") or "unknown"
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "CPU": cpu,
        "cores": f"{os.cpu_count()} logical, {len(os.sched_getaffinity(0))} usable by this process",
        "RAM": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "OS": os_name,
        "Python / grpcio": f"{platform.python_version()} / {grpc.__version__}",
        "git commit": f"{commit[:12]} ({_git('log', '-1', '--format=%s')[:70]})",
        "working tree": f"{len(dirty)} changed or untracked path(s)" if dirty else "clean",
        "installed package matches source": installed_matches_source(),
        "load average (start)": loadavg(),
    }


# -- CPU used by others ---------------------------------------------------------------
def _host_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole host since boot."""
    fields = [int(x) for x in open("/proc/stat").readline().split()[1:9]]
    return sum(fields) - fields[3] - fields[4], sum(fields)  # idle and iowait are not busy


def _own_ticks(root: int) -> int:
    """CPU ticks of ``root`` and every descendant, live or reaped.

    Summing utime+stime+cutime+cstime over the live processes of the tree
    counts each process exactly once: a dead one was added to the cutime of
    whoever waited for it (nsjail waits for its sandbox, the agent for
    nsjail, this process for its children), and that waiter is in the tree.
    """
    parent: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # exited while we looked
        rest = stat[stat.rindex(")") + 2:].split()
        pid = int(entry.name)
        parent[pid] = int(rest[1])
        ticks[pid] = sum(int(x) for x in rest[11:15])
    total = 0
    for pid, t in ticks.items():
        p = pid
        while p > 1 and p != root:
            p = parent.get(p, 0)
        if p == root:
            total += t
    return total


class CpuMeter:
    """CPU used by everything outside this suite's process tree, over an interval.

    Loopback networking and cgroup work done by kernel threads on the suite's
    behalf counts as "others", so a quiet host still shows a few percent.
    """

    def __init__(self):
        self.root = os.getpid()
        self.start()

    def start(self) -> None:
        self._host = _host_ticks()
        self._own = _own_ticks(self.root)

    def others(self) -> float:
        """Fraction of all the host's CPUs used by others since ``start``."""
        busy, total = _host_ticks()
        own = _own_ticks(self.root)
        d_busy, d_total = busy - self._host[0], total - self._host[1]
        return max(0.0, (d_busy - (own - self._own)) / max(1, d_total))


def cpu_ns(pid: int) -> int:
    """CPU time of every thread of a live process, in ns (schedstat: exact, unlike ticks)."""
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
    except OSError:
        pass
    return total


def touch_cost_us(chunks: int = 8, mib: int = 512) -> tuple[list[float], float]:
    """CPU µs per 4 KiB page to fault in and fill anonymous memory: for each
    of ``chunks`` new chunks of ``mib`` MiB, all kept, then for ``mib`` MiB
    again right after freeing them. On a virtual machine whose hypervisor
    populates guest memory lazily and takes free pages back (free page
    reporting), memory the guest has not used lately costs a trip through
    the hypervisor per page, while memory just freed does not: the first
    chunks, which reuse memory freed by earlier work, cost less than the
    last ones."""
    size = mib << 20
    pages = size // 4096

    def fill() -> tuple[mmap.mmap, float]:
        buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        view = ctypes.c_char.from_buffer(buf)
        t0 = time.process_time_ns()
        ctypes.memset(ctypes.addressof(view), 1, size)
        cost = (time.process_time_ns() - t0) / pages / 1000
        del view  # releases the export, so the map can be closed
        return buf, cost

    kept, costs = [], []
    for _ in range(chunks):
        buf, cost = fill()
        kept.append(buf)
        costs.append(cost)
    for buf in kept:
        buf.close()
    buf, again = fill()
    buf.close()
    return costs, again


# The other end of wakeup_rtt_us: answers every message on its socket until EOF.
_ECHO_CHILD = """
import os, sys
fd, cpu = int(sys.argv[1]), int(sys.argv[2])
os.sched_setaffinity(0, {cpu})
while True:
    data = os.read(fd, 64)
    if not data:
        break
    os.write(fd, data)
"""


def wakeup_rtt_us(n: int = 3000, warmup: int = 300) -> dict[str, float]:
    """Median round trip in µs of one byte over a Unix socketpair between two
    processes (this one and a child), the smallest exchange a warm Invoke
    makes with its sandbox, in three placements: on two CPUs, both sleeping
    between messages ("two CPUs"); on two CPUs, this side polling instead of
    sleeping, as the agent reads a reply at concurrency 1 ("two CPUs, caller
    polling"); and both on one CPU ("one CPU"). Waking a process on another
    CPU is what the first two pay; on a virtual machine that is an
    interrupt through the hypervisor."""
    before = os.sched_getaffinity(0)
    cpus = sorted(before)
    placements = {"one CPU": (cpus[0], cpus[0], False)}
    if len(cpus) > 1:
        placements = {"two CPUs": (cpus[0], cpus[1], False), "two CPUs, caller polling": (cpus[0], cpus[1], True),
                      **placements}
    out: dict[str, float] = {}
    try:
        for name, (mine, theirs, polling) in placements.items():
            a, b = socket.socketpair()
            child = subprocess.Popen([sys.executable, "-c", _ECHO_CHILD, str(b.fileno()), str(theirs)],
                                     pass_fds=(b.fileno(),), stdin=subprocess.DEVNULL)
            b.close()
            os.sched_setaffinity(0, {mine})
            a.setblocking(not polling)
            times = []
            try:
                for _ in range(warmup + n):
                    t0 = time.perf_counter_ns()
                    a.send(b"x")
                    while True:
                        try:
                            a.recv(64)
                            break
                        except BlockingIOError:
                            pass
                    times.append(time.perf_counter_ns() - t0)
            finally:
                a.close()
                child.wait(10)
            out[name] = statistics.median(times[warmup:]) / 1e3
    finally:
        os.sched_setaffinity(0, before)
    return out


def host_busy(seconds: float = 1.0) -> float:
    """Fraction of the host's CPUs used by others over ``seconds``, now."""
    meter = CpuMeter()
    time.sleep(seconds)
    return meter.others()


def wait_for_idle(limit_s: float, busy: float = 0.25, quiet_samples: int = 3, sample_s: float = 2.0) -> float:
    """Returns when others have used at most ``busy`` of the host for
    ``quiet_samples`` samples of ``sample_s`` in a row, or after ``limit_s``
    anyway; returns the seconds waited. On a shared machine a neighbour's test
    run can double every figure, and a single quiet second is often a lull.
    Also lets the kernel finish tearing down a benchmark's own sandboxes
    (network namespaces, cgroups: kernel threads, counted as others)."""
    t0 = time.monotonic()
    deadline = t0 + limit_s
    quiet = 0
    while quiet < quiet_samples and time.monotonic() < deadline:
        used = host_busy(sample_s)
        quiet = quiet + 1 if used <= busy else 0
        if quiet == 0:
            progress(f"others use {used:.0%} of the host; waiting up to {deadline - time.monotonic():.0f} s more")
    return time.monotonic() - t0
