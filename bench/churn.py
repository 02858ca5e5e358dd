"""Many new environments at once: the creation rate, and a burst of cold invokes.

creation  How many environments per second one agent starts and gets ready,
          sustained for ``creation_seconds``: N distinct no-op functions are
          deployed (one shared zip), then a client keeps C Invokes in flight,
          each to a function never invoked before, so every call needs a new
          environment (start kind COLD). The rate is the number of COLD
          responses completed inside the window, divided by its length;
          the agent's ``runtime_starts_total{kind="cold"}`` counter is read
          before and after as a cross-check. Nothing is reaped meanwhile
          (keep-alive 600 s): this is creation alone.
burst     100 concurrent first Invokes of one cold function, no stem cells:
          time until all are answered, errors, start-kind mix. Also with a
          handler that sleeps 1 s, which makes every call need an
          environment of its own (100 environments at once).

Clients run in a spawned process of their own (grpc.aio, requests built
before the clock starts); the same process samples the agent's CPU time at
the window's edges, so the CPU figures cover the window exactly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import multiprocessing
import os
import statistics
import time
from collections import Counter

import grpc

import loadgen
import workloads
import host
from host import progress, wait_for_idle
from loadgen import Summary
from report import Section, Table, TargetCheck, ms

CREATION_GOAL = 100.0        # environments per second on 2 cores
SLEEP_SOURCE = "import time\n\ndef handler(e, c):\n    time.sleep(e.get('sleep', 0))\n    return None\n"
TICK = os.sysconf("SC_CLK_TCK")


# -- the client (runs in its own process) ------------------------------------------
def _cpu(pid: int) -> tuple[int, int, int, int, float]:
    """(agent process ticks, its main thread's ticks, host busy ticks, host total ticks,
    CPU seconds of this client process)."""
    def ticks(path: str) -> int:
        with open(path) as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return int(rest[11]) + int(rest[12])
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    return (ticks(f"/proc/{pid}/stat"), ticks(f"/proc/{pid}/task/{pid}/stat"),
            sum(fields) - fields[3] - fields[4], sum(fields), time.process_time())


def _child(conn, address: str, requests: list[bytes], concurrency: int, seconds: float, watch_pid: int) -> None:
    async def main():
        async with grpc.aio.insecure_channel(address, options=loadgen.CHANNEL_OPTIONS) as channel:
            await asyncio.wait_for(channel.channel_ready(), 30)
            call = channel.unary_unary(workloads.INVOKE_METHOD, request_serializer=None,
                                       response_deserializer=None)
            pending, records, clock = iter(requests), [], time.perf_counter_ns
            cpu = [_cpu(watch_pid)]
            t_go = clock()
            end = t_go + int(seconds * 1e9)

            async def slot():
                for req in pending:
                    t0 = clock()
                    if t0 >= end:
                        return
                    try:
                        resp, err = await call(req, timeout=120), ""
                    except grpc.aio.AioRpcError as exc:
                        resp, err = b"", f"{exc.code().name}: {exc.details()}"[:200]
                    records.append((t0, clock(), resp, err))

            async def meter():
                await asyncio.sleep(seconds)
                cpu.append(_cpu(watch_pid))

            metering = asyncio.ensure_future(meter())
            await asyncio.gather(*(slot() for _ in range(concurrency)))
            if not metering.done():             # every request answered before the window closed
                metering.cancel()
                cpu.append(_cpu(watch_pid))
            return t_go, records, cpu

    try:
        conn.send(asyncio.run(main()))
    except BaseException as exc:  # reported to the parent instead of a silent exit
        conn.send(RuntimeError(f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def run_requests(agent: workloads.AgentUnderTest, requests: list[bytes], concurrency: int, seconds: float):
    """Sends ``requests`` in order with ``concurrency`` in flight until they run
    out or ``seconds`` pass, from a spawned process. Returns (t_go, [(t0, t1,
    response, error)], [cpu at t_go, cpu at t_go + seconds])."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, agent.target, requests, concurrency, seconds,
                                            agent.proc.proc.pid), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(seconds + 300):
            raise TimeoutError("client process did not report")
        result = parent.recv()
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.kill()
    if isinstance(result, BaseException):
        raise RuntimeError(f"client process failed: {result!r}")
    return result


