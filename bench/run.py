"""The invoke-path benchmark suite: ``.venv/bin/python bench/run.py`` (``make bench``).

Measures, in one run on one machine so that ratios hold on a noisy host:

  warm           the floor (a grpc.aio echo server, bench/echo_server.py) and a
                 warm Invoke of a no-op function, interleaved round by round
  cold           Invoke in a new environment each time, with the agent's
                 breakdown, interleaved with the peers: what users would script
                 instead (a fresh nsjail + python3 per request, a bare python3)
  prewarmed      a first Invoke that finds a stem cell (bench/stemcells.py)
  fresh          a function that gets a new environment for every call: paced,
                 back to back, and with calls in flight (bench/fresh.py)
  runtimes       cold, prewarmed and warm Invoke of Python, Node.js, Java and a
                 custom runtime side by side (bench/runtimes.py)
  rie            AWS's Runtime Interface Emulator running the same custom
                 runtime, warm Invoke next to the agent's (bench/rie.py)
  native         cffi call overhead, a 52 MB library: cold, preloaded, PSS per
                 extra environment (bench/native.py)
  creation       environments started and ready per second (bench/churn.py)
  memory         memory per idle warm environment (bench/memory.py)
  burst          100 concurrent first Invokes of a cold function (bench/churn.py)
  observability  platform logs + metrics on vs off, warm path (bench/observability.py)
  keepalive      keep-alive policies on a simulated trace (bench/keepalive_sim.py)

and writes bench/RESULTS.md (machine, commit, every figure with p50/p99,
which targets are met), bench/out/results.json (the same figures as data)
and, when matplotlib is installed, PNG plots in bench/plots/.

Adding a benchmark (other languages, say): write a function
``section_x(ctx) -> Section`` in a module of its own, and append it to
SECTIONS below. Sections share the agent and echo server through ``ctx`` and
may read earlier sections' data from ``ctx.results``; a section that needs
agent flags of its own starts its own ``workloads.AgentUnderTest`` and ends
it with ``stop_checked()``, which also checks that no sandbox process or
cgroup of it is left.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
import time
import traceback
from pathlib import Path

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import grpc  # noqa: E402
from runtime.sandbox import placement  # noqa: E402
from runtime.v1 import invoker_pb2  # noqa: E402

import echo_server  # noqa: E402
import fresh  # noqa: E402
import host  # noqa: E402
import loadgen  # noqa: E402
import report  # noqa: E402
import workloads  # noqa: E402
# After workloads: these import the installed runtime package through it.
import churn  # noqa: E402
import memory  # noqa: E402
import observability  # noqa: E402
import native  # noqa: E402
import rie  # noqa: E402
import runtimes  # noqa: E402
import stemcells  # noqa: E402
from host import progress  # noqa: E402
from report import Section  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Config:
    rounds: int = 3               # echo/warm rounds, alternating, so drift hits both
    calls: int = 2000             # timed calls per server per latency round (after warm-up)
    block: int = 200              # ... taken in alternating blocks of this many
    warmup_calls: int = 200
    seconds: float = 3.0          # measured window of one throughput run
    warmup_s: float = 1.0         # load before the window opens
    concurrency: tuple[int, ...] = (1, 8, 32)
    client: str = "aio"           # throughput client of record; "threads" is measured too at max concurrency
    # Warm throughput (aio client): servers loaded in turn, in short windows.
    tput_cycles: int = 6
    tput_window_s: float = 0.5
    tput_window_warmup_s: float = 0.1
    cold_samples: int = 120
    cold_settle_s: float = 0.05
    prewarm_samples: int = 110    # per function: prewarmed 1769 MB, prewarmed 128 MB, cold with stem cells on
    creation_seconds: float = 10.0
    creation_concurrency: tuple[int, ...] = (4, 16)
    burst_size: int = 100
    bursts: int = 3               # of the no-op burst; one fewer of the sleeping one
    idle_envs: int = 20
    # Observability: telling a few % apart needs more rounds than warm (each
    # round draws four fresh agent processes).
    obs_rounds: int = 9
    obs_cycles: int = 8           # observability throughput: A B C D D C B A ... windows per round
    obs_window_s: float = 0.5
    obs_window_warmup_s: float = 0.1
    settle_s: float = 20.0        # before a section that needs a quiet host, wait up to this long


QUICK = Config(rounds=1, calls=300, block=100, warmup_calls=50, seconds=1.0, warmup_s=0.5, cold_samples=20,
               prewarm_samples=15, creation_seconds=3.0, creation_concurrency=(8,), bursts=1, idle_envs=8,
               obs_rounds=1, obs_cycles=2, tput_cycles=2, settle_s=2.0)


class Context:
    """What sections share: configuration, servers (started on first use),
    and the results of the sections that ran before."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.results: dict[str, dict] = {}
        self._echo: echo_server.EchoProcess | None = None
        self._echo_channel: grpc.Channel | None = None
        self._echo1: echo_server.EchoProcess | None = None
        self._echo1_channel: grpc.Channel | None = None
        self._agent: workloads.AgentUnderTest | None = None
        self._deployed: set[str] = set()

    def echo(self) -> tuple[echo_server.EchoProcess, grpc.Channel]:
        if self._echo is None:
            self._echo = echo_server.EchoProcess().start()
            self._echo_channel = grpc.insecure_channel(self._echo.target, options=loadgen.CHANNEL_OPTIONS)
        return self._echo, self._echo_channel

    def echo_one_cpu(self) -> tuple[echo_server.EchoProcess, grpc.Channel] | None:
        """The echo server with every thread on the agent's CPU (as
        ``--agent-cpu auto`` places the agent's), or None on one CPU."""
        cpu = placement.choose("auto", placement.allowed_cpus())
        if cpu is None:
            return None
        if self._echo1 is None:
            self._echo1 = echo_server.EchoProcess(cpu=cpu).start()
            self._echo1_channel = grpc.insecure_channel(self._echo1.target, options=loadgen.CHANNEL_OPTIONS)
        return self._echo1, self._echo1_channel

    @property
    def agent_started(self) -> bool:
        return self._agent is not None

    def agent(self) -> workloads.AgentUnderTest:
        if self._agent is None:
            self._agent = workloads.AgentUnderTest().start()
        return self._agent

    def deploy(self, name: str, source: str = workloads.NOOP_SOURCE, **spec) -> workloads.AgentUnderTest:
        agent = self.agent()
        if name not in self._deployed:
            agent.deploy(name, source, **spec)
            self._deployed.add(name)
        return agent

    def close(self) -> None:
        if self._echo_channel is not None:
            self._echo_channel.close()
        if self._echo is not None:
            self._echo.stop()
        if self._echo1_channel is not None:
            self._echo1_channel.close()
        if self._echo1 is not None:
            self._echo1.stop()
        if self._agent is not None:
            self._agent.stop()


