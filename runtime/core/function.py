"""A function's configuration and the rules every field must satisfy.

The limits are AWS Lambda's (see docs/ARCHITECTURE.md, "Limits"), so code
written for Lambda fits here unchanged. Validation happens once, when a spec
enters the agent; everything downstream trusts a ``FunctionSpec``.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
from typing import Mapping, Sequence

from runtime.errors import InvalidParameterValue

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Python handler "module.function"; the module part may name a package path.
PY_HANDLER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
# Node.js handler "path/to/file.export": /var/task/<file>.js, .mjs or .cjs
# exports <export>; the file part may hold "/" and ".", never a ".." segment.
NODE_HANDLER_RE = re.compile(r"^(?P<file>[A-Za-z0-9_@+-][A-Za-z0-9_.@+-]*(?:/[A-Za-z0-9_.@+-]+)*)"
                             r"\.(?P<export>[A-Za-z_$][A-Za-z0-9_$]*)$")
# Java handler "package.Class::method", or "package.Class" implementing
# RequestHandler or RequestStreamHandler; "$" names a nested class.
JAVA_HANDLER_RE = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*(\.[A-Za-z_$][A-Za-z0-9_$]*)*(::[A-Za-z_$][A-Za-z0-9_$]*)?$")
ENV_KEY_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]+$")
RESERVED_ENV_PREFIXES = ("AWS_", "LAMBDA_", "_")
RESERVED_ENV_KEYS = frozenset({"TZ", "PATH", "LD_LIBRARY_PATH", "PYTHONPATH", "LANG", "HOME"})

MEMORY_MIN_MB, MEMORY_MAX_MB, MEMORY_DEFAULT_MB = 128, 10240, 128
TIMEOUT_MIN_S, TIMEOUT_MAX_S, TIMEOUT_DEFAULT_S = 1, 900, 3
TMP_MIN_MB, TMP_MAX_MB, TMP_DEFAULT_MB = 512, 10240, 512
ENV_MAX_BYTES = 4096
DESCRIPTION_MAX = 256
RESERVED_MAX = 10_000
PROVISIONED_MAX = 1000
LATEST = "$LATEST"
NETWORK_NONE, NETWORK_OUTBOUND = "none", "outbound"
ARN_PREFIX = "arn:runtime-agent:lambda:local:000000000000:function:"
# Layers (runtime.core.layers): AWS's limits and name rules.
MAX_LAYERS = 5
LAYER_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
LAYER_ARN_PREFIX = "arn:runtime-agent:lambda:local:000000000000:layer:"
MiB = 1024 * 1024
DEFAULT_MAX_PACKAGE = 250 * MiB  # code + every layer, unpacked (AWS's limit)
# Shared libraries the bootstrap dlopens during init (runtimes that support it).
MAX_PRELOAD = 16
PRELOAD_ROOTS = ("/var/task/", "/opt/")
PRELOAD_FAMILIES = ("python",)


@dataclasses.dataclass(frozen=True)
class FunctionSpec:
    """What a developer sets. Defaults are filled in by ``validate``."""

    name: str
    runtime: str
    handler: str
    memory_mb: int = MEMORY_DEFAULT_MB
    timeout_seconds: int = TIMEOUT_DEFAULT_S
    environment: Mapping[str, str] = dataclasses.field(default_factory=dict)
    description: str = ""
    ephemeral_storage_mb: int = TMP_DEFAULT_MB
    reserved_concurrency: int = 0   # 0: no per-function limit
    provisioned_concurrency: int = 0
    fresh_environment_per_call: bool = False
    network: str = NETWORK_NONE           # NETWORK_NONE | NETWORK_OUTBOUND
    layers: tuple[str, ...] = ()          # "name:version", lowest first; mounted at /opt
    preload_libraries: tuple[str, ...] = ()  # absolute paths dlopened during init

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["environment"] = dict(self.environment)
        d["layers"], d["preload_libraries"] = list(self.layers), list(self.preload_libraries)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "FunctionSpec":
        fields = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in fields}
        for key in ("layers", "preload_libraries"):
            if key in kw:
                kw[key] = tuple(kw[key])
        return cls(**kw)


@dataclasses.dataclass(frozen=True)
class FunctionConfig:
    """A deployed function: its spec plus what the agent derived."""

    spec: FunctionSpec
    code_sha256: str
    code_size: int
    code_unpacked_size: int
    created: float  # Unix seconds
    last_modified: float
    revision: int
    version: str = LATEST

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def arn(self) -> str:
        return ARN_PREFIX + self.spec.name


def validate_name(name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise InvalidParameterValue(
            "name", f"{name!r} is not a valid function name: use 1-64 characters of [A-Za-z0-9_-]")
    return name


def _in_range(field: str, value: int, lo: int, hi: int, default: int, unit: str) -> int:
    if value == 0:
        return default
    if not lo <= value <= hi:
        raise InvalidParameterValue(field, f"{value} {unit} is out of range: allowed {lo}-{hi} {unit}")
    return value


def validate_environment(env: Mapping[str, str]) -> dict[str, str]:
    total = 0
    for key, value in env.items():
        if not ENV_KEY_RE.match(key):
            raise InvalidParameterValue(
                "environment", f"key {key!r} is invalid: start with a letter, then at least one of [A-Za-z0-9_]")
        if key.startswith(RESERVED_ENV_PREFIXES) or key in RESERVED_ENV_KEYS:
            raise InvalidParameterValue(
                "environment", f"key {key!r} is reserved by the runtime (AWS_*, LAMBDA_*, _*, "
                f"{', '.join(sorted(RESERVED_ENV_KEYS))})")
        if "\0" in value:
            raise InvalidParameterValue("environment", f"value of {key!r} contains a NUL byte")
        total += len(key.encode()) + len(value.encode())
    if total > ENV_MAX_BYTES:
        raise InvalidParameterValue(
            "environment", f"variables take {total} bytes: at most {ENV_MAX_BYTES} bytes are allowed")
    return dict(env)


def validate_handler(runtime: str, handler: str) -> str:
    if runtime.startswith("python"):
        if not PY_HANDLER_RE.match(handler or ""):
            raise InvalidParameterValue(
                "handler", f"{handler!r} is not a Python handler: use 'module.function' (e.g. app.handler)")
    elif runtime.startswith("nodejs"):
        m = NODE_HANDLER_RE.match(handler or "")
        if not m or len(handler) > 128 or any(p in (".", "..") for p in m["file"].split("/")):
            raise InvalidParameterValue(
                "handler", f"{handler!r} is not a Node.js handler: use 'file.export' (e.g. index.handler, "
                "src/app.handler), at most 128 characters: <file> a relative path without '..' "
                "to /var/task/<file>.js, .mjs or .cjs, <export> the name of an exported function")
    elif runtime.startswith("java"):
        if not JAVA_HANDLER_RE.match(handler or "") or len(handler) > 128:
            raise InvalidParameterValue(
                "handler", f"{handler!r} is not a Java handler: use 'package.Class::method' (e.g. "
                "example.Hello::handleRequest) or 'package.Class' for a class implementing RequestHandler "
                "or RequestStreamHandler, at most 128 characters")
    elif not handler or len(handler) > 128 or any(c.isspace() for c in handler):
        raise InvalidParameterValue("handler", f"{handler!r} is invalid: 1-128 characters, no spaces")
    return handler


def parse_layer_ref(ref: str) -> tuple[str, int]:
    """``"name:version"`` (or the layer version's ARN) as (name, version)."""
    text = ref[len(LAYER_ARN_PREFIX):] if ref.startswith(LAYER_ARN_PREFIX) else ref
    name, sep, version = text.rpartition(":")
    if (not sep or not LAYER_NAME_RE.fullmatch(name) or not version.isascii() or not version.isdigit()
            or int(version) < 1):
        raise InvalidParameterValue(
            "layers", f"{ref!r} is not a layer version: use NAME:VERSION (e.g. numpy:3), NAME 1-64 "
            "characters of [A-Za-z0-9_-], VERSION a number from 1, or the layer version's ARN")
    return name, int(version)


def validate_layers(refs: Sequence[str], published: Mapping[str, Sequence[int]]) -> tuple[str, ...]:
    """Normalises each reference to "name:version" and checks that it is
    published. ``published``: layer name -> its versions."""
    if len(refs) > MAX_LAYERS:
        raise InvalidParameterValue(
            "layers", f"{len(refs)} layers given: a function may use at most {MAX_LAYERS}")
    out, names = [], set()
    for ref in refs:
        name, version = parse_layer_ref(ref)
        if name in names:
            raise InvalidParameterValue(
                "layers", f"layer {name!r} is listed twice: a function may use one version of each layer")
        names.add(name)
        versions = published.get(name, ())
        if version not in versions:
            have = (f"published versions of {name}: {', '.join(map(str, sorted(versions)))}" if versions
                    else f"no layer named {name!r} is published (fnctl layer list)")
            raise InvalidParameterValue("layers", f"layer version {name}:{version} does not exist: {have}")
        out.append(f"{name}:{version}")
    return tuple(out)


def validate_preload(runtime: str, paths: Sequence[str], has_layers: bool) -> tuple[str, ...]:
    """Absolute, normalised paths under /var/task or /opt (only with layers)."""
    if not paths:
        return ()
    if not runtime.startswith(PRELOAD_FAMILIES):
        raise InvalidParameterValue(
            "preload_libraries", f"not supported by runtime {runtime!r}: only python3.x runtimes preload "
            "libraries; leave preload_libraries empty")
    if len(paths) > MAX_PRELOAD:
        raise InvalidParameterValue(
            "preload_libraries", f"{len(paths)} libraries given: at most {MAX_PRELOAD} are allowed")
    for path in paths:
        if (not path.startswith(PRELOAD_ROOTS) or posixpath.normpath(path) != path or len(path) > 1024
                or any(c in path for c in ":\0\n")):
            raise InvalidParameterValue(
                "preload_libraries", f"{path!r} is not allowed: use an absolute, normalised path (no '..', "
                "'.', '//' or ':') of a file under /var/task/ or /opt/, at most 1024 characters")
        if path.startswith("/opt/") and not has_layers:
            raise InvalidParameterValue(
                "preload_libraries", f"{path!r} is under /opt, but the function has no layers: /opt holds "
                "only the function's layers")
    return tuple(paths)


def validate_package_size(code_unpacked: int, layers: Sequence[tuple[str, int]], limit: int) -> None:
    """Code and every layer, unpacked, must fit ``limit`` bytes together.
    ``layers``: ("name:version", unpacked bytes) in the function's order."""
    total = code_unpacked + sum(size for _, size in layers)
    if total <= limit:
        return
    parts = ", ".join(f"{ref} {size} bytes" for ref, size in layers)
    mb = f" ({limit // MiB} MB)" if limit % MiB == 0 else ""
    raise InvalidParameterValue(
        "layers" if layers else "code",
        f"function code ({code_unpacked} bytes) and layers ({parts or 'none'}) unpack to {total} bytes "
        f"together: at most {limit} bytes{mb} are allowed")


def validate(spec: FunctionSpec, known_runtimes: Mapping[str, object], outbound: bool = False,
             published_layers: Mapping[str, Sequence[int]] | None = None) -> FunctionSpec:
    """Checks every field and fills in defaults; raises InvalidParameterValue.
    ``outbound``: whether this agent can give environments outbound network;
    ``published_layers``: layer name -> published versions (None: none)."""
    validate_name(spec.name)
    if spec.network not in (NETWORK_NONE, NETWORK_OUTBOUND):
        raise InvalidParameterValue("network", f"{spec.network!r} is not a network mode: allowed none, outbound")
    if spec.network == NETWORK_OUTBOUND and not outbound:
        raise InvalidParameterValue(
            "network", "outbound network is not configured on this agent: its operator must start it with "
                       "--outbound-iface, --outbound-subnet and --outbound-gateway")
    if spec.runtime not in known_runtimes:
        from runtime.errors import RuntimeNotAvailable

        allowed = ", ".join(sorted(known_runtimes)) or "none"
        raise RuntimeNotAvailable(
            "runtime", f"{spec.runtime!r} is not available on this host: allowed {allowed}")
    validate_handler(spec.runtime, spec.handler)
    if len(spec.description) > DESCRIPTION_MAX:
        raise InvalidParameterValue("description", f"at most {DESCRIPTION_MAX} characters are allowed")
    if not 0 <= spec.reserved_concurrency <= RESERVED_MAX:
        raise InvalidParameterValue(
            "reserved_concurrency", f"{spec.reserved_concurrency} is out of range: allowed 0-{RESERVED_MAX} "
            "(0 means no per-function limit)")
    if not 0 <= spec.provisioned_concurrency <= PROVISIONED_MAX:
        raise InvalidParameterValue(
            "provisioned_concurrency", f"{spec.provisioned_concurrency} is out of range: allowed 0-{PROVISIONED_MAX}")
    if spec.reserved_concurrency and spec.provisioned_concurrency > spec.reserved_concurrency:
        raise InvalidParameterValue(
            "provisioned_concurrency", f"{spec.provisioned_concurrency} exceeds reserved_concurrency "
            f"{spec.reserved_concurrency}: provisioned environments must fit the function's own limit")
    if spec.fresh_environment_per_call and spec.provisioned_concurrency:
        raise InvalidParameterValue(
            "provisioned_concurrency", "cannot be combined with fresh_environment_per_call: a fresh "
            "environment is never kept")
    return dataclasses.replace(
        spec,
        memory_mb=_in_range("memory_mb", spec.memory_mb, MEMORY_MIN_MB, MEMORY_MAX_MB, MEMORY_DEFAULT_MB, "MB"),
        timeout_seconds=_in_range("timeout_seconds", spec.timeout_seconds, TIMEOUT_MIN_S, TIMEOUT_MAX_S,
                                  TIMEOUT_DEFAULT_S, "s"),
        ephemeral_storage_mb=_in_range("ephemeral_storage_mb", spec.ephemeral_storage_mb, TMP_MIN_MB,
                                       TMP_MAX_MB, TMP_DEFAULT_MB, "MB"),
        environment=validate_environment(spec.environment),
        layers=validate_layers(spec.layers, published_layers or {}),
        preload_libraries=validate_preload(spec.runtime, spec.preload_libraries, bool(spec.layers)),
    )
