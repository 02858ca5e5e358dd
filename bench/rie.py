"""AWS's own peer: the Lambda Runtime Interface Emulator (RIE), the local
stand-in for Lambda's invoke path that AWS ships for testing images.

The RIE (Go, from the Go module proxy, built here with ``go install``) runs
one custom runtime, the C example in examples/custom-runtime-c, with no
sandbox, and takes Invokes over HTTP on loopback. Its Go path is kept in
the user's cache directory, never in the repository. The agent runs the same
bootstrap as a ``provided`` function inside nsjail. Warm Invokes of both,
and of a Python no-op on the agent, are timed in alternating blocks in one
run, one call at a time on one kept-alive connection each.
"""

from __future__ import annotations

import dataclasses
import functools
import http.client
import os
import shutil
import subprocess
import time
from pathlib import Path

import loadgen
import workloads
from host import progress
from loadgen import Summary
from report import SUMMARY_HEADER, Section, Table, summary_row
from runtimes import _c_example

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


def section_rie(ctx) -> Section:
    import io
    import zipfile

    cfg = ctx.cfg
    if shutil.which("go") is None:
        return Section("rie", "AWS Lambda RIE peer: skipped", ["No `go` on this host: the RIE cannot be built."])
    exe = build_rie()
    code = _c_example()
    tmp = workloads.ROOT / "bench" / "out" / "rie-task"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with zipfile.ZipFile(io.BytesIO(code)) as zf:
        (tmp / "bootstrap").write_bytes(zf.read("bootstrap"))
    os.chmod(tmp / "bootstrap", 0o755)
    port = free_port()
    rie = subprocess.Popen([str(exe), "--runtime-interface-emulator-address", f"127.0.0.1:{port}",
                            str(tmp / "bootstrap")], cwd=tmp, env={**os.environ, "_HANDLER": "stats"},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        conn = None
        deadline = time.monotonic() + 10
        while conn is None:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.connect()
            except OSError:
                conn = None
                if time.monotonic() > deadline:
                    raise RuntimeError("the RIE did not start listening")
                time.sleep(0.05)

        def rie_call():
            conn.request("POST", "/2015-03-31/functions/function/invocations", body=b"{}")
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"RIE answered {resp.status}: {body[:200]!r}")
            return body

        agent = ctx.deploy("rie-noop")
        agent.client.create("rie-provided", code, handler="stats", runtime="provided")
        calls = {
            "rie": rie_call,
            "agent provided": functools.partial(agent.invoke_raw, workloads.invoke_request("rie-provided")),
            "agent python": functools.partial(agent.invoke_raw, workloads.invoke_request("rie-noop")),
        }
        progress(f"rie: warm latency, {cfg.calls} calls each, alternating blocks")
        got = loadgen.measure_latency_interleaved(calls, cfg.calls, cfg.block, cfg.warmup_calls)
    finally:
        rie.terminate()
        rie.wait(10)
    summ = {k: Summary.of(v) for k, v in got.items()}
    ratio = summ["agent provided"].p50_us / summ["rie"].p50_us
    rows = [summary_row(k, s) for k, s in summ.items()]
    notes = [
        f"RIE {RIE_VERSION} (`go install {RIE_MODULE}`), running examples/custom-runtime-c's bootstrap on the host "
        "with no isolation; Invokes by HTTP/1.1 POST on one kept-alive connection (http.client). The agent: the "
        "same bootstrap as a `provided` function (nsjail sandbox, Runtime API relay), and a Python no-op, by "
        f"gRPC on one channel. {cfg.calls} calls each after {cfg.warmup_calls} untimed, alternating blocks of "
        f"{cfg.block}.",
        "The RIE's path is HTTP → Go server → its Runtime API → the bootstrap; the agent's is gRPC → agent → "
        "control socket → relay → the bootstrap, plus a sandbox.",
    ]
    return Section("rie", "AWS Lambda Runtime Interface Emulator (peer), warm Invoke", notes,
                   [Table(SUMMARY_HEADER, rows, f"Warm Invoke, client-observed. The agent's provided p50 is "
                                                f"{ratio:.2f}× the RIE's.")],
                   [], {k: dataclasses.asdict(s) for k, s in summ.items()})
