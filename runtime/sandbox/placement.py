"""Where the agent's threads run: together on one CPU; sandboxes anywhere.

A warm Invoke is a chain of hand-offs between threads: gRPC's completion
queue thread receives the request and wakes the event loop's thread, which
sends the event to the sandbox and, later, the response back through gRPC's
threads. Each hand-off to a thread asleep on another CPU is a wake-up
through an inter-processor interrupt; on a virtual machine, whose idle CPUs
halt, that interrupt goes through the hypervisor and costs tens of
microseconds (bench/host.py ``wakeup_rtt_us``: 75 µs for a round trip
between two CPUs here, 6 µs on one). With every agent thread on one CPU the
hand-offs are local: a warm Invoke at concurrency 1 takes about a fifth less
time here (bench/RESULTS.md, warm section, against an agent started with
``--agent-cpu none``), and in side-by-side runs neither throughput at 32 in
flight nor the environment creation rate changed beyond their noise.

The agent is one Python process with one event loop: one CPU is what it can
use anyway. Its sandboxes, and the threads that start them or do blocking
work for it, run on every CPU the agent was allowed when it started (its
affinity, so ``taskset`` and cpusets are respected).

Affinity is per thread and inherited at creation (threads) or fork
(processes). ``pin_agent`` is called once, in the main thread, before any
other thread is started, so gRPC's threads and the event loop share the CPU;
``run_anywhere`` is called first thing in threads that must not
(the sandbox spawner, the default executor's workers), and
``children_anywhere`` wraps a fork from a pinned thread.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

from runtime.errors import InvalidParameterValue, os_error

# Every CPU the agent may use, read when it pins itself; empty until then
# (nothing is pinned, nothing needs widening).
_allowed: frozenset[int] = frozenset()


def allowed_cpus() -> frozenset[int]:
    """The CPUs this thread may run on now."""
    return frozenset(os.sched_getaffinity(0))


def choose(setting: str, allowed: frozenset[int]) -> int | None:
    """The CPU for the agent's threads from ``--agent-cpu``: "auto" (the
    highest-numbered allowed CPU, away from CPU 0, where the kernel tends to
    handle device interrupts), "none", or a CPU number. None means the
    threads run anywhere, as they do anyway when only one CPU is allowed
    (a value is checked all the same)."""
    if setting == "none":
        return None
    if setting == "auto":
        cpu = max(allowed)
    else:
        try:
            cpu = int(setting)
        except ValueError:
            raise InvalidParameterValue(
                "agent-cpu", f"{setting!r} is not a CPU: use auto, none or one of {_span(allowed)}") from None
        if cpu not in allowed:
            raise InvalidParameterValue(
                "agent-cpu", f"CPU {cpu} is not one this process may use: use auto, none or one of "
                f"{_span(allowed)}")
    return cpu if len(allowed) >= 2 else None


def pin_agent(cpu: int | None) -> None:
    """Pins the calling thread (the main thread, before it starts any other)
    to ``cpu``; None leaves it where it is."""
    global _allowed
    if cpu is None:
        return
    allowed = allowed_cpus()
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError as exc:
        raise os_error(f"sched_setaffinity(agent thread, {{{cpu}}})", exc) from exc
    _allowed = allowed


def run_anywhere() -> None:
    """Lets the calling thread (and what it starts) run on every CPU the
    agent was allowed. A no-op when the agent is not pinned."""
    if _allowed:
        try:
            os.sched_setaffinity(0, _allowed)
        except OSError as exc:
            raise os_error("sched_setaffinity(worker thread, agent's CPUs)", exc) from exc


@contextlib.contextmanager
def children_anywhere() -> Iterator[None]:
    """Processes forked inside run on every CPU the agent was allowed; the
    calling thread keeps its own CPU before and after. Two system calls
    (~2 µs) per start, only when the agent is pinned."""
    if not _allowed:
        yield
        return
    mine = os.sched_getaffinity(0)
    if mine == _allowed:
        yield
        return
    run_anywhere()
    try:
        yield
    finally:
        try:
            os.sched_setaffinity(0, mine)
        except OSError as exc:
            raise os_error("sched_setaffinity(agent thread, back to its CPU)", exc) from exc


def _span(cpus: frozenset[int]) -> str:
    return ", ".join(str(c) for c in sorted(cpus))
