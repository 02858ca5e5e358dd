"""Prometheus metrics of the agent, served over HTTP off the gRPC port.

Counters and histograms are plain numbers per function, updated on the
event loop (the only writer, so no lock) and turned into Prometheus
families by a collector at scrape time. prometheus_client's own Counter and
Histogram take a lock per update; on a path that runs once per invocation
that cost about three times as much. Gauges (environments by state,
concurrency, memory budget) and the agent-wide reply-poll counters cost
nothing per call either: a collector reads them from the invoker at scrape
time. Labelled by ``function``; error
types, throttle reasons and start kinds are small closed sets.

The scrape runs in the exporter's thread: it copies each dict before
walking it (``list()`` of a dict is atomic under the GIL), so a function
added meanwhile is simply in the next scrape.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Callable

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

# Seconds. Warm invocations sit well under a millisecond; timeouts reach 900 s.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
                    30, 60, 300, 900)
INIT_BUCKETS = (0.005, 0.01, 0.015, 0.02, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
PHASES = ("queue", "sandbox", "runtime_start", "code_load", "handler")
START_KINDS = ("warm", "prewarmed", "cold")


class _Histogram:
    """Per-bucket (not cumulative) counts, the last one for +Inf, and the sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # Prometheus buckets are "less or equal": the first bound >= value.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, int]]:
        counts, total = list(self.counts), 0
        out = []
        for bound, n in zip((*self.bounds, float("inf")), counts):
            total += n
            out.append((floatToGoString(bound), total))
        return out


class _FunctionStats:
    __slots__ = ("invocations", "starts", "errors", "throttles", "duration", "init", "phases")

    def __init__(self):
        self.invocations = 0
        self.starts = dict.fromkeys(START_KINDS, 0)
        self.errors: dict[str, int] = {}
        self.throttles: dict[str, int] = {}
        self.duration = _Histogram(DURATION_BUCKETS)
        self.init = _Histogram(INIT_BUCKETS)
        self.phases = {p: _Histogram(DURATION_BUCKETS) for p in PHASES}


class Metrics:
    def __init__(self, gauges: Callable[[], dict] | None = None):
        self.registry = CollectorRegistry(auto_describe=True)
        self._stats: dict[str, _FunctionStats] = {}
        self.registry.register(_InvocationCollector(self._stats))
        if gauges is not None:
            self.registry.register(_GaugeCollector(gauges))

    def _for(self, function: str) -> _FunctionStats:
        s = self._stats.get(function)
        if s is None:
            s = self._stats[function] = _FunctionStats()
        return s

    def observe(self, function: str, kind: str, total_s: float, phases_s: dict[str, float],
                init_s: float, error_type: str) -> None:
        s = self._stats.get(function) or self._for(function)
        s.invocations += 1
        s.duration.observe(total_s)
        s.starts[kind] += 1
        for phase, seconds in phases_s.items():
            if seconds:
                s.phases[phase].observe(seconds)
        if init_s:
            s.init.observe(init_s)
        if error_type:
            s.errors[error_type] = s.errors.get(error_type, 0) + 1

    def throttled(self, function: str, reason: str) -> None:
        s = self._for(function)
        s.throttles[reason] = s.throttles.get(reason, 0) + 1

    def forget(self, function: str) -> None:
        """Drops a deleted function's series so cardinality does not grow forever."""
        self._stats.pop(function, None)

    def serve(self, address: str) -> int:
        """Starts the HTTP exporter (its own thread) on HOST:PORT; returns the port."""
        host, _, port = address.rpartition(":")
        server, _thread = start_http_server(int(port), addr=host or "127.0.0.1", registry=self.registry)
        return server.server_address[1]


class _InvocationCollector:
    """The per-function counters and histograms, as families, at scrape time."""

    def __init__(self, stats: dict[str, _FunctionStats]):
        self.stats = stats

    def describe(self):
        return []

    def collect(self):
        invocations = CounterMetricFamily("runtime_invocations", "Invocations completed", labels=["function"])
        errors = CounterMetricFamily("runtime_errors", "Invocations that ended in a function error",
                                     labels=["function", "error_type"])
        throttles = CounterMetricFamily("runtime_throttles", "Invocations refused by a concurrency or memory "
                                        "limit", labels=["function", "reason"])
        starts = CounterMetricFamily("runtime_starts", "Invocations by how their environment was obtained",
                                     labels=["function", "kind"])
        duration = HistogramMetricFamily("runtime_invocation_duration_seconds",
                                         "Agent-side duration of an invocation", labels=["function"])
        init = HistogramMetricFamily("runtime_init_duration_seconds", "Init duration of cold starts",
                                     labels=["function"])
        phases = HistogramMetricFamily("runtime_phase_duration_seconds", "Per-phase breakdown of invocations "
                                       "(queue, sandbox, runtime start, code load, handler)",
                                       labels=["function", "phase"])
        for function, s in sorted(list(self.stats.items())):
            if s.invocations:
                invocations.add_metric([function], s.invocations)
                duration.add_metric([function], s.duration.cumulative(), s.duration.sum)
                init.add_metric([function], s.init.cumulative(), s.init.sum)
                for kind, n in list(s.starts.items()):
                    starts.add_metric([function, kind], n)
                for phase, h in s.phases.items():
                    phases.add_metric([function, phase], h.cumulative(), h.sum)
            for error_type, n in sorted(list(s.errors.items())):
                errors.add_metric([function, error_type], n)
            for reason, n in sorted(list(s.throttles.items())):
                throttles.add_metric([function, reason], n)
        yield from (invocations, errors, throttles, starts, duration, init, phases)


class _GaugeCollector:
    """Reads the invoker's live numbers at scrape time."""

    def __init__(self, read: Callable[[], dict]):
        self.read = read

    def describe(self):
        return []

    def collect(self):
        snap = self.read()
        envs = GaugeMetricFamily("runtime_environments", "Environments by state", labels=["function", "state"])
        for (function, state), n in sorted(snap["environments"].items()):
            envs.add_metric([function, state], n)
        yield envs
        conc = GaugeMetricFamily("runtime_concurrent_executions", "Invocations running now", labels=["function"])
        for function, n in sorted(snap["concurrent"].items()):
            conc.add_metric([function], n)
        yield conc
        yield GaugeMetricFamily("runtime_memory_budget_bytes", "Host memory the agent may give environments",
                                value=snap["budget_bytes"])
        yield GaugeMetricFamily("runtime_memory_budget_used_bytes", "Memory of the environments alive now",
                                value=snap["used_bytes"])
        polls = CounterMetricFamily("runtime_reply_polls", "Invocations whose reply the agent polled for "
                                    "(--reply-poll-us) by how the poll ended: answered (reply read), expired "
                                    "(polling time passed), yielded (the event loop had other work)",
                                    labels=["outcome"])
        for outcome, n in snap["reply_polls"].items():
            polls.add_metric([outcome], n)
        yield polls
