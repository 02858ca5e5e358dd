"""Hostile functions against the file system: host secrets, other functions'
code and /tmp, the read-only parts of the sandbox, hostile zips, devices.

Each docstring names the protection that stops the attack.
"""

import hashlib
import io
import os
import stat
import uuid
import zipfile

import grpc
import pytest

from framework.agent import error_type
from runtime.v1 import functions_pb2
from seclib import assert_agent_healthy, assert_bystander_ok, call, denied

pytestmark = [pytest.mark.integration, pytest.mark.root]

READER = '''
def handler(event, context):
    out = {}
    for path in event.get("read", []):
        out[path] = attempt(lambda: open(path, "rb").read(256).decode("latin-1"))
    for path in event.get("list", []):
        out[path] = attempt(lambda: sorted(os.listdir(path)))
    return out
'''


def test_host_shadow_unreadable(deploy, client):
    """mount: the sandbox's /etc is the agent's generated minimal /etc (passwd,
    group, hosts, nsswitch.conf, resolv.conf); the host's /etc/shadow does not exist inside."""
    assert os.path.exists("/etc/shadow"), "precondition: the host has a shadow file"
    deploy("sec-fs-shadow", READER)
    _, r = call(client, "sec-fs-shadow", {"read": ["/etc/shadow", "/etc/gshadow", "/etc/sudoers", "/etc/passwd"],
                                          "list": ["/etc", "/root"]})
    denied(r["/etc/shadow"], "ENOENT")
    denied(r["/etc/gshadow"], "ENOENT")
    denied(r["/etc/sudoers"], "ENOENT")
    denied(r["/root"], "ENOENT")
    assert r["/etc"]["value"] == ["group", "hosts", "nsswitch.conf", "passwd", "resolv.conf"]
    passwd = r["/etc/passwd"]["value"]
    assert passwd.startswith("root:x:0:0:root:/root:/usr/sbin/nologin\nsbx_user:"), passwd
    assert_bystander_ok(client)


def test_agent_data_dir_and_registry_unreadable(deploy, client, agent):
    """mount (+ uid): the agent's data dir is not mounted into the sandbox (its
    /tmp is a private tmpfs), and on the host it is 0700 root."""
    data = agent.data_dir
    assert (data / "registry.db").exists(), "precondition: the registry exists on the host"
    assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
    deploy("sec-fs-datadir", READER)
    paths = [str(data / "registry.db"), str(data / "registry.db-wal"), "/var/lib/runtime-agent/registry.db"]
    _, r = call(client, "sec-fs-datadir", {"read": paths, "list": [str(data), str(data / "code"),
                                                                    str(data / "logs"), "/tmp"]})
    for path in paths:
        denied(r[path], "ENOENT")
    for path in (str(data), str(data / "code"), str(data / "logs")):
        denied(r[path], "ENOENT")
    assert r["/tmp"]["value"] == [], "the sandbox's /tmp is its own, empty tmpfs"
    assert_bystander_ok(client)


def test_other_functions_code_unreadable(deploy, client, agent):
    """mount: a sandbox sees only its own code at /var/task; the code store
    (agent.data_dir/code/<sha256>) of other functions is not mounted."""
    secret = f"victim-secret-{uuid.uuid4().hex}"
    victim = deploy("sec-fs-code-victim", f"SECRET = {secret!r}\ndef handler(e, c):\n    return 'victim'\n")
    on_host = agent.data_dir / "code" / victim.code_sha256 / "app.py"
    assert secret in on_host.read_text(), "precondition: the victim's code is in the store"
    deploy("sec-fs-code-thief", READER)
    _, r = call(client, "sec-fs-code-thief", {"read": [str(on_host), "/var/task/app.py"],
                                              "list": [str(on_host.parent.parent), "/var/task"]})
    denied(r[str(on_host)], "ENOENT")
    denied(r[str(on_host.parent.parent)], "ENOENT")
    assert r["/var/task"]["value"] == ["__pycache__", "app.py"] or r["/var/task"]["value"] == ["app.py"]
    assert secret not in r["/var/task/app.py"]["value"]
    assert call(client, "sec-fs-code-victim")[1] == "victim"
    assert_bystander_ok(client)


