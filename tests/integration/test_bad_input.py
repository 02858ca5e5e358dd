"""Bad input gets a clear error naming the field, and loses nothing."""

import io
import stat
import zipfile

import grpc
import pytest

from framework.agent import error_type, make_zip
from runtime.v1 import function_pb2, functions_pb2

pytestmark = [pytest.mark.integration, pytest.mark.root]

OK = {"app.py": "def handler(e, c):\n    return 'v1'\n"}


def _fails(fn, code, err_type, *words):
    with pytest.raises(grpc.RpcError) as exc:
        fn()
    assert exc.value.code() == code, exc.value.details()
    assert error_type(exc.value) == err_type
    for word in words:
        assert word in exc.value.details(), exc.value.details()
    return exc.value.details()


@pytest.mark.parametrize("field,value,words", [
    ("name", "bad name!", ["name", "A-Za-z0-9_-"]),
    ("name", "x" * 65, ["name", "1-64"]),
    ("runtime", "cobol1.0", ["runtime", "python3.11"]),
    ("handler", "no_dot", ["handler", "module.function"]),
    ("memory_mb", 64, ["memory_mb", "128-10240"]),
    ("memory_mb", 20000, ["memory_mb", "128-10240"]),
    ("timeout_seconds", 901, ["timeout_seconds", "1-900"]),
    ("ephemeral_storage_mb", 100, ["ephemeral_storage_mb", "512-10240"]),
])
def test_invalid_spec_fields(client, field, value, words):
    spec = {"name": "valid-name", "handler": "app.handler", "runtime": "python3.11", field: value}
    name, runtime, handler = spec.pop("name"), spec.pop("runtime"), spec.pop("handler")
    expected = "InvalidRuntimeException" if field == "runtime" else "InvalidParameterValueException"
    _fails(lambda: client.create(name, OK, runtime=runtime, handler=handler, **spec),
           grpc.StatusCode.INVALID_ARGUMENT, expected, *words)


def test_invalid_environment(client):
    _fails(lambda: client.create("env-bad", OK, environment={"AWS_SECRET": "x"}),
           grpc.StatusCode.INVALID_ARGUMENT, "InvalidParameterValueException", "environment", "reserved")
    _fails(lambda: client.create("env-bad", OK, environment={"KEY": "x" * 5000}),
           grpc.StatusCode.INVALID_ARGUMENT, "InvalidParameterValueException", "4096")


def _zip_with(entries):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            zf.writestr(info, data)
    return buf.getvalue()


@pytest.mark.parametrize("entries,words", [
    ([("../evil.py", "x", 0o100644)], ["..", "inside"]),
    ([("a/../../evil.py", "x", 0o100644)], [".."]),
    ([("/etc/evil", "x", 0o100644)], ["absolute"]),
    ([("link", "/etc/shadow", stat.S_IFLNK | 0o777)], ["symlink", "outside"]),
    ([("d/link", "../../x", stat.S_IFLNK | 0o777)], ["symlink", "outside"]),
])
def test_hostile_zips_refused(client, agent, entries, words):
    before = sorted(p.name for p in (agent.data_dir / "code").iterdir())
    data = _zip_with([("app.py", "def handler(e, c):\n    return 1\n", 0o100644), *entries])
    _fails(lambda: client.create("zip-bad", data), grpc.StatusCode.INVALID_ARGUMENT,
           "InvalidZipFileException", *words)
    assert sorted(p.name for p in (agent.data_dir / "code").iterdir()) == before, "nothing was written"


def test_not_a_zip_and_empty(client):
    _fails(lambda: client.create("zip-bad", b"this is not a zip"), grpc.StatusCode.INVALID_ARGUMENT,
           "InvalidZipFileException", "zip")
    _fails(lambda: client.create("zip-bad", b""), grpc.StatusCode.INVALID_ARGUMENT,
           "InvalidZipFileException", "empty")


