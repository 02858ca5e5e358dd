"""Custom runtimes (``provided``): a function's own ``bootstrap`` talks the
Lambda Runtime API to the relay inside its sandbox.

The bootstraps here are small Python programs speaking raw HTTP over a
socket, so that each test controls exactly what goes on the wire (chunked
bodies, trailers, garbage, wrong ids, oversized bodies).
"""

import glob
import json
import time

import pytest

from framework.agent import Client, make_zip
from framework.examples import c_runtime_bootstrap
from runtime.v1 import invoker_pb2, logs_pb2

pytestmark = [pytest.mark.integration, pytest.mark.root]

PYTHONS = sorted(glob.glob("/usr/bin/python3.[0-9]*[0-9]"))
if not PYTHONS:
    pytest.skip("no /usr/bin/python3.X: the test bootstraps here are Python scripts", allow_module_level=True)
PY = PYTHONS[0]

# A raw Runtime API client: every request is written by hand.
RAPI = r'''
import json, os, socket

HOST, PORT = os.environ["AWS_LAMBDA_RUNTIME_API"].split(":")
BASE = "/2018-06-01/runtime"


def connect():
    return socket.create_connection((HOST, int(PORT)))


def read_response(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise EOFError("relay closed the connection")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
    n = int(headers.get("content-length", "0"))
    while len(rest) < n:
        rest += s.recv(65536)
    return status, headers, rest[:n]


def request(s, method, path, body=b"", headers=()):
    head = f"{method} {BASE}{path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers)
    s.sendall(head.encode() + b"\r\n" + body)
    return read_response(s)


def chunked(s, path, chunks, trailers=(), headers=()):
    head = f"POST {BASE}{path} HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers)
    data = head.encode() + b"\r\n"
    for c in chunks:
        data += b"%x\r\n%s\r\n" % (len(c), c)
    data += b"0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in trailers).encode() + b"\r\n"
    s.sendall(data)
    return read_response(s)


def next_event(s):
    status, headers, body = request(s, "GET", "/invocation/next")
    assert status == 200, (status, body)
    return headers, json.loads(body) if body else None


def respond(s, rid, obj):
    return request(s, "POST", f"/invocation/{rid}/response", json.dumps(obj).encode())
'''


def failed(resp, body) -> str:
    """The errorType of a failed invocation (AWS marks every one "Unhandled")."""
    assert resp.function_error == "Unhandled", body
    return body["errorType"]


def bootstrap(program: str) -> dict:
    """A zip's files: /var/task/bootstrap runs ``program`` with the RAPI helpers."""
    return {"bootstrap": f"#!/bin/sh\nexec {PY} -I -S /var/task/main.py \"$@\"\n",
            "rapi.py": RAPI, "main.py": "import sys\nsys.path.insert(0, '/var/task')\nfrom rapi import *\n" + program}


def create(client, name, program, runtime="provided", modes=None, **spec):
    files = bootstrap(program) if isinstance(program, str) else program
    modes = {"bootstrap": 0o755, **(modes or {})}
    return client.create(name, make_zip(files, modes), handler="function.handler", runtime=runtime, **spec)


ECHO = '''
s = connect()
count = 0
while True:
    h, event = next_event(s)
    count += 1
    print("handling", h["lambda-runtime-aws-request-id"], flush=True)
    env = {k: os.environ.get(k) for k in ("AWS_LAMBDA_RUNTIME_API", "_HANDLER", "AWS_EXECUTION_ENV",
           "_RUNTIME_CONTROL_FD", "_RUNTIME_STEM_CELL", "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
           "AWS_LAMBDA_FUNCTION_VERSION", "LAMBDA_TASK_ROOT", "TZ", "AWS_REGION")}
    respond(s, h["lambda-runtime-aws-request-id"], {"event": event, "headers": h, "env": env,
            "count": count, "cwd": os.getcwd(), "uid": os.getuid(), "ppid": os.getppid()})
'''


