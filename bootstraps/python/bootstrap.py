"""Python bootstrap: pid 1 of a sandbox, runs one function's handler.

Started by nsjail as ``python3 -I -S -B -c "import bootstrap ..."`` with
``/var/runtime`` on sys.path, so its precompiled ``.pyc`` is used. Stdlib
only, no imports from the agent. Config arrives in the environment:
``_HANDLER`` ("module.function"), ``_RUNTIME_CONTROL_FD`` (the control
socket, removed from the environment once read), ``AWS_LAMBDA_FUNCTION_NAME``,
``AWS_LAMBDA_FUNCTION_VERSION``, ``AWS_LAMBDA_FUNCTION_MEMORY_SIZE``,
``AWS_LAMBDA_LOG_GROUP_NAME``, ``AWS_LAMBDA_LOG_STREAM_NAME``.

Wire protocol on the control socket (a SOCK_STREAM socketpair). Every frame:

    0        1                5
    +--------+----------------+---------------------------+
    | kind   | length (u32 BE)| body (length bytes)       |
    +--------+----------------+---------------------------+

bootstrap -> agent, once, after loading the handler:
    b"R"  ready        body: u64 BE start_ns | u64 BE loaded_ns
                       (CLOCK_REALTIME at the first line of this file and
                       after the handler was imported)

A stem cell (``_RUNTIME_STEM_CELL=1``) first sends b"R" with the runtime
loaded and no function, then waits for

agent -> bootstrap, once, after attaching the code at /var/task:
    b"P"  specialise   body: JSON object of environment variables
                       (_HANDLER, AWS_LAMBDA_*, the function's own)

and answers with b"R" (start_ns = when b"P" arrived) or b"E" as above.
    b"E"  init error   body: JSON {"errorMessage","errorType","stackTrace"};
                       the bootstrap exits after sending it

agent -> bootstrap, one at a time:
    b"I"  invoke       body: request id \n deadline (epoch ms, decimal) \n
                       invoked ARN \n client context JSON or empty \n payload
                       (the first four fields never contain a newline)

bootstrap -> agent, one per invoke:
    b"S"  success      body: u64 BE handler_ns | result as JSON
    b"F"  error        body: u64 BE handler_ns | error JSON as for b"E"

Stdout and stderr go to pipes the agent reads as the function's log; both
are flushed before each reply, so every line of an invocation is in the
pipe before the agent sees its result. EOF on the control socket means the
agent is gone: the bootstrap exits, and with it (pid 1) the whole sandbox.

Between events the bootstrap waits in poll(2) for input, not in read(2): a
reader blocked on a Unix stream socket is also woken whenever the agent
consumes the previous reply (that makes the socket writable again), one
wasted wake-up per call, and an interrupt to another CPU when it sleeps there.
"""

import time

_START_NS = time.time_ns()

import _json  # noqa: E402  (after the start stamp on purpose)
import posix  # noqa: E402
import select  # noqa: E402
import sys  # noqa: E402
from _struct import Struct  # noqa: E402

# posix, not os: it is loaded with the interpreter, while ``import os`` costs
# ~1.3 ms of a cold start here (mostly _collections_abc). A function that
# wants os imports it itself; os.environ then wraps this same dict, which is
# why every change below goes to both it and the C environment.
_ENVIRON = posix.environ  # bytes -> bytes
_U64 = Struct(">Q")
_HDR = Struct(">cI")
MAX_RESPONSE = 6 * 1024 * 1024


# JSON through the C accelerator directly: ``import json`` pulls in ``re``
# and ``enum`` and costs ~7 ms of every cold start. Output and accepted input
# are those of json.dumps / json.loads with default arguments; the error
# paths import the full module.
class _DecodeContext:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo = {}

    @staticmethod
    def parse_constant(name):
        return {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}[name]


_scan = _json.make_scanner(_DecodeContext)


def _loads(data):
    text = data.decode("utf-8")
    end, n = 0, len(text)
    while end < n and text[end] in " \t\n\r":
        end += 1
    try:
        obj, end = _scan(text, end)
    finally:
        _DecodeContext.memo.clear()
    while end < n and text[end] in " \t\n\r":
        end += 1
    if end != n:
        raise ValueError(f"Extra data at char {end}")
    return obj


def _not_serialisable(obj):
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _make_encoder():
    return _json.make_encoder({}, _not_serialisable, _json.encode_basestring_ascii, None, ": ", ", ",
                              False, False, True)


