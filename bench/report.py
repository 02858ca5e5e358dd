"""Turns measurements into sections, and sections into bench/RESULTS.md.

A ``Section`` is plain data: tables of figures, the targets it judges and a
``data`` dict (the same figures for results.json and the plots; keys starting
with "_" hold raw samples and stay out of the JSON). The ``*_section``
builders here know what each benchmark means; ``render`` knows nothing about
any benchmark, so new sections need no change to it.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
from pathlib import Path

from loadgen import Summary, ThroughputResult


@dataclasses.dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclasses.dataclass
class TargetCheck:
    name: str
    goal: str
    measured: str
    met: bool


@dataclasses.dataclass
class Section:
    key: str
    title: str
    notes: list[str] = dataclasses.field(default_factory=list)
    tables: list[Table] = dataclasses.field(default_factory=list)
    targets: list[TargetCheck] = dataclasses.field(default_factory=list)
    data: dict = dataclasses.field(default_factory=dict)


def ms(us: float) -> str:
    """Microseconds as milliseconds, with the precision that matters at that size."""
    v = us / 1000
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


def summary_row(label: str, s: Summary) -> list[str]:
    return [label, str(s.n), ms(s.p50_us), ms(s.p90_us), ms(s.p99_us), ms(s.mean_us), ms(s.max_us)]


SUMMARY_HEADER = ["", "n", "p50 ms", "p90 ms", "p99 ms", "mean ms", "max ms"]


def _kinds(labels: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(labels.items())) or "-"


# -- 1 + 2: floor and warm ---------------------------------------------------------
def warm_section(cfg, latency: dict[str, list[list[int]]],
                 tput: dict[tuple[str, int, str], list[ThroughputResult]], kinds: dict[str, int],
                 envs_before: int, envs_after: int, throttling: dict[str, list[int]],
                 other_kinds: dict[str, dict[str, int]], inside: tuple[list[int], list[int]],
                 wakeup_us: dict[str, float]) -> Section:
    top = max(cfg.concurrency)
    inside_p50 = [statistics.median(v) if v else 0 for v in inside]   # invoker total, handler (µs)
    pooled = {name: Summary.of([x for r in rounds for x in r]) for name, rounds in latency.items()}
    echo_all, warm_all, dry_all = pooled["echo"], pooled["warm"], pooled["dry"]
    rounds = len(latency["echo"])
    # The floor of record, per round: the faster of the two echo placements
    # (the scheduler's, and every thread on the agent's CPU), so that where
    # the agent puts its threads is no advantage the floor lacks.
    floor_p50 = [min(Summary.of(latency[e][i]).p50_us for e in ("echo", "echo1") if e in latency)
                 for i in range(rounds)]
    floor_rps = [max(tput[(e, top, cfg.client)][i].rps for e in ("echo", "echo1") if (e, top, cfg.client) in tput)
                 for i in range(rounds)]

    def p50_ratios(name: str) -> list[float]:
        return [Summary.of(latency[name][i]).p50_us / floor_p50[i] for i in range(rounds)]

    dry_lat = p50_ratios("dry")
    dry_rps = [d.rps / f if f else 0.0 for f, d in zip(floor_rps, tput[("dry", top, cfg.client)])]
    per_round, lat_ratios, rps_ratios = [], [], []
    for i in range(rounds):
        es, ws = Summary.of(latency["echo"][i]), Summary.of(latency["warm"][i])
        e1 = ms(Summary.of(latency["echo1"][i]).p50_us) if "echo1" in latency else "-"
        er, wr = tput[("echo", top, cfg.client)][i].rps, tput[("warm", top, cfg.client)][i].rps
        er1 = tput.get(("echo1", top, cfg.client))
        lat_ratios.append(ws.p50_us / floor_p50[i])
        rps_ratios.append(wr / floor_rps[i] if floor_rps[i] else 0.0)
        per_round.append([str(i + 1), ms(es.p50_us), e1, ms(ws.p50_us), ms(ws.p99_us),
                          f"{lat_ratios[-1]:.2f}×", f"{er:,.0f}", f"{er1[i].rps:,.0f}" if er1 else "-",
                          f"{wr:,.0f}", f"{rps_ratios[-1]:.2f}×"])
    lat_ratio, rps_ratio = statistics.median(lat_ratios), statistics.median(rps_ratios)
    # Against each echo placement alone, for the notes.
    by_echo = {e: (statistics.median(Summary.of(w).p50_us / Summary.of(x).p50_us
                                     for w, x in zip(latency["warm"], latency[e])),
                   statistics.median(w.rps / x.rps for w, x in zip(tput[("warm", top, cfg.client)],
                                                                   tput[(e, top, cfg.client)])))
               for e in ("echo", "echo1") if e in latency and (e, top, cfg.client) in tput}

    tput_rows, tput_data = [], {}
    for (name, c, client), runs in sorted(tput.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])):
        lat = Summary.of([x for r in runs for x in r.latency_ns])
        rps = [r.rps for r in runs]
        labels: dict[str, int] = {}
        for r in runs:
            for k, v in r.labels.items():
                labels[k] = labels.get(k, 0) + v
        label = LATENCY_ROWS[name]
        cpu = statistics.median(r.server_cpu_us_per_call for r in runs)
        tput_rows.append([label, str(c), client, f"{statistics.median(rps):,.0f}",
                          " / ".join(f"{x:,.0f}" for x in rps), ms(lat.p50_us), ms(lat.p99_us),
                          f"{cpu:.0f}" if cpu else "-", str(sum(r.errors for r in runs)), _kinds(labels)])
        tput_data[f"{name}/{c}/{client}"] = {"rps_median": statistics.median(rps), "rps_rounds": rps,
                                             "latency": dataclasses.asdict(lat), "labels": labels,
                                             "server_cpu_us_per_call": cpu}
    ratio_goal_lat, ratio_goal_rps = 1.25, 0.7
    targets = [
        TargetCheck("Warm Invoke p50 vs echo p50 (concurrency 1)", f"≤ {ratio_goal_lat}× echo",
                    f"{lat_ratio:.2f}× ({ms(warm_all.p50_us)} vs {ms(statistics.median(floor_p50))} ms, the faster "
                    "echo placement in each round; rounds: " + ", ".join(f"{x:.2f}" for x in lat_ratios) + ")",
                    lat_ratio <= ratio_goal_lat),
        TargetCheck(f"Warm Invoke throughput at {top} in flight vs echo", f"≥ {ratio_goal_rps}× echo",
                    f"{rps_ratio:.2f}× ({statistics.median(r.rps for r in tput[('warm', top, cfg.client)]):,.0f}"
                    f" vs {statistics.median(floor_rps):,.0f} calls/s, the faster echo placement in each round; "
                    "rounds: " + ", ".join(f"{x:.2f}" for x in rps_ratios) + ")", rps_ratio >= ratio_goal_rps),
    ]
    notes = [
        f"{cfg.rounds} rounds; each round measures echo and warm latency ({cfg.calls} timed calls each after "
        f"{cfg.warmup_calls} untimed, in alternating blocks of {cfg.block}), then throughput at "
        f"{', '.join(map(str, cfg.concurrency))} in flight: " + (
            f"one `aio` client process loads the servers in turn, {cfg.tput_cycles} cycles (echo, warm, then warm, "
            f"echo, ...; at {top} in flight the one-CPU echo too), each server's turn {cfg.tput_window_warmup_s:g} s "
            f"of load and then a {cfg.tput_window_s:g} s window whose completed calls are counted, so that a swing "
            "of the host's load hits every server alike; the `threads` client and DRY_RUN run "
            if cfg.client == "aio" else "") +
        f"{cfg.seconds:g} s windows after {cfg.warmup_s:g} s of load, each from a client process of its own. "
        "Which server goes first alternates from round to round. "
        "Ratios are taken per round; the targets are judged on their median.",
        "Both servers receive the same bytes: the serialised InvokeRequest of the no-op function "
        "(`def handler(e, c): return None`, payload `{}`). The echo server returns them unparsed.",
        f"Throughput client of record: `{cfg.client}`; `aio` is one grpc.aio channel with N coroutines, "
        "`threads` is N threads sharing one sync channel, each in a process of its own. Both are measured at "
        f"{top} in flight: " + _client_comparison(tput, top) + ".",
        "CPU quota of the function's environments (cgroup cpu.stat, all rounds): " + "; ".join(
            f"{phase.removeprefix('warm ')}: {t} of {p} periods throttled ({ns / 1e6:.0f} ms)"
            for phase, (p, t, ns) in throttling.items()) + ". The echo server has no quota.",
        f"Environments of the no-op function: {envs_before} before round 1, {envs_after} at the end. "
        f"Start kinds of the {sum(kinds.values())} timed latency calls: {_kinds(kinds)}.",
        _placement_note(latency, by_echo, p50_ratios, other_kinds, top, cfg.client),
        "Reply polling (`--reply-poll-us`, default 200 µs) is on in the agent of record; at concurrency 1 it "
        "reads the sandbox's reply without sleeping. The row 'reply polling off' is a second agent started with "
        "`--reply-poll-us 0`, measured in the same alternating blocks: p50 "
        f"{statistics.median(p50_ratios('warm-nopoll')):.2f}× the floor (rounds: "
        + ", ".join(f"{x:.2f}" for x in p50_ratios("warm-nopoll"))
        + f"), start kinds {_kinds(other_kinds['warm-nopoll'])}. Under concurrent load a poll yields at once to "
        "the other work (one look at the event loop's selector), so the throughput rows stand for both.",
        "The row 'DRY_RUN Invoke (no sandbox)' is the agent of record answering the same request with "
        "`invocation_type DRY_RUN`: protobuf, the servicer, validation, a request id and the response, and no "
        "environment. It is measured in the same alternating latency blocks and, at "
        f"{top} in flight, after echo and warm in each round: p50 {statistics.median(dry_lat):.2f}× the floor "
        "(rounds: " + ", ".join(f"{x:.2f}" for x in dry_lat) + f"), throughput {statistics.median(dry_rps):.2f}× "
        "the floor "
        "(rounds: " + ", ".join(f"{x:.2f}" for x in dry_rps) + "). This is the part of each gap to echo that "
        "no sandbox work can win back; a warm call adds the round trip to its environment and its accounting "
        "(CPU and memory reads, usage, platform log lines) on top.",
        _inside_note(warm_all, dry_all, inside_p50, wakeup_us),
        *_cpu_note(tput_data, top, cfg.client),
    ]
    return Section(
        "warm", "Floor (gRPC echo) and warm Invoke", notes,
        [Table(SUMMARY_HEADER, [summary_row(LATENCY_ROWS[name], pooled[name]) for name in LATENCY_ROWS
                                if name in pooled],
               "Latency at concurrency 1: sync grpc client in the benchmark process, all rounds pooled."),
         Table(["round", "echo p50", "echo (one CPU) p50", "warm p50", "warm p99", "p50 ratio",
                f"echo calls/s @{top}", f"echo (one CPU) calls/s @{top}", f"warm calls/s @{top}",
                "throughput ratio"], per_round,
               "Per round (latency in ms); ratios against the faster echo placement of the round."),
         Table(["server", "in flight", "client", "calls/s (median)", "calls/s per round", "p50 ms",
                "p99 ms", "server CPU µs per call", "errors", "start kinds"], tput_rows,
               "Throughput; p50/p99 are the latency of each call under that load, rounds pooled. Server CPU: "
               "the server process's CPU time (all threads, schedstat) inside the counted windows per call "
               "completed in them, median of rounds; the sandboxes' CPU is not in it.")],
        targets,
        {"echo": dataclasses.asdict(echo_all), "warm": dataclasses.asdict(warm_all),
         **{f"latency_{name.replace('-', '_')}": dataclasses.asdict(pooled[name]) for name in pooled},
         "warm_nopoll": dataclasses.asdict(pooled["warm-nopoll"]), "floor_p50_us": floor_p50, "floor_rps": floor_rps,
         "warm_vs_each_echo": {e: {"p50_ratio": lat, "throughput_ratio": rps} for e, (lat, rps) in by_echo.items()},
         "nopoll_p50_ratios": p50_ratios("warm-nopoll"), "p50_ratios": lat_ratios,
         "dry_run": dataclasses.asdict(dry_all), "dry_run_p50_ratios": dry_lat, "dry_run_throughput_ratios": dry_rps,
         "throughput_ratios": rps_ratios, "throughput": tput_data, "start_kinds": kinds,
         "invoker_total_us_p50": inside_p50[0], "handler_us_p50": inside_p50[1], "wakeup_rtt_us": wakeup_us,
         "cpu_throttling": {k: {"periods": p, "throttled": t, "throttled_ms": ns / 1e6}
                            for k, (p, t, ns) in throttling.items()},
         "_echo_ns": [x for r in latency["echo"] for x in r], "_warm_ns": [x for r in latency["warm"] for x in r],
         "_nopoll_ns": [x for r in latency["warm-nopoll"] for x in r], "_dry_ns": [x for r in latency["dry"] for x in r]})


def _cpu_note(tput_data: dict, top: int, client: str) -> list[str]:
    """What each server spends per call at the top concurrency (none when
    the windows were not metered)."""
    cpu = {name: tput_data.get(f"{name}/{top}/{client}", {}).get("server_cpu_us_per_call", 0)
           for name in ("echo", "echo1", "dry", "warm")}
    if not cpu["warm"] or not cpu["echo"]:
        return []
    rps = {name: tput_data.get(f"{name}/{top}/{client}", {}).get("rps_median", 0) for name in cpu}
    cheaper = min(v for k, v in cpu.items() if k.startswith("echo") and v)
    busy = "; ".join(f"{LATENCY_ROWS[name]} {rps[name] * cpu[name] / 1e6:.2f}" for name in cpu if cpu[name])
    return [f"CPU per call at {top} in flight (`{client}`, the server process's own, median of rounds): echo "
            f"{cpu['echo']:.0f} µs" + (f" (threads on one CPU: {cpu['echo1']:.0f} µs)" if cpu["echo1"] else "")
            + f", DRY_RUN {cpu['dry']:.0f} µs, warm Invoke {cpu['warm']:.0f} µs. Each server is bound by about "
            f"one CPU here (calls/s × CPU per call, in CPUs: {busy}), so the throughput ratio follows the ratio "
            f"of CPU per call: {cheaper / cpu['warm']:.2f} for the cheaper echo against warm."]


LATENCY_ROWS = {"echo": "echo (floor)", "echo1": "echo, threads on one CPU (floor)", "warm": "warm Invoke",
                "warm-nopoll": "warm Invoke, reply polling off",
                "warm-spread": "warm Invoke, agent threads placed by the scheduler",
                "dry": "DRY_RUN Invoke (no sandbox)"}


def _placement_note(latency, by_echo: dict, p50_ratios, other_kinds: dict, top: int, client: str) -> str:
    """What the agent's thread placement (--agent-cpu) is worth, and how the floor treats it."""
    if "echo1" not in latency:
        return ("One CPU: the agent's threads and the echo server's run where the only CPU is; "
                "--agent-cpu changes nothing here.")
    spread = p50_ratios("warm-spread")
    each = "; ".join(f"against {'echo on one CPU' if e == 'echo1' else 'echo as the scheduler places it'} alone "
                     f"{lat:.2f}× p50 and {rps:.2f}× throughput at {top}" for e, (lat, rps) in by_echo.items())
    return ("The agent runs its own threads (event loop, gRPC's) on one CPU (`--agent-cpu`, default auto) and "
            "its sandboxes on all. To keep that from being an advantage the floor lacks, the echo server runs "
            "twice, as the scheduler places it and with every thread on the agent's CPU ('echo, threads on one "
            f"CPU'; its throughput at {top} in flight, {client} client, after the others in each round), and the "
            f"targets use the faster of the two in each round. Warm Invoke {each}. The row 'agent threads placed "
            "by the scheduler' is a third agent started with `--agent-cpu none`, in the same alternating blocks: "
            f"p50 {statistics.median(spread):.2f}× the floor (rounds: " + ", ".join(f"{x:.2f}" for x in spread)
            + f"), start kinds {_kinds(other_kinds['warm-spread'])}.")


