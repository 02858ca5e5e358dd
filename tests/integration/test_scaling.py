"""Scale per request, within limits that refuse at once rather than queue."""

import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from framework.agent import Client, error_type
from framework.procfs import sandbox_pids

pytestmark = [pytest.mark.integration, pytest.mark.root]

SLOW = "import time, os\ndef handler(e, c):\n    time.sleep(e.get('sleep', 0))\n    return os.getpid()\n"


def _outcomes(c, name, n, sleep):
    def one(_):
        try:
            c.invoke(name, {"sleep": sleep})
            return "ok"
        except grpc.RpcError as err:
            return (err.code(), error_type(err), err.details())

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def test_reserved_concurrency_throttles_at_once(client):
    client.create("reserved-one", {"app.py": SLOW}, reserved_concurrency=1, timeout_seconds=10)
    t0 = time.monotonic()
    results = _outcomes(client, "reserved-one", 3, 1.0)
    assert results.count("ok") == 1
    refused = [r for r in results if r != "ok"]
    for code, etype, details in refused:
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert etype == "TooManyRequestsException"
        assert "ReservedFunctionConcurrentInvocationLimitExceeded" in details
    assert time.monotonic() - t0 < 8, "refused at once, not queued behind the running call"


def test_memory_budget_evicts_idle_then_throttles(fresh_agent):
    fresh_agent.extra_args = ("--memory-budget-mb", "700")
    fresh_agent.start()
    c = Client(fresh_agent.target)
    c.create("idle-big", {"app.py": SLOW}, memory_mb=512)
    c.create("busy", {"app.py": SLOW}, memory_mb=256, timeout_seconds=10)
    c.invoke("idle-big", {})  # 512 MB idle environment
    # Two concurrent 256 MB environments need the idle one evicted (512+256 > 700).
    assert _outcomes(c, "busy", 2, 0.5) == ["ok", "ok"]
    # Three concurrent 256 MB environments exceed 700 MB even with nothing idle.
    results = _outcomes(c, "busy", 3, 1.0)
    refused = [r for r in results if r != "ok"]
    assert len(refused) >= 1, results
    for code, etype, details in refused:
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and etype == "TooManyRequestsException"
        assert "HostMemoryBudgetExceeded" in details
    # the evicted function still works: it starts cold again
    assert c.invoke_json("idle-big")[0].function_error == ""
    c.close()


def test_host_environment_limit(fresh_agent):
    fresh_agent.extra_args = ("--max-environments", "2")
    fresh_agent.start()
    c = Client(fresh_agent.target)
    c.create("many", {"app.py": SLOW}, timeout_seconds=10)
    results = _outcomes(c, "many", 4, 1.0)
    assert results.count("ok") == 2
    assert all("ConcurrentInvocationLimitExceeded" in r[2] for r in results if r != "ok")
    c.close()


def test_idle_environments_reaped(fresh_agent):
    fresh_agent.extra_args = ("--keep-alive", "1")
    fresh_agent.start()
    c = Client(fresh_agent.target)
    c.create("reaped", {"app.py": SLOW})
    pid1 = c.invoke_json("reaped")[1]
    import glob
    assert glob.glob("/sys/fs/cgroup/memory/runtime-agent/*/reaped-*")
    deadline = time.monotonic() + 10
    while glob.glob("/sys/fs/cgroup/memory/runtime-agent/*/reaped-*") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not glob.glob("/sys/fs/cgroup/memory/runtime-agent/*/reaped-*"), "idle environment was not reaped"
    resp, pid2 = c.invoke_json("reaped")
    from runtime.v1 import invoker_pb2
    assert resp.start_kind == invoker_pb2.COLD
    del pid1, pid2
    c.close()


def test_killed_environment_replaced(client):
    import os
    import signal
    client.create("victim", {"app.py": SLOW})
    client.invoke("victim", {})
    live = sandbox_pids("victim")
    assert live
    for pids in live.values():
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    resp, _ = client.invoke_json("victim")
    assert resp.function_error == "", "no failed request: the dead idle environment is not reused"


