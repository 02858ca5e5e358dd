"""gRPC servicers: convert messages to core calls and back, nothing else.

Every method is wrapped by ``status.guard``, the only place where errors
become status codes. Client streams of code are reassembled here with a size
bound, so an oversized upload is refused before the core sees it.
"""

from __future__ import annotations

import asyncio

from runtime.api import convert
from runtime.api.status import guard, guard_stream
from runtime.core.codestore import CodeStore
from runtime.core.invoker import InvokeCommand, Invoker
from runtime.core.logs import LogStore
from runtime.core.registry import FunctionRegistry
from runtime.errors import InvalidParameterValue, RequestTooLarge
from runtime.core.usage import UsageLedger
from runtime.v1 import (functions_pb2, functions_pb2_grpc, invoker_pb2, invoker_pb2_grpc, layers_pb2,
                        layers_pb2_grpc, logs_pb2_grpc, usage_pb2, usage_pb2_grpc)


async def _read_code(first_field: str, request_iterator, max_bytes: int):
    """Returns (first message's value, zip bytes) from a code upload stream."""
    head = None
    chunks: list[bytes] = []
    total = 0
    async for msg in request_iterator:
        part = msg.WhichOneof("part")
        if head is None:
            if part != first_field:
                raise InvalidParameterValue(first_field, f"the first message must carry `{first_field}`")
            head = getattr(msg, first_field)
            continue
        if part != "code":
            raise InvalidParameterValue(first_field, f"`{first_field}` must be sent exactly once, first")
        total += len(msg.code.data)
        if total > max_bytes:
            raise RequestTooLarge(f"code upload exceeds {max_bytes} bytes: at most {max_bytes} are allowed")
        chunks.append(msg.code.data)
    if head is None:
        raise InvalidParameterValue(first_field, "the stream was empty")
    return head, b"".join(chunks)


class FunctionsServicer(functions_pb2_grpc.FunctionsServicer):
    def __init__(self, registry: FunctionRegistry, code: CodeStore):
        self.registry = registry
        self.code = code

    @guard
    async def CreateFunction(self, request_iterator, context):
        spec, data = await _read_code("spec", request_iterator, self.code.max_zip)
        cfg = await self.registry.create(convert.spec_from_pb(spec), data)
        return convert.config_to_pb(cfg)

    @guard
    async def UpdateFunctionCode(self, request_iterator, context):
        name, data = await _read_code("name", request_iterator, self.code.max_zip)
        return convert.config_to_pb(await self.registry.update_code(name, data))

    @guard
    async def UpdateFunctionConfiguration(self, request, context):
        cfg = await self.registry.update_configuration(request.name, convert.config_changes(request))
        return convert.config_to_pb(cfg)

    @guard
    async def GetFunction(self, request, context):
        return convert.config_to_pb(self.registry.get(request.name))

    @guard
    async def ListFunctions(self, request, context):
        page, marker = self.registry.list(request.max_items, request.marker)
        return functions_pb2.ListFunctionsResponse(
            functions=[convert.config_to_pb(c) for c in page], next_marker=marker)

    @guard
    async def DeleteFunction(self, request, context):
        self.registry.delete(request.name)
        return functions_pb2.DeleteFunctionResponse()

    @guard
    async def ListRuntimes(self, request, context):
        return functions_pb2.ListRuntimesResponse(runtimes=[
            functions_pb2.RuntimeInfo(name=r.name, executable=r.executable, version=r.version)
            for r in sorted(self.registry.runtimes.values(), key=lambda r: r.name)])


class LayersServicer(layers_pb2_grpc.LayersServicer):
    def __init__(self, registry: FunctionRegistry, code: CodeStore):
        self.registry = registry
        self.code = code

    def _pb(self, lv):
        return convert.layer_to_pb(lv, self.registry.layer_users(lv.ref))

    @guard
    async def PublishLayerVersion(self, request_iterator, context):
        spec, data = await _read_code("layer", request_iterator, self.code.max_zip)
        return self._pb(await self.registry.layers.publish(spec.name, spec.description, data))

    @guard
    async def GetLayerVersion(self, request, context):
        return self._pb(self.registry.layers.get(request.name, request.version))

    @guard
    async def ListLayerVersions(self, request, context):
        return layers_pb2.ListLayerVersionsResponse(
            versions=[self._pb(lv) for lv in self.registry.layers.list(request.name)])

    @guard
    async def DeleteLayerVersion(self, request, context):
        self.registry.delete_layer(request.name, request.version)
        return layers_pb2.DeleteLayerVersionResponse()


class InvokerServicer(invoker_pb2_grpc.InvokerServicer):
    def __init__(self, invoker: Invoker):
        self.invoker = invoker

    @guard
    async def Invoke(self, request, context):
        if request.invocation_type == invoker_pb2.EVENT:
            raise InvalidParameterValue(
                "invocation_type", "EVENT (asynchronous) is not served yet: use REQUEST_RESPONSE or DRY_RUN")
        result = await self.invoker.invoke(InvokeCommand(
            function_name=request.function_name, payload=request.payload, qualifier=request.qualifier,
            client_context=request.client_context, dry_run=request.invocation_type == invoker_pb2.DRY_RUN,
            log_tail=request.log_type == invoker_pb2.LOG_TAIL))
        return convert.result_to_pb(result)


class LogsServicer(logs_pb2_grpc.LogsServicer):
    def __init__(self, registry: FunctionRegistry, logs: LogStore):
        self.registry = registry
        self.logs = logs

    @guard_stream
    async def GetLogs(self, request, context):
        name = request.function_name
        self.registry.get(name)
        start = request.start_time.ToNanoseconds() / 1e9 if request.HasField("start_time") else None
        end = request.end_time.ToNanoseconds() / 1e9 if request.HasField("end_time") else None
        queue = self.logs.follow(name) if request.follow else None
        try:
            lines = list(self.logs.read(name, start, end, request.request_id))
            if request.limit:
                lines = lines[-request.limit:]
            for line in lines:
                yield convert.log_to_pb(line)
            last = lines[-1].time if lines else 0.0
            while queue is not None:
                line = await queue.get()
                if line.time <= last:
                    continue  # already sent from the file
                if end is not None and line.time >= end:
                    return
                if request.request_id and line.request_id != request.request_id:
                    continue
                yield convert.log_to_pb(line)
        except asyncio.CancelledError:
            raise
        finally:
            if queue is not None:
                self.logs.unfollow(name, queue)


class UsageServicer(usage_pb2_grpc.UsageServicer):
    def __init__(self, usage: UsageLedger):
        self.usage = usage

    @guard
    async def GetUsage(self, request, context):
        start = request.start_time.ToSeconds() if request.HasField("start_time") else 0
        end = request.end_time.ToSeconds() if request.HasField("end_time") else None
        records = self.usage.query(request.function_name, start, end)
        return usage_pb2.GetUsageResponse(billing_granularity_ms=self.usage.granularity_ms, records=[
            usage_pb2.UsageRecord(function_name=r.function, hour=convert.timestamp(r.hour), requests=r.requests,
                                  billed_ms=r.billed_ms, gb_seconds=r.gb_seconds, cpu_seconds=r.cpu_seconds)
            for r in records])
