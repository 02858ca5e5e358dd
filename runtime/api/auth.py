"""Who may call what: the bearer-token interceptor and the TLS credentials.

One ``grpc.aio`` server interceptor checks every call before any servicer
runs, against the table below. A call that needs a scope must carry metadata
``authorization: Bearer ra_<id>_<secret>`` naming a token that exists, is not
revoked and holds the scope (``admin`` implies ``invoke``). Otherwise it fails
with UNAUTHENTICATED (no, malformed, unknown or revoked token) or
PERMISSION_DENIED (valid token, scope too small), with trailing metadata
``x-runtime-error-type`` = ``UnauthenticatedException`` /
``AccessDeniedException``, exactly as the servicers' own errors are sent.

The decision is made from the method name and the metadata only, before the
request is parsed, so a refused call learns nothing about functions: the
message is the same whether or not the function it names exists. Every
refusal is logged on ``runtime.auth`` with method, peer, token id (the public
part) and reason; the secret never reaches a log.

Scopes per method (documented in README.md):

    /runtime.v1.Invoker/*                       invoke
    /runtime.v1.Logs/*                          invoke
    /runtime.v1.Functions/ListRuntimes          invoke   (host facts, no function data)
    /runtime.v1.Functions/*                     admin    (GetFunction and ListFunctions too:
                                                          configurations carry environment
                                                          variables, which often hold secrets)
    /runtime.v1.Usage/*                         admin    (every function's consumption)
    /runtime.v1.Layers/*                        admin    (publishing and deleting shared code)
    /grpc.health.v1.Health/*                    none     (load balancers and probes)
    /grpc.reflection.v1(alpha).ServerReflection none     (the API's shape is public)
    anything else                               admin    (fail closed for methods added later)
"""

from __future__ import annotations

import logging
import os
import ssl
import stat

import grpc

from runtime import errors
from runtime.api import status
from runtime.core.tokens import AuthFailure, TokenStore, parse_token

log = logging.getLogger("runtime.auth")

NONE = None
INVOKE = "invoke"
ADMIN = "admin"

# Exact method names first, then service prefixes; the first match wins.
_EXACT = {
    "/runtime.v1.Functions/ListRuntimes": INVOKE,
}
_PREFIXES = (
    ("/runtime.v1.Invoker/", INVOKE),
    ("/runtime.v1.Logs/", INVOKE),
    ("/runtime.v1.Functions/", ADMIN),
    ("/runtime.v1.Usage/", ADMIN),
    ("/runtime.v1.Layers/", ADMIN),
    ("/grpc.health.v1.Health/", NONE),
    ("/grpc.reflection.v1alpha.ServerReflection/", NONE),
    ("/grpc.reflection.v1.ServerReflection/", NONE),
)
_DEFAULT = ADMIN

_MISSING = ("no bearer token: send metadata 'authorization: Bearer <token>' "
            "(fnctl: --token or RUNTIME_AGENT_TOKEN)")


def required_scope(method: str) -> str | None:
    """The scope ``method`` ("/package.Service/Method") needs, None for none."""
    if method in _EXACT:
        return _EXACT[method]
    for prefix, scope in _PREFIXES:
        if method.startswith(prefix):
            return scope
    return _DEFAULT


def bearer_token(metadata) -> str:
    """The token of the call's one ``authorization: Bearer`` header."""
    values = [v for k, v in (metadata or ()) if k == "authorization"]
    if not values:
        raise AuthFailure("no authorization metadata", message=_MISSING)
    if len(values) > 1:
        # Two headers could be read differently by a proxy and by us: refuse both.
        raise AuthFailure("more than one authorization header")
    value = values[0] if isinstance(values[0], str) else values[0].decode("utf-8", "replace")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthFailure("authorization is not 'Bearer <token>'", message=_MISSING)
    return token.strip()


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Checks each call's token and scope against ``tokens`` (one SQLite file
    shared with ``runtime-agent tokens``, cached for at most a second)."""

    def __init__(self, tokens: TokenStore):
        self.tokens = tokens

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        required = required_scope(method)
        if required is None:
            return await continuation(handler_call_details)
        token = None
        try:
            token = bearer_token(handler_call_details.invocation_metadata)
            self.tokens.authenticate(token).require(required, method)
        except errors.AgentError as exc:
            # AuthFailure, PermissionDenied, or ServiceError when SQLite
            # failed: every one refuses the call (fail closed). The id is
            # parsed only here, to keep the accepted path short.
            token_id = parse_token(token) if token else None
            handler = await continuation(handler_call_details)
            if handler is None:
                return None  # no such method: UNIMPLEMENTED, as without auth
            return _refusal(handler, method, token_id, exc)
        return await continuation(handler_call_details)


def _refusal(handler: grpc.RpcMethodHandler, method: str, token_id: str | None,
             exc: errors.AgentError) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that logs and aborts.

    grpc.aio needs a handler of the method's own cardinality to send a status
    (an interceptor cannot abort by itself). No request deserializer: the
    refused request is never parsed, and a streamed request is never read.
    """
    reason = getattr(exc, "reason", None) or exc.message

    async def refuse(_request, context):
        if isinstance(exc, errors.ServiceError):
            log.error("refused %s from %s: token lookup failed: %s", method, context.peer(), exc.message)
        else:
            log.warning("refused %s from %s, token %s: %s", method, context.peer(), token_id or "-", reason)
        await status.abort(context, exc)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse)
    return grpc.unary_unary_rpc_method_handler(refuse)


# --- TLS ------------------------------------------------------------------------

def _read(path: str, flag: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise errors.os_error(f"open({flag} {path})", exc) from exc


def server_credentials(cert_path: str, key_path: str, client_ca_path: str | None = None) -> grpc.ServerCredentials:
    """TLS server credentials; with ``client_ca_path`` clients must present a
    certificate signed by that CA (mutual TLS).

    gRPC core only reports a bad certificate or key at the first handshake,
    as a vague log line; Python's ssl module checks them now so that the
    agent refuses to start with a message naming the file.
    """
    cert, key = _read(cert_path, "--tls-cert"), _read(key_path, "--tls-key")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(cert_path, key_path)
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(f"ssl load_cert_chain(--tls-cert {cert_path}, --tls-key {key_path}) failed: {exc}; "
                         "both must be PEM and the key must match the certificate") from exc
    try:
        mode = os.stat(key_path).st_mode
    except OSError as exc:
        raise errors.os_error(f"stat(--tls-key {key_path})", exc) from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("--tls-key %s is accessible to group or others (mode %o): chmod 600 it",
                    key_path, stat.S_IMODE(mode))
    ca = None
    if client_ca_path:
        ca = _read(client_ca_path, "--tls-client-ca")
        try:
            ctx.load_verify_locations(cafile=client_ca_path)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"ssl load_verify_locations(--tls-client-ca {client_ca_path}) failed: {exc}; "
                             "it must hold PEM CA certificates") from exc
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)
