"""Authentication and TLS against real agents: refusing to start off
loopback without TLS and tokens, bearer tokens and scopes on every kind of
call, tokens created and revoked while the agent runs, mutual TLS.

Certificates come from the openssl CLI (the venv has no `cryptography`): a
throwaway CA, a server certificate for IP 127.0.0.1, client certificates
from that CA and from a stranger CA.
"""

import json
import secrets
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from framework.agent import AgentProcess, Client, error_type, free_port
from runtime.v1 import functions_pb2, functions_pb2_grpc, invoker_pb2_grpc, logs_pb2, logs_pb2_grpc

pytestmark = [pytest.mark.integration, pytest.mark.root]

AGENT = Path(sys.executable).parent / "runtime-agent"
APP = {"app.py": "def handler(event, context):\n    print('called', flush=True)\n"
                 "    return {'hi': event.get('name')}\n"}


# --- certificates ---------------------------------------------------------------

def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(d: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
             "-keyout", f"{name}.key", "-out", f"{name}.crt", "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign", cwd=d)


def _leaf(d: Path, name: str, ca: str, ext: str) -> None:
    (d / f"{name}.ext").write_text(ext + "\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-set_serial",
             str(secrets.randbits(63)), "-days", "2", "-out", f"{name}.crt", "-extfile", f"{name}.ext", cwd=d)
    (d / f"{name}.key").chmod(0o600)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    _ca(d, "ca")
    _ca(d, "stranger")
    _leaf(d, "server", "ca", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth")
    _leaf(d, "client", "ca", "extendedKeyUsage=clientAuth")
    _leaf(d, "intruder", "stranger", "extendedKeyUsage=clientAuth")
    return d


def _creds(pki: Path, client: str | None = None) -> grpc.ChannelCredentials:
    kw = {}
    if client:
        kw = {"private_key": (pki / f"{client}.key").read_bytes(),
              "certificate_chain": (pki / f"{client}.crt").read_bytes()}
    return grpc.ssl_channel_credentials(root_certificates=(pki / "ca.crt").read_bytes(), **kw)


# --- clients and agents ---------------------------------------------------------

class _Token(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
             grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds `authorization: Bearer` to every call, as fnctl does."""

    def __init__(self, token: str):
        self.md = ("authorization", f"Bearer {token}")

    def _details(self, d):
        return d._replace(metadata=tuple(d.metadata or ()) + (self.md,))

    def intercept_unary_unary(self, cont, d, req):
        return cont(self._details(d), req)

    intercept_unary_stream = intercept_unary_unary

    def intercept_stream_unary(self, cont, d, it):
        return cont(self._details(d), it)

    intercept_stream_stream = intercept_stream_unary


class AuthClient(Client):
    """framework.agent.Client over TLS (when ``creds``) with a token."""

    def __init__(self, target: str, token: str | None = None, creds: grpc.ChannelCredentials | None = None):
        super().__init__(target)
        if creds is not None:
            self.channel.close()
            self.channel = grpc.secure_channel(target, creds)
        base = self.channel
        chan = grpc.intercept_channel(base, _Token(token)) if token else base
        self.functions = functions_pb2_grpc.FunctionsStub(chan)
        self.invoker = invoker_pb2_grpc.InvokerStub(chan)
        self.logs = logs_pb2_grpc.LogsStub(chan)
        self.health = health_pb2_grpc.HealthStub(chan)

    def get_logs(self, name: str) -> list:
        return list(self.logs.GetLogs(logs_pb2.GetLogsRequest(function_name=name), timeout=30))


def tokens_cli(data: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(AGENT), "tokens", *args, "--data-dir", str(data)],
                          capture_output=True, text=True, timeout=60)


def new_token(data: Path, name: str, scope: str) -> str:
    r = tokens_cli(data, "create", "--name", name, "--scope", scope)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


class TlsAgent:
    """`runtime-agent serve` with TLS; AgentProcess checks health over plaintext,
    so this waits for SERVING over TLS (with a client certificate for mTLS)."""

    def __init__(self, data: Path, pki: Path, listen_host: str, *extra: str, client: str | None = None):
        self.data, self.port = data, free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.log_path = data.parent / f"{data.name}.agent.log"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(AGENT), "serve", "--listen", f"{listen_host}:{self.port}", "--data-dir", str(data),
             "--tls-cert", str(pki / "server.crt"), "--tls-key", str(pki / "server.key"), *extra],
            stdout=self._log, stderr=subprocess.STDOUT)
        channel = grpc.secure_channel(self.target, _creds(pki, client))
        stub = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 30
        try:
            while True:
                assert self.proc.poll() is None, f"agent exited with {self.proc.returncode}:\n{self.log()}"
                try:
                    if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == \
                            health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.RpcError:
                    pass
                assert time.monotonic() < deadline, f"agent not serving over TLS:\n{self.log()}"
                time.sleep(0.05)
        finally:
            channel.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        self.proc.terminate()
        try:
            code = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._log.close()
        return code


def _status(call) -> tuple[grpc.StatusCode, str, str]:
    with pytest.raises(grpc.RpcError) as exc:
        call()
    return exc.value.code(), error_type(exc.value), exc.value.details()


UNAUTH = (grpc.StatusCode.UNAUTHENTICATED, "UnauthenticatedException")
DENIED = (grpc.StatusCode.PERMISSION_DENIED, "AccessDeniedException")


# --- refusing to start ----------------------------------------------------------

@pytest.mark.parametrize("flags,missing,present", [
    ((), ["--tls-cert", "--tls-key", "--auth tokens"], []),
    (("--auth", "tokens"), ["--tls-cert", "--tls-key"], ["--auth tokens"]),
    (("--tls-cert", "{pki}/server.crt", "--tls-key", "{pki}/server.key"), ["--auth tokens"], ["--tls-cert"]),
    (("--tls-cert", "{pki}/server.crt", "--tls-key", "{pki}/server.key", "--auth", "none"),
     ["--auth tokens"], ["--tls-cert"]),
])
def test_non_loopback_needs_tls_and_tokens(tmp_path, pki, flags, missing, present):
    args = [f.format(pki=pki) for f in flags]
    r = subprocess.run([str(AGENT), "serve", "--listen", f"0.0.0.0:{free_port()}", "--data-dir",
                        str(tmp_path / "data"), *args], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    line = next(line for line in r.stderr.splitlines() if "refusing" in line)
    for flag in missing:
        assert flag in line, line
    for flag in present:
        assert flag not in line.split("missing:")[1], line
    assert not (tmp_path / "data").exists(), "nothing is set up before the flags are checked"


def test_half_tls_and_bad_key_refuse_to_start(tmp_path, pki):
    for extra, needle in [(("--tls-cert", str(pki / "server.crt")), "--tls-key"),
                          (("--tls-cert", str(pki / "server.crt"), "--tls-key", str(pki / "client.key")),
                           "load_cert_chain"),
                          (("--tls-cert", str(pki / "nope.crt"), "--tls-key", str(pki / "server.key")),
                           "nope.crt")]:
        r = subprocess.run([str(AGENT), "serve", "--listen", f"127.0.0.1:{free_port()}", "--data-dir",
                            str(tmp_path / "data"), *extra], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and needle in r.stderr, r.stderr


# --- TLS + tokens on 0.0.0.0 ----------------------------------------------------

@pytest.fixture(scope="module")
def secure(tmp_path_factory, pki):
    data = tmp_path_factory.mktemp("secure") / "data"
    tokens = {"admin": new_token(data, "ops", "admin"), "invoke": new_token(data, "bot", "invoke")}
    agent = TlsAgent(data, pki, "0.0.0.0", "--auth", "tokens")
    admin = AuthClient(agent.target, tokens["admin"], _creds(pki))
    admin.create("guarded", APP)
    yield agent, tokens
    admin.close()
    code = agent.stop()
    assert code == 0, agent.log()


def test_health_needs_no_token(secure, pki):
    agent, _ = secure
    c = AuthClient(agent.target, None, _creds(pki))
    assert c.health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == \
        health_pb2.HealthCheckResponse.SERVING
    c.close()


def test_plaintext_client_cannot_talk_to_a_tls_port(secure):
    agent, tokens = secure
    c = AuthClient(agent.target, tokens["admin"])
    assert _status(lambda: c.invoke("guarded", {}, timeout=5))[0] == grpc.StatusCode.UNAVAILABLE
    c.close()


def test_no_token_is_unauthenticated_for_every_kind_of_call(secure, pki):
    agent, _ = secure
    c = AuthClient(agent.target, None, _creds(pki))
    unary = _status(lambda: c.invoke("guarded", {}))
    assert unary[:2] == UNAUTH and "Bearer" in unary[2]
    assert _status(lambda: c.create("sneaky", APP))[:2] == UNAUTH                  # client-streaming
    assert _status(lambda: c.get_logs("guarded"))[:2] == UNAUTH                    # server-streaming
    assert _status(lambda: c.functions.ListRuntimes(functions_pb2.ListRuntimesRequest()))[:2] == UNAUTH
    # Same answer whether or not the function exists.
    assert _status(lambda: c.invoke("no-such-function", {})) == unary
    c.close()


def test_bad_and_forged_tokens_are_unauthenticated(secure, pki):
    agent, tokens = secure
    real_id = tokens["invoke"].split("_")[1]
    for bad in ("nonsense", "ra_0123456789ab_" + "0" * 64, f"ra_{real_id}_" + "0" * 64, tokens["invoke"] + "x"):
        c = AuthClient(agent.target, bad, _creds(pki))
        code, etype, msg = _status(lambda: c.invoke("guarded", {}))
        assert (code, etype) == UNAUTH and msg == "invalid or revoked bearer token"
        c.close()
    log = agent.log()
    assert f"token {real_id}: wrong secret for token id" in log
    assert "0" * 64 not in log


def test_invoke_scope_invokes_but_cannot_manage(secure, pki):
    agent, tokens = secure
    c = AuthClient(agent.target, tokens["invoke"], _creds(pki))
    assert c.invoke_json("guarded", {"name": "ada"})[1] == {"hi": "ada"}
    assert any(e.message == "called" for e in c.get_logs("guarded"))              # server-streaming
    assert c.functions.ListRuntimes(functions_pb2.ListRuntimesRequest(), timeout=10).runtimes
    assert _status(lambda: c.create("sneaky", APP))[:2] == DENIED                  # client-streaming
    assert _status(lambda: c.update_code("guarded", APP))[:2] == DENIED
    assert _status(lambda: c.functions.DeleteFunction(functions_pb2.DeleteFunctionRequest(name="guarded"),
                                                      timeout=10))[:2] == DENIED
    # GetFunction would show environment variables: admin only, and no hint of existence.
    there = _status(lambda: c.functions.GetFunction(functions_pb2.GetFunctionRequest(name="guarded"), timeout=10))
    absent = _status(lambda: c.functions.GetFunction(functions_pb2.GetFunctionRequest(name="nope"), timeout=10))
    assert there[:2] == DENIED and there == absent
    c.close()
    admin = AuthClient(agent.target, tokens["admin"], _creds(pki))
    assert [f.spec.name for f in admin.functions.ListFunctions(functions_pb2.ListFunctionsRequest(),
                                                                timeout=10).functions] == ["guarded"]
    admin.close()
    bot_id = tokens["invoke"].split("_")[1]
    assert "refused /runtime.v1.Functions/CreateFunction from ipv4:127.0.0.1:" in agent.log()
    assert f"token {bot_id}: this token lacks the 'admin' scope" in agent.log()


def test_admin_creates_and_invokes(secure, pki):
    agent, tokens = secure
    c = AuthClient(agent.target, tokens["admin"], _creds(pki))
    cfg = c.create("made-by-admin", APP)
    assert cfg.spec.name == "made-by-admin"
    assert c.invoke_json("made-by-admin", {"name": "root"})[1] == {"hi": "root"}
    c.functions.DeleteFunction(functions_pb2.DeleteFunctionRequest(name="made-by-admin"), timeout=30)
    c.close()


def test_tokens_work_and_stop_working_without_restart(secure, pki):
    agent, _ = secure
    token = new_token(agent.data, "temp", "invoke")
    c = AuthClient(agent.target, token, _creds(pki))
    assert c.invoke_json("guarded", {"name": "new"})[1] == {"hi": "new"}
    r = tokens_cli(agent.data, "revoke", token.split("_")[1])
    assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + 5
    while True:  # the agent caches a token for at most 1 s
        try:
            c.invoke("guarded", {})
        except grpc.RpcError as exc:
            assert (exc.code(), error_type(exc)) == UNAUTH
            break
        assert time.monotonic() < deadline, "revoked token still accepted after 5 s"
        time.sleep(0.1)
    c.close()
    assert "token revoked" in agent.log()


def test_secrets_are_nowhere_on_disk_or_in_listings(secure):
    agent, tokens = secure
    secrets_ = [t.split("_")[2] for t in tokens.values()]
    r = tokens_cli(agent.data, "list")
    assert r.returncode == 0 and "ops" in r.stdout and "bot" in r.stdout
    listed = json.loads(tokens_cli(agent.data, "list", "--json").stdout)
    assert {t["name"] for t in listed} >= {"ops", "bot"}
    stored = b"".join(p.read_bytes() for p in agent.data.glob("registry.db*"))
    assert stored
    for s in secrets_:
        assert s not in r.stdout and s not in json.dumps(listed)
        assert s.encode() not in stored
        assert s not in agent.log()


# --- mutual TLS and loopback tokens -----------------------------------------------

def test_mutual_tls_rejects_clients_without_a_trusted_certificate(tmp_path, pki):
    agent = TlsAgent(tmp_path / "data", pki, "127.0.0.1", "--tls-client-ca", str(pki / "ca.crt"),
                     client="client")
    try:
        req = health_pb2.HealthCheckRequest()
        for who in (None, "intruder"):
            c = AuthClient(agent.target, None, _creds(pki, who))
            assert _status(lambda: c.health.Check(req, timeout=5))[0] == grpc.StatusCode.UNAVAILABLE
            c.close()
        c = AuthClient(agent.target, None, _creds(pki, "client"))
        assert c.health.Check(req, timeout=5).status == health_pb2.HealthCheckResponse.SERVING
        c.close()
    finally:
        assert agent.stop() == 0


def test_tokens_on_loopback_without_tls(tmp_path):
    proc = AgentProcess(tmp_path / "data", extra_args=("--auth", "tokens")).start()
    try:
        anon = AuthClient(proc.target)
        assert _status(lambda: anon.invoke("x", {}))[:2] == UNAUTH
        anon.close()
        admin = AuthClient(proc.target, new_token(proc.data_dir, "local", "admin"))
        admin.create("loop", APP)
        assert admin.invoke_json("loop", {"name": "lo"})[1] == {"hi": "lo"}
        admin.close()
    finally:
        assert proc.stop() == 0, proc.log()
