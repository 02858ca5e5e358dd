"""The floor: a unary gRPC echo server on the agent's own stack.

Run as its own process (``python bench/echo_server.py --listen 127.0.0.1:0``),
exactly as the agent runs in its own process, so that comparing a warm Invoke
against this server isolates what the agent adds on top of "grpc.aio server,
one async unary handler, loopback TCP": registry lookup, JSON validation, the
environment round trip and response shaping.

It mirrors ``runtime.api.server.create_server`` where that matters for cost:
``grpc.aio.server`` with the same message-size options, the default asyncio
event loop, and an ``async def`` handler. It differs where that is the point:
a generic handler with identity (de)serialisers, so no protobuf work at all
and the bytes received are the bytes sent back. The benchmark sends it the
serialised InvokeRequest of the no-op function, so both servers see the same
bytes on the wire.

With ``--cpu N`` every thread of the server runs on CPU N, as the agent
runs its own (``--agent-cpu``, default on): the floor of record is the
faster of the two placements, so the agent's placement is not an advantage
the floor lacks.

``EchoProcess`` starts and stops it from the benchmark process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

SERVICE = "bench.Echo"
METHOD = f"/{SERVICE}/Echo"

# Same limits as the agent (runtime/api/server.py): a 6 MB payload plus
# framing must fit. Kept equal so channel setup and flow-control windows match.
MAX_MESSAGE = 16 * 1024 * 1024
SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.so_reuseport", 0),
]


async def _echo(request: bytes, context) -> bytes:
    # An async handler, like every servicer method of the agent: the request
    # goes through the same "hand to the event loop, await, answer" path.
    return request


async def serve(listen: str) -> int:
    import grpc  # imported here so that importing this module for EchoProcess stays cheap

    server = grpc.aio.server(options=SERVER_OPTIONS)
    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(_echo)})
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(listen)
    if port == 0:
        print(json.dumps({"event": "error", "error": f"bind({listen}) failed"}), flush=True)
        return 2
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # The same readiness line the agent prints, read by EchoProcess.
    print(json.dumps({"event": "serving", "listen": listen, "port": port, "pid": os.getpid()}), flush=True)
    await stop.wait()
    await server.stop(grace=1)
    return 0


class EchoProcess:
    """The echo server as a child process of the benchmark."""

    def __init__(self, host: str = "127.0.0.1", cpu: int | None = None):
        self.host = host
        self.cpu = cpu  # every thread of the server on this CPU, as the agent's (--agent-cpu)
        self.port = 0
        self.proc: subprocess.Popen | None = None

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 30) -> "EchoProcess":
        # Port 0: the server picks a free port and reports it, so there is no
        # race between choosing a port here and binding it there.
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--listen", f"{self.host}:0",
             *(("--cpu", str(self.cpu)) if self.cpu is not None else ())],
            # stderr is inherited: a crash or a gRPC warning shows up in the run's output
            # instead of filling a pipe nobody reads.
            stdout=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"echo server did not start (see its stderr above): {line!r}")
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    continue
                line += chunk
        event = json.loads(line)
        if event.get("event") != "serving":
            self.stop()
            raise RuntimeError(f"echo server failed: {event}")
        self.port = int(event["port"])
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        code = self.proc.returncode
        self.proc = None
        return code

    def __enter__(self) -> "EchoProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="gRPC unary echo server (benchmark floor)")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT; port 0 picks a free one")
    parser.add_argument("--cpu", type=int, default=None,
                        help="run every thread of the server on this CPU, as the agent runs its own")
    args = parser.parse_args(argv)
    if args.cpu is not None:
        # Before gRPC starts a thread: they all inherit it, as in the agent.
        os.sched_setaffinity(0, {args.cpu})
    return asyncio.run(serve(args.listen))


if __name__ == "__main__":
    sys.exit(main())
