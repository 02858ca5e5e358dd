"""What observability costs on the warm path: platform logs + metrics on vs off.

Four agents on the same machine, in the same run, each with the same no-op
function warmed to 8 environments:

  on       ``--metrics-listen 127.0.0.1:0`` and the default platform logs (a
           START, END and REPORT line per invocation in the function's log;
           Prometheus counters and histograms updated per invocation)
  off      ``--no-platform-logs`` and no metrics endpoint
  logs     platform logs only, and metrics only: each half alone, to tell
  metrics  which one costs what (the targets judge on against off)

Measured in rounds, each with four freshly started agents (their order
rotates): warm
Invoke latency at concurrency 1 (alternating blocks, sync client in this
process, one pre-built request) and throughput with 8 in flight (one grpc.aio
client process loading the agents in turn, in short windows: A B C D D C B A
and so on; ``loadgen.measure_throughput_interleaved``).
Overhead per round: on/off − 1 for the p50, 1 − on/off for calls per
second; the targets are judged on the medians.
OTLP tracing is off in both (it is off unless ``--otlp-endpoint``).
"""

from __future__ import annotations

import dataclasses
import functools
import statistics

import loadgen
import workloads
from host import cpu_ns, progress, wait_for_idle
from loadgen import Summary
from report import SUMMARY_HEADER, Section, Table, TargetCheck, ms, summary_row

FUNCTION = "obs-noop"
IN_FLIGHT = 8
GOAL = 0.05
# The two of record, then each half alone, to tell which half costs what.
AGENTS = {"on": ("--metrics-listen", "127.0.0.1:0"), "off": ("--no-platform-logs",),
          "logs": (), "metrics": ("--metrics-listen", "127.0.0.1:0", "--no-platform-logs")}
LABELS = {"on": "logs + metrics ON", "off": "logs + metrics OFF", "logs": "platform logs only",
          "metrics": "metrics only"}


def _log_bytes(agent: workloads.AgentUnderTest) -> int:
    return sum(p.stat().st_size for p in (agent.proc.data_dir / "logs").glob(f"{FUNCTION}.log*"))


def section_observability(ctx) -> Section:
    return _section(ctx.cfg, *_measure(ctx.cfg))


def _start_agents(keys: list[str]) -> dict[str, workloads.AgentUnderTest]:
    agents: dict[str, workloads.AgentUnderTest] = {}
    try:
        for key in keys:
            agents[key] = workloads.AgentUnderTest(AGENTS[key]).start()
            agents[key].deploy(FUNCTION)
    except BaseException:
        for agent in agents.values():
            agent.stop()
        raise
    return agents


