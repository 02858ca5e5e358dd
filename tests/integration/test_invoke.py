"""A deployed Python function runs in a real sandbox and answers over gRPC."""

import glob
import json
import time
import uuid

import grpc
import pytest

from framework.agent import assert_dies_and_is_replaced, error_type, refused_by_serve
from runtime.v1 import invoker_pb2, logs_pb2, usage_pb2

pytestmark = [pytest.mark.integration, pytest.mark.root]

HELLO = """
import os
COUNT = 0

def handler(event, context):
    global COUNT
    COUNT += 1
    print("hello from", context.function_name)
    return {"greeting": "hello " + event.get("name", "world"), "count": COUNT,
            "request_id": context.aws_request_id, "version": context.function_version,
            "memory": context.memory_limit_in_mb, "arn": context.invoked_function_arn,
            "group": context.log_group_name, "stream": context.log_stream_name,
            "remaining": context.get_remaining_time_in_millis(), "env": os.environ.get("GREETING")}
"""


def test_invoke_returns_result_and_reuses_environment(client):
    client.create("hello", {"app.py": HELLO}, environment={"GREETING": "hi"}, timeout_seconds=7)
    resp, body = client.invoke_json("hello", {"name": "ada"})
    assert resp.function_error == ""
    assert body["greeting"] == "hello ada"
    assert body["count"] == 1
    assert body["request_id"] == resp.request_id
    assert body["version"] == "$LATEST" == resp.executed_version
    assert body["memory"] == "128"
    assert body["arn"].endswith(":function:hello")
    assert body["group"] == "/aws/lambda/hello"
    assert "[$LATEST]" in body["stream"]
    assert 0 < body["remaining"] <= 7000
    assert body["env"] == "hi"
    assert resp.start_kind == invoker_pb2.COLD
    assert resp.timings.init_us > 0 and resp.timings.sandbox_us > 0

    resp2, body2 = client.invoke_json("hello", {})
    assert body2["count"] == 2, "module state is kept between invocations (warm start)"
    assert resp2.start_kind == invoker_pb2.WARM
    assert resp2.timings.init_us == 0
    assert resp2.request_id != resp.request_id
    for rid in (resp.request_id, resp2.request_id):  # random UUIDs in their usual text form, as Lambda's
        assert str(uuid.UUID(rid)) == rid and uuid.UUID(rid).version == 4 and uuid.UUID(rid).variant == uuid.RFC_4122


ENV_PROBE = """
import subprocess
ENV_AT_IMPORT = __import__("os").environ.get("GREETING")
def handler(event, context):
    import os
    child = subprocess.run(["/bin/sh", "-c", 'echo "$GREETING|${_RUNTIME_CONTROL_FD-unset}|${_HANDLER}"'],
                           capture_output=True, text=True).stdout.strip()
    return {"internal": sorted(k for k in os.environ if k.startswith("_RUNTIME")), "child": child,
            "import": ENV_AT_IMPORT, "handler": os.environ.get("_HANDLER"), "cwd": os.getcwd()}
"""


def test_function_environment_is_consistent_without_control_variables(client):
    """The bootstrap reads its control variables and removes them from the
    environment before the function is imported: neither os.environ nor a
    child process sees them, and both see the function's own variables."""
    client.create("env-probe", {"app.py": ENV_PROBE}, environment={"GREETING": "hi there"})
    resp, body = client.invoke_json("env-probe", {})
    assert resp.function_error == "", resp.payload
    assert body == {"internal": [], "child": "hi there|unset|app.handler", "import": "hi there",
                    "handler": "app.handler", "cwd": "/var/task"}


def test_empty_payload_is_empty_object(client):
    client.create("echo", {"app.py": "def handler(e, c):\n    return e\n"})
    resp = client.invoke("echo", raw=b"")
    assert json.loads(resp.payload) == {}
    resp = client.invoke("echo", raw=b'[1, "two", null]')
    assert json.loads(resp.payload) == [1, "two", None]


