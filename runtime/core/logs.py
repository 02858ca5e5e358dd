"""Function logs: every line a function writes, kept per function with a cap.

Each function has ``<dir>/<name>.log`` (JSON lines: ``t`` Unix seconds,
``r`` request id, ``s`` stream, ``m`` message) and at most one rotated
``<name>.log.1``; when the live file passes half the cap it replaces the
rotated one, so a function never holds more than ``cap_bytes`` on disk and a
log flood only ever costs its own oldest lines. Writes are buffered and
flushed on a short timer (and before every read), keeping file I/O off the
invoke path. Followers get new lines through an asyncio queue.

A quiet function costs the agent nothing: its lines wait in a list that the
flush empties (a BufferedWriter would keep its whole buffer resident while
the file is open), and at most ``MAX_OPEN_FILES`` files stay open, the least
recently written closed first, so the descriptor table does not grow with
the number of functions ever invoked.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import json.encoder
import logging
import os
import time
from pathlib import Path
from typing import Iterator

from runtime.errors import os_error

log = logging.getLogger("runtime.logs")

_escape = json.encoder.encode_basestring_ascii  # the C escaper json.dumps uses
DEFAULT_CAP = 64 * 1024 * 1024
MAX_LINE = 256 * 1024
FLUSH_INTERVAL_S = 0.2
MAX_OPEN_FILES = 128          # log files kept open; the least recently written is closed
WRITE_AT = 256 * 1024         # a function's waiting bytes that are written before the flush
FOLLOW_QUEUE = 10_000
# The platform lines as whole JSON records (the form ``LogStore._record``
# gives any line), formatted in one step: they are written for every
# invocation. The templates carry their tabs escaped; a request id is a UUID,
# with nothing to escape; the version and an error type are escaped where
# they are filled in. A reader who wants the texts decodes them (_messages).
_START_RECORD = b'{"t": %s, "r": "%s", "s": "platform", "m": "START RequestId: %s Version: %s"}\n'
_END_REPORT_RECORDS = (
    b'{"t": %s, "r": "%s", "s": "platform", "m": "END RequestId: %s"}\n'
    b'{"t": %s, "r": "%s", "s": "platform", "m": "REPORT RequestId: %s\\tDuration: %.2f ms\\t'
    b'Billed Duration: %d ms\\tMemory Size: %d MB\\tMax Memory Used: %d MB%s"}\n')

def _stamp(t_ns: int) -> bytes:
    """Unix seconds with microseconds, from integers: repr() of a float
    (its shortest round-trip digits) costs several times more."""
    return b"%d.%06d" % divmod(t_ns // 1000, 1_000_000)


def _start_record(request_id: str, version: str, t_ns: int) -> bytes:
    rid = request_id.encode()
    return _START_RECORD % (_stamp(t_ns), rid, rid, _escape(version)[1:-1].encode())


def _messages(records: bytes) -> list[str]:
    """The texts of records as written (for captures and followers)."""
    return [json.loads(line)["m"] for line in records.splitlines()]


def _seconds(t_ns: int) -> float:
    """The float a reader parses from _stamp(t_ns): followers compare it with the file's."""
    return t_ns // 1000 / 1_000_000


@dataclasses.dataclass(frozen=True)
class LogLine:
    time: float
    request_id: str
    stream: str  # stdout | stderr | platform
    message: str


class _FunctionLog:
    """One function's live log file. Lines wait in ``pending`` until the
    store flushes (or ``WRITE_AT`` bytes wait), then go out in one write."""

    def __init__(self, path: Path, cap: int):
        self.path = path
        self.cap = cap
        self.fd = self._open()
        self.size = os.fstat(self.fd).st_size
        self.pending: list[bytes] = []
        self.pending_bytes = 0

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise os_error(f"open({self.path})", exc) from exc

    def write(self, data: bytes) -> None:
        self.pending.append(data)
        self.pending_bytes += len(data)
        if self.pending_bytes >= WRITE_AT:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        data = b"".join(self.pending)
        self.pending, self.pending_bytes = [], 0   # dropped even if the write fails: memory stays bounded
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as exc:
            raise os_error(f"write({self.path})", exc) from exc
        self.size += len(data)
        if self.size > self.cap // 2:
            os.close(self.fd)
            self.fd = -1
            rotated = self.path.with_name(self.path.name + ".1")
            try:
                os.replace(self.path, rotated)
            except OSError as exc:
                raise os_error(f"rename({self.path}, {rotated})", exc) from exc
            finally:  # reopened either way: the next write needs a file
                self.fd = self._open()
                self.size = os.fstat(self.fd).st_size

    def close(self) -> None:
        try:
            self.flush()
        finally:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1