# -- 1 + 2: the floor and warm Invoke, interleaved ------------------------------
def section_warm(ctx: Context) -> Section:
    cfg = ctx.cfg
    echo, echo_channel = ctx.echo()
    agent = ctx.deploy(workloads.WARM_FUNCTION)
    # One request, built once: the echo server gets the very bytes the agent gets.
    request = workloads.invoke_request(workloads.WARM_FUNCTION)
    echo_call = loadgen.raw_unary(echo_channel, echo_server.METHOD)
    if echo_call(request) != request:
        raise RuntimeError("echo server did not echo")
    make = functools.partial(workloads.invoke_request, workloads.WARM_FUNCTION)
    dry_request = workloads.dry_run_request(workloads.WARM_FUNCTION)
    if invoker_pb2.InvokeResponse.FromString(agent.invoke_raw(dry_request)).status_code != 204:
        raise RuntimeError("a DRY_RUN Invoke was not answered 204")
    # Each target names its process: the throughput windows meter its CPU time.
    at_agent = loadgen.Target(agent.target, workloads.INVOKE_METHOD, agent.proc.proc.pid)
    servers = {
        "echo": (lambda: echo_call(request), loadgen.Target(echo.target, echo_server.METHOD, echo.proc.pid), None),
        **_echo_one_cpu(ctx, request),
        "warm": (lambda: agent.invoke_raw(request), at_agent, workloads.start_kind),
        # The agent of record answering DRY_RUN: the API layer without the sandbox.
        "dry": (lambda: agent.invoke_raw(dry_request), at_agent, None),
    }
    top = max(cfg.concurrency)
    # Concurrent load grows the pool slowly (a new environment only when every
    # one is busy at the instant a request arrives), so load the function at
    # the top concurrency until that many environments exist: the measured
    # windows then find theirs already started. Cold starts that still happen
    # inside a window are counted and reported.
    for _ in range(8):
        if agent.environment_count() >= top:
            break
        progress(f"prewarming: {agent.environment_count()} of {top} environments")
        loadgen.measure_throughput(servers["warm"][1], make, top, 2 * cfg.warmup_s, 0.0, cfg.client)
    envs_before = agent.environment_count()
    # The same calls to an agent with reply polling off and to one whose
    # threads the scheduler places (--agent-cpu none), for latency only: they
    # show what polling and the agent's placement (both on by default) are worth.
    others: dict[str, workloads.AgentUnderTest] = {}
    try:
        for name, flags in (("warm-nopoll", ("--reply-poll-us", "0")), ("warm-spread", ("--agent-cpu", "none"))):
            others[name] = workloads.AgentUnderTest(flags).start()
            others[name].deploy(workloads.WARM_FUNCTION)
        return _warm_rounds(ctx, agent, others, request, make, servers, envs_before)
    finally:
        for other in others.values():
            other.stop()


