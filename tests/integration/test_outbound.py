"""Opt-in outbound network: a function that asks for it reaches a test host
on the sandbox network; others still have loopback only; neither reaches the
agent. The test host is a network namespace this test makes itself, joined
to the host by a veth pair whose host end carries the sandboxes' macvlans."""


import shutil
import subprocess
import time

import grpc
import pytest

from framework.agent import Client, error_type

pytestmark = [pytest.mark.integration, pytest.mark.root]

NETNS, HOST_IF, PEER_IF = "ra-test-peer", "ra-test-v0", "ra-test-v1"
PEER_IP, SUBNET = "10.213.7.1", "10.213.7.0/24"
PORT = 18099

PROBE = r'''
import socket

def handler(event, context):
    out = {"ifaces": sorted(n for _, n in socket.if_nameindex())}
    for name, (host, port) in event["targets"].items():
        try:
            s = socket.create_connection((host, port), timeout=2)
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            out[name] = s.recv(12).decode()
            s.close()
        except OSError as exc:
            out[name] = f"error {exc.errno}"
    return out
'''


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


@pytest.fixture(scope="module")
def peer():
    if not shutil.which("ip"):
        pytest.skip("needs iproute2's `ip` to build the test network")
    _ip("netns", "del", NETNS, check=False)
    _ip("link", "del", HOST_IF, check=False)
    _ip("netns", "add", NETNS)
    _ip("link", "add", HOST_IF, "type", "veth", "peer", "name", PEER_IF)
    _ip("link", "set", PEER_IF, "netns", NETNS)
    _ip("netns", "exec", NETNS, "ip", "addr", "add", f"{PEER_IP}/24", "dev", PEER_IF)
    _ip("netns", "exec", NETNS, "ip", "link", "set", PEER_IF, "up")
    _ip("netns", "exec", NETNS, "ip", "link", "set", "lo", "up")
    _ip("link", "set", HOST_IF, "up")
    server = subprocess.Popen(["ip", "netns", "exec", NETNS, "python3", "-m", "http.server", str(PORT),
                               "--bind", PEER_IP], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    yield PEER_IP
    server.terminate()
    server.wait(10)
    _ip("netns", "del", NETNS, check=False)
    _ip("link", "del", HOST_IF, check=False)


def test_outbound_opt_in(peer, fresh_agent):
    fresh_agent.extra_args = ("--outbound-iface", HOST_IF, "--outbound-subnet", SUBNET,
                              "--outbound-gateway", PEER_IP)
    fresh_agent.start()
    c = Client(fresh_agent.target)
    targets = {"peer": [PEER_IP, PORT], "agent": ["127.0.0.1", fresh_agent.port]}
    c.create("net-out", {"app.py": PROBE}, network=1)  # NETWORK_OUTBOUND
    c.create("net-none", {"app.py": PROBE})
    _, out = c.invoke_json("net-out", {"targets": targets})
    assert out["peer"].startswith("HTTP/1.0 200"), out
    assert out["agent"].startswith("error"), "the agent's API stays unreachable with outbound access"
    assert out["ifaces"] == ["lo", "vs"]
    _, none = c.invoke_json("net-none", {"targets": targets})
    assert none["peer"].startswith("error") and none["agent"].startswith("error")
    assert none["ifaces"] == ["lo"]
    c.close()


def test_outbound_refused_when_not_configured(client):
    with pytest.raises(grpc.RpcError) as err:
        client.create("net-unconfigured", {"app.py": PROBE}, network=1)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_type(err.value) == "InvalidParameterValueException"
    assert "--outbound-iface" in err.value.details()

