"""Hostile functions against the network: egress over TCP, UDP, IPv6, raw and
packet sockets, the agent's own API on the host loopback, host abstract unix
sockets, and other sandboxes' loopback listeners.

Every sandbox has its own network namespace holding only ``lo``.
"""

import socket
import uuid

import pytest

from seclib import assert_bystander_ok, call, denied

pytestmark = [pytest.mark.integration, pytest.mark.root]

NET = '''
def handler(event, context):
    out = {}
    for key, (family, kind, host, port) in event.get("connect", {}).items():
        def connect():
            s = socket.socket(getattr(socket, family), getattr(socket, kind))
            s.settimeout(3)
            try:
                s.connect((host, port))
                return "connected"
            finally:
                s.close()
        out[key] = attempt(connect)
    for key, (family, host, port) in event.get("sendto", {}).items():
        def send():
            with socket.socket(getattr(socket, family), socket.SOCK_DGRAM) as s:
                return s.sendto(b"exfiltrated", (host, port))
        out[key] = attempt(send)
    if event.get("interfaces"):
        out["interfaces"] = sorted(name for _, name in socket.if_nameindex())
        with open("/proc/net/route") as f:
            out["routes"] = f.read().splitlines()[1:]
        with open("/proc/net/ipv6_route") as f:
            out["routes6"] = [l.split()[-1] for l in f.read().splitlines()]
    if event.get("dns"):
        try:
            out["dns"] = {"ok": True, "value": socket.getaddrinfo(event["dns"], 443)[0][4][0]}
        except socket.gaierror as exc:
            out["dns"] = {"ok": False, "errno": exc.errno, "error": str(exc)}
    return out
'''


def _host_ipv4() -> str:
    """The host's own address on its default route (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
            return s.getsockname()[0]
        except OSError:
            return "192.0.2.1"


@pytest.fixture
def net(deploy, client):
    deploy("sec-net", NET)

    def run(**event):
        return call(client, "sec-net", event)[1]

    return run


def test_only_loopback_interface(net, client):
    """network namespace: the sandbox's namespace holds only lo, and its routing
    tables know nothing but loopback."""
    r = net(interfaces=True)
    assert r["interfaces"] == ["lo"]
    assert all(line.split()[0] == "lo" for line in r["routes"]), r["routes"]
    assert set(r["routes6"]) <= {"lo"}, r["routes6"]
    assert_bystander_ok(client)


def test_tcp_egress_unreachable(net, client):
    """network namespace: no route leaves the sandbox; TCP to the internet and to
    the host's own LAN address fails at once with ENETUNREACH."""
    host_ip = _host_ipv4()
    r = net(connect={"internet": ["AF_INET", "SOCK_STREAM", "1.1.1.1", 443],
                     "dns-over-tcp": ["AF_INET", "SOCK_STREAM", "8.8.8.8", 53],
                     "host-lan": ["AF_INET", "SOCK_STREAM", host_ip, 22],
                     "metadata": ["AF_INET", "SOCK_STREAM", "169.254.169.254", 80]})
    for key in ("internet", "dns-over-tcp", "host-lan", "metadata"):
        denied(r[key], "ENETUNREACH")
    assert_bystander_ok(client)


def test_udp_egress_and_dns_fail(net, client):
    """network namespace: UDP datagrams have no route (ENETUNREACH); name
    resolution fails (empty resolv.conf, nothing listens on the own loopback)."""
    r = net(sendto={"udp-dns": ["AF_INET", "8.8.8.8", 53], "ntp": ["AF_INET", "129.6.15.28", 123],
                    "broadcast": ["AF_INET", "255.255.255.255", 9]},
            dns="example.com")
    denied(r["udp-dns"], "ENETUNREACH")
    denied(r["ntp"], "ENETUNREACH")
    denied(r["broadcast"], "ENETUNREACH", "EACCES")
    assert r["dns"]["ok"] is False, r["dns"]
    assert r["dns"]["errno"] in (socket.EAI_AGAIN, socket.EAI_NONAME), r["dns"]
    assert_bystander_ok(client)


def test_ipv6_egress_unreachable(net, client):
    """network namespace: IPv6 to the internet has no route (ENETUNREACH); the
    sandbox's own ::1 has nothing listening (ECONNREFUSED)."""
    r = net(connect={"internet6": ["AF_INET6", "SOCK_STREAM", "2606:4700:4700::1111", 443],
                     "loopback6": ["AF_INET6", "SOCK_STREAM", "::1", 22]},
            sendto={"udp6": ["AF_INET6", "2001:4860:4860::8888", 53]})
    denied(r["internet6"], "ENETUNREACH")
    denied(r["udp6"], "ENETUNREACH")
    denied(r["loopback6"], "ECONNREFUSED")
    assert_bystander_ok(client)