def _label(resp: bytes, err: str) -> str:
    return f"error {err.split(':')[0]}" if err else workloads.start_kind(resp)


# -- creation rate --------------------------------------------------------------------
@dataclasses.dataclass
class CreationRun:
    concurrency: int
    functions: int
    ready: int                  # COLD responses completed inside the window
    seconds: float
    per_second: list[int]
    kinds: dict[str, int]
    latency: Summary
    counter_delta: float
    envs_after: int
    agent_cpu: float            # cores used by the agent process over the window
    loop_cpu: float             # ... by its main (event-loop) thread
    host_cpu: float             # fraction of the whole host busy
    per_env_ms: dict            # CPU ms per environment: agent, nsjail, bootstrap, client, host
    teardown: dict              # stopping the agent: seconds, CPU seconds, ms per environment
    exhausted: bool
    cleanup: str

    @property
    def rate(self) -> float:
        return self.ready / self.seconds


def _cold_count(agent: workloads.AgentUnderTest) -> float:
    return sum(v for k, v in agent.scrape().items() if k.startswith("runtime_starts_total{") and 'kind="cold"' in k)


def _teardown(agent: workloads.AgentUnderTest, envs: int, limit_s: float) -> tuple[str, dict]:
    """Stops the agent (which destroys every environment) and waits until the
    host is quiet again: the kernel finishes tearing sandboxes down in its own
    threads (cgroup offlining, network namespace cleanup), after the processes
    are gone. Returns the stop check and what the teardown cost."""
    busy0, total0 = host._host_ticks()
    meter = host.CpuMeter()
    t0 = time.monotonic()
    cleanup = agent.stop_checked()
    stopped_s = time.monotonic() - t0
    progress(f"creation: {envs} environments destroyed in {stopped_s:.1f} s; waiting for the kernel to finish")
    wait_for_idle(limit_s, quiet_samples=2, sample_s=1.0)
    busy1, total1 = host._host_ticks()
    cpu_s = (busy1 - busy0) / TICK
    outside_s = meter.others() * (total1 - total0) / TICK
    return cleanup, {"stop_s": stopped_s, "until_quiet_s": time.monotonic() - t0, "cpu_s": cpu_s,
                     "outside_tree_cpu_s": outside_s, "ms_per_env": cpu_s * 1000 / max(1, envs)}


def creation_run(concurrency: int, seconds: float, settle_s: float) -> CreationRun:
    n = int(seconds * 250) + 200          # more than a 250/s agent could use
    agent = workloads.AgentUnderTest(("--max-environments", str(n + 50), "--memory-budget-mb", str((n + 50) * 128),
                                      "--metrics-listen", "127.0.0.1:0")).start()
    try:
        names = [f"churn-{i}" for i in range(n)]
        progress(f"creation: deploying {n} functions")
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(agent.deploy, names))
        requests = [workloads.invoke_request(name) for name in names]
        wait_for_idle(settle_s, quiet_samples=2, sample_s=1.0)   # CPU-bound: needs a quiet host
        before = _cold_count(agent)
        progress(f"creation: {seconds:g} s of first Invokes, {concurrency} in flight")
        t_go, records, cpu = run_requests(agent, requests, concurrency, seconds)
        delta = _cold_count(agent) - before
        boxes = agent.sandboxes()
        envs = len(boxes)
        # Every environment is still alive: its processes' CPU time is all it ever used.
        nsjail_ns = [host.cpu_ns(n) for n, _ in boxes]
        boot_ns = [sum(host.cpu_ns(k) for k in kids) for _, kids in boxes]
        cleanup, teardown = _teardown(agent, envs, 3 * settle_s)
    except BaseException:
        agent.stop()
        raise
    end = t_go + int(seconds * 1e9)
    inside = [(t1, _label(resp, err), t1 - t0) for t0, t1, resp, err in records if t1 <= end]
    per_second = [0] * int(seconds)
    for t1, kind, _ in inside:
        if kind == "COLD":
            per_second[min(int((t1 - t_go) / 1e9), len(per_second) - 1)] += 1
    (a0, m0, b0, h0, c0), (a1, m1, b1, h1, c1) = cpu[0], cpu[-1]
    span = (h1 - h0) / TICK / os.cpu_count() or 1.0
    ready = max(1, sum(per_second))
    per_env = {"agent (window)": (a1 - a0) / TICK * 1000 / ready,
               "nsjail supervisor": statistics.mean(nsjail_ns) / 1e6 if nsjail_ns else 0.0,
               "bootstrap (python3.11)": statistics.mean(boot_ns) / 1e6 if boot_ns else 0.0,
               "client process (window)": (c1 - c0) * 1000 / ready,
               "whole host busy (window)": (b1 - b0) / TICK * 1000 / ready}
    return CreationRun(concurrency, n, sum(per_second), seconds, per_second,
                       dict(Counter(k for _, k, _ in inside)),
                       Summary.of([lat for _, k, lat in inside if k == "COLD"]), delta, envs,
                       (a1 - a0) / TICK / span, (m1 - m0) / TICK / span, (b1 - b0) / max(1, h1 - h0),
                       per_env, teardown, len(records) >= n, cleanup)


