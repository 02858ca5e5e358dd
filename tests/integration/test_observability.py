"""Logs, REPORT lines, Prometheus metrics and the usage ledger, checked
against what the functions actually did."""

import re
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client.parser import text_string_to_metric_families

from framework.agent import Client
from runtime.v1 import logs_pb2, usage_pb2

pytestmark = [pytest.mark.integration, pytest.mark.root]

REPORT_RE = re.compile(r"REPORT RequestId: (?P<id>\S+)\tDuration: (?P<d>[\d.]+) ms\tBilled Duration: (?P<b>\d+) ms"
                       r"\tMemory Size: (?P<m>\d+) MB\tMax Memory Used: (?P<used>\d+) MB"
                       r"(\tInit Duration: (?P<init>[\d.]+) ms)?")

WORKER = """
import time
HELD = []

def handler(event, context):
    if event.get("mb"):
        block = bytearray(event["mb"] * 1024 * 1024)
        for i in range(0, len(block), 4096):
            block[i] = 1
        HELD.append(block)
    for i in range(event.get("ticks", 0)):
        print("tick", i)
        time.sleep(event.get("gap", 0))
    time.sleep(event.get("sleep", 0))
    return "done"
"""


def _logs(client, name, **kw):
    return list(client.logs.GetLogs(logs_pb2.GetLogsRequest(function_name=name, **kw), timeout=30))


def _reports(client, name, request_id):
    lines = [e.message for e in _logs(client, name, request_id=request_id)]
    return lines, [REPORT_RE.match(l) for l in lines if l.startswith("REPORT")]


