"""fnctl layer publish/list/get/delete and deploy --layer/--preload against a
real agent: what a developer types."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.root]

FNCTL = str(Path(sys.executable).parent / "fnctl")


def run(agent, *args):
    return subprocess.run([FNCTL, "--endpoint", agent.target, *args], capture_output=True, text=True, timeout=120)


def test_layer_commands_and_deploy_with_layers(agent, tmp_path):
    base = tmp_path / "base"
    (base / "python").mkdir(parents=True)
    (base / "python" / "helper.py").write_text("def greet(n):\n    return 'hi ' + n\n")
    (base / "conf.txt").write_text("base")
    over = tmp_path / "over.zip"
    with zipfile.ZipFile(over, "w") as zf:
        zf.writestr("conf.txt", "override")

    r = run(agent, "layer", "publish", "cli-base", str(base), "--description", "helpers")
    assert r.returncode == 0, r.stderr
    assert "cli-base:1" in r.stdout and "helpers" in r.stdout
    r = run(agent, "--json", "layer", "publish", "cli-over", str(over))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ref"] == "cli-over:1"
    r = run(agent, "layer", "publish", "cli-over", str(over), "--json")  # same zip again: a new version
    assert json.loads(r.stdout)["version"] == 2

    code = tmp_path / "src"
    code.mkdir()
    (code / "app.py").write_text("import helper\ndef handler(e, c):\n"
                                 "    return {'greet': helper.greet(e['n']), 'conf': open('/opt/conf.txt').read()}\n")
    r = run(agent, "deploy", "cli-layered", "--runtime", "python3.11", "--handler", "app.handler",
            "--code", str(code), "--layer", "cli-base:1", "--layer", "cli-over:2")
    assert r.returncode == 0, r.stderr
    assert "cli-base:1, cli-over:2" in r.stdout
    r = run(agent, "invoke", "cli-layered", "--payload", '{"n": "ada"}')
    assert json.loads(r.stdout) == {"greet": "hi ada", "conf": "override"}

    # Update: only the layers, reordered; --preload given for the first time.
    r = run(agent, "--json", "deploy", "cli-layered", "--runtime", "python3.11", "--handler", "app.handler",
            "--code", str(code), "--layer", "cli-over:2", "cli-base:1", "--preload", "/var/task/lib/libfast.so")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["layers"] == ["cli-over:2", "cli-base:1"] and got["preload_libraries"] == ["/var/task/lib/libfast.so"]
    r = run(agent, "deploy", "cli-layered", "--runtime", "python3.11", "--handler", "app.handler",
            "--code", str(code), "--preload")  # a bare --preload clears the list; layers stay
    assert r.returncode == 0, r.stderr
    assert json.loads(run(agent, "invoke", "cli-layered", "--payload", '{"n": "bo"}').stdout)["conf"] == "base"

    r = run(agent, "--json", "layer", "list")
    refs = {v["ref"]: v for v in json.loads(r.stdout)}
    assert {"cli-base:1", "cli-over:1", "cli-over:2"} <= set(refs)
    assert refs["cli-base:1"]["used_by"] == ["cli-layered"]
    r = run(agent, "layer", "list", "cli-over")
    assert "cli-over:1" in r.stdout and "cli-over:2" in r.stdout and "cli-base" not in r.stdout
    r = run(agent, "layer", "get", "cli-base:1")
    assert r.returncode == 0 and "used by:" in r.stdout and "cli-layered" in r.stdout

    r = run(agent, "layer", "delete", "cli-base:1")
    assert r.returncode == 2 and "ResourceInUseException" in r.stderr and "cli-layered" in r.stderr
    r = run(agent, "layer", "delete", "cli-over:1")
    assert r.returncode == 0, r.stderr
    r = run(agent, "layer", "get", "cli-over:1")
    assert r.returncode == 2 and "ResourceNotFoundException" in r.stderr

    r = run(agent, "deploy", "cli-layered", "--runtime", "python3.11", "--handler", "app.handler",
            "--code", str(code), "--layer", "nope:1")
    assert r.returncode == 2 and "InvalidParameterValueException" in r.stderr and "nope:1 does not exist" in r.stderr
    r = run(agent, "deploy", "cli-layered", "--runtime", "python3.11", "--handler", "app.handler",
            "--code", str(code), "--layer")  # a bare --layer removes them all
    assert r.returncode == 0, r.stderr
    assert json.loads(run(agent, "--json", "get", "cli-layered").stdout)["layers"] == []
    assert run(agent, "layer", "delete", "cli-base:1").returncode == 0
    run(agent, "delete", "cli-layered")


def test_layer_usage_errors(agent, tmp_path):
    r = run(agent, "layer", "publish", "x", str(tmp_path / "missing"))
    assert r.returncode == 2 and "not a directory or a zip file" in r.stderr
    r = run(agent, "layer", "get", "no-version")
    assert r.returncode == 2 and "NAME:VERSION" in r.stderr