def _inside_note(warm: Summary, dry: Summary, inside_p50: list[float], wakeup_us: dict[str, float]) -> str:
    total, handler = inside_p50
    floor = ", ".join(f"{us:.0f} µs {name}" for name, us in wakeup_us.items())
    return (f"Where a warm call's time goes at concurrency 1 (medians of the timed calls): {ms(warm.p50_us)} ms "
            f"end to end, of which {total / 1e3:.3f} ms inside the invoker (the response's `timings.total_us`: "
            f"from taking the call to accounting for it, the environment's round trip included) and "
            f"{handler / 1e3:.3f} ms in the handler; the rest is gRPC, protobuf and the servicer, which DRY_RUN "
            f"({ms(dry.p50_us)} ms) pays too. The floor of the sandbox hop on this machine: one byte sent to "
            f"another process over a Unix socketpair and back takes {floor} (bench/host.py `wakeup_rtt_us`, "
            "medians); waking a process on another CPU is the price, and every warm call pays it at least once "
            "(the bootstrap sleeps between events).")


def _client_comparison(tput, top: int) -> str:
    parts = []
    for name in ("echo", "warm"):
        rps = {client: statistics.median(r.rps for r in runs)
               for (n, c, client), runs in tput.items() if n == name and c == top}
        if len(rps) > 1:
            best = max(rps, key=rps.get)
            parts.append(f"{name} " + " vs ".join(f"{k} {v:,.0f}" for k, v in sorted(rps.items()))
                         + f" calls/s ({best} higher)")
    return "; ".join(parts) or "only one client measured"


