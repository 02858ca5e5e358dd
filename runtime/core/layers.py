"""Layers: immutable, versioned zips that functions share at ``/opt``.

A layer version is published once and never changes: every publish of a name
gets the next number, and numbers are never reused, not even after a delete.
Its zip is validated and unpacked like function code, into the code store
(content-addressed, read-only). A function lists up to five versions; in its
sandboxes they appear read-only at ``/opt``, extracted in the listed order,
files of later layers overriding those of earlier ones (as AWS Lambda does).

Large libraries must stay cheap: every environment of every function that
uses a layer maps the same inodes, so the page cache holds one copy.

- One layer: ``/opt`` is a read-only bind mount of its unpacked tree.
- Several: once per distinct ordered combination of layer contents, a merged
  tree of *hardlinks* to the unpacked files is built under
  ``<merged_root>/<key>`` (key: sha256 of the ordered content hashes), and
  ``/opt`` binds it. A hardlink is the same inode, hence the same page-cache
  pages; nothing is copied. The tree lives on the code store's file system
  (hardlinks cannot cross file systems).

A layer version some function still uses cannot be deleted
(``ResourceInUse``, enforced by the registry, which knows the functions).

Threads: everything runs on the agent's event-loop thread except
``CodeStore.put`` and ``prepare``/``merge_trees``, which run in worker
threads and only create new directories under unique temporary names.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import Iterable, Sequence

from runtime.core import function as fnmod
from runtime.core.codestore import CodeStore
from runtime.core.store import Store
from runtime.errors import InvalidParameterValue, ResourceNotFound, os_error

GRACE_S = 60.0  # a merged tree younger than this may belong to a deploy in flight


@dataclasses.dataclass(frozen=True)
class LayerVersion:
    name: str
    version: int
    description: str
    sha256: str          # of the zip; its unpacked tree is CodeStore.path(sha256)
    size: int            # zip bytes
    unpacked_size: int   # bytes of every file, unpacked
    created: float       # Unix seconds

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def arn(self) -> str:
        return f"{fnmod.LAYER_ARN_PREFIX}{self.name}:{self.version}"


def merge_key(shas: Sequence[str]) -> str:
    """Names the merged tree of layer contents ``shas``, in order."""
    return hashlib.sha256("\n".join(shas).encode()).hexdigest()


def _clear(path: str) -> None:
    """Removes whatever ``path`` is (an earlier layer's file, link or tree)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def merge_trees(sources: Sequence[Path], dest: Path) -> None:
    """Builds ``dest`` (which must not exist): the union of ``sources``, in
    order, each path taken from the last source that has it. Regular files
    are hardlinks to the source files, symlinks are recreated, directories
    are new and made read-only (0555) at the end. A path that is a directory
    in one layer and a file in a later one is the later one's file (and the
    other way round): as if the zips were extracted over each other."""
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=dest.parent))
    try:
        for src in sources:
            src_root = str(src)
            for dirpath, dirnames, filenames in os.walk(src_root):
                rel = os.path.relpath(dirpath, src_root)
                out_dir = os.path.normpath(os.path.join(tmp, rel))
                for name in dirnames + filenames:
                    s, d = os.path.join(dirpath, name), os.path.join(out_dir, name)
                    mode = os.lstat(s).st_mode
                    if stat.S_ISDIR(mode):
                        if not stat.S_ISDIR(_lmode(d)):
                            _clear(d)
                            os.mkdir(d, 0o755)
                        continue
                    _clear(d)
                    if stat.S_ISLNK(mode):
                        os.symlink(os.readlink(s), d)
                    elif stat.S_ISREG(mode):
                        try:
                            os.link(s, d, follow_symlinks=False)
                        except OSError as exc:  # EXDEV: the merged root left the code store's fs
                            raise os_error(f"link({s}, {d})", exc) from exc
        for dirpath, _dirs, _files in os.walk(tmp):
            os.chmod(dirpath, 0o555)
        try:
            os.rename(tmp, dest)
        except OSError as exc:
            if not dest.is_dir():
                raise os_error(f"rename({tmp}, {dest})", exc) from exc
            _remove(tmp)  # a concurrent build of the same combination won
    except BaseException:
        _remove(tmp)
        raise


def _lmode(path: str) -> int:
    try:
        return os.lstat(path).st_mode
    except FileNotFoundError:
        return 0


def _remove(path: Path) -> None:
    for dirpath, _dirs, _files in os.walk(path):
        os.chmod(dirpath, 0o755)
    shutil.rmtree(path, ignore_errors=True)