def _measure(cfg) -> tuple:
    """Each round starts its own four agents and stops them after: two
    agent processes with identical flags differ by about as much as the
    effect measured here (their CPU per call by ~3 %), so rounds sharing one
    set of processes would repeat one draw of that luck instead of averaging it."""
    make = functools.partial(workloads.invoke_request, FUNCTION)
    request = make()
    keys = list(AGENTS)
    latency: dict[str, list[list[int]]] = {k: [] for k in keys}
    tput: dict[str, list[loadgen.ThroughputResult]] = {k: [] for k in keys}
    kinds: dict[str, dict[str, int]] = {k: {} for k in keys}
    agent_us: dict[str, list[float]] = {k: [] for k in keys}   # agent CPU per call, latency phase
    logged = {k: 0 for k in keys}
    envs: dict[str, list[int]] = {k: [] for k in keys}
    counted = 0.0
    cleanup: list[str] = []
    for r in range(cfg.obs_rounds):
        order = keys[r % len(keys):] + keys[:r % len(keys)]
        order = order if r % 2 == 0 else order[::-1]
        progress(f"observability round {r + 1}/{cfg.obs_rounds}: starting four agents")
        agents = _start_agents(order)
        try:
            targets = {k: loadgen.Target(a.target, workloads.INVOKE_METHOD, a.proc.proc.pid)
                       for k, a in agents.items()}
            calls = {k: (lambda a=a: a.invoke_raw(request)) for k, a in agents.items()}
            for key, agent in agents.items():
                for _ in range(8):
                    if agent.environment_count() >= IN_FLIGHT:
                        break
                    loadgen.measure_throughput(targets[key], make, IN_FLIGHT, 2 * cfg.warmup_s, 0.0, cfg.client)
            logs_before = {k: _log_bytes(a) for k, a in agents.items()}
            for k, a in agents.items():
                envs[k].append(a.environment_count())
            wait_for_idle(cfg.settle_s, quiet_samples=2, sample_s=1.0)
            progress(f"observability round {r + 1}/{cfg.obs_rounds}: latency, {cfg.calls} calls each")
            responses: dict[str, list] = {k: [] for k in order}
            cpu0 = {k: cpu_ns(a.proc.proc.pid) for k, a in agents.items()}
            got = loadgen.measure_latency_interleaved({k: calls[k] for k in order}, cfg.calls, cfg.block,
                                                      cfg.warmup_calls, responses)
            for k, a in agents.items():   # each agent served exactly warmup + calls Invokes meanwhile
                agent_us[k].append((cpu_ns(a.proc.proc.pid) - cpu0[k]) / 1e3 / (cfg.calls + cfg.warmup_calls))
            for k in order:
                latency[k].append(got[k])
                for label, n in workloads.count_kinds(responses[k]).items():
                    kinds[k][label] = kinds[k].get(label, 0) + n
            # Short windows, alternating A B C D D C B A ..., from one client
            # process: a swing of the host lasts seconds and so hits every
            # agent alike (a few long windows per agent let it land on one).
            progress(f"observability round {r + 1}/{cfg.obs_rounds}: throughput, {IN_FLIGHT} in flight, "
                     f"{cfg.obs_cycles} cycles of {cfg.obs_window_s:g} s windows")
            got_tput = loadgen.measure_throughput_interleaved(
                {k: targets[k] for k in order}, make, IN_FLIGHT, cfg.obs_window_s, cfg.obs_cycles,
                cfg.obs_window_warmup_s, dict.fromkeys(order, workloads.start_kind))
            for k in order:
                res = got_tput[k]
                tput[k].append(res)
                for label, n in res.labels.items():
                    kinds[k][label] = kinds[k].get(label, 0) + n
            for k, a in agents.items():
                logged[k] += _log_bytes(a) - logs_before[k]
                envs[k].append(a.environment_count())
            counted += sum(v for s, v in agents["on"].scrape().items()
                           if s.startswith("runtime_invocations_total{") and FUNCTION in s)
            cleanup = [f"{key} agent of the last round: " + agents.pop(key).stop_checked() for key in keys]
        finally:
            for agent in agents.values():   # only after a failure
                agent.stop()
    return latency, tput, kinds, logged, counted, envs, agent_us, cleanup


def _overheads(latency, tput, key: str) -> tuple[list[float], list[float]]:
    """Per round: p50 latency key/off − 1, and 1 − calls/s key/off."""
    return ([Summary.of(a).p50_us / Summary.of(b).p50_us - 1 for a, b in zip(latency[key], latency["off"])],
            [1 - a.rps / b.rps for a, b in zip(tput[key], tput["off"])])


