"""The function registry on SQLite (WAL), the agent's embedded default store.

One connection, owned by the agent's event-loop thread; every write is one
transaction, so a failed update leaves the previous row untouched. Reads on
the invoke path never reach SQLite: ``FunctionRegistry`` keeps the rows in
memory and this module is only the durable copy.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Iterator

from runtime.core.function import FunctionConfig, FunctionSpec

# 2: layer_versions, layer_counters (created on open; older files are upgraded).
SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS functions (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,              -- FunctionSpec as JSON
    code_sha256 TEXT NOT NULL,
    code_size INTEGER NOT NULL,
    code_unpacked_size INTEGER NOT NULL,
    created REAL NOT NULL,           -- Unix seconds
    last_modified REAL NOT NULL,
    revision INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS layer_versions (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,        -- 1, 2, ... per name, never reused
    description TEXT NOT NULL,
    sha256 TEXT NOT NULL,            -- of the zip: its unpacked tree in the code store
    size INTEGER NOT NULL,
    unpacked_size INTEGER NOT NULL,
    created REAL NOT NULL,           -- Unix seconds
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS layer_counters (
    name TEXT PRIMARY KEY,
    last_version INTEGER NOT NULL    -- highest version ever published, deleted ones included
);
"""


class Store:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(_SCHEMA)
        row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            self.db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) > SCHEMA_VERSION:
            raise RuntimeError(
                f"store {self.path} has schema version {row[0]}, newer than this agent's {SCHEMA_VERSION}")
        elif int(row[0]) < SCHEMA_VERSION:  # the new tables were created above
            self.db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        self.db.close()

    @staticmethod
    def _row_to_config(row: tuple) -> FunctionConfig:
        spec, sha, size, unpacked, created, modified, revision = row
        return FunctionConfig(FunctionSpec.from_json(json.loads(spec)), sha, size, unpacked,
                              created, modified, revision)

    def load_all(self) -> Iterator[FunctionConfig]:
        cur = self.db.execute(
            "SELECT spec, code_sha256, code_size, code_unpacked_size, created, last_modified, revision "
            "FROM functions ORDER BY name")
        for row in cur:
            yield self._row_to_config(row)

    def insert(self, cfg: FunctionConfig) -> None:
        """Raises sqlite3.IntegrityError if the name exists."""
        self.db.execute(
            "INSERT INTO functions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (cfg.name, json.dumps(cfg.spec.to_json()), cfg.code_sha256, cfg.code_size,
             cfg.code_unpacked_size, cfg.created, cfg.last_modified, cfg.revision))

    def replace(self, cfg: FunctionConfig, expected_revision: int) -> bool:
        """Writes ``cfg`` only if the stored revision is still ``expected_revision``."""
        cur = self.db.execute(
            "UPDATE functions SET spec=?, code_sha256=?, code_size=?, code_unpacked_size=?, "
            "last_modified=?, revision=? WHERE name=? AND revision=?",
            (json.dumps(cfg.spec.to_json()), cfg.code_sha256, cfg.code_size, cfg.code_unpacked_size,
             cfg.last_modified, cfg.revision, cfg.name, expected_revision))
        return cur.rowcount == 1

    def delete(self, name: str) -> bool:
        return self.db.execute("DELETE FROM functions WHERE name=?", (name,)).rowcount == 1

    # -- layer versions (runtime.core.layers) --------------------------------------
    def load_layer_versions(self) -> Iterator[tuple]:
        """Rows (name, version, description, sha256, size, unpacked_size, created)."""
        yield from self.db.execute(
            "SELECT name, version, description, sha256, size, unpacked_size, created FROM layer_versions "
            "ORDER BY name, version")

    def layer_counters(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT name, last_version FROM layer_counters"))

    def insert_layer_version(self, row: tuple) -> None:
        """One transaction: the version row and the name's counter."""
        name, version = row[0], row[1]
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute("INSERT INTO layer_versions VALUES (?, ?, ?, ?, ?, ?, ?)", row)
            self.db.execute("INSERT INTO layer_counters VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET "
                            "last_version=max(last_version, excluded.last_version)", (name, version))
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def delete_layer_version(self, name: str, version: int) -> bool:
        return self.db.execute("DELETE FROM layer_versions WHERE name=? AND version=?",
                               (name, version)).rowcount == 1