class LogStore:
    def __init__(self, root: Path, cap_bytes: int = DEFAULT_CAP):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        self.cap = cap_bytes
        self._open: dict[str, _FunctionLog] = {}   # least recently written first
        self._dirty: set[str] = set()               # functions with lines waiting
        self._followers: dict[str, set[asyncio.Queue]] = {}
        self._captures: dict[str, list[str]] = {}
        self._pending_start: dict[str, tuple[str, int]] = {}   # request id -> (version, START time ns)
        self._deferred: list[tuple] = []    # ended invocations whose platform lines are not formatted yet
        self._flush_handle: asyncio.TimerHandle | None = None

    def _write(self, function: str, data: bytes) -> None:
        flog = self._open.pop(function, None)   # re-inserted last: most recently written
        if flog is None:
            if len(self._open) >= MAX_OPEN_FILES:
                oldest = next(iter(self._open))
                self._dirty.discard(oldest)
                self._close(oldest, self._open.pop(oldest))
            flog = _FunctionLog(self.root / f"{function}.log", self.cap)
        self._open[function] = flog
        try:
            flog.write(data)
        except OSError as exc:  # a full disk loses lines, never the invocation
            log.warning("function log not written: %s", exc)
        self._dirty.add(function)

    @staticmethod
    def _close(function: str, flog: _FunctionLog) -> None:
        try:
            flog.close()
        except OSError as exc:
            log.warning("function log of %s not written: %s", function, exc)

    # -- platform lines (START/END/REPORT) ---------------------------------------
    def begin(self, function: str, request_id: str, version: str) -> None:
        """Notes an invocation's START line. It is written just before the
        invocation's first line of output, or with its END and REPORT: one
        write instead of three for the many functions that print nothing."""
        self._pending_start[request_id] = (version, time.time_ns())

    def finish(self, function: str, request_id: str, duration_ns: int, billed_ms: int, memory_mb: int,
               peak_mb: int, init_us: int = 0, error_type: str = "") -> None:
        """Ends an invocation's platform lines: its START (unless its output
        already wrote it), END and REPORT. The numbers are kept and the lines
        formatted at the next flush, many at once, off the invoke path. A
        follower or a LogType Tail capture gets them at once; any other line
        is written after them, so the file keeps the order in which things
        happened."""
        record = (function, request_id, self._pending_start.pop(request_id, None), time.time_ns(), duration_ns,
                  billed_ms, memory_mb, peak_mb, init_us, error_type)
        if self._read_live(function, request_id):
            self._materialise()
            self._write_platform(record)
            return
        self._deferred.append(record)
        self._schedule_flush()

    def _materialise(self) -> None:
        deferred, self._deferred = self._deferred, []
        for record in deferred:
            self._write_platform(record)

    def _write_platform(self, record: tuple) -> None:
        function, request_id, pending, now, duration_ns, billed_ms, memory_mb, peak_mb, init_us, error_type = record
        rid, stamp = request_id.encode(), _stamp(now)
        extra = b"\\tInit Duration: %.2f ms" % (init_us / 1000) if init_us else b""
        if error_type:
            extra += b"\\tStatus: error\\tError Type: " + _escape(error_type)[1:-1].encode()
        data = _END_REPORT_RECORDS % (stamp, rid, rid, stamp, rid, rid, duration_ns / 1e6, billed_ms, memory_mb,
                                      peak_mb, extra)
        if pending:
            data = _start_record(request_id, pending[0], pending[1]) + data
        self._write(function, data)
        if self._read_live(function, request_id):
            self._after_write(function, request_id, "platform", _messages(data), _seconds(now))

    def _read_live(self, function: str, request_id: str) -> bool:
        """Whether a LogType Tail capture or a follower reads this line as it is written."""
        return request_id in self._captures or bool(self._followers.get(function))

    def discard(self, request_id: str) -> None:
        """Forgets a START that will never be finished (the call failed in the agent)."""
        self._pending_start.pop(request_id, None)

    @staticmethod
    def _record(t_ns: int, request_id: str, stream: str, text: str) -> bytes:
        # By hand: this runs on every invocation, and json.dumps of a dict
        # costs several times more. A request id is a UUID and a stream a
        # fixed word: neither needs escaping.
        return b'{"t": %s, "r": "%s", "s": "%s", "m": %s}\n' % (
            _stamp(t_ns), request_id.encode(), stream.encode(), _escape(text).encode())

    def _after_write(self, function: str, request_id: str, stream: str, parts: list[str], now: float) -> None:
        capture = self._captures.get(request_id) if request_id else None
        if capture is not None:
            capture.extend(parts)
        followers = self._followers.get(function)
        if followers:
            for part in parts:
                line = LogLine(now, request_id, stream, part)
                for q in list(followers):
                    if q.qsize() < FOLLOW_QUEUE:
                        q.put_nowait(line)
        self._schedule_flush()

    def append(self, function: str, request_id: str, stream: str, raw: bytes) -> None:
        """Records one line (without its newline); long lines are split."""
        if self._deferred:
            self._materialise()
        if request_id in self._pending_start:
            version, t = self._pending_start.pop(request_id)
            data = _start_record(request_id, version, t)
            self._write(function, data)
            self._after_write(function, request_id, "platform",
                              _messages(data) if self._read_live(function, request_id) else [], _seconds(t))
        text = raw.decode("utf-8", "replace")
        now = time.time_ns()
        parts = [text[i:i + MAX_LINE] for i in range(0, max(len(text), 1), MAX_LINE)]
        self._write(function, b"".join(self._record(now, request_id, stream, part) for part in parts))
        self._after_write(function, request_id, stream, parts, _seconds(now))

    def _schedule_flush(self) -> None:
        if self._flush_handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._flush_handle = loop.call_later(FLUSH_INTERVAL_S, self.flush)

    def flush(self) -> None:
        self._flush_handle = None
        if self._deferred:
            self._materialise()
        dirty, self._dirty = self._dirty, set()
        for function in dirty:
            flog = self._open.get(function)
            if flog is None:
                continue
            try:
                flog.flush()
            except OSError as exc:  # one full disk or lost file must not stop the other logs
                log.warning("function log not written: %s", exc)

    # -- per-invocation capture (LogType TAIL) --------------------------------
    def start_capture(self, request_id: str) -> None:
        self._captures[request_id] = []

    def end_capture(self, request_id: str, limit: int = 4096) -> str:
        lines = self._captures.pop(request_id, [])
        text = "".join(line + "\n" for line in lines)
        data = text.encode()
        if len(data) > limit:
            text = data[-limit:].decode("utf-8", "ignore")
        return text

    # -- reading ---------------------------------------------------------------
    def read(self, function: str, start: float | None = None, end: float | None = None,
             request_id: str = "") -> Iterator[LogLine]:
        self.flush()
        for path in (self.root / f"{function}.log.1", self.root / f"{function}.log"):
            try:
                f = open(path, "rb")
            except FileNotFoundError:
                continue
            with f:
                for raw in f:
                    try:
                        d = json.loads(raw)
                    except ValueError:
                        continue  # a line cut by a crash mid-write
                    t = d["t"]
                    if (start is not None and t < start) or (end is not None and t >= end):
                        continue
                    if request_id and d["r"] != request_id:
                        continue
                    yield LogLine(t, d["r"], d["s"], d["m"])

    def follow(self, function: str) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue()
        self._followers.setdefault(function, set()).add(q)
        return q

    def unfollow(self, function: str, q: asyncio.Queue) -> None:
        self._followers.get(function, set()).discard(q)

    def disk_bytes(self, function: str) -> int:
        self.flush()
        total = 0
        for path in (self.root / f"{function}.log", self.root / f"{function}.log.1"):
            try:
                total += path.stat().st_size
            except FileNotFoundError:
                pass
        return total

    def delete(self, function: str) -> None:
        self._deferred = [r for r in self._deferred if r[0] != function]  # else they would recreate the file
        self._dirty.discard(function)
        flog = self._open.pop(function, None)
        if flog is not None:
            flog.pending.clear()   # the file is removed next
            flog.close()
        for path in (self.root / f"{function}.log", self.root / f"{function}.log.1"):
            try:
                path.unlink()
            except FileNotFoundError:
                pass

    def close(self) -> None:
        self._materialise()
        for function, flog in self._open.items():
            self._close(function, flog)
        self._open.clear()
        self._dirty.clear()