def section_creation(ctx) -> Section:
    cfg = ctx.cfg
    fill_us, again_us = host.touch_cost_us()
    runs = [creation_run(c, cfg.creation_seconds, cfg.settle_s) for c in cfg.creation_concurrency]
    best = max(runs, key=lambda r: r.rate)
    rows = [[str(r.concurrency), f"{r.rate:.1f}", f"{min(r.per_second)} / {statistics.median(r.per_second):.0f} / "
             f"{max(r.per_second)}", ms(r.latency.p50_us), ms(r.latency.p99_us),
             ", ".join(f"{k} {v}" for k, v in sorted(r.kinds.items())), f"{r.counter_delta:.0f}", str(r.envs_after),
             f"{r.agent_cpu:.2f} ({r.loop_cpu:.2f})", f"{r.host_cpu:.0%}"] for r in runs]
    cpu_rows = [[what] + [f"{r.per_env_ms[what]:.1f}" for r in runs] for what in runs[0].per_env_ms]
    accounted = [sum(v for k, v in r.per_env_ms.items() if not k.startswith("whole")) for r in runs]
    cpu_rows.append(["rest: kernel threads, other processes"] + [
        f"{r.per_env_ms['whole host busy (window)'] - a:.1f}" for r, a in zip(runs, accounted)])
    cpu_rows.append(["teardown afterwards: whole host, from SIGTERM until quiet"] + [
        f"{r.teardown['ms_per_env']:.1f}" for r in runs])
    notes = [
        f"Per run a fresh agent (`--max-environments N+50 --memory-budget-mb (N+50)×128 --metrics-listen`, "
        f"keep-alive 600 s, no stem cells) with N = {runs[0].functions} no-op Python functions deployed (one "
        "shared zip). A client process keeps C Invokes in flight, each to a function not yet invoked, so every "
        f"call starts a new environment. Counted: COLD responses completed within the {cfg.creation_seconds:g} s "
        "window that opens when the client starts sending; an environment is ready before its response, so this "
        "is environments started and ready per second, end to end (nsjail, namespaces, cgroups, interpreter, "
        "handler import, one no-op invocation). Environments stay alive: nothing is torn down inside the window.",
        "Cross-check: the agent's `runtime_starts_total{kind=\"cold\"}` grew by the 'counter' column over the "
        "whole run (window plus the calls in flight when it closed).",
        "CPU: cores used by the agent process over the window (its event-loop thread in brackets), and how busy "
        "the whole host was. The event loop runs every request and environment event on one thread and spawns "
        "each nsjail itself (`subprocess.Popen`) until the agent holds 2048 descriptors (about 500 "
        "environments); from then on it hands each start to its spawner thread, whose descriptor table stays "
        "small (runtime/sandbox/spawner.py), and waits for it.",
        "CPU per environment: the agent's, the client's and the whole host's CPU time over the window divided by "
        "the environments that became ready in it; the nsjail supervisor's and the bootstrap's are the mean CPU "
        "time of each live one after the run (/proc/<pid>/task/*/schedstat; namespace, mount and cgroup set-up "
        "run in nsjail's context, the interpreter's start and imports in the bootstrap's). When the host is "
        "~100 % busy, 1000 ms × cores / (host ms per environment) is the ceiling on the rate.",
        "Each run starts when others have used at most 25 % of the host for 2 s in a row (or after "
        f"{cfg.settle_s:g} s of waiting): the rate is CPU-bound, and a busy neighbour lowers it directly.",
        "Teardown (not part of the rate): after the window the agent is stopped, destroying every "
        "environment, and the benchmark waits until the host is quiet again (2 s in a row with others at ≤ 25 %, "
        f"at most {3 * cfg.settle_s:g} s). " + "; ".join(
            f"C={r.concurrency}: {r.envs_after} environments, agent gone after {r.teardown['stop_s']:.1f} s, host "
            f"quiet after {r.teardown['until_quiet_s']:.0f} s, {r.teardown['cpu_s']:.1f} CPU-s in all "
            f"({r.teardown['outside_tree_cpu_s']:.1f} of them in kernel threads and other processes)"
            for r in runs) + ". That includes the 2 quiet seconds that end the wait. Sustained churn "
        "(a start and a teardown per environment) would pay both.",
        "The rate falls as environments accumulate (none is torn down inside the window): " + "; ".join(
            f"C={r.concurrency}: first 3 s {statistics.mean(r.per_second[:3]):.0f}/s, last 3 s "
            f"{statistics.mean(r.per_second[-3:]):.0f}/s with ~{r.envs_after} alive" for r in runs)
        + ". A host that reaps idle environments keeps fewer alive than this.",
        f"Memory on this host, measured before the runs by one process filling {len(fill_us)} new 512 MiB "
        "chunks and keeping them: CPU µs per 4 KiB page, chunk by chunk, "
        + ", ".join(f"{c:.1f}" for c in fill_us) + f"; {again_us:.1f} for 512 MiB again right after freeing "
        "them all. " + (
            "Memory unused for a while costs more than memory just freed: as on a virtual machine whose "
            "hypervisor populates guest memory lazily and takes free pages back, where such memory costs a trip "
            "through the hypervisor per page. Every environment keeps its own pages (see the memory section), "
            "so once the recently freed memory is used up, each new one pays the higher price on all of them. "
            if max(fill_us) > 2 * min(fill_us) else "Memory costs the same to fill whether or not it was used "
            "lately. ")
        + "Kernel work also grows with the number of live sandboxes: setting a CPU quota walks every CPU "
        "cgroup, and nsjail's pivot_root(2) visits every thread on the host.",
        f"Best: {best.rate:.1f} environments/s at {best.concurrency} in flight."
        + (" Some runs used every deployed function before the window closed: their rate is a lower bound."
           if any(r.exhausted for r in runs) else ""),
    ] + [f"C={r.concurrency}: {r.cleanup}." for r in runs]
    target = TargetCheck(f"Environment creation rate, Python, sustained {cfg.creation_seconds:g} s",
                         f"≥ {CREATION_GOAL:g}/s on {os.cpu_count()} cores",
                         f"{best.rate:.1f}/s (C={best.concurrency})", best.rate >= CREATION_GOAL)
    return Section(
        "creation", "Environment creation rate", notes,
        [Table(["in flight", "environments/s", "per second min / median / max", "cold Invoke p50 ms",
                "p99 ms", "responses in window", "counter", "alive after", "agent cores (loop)", "host busy"],
               rows, f"First Invokes of distinct functions for {cfg.creation_seconds:g} s."),
         Table(["CPU ms per environment"] + [f"C={r.concurrency}" for r in runs], cpu_rows,
               "Where the CPU of an environment start goes.")],
        [target],
        {"touch_us_per_page": {"fill": fill_us, "again": again_us},
         "runs": [{k: v for k, v in dataclasses.asdict(r).items() if k != "latency"}
                  | {"rate": r.rate, "latency": dataclasses.asdict(r.latency)} for r in runs],
         "best_rate": best.rate})


