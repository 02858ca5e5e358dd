"""The environments of every function on this host: found, started, kept, reaped.

One invocation at a time per environment, as AWS Lambda does. A function's
idle environments are reused most-recently-used first (warm); when none is
idle a new one is started (cold), so concurrent requests scale out. Before
starting one, ``_admit`` applies the limits at once, with no queue: the
function's reserved concurrency, then the host's environment count and
memory budget, for which idle environments of any function are evicted
least recently used first. An environment that died is never reused: the
next request starts a new one.

Ahead of need: stem cells (per runtime, runtime loaded, no function yet)
are specialised on first use and replaced in the background; provisioned
concurrency keeps a function's environments started at all times; the
keep-alive policy decides how long an idle environment stays, and for the
hybrid policy when to start one again just before the next likely call.
Idle environments past their time are destroyed (scale to zero).

Everything here runs on the agent's event-loop thread.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import math
import os
import time
from typing import TYPE_CHECKING, Mapping

from runtime.agentlog import event
from runtime.core.codestore import CodeStore
from runtime.core.function import NETWORK_NONE, NETWORK_OUTBOUND, FunctionConfig
from runtime.core.keepalive import FixedKeepAlive, HybridHistogramKeepAlive
from runtime.core.logs import LogStore
from runtime.core.registry import FunctionRegistry
from runtime.core.runtimes import Runtime
from runtime.errors import AgentError, SandboxError, TooManyRequests
from runtime.jail.cgroups import cpu_ms_for_memory
from runtime.sandbox.codemount import Injector, open_code_tree
from runtime.sandbox.codemount import supported as code_mounts_supported
from runtime.sandbox.environment import STEM_ENV, Environment, InitFailed, State
from runtime.sandbox.host import SandboxHost

if TYPE_CHECKING:
    from runtime.core.invoker import InvokerSettings

log = logging.getLogger("runtime.pools")
# Stem cells start at the smallest size and the default /tmp; specialising
# sets the function's memory. Functions with a larger /tmp start cold.
STEM_MEMORY_MB = 128
STEM_TMP_MB = 512
REPLENISH_DELAY_S = 0.1
REFILL_GRACE_S = 0.002
# A runtime's cells follow demand: beyond --stem-cells, as many more as are
# taken in STEM_LEAD_S at the rate of the last STEM_WINDOW_S (about how long a
# cell takes to start under load), up to STEM_MAX_FACTOR × --stem-cells; the
# extra ones go after STEM_SURPLUS_IDLE_S without a take.
STEM_WINDOW_S = 1.0
STEM_LEAD_S = 0.05
STEM_MAX_FACTOR = 4
STEM_SURPLUS_IDLE_S = 10.0
# Bootstraps that can wait, loaded, for a function (frame P): Python's,
# Node's and the Runtime API relay.
STEM_FAMILIES = ("python", "node", "provided")


def _stem_failed(runtime: str, exc: Exception) -> None:
    event("stem_failed", runtime=runtime, error=str(exc).replace(" ", "_"))


def stem_cells_supported(host: SandboxHost) -> bool:
    """Stem cells need detached mounts (root, Linux 5.12+) and cgroups."""
    return not host.rootless and host.cgroup_version != 0 and code_mounts_supported()


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


class _Pool:
    """Environments of one function revision. Owned by the loop thread."""

    def __init__(self, revision: int):
        self.revision = revision
        self.idle: list[Environment] = []
        self.all: set[Environment] = set()


class Pools:
    def __init__(self, registry: FunctionRegistry, code: CodeStore, host: SandboxHost, logs: LogStore,
                 runtimes: Mapping[str, Runtime], settings: "InvokerSettings"):
        self.registry = registry
        self.code = code
        self.host = host
        self.logs = logs  # function output goes to its log (_sink)
        self.runtimes = runtimes
        self.settings = settings
        self.budget_mb = settings.memory_budget_mb or default_memory_budget_mb()
        self._pools: dict[str, _Pool] = {}
        self._count = 0
        self._memory_mb = 0  # of every live environment, starting ones included
        self._seq = itertools.count(1)
        fixed = FixedKeepAlive(settings.keep_alive_s)
        self.policy = (HybridHistogramKeepAlive(bin_s=settings.keep_alive_bin_s, fallback=fixed)
                       if settings.keep_alive_policy == "hybrid" else fixed)
        self._prewarms: dict[str, asyncio.TimerHandle] = {}
        self._stems: dict[str, list[Environment]] = {}
        self._stems_starting: dict[str, set[Environment]] = {}
        self._stem_takes: dict[str, collections.deque[float]] = {}   # monotonic times of recent takes
        self._provisioning: set[str] = set()
        self._closing = False
        self._stem_target = settings.stem_cells if settings.stem_cells and stem_cells_supported(host) else 0
        # Attaches code inside specialised stem cells (a process of its own).
        self._injector = Injector() if self._stem_target else None
        registry.on_change.append(self._retire)

    def start(self) -> None:
        self.registry.on_change.append(lambda old: asyncio.get_running_loop().call_soon(self.provision))
        self.provision()
        for name, rt in self.runtimes.items():
            if name == rt.name and rt.family in STEM_FAMILIES:
                self._replenish_soon(name)

    async def close(self) -> None:
        """Destroys every environment, stem cells first."""
        self._closing = True
        for cells in (*self._stems.values(), *self._stems_starting.values()):
            for env in list(cells):
                env.destroy("agent shutdown")
        for pending in self._prewarms.values():
            pending.cancel()
        for pool in list(self._pools.values()):
            for env in list(pool.all):
                env.destroy("agent shutdown")
        # Give the reapers a moment to collect exit statuses and cgroups.
        await asyncio.sleep(0.05)
        if self._injector is not None:
            self._injector.close()

    def statistics(self) -> dict:
        """Environments by function and state, calls under way, memory (read at scrape time)."""
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
        return {"environments": environments, "concurrent": concurrent,
                "budget_bytes": self.budget_mb * 1024 * 1024, "used_bytes": self._memory_mb * 1024 * 1024}

    def arrived(self, name: str) -> None:
        """A call to ``name`` came in: the keep-alive policy learns from it, and
        a pre-warm still pending is cancelled (the call starts its own)."""
        self.policy.record(name, time.monotonic())
        pending = self._prewarms.pop(name, None)
        if pending is not None:
            pending.cancel()

    # -- environments ----------------------------------------------------------
    async def acquire(self, cfg: FunctionConfig):
        """An environment for one call of ``cfg``, busy from now on, as
        (environment, "warm" | "prewarmed" | "cold", None or the InitFailed
        of its init). Raises TooManyRequests beyond the limits."""
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
        self._stem_takes.setdefault(rt.name, collections.deque()).append(time.monotonic())
        delta = cfg.spec.memory_mb - stem.memory_mb
        if delta > 0 and self._memory_mb + delta > self.budget_mb:
            self._evict_idle(delta)
            if self._memory_mb + delta > self.budget_mb:
                cells.append(stem)
                return None
        # Replace the cell when this call has been answered (release), or
        # REPLENISH_DELAY_S from now if it runs longer: spawning blocks the
        # loop for a few ms, which must not land on this very invocation.
        stem.refill_runtime = rt.name
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

    def _stem_goal(self, runtime: str) -> int:
        """How many cells ``runtime`` should have: ``stem_cells``, plus what
        recent demand takes while one starts (see STEM_LEAD_S)."""
        takes = self._stem_takes.get(runtime)
        if not takes:
            return self._stem_target
        horizon = time.monotonic() - STEM_WINDOW_S
        while takes and takes[0] < horizon:
            takes.popleft()
        extra = math.ceil(len(takes) / STEM_WINDOW_S * STEM_LEAD_S)
        return min(self._stem_target + extra, self._stem_target * STEM_MAX_FACTOR)

    def _replenish_soon(self, runtime: str) -> None:
        """Starts stem cells of ``runtime``, all at once, until as many as
        ``_stem_goal`` are ready or starting."""
        if not self._stem_target or self._closing:
            return
        cells = self._stems.setdefault(runtime, [])
        starting = self._stems_starting.setdefault(runtime, set())
        rt = self.runtimes[runtime]
        goal = self._stem_goal(runtime)
        while len(cells) + len(starting) < goal:
            if (self._count >= self.settings.max_environments
                    or self._memory_mb + STEM_MEMORY_MB > self.budget_mb):
                return  # stem cells never push out real work
            env_id = f"stem-{runtime}-{os.getpid()}-{next(self._seq)}"
            try:  # called from death and release callbacks: a failure is logged, not raised
                uid = self.host.allocate_uid()
            except SandboxError as exc:
                return _stem_failed(runtime, exc)
            try:
                spec = self.host.stem_spec(env_id, uid, rt, STEM_MEMORY_MB, STEM_TMP_MB,
                                           {**self._base_environ(), STEM_ENV: "1"})
            except (SandboxError, OSError) as exc:
                self.host.release_uid(uid)
                return _stem_failed(runtime, exc)
            env = self._track(Environment(env_id, spec, self.host.env_cgroup(env_id), self._sink,
                                          self._on_dead, self.host.spawner), None, "", STEM_MEMORY_MB)
            env.runtime_name = runtime
            starting.add(env)
            asyncio.get_running_loop().create_task(self._start_stem(env, starting, cells))

    async def _start_stem(self, env: Environment, starting: set[Environment], cells: list[Environment]) -> None:
        try:
            self.host.before_spawn()
            await env.start(self.settings.init_timeout_s)
        except (InitFailed, SandboxError, OSError) as exc:
            # Not retried until a cell is next taken or dies: a runtime that
            # cannot start is not restarted in a loop.
            _stem_failed(env.runtime_name, exc)
            env.destroy("stem cell failed to start")
            return
        finally:
            starting.discard(env)
        if self._closing:
            env.destroy("agent shutdown")
        else:
            cells.append(env)

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

    def release(self, cfg: FunctionConfig, env: Environment) -> None:
        """The call on ``env`` ended: keep it for the next one, as the keep-alive
        policy says, or destroy it (dead, function changed, fresh per call)."""
        pool = self._pools.get(cfg.name)
        if env.refill_runtime:
            # Its stem cell's replacement starts now that this call is answered
            # (its response goes out first), not REPLENISH_DELAY_S after the take.
            asyncio.get_running_loop().call_later(REFILL_GRACE_S, self._replenish_soon, env.refill_runtime)
            env.refill_runtime = ""
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
        for runtime, cells in self._stems.items():
            takes = self._stem_takes.get(runtime)
            if len(cells) > self._stem_target and not (takes and takes[-1] > now - STEM_SURPLUS_IDLE_S):
                for env in cells[:len(cells) - self._stem_target]:   # the oldest first
                    env.destroy("stem cell no longer needed")
                    reaped += 1
        return reaped
