"""The agent's gRPC server: services, health, reflection, message limits."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from google.protobuf import message_factory
from google.protobuf.message import DecodeError

from runtime.api.servicers import FunctionsServicer, InvokerServicer, LayersServicer, LogsServicer, UsageServicer
from runtime.api.status import Malformed
from runtime.v1 import functions_pb2, invoker_pb2, layers_pb2, logs_pb2, usage_pb2

# A 6 MB payload plus framing must fit; anything larger is refused by gRPC
# itself before it is buffered, the core refuses 6-16 MB with a clear error.
MAX_MESSAGE = 16 * 1024 * 1024

SERVICE_NAMES = (
    functions_pb2.DESCRIPTOR.services_by_name["Functions"].full_name,
    invoker_pb2.DESCRIPTOR.services_by_name["Invoker"].full_name,
    logs_pb2.DESCRIPTOR.services_by_name["Logs"].full_name,
    usage_pb2.DESCRIPTOR.services_by_name["Usage"].full_name,
    layers_pb2.DESCRIPTOR.services_by_name["Layers"].full_name,
)


def create_server(agent, address: str, *, credentials: grpc.ServerCredentials | None = None,
                  interceptors: tuple[grpc.aio.ServerInterceptor, ...] = ()) -> tuple[grpc.aio.Server, int]:
    """Builds the server for ``agent`` (a runtime.agent.Agent) bound to ``address``.

    With ``credentials`` (``runtime.api.auth.server_credentials``) the port
    speaks TLS only; ``interceptors`` run before every call, in order (the
    agent passes ``runtime.api.auth.AuthInterceptor`` when tokens are on).
    """
    server = grpc.aio.server(interceptors=tuple(interceptors) or None, options=[
        ("grpc.max_receive_message_length", MAX_MESSAGE),
        ("grpc.max_send_message_length", MAX_MESSAGE),
        ("grpc.so_reuseport", 0),
    ])
    for module, servicer in ((functions_pb2, FunctionsServicer(agent.registry, agent.code)),
                             (invoker_pb2, InvokerServicer(agent.invoker)),
                             (logs_pb2, LogsServicer(agent.registry, agent.logs)),
                             (usage_pb2, UsageServicer(agent.usage)),
                             (layers_pb2, LayersServicer(agent.registry, agent.code))):
        (service,) = module.DESCRIPTOR.services_by_name.values()
        server.add_generic_rpc_handlers((_service_handler(service, servicer),))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME), server)
    if credentials is not None:
        port = server.add_secure_port(address, credentials)
    else:
        port = server.add_insecure_port(address)
    if port == 0 and not address.startswith("unix:"):
        raise OSError(f"bind({address}) failed: address in use or not allowed")
    server.health = health_servicer  # type: ignore[attr-defined]
    return server, port


_KINDS = {(False, False): grpc.unary_unary_rpc_method_handler,
          (True, False): grpc.stream_unary_rpc_method_handler,
          (False, True): grpc.unary_stream_rpc_method_handler,
          (True, True): grpc.stream_stream_rpc_method_handler}


def _service_handler(service, servicer) -> grpc.GenericRpcHandler:
    """Like the generated add_*_to_server, but a request that does not parse
    reaches the servicer as ``Malformed`` (answered INVALID_ARGUMENT by the
    guard) instead of failing inside gRPC with an opaque UNKNOWN."""
    handlers = {}
    for method in service.methods:
        request_cls = message_factory.GetMessageClass(method.input_type)
        make = _KINDS[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = make(getattr(servicer, method.name),
                                     request_deserializer=_safe_parser(request_cls),
                                     response_serializer=_serialize)
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


def _safe_parser(cls):
    name = cls.DESCRIPTOR.full_name

    def parse(data: bytes):
        try:
            return cls.FromString(data)
        except DecodeError as exc:
            return Malformed(name, str(exc))

    return parse


def _serialize(message) -> bytes:
    return message.SerializeToString()


async def mark_serving(server: grpc.aio.Server) -> None:
    for name in ("", *SERVICE_NAMES):
        await server.health.set(name, health_pb2.HealthCheckResponse.SERVING)  # type: ignore[attr-defined]
