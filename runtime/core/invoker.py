"""The invoke path: find an environment, run the event, shape the result.

One invocation at a time per environment, as AWS Lambda does. A function's
idle environments are reused most-recently-used first (warm); when none is
idle a new one is started (cold), so concurrent requests scale out. Idle
environments are destroyed after ``keep_alive_s`` (scale to zero). An
environment that died is never reused: the next request starts a new one.

Everything here runs on the agent's event-loop thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import os
import time
import uuid
from typing import Mapping

from runtime.core.codestore import CodeStore
from runtime.core.function import FunctionConfig
from runtime.core.logs import LogStore
from runtime.core.registry import FunctionRegistry
from runtime.core.runtimes import Runtime
from runtime.errors import (FunctionErrorType, InvalidRequestContent, RequestTooLarge, ServiceError,
                            TooManyRequests)
from runtime.sandbox.environment import Environment, InitFailed, State
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


@dataclasses.dataclass(frozen=True)
class InvokerSettings:
    keep_alive_s: float = 600.0
    max_environments: int = 256
    init_timeout_s: float = DEFAULT_INIT_TIMEOUT_S
    region: str = "local"


class _Pool:
    """Environments of one function revision. Owned by the loop thread."""

    def __init__(self, revision: int):
        self.revision = revision
        self.idle: list[Environment] = []
        self.all: set[Environment] = set()


class Invoker:
    def __init__(self, registry: FunctionRegistry, code: CodeStore, host: SandboxHost, logs: LogStore,
                 runtimes: Mapping[str, Runtime], settings: InvokerSettings = InvokerSettings()):
        self.registry = registry
        self.code = code
        self.host = host
        self.logs = logs
        self.runtimes = runtimes
        self.settings = settings
        self._pools: dict[str, _Pool] = {}
        self._count = 0
        self._seq = itertools.count(1)
        self._reaper: asyncio.Task | None = None
        registry.on_change.append(self._retire)

    # -- public ----------------------------------------------------------------
    async def invoke(self, cmd: InvokeCommand) -> InvokeResult:
        t0 = time.perf_counter_ns()
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
                json.loads(cmd.client_context)
            except (ValueError, UnicodeDecodeError) as exc:
                raise InvalidRequestContent("client_context", f"is not JSON: {exc}") from exc
            client_context = cmd.client_context
        request_id = str(uuid.uuid4())
        if cmd.dry_run:
            return InvokeResult(b"", "", "", request_id, cfg.version, "", Timings(), status_code=204)
        if cmd.log_tail:
            self.logs.start_capture(request_id)
        env, kind, init = await self._acquire(cfg)
        t_env = time.perf_counter_ns()
        try:
            if isinstance(init, InitFailed):
                doc = init.document
                outcome_payload = json.dumps(doc).encode()
                error_type, handler_ns = doc.get("errorType", FunctionErrorType.UNKNOWN), 0
            else:
                outcome = await env.invoke(request_id, payload, cfg.spec.timeout_seconds, cfg.arn,
                                           client_context)
                outcome_payload, error_type, handler_ns = outcome.payload, outcome.error_type, outcome.handler_ns
        finally:
            if env is not None:
                self._release(cfg, env)
        t1 = time.perf_counter_ns()
        sandbox_us = code_us = 0
        if kind == "cold" and env is not None and env.init is not None:
            sandbox_us = (env.init.start_ns - env.init.spawn_ns) // 1000
            code_us = (env.init.ready_ns - env.init.start_ns) // 1000
        timings = Timings(
            total_us=(t1 - t0) // 1000,
            queue_us=0 if kind == "cold" else (t_env - t0) // 1000,
            sandbox_us=max(sandbox_us, 0), code_load_us=max(code_us, 0),
            handler_us=handler_ns // 1000,
            init_us=max(sandbox_us, 0) + max(code_us, 0) if kind == "cold" else 0)
        tail = self.logs.end_capture(request_id) if cmd.log_tail else ""
        return InvokeResult(outcome_payload, "Unhandled" if error_type else "", error_type, request_id,
                            cfg.version, kind, timings, tail)

    def statistics(self) -> dict:
        return {name: {"idle": len(p.idle), "total": len(p.all)} for name, p in self._pools.items()}

    def start(self) -> None:
        self._reaper = asyncio.get_running_loop().create_task(self._reap_loop())

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        for pool in list(self._pools.values()):
            for env in list(pool.all):
                env.destroy("agent shutdown")
        # Give the reapers a moment to collect exit statuses and cgroups.
        await asyncio.sleep(0.05)

    # -- environments ----------------------------------------------------------
    async def _acquire(self, cfg: FunctionConfig):
        pool = self._pools.get(cfg.name)
        if pool is None or pool.revision != cfg.revision:
            if pool is not None:
                self._retire(cfg)
            pool = self._pools[cfg.name] = _Pool(cfg.revision)
        while pool.idle:
            env = pool.idle.pop()
            if env.state is State.IDLE:
                return env, "warm", None
        if self._count >= self.settings.max_environments:
            raise TooManyRequests("Rate Exceeded.",
                                  f"ConcurrentInvocationLimitExceeded: {self.settings.max_environments} "
                                  "environments are running on this host")
        env = self._new_environment(cfg, pool)
        try:
            await env.start(min(self.settings.init_timeout_s, float(cfg.spec.timeout_seconds)))
        except InitFailed as exc:
            return env, "cold", exc
        return env, "cold", None

    def _new_environment(self, cfg: FunctionConfig, pool: _Pool) -> Environment:
        rt = self.runtimes[cfg.spec.runtime]
        env_id = f"{cfg.name}-{os.getpid()}-{next(self._seq)}"
        uid = self.host.allocate_uid()
        environ = self._environ(cfg, rt, env_id)
        spec = self.host.spec_for(env_id, uid, cfg, rt, self.code.path(cfg.code_sha256), environ, ())
        name = cfg.name

        def sink(request_id: str, stream: str, line: bytes) -> None:
            self.logs.append(name, request_id, stream, line)

        def on_dead(env: Environment) -> None:
            self._count -= 1
            self.host.release_uid(uid)
            pool.all.discard(env)
            if env in pool.idle:
                pool.idle.remove(env)

        env = Environment(env_id, spec, self.host.env_cgroup(env_id), sink, on_dead)
        pool.all.add(env)
        self._count += 1
        return env

    def _environ(self, cfg: FunctionConfig, rt: Runtime, env_id: str) -> dict[str, str]:
        spec = cfg.spec
        day = time.strftime("%Y/%m/%d", time.gmtime())
        env = dict(spec.environment)
        env.update({
            "_HANDLER": spec.handler,
            "AWS_LAMBDA_FUNCTION_NAME": spec.name,
            "AWS_LAMBDA_FUNCTION_VERSION": cfg.version,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": f"{day}/[{cfg.version}]{env_id}",
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{rt.name}",
            "AWS_REGION": self.settings.region,
            "AWS_DEFAULT_REGION": self.settings.region,
            "LAMBDA_TASK_ROOT": "/var/task",
            "LAMBDA_RUNTIME_DIR": "/var/runtime",
            "TZ": "UTC",
            "LANG": "C.UTF-8",
            "HOME": "/tmp",
            "PATH": "/usr/local/bin:/usr/bin:/bin:/opt/bin",
            "LD_LIBRARY_PATH": "/var/task/lib:/opt/lib",
        })
        return env

    def _release(self, cfg: FunctionConfig, env: Environment) -> None:
        pool = self._pools.get(cfg.name)
        if env.state is not State.IDLE:
            return
        if pool is None or pool.revision != cfg.revision or env not in pool.all:
            env.destroy("function changed")
            return
        pool.idle.append(env)

    def _retire(self, old: FunctionConfig) -> None:
        """Destroys idle environments of a changed or deleted function; busy
        ones are destroyed when their invocation returns."""
        pool = self._pools.pop(old.name, None)
        if pool is None:
            return
        for env in list(pool.idle):
            env.destroy("function changed")
        pool.idle.clear()

    async def _reap_loop(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.settings.keep_alive_s / 4))
            self.reap_idle()

    def reap_idle(self) -> int:
        cutoff = time.monotonic() - self.settings.keep_alive_s
        reaped = 0
        for pool in list(self._pools.values()):
            for env in list(pool.idle):
                if env.last_used < cutoff:
                    env.destroy("idle")
                    reaped += 1
        return reaped


def describe(exc: BaseException) -> ServiceError:
    return ServiceError(f"internal error: {type(exc).__name__}: {exc}")
