"""Every runtime side by side: cold, prewarmed and warm Invoke of a no-op
function in Python, Node.js, Java and a custom runtime (``provided``, the C
example in examples/custom-runtime-c), all on one agent in one run.

The agent runs with ``--stem-cells 1``: one stem cell per runtime that can
take one (Python, Node.js, the Runtime API relay). Per runtime two functions:
``rt-<x>-pw`` fits a stem cell (its first Invoke after a configuration change
is PREWARMED), ``rt-<x>-cold`` does not (/tmp 1024 MB, so it starts COLD).
Cold and prewarmed samples of every runtime take turns; each waits until the
retired environment has gone and every stem cell is back. Warm Invokes of
the ``-pw`` functions are then timed in alternating blocks, so the warm
ratios against Python hold on a noisy host. Across the warm phase the CPU
time of every process inside the sandboxes is read (schedstat), giving the
CPU each runtime spends per warm Invoke inside its function's quota; and the
memory of each live Runtime API relay and its nsjail, the custom runtime's
per-environment overhead.

A runtime without stem cells (Java) has no prewarmed row; its prewarmed
target is then checked against the first Invoke of a provisioned
environment, which is what such a runtime offers instead, and says so.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import shutil
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import host
import loadgen
import workloads
from host import progress
from loadgen import Summary
from memory import OVERHEAD_GOAL_MIB, mib, rollup
from report import SUMMARY_HEADER, Section, Table, TargetCheck, ms, summary_row
from stemcells import QUIET_S, SETTLE_S, StemPool

from framework.agent import make_zip
from framework.examples import c_runtime_bootstrap
from framework.procfs import children
from runtime.v1 import functions_pb2

STEM_CELLS = 1
SAMPLES_CAP = 60          # per runtime and start kind
WARM_RATIO_GOAL = 1.5     # warm Invoke of any runtime vs Python's
PREWARM_GOALS_MS = {"node": 10.0, "java": 30.0}
JAVA_NOOP = """
package bench;
public class Noop {
    public Object handleRequest(Object event) { return null; }
}
"""


@dataclasses.dataclass
class Subject:
    family: str
    runtime: str
    handler: str
    code: bytes
    stem: bool = True     # the runtime can use a stem cell
    memory_mb: int = 128


def _c_example() -> bytes | None:
    """The C example's bootstrap, zipped as a provided function."""
    bootstrap = c_runtime_bootstrap()
    return None if bootstrap is None else make_zip({"bootstrap": bootstrap}, {"bootstrap": 0o755})


def _java_noop() -> bytes | None:
    javac = shutil.which("javac")
    if javac is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "Noop.java").write_text(JAVA_NOOP)
        subprocess.run([javac, "--release", "11", "-d", tmp, str(Path(tmp) / "Noop.java")], check=True,
                       capture_output=True)
        return make_zip({"bench/Noop.class": (Path(tmp) / "bench" / "Noop.class").read_bytes()})


def subjects(available: list[str]) -> list[Subject]:
    out = [Subject("python", workloads.PYTHON_RUNTIME, "app.handler", make_zip({"app.py": workloads.NOOP_SOURCE}))]
    node = sorted(r for r in available if r.startswith("nodejs"))
    if node:
        out.append(Subject("node", node[-1], "app.handler",
                           make_zip({"app.js": "exports.handler = async () => null;\n"})))
    java = sorted(r for r in available if r.startswith("java"))
    code = _java_noop() if java else None
    if code:
        out.append(Subject("java", java[-1], "bench.Noop::handleRequest", code, stem=False, memory_mb=512))
    code = _c_example() if "provided" in available else None
    if code:
        out.append(Subject("provided", "provided", "stats", code))
    return out


def _sampler(agent, pool: StemPool, stems: int, name: str, wait_pool: bool):
    request = workloads.invoke_request(name)
    counter = itertools.count()

    def sample() -> workloads.ColdSample:
        workloads.force_cold(agent.client, name, next(counter))
        time.sleep(SETTLE_S)
        if wait_pool:
            pool.wait_full(stems, timeout_s=10)
            time.sleep(QUIET_S)
        return workloads.cold_invoke(agent, request)
    return sample


def _provisioned_first(agent, s: Subject, n: int) -> list[workloads.ColdSample]:
    """First Invokes of freshly provisioned environments (runtimes without stem cells)."""
    name = f"rt-{s.family}-prov"
    out = []
    for i in range(n):
        agent.client.functions.UpdateFunctionConfiguration(functions_pb2.UpdateFunctionConfigurationRequest(
            name=name, description=f"p{i % 2}"), timeout=30)
        time.sleep(2.0)  # the agent starts the replacement in the background: let it be ready
        out.append(workloads.cold_invoke(agent, workloads.invoke_request(name)))
    return out


