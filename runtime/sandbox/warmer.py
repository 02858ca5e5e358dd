"""Keeps cgroup-v1 task migration cheap while sandboxes are being started.

On cgroup v1 every migration (nsjail writing a new sandbox's pid into
``cgroup.procs``) takes the global ``cgroup_threadgroup_rwsem`` for writing.
Coming from idle, that write waits for an RCU grace period: 6-20 ms here,
about as long as the whole rest of a cold start. A writer that comes while
the lock is still in its writer-friendly state (within a grace period of the
previous writer) pays microseconds. cgroup v2 offers ``favordynmods`` for
exactly this; v1 mounts cannot be remounted with it.

So while environments are being created the warmer migrates one parked
process between two of the agent's own pids cgroups every ``interval_s``,
keeping the lock in that state, and stops ``linger_s`` after the last
``poke()``: an idle agent spends nothing. The price while active is a few
microseconds per migration and a slightly slower fork path host-wide.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from pathlib import Path

from runtime.sandbox import placement

log = logging.getLogger("runtime.warmer")


class MigrationWarmer:
    def __init__(self, pids_dir: Path, interval_s: float = 0.002, linger_s: float = 2.0):
        self.a = Path(pids_dir) / "warmer"
        self.b = Path(pids_dir)
        self.interval_s = interval_s
        self.linger_s = linger_s
        self._until = 0.0          # owned by whoever pokes; read by the thread
        self._wake = threading.Event()
        self._stop = False
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        self.migrations = 0        # written by the thread only

    def start(self) -> None:
        self.a.mkdir(exist_ok=True)
        # A process that only sleeps: the thing being moved. It lives in the
        # agent's cgroup subtree, so a later agent's sweep kills it if we crash.
        self._proc = subprocess.Popen(["sleep", "infinity"], stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._thread = threading.Thread(target=self._run, name="cgroup-warmer", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """An environment is about to start: be warm for the next ``linger_s``."""
        self._until = time.monotonic() + self.linger_s
        self._wake.set()

    def _run(self) -> None:
        placement.run_anywhere()  # not on the event loop's CPU: it runs while sandboxes start
        pid = str(self._proc.pid).encode()
        targets = [os.open(d / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC) for d in (self.a, self.b)]
        try:
            while not self._stop:
                if time.monotonic() >= self._until:
                    self._wake.clear()
                    self._wake.wait()
                    continue
                try:
                    os.write(targets[self.migrations % 2], pid)
                except OSError as exc:  # the warmer is an optimisation: never fatal
                    log.warning("cgroup warmer stopped: write(%s/cgroup.procs) failed: %s",
                                (self.a, self.b)[self.migrations % 2], exc)
                    return
                self.migrations += 1
                time.sleep(self.interval_s)
        finally:
            for fd in targets:
                os.close(fd)

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(2)
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
        try:
            self.a.rmdir()
        except OSError:
            pass
