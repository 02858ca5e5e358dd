"""Native code in functions: what a cffi call costs inside a sandbox, and what
a 50 MB shared library costs a cold start and each additional environment.

native-calls   ns per call, looped N times inside a warm handler (one core,
               1,769 MB): an empty loop iteration, a pure-Python function call,
               cffi calls into libimgresize (no arguments; a 64-byte buffer) and
               the typed facade's call (argument checks + the same C call).
native-memory  a function whose zip carries native/bigpad.py's 52 MB libbig.so
               and a cffi extension linked with it, imported lazily in the handler:
               - cold invokes that load the library and read one byte of every
                 page, next to cold invokes of the same function that do not;
               - N warm environments (N concurrent invokes): Rss and Pss of the
                 library's mappings in each sandbox (/proc/<pid>/smaps), and the
                 PSS per additional environment, Σ(N) − Σ(1) over N − 1. Page-cache
                 pages of one file are shared, so that should be near zero;
               - when FunctionSpec has ``preload_libraries`` (the runtime dlopens
                 them during init): a provisioned environment's first invoke, with
                 and without preloading libbig.so. Skipped otherwise.

``section_native(ctx)`` returns both sections for bench/run.py; sample counts
follow its Config (cold samples / 10, idle_envs capped at 6, calls × 100).
Alone: ``.venv/bin/python bench/native.py [--quick]`` prints the tables.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import importlib.util
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import workloads  # noqa: E402  (first: puts tests/ on sys.path for the agent harness)
from host import progress  # noqa: E402
from report import Section, Table, TargetCheck, ms  # noqa: E402
from framework.procfs import mapping_kib  # noqa: E402
from runtime.cli import package  # noqa: E402
from runtime.v1 import function_pb2  # noqa: E402

ROOT = BENCH.parent
LIB_PATH = "/var/task/lib/libbig.so"
PSS_GOAL_MIB = 2.0
ONE_CORE_MB = 1769
HAS_PRELOAD = "preload_libraries" in function_pb2.FunctionSpec.DESCRIPTOR.fields_by_name

CALLS_APP = """\
import time

import imgresize
from imgresize._ffi import ffi, lib

BUF = bytes(64)


def python_function():
    return 10000


def handler(event, context):
    n = event["n"]
    loop = range(n)
    t0 = time.perf_counter_ns()
    for _ in loop:
        pass
    t1 = time.perf_counter_ns()
    for _ in loop:
        python_function()
    t2 = time.perf_counter_ns()
    version = lib.ir_version
    for _ in loop:
        version()
    t3 = time.perf_counter_ns()
    checksum, from_buffer = lib.ir_checksum, ffi.from_buffer
    for _ in loop:
        checksum(from_buffer(BUF), 64, 1, 64, 1)
    t4 = time.perf_counter_ns()
    for _ in loop:
        imgresize.checksum(BUF, 64, 1, 1)
    t5 = time.perf_counter_ns()
    return {"loop": (t1 - t0) / n, "python": (t2 - t1) / n, "cffi": (t3 - t2) / n, "cffi_buffer": (t4 - t3) / n,
            "facade": (t5 - t4) / n}
"""

BIG_APP = """\
import time


def handler(event, context):
    out = {}
    if event.get("load", True):
        from _big import lib  # lazy: the library is loaded by the first invoke that needs it

        out["checksum"] = lib.bigpad_checksum(0, lib.bigpad_size(), 4096)  # one byte of every page
    time.sleep(event.get("sleep", 0))
    return out