def _echo_one_cpu(ctx: Context, request: bytes) -> dict:
    """The echo server with its threads on the agent's CPU, as a server entry
    (none on a one-CPU host: there the two placements are the same)."""
    got = ctx.echo_one_cpu()
    if got is None:
        return {}
    echo1, channel = got
    call = loadgen.raw_unary(channel, echo_server.METHOD)
    if call(request) != request:
        raise RuntimeError("echo server (one CPU) did not echo")
    return {"echo1": (lambda: call(request), loadgen.Target(echo1.target, echo_server.METHOD, echo1.proc.pid), None)}


def _warm_rounds(ctx: Context, agent, others: dict, request: bytes, make, servers, envs_before: int) -> Section:
    cfg = ctx.cfg
    top = max(cfg.concurrency)
    servers = {**servers, **{name: (functools.partial(other.invoke_raw, request), None, workloads.start_kind)
                             for name, other in others.items()}}
    latency: dict[str, list[list[int]]] = {name: [] for name in ("echo", "echo1", "warm", "warm-nopoll",
                                                                  "warm-spread", "dry") if name in servers}
    tput: dict[tuple[str, int, str], list[loadgen.ThroughputResult]] = {}
    kinds: dict[str, int] = {}
    other_kinds: dict[str, dict[str, int]] = {name: {} for name in others}
    inside: tuple[list[int], list[int]] = ([], [])   # the agent's own timings of the timed warm calls
    throttled: dict[str, list[int]] = {}   # phase -> [periods, throttled periods, throttled ns]
    make_dry = functools.partial(workloads.dry_run_request, workloads.WARM_FUNCTION)

    def measured(phase: str, fn):
        """Runs fn, adding the environments' CPU-quota throttling meanwhile to ``phase``."""
        before = agent.cpu_stats()
        result = fn()
        delta = workloads.throttling(before, agent.cpu_stats())
        throttled[phase] = [a + b for a, b in zip(throttled.get(phase, [0, 0, 0]), delta)]
        return result

    for r in range(cfg.rounds):
        # Alternate who goes first, so a trend within a round does not favour one side.
        order = ("echo", "warm") if r % 2 == 0 else ("warm", "echo")
        progress(f"round {r + 1}/{cfg.rounds}: echo and warm latency, {cfg.calls} calls each")
        responses: dict[str, list] = {"warm": [], "warm-nopoll": [], "warm-spread": []}
        got = measured("warm latency", lambda: loadgen.measure_latency_interleaved(
            {name: servers[name][0] for name in (*order, *(n for n in latency if n not in order))}, cfg.calls,
            cfg.block, cfg.warmup_calls, responses))
        for name in latency:
            latency[name].append(got[name])
        for have, got_now in zip(inside, workloads.agent_timings_us(responses["warm"])):
            have.extend(got_now)
        for k, v in workloads.count_kinds(responses["warm"]).items():
            kinds[k] = kinds.get(k, 0) + v
        for name in others:
            for k, v in workloads.count_kinds(responses[name]).items():
                other_kinds[name][k] = other_kinds[name].get(k, 0) + v
        for c in cfg.concurrency:
            # The one-CPU echo competes for the floor at the judged point only.
            names = (*order, "echo1") if c == top and "echo1" in servers else order
            if cfg.client == "aio":
                # Short alternating windows from one client process, so that a
                # swing of the host's load hits every server alike.
                progress(f"round {r + 1}/{cfg.rounds}: {', '.join(names)} throughput, {c} in flight (aio), "
                         f"{cfg.tput_cycles} cycles of {cfg.tput_window_s:g} s windows")
                got_tput = measured(f"warm throughput {c} (aio)", lambda: loadgen.measure_throughput_interleaved(
                    {name: servers[name][1] for name in names}, make, c, cfg.tput_window_s, cfg.tput_cycles,
                    cfg.tput_window_warmup_s, {name: servers[name][2] for name in names}))
                for name in names:
                    tput.setdefault((name, c, "aio"), []).append(got_tput[name])
            clients = ("threads",) if c == top or cfg.client == "threads" else ()
            for client in clients:
                for name in (names if client == cfg.client else order):
                    progress(f"round {r + 1}/{cfg.rounds}: {name} throughput, {c} in flight ({client})")
                    _, target, inspect = servers[name]
                    res = measured(f"{name} throughput {c} ({client})", lambda: loadgen.measure_throughput(
                        target, make, c, cfg.seconds, cfg.warmup_s, client, inspect))
                    tput.setdefault((name, c, client), []).append(res)
        progress(f"round {r + 1}/{cfg.rounds}: DRY_RUN throughput, {top} in flight ({cfg.client})")
        tput.setdefault(("dry", top, cfg.client), []).append(loadgen.measure_throughput(
            servers["dry"][1], make_dry, top, cfg.seconds, cfg.warmup_s, cfg.client))
    warm_throttling = {k: v for k, v in throttled.items() if k.startswith("warm")}
    progress("machine floor: one-byte round trips between two processes")
    return report.warm_section(cfg, latency, tput, kinds, envs_before, agent.environment_count(), warm_throttling,
                               other_kinds, inside, host.wakeup_rtt_us())


