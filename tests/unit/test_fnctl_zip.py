"""fnctl without a server: build_zip, the argument helpers, local error paths."""

import io
import os
import stat
import zipfile
from datetime import datetime, timezone

import pytest

from runtime.cli import fnctl
from runtime.cli.fnctl import UsageError, build_zip, load_code, parse_env, parse_time, read_payload


def make_tree(root):
    (root / "pkg" / "__pycache__").mkdir(parents=True)
    (root / "app.py").write_text("def handler(event, context):\n    return event\n")
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\x00pyc")
    (root / "stale.pyc").write_bytes(b"\x00pyc")
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "run.sh", 0o755)
    os.chmod(root / "app.py", 0o600)
    (root / "link.py").symlink_to("app.py")
    (root / "pkglink").symlink_to("pkg")
    return root


def entries(data):
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {i.filename: (i.external_attr >> 16, zf.read(i), i) for i in zf.infolist()}


def test_same_tree_gives_same_bytes(tmp_path):
    a = make_tree(tmp_path / "a")
    first = build_zip(a)
    os.utime(a / "app.py", (0, 0))  # mtimes never reach the zip
    assert build_zip(a) == first
    b = tmp_path / "b"  # same content, created later in another order
    b.mkdir()
    (b / "pkglink").symlink_to("pkg")
    (b / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(b / "run.sh", 0o700)  # only "executable or not" is kept
    (b / "link.py").symlink_to("app.py")
    (b / "pkg").mkdir()
    (b / "pkg" / "__init__.py").write_text("")
    (b / "app.py").write_text("def handler(event, context):\n    return event\n")
    assert build_zip(b) == first


def test_entries_are_sorted_with_fixed_timestamps(tmp_path):
    data = build_zip(make_tree(tmp_path))
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = [i.filename for i in zf.infolist()]
        assert names == sorted(names, key=lambda n: n.rstrip("/"))
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert zf.testzip() is None


def test_exec_bit_kept_and_modes_normalised(tmp_path):
    got = entries(build_zip(make_tree(tmp_path)))
    assert got["run.sh"][0] == stat.S_IFREG | 0o755
    assert got["app.py"][0] == stat.S_IFREG | 0o644
    assert got["pkg/"][0] == stat.S_IFDIR | 0o755
    assert got["app.py"][2].compress_type == zipfile.ZIP_DEFLATED


def test_symlinks_stored_as_links_not_followed(tmp_path):
    got = entries(build_zip(make_tree(tmp_path)))
    mode, data, _ = got["link.py"]
    assert stat.S_ISLNK(mode) and data == b"app.py"
    mode, data, _ = got["pkglink"]
    assert stat.S_ISLNK(mode) and data == b"pkg"
    assert not any(n.startswith("pkglink/") for n in got)  # the linked dir is not entered


def test_pycache_and_pyc_skipped(tmp_path):
    got = entries(build_zip(make_tree(tmp_path)))
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in got)
    assert set(got) == {"app.py", "link.py", "pkg/", "pkg/__init__.py", "pkglink", "run.sh"}


def test_agent_code_store_accepts_the_zip(tmp_path):
    from runtime.core.codestore import CodeStore
    ref = CodeStore(tmp_path / "store").put(build_zip(make_tree(tmp_path / "src")))
    assert os.readlink(ref.path / "link.py") == "app.py"
    assert os.access(ref.path / "run.sh", os.X_OK)


def test_build_zip_refuses_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError):
        build_zip(tmp_path / "f")


def test_load_code_sends_a_zip_as_is_and_names_the_flag(tmp_path):
    data = build_zip(make_tree(tmp_path / "src"))
    (tmp_path / "code.zip").write_bytes(data)
    assert load_code(str(tmp_path / "code.zip")) == data
    assert load_code(str(tmp_path / "src")) == data
    (tmp_path / "notes.txt").write_text("not a zip")
    for bad in ("notes.txt", "missing"):
        with pytest.raises(UsageError, match="--code"):
            load_code(str(tmp_path / bad))


def test_parse_env():
    assert parse_env(None) is None  # not given: keep the stored variables
    assert parse_env([]) == {}  # bare --env: remove them all
    assert parse_env(["A=1", "B=x=y", "C="]) == {"A": "1", "B": "x=y", "C": ""}
    assert parse_env(["A=1", "A=2"]) == {"A": "2"}


@pytest.mark.parametrize("bad", ["NOEQUALS", "=value"])
def test_parse_env_rejects_missing_key_or_equals(bad):
    with pytest.raises(UsageError, match="--env") as err:
        parse_env(["OK=1", bad])
    assert bad in str(err.value)


def test_read_payload(tmp_path):
    assert read_payload("{}") == b"{}"
    assert read_payload('{"k": "é"}') == '{"k": "é"}'.encode()
    assert read_payload("not json") == b"not json"  # the agent validates, not fnctl
    (tmp_path / "event.json").write_bytes(b'{"from": "file"}\n')
    assert read_payload(f"@{tmp_path / 'event.json'}") == b'{"from": "file"}\n'
    assert read_payload("-", stdin=io.BytesIO(b'{"from": "stdin"}')) == b'{"from": "stdin"}'


def test_read_payload_unreadable_file_names_the_flag(tmp_path):
    with pytest.raises(UsageError, match=r"--payload @.*missing\.json"):
        read_payload(f"@{tmp_path / 'missing.json'}")


def test_parse_time():
    now = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    assert parse_time("10m", now=now) == datetime(2024, 5, 1, 11, 50, tzinfo=timezone.utc)
    assert parse_time("2h", now=now) == datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc)
    assert parse_time("1d", now=now) == datetime(2024, 4, 30, 12, 0, tzinfo=timezone.utc)
    assert parse_time("2024-05-01T10:00:00Z") == datetime(2024, 5, 1, 10, tzinfo=timezone.utc)
    assert parse_time("2024-05-01T10:00:00") == datetime(2024, 5, 1, 10, tzinfo=timezone.utc)
    with pytest.raises(UsageError, match="--until"):
        parse_time("yesterday", "--until")


def test_usage_errors_exit_2_before_any_call(tmp_path, capsys):
    pytest.importorskip("runtime.v1.functions_pb2")
    unreachable = f"unix:{tmp_path / 'none.sock'}"
    code = fnctl.main(["--endpoint", unreachable, "deploy", "f", "--runtime", "python3.11",
                       "--handler", "app.handler", "--code", str(tmp_path), "--env", "BAD"])
    assert code == 2
    assert capsys.readouterr().err.strip() == "fnctl: --env 'BAD': expected KEY=VALUE"
    assert fnctl.main(["--endpoint", unreachable, "invoke", "f", "--payload", "@/nonexistent"]) == 2
    assert "--payload @/nonexistent" in capsys.readouterr().err
    assert fnctl.main(["deploy", "f"]) == 2  # argparse: --runtime, --handler, --code missing


def test_unreachable_agent_exits_3_with_a_hint(tmp_path, capsys):
    pytest.importorskip("runtime.v1.functions_pb2")
    target = f"unix:{tmp_path / 'none.sock'}"
    assert fnctl.main(["--endpoint", target, "--timeout", "5", "list"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("fnctl: UNAVAILABLE: ") and err.count("\n") == 1
    assert target in err and "runtime-agent serve" in err
