"""The agent: owns the store, code, logs, sandboxes and invoker of one host.

``Agent.open`` builds every part in dependency order; ``Agent.close`` tears
them down in reverse, destroying every environment (no sandbox outlives the
agent). The gRPC server is attached by ``runtime.cli.agent``; the core never
imports gRPC.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import resource
from pathlib import Path

from runtime.core.codestore import CodeStore
from runtime.core.invoker import Invoker, InvokerSettings
from runtime.core.logs import LogStore
from runtime.core.metrics import Metrics
from runtime.core.registry import FunctionRegistry
from runtime.core.runtimes import Runtime, discover, prepare
from runtime.core.store import Store
from runtime.core.usage import UsageLedger
from runtime.errors import SandboxError
from runtime.sandbox.host import SandboxHost

log = logging.getLogger("runtime.agent")


def default_data_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/runtime-agent")
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(base) / "runtime-agent"


@dataclasses.dataclass(frozen=True)
class AgentSettings:
    data_dir: Path
    invoker: InvokerSettings = InvokerSettings()
    log_cap_bytes: int = 64 * 1024 * 1024
    rootless: bool | None = None
    billing_granularity_ms: int = 1
    # HOST:PORT of the Prometheus endpoint; empty: no metrics are kept.
    metrics_listen: str = ""
    # HOST:PORT of an OTLP/gRPC collector; empty: no tracing (the SDK is not loaded).
    otlp_endpoint: str = ""
    # (interface, subnet, gateway) of the sandbox network for functions with
    # outbound access; None: every environment is loopback-only.
    outbound: tuple[str, str, str] | None = None
    # Function code plus all its layers, unpacked, at most (AWS: 250 MB).
    max_unpacked_mb: int = 250


class Agent:
    def __init__(self, settings: AgentSettings, runtimes: dict[str, Runtime], host: SandboxHost,
                 store: Store, code: CodeStore, logs: LogStore):
        self.settings = settings
        self.runtimes = runtimes
        self.host = host
        self.store = store
        self.code = code
        self.logs = logs
        self.registry = FunctionRegistry(store, code, runtimes)
        self.registry.outbound = host.outbound_available
        self.usage = UsageLedger(Path(settings.data_dir) / "registry.db", settings.billing_granularity_ms)
        self.metrics = None
        self.metrics_port = 0
        if settings.metrics_listen:
            self.metrics = Metrics(gauges=lambda: self.invoker.statistics())
        self.tracer = None
        if settings.otlp_endpoint:
            from runtime.core.tracing import Tracer
            self.tracer = Tracer(settings.otlp_endpoint)
        self.invoker = Invoker(self.registry, code, host, logs, runtimes, settings.invoker, self.usage,
                               self.metrics, self.tracer)
        self.registry.on_change.append(self._forget_deleted)

    def _forget_deleted(self, old) -> None:
        if self.registry.exists(old.name):
            return  # changed, not deleted
        # A later function of the same name starts with no logs and no metrics.
        self.logs.delete(old.name)
        if self.metrics is not None:
            self.metrics.forget(old.name)

    @classmethod
    def open(cls, settings: AgentSettings) -> "Agent":
        data = Path(settings.data_dir)
        data.mkdir(parents=True, exist_ok=True)
        # The data dir holds every tenant's code and logs: only the agent reads it.
        os.chmod(data, 0o700)
        _raise_nofile()
        host = SandboxHost(data / "run", rootless=settings.rootless)
        swept = host.setup()
        if settings.outbound is not None:
            if host.rootless:
                raise SandboxError("outbound network needs root (macvlan interfaces)")
            host.configure_outbound(*settings.outbound)
        if swept:
            log.warning("killed %d environment(s) left by an earlier agent", swept)
        runtimes = prepare(discover(), data / "run")
        compilers = tuple(rt.executable for rt in runtimes.values() if rt.family == "python")
        return cls(settings, runtimes, host, Store(data / "registry.db"),
                   CodeStore(data / "code", max_unpacked=settings.max_unpacked_mb * 1024 * 1024,
                             compilers=compilers), LogStore(data / "logs", settings.log_cap_bytes))

    def start(self) -> None:
        """Starts background work; needs the running event loop."""
        self.invoker.start()
        if self.metrics is not None:
            self.metrics_port = self.metrics.serve(self.settings.metrics_listen)

    async def close(self) -> None:
        await self.invoker.close()
        self.host.teardown()
        self.usage.close()
        self.logs.close()
        if self.tracer is not None:
            self.tracer.close()
        self.store.close()


def _raise_nofile() -> None:
    """Each environment holds a few fds in the agent; allow thousands of them."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
