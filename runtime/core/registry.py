"""The function registry: create, update, read and delete functions.

The SQLite store is the durable copy; ``FunctionRegistry`` keeps every
function in memory so the invoke path never touches the disk. Each write
validates everything first, stores the code (in a worker thread: unpacking
can take seconds), then commits one row. If any step fails nothing changes:
the previous code and configuration stay in place.

Layers (``runtime.core.layers``) are checked here against the functions that
use them: a function's layers must exist and, with its code, fit the
unpacked size limit; a layer version in use, or named by a deploy in flight,
cannot be deleted.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import sqlite3
import time
from typing import Callable, Mapping, Sequence

from runtime.core import function as fnmod
from runtime.core.codestore import CodeRef, CodeStore
from runtime.core.function import FunctionConfig, FunctionSpec
from runtime.core.layers import LayerStore, LayerVersion
from runtime.core.runtimes import Runtime
from runtime.core.store import Store
from runtime.errors import (InvalidParameterValue, ResourceConflict, ResourceInUse, ResourceNotFound,
                            UnpackedTooLarge)

MAX_PAGE = 1000
DEFAULT_PAGE = 50


class FunctionRegistry:
    def __init__(self, store: Store, code: CodeStore, runtimes: Mapping[str, Runtime],
                 layers: LayerStore | None = None):
        self.store = store
        self.code = code
        self.runtimes = runtimes
        # Merged /opt trees live beside the code store, on its file system (hardlinks).
        self.layers = layers or LayerStore(store, code, code.root.parent / "opt")
        self.outbound = False  # set by the agent when --outbound-iface is configured
        self._functions: dict[str, FunctionConfig] = {cfg.name: cfg for cfg in store.load_all()}
        # Layer lists of creates and updates between validation and commit.
        self._in_flight: collections.Counter[tuple[str, ...]] = collections.Counter()
        for cfg in self._functions.values():  # rebuilt if someone removed them
            self.layers.prepare(cfg.spec.layers)
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

    def exists(self, name: str) -> bool:
        return name in self._functions

    def is_current(self, name: str, created: float) -> bool:
        """Whether ``name`` is still the function created at ``created``:
        neither deleted nor deleted and created again (updates keep it)."""
        cfg = self._functions.get(name)
        return cfg is not None and cfg.created == created

    def list(self, max_items: int, marker: str) -> tuple[list[FunctionConfig], str]:
        if max_items == 0:
            max_items = DEFAULT_PAGE
        if not 1 <= max_items <= MAX_PAGE:
            raise InvalidParameterValue("max_items", f"{max_items} is out of range: allowed 1-{MAX_PAGE}")
        names = [n for n in sorted(self._functions) if n > marker]
        page = names[:max_items]
        next_marker = page[-1] if len(names) > max_items else ""
        return [self._functions[n] for n in page], next_marker

    def _validate(self, spec: FunctionSpec) -> FunctionSpec:
        return fnmod.validate(spec, self.runtimes, self.outbound, self.layers.published())

    @contextlib.contextmanager
    def _deploying(self, layers: tuple[str, ...]):
        """Marks ``layers`` as needed by a write in flight (not deletable)."""
        self._in_flight[layers] += 1
        try:
            yield
        finally:
            self._in_flight[layers] -= 1
            if not self._in_flight[layers]:
                del self._in_flight[layers]

    def _check_size(self, code_unpacked: int, layers: list[LayerVersion]) -> None:
        fnmod.validate_package_size(code_unpacked, [(lv.ref, lv.unpacked_size) for lv in layers],
                                    self.code.max_unpacked)

    async def _store_code(self, zip_data: bytes, refs: Sequence[str]) -> CodeRef:
        """Validates and unpacks the zip within the room the layers leave."""
        layers = self.layers.resolve(refs)
        room = self.code.max_unpacked - sum(lv.unpacked_size for lv in layers)
        try:
            return await asyncio.to_thread(self.code.put, zip_data, room)
        except UnpackedTooLarge as exc:
            if not layers:
                raise
            self._check_size(exc.unpacked_size, layers)  # raises, naming every size
            raise

    async def _prepare(self, spec: FunctionSpec, code_unpacked: int) -> None:
        """After any await: the layers still exist, fit with the code, and
        their /opt tree is built."""
        self._check_size(code_unpacked, self.layers.resolve(spec.layers))
        if len(spec.layers) > 1:  # one layer or none: nothing to build
            await asyncio.to_thread(self.layers.prepare, spec.layers)
            self.layers.resolve(spec.layers)

    async def create(self, spec: FunctionSpec, zip_data: bytes) -> FunctionConfig:
        spec = self._validate(spec)
        if spec.name in self._functions:
            raise ResourceConflict(f"Function already exist: {spec.name}")
        with self._deploying(spec.layers):
            ref = await self._store_code(zip_data, spec.layers)
            await self._prepare(spec, ref.unpacked_size)
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
        with self._deploying(old.spec.layers):
            ref = await self._store_code(zip_data, old.spec.layers)
            current = self.get(name)  # _commit refuses it if it changed meanwhile
            await self._prepare(current.spec, ref.unpacked_size)
            return self._commit(old, dataclasses.replace(
                current, code_sha256=ref.sha256, code_size=ref.size, code_unpacked_size=ref.unpacked_size))

    async def update_configuration(self, name: str, changes: dict) -> FunctionConfig:
        old = self.get(name)
        allowed = {f.name for f in dataclasses.fields(FunctionSpec)} - {"name"}
        unknown = set(changes) - allowed
        if unknown:
            raise InvalidParameterValue(", ".join(sorted(unknown)), "not a configuration field")
        spec = self._validate(dataclasses.replace(old.spec, **changes))
        if spec.layers != old.spec.layers:
            with self._deploying(spec.layers):
                await self._prepare(spec, old.code_unpacked_size)
                return self._commit(old, dataclasses.replace(old, spec=spec))
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
        self._collect()

    def _collect(self) -> None:
        """Removes unpacked code and merged /opt trees nothing refers to."""
        self.code.collect({cfg.code_sha256 for cfg in self._functions.values()} | self.layers.shas())
        self.layers.collect([cfg.spec.layers for cfg in self._functions.values()] + list(self._in_flight))

    # -- layers ------------------------------------------------------------------
    def layer_users(self, ref: str) -> list[str]:
        """Functions that list layer version ``ref`` ("name:version")."""
        return sorted(cfg.name for cfg in self._functions.values() if ref in cfg.spec.layers)

    def delete_layer(self, name: str, version: int) -> None:
        """Deletes a layer version no function uses; ResourceInUse otherwise."""
        ref = self.layers.get(name, version).ref
        users = self.layer_users(ref)
        if users:
            raise ResourceInUse(
                f"layer version {ref} is used by {len(users)} function(s): {', '.join(users)}; remove it from "
                "their layers first (UpdateFunctionConfiguration, fnctl deploy --layer)")
        if any(ref in refs for refs in self._in_flight):
            raise ResourceInUse(f"layer version {ref} is named by a deploy in progress; retry when it is done")
        self.layers.delete(name, version)
        self._collect()
