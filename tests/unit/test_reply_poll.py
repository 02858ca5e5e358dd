"""Reply polling: an environment reads its control socket without sleeping
for a short while after sending an event. The socket and frame parser are
the real ones; this test plays the bootstrap's side of the socketpair."""

import asyncio
import socket
import struct
import time
import types

from runtime.sandbox.environment import Environment, State, _Control

HDR = struct.Struct(">cI")


def _reply(kind: bytes, handler_ns: int, data: bytes) -> bytes:
    body = struct.pack(">Q", handler_ns) + data
    return HDR.pack(kind, len(body)) + body


async def _connected_environment():
    """An IDLE environment whose control socket is one end of a socketpair,
    wired exactly as Environment.start wires it; returns (env, peer)."""
    ours, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    env = Environment("poll-test", types.SimpleNamespace(environ={}, memory_mb=128), None, lambda *a: None)
    ours.setblocking(False)
    env._sock = ours
    env._own_fds = frozenset((ours.fileno(),))
    env._transport, env._control = await asyncio.get_running_loop().connect_accepted_socket(
        lambda: _Control(env), ours)
    env.state = State.IDLE
    return env, peer


def _awaiting_reply(env) -> asyncio.Future:
    """Puts ``env`` in the state invoke() leaves it in after sending an
    event; returns the future the reply resolves."""
    env._waiter = asyncio.get_running_loop().create_future()
    env.state = State.BUSY
    return env._waiter


def test_a_reply_already_sent_is_taken_without_the_event_loop():
    async def scenario():
        env, peer = await _connected_environment()
        waiter = _awaiting_reply(env)
        peer.sendall(_reply(b"S", 42, b'"done"'))
        assert env._poll_reply(waiter, time.perf_counter_ns() + 1_000_000_000) == "answered"
        # Resolved synchronously: no await happened since the reply was sent.
        assert waiter.done() and waiter.result() == (b"S", struct.pack(">Q", 42) + b'"done"')
        env._transport.abort()
        peer.close()

    asyncio.run(scenario())


def test_polling_gives_up_after_its_time_and_the_loop_finishes_the_frame():
    async def scenario():
        env, peer = await _connected_environment()
        waiter = _awaiting_reply(env)
        frame = _reply(b"S", 7, b"[1, 2, 3]")
        peer.sendall(frame[:9])  # header and part of the body only
        t0 = time.perf_counter_ns()
        assert env._poll_reply(waiter, t0 + 2_000_000) == "expired"
        assert not waiter.done()
        assert time.perf_counter_ns() - t0 >= 2_000_000, "returned before its polling time"
        peer.sendall(frame[9:])  # the rest arrives through the transport, same parser state
        kind, body = await asyncio.wait_for(waiter, 5)
        assert (kind, body[8:]) == (b"S", b"[1, 2, 3]")
        env._transport.abort()
        peer.close()

    asyncio.run(scenario())


def test_polling_leaves_eof_to_the_transport():
    async def scenario():
        env, peer = await _connected_environment()
        lost = []
        env._on_control_lost = lambda: lost.append(True)
        waiter = _awaiting_reply(env)
        peer.close()
        t0 = time.perf_counter_ns()
        assert env._poll_reply(waiter, t0 + 1_000_000_000) == "yielded"
        assert time.perf_counter_ns() - t0 < 500_000_000, "kept polling a closed socket"
        assert not waiter.done()
        for _ in range(100):  # the transport sees the same EOF and reports it
            if lost:
                break
            await asyncio.sleep(0.01)
        assert lost == [True]
        env._transport.abort()

    asyncio.run(scenario())


def test_invoke_with_polling_returns_the_reply_and_records_its_time():
    async def scenario():
        env, peer = await _connected_environment()
        loop = asyncio.get_running_loop()

        def bootstrap():  # answers one event, as bootstraps/python does
            data = b""
            while len(data) < 5 or len(data) < 5 + HDR.unpack_from(data)[1]:
                data += peer.recv(65536)
            assert data[:1] == b"I"
            request_id = data[5:].split(b"\n", 1)[0]
            peer.sendall(_reply(b"S", 1000, b'{"id": "' + request_id + b'"}'))

        answered = loop.run_in_executor(None, bootstrap)
        outcome = await env.invoke("rid-1", b"{}", 3.0, "arn:fn", None, poll_ns=2_000_000_000)
        await answered
        assert outcome.payload == b'{"id": "rid-1"}' and outcome.error_type == "" and outcome.handler_ns == 1000
        assert env.state is State.IDLE and env.invocations == 1
        assert 0 < env.reply_ns < 2_000_000_000
        # The executor thread that plays the bootstrap wakes the loop when it
        # returns, which can end the poll before the reply is read: both fine.
        assert env.poll_outcome in ("answered", "yielded")
        env._transport.abort()
        peer.close()

    asyncio.run(scenario())


def test_polling_stops_at_once_when_the_loop_has_other_work():
    """A request from gRPC or another environment's reply (any other ready
    descriptor), or a callback already due, ends the poll at once."""
    async def scenario():
        loop = asyncio.get_running_loop()
        env, peer = await _connected_environment()
        waiter = _awaiting_reply(env)
        other, other_peer = socket.socketpair()
        loop.add_reader(other.fileno(), lambda: None)
        other_peer.sendall(b"x")  # someone else's input is ready
        t0 = time.perf_counter_ns()
        assert env._poll_reply(waiter, t0 + 2_000_000_000) == "yielded"
        assert time.perf_counter_ns() - t0 < 1_000_000_000, "kept polling while the loop had work"
        assert not waiter.done()
        loop.remove_reader(other.fileno())

        loop.call_soon(lambda: None)  # a callback is due
        t0 = time.perf_counter_ns()
        assert env._poll_reply(waiter, t0 + 2_000_000_000) == "yielded"
        assert time.perf_counter_ns() - t0 < 1_000_000_000, "kept polling with a callback due"
        await asyncio.sleep(0)

        peer.sendall(_reply(b"S", 1, b"null"))  # the reply itself is not "other work"
        assert env._poll_reply(waiter, time.perf_counter_ns() + 2_000_000_000) == "answered"
        assert waiter.done()
        for s in (other, other_peer, peer):
            s.close()
        env._transport.abort()

    asyncio.run(scenario())