def test_report_lines_match_what_the_function_did(client):
    client.create("reporter", {"app.py": WORKER}, memory_mb=512, timeout_seconds=10)
    cold = client.invoke("reporter", {"sleep": 0.2})
    lines, reports = _reports(client, "reporter", cold.request_id)
    assert lines[0] == f"START RequestId: {cold.request_id} Version: $LATEST"
    assert lines[-2] == f"END RequestId: {cold.request_id}"
    (r,) = reports
    assert r and r["id"] == cold.request_id
    assert 200 <= float(r["d"]) < 2000
    assert int(r["b"]) == -(-float(r["d"]) // 1), "billed: duration rounded up to the next 1 ms"
    assert r["m"] == "512"
    assert r["init"] is not None and float(r["init"]) > 0, "Init Duration on a cold start"

    warm = client.invoke("reporter", {"mb": 100})
    _, (r,) = _reports(client, "reporter", warm.request_id)
    assert r["init"] is None, "no Init Duration on a warm start"
    assert int(r["used"]) >= 100, f"allocated 100 MB, REPORT says {r['used']} MB"


def test_logs_filter_by_request_and_time(client):
    client.create("filtered", {"app.py": WORKER})
    a = client.invoke("filtered", {"ticks": 2})
    time.sleep(0.05)
    middle = time.time()
    b = client.invoke("filtered", {"ticks": 3})
    mine = [e.message for e in _logs(client, "filtered", request_id=b.request_id) if e.stream == logs_pb2.STDOUT]
    assert mine == ["tick 0", "tick 1", "tick 2"]
    from google.protobuf.timestamp_pb2 import Timestamp
    ts = Timestamp()
    ts.FromNanoseconds(int(middle * 1e9))
    later = _logs(client, "filtered", start_time=ts)
    assert {e.request_id for e in later} == {b.request_id}
    assert a.request_id not in {e.request_id for e in later}


def test_follow_receives_lines_while_function_runs(client):
    client.create("follower", {"app.py": WORKER}, timeout_seconds=20)
    client.invoke("follower", {})  # warm it up
    received = []
    stream = client.logs.GetLogs(logs_pb2.GetLogsRequest(function_name="follower", follow=True, limit=1))

    def read():
        try:
            for event in stream:
                received.append((time.monotonic(), event.message))
        except Exception:  # cancelled below
            pass

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(0.3)
    started = time.monotonic()
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(client.invoke, "follower", {"ticks": 4, "gap": 0.5})
        deadline = time.monotonic() + 10
        while not any(m == "tick 1" for _, m in received) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not call.done(), "the first lines arrived while the function was still running"
        call.result()
    stream.cancel()
    reader.join(5)
    ticks = [t for t, m in received if m.startswith("tick")]
    assert len(ticks) == 4 and ticks[0] >= started


def test_prometheus_metrics_match_invocations(fresh_agent):
    fresh_agent.extra_args = ("--metrics-listen", "127.0.0.1:0")
    fresh_agent.start()
    port = fresh_agent.serving_info()["metrics_port"]
    c = Client(fresh_agent.target)
    c.create("metered", {"app.py": "def handler(e, c):\n    if e.get('fail'):\n        raise KeyError('x')\n"
                         "    return 1\n"})
    for _ in range(5):
        c.invoke("metered", {})
    for _ in range(2):
        c.invoke("metered", {"fail": True})
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    fn = (("function", "metered"),)
    assert samples[("runtime_invocations_total", fn)] == 7
    assert samples[("runtime_errors_total", (("error_type", "KeyError"), ("function", "metered")))] == 2
    assert samples[("runtime_starts_total", (("function", "metered"), ("kind", "cold")))] == 1
    assert samples[("runtime_starts_total", (("function", "metered"), ("kind", "warm")))] == 6
    assert samples[("runtime_invocation_duration_seconds_count", fn)] == 7
    assert samples[("runtime_init_duration_seconds_count", fn)] == 1
    assert samples[("runtime_environments", (("function", "metered"), ("state", "idle")))] == 1
    assert samples[("runtime_memory_budget_used_bytes", ())] == 128 * 1024 * 1024
    phases = {dict(k[1]).get("phase") for k in samples if k[0] == "runtime_phase_duration_seconds_count"}
    assert {"sandbox", "code_load", "handler"} <= phases
    # One call at a time: each was polled for (the first always: no reply
    # yet to say it is slow) unless the one before answered too slowly.
    polls = {o: samples[("runtime_reply_polls_total", (("outcome", o),))] for o in ("answered", "expired", "yielded")}
    assert 1 <= sum(polls.values()) <= 7, polls
    c.close()


def test_reply_polls_are_not_counted_when_polling_is_off(fresh_agent):
    fresh_agent.extra_args = ("--metrics-listen", "127.0.0.1:0", "--reply-poll-us", "0")
    fresh_agent.start()
    port = fresh_agent.serving_info()["metrics_port"]
    c = Client(fresh_agent.target)
    c.create("unpolled", {"app.py": "def handler(e, c):\n    return 1\n"})
    for _ in range(3):
        c.invoke("unpolled", {})
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    polls = {s.labels["outcome"]: s.value for family in text_string_to_metric_families(text)
             for s in family.samples if s.name == "runtime_reply_polls_total"}
    assert polls == {"answered": 0, "expired": 0, "yielded": 0}
    c.close()


def test_usage_ledger_adds_up_exactly(fresh_agent):
    fresh_agent.extra_args = ("--billing-granularity-ms", "100")
    fresh_agent.start()
    c = Client(fresh_agent.target)
    c.create("billed", {"app.py": WORKER}, memory_mb=256, timeout_seconds=10)
    c.create("idle-one", {"app.py": WORKER})
    c.invoke("idle-one", {})
    c.invoke("billed", {"sleep": 0.15})  # the cold start bills its init too, so measure it apart
    first = _usage(c, "billed")
    ids = [c.invoke("billed", {"sleep": 0.15}).request_id for _ in range(5)]
    time.sleep(1.5)  # idle time must not count
    after = _usage(c, "billed")
    # Each REPORT line says what that call was billed: 150 ms of sleep plus
    # overhead, rounded up to the 100 ms granularity.
    billed = [int(_reports(c, "billed", rid)[1][0]["b"]) for rid in ids]
    assert all(b % 100 == 0 and b >= 200 for b in billed), billed
    assert after["requests"] - first["requests"] == 5
    assert after["billed_ms"] - first["billed_ms"] == sum(billed)
    assert after["gb_seconds"] - first["gb_seconds"] == pytest.approx(sum(billed) / 1000 * 256 / 1024)
    assert after["cpu_seconds"] >= first["cpu_seconds"]
    idle = _usage(c, "idle-one")
    assert idle["requests"] == 1
    c.close()


def _usage(c, name):
    resp = c.usage.GetUsage(usage_pb2.GetUsageRequest(function_name=name), timeout=10)
    assert resp.billing_granularity_ms in (1, 100)
    total = {"requests": 0, "billed_ms": 0, "gb_seconds": 0.0, "cpu_seconds": 0.0}
    for r in resp.records:
        total["requests"] += r.requests
        total["billed_ms"] += r.billed_ms
        total["gb_seconds"] += r.gb_seconds
        total["cpu_seconds"] += r.cpu_seconds
    return total


def test_otlp_spans_per_invocation(fresh_agent):
    """A real OTLP/gRPC collector (the OpenTelemetry proto service) receives
    one span per invocation with its phases as children."""
    from concurrent import futures

    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    spans = []

    class Collector(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):
            for rs in request.resource_spans:
                for ss in rs.scope_spans:
                    spans.extend(ss.spans)
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Collector(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        fresh_agent.extra_args = ("--otlp-endpoint", f"127.0.0.1:{port}")
        fresh_agent.start()
        c = Client(fresh_agent.target)
        c.create("traced", {"app.py": "import time\ndef handler(e, c):\n    time.sleep(0.05)\n    return 1\n"})
        cold = c.invoke("traced", {})
        warm = c.invoke("traced", {})
        c.close()
        fresh_agent.stop()  # shutdown flushes the batch
        by_name = {}
        for s in spans:
            by_name.setdefault(s.name, []).append(s)
        roots = {s.span_id: s for s in by_name["invoke traced"]}
        assert len(roots) == 2
        invocation_ids = sorted(a.value.string_value for s in roots.values() for a in s.attributes
                                if a.key == "faas.invocation_id")
        assert invocation_ids == sorted([cold.request_id, warm.request_id])
        children = [s for s in spans if s.parent_span_id in roots]
        names = sorted(s.name for s in children)
        assert names.count("handler") == 2 and "sandbox" in names and "code_load" in names and "queue" in names
        handler = [s for s in children if s.name == "handler"][0]
        assert handler.end_time_unix_nano - handler.start_time_unix_nano >= 50_000_000
    finally:
        server.stop(0)