class LayerStore:
    """Layer versions: rows in the SQLite store, content in the code store,
    merged trees under ``merged_root``. Kept in memory like functions."""

    def __init__(self, store: Store, code: CodeStore, merged_root: Path):
        self.store = store
        self.code = code
        self.merged_root = Path(merged_root)
        self.merged_root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.merged_root, 0o711)  # as the code store: traversable, not listable
        for entry in self.merged_root.glob(".build-*"):  # left by a crash mid-build
            _remove(entry)
        self._versions: dict[tuple[str, int], LayerVersion] = {
            (row[0], row[1]): LayerVersion(*row) for row in store.load_layer_versions()}
        self._last: dict[str, int] = store.layer_counters()

    # -- reading ---------------------------------------------------------------
    def published(self) -> dict[str, list[int]]:
        """Layer name -> its versions, for ``function.validate``."""
        out: dict[str, list[int]] = {}
        for name, version in sorted(self._versions):
            out.setdefault(name, []).append(version)
        return out

    def get(self, name: str, version: int) -> LayerVersion:
        lv = self._versions.get((name, version))
        if lv is None:
            fnmod.parse_layer_ref(f"{name}:{version}")  # a malformed name says so
            raise ResourceNotFound(f"Layer version not found: {fnmod.LAYER_ARN_PREFIX}{name}:{version}")
        return lv

    def resolve(self, refs: Sequence[str]) -> list[LayerVersion]:
        """The versions of validated references, in order; refuses one that
        was deleted since it was validated."""
        out = []
        for ref in refs:
            lv = self._versions.get(fnmod.parse_layer_ref(ref))
            if lv is None:
                raise InvalidParameterValue("layers", f"layer version {ref} does not exist (deleted meanwhile)")
            out.append(lv)
        return out

    def list(self, name: str = "") -> list[LayerVersion]:
        """Every version, by name then version; only ``name``'s when given."""
        if name and not fnmod.LAYER_NAME_RE.fullmatch(name):
            raise InvalidParameterValue("name", f"{name!r} is not a valid layer name: use 1-64 characters "
                                                "of [A-Za-z0-9_-]")
        return [lv for key, lv in sorted(self._versions.items()) if not name or key[0] == name]

    def shas(self) -> set[str]:
        """Code-store hashes held by layer versions (never collected)."""
        return {lv.sha256 for lv in self._versions.values()}

    def opt_dir(self, refs: Sequence[str]) -> Path | None:
        """What ``/opt`` binds for a function with layers ``refs`` (validated
        and prepared); None without layers. Cheap: called per cold start."""
        if not refs:
            return None
        shas = [lv.sha256 for lv in self.resolve(refs)]
        if len(shas) == 1:
            return self.code.path(shas[0])
        return self.merged_root / merge_key(shas)

    # -- writing ---------------------------------------------------------------
    async def publish(self, name: str, description: str, data: bytes) -> LayerVersion:
        """Stores ``data`` as the next version of ``name``."""
        if not fnmod.LAYER_NAME_RE.fullmatch(name or ""):
            raise InvalidParameterValue(
                "name", f"{name!r} is not a valid layer name: use 1-64 characters of [A-Za-z0-9_-]")
        if len(description) > fnmod.DESCRIPTION_MAX:
            raise InvalidParameterValue("description", f"at most {fnmod.DESCRIPTION_MAX} characters are allowed")
        ref = await asyncio.to_thread(self.code.put, data)
        # Back on the loop thread: numbering and insert happen without a yield.
        version = self._last.get(name, 0) + 1
        lv = LayerVersion(name, version, description, ref.sha256, ref.size, ref.unpacked_size, time.time())
        self.store.insert_layer_version(dataclasses.astuple(lv))
        self._versions[(name, version)] = lv
        self._last[name] = version
        return lv

    def delete(self, name: str, version: int) -> LayerVersion:
        """Forgets a version (the registry checks that no function uses it)."""
        lv = self.get(name, version)
        self.store.delete_layer_version(name, version)
        del self._versions[(name, version)]
        return lv

    def prepare(self, refs: Sequence[str]) -> Path | None:
        """Makes ``opt_dir(refs)`` exist: builds the merged tree of several
        layers unless already built. Blocking: run in a worker thread."""
        path = self.opt_dir(refs)
        if path is not None and len(refs) > 1 and not path.is_dir():
            merge_trees([self.code.path(lv.sha256) for lv in self.resolve(refs)], path)
        return path

    def collect(self, in_use: Iterable[Sequence[str]]) -> list[str]:
        """Removes merged trees that no layer list in ``in_use`` needs."""
        keep = {merge_key([lv.sha256 for lv in self.resolve(refs)]) for refs in in_use if len(refs) > 1}
        removed, now = [], time.time()
        for entry in self.merged_root.iterdir():
            if entry.name.startswith(".") or entry.name in keep or now - entry.stat().st_ctime < GRACE_S:
                continue
            _remove(entry)
            removed.append(entry.name)
        return removed
