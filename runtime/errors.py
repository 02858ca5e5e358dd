"""The one exception hierarchy of runtime-agent.

Every error that leaves the core carries a stable string ``code`` (AWS
Lambda's exception names where one exists), so clients can match on it
without parsing messages. The gRPC layer maps each class to a status code in
one table (``runtime.api.status``); nothing else decides status codes.

    AgentError                          code                       gRPC status
    ├── InvalidParameterValue           InvalidParameterValueException   INVALID_ARGUMENT
    │   ├── InvalidZipFile              InvalidZipFileException          INVALID_ARGUMENT
    │   │   └── UnpackedTooLarge        InvalidZipFileException          INVALID_ARGUMENT
    │   ├── InvalidRequestContent       InvalidRequestContentException   INVALID_ARGUMENT
    │   └── RuntimeNotAvailable         InvalidRuntimeException          INVALID_ARGUMENT
    ├── ResourceNotFound                ResourceNotFoundException        NOT_FOUND
    ├── ResourceConflict                ResourceConflictException        ALREADY_EXISTS
    │   └── ResourceInUse               ResourceInUseException           FAILED_PRECONDITION
    ├── RequestTooLarge                 RequestTooLargeException         RESOURCE_EXHAUSTED
    ├── CodeStorageExceeded             CodeStorageExceededException     RESOURCE_EXHAUSTED
    ├── TooManyRequests                 TooManyRequestsException         RESOURCE_EXHAUSTED
    ├── Unauthenticated                 UnauthenticatedException         UNAUTHENTICATED
    ├── PermissionDenied                AccessDeniedException            PERMISSION_DENIED
    └── ServiceError                    ServiceException                 INTERNAL
        └── SandboxError                Sandbox.StartFailed              INTERNAL

A function's own failure (handler exception, timeout, out of memory, exit)
is not an AgentError: the invocation succeeds at the API level and carries a
``FunctionError`` document, as AWS's Invoke does. Those codes live in
``FunctionErrorType``.

OS failures are raised as ``OSError`` subclasses whose message names the
call, keeping errno (see ``os_error``).
"""

from __future__ import annotations

import errno as _errno
import os


class AgentError(Exception):
    """Base class. ``code`` is stable and sent to clients."""

    code = "ServiceException"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidParameterValue(AgentError):
    code = "InvalidParameterValueException"

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


class InvalidZipFile(InvalidParameterValue):
    code = "InvalidZipFileException"

    def __init__(self, message: str):
        super().__init__("code", message)


class UnpackedTooLarge(InvalidZipFile):
    """A zip that unpacks to more than allowed; carries both sizes."""

    def __init__(self, unpacked_size: int, limit: int):
        super().__init__(f"code unpacks to more than {limit} bytes ({unpacked_size} bytes): at most "
                         f"{limit // (1024 * 1024)} MB unpacked is allowed")
        self.unpacked_size = unpacked_size
        self.limit = limit


class InvalidRequestContent(InvalidParameterValue):
    code = "InvalidRequestContentException"


class RuntimeNotAvailable(InvalidParameterValue):
    code = "InvalidRuntimeException"


class ResourceNotFound(AgentError):
    code = "ResourceNotFoundException"


class ResourceConflict(AgentError):
    code = "ResourceConflictException"


class ResourceInUse(ResourceConflict):
    """The resource is still referred to (a layer version used by functions)."""

    code = "ResourceInUseException"


class RequestTooLarge(AgentError):
    code = "RequestTooLargeException"


class CodeStorageExceeded(AgentError):
    code = "CodeStorageExceededException"


class TooManyRequests(AgentError):
    code = "TooManyRequestsException"

    def __init__(self, message: str, reason: str):
        super().__init__(f"{message} (Reason: {reason})")
        self.reason = reason


class Unauthenticated(AgentError):
    code = "UnauthenticatedException"


class PermissionDenied(AgentError):
    code = "AccessDeniedException"


class ServiceError(AgentError):
    code = "ServiceException"


class SandboxError(ServiceError):
    """The agent could not start or talk to an environment."""

    code = "Sandbox.StartFailed"


class FunctionErrorType:
    """Stable ``errorType`` values of function errors made by the agent."""

    TIMEOUT = "Sandbox.Timedout"
    OUT_OF_MEMORY = "Runtime.OutOfMemory"
    EXIT = "Runtime.ExitError"
    RESPONSE_TOO_LARGE = "Function.ResponseSizeTooLarge"
    INVALID_RESPONSE = "Runtime.InvalidResponse"
    IMPORT_MODULE = "Runtime.ImportModuleError"
    HANDLER_NOT_FOUND = "Runtime.HandlerNotFound"
    PRELOAD = "Runtime.PreloadError"  # a preload_libraries entry did not load
    MARSHAL = "Runtime.MarshalError"
    UNKNOWN = "Runtime.Unknown"


def os_error(call: str, exc: OSError | None = None, err: int | None = None) -> OSError:
    """An OSError whose message names ``call`` and which keeps errno.

    ``os_error("mkdir(/sys/fs/cgroup/memory/x)", exc)`` reads
    ``mkdir(/sys/fs/cgroup/memory/x) failed: [Errno 13] Permission denied``.
    """
    code = err if err is not None else (exc.errno if exc is not None else _errno.EIO)
    return OSError(code, f"{call} failed: {os.strerror(code or 0)}")
