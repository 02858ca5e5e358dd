"""Where the agent's threads run (--agent-cpu): its own together on one CPU;
its sandboxes, and the threads that start them or do its blocking work, on
every CPU it was allowed. Read from /proc and from inside a sandbox."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from framework.agent import Client, refused_by_serve
from framework.procfs import children

ALLOWED = frozenset(os.sched_getaffinity(0))
needs_two = pytest.mark.skipif(len(ALLOWED) < 2, reason="placement needs two CPUs; this process may use one")

# The function says where it may run, as its sandbox sees it.
WHERE = "import os\n\ndef handler(event, context):\n    return sorted(os.sched_getaffinity(0))\n"


def _threads(pid: int) -> dict[int, tuple[str, frozenset[int]]]:
    """Thread id -> (name, CPUs it may run on)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out[int(task.name)] = ((task / "comm").read_text().strip(), frozenset(os.sched_getaffinity(int(task.name))))
        except OSError:
            pass  # the thread ended
    return out


def _descendants(pid: int) -> list[int]:
    out = []
    for kid in children(pid):
        out += [kid, *_descendants(kid)]
    return out


def _start_and_invoke(agent, *flags) -> tuple[int, list[int]]:
    agent.extra_args = flags
    agent.start()
    c = Client(agent.target)
    try:
        c.create("where", {"app.py": WHERE})
        resp, body = c.invoke_json("where", {})
        assert resp.function_error == "", body
    finally:
        c.close()
    return agent.proc.pid, body


@needs_two
def test_agent_threads_share_one_cpu_and_sandboxes_use_all(fresh_agent):
    pid, seen_inside = _start_and_invoke(fresh_agent)
    cpu = max(ALLOWED)
    threads = _threads(pid)
    assert threads[pid][1] == {cpu}, threads[pid]           # the event loop's thread
    grpc_threads = {t: m for t, (name, m) in threads.items() if name in ("event_engine", "grpc_global_tim")}
    assert grpc_threads and all(m == {cpu} for m in grpc_threads.values()), grpc_threads
    # The sandbox spawner and the default executor's workers run anywhere.
    assert any(m == ALLOWED for t, (_, m) in threads.items() if t != pid), threads
    assert seen_inside == sorted(ALLOWED)
    jails = [p for p in _descendants(pid) if Path(f"/proc/{p}/comm").read_text().strip() == "nsjail"]
    sandbox = [*jails, *(p for j in jails for p in _descendants(j))]
    assert len(sandbox) >= 2 and all(frozenset(os.sched_getaffinity(p)) == ALLOWED for p in sandbox), sandbox
    assert fresh_agent.stop() == 0


@needs_two
def test_a_chosen_cpu_is_used(fresh_agent):
    cpu = min(ALLOWED)
    pid, seen_inside = _start_and_invoke(fresh_agent, "--agent-cpu", str(cpu))
    assert _threads(pid)[pid][1] == {cpu}
    assert seen_inside == sorted(ALLOWED)
    assert fresh_agent.stop() == 0


def test_none_leaves_every_thread_to_the_scheduler(fresh_agent):
    pid, seen_inside = _start_and_invoke(fresh_agent, "--agent-cpu", "none")
    threads = _threads(pid)
    assert all(m == ALLOWED for _, m in threads.values()), threads
    assert seen_inside == sorted(ALLOWED)
    assert fresh_agent.stop() == 0


@pytest.mark.parametrize("value,words", [(str(max(ALLOWED) + 1), "is not one this process may use"),
                                         ("fast", "is not a CPU")])
def test_agent_cpu_setting_is_checked(tmp_path, value, words):
    stderr = refused_by_serve(tmp_path, "--agent-cpu", value)
    assert "--agent-cpu" in stderr and words in stderr
    assert ", ".join(str(c) for c in sorted(ALLOWED)) in stderr   # what is allowed
