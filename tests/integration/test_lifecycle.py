"""The agent as a process: restart, reflection, shutdown hygiene."""

import concurrent.futures
import glob
import os
import time

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from framework.agent import Client
from runtime.v1 import functions_pb2, logs_pb2

pytestmark = [pytest.mark.integration, pytest.mark.root]


def test_functions_survive_restart(fresh_agent):
    fresh_agent.start()
    c = Client(fresh_agent.target)
    c.create("durable", {"app.py": "def handler(e, c):\n    return 'survived'\n"}, memory_mb=200)
    assert c.invoke_json("durable")[1] == "survived"
    c.close()
    assert fresh_agent.stop() == 0
    fresh_agent.start()
    c = Client(fresh_agent.target)
    cfg = c.functions.GetFunction(functions_pb2.GetFunctionRequest(name="durable"))
    assert cfg.spec.memory_mb == 200
    resp, body = c.invoke_json("durable")
    assert body == "survived"
    c.close()


def test_no_process_outlives_agent(fresh_agent):
    fresh_agent.start()
    c = Client(fresh_agent.target)
    c.create("lingerer", {"app.py": "import subprocess\ndef handler(e, c):\n"
                          "    subprocess.Popen(['/bin/sleep', '1000'])\n    return 'spawned'\n"})
    assert c.invoke_json("lingerer")[1] == "spawned"
    c.close()
    fresh_agent.stop()
    left = [p for p in glob.glob("/sys/fs/cgroup/pids/runtime-agent/*/lingerer-*")]
    assert not left, f"environment cgroups left behind: {left}"
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = open(f"/proc/{pid}/cmdline", "rb").read()
            except OSError:
                continue
            assert b"sleep\x001000" not in cmd, "a sandboxed process outlived the agent"


def test_reflection_lists_services(client):
    stub = reflection_pb2_grpc.ServerReflectionStub(client.channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"runtime.v1.Functions", "runtime.v1.Invoker", "runtime.v1.Logs", "grpc.health.v1.Health"} <= names


def test_refuses_non_loopback_without_tls(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    out = subprocess.run([str(Path(sys.executable).parent / "runtime-agent"), "serve", "--listen",
                          "0.0.0.0:0", "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert "refusing to listen on 0.0.0.0:0" in out.stderr


def test_delete_removes_function(client):
    client.create("short-lived", {"app.py": "def handler(e, c):\n    return 1\n"})
    assert client.invoke_json("short-lived")[1] == 1
    client.functions.DeleteFunction(functions_pb2.DeleteFunctionRequest(name="short-lived"))
    with pytest.raises(grpc.RpcError) as err:
        client.invoke("short-lived", {})
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_delete_forgets_logs(client):
    """DeleteFunction forgets the function's logs (functions.proto): a new
    function of the same name starts with none of the old one's lines."""
    code = {"app.py": "def handler(e, c):\n    print('secret of the first owner')\n    return 1\n"}
    client.create("reused-name", code)
    client.invoke("reused-name", {})
    logs = lambda: [e.message for e in client.logs.GetLogs(  # noqa: E731
        logs_pb2.GetLogsRequest(function_name="reused-name"), timeout=30)]
    assert "secret of the first owner" in logs()
    client.functions.DeleteFunction(functions_pb2.DeleteFunctionRequest(name="reused-name"))
    client.create("reused-name", {"app.py": "def handler(e, c):\n    return 2\n"})
    assert logs() == []
    assert client.invoke_json("reused-name")[1] == 2
    assert "secret of the first owner" not in logs()


SLOW_FIRST_OWNER = {"app.py": "import time\n\ndef handler(e, c):\n    print('early line of the first owner')\n"
                               "    time.sleep(1)\n    print('late line of the first owner')\n    return 1\n"}


def _delete_midway(client, name: str, then=None):
    """Deploys SLOW_FIRST_OWNER as ``name``, deletes it while an invocation
    sleeps in its handler, runs ``then()`` (still during that invocation),
    and returns the invocation's response once it has answered."""
    client.create(name, SLOW_FIRST_OWNER)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        call = pool.submit(client.invoke, name, {})
        time.sleep(0.4)  # the handler is asleep
        client.functions.DeleteFunction(functions_pb2.DeleteFunctionRequest(name=name))
        if then is not None:
            then()
        response = call.result()
    assert response.payload == b"1"  # the call it was serving still answers
    time.sleep(0.5)  # past the agent's 200 ms log flush
    return response


def test_delete_during_an_invocation_leaves_no_log_behind(client):
    _delete_midway(client, "deleted-midway")
    client.create("deleted-midway", {"app.py": "def handler(e, c):\n    return 2\n"})
    assert list(client.logs.GetLogs(logs_pb2.GetLogsRequest(function_name="deleted-midway"), timeout=30)) == []


def test_recreated_function_gets_none_of_the_old_ones_late_lines(client):
    """A function deleted and created again under the same name while an
    invocation of the old one still runs: the old invocation's later output
    and platform lines belong to no function, least of all the new one."""
    def recreate():
        client.create("recreated-midway", {"app.py": "def handler(e, c):\n    print('new owner')\n    return 2\n"})
        assert client.invoke_json("recreated-midway")[1] == 2

    old_call = _delete_midway(client, "recreated-midway", recreate)
    events = list(client.logs.GetLogs(logs_pb2.GetLogsRequest(function_name="recreated-midway"), timeout=30))
    assert [e.message for e in events if e.stream != logs_pb2.PLATFORM] == ["new owner"]
    assert not [e for e in events if e.request_id == old_call.request_id]


def test_json_lifecycle_log(fresh_agent):
    import json as _json
    fresh_agent.extra_args = ("--log-format", "json", "--log-level", "DEBUG", "--keep-alive", "1")
    fresh_agent.start()
    c = Client(fresh_agent.target)
    c.create("logged", {"app.py": "import time\ndef handler(e, c):\n    time.sleep(e.get('s', 0))\n"
                        "    return 1\n"}, timeout_seconds=1)
    c.invoke("logged", {})
    c.invoke("logged", {})
    c.invoke("logged", {"s": 5})  # killed at the timeout
    c.invoke("logged", {})
    import time as _time
    _time.sleep(2.5)  # reaped after the 1 s keep-alive
    c.close()
    fresh_agent.stop()
    events = []
    for line in fresh_agent.log().splitlines():
        if line.startswith("{") and '"event"' in line:
            doc = _json.loads(line)
            if doc.get("logger") == "runtime.lifecycle" and str(doc.get("env", "")).startswith("logged-"):
                events.append((doc["event"], doc.get("reason")))
    names = [e for e, _ in events]
    assert names.count("created") == 2
    assert "reused" in names
    assert ("killed", "timeout") in events
    assert ("reaped", "idle") in events


def test_refuses_public_metrics_without_flag(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    out = subprocess.run([str(Path(sys.executable).parent / "runtime-agent"), "serve", "--listen", "127.0.0.1:0",
                          "--metrics-listen", "0.0.0.0:0", "--data-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert "--metrics-public" in out.stderr