def _section(cfg, latency, tput, kinds, logged, counted, envs, agent_us, cleanup: list[str]) -> Section:
    lat_over, rps_over = _overheads(latency, tput, "on")
    lat, rps = statistics.median(lat_over), statistics.median(rps_over)
    pooled = {k: Summary.of([x for r in latency[k] for x in r]) for k in latency}
    rows = [summary_row(f"{LABELS[k]}, concurrency 1", pooled[k]) for k in latency]
    halves = []
    cpu = {k: statistics.median(v) for k, v in agent_us.items()}
    loaded = {k: statistics.median(r.server_cpu_us_per_call for r in tput[k]) for k in tput}
    for key in latency:
        lo, ro = _overheads(latency, tput, key)
        halves.append([LABELS[key], f"{statistics.median(lo):+.1%}", ", ".join(f"{x:+.1%}" for x in lo),
                       f"{statistics.median(r.rps for r in tput[key]):,.0f}", f"{statistics.median(ro):+.1%}",
                       ", ".join(f"{x:+.1%}" for x in ro), f"{cpu[key]:.0f}", f"{cpu[key] - cpu['off']:+.0f}",
                       f"{loaded[key]:.0f}", f"{loaded[key] - loaded['off']:+.0f} "
                       f"({loaded[key] / loaded['off'] - 1:+.1%})"])
    straddle = [name for name, over in (("latency", lat_over), ("throughput", rps_over))
                if min(over) < GOAL < max(over)]
    rounds = []
    for i in range(cfg.obs_rounds):
        on_s, off_s = Summary.of(latency["on"][i]), Summary.of(latency["off"][i])
        rounds.append([str(i + 1), ms(on_s.p50_us), ms(off_s.p50_us), f"{lat_over[i]:+.1%}",
                       f"{tput['on'][i].rps:,.0f}", f"{tput['off'][i].rps:,.0f}", f"{rps_over[i]:+.1%}",
                       ms(tput["on"][i].latency.p50_us), ms(tput["off"][i].latency.p50_us)])
    errors = {k: sum(r.errors for r in tput[k]) for k in tput}
    notes = [
        f"Every round starts four fresh agents, each with a no-op function warmed to {IN_FLIGHT} environments, "
        "and stops them at its end (two agent processes with the same flags differ by a few % on their own, so "
        "each round draws new processes and the median over rounds averages that out): ON = "
        "`--metrics-listen 127.0.0.1:0` with the default platform logs; OFF = `--no-platform-logs` and no "
        "metrics endpoint; and each half alone (platform logs only: no flags; metrics only: `--metrics-listen "
        f"127.0.0.1:0 --no-platform-logs`). {cfg.obs_rounds} rounds; each measures latency ({cfg.calls} timed calls "
        "per agent after "
        f"{cfg.warmup_calls} untimed, alternating blocks of {cfg.block}) and then throughput at {IN_FLIGHT} in "
        f"flight: one `aio` client process loads the four agents in turn, {cfg.obs_cycles} cycles (A B C D, then "
        f"D C B A, ...), each agent's turn {cfg.obs_window_warmup_s:g} s of load and then a {cfg.obs_window_s:g} s "
        "window whose completed calls are counted; the calls still in flight finish before the next agent's turn. "
        "Short alternating windows make a swing of the host's load hit every agent alike. "
        "The order of the agents rotates and reverses from round to round.",
        "What ON adds per invocation, on the agent's event loop: three platform log records (START, END, "
        "REPORT: their numbers kept, the lines formatted and written at the 200 ms log flush), a read of the "
        "environment's "
        "cgroup peak memory for REPORT's Max Memory Used, and the Prometheus numbers (invocation and start-kind "
        "counts, the duration and per-phase histograms: plain per-function counters, turned into metric "
        "families only when scraped).",
        "Overhead per round: latency = ON p50 / OFF p50 − 1; throughput = 1 − ON calls/s / OFF calls/s "
        "(positive = observability costs). Judged on the median of the rounds.",
        f"Observability was really on: the ON agent's function log grew by {logged['on']:,} bytes and its "
        f"`runtime_invocations_total` counts {counted:,.0f} invocations; the OFF agent's log grew by "
        f"{logged['off']:,} bytes.",
        "Start kinds: " + "; ".join(f"{LABELS[k]}: " + ", ".join(f"{a} {b}" for a, b in sorted(kinds[k].items()))
                                    for k in kinds) + ". Throughput errors: "
        + ", ".join(f"{k} {v}" for k, v in errors.items()) + ". Environments per round (before → after): "
        + "; ".join(f"{k} " + ", ".join(f"{a} → {b}" for a, b in zip(v[::2], v[1::2])) for k, v in envs.items())
        + ".",
        "Noise: a 5 % difference is about 35 µs on a warm Invoke; per-round figures show how much the rounds "
        "disagree, which bounds what this run can resolve. The agent's CPU time per call is the steadier "
        "measure of what observability adds; latency and throughput also carry the client's, the sandbox's "
        "and the kernel's share of a 2-core host."
        + (f" **The rounds straddle the 5 % goal ({' and '.join(straddle)}): this run cannot tell for sure "
           "which side of it the overhead is on; the verdict follows the median.**" if straddle else ""),
    ] + [c + "." for c in cleanup]
    targets = [
        TargetCheck("Observability overhead, warm Invoke p50 (concurrency 1)", f"< {GOAL:.0%}",
                    f"{lat:+.1%} ({ms(pooled['on'].p50_us)} vs {ms(pooled['off'].p50_us)} ms; rounds: "
                    + ", ".join(f"{x:+.1%}" for x in lat_over) + ")"
                    + ("; rounds straddle the goal" if "latency" in straddle else ""), lat < GOAL),
        TargetCheck(f"Observability overhead, warm throughput ({IN_FLIGHT} in flight)", f"< {GOAL:.0%}",
                    f"{rps:+.1%} ({statistics.median(r.rps for r in tput['on']):,.0f} vs "
                    f"{statistics.median(r.rps for r in tput['off']):,.0f} calls/s; rounds: "
                    + ", ".join(f"{x:+.1%}" for x in rps_over) + ")"
                    + ("; rounds straddle the goal" if "throughput" in straddle else ""), rps < GOAL),
    ]
    return Section(
        "observability", "Observability cost on the warm path (platform logs + metrics)", notes,
        [Table(SUMMARY_HEADER, rows, "Warm Invoke latency at concurrency 1, rounds pooled."),
         Table(["round", "ON p50", "OFF p50", "latency overhead", f"ON calls/s @{IN_FLIGHT}",
                f"OFF calls/s @{IN_FLIGHT}", "throughput overhead", "ON p50 under load", "OFF p50 under load"],
               rounds, "ON vs OFF per round (latency in ms)."),
         Table(["vs OFF", "p50 overhead (median)", "per round", f"calls/s @{IN_FLIGHT} (median)",
                "throughput overhead (median)", "per round", "agent CPU µs per call, concurrency 1", "vs OFF",
                f"agent CPU µs per call @{IN_FLIGHT}", "vs OFF"], halves,
               "Which half costs what. Agent CPU: the agent process's CPU time (all threads, schedstat) per Invoke "
               "it served, over each round's latency phase (concurrency 1, where the agent also polls for "
               f"replies) and over its throughput windows ({IN_FLIGHT} in flight, read by the client at each "
               "window's edges); median of rounds.")],
        targets,
        {"latency_overhead": lat, "throughput_overhead": rps, "latency_rounds": lat_over, "throughput_rounds": rps_over,
         "on": dataclasses.asdict(pooled["on"]), "off": dataclasses.asdict(pooled["off"]),
         "rps": {k: [r.rps for r in tput[k]] for k in tput}, "log_bytes": logged, "metrics_invocations": counted,
         "p50_us": {k: [Summary.of(r).p50_us for r in latency[k]] for k in latency},
         "agent_cpu_us_per_call": agent_us,
         "agent_cpu_us_per_call_loaded": {k: [r.server_cpu_us_per_call for r in tput[k]] for k in tput},
         "halves": {k: dict(zip(("latency", "throughput"), _overheads(latency, tput, k))) for k in latency
                    if k != "off"}})
