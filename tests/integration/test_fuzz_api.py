"""The gRPC API under malformed and oversized messages: every call gets a
clear status and the agent keeps serving."""

import grpc
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from grpc_health.v1 import health_pb2

from runtime.v1 import function_pb2, functions_pb2, invoker_pb2, logs_pb2

pytestmark = [pytest.mark.integration, pytest.mark.root]

UNARY = ["/runtime.v1.Functions/UpdateFunctionConfiguration", "/runtime.v1.Functions/GetFunction",
         "/runtime.v1.Functions/ListFunctions", "/runtime.v1.Functions/DeleteFunction",
         "/runtime.v1.Invoker/Invoke", "/runtime.v1.Usage/GetUsage"]
STREAM_IN = ["/runtime.v1.Functions/CreateFunction", "/runtime.v1.Functions/UpdateFunctionCode"]
ALLOWED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.RESOURCE_EXHAUSTED,
           grpc.StatusCode.ALREADY_EXISTS}
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


def _healthy(client):
    assert client.health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == \
        health_pb2.HealthCheckResponse.SERVING


def _raw(client, method, stream=False):
    ident = lambda b: b  # noqa: E731  send the bytes as they are
    if stream:
        return client.channel.stream_unary(method, request_serializer=ident, response_deserializer=ident)
    return client.channel.unary_unary(method, request_serializer=ident, response_deserializer=ident)


@FUZZ
@given(method=st.sampled_from(UNARY), body=st.binary(max_size=2048))
def test_garbage_bytes_unary(client, method, body):
    try:
        _raw(client, method)(body, timeout=30)
    except grpc.RpcError as err:
        assert err.code() in ALLOWED, (method, err.code(), err.details())
        assert err.details()
    _healthy(client)


@FUZZ
@given(method=st.sampled_from(STREAM_IN), parts=st.lists(st.binary(max_size=512), max_size=5))
def test_garbage_bytes_client_stream(client, method, parts):
    try:
        _raw(client, method, stream=True)(iter(parts), timeout=30)
    except grpc.RpcError as err:
        assert err.code() in ALLOWED, (method, err.code(), err.details())
    _healthy(client)


names = st.text(max_size=80)
numbers = st.integers(min_value=0, max_value=2**32 - 1)


@FUZZ
@given(name=names, runtime=st.sampled_from(["python3.11", "", "x" * 300]), handler=names,
       memory=numbers, timeout=numbers, tmp=numbers, env=st.dictionaries(names, names, max_size=4),
       code=st.binary(max_size=1024))
def test_structured_create_requests(client, name, runtime, handler, memory, timeout, tmp, env, code):
    spec = function_pb2.FunctionSpec(name=name, runtime=runtime, handler=handler, memory_mb=memory,
                                     timeout_seconds=timeout, ephemeral_storage_mb=tmp, environment=env)
    reqs = [functions_pb2.CreateFunctionRequest(spec=spec),
            functions_pb2.CreateFunctionRequest(code=function_pb2.CodeChunk(data=code))]
    try:
        client.functions.CreateFunction(iter(reqs), timeout=30)
    except grpc.RpcError as err:
        assert err.code() in {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.ALREADY_EXISTS}, err.details()
        assert err.details()
    _healthy(client)


@FUZZ
@given(name=names, payload=st.binary(max_size=4096), cc=st.binary(max_size=4096),
       kind=st.sampled_from([0, 1, 2, 7]), log=st.sampled_from([0, 1, 5]))
def test_structured_invoke_requests(client, name, payload, cc, kind, log):
    req = invoker_pb2.InvokeRequest(function_name=name, payload=payload, client_context=cc,
                                    invocation_type=kind, log_type=log)
    try:
        client.invoker.Invoke(req, timeout=30)
    except grpc.RpcError as err:
        assert err.code() in {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                              grpc.StatusCode.RESOURCE_EXHAUSTED}, err.details()
    _healthy(client)


def test_oversized_messages(client):
    for size in (17 * 1024 * 1024, 40 * 1024 * 1024):
        with pytest.raises(grpc.RpcError) as err:
            client.invoker.Invoke(invoker_pb2.InvokeRequest(function_name="x", payload=b"1" * size), timeout=60)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.RpcError) as err:
        list(client.logs.GetLogs(logs_pb2.GetLogsRequest(function_name="\x00" * 100), timeout=10))
    assert err.value.code() in {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}
    _healthy(client)
