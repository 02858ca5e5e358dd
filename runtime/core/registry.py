"""The function registry: create, update, read and delete functions.

The SQLite store is the durable copy; ``FunctionRegistry`` keeps every
function in memory so the invoke path never touches the disk. Each write
validates everything first, stores the code (in a worker thread: unpacking
can take seconds), then commits one row. If any step fails nothing changes:
the previous code and configuration stay in place.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time
from typing import Callable, Mapping

from runtime.core import function as fnmod
from runtime.core.codestore import CodeStore
from runtime.core.function import FunctionConfig, FunctionSpec
from runtime.core.runtimes import Runtime
from runtime.core.store import Store
from runtime.errors import InvalidParameterValue, ResourceConflict, ResourceNotFound

MAX_PAGE = 1000
DEFAULT_PAGE = 50


class FunctionRegistry:
    def __init__(self, store: Store, code: CodeStore, runtimes: Mapping[str, Runtime]):
        self.store = store
        self.code = code
        self.runtimes = runtimes
        self.outbound = False  # set by the agent when --outbound-iface is configured
        self._functions: dict[str, FunctionConfig] = {cfg.name: cfg for cfg in store.load_all()}
        # Called with the old config whenever a function changes or goes away,
        # so the invoker can retire environments of the old revision.
        self.on_change: list[Callable[[FunctionConfig], None]] = []

    def get(self, name: str) -> FunctionConfig:
        cfg = self._functions.get(name)
        if cfg is None:
            fnmod.validate_name(name)
            raise ResourceNotFound(f"Function not found: {fnmod.ARN_PREFIX}{name}")
        return cfg

    def names(self) -> list[str]:
        return sorted(self._functions)

    def list(self, max_items: int, marker: str) -> tuple[list[FunctionConfig], str]:
        if max_items == 0:
            max_items = DEFAULT_PAGE
        if not 1 <= max_items <= MAX_PAGE:
            raise InvalidParameterValue("max_items", f"{max_items} is out of range: allowed 1-{MAX_PAGE}")
        names = [n for n in sorted(self._functions) if n > marker]
        page = names[:max_items]
        next_marker = page[-1] if len(names) > max_items else ""
        return [self._functions[n] for n in page], next_marker

    async def create(self, spec: FunctionSpec, zip_data: bytes) -> FunctionConfig:
        spec = fnmod.validate(spec, self.runtimes, self.outbound)
        if spec.name in self._functions:
            raise ResourceConflict(f"Function already exist: {spec.name}")
        ref = await asyncio.to_thread(self.code.put, zip_data)
        if spec.name in self._functions:  # created concurrently while unpacking
            raise ResourceConflict(f"Function already exist: {spec.name}")
        now = time.time()
        cfg = FunctionConfig(spec, ref.sha256, ref.size, ref.unpacked_size, now, now, 1)
        try:
            self.store.insert(cfg)
        except sqlite3.IntegrityError as exc:
            raise ResourceConflict(f"Function already exist: {spec.name}") from exc
        self._functions[spec.name] = cfg
        return cfg

    async def update_code(self, name: str, zip_data: bytes) -> FunctionConfig:
        old = self.get(name)
        ref = await asyncio.to_thread(self.code.put, zip_data)
        return self._commit(old, dataclasses.replace(
            self.get(name), code_sha256=ref.sha256, code_size=ref.size,
            code_unpacked_size=ref.unpacked_size))

    def update_configuration(self, name: str, changes: dict) -> FunctionConfig:
        old = self.get(name)
        allowed = {f.name for f in dataclasses.fields(FunctionSpec)} - {"name"}
        unknown = set(changes) - allowed
        if unknown:
            raise InvalidParameterValue(", ".join(sorted(unknown)), "not a configuration field")
        spec = fnmod.validate(dataclasses.replace(old.spec, **changes), self.runtimes, self.outbound)
        return self._commit(old, dataclasses.replace(old, spec=spec))

    def _commit(self, old: FunctionConfig, new: FunctionConfig) -> FunctionConfig:
        new = dataclasses.replace(new, revision=old.revision + 1, last_modified=time.time())
        if not self.store.replace(new, expected_revision=old.revision):
            raise ResourceConflict(
                f"The function {old.name} was changed by another request; retry the update")
        self._functions[old.name] = new
        for callback in self.on_change:
            callback(old)
        return new

    def delete(self, name: str) -> None:
        old = self.get(name)
        self.store.delete(name)
        del self._functions[name]
        for callback in self.on_change:
            callback(old)
        self.code.collect({cfg.code_sha256 for cfg in self._functions.values()})