def test_zip_over_unpacked_limit_refused_before_writing(client, agent):
    # 260 MB of zeros compresses to a few hundred KB: a zip bomb within limits of the upload.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("app.py", "def handler(e, c):\n    return 1\n")
        with zf.open("blob.bin", "w", force_zip64=True) as f:
            chunk = bytes(1024 * 1024)
            for _ in range(260):
                f.write(chunk)
    before = sorted(p.name for p in (agent.data_dir / "code").iterdir())
    _fails(lambda: client.create("too-big", buf.getvalue()), grpc.StatusCode.INVALID_ARGUMENT,
           "InvalidZipFileException", "250 MB")
    assert sorted(p.name for p in (agent.data_dir / "code").iterdir()) == before


def test_duplicate_and_missing(client):
    client.create("dup", OK)
    _fails(lambda: client.create("dup", OK), grpc.StatusCode.ALREADY_EXISTS, "ResourceConflictException", "dup")
    _fails(lambda: client.functions.GetFunction(functions_pb2.GetFunctionRequest(name="nope")),
           grpc.StatusCode.NOT_FOUND, "ResourceNotFoundException", "nope")
    _fails(lambda: client.functions.DeleteFunction(functions_pb2.DeleteFunctionRequest(name="nope")),
           grpc.StatusCode.NOT_FOUND, "ResourceNotFoundException")


def test_failed_updates_keep_previous_state(client):
    cfg = client.create("keeper", OK, memory_mb=256)
    assert client.invoke_json("keeper")[1] == "v1"
    _fails(lambda: client.update_code("keeper", b"garbage"), grpc.StatusCode.INVALID_ARGUMENT,
           "InvalidZipFileException")
    _fails(lambda: client.functions.UpdateFunctionConfiguration(
        functions_pb2.UpdateFunctionConfigurationRequest(name="keeper", memory_mb=1, timeout_seconds=5)),
        grpc.StatusCode.INVALID_ARGUMENT, "InvalidParameterValueException", "memory_mb")
    after = client.functions.GetFunction(functions_pb2.GetFunctionRequest(name="keeper"))
    assert after.code_sha256 == cfg.code_sha256
    assert after.spec.memory_mb == 256 and after.spec.timeout_seconds == cfg.spec.timeout_seconds
    assert after.revision == cfg.revision
    assert client.invoke_json("keeper")[1] == "v1"
    # a good update takes effect on the next invoke
    client.update_code("keeper", {"app.py": "def handler(e, c):\n    return 'v2'\n"})
    assert client.invoke_json("keeper")[1] == "v2"
    updated = client.functions.UpdateFunctionConfiguration(functions_pb2.UpdateFunctionConfigurationRequest(
        name="keeper", timeout_seconds=9, environment=functions_pb2.Environment(variables={"A_B": "c"})))
    assert updated.spec.timeout_seconds == 9 and updated.spec.memory_mb == 256
    assert dict(updated.spec.environment) == {"A_B": "c"}


def test_bad_stream_order(client):
    def stream():
        yield functions_pb2.CreateFunctionRequest(code=function_pb2.CodeChunk(data=make_zip(OK)))

    _fails(lambda: client.functions.CreateFunction(stream()), grpc.StatusCode.INVALID_ARGUMENT,
           "InvalidParameterValueException", "spec")


def test_list_pagination(client):
    for i in range(5):
        client.create(f"page-{i}", OK)
    names, marker = [], ""
    while True:
        page = client.functions.ListFunctions(functions_pb2.ListFunctionsRequest(max_items=2, marker=marker))
        assert len(page.functions) <= 2
        names += [f.spec.name for f in page.functions]
        marker = page.next_marker
        if not marker:
            break
    assert [n for n in names if n.startswith("page-")] == [f"page-{i}" for i in range(5)]
    assert names == sorted(names)
    _fails(lambda: client.functions.ListFunctions(functions_pb2.ListFunctionsRequest(max_items=5000)),
           grpc.StatusCode.INVALID_ARGUMENT, "InvalidParameterValueException", "max_items")
