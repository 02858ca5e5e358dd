"""fnctl: the developer command line of runtime-agent.

    fnctl deploy NAME --runtime python3.11 --handler app.handler --code DIR|ZIP
    fnctl invoke NAME [--payload JSON|@file|-]
    fnctl list | get NAME | delete NAME | logs NAME [--follow] | runtimes

Every command is one or a few calls of the runtime.v1 gRPC API. Exit codes:
0 success, 1 the invoked function failed, 2 usage or API error, 3 the agent
is unreachable.

The generated runtime.v1 modules are imported only when a command runs: they
exist in an installed package (setup.py builds them), while ``build_zip`` and
the argument helpers must stay importable from a plain source checkout.
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
# Above the largest function timeout (900 s), so the agent, not the client,
# decides when an invocation has run too long.
INVOKE_RPC_TIMEOUT = 960.0
CHUNK_SIZE = 1 << 20  # the API's maximum code chunk
# Payloads and responses may reach 6 MB; grpc's default receive limit is 4 MB.
MAX_MESSAGE = 64 << 20
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can hold
ERROR_TYPE_KEY = "x-runtime-error-type"


class UsageError(Exception):
    """A bad flag value found after argparse; reported like a usage error."""


# --- deployment zips ---------------------------------------------------------

def build_zip(path: str | os.PathLike) -> bytes:
    """Zip the directory ``path`` in memory, reproducibly.

    The same tree always gives the same bytes (sorted entries, fixed
    timestamps, normalised modes), so an unchanged redeploy gives an unchanged
    code_sha256 and the agent's code store shares it. Executable bits are kept;
    symlinks are stored as links (never followed, so nothing outside the tree
    leaks in); __pycache__ directories and .pyc files are left out.
    """
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
            name = full.relative_to(root).as_posix()
            mode = full.lstat().st_mode
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
    if stat.S_ISDIR(mode):
        info.external_attr |= 0x10  # MS-DOS directory flag
        info.compress_type = zipfile.ZIP_STORED
    else:
        info.compress_type = zipfile.ZIP_DEFLATED
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


# --- argument helpers ----------------------------------------------------------

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

    Not validated here: the agent checks the JSON and answers with a precise
    InvalidRequestContentException.
    """
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
    now = now or datetime.now(timezone.utc)
    m = _DURATION.fullmatch(text.strip())
    if m:
        return now - timedelta(seconds=float(m.group(1)) * _UNIT_SECONDS[m.group(2)])
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
    dt = ts.ToDatetime(tzinfo=timezone.utc)
    return dt.isoformat(timespec=timespec).replace("+00:00", "Z")


def _config_dict(cfg) -> dict:
    s = cfg.spec
    return {
        "name": s.name, "runtime": s.runtime, "handler": s.handler,
        "memory_mb": s.memory_mb, "timeout_seconds": s.timeout_seconds,
        "ephemeral_storage_mb": s.ephemeral_storage_mb,
        "environment": dict(sorted(s.environment.items())),
        "description": s.description,
        "code_sha256": cfg.code_sha256, "code_size": cfg.code_size,
        "code_unpacked_size": cfg.code_unpacked_size,
        "version": cfg.version, "function_arn": cfg.function_arn,
        "revision": cfg.revision,
        "created": _iso(cfg.created), "last_modified": _iso(cfg.last_modified),
    }


def _config_text(c: dict) -> str:
    env = ", ".join(f"{k}={v}" for k, v in c["environment"].items())
    rows = [
        ("name", c["name"]), ("runtime", c["runtime"]), ("handler", c["handler"]),
        ("memory", f"{c['memory_mb']} MB"), ("timeout", f"{c['timeout_seconds']} s"),
        ("ephemeral storage", f"{c['ephemeral_storage_mb']} MB"),
        ("environment", env or "-"), ("description", c["description"] or "-"),
        ("code sha256", c["code_sha256"]),
        ("code size", f"{c['code_size']} bytes ({c['code_unpacked_size']} unpacked)"),
        ("version", c["version"]), ("arn", c["function_arn"]),
        ("revision", c["revision"]), ("created", c["created"]),
        ("last modified", c["last_modified"]),
    ]
    return "\n".join(f"{label + ':':<19}{value}" for label, value in rows)


