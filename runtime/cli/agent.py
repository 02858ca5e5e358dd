"""``runtime-agent``: the daemon (``serve``), the host check (``doctor``) and
API token management (``tokens create|list|revoke``)."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from runtime import __version__, agentlog
from runtime.agent import Agent, AgentSettings, default_data_dir
from runtime.core.invoker import InvokerSettings
from runtime.core.tokens import SCOPES, TokenStore
from runtime.errors import AgentError, InvalidParameterValue
from runtime.sandbox import placement

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


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


def _reply_poll_us(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of microseconds") from None
    if not 0 <= value <= 10_000:
        raise argparse.ArgumentTypeError(f"{value} is out of range: allowed 0-10000 microseconds")
    return value


def _agent_cpu(text: str) -> int | None:
    """--agent-cpu as the CPU to pin the agent's threads to (None: not pinned)."""
    try:
        return placement.choose(text, placement.allowed_cpus())
    except InvalidParameterValue as exc:
        raise argparse.ArgumentTypeError(exc.message.removeprefix(f"{exc.field}: ")) from None


def _unix_path(address: str) -> Path:
    rest = address[len("unix:"):]
    return Path("/" + rest.lstrip("/")) if rest.startswith("//") else Path(rest)


async def _serve(args: argparse.Namespace) -> int:
    from runtime.api.server import create_server, mark_serving  # gRPC only for serve

    problem = _security_problem(args)
    if problem:
        log.error("%s", problem)
        return 2
    args.auth = args.auth or "none"  # only loopback gets here without --auth
    credentials = None
    if args.tls_cert:
        from runtime.api.auth import server_credentials
        try:
            credentials = server_credentials(args.tls_cert, args.tls_key, args.tls_client_ca)
        except (OSError, ValueError) as exc:
            log.error("refusing to start: %s", exc)
            return 2
    settings = AgentSettings(
        data_dir=Path(args.data_dir),
        invoker=InvokerSettings(keep_alive_s=args.keep_alive, max_environments=args.max_environments,
                                memory_budget_mb=args.memory_budget_mb,
                                platform_logs=not args.no_platform_logs,
                                keep_alive_policy=args.keep_alive_policy,
                                keep_alive_bin_s=args.keep_alive_bin, stem_cells=args.stem_cells,
                                reply_poll_us=args.reply_poll_us),
        metrics_listen=args.metrics_listen, billing_granularity_ms=args.billing_granularity_ms,
        otlp_endpoint=args.otlp_endpoint, max_unpacked_mb=args.max_unpacked_mb,
        outbound=(args.outbound_iface, args.outbound_subnet, args.outbound_gateway) if args.outbound_iface else None,
        rootless=True if args.rootless else None)
    # Blocking work handed to threads (code unpacking, cgroup moves) runs on any CPU.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(thread_name_prefix="agent-worker", initializer=placement.run_anywhere))
    try:
        agent = Agent.open(settings)
    except AgentError as exc:
        log.error("refusing to start: %s", exc.message)
        return 2
    missing = agent.host.missing_protections()
    for item in missing:
        log.warning("isolation reduced on this host: no %s", item)
    tokens, interceptors = None, ()
    if args.auth == "tokens":
        from runtime.api.auth import AuthInterceptor
        # After Agent.open: the data dir exists and is 0700.
        tokens = TokenStore(settings.data_dir / "registry.db")
        interceptors = (AuthInterceptor(tokens),)
        if not any(not t.revoked for t in tokens.list()):
            log.warning("token authentication is on but no active token exists: every call except health "
                        "will be refused; create one with `runtime-agent tokens create --name NAME "
                        "--scope admin --data-dir %s`", settings.data_dir)
    server, port = create_server(agent, args.listen, credentials=credentials, interceptors=interceptors)
    await server.start()
    if args.listen.startswith("unix:"):
        # Whoever can connect can run code: only the agent's own user may.
        _unix_path(args.listen).chmod(0o600)
    agent.start()
    await mark_serving(server)
    runtimes = ", ".join(sorted(agent.runtimes)) or "none"
    tls = ("mutual TLS" if args.tls_client_ca else "TLS") if credentials else "plaintext"
    log.info("runtime-agent serving on %s (port %d, %s, auth %s), data dir %s, mode %s, cgroups v%d, "
             "runtimes: %s", args.listen, port, tls, args.auth, settings.data_dir,
             agent.host.statistics().mode, agent.host.cgroup_version, runtimes)
    print(json.dumps({"event": "serving", "listen": args.listen, "port": port, "tls": credentials is not None,
                      "auth": args.auth, "metrics_port": agent.metrics_port}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await server.stop(grace=5)
    await agent.close()
    if tokens is not None:
        tokens.close()
    return 0


def _security_problem(args: argparse.Namespace) -> str | None:
    """Why ``serve`` must not start with these flags, or None.

    Whoever reaches the port can run code on this host: off loopback, both
    TLS (nobody reads or forges tokens on the wire) and tokens (nobody calls
    without one) are required, and the message names every missing flag.
    """
    if bool(args.tls_cert) != bool(args.tls_key):
        given, missing = ("--tls-cert", "--tls-key PATH") if args.tls_cert else ("--tls-key", "--tls-cert PATH")
        return f"refusing to start: {given} needs {missing} as well"
    outbound = (args.outbound_iface, args.outbound_subnet, args.outbound_gateway)
    if any(outbound) and not all(outbound):
        return ("refusing to start: outbound network needs all of --outbound-iface, --outbound-subnet and "
                "--outbound-gateway")
    if args.rootless and os.geteuid() == 0:
        # As root a user namespace would map the sandbox to host root and could
        # not enter the 0700 data dir: rootless means an unprivileged agent.
        return "refusing to start: --rootless needs an unprivileged user; as root the agent isolates fully"
    if args.metrics_listen and not _is_local(args.metrics_listen) and not args.metrics_public:
        return (f"refusing to serve metrics on {args.metrics_listen}: the endpoint has no authentication; "
                "use a loopback address, or pass --metrics-public to expose it deliberately")
    if args.tls_client_ca and not args.tls_cert:
        return "refusing to start: --tls-client-ca (mutual TLS) needs --tls-cert PATH and --tls-key PATH"
    if _is_local(args.listen):
        return None
    missing = []
    if not args.tls_cert:
        missing += ["--tls-cert PATH", "--tls-key PATH"]
    if args.auth != "tokens":
        missing.append("--auth tokens")
    if missing:
        return (f"refusing to listen on {args.listen}: a non-loopback address needs TLS and token "
                f"authentication; missing: {', '.join(missing)}")
    return None


def _tokens(args: argparse.Namespace) -> int:
    data = Path(args.data_dir)
    db = data / "registry.db"
    if args.tokens_command == "create":
        try:
            data.mkdir(parents=True, exist_ok=True)
            os.chmod(data, 0o700)  # as Agent.open does: the data dir is the agent's alone
        except OSError as exc:
            print(f"runtime-agent tokens: mkdir/chmod({data}) failed: {exc}", file=sys.stderr)
            return 2
    elif not db.exists():
        print(f"runtime-agent tokens: no tokens: {db} does not exist (wrong --data-dir?)", file=sys.stderr)
        return 2
    try:
        store = TokenStore(db, cache_ttl=0)
        try:
            return _tokens_command(args, store)
        finally:
            store.close()
    except AgentError as exc:
        print(f"runtime-agent tokens: {exc.message}", file=sys.stderr)
        return 2


def _tokens_command(args: argparse.Namespace, store: TokenStore) -> int:
    if args.tokens_command == "create":
        info, token = store.create(args.name, [args.scope])
        # The token alone on stdout, so `T=$(runtime-agent tokens create ...)` works.
        print(token, flush=True)
        print(f"created token {info.id} ({info.name}, scope {' '.join(info.scopes)}); this is the only time "
              "it is shown: the agent keeps only its hash", file=sys.stderr)
        return 0
    if args.tokens_command == "revoke":
        info = store.revoke(args.id)
        print(f"revoked token {info.id} ({info.name}); the agent refuses it within a second")
        return 0
    rows = store.list()
    if args.json:
        print(json.dumps([r.to_json() for r in rows], indent=2))
        return 0
    print(f"{'ID':<14}{'NAME':<24}{'SCOPES':<10}{'CREATED (UTC)':<22}STATUS")
    for r in rows:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.created))
        state = ("revoked " + time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.revoked_at))
                 if r.revoked and r.revoked_at else "revoked" if r.revoked else "active")
        print(f"{r.id:<14}{r.name[:23]:<24}{' '.join(r.scopes):<10}{created:<22}{state}")
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
    parser.add_argument("--version", action="version", version=f"runtime-agent {__version__}")
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
                       help="insist on rootless mode (the default for a non-root agent): user "
                            "namespaces, no cgroups, one uid")
    serve.add_argument("--log-level", default="INFO",
                       help="INFO logs every environment's lifecycle; DEBUG adds each warm reuse")
    serve.add_argument("--log-format", choices=("text", "json"), default="text",
                       help="the agent's own log on stderr: text, or one JSON object per line")
    serve.add_argument("--keep-alive-policy", choices=("fixed", "hybrid"), default="fixed",
                       help="fixed: --keep-alive for every function; hybrid: learn each function's "
                            "inter-arrival times, unload and pre-warm before the next likely call")
    serve.add_argument("--keep-alive-bin", type=float, default=60.0, metavar="SECONDS",
                       help="histogram bin of the hybrid policy (default 60, as the paper)")
    serve.add_argument("--stem-cells", type=int, default=0, metavar="N",
                       help="per runtime, keep N sandboxes with the runtime loaded and no function, "
                            "specialised on a cold start (default 0)")
    serve.add_argument("--reply-poll-us", type=_reply_poll_us, default=200, metavar="MICROSECONDS",
                       help="while a single invocation is in flight, wait up to this long for its reply "
                            "by polling instead of sleeping: lower latency on virtual machines, at the "
                            "cost of that much CPU per call (default 200, 0 turns it off, at most 10000)")
    serve.add_argument("--agent-cpu", type=_agent_cpu, default="auto", metavar="auto|none|CPU",
                       help="run the agent's own threads (event loop, gRPC) on one CPU, so that handing a "
                            "call from one to the next is not an interrupt to another CPU; sandboxes run "
                            "on every CPU. auto (default): the highest-numbered CPU the agent may use; "
                            "none: leave them to the scheduler")
    serve.add_argument("--memory-budget-mb", type=int, default=0,
                       help="memory all environments together may use (default: host memory minus "
                            "max(1 GiB, 10%%))")
    serve.add_argument("--metrics-listen", default="", metavar="HOST:PORT",
                       help="serve Prometheus metrics over HTTP here (default: off)")
    serve.add_argument("--metrics-public", action="store_true",
                       help="allow --metrics-listen on a non-loopback address (no authentication)")
    serve.add_argument("--billing-granularity-ms", type=int, default=1, choices=(1, 10, 100),
                       help="billed durations round up to this step (default 1 ms; 100 as in 2016)")
    serve.add_argument("--outbound-iface", default="", metavar="IFACE",
                       help="host interface for functions with network: outbound (each environment gets "
                            "a macvlan on it); default: no outbound network for anyone")
    serve.add_argument("--outbound-subnet", default="", metavar="CIDR",
                       help="addresses handed to those environments, e.g. 10.213.0.0/24")
    serve.add_argument("--outbound-gateway", default="", metavar="IP",
                       help="their default gateway, inside --outbound-subnet")
    serve.add_argument("--otlp-endpoint", default="", metavar="HOST:PORT",
                       help="export a span per invocation, with per-phase children, to this OTLP/gRPC "
                            "collector (default: off)")
    serve.add_argument("--max-unpacked-mb", type=_positive_int, default=250, metavar="MB",
                       help="a function's code plus all its layers, unpacked, at most (default 250, "
                            "as AWS Lambda); also the limit of one zip")
    serve.add_argument("--no-platform-logs", action="store_true",
                       help="do not write START/END/REPORT lines to function logs")
    serve.add_argument("--tls-cert", metavar="PATH",
                       help="PEM server certificate (chain); serve TLS only. Required off loopback")
    serve.add_argument("--tls-key", metavar="PATH", help="PEM private key of --tls-cert")
    serve.add_argument("--tls-client-ca", metavar="PATH",
                       help="PEM CA certificate(s): require client certificates signed by it (mutual TLS)")
    serve.add_argument("--auth", choices=("none", "tokens"), default=None,
                       help="'tokens': every call but health needs a bearer token (see `tokens`). "
                            "Default none on loopback; required off loopback")
    tokens = sub.add_parser("tokens", help="manage API bearer tokens (works while the agent runs)")
    tsub = tokens.add_subparsers(dest="tokens_command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", default=str(default_data_dir()),
                        help="the agent's data dir (default: %(default)s)")
    create = tsub.add_parser("create", parents=[common], help="create a token and print it, once")
    create.add_argument("--name", required=True, help="what the token is for, shown by `tokens list`")
    create.add_argument("--scope", required=True, choices=SCOPES,
                        help="invoke: Invoke, GetLogs, ListRuntimes; admin: everything (implies invoke)")
    listing = tsub.add_parser("list", parents=[common], help="list tokens (never their secrets)")
    listing.add_argument("--json", action="store_true")
    revoke = tsub.add_parser("revoke", parents=[common], help="revoke a token by its id")
    revoke.add_argument("id", help="the token id shown by `tokens list`")
    doctor = sub.add_parser("doctor", help="report what isolation this host supports")
    doctor.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    agentlog.configure(getattr(args, "log_level", "INFO"), getattr(args, "log_format", "text"))
    if args.command == "serve":
        # Before any thread exists: gRPC's and the event loop's inherit it.
        placement.pin_agent(args.agent_cpu)
        return asyncio.run(_serve(args))
    if args.command == "tokens":
        return _tokens(args)
    return _doctor(args)


if __name__ == "__main__":
    sys.exit(main())
