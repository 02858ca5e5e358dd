"""A real ``runtime-agent serve`` process for tests, and a client for it.

``AgentProcess`` starts the installed console script on a free loopback port
with its own data dir, waits for the health service to answer SERVING, and
on ``stop`` sends SIGTERM and checks the process exits cleanly.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from runtime.v1 import (function_pb2, functions_pb2, functions_pb2_grpc, invoker_pb2, invoker_pb2_grpc,
                        layers_pb2, layers_pb2_grpc, logs_pb2_grpc, usage_pb2_grpc)

BIN = Path(sys.executable).parent
CHUNK = 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_zip(files: dict[str, str | bytes], modes: dict[str, int] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in files.items():
            info = zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0))
            info.external_attr = ((modes or {}).get(name, 0o644) | 0o100000) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, content)
    return buf.getvalue()


class Client:
    def __init__(self, target: str):
        self.target = target
        self.channel = grpc.insecure_channel(target, options=[
            ("grpc.max_receive_message_length", 32 * 1024 * 1024),
            ("grpc.max_send_message_length", 32 * 1024 * 1024)])
        self.functions = functions_pb2_grpc.FunctionsStub(self.channel)
        self.invoker = invoker_pb2_grpc.InvokerStub(self.channel)
        self.logs = logs_pb2_grpc.LogsStub(self.channel)
        self.usage = usage_pb2_grpc.UsageStub(self.channel)
        self.layers = layers_pb2_grpc.LayersStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def create(self, name: str, code: dict[str, str | bytes] | bytes, handler: str = "app.handler",
               runtime: str = "python3.11", **spec) -> function_pb2.FunctionConfiguration:
        data = code if isinstance(code, bytes) else make_zip(code)

        def stream():
            yield functions_pb2.CreateFunctionRequest(spec=function_pb2.FunctionSpec(
                name=name, runtime=runtime, handler=handler, **spec))
            for i in range(0, len(data), CHUNK):
                yield functions_pb2.CreateFunctionRequest(code=function_pb2.CodeChunk(data=data[i:i + CHUNK]))

        return self.functions.CreateFunction(stream(), timeout=120)

    def publish_layer(self, name: str, content: dict[str, str | bytes] | bytes, description: str = "",
                      modes: dict[str, int] | None = None) -> layers_pb2.LayerVersion:
        data = content if isinstance(content, bytes) else make_zip(content, modes)

        def stream():
            yield layers_pb2.PublishLayerVersionRequest(layer=layers_pb2.LayerSpec(name=name, description=description))
            for i in range(0, len(data), CHUNK):
                yield layers_pb2.PublishLayerVersionRequest(code=function_pb2.CodeChunk(data=data[i:i + CHUNK]))

        return self.layers.PublishLayerVersion(stream(), timeout=120)

    def update_code(self, name: str, code: dict[str, str | bytes] | bytes):
        data = code if isinstance(code, bytes) else make_zip(code)

        def stream():
            yield functions_pb2.UpdateFunctionCodeRequest(name=name)
            for i in range(0, len(data), CHUNK):
                yield functions_pb2.UpdateFunctionCodeRequest(code=function_pb2.CodeChunk(data=data[i:i + CHUNK]))

        return self.functions.UpdateFunctionCode(stream(), timeout=120)

    def invoke(self, name: str, payload=None, raw: bytes | None = None, timeout: float = 120,
               **kw) -> invoker_pb2.InvokeResponse:
        body = raw if raw is not None else json.dumps({} if payload is None else payload).encode()
        return self.invoker.Invoke(invoker_pb2.InvokeRequest(function_name=name, payload=body, **kw),
                                   timeout=timeout)

    def invoke_json(self, name: str, payload=None, **kw):
        resp = self.invoke(name, payload, **kw)
        return resp, json.loads(resp.payload)


def error_type(err: grpc.RpcError) -> str:
    for key, value in err.trailing_metadata() or ():
        if key == "x-runtime-error-type":
            return value
    return ""


def assert_dies_and_is_replaced(client: "Client", name: str, event: dict, words: str) -> None:
    """Invokes ``name`` with ``event``, which ends its runtime: the caller
    gets Runtime.ExitError saying ``words``, and the next call a new
    environment."""
    resp, body = client.invoke_json(name, event)
    assert resp.function_error == "Unhandled"
    assert body["errorType"] == "Runtime.ExitError"
    assert words in body["errorMessage"]
    resp, body = client.invoke_json(name)
    assert body == "ok" and resp.start_kind == invoker_pb2.COLD


def refused_by_serve(data_dir: Path, *flags: str) -> str:
    """Runs ``runtime-agent serve`` with ``flags``, which it must refuse as a
    usage error (exit 2) before serving; returns what it wrote to stderr."""
    out = subprocess.run([str(BIN / "runtime-agent"), "serve", "--listen", "127.0.0.1:0", "--data-dir",
                          str(data_dir), *flags], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2, (out.returncode, out.stderr)
    return out.stderr


class AgentProcess:
    def __init__(self, data_dir: Path | None = None, extra_args: tuple[str, ...] = ()):
        self.own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="agent-test-"))
        self.extra_args = extra_args
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.agent.log"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> "AgentProcess":
        self.port = free_port()
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(BIN / "runtime-agent"), "serve", "--listen", self.target, "--data-dir", str(self.data_dir),
             *self.extra_args], stdout=self._log, stderr=subprocess.STDOUT)
        channel = grpc.insecure_channel(self.target)
        stub = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"agent exited with {self.proc.returncode}:\n{self.log()}")
                try:
                    r = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if r.status == health_pb2.HealthCheckResponse.SERVING:
                        return self
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"agent not serving after {timeout}s:\n{self.log()}")
                time.sleep(0.05)
        finally:
            channel.close()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-20000:]
        except OSError:
            return ""

    def serving_info(self) -> dict:
        """The JSON line the agent prints once it serves (ports, auth, TLS)."""
        for line in self.log().splitlines():
            if line.startswith('{"event": "serving"'):
                return json.loads(line)
        raise RuntimeError(f"agent printed no serving line:\n{self.log()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        code = self.proc.returncode
        self.proc = None
        return code

    def cleanup(self) -> None:
        self.stop()
        if self.own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            try:
                os.unlink(self.log_path)
            except FileNotFoundError:
                pass


def serve_for_fixture(proc: AgentProcess):
    """A fixture's body: starts ``proc``, yields it, then stops it and fails
    the fixture if the agent did not exit cleanly (``yield from`` this)."""
    proc.start()
    yield proc
    code = proc.stop()
    log = proc.log()
    proc.cleanup()
    assert code == 0, f"agent exited with {code}:\n{log}"
