"""The invoke path: check the request, take an environment, run the event,
account for it, shape the result.

Where environments come from (warm reuse, stem cells, cold starts, limits)
and how long they stay is ``runtime.core.pools``; this module is one call:
its checks, its START/END/REPORT lines, usage, metrics and trace, and what
happens when its caller leaves before the answer (the call runs on, as on
AWS, and is accounted for when it ends).

Everything here runs on the agent's event-loop thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import os
import time
from typing import Mapping

from runtime.core.codestore import CodeStore
from runtime.core.function import FunctionConfig
from runtime.core.logs import LogStore
from runtime.core.metrics import Metrics
from runtime.core.pools import Pools
from runtime.core.registry import FunctionRegistry
from runtime.core.runtimes import Runtime
from runtime.core.usage import UsageLedger
from runtime.errors import FunctionErrorType, InvalidRequestContent, RequestTooLarge, TooManyRequests
from runtime.sandbox.environment import POLL_OUTCOMES, Environment, InitFailed, InitTimings, Outcome
from runtime.sandbox.host import SandboxHost

MAX_PAYLOAD = 6 * 1024 * 1024
MAX_CLIENT_CONTEXT = 3583
DEFAULT_INIT_TIMEOUT_S = 10.0


@dataclasses.dataclass(frozen=True)
class InvokeCommand:
    function_name: str
    payload: bytes
    qualifier: str = ""
    client_context: bytes = b""
    dry_run: bool = False
    log_tail: bool = False


@dataclasses.dataclass(frozen=True)
class Timings:
    total_us: int = 0
    queue_us: int = 0
    sandbox_us: int = 0
    runtime_start_us: int = 0
    code_load_us: int = 0
    handler_us: int = 0
    init_us: int = 0


@dataclasses.dataclass(frozen=True)
class InvokeResult:
    payload: bytes
    function_error: str          # "" | "Unhandled" | "Handled"
    error_type: str
    request_id: str
    executed_version: str
    start_kind: str              # "warm" | "cold" | "prewarmed" | "" (dry run)
    timings: Timings
    log_tail: str = ""
    status_code: int = 200


def new_request_id() -> str:
    """A random (version 4) UUID in its text form, as ``str(uuid.uuid4())``
    gives it, without building the UUID object: half the time per call."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclasses.dataclass(frozen=True)
class InvokerSettings:
    keep_alive_s: float = 600.0
    max_environments: int = 256
    init_timeout_s: float = DEFAULT_INIT_TIMEOUT_S
    region: str = "local"
    # Memory (MB) all environments together may be given; 0 means the default.
    memory_budget_mb: int = 0
    # Write START/END/REPORT lines to each function's log.
    platform_logs: bool = True
    # "fixed" (keep_alive_s) or "hybrid" (learned per function, falling back to fixed).
    keep_alive_policy: str = "fixed"
    # Histogram bin of the hybrid policy (the paper's is one minute).
    keep_alive_bin_s: float = 60.0
    # Stem cells kept ready per runtime (runtime loaded, no function yet).
    stem_cells: int = 0
    # While one invocation is in flight, wait this long for its reply by
    # polling instead of sleeping (Environment._poll_reply); 0 turns it off.
    reply_poll_us: int = 200


