"""pytest-benchmark entry points: echo floor, warm Invoke, cold Invoke.

    .venv/bin/pytest bench/ --benchmark-only

These give pytest-benchmark's statistics and comparison tooling
(--benchmark-autosave, --benchmark-compare) for one figure at a time; the
full suite with interleaved rounds, throughput, peers and the targets is
``bench/run.py``. Both measure through the same helpers (bench/workloads.py).
"""

from __future__ import annotations

import itertools
import statistics
import time

import pytest

import workloads
from workloads import COLD_FUNCTION

# Echo and warm in one group, so pytest-benchmark's table puts the floor
# right above what the agent adds to it.
pytestmark = pytest.mark.benchmark(group="invoke concurrency 1", disable_gc=True, warmup=True)


def test_echo_floor(benchmark, echo_call, invoke_request):
    result = benchmark(echo_call)
    assert result == invoke_request


def test_warm_invoke(benchmark, warm_call):
    result = benchmark(warm_call)
    assert workloads.start_kind(result) == "WARM"


@pytest.mark.benchmark(group="invoke cold")
def test_cold_invoke(benchmark, agent):
    """A new environment for every round: ``setup`` (not timed) changes the
    configuration, which retires the idle environment, then lets its teardown
    finish; the round times the Invoke alone."""
    request = workloads.invoke_request(COLD_FUNCTION)
    counter = itertools.count()
    responses: list[bytes] = []

    def setup():
        workloads.force_cold(agent.client, COLD_FUNCTION, next(counter))
        time.sleep(0.05)

    def invoke():
        raw = agent.invoke_raw(request, timeout=60)
        responses.append(raw)  # parsed after the run, not inside the timed call
        return raw

    benchmark.pedantic(invoke, setup=setup, rounds=30, warmup_rounds=3, iterations=1)
    kinds = workloads.count_kinds(responses)
    assert kinds == {"COLD": len(responses)}, kinds
    # The agent's own breakdown, kept in the benchmark JSON (--benchmark-json).
    from runtime.v1 import invoker_pb2

    timings = [invoker_pb2.InvokeResponse.FromString(r).timings for r in responses]
    for phase in ("sandbox_us", "code_load_us", "init_us", "handler_us", "total_us"):
        benchmark.extra_info[f"{phase}_p50"] = statistics.median(getattr(t, phase) for t in timings)
