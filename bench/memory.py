"""What idle environments cost in memory: measured per environment, and
simulated across keep-alive policies.

memory     K idle warm environments of a no-op Python function (K concurrent
           sleeping Invokes, then idle; keep-alive 1 h). Measured from /proc:
           (a) the language runtime itself: RSS and PSS of each bootstrap (the
               sandbox's pid 1, the nsjail supervisor's child);
           (b) what the agent keeps besides: each nsjail supervisor's PSS, plus
               the agent's own RSS growth per environment.
           PSS (smaps_rollup) splits each shared page among the processes
           mapping it, so PSS summed over processes is their real footprint;
           RSS counts shared pages in full in every process.
keepalive  bench/keepalive_sim.py's replayed trace: cold-start % against idle
           GB-s for each policy (the simulator's own functions, imported).
"""

from __future__ import annotations

import concurrent.futures
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

from host import progress
from report import Section, Table, TargetCheck
import workloads  # first: it imports the installed runtime package (keepalive_sim then reuses it)

_path = list(sys.path)
import keepalive_sim  # noqa: E402
# keepalive_sim puts the source tree first on sys.path; spawned client processes
# inherit sys.path and would then import the tree's runtime (no generated code).
sys.path[:] = _path

OVERHEAD_GOAL_MIB = 5.0      # Firecracker's published per-microVM overhead
SLEEP_SOURCE = "import time\n\ndef handler(e, c):\n    time.sleep(e.get('sleep', 0))\n    return None\n"
ROLLUP = ("Rss", "Pss", "Pss_Anon", "Pss_File", "Private_Clean", "Private_Dirty")
KERNEL = ("Slab", "PageTables", "KernelStack")