RAW = '''
def handler(event, context):
    return {
        "raw_icmp": attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()),
        "raw_tcp": attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP).close()),
        "raw6": attempt(lambda: socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6).close()),
        "packet": attempt(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)).close()),
        "lo_down": attempt(_set_lo_flags, 0),
    }

def _set_lo_flags(flags):
    # SIOCSIFFLAGS on lo needs CAP_NET_ADMIN in the namespace's owning user namespace.
    import fcntl, struct
    with socket.socket() as s:
        return fcntl.ioctl(s, 0x8914, struct.pack("16sH22x", b"lo", flags)) and "changed"
'''


def test_raw_and_packet_sockets_denied(deploy, client):
    """uid (no CAP_NET_RAW / CAP_NET_ADMIN): raw IPv4/IPv6 and AF_PACKET sockets
    fail with EPERM; the sandbox cannot reconfigure its interface (SIOCSIFFLAGS: EPERM)."""
    deploy("sec-net-raw", RAW)
    _, r = call(client, "sec-net-raw")
    for key in ("raw_icmp", "raw_tcp", "raw6", "packet"):
        denied(r[key], "EPERM")
    denied(r["lo_down"], "EPERM")
    assert_bystander_ok(client)


def test_agent_grpc_port_unreachable(net, client, agent):
    """network namespace: 127.0.0.1 inside is the sandbox's own loopback, so the
    agent's gRPC port on the host's loopback is not there (ECONNREFUSED)."""
    with socket.create_connection(("127.0.0.1", agent.port), timeout=5):
        pass  # precondition: the agent does listen on the host
    r = net(connect={"v4": ["AF_INET", "SOCK_STREAM", "127.0.0.1", agent.port],
                     "v6": ["AF_INET6", "SOCK_STREAM", "::1", agent.port],
                     "localhost-range": ["AF_INET", "SOCK_STREAM", "127.0.0.2", agent.port]})
    denied(r["v4"], "ECONNREFUSED")
    denied(r["v6"], "ECONNREFUSED")
    denied(r["localhost-range"], "ECONNREFUSED")
    assert_bystander_ok(client)


ABSTRACT = '''
def handler(event, context):
    def connect():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect("\\0" + event["name"])
            s.sendall(b"hello from the sandbox")
            return "connected"
    return attempt(connect)
'''


def test_host_abstract_unix_socket_unreachable(deploy, client):
    """network namespace: abstract unix sockets belong to a network namespace,
    so a listener on the host (as D-Bus, X11 or container runtimes use) is not
    visible from the sandbox (ECONNREFUSED)."""
    name = f"sec-canary-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind("\0" + name)
        listener.listen(8)
        listener.settimeout(0.5)
        deploy("sec-net-abstract", ABSTRACT)
        _, r = call(client, "sec-net-abstract", {"name": name})
        denied(r, "ECONNREFUSED")
        with pytest.raises(socket.timeout):
            listener.accept()
    assert_bystander_ok(client)


LISTENER = '''
_server = None

def handler(event, context):
    global _server
    if event["op"] == "listen":
        _server = socket.socket()
        _server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        _server.bind(("127.0.0.1", event["port"]))
        _server.listen(16)
        return "listening"
    def connect():
        with socket.create_connection(("127.0.0.1", event["port"]), timeout=3):
            return "connected"
    return attempt(connect)
'''


def test_other_sandbox_loopback_unreachable(deploy, client):
    """network namespace: each environment has its own loopback; a port another
    function listens on is refused (ECONNREFUSED), while the listener itself
    can connect to it."""
    port = 47_001
    deploy("sec-net-listener", LISTENER)
    deploy("sec-net-prober", LISTENER)
    assert call(client, "sec-net-listener", {"op": "listen", "port": port})[1] == "listening"
    _, r = call(client, "sec-net-prober", {"op": "connect", "port": port})
    denied(r, "ECONNREFUSED")
    _, r = call(client, "sec-net-listener", {"op": "connect", "port": port})
    assert r == {"ok": True, "value": "connected"}, "the listener is really there (same warm environment)"
    assert_bystander_ok(client)
