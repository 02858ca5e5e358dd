"""The agent's gRPC server: services, health, reflection, message limits."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from runtime.api.servicers import FunctionsServicer, InvokerServicer, LogsServicer, UsageServicer
from runtime.v1 import (functions_pb2, functions_pb2_grpc, invoker_pb2, invoker_pb2_grpc, logs_pb2,
                        logs_pb2_grpc, usage_pb2, usage_pb2_grpc)

# A 6 MB payload plus framing must fit; anything larger is refused by gRPC
# itself before it is buffered, the core refuses 6-16 MB with a clear error.
MAX_MESSAGE = 16 * 1024 * 1024

SERVICE_NAMES = (
    functions_pb2.DESCRIPTOR.services_by_name["Functions"].full_name,
    invoker_pb2.DESCRIPTOR.services_by_name["Invoker"].full_name,
    logs_pb2.DESCRIPTOR.services_by_name["Logs"].full_name,
    usage_pb2.DESCRIPTOR.services_by_name["Usage"].full_name,
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
    functions_pb2_grpc.add_FunctionsServicer_to_server(FunctionsServicer(agent.registry, agent.code), server)
    invoker_pb2_grpc.add_InvokerServicer_to_server(InvokerServicer(agent.invoker), server)
    logs_pb2_grpc.add_LogsServicer_to_server(LogsServicer(agent.registry, agent.logs), server)
    usage_pb2_grpc.add_UsageServicer_to_server(UsageServicer(agent.usage), server)
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


async def mark_serving(server: grpc.aio.Server) -> None:
    for name in ("", *SERVICE_NAMES):
        await server.health.set(name, health_pb2.HealthCheckResponse.SERVING)  # type: ignore[attr-defined]