_encode = _make_encoder()


def _dumps(obj):
    global _encode
    try:
        return "".join(_encode(obj, 0))
    except BaseException:
        _encode = _make_encoder()  # a failed call can leave ids in its circular-reference memo
        raise


def _getenv(name, default=""):
    value = _ENVIRON.get(name.encode())
    return default if value is None else value.decode("utf-8", "surrogateescape")


def _popenv(name):
    key = name.encode()
    value = _ENVIRON.pop(key, None)
    if value is None:
        return ""
    posix.unsetenv(key)
    return value.decode("utf-8", "surrogateescape")


def _isdir(path):
    try:
        return posix.stat(path).st_mode & 0o170000 == 0o040000
    except OSError:
        return False


def _send(fd, kind, body):
    data = _HDR.pack(kind, len(body)) + body
    view = memoryview(data)
    while view:
        view = view[posix.write(fd, view):]


def _error_doc(exc, error_type=None, tb=None):
    # traceback is only needed on the error path; keep it off start-up.
    import traceback

    frames = traceback.format_list(traceback.extract_tb(tb or exc.__traceback__))
    return {
        "errorMessage": str(exc),
        "errorType": error_type or type(exc).__name__,
        "stackTrace": [f.rstrip("\n") for f in frames],
    }


class Context:
    """The handler's ``context``, shaped like AWS Lambda's."""

    __slots__ = ("aws_request_id", "function_name", "function_version", "memory_limit_in_mb",
                 "invoked_function_arn", "log_group_name", "log_stream_name", "client_context",
                 "identity", "_deadline_ms")

    def __init__(self, request_id, deadline_ms, arn, client_context, env):
        self.aws_request_id = request_id
        self.invoked_function_arn = arn
        self._deadline_ms = deadline_ms
        self.client_context = client_context
        self.identity = None
        self.function_name = env[0]
        self.function_version = env[1]
        self.memory_limit_in_mb = env[2]
        self.log_group_name = env[3]
        self.log_stream_name = env[4]

    def get_remaining_time_in_millis(self):
        return max(int(self._deadline_ms - time.time() * 1000), 0)


def _load_handler(spec):
    module_name, _, func_name = spec.rpartition(".")
    try:
        __import__(module_name)
        module = sys.modules[module_name]
    except Exception as exc:  # noqa: BLE001  any import failure is the function's
        msg = f"Unable to import module '{module_name}': {exc}"
        raise _InitError(msg, "Runtime.ImportModuleError", exc) from exc
    handler = getattr(module, func_name, None)
    if handler is None:
        raise _InitError(f"Handler '{func_name}' missing on module '{module_name}'",
                         "Runtime.HandlerNotFound", None)
    if not callable(handler):
        raise _InitError(f"Handler '{func_name}' on module '{module_name}' is not callable",
                         "Runtime.HandlerNotFound", None)
    return handler


class _InitError(Exception):
    def __init__(self, message, error_type, cause):
        super().__init__(message)
        self.error_type = error_type
        self.cause = cause


def _await_specialisation(fd):
    """Stem cell: the runtime is loaded, the function is not. Blocks until
    the agent has attached the code at /var/task and sends the function's
    environment variables. Returns the time specialisation started."""
    data = posix.read(fd, 65536)
    began = time.time_ns()
    while len(data) < 5 or len(data) < 5 + _HDR.unpack_from(data)[1]:
        chunk = posix.read(fd, 65536)
        if not chunk:
            raise SystemExit(0)
        data += chunk
    kind, length = _HDR.unpack_from(data)
    if kind != b"P":
        raise SystemExit(2)
    for name, value in _loads(data[5:5 + length]).items():
        key, raw = name.encode("utf-8", "surrogateescape"), value.encode("utf-8", "surrogateescape")
        posix.putenv(key, raw)
        _ENVIRON[key] = raw
    return began


def _use_layers():
    """Layers at /opt: their Python packages go on sys.path right after
    /var/task, as on AWS. ``_RUNTIME_PRELOAD`` (colon-separated paths) names
    shared libraries to dlopen now, during init, so that no invocation pays
    for loading them; ctypes is imported only when there are any."""
    if _isdir("/opt/python"):
        v = sys.version_info
        sys.path[1:1] = [f"/opt/python/lib/python{v[0]}.{v[1]}/site-packages", "/opt/python"]
    preload = _popenv("_RUNTIME_PRELOAD")
    if preload:
        import ctypes

        for path in preload.split(":"):
            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            except OSError as exc:
                raise _InitError(f"Unable to preload library '{path}': {exc}", "Runtime.PreloadError",
                                 exc) from exc


