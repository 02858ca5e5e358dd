import io
import os
import stat
import zipfile

import pytest

from runtime.core.codestore import CodeStore
from runtime.errors import InvalidZipFile, RequestTooLarge


def zip_of(entries):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            zf.writestr(info, data)
    return buf.getvalue()


def test_put_unpacks_read_only_and_dedupes(tmp_path):
    store = CodeStore(tmp_path)
    data = zip_of([("app.py", "x = 1\n", 0o100644), ("bin/run", "#!/bin/sh\n", 0o100755),
                   ("pkg/", "", 0o040755), ("pkg/link", "../app.py", stat.S_IFLNK | 0o777)])
    ref = store.put(data)
    assert ref.path == tmp_path / ref.sha256
    assert (ref.path / "app.py").read_text() == "x = 1\n"
    assert stat.S_IMODE(os.stat(ref.path / "app.py").st_mode) == 0o444
    assert stat.S_IMODE(os.stat(ref.path / "bin/run").st_mode) == 0o555
    assert stat.S_IMODE(os.stat(ref.path).st_mode) == 0o555
    assert os.readlink(ref.path / "pkg/link") == "../app.py"
    assert store.put(data) == ref
    assert [p.name for p in tmp_path.iterdir()] == [ref.sha256]


@pytest.mark.parametrize("name,data,mode", [
    ("../x", "x", 0o100644), ("/abs", "x", 0o100644), ("a\\b", "x", 0o100644),
    ("l", "/etc/passwd", stat.S_IFLNK | 0o777), ("l", "..", stat.S_IFLNK | 0o777),
    ("fifo", "", stat.S_IFIFO | 0o644),
])
def test_hostile_entries_refused_before_writing(tmp_path, name, data, mode):
    store = CodeStore(tmp_path)
    with pytest.raises(InvalidZipFile):
        store.put(zip_of([("ok.py", "1", 0o100644), (name, data, mode)]))
    assert list(tmp_path.iterdir()) == []


def test_size_limits(tmp_path):
    store = CodeStore(tmp_path, max_unpacked=1000, max_zip=5000)
    with pytest.raises(InvalidZipFile, match="unpacks to more than 1000 bytes"):
        store.put(zip_of([("big", "x" * 1001, 0o100644)]))
    with pytest.raises(RequestTooLarge):
        store.put(os.urandom(5001))
    assert list(tmp_path.iterdir()) == []


def test_collect_keeps_used_and_recent(tmp_path):
    store = CodeStore(tmp_path)
    a = store.put(zip_of([("a", "1", 0o100644)]))
    b = store.put(zip_of([("b", "2", 0o100644)]))
    assert store.collect({a.sha256}) == []  # b is within its grace period
    os.utime(b.path, (0, 0))
    import runtime.core.codestore as cs
    old = cs.GRACE_S
    cs.GRACE_S = -1.0
    try:
        assert store.collect({a.sha256}) == [b.sha256]
    finally:
        cs.GRACE_S = old
    assert a.path.exists() and not b.path.exists()
