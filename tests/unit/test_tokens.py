"""runtime.core.tokens: format, hashing, scopes, revocation, the cache, and
the method → scope table of runtime.api.auth. No root, no agent."""

import sqlite3
import time

import pytest

from runtime.api.auth import bearer_token, required_scope
from runtime.core import tokens as T
from runtime.errors import (InvalidParameterValue, PermissionDenied, ResourceNotFound, ServiceError,
                            Unauthenticated)


@pytest.fixture
def store(tmp_path):
    s = T.TokenStore(tmp_path / "registry.db")
    yield s
    s.close()


def test_token_format_and_only_the_hash_is_stored(store, tmp_path):
    info, token = store.create("ci", ["admin"])
    assert token.startswith(f"ra_{info.id}_") and T.parse_token(token) == info.id
    secret = token.split("_")[2]
    assert len(secret) == 64 and len(info.id) == 12
    rows = sqlite3.connect(tmp_path / "registry.db").execute("SELECT * FROM tokens").fetchall()
    assert len(rows) == 1 and T.hash_token(token) in rows[0]
    assert not any(secret in str(col) for col in rows[0])
    data = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("registry.db"))
    assert secret.encode() not in data and token.encode() not in data


def test_tokens_are_unique(store):
    made = [store.create(f"t{i}", ["invoke"]) for i in range(20)]
    assert len({t for _, t in made}) == 20 and len({i.id for i, _ in made}) == 20


def test_authenticate_returns_the_record(store):
    info, token = store.create("bot", ["invoke"])
    got = store.authenticate(token)
    assert (got.id, got.name, got.scopes, got.revoked) == (info.id, "bot", ("invoke",), False)


@pytest.mark.parametrize("bad", ["", "ra_", "Bearer x", "ra_zzzzzzzzzzzz_" + "0" * 64, "ra_0123456789ab_short",
                                 "ra_0123456789ab_" + "0" * 64, "xx_0123456789ab_" + "0" * 64])
def test_bad_tokens_are_unauthenticated(store, bad):
    store.create("real", ["admin"])
    with pytest.raises(Unauthenticated):
        store.authenticate(bad)


def test_wrong_secret_for_a_real_id(store):
    info, token = store.create("real", ["admin"])
    forged = f"ra_{info.id}_" + ("0" * 64 if not token.endswith("0" * 64) else "1" * 64)
    with pytest.raises(T.AuthFailure) as exc:
        store.authenticate(forged)
    assert exc.value.reason == "wrong secret for token id" and exc.value.token_id == info.id
    # The client-facing message does not say which check failed.
    assert exc.value.message == "invalid or revoked bearer token"


def test_admin_implies_invoke_but_not_the_reverse(store):
    admin = store.authenticate(store.create("a", ["admin"])[1])
    invoke = store.authenticate(store.create("i", ["invoke"])[1])
    assert admin.allows("admin") and admin.allows("invoke")
    assert invoke.allows("invoke") and not invoke.allows("admin")
    admin.require("admin", "/x")
    with pytest.raises(PermissionDenied) as exc:
        invoke.require("admin", "/runtime.v1.Functions/CreateFunction")
    assert exc.value.code == "AccessDeniedException" and "admin" in exc.value.message
    assert T.expand_scopes(["admin"]) == {"admin", "invoke"} and T.expand_scopes(["bogus"]) == frozenset()


def test_create_validates(store):
    with pytest.raises(InvalidParameterValue):
        store.create("x", ["root"])
    with pytest.raises(InvalidParameterValue):
        store.create("x", [])
    for name in ("", " lead", "x" * 65, "new\nline"):
        with pytest.raises(InvalidParameterValue):
            store.create(name, ["invoke"])


def test_revoke_is_seen_by_another_connection_within_the_cache_ttl(tmp_path):
    """The agent and `runtime-agent tokens revoke` hold separate connections."""
    agent = T.TokenStore(tmp_path / "registry.db", cache_ttl=0.2)
    cli = T.TokenStore(tmp_path / "registry.db", cache_ttl=0)
    try:
        info, token = cli.create("bot", ["invoke"])
        assert agent.authenticate(token).id == info.id  # new token: seen at once, no restart
        revoked = cli.revoke(info.id)
        assert revoked.revoked and revoked.revoked_at
        agent.authenticate(token)  # still cached: at most cache_ttl
        time.sleep(0.25)
        with pytest.raises(T.AuthFailure) as exc:
            agent.authenticate(token)
        assert exc.value.reason == "token revoked"
        assert [t.revoked for t in cli.list()] == [True]
    finally:
        agent.close()
        cli.close()


def test_revoke_in_the_same_store_drops_the_cache_entry(store):
    info, token = store.create("bot", ["invoke"])
    store.authenticate(token)
    store.revoke(f"ra_{info.id}")  # the prefixed form is accepted too
    with pytest.raises(Unauthenticated):
        store.authenticate(token)
    store.revoke(info.id)  # idempotent
    with pytest.raises(ResourceNotFound):
        store.revoke("000000000000")


def test_sqlite_failures_name_the_call_and_refuse(tmp_path):
    s = T.TokenStore(tmp_path / "registry.db")
    _, token = s.create("bot", ["invoke"])
    s.db.close()
    with pytest.raises(ServiceError) as exc:
        s.authenticate(token)
    assert not isinstance(exc.value, Unauthenticated)  # INTERNAL, logged as an agent fault
    assert "SELECT FROM tokens on " in exc.value.message and str(tmp_path) in exc.value.message
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(ServiceError, match="sqlite3.connect"):
        T.TokenStore(tmp_path / "dir.db")


