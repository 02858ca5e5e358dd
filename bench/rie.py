"""AWS's own peer: the Lambda Runtime Interface Emulator (RIE), the local
stand-in for Lambda's invoke path that AWS ships for testing images.

The RIE (Go, from the Go module proxy, built here with ``go install``) runs,
with no sandbox, taking Invokes over HTTP on loopback:

  provided  the C example in examples/custom-runtime-c, against the agent
            running the same bootstrap as a ``provided`` function;
  python    the no-op Python handler under awslambdaric (AWS's Python
            runtime interface client, from PyPI: the conformance build in
            tests/conformance), against the agent's python no-op.

Warm Invokes of all four are timed in alternating blocks in one run, one
call at a time on one kept-alive connection each. Cold: a fresh RIE process
per sample (start, first Invoke answered: the emulator, the interpreter,
awslambdaric and the handler), taking turns with a cold Invoke of the
agent's no-op. The Go path and the task directories are kept in the
user's cache directory, never in the repository.
"""

from __future__ import annotations

import dataclasses
import functools
import http.client
import importlib.util
import io
import os
import shutil
import subprocess
import time
import zipfile
from pathlib import Path

import loadgen
import workloads
from host import progress
from loadgen import Summary
from report import SUMMARY_HEADER, Section, Table, summary_row
from runtimes import _c_example
from workloads import ColdSample

from framework.agent import free_port

RIE_MODULE = "github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie"
RIE_VERSION = "v0.0.0-20261030222936-bef5c4ba774d"
# Outside the repository: the module cache holds the emulator's own sources.
GOPATH = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "runtime-agent-bench" / "gopath"


def build_rie() -> Path:
    exe = GOPATH / "bin" / "aws-lambda-rie"
    if not exe.exists():
        progress(f"rie: go install {RIE_MODULE}@{RIE_VERSION}")
        env = {**os.environ, "GOPATH": str(GOPATH), "GOFLAGS": "-mod=mod"}
        subprocess.run(["go", "install", f"{RIE_MODULE}@{RIE_VERSION}"], check=True, env=env,
                       capture_output=True, timeout=900)
    return exe


INVOKE_PATH = "/2015-03-31/functions/function/invocations"
# Task directories beside the Go path, outside the repository (awslambdaric
# is third-party code, which the style tests would otherwise lint).
TASKS = GOPATH.parent
COLD_SAMPLES_CAP = 40


