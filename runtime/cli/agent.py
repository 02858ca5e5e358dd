"""``runtime-agent``: the daemon (``serve``) and the host check (``doctor``)."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import signal
import sys
from pathlib import Path

from runtime.agent import Agent, AgentSettings, default_data_dir
from runtime.core.invoker import InvokerSettings

log = logging.getLogger("runtime.cli")
DEFAULT_LISTEN = "127.0.0.1:50051"


def _is_local(address: str) -> bool:
    if address.startswith("unix:"):
        return True
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _unix_path(address: str) -> Path:
    rest = address[len("unix:"):]
    return Path("/" + rest.lstrip("/")) if rest.startswith("//") else Path(rest)


async def _serve(args: argparse.Namespace) -> int:
    from runtime.api.server import create_server, mark_serving  # gRPC only for serve

    if not _is_local(args.listen):
        log.error("refusing to listen on %s: only loopback or a unix socket is allowed until TLS and "
                  "token authentication are configured", args.listen)
        return 2
    settings = AgentSettings(
        data_dir=Path(args.data_dir),
        invoker=InvokerSettings(keep_alive_s=args.keep_alive, max_environments=args.max_environments),
        rootless=True if args.rootless else None)
    agent = Agent.open(settings)
    missing = agent.host.missing_protections()
    for item in missing:
        log.warning("isolation reduced on this host: no %s", item)
    server, port = create_server(agent, args.listen)
    await server.start()
    if args.listen.startswith("unix:"):
        # Whoever can connect can run code: only the agent's own user may.
        _unix_path(args.listen).chmod(0o600)
    agent.start()
    await mark_serving(server)
    runtimes = ", ".join(sorted(agent.runtimes)) or "none"
    log.info("runtime-agent serving on %s (port %d), data dir %s, mode %s, cgroups v%d, runtimes: %s",
             args.listen, port, settings.data_dir, agent.host.statistics().mode,
             agent.host.cgroup_version, runtimes)
    print(json.dumps({"event": "serving", "listen": args.listen, "port": port}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await server.stop(grace=5)
    await agent.close()
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from runtime.doctor import report

    checks, missing = report()
    if args.json:
        print(json.dumps({"checks": [{"name": n, "detail": d, "ok": ok} for n, d, ok in checks],
                          "missing_protections": missing}, indent=2))
    else:
        width = max(len(n) for n, _, _ in checks)
        for name, detail, ok in checks:
            print(f"{'ok ' if ok else 'NO '} {name:<{width}}  {detail}")
        print()
        if missing:
            print("Isolation on this host lacks:")
            for item in missing:
                print(f"  - {item}")
        else:
            print("Full isolation: namespaces, per-environment uid, cgroup limits, seccomp, read-only code.")
    return 0 if all(ok for _, _, ok in checks) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="runtime-agent", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the agent")
    serve.add_argument("--listen", default=DEFAULT_LISTEN,
                       help=f"HOST:PORT or unix:PATH (default {DEFAULT_LISTEN})")
    serve.add_argument("--data-dir", default=str(default_data_dir()),
                       help="where functions, code and logs live (default: %(default)s)")
    serve.add_argument("--keep-alive", type=float, default=600.0,
                       help="seconds an idle environment is kept for reuse (default 600)")
    serve.add_argument("--max-environments", type=int, default=256,
                       help="environments allowed at once on this host (default 256)")
    serve.add_argument("--rootless", action="store_true",
                       help="use user namespaces even as root (no cgroups, one uid)")
    serve.add_argument("--log-level", default="INFO")
    doctor = sub.add_parser("doctor", help="report what isolation this host supports")
    doctor.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(args, "log_level", "INFO"), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "serve":
        return asyncio.run(_serve(args))
    return _doctor(args)


if __name__ == "__main__":
    sys.exit(main())
