"""The usage ledger: what each function consumed, per hour, billable.

Per function and UTC hour: requests, billed milliseconds (each invocation
rounded up to the billing granularity), GB-seconds (billed time × memory
size) and CPU-seconds (the environment's cgroup CPU time during the
invocation). Only invocations are counted; an idle environment adds nothing
("never pay for idle"). Totals accumulate in memory on the invoke path and
are written to SQLite every few seconds and at shutdown, in one transaction.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    function TEXT NOT NULL,
    hour INTEGER NOT NULL,          -- Unix seconds at the start of the UTC hour
    requests INTEGER NOT NULL,
    billed_ms INTEGER NOT NULL,
    mb_ms INTEGER NOT NULL,         -- billed ms x memory MB: GB-seconds kept exact
    cpu_ns INTEGER NOT NULL,
    PRIMARY KEY (function, hour)
);
"""


@dataclasses.dataclass(frozen=True)
class UsageRecord:
    function: str
    hour: int
    requests: int
    billed_ms: int
    mb_ms: int
    cpu_ns: int

    @property
    def gb_seconds(self) -> float:
        return self.mb_ms / 1024 / 1000

    @property
    def cpu_seconds(self) -> float:
        return self.cpu_ns / 1e9


def billed_ms(duration_ns: int, granularity_ms: int) -> int:
    """Duration rounded up to the next multiple of the granularity (at least one step)."""
    step = granularity_ms * 1_000_000
    return max(1, -(-duration_ns // step)) * granularity_ms


class UsageLedger:
    def __init__(self, db_path: Path, granularity_ms: int = 1):
        self.granularity_ms = granularity_ms
        self.db = sqlite3.connect(str(db_path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(_SCHEMA)
        self._pending: dict[tuple[str, int], list[int]] = {}

    def record(self, function: str, now_s: float, duration_ns: int, memory_mb: int, cpu_ns: int) -> int:
        """Adds one invocation; returns its billed milliseconds."""
        billed = billed_ms(duration_ns, self.granularity_ms)
        key = (function, int(now_s) // 3600 * 3600)
        row = self._pending.get(key)
        if row is None:
            row = self._pending[key] = [0, 0, 0, 0]
        row[0] += 1
        row[1] += billed
        row[2] += billed * memory_mb
        row[3] += max(cpu_ns, 0)
        return billed

    def flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT INTO usage VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(function, hour) DO UPDATE SET "
                "requests=requests+excluded.requests, billed_ms=billed_ms+excluded.billed_ms, "
                "mb_ms=mb_ms+excluded.mb_ms, cpu_ns=cpu_ns+excluded.cpu_ns",
                [(f, h, *row) for (f, h), row in pending.items()])

    def query(self, function: str = "", since_s: float = 0, until_s: float | None = None) -> list[UsageRecord]:
        self.flush()
        sql = "SELECT function, hour, requests, billed_ms, mb_ms, cpu_ns FROM usage WHERE hour >= ?"
        args: list = [int(since_s) // 3600 * 3600]
        if until_s is not None:
            sql += " AND hour < ?"
            args.append(int(until_s))
        if function:
            sql += " AND function = ?"
            args.append(function)
        sql += " ORDER BY function, hour"
        return [UsageRecord(*row) for row in self.db.execute(sql, args)]

    def close(self) -> None:
        self.flush()
        self.db.close()
