"""Starts runtime-agent on the embedded store, deploys every example and invokes it.

Each folder under examples/ with a function.json is deployed with fnctl (its
runtime, handler, memory, timeout, env) and invoked twice with its "event":
the first call starts a sandbox (cold), the second reuses it (warm). A
"build" command (argv list), if given, runs in the folder first, with this
venv's bin/ first on PATH (so it may call fnctl); "code" then names what to
deploy (a directory or zip, relative to the folder; default the folder). With
"expect", each of its keys must have that value in both results.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def fnctl(endpoint: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(BIN / "fnctl"), "--endpoint", endpoint, *args], capture_output=True, text=True)
    if check and proc.returncode not in (0, 1):
        raise SystemExit(f"fnctl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def wait_serving(agent: subprocess.Popen, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = agent.stdout.readline()
        if line:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "serving":
                return event
        elif agent.poll() is not None:
            raise SystemExit(f"runtime-agent exited with {agent.returncode}")
    raise SystemExit("runtime-agent did not start serving in time")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", default=str(HERE.parent / ".data"))
    parser.add_argument("--listen", default="127.0.0.1:50051")
    args = parser.parse_args()
    agent = subprocess.Popen([str(BIN / "runtime-agent"), "serve", "--listen", args.listen,
                              "--data-dir", args.data_dir, "--log-level", "WARNING"],
                             stdout=subprocess.PIPE, text=True)
    failures = 0
    try:
        event = wait_serving(agent)
        endpoint = f"127.0.0.1:{event['port']}" if not args.listen.startswith("unix:") else args.listen
        print(f"runtime-agent serving on {endpoint}, data in {args.data_dir}\n")
        for folder in sorted(p for p in HERE.iterdir() if (p / "function.json").is_file()):
            meta = json.loads((folder / "function.json").read_text())
            name = folder.name
            if meta.get("build"):
                env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
                built = subprocess.run(meta["build"], cwd=folder, capture_output=True, text=True, env=env)
                if built.returncode != 0:
                    failures += 1
                    print(f"== {name}: build {' '.join(meta['build'])} failed:\n{built.stderr.strip()}\n")
                    continue
            deploy = ["deploy", name, "--runtime", meta["runtime"], "--handler", meta["handler"],
                      "--code", str(folder / meta.get("code", ".")), "--memory", str(meta.get("memory", 128)),
                      "--timeout", str(meta.get("timeout", 3))]
            for key, value in meta.get("env", {}).items():
                deploy += ["--env", f"{key}={value}"]
            fnctl(endpoint, *deploy)
            print(f"== {name} ({meta['runtime']}, {meta['handler']})")
            for attempt in ("cold", "warm"):
                r = fnctl(endpoint, "--json", "invoke", name, "--payload", json.dumps(meta.get("event", {})))
                if r.returncode not in (0, 1):
                    failures += 1
                    print(f"   {attempt}: fnctl failed: {r.stderr.strip()}")
                    continue
                out = json.loads(r.stdout)
                t = out["timings"]
                print(f"   {out['start_kind'].lower():<5} {t['total_us'] / 1000:8.2f} ms  "
                      f"(init {t['init_us'] / 1000:.2f} ms, handler {t['handler_us'] / 1000:.2f} ms)  "
                      f"-> {json.dumps(out['payload'])}")
                if out["function_error"]:
                    failures += 1
                wrong = {k: v for k, v in meta.get("expect", {}).items()
                         if not isinstance(out["payload"], dict) or out["payload"].get(k) != v}
                if wrong and not out["function_error"]:
                    failures += 1
                    print(f"   {attempt}: expected {json.dumps(wrong)}")
            print()
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(30)
    print("all examples answered" if not failures else f"{failures} example invocation(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
