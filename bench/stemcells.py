"""Prewarmed (stem cell) Invoke: a cold start that finds a stem cell.

An agent started with ``--stem-cells 2`` keeps two sandboxes per runtime
with the interpreter and bootstrap loaded and no function; the first Invoke
of a function that has no idle environment takes one, hands it the code
(specialise frame) and runs the handler: start kind PREWARMED.

Each sample forces a new environment (UpdateFunctionConfiguration retires
the idle one, as the cold section does), waits until the retired
environment has gone and the stem cell pool is full again, and only then
times the Invoke: every sample finds a stem cell, and none pays for
somebody else's teardown or replenishment. Interleaved with the samples, on
the same agent, a function that cannot use a stem cell (its /tmp is not
the stem cells' 512 MB) starts cold: the cold figure with stem cells on,
next to the cold section's (an agent without them).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter
import re
import time

from loadgen import Summary
from report import SUMMARY_HEADER, Section, Table, TargetCheck, ms, summary_row
from host import progress
import workloads

STEM_CELLS = 2
ONE_CORE_MB = 1769           # AWS's memory size for one full vCPU; the agent's quota follows it
FUNCTIONS = {                # name -> (label, spec)
    "pw-1769": (f"prewarmed, {ONE_CORE_MB} MB (one core)", {"memory_mb": ONE_CORE_MB}),
    "pw-128": ("prewarmed, 128 MB (default)", {}),
    "pw-cold": ("cold, same agent (no stem cell fits: /tmp 1024 MB)", {"ephemeral_storage_mb": 1024}),
}
GOAL_MS = 5.0
SETTLE_S = 0.05              # after the retirement, as the cold section waits
QUIET_S = 0.03               # after the pool is full: the new cell's cgroup move runs in a worker thread


class StemPool:
    """How many stem cells are ready, from the agent's gauge
    ``runtime_environments{state="stem"}`` when it exports one, else from the
    lifecycle lines of its log (created / specialised / killed per cell)."""

    def __init__(self, agent: workloads.AgentUnderTest):
        self.agent = agent
        self.source = ""
        self._offset = 0
        self._cells: set[str] = set()

    def _from_gauge(self) -> int | None:
        values = [v for k, v in self.agent.scrape().items()
                  if k.startswith("runtime_environments{") and 'state="stem"' in k]
        return int(sum(values)) if values else None

    def _from_log(self) -> int:
        with open(self.agent.proc.log_path, "rb") as f:
            f.seek(self._offset)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1       # whole lines only
        self._offset += end
        for what, env in re.findall(rb"runtime\.lifecycle: (\w+) env=(\S+)", chunk[:end]):
            if what == b"created" and env.startswith(b"stem-"):
                self._cells.add(env.decode())
            else:                          # specialised, killed, ...: no longer a stem cell
                self._cells.discard(env.decode())
        return len(self._cells)

    def ready(self) -> int:
        gauge = self._from_gauge()
        log_count = self._from_log()       # always read, so the log position stays current
        if gauge is not None and gauge > 0:
            self.source = "gauge"
            return gauge
        self.source = self.source or "log"
        return log_count

    def wait_full(self, n: int, timeout_s: float = 5.0) -> float:
        """Seconds waited until ``n`` cells were ready; raises after ``timeout_s``."""
        t0 = time.monotonic()
        while self.ready() < n:
            if time.monotonic() - t0 > timeout_s:
                raise RuntimeError(f"stem cell pool not refilled to {n} within {timeout_s} s "
                                   f"(source {self.source}):\n{self.agent.proc.log()[-3000:]}")
            time.sleep(0.005)
        return time.monotonic() - t0


def _sampler(agent: workloads.AgentUnderTest, pool: StemPool, name: str, waits: list[float],
             warm: list | None):
    """One sample: a first Invoke that finds a full stem cell pool. With
    ``warm``, also a second Invoke of the same environment after the same
    pause (a control: what a lone call costs on an idle host, without
    specialising)."""
    request = workloads.invoke_request(name)
    counter = itertools.count()

    def sample() -> workloads.ColdSample:
        workloads.force_cold(agent.client, name, next(counter))
        time.sleep(SETTLE_S)
        waits.append(pool.wait_full(STEM_CELLS))
        time.sleep(QUIET_S)
        first = workloads.cold_invoke(agent, request)
        if warm is not None:
            time.sleep(SETTLE_S + QUIET_S)
            warm.append(workloads.cold_invoke(agent, request))
        return first
    return sample


def _gauge_has_stem_state(agent: workloads.AgentUnderTest) -> bool:
    return any('state="stem"' in k for k in agent.scrape() if k.startswith("runtime_environments{"))


def section_prewarmed(ctx) -> Section:
    from runtime.jail.cgroups import cpu_ms_for_memory

    cfg = ctx.cfg
    agent = workloads.AgentUnderTest(("--stem-cells", str(STEM_CELLS), "--metrics-listen", "127.0.0.1:0")).start()
    try:
        for name, (_, spec) in FUNCTIONS.items():
            agent.deploy(name, **spec)
        pool = StemPool(agent)
        pool.wait_full(STEM_CELLS, timeout_s=15)
        gauge_ok = _gauge_has_stem_state(agent)
        waits: list[float] = []
        warm: dict[str, list] = {name: [] for name in FUNCTIONS if name != "pw-cold"}
        samplers = {name: _sampler(agent, pool, name, waits, warm.get(name)) for name in FUNCTIONS}
        progress(f"prewarmed: {cfg.prewarm_samples} samples each of {', '.join(FUNCTIONS)}, interleaved")
        got = workloads.interleave(samplers, cfg.prewarm_samples)
        for name, samples in warm.items():   # interleave's untimed turns come first
            got[f"{name} warm"] = samples[-cfg.prewarm_samples:]
        starts = {k: v for k, v in agent.scrape().items() if k.startswith("runtime_starts_total{")}
        cleanup = agent.stop_checked()
    except BaseException:
        agent.stop()
        raise
    return _section(cfg, got, waits, pool.source, gauge_ok, starts, cleanup, ctx.results,
                    {mb: cpu_ms_for_memory(mb) for mb in (128, ONE_CORE_MB)})


PHASES = ("init_us", "code_load_us", "sandbox_us", "handler_us", "total_us")


def _breakdown(samples) -> list[list[str]]:
    out = [summary_row(f"  timings.{phase}", Summary.of([getattr(x, phase) * 1000 for x in samples]))
           for phase in ("init_us", "total_us")]
    out.append(summary_row("  agent total − init − handler (the agent's own work)",
                           Summary.of([(x.total_us - x.init_us - x.handler_us) * 1000 for x in samples])))
    out.append(summary_row("  client − agent total (gRPC, client and server)",
                           Summary.of([x.client_ns - x.total_us * 1000 for x in samples])))
    return out


def _section(cfg, got, waits, source, gauge_ok, starts, cleanup, results, quota) -> Section:
    client = {name: Summary.of([s.client_ns for s in got[name]]) for name in FUNCTIONS}
    kinds = {name: dict(sorted(Counter(s.kind for s in got[name]).items())) for name in FUNCTIONS}
    rows = []
    for name, (label, _) in FUNCTIONS.items():
        rows.append(summary_row(f"**{label}**: Invoke, client-observed", client[name]))
        rows += _breakdown(got[name])
        if f"{name} warm" in got:
            w = got[f"{name} warm"]
            rows.append(summary_row(f"control: the same environment again, WARM, after a "
                                    f"{(SETTLE_S + QUIET_S) * 1000:.0f} ms pause: client-observed",
                                    Summary.of([x.client_ns for x in w])))
            rows += _breakdown(w)[-2:]
    side = []
    cold = results.get("cold", {}).get("client")
    if cold:
        side.append(["cold, agent without stem cells (cold section)", str(cold["n"]), ms(cold["p50_us"]),
                     ms(cold["p99_us"]), "COLD"])
    for name in ("pw-cold", "pw-128", "pw-1769"):
        s = client[name]
        side.append([FUNCTIONS[name][0] + " (stem cells on)", str(s.n), ms(s.p50_us), ms(s.p99_us),
                     ", ".join(f"{k} {v}" for k, v in kinds[name].items())])
    all_prewarmed = all(kinds[n] == {"PREWARMED": len(got[n])} for n in ("pw-1769", "pw-128"))
    targets = []
    for name in ("pw-1769", "pw-128"):
        s, mb = client[name], FUNCTIONS[name][1].get("memory_mb", 128)
        targets.append(TargetCheck(f"Python prewarmed (stem cell) Invoke p50, {mb} MB", f"≤ {GOAL_MS:g} ms",
                                   f"{ms(s.p50_us)} ms (p99 {ms(s.p99_us)})"
                                   + ("" if all_prewarmed else "; NOT every sample was PREWARMED"),
                                   s.p50_us <= GOAL_MS * 1000 and all_prewarmed))
    waits_ms = sorted(w * 1000 for w in waits)
    notes = [
        f"Agent: `--stem-cells {STEM_CELLS} --metrics-listen 127.0.0.1:0`. {cfg.prewarm_samples} samples per "
        f"function after 5 untimed, the three functions taking turns. Per sample: UpdateFunctionConfiguration "
        f"(description toggled) retires the idle environment; wait {SETTLE_S * 1000:.0f} ms; wait until "
        f"{STEM_CELLS} stem cells are ready; wait {QUIET_S * 1000:.0f} ms more; then time one Invoke (sync gRPC "
        "client in the benchmark process, request serialised beforehand).",
        "Start kinds: " + "; ".join(f"{n}: " + ", ".join(f"{k} {v}" for k, v in kinds[n].items())
                                     for n in FUNCTIONS) + ". Every prewarmed sample must be PREWARMED: "
        + ("all were." if all_prewarmed else "**some were not**."),
        f"CPU quota: {ONE_CORE_MB} MB buys {quota[ONE_CORE_MB]} ms of CPU per second (one core); 128 MB buys "
        f"{quota[128]} ms/s ({quota[128] / 10:.1f} % of a core). A specialised stem cell runs its code load and "
        "handler under its function's quota.",
        "For a prewarmed start `timings.sandbox_us` is 0 (the sandbox and interpreter were started ahead) and "
        "`init_us` = `code_load_us`: from sending the specialise frame to the handler module loaded. The "
        "control rows time a second, WARM Invoke of the just-specialised environment after the same kind of "
        "pause, so that what a lone call costs on a quiet host (threads asleep, caches cold) is not mistaken "
        "for the cost of specialising.",
        f"Pool refill detected through: {source or 'n/a'}. The agent's gauge `runtime_environments` "
        + ("exports" if gauge_ok else "**does not export**") + " a `state=\"stem\"` series"
        + ("" if gauge_ok else " (stem cells are outside every function pool, and the gauge only walks the "
           "pools), so the refill was read from the agent's lifecycle log lines instead") + ". Waiting for the "
        f"refill took p50 {waits_ms[len(waits_ms) // 2]:.0f} ms, max {waits_ms[-1]:.0f} ms "
        "(the agent starts a replacement once the call that took a cell is answered, or 100 ms after the "
        "take if the call runs longer)." if waits_ms else "",
        "Agent counters at the end: " + ", ".join(f"{k.split('{')[1].rstrip('}')} = {v:.0f}"
                                                  for k, v in starts.items() if v) + ".",
        cleanup + ".",
    ]
    return Section(
        "prewarmed", "Prewarmed Invoke (stem cells)", [n for n in notes if n],
        [Table(SUMMARY_HEADER, rows, "Python 3.11 no-op, one call at a time; timings.* are the agent's breakdown "
               "of the same samples."),
         Table(["first Invoke of a function", "n", "p50 ms", "p99 ms", "start kinds"], side,
               "Cold with and without stem cells, side by side (same run).")],
        targets,
        {"client": {n: dataclasses.asdict(client[n]) for n in FUNCTIONS}, "start_kinds": kinds,
         "phases": {n: {p: dataclasses.asdict(Summary.of([getattr(s, p) * 1000 for s in got[n]])) for p in PHASES}
                    for n in FUNCTIONS},
         "labels": {n: FUNCTIONS[n][0] for n in FUNCTIONS}, "stem_gauge_exported": gauge_ok,
         "refill_wait_ms": {"p50": waits_ms[len(waits_ms) // 2] if waits_ms else 0,
                            "max": waits_ms[-1] if waits_ms else 0},
         "warm_control": {n: dataclasses.asdict(Summary.of([x.client_ns for x in got[f"{n} warm"]]))
                         for n in FUNCTIONS if f"{n} warm" in got},
        "_client_ns": {n: [s.client_ns for s in got[n]] for n in FUNCTIONS}})