# -- 3: cold ------------------------------------------------------------------------
COLD_PHASES = ("sandbox_us", "code_load_us", "init_us", "handler_us", "total_us")


def cold_section(cfg, samples) -> Section:
    client = Summary.of([s.client_ns for s in samples])
    phases = {p: Summary.of([getattr(s, p) * 1000 for s in samples]) for p in COLD_PHASES}
    # What neither the sandbox nor the handler explains: gRPC, the agent's own
    # work and the control-socket round trips, per sample.
    other = Summary.of([s.client_ns - (s.init_us + s.handler_us) * 1000 for s in samples])
    kinds: dict[str, int] = {}
    for s in samples:
        kinds[s.kind] = kinds.get(s.kind, 0) + 1
    rows = [summary_row("Invoke, client-observed", client)]
    names = {"sandbox_us": "sandbox (nsjail + interpreter start)", "code_load_us": "code load (import handler)",
             "init_us": "init = sandbox + code load", "handler_us": "handler",
             "total_us": "agent total (request in to response out)"}
    rows += [summary_row(f"timings.{p} — {names[p]}", phases[p]) for p in COLD_PHASES]
    rows.append(summary_row("client − init − handler (gRPC + agent)", other))
    targets = [
        TargetCheck("Python cold Invoke p50 (issue floor)", "≤ 30 ms", f"{ms(client.p50_us)} ms",
                    client.p50_us <= 30_000),
        TargetCheck("Python cold Invoke p50 (later target)", "≤ 25 ms", f"{ms(client.p50_us)} ms",
                    client.p50_us <= 25_000),
    ]
    notes = [
        f"{len(samples)} cold invokes of the no-op function (after 5 untimed), interleaved with the peers "
        "below. Before each one, "
        "UpdateFunctionConfiguration changes the description, which retires the idle environment, so the "
        f"Invoke must start a new one; the benchmark then waits {cfg.cold_settle_s * 1000:.0f} ms so the old "
        "environment's teardown is not billed to the new start. Only the Invoke call is timed.",
        f"Start kinds reported by the agent: {_kinds(kinds)} (every sample must be COLD).",
        "The phase rows are the response's `timings` field; their p50/p99 are over the same samples.",
    ]
    return Section("cold", "Cold Invoke (new environment every time)", notes,
                   [Table(SUMMARY_HEADER, rows, "Python 3.11 no-op function, one call at a time.")], targets,
                   {"client": dataclasses.asdict(client), "other": dataclasses.asdict(other), "start_kinds": kinds,
                    "phases": {p: dataclasses.asdict(s) for p, s in phases.items()},
                    "_client_ns": [s.client_ns for s in samples],
                    "_phases_us": {p: [getattr(s, p) for s in samples] for p in COLD_PHASES}})


