"""The official AWS runtime interface clients, unmodified, against the
agent's Runtime API: each is built from its package registry by
``build.py`` into a ``provided`` function, deployed on a real agent and
invoked through the gRPC API.

One handler per language switches on the event:

    {"mode": "ok", "value": V}     returns V and what the RIC's context carries
    {"mode": "error", "value": V}  raises/returns ConformanceError("handled: V"): the RIC posts /error
    {"mode": "exit"}               the process exits with status 7 mid-invocation
"""

from __future__ import annotations

import importlib.util
import json
import uuid
from pathlib import Path

import pytest

from runtime.v1 import invoker_pb2, logs_pb2

pytestmark = [pytest.mark.integration, pytest.mark.root, pytest.mark.conformance,
              # the first run builds: downloads plus a native or Rust compile
              pytest.mark.timeout(1800)]

_spec = importlib.util.spec_from_file_location("ric_build", Path(__file__).with_name("build.py"))
ric_build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ric_build)


# language: (handler, memory MB, the errorType its RIC reports for ConformanceError)
CASES = {
    "python": ("app.handler", 128, "ConformanceError"),
    "node": ("app.handler", 512, "ConformanceError"),
    "java": ("example.App::handleRequest", 1024, "example.ConformanceError"),
    "go": ("bootstrap", 128, "ConformanceError"),
    "rust": ("bootstrap", 128, "ConformanceError"),
}
TIMEOUT_S = 30


@pytest.fixture(scope="module", params=ric_build.LANGUAGES)
def function(request, client):
    """Builds (or takes from the cache) and deploys one language's function."""
    lang = request.param
    try:
        zip_path = ric_build.build(lang)
    except ric_build.Unavailable as exc:
        pytest.skip(f"{lang} RIC not built: {exc}")
    handler, memory, _ = CASES[lang]
    name = f"ric-{lang}"
    client.create(name, zip_path.read_bytes(), handler=handler, runtime="provided.al2023",
                  memory_mb=memory, timeout_seconds=TIMEOUT_S)
    return lang, name


def _invoke(client, name, event):
    resp = client.invoke(name, event)
    return resp, json.loads(resp.payload)


def _assert_ok(client, function, resp, body, value):
    lang, name = function
    assert resp.function_error == "", body
    assert body["ric"] == lang and body["echo"] == value
    assert body["requestId"] == resp.request_id
    assert body["functionName"] == name
    assert body["functionVersion"] == "$LATEST"
    assert body["memoryLimitInMB"] == CASES[lang][1]
    assert body["invokedFunctionArn"].endswith(f":function:{name}")
    assert 0 < body["remainingMs"] <= TIMEOUT_S * 1000


def _logs(client, name, request_id) -> str:
    entries = client.logs.GetLogs(logs_pb2.GetLogsRequest(function_name=name, request_id=request_id))
    return "\n".join(e.message for e in entries)


def test_success_carries_event_and_context(client, function):
    _, name = function
    value = uuid.uuid4().hex
    resp, body = _invoke(client, name, {"mode": "ok", "value": value})
    _assert_ok(client, function, resp, body, value)

    again, body = _invoke(client, name, {"mode": "ok", "value": "second"})
    _assert_ok(client, function, again, body, "second")
    assert again.start_kind == invoker_pb2.WARM, "the RIC's loop takes the next event in the same environment"
    assert again.request_id != resp.request_id


def test_handled_error_comes_from_the_function(client, function):
    lang, name = function
    value = uuid.uuid4().hex
    resp, body = _invoke(client, name, {"mode": "error", "value": value})
    assert resp.function_error == "Unhandled", body
    assert body["errorType"] == CASES[lang][2], body
    assert body["errorMessage"] == f"handled: {value}", body

    after, body = _invoke(client, name, {"mode": "ok", "value": 1})
    _assert_ok(client, function, after, body, 1)
    assert after.start_kind == invoker_pb2.WARM, "a handled error leaves the environment in use"


def test_unhandled_exit_is_exit_error(client, function):
    _, name = function
    resp, body = _invoke(client, name, {"mode": "exit"})
    assert resp.function_error == "Unhandled", body
    assert body["errorType"] == "Runtime.ExitError", body
    assert "exit status 7" in body["errorMessage"], body
    assert "exiting mid-invocation" in _logs(client, name, resp.request_id)

    after, body = _invoke(client, name, {"mode": "ok", "value": [1, 2]})
    _assert_ok(client, function, after, body, [1, 2])
    assert after.start_kind != invoker_pb2.WARM, "a dead environment is never reused"
