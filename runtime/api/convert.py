"""Protobuf messages <-> core dataclasses. No logic beyond field mapping."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from runtime.core.function import NETWORK_NONE, NETWORK_OUTBOUND, FunctionConfig, FunctionSpec
from runtime.core.invoker import InvokeResult
from runtime.core.layers import LayerVersion
from runtime.core.logs import LogLine
from runtime.v1 import function_pb2, invoker_pb2, layers_pb2, logs_pb2

START_KINDS = {"warm": invoker_pb2.WARM, "prewarmed": invoker_pb2.PREWARMED, "cold": invoker_pb2.COLD}
NETWORKS_TO_PB = {NETWORK_NONE: function_pb2.NETWORK_NONE, NETWORK_OUTBOUND: function_pb2.NETWORK_OUTBOUND}
NETWORKS_FROM_PB = {v: k for k, v in NETWORKS_TO_PB.items()}
STREAMS = {"stdout": logs_pb2.STDOUT, "stderr": logs_pb2.STDERR, "platform": logs_pb2.PLATFORM}


def timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def spec_from_pb(msg: function_pb2.FunctionSpec) -> FunctionSpec:
    return FunctionSpec(
        name=msg.name, runtime=msg.runtime, handler=msg.handler, memory_mb=msg.memory_mb,
        timeout_seconds=msg.timeout_seconds, environment=dict(msg.environment),
        description=msg.description, ephemeral_storage_mb=msg.ephemeral_storage_mb,
        reserved_concurrency=msg.reserved_concurrency, provisioned_concurrency=msg.provisioned_concurrency,
        fresh_environment_per_call=msg.fresh_environment_per_call, network=NETWORKS_FROM_PB[msg.network],
        layers=tuple(msg.layers), preload_libraries=tuple(msg.preload_libraries))


def spec_to_pb(spec: FunctionSpec) -> function_pb2.FunctionSpec:
    return function_pb2.FunctionSpec(
        name=spec.name, runtime=spec.runtime, handler=spec.handler, memory_mb=spec.memory_mb,
        timeout_seconds=spec.timeout_seconds, environment=dict(spec.environment),
        description=spec.description, ephemeral_storage_mb=spec.ephemeral_storage_mb,
        reserved_concurrency=spec.reserved_concurrency, provisioned_concurrency=spec.provisioned_concurrency,
        fresh_environment_per_call=spec.fresh_environment_per_call, network=NETWORKS_TO_PB[spec.network],
        layers=spec.layers, preload_libraries=spec.preload_libraries)


def config_to_pb(cfg: FunctionConfig) -> function_pb2.FunctionConfiguration:
    return function_pb2.FunctionConfiguration(
        spec=spec_to_pb(cfg.spec), code_sha256=cfg.code_sha256, code_size=cfg.code_size,
        code_unpacked_size=cfg.code_unpacked_size, version=cfg.version, function_arn=cfg.arn,
        created=timestamp(cfg.created), last_modified=timestamp(cfg.last_modified),
        revision=cfg.revision)


def config_changes(msg) -> dict:
    """Fields present in an UpdateFunctionConfigurationRequest."""
    changes = {}
    for field in ("runtime", "handler", "memory_mb", "timeout_seconds", "description",
                  "ephemeral_storage_mb", "reserved_concurrency", "provisioned_concurrency",
                  "fresh_environment_per_call"):
        if msg.HasField(field):
            changes[field] = getattr(msg, field)
    if msg.HasField("network"):
        changes["network"] = NETWORKS_FROM_PB[msg.network]
    if msg.HasField("environment"):
        changes["environment"] = dict(msg.environment.variables)
    if msg.HasField("layers"):
        changes["layers"] = tuple(msg.layers.refs)
    if msg.HasField("preload_libraries"):
        changes["preload_libraries"] = tuple(msg.preload_libraries.paths)
    return changes


def layer_to_pb(lv: LayerVersion, used_by: list[str]) -> layers_pb2.LayerVersion:
    return layers_pb2.LayerVersion(
        name=lv.name, version=lv.version, description=lv.description, content_sha256=lv.sha256,
        content_size=lv.size, content_unpacked_size=lv.unpacked_size, layer_version_arn=lv.arn,
        created=timestamp(lv.created), used_by=used_by)


def result_to_pb(r: InvokeResult) -> invoker_pb2.InvokeResponse:
    t = r.timings
    return invoker_pb2.InvokeResponse(
        payload=r.payload, function_error=r.function_error, executed_version=r.executed_version,
        request_id=r.request_id, start_kind=START_KINDS.get(r.start_kind, 0), log_result=r.log_tail,
        status_code=r.status_code,
        timings=invoker_pb2.InvokeTimings(
            total_us=t.total_us, queue_us=t.queue_us, sandbox_us=t.sandbox_us,
            runtime_start_us=t.runtime_start_us, code_load_us=t.code_load_us,
            handler_us=t.handler_us, init_us=t.init_us))


def log_to_pb(line: LogLine) -> logs_pb2.LogEvent:
    return logs_pb2.LogEvent(time=timestamp(line.time), request_id=line.request_id,
                             stream=STREAMS.get(line.stream, 0), message=line.message)