# -- 3 + 4: cold Invoke and its peers, interleaved ---------------------------------
def section_cold(ctx: Context) -> list[Section]:
    """Cold Invoke, a fresh nsjail + python3, and a bare python3, one of each
    per iteration: a neighbour's burst of load hits all three alike, so the
    agent-vs-peer ratios hold even when the absolute numbers drift."""
    cfg = ctx.cfg
    agent = ctx.deploy(workloads.COLD_FUNCTION)
    samplers = workloads.cold_samplers(agent, workloads.COLD_FUNCTION, cfg.cold_settle_s)
    progress(f"cold: {cfg.cold_samples} cold invokes, each followed by one run of each peer")
    got = workloads.interleave(samplers, cfg.cold_samples)
    cold = report.cold_section(cfg, got["cold"])
    peers = report.peers_section(cfg, got["nsjail"], got["subprocess"], {**ctx.results, cold.key: cold.data})
    return [cold, peers]


# A section function returns a Section or a list of them. Order matters only
# for sections that read earlier results from ctx.results.
SECTIONS = [
    ("warm", section_warm),
    ("cold", section_cold),
    ("prewarmed", stemcells.section_prewarmed),        # reads the cold section's figure
    ("fresh", fresh.section_fresh),
    ("runtimes", runtimes.section_runtimes),
    ("native", native.section_native),
    ("rie", rie.section_rie),
    ("creation", churn.section_creation),
    ("memory", memory.section_memory),
    ("burst", churn.section_burst),
    ("observability", observability.section_observability),
    ("keepalive", memory.section_keepalive),
]


