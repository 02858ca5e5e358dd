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
import functools
import itertools
import json
import logging
import os
import time
from typing import Mapping

from runtime.agentlog import event
from runtime.core.codestore import CodeStore
from runtime.core.function import NETWORK_NONE, NETWORK_OUTBOUND, FunctionConfig
from runtime.core.keepalive import FixedKeepAlive, HybridHistogramKeepAlive
from runtime.core.logs import LogStore
from runtime.core.metrics import Metrics
from runtime.core.registry import FunctionRegistry
from runtime.core.runtimes import Runtime
from runtime.core.usage import UsageLedger
from runtime.errors import (AgentError, FunctionErrorType, InvalidRequestContent, RequestTooLarge, SandboxError,
                            TooManyRequests)
from runtime.jail.cgroups import cpu_ms_for_memory
from runtime.sandbox.codemount import Injector, open_code_tree
from runtime.sandbox.codemount import supported as code_mounts_supported
from runtime.sandbox.environment import POLL_OUTCOMES, STEM_ENV, Environment, InitFailed, InitTimings, Outcome, State
from runtime.sandbox.host import SandboxHost

log = logging.getLogger("runtime.invoker")
MAX_PAYLOAD = 6 * 1024 * 1024
MAX_CLIENT_CONTEXT = 3583
# Stem cells start at the smallest size and the default /tmp; specialising
# sets the function's memory. Functions with a larger /tmp start cold.
STEM_MEMORY_MB = 128
STEM_TMP_MB = 512
REPLENISH_DELAY_S = 0.1
# Bootstraps that can wait, loaded, for a function (frame P): Python's,
# Node's and the Runtime API relay.
STEM_FAMILIES = ("python", "node", "provided")


def stem_cells_supported(host: SandboxHost) -> bool:
    """Stem cells need detached mounts (root, Linux 5.12+) and cgroups."""
    return not host.rootless and host.cgroup_version != 0 and code_mounts_supported()
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