def test_log_tail(client):
    client.create("talker", {"app.py": "def handler(e, c):\n    print('line one')\n    print('line two')\n"
                             "    return None\n"})
    resp = client.invoke("talker", {}, log_type=1)
    assert resp.payload == b"null"
    assert "line one\nline two\n" in resp.log_result


def test_handler_exception_is_unhandled_error(client):
    client.create("raiser", {"app.py": "def handler(e, c):\n    raise ValueError('bad input: ' + str(e))\n"})
    resp, body = client.invoke_json("raiser", {"x": 1})
    assert resp.function_error == "Unhandled"
    assert body["errorType"] == "ValueError"
    assert body["errorMessage"] == "bad input: {'x': 1}"
    assert any("app.py" in line for line in body["stackTrace"])
    # the environment survives a handled exception
    resp2, _ = client.invoke_json("raiser", {})
    assert resp2.start_kind == invoker_pb2.WARM


def test_import_error_is_init_error(client):
    client.create("broken-import", {"app.py": "import no_such_module\ndef handler(e, c):\n    return 1\n"})
    resp, body = client.invoke_json("broken-import")
    assert resp.function_error == "Unhandled"
    assert body["errorType"] == "Runtime.ImportModuleError"
    assert "no_such_module" in body["errorMessage"]


def test_missing_module_and_handler(client):
    client.create("no-module", {"other.py": "x = 1\n"})
    _, body = client.invoke_json("no-module")
    assert body["errorType"] == "Runtime.ImportModuleError"
    client.create("no-handler", {"app.py": "def other(e, c):\n    return 1\n"})
    resp, body = client.invoke_json("no-handler")
    assert resp.function_error == "Unhandled"
    assert body["errorType"] == "Runtime.HandlerNotFound"


def test_non_serialisable_result_is_marshal_error(client):
    client.create("unmarshal", {"app.py": "def handler(e, c):\n    return {1, 2}\n"})
    resp, body = client.invoke_json("unmarshal")
    assert resp.function_error == "Unhandled"
    assert body["errorType"] == "Runtime.MarshalError"


def test_timeout_kills_environment(client):
    client.create("sleeper", {"app.py": "import time\nN = 0\ndef handler(e, c):\n    global N\n    N += 1\n"
                              "    if e.get('sleep'):\n        time.sleep(e['sleep'])\n    return N\n"},
                  timeout_seconds=1)
    assert client.invoke_json("sleeper")[1] == 1
    resp, body = client.invoke_json("sleeper", {"sleep": 30})
    assert resp.function_error == "Unhandled"
    assert body["errorType"] == "Sandbox.Timedout"
    assert "Task timed out after 1.00 seconds" in body["errorMessage"]
    assert resp.timings.total_us < 5_000_000
    resp, body = client.invoke_json("sleeper")
    assert body == 1, "a fresh environment replaced the killed one"
    assert resp.start_kind == invoker_pb2.COLD