# Above this fraction of CPU used by others, RESULTS.md carries a warning.
BUSY = 0.25


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="comma-separated sections: " +
                        ", ".join(k for k, _ in SECTIONS))
    parser.add_argument("--quick", action="store_true", help="few samples: a smoke test, not a result")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--calls", type=int)
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--cold-samples", type=int)
    parser.add_argument("--client", choices=("aio", "threads"))
    parser.add_argument("--out", type=Path, default=BENCH / "RESULTS.md")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--wait-idle", type=float, default=60, metavar="SECONDS",
                        help="wait up to this long for other work on the host to calm down first (default 60)")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else Config()
    overrides = {k: getattr(args, k) for k in ("rounds", "calls", "seconds", "cold_samples", "client")
                 if getattr(args, k) is not None}
    cfg = dataclasses.replace(cfg, **overrides)
    wanted = [s.strip() for s in args.only.split(",") if s.strip()] or [k for k, _ in SECTIONS]
    unknown = set(wanted) - {k for k, _ in SECTIONS}
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")

    if args.wait_idle > 0:
        host.wait_for_idle(args.wait_idle, BUSY)
    machine = host.machine_info()
    ctx = Context(cfg)
    busiest = 0.0
    sections: list[Section] = []
    failed = False
    started = time.time()
    try:
        for key, fn in SECTIONS:
            if key not in wanted:
                continue
            load_before = host.loadavg()
            meter = host.CpuMeter()
            try:
                produced = fn(ctx)
            except Exception:  # one broken benchmark must not hide the others' numbers
                failed = True
                progress(f"section {key} FAILED")
                produced = Section(key, f"{key}: FAILED", notes=["```\n" + traceback.format_exc() + "```"])
            others = meter.others()
            busiest = max(busiest, others)
            machine[f"CPU used by others during '{key}'"] = f"{others:.0%} of the host"
            for section in produced if isinstance(produced, list) else [produced]:
                # The host may be shared: say how much of it others used meanwhile.
                section.notes.append(f"While this was measured, processes outside the suite used {others:.0%} of "
                                     f"the host's CPU; load average (1, 5, 15 min) {load_before} at the start, "
                                     f"{host.loadavg()} at the end.")
                ctx.results[section.key] = section.data
                sections.append(section)
        if ctx.agent_started:
            machine["agent mode"] = ctx.agent().mode
    finally:
        ctx.close()
    machine["load average (end)"] = host.loadavg()
    machine["suite duration"] = f"{time.time() - started:.0f} s"

    plots: list[Path] = []
    if not args.no_plots:
        import plots as plotting

        # Next to the report, so its relative links hold wherever --out points.
        # A partial run (--only) leaves the pictures of sections it did not run.
        plots = plotting.write_plots(ctx.results, args.out.parent / "plots", prune=not args.only)
    busy_note = ""
    if busiest > BUSY:
        busy_note = (f"The host was shared: processes outside this suite used up to {busiest:.0%} of its CPU "
                     "during a section. Every figure is pessimistic, the agent's more than the echo server's "
                     "(each Invoke crosses three processes, client, agent and sandbox, an echo call two), "
                     "so the ratios are too.")
    text = report.render(machine, cfg, sections, plots, args.out.parent, quick=args.quick, busy_note=busy_note)
    args.out.write_text(text)
    out_dir = args.out.parent / "out"
    out_dir.mkdir(exist_ok=True)
    # "_" keys are raw samples, kept for the plots only.
    figures = {key: {k: v for k, v in data.items() if not k.startswith("_")} for key, data in ctx.results.items()}
    (out_dir / "results.json").write_text(json.dumps(
        {"machine": machine, "config": dataclasses.asdict(cfg), "sections": figures}, indent=1, default=str))
    progress(f"wrote {args.out} and {out_dir / 'results.json'}")
    print(report.targets_summary(sections))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