def section_runtimes(ctx) -> Section:
    cfg = ctx.cfg
    n = min(cfg.prewarm_samples, SAMPLES_CAP)
    agent = workloads.AgentUnderTest(("--stem-cells", str(STEM_CELLS), "--metrics-listen", "127.0.0.1:0")).start()
    try:
        available = [r.name for r in agent.client.functions.ListRuntimes(
            functions_pb2.ListRuntimesRequest(), timeout=10).runtimes]
        subs = subjects(available)
        stems = sum(STEM_CELLS for s in subs if s.stem)
        for s in subs:
            for suffix, extra in (("pw", {}), ("cold", {"ephemeral_storage_mb": 1024})):
                agent.client.create(f"rt-{s.family}-{suffix}", s.code, handler=s.handler, runtime=s.runtime,
                                    memory_mb=s.memory_mb, timeout_seconds=30, **extra)
        pool = StemPool(agent)
        pool.wait_full(stems, timeout_s=30)
        samplers = {}
        for s in subs:
            samplers[f"{s.family} cold"] = _sampler(agent, pool, stems, f"rt-{s.family}-cold", True)
            if s.stem:
                samplers[f"{s.family} prewarmed"] = _sampler(agent, pool, stems, f"rt-{s.family}-pw", True)
        progress(f"runtimes: {n} cold and prewarmed samples of {', '.join(s.family for s in subs)}, interleaved")
        got = workloads.interleave(samplers, n, warmup=3)
        calls = {s.family: functools.partial(agent.invoke_raw, workloads.invoke_request(f"rt-{s.family}-pw"))
                 for s in subs}
        progress(f"runtimes: warm latency, {cfg.calls} calls each, alternating blocks")
        for call in calls.values():
            call()  # every -pw environment exists before the CPU snapshot
        before = _sandbox_cpu(agent)
        warm = loadgen.measure_latency_interleaved(calls, cfg.calls, cfg.block, cfg.warmup_calls)
        inside = _per_call(before, _sandbox_cpu(agent), cfg.calls + cfg.warmup_calls + 1)
        relays = _relay_memory(agent)
        for s in subs:
            if not s.stem:  # what such a runtime has instead: a provisioned environment's first Invoke
                agent.client.create(f"rt-{s.family}-prov", s.code, handler=s.handler, runtime=s.runtime,
                                    memory_mb=s.memory_mb, timeout_seconds=30, provisioned_concurrency=1)
                progress(f"runtimes: {min(n, 15)} first Invokes of provisioned {s.family} environments")
                got[f"{s.family} provisioned"] = _provisioned_first(agent, s, min(n, 15))
        cleanup = agent.stop_checked()
    except BaseException:
        agent.stop()
        raise
    return _section(cfg, subs, got, warm, inside, relays, cleanup)


def _sandbox_cpu(agent) -> dict[int, tuple[str, int]]:
    """pid -> (command name, CPU ns) of every process inside the agent's sandboxes."""
    out = {}
    for _nsjail, kids in agent.sandboxes():
        for pid in kids:
            for p in [pid, *children(pid)]:
                try:
                    out[p] = (Path(f"/proc/{p}/comm").read_text().strip(), host.cpu_ns(p))
                except OSError:
                    continue  # exited meanwhile
    return out


def _per_call(before: dict, after: dict, calls: int) -> dict[str, float]:
    """CPU µs per warm Invoke by command name. Only the -pw environments are
    invoked in between (stem cells and -cold environments idle), and each
    runtime's processes have names of their own (python3.11, node, java;
    relay + bootstrap for the custom runtime)."""
    used: dict[str, int] = {}
    for pid, (comm, ns) in after.items():
        if pid in before and before[pid][0] == comm:
            used[comm] = used.get(comm, 0) + ns - before[pid][1]
    return {comm: ns / 1000 / calls for comm, ns in used.items() if ns > 0}


def _relay_memory(agent) -> list[dict[str, int]]:
    """smaps_rollup (KiB) of each live relay and of its sandbox's nsjail."""
    out = []
    for nsjail_pid, kids in agent.sandboxes():
        for pid in kids:
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "relay":
                    out.append({"relay": rollup(pid), "nsjail": rollup(nsjail_pid)})
            except OSError:
                continue
    return out


