"""Fresh environment per call: every Invoke in a sandbox of its own.

A function created with ``fresh_environment_per_call`` never reuses an
environment: the agent destroys it when the call ends, and the next call
takes a stem cell (a sandbox with the interpreter already loaded, start kind
PREWARMED) or, when none is ready, starts one (COLD). Nothing a call leaves
behind, in memory or in /tmp, reaches the next one. One agent with
``--stem-cells 2``, two functions with the same handler, which counts its
calls in a global and appends a byte to /tmp/mark:

paced         one call at a time, each after the stem cell pool is full again
              (as the prewarmed section samples); taking turns with a call of
              the same handler in an ordinary (reused) environment after the
              same pause
steady rate   one call every 1/``FRESH_RATE`` s for ``seconds`` (a function
              called at a steady pace, well below what the host can start)
back to back  one call at a time with no pause, for ``seconds``: each call
              also waits for its predecessor's cell to be replaced
in flight     ``FRESH_IN_FLIGHT`` calls in flight for ``seconds``: sustained
              churn, one sandbox started and one torn down per call

Every response is checked: a fresh call must answer [1, 1] (first call of
its process, first byte in its /tmp); the reused function's answers grow.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter

import churn
import workloads
from host import progress
from loadgen import Summary
from report import SUMMARY_HEADER, Section, Table, ms, summary_row
from runtime.core.pools import STEM_MAX_FACTOR
from runtime.v1 import invoker_pb2
from stemcells import QUIET_S, SETTLE_S, STEM_CELLS, StemPool

SOURCE = ("CALLS = 0\n\ndef handler(event, context):\n    global CALLS\n    CALLS += 1\n"
          "    with open('/tmp/mark', 'a') as f:\n        f.write('x')\n"
          "    with open('/tmp/mark') as f:\n        return [CALLS, len(f.read())]\n")
FRESH, REUSED = "fresh-per-call", "fresh-control"
FRESH_IN_FLIGHT = 4
FRESH_RATE = 20.0            # calls per second, steady


@dataclasses.dataclass
class Call:
    client_ns: int
    kind: str
    body: list | None
    init_us: int


def _call(agent: workloads.AgentUnderTest, request: bytes) -> Call:
    t0 = time.perf_counter_ns()
    raw = agent.invoke_raw(request, timeout=60)
    client_ns = time.perf_counter_ns() - t0
    resp = invoker_pb2.InvokeResponse.FromString(raw)
    kind = workloads.start_kind(raw)
    try:
        body = json.loads(resp.payload)
    except ValueError:
        body = None
    return Call(client_ns, kind, body, resp.timings.init_us)


def _carried(calls: list[Call]) -> int:
    """Fresh calls that saw an earlier call's state."""
    return sum(1 for c in calls if c.body != [1, 1])


def section_fresh(ctx) -> Section:
    cfg = ctx.cfg
    agent = workloads.AgentUnderTest(("--stem-cells", str(STEM_CELLS), "--metrics-listen", "127.0.0.1:0")).start()
    try:
        agent.deploy(FRESH, source=SOURCE, fresh_environment_per_call=True)
        agent.deploy(REUSED, source=SOURCE)
        pool = StemPool(agent)
        pool.wait_full(STEM_CELLS, timeout_s=15)
        fresh_req, reused_req = workloads.invoke_request(FRESH), workloads.invoke_request(REUSED)
        paced: dict[str, list[Call]] = {"fresh": [], "reused": []}
        n = cfg.prewarm_samples
        progress(f"fresh: {n} paced calls of each function, taking turns")
        for i in range(5 + n):
            time.sleep(SETTLE_S)
            pool.wait_full(STEM_CELLS)
            time.sleep(QUIET_S)
            f = _call(agent, fresh_req)
            time.sleep(SETTLE_S + QUIET_S)
            r = _call(agent, reused_req)
            if i >= 5:
                paced["fresh"].append(f)
                paced["reused"].append(r)
        progress(f"fresh: {FRESH_RATE:g} calls/s for {cfg.seconds:g} s")
        pool.wait_full(STEM_CELLS)
        steady: list[Call] = []
        t0 = time.monotonic()
        for k in range(int(cfg.seconds * FRESH_RATE)):
            time.sleep(max(0.0, t0 + k / FRESH_RATE - time.monotonic()))
            steady.append(_call(agent, fresh_req))
        time.sleep(0.5)
        progress(f"fresh: back to back for {cfg.seconds:g} s")
        pool.wait_full(STEM_CELLS)
        back: list[Call] = []
        t0 = time.monotonic()
        while time.monotonic() - t0 < cfg.seconds:
            back.append(_call(agent, fresh_req))
        back_s = time.monotonic() - t0
        time.sleep(1.0)
        pool.wait_full(STEM_CELLS)
        progress(f"fresh: {FRESH_IN_FLIGHT} in flight for {cfg.seconds:g} s")
        t_go, records, _ = churn.run_requests(agent, [fresh_req] * 100_000, FRESH_IN_FLIGHT, cfg.seconds)
        starts = {k: v for k, v in agent.scrape().items() if k.startswith("runtime_starts_total{")}
        cleanup = agent.stop_checked()
    except BaseException:
        agent.stop()
        raise
    end = t_go + int(cfg.seconds * 1e9)
    inside = [(t1 - t0, resp, err) for t0, t1, resp, err in records if t1 <= end]
    flight_kinds = Counter(churn._label(resp, err) for _, resp, err in inside)
    flight_carried = sum(1 for _, resp, err in inside
                         if not err and json.loads(invoker_pb2.InvokeResponse.FromString(resp).payload) != [1, 1])
    return _section(cfg, paced, steady, back, back_s, inside, flight_kinds, flight_carried, starts, cleanup)