def test_timeout_holds_when_the_caller_gives_up_first(agent, client):
    """A caller whose own deadline passes first stops waiting; its call runs
    on, as on AWS: no longer than its function's timeout, and logged, billed
    and its environment kept warm when it ends."""
    name = "abandoned"
    client.create(name, {"app.py": "import time\ndef handler(e, c):\n    if e.get('spin'):\n"
                         "        while True:\n            time.sleep(0.05)\n    time.sleep(e.get('sleep', 0))\n"
                         "    return 'ok'\n"},
                  timeout_seconds=2)

    def usage():
        records = client.usage.GetUsage(usage_pb2.GetUsageRequest(function_name=name), timeout=10).records
        return sum(r.requests for r in records), sum(r.billed_ms for r in records)

    def settled(requests):
        deadline = time.monotonic() + 15
        while usage()[0] < requests and time.monotonic() < deadline:
            time.sleep(0.1)
        return usage()

    assert client.invoke_json(name)[1] == "ok"
    cgroups = f"/sys/fs/cgroup/pids/runtime-agent/*/{name}-*"
    assert len(glob.glob(cgroups)) == 1
    with pytest.raises(grpc.RpcError) as err:
        client.invoke(name, {"spin": True}, timeout=0.5)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    deadline = time.monotonic() + 15
    while glob.glob(cgroups) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not glob.glob(cgroups), "the abandoned invocation ran past its function's 2 s timeout"
    requests, billed_ms = settled(2)
    assert requests == 2 and billed_ms >= 2000, "the timed-out call is billed up to its timeout"
    resp, body = client.invoke_json(name)
    assert body == "ok" and resp.start_kind == invoker_pb2.COLD
    # Answered after its caller left, within the timeout: the environment
    # goes back to its pool.
    env = glob.glob(cgroups)
    with pytest.raises(grpc.RpcError):
        client.invoke(name, {"sleep": 1}, timeout=0.3)
    requests, billed_ms = settled(4)
    assert requests == 4 and billed_ms >= 3000
    resp, body = client.invoke_json(name)
    assert body == "ok" and resp.start_kind == invoker_pb2.WARM
    assert glob.glob(cgroups) == env, "the same environment served the next call"
    killed = [line for line in agent.log().splitlines() if "killed" in line and f"env={name}-" in line]
    reasons = [line.split("reason=")[1].split()[0] for line in killed]
    assert reasons == ["timeout"], killed
    reports = [e.message for e in client.logs.GetLogs(logs_pb2.GetLogsRequest(function_name=name), timeout=30)
               if e.stream == logs_pb2.PLATFORM and e.message.startswith("REPORT")]
    assert len(reports) == 5, reports
    assert sum("Error Type: Sandbox.Timedout" in r for r in reports) == 1, reports


def test_crash_is_exit_error_and_environment_replaced(client):
    client.create("crasher", {"app.py": "import os\ndef handler(e, c):\n    if e.get('die'):\n"
                              "        os._exit(3)\n    return 'ok'\n"})
    assert client.invoke_json("crasher")[1] == "ok"
    assert_dies_and_is_replaced(client, "crasher", {"die": True}, "exit status 3")


def test_closed_control_socket_is_exit_error_and_environment_replaced(client):
    """A runtime that shuts its end of the control socket but does not exit
    is ended after a grace (it never gives an exit status to report), well
    before the function's timeout, and the next call gets a new environment."""
    client.create("hangs-up", {"app.py": """import os, socket, time
def handler(e, c):
    if e.get('hang_up'):
        for fd in os.listdir('/proc/self/fd'):
            try:
                if os.readlink('/proc/self/fd/' + fd).startswith('socket:'):
                    socket.socket(fileno=int(fd)).shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        time.sleep(120)
    return 'ok'
"""}, timeout_seconds=60)
    assert client.invoke_json("hangs-up")[1] == "ok"
    assert_dies_and_is_replaced(client, "hangs-up", {"hang_up": True}, "Runtime exited without providing a reason")


def test_response_too_large(client):
    client.create("big-response", {"app.py": "def handler(e, c):\n    return 'x' * (e['n'])\n"})
    _, body = client.invoke_json("big-response", {"n": 6 * 1024 * 1024 - 100})
    assert len(body) == 6 * 1024 * 1024 - 100
    resp, body = client.invoke_json("big-response", {"n": 6 * 1024 * 1024 + 10})
    assert resp.function_error == "Unhandled"
    assert body["errorType"] == "Function.ResponseSizeTooLarge"


def test_payload_errors(client):
    client.create("payload-check", {"app.py": "def handler(e, c):\n    return len(e['s'])\n"})
    with pytest.raises(grpc.RpcError) as err:
        client.invoke("payload-check", raw=b"{not json")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_type(err.value) == "InvalidRequestContentException"
    big = json.dumps({"s": "x" * (6 * 1024 * 1024)}).encode()
    with pytest.raises(grpc.RpcError) as err:
        client.invoke("payload-check", raw=big)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_type(err.value) == "RequestTooLargeException"
    # just under the limit works
    ok = json.dumps({"s": "x" * (6 * 1024 * 1024 - 100)}).encode()
    assert json.loads(client.invoke("payload-check", raw=ok).payload) == 6 * 1024 * 1024 - 100