def _section(cfg, subs: list[Subject], got: dict, warm: dict, inside: dict[str, float],
             relays: list[dict], cleanup: str) -> Section:
    rows, data = [], {"client": {}, "start_kinds": {}, "warm": {}}
    for s in subs:
        for kind in ("cold", "prewarmed", "provisioned"):
            key = f"{s.family} {kind}"
            if key not in got:
                continue
            samples = got[key]
            summ = Summary.of([x.client_ns for x in samples])
            kinds = dict(Counter(x.kind for x in samples))
            rows.append(summary_row(f"{s.runtime} {kind} ({', '.join(f'{k} {v}' for k, v in kinds.items())})",
                                    summ))
            rows.append(summary_row("  timings.init_us", Summary.of([x.init_us * 1000 for x in samples])))
            data["client"][key] = dataclasses.asdict(summ)
            data["start_kinds"][key] = kinds
    warm_rows = []
    py = Summary.of(warm["python"])
    for s in subs:
        w = Summary.of(warm[s.family])
        data["warm"][s.family] = dataclasses.asdict(w)
        warm_rows.append(summary_row(f"{s.runtime} warm (ratio to Python p50: {w.p50_us / py.p50_us:.2f}×)", w))
    data["sandbox_cpu_us_per_call"] = inside
    cpu_rows = [[comm, f"{us:.0f}"] for comm, us in sorted(inside.items(), key=lambda kv: -kv[1])]
    targets = []
    tables_extra = []
    relay_check = None
    if relays:
        med = {who: {k: statistics.median(r[who][k] for r in relays) for k in ("Rss", "Pss")}
               for who in ("relay", "nsjail")}
        overhead = med["relay"]["Pss"] + med["nsjail"]["Pss"]
        data["relay_memory_kib"] = med
        tables_extra.append(Table(["process", "RSS MiB", "PSS MiB"], [
            ["Runtime API relay (sandbox pid 1)", mib(med["relay"]["Rss"]), mib(med["relay"]["Pss"])],
            ["its nsjail supervisor", mib(med["nsjail"]["Rss"]), mib(med["nsjail"]["Pss"])]],
            f"Memory of a custom runtime's sandbox beyond its bootstrap, median of {len(relays)} live sandboxes."))
        relay_check = TargetCheck("provided: relay + nsjail PSS per environment (the pools issue's overhead "
                                  "budget)", f"≤ {OVERHEAD_GOAL_MIB:g} MiB", f"{mib(overhead)} MiB",
                                  overhead / 1024 <= OVERHEAD_GOAL_MIB)
    for family, goal in PREWARM_GOALS_MS.items():
        for kind in ("prewarmed", "provisioned"):
            key = f"{family} {kind}"
            if key in data["client"]:
                p50 = data["client"][key]["p50_us"]
                targets.append(TargetCheck(f"{family} {kind} Invoke p50", f"≤ {goal:g} ms", f"{ms(p50)} ms",
                                           p50 <= goal * 1000))
                break
    for s in subs[1:]:
        ratio = data["warm"][s.family]["p50_us"] / py.p50_us
        targets.append(TargetCheck(f"{s.runtime} warm p50 vs Python warm", f"≤ {WARM_RATIO_GOAL:g}×",
                                   f"{ratio:.2f}× ({ms(data['warm'][s.family]['p50_us'])} vs {ms(py.p50_us)} ms)",
                                   ratio <= WARM_RATIO_GOAL))
    if relay_check is not None:
        targets.append(relay_check)
    notes = [
        f"One agent, `--stem-cells {STEM_CELLS}`; functions: " + ", ".join(
            f"{s.runtime} (`{s.handler}`, {s.memory_mb} MB{'' if s.stem else ', no stem cells'})" for s in subs)
        + f". Cold and prewarmed: {min(cfg.prewarm_samples, SAMPLES_CAP)} samples each after 3 untimed, every "
        "runtime taking turns; each sample retires the idle environment (UpdateFunctionConfiguration), waits "
        f"{SETTLE_S * 1000:.0f} ms and for the stem cells to be back, then times one Invoke (client-observed).",
        f"Warm: {cfg.calls} calls per runtime after {cfg.warmup_calls} untimed, in alternating blocks of "
        f"{cfg.block}, one call at a time on one gRPC channel.",
        "The custom runtime is examples/custom-runtime-c: its warm Invoke crosses the Runtime API relay "
        "(frame to relay, HTTP to the bootstrap and back), the others talk frames to the agent directly.",
        "CPU inside the sandboxes: each process's CPU time (schedstat) across the warm phase (timed and untimed "
        "calls), divided by the calls its runtime received; this CPU counts against the function's own quota "
        "(at 128 MB, 72 ms per second), so it also bounds how many back-to-back calls run unthrottled.",
        cleanup + ".",
    ]
    return Section("runtimes", "Runtimes side by side: Python, Node.js, Java, custom (provided)", notes,
                   [Table(SUMMARY_HEADER, rows, "First Invoke of a function, client-observed."),
                    Table(SUMMARY_HEADER, warm_rows, "Warm Invoke of a no-op, client-observed."),
                    Table(["process in the sandbox", "CPU µs per warm Invoke"], cpu_rows,
                          "CPU inside the sandbox per warm Invoke, by process."), *tables_extra],
                   targets, data)