def host_memory_mb() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def default_memory_budget_mb() -> int:
    """Host memory minus a reserve for the kernel, the agent and the page cache."""
    total = host_memory_mb()
    return max(total - max(1024, total // 10), 0)


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


class _Pool:
    """Environments of one function revision. Owned by the loop thread."""

    def __init__(self, revision: int):
        self.revision = revision
        self.idle: list[Environment] = []
        self.all: set[Environment] = set()


class Invoker:
    def __init__(self, registry: FunctionRegistry, code: CodeStore, host: SandboxHost, logs: LogStore,
                 runtimes: Mapping[str, Runtime], settings: InvokerSettings = InvokerSettings(),
                 usage: UsageLedger | None = None, metrics: Metrics | None = None, tracer=None):
        self.registry = registry
        self.code = code
        self.host = host
        self.logs = logs
        self.runtimes = runtimes
        self.settings = settings
        self.usage = usage
        self.metrics = metrics
        self.tracer = tracer  # runtime.core.tracing.Tracer, or None when tracing is off
        self.budget_mb = settings.memory_budget_mb or default_memory_budget_mb()
        self._pools: dict[str, _Pool] = {}
        self._count = 0
        self._memory_mb = 0  # of every live environment, starting ones included
        self._seq = itertools.count(1)
        self._reaper: asyncio.Task | None = None
        fixed = FixedKeepAlive(settings.keep_alive_s)
        self.policy = (HybridHistogramKeepAlive(bin_s=settings.keep_alive_bin_s, fallback=fixed)
                       if settings.keep_alive_policy == "hybrid" else fixed)
        self._prewarms: dict[str, asyncio.TimerHandle] = {}
        self._stems: dict[str, list[Environment]] = {}
        self._replenishing: set[str] = set()
        self._provisioning: set[str] = set()
        self._closing = False
        self._active = 0  # invoke() calls under way, wherever they are
        self.reply_polls = dict.fromkeys(POLL_OUTCOMES, 0)  # how reply polls ended, agent-wide
        self._poll_ns = settings.reply_poll_us * 1000
        self._stem_target = settings.stem_cells if settings.stem_cells and stem_cells_supported(host) else 0
        # Attaches code inside specialised stem cells (a process of its own).
        self._injector = Injector() if self._stem_target else None
        registry.on_change.append(self._retire)

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
        self.policy.record(cfg.name, time.monotonic())
        pending = self._prewarms.pop(cfg.name, None)
        if pending is not None:  # it arrived before its pre-warm: cancel, it starts its own
            pending.cancel()
        if cmd.log_tail:
            self.logs.start_capture(request_id)
        try:
            env, kind, init = await self._acquire(cfg)
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
                self._release(cfg, env)
        timings = self._account(cfg, env, request_id, kind, init, t0, t_env, cpu0, error_type, handler_ns)
        tail = self.logs.end_capture(request_id) if cmd.log_tail else ""
        return InvokeResult(outcome_payload, "Unhandled" if error_type else "", error_type, request_id,
                            cfg.version, kind, timings, tail)

    def _settle_abandoned(self, cfg: FunctionConfig, request_id: str, kind: str,
                          init: InitTimings | InitFailed | None,
                          t0: int, t_env: int, cpu0: int, env: Environment, outcome: Outcome) -> None:
        """The end of a call whose caller left (Environment.abandon)."""
        self._release(cfg, env)
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
        environments: dict[tuple[str, str], int] = {}
        concurrent: dict[str, int] = {}
        for name, pool in self._pools.items():
            for env in pool.all:
                key = (name, env.state.value)
                environments[key] = environments.get(key, 0) + 1
            concurrent[name] = len(pool.all) - len(pool.idle)
        for runtime, cells in self._stems.items():
            if cells:  # stem cells belong to no function yet: labelled by runtime
                environments[(f"stem-{runtime}", "stem")] = len(cells)
        return {"environments": environments, "concurrent": concurrent, "reply_polls": dict(self.reply_polls),
                "budget_bytes": self.budget_mb * 1024 * 1024, "used_bytes": self._memory_mb * 1024 * 1024}

    def start(self) -> None:
        self._reaper = asyncio.get_running_loop().create_task(self._reap_loop())
        self.registry.on_change.append(lambda old: asyncio.get_running_loop().call_soon(self.provision))
        self.provision()
        for name, rt in self.runtimes.items():
            if name == rt.name and rt.family in STEM_FAMILIES:
                self._replenish_soon(name)

    async def close(self) -> None:
        self._closing = True
        for cells in self._stems.values():
            for env in list(cells):
                env.destroy("agent shutdown")
        if self._reaper is not None:
            self._reaper.cancel()
        for pending in self._prewarms.values():
            pending.cancel()
        if self.usage is not None:
            self.usage.flush()
        for pool in list(self._pools.values()):
            for env in list(pool.all):
                env.destroy("agent shutdown")
        # Give the reapers a moment to collect exit statuses and cgroups.
        await asyncio.sleep(0.05)
        if self._injector is not None:
            self._injector.close()

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
                event("reused", logging.DEBUG, env=env.id)
                return env, "warm", None
        reserved = cfg.spec.reserved_concurrency
        # A stem cell's network is fixed when it starts: outbound functions start cold.
        if (cfg.spec.network == NETWORK_NONE and self._stem_eligible(cfg)
                and not (reserved and len(pool.all) >= reserved)):
            taken = await self._specialise(cfg, pool)
            if taken is not None:
                return taken
        self._admit(cfg, pool)
        env = self._new_environment(cfg, pool)
        try:
            self.host.before_spawn()
            await env.start(self._init_timeout(cfg))
        except InitFailed as exc:
            return env, "cold", exc
        return env, "cold", None

    def _init_timeout(self, cfg: FunctionConfig) -> float:
        """Init may take the agent's init timeout, but never longer than the function's own."""
        return min(self.settings.init_timeout_s, float(cfg.spec.timeout_seconds))

    def _admit(self, cfg: FunctionConfig, pool: _Pool) -> None:
        """Refuses a new environment beyond the limits, at once: no queue.

        Order: the function's own reserved concurrency, then the host's
        environment count and memory budget, which idle environments of any
        function are evicted for (least recently used first) before anything
        is refused."""
        reserved = cfg.spec.reserved_concurrency
        if reserved and len(pool.all) >= reserved:
            raise TooManyRequests("Rate Exceeded.", f"ReservedFunctionConcurrentInvocationLimitExceeded: "
                                  f"{cfg.name} may run {reserved} at once")
        need_mb = cfg.spec.memory_mb
        if self._count >= self.settings.max_environments or self._memory_mb + need_mb > self.budget_mb:
            self._evict_idle(need_mb)
        if self._count >= self.settings.max_environments:
            raise TooManyRequests("Rate Exceeded.", f"ConcurrentInvocationLimitExceeded: "
                                  f"{self.settings.max_environments} environments are running on this host")
        if self._memory_mb + need_mb > self.budget_mb:
            raise TooManyRequests("Rate Exceeded.", f"HostMemoryBudgetExceeded: {self._memory_mb} of "
                                  f"{self.budget_mb} MB in use, {need_mb} MB more needed")

    def _evict_idle(self, need_mb: int) -> None:
        idle = sorted((env for pool in self._pools.values() for env in pool.idle), key=lambda e: e.last_used)
        for env in idle:
            if self._count < self.settings.max_environments and self._memory_mb + need_mb <= self.budget_mb:
                return
            env.destroy("evicted for another environment")

    def _new_environment(self, cfg: FunctionConfig, pool: _Pool, provisioned: bool = False) -> Environment:
        rt = self.runtimes[cfg.spec.runtime]
        env_id = f"{cfg.name}-{os.getpid()}-{next(self._seq)}"
        uid = self.host.allocate_uid()
        environ = self._environ(cfg, rt, env_id)
        if provisioned:
            environ["AWS_LAMBDA_INITIALIZATION_TYPE"] = "provisioned-concurrency"
        outbound = None
        if cfg.spec.network == NETWORK_OUTBOUND:
            try:
                outbound = self.host.allocate_outbound()
            except SandboxError:
                self.host.release_uid(uid)
                raise
        spec = self.host.spec_for(env_id, uid, cfg, rt, self.code.path(cfg.code_sha256), environ, (), outbound,
                                  opt_dir=self.registry.layers.opt_dir(cfg.spec.layers))  # layers at /opt
        env = self._track(Environment(env_id, spec, self.host.env_cgroup(env_id), self._sink, self._on_dead,
                                      self.host.spawner),
                          pool, cfg.name, cfg.spec.memory_mb)
        env.function_created = cfg.created
        env.provisioned = provisioned
        return env

    def _track(self, env: Environment, pool: _Pool | None, function: str, memory_mb: int) -> Environment:
        env.owner, env.function, env.memory_mb = pool, function, memory_mb
        if pool is not None:
            pool.all.add(env)
        self._count += 1
        self._memory_mb += memory_mb
        return env

    def _sink(self, env: Environment, request_id: str, stream: str, line: bytes) -> None:
        if env.function:
            # Output of a deleted function's last invocation is dropped: it
            # would recreate the log that DeleteFunction removed, or land in
            # the log of a new function of the same name.
            if self.registry.is_current(env.function, env.function_created):
                self.logs.append(env.function, request_id, stream, line)
        else:  # a stem cell has no function log yet: its output goes to the agent's
            log.warning("stem cell %s %s: %s", env.id, stream, line.decode("utf-8", "replace")[:1000])

    def _on_dead(self, env: Environment) -> None:
        self._count -= 1
        self._memory_mb -= env.memory_mb
        self.host.release_uid(env.spec.uid)
        self.host.release_outbound(env.spec.outbound)
        pool = env.owner
        if pool is not None:
            pool.all.discard(env)
            if env in pool.idle:
                pool.idle.remove(env)
        cells = self._stems.get(env.runtime_name)
        if cells is not None and env in cells:
            cells.remove(env)
            self._replenish_soon(env.runtime_name)

    # -- stem cells --------------------------------------------------------------
    def _stem_eligible(self, cfg: FunctionConfig) -> bool:
        rt = self.runtimes[cfg.spec.runtime]
        return (self._stem_target > 0 and cfg.spec.ephemeral_storage_mb == STEM_TMP_MB
                and rt.family in STEM_FAMILIES and bool(self._stems.get(rt.name)))

    async def _specialise(self, cfg: FunctionConfig, pool: _Pool):
        """Takes a stem cell of the function's runtime and hands it the function;
        None when the memory budget cannot take the difference or the code's
        trees cannot be opened (the caller then starts cold, which says why)."""
        trees: list[int] = []
        try:
            trees.append(open_code_tree(str(self.code.path(cfg.code_sha256))))
            if cfg.spec.layers:
                trees.append(open_code_tree(str(self.registry.layers.opt_dir(cfg.spec.layers))))
        except OSError as exc:
            event("specialise_skipped", function=cfg.name, error=str(exc).replace(" ", "_")[:200])
            for fd in trees:
                os.close(fd)
            return None
        try:
            return await self._specialise_with(cfg, pool, trees[0], trees[1] if len(trees) > 1 else None)
        finally:
            for fd in trees:
                os.close(fd)

    async def _specialise_with(self, cfg: FunctionConfig, pool: _Pool, code_fd: int, opt_fd: int | None):
        rt = self.runtimes[cfg.spec.runtime]
        cells = self._stems[rt.name]
        stem = cells.pop()
        delta = cfg.spec.memory_mb - stem.memory_mb
        if delta > 0 and self._memory_mb + delta > self.budget_mb:
            self._evict_idle(delta)
            if self._memory_mb + delta > self.budget_mb:
                cells.append(stem)
                return None
        # Replace the cell a little later: spawning blocks the loop for a few
        # ms, which would land on this very invocation.
        asyncio.get_running_loop().call_later(REPLENISH_DELAY_S, self._replenish_soon, rt.name)
        self._memory_mb += delta
        stem.memory_mb = cfg.spec.memory_mb
        stem.owner, stem.function, stem.function_created = pool, cfg.name, cfg.created
        pool.all.add(stem)
        try:
            await stem.specialise(code_fd, self._injector, self._environ(cfg, rt, stem.id), cfg.spec.memory_mb,
                                  cpu_ms_for_memory(cfg.spec.memory_mb), self._init_timeout(cfg), opt_fd)
        except InitFailed as exc:
            return stem, "prewarmed", exc
        return stem, "prewarmed", None

    def _replenish_soon(self, runtime: str) -> None:
        if self._stem_target and runtime not in self._replenishing and not self._closing:
            self._replenishing.add(runtime)
            asyncio.get_running_loop().create_task(self._replenish(runtime))

    async def _replenish(self, runtime: str) -> None:
        """Starts stem cells of ``runtime`` until there are ``stem_cells`` of them."""
        try:
            cells = self._stems.setdefault(runtime, [])
            rt = self.runtimes[runtime]
            while len(cells) < self._stem_target and not self._closing:
                if (self._count >= self.settings.max_environments
                        or self._memory_mb + STEM_MEMORY_MB > self.budget_mb):
                    return  # stem cells never push out real work
                env_id = f"stem-{runtime}-{os.getpid()}-{next(self._seq)}"
                uid = self.host.allocate_uid()
                environ = {**self._base_environ(), STEM_ENV: "1"}
                spec = self.host.stem_spec(env_id, uid, rt, STEM_MEMORY_MB, STEM_TMP_MB, environ)
                env = self._track(Environment(env_id, spec, self.host.env_cgroup(env_id), self._sink,
                                              self._on_dead, self.host.spawner), None, "", STEM_MEMORY_MB)
                env.runtime_name = runtime
                try:
                    self.host.before_spawn()
                    await env.start(self.settings.init_timeout_s)
                except (InitFailed, SandboxError, OSError) as exc:
                    event("stem_failed", runtime=runtime, error=str(exc).replace(" ", "_"))
                    env.destroy("stem cell failed to start")
                    return
                cells.append(env)
        finally:
            self._replenishing.discard(runtime)

    @staticmethod
    def _base_environ() -> dict[str, str]:
        return {"LAMBDA_TASK_ROOT": "/var/task", "LAMBDA_RUNTIME_DIR": "/var/runtime", "TZ": "UTC",
                "LANG": "C.UTF-8", "HOME": "/tmp", "PATH": "/usr/local/bin:/usr/bin:/bin:/opt/bin",
                "LD_LIBRARY_PATH": "/var/task/lib:/opt/lib"}

    def _environ(self, cfg: FunctionConfig, rt: Runtime, env_id: str) -> dict[str, str]:
        spec = cfg.spec
        day = time.strftime("%Y/%m/%d", time.gmtime())
        env = dict(spec.environment)
        env.update(self._base_environ())
        env.update({
            "_HANDLER": spec.handler,
            "AWS_LAMBDA_FUNCTION_NAME": spec.name,
            "AWS_LAMBDA_FUNCTION_VERSION": cfg.version,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": f"{day}/[{cfg.version}]{env_id}",
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_REGION": self.settings.region,
            "AWS_DEFAULT_REGION": self.settings.region,
        })
        if rt.family != "provided":  # AWS leaves it unset for custom runtimes
            env["AWS_EXECUTION_ENV"] = f"AWS_Lambda_{cfg.spec.runtime}"
        if rt.family == "node":  # Lambda's value: layers' modules under /opt/nodejs are found by require()
            major = rt.name[len("nodejs"):].split(".")[0]
            env["NODE_PATH"] = (f"/opt/nodejs/node{major}/node_modules:/opt/nodejs/node_modules:"
                                "/var/runtime/node_modules:/var/runtime:/var/task")
        if spec.preload_libraries:  # the bootstrap dlopens these during init
            env["_RUNTIME_PRELOAD"] = ":".join(spec.preload_libraries)
        return env

    def _release(self, cfg: FunctionConfig, env: Environment) -> None:
        pool = self._pools.get(cfg.name)
        if env.state is not State.IDLE:
            return
        if pool is None or pool.revision != cfg.revision or env not in pool.all:
            env.destroy("function changed")
            return
        if cfg.spec.fresh_environment_per_call:
            env.destroy("fresh environment per call")
            return
        if env.provisioned:
            pool.idle.append(env)  # never expires
            return
        decision = self.policy.decide(cfg.name)
        now = time.monotonic()
        if decision.keep_loaded:
            env.expires_at = now + decision.keep_alive_s
            pool.idle.append(env)
            return
        # The next call is likely far off: free the memory now, load again
        # just before it (hybrid policy's pre-warm window).
        env.destroy("unloaded until the next likely arrival")
        if cfg.name not in self._prewarms:
            self._prewarms[cfg.name] = asyncio.get_running_loop().call_later(
                decision.prewarm_after_s, self._prewarm, cfg.name, decision.keep_alive_s)

    def _prewarm(self, name: str, keep_alive_s: float) -> None:
        self._prewarms.pop(name, None)
        asyncio.get_running_loop().create_task(self._prewarm_task(name, keep_alive_s))

    async def _prewarm_task(self, name: str, keep_alive_s: float) -> None:
        try:
            cfg = self.registry.get(name)
        except AgentError:
            return  # deleted meanwhile
        pool = self._pools.get(name)
        if pool is None or pool.revision != cfg.revision:
            pool = self._pools[name] = _Pool(cfg.revision)
        if pool.idle:
            return
        try:
            self._admit(cfg, pool)
        except TooManyRequests:
            return  # no room: the next call starts cold, as without a policy
        env = self._new_environment(cfg, pool)
        try:
            self.host.before_spawn()
            await env.start(self._init_timeout(cfg))
        except (InitFailed, SandboxError, OSError):
            env.destroy("pre-warm failed")
            return
        event("prewarmed", env=env.id, keep_alive_s=round(keep_alive_s, 1))
        env.expires_at = time.monotonic() + keep_alive_s
        if self._pools.get(name) is pool:
            pool.idle.append(env)
        else:
            env.destroy("function changed")

    def _retire(self, old: FunctionConfig) -> None:
        """Destroys idle environments of a changed or deleted function; busy
        ones are destroyed when their invocation returns."""
        pending = self._prewarms.pop(old.name, None)
        if pending is not None:
            pending.cancel()
        if old.name not in self.registry.names():
            self.policy.forget(old.name)
        pool = self._pools.pop(old.name, None)
        if pool is None:
            return
        for env in list(pool.idle):
            env.destroy("function changed")
        pool.idle.clear()

    async def _reap_loop(self) -> None:
        while True:
            await asyncio.sleep(max(0.05, min(1.0, self.settings.keep_alive_s / 4)))
            self.reap_idle()
            self.provision()
            if self.usage is not None:
                self.usage.flush()

    def provision(self) -> None:
        """Starts what provisioned concurrency asks for and is missing."""
        if self._closing:
            return
        for name in self.registry.names():
            cfg = self.registry.get(name)
            want = cfg.spec.provisioned_concurrency
            if not want or name in self._provisioning:
                continue
            pool = self._pools.get(name)
            if pool is None or pool.revision != cfg.revision:
                if pool is not None:
                    self._retire(cfg)
                pool = self._pools[name] = _Pool(cfg.revision)
            missing = want - sum(1 for env in pool.all if env.provisioned)
            if missing > 0:
                self._provisioning.add(name)
                asyncio.get_running_loop().create_task(self._provision_task(cfg, pool, missing))

    async def _provision_task(self, cfg: FunctionConfig, pool: _Pool, missing: int) -> None:
        try:
            for _ in range(missing):
                if self._closing or self._pools.get(cfg.name) is not pool:
                    return
                try:
                    self._admit(cfg, pool)
                except TooManyRequests as exc:
                    event("provision_throttled", function=cfg.name, reason=exc.reason.split(":")[0])
                    return
                env = self._new_environment(cfg, pool, provisioned=True)
                try:
                    self.host.before_spawn()
                    await env.start(self._init_timeout(cfg))
                except (InitFailed, SandboxError, OSError) as exc:
                    event("provision_failed", function=cfg.name, error=str(exc).replace(" ", "_")[:200])
                    env.destroy("provisioning failed")
                    return
                if self._pools.get(cfg.name) is pool and env.state is State.IDLE:
                    pool.idle.append(env)
                else:
                    env.destroy("function changed")
        finally:
            self._provisioning.discard(cfg.name)

    def reap_idle(self) -> int:
        now = time.monotonic()
        reaped = 0
        for pool in list(self._pools.values()):
            for env in list(pool.idle):
                if env.expires_at <= now:
                    env.destroy("idle")
                    reaped += 1
        return reaped
