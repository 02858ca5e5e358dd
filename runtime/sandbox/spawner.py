"""Starts nsjail processes from a thread with a descriptor table of its own.

A new process starts with a copy of its parent's descriptor table, and the
copy is closed again before ``execve`` (``close_fds``, and ``O_CLOEXEC``):
work in proportion to every descriptor the parent holds. The agent holds
four per live environment (control socket, two log pipes, pidfd), so with a
few thousand environments each start paid milliseconds for descriptors it
never passes on, with the event loop stopped meanwhile (``vfork``).

``Spawner`` owns one thread that called ``unshare(CLONE_FILES)`` when the
agent started: its table keeps the handful of descriptors the agent had then
(among them the event loop's wakeup socket) and its end of a socketpair, and
never grows. For each start the event-loop thread sends it the three
descriptors the sandbox gets (control socket, stdout, stderr) over that
socketpair (SCM_RIGHTS); the thread builds the nsjail command line with the
numbers they have in its table, spawns, and closes its copies. The child
inherits a handful of descriptors however many environments are alive.
While the agent's own table is small (its newest descriptor numbered below
``INLINE_BELOW_FD``, 2048 unless $RUNTIME_AGENT_SPAWN_INLINE_BELOW_FD says
otherwise) starting in the calling thread is cheaper than the hand-off, and
``start`` does that.

Only the descriptor table is private: the thread shares memory, the working
directory and signal handlers with the agent. It blocks signals except while
it starts a process (whose mask is then the agent's), so that signals are
handled where the agent's wakeup socket is. The children are the agent's
children: any thread may wait for them, and their pidfds work as before.
POSIX record locks belong to a descriptor table, so what the thread closes
in its own never drops a lock the agent holds (SQLite, uid blocks).

    event-loop thread                       spawner thread (own fd table)
    -----------------                       -----------------------------
    send_fds(chan, [control, out, err]) ──▶ recv_fds -> c, o, e
    submit(start).result()    ◀── Popen ──  nsjail argv with --pass_fd c,
    (blocks, GIL released)                  Popen(stdin/out/err, pass_fds),
                                            close(c, o, e)
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import signal
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor

from runtime.errors import SandboxError, os_error
from runtime.jail import compose
from runtime.jail.spec import SandboxSpec
from runtime.sandbox import placement

CLONE_FILES = 0x400
CONTROL_FD_ENV = "_RUNTIME_CONTROL_FD"   # the control socket's number in the sandbox
# Where the spawner thread starts to pay: handing a start to it and back costs
# ~0.2 ms; copying and closing the table ~0.1 µs per descriptor here (median
# start, bench/test_spawn_bench.py: 0.18 ms inline with 10 descriptors, 0.53
# with 4,000, 1.7 with 16,000; 0.31-0.39 ms through the spawner at any of them).
INLINE_BELOW_FD = int(os.environ.get("RUNTIME_AGENT_SPAWN_INLINE_BELOW_FD", "2048"))
_libc = ctypes.CDLL(None, use_errno=True)


def _unshare_files() -> None:
    if _libc.unshare(CLONE_FILES) != 0:
        err = ctypes.get_errno()
        raise os_error("unshare(CLONE_FILES)", OSError(err, os.strerror(err)))


def _popen(spec: SandboxSpec, control: int, stdout: int, stderr: int) -> tuple[subprocess.Popen, SandboxSpec]:
    on_stdin = spec.control_stdin
    spec = dataclasses.replace(spec, pass_fds=() if on_stdin else (control,),
                               environ={**spec.environ, CONTROL_FD_ENV: "0" if on_stdin else str(control)})
    try:
        with placement.children_anywhere():  # the agent's threads share one CPU; sandboxes do not
            proc = subprocess.Popen(compose.build(spec), stdin=control if on_stdin else subprocess.DEVNULL,
                                    stdout=stdout, stderr=stderr, pass_fds=spec.pass_fds,
                                    env=dict(spec.environ), close_fds=True)
    except OSError as exc:
        raise SandboxError(f"spawn of nsjail ({spec.nsjail}) failed: {exc}") from exc
    return proc, spec


class Spawner:
    """One per agent; ``start`` is called from the event-loop thread only."""

    def __init__(self, inline_below: int | None = None):
        # Below this descriptor number a start copies a small table anyway
        # and is cheaper in the calling thread (no hand-off between threads).
        self.inline_below = INLINE_BELOW_FD if inline_below is None else inline_below
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._chan = ours
        self._their_fd = theirs.detach()
        self._thread_chan: socket.socket | None = None
        self._failure: BaseException | None = None
        self._sigmask: set = set()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="sandbox-spawner", initializer=self._enter)
        try:
            # Start the thread now; its table is a copy of this one as it is at this moment.
            self._pool.submit(int).result()
        except Exception as exc:  # noqa: BLE001  the initializer's own error says more
            self._pool.shutdown(wait=False)
            self._chan.close()
            os.close(self._their_fd)
            raise SandboxError(f"sandbox spawner thread failed to start: {self._failure or exc}") from exc
        os.close(self._their_fd)  # this thread's copy; the spawner keeps its own

    def _enter(self) -> None:
        """In the spawner thread, once: signals blocked, a private table."""
        try:
            placement.run_anywhere()
            # Process-directed signals go to the other threads. A handler run
            # here would write the event loop's wakeup byte into this table.
            self._sigmask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
            _unshare_files()
            os.close(self._chan.fileno())  # the event loop's end, copied
            self._thread_chan = socket.socket(fileno=self._their_fd)
        except BaseException as exc:
            self._failure = exc
            raise

    def start(self, spec: SandboxSpec, control: int, stdout: int, stderr: int) -> tuple[subprocess.Popen, SandboxSpec]:
        """Starts nsjail for ``spec`` with ``control`` as the sandbox's control
        socket (on stdin when ``spec.control_stdin``, else passed by number)
        and the two log pipes; returns the process and the spec as started
        (its pass_fds and control-fd variable carry the number the sandbox sees)."""
        if max(control, stdout, stderr) < self.inline_below:
            # A new descriptor takes the lowest free number, so every number
            # below the newest is in use: a high one means a large table.
            return _popen(spec, control, stdout, stderr)
        try:
            socket.send_fds(self._chan, [b"S"], [control, stdout, stderr])
        except OSError as exc:
            raise os_error("sendmsg(SCM_RIGHTS) to the sandbox spawner", exc) from exc
        return self._pool.submit(self._start_here, spec).result()

    def _start_here(self, spec: SandboxSpec) -> tuple[subprocess.Popen, SandboxSpec]:
        try:
            _, fds, _, _ = socket.recv_fds(self._thread_chan, 1, 3)
        except OSError as exc:
            raise os_error("recvmsg(SCM_RIGHTS) in the sandbox spawner", exc) from exc
        try:
            if len(fds) != 3:
                raise SandboxError(f"sandbox spawner got {len(fds)} descriptors, expected 3")
            # A child starts with its parent thread's signal mask: the agent's,
            # not this thread's. For the few hundred µs of the start a signal
            # may be handled here; the table still holds the loop's wakeup
            # socket under its number (copied when the agent started).
            signal.pthread_sigmask(signal.SIG_SETMASK, self._sigmask)
            try:
                return _popen(spec, *fds)
            finally:
                signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        finally:
            for fd in fds:
                os.close(fd)

    def close(self) -> None:
        """Ends the thread; its table (and with it its channel) goes away with it."""
        self._pool.submit(self._leave).result()
        self._pool.shutdown(wait=True)
        self._chan.close()

    def _leave(self) -> None:
        # Closed here, in its own table: a socket object finalised in another
        # thread would close whatever has that number there.
        if self._thread_chan is not None:
            self._thread_chan.close()
            self._thread_chan = None