class Invoker:
    def __init__(self, registry: FunctionRegistry, code: CodeStore, host: SandboxHost, logs: LogStore,
                 runtimes: Mapping[str, Runtime], settings: InvokerSettings = InvokerSettings(),
                 usage: UsageLedger | None = None, metrics: Metrics | None = None, tracer=None):
        self.registry = registry
        self.logs = logs
        self.settings = settings
        self.usage = usage
        self.metrics = metrics
        self.tracer = tracer  # runtime.core.tracing.Tracer, or None when tracing is off
        self.pools = Pools(registry, code, host, logs, runtimes, settings)
        self._reaper: asyncio.Task | None = None
        self._active = 0  # invoke() calls under way, wherever they are
        self.reply_polls = dict.fromkeys(POLL_OUTCOMES, 0)  # how reply polls ended, agent-wide
        self._poll_ns = settings.reply_poll_us * 1000

    # -- public ----------------------------------------------------------------
    async def invoke(self, cmd: InvokeCommand) -> InvokeResult:
        self._active += 1
        try:
            return await self._invoke(cmd, time.perf_counter_ns())
        finally:
            self._active -= 1

    async def _invoke(self, cmd: InvokeCommand, t0: int) -> InvokeResult:
        cfg = self.registry.get(cmd.function_name)
        if len(cmd.payload) > MAX_PAYLOAD:
            raise RequestTooLarge(
                f"payload is {len(cmd.payload)} bytes: at most {MAX_PAYLOAD} bytes are allowed")
        payload = cmd.payload or b"{}"
        try:
            json.loads(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidRequestContent("payload", f"could not parse request body into json: {exc}") from exc
        client_context = None
        if cmd.client_context:
            if len(cmd.client_context) > MAX_CLIENT_CONTEXT:
                raise RequestTooLarge(f"client_context is {len(cmd.client_context)} bytes: at most "
                                      f"{MAX_CLIENT_CONTEXT} bytes are allowed")
            try:
                parsed = json.loads(cmd.client_context)
            except (ValueError, UnicodeDecodeError) as exc:
                raise InvalidRequestContent("client_context", f"is not JSON: {exc}") from exc
            client_context = json.dumps(parsed, separators=(",", ":")).encode()  # one line
        request_id = new_request_id()
        if cmd.dry_run:
            return InvokeResult(b"", "", "", request_id, cfg.version, "", Timings(), status_code=204)
        self.pools.arrived(cfg.name)
        if cmd.log_tail:
            self.logs.start_capture(request_id)
        try:
            env, kind, init = await self.pools.acquire(cfg)
        except BaseException as exc:  # throttled, no sandbox, or the caller gave up meanwhile
            if isinstance(exc, TooManyRequests) and self.metrics is not None:
                self.metrics.throttled(cfg.name, exc.reason.split(":")[0])
            if cmd.log_tail:
                self.logs.end_capture(request_id)  # else its capture is kept for good
            raise
        t_env = time.perf_counter_ns()
        platform = self.settings.platform_logs
        name = cfg.name
        if platform:
            self.logs.begin(name, request_id, cfg.version)
        cpu0 = env.cpu_usage_ns() if init is None else 0
        abandoned = False
        try:
            if isinstance(init, InitFailed):
                doc = init.document
                outcome_payload = json.dumps(doc).encode()
                error_type, handler_ns = doc.get("errorType", FunctionErrorType.UNKNOWN), 0
            else:
                # Poll for the reply only when this is the one invocation
                # under way (polling also stops when the loop has other work:
                # Environment._poll_reply) and this environment's last reply
                # came within the polling time.
                poll_ns = self._poll_ns if self._active == 1 and env.reply_ns <= self._poll_ns else 0
                outcome = await env.invoke(request_id, payload, cfg.spec.timeout_seconds, cfg.arn,
                                           client_context, poll_ns)
                if env.poll_outcome:
                    self.reply_polls[env.poll_outcome] += 1
                outcome_payload, error_type, handler_ns = outcome.payload, outcome.error_type, outcome.handler_ns
        except BaseException as exc:  # the call failed in the agent, or its caller gave up
            # Its caller gone, the call runs on; it is logged, billed and released when it ends.
            abandoned = isinstance(exc, asyncio.CancelledError) and env.abandon(
                functools.partial(self._settle_abandoned, cfg, request_id, kind, init, t0, t_env, cpu0))
            if not abandoned:
                self.logs.discard(request_id)
            if cmd.log_tail:
                self.logs.end_capture(request_id)
            raise
        finally:
            if not abandoned:
                self.pools.release(cfg, env)
        timings = self._account(cfg, env, request_id, kind, init, t0, t_env, cpu0, error_type, handler_ns)
        tail = self.logs.end_capture(request_id) if cmd.log_tail else ""
        return InvokeResult(outcome_payload, "Unhandled" if error_type else "", error_type, request_id,
                            cfg.version, kind, timings, tail)

    def _settle_abandoned(self, cfg: FunctionConfig, request_id: str, kind: str,
                          init: InitTimings | InitFailed | None,
                          t0: int, t_env: int, cpu0: int, env: Environment, outcome: Outcome) -> None:
        """The end of a call whose caller left (Environment.abandon)."""
        self.pools.release(cfg, env)
        self._account(cfg, env, request_id, kind, init, t0, t_env, cpu0, outcome.error_type, outcome.handler_ns)

    def _account(self, cfg: FunctionConfig, env: Environment, request_id: str, kind: str,
                 init: InitTimings | InitFailed | None, t0: int, t_env: int, cpu0: int, error_type: str,
                 handler_ns: int) -> Timings:
        """Usage, the END and REPORT lines, metrics and the trace of one
        finished call; returns its timings."""
        name, platform = cfg.name, self.settings.platform_logs
        t1 = time.perf_counter_ns()
        cpu_ns = env.cpu_usage_ns() - cpu0 if init is None else 0
        sandbox_us = code_us = 0
        if kind == "cold" and env.init is not None:
            sandbox_us = max((env.init.start_ns - env.init.spawn_ns) // 1000, 0)
            code_us = max((env.init.ready_ns - env.init.start_ns) // 1000, 0)
        elif kind == "prewarmed" and env.init is not None:
            # The sandbox and runtime were started ahead; only specialising counts.
            code_us = max((env.init.ready_ns - env.init.spawn_ns) // 1000, 0)
        init_us = sandbox_us + code_us
        queue_us = 0 if init_us else (t_env - t0) // 1000
        timings = Timings(total_us=(t1 - t0) // 1000, queue_us=queue_us, sandbox_us=sandbox_us,
                          code_load_us=code_us, handler_us=handler_ns // 1000, init_us=init_us)
        duration_ns = t1 - t_env
        billed = self.usage.record(name, time.time(), duration_ns, cfg.spec.memory_mb, cpu_ns) \
            if self.usage is not None else 0
        # Deleted (or deleted and created again) while it ran: its log and
        # metrics are gone and must not come back (see _sink).
        current = self.registry.is_current(name, cfg.created)
        if platform:
            if current:
                self.logs.finish(name, request_id, duration_ns, billed, cfg.spec.memory_mb,
                                 env.peak_memory_bytes() // (1024 * 1024), init_us, error_type)
            else:
                self.logs.discard(request_id)
        if self.metrics is not None and current:
            self.metrics.observe(name, kind, timings.total_us / 1e6, {
                "queue": queue_us / 1e6, "sandbox": sandbox_us / 1e6, "code_load": code_us / 1e6,
                "handler": handler_ns / 1e9}, init_us / 1e6, error_type)
        if self.tracer is not None:
            self._trace(cfg, request_id, kind, env, t0, t_env, t1, handler_ns, error_type)
        return timings

    def _trace(self, cfg: FunctionConfig, request_id: str, kind: str, env: Environment, t0: int, t_env: int,
               t1: int, handler_ns: int, error_type: str) -> None:
        # perf_counter stamps -> epoch ns, anchored at the end of the call.
        shift = time.time_ns() - time.perf_counter_ns()
        phases: dict[str, tuple[int, int]] = {}
        if kind == "cold" and env.init is not None:
            phases["sandbox"] = (env.init.spawn_ns, env.init.start_ns)
            phases["code_load"] = (env.init.start_ns, env.init.ready_ns)
        elif kind == "prewarmed" and env.init is not None:
            phases["code_load"] = (env.init.spawn_ns, env.init.ready_ns)
        else:
            phases["queue"] = (t0 + shift, t_env + shift)
        if handler_ns:
            phases["handler"] = (t1 + shift - handler_ns, t1 + shift)
        self.tracer.invocation(cfg.name, request_id, kind, t0 + shift, t1 + shift, phases, error_type,
                               {"faas.max_memory": cfg.spec.memory_mb * 1024 * 1024})

    def statistics(self) -> dict:
        """Live numbers for the metrics exporter (read at scrape time)."""
        return {**self.pools.statistics(), "reply_polls": dict(self.reply_polls)}

    def start(self) -> None:
        self._reaper = asyncio.get_running_loop().create_task(self._reap_loop())
        self.pools.start()

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        if self.usage is not None:
            self.usage.flush()
        await self.pools.close()

    async def _reap_loop(self) -> None:
        while True:
            await asyncio.sleep(max(0.05, min(1.0, self.settings.keep_alive_s / 4)))
            self.pools.reap_idle()
            self.pools.provision()
            if self.usage is not None:
                self.usage.flush()
