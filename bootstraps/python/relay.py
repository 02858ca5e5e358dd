"""Runtime API relay: pid 1 of a ``provided`` sandbox.

A custom runtime ships an executable ``bootstrap`` and talks the AWS Lambda
Runtime API over HTTP. The relay serves that API on 127.0.0.1:9001 inside
the sandbox's own network namespace and speaks the agent's frame protocol
(drawn in ``bootstrap.py``) on the control socket, so the agent never
parses HTTP from a sandbox:

    agent ══ frames I/S/F/R/E ══> relay (pid 1) ══ HTTP :9001 ══> bootstrap
                                    │                             (child)
                                    └── posix_spawn, reaps, exits with its status

    GET  /2018-06-01/runtime/invocation/next          200 event + Lambda-Runtime-* headers
    POST /2018-06-01/runtime/invocation/{id}/response 202 | 400 | 403 | 413
    POST /2018-06-01/runtime/invocation/{id}/error    202 | 400 | 403 | 413
    POST /2018-06-01/runtime/init/error               202 | 403

The first ``/next`` completes init (frame R). An error before it, through
``/init/error``, is frame E. Bodies may be chunked with trailers (the Go
client always sends them; a streamed response reports a mid-stream error as
``Lambda-Runtime-Function-Error-Type`` and ``-Body`` trailers). A streamed
response is buffered and returned whole. The bootstrap's exit ends the
relay with the same status, so the agent reports it as ``Runtime.ExitError``.

The relay runs as the function's uid: it is inside the function's trust
zone, and anything the bootstrap does to it harms only its own sandbox.
Stdlib only, and only C modules (``_socket``, ``select``) so that start-up
stays in the low milliseconds.
"""

import os
import time

import _socket
import select

import bootstrap as _b

ADDRESS = ("127.0.0.1", 9001)
API = "/2018-06-01/runtime/"
# RIE's MaxPayloadSize: 6 MiB + 100 bytes.
MAX_BODY = 6 * 1024 * 1024 + 100
MAX_HEAD = 64 * 1024
BOOTSTRAP_PATHS = ("/var/task/bootstrap", "/opt/bootstrap")
# Variables of the agent-relay contract, never shown to the bootstrap.
PRIVATE_ENV = ("_RUNTIME_CONTROL_FD", "_RUNTIME_STEM_CELL")
_REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 413: "Payload Too Large", 500: "Internal Server Error"}


class BadRequest(Exception):
    """Unparseable HTTP: answered with 400 and the connection closed."""


def _error_body(error_type, message):
    return _b._dumps({"errorMessage": message, "errorType": error_type}).encode()