TMP_VICTIM = '''
def handler(event, context):
    if event["op"] == "write":
        with open("/tmp/secret.txt", "w") as f:
            f.write(event["secret"])
        return "written"
    return open("/tmp/secret.txt").read()
'''


def test_other_functions_tmp_invisible(deploy, client):
    """mount (+ uid): every environment has its own private tmpfs /tmp; another
    function's files there do not exist in this sandbox."""
    secret = f"tmp-secret-{uuid.uuid4().hex}"
    deploy("sec-fs-tmp-victim", TMP_VICTIM)
    deploy("sec-fs-tmp-thief", READER)
    assert call(client, "sec-fs-tmp-victim", {"op": "write", "secret": secret})[1] == "written"
    _, r = call(client, "sec-fs-tmp-thief", {"read": ["/tmp/secret.txt"], "list": ["/tmp"]})
    denied(r["/tmp/secret.txt"], "ENOENT")
    assert r["/tmp"]["value"] == []
    resp, body = call(client, "sec-fs-tmp-victim", {"op": "read"})
    assert body == secret, "the secret still exists, in the victim's own (warm) /tmp"
    assert_bystander_ok(client)


WRITER = '''
def handler(event, context):
    out = {}
    for path in event.get("create", []):
        out["create " + path] = attempt(lambda: open(path, "x").write("pwned"))
    for path in event.get("open_write", []):
        out["open_write " + path] = attempt(lambda: os.close(os.open(path, os.O_WRONLY)))
    for path in event.get("mkdir", []):
        out["mkdir " + path] = attempt(os.mkdir, path)
    for path in event.get("unlink", []):
        out["unlink " + path] = attempt(os.unlink, path)
    for path in event.get("chmod", []):
        out["chmod " + path] = attempt(os.chmod, path, 0o777)
    for src, dst in event.get("rename", []):
        out["rename " + src] = attempt(os.rename, src, dst)
    return out
'''


def test_root_file_system_read_only(deploy, client):
    """mount: the sandbox's root is an empty tmpfs that nsjail remounts read-only."""
    deploy("sec-fs-root", WRITER)
    _, r = call(client, "sec-fs-root", {"create": ["/evil"], "mkdir": ["/evil-dir", "/sys"],
                                        "rename": [["/tmp", "/tmp2"]]})
    denied(r["create /evil"], "EROFS")
    denied(r["mkdir /evil-dir"], "EROFS")
    denied(r["mkdir /sys"], "EROFS")
    denied(r["rename /tmp"], "EROFS", "EBUSY")
    assert_bystander_ok(client)


def test_usr_read_only(deploy, client):
    """mount (+ uid): the host's /usr is bind-mounted read-only (EROFS on create);
    its files belong to root (EACCES on opening the interpreter for writing)."""
    python = os.path.realpath("/usr/bin/python3")
    before = hashlib.sha256(open(python, "rb").read()).hexdigest()
    deploy("sec-fs-usr", WRITER)
    _, r = call(client, "sec-fs-usr", {
        "create": ["/usr/evil", "/usr/lib/evil.so", "/bin/evil", "/lib/evil"],
        "open_write": [python], "unlink": ["/usr/bin/env"], "chmod": ["/usr/bin/su"]})
    for path in ("/usr/evil", "/usr/lib/evil.so", "/bin/evil", "/lib/evil"):
        denied(r["create " + path], "EROFS")
        assert not os.path.exists(path)
    denied(r["open_write " + python], "EACCES")
    denied(r["unlink /usr/bin/env"], "EROFS")
    denied(r["chmod /usr/bin/su"], "EROFS", "EPERM")
    assert hashlib.sha256(open(python, "rb").read()).hexdigest() == before
    assert os.path.exists("/usr/bin/env")
    assert_bystander_ok(client)


TASK = '''
def handler(event, context):
    if event.get("attack"):
        return {
            "overwrite": attempt(lambda: os.close(os.open("/var/task/app.py", os.O_WRONLY | os.O_TRUNC))),
            "create": attempt(lambda: open("/var/task/evil.py", "x").write("pwned")),
            "unlink": attempt(os.unlink, "/var/task/app.py"),
            "chmod": attempt(os.chmod, "/var/task/app.py", 0o777),
            "rename": attempt(os.rename, "/var/task/app.py", "/var/task/old.py"),
            "pycache": attempt(lambda: open("/var/task/__pycache__/app.cpython-311.pyc", "r+b").write(b"x")),
        }
    return "original"
'''


