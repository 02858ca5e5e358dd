"""fnctl: the developer command line of runtime-agent (deploy, invoke, list,
get, delete, logs, runtimes), each command one or a few runtime.v1 gRPC calls.

Exit codes: 0 success, 1 the invoked function failed, 2 usage or API error,
3 agent unreachable. The generated runtime.v1 modules are imported only when a
command runs: setup.py builds them into installed packages, while build_zip
and the argument helpers must stay importable from a source checkout.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import stat
import sys
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import grpc

DEFAULT_ENDPOINT = "127.0.0.1:50051"
DEFAULT_RPC_TIMEOUT = 60.0
# Above the largest function timeout (900 s): the agent, not the client,
# decides when an invocation has run too long.
INVOKE_RPC_TIMEOUT = 960.0
CHUNK_SIZE = 1 << 20  # the API's maximum code chunk
MAX_MESSAGE = 64 << 20  # payloads reach 6 MB; grpc's default receive limit is 4 MB
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can hold
ERROR_TYPE_KEY = "x-runtime-error-type"


class UsageError(Exception):
    """A bad flag value found after argparse; reported like a usage error."""


# --- deployment zips ----------------------------------------------------------

def build_zip(path: str | os.PathLike) -> bytes:
    """Zip the directory ``path`` in memory. Same tree, same bytes (sorted entries,
    fixed timestamps, normalised modes), so a redeploy keeps its code_sha256.
    Exec bits are kept; symlinks are stored as links, never followed, so nothing
    outside the tree leaks in; __pycache__ and .pyc files are left out."""
    root = Path(path)
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a directory")
    found = []
    # followlinks=False: a symlink to a directory is listed but not entered.
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        found += [Path(dirpath, n) for n in dirnames + filenames if not n.endswith(".pyc")]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for full in sorted(found, key=lambda p: p.relative_to(root).as_posix()):
            name, mode = full.relative_to(root).as_posix(), full.lstat().st_mode
            if stat.S_ISLNK(mode):
                _add_entry(zf, name, stat.S_IFLNK | 0o777, os.readlink(full).encode())
            elif stat.S_ISDIR(mode):
                _add_entry(zf, name + "/", stat.S_IFDIR | 0o755, b"")
            elif stat.S_ISREG(mode):
                perm = 0o755 if mode & 0o111 else 0o644
                _add_entry(zf, name, stat.S_IFREG | perm, full.read_bytes())
            # Sockets, FIFOs and devices are nothing a function can use.
    return buf.getvalue()


def _add_entry(zf: zipfile.ZipFile, name: str, mode: int, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
    info.create_system = 3  # Unix, so readers honour the mode in external_attr
    info.external_attr = mode << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    if stat.S_ISDIR(mode):
        info.external_attr |= 0x10  # MS-DOS directory flag
        info.compress_type = zipfile.ZIP_STORED
    zf.writestr(info, data, compresslevel=6)


def load_code(path: str) -> bytes:
    """The deployment zip for ``--code``: a directory is zipped, a zip sent as is."""
    p = Path(path)
    try:
        if p.is_dir():
            return build_zip(p)
        if p.is_file() and zipfile.is_zipfile(p):
            return p.read_bytes()
    except OSError as exc:
        raise UsageError(f"--code {path}: {exc.strerror or exc}") from None
    raise UsageError(f"--code {path}: not a directory or a zip file")


# --- argument helpers -----------------------------------------------------------

def parse_env(items: list[str] | None) -> dict[str, str] | None:
    """``--env K=V`` values as a dict; None when --env was not given at all."""
    if items is None:
        return None
    env = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--env {item!r}: expected KEY=VALUE")
        env[key] = value
    return env


def read_payload(spec: str, stdin=None) -> bytes:
    """``--payload``: literal JSON, ``@path`` for a file, ``-`` for stdin.
    Not validated: the agent checks the JSON and names what is wrong."""
    if spec == "-":
        return (stdin or sys.stdin.buffer).read()
    if spec.startswith("@"):
        try:
            return Path(spec[1:]).read_bytes()
        except OSError as exc:
            raise UsageError(f"--payload {spec}: cannot read file: {exc.strerror or exc}") from None
    return spec.encode()


_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str, flag: str = "--since", now: datetime | None = None) -> datetime:
    """``10m``/``2h``/``1d`` ago, or an ISO-8601 time (UTC when it has no offset)."""
    m = _DURATION.fullmatch(text.strip())
    if m:
        ago = timedelta(seconds=float(m.group(1)) * _UNIT_SECONDS[m.group(2)])
        return (now or datetime.now(timezone.utc)) - ago
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"{flag} {text!r}: expected a duration like 10m, 2h, 1d "
                         "or an ISO-8601 time") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


# --- output helpers ---------------------------------------------------------------

def _iso(ts, timespec: str = "seconds") -> str:
    """A protobuf Timestamp as ISO-8601 UTC; "" when unset."""
    if not ts.seconds and not ts.nanos:
        return ""
    return ts.ToDatetime(tzinfo=timezone.utc).isoformat(timespec=timespec).replace("+00:00", "Z")


def _config_dict(cfg) -> dict:
    from runtime.v1 import function_pb2
    s = cfg.spec
    return {
        "name": s.name, "runtime": s.runtime, "handler": s.handler,
        "memory_mb": s.memory_mb, "timeout_seconds": s.timeout_seconds,
        "ephemeral_storage_mb": s.ephemeral_storage_mb, "reserved_concurrency": s.reserved_concurrency,
        "provisioned_concurrency": s.provisioned_concurrency,
        "fresh_environment_per_call": s.fresh_environment_per_call,
        "network": function_pb2.NetworkAccess.Name(s.network)[len("NETWORK_"):].lower(),
        "environment": dict(sorted(s.environment.items())), "description": s.description,
        "layers": list(s.layers), "preload_libraries": list(s.preload_libraries),
        "code_sha256": cfg.code_sha256, "code_size": cfg.code_size,
        "code_unpacked_size": cfg.code_unpacked_size, "version": cfg.version,
        "function_arn": cfg.function_arn, "revision": cfg.revision,
        "created": _iso(cfg.created), "last_modified": _iso(cfg.last_modified),
    }


def _config_text(c: dict) -> str:
    env = ", ".join(f"{k}={v}" for k, v in c["environment"].items())
    rows = [
        ("name", c["name"]), ("runtime", c["runtime"]), ("handler", c["handler"]),
        ("memory", f"{c['memory_mb']} MB"), ("timeout", f"{c['timeout_seconds']} s"),
        ("ephemeral storage", f"{c['ephemeral_storage_mb']} MB"),
        ("reserved concurrency", c["reserved_concurrency"] or "-"),
        ("provisioned", c["provisioned_concurrency"] or "-"),
        ("fresh per call", "yes" if c["fresh_environment_per_call"] else "no"),
        ("network", c["network"]),
        ("environment", env or "-"), ("description", c["description"] or "-"),
        ("layers", ", ".join(c["layers"]) or "-"), ("preload", ", ".join(c["preload_libraries"]) or "-"),
        ("code sha256", c["code_sha256"]),
        ("code size", f"{c['code_size']} bytes ({c['code_unpacked_size']} unpacked)"),
        ("version", c["version"]), ("arn", c["function_arn"]), ("revision", c["revision"]),
        ("created", c["created"]), ("last modified", c["last_modified"]),
    ]
    return "\n".join(f"{label + ':':<22}{value}" for label, value in rows)


def _table(headers: list[str], rows: list[list]) -> str:
    cells = [headers] + [[str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells)


def _output(args, obj, text: str) -> None:
    """``obj`` as JSON with --json, else the terminal rendering ``text``."""
    print(json.dumps(obj, indent=2, ensure_ascii=False) if args.json else text)


# --- commands ---------------------------------------------------------------------

class _Client:
    """The service stubs plus what every call carries: deadline and token."""

    def __init__(self, channel: grpc.Channel, args: argparse.Namespace):
        from runtime.v1 import functions_pb2_grpc, invoker_pb2_grpc, layers_pb2_grpc, logs_pb2_grpc, usage_pb2_grpc
        self.functions = functions_pb2_grpc.FunctionsStub(channel)
        self.layers = layers_pb2_grpc.LayersStub(channel)
        self.invoker = invoker_pb2_grpc.InvokerStub(channel)
        self.logs = logs_pb2_grpc.LogsStub(channel)
        self.usage = usage_pb2_grpc.UsageStub(channel)
        self._timeout = args.rpc_timeout
        self._metadata = (("authorization", f"Bearer {args.token}"),) if args.token else None

    def opts(self, default_timeout: float | None = DEFAULT_RPC_TIMEOUT) -> dict:
        return {"timeout": self._timeout or default_timeout, "metadata": self._metadata}


def cmd_deploy(args, client: _Client) -> int:
    from runtime.v1 import function_pb2, functions_pb2 as pb
    env, code = parse_env(args.env), load_code(args.code)  # fail before any call
    chunks = [function_pb2.CodeChunk(data=code[i:i + CHUNK_SIZE])
              for i in range(0, len(code), CHUNK_SIZE)]
    exists = True
    try:
        client.functions.GetFunction(pb.GetFunctionRequest(name=args.name), **client.opts())
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.NOT_FOUND:
            raise
        exists = False
    if not exists:
        spec = function_pb2.FunctionSpec(
            name=args.name, runtime=args.runtime, handler=args.handler,
            memory_mb=args.memory or 0, timeout_seconds=args.function_timeout or 0,
            environment=env or {}, description=args.description or "",
            ephemeral_storage_mb=args.ephemeral_storage or 0,
            reserved_concurrency=args.reserved_concurrency or 0,
            provisioned_concurrency=args.provisioned_concurrency or 0,
            fresh_environment_per_call=bool(args.fresh_per_call),
            network=function_pb2.NetworkAccess.Value(f"NETWORK_{(args.network or 'none').upper()}"),
            layers=args.layer or [], preload_libraries=args.preload or [])
        stream = [pb.CreateFunctionRequest(spec=spec)]
        stream += (pb.CreateFunctionRequest(code=c) for c in chunks)
        cfg = client.functions.CreateFunction(iter(stream), **client.opts())
    else:
        stream = [pb.UpdateFunctionCodeRequest(name=args.name)]
        stream += (pb.UpdateFunctionCodeRequest(code=c) for c in chunks)
        client.functions.UpdateFunctionCode(iter(stream), **client.opts())
        # Only what was given on the command line; the rest keeps its value.
        req = pb.UpdateFunctionConfigurationRequest(
            name=args.name, runtime=args.runtime, handler=args.handler)
        for field, value in (("memory_mb", args.memory), ("timeout_seconds", args.function_timeout),
                             ("description", args.description),
                             ("ephemeral_storage_mb", args.ephemeral_storage),
                             ("reserved_concurrency", args.reserved_concurrency),
                             ("provisioned_concurrency", args.provisioned_concurrency),
                             ("fresh_environment_per_call", args.fresh_per_call),
                             ("network", function_pb2.NetworkAccess.Value(f"NETWORK_{args.network.upper()}")
                              if args.network else None)):
            if value is not None:
                setattr(req, field, value)
        if env is not None:  # replaces all variables; a bare --env clears them
            req.environment.CopyFrom(pb.Environment(variables=env))
        if args.layer is not None:  # replaces all layers, in the order given; a bare --layer removes them
            req.layers.CopyFrom(pb.LayerRefs(refs=args.layer))
        if args.preload is not None:
            req.preload_libraries.CopyFrom(pb.LibraryPaths(paths=args.preload))
        cfg = client.functions.UpdateFunctionConfiguration(req, **client.opts())
    c = _config_dict(cfg)
    _output(args, c, _config_text(c))
    return 0


def cmd_invoke(args, client: _Client) -> int:
    from runtime.v1 import invoker_pb2 as pb
    req = pb.InvokeRequest(function_name=args.name, qualifier=args.qualifier or "",
                           payload=read_payload(args.payload),
                           log_type=pb.LOG_TAIL if args.log_tail else pb.LOG_NONE)
    resp = client.invoker.Invoke(req, **client.opts(INVOKE_RPC_TIMEOUT))
    if args.log_tail and resp.log_result:
        print(resp.log_result, end="" if resp.log_result.endswith("\n") else "\n", file=sys.stderr)
    text = resp.payload.decode("utf-8", errors="replace")
    if args.json:
        try:
            payload = json.loads(text)
        except ValueError:
            payload = text
        timings = {f.name: getattr(resp.timings, f.name) for f in resp.timings.DESCRIPTOR.fields}
        _output(args, {"payload": payload, "function_error": resp.function_error,
                       "executed_version": resp.executed_version, "request_id": resp.request_id,
                       "start_kind": pb.StartKind.Name(resp.start_kind), "timings": timings,
                       "status_code": resp.status_code}, "")
    else:
        print(text)
        if resp.function_error:
            print(f"fnctl: function error ({resp.function_error}), request {resp.request_id}",
                  file=sys.stderr)
    return 1 if resp.function_error else 0


def cmd_list(args, client: _Client) -> int:
    from runtime.v1 import functions_pb2 as pb
    configs, marker = [], None
    while marker != "":  # an empty next_marker ends the listing
        page = client.functions.ListFunctions(
            pb.ListFunctionsRequest(max_items=args.max_items or 0, marker=marker or ""),
            **client.opts())
        configs += [_config_dict(c) for c in page.functions]
        marker = page.next_marker
    _output(args, configs, _table(
        ["NAME", "RUNTIME", "MEMORY", "TIMEOUT", "HANDLER", "LAST_MODIFIED"],
        [[c["name"], c["runtime"], c["memory_mb"], c["timeout_seconds"], c["handler"],
          c["last_modified"]] for c in configs]))
    return 0


def cmd_get(args, client: _Client) -> int:
    from runtime.v1 import functions_pb2 as pb
    c = _config_dict(client.functions.GetFunction(pb.GetFunctionRequest(name=args.name),
                                                  **client.opts()))
    _output(args, c, _config_text(c))
    return 0


def cmd_delete(args, client: _Client) -> int:
    from runtime.v1 import functions_pb2 as pb
    client.functions.DeleteFunction(pb.DeleteFunctionRequest(name=args.name), **client.opts())
    _output(args, {"name": args.name, "deleted": True}, f"deleted {args.name}")
    return 0


def cmd_logs(args, client: _Client) -> int:
    from runtime.v1 import logs_pb2 as pb
    req = pb.GetLogsRequest(function_name=args.name, request_id=args.request_id or "",
                            follow=args.follow, limit=args.limit or 0)
    if args.since:
        req.start_time.FromDatetime(parse_time(args.since, "--since"))
    if args.until:
        req.end_time.FromDatetime(parse_time(args.until, "--until"))
    # A followed stream has no natural end: no deadline unless one was asked for.
    stream = client.logs.GetLogs(req, **client.opts(None if args.follow else DEFAULT_RPC_TIMEOUT))
    try:
        for ev in stream:
            if args.json:
                line = json.dumps({"time": _iso(ev.time, "microseconds"), "request_id": ev.request_id,
                                   "stream": pb.LogStream.Name(ev.stream), "message": ev.message},
                                  ensure_ascii=False)
            else:  # request ids are UUIDs: pad the empty ones to keep columns
                line = f"{_iso(ev.time, 'milliseconds')}  {ev.request_id or '-':<36}  {ev.message}"
            print(line, flush=args.follow)
    except KeyboardInterrupt:
        stream.cancel()  # Ctrl-C is how --follow ends: not an error
    return 0


def cmd_runtimes(args, client: _Client) -> int:
    from runtime.v1 import functions_pb2 as pb
    resp = client.functions.ListRuntimes(pb.ListRuntimesRequest(), **client.opts())
    rows = [{"name": r.name, "version": r.version, "executable": r.executable} for r in resp.runtimes]
    _output(args, rows, _table(["NAME", "VERSION", "EXECUTABLE"], [list(r.values()) for r in rows]))
    return 0


def cmd_usage(args, client: _Client) -> int:
    from runtime.v1 import usage_pb2 as pb
    req = pb.GetUsageRequest(function_name=args.name or "")
    if args.since:
        req.start_time.FromDatetime(parse_time(args.since, "--since"))
    resp = client.usage.GetUsage(req, **client.opts())
    rows = [{"function": r.function_name, "hour": _iso(r.hour, "minutes"), "requests": r.requests,
             "billed_ms": r.billed_ms, "gb_seconds": round(r.gb_seconds, 6),
             "cpu_seconds": round(r.cpu_seconds, 6)} for r in resp.records]
    text = _table(["FUNCTION", "HOUR (UTC)", "REQUESTS", "BILLED MS", "GB-SECONDS", "CPU-SECONDS"],
                  [list(r.values()) for r in rows])
    _output(args, {"billing_granularity_ms": resp.billing_granularity_ms, "records": rows}, text)
    return 0


def _channel(args) -> grpc.Channel:
    options = [("grpc.max_receive_message_length", MAX_MESSAGE),
               ("grpc.max_send_message_length", MAX_MESSAGE)]
    if not args.tls_ca:
        return grpc.insecure_channel(args.endpoint, options=options)
    try:
        root = open(args.tls_ca, "rb").read()
        key = open(args.tls_key, "rb").read() if args.tls_key else None
        cert = open(args.tls_cert, "rb").read() if args.tls_cert else None
    except OSError as exc:
        raise UsageError(f"--tls-ca/--tls-cert/--tls-key: cannot read {exc.filename}: {exc.strerror}") from exc
    creds = grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=cert)
    return grpc.secure_channel(args.endpoint, creds, options=options)


# --- parser and entry point ---------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    # --endpoint/--token/--json work before or after the command. Their defaults
    # are SUPPRESSed so that a subcommand's unset copy cannot overwrite a value
    # given before it; main fills them in. --timeout (RPC deadline)
    # goes before the command only: `deploy --timeout` is the function's timeout.
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument("--endpoint", help="host:port or unix:/path (env RUNTIME_AGENT_ENDPOINT, "
                                           f"default {DEFAULT_ENDPOINT})")
    common.add_argument("--token", help="bearer token for every call (env RUNTIME_AGENT_TOKEN)")
    common.add_argument("--json", action="store_true", help="print machine-readable JSON")
    common.add_argument("--tls-ca", metavar="PEM", help="CA that signed the agent's certificate: use TLS "
                        "(env RUNTIME_AGENT_TLS_CA)")
    common.add_argument("--tls-cert", metavar="PEM", help="client certificate for mutual TLS "
                        "(env RUNTIME_AGENT_TLS_CERT)")
    common.add_argument("--tls-key", metavar="PEM", help="key of --tls-cert (env RUNTIME_AGENT_TLS_KEY)")
    parser = argparse.ArgumentParser(prog="fnctl", parents=[common],
                                     description="Deploy, invoke and inspect functions.")
    parser.add_argument("--timeout", dest="rpc_timeout", type=float, metavar="SECONDS",
                        help=f"RPC deadline (default {INVOKE_RPC_TIMEOUT:g} for invoke, "
                             f"{DEFAULT_RPC_TIMEOUT:g} otherwise)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, func, help_, takes_name=True):
        p = sub.add_parser(name, parents=[common], help=help_, description=help_)
        p.set_defaults(func=func)
        if takes_name:
            p.add_argument("name", help="function name")
        return p

    p = command("deploy", cmd_deploy, "create a function, or update its code and configuration")
    p.add_argument("--runtime", required=True, help="e.g. python3.11")
    p.add_argument("--handler", required=True, help="module.function, e.g. app.handler")
    p.add_argument("--code", required=True, metavar="DIR|ZIP", help="code directory or zip file")
    p.add_argument("--memory", type=int, metavar="MB")
    p.add_argument("--timeout", dest="function_timeout", type=int, metavar="S",
                   help="function timeout in seconds")
    p.add_argument("--env", nargs="*", action="extend", metavar="K=V",
                   help="environment variables, replacing all (a bare --env clears them)")
    p.add_argument("--description")
    p.add_argument("--ephemeral-storage", type=int, metavar="MB")
    p.add_argument("--reserved-concurrency", type=int, metavar="N",
                   help="most invocations at once (0: no per-function limit)")
    p.add_argument("--network", choices=("none", "outbound"),
                   help="none: loopback only (default); outbound: an address on the agent's sandbox network")
    p.add_argument("--provisioned-concurrency", type=int, metavar="N",
                   help="environments kept initialised at all times")
    p.add_argument("--fresh-per-call", type=lambda v: v.lower() in ("1", "true", "yes", "on"), metavar="BOOL",
                   help="true: a new environment for every invocation (no state carried between calls)")
    p.add_argument("--layer", nargs="*", action="extend", metavar="NAME:VERSION",
                   help="a layer version mounted at /opt, repeatable, lowest first (later ones override "
                        "earlier files); replaces all layers (a bare --layer removes them)")
    p.add_argument("--preload", nargs="*", action="extend", metavar="PATH",
                   help="a shared library under /var/task or /opt to load during init, repeatable "
                        "(python runtimes); replaces the list (a bare --preload clears it)")

    p = command("invoke", cmd_invoke, "invoke a function and print its result")
    p.add_argument("--payload", default="{}", metavar="JSON|@FILE|-",
                   help="event JSON, @path to read a file, - for stdin (default {})")
    p.add_argument("--qualifier")
    p.add_argument("--log-tail", action="store_true", help="print the log tail to stderr")

    p = command("list", cmd_list, "list all functions", takes_name=False)
    p.add_argument("--max-items", type=int, metavar="N", help="functions per page (1-1000)")
    command("get", cmd_get, "show a function's configuration")
    command("delete", cmd_delete, "delete a function")

    p = command("logs", cmd_logs, "print a function's log lines")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new lines (Ctrl-C ends)")
    p.add_argument("--request-id", metavar="ID")
    p.add_argument("--since", metavar="WHEN", help="10m, 2h, 1d ago, or an ISO-8601 time (UTC)")
    p.add_argument("--until", metavar="WHEN")
    p.add_argument("--limit", type=int, metavar="N", help="at most the N newest lines")
    command("runtimes", cmd_runtimes, "list the runtimes this host can run", takes_name=False)
    p = command("usage", cmd_usage, "usage per function and hour (requests, GB-seconds, CPU)",
                takes_name=False)
    p.add_argument("name", nargs="?", help="one function (default: all)")
    p.add_argument("--since", metavar="WHEN", help="10m, 2h, 1d ago, or an ISO-8601 time (UTC)")
    from runtime.cli import package  # here, not at the top: it imports build_zip from this module
    package.register(command)
    from runtime.cli import layers  # here, not at the top: it imports helpers from this module
    layers.register(sub, common)
    return parser


def _report_rpc_error(exc: grpc.RpcError, endpoint: str) -> int:
    """One line on stderr, ``fnctl: <error type>: <message>``; the exit code."""
    if isinstance(exc, grpc.Call):
        code, details, trailing = exc.code(), exc.details(), exc.trailing_metadata() or ()
    else:
        code, details, trailing = grpc.StatusCode.UNKNOWN, str(exc), ()
    kind = next((v for k, v in trailing if k == ERROR_TYPE_KEY), None) or code.name
    if code != grpc.StatusCode.UNAVAILABLE:
        print(f"fnctl: {kind}: {details}", file=sys.stderr)
        return 2
    print(f"fnctl: {kind}: {details} (is the agent running at {endpoint}? start it with "
          "`runtime-agent serve`, or pass --endpoint)", file=sys.stderr)
    return 3


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help or a usage error, already printed
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    args.endpoint = (getattr(args, "endpoint", None)
                     or os.environ.get("RUNTIME_AGENT_ENDPOINT") or DEFAULT_ENDPOINT)
    args.token = getattr(args, "token", None) or os.environ.get("RUNTIME_AGENT_TOKEN")
    args.json = getattr(args, "json", False)
    args.tls_ca = getattr(args, "tls_ca", None) or os.environ.get("RUNTIME_AGENT_TLS_CA")
    args.tls_cert = getattr(args, "tls_cert", None) or os.environ.get("RUNTIME_AGENT_TLS_CERT")
    args.tls_key = getattr(args, "tls_key", None) or os.environ.get("RUNTIME_AGENT_TLS_KEY")
    try:
        with _channel(args) as channel:
            return args.func(args, _Client(channel, args))
    except UsageError as exc:
        print(f"fnctl: {exc}", file=sys.stderr)
        return 2
    except grpc.RpcError as exc:
        return _report_rpc_error(exc, args.endpoint)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (fnctl logs | head): quiet, as cat is
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