def _parse(buf):
    """One request from the front of ``buf``: (method, path, headers, body,
    trailers, consumed) or None while incomplete. Header names lower-case."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > MAX_HEAD:
            raise BadRequest("request head too large")
        return None
    lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest("malformed request line")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise BadRequest("malformed header line")
        headers[name.lower()] = value.strip()
    pos = end + 4
    trailers = {}
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks = []
        size_total = 0
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return None
            try:
                size = int(bytes(buf[pos:eol]).split(b";")[0].strip(), 16)
            except ValueError:
                raise BadRequest("malformed chunk size") from None
            if size < 0:
                raise BadRequest("malformed chunk size")
            pos = eol + 2
            if size == 0:
                break
            size_total += size
            if size_total > MAX_BODY:
                return parts[0], parts[1], headers, None, trailers, pos
            if len(buf) < pos + size + 2:
                return None
            chunks.append(bytes(buf[pos:pos + size]))
            if buf[pos + size:pos + size + 2] != b"\r\n":
                raise BadRequest("chunk not followed by CRLF")
            pos += size + 2
        while True:  # trailer section, ended by an empty line
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return None
            line = bytes(buf[pos:eol]).decode("latin-1")
            pos = eol + 2
            if not line:
                break
            name, _, value = line.partition(":")
            trailers[name.strip().lower()] = value.strip()
        return parts[0], parts[1], headers, b"".join(chunks), trailers, pos
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        raise BadRequest("malformed Content-Length") from None
    if length < 0:
        raise BadRequest("malformed Content-Length")
    if length > MAX_BODY:  # refused; the caller discards the body as it arrives
        return parts[0], parts[1], headers, None, trailers, pos + length
    if len(buf) < pos + length:
        return None
    return parts[0], parts[1], headers, bytes(buf[pos:pos + length]), trailers, pos + length


class Relay:
    def __init__(self, control_fd, start_ns):
        self.fd = control_fd
        self.start_ns = start_ns
        self.ready = False          # first /next seen (R sent)
        self.waiting = None         # connection parked in /next
        self.queued = None          # invoke frame body not yet delivered
        self.current = ""           # request id delivered, not yet answered
        self.delivered_ns = 0
        self.child = 0
        self.child_pidfd = -1
        self.conns = {}             # fd -> [socket, buffer, continue_sent, bytes to discard]
        self.poll = select.epoll()
        self.frames = bytearray()

    # -- agent side ------------------------------------------------------
    def on_control(self):
        data = os.read(self.fd, 1 << 20)
        if not data:
            raise SystemExit(0)  # the agent is gone; pid 1 exiting ends the sandbox
        self.frames += data
        while len(self.frames) >= 5:
            kind, length = _b._HDR.unpack_from(self.frames)
            if len(self.frames) < 5 + length:
                return
            body = bytes(self.frames[5:5 + length])
            del self.frames[:5 + length]
            if kind != b"I" or self.queued is not None or self.current:
                raise SystemExit(2)  # the agent broke the protocol
            self.queued = body
            if self.waiting is not None:
                self.deliver()

    def reply(self, kind, handler_ns, body):
        self.current = ""
        _b._send(self.fd, kind, _b._U64.pack(handler_ns) + body)

    def fail(self, error_type, message):
        """Ends the current invocation with an error the runtime did not send."""
        if self.current:
            self.reply(b"F", time.perf_counter_ns() - self.delivered_ns, _error_body(
                error_type, f"RequestId: {self.current} Error: {message}"))

    # -- runtime side ----------------------------------------------------
    def deliver(self):
        request_id, deadline, arn, cc, payload = self.queued.split(b"\n", 4)
        self.queued = None
        rid = request_id.decode()
        rnd = os.urandom(20).hex()
        trace = f"Root=1-{int(time.time()):08x}-{rnd[:24]};Parent={rnd[24:]};Sampled=0"
        headers = [("Lambda-Runtime-Aws-Request-Id", rid), ("Lambda-Runtime-Deadline-Ms", deadline.decode()),
                   ("Lambda-Runtime-Invoked-Function-Arn", arn.decode()), ("Lambda-Runtime-Trace-Id", trace),
                   ("Content-Type", "application/json")]
        if cc:
            headers.append(("Lambda-Runtime-Client-Context", cc.decode()))
        conn, self.waiting = self.waiting, None
        self.current = rid
        self.delivered_ns = time.perf_counter_ns()
        self.respond(conn, 200, payload, headers)

    def respond(self, conn, status, body, headers=(), close=False):
        head = [f"HTTP/1.1 {status} {_REASONS[status]}"]
        head += [f"{k}: {v}" for k, v in headers]
        if not any(k == "Content-Type" for k, _ in headers):
            head.append("Content-Type: application/json")
        head.append(f"Content-Length: {len(body)}")
        if close:
            head.append("Connection: close")
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        sock = self.conns[conn][0]
        try:
            try:
                sent = sock.send(data)
            except BlockingIOError:
                sent = 0
            if sent < len(data):
                # Blocking write: a runtime that stops reading stalls only its own sandbox.
                sock.setblocking(True)
                sock.sendall(data[sent:])
                sock.setblocking(False)
        except OSError:
            close = True
        if close:
            self.drop(conn)

    def accept(self, listener):
        while True:
            try:
                fd, _addr = listener._accept()
            except BlockingIOError:
                return
            sock = _socket.socket(fileno=fd)
            sock.setblocking(False)
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            self.conns[fd] = [sock, bytearray(), False, 0]
            self.poll.register(fd, select.EPOLLIN)

    def drop(self, fd):
        entry = self.conns.pop(fd, None)
        if entry is not None:
            self.poll.unregister(fd)
            entry[0].close()
        if self.waiting == fd:
            self.waiting = None

    def on_readable(self, fd):
        entry = self.conns[fd]
        try:
            data = entry[0].recv(1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.drop(fd)
            return
        if entry[3]:  # still discarding a refused body
            skipped = min(entry[3], len(data))
            entry[3] -= skipped
            data = data[skipped:]
        buf = entry[1]
        buf += data
        while fd in self.conns and buf:
            try:
                req = _parse(buf)
            except BadRequest as exc:
                self.fail("Runtime.InvalidResponse", f"Runtime sent invalid HTTP: {exc}")
                self.respond(fd, 400, _error_body("InvalidRequest", str(exc)), close=True)
                return
            if req is None:
                if not entry[2] and buf.find(b"\r\n\r\n") >= 0 and b"100-continue" in bytes(buf[:MAX_HEAD]).lower():
                    entry[2] = True  # libcurl waits a second for this before sending a body
                    entry[0].sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                return
            method, path, headers, body, trailers, used = req
            entry[3] = max(0, used - len(buf))  # an oversized body not yet received
            del buf[:used]
            entry[2] = False
            self.handle(fd, method, path, headers, body, trailers)
            if fd in self.conns and headers.get("connection", "").lower() == "close":
                self.drop(fd)

    def handle(self, fd, method, path, headers, body, trailers):
        if not path.startswith(API):
            self.respond(fd, 404, _error_body("NotFound", f"unknown path {path}"))
            return
        route = path[len(API):].split("?")[0]
        if route == "invocation/next":
            if method != "GET":
                self.respond(fd, 405, _error_body("MethodNotAllowed", "use GET"))
            elif self.current:
                rid = self.current
                self.fail("Runtime.InvalidResponse",
                          f"Runtime called /next before answering request {rid}")
                self.respond(fd, 403, _error_body(
                    "InvalidStateTransition", f"request {rid} is in progress: post its response or error first"))
            else:
                if self.waiting is not None:
                    self.drop(self.waiting)  # a newer /next replaces an abandoned one
                self.waiting = fd
                if not self.ready:
                    self.ready = True
                    _b._send(self.fd, b"R", _b._U64.pack(self.start_ns) + _b._U64.pack(time.time_ns()))
                elif self.queued is not None:
                    self.deliver()
            return
        parts = route.split("/")
        if route != "init/error" and (len(parts) != 3 or parts[0] != "invocation"
                                      or parts[2] not in ("response", "error")):
            self.respond(fd, 404, _error_body("NotFound", f"unknown path {path}"))
            return
        if method != "POST":
            self.respond(fd, 405, _error_body("MethodNotAllowed", "use POST"))
            return
        if route == "init/error":
            if self.ready:
                self.respond(fd, 403, _error_body("InvalidStateTransition", "init is already complete"))
                return
            self.respond(fd, 202, b'{"status":"OK"}')
            doc = body if body is not None else _error_body("Runtime.InitError", "init error body too large")
            _b._send(self.fd, b"E", _error_document(doc, headers, "Runtime.Unknown"))
            return
        if not self.current or parts[1] != self.current:
            self.respond(fd, 400, _error_body("InvalidRequestID", "Invalid request ID"))
            return
        handler_ns = time.perf_counter_ns() - self.delivered_ns
        mode = headers.get("lambda-runtime-function-response-mode")
        if mode is not None and mode != "streaming":
            self.respond(fd, 400, _error_body("InvalidFunctionResponseMode", "Invalid function response mode"))
            self.fail("Runtime.InvalidResponseModeHeader", f"invalid response mode {mode!r}")
            return
        if body is None:
            # A chunked body cannot be skipped without parsing it: that connection closes.
            self.respond(fd, 413, _error_body(
                "RequestEntityTooLarge", f"Exceeded maximum allowed payload size ({MAX_BODY} bytes)."),
                close="content-length" not in headers)
            self.reply(b"F", handler_ns, _error_body(
                "Function.ResponseSizeTooLarge",
                f"Response payload size exceeded maximum allowed payload size ({MAX_BODY} bytes)."))
            return
        self.respond(fd, 202, b'{"status":"OK"}')
        trailer_type = trailers.get("lambda-runtime-function-error-type")
        if parts[2] == "response" and not trailer_type:
            self.reply(b"S", handler_ns, body)
        elif trailer_type:  # a streamed response that failed part-way
            self.reply(b"F", handler_ns, _stream_error(trailer_type, trailers))
        else:
            self.reply(b"F", handler_ns, _error_document(body, headers, "Function.Unknown"))

    # -- the bootstrap process ------------------------------------------
    def spawn(self):
        path = next((p for p in BOOTSTRAP_PATHS if os.path.exists(p)), None)
        if path is None:
            return _error_body("Runtime.InvalidEntrypoint",
                               f"Couldn't find valid bootstrap(s): {list(BOOTSTRAP_PATHS)}")
        env = {k: v for k, v in os.environ.items() if k not in PRIVATE_ENV}
        env["AWS_LAMBDA_RUNTIME_API"] = "%s:%d" % ADDRESS
        os.set_inheritable(self.fd, False)
        try:
            self.child = os.posix_spawn(path, [path], env)
        except OSError as exc:
            return _error_body("Runtime.InvalidEntrypoint", f"fork/exec {path}: {exc.strerror.lower()}")
        self.child_pidfd = os.pidfd_open(self.child)
        return None

    def reap(self):
        """Collects every exited process (pid 1 inherits orphans); returns
        the bootstrap's wait status once it has exited."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return None
            if pid == 0:
                return None
            if pid == self.child:
                return status

    def run(self, listener):
        self.poll.register(self.fd, select.EPOLLIN)
        self.poll.register(listener.fileno(), select.EPOLLIN)
        self.poll.register(self.child_pidfd, select.EPOLLIN)
        lfd = listener.fileno()
        while True:
            for fd, _ev in self.poll.poll():
                if fd == self.fd:
                    self.on_control()
                elif fd == lfd:
                    self.accept(listener)
                elif fd == self.child_pidfd:
                    status = self.reap()
                    if status is not None:
                        return status
                elif fd in self.conns:
                    self.on_readable(fd)


