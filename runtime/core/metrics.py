"""Prometheus metrics of the agent, served over HTTP off the gRPC port.

Counters and histograms are updated on the invoke path through children
bound once per function (a dict lookup and an atomic add per call). Gauges
(environments by state, concurrency, memory budget) cost nothing per call:
a collector reads them from the invoker at scrape time. Labelled by
``function``; error types and start kinds are small closed sets.
"""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily

# Seconds. Warm invocations sit well under a millisecond; timeouts reach 900 s.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
                    30, 60, 300, 900)
INIT_BUCKETS = (0.005, 0.01, 0.015, 0.02, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
PHASES = ("queue", "sandbox", "runtime_start", "code_load", "handler")


class _Children:
    """The per-function children of every metric, bound on first use."""

    __slots__ = ("invocations", "duration", "starts", "init", "phases")


class Metrics:
    def __init__(self, gauges: Callable[[], dict] | None = None):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.invocations = Counter("runtime_invocations", "Invocations completed", ["function"], registry=r)
        self.errors = Counter("runtime_errors", "Invocations that ended in a function error",
                              ["function", "error_type"], registry=r)
        self.throttles = Counter("runtime_throttles", "Invocations refused by a concurrency or memory limit",
                                 ["function", "reason"], registry=r)
        self.starts = Counter("runtime_starts", "Invocations by how their environment was obtained",
                              ["function", "kind"], registry=r)
        self.duration = Histogram("runtime_invocation_duration_seconds", "Agent-side duration of an invocation",
                                  ["function"], buckets=DURATION_BUCKETS, registry=r)
        self.init_duration = Histogram("runtime_init_duration_seconds", "Init duration of cold starts",
                                       ["function"], buckets=INIT_BUCKETS, registry=r)
        self.phase_duration = Histogram("runtime_phase_duration_seconds",
                                        "Per-phase breakdown of invocations (queue, sandbox, runtime start, "
                                        "code load, handler)", ["function", "phase"],
                                        buckets=DURATION_BUCKETS, registry=r)
        self._children: dict[str, _Children] = {}
        if gauges is not None:
            r.register(_GaugeCollector(gauges))

    def _for(self, function: str) -> _Children:
        c = self._children.get(function)
        if c is None:
            c = self._children[function] = _Children()
            c.invocations = self.invocations.labels(function)
            c.duration = self.duration.labels(function)
            c.init = self.init_duration.labels(function)
            c.starts = {k: self.starts.labels(function, k) for k in ("warm", "prewarmed", "cold")}
            c.phases = {p: self.phase_duration.labels(function, p) for p in PHASES}
        return c

    def observe(self, function: str, kind: str, total_s: float, phases_s: dict[str, float],
                init_s: float, error_type: str) -> None:
        c = self._for(function)
        c.invocations.inc()
        c.duration.observe(total_s)
        c.starts[kind].inc()
        for phase, seconds in phases_s.items():
            if seconds:
                c.phases[phase].observe(seconds)
        if init_s:
            c.init.observe(init_s)
        if error_type:
            self.errors.labels(function, error_type).inc()

    def throttled(self, function: str, reason: str) -> None:
        self.throttles.labels(function, reason).inc()

    def forget(self, function: str) -> None:
        """Drops a deleted function's series so cardinality does not grow forever."""
        self._children.pop(function, None)
        for metric in (self.invocations, self.duration, self.init_duration):
            try:
                metric.remove(function)
            except KeyError:
                pass

    def serve(self, address: str) -> int:
        """Starts the HTTP exporter (its own thread) on HOST:PORT; returns the port."""
        host, _, port = address.rpartition(":")
        server, _thread = start_http_server(int(port), addr=host or "127.0.0.1", registry=self.registry)
        return server.server_address[1]


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
