"""Fixtures for the pytest-benchmark entry points (bench/test_invoke_bench.py).

``.venv/bin/pytest bench/ --benchmark-only`` runs them; ``make test`` does not
(pyproject's testpaths is tests/ only), so CI never pays for benchmarks.

The servers are the same as in the full suite (bench/run.py): the echo
server and the agent each in their own process, started once per session,
with the functions deployed and warmed before any benchmark starts.
"""

from __future__ import annotations

import sys
from pathlib import Path

import grpc
import pytest

BENCH = Path(__file__).resolve().parent
# Plain modules next to this file (no package): make them importable however
# pytest was started, and before workloads puts tests/ on the path for
# ``framework.agent``.
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import echo_server  # noqa: E402
import host  # noqa: E402
import loadgen  # noqa: E402
import workloads  # noqa: E402

from workloads import COLD_FUNCTION, WARM_FUNCTION  # noqa: E402


@pytest.fixture(scope="session")
def echo():
    proc = echo_server.EchoProcess().start()
    channel = grpc.insecure_channel(proc.target, options=loadgen.CHANNEL_OPTIONS)
    yield proc, channel
    channel.close()
    proc.stop()


@pytest.fixture(scope="session")
def agent():
    """One agent for the session, both functions deployed."""
    with workloads.AgentUnderTest() as proc:
        proc.deploy(WARM_FUNCTION)
        proc.deploy(COLD_FUNCTION)
        yield proc


@pytest.fixture(scope="session")
def invoke_request() -> bytes:
    """The serialised no-op InvokeRequest, built once; the echo server is sent
    the same bytes, as in run.py."""
    return workloads.invoke_request(WARM_FUNCTION)


@pytest.fixture
def echo_call(echo, invoke_request):
    _, channel = echo
    call = loadgen.raw_unary(channel, echo_server.METHOD)
    assert call(invoke_request) == invoke_request
    return lambda: call(invoke_request)


@pytest.fixture
def warm_call(agent, invoke_request):
    def call():
        return agent.invoke_raw(invoke_request)

    # The first Invoke starts the environment; every timed one reuses it.
    call()
    return call


def pytest_report_header(config):
    return (f"bench: echo server {echo_server.METHOD}, agent from {workloads.ROOT / 'tests/framework/agent.py'}, "
            f"installed package matches source: {host.installed_matches_source()}")
