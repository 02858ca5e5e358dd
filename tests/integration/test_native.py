"""Functions with native code, through the real agent: the resize example
(C++ through cffi, built by `fnctl package`), crashes inside C (segfault,
abort, stack overflow) contained in their environment, and a 50 MB library
whose pages are shared by every environment that maps it."""

from __future__ import annotations

import concurrent.futures
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2

from framework.procfs import children, mapping_kib
from runtime.cli import package
from runtime.v1 import functions_pb2, invoker_pb2

pytestmark = [pytest.mark.integration, pytest.mark.root]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "resize-native"
FNCTL = str(Path(sys.executable).parent / "fnctl")

CRASH_H = """\
int crash_ok(int x);
int crash_segv(void);
void crash_abort(void);
int crash_stack(long depth);
"""

CRASH_C = """\
#include <stdlib.h>
#include "crash.h"

int crash_ok(int x) { return x + 1; }

int crash_segv(void) {
    volatile int *volatile p = 0;
    return *p;
}

void crash_abort(void) { abort(); }

/* Not a tail call (the frame's byte is added after the call returns) and a
   volatile frame, so no optimiser turns it into a loop: 8 MB of stack
   (the sandbox's RLIMIT_STACK) runs out after ~30,000 calls. */
static int recurse(long depth) {
    volatile char frame[256];
    frame[0] = (char)depth;
    if (depth == 0) return frame[0];
    return recurse(depth - 1) + frame[0];
}

int crash_stack(long depth) { return recurse(depth); }
"""

CRASH_BUILD = """\
from cffi import FFI

ffibuilder = FFI()
ffibuilder.cdef(open("native/crash/crash.h").read())
ffibuilder.set_source("_crash", '#include "crash.h"', libraries=["crash"])
"""

CRASH_APP = """\
import uuid

from _crash import lib

ENVIRONMENT = str(uuid.uuid4())  # tells a fresh environment from a reused one


def handler(event, context):
    crash = event.get("crash")
    if crash == "segv":
        lib.crash_segv()
    elif crash == "abort":
        lib.crash_abort()
    elif crash == "stack":
        lib.crash_stack(1 << 40)
    return {"ok": lib.crash_ok(41), "environment": ENVIRONMENT}
"""

BIG_APP = """\
import time

from _big import lib


def handler(event, context):
    checksum = lib.bigpad_checksum(0, lib.bigpad_size(), 4096)  # one byte of every page
    time.sleep(event.get("sleep", 0))
    return {"size": lib.bigpad_size(), "checksum": checksum}
"""