"""

CALL_ROWS = [("loop", "empty loop iteration"), ("python", "pure-Python function call"),
             ("cffi", "cffi call, no arguments (lib.ir_version)"),
             ("cffi_buffer", "cffi call with a 64-byte buffer (ffi.from_buffer + lib.ir_checksum)"),
             ("facade", "facade call (imgresize.checksum: argument checks + the above)")]


@dataclasses.dataclass(frozen=True)
class NativeConfig:
    calls: int = 200_000     # loop iterations per measured invoke
    call_rounds: int = 5     # warm invokes of the loop; the median is reported
    cold_samples: int = 12   # of each cold row
    envs: int = 6            # warm environments for the memory figure
    preload_samples: int = 5

    @classmethod
    def of(cls, cfg) -> "NativeConfig":
        return cls(calls=cfg.calls * 100, cold_samples=max(3, cfg.cold_samples // 10),
                   envs=max(2, min(cfg.idle_envs, 6)), preload_samples=max(3, cfg.prewarm_samples // 20))


# -- building the functions ----------------------------------------------------------
def _bigpad():
    spec = importlib.util.spec_from_file_location("native_bigpad", ROOT / "native" / "bigpad.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_calls_zip(work: Path) -> bytes:
    """The call-overhead function: the imgresize facade and library, as examples/resize-native has them."""
    src = work / "calls"
    (src / "native").mkdir(parents=True)
    (src / "imgresize").symlink_to(ROOT / "native" / "python" / "imgresize")
    (src / "native" / "imgresize").symlink_to(ROOT / "native" / "imgresize")
    (src / "app.py").write_text(CALLS_APP)
    return package.package(src, work / "calls.zip").zip_path.read_bytes()


def build_big_zip(work: Path) -> tuple[bytes, int]:
    """The 52 MB-library function; returns the zip and the library's size in bytes."""
    src = work / "big"
    (src / "lib").mkdir(parents=True)
    bigpad_mod = _bigpad()
    lib = bigpad_mod.build(src / "lib", name="big")
    (src / "big_build.py").write_text(bigpad_mod.CFFI_BUILD)
    (src / "app.py").write_text(BIG_APP)
    return package.package(src, work / "big.zip").zip_path.read_bytes(), lib.stat().st_size


# -- /proc -----------------------------------------------------------------------------
def library_kib(pid: int, suffix: str = "/lib/libbig.so") -> dict[str, int]:
    """Rss, Pss, Private_* (KiB) summed over pid's mappings of the file ending in suffix."""
    return mapping_kib(pid, suffix, ("Rss", "Pss", "Private_Clean", "Private_Dirty"))


def process_pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def bootstraps(agent: workloads.AgentUnderTest) -> list[int]:
    return [pid for _, kids in agent.sandboxes() for pid in kids[:1]]


def mib(kib: float) -> str:
    return f"{kib / 1024:.2f}"


# -- measurements ----------------------------------------------------------------------
def measure_calls(agent: workloads.AgentUnderTest, ncfg: NativeConfig) -> dict[str, float]:
    agent.client.invoke_json("nb-calls", {"n": 1000})  # cold start and warm-up
    rounds = []
    for i in range(ncfg.call_rounds):
        progress(f"native: call overhead, round {i + 1}/{ncfg.call_rounds}, {ncfg.calls:,} calls of each kind")
        resp, body = agent.client.invoke_json("nb-calls", {"n": ncfg.calls}, timeout=300)
        if resp.function_error:
            raise RuntimeError(f"nb-calls failed: {body}")
        rounds.append(body)
    return {key: statistics.median(r[key] for r in rounds) for key, _ in CALL_ROWS}


def measure_cold(agent: workloads.AgentUnderTest, name: str, event: dict, n: int) -> list[workloads.ColdSample]:
    request = _request(name, event)
    samples = []
    for i in range(n):
        workloads.force_cold(agent.client, name, i)
        time.sleep(0.05)  # the retired environment finishes dying first
        samples.append(workloads.cold_invoke(agent, request))
    return samples


def _request(name: str, event: dict) -> bytes:
    return workloads.invoke_request(name, payload=json.dumps(event).encode())


def measure_envs(agent: workloads.AgentUnderTest, n: int) -> dict:
    """Library and process memory with 1 and then n warm environments of nb-big."""
    def snapshot() -> list[tuple[dict[str, int], int]]:
        time.sleep(0.5)
        return [(m, process_pss_kib(pid)) for pid in bootstraps(agent)
                if (m := library_kib(pid))["Rss"]]

    def invoke_together(k: int) -> None:
        with concurrent.futures.ThreadPoolExecutor(k) as pool:
            for resp, body in pool.map(lambda _: agent.client.invoke_json("nb-big", {"sleep": 1.5}), range(k)):
                if resp.function_error:
                    raise RuntimeError(f"nb-big failed: {body}")

    invoke_together(1)
    one = snapshot()
    progress(f"native: {n} warm environments mapping the 52 MB library")
    invoke_together(n)
    many = snapshot()
    if len(one) != 1 or len(many) != n:
        raise RuntimeError(f"expected 1 then {n} environments mapping libbig.so, found {len(one)} and {len(many)}")
    lib_sum = [sum(m["Pss"] for m, _ in snap) for snap in (one, many)]
    proc_sum = [sum(p for _, p in snap) for snap in (one, many)]
    return {"n": n, "lib_rss_kib": statistics.median(m["Rss"] for m, _ in many),
            "lib_pss_kib": statistics.median(m["Pss"] for m, _ in many),
            "lib_private_kib": statistics.median(m["Private_Clean"] + m["Private_Dirty"] for m, _ in many),
            "lib_pss_sum_kib": lib_sum, "env_pss_sum_kib": proc_sum,
            "lib_pss_per_extra_kib": (lib_sum[1] - lib_sum[0]) / (n - 1),
            "env_pss_per_extra_kib": (proc_sum[1] - proc_sum[0]) / (n - 1),
            "env_pss_kib": statistics.median(p for _, p in many)}