# -- burst -----------------------------------------------------------------------------
BURSTS = {  # function -> (label, source, payload)
    "burst-noop": ("no-op handler", workloads.NOOP_SOURCE, workloads.NOOP_PAYLOAD),
    "burst-sleep": ("handler sleeps 1 s (every call needs its own environment)", SLEEP_SOURCE, b'{"sleep": 1.0}'),
}


def _wait_no_environments(agent: workloads.AgentUnderTest, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while agent.environment_count():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{agent.environment_count()} environments still alive after {timeout_s} s")
        time.sleep(0.05)
    time.sleep(0.5)


def section_burst(ctx) -> Section:
    cfg = ctx.cfg
    size = cfg.burst_size
    agent = workloads.AgentUnderTest(("--max-environments", str(2 * size), "--memory-budget-mb",
                                      str(2 * size * 128))).start()
    bursts: list[dict] = []
    latencies: list[list[int]] = []
    try:
        for name, (_, source, _) in BURSTS.items():
            agent.deploy(name, source)
        for name, (label, _, payload) in BURSTS.items():
            request = workloads.invoke_request(name, payload=payload)
            for i in range(cfg.bursts if name == "burst-noop" else max(1, cfg.bursts - 1)):
                for other in BURSTS:   # retires every earlier burst's environments
                    workloads.force_cold(agent.client, other, len(bursts))
                _wait_no_environments(agent)
                wait_for_idle(cfg.settle_s, quiet_samples=1, sample_s=1.0)   # the kernel's teardown of the last one
                progress(f"burst: {size} concurrent first Invokes of {name} ({i + 1})")
                t_go, records, _ = run_requests(agent, [request] * size, size, 120)
                envs = agent.environment_count()
                lat = Summary.of([t1 - t0 for t0, t1, _, _ in records])
                bursts.append({"function": name, "label": label, "answered": len(records),
                               "all_answered_ms": (max(t1 for _, t1, _, _ in records) - t_go) / 1e6,
                               "send_spread_ms": (max(t0 for t0, _, _, _ in records) - t_go) / 1e6,
                               "errors": sum(1 for r in records if r[3]),
                               "error_samples": sorted({r[3] for r in records if r[3]})[:3],
                               "kinds": dict(Counter(_label(r[2], r[3]) for r in records)),
                               "environments": envs, "latency": dataclasses.asdict(lat)})
                latencies.append(sorted(t1 - t0 for t0, t1, _, _ in records))
        cleanup = agent.stop_checked()
    except BaseException:
        agent.stop()
        raise
    rows = [[b["label"], str(i + 1), f"{b['answered']} / {size}", ms(b["all_answered_ms"] * 1000),
             ms(b["latency"]["p50_us"]), ms(b["latency"]["max_us"]), str(b["errors"]),
             ", ".join(f"{k} {v}" for k, v in sorted(b["kinds"].items())), str(b["environments"]),
             f"{b['send_spread_ms']:.1f}"]
            for i, b in enumerate(bursts)]
    errors = sum(b["errors"] for b in bursts)
    noop = [b["all_answered_ms"] for b in bursts if b["function"] == "burst-noop"]
    notes = [
        f"Agent: `--max-environments {2 * size} --memory-budget-mb {2 * size * 128}`, no stem cells, default "
        f"timeout (3 s, which also bounds each environment's init). Each burst: {size} Invokes of one function "
        "launched at once from a grpc.aio client in a process of its own (one channel); the clock starts when "
        "the client starts sending. Before each burst the function's configuration is changed and the benchmark "
        "waits until no environment is left and the host is quiet (others ≤ 25 % for 1 s), so the burst meets a "
        "cold function and not the kernel still tearing down the previous burst.",
        "'environments' is how many environments the agent had after the burst: with a no-op handler the "
        "first environments are ready and idle again before the agent has even taken the later requests off "
        "the wire, so those run WARM on them; a 1 s handler keeps every environment busy, so every call starts "
        "one.",
        f"Errors in all bursts: {errors}" + (": " + "; ".join(e for b in bursts for e in b["error_samples"])
                                             if errors else "") + ".",
        cleanup + ".",
    ]
    target = TargetCheck(f"Burst: {size} concurrent first Invokes of a cold function, errors",
                         "0", f"{errors} errors in {len(bursts)} bursts (no-op: all answered in "
                         + ", ".join(f"{x:.0f}" for x in noop) + " ms)", errors == 0)
    return Section("burst", f"Burst: {size} concurrent first Invokes", notes,
                   [Table(["function", "burst", "answered", "all answered ms", "p50 ms", "max ms", "errors",
                           "start kinds", "environments", "send spread ms"], rows,
                          "Each row one burst; latencies are per call, from the client's send.")],
                   [target], {"bursts": bursts, "errors": errors, "_latency_ns": latencies})
