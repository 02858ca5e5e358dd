"""fnctl against a real agent: what a developer types."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.root]

FNCTL = str(Path(sys.executable).parent / "fnctl")


def run(agent, *args, input=None):
    return subprocess.run([FNCTL, "--endpoint", agent.target, *args], capture_output=True, text=True,
                          timeout=120, input=input)


def test_deploy_invoke_list_get_logs_usage_delete(agent, tmp_path):
    code = tmp_path / "src"
    code.mkdir()
    (code / "main.py").write_text("def go(event, context):\n    print('got', event)\n"
                                  "    if event.get('boom'):\n        raise RuntimeError('boom')\n"
                                  "    return {'sum': sum(event['n'])}\n")
    r = run(agent, "deploy", "cli-fn", "--runtime", "python3.11", "--handler", "main.go", "--code", str(code),
            "--memory", "256", "--timeout", "5", "--env", "MODE=test")
    assert r.returncode == 0, r.stderr
    assert "cli-fn" in r.stdout and "256 MB" in r.stdout

    r = run(agent, "invoke", "cli-fn", "--payload", '{"n": [1, 2, 3]}')
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"sum": 6}

    payload = tmp_path / "event.json"
    payload.write_text('{"n": [10]}')
    r = run(agent, "--json", "invoke", "cli-fn", "--payload", f"@{payload}")
    out = json.loads(r.stdout)
    assert out["payload"] == {"sum": 10} and out["start_kind"] == "WARM" and out["function_error"] == ""

    r = run(agent, "invoke", "cli-fn", "--payload", '{"boom": true}')
    assert r.returncode == 1, "a function error exits 1"
    assert json.loads(r.stdout)["errorType"] == "RuntimeError"

    r = run(agent, "invoke", "cli-fn", "--payload", "{not json")
    assert r.returncode == 2 and "InvalidRequestContentException" in r.stderr

    r = run(agent, "--json", "list")
    assert "cli-fn" in {f["name"] for f in json.loads(r.stdout)}
    r = run(agent, "--json", "get", "cli-fn")
    got = json.loads(r.stdout)
    assert got["environment"] == {"MODE": "test"} and got["timeout_seconds"] == 5

    r = run(agent, "logs", "cli-fn")
    assert "got {'n': [1, 2, 3]}" in r.stdout and "REPORT RequestId" in r.stdout

    r = run(agent, "--json", "usage", "cli-fn")
    usage = json.loads(r.stdout)
    assert sum(rec["requests"] for rec in usage["records"]) == 3

    r = run(agent, "delete", "cli-fn")
    assert r.returncode == 0
    r = run(agent, "get", "cli-fn")
    assert r.returncode == 2 and "ResourceNotFoundException" in r.stderr


def test_unreachable_agent_exit_code():
    r = subprocess.run([FNCTL, "--endpoint", "127.0.0.1:1", "--timeout", "3", "list"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 3 and "runtime-agent serve" in r.stderr