def main():
    fd = int(_popenv("_RUNTIME_CONTROL_FD"))
    start_ns = _START_NS
    if _popenv("_RUNTIME_STEM_CELL"):
        __import__("os")  # free here, while the cell waits; spares the function that imports it
        _send(fd, b"R", _U64.pack(_START_NS) + _U64.pack(time.time_ns()))
        start_ns = _await_specialisation(fd)
    info = (_getenv("AWS_LAMBDA_FUNCTION_NAME"), _getenv("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
            _getenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"), _getenv("AWS_LAMBDA_LOG_GROUP_NAME"),
            _getenv("AWS_LAMBDA_LOG_STREAM_NAME"))
    task_root = _getenv("LAMBDA_TASK_ROOT", "/var/task")
    sys.path.insert(0, task_root)
    posix.chdir(task_root)
    out, err = sys.stdout, sys.stderr
    # Line buffering: a line printed just before a timeout still reaches the log.
    out.reconfigure(line_buffering=True)
    err.reconfigure(line_buffering=True)
    try:
        _use_layers()
        handler = _load_handler(_getenv("_HANDLER"))
    except _InitError as exc:
        doc = _error_doc(exc.cause or exc, exc.error_type)
        doc["errorMessage"] = str(exc)
        print(f"[ERROR] {exc.error_type}: {exc}", file=err, flush=True)
        _send(fd, b"E", _dumps(doc).encode())
        return 1
    except BaseException as exc:  # SystemExit & co. at import time are init errors too
        _send(fd, b"E", _dumps(_error_doc(exc, "Runtime.Unknown")).encode())
        return 1
    _send(fd, b"R", _U64.pack(start_ns) + _U64.pack(time.time_ns()))

    loads, dumps, perf = _loads, _dumps, time.perf_counter_ns
    poller = select.poll()
    poller.register(fd, select.POLLIN)  # woken by input only (see the docstring)
    wait = poller.poll
    buf = b""
    while True:
        # One read usually holds a whole frame; loop only for large payloads.
        while len(buf) < 5:
            wait()
            chunk = posix.read(fd, 65536)
            if not chunk:
                return 0
            buf += chunk
        kind, length = _HDR.unpack_from(buf)
        while len(buf) < 5 + length:
            chunk = posix.read(fd, max(65536, 5 + length - len(buf)))
            if not chunk:
                return 0
            buf += chunk
        body, buf = buf[5:5 + length], buf[5 + length:]
        if kind != b"I":
            return 2
        request_id, deadline, arn, cc, payload = body.split(b"\n", 4)
        context = Context(request_id.decode(), int(deadline), arn.decode(), loads(cc) if cc else None, info)
        t0 = perf()
        try:
            event = loads(payload) if payload else {}
            result = handler(event, context)
            elapsed = perf() - t0
            try:
                data = dumps(result).encode()
            except (TypeError, ValueError, OverflowError, RecursionError) as exc:
                doc = {"errorMessage": f"Unable to marshal response: {exc}",
                       "errorType": "Runtime.MarshalError", "stackTrace": []}
                reply, data = b"F", dumps(doc).encode()
            else:
                reply = b"S"
                if len(data) > MAX_RESPONSE:  # refused here, so the environment stays warm
                    reply, data = b"F", _dumps({
                        "errorMessage": f"Response payload size ({len(data)} bytes) exceeded maximum "
                                        f"allowed payload size ({MAX_RESPONSE} bytes).",
                        "errorType": "Function.ResponseSizeTooLarge"}).encode()
        except Exception as exc:  # noqa: BLE001  handler errors go back to the caller
            elapsed = perf() - t0
            reply, data = b"F", dumps(_error_doc(exc)).encode()
            print(f"[ERROR] {type(exc).__name__}: {exc}", file=err)
        out.flush()
        err.flush()
        _send(fd, reply, _U64.pack(elapsed) + data)

if __name__ == "__main__":
    sys.exit(main())
# The agent imports this module from -c and calls main() itself, so that the
# compiled .pyc in /var/runtime/__pycache__ is used (a __main__ script never is).