# -- 4: peers -----------------------------------------------------------------------
def peers_section(cfg, nsjail_ns: list[int], bare_ns: list[int], results: dict) -> Section:
    nsj, bare = Summary.of(nsjail_ns), Summary.of(bare_ns)
    rows = [summary_row("fresh nsjail + python3 -S per request", nsj),
            summary_row("subprocess.run(python3 -S -c pass)", bare)]
    notes = [f"{len(nsjail_ns)} runs each (after 5 untimed), interleaved with the cold Invokes above (one cold "
             "Invoke, one nsjail run, one bare run, in turn), timed around `subprocess.run` from the benchmark "
             "process; output checked on every run.",
             "nsjail: `-Mo -Q --disable_clone_newuser -u 65534 -g 65534 -R /usr -R /lib -R /lib64 -R /bin` "
             "with nsjail's default namespaces (pid, mount, ipc, uts, net, cgroup), running "
             "`python3.11 -S -c 'import json,sys; print(json.dumps(None))'`."]
    comparison = []
    cold = results.get("cold", {}).get("client")
    warm = results.get("warm", {}).get("warm")
    for label, s in (("agent, cold Invoke", cold), ("agent, warm Invoke", warm)):
        if s:
            comparison.append([label, ms(s["p50_us"]), ms(s["p99_us"]), f"{s['p50_us'] / nsj.p50_us:.2f}×"])
    comparison += [["fresh nsjail + python3", ms(nsj.p50_us), ms(nsj.p99_us), "1.00×"],
                   ["python3 subprocess (no sandbox)", ms(bare.p50_us), ms(bare.p99_us),
                    f"{bare.p50_us / nsj.p50_us:.2f}×"]]
    tables = [Table(SUMMARY_HEADER, rows, "One process per request."),
              Table(["", "p50 ms", "p99 ms", "p50 vs nsjail peer"], comparison,
                    "The agent against the peers, same run (a full gRPC round trip for the agent, a fork/exec "
                    "and wait for the peers).")]
    return Section("peers", "Peer baseline: a process per request", notes, tables, [],
                   {"nsjail_python": dataclasses.asdict(nsj), "subprocess_python": dataclasses.asdict(bare),
                    "_nsjail_ns": nsjail_ns, "_bare_ns": bare_ns})


