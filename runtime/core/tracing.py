"""OpenTelemetry spans of invocations, exported over OTLP when configured.

Off by default and then free: the SDK is not even imported. When an OTLP
endpoint is given, every invocation becomes one ``invoke`` span with a child
span per phase that happened (queue, sandbox, code_load, handler), using the
timestamps the invoke path measured anyway, so tracing adds no timers of
its own. Spans are batched and exported from the SDK's own thread.
"""

from __future__ import annotations

from typing import Mapping

SERVICE_NAME = "runtime-agent"


class Tracer:
    def __init__(self, endpoint: str, schedule_delay_ms: int = 1000):
        # Imported here: an agent without --otlp-endpoint never loads the SDK.
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        self.provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
        self.provider.add_span_processor(BatchSpanProcessor(
            OTLPSpanExporter(endpoint=endpoint, insecure=True), schedule_delay_millis=schedule_delay_ms))
        self.tracer = self.provider.get_tracer("runtime.invoker")

    def invocation(self, function: str, request_id: str, kind: str, start_ns: int, end_ns: int,
                   phases_ns: Mapping[str, tuple[int, int]], error_type: str, attributes: Mapping) -> None:
        """Records one finished invocation. Times are Unix-epoch nanoseconds."""
        from opentelemetry import trace

        span = self.tracer.start_span(f"invoke {function}", start_time=start_ns, attributes={
            "faas.name": function, "faas.invocation_id": request_id, "faas.coldstart": kind == "cold",
            "runtime.start_kind": kind, **attributes})
        if error_type:
            span.set_status(trace.Status(trace.StatusCode.ERROR, error_type))
            span.set_attribute("error.type", error_type)
        ctx = trace.set_span_in_context(span)
        for phase, (t0, t1) in phases_ns.items():
            if t1 > t0:
                self.tracer.start_span(phase, context=ctx, start_time=t0).end(end_time=t1)
        span.end(end_time=end_ns)

    def close(self) -> None:
        self.provider.shutdown()