def test_hybrid_policy_unloads_and_prewarms_periodic_function(fresh_agent):
    """A function called every 3 s is unloaded after each call and loaded
    again just before the next one (1 s histogram bins here, so the test
    takes half a minute rather than hours)."""
    import glob

    from runtime.v1 import invoker_pb2
    fresh_agent.extra_args = ("--keep-alive-policy", "hybrid", "--keep-alive-bin", "1", "--log-format", "json")
    fresh_agent.start()
    c = Client(fresh_agent.target)
    c.create("ticker", {"app.py": SLOW})
    kinds, unloaded = [], []
    for i in range(15):
        t = time.monotonic()
        kinds.append(c.invoke("ticker", {}).start_kind)
        time.sleep(1.0)
        unloaded.append(not glob.glob("/sys/fs/cgroup/memory/runtime-agent/*/ticker-*"))
        time.sleep(max(0.0, 3.0 - (time.monotonic() - t)))
    c.close()
    assert kinds[0] == invoker_pb2.COLD
    # The first 10 gaps teach the policy (min_samples); afterwards the
    # environment is gone between calls and yet calls find it warm.
    assert sum(unloaded[-3:]) >= 2, unloaded
    assert sum(k == invoker_pb2.WARM for k in kinds[-3:]) >= 2, kinds
    fresh_agent.stop()
    assert '"event": "prewarmed"' in fresh_agent.log()


def test_stem_cells_specialise_and_replenish(fresh_agent):
    """A cold start that finds a stem cell pays only specialisation; the
    cell is replaced in the background; the function sees its own code at
    /var/task, read-only, as in a cold sandbox (getcwd works, /var/task/..
    is the sandbox's /var), with nothing of the code store around it."""
    import glob
    import json as _json

    from runtime.v1 import invoker_pb2
    fresh_agent.extra_args = ("--stem-cells", "2")
    fresh_agent.start()
    c = Client(fresh_agent.target)
    deadline = time.monotonic() + 20
    while len(glob.glob("/sys/fs/cgroup/memory/runtime-agent/*/stem-python3.11-*")) < 2:
        assert time.monotonic() < deadline, "stem cells did not start"
        time.sleep(0.1)
    code = ("import os, json\nSEEN = os.environ.get('COLOR')\n"
            "def handler(e, c):\n"
            "    out = {'color': SEEN, 'files': sorted(os.listdir('/var/task')), 'up': sorted(os.listdir('/var/task/..')),"
            " 'fn': c.function_name, 'mem': c.memory_limit_in_mb, 'cwd': os.getcwd(),"
            " 'internal': sorted(k for k in os.environ if k.startswith('_RUNTIME')),"
            " 'child': os.popen('echo $COLOR ${_RUNTIME_STEM_CELL-unset}').read().strip()}\n"
            "    try:\n        open('/var/task/x', 'w')\n        out['write'] = 'allowed'\n"
            "    except OSError as exc:\n        out['write'] = exc.errno\n    return out\n")
    c.create("stemmed", {"app.py": code, "data.txt": "x"}, memory_mb=256, environment={"COLOR": "blue"})
    resp, body = c.invoke_json("stemmed")
    assert resp.start_kind == invoker_pb2.PREWARMED, resp
    assert body == {"color": "blue", "files": ["__pycache__", "app.py", "data.txt"],
                    "up": ["runtime", "task"], "fn": "stemmed", "mem": "256", "write": 30, "cwd": "/var/task",
                    "internal": [], "child": "blue unset"}
    assert resp.timings.sandbox_us == 0 and 0 < resp.timings.init_us
    resp2, _ = c.invoke_json("stemmed")
    assert resp2.start_kind == invoker_pb2.WARM
    # the taken cell is replaced
    deadline = time.monotonic() + 20
    while len(glob.glob("/sys/fs/cgroup/memory/runtime-agent/*/stem-python3.11-*")) < 3:
        assert time.monotonic() < deadline, "stem cell was not replenished"
        time.sleep(0.1)
    limits = glob.glob("/sys/fs/cgroup/memory/runtime-agent/*/stem-python3.11-*/memory.limit_in_bytes")
    assert sorted(int(open(p).read()) for p in limits).count(256 * 1024 * 1024) == 1
    # a function with a larger /tmp does not fit a stem cell: it starts cold
    c.create("big-tmp", {"app.py": "def handler(e, c):\n    return 1\n"}, ephemeral_storage_mb=1024)
    assert c.invoke("big-tmp", {}).start_kind == invoker_pb2.COLD
    del _json
    c.close()