def _kinds(calls) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(Counter(c.kind for c in calls).items()))


def _section(cfg, paced, steady, back, back_s, inside, flight_kinds, flight_carried, starts, cleanup) -> Section:
    fresh, reused = paced["fresh"], paced["reused"]
    s_fresh = Summary.of([c.client_ns for c in fresh])
    s_reused = Summary.of([c.client_ns for c in reused])
    s_steady = Summary.of([c.client_ns for c in steady])
    s_back = Summary.of([c.client_ns for c in back])
    s_flight = Summary.of([ns for ns, _, err in inside if not err])
    prewarmed = [c for c in fresh if c.kind == "PREWARMED"]
    rows = [summary_row("fresh per call, paced: Invoke, client-observed", s_fresh),
            summary_row("  timings.init_us (specialising the stem cell)",
                        Summary.of([c.init_us * 1000 for c in fresh])),
            summary_row("same handler, reused environment, after the same pause", s_reused),
            summary_row(f"fresh per call, {FRESH_RATE:g} calls/s", s_steady),
            summary_row("fresh per call, back to back", s_back),
            summary_row(f"fresh per call, {FRESH_IN_FLIGHT} in flight (latency under that load)", s_flight)]
    rates = [["paced (pool full before each call)", str(len(fresh)), "-", _kinds(fresh),
              f"{_carried(fresh)} of {len(fresh)}"],
             [f"steady, {FRESH_RATE:g} calls/s", str(len(steady)), f"{FRESH_RATE:g}", _kinds(steady),
              f"{_carried(steady)} of {len(steady)}"],
             ["back to back, one at a time", str(len(back)), f"{len(back) / back_s:.1f}", _kinds(back),
              f"{_carried(back)} of {len(back)}"],
             [f"{FRESH_IN_FLIGHT} in flight", str(len(inside)), f"{len(inside) / cfg.seconds:.1f}",
              ", ".join(f"{k} {v}" for k, v in sorted(flight_kinds.items())),
              f"{flight_carried} of {len(inside)}"]]
    grown = reused[-1].body if reused else None
    notes = [
        f"Agent: `--stem-cells {STEM_CELLS} --metrics-listen 127.0.0.1:0`; Python 3.11, 128 MB. The handler "
        "counts its calls in a global and appends a byte to /tmp/mark, and returns both counts.",
        f"Paced: {len(fresh)} calls of each function after 5 untimed, taking turns. Before a fresh call: "
        f"{SETTLE_S * 1000:.0f} ms, then until {STEM_CELLS} stem cells are ready, then {QUIET_S * 1000:.0f} ms; "
        f"before a reused call, {(SETTLE_S + QUIET_S) * 1000:.0f} ms. Sync gRPC client in the benchmark process. "
        f"Fresh p50 is {s_fresh.p50_us / max(1, s_reused.p50_us):.1f}× the reused environment's "
        f"({ms(s_fresh.p50_us)} vs {ms(s_reused.p50_us)} ms); {len(prewarmed)} of {len(fresh)} were PREWARMED.",
        f"Steady: a call every {1000 / FRESH_RATE:.0f} ms for {cfg.seconds:g} s, each timed from when it "
        "was sent. Back to back: one call at a time for "
        f"{back_s:.1f} s. A taken stem cell is replaced once its call is answered (or 100 ms after it was "
        f"taken, if the call runs longer); while cells are taken quickly the pool grows beyond {STEM_CELLS} "
        f"(up to {STEM_MAX_FACTOR * STEM_CELLS}: runtime/core/pools.py, STEM_LEAD_S); a call that comes "
        "while the pool is empty starts cold.",
        f"In flight: {FRESH_IN_FLIGHT} calls in flight for {cfg.seconds:g} s from a client process of its own "
        "(grpc.aio); calls completed inside the window. Each is a sandbox started, one invocation, a sandbox "
        "destroyed: sustained churn, unlike the creation section, where nothing is torn down.",
        "State carried: fresh answers other than [1, 1] (a later call of the same process, or a /tmp someone "
        f"wrote before). The reused function's last answer was {grown} (calls and bytes of its environments "
        "add up, as they should).",
        "Agent counters at the end: " + ", ".join(f"{k.split('{')[1].rstrip('}')} = {v:.0f}"
                                                  for k, v in starts.items() if v) + ".",
        cleanup + ".",
    ]
    return Section(
        "fresh", "Fresh environment per call", notes,
        [Table(SUMMARY_HEADER, rows, "Python 3.11 handler above; one call at a time unless stated."),
         Table(["mode", "calls", "calls/s", "start kinds", "state carried"], rates,
               "What each mode sustains, and that no call saw another's state.")],
        [],
        {"paced": {"fresh": dataclasses.asdict(s_fresh), "reused": dataclasses.asdict(s_reused),
                   "kinds": dict(Counter(c.kind for c in fresh))},
         "steady": {"calls_per_s": FRESH_RATE, "latency": dataclasses.asdict(s_steady),
                    "kinds": dict(Counter(c.kind for c in steady))},
         "back_to_back": {"latency": dataclasses.asdict(s_back), "calls_per_s": len(back) / back_s,
                          "kinds": dict(Counter(c.kind for c in back))},
         "in_flight": {"concurrency": FRESH_IN_FLIGHT, "latency": dataclasses.asdict(s_flight),
                       "calls_per_s": len(inside) / cfg.seconds, "kinds": dict(flight_kinds)},
         "state_carried": _carried(fresh) + _carried(steady) + _carried(back) + flight_carried})