def _load_bigpad():
    spec = importlib.util.spec_from_file_location("native_bigpad", ROOT / "native" / "bigpad.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fnctl(agent, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([FNCTL, "--endpoint", agent.target, *args], capture_output=True, text=True, timeout=120)


def sandbox_pids(agent) -> list[int]:
    """Pid 1 of each of the agent's sandboxes: the children of its nsjail children."""
    return [kid for nsjail in children(agent.proc.pid) for kid in children(nsjail)]


@pytest.fixture(scope="module")
def crash_src(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("crash-src")
    (src / "native" / "crash").mkdir(parents=True)
    (src / "native" / "crash" / "crash.h").write_text(CRASH_H)
    (src / "native" / "crash" / "crash.c").write_text(CRASH_C)
    (src / "crash_build.py").write_text(CRASH_BUILD)
    (src / "app.py").write_text(CRASH_APP)
    return src


@pytest.fixture(scope="module")
def crasher(agent, crash_src, tmp_path_factory) -> str:
    """The crash function, packaged by the fnctl CLI and deployed by it."""
    out = tmp_path_factory.mktemp("crash-zip") / "crash.zip"
    r = fnctl(agent, "--json", "package", str(crash_src), "-o", str(out))
    assert r.returncode == 0, r.stderr
    built = json.loads(r.stdout)
    assert built["libraries"] == ["lib/libcrash.so"]
    assert built["extensions"][0].startswith("_crash.cpython-") and built["extensions"][1].startswith("_cffi_backend")
    r = fnctl(agent, "deploy", "native-crash", "--runtime", "python3.11", "--handler", "app.handler",
              "--code", str(out), "--timeout", "10")
    assert r.returncode == 0, r.stderr
    return "native-crash"


def test_fnctl_package_output_deploys_and_runs(agent, crasher):
    r = fnctl(agent, "--json", "invoke", crasher)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["payload"]["ok"] == 42 and out["function_error"] == ""


def test_resize_example(client, tmp_path):
    meta = json.loads((EXAMPLE / "function.json").read_text())
    built = package.package(EXAMPLE, tmp_path / "resize.zip")
    assert set(built.libraries) == {"lib/libimgresize.so"}
    client.create("native-resize", built.zip_path.read_bytes(), runtime=meta["runtime"], handler=meta["handler"],
                  memory_mb=meta["memory"], timeout_seconds=meta["timeout"])
    for kind in (invoker_pb2.COLD, invoker_pb2.WARM):
        resp, body = client.invoke_json("native-resize", meta["event"])
        assert resp.function_error == "", body
        assert resp.start_kind == kind
        assert body == meta["expect"]


# abort() cannot end the sandbox with SIGABRT: the bootstrap is pid 1 of its pid
# namespace, and pid 1 ignores signals it sends itself without a handler. glibc
# then falls back to an illegal instruction (hlt), a fault that is delivered:
# SIGSEGV. A stack overflow is a fault on the guard page: SIGSEGV too.
@pytest.mark.parametrize("crash", ["segv", "abort", "stack"])
def test_crash_in_native_code_is_contained(agent, client, crasher, crash):
    _, before = client.invoke_json(crasher)
    resp, body = client.invoke_json(crasher, {"crash": crash})
    assert resp.function_error == "Unhandled"
    assert body["errorType"] == "Runtime.ExitError"
    assert body["errorMessage"].endswith("Runtime exited with error: signal: segmentation fault"), body

    assert agent.alive()
    health = client.health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    resp, after = client.invoke_json(crasher)
    assert resp.function_error == "" and after["ok"] == 42
    assert resp.start_kind == invoker_pb2.COLD, "the crashed environment is not reused"
    assert after["environment"] != before["environment"]


def test_large_library_pages_are_shared_between_environments(agent, client, tmp_path):
    """Two warm environments map the same 52 MB library file: each process's
    proportional share (Pss) of the mapping is half its resident size (Rss),
    because the pages are the page cache's, not copies."""
    bigpad = _load_bigpad()
    src = tmp_path / "src"
    (src / "lib").mkdir(parents=True)
    bigpad.build(src / "lib", name="big")
    (src / "big_build.py").write_text(bigpad.CFFI_BUILD)
    (src / "app.py").write_text(BIG_APP)
    built = package.package(src, tmp_path / "big.zip")
    client.create("native-big", built.zip_path.read_bytes(), memory_mb=256, timeout_seconds=30)
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda _: client.invoke_json("native-big", {"sleep": 1.0}), range(2)))
        maps = [m for m in (mapping_kib(pid, "/lib/libbig.so") for pid in sandbox_pids(agent)) if m["Rss"]]
    finally:  # its environments hold 2 x 256 MB of the agent's memory budget
        client.functions.DeleteFunction(functions_pb2.DeleteFunctionRequest(name="native-big"), timeout=30)
    expected = 0xCBF29CE484222325
    for b in bigpad.padding(bigpad.DEFAULT_SIZE, 1)[::4096]:
        expected = ((expected ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    for resp, body in results:
        assert resp.function_error == "", body
        assert body == {"size": bigpad.DEFAULT_SIZE, "checksum": expected}

    assert len(maps) == 2, f"expected two environments mapping libbig.so, found {maps}"
    for m in maps:
        assert m["Rss"] >= bigpad.DEFAULT_SIZE // 1024, m   # every page was touched
        assert 0.45 <= m["Pss"] / m["Rss"] <= 0.55, m       # ... and each is shared by the two