def test_provisioned_environments_stay_and_are_replaced(fresh_agent):
    import os
    import signal

    from runtime.v1 import functions_pb2, invoker_pb2
    fresh_agent.extra_args = ("--keep-alive", "1")
    fresh_agent.start()
    c = Client(fresh_agent.target)
    c.create("provisioned", {"app.py": "import os\ndef handler(e, c):\n"
                             "    return os.environ['AWS_LAMBDA_INITIALIZATION_TYPE']\n"},
             provisioned_concurrency=2)
    def count():
        return len(sandbox_pids("provisioned"))

    deadline = time.monotonic() + 20
    while count() < 2:
        assert time.monotonic() < deadline, "provisioned environments did not start"
        time.sleep(0.1)
    resp, body = c.invoke_json("provisioned")
    assert resp.start_kind == invoker_pb2.WARM and body == "provisioned-concurrency"
    time.sleep(3)  # three keep-alive periods: on-demand environments would be gone
    assert count() == 2
    # one is killed from outside: it is replaced
    for pid in next(iter(sandbox_pids("provisioned").values())):
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.3)
    deadline = time.monotonic() + 20
    while count() < 2:
        assert time.monotonic() < deadline, "killed provisioned environment was not replaced"
        time.sleep(0.1)
    assert c.invoke_json("provisioned")[0].function_error == ""
    # turning it off lets them go
    c.functions.UpdateFunctionConfiguration(functions_pb2.UpdateFunctionConfigurationRequest(
        name="provisioned", provisioned_concurrency=0))
    deadline = time.monotonic() + 20
    while count():
        assert time.monotonic() < deadline, "environments stayed after provisioning was turned off"
        time.sleep(0.2)
    c.close()


def test_fresh_environment_per_call(fresh_agent):
    from runtime.v1 import invoker_pb2
    fresh_agent.extra_args = ("--stem-cells", "2")
    fresh_agent.start()
    c = Client(fresh_agent.target)
    c.create("fresh", {"app.py": "import os\nCALLS = 0\ndef handler(e, c):\n    global CALLS\n    CALLS += 1\n"
                       "    open('/tmp/mark', 'a').write('x')\n"
                       "    return [CALLS, len(open('/tmp/mark').read())]\n"},
             fresh_environment_per_call=True)
    time.sleep(1)
    kinds = []
    for _ in range(4):
        resp, body = c.invoke_json("fresh")
        assert body == [1, 1], "no state, in memory or in /tmp, is carried between calls"
        kinds.append(resp.start_kind)
        time.sleep(0.3)  # let the stem cells be replaced
    assert all(k in (invoker_pb2.PREWARMED, invoker_pb2.COLD) for k in kinds)
    assert kinds.count(invoker_pb2.PREWARMED) >= 3, kinds
    c.close()


def test_stem_cells_follow_demand_and_fall_back_when_it_ends(fresh_agent):
    """Cells taken quickly (fresh environments per call, back to back) make
    the runtime keep more than --stem-cells ready, at most four times as many;
    after STEM_SURPLUS_IDLE_S without a take the extra ones go."""
    import glob

    from runtime.core.pools import STEM_SURPLUS_IDLE_S
    from runtime.v1 import invoker_pb2
    fresh_agent.extra_args = ("--stem-cells", "1", "--keep-alive", "2")
    fresh_agent.start()
    c = Client(fresh_agent.target)

    def cells():
        return len(glob.glob("/sys/fs/cgroup/memory/runtime-agent/*/stem-python3.11-*"))

    deadline = time.monotonic() + 20
    while cells() < 1:
        assert time.monotonic() < deadline, "the stem cell did not start"
        time.sleep(0.1)
    c.create("churn", {"app.py": "def handler(e, c):\n    return 1\n"}, fresh_environment_per_call=True)
    most, kinds = 0, []
    t_end = time.monotonic() + 3
    while time.monotonic() < t_end:
        resp, body = c.invoke_json("churn")
        assert body == 1
        kinds.append(resp.start_kind)
        most = max(most, cells())
    assert kinds.count(invoker_pb2.PREWARMED) > 0
    # One cell would show at most two directories, the one in use and its
    # replacement (the directories of used ones go within milliseconds);
    # more means the pool grew.
    assert most > 2 + 1, f"{most} stem cell directories at most during the calls"
    # After the demand ends, back to one (a directory goes with its cell).
    deadline = time.monotonic() + STEM_SURPLUS_IDLE_S + 15
    while cells() != 1:
        assert time.monotonic() < deadline, f"{cells()} stem cells long after the last take"
        time.sleep(0.2)
    c.close()