def _table(headers: list[str], rows: list[list]) -> str:
    cells = [headers] + [[str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells)


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False))


def _show_config(args, cfg) -> None:
    c = _config_dict(cfg)
    if args.json:
        _print_json(c)
    else:
        print(_config_text(c))


# --- commands -----------------------------------------------------------------------

class _Client:
    """The service stubs plus what every call carries: deadline and token."""

    def __init__(self, channel: grpc.Channel, args: argparse.Namespace):
        from runtime.v1 import functions_pb2_grpc, invoker_pb2_grpc, logs_pb2_grpc
        self.functions = functions_pb2_grpc.FunctionsStub(channel)
        self.invoker = invoker_pb2_grpc.InvokerStub(channel)
        self.logs = logs_pb2_grpc.LogsStub(channel)
        self._timeout = args.rpc_timeout
        self._metadata = (("authorization", f"Bearer {args.token}"),) if args.token else None

    def opts(self, default_timeout: float | None = DEFAULT_RPC_TIMEOUT) -> dict:
        return {"timeout": self._timeout or default_timeout, "metadata": self._metadata}


def cmd_deploy(args, client: _Client) -> int:
    from runtime.v1 import function_pb2, functions_pb2 as pb
    env = parse_env(args.env)
    code = load_code(args.code)
    chunks = [function_pb2.CodeChunk(data=code[i:i + CHUNK_SIZE])
              for i in range(0, len(code), CHUNK_SIZE)]
    try:
        client.functions.GetFunction(pb.GetFunctionRequest(name=args.name), **client.opts())
        exists = True
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.NOT_FOUND:
            raise
        exists = False

    if not exists:
        spec = function_pb2.FunctionSpec(
            name=args.name, runtime=args.runtime, handler=args.handler,
            memory_mb=args.memory or 0, timeout_seconds=args.function_timeout or 0,
            environment=env or {}, description=args.description or "",
            ephemeral_storage_mb=args.ephemeral_storage or 0)
        stream = [pb.CreateFunctionRequest(spec=spec)]
        stream += [pb.CreateFunctionRequest(code=c) for c in chunks]
        cfg = client.functions.CreateFunction(iter(stream), **client.opts())
    else:
        stream = [pb.UpdateFunctionCodeRequest(name=args.name)]
        stream += [pb.UpdateFunctionCodeRequest(code=c) for c in chunks]
        client.functions.UpdateFunctionCode(iter(stream), **client.opts())
        # Only what was given on the command line; the rest keeps its value.
        req = pb.UpdateFunctionConfigurationRequest(
            name=args.name, runtime=args.runtime, handler=args.handler)
        for field, value in (("memory_mb", args.memory), ("timeout_seconds", args.function_timeout),
                             ("description", args.description),
                             ("ephemeral_storage_mb", args.ephemeral_storage)):
            if value is not None:
                setattr(req, field, value)
        if env is not None:  # bare --env clears all variables
            req.environment.CopyFrom(pb.Environment(variables=env))
        cfg = client.functions.UpdateFunctionConfiguration(req, **client.opts())
    _show_config(args, cfg)
    return 0


def cmd_invoke(args, client: _Client) -> int:
    from runtime.v1 import invoker_pb2 as pb
    req = pb.InvokeRequest(function_name=args.name, qualifier=args.qualifier or "",
                           payload=read_payload(args.payload),
                           log_type=pb.LOG_TAIL if args.log_tail else pb.LOG_NONE)
    resp = client.invoker.Invoke(req, **client.opts(INVOKE_RPC_TIMEOUT))
    if args.log_tail and resp.log_result:
        sys.stderr.write(resp.log_result if resp.log_result.endswith("\n") else resp.log_result + "\n")
    text = resp.payload.decode("utf-8", errors="replace")
    if args.json:
        try:
            payload = json.loads(text)
        except ValueError:
            payload = text
        _print_json({
            "payload": payload, "function_error": resp.function_error,
            "executed_version": resp.executed_version, "request_id": resp.request_id,
            "start_kind": pb.StartKind.Name(resp.start_kind),
            "timings": {f.name: getattr(resp.timings, f.name)
                        for f in resp.timings.DESCRIPTOR.fields},
            "status_code": resp.status_code,
        })
    else:
        print(text)
        if resp.function_error:
            print(f"fnctl: function error ({resp.function_error}), request {resp.request_id}",
                  file=sys.stderr)
    return 1 if resp.function_error else 0