def _error_document(body, headers, default_type):
    """The body is passed through unchanged, as AWS does; a body that is not
    an error document gets the header's type (or ``default_type``) so the
    caller still sees one."""
    try:
        doc = _b._loads(body)
        if isinstance(doc, dict) and doc.get("errorType"):
            return body
    except (ValueError, StopIteration):  # the C scanner's "no JSON value here"
        pass
    error_type = headers.get("lambda-runtime-function-error-type") or default_type
    return _error_body(error_type, body.decode("utf-8", "replace"))


def _stream_error(error_type, trailers):
    import binascii  # error path only

    try:
        return binascii.a2b_base64(trailers.get("lambda-runtime-function-error-body", ""))
    except (binascii.Error, ValueError):
        return _error_body(error_type, "streamed response failed")


def main():
    fd = int(os.environ["_RUNTIME_CONTROL_FD"])
    start_ns = _b._START_NS
    if os.environ.get("_RUNTIME_STEM_CELL"):
        _b._send(fd, b"R", _b._U64.pack(start_ns) + _b._U64.pack(time.time_ns()))
        start_ns = _b._await_specialisation(fd)
    os.chdir(os.environ.get("LAMBDA_TASK_ROOT", "/var/task"))
    listener = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    listener.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
    try:
        listener.bind(ADDRESS)
    except OSError as exc:
        _b._send(fd, b"E", _error_body("Runtime.RelayError", f"bind({ADDRESS[0]}:{ADDRESS[1]}): {exc}"))
        return 1
    listener.listen(16)
    listener.setblocking(False)
    relay = Relay(fd, start_ns)
    failed = relay.spawn()
    if failed is not None:
        _b._send(fd, b"E", failed)
        return 1
    status = relay.run(listener)
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)