def measure_provisioned(zip_data: bytes, preload: bool, n: int) -> list[workloads.ColdSample]:
    """First invokes of a provisioned environment of the big function (own agent)."""
    spec = {"memory_mb": ONE_CORE_MB, "timeout_seconds": 30, "provisioned_concurrency": 1}
    if preload:
        spec["preload_libraries"] = [LIB_PATH]
    agent = workloads.AgentUnderTest().start()
    try:
        name = "nb-provisioned"
        agent.client.create(name, zip_data, **spec)
        request = _request(name, {})
        samples = []
        for i in range(n):
            _wait_created(agent, name, i + 1)
            time.sleep(0.1)
            samples.append(workloads.cold_invoke(agent, request))
            workloads.force_cold(agent.client, name, i)  # retire it: the next sample gets a new one
        agent.stop_checked()
        return samples
    except BaseException:
        agent.stop()
        raise


def _wait_created(agent: workloads.AgentUnderTest, name: str, count: int, timeout: float = 60) -> None:
    """Until the agent's log has ``count`` lifecycle lines "created env=<name>-…" (the
    environment finished init and is idle)."""
    deadline = time.monotonic() + timeout
    pattern = re.compile(rf"created env={re.escape(name)}-")
    while time.monotonic() < deadline:
        if len(pattern.findall(agent.proc.log())) >= count:
            return
        time.sleep(0.05)
    raise RuntimeError(f"no provisioned environment of {name} after {timeout:.0f} s")


def _cold_row(label: str, samples: list[workloads.ColdSample]) -> list[str]:
    med = {f: statistics.median(getattr(s, f) for s in samples)
           for f in ("total_us", "sandbox_us", "init_us", "handler_us")}
    kinds = sorted({s.kind for s in samples})
    return [label, str(len(samples)), ms(statistics.median(s.client_ns for s in samples) / 1000),
            ms(med["total_us"]), ms(med["sandbox_us"]), ms(med["init_us"]), ms(med["handler_us"]),
            ", ".join(k.lower() for k in kinds)]