def cmd_list(args, client: _Client) -> int:
    from runtime.v1 import functions_pb2 as pb
    configs, marker = [], ""
    while True:
        page = client.functions.ListFunctions(
            pb.ListFunctionsRequest(max_items=args.max_items or 0, marker=marker), **client.opts())
        configs += [_config_dict(c) for c in page.functions]
        marker = page.next_marker
        if not marker:
            break
    if args.json:
        _print_json(configs)
    else:
        print(_table(["NAME", "RUNTIME", "MEMORY", "TIMEOUT", "HANDLER", "LAST_MODIFIED"],
                     [[c["name"], c["runtime"], c["memory_mb"], c["timeout_seconds"],
                       c["handler"], c["last_modified"]] for c in configs]))
    return 0


def cmd_get(args, client: _Client) -> int:
    from runtime.v1 import functions_pb2 as pb
    _show_config(args, client.functions.GetFunction(pb.GetFunctionRequest(name=args.name),
                                                    **client.opts()))
    return 0


def cmd_delete(args, client: _Client) -> int:
    from runtime.v1 import functions_pb2 as pb
    client.functions.DeleteFunction(pb.DeleteFunctionRequest(name=args.name), **client.opts())
    if args.json:
        _print_json({"name": args.name, "deleted": True})
    else:
        print(f"deleted {args.name}")
    return 0


def cmd_logs(args, client: _Client) -> int:
    from runtime.v1 import logs_pb2 as pb
    req = pb.GetLogsRequest(function_name=args.name, request_id=args.request_id or "",
                            follow=args.follow, limit=args.limit or 0)
    if args.since:
        req.start_time.FromDatetime(parse_time(args.since, "--since"))
    if args.until:
        req.end_time.FromDatetime(parse_time(args.until, "--until"))
    # A followed stream has no natural end, so no deadline unless one was asked for.
    stream = client.logs.GetLogs(req, **client.opts(None if args.follow else DEFAULT_RPC_TIMEOUT))
    try:
        for ev in stream:
            if args.json:
                line = json.dumps({"time": _iso(ev.time, "microseconds"),
                                   "request_id": ev.request_id,
                                   "stream": pb.LogStream.Name(ev.stream),
                                   "message": ev.message}, ensure_ascii=False)
            else:  # request ids are UUIDs: pad the empty ones to keep columns
                line = f"{_iso(ev.time, 'milliseconds')}  {ev.request_id or '-':<36}  {ev.message}"
            print(line, flush=args.follow)
    except KeyboardInterrupt:
        stream.cancel()  # Ctrl-C is how --follow ends: not an error
    return 0


def cmd_runtimes(args, client: _Client) -> int:
    from runtime.v1 import functions_pb2 as pb
    resp = client.functions.ListRuntimes(pb.ListRuntimesRequest(), **client.opts())
    rows = [{"name": r.name, "version": r.version, "executable": r.executable}
            for r in resp.runtimes]
    if args.json:
        _print_json(rows)
    else:
        print(_table(["NAME", "VERSION", "EXECUTABLE"],
                     [[r["name"], r["version"], r["executable"]] for r in rows]))
    return 0