def test_list_never_carries_secrets(store):
    _, token = store.create("a", ["admin"])
    listed = store.list()
    assert [t.name for t in listed] == ["a"]
    assert token.split("_")[2] not in repr(listed) + repr([t.to_json() for t in listed])


def test_method_scopes():
    assert required_scope("/runtime.v1.Invoker/Invoke") == "invoke"
    assert required_scope("/runtime.v1.Logs/GetLogs") == "invoke"
    assert required_scope("/runtime.v1.Functions/ListRuntimes") == "invoke"
    for m in ("CreateFunction", "UpdateFunctionCode", "UpdateFunctionConfiguration", "GetFunction",
              "ListFunctions", "DeleteFunction"):
        assert required_scope(f"/runtime.v1.Functions/{m}") == "admin"
    assert required_scope("/grpc.health.v1.Health/Check") is None
    assert required_scope("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo") is None
    assert required_scope("/runtime.v2.Something/New") == "admin"  # unknown: fail closed


def test_bearer_token_parsing():
    assert bearer_token((("authorization", "Bearer abc"),)) == "abc"
    assert bearer_token((("x", "y"), ("authorization", "bearer  abc "))) == "abc"
    for md in ((), (("authorization", "Basic abc"),), (("authorization", "Bearer "),),
               (("authorization", "Bearer a"), ("authorization", "Bearer b"))):
        with pytest.raises(Unauthenticated):
            bearer_token(md)


# --- the interceptor on a real grpc.aio server, with stand-in methods ----------

def _serve_and_call(store, token):
    """Calls a unary, a client-streaming, a server-streaming and a health-like
    method on an in-process server guarded by AuthInterceptor; returns
    {method: (status code name, error type)}, "OK" for success."""
    import asyncio

    import grpc

    from runtime.api.auth import AuthInterceptor

    async def unary(req, ctx):
        return b"ok"

    async def client_stream(it, ctx):
        return b"".join([m async for m in it])

    async def server_stream(req, ctx):
        yield b"a"
        yield b"b"

    handlers = {
        "/runtime.v1.Invoker/Invoke": grpc.unary_unary_rpc_method_handler(unary),
        "/runtime.v1.Functions/CreateFunction": grpc.stream_unary_rpc_method_handler(client_stream),
        "/runtime.v1.Logs/GetLogs": grpc.unary_stream_rpc_method_handler(server_stream),
        "/grpc.health.v1.Health/Check": grpc.unary_unary_rpc_method_handler(unary),
    }

    class Generic(grpc.GenericRpcHandler):
        def service(self, details):
            return handlers.get(details.method)

    async def run():
        server = grpc.aio.server(interceptors=(AuthInterceptor(store),))
        server.add_generic_rpc_handlers((Generic(),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        md = (("authorization", f"Bearer {token}"),) if token else None
        out = {}
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            calls = {
                "Invoke": lambda: ch.unary_unary("/runtime.v1.Invoker/Invoke")(b"x", metadata=md),
                "Create": lambda: ch.stream_unary("/runtime.v1.Functions/CreateFunction")(
                    iter([b"spec", b"zip"]), metadata=md),
                "Logs": lambda: _collect(ch.unary_stream("/runtime.v1.Logs/GetLogs")(b"x", metadata=md)),
                "Health": lambda: ch.unary_unary("/grpc.health.v1.Health/Check")(b"", metadata=md),
                "Unknown": lambda: ch.unary_unary("/runtime.v1.Nope/Nope")(b"", metadata=md),
            }
            for name, call in calls.items():
                try:
                    await call()
                    out[name] = ("OK", "")
                except grpc.aio.AioRpcError as exc:
                    etype = dict(exc.trailing_metadata() or ()).get("x-runtime-error-type", "")
                    out[name] = (exc.code().name, etype)
        await server.stop(None)
        return out

    return asyncio.run(run())


async def _collect(call):
    return [m async for m in call]


def test_interceptor_refuses_every_cardinality(store):
    got = _serve_and_call(store, None)
    unauth = ("UNAUTHENTICATED", "UnauthenticatedException")
    assert got == {"Invoke": unauth, "Create": unauth, "Logs": unauth, "Health": ("OK", ""),
                   "Unknown": ("UNIMPLEMENTED", "")}
    assert _serve_and_call(store, "ra_0123456789ab_" + "0" * 64)["Create"] == unauth


def test_interceptor_scopes(store):
    denied = ("PERMISSION_DENIED", "AccessDeniedException")
    invoke = _serve_and_call(store, store.create("bot", ["invoke"])[1])
    assert invoke["Invoke"] == invoke["Logs"] == ("OK", "") and invoke["Create"] == denied
    admin = _serve_and_call(store, store.create("ops", ["admin"])[1])
    assert set(admin.values()) == {("OK", ""), ("UNIMPLEMENTED", "")}


def test_interceptor_logs_refusals_without_the_secret(store, caplog):
    _, token = store.create("bot", ["invoke"])
    with caplog.at_level("WARNING", logger="runtime.auth"):
        _serve_and_call(store, token)
    refused = [r.getMessage() for r in caplog.records if r.name == "runtime.auth"]
    assert any("refused /runtime.v1.Functions/CreateFunction from ipv4:127.0.0.1" in m for m in refused)
    assert all(token.split("_")[2] not in m for m in refused)