def _ric_python_task() -> tuple[Path | None, str]:
    """A task directory with awslambdaric (tests/conformance's build of it)
    and the no-op handler, or (None, why not)."""
    spec = importlib.util.spec_from_file_location("ric_build", workloads.ROOT / "tests" / "conformance" / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    try:
        package = build.build("python")
    except (build.Unavailable, build.BuildError) as exc:
        return None, str(exc)
    task = TASKS / "rie-task-python"
    shutil.rmtree(task, ignore_errors=True)
    with zipfile.ZipFile(package) as zf:
        zf.extractall(task)
    (task / "bench_noop.py").write_text(workloads.NOOP_SOURCE)
    os.chmod(task / "bootstrap", 0o755)
    return task, ""


def _c_task() -> Path:
    task = TASKS / "rie-task-c"
    shutil.rmtree(task, ignore_errors=True)
    task.mkdir(parents=True)
    with zipfile.ZipFile(io.BytesIO(_c_example())) as zf:
        (task / "bootstrap").write_bytes(zf.read("bootstrap"))
    os.chmod(task / "bootstrap", 0o755)
    return task


class Rie:
    """One RIE process serving one bootstrap, and a kept-alive connection to it."""

    def __init__(self, exe: Path, task: Path, handler: str):
        self.port = free_port()
        # Each emulator serves its Runtime API on a port of its own (9001 by default), so two can run at once.
        self.proc = subprocess.Popen([str(exe), "--runtime-interface-emulator-address", f"127.0.0.1:{self.port}",
                                      "--runtime-api-address", f"127.0.0.1:{free_port()}", str(task / "bootstrap")], cwd=task, env={**os.environ, "_HANDLER": handler},
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.conn = None
        deadline = time.monotonic() + 10
        while self.conn is None:
            try:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                self.conn.connect()
            except OSError:
                self.conn = None
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.close()
                    raise RuntimeError("the RIE did not start listening") from None
                time.sleep(0.001)

    def call(self) -> bytes:
        self.conn.request("POST", INVOKE_PATH, body=b"{}")
        resp = self.conn.getresponse()
        body = resp.read()
        if resp.status != 200 or b"errorType" in body:
            raise RuntimeError(f"RIE answered {resp.status}: {body[:200]!r}")
        return body

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.proc.terminate()
        self.proc.wait(10)


def _rie_cold(exe: Path, task: Path, handler: str) -> ColdSample:
    """A fresh RIE: from starting it to the first Invoke's answer."""
    t0 = time.perf_counter_ns()
    rie = Rie(exe, task, handler)
    try:
        rie.call()
        return ColdSample(time.perf_counter_ns() - t0, 0, 0, 0, 0, 0, "COLD")
    finally:
        rie.close()


def section_rie(ctx) -> Section:
    cfg = ctx.cfg
    if shutil.which("go") is None:
        return Section("rie", "AWS Lambda RIE peer: skipped", ["No `go` on this host: the RIE cannot be built."])
    exe = build_rie()
    code = _c_example()
    py_task, py_missing = _ric_python_task()
    ries = {"rie provided": Rie(exe, _c_task(), "stats")}
    try:
        if py_task is not None:
            ries["rie python"] = Rie(exe, py_task, "bench_noop.handler")
        agent = ctx.deploy("rie-noop")
        agent.client.create("rie-provided", code, handler="stats", runtime="provided")
        calls = {name: rie.call for name, rie in ries.items()}
        calls["agent provided"] = functools.partial(agent.invoke_raw, workloads.invoke_request("rie-provided"))
        calls["agent python"] = functools.partial(agent.invoke_raw, workloads.invoke_request("rie-noop"))
        progress(f"rie: warm latency, {cfg.calls} calls each, alternating blocks")
        got = loadgen.measure_latency_interleaved(calls, cfg.calls, cfg.block, cfg.warmup_calls)
    finally:
        for rie in ries.values():
            rie.close()
    cold = {}
    n_cold = min(cfg.cold_samples, COLD_SAMPLES_CAP)
    if py_task is not None:
        progress(f"rie: {n_cold} cold starts each, RIE + awslambdaric and the agent, taking turns")
        cold = workloads.interleave({
            "rie python": functools.partial(_rie_cold, exe, py_task, "bench_noop.handler"),
            "agent python": workloads.cold_samplers(agent, "rie-noop", cfg.cold_settle_s)["cold"]}, n_cold, 3)
    return _section(cfg, got, cold, py_missing)


def _section(cfg, got: dict, cold: dict, py_missing: str) -> Section:
    summ = {k: Summary.of(v) for k, v in got.items()}
    ratio = summ["agent provided"].p50_us / summ["rie provided"].p50_us
    caption = f"Warm Invoke, client-observed. The agent's provided p50 is {ratio:.2f}× the RIE's"
    if "rie python" in summ:
        caption += f"; its python p50 {summ['agent python'].p50_us / summ['rie python'].p50_us:.2f}× the RIE's"
    tables = [Table(SUMMARY_HEADER, [summary_row(k, s) for k, s in summ.items()], caption + ".")]
    data = {"warm": {k: dataclasses.asdict(s) for k, s in summ.items()}}
    if cold:
        cs = {k: Summary.of([x.client_ns for x in v]) for k, v in cold.items()}
        kinds = {x.kind for x in cold["agent python"]}
        tables.append(Table(SUMMARY_HEADER, [summary_row(k, s) for k, s in cs.items()],
                            f"Cold start of the Python no-op, client-observed (agent start kinds: "
                            f"{', '.join(sorted(kinds))}). The agent's p50 is "
                            f"{cs['agent python'].p50_us / cs['rie python'].p50_us:.2f}× the RIE's."))
        data["cold"] = {k: dataclasses.asdict(s) for k, s in cs.items()}
    notes = [
        f"RIE {RIE_VERSION} (`go install {RIE_MODULE}`) on the host with no isolation; Invokes by HTTP/1.1 POST "
        "on one kept-alive connection (http.client). Under the RIE: examples/custom-runtime-c's bootstrap "
        "('rie provided') and the Python no-op under awslambdaric ('rie python'; tests/conformance builds it "
        "from PyPI, `python3 -m awslambdaric bench_noop.handler`). The agent: the same bootstrap as a `provided` "
        "function (nsjail sandbox, Runtime API relay) and the same no-op as a python3.11 function, by gRPC on one "
        f"channel. Warm: {cfg.calls} calls each after {cfg.warmup_calls} untimed, alternating blocks of "
        f"{cfg.block}.",
        "The RIE's path is HTTP → Go server → its Runtime API → the runtime; the agent's is gRPC → agent → "
        "control socket → the bootstrap (through the relay for provided), plus a sandbox.",
    ]
    if cold:
        notes.append(
            f"Cold: {len(cold['rie python'])} samples each after 3 untimed, taking turns. RIE: a new emulator "
            "process per sample, timed from its start until the first Invoke is answered (the emulator starts "
            "the runtime on that Invoke). Agent: the configuration is changed (retiring the environment), "
            f"{cfg.cold_settle_s * 1000:.0f} ms pass, then one Invoke starts a new sandbox (no stem cells).")
    if py_missing:
        notes.append(f"No awslambdaric peer: {py_missing}.")
    return Section("rie", "AWS Lambda Runtime Interface Emulator (peer)", notes, tables, [], data)