def section_native(ctx) -> list[Section]:
    ncfg = NativeConfig.of(ctx.cfg)
    with tempfile.TemporaryDirectory(prefix="bench-native-") as tmp:
        work = Path(tmp)
        progress("native: packaging the functions (fnctl package), generating the 52 MB library")
        calls_zip = build_calls_zip(work)
        big_zip, lib_size = build_big_zip(work)
    agent = workloads.AgentUnderTest(("--keep-alive", "3600")).start()
    try:
        agent.client.create("nb-calls", calls_zip, memory_mb=ONE_CORE_MB, timeout_seconds=300)
        agent.client.create("nb-big", big_zip, memory_mb=512, timeout_seconds=30)
        calls = measure_calls(agent, ncfg)
        progress(f"native: {ncfg.cold_samples} cold invokes with and without loading the library")
        cold_lib = measure_cold(agent, "nb-big", {}, ncfg.cold_samples)
        cold_bare = measure_cold(agent, "nb-big", {"load": False}, ncfg.cold_samples)
        envs = measure_envs(agent, ncfg.envs)
        cleanup = agent.stop_checked()
    except BaseException:
        agent.stop()
        raise
    provisioned = {}
    if HAS_PRELOAD:
        for preload in (False, True):
            progress(f"native: provisioned environment, {'with' if preload else 'without'} preload")
            provisioned[preload] = measure_provisioned(big_zip, preload, ncfg.preload_samples)

    loop = calls["loop"]
    call_rows = [[label, f"{calls[key]:.1f}", "" if key == "loop" else f"{calls[key] - loop:.1f}"]
                 for key, label in CALL_ROWS]
    calls_section = Section(
        "native-calls", "Native code: cost of a cffi call inside a function",
        [f"A warm Python 3.11 function (1,769 MB: one core) loops {ncfg.calls:,} times over each call inside one "
         f"invoke; the median of {ncfg.call_rounds} invokes. The library is libimgresize (native/), packaged with "
         "`fnctl package` (API-mode cffi extension, lib/libimgresize.so).",
         f"cffi call overhead over a pure-Python call: {calls['cffi'] - calls['python']:+.1f} ns."],
        [Table(["call", "ns per iteration", "ns minus the empty loop"], call_rows)],
        [], {"calls": ncfg.calls, "ns": calls})

    cold_rows = [_cold_row("cold, library loaded and every page read in the handler", cold_lib),
                 _cold_row("cold, same function, library not loaded", cold_bare)]
    notes = [
        f"nb-big: 512 MB, its zip carries lib/libbig.so ({lib_size / 1e6:.1f} MB, native/bigpad.py: libimgresize "
        "padded with 52,000,000 pseudo-random bytes in .rodata) and _big, a cffi extension linked with it, "
        "imported in the handler. Cold rows: the configuration is changed before each invoke, so each starts a "
        "new environment. The library-loading cost is the difference of the handler columns.",
        f"Memory: 1 environment, then {envs['n']} concurrent invokes (each loads the library, reads a byte of every "
        "page, sleeps 1.5 s), leaving that many warm. From /proc/<pid>/smaps of each sandbox's pid 1: all "
        "mappings of libbig.so. Per additional environment = (Σ over environments with "
        f"{envs['n']} − Σ with 1) / {envs['n'] - 1}.",
        cleanup + ".",
    ]
    if not HAS_PRELOAD:
        notes.append("Provisioned rows skipped: this build's FunctionSpec has no preload_libraries.")
    else:
        notes.append(f"Provisioned rows: an agent of their own; provisioned_concurrency 1, 1,769 MB; each sample "
                     f"waits for the provisioned environment to finish init, invokes it once, then retires it. "
                     f"Preload: preload_libraries [{LIB_PATH}] (dlopen during init).")
        for preload, samples in provisioned.items():
            cold_rows.append(_cold_row(f"provisioned, first invoke, {'with' if preload else 'no'} preload", samples))
    mem_rows = [
        ["library Rss per environment (what it would cost unshared)", mib(envs["lib_rss_kib"])],
        ["library Pss per environment, median", mib(envs["lib_pss_kib"])],
        ["library private pages per environment (relocations, GOT), median", mib(envs["lib_private_kib"])],
        [f"library Pss summed over environments: 1 → {envs['n']}",
         f"{mib(envs['lib_pss_sum_kib'][0])} → {mib(envs['lib_pss_sum_kib'][1])}"],
        ["**library Pss per additional environment**", mib(envs["lib_pss_per_extra_kib"])],
        ["whole environment Pss (sandbox pid 1), median", mib(envs["env_pss_kib"])],
        ["whole environment Pss per additional environment", mib(envs["env_pss_per_extra_kib"])],
    ]
    per_extra = envs["lib_pss_per_extra_kib"] / 1024
    memory_section = Section(
        "native-memory", "Native code: a 52 MB shared library, cold start and memory per environment", notes,
        [Table(["invoke", "n", "client p50 ms", "agent total ms", "sandbox ms", "init ms", "handler ms",
                "start kinds"], cold_rows, "Medians."),
         Table(["memory", "MiB"], mem_rows, f"{envs['n']} warm environments.")],
        [TargetCheck("PSS of a 52 MB shared library per additional warm environment", f"< {PSS_GOAL_MIB:g} MiB",
                     f"{per_extra:.2f} MiB", per_extra < PSS_GOAL_MIB)],
        {"library_bytes": lib_size, "memory": envs,
         "cold": {"library": [dataclasses.asdict(s) for s in cold_lib],
                  "bare": [dataclasses.asdict(s) for s in cold_bare]},
         "provisioned": {("preload" if k else "no_preload"): [dataclasses.asdict(s) for s in v]
                         for k, v in provisioned.items()}})
    return [calls_section, memory_section]


def main(argv: list[str] | None = None) -> int:
    import report
    import run

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few samples: a smoke test")
    args = parser.parse_args(argv)
    ctx = run.Context(run.QUICK if args.quick else run.Config())
    for section in section_native(ctx):
        print(f"## {section.title}\n")
        for table in section.tables:
            print("\n".join(report._table(table)))
        print("\n".join(f"- {n}" for n in section.notes) + "\n")
        print(report.targets_summary([section]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