def test_task_dir_read_only(deploy, client, agent):
    """mount (+ uid): /var/task is the function's code, bind-mounted read-only
    (EROFS), files 0444 root; the code on the host is unchanged."""
    cfg = deploy("sec-fs-task", TASK)
    host_file = agent.data_dir / "code" / cfg.code_sha256 / "app.py"
    before = host_file.read_bytes()
    _, r = call(client, "sec-fs-task", {"attack": True})
    denied(r["overwrite"], "EACCES", "EROFS")
    denied(r["create"], "EROFS")
    denied(r["unlink"], "EROFS")
    denied(r["chmod"], "EROFS", "EPERM")
    denied(r["rename"], "EROFS")
    denied(r["pycache"], "EACCES", "EROFS", "ENOENT")
    assert host_file.read_bytes() == before
    assert sorted(p.name for p in host_file.parent.iterdir() if p.name != "__pycache__") == ["app.py"]
    assert call(client, "sec-fs-task")[1] == "original"
    assert_bystander_ok(client)


def _zip_with(entries) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(zipfile.ZipInfo("app.py"), "def handler(e, c):\n    return 1\n")
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            zf.writestr(info, data)
    return buf.getvalue()


def _assert_zip_refused(client, agent, name, data, *words):
    code_dir = agent.data_dir / "code"
    before = sorted(p.name for p in code_dir.iterdir())
    top_before = sorted(p.name for p in agent.data_dir.iterdir())
    with pytest.raises(grpc.RpcError) as exc:
        client.create(name, data)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.value.details()
    assert error_type(exc.value) == "InvalidZipFileException"
    for word in words:
        assert word in exc.value.details(), exc.value.details()
    assert sorted(p.name for p in code_dir.iterdir()) == before, "nothing was unpacked"
    assert sorted(p.name for p in agent.data_dir.iterdir()) == top_before
    assert not os.path.exists(agent.data_dir / "evil.py")
    with pytest.raises(grpc.RpcError) as exc:
        client.functions.GetFunction(functions_pb2.GetFunctionRequest(name=name), timeout=30)
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("entry,words", [
    ("../evil.py", [".."]),
    ("a/../../evil.py", [".."]),
    ("../../../../../../tmp/evil.py", [".."]),
    ("/etc/cron.d/evil", ["absolute"]),
], ids=["dotdot", "nested-dotdot", "deep-dotdot", "absolute"])
def test_zip_path_traversal_refused(client, agent, entry, words):
    """agent limit (code store validation): zip entries must be relative and stay
    inside the function's directory; the deploy fails with InvalidZipFileException."""
    _assert_zip_refused(client, agent, "sec-fs-zip-traversal", _zip_with([(entry, "x", 0o100644)]), *words)
    assert not os.path.exists("/tmp/evil.py") and not os.path.exists("/etc/cron.d/evil")
    assert_agent_healthy(agent)
    assert_bystander_ok(client)


@pytest.mark.parametrize("entry,target", [
    ("link", "/etc/shadow"),
    ("d/link", "../../x"),
    ("dirlink", "/"),
], ids=["absolute-target", "relative-escape", "root"])
def test_zip_symlink_escape_refused(client, agent, entry, target):
    """agent limit (code store validation): a symlink in the zip that points
    outside the function's directory is refused at deploy (InvalidZipFileException)."""
    data = _zip_with([(entry, target, stat.S_IFLNK | 0o777)])
    _assert_zip_refused(client, agent, "sec-fs-zip-symlink", data, "symlink")
    assert_bystander_ok(client)


DEVICES = '''
def handler(event, context):
    out = {"dev": sorted(os.listdir("/dev"))}
    for path in ("/dev/mem", "/dev/kmem", "/dev/port", "/dev/kmsg", "/dev/sda", "/dev/vda",
                 "/dev/nvme0n1", "/dev/tty", "/dev/console", "/dev/fuse", "/dev/net/tun", "/sys/kernel"):
        out[path] = attempt(lambda: os.close(os.open(path, os.O_RDONLY)))
    out["mknod_mem"] = attempt(os.mknod, "/tmp/mem", 0o600 | stat.S_IFCHR, os.makedev(1, 1))
    out["mknod_disk"] = attempt(os.mknod, "/tmp/disk", 0o600 | stat.S_IFBLK, os.makedev(8, 0))
    out["null"] = attempt(lambda: open("/dev/null", "w").write("fine"))
    out["urandom"] = attempt(lambda: len(open("/dev/urandom", "rb").read(16)))
    return out
'''


