"""Content-addressed store of function code.

Each distinct deployment zip is kept once, unpacked, under
``<root>/<sha256>/``: read-only files in read-only directories, shared by
every sandbox of every function with that zip through read-only bind mounts
(so the page cache holds one copy). A zip is checked completely before a
byte is written: no absolute paths, no ``..``, no symlink that leaves the
code, no device files, and the unpacked size under the limit. Unpacking goes
to a temporary directory that is renamed into place, so a crash never leaves
a half-written tree under a valid hash. Layer versions' zips are stored
here too (``runtime.core.layers`` keeps which hash is which version).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import posixpath
import shutil
import stat
import subprocess
import tempfile
import time
import zipfile
from pathlib import Path

from runtime.errors import InvalidZipFile, RequestTooLarge, UnpackedTooLarge, os_error

MiB = 1024 * 1024
DEFAULT_MAX_UNPACKED = 250 * MiB
DEFAULT_MAX_ZIP = 250 * MiB
MAX_ENTRIES = 100_000
GRACE_S = 60.0
COMPILE_TIMEOUT_S = 120


@dataclasses.dataclass(frozen=True)
class CodeRef:
    sha256: str
    size: int
    unpacked_size: int
    path: Path


def _check_entries(zf: zipfile.ZipFile, max_unpacked: int) -> int:
    """Validates every entry; returns the total unpacked size."""
    infos = zf.infolist()
    if len(infos) > MAX_ENTRIES:
        raise InvalidZipFile(f"zip has {len(infos)} entries: at most {MAX_ENTRIES} are allowed")
    total = 0
    for info in infos:
        name = info.filename
        if name.startswith("/") or (len(name) > 1 and name[1] == ":") or "\\" in name:
            raise InvalidZipFile(f"entry {name!r} has an absolute or non-POSIX path: paths must be relative")
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise InvalidZipFile(f"entry {name!r} contains '..': paths must stay inside the code")
        if "\0" in name:
            raise InvalidZipFile(f"entry {name!r} contains a NUL byte")
        mode = info.external_attr >> 16
        kind = stat.S_IFMT(mode)
        if stat.S_ISLNK(mode):
            target = zf.read(info).decode("utf-8", "replace")
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(posixpath.normpath(name)), target))
            if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
                raise InvalidZipFile(
                    f"symlink {name!r} -> {target!r} points outside the code: links must stay inside it")
        elif kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise InvalidZipFile(f"entry {name!r} is a device, fifo or socket: only files, dirs and links allowed")
        total += info.file_size
    if total > max_unpacked:  # summed from the central directory: nothing was inflated
        raise UnpackedTooLarge(total, max_unpacked)
    return total


class CodeStore:
    """Owns ``root``; one directory per sha256."""

    def __init__(self, root: Path, max_unpacked: int = DEFAULT_MAX_UNPACKED, max_zip: int = DEFAULT_MAX_ZIP,
                 compilers: tuple[str, ...] = ()):
        self.root = Path(root)
        self.max_unpacked = max_unpacked
        self.max_zip = max_zip
        # Python interpreters that precompile .py files at unpack time: code is
        # read-only in the sandbox, so otherwise every cold start compiles it.
        self.compilers = compilers
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o711)  # traversable by the sandbox uid, not listable
        for entry in self.root.glob(".unpack-*"):  # left by a crash mid-unpack
            self._remove(entry)

    def path(self, sha256: str) -> Path:
        return self.root / sha256

    def put(self, data: bytes, max_unpacked: int | None = None) -> CodeRef:
        """Validates and stores a zip; storing the same zip twice is a no-op.
        ``max_unpacked`` lowers the unpacked limit for this zip (the room the
        function's layers leave); over it, ``UnpackedTooLarge`` is raised
        before a byte is written."""
        if not data:
            raise InvalidZipFile("the zip is empty: upload a zip with the function's code")
        if len(data) > self.max_zip:
            raise RequestTooLarge(f"zip is {len(data)} bytes: at most {self.max_zip} bytes are allowed")
        sha = hashlib.sha256(data).hexdigest()
        try:
            zf = zipfile.ZipFile(io.BytesIO(data))
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError) as exc:
            raise InvalidZipFile(f"not a valid zip file ({exc})") from exc
        with zf:
            limit = self.max_unpacked if max_unpacked is None else min(max_unpacked, self.max_unpacked)
            total = _check_entries(zf, limit)
            dest = self.path(sha)
            if not dest.exists():
                self._unpack(zf, dest)
        return CodeRef(sha, len(data), total, dest)

    def _unpack(self, zf: zipfile.ZipFile, dest: Path) -> None:
        tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=self.root))
        try:
            for info in zf.infolist():
                mode = info.external_attr >> 16
                target = tmp / posixpath.normpath(info.filename)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                if stat.S_ISLNK(mode):
                    os.symlink(zf.read(info).decode(), target)
                    continue
                with zf.open(info) as src, open(target, "wb") as out:
                    try:
                        shutil.copyfileobj(src, out, 1 << 20)
                    except (zipfile.BadZipFile, EOFError, OSError) as exc:
                        raise InvalidZipFile(f"entry {info.filename!r} is corrupt ({exc})") from exc
                # Code is read-only for everyone; executables stay executable.
                os.chmod(target, 0o555 if mode & 0o111 else 0o444)
            self._precompile(tmp)
            for dirpath, _dirs, files in os.walk(tmp):
                os.chmod(dirpath, 0o555)
                for name in files:
                    if name.endswith(".pyc"):
                        os.chmod(os.path.join(dirpath, name), 0o444)
            try:
                os.rename(tmp, dest)
            except OSError as exc:
                if not dest.exists():  # a concurrent put of the same zip won
                    raise os_error(f"rename({tmp}, {dest})", exc) from exc
                self._remove(tmp)
        except BaseException:
            self._remove(tmp)
            raise

    def _precompile(self, tree: Path) -> None:
        """Best effort: a file that does not compile fails at import inside the
        sandbox with the function's own error, as it would without this."""
        if not any(tree.rglob("*.py")):
            return
        for exe in self.compilers:
            try:
                subprocess.run([exe, "-I", "-S", "-m", "compileall", "-q", "-j", "1", str(tree)],
                               capture_output=True, timeout=COMPILE_TIMEOUT_S, check=False)
            except (OSError, subprocess.TimeoutExpired):
                pass

    @staticmethod
    def _remove(path: Path) -> None:
        for dirpath, _dirs, _files in os.walk(path):
            os.chmod(dirpath, 0o755)
        shutil.rmtree(path, ignore_errors=True)

    def collect(self, in_use: set[str]) -> list[str]:
        """Removes unpacked code no function refers to; returns the removed hashes."""
        removed = []
        now = time.time()
        for entry in self.root.iterdir():
            # Skip unpacks in progress and trees just renamed into place whose
            # function row is not committed yet.
            if entry.name.startswith(".") or entry.name in in_use or not entry.is_dir():
                continue
            if now - entry.stat().st_ctime < GRACE_S:
                continue
            self._remove(entry)
            removed.append(entry.name)
        return removed
