"""The one table from core errors to gRPC status codes.

Servicers never choose a status code themselves: they let ``AgentError``
propagate and ``guard`` converts it here, attaching the stable error code as
trailing metadata ``x-runtime-error-type``. Anything that is not an
AgentError is a bug: it is logged with its traceback and answered INTERNAL
without internal details, and the agent keeps serving.
"""

from __future__ import annotations

import functools
import logging

import grpc
from google.protobuf.message import Message

from runtime import errors

log = logging.getLogger("runtime.api")

ERROR_TYPE_KEY = "x-runtime-error-type"

# Most specific class first: the first isinstance match wins.
STATUS_TABLE: tuple[tuple[type[errors.AgentError], grpc.StatusCode], ...] = (
    (errors.InvalidParameterValue, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.ResourceNotFound, grpc.StatusCode.NOT_FOUND),
    (errors.ResourceInUse, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.ResourceConflict, grpc.StatusCode.ALREADY_EXISTS),
    (errors.RequestTooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.CodeStorageExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.TooManyRequests, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.ServiceError, grpc.StatusCode.INTERNAL),
)


class Malformed:
    """A request whose bytes did not parse as its message type."""

    __slots__ = ("type_name", "error")

    def __init__(self, type_name: str, error: str):
        self.type_name = type_name
        self.error = error

    def exception(self) -> errors.InvalidRequestContent:
        return errors.InvalidRequestContent("request", f"is not a valid {self.type_name} message ({self.error})")


async def _checked(stream):
    async for message in stream:
        if isinstance(message, Malformed):
            raise message.exception()
        yield message


def status_for(exc: errors.AgentError) -> grpc.StatusCode:
    for cls, code in STATUS_TABLE:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


async def abort(context: grpc.aio.ServicerContext, exc: errors.AgentError) -> None:
    context.set_trailing_metadata(((ERROR_TYPE_KEY, exc.code),))
    await context.abort(status_for(exc), exc.message)


def guard(method):
    """Wraps a unary or client-streaming aio servicer method."""

    @functools.wraps(method)
    async def wrapper(self, request, context):
        try:
            if isinstance(request, Malformed):
                raise request.exception()
            if not isinstance(request, Message):  # a client stream: check each message as it comes
                request = _checked(request)
            return await method(self, request, context)
        except errors.AgentError as exc:
            await abort(context, exc)
        except OSError as exc:
            log.exception("%s failed", method.__name__)
            await abort(context, errors.ServiceError(f"host error: {exc}"))
        except Exception:  # noqa: BLE001  a bug must not take the agent down
            log.exception("%s failed", method.__name__)
            await abort(context, errors.ServiceError("internal error; see the agent's log"))

    return wrapper


def guard_stream(method):
    """Wraps a server-streaming aio servicer method (an async generator)."""

    @functools.wraps(method)
    async def wrapper(self, request, context):
        try:
            if isinstance(request, Malformed):
                raise request.exception()
            async for item in method(self, request, context):
                yield item
        except errors.AgentError as exc:
            await abort(context, exc)
        except Exception:  # noqa: BLE001
            log.exception("%s failed", method.__name__)
            await abort(context, errors.ServiceError("internal error; see the agent's log"))

    return wrapper