def test_devices_absent_and_mknod_denied(deploy, client):
    """mount + uid: /dev holds only null, zero, random, urandom (plus the fd
    link and the /dev/shm tmpfs); no disk, memory or kernel-log device exists,
    and mknod of a device needs CAP_MKNOD, which the sandbox lacks (EPERM)."""
    deploy("sec-fs-dev", "import stat\n" + DEVICES)
    _, r = call(client, "sec-fs-dev")
    assert r["dev"] == ["fd", "null", "random", "shm", "urandom", "zero"]
    for path in ("/dev/mem", "/dev/kmem", "/dev/port", "/dev/kmsg", "/dev/sda", "/dev/vda",
                 "/dev/nvme0n1", "/dev/tty", "/dev/console", "/dev/fuse", "/dev/net/tun", "/sys/kernel"):
        denied(r[path], "ENOENT")
    denied(r["mknod_mem"], "EPERM")
    denied(r["mknod_disk"], "EPERM")
    assert r["null"] == {"ok": True, "value": 4}
    assert r["urandom"] == {"ok": True, "value": 16}
    assert_bystander_ok(client)


KERNEL_KNOBS = '''
def handler(event, context):
    def write(path, value):
        with open(path, "w") as f:
            f.write(value)
    return {
        "hostname": attempt(write, "/proc/sys/kernel/hostname", "pwned"),
        "core_pattern": attempt(write, "/proc/sys/kernel/core_pattern", "|/tmp/x"),
        "panic_on_oops": attempt(write, "/proc/sys/kernel/panic_on_oops", "1"),
        "sysrq": attempt(write, "/proc/sysrq-trigger", "c"),
        "drop_caches": attempt(write, "/proc/sys/vm/drop_caches", "3"),
        "sys": attempt(os.listdir, "/sys"),
        "oom_score_adj": attempt(write, "/proc/self/oom_score_adj", "-1000"),
    }
'''


def test_kernel_knobs_not_writable(deploy, client):
    """mount: the sandbox's own /proc is mounted read-only (EROFS on every
    sysctl, on sysrq-trigger and even on /proc/self/oom_score_adj), and there is
    no /sys at all."""
    with open("/proc/sys/kernel/core_pattern") as f:
        core_pattern = f.read()
    deploy("sec-fs-knobs", KERNEL_KNOBS)
    _, r = call(client, "sec-fs-knobs")
    for knob in ("hostname", "core_pattern", "panic_on_oops", "drop_caches"):
        denied(r[knob], "EROFS")
    denied(r["sysrq"], "EROFS", "ENOENT")  # ENOENT on kernels without magic SysRq
    denied(r["sys"], "ENOENT")
    denied(r["oom_score_adj"], "EROFS")
    with open("/proc/sys/kernel/core_pattern") as f:
        assert f.read() == core_pattern
    assert os.uname().nodename != "pwned"
    assert_bystander_ok(client)


CHOWN = '''
def handler(event, context):
    with open("/tmp/rootshell", "w") as f:
        f.write("#!/bin/sh\\nid\\n")
    return {
        "chown_root": attempt(os.chown, "/tmp/rootshell", 0, 0),
        "setgid_foreign": attempt(os.chown, "/tmp/rootshell", -1, 0),
        "setuid_bit": attempt(os.chmod, "/tmp/rootshell", 0o4755),
        "owner": os.stat("/tmp/rootshell").st_uid,
    }
'''


def test_cannot_make_root_owned_setuid_file(deploy, client):
    """uid: without CAP_CHOWN the sandbox cannot give a file to root; a setuid
    bit on its own file only ever means its own unprivileged uid."""
    deploy("sec-fs-chown", CHOWN)
    _, r = call(client, "sec-fs-chown")
    denied(r["chown_root"], "EPERM")
    denied(r["setgid_foreign"], "EPERM")
    assert r["owner"] >= 800_000
    assert_bystander_ok(client)