def rollup(pid: int) -> dict[str, int]:
    """/proc/<pid>/smaps_rollup in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        out[key] = int(value.split()[0])
    return out


def meminfo() -> dict[str, int]:
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, value = line.split(":", 1)
        out[key] = int(value.split()[0])
    return out


def cgroup_memory(pid: int) -> tuple[int, int] | None:
    """(memory.usage, kmem usage) in KiB of pid's memory cgroup (v1), or (memory.current, 0) on v2."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            d = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            kmem = d / "memory.kmem.usage_in_bytes"
            return (int((d / "memory.usage_in_bytes").read_text()) // 1024,
                    int(kmem.read_text()) // 1024 if kmem.exists() else 0)
        if controllers == "" and path != "/":
            d = Path("/sys/fs/cgroup") / path.lstrip("/")
            if (d / "memory.current").exists():
                return int((d / "memory.current").read_text()) // 1024, 0
    return None


def mib(kib: float) -> str:
    return f"{kib / 1024:.2f}"


def section_memory(ctx) -> Section:
    k = ctx.cfg.idle_envs
    agent = workloads.AgentUnderTest(("--keep-alive", "3600")).start()
    try:
        agent.deploy("idle-mem", SLEEP_SOURCE)
        agent.client.invoke("idle-mem")   # one environment: the agent's one-time costs are paid before "before"
        time.sleep(1.0)
        pid = agent.proc.proc.pid
        before, host_before = rollup(pid), meminfo()
        progress(f"memory: {k} concurrent sleeping Invokes, then idle")
        with concurrent.futures.ThreadPoolExecutor(k) as pool:
            kinds = Counter(workloads.START_KINDS.get(r.start_kind, "?") for r in pool.map(
                lambda _: agent.client.invoke("idle-mem", {"sleep": 0.5}), range(k)))
        time.sleep(2.0)                   # idle: reads settle, log buffers flush
        boxes = agent.sandboxes()
        if len(boxes) != k:
            raise RuntimeError(f"expected {k} idle environments, found {len(boxes)}")
        nsjail = [rollup(n) for n, _ in boxes]
        boot = [rollup(kids[0]) for _, kids in boxes]
        cg = [cgroup_memory(kids[0]) for _, kids in boxes]
        after, host_after = rollup(pid), meminfo()
        cleanup = agent.stop_checked()
    except BaseException:
        agent.stop()
        raise
    new = k - 1
    agent_growth = {key: (after[key] - before[key]) / new for key in ("Rss", "Pss")}
    med = {name: {key: statistics.median(r.get(key, 0) for r in rows) for key in ROLLUP}
           for name, rows in (("bootstrap", boot), ("nsjail", nsjail))}
    overhead = med["nsjail"]["Pss"] + max(0.0, agent_growth["Rss"])
    kernel = sum(host_after[key] - host_before[key] for key in KERNEL) / new
    cg_usage = [c for c in cg if c]
    rows = []
    for name, label in (("bootstrap", "(a) language runtime: bootstrap (python3.11, sandbox pid 1)"),
                        ("nsjail", "(b) nsjail supervisor")):
        m = med[name]
        rows.append([label, mib(m["Rss"]), mib(m["Pss"]), mib(m["Pss_Anon"]), mib(m["Pss_File"]),
                     mib(m["Private_Clean"] + m["Private_Dirty"])])
    rows.append(["(b) agent process, growth per environment", mib(agent_growth["Rss"]), mib(agent_growth["Pss"]),
                 "", "", ""])
    totals = [["(a) language runtime (bootstrap PSS)", mib(med["bootstrap"]["Pss"])],
              ["(b) per-environment overhead: nsjail PSS + agent RSS growth", mib(overhead)],
              ["(a) + (b)", mib(med["bootstrap"]["Pss"] + overhead)]]
    if cg_usage:
        totals.append(["environment's memory cgroup usage (what its limit counts), median",
                       mib(statistics.median(c[0] for c in cg_usage))
                       + (f" (of which kernel {mib(statistics.median(c[1] for c in cg_usage))})"
                          if any(c[1] for c in cg_usage) else "")])
    totals.append(["host kernel memory (Slab + PageTables + KernelStack) growth per environment", mib(kernel)])
    notes = [
        f"A fresh agent (`--keep-alive 3600`, no stem cells), a no-op Python 3.11 function (128 MB). One Invoke "
        f"first (1 environment, the agent's one-time costs paid), then 'before'; then {k} concurrent Invokes "
        f"sleeping 0.5 s (start kinds: {', '.join(f'{a} {b}' for a, b in sorted(kinds.items()))}), leaving {k} "
        f"idle environments; after 2 s idle, 'after'. Agent growth is (after − before) / {new} (the new "
        "environments).",
        "Per-process rows are the median over the environments, from /proc/<pid>/smaps_rollup; the bootstrap "
        "is found as the child of each nsjail (/proc/<nsjail>/task/<tid>/children). 'private' = Private_Clean + "
        "Private_Dirty: memory only that process maps (its USS).",
        f"The target counts (b): nsjail PSS {mib(med['nsjail']['Pss'])} MiB + agent RSS growth "
        f"{mib(agent_growth['Rss'])} MiB. Kernel memory per sandbox (page tables, namespaces, cgroups) is not "
        "in any PSS; the cgroup row (v1 kmem) and the last row (the host's /proc/meminfo, which other tenants "
        "of a shared host also move: indicative only) show it.",
        cleanup + ".",
    ]
    target = TargetCheck("Memory overhead per idle environment beyond the language runtime",
                         f"≤ {OVERHEAD_GOAL_MIB:g} MiB (Firecracker)", f"{mib(overhead)} MiB (runtime itself: "
                         f"{mib(med['bootstrap']['Pss'])} MiB PSS)", overhead / 1024 <= OVERHEAD_GOAL_MIB)
    return Section(
        "memory", f"Memory per idle warm environment ({k} environments)", notes,
        [Table(["process", "RSS MiB", "PSS MiB", "PSS anon MiB", "PSS file MiB", "private MiB"], rows,
               f"Per environment, median of {k}."),
         Table(["per environment", "MiB"], totals)],
        [target],
        {"environments": k, "bootstrap": med["bootstrap"], "nsjail": med["nsjail"], "agent_growth_kib": agent_growth,
         "overhead_mib": overhead / 1024, "runtime_pss_mib": med["bootstrap"]["Pss"] / 1024,
         "kernel_growth_kib": kernel,
         "cgroup_usage_kib": statistics.median(c[0] for c in cg_usage) if cg_usage else None})


# -- keep-alive policies (simulated) -------------------------------------------------
def section_keepalive(ctx) -> Section:
    seed, hours = 1, 24.0
    horizon = hours * keepalive_sim.HOUR
    functions = keepalive_sim.make_trace(seed, horizon)
    progress(f"keep-alive: replaying {hours:g} simulated hours for each policy")
    runs = [(label, keepalive_sim.by_pattern(functions, keepalive_sim.simulate(policy, functions, horizon)))
            for label, policy in keepalive_sim.policies()]
    rows, per_pattern, data = [], [], {}
    for label, tally in runs:
        a = tally["all"]
        rows.append([label, f"{a.cold_pct:.2f}", f"{a.cold} / {a.calls}", f"{a.scale_out}", f"{a.idle_gb_s:,.0f}",
                     f"{a.prewarm_loads} ({a.prewarm_hits})"])
        per_pattern.append([label] + [f"{tally[p].cold_pct:.1f} / {tally[p].idle_gb_s:,.0f}"
                                      for p in keepalive_sim.PATTERNS])
        data[label] = {p: {"cold_pct": t.cold_pct, "cold": t.cold, "calls": t.calls, "idle_gb_s": t.idle_gb_s,
                           "prewarm_loads": t.prewarm_loads} for p, t in tally.items()}
    fixed = dict(runs)["fixed 10 min"]["all"]
    hybrid_label = next(label for label, _ in runs if label.startswith("hybrid (paper"))
    hybrid = dict(runs)[hybrid_label]["all"]
    met = hybrid.cold <= fixed.cold and hybrid.idle_gb_s <= fixed.idle_gb_s
    counts = Counter(f.pattern for f in functions)
    notes = [
        f"bench/keepalive_sim.py, seed {seed}, {hours:g} simulated hours: "
        + ", ".join(f"{p} {counts[p]} functions" for p in keepalive_sim.PATTERNS)
        + f", {sum(len(f.calls) for f in functions)} calls. The policies are the agent's own classes "
        "(runtime.core.keepalive), driven as the invoker drives them. Deterministic: no machine in it.",
        "Cold % = calls that found no loaded environment; idle GB-s = memory × time loaded but idle; pre-warm "
        "loads = environments started ahead of a predicted call (used ones in brackets), a CPU cost the cold % "
        "does not show. `python bench/keepalive_sim.py` prints the full report with per-function rows.",
        "Target (the reason the hybrid policy exists, after Shahrad et al., ATC 2020): with the paper's "
        "parameters it has no more cold starts than a fixed 10-minute keep-alive and no more idle memory.",
    ]
    target = TargetCheck(f"Keep-alive: {hybrid_label} vs fixed 10 min (simulated)",
                         "≤ cold starts and ≤ idle GB-s",
                         f"{hybrid.cold} vs {fixed.cold} cold starts, {hybrid.idle_gb_s:,.0f} vs "
                         f"{fixed.idle_gb_s:,.0f} GB-s ({hybrid.idle_gb_s / fixed.idle_gb_s:.0%})", met)
    return Section(
        "keepalive", "Keep-alive policies (simulated trace)", notes,
        [Table(["policy", "cold %", "cold starts", "of which scale-out", "idle GB-s", "pre-warm loads (used)"],
               rows, "All functions."),
         Table(["policy"] + list(keepalive_sim.PATTERNS), per_pattern, "Per pattern: cold % / idle GB-s.")],
        [target], {"seed": seed, "hours": hours, "policies": data})