# --- parser and entry point --------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    # --endpoint/--token/--json work before or after the command. Defaults are
    # SUPPRESSed so that a subcommand's unset copy does not overwrite a value
    # given before it; _resolve_globals fills them in afterwards. The global
    # --timeout is the RPC deadline and stays before the command, because
    # `deploy --timeout` is the function's timeout.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--endpoint", default=argparse.SUPPRESS,
                        help=f"agent address, host:port or unix:/path (env RUNTIME_AGENT_ENDPOINT, "
                             f"default {DEFAULT_ENDPOINT})")
    common.add_argument("--token", default=argparse.SUPPRESS,
                        help="bearer token sent on every call (env RUNTIME_AGENT_TOKEN)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print machine-readable JSON")

    parser = argparse.ArgumentParser(prog="fnctl", parents=[common],
                                     description="Deploy, invoke and inspect runtime-agent functions.")
    parser.add_argument("--timeout", dest="rpc_timeout", type=float, metavar="SECONDS",
                        help=f"RPC deadline (default {INVOKE_RPC_TIMEOUT:g} for invoke, "
                             f"{DEFAULT_RPC_TIMEOUT:g} otherwise)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, func, help_):
        p = sub.add_parser(name, parents=[common], help=help_, description=help_)
        p.set_defaults(func=func)
        return p

    p = command("deploy", cmd_deploy, "create a function, or update its code and configuration")
    p.add_argument("name")
    p.add_argument("--runtime", required=True, help="e.g. python3.11")
    p.add_argument("--handler", required=True, help="module.function, e.g. app.handler")
    p.add_argument("--code", required=True, metavar="DIR|ZIP", help="code directory or zip file")
    p.add_argument("--memory", type=int, metavar="MB")
    p.add_argument("--timeout", dest="function_timeout", type=int, metavar="S",
                   help="function timeout in seconds")
    p.add_argument("--env", nargs="*", action="extend", metavar="K=V",
                   help="environment variables; replaces all of them (bare --env clears)")
    p.add_argument("--description")
    p.add_argument("--ephemeral-storage", type=int, metavar="MB")

    p = command("invoke", cmd_invoke, "invoke a function and print its result")
    p.add_argument("name")
    p.add_argument("--payload", default="{}", metavar="JSON|@FILE|-",
                   help="event JSON, @path to read a file, - for stdin (default {})")
    p.add_argument("--qualifier")
    p.add_argument("--log-tail", action="store_true", help="print the log tail to stderr")

    p = command("list", cmd_list, "list all functions")
    p.add_argument("--max-items", type=int, metavar="N", help="functions per page (1-1000)")

    command("get", cmd_get, "show a function's configuration").add_argument("name")
    command("delete", cmd_delete, "delete a function").add_argument("name")

    p = command("logs", cmd_logs, "print a function's log lines")
    p.add_argument("name")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new lines (Ctrl-C ends)")
    p.add_argument("--request-id", metavar="ID")
    p.add_argument("--since", metavar="WHEN", help="10m, 2h, 1d ago, or an ISO-8601 time")
    p.add_argument("--until", metavar="WHEN")
    p.add_argument("--limit", type=int, metavar="N", help="at most the N newest lines")

    command("runtimes", cmd_runtimes, "list the runtimes this host can run")
    return parser


def _resolve_globals(args: argparse.Namespace) -> None:
    args.endpoint = (getattr(args, "endpoint", None)
                     or os.environ.get("RUNTIME_AGENT_ENDPOINT") or DEFAULT_ENDPOINT)
    args.token = getattr(args, "token", None) or os.environ.get("RUNTIME_AGENT_TOKEN") or None
    args.json = getattr(args, "json", False)


def _report_rpc_error(exc: grpc.RpcError, endpoint: str) -> int:
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    metadata = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    kind = next((v for k, v in (metadata or ()) if k == ERROR_TYPE_KEY), None) or code.name
    if code == grpc.StatusCode.UNAVAILABLE:
        # One line still: scripts can rely on stderr's first line being the error.
        print(f"fnctl: {kind}: {details} (is the agent running at {endpoint}? "
              "start it with `runtime-agent serve` or pass --endpoint)", file=sys.stderr)
        return 3
    print(f"fnctl: {kind}: {details}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help or a usage error; argparse printed it
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    _resolve_globals(args)
    options = [("grpc.max_receive_message_length", MAX_MESSAGE),
               ("grpc.max_send_message_length", MAX_MESSAGE)]
    try:
        with grpc.insecure_channel(args.endpoint, options=options) as channel:
            return args.func(args, _Client(channel, args))
    except UsageError as exc:
        print(f"fnctl: {exc}", file=sys.stderr)
        return 2
    except grpc.RpcError as exc:
        return _report_rpc_error(exc, args.endpoint)
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("runtime.v1"):
            raise
        print("fnctl: generated gRPC modules runtime.v1 are missing; install the package "
              "(pip install .)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (fnctl logs | head); exit quietly, as cat does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
