"""Load generation: latency loops, throughput runs, percentiles.

Reusable by every benchmark section:

``measure_latency(call, n)``
    Calls ``call()`` n times, one at a time, in this process, and returns the
    duration of each call in nanoseconds (time.perf_counter_ns). The caller
    builds the request beforehand and closes over it, so the loop times the
    RPC and nothing else.

``measure_latency_interleaved(calls, n)``
    The same for several servers at once, in short alternating blocks, so
    that their ratio survives a noisy host.

``measure_throughput(target, make_request, concurrency, seconds)``
    Keeps ``concurrency`` calls in flight for ``seconds`` from a *separate
    process* (multiprocessing, spawn) and returns completed calls per second
    plus the per-call latencies under load (and, for a target that names its
    process, that process's CPU time inside the window). A separate process
    so that the client's CPU time does not share a GIL with the benchmark
    orchestrator, and so that client state (channels, threads) cannot leak
    between runs.

``measure_throughput_interleaved(targets, make_request, concurrency, window_s, cycles)``
    The same for several servers from one client process, in short
    alternating windows, for ratios between servers on a noisy host.

Requests and responses are raw bytes on a channel with identity
(de)serialisers: the client pays no protobuf cost for the echo server nor for
the agent, so the client side is identical and the difference is the server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import multiprocessing
import threading
import time
from collections import Counter
from typing import Callable

import grpc

from host import cpu_ns

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 32 * 1024 * 1024),
    ("grpc.max_send_message_length", 32 * 1024 * 1024),
]


# -- statistics -----------------------------------------------------------------
def percentile(sorted_ns: list[int], q: float) -> int:
    """Nearest-rank percentile of an ascending list (q in 0..100)."""
    if not sorted_ns:
        return 0
    rank = max(1, min(len(sorted_ns), int(-(-q * len(sorted_ns) // 100))))
    return sorted_ns[rank - 1]


@dataclasses.dataclass(frozen=True)
class Summary:
    """Latency summary in microseconds (floats, for tables)."""

    n: int
    p50_us: float
    p90_us: float
    p99_us: float
    mean_us: float
    min_us: float
    max_us: float

    @classmethod
    def of(cls, ns: list[int]) -> "Summary":
        s = sorted(ns)
        if not s:
            return cls(0, 0, 0, 0, 0, 0, 0)
        return cls(len(s), percentile(s, 50) / 1e3, percentile(s, 90) / 1e3, percentile(s, 99) / 1e3,
                   sum(s) / len(s) / 1e3, s[0] / 1e3, s[-1] / 1e3)


@dataclasses.dataclass(frozen=True)
class Target:
    """A unary gRPC method to load: where, which method. Picklable."""

    address: str
    method: str
    pid: int = 0                # the server's process: its CPU time is metered per window (0: not metered)


@dataclasses.dataclass
class ThroughputResult:
    client: str                 # "aio" or "threads"
    concurrency: int
    calls: int                  # completed inside the measured window
    errors: int
    seconds: float              # length of the measured window
    latency_ns: list[int]       # each call completed inside the window
    labels: dict[str, int]      # inspect(response) -> count, e.g. start kinds
    server_cpu_ns: int = 0      # CPU time of the target's process (all threads) inside the window

    @property
    def server_cpu_us_per_call(self) -> float:
        return self.server_cpu_ns / 1e3 / self.calls if self.calls else 0.0

    @property
    def rps(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    @property
    def latency(self) -> Summary:
        return Summary.of(self.latency_ns)

    @classmethod
    def pooled(cls, results: list["ThroughputResult"]) -> "ThroughputResult":
        """Several windows of one server as one: calls and seconds added up."""
        labels: Counter = Counter()
        for r in results:
            labels.update(r.labels)
        return cls(results[0].client, results[0].concurrency, sum(r.calls for r in results),
                   sum(r.errors for r in results), sum(r.seconds for r in results),
                   [ns for r in results for ns in r.latency_ns], dict(labels),
                   sum(r.server_cpu_ns for r in results))


# -- latency --------------------------------------------------------------------
def raw_unary(channel: grpc.Channel, method: str):
    """A multi-callable sending and returning bytes (no serialisation)."""
    return channel.unary_unary(method, request_serializer=None, response_deserializer=None)


def measure_latency(call: Callable[[], object], n: int, warmup: int = 200,
                    responses: list | None = None) -> list[int]:
    """Durations in ns of ``n`` sequential calls, after ``warmup`` untimed ones.

    The cyclic GC is off inside the timed loop: a collection pause of this
    process would be billed to the server. Responses are appended to
    ``responses`` (when given) after the clock stops, for checking later.
    """
    for _ in range(warmup):
        call()
    out = [0] * n
    clock = time.perf_counter_ns
    gc.collect()
    gc.disable()
    try:
        for i in range(n):
            t0 = clock()
            resp = call()
            out[i] = clock() - t0
            if responses is not None:
                responses.append(resp)
    finally:
        gc.enable()
    return out


def measure_latency_interleaved(calls: dict[str, Callable[[], object]], n: int, block: int = 200,
                                warmup: int = 200, responses: dict[str, list] | None = None
                                ) -> dict[str, list[int]]:
    """``n`` timed calls of each of ``calls``, in alternating blocks of
    ``block`` (A B B A A B ...), after ``warmup`` untimed calls of each.

    On a shared host load comes and goes within seconds; short alternating
    blocks make every burst hit both sides alike, so their ratio holds even
    when the absolute figures move.
    """
    for call in calls.values():
        for _ in range(warmup):
            call()
    names = list(calls)
    out: dict[str, list[int]] = {name: [] for name in names}
    for b, start in enumerate(range(0, n, block)):
        for name in names if b % 2 == 0 else names[::-1]:
            out[name] += measure_latency(calls[name], min(block, n - start), 0,
                                         (responses or {}).get(name))
    return out


# -- throughput -----------------------------------------------------------------
def measure_throughput(target: Target, make_request: Callable[[int], bytes], concurrency: int,
                       seconds: float, warmup_s: float = 1.0, client: str = "aio",
                       inspect: Callable[[bytes], str] | None = None) -> ThroughputResult:
    """Completed calls per second with ``concurrency`` calls in flight.

    Runs in a spawned child process. ``make_request(i)`` builds the request of
    in-flight slot i, once, before the clock starts; ``inspect`` (optional)
    labels each response of the measured window, after the clock stops. Both
    must be picklable (module-level functions or functools.partial of them).

    client="aio": one grpc.aio channel, ``concurrency`` coroutines on one event
    loop, which is how an asyncio service would call the agent.
    client="threads": one sync channel shared by ``concurrency`` threads, the
    way a thread-pool service would.
    Calls are counted when they *complete* inside the window that follows
    ``warmup_s``; a call in flight when the window closes is not counted.
    """
    if client not in ("aio", "threads"):
        raise ValueError(f"client must be 'aio' or 'threads', not {client!r}")
    return _in_child(_child, target, make_request, concurrency, seconds, warmup_s, client, inspect,
                     timeout=warmup_s + seconds + 120, what=f"throughput child ({client}, c={concurrency})")


def measure_throughput_interleaved(targets: dict[str, Target], make_request: Callable[[int], bytes],
                                   concurrency: int, window_s: float, cycles: int, warmup_s: float = 0.2,
                                   inspect: dict[str, Callable[[bytes], str] | None] | None = None
                                   ) -> dict[str, ThroughputResult]:
    """Throughput of several servers in short alternating windows, from one
    client process (grpc.aio, one channel per server).

    Each cycle loads every server in turn (A B C, then C B A, ...): for
    ``warmup_s`` untimed, then for a ``window_s`` window whose completed calls
    are counted; the calls still in flight finish before the next server's
    turn, so only one server is loaded at a time. Load on a shared host comes
    and goes within seconds; with windows this short every swing hits all
    servers alike and their ratio holds, as in ``measure_latency_interleaved``.
    ``inspect`` maps a server to the labeller of its responses (optional).
    Returns each server's windows pooled into one result.
    """
    names = list(targets)
    return _in_child(_interleaved_child, targets, make_request, concurrency, window_s, cycles, warmup_s, inspect,
                     timeout=len(names) * cycles * (window_s + warmup_s + 5) + 120,
                     what=f"interleaved throughput child (c={concurrency}, {', '.join(names)})")


def _in_child(fn, *args, timeout: float, what: str):
    """``fn(*args)`` in a spawned process; its result, or its error raised here."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_report, args=(child, fn, *args), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout):
            raise TimeoutError(f"{what} did not report")
        result = parent.recv()
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.kill()
            proc.join()
    if isinstance(result, BaseException):
        raise RuntimeError(f"{what} failed: {result!r}") from result
    return result