# -- rendering --------------------------------------------------------------------
def _table(t: Table) -> list[str]:
    out = [f"*{t.caption}*", ""] if t.caption else []
    out.append("| " + " | ".join(t.header) + " |")
    # Right-align the columns of figures, left-align the columns of words.
    def numeric(i: int) -> bool:
        cells = [row[i] for row in t.rows if row[i] not in ("", "-")]
        return bool(cells) and all(c[0].isdigit() for c in cells)

    out.append("|" + "|".join("---:" if numeric(i) else "---" for i in range(len(t.header))) + "|")
    out += ["| " + " | ".join(row) + " |" for row in t.rows]
    return out + [""]


def render(machine: dict, cfg, sections: list[Section], plots: list[Path], base: Path, quick: bool,
           busy_note: str = "") -> str:
    out = ["# Invoke path benchmarks", "",
           "Written by `.venv/bin/python bench/run.py` (`make bench`). Every figure comes from one run on "
           "the machine below; regenerate, do not edit. Latencies in milliseconds; p50/p99 are nearest-rank "
           "percentiles.", ""]
    if quick:
        out += ["> **--quick run: too few samples to judge anything; a smoke test only.**", ""]
    out += ["## Machine", "", "| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in machine.items()] + [""]
    checks = [t for s in sections for t in s.targets]
    out += ["## Targets", ""]
    if busy_note:
        out += [f"> **{busy_note}**", ""]
    if checks:
        out += _table(Table(["target", "goal", "measured", "status"],
                            [[t.name, t.goal, t.measured, "**met**" if t.met else "**NOT MET**"] for t in checks]))
        out += [f"{sum(t.met for t in checks)} of {len(checks)} targets met.", ""]
    for s in sections:
        out += [f"## {s.title}", ""]
        for t in s.tables:
            out += _table(t)
        out += [f"- {n}" for n in s.notes] + [""]
    if plots:
        out += ["## Plots", ""] + [f"![{p.stem}]({os.path.relpath(p, base)})" for p in plots] + [""]
    out += ["## Reproduce", "", "```sh",
            ".venv/bin/python bench/run.py              # this report (make bench: setup-test, then this)",
            ".venv/bin/pytest bench/ --benchmark-only   # pytest-benchmark entry points",
            "```", "", f"Configuration of this run: `{dataclasses.asdict(cfg)}`.", ""]
    return "\n".join(out)


def targets_summary(sections: list[Section]) -> str:
    lines = [f"{'MET    ' if t.met else 'NOT MET'}  {t.name}: {t.measured} (goal {t.goal})"
             for s in sections for t in s.targets]
    return "\n".join(lines) or "no targets judged"
