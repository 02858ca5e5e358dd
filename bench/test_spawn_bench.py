"""pytest-benchmark: starting a sandbox process while the agent holds many descriptors.

    .venv/bin/pytest bench/test_spawn_bench.py --benchmark-only

What ``runtime/sandbox/spawner.py`` decides between, measured on its own:
``Spawner.start`` with the command line the agent builds for a sandbox, but
``/bin/true`` in nsjail's place (it ignores the arguments and exits), while
this process holds 10, 4,000 or 16,000 descriptors (the agent holds four per
environment). "inline" starts it in the calling thread: the child copies,
then closes, the whole table. "spawner thread" hands the three descriptors
to the thread with its own table and waits for it. The default switch-over
(``INLINE_BELOW_FD``, 2048) sits where the two cost the same here.
"""

from __future__ import annotations

import os
import resource
import socket
from pathlib import Path

import pytest

from runtime.jail.spec import SandboxSpec
from runtime.sandbox.spawner import Spawner

pytestmark = pytest.mark.benchmark(group="sandbox process start", disable_gc=True, warmup=True)

SPEC = SandboxSpec(env_id="spawn-bench", nsjail=Path("/bin/true"), argv=["/usr/bin/python3", "-c", "pass"],
                   environ={"_HANDLER": "app.handler", "AWS_LAMBDA_FUNCTION_NAME": "spawn-bench"})


@pytest.fixture(scope="module")
def spawner():
    s = Spawner()
    yield s
    s.close()


@pytest.fixture(scope="module", params=[10, 4000, 16000], ids=lambda n: f"{n} fds")
def held(request):
    need = request.param + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < need:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below the {need} descriptors this case holds")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))
    fds = []
    for _ in range(max(0, request.param - len(os.listdir("/proc/self/fd")) + 1) // 2):
        fds += os.pipe()
    yield request.param
    for fd in fds:
        os.close(fd)


@pytest.mark.parametrize("path", ["inline", "spawner thread"])
def test_sandbox_process_start(benchmark, spawner, held, path):
    spawner.inline_below = 1 << 30 if path == "inline" else 0
    started = []

    def reap():  # untimed, before each round: the last round's process has exited
        while started:
            assert started.pop().wait() == 0

    def start():
        ours, theirs = socket.socketpair()
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        try:
            proc, spec = spawner.start(SPEC, theirs.fileno(), out_w, err_w)
        finally:
            for fd in (out_r, out_w, err_r, err_w):
                os.close(fd)
            ours.close()
            theirs.close()
        started.append(proc)
        return spec

    spec = benchmark.pedantic(start, setup=reap, rounds=300, warmup_rounds=20)
    reap()
    assert len(spec.pass_fds) == 1, "the control socket is passed by the number it has where nsjail starts"