def test_echo_headers_environment_and_warm_reuse(client):
    create(client, "prov-echo", ECHO)
    resp, body = client.invoke_json("prov-echo", {"name": "ada"})
    assert resp.function_error == "", body
    assert resp.start_kind == invoker_pb2.COLD
    assert body["event"] == {"name": "ada"}
    h = body["headers"]
    assert len(h["lambda-runtime-aws-request-id"]) == 36
    deadline = int(h["lambda-runtime-deadline-ms"])
    assert time.time() * 1000 < deadline < time.time() * 1000 + 4000, "deadline = now + timeout (3 s)"
    assert h["lambda-runtime-invoked-function-arn"].endswith(":function:prov-echo")
    assert h["lambda-runtime-trace-id"].startswith("Root=1-")
    assert h["content-type"] == "application/json"
    env = body["env"]
    assert env["AWS_LAMBDA_RUNTIME_API"] == "127.0.0.1:9001"
    assert env["_HANDLER"] == "function.handler"
    assert env["AWS_EXECUTION_ENV"] is None, "AWS leaves AWS_EXECUTION_ENV unset for custom runtimes"
    assert env["_RUNTIME_CONTROL_FD"] is None and env["_RUNTIME_STEM_CELL"] is None
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "prov-echo" and env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "128"
    assert env["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST" and env["TZ"] == "UTC" and env["AWS_REGION"]
    assert body["cwd"] == "/var/task" and body["uid"] != 0 and body["ppid"] == 1

    resp2, body2 = client.invoke_json("prov-echo", {"n": 2})
    assert resp2.start_kind == invoker_pb2.WARM and body2["count"] == 2
    assert body2["headers"]["lambda-runtime-aws-request-id"] == resp2.request_id

    logs = list(client.logs.GetLogs(logs_pb2.GetLogsRequest(function_name="prov-echo", request_id=resp2.request_id)))
    text = "\n".join(e.message for e in logs)
    assert f"handling {resp2.request_id}" in text, "the bootstrap's stdout is the function's log"


def test_aliases_and_client_context(client):
    create(client, "prov-alias", ECHO, runtime="provided.al2023")
    resp, body = client.invoke_json("prov-alias", {}, client_context=json.dumps({"custom": {"k": "v"}}).encode())
    assert resp.function_error == "", body
    assert json.loads(body["headers"]["lambda-runtime-client-context"])["custom"] == {"k": "v"}


def test_function_error_is_passed_through(client):
    create(client, "prov-error", '''
s = connect()
while True:
    h, event = next_event(s)
    doc = {"errorMessage": "bad input: " + event["x"], "errorType": "InvalidInput", "stackTrace": ["main.py:1"]}
    status, _, body = request(s, "POST", f"/invocation/{h['lambda-runtime-aws-request-id']}/error",
                              json.dumps(doc).encode(), [("Lambda-Runtime-Function-Error-Type", "Unhandled")])
    assert status == 202 and json.loads(body) == {"status": "OK"}
''')
    resp, body = client.invoke_json("prov-error", {"x": "nope"})
    assert failed(resp, body) == "InvalidInput"
    assert body == {"errorMessage": "bad input: nope", "errorType": "InvalidInput", "stackTrace": ["main.py:1"]}
    resp, body = client.invoke_json("prov-error", {"x": "again"})
    assert resp.start_kind == invoker_pb2.WARM, "a reported error keeps the environment"


def test_error_body_that_is_not_json_gets_the_header_type(client):
    create(client, "prov-error-text", '''
s = connect()
while True:
    h, _ = next_event(s)
    request(s, "POST", f"/invocation/{h['lambda-runtime-aws-request-id']}/error", b"plain failure",
            [("Lambda-Runtime-Function-Error-Type", "Runtime.Custom")])
''')
    resp, body = client.invoke_json("prov-error-text", {})
    assert failed(resp, body) == "Runtime.Custom"
    assert body["errorMessage"] == "plain failure"


# Bodies posted to /error: passed through only when they are one JSON object
# whose errorType is truthy (as json.loads and dict.get see it) and nested at
# most 512 deep (the relay's bound), else wrapped.
ERROR_BODIES = [
    ('{"errorType": "Mine", "errorMessage": "m", "data": [1, {"a": null}, -0.5e3, "\\u00e9\\ud83d\\ude00"]}', True),
    ('  {"errorMessage": "x", "errorType": "Mine"}\n', True),
    ('{"errorType": ""}', False),
    ('{"errorType": 0.0}', False),
    ('{"errorType": []}', False),
    ('{"errorType": "Mine"} trailing', False),
    ('{"errorType": "Mine",}', False),
    ('[{"errorType": "Mine"}]', False),
    ('{"errorType": "Mine", "x": 01}', False),
    ('{"errorType": "Mine", "x": "\x01"}', False),
    ('{"errorType": "Mine"', False),
    ('\xff{"errorType": "Mine"}', False),
    ('{"a": ' * 600 + '1' + '}' * 600, False),
]


def test_error_documents_are_recognised_strictly(client):
    create(client, "prov-error-docs", '''
s = connect()
while True:
    h, event = next_event(s)
    body = event["body"].encode("latin-1")
    request(s, "POST", f"/invocation/{h['lambda-runtime-aws-request-id']}/error", body,
            [("Lambda-Runtime-Function-Error-Type", "FromHeader")])
''')
    for text, passed in ERROR_BODIES:
        resp, body = client.invoke_json("prov-error-docs", {"body": text})
        if passed:
            assert body == json.loads(text), text
        else:
            assert failed(resp, body) == "FromHeader", text
            assert body["errorMessage"] == text.encode("latin-1").decode("utf-8", "replace"), text


def test_chunked_response_with_trailers(client):
    create(client, "prov-chunked", '''
s = connect()
while True:
    h, event = next_event(s)
    rid = h["lambda-runtime-aws-request-id"]
    if event.get("fail"):
        import base64
        doc = json.dumps({"errorType": "StreamBroke", "errorMessage": "mid-stream"})
        err = base64.b64encode((doc if event["fail"] is True else event["fail"]).encode())
        status, _, _ = chunked(s, f"/invocation/{rid}/response", [b'{"partial":'],
                               [("Lambda-Runtime-Function-Error-Type", "StreamBroke"),
                                ("Lambda-Runtime-Function-Error-Body", err.decode())],
                               [("Lambda-Runtime-Function-Response-Mode", "streaming"),
                                ("Trailer", "Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body")])
    else:
        status, _, _ = chunked(s, f"/invocation/{rid}/response", [b'{"a": ', b'[1, 2, ', b'3]}'],
                               headers=[("Trailer", "Lambda-Runtime-Function-Error-Type")])
    assert status == 202
''')
    resp, body = client.invoke_json("prov-chunked", {})
    assert resp.function_error == "" and body == {"a": [1, 2, 3]}
    resp, body = client.invoke_json("prov-chunked", {"fail": True})
    assert failed(resp, body) == "StreamBroke" and body["errorMessage"] == "mid-stream"
    assert resp.start_kind == invoker_pb2.WARM
    # An error body that is not an error document gets the trailer's type, as a body posted to /error does.
    resp, body = client.invoke_json("prov-chunked", {"fail": "disk full"})
    assert failed(resp, body) == "StreamBroke" and body["errorMessage"] == "disk full"


def test_expect_100_continue_is_answered(client):
    create(client, "prov-expect", '''
s = connect()
while True:
    h, event = next_event(s)
    body = json.dumps({"big": "x" * 5000}).encode()
    s.sendall((f"POST {BASE}/invocation/{h['lambda-runtime-aws-request-id']}/response HTTP/1.1\\r\\n"
               f"Host: x\\r\\nExpect: 100-continue\\r\\nContent-Length: {len(body)}\\r\\n\\r\\n").encode())
    s.settimeout(0.5)
    interim = s.recv(100)  # libcurl waits for this before sending the body
    s.settimeout(None)
    assert interim.startswith(b"HTTP/1.1 100"), interim
    s.sendall(body)
    assert read_response(s)[0] == 202
''')
    resp, body = client.invoke_json("prov-expect", {})
    assert resp.function_error == "", body
    assert len(body["big"]) == 5000


def test_init_error(client):
    create(client, "prov-init-error", '''
s = connect()
request(s, "POST", "/init/error", json.dumps({"errorType": "Runtime.ConfigInvalid",
        "errorMessage": "missing setting"}).encode(), [("Lambda-Runtime-Function-Error-Type", "Runtime.ConfigInvalid")])
raise SystemExit(1)
''')
    resp, body = client.invoke_json("prov-init-error", {})
    assert failed(resp, body) == "Runtime.ConfigInvalid"
    assert body["errorMessage"] == "missing setting"


@pytest.mark.parametrize("name,files,modes,expected", [
    ("missing", {"main.py": "print(1)"}, {}, "Couldn't find valid bootstrap"),
    ("not-executable", {"bootstrap": "#!/bin/sh\necho hi\n"}, {"bootstrap": 0o644}, "permission denied"),
    ("not-a-program", {"bootstrap": b"\x00\x01garbage"}, {}, "exec format error"),
])
def test_bad_bootstrap_is_an_invalid_entrypoint(client, name, files, modes, expected):
    name = "prov-entry-" + name
    client.create(name, make_zip(files, {"bootstrap": 0o755, **modes}), handler="x", runtime="provided")
    resp, body = client.invoke_json(name, {})
    assert failed(resp, body) == "Runtime.InvalidEntrypoint", body
    assert expected in body["errorMessage"]


def test_exit_during_init_and_mid_invocation(client):
    create(client, "prov-exit-init", "raise SystemExit(3)\n")
    resp, body = client.invoke_json("prov-exit-init", {})
    assert failed(resp, body) == "Runtime.ExitError"
    assert "exit status 3" in body["errorMessage"]

    create(client, "prov-exit-mid", '''
s = connect()
while True:
    h, event = next_event(s)
    if event.get("die"):
        os.kill(os.getpid(), 11)
    respond(s, h["lambda-runtime-aws-request-id"], {"pid": os.getpid()})
''')
    _, first = client.invoke_json("prov-exit-mid", {})
    resp, body = client.invoke_json("prov-exit-mid", {"die": True})
    assert failed(resp, body) == "Runtime.ExitError"
    assert "segmentation fault" in body["errorMessage"].lower()
    resp, again = client.invoke_json("prov-exit-mid", {})
    assert resp.function_error == "" and resp.start_kind != invoker_pb2.WARM, "a fresh environment"


def test_protocol_violations(client):
    """Each broken runtime gets the error AWS would give and the agent stays healthy."""
    create(client, "prov-violations", '''
s = connect()
while True:
    h, event = next_event(s)
    rid = h["lambda-runtime-aws-request-id"]
    mode = event["mode"]
    if mode == "wrong-id":
        status, _, body = respond(s, "00000000-0000-0000-0000-000000000000", {})
        respond(s, rid, {"wrong_id_status": status, "wrong_id_body": json.loads(body)})
    elif mode == "next-twice":
        status, _, body = request(s, "GET", "/invocation/next")
        print("second next:", status, body.decode(), flush=True)
    elif mode == "too-large":
        status, _, body = request(s, "POST", f"/invocation/{rid}/response", b"x" * (6 * 1024 * 1024 + 200))
        print("too large:", status, flush=True)
        s = connect()
    elif mode == "garbage":
        s.sendall(b"\\x00\\x01 NOT HTTP AT ALL\\r\\n\\r\\n")
        print("garbage:", read_response(s)[0], flush=True)
        s = connect()
    elif mode == "unknown-path":
        status, _, _ = request(s, "GET", "/nothing/here")
        respond(s, rid, {"unknown_path_status": status})
''', timeout_seconds=5)
    _, body = client.invoke_json("prov-violations", {"mode": "wrong-id"})
    assert body["wrong_id_status"] == 400 and body["wrong_id_body"]["errorType"] == "InvalidRequestID"

    resp, body = client.invoke_json("prov-violations", {"mode": "next-twice"})
    assert failed(resp, body) == "Runtime.InvalidResponse", body
    assert "/next before answering" in body["errorMessage"]

    resp, body = client.invoke_json("prov-violations", {"mode": "too-large"})
    assert failed(resp, body) == "Function.ResponseSizeTooLarge", body

    resp, body = client.invoke_json("prov-violations", {"mode": "garbage"})
    assert failed(resp, body) == "Runtime.InvalidResponse", body

    resp, body = client.invoke_json("prov-violations", {"mode": "unknown-path"})
    assert body == {"unknown_path_status": 404}


def test_never_calls_next_and_hangs(client):
    create(client, "prov-no-next", "import time\ntime.sleep(60)\n", timeout_seconds=2)
    t0 = time.monotonic()
    resp, body = client.invoke_json("prov-no-next", {})
    assert failed(resp, body) == "Sandbox.Timedout", body
    assert "Init phase timed out" in body["errorMessage"] or "timed out" in body["errorMessage"]
    assert time.monotonic() - t0 < 10

    create(client, "prov-hang", '''
s = connect()
h, _ = next_event(s)
import time
time.sleep(60)
''', timeout_seconds=2)
    resp, body = client.invoke_json("prov-hang", {})
    assert failed(resp, body) == "Sandbox.Timedout", body
    assert "Task timed out after 2.00 seconds" in body["errorMessage"]


def test_runtime_api_unreachable_from_other_sandboxes(client):
    """Each sandbox's 127.0.0.1:9001 is its own: a Python function sees no relay."""
    client.create("prov-neighbour", {"app.py": """
import socket
def handler(event, context):
    try:
        socket.create_connection(("127.0.0.1", 9001), timeout=1).close()
        return "connected"
    except OSError as exc:
        return type(exc).__name__
"""})
    _, body = client.invoke_json("prov-neighbour", {})
    assert body == "ConnectionRefusedError"


def test_stem_cells_serve_custom_runtimes(fresh_agent):
    fresh_agent.extra_args = ("--stem-cells", "1")
    fresh_agent.start()
    c = Client(fresh_agent.target)
    try:
        deadline = time.monotonic() + 20
        while "stem-provided" not in fresh_agent.log() and time.monotonic() < deadline:
            time.sleep(0.2)
        create(c, "prov-stem", ECHO)
        resp, body = c.invoke_json("prov-stem", {"x": 1})
        assert resp.function_error == "", body
        assert resp.start_kind == invoker_pb2.PREWARMED
        assert body["event"] == {"x": 1} and body["cwd"] == "/var/task"
        assert body["env"]["_RUNTIME_STEM_CELL"] is None
        resp, body = c.invoke_json("prov-stem", {})
        assert resp.start_kind == invoker_pb2.WARM and body["count"] == 2
    finally:
        c.close()
        assert fresh_agent.stop() == 0


@pytest.fixture(scope="module")
def c_runtime():
    """examples/custom-runtime-c built with its own Makefile."""
    bootstrap = c_runtime_bootstrap()
    if bootstrap is None:
        pytest.skip("no make/cc: the C example cannot be built on this host")
    return bootstrap


def test_c_example_runtime(client, c_runtime):
    for handler in ("stats", "fail", "crash", "nope"):
        client.create(f"prov-c-{handler}", make_zip({"bootstrap": c_runtime}, {"bootstrap": 0o755}),
                      handler=handler, runtime="provided")
    event = {"a": [1, -2, {"b": "c"}]}
    resp, body = client.invoke_json("prov-c-stats", event)
    assert resp.function_error == "", body
    assert body == {"runtime": "c", "bytes": len(json.dumps(event)), "strings": 3, "numbers": 2, "objects": 2, "arrays": 1}
    resp, body = client.invoke_json("prov-c-stats", {})
    assert resp.start_kind == invoker_pb2.WARM and body["bytes"] == 2

    resp, body = client.invoke_json("prov-c-fail", {"x": 1})
    assert failed(resp, body) == "InvalidEvent" and body["errorMessage"] == "refused an event of %d bytes" % len(json.dumps({"x": 1}))

    resp, body = client.invoke_json("prov-c-crash", {})
    assert failed(resp, body) == "Runtime.ExitError"
    assert "aborted" in body["errorMessage"].lower()

    resp, body = client.invoke_json("prov-c-nope", {})
    assert failed(resp, body) == "Runtime.HandlerNotFound"
    assert "use stats, fail or crash" in body["errorMessage"]