def _report(conn, fn, *args) -> None:
    try:
        conn.send(fn(*args))
    except BaseException as exc:  # reported to the parent instead of a silent exit code
        conn.send(RuntimeError(f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def _child(target, make_request, concurrency, seconds, warmup_s, client, inspect) -> ThroughputResult:
    requests = [make_request(i) for i in range(concurrency)]
    run = _run_aio if client == "aio" else _run_threads
    start, end, per_slot, errors, cpu = run(target, requests, warmup_s, seconds)
    return _result(client, concurrency, start, end, per_slot, errors, inspect, cpu)


def _interleaved_child(targets, make_request, concurrency, window_s, cycles, warmup_s, inspect
                       ) -> dict[str, ThroughputResult]:
    requests = [make_request(i) for i in range(concurrency)]
    gc.disable()  # as in measure_latency: no collector pauses billed to the servers
    return asyncio.run(_interleaved(targets, requests, window_s, cycles, warmup_s, inspect))


async def _interleaved(targets, requests, window_s, cycles, warmup_s, inspect) -> dict[str, ThroughputResult]:
    channels = {name: grpc.aio.insecure_channel(t.address, options=CHANNEL_OPTIONS) for name, t in targets.items()}
    try:
        calls = {}
        for name, channel in channels.items():
            await asyncio.wait_for(channel.channel_ready(), 30)
            calls[name] = channel.unary_unary(targets[name].method, request_serializer=None,
                                              response_deserializer=None)
        names = list(targets)
        windows: dict[str, list[ThroughputResult]] = {name: [] for name in names}
        for cycle in range(cycles):
            for name in names if cycle % 2 == 0 else names[::-1]:
                start, end, per_slot, errors, cpu = await _load(calls[name], requests, warmup_s, window_s,
                                                                targets[name].pid)
                windows[name].append(_result("aio", len(requests), start, end, per_slot, errors,
                                             (inspect or {}).get(name), cpu))
        return {name: ThroughputResult.pooled(w) for name, w in windows.items()}
    finally:
        for channel in channels.values():
            await channel.close()


def _result(client, concurrency, start, end, per_slot, errors, inspect, server_cpu_ns: int = 0) -> ThroughputResult:
    """The calls of ``per_slot`` that completed inside [start, end]."""
    latency, labels = [], Counter()
    for samples in per_slot:
        for t_start, t_end, resp in samples:
            if start <= t_end <= end:
                latency.append(t_end - t_start)
                if inspect is not None:
                    labels[inspect(resp)] += 1
    return ThroughputResult(client, concurrency, len(latency), errors, (end - start) / 1e9, latency, dict(labels),
                            server_cpu_ns)


def _meter(pid: int, start: int, end: int) -> int:
    """CPU ns that process ``pid`` used between the perf_counter instants
    ``start`` and ``end`` (sleeps until each, in a thread of its own)."""
    time.sleep(max(0.0, (start - time.perf_counter_ns()) / 1e9))
    before = cpu_ns(pid)
    time.sleep(max(0.0, (end - time.perf_counter_ns()) / 1e9))
    return cpu_ns(pid) - before


def _window(warmup_s: float, seconds: float) -> tuple[int, int]:
    now = time.perf_counter_ns()
    start = now + int(warmup_s * 1e9)
    return start, start + int(seconds * 1e9)


async def _load(call, requests: list[bytes], warmup_s: float, seconds: float, pid: int = 0):
    """Keeps one call per request in flight on ``call`` until the window
    closes; returns (start, end, per-slot samples, errors, CPU ns of process
    ``pid`` inside the window: 0 without one)."""
    start, end = _window(warmup_s, seconds)
    errors = 0

    async def slot(req: bytes) -> list:
        nonlocal errors
        clock, samples = time.perf_counter_ns, []
        while True:
            t0 = clock()
            if t0 >= end:
                return samples
            try:
                resp = await call(req)
            except grpc.aio.AioRpcError:
                errors += 1
                await asyncio.sleep(0.01)  # an outage must not become a busy loop
                continue
            t1 = clock()
            if t1 >= start:
                samples.append((t0, t1, resp))

    metering = asyncio.ensure_future(asyncio.to_thread(_meter, pid, start, end)) if pid else None
    per_slot = await asyncio.gather(*(slot(r) for r in requests))
    return start, end, per_slot, errors, (await metering if metering is not None else 0)


def _run_aio(target: Target, requests: list[bytes], warmup_s: float, seconds: float):
    async def main():
        async with grpc.aio.insecure_channel(target.address, options=CHANNEL_OPTIONS) as channel:
            await asyncio.wait_for(channel.channel_ready(), 30)
            call = channel.unary_unary(target.method, request_serializer=None, response_deserializer=None)
            return await _load(call, requests, warmup_s, seconds, target.pid)

    gc.disable()  # as in measure_latency: no collector pauses billed to the server
    return asyncio.run(main())


def _run_threads(target: Target, requests: list[bytes], warmup_s: float, seconds: float):
    channel = grpc.insecure_channel(target.address, options=CHANNEL_OPTIONS)
    grpc.channel_ready_future(channel).result(timeout=30)
    call = raw_unary(channel, target.method)
    start, end = _window(warmup_s, seconds)
    per_slot: list[list] = [[] for _ in requests]
    errors = [0] * len(requests)

    def slot(i: int) -> None:
        req, samples, clock = requests[i], per_slot[i], time.perf_counter_ns
        while True:
            t0 = clock()
            if t0 >= end:
                return
            try:
                resp = call(req)
            except grpc.RpcError:
                errors[i] += 1
                time.sleep(0.01)
                continue
            t1 = clock()
            if t1 >= start:
                samples.append((t0, t1, resp))

    def meter() -> None:
        used[0] = _meter(target.pid, start, end)

    gc.disable()
    used = [0]
    threads = [threading.Thread(target=slot, args=(i,), daemon=True) for i in range(len(requests))]
    if target.pid:
        threads.append(threading.Thread(target=meter, daemon=True))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    channel.close()
    return start, end, per_slot, sum(errors), used[0]