def test_unknown_function(client):
    with pytest.raises(grpc.RpcError) as err:
        client.invoke("does-not-exist", {})
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_type(err.value) == "ResourceNotFoundException"


def test_concurrent_invocations_scale_out(client):
    from concurrent.futures import ThreadPoolExecutor

    client.create("slow-id", {"app.py": "import time, uuid\nME = str(uuid.uuid4())\n"
                              "def handler(e, c):\n    time.sleep(0.3)\n    return ME\n"})
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: client.invoke_json("slow-id")[1], range(4)))
    assert len(set(results)) == 4, "four concurrent calls ran in four environments"


def test_client_context_reaches_handler(client):
    client.create("ctx-echo", {"app.py": "def handler(e, c):\n    return c.client_context\n"})
    resp = client.invoke("ctx-echo", {}, client_context=b'{"custom": {"a": "line\\nbreak"}, "env": {"k": 1}}')
    assert json.loads(resp.payload) == {"custom": {"a": "line\nbreak"}, "env": {"k": 1}}
    assert json.loads(client.invoke("ctx-echo", {}).payload) is None
    with pytest.raises(grpc.RpcError) as err:
        client.invoke("ctx-echo", {}, client_context=b"{nope")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


MIXED = """
import os, sys, time
def handler(event, context):
    if event.get("die"):
        os._exit(4)
    if event.get("sleep_ms"):
        time.sleep(event["sleep_ms"] / 1000)
    print("line", event.get("i"))
    sys.stderr.write("err %s\\n" % event.get("i"))
    return {"i": event.get("i"), "blob": "y" * event.get("n", 0)}
"""


@pytest.mark.parametrize("poll_us", ["0", "200", "10000"])
def test_reply_polling_setting_keeps_every_answer_and_log_line(fresh_agent, poll_us):
    """Replies that come within the polling time, after it, in many reads
    (1 MB), and a crash instead of a reply: each is answered as without
    polling, and each invocation's output lines stay with it."""
    from framework.agent import Client

    fresh_agent.extra_args = ("--reply-poll-us", poll_us)
    fresh_agent.start()
    c = Client(fresh_agent.target)
    try:
        c.create("mixed", {"app.py": MIXED})
        events = [{"i": 0}, {"i": 1}, {"i": 2, "sleep_ms": 30}, {"i": 3}, {"i": 4, "n": 1 << 20},
                  {"i": 5}, {"die": True}, {"i": 7}, {"i": 8, "sleep_ms": 5}, {"i": 9}]
        request_ids = {}
        for event in events:
            resp, body = c.invoke_json("mixed", event)
            if event.get("die"):
                assert body["errorType"] == "Runtime.ExitError" and "exit status 4" in body["errorMessage"]
                continue
            assert resp.function_error == "" and body["i"] == event["i"]
            assert len(body["blob"]) == event.get("n", 0)
            request_ids[event["i"]] = resp.request_id
        for i, rid in request_ids.items():
            lines = [(e.stream, e.message) for e in c.logs.GetLogs(logs_pb2.GetLogsRequest(
                function_name="mixed", request_id=rid), timeout=30) if e.stream != logs_pb2.PLATFORM]
            assert lines == [(logs_pb2.STDOUT, f"line {i}"), (logs_pb2.STDERR, f"err {i}")], (i, lines)
    finally:
        c.close()
    assert fresh_agent.stop() == 0


@pytest.mark.parametrize("value,words", [("-1", "allowed 0-10000"), ("10001", "allowed 0-10000"),
                                         ("fast", "not a whole number")])
def test_reply_poll_setting_is_checked(tmp_path, value, words):
    stderr = refused_by_serve(tmp_path, "--reply-poll-us", value)
    assert "--reply-poll-us" in stderr and words in stderr
