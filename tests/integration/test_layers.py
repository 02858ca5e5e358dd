"""Layers through a real agent and gRPC: shared read-only /opt, ordering and
overrides, limits, immutable versions, delete refused while in use, one
inode (one page-cache copy) across functions, and preload_libraries."""

import json
import shutil
import subprocess
import time

import grpc
import pytest

from framework.agent import AgentProcess, Client, error_type, serve_for_fixture
from runtime.v1 import functions_pb2, invoker_pb2, layers_pb2

pytestmark = [pytest.mark.integration, pytest.mark.root]

LIMIT_MB = 1  # the agent's --max-unpacked-mb: small, so the size test stays cheap

READER = """import json, os
def handler(event, context):
    out = {}
    for path in event["paths"]:
        try:
            st = os.stat(path)
            with open(path) as f:
                out[path] = {"text": f.read(), "ino": st.st_ino, "dev": st.st_dev}
        except OSError as exc:
            out[path] = {"errno": exc.errno}
    return out
"""


@pytest.fixture(scope="module")
def layered_agent():
    yield from serve_for_fixture(AgentProcess(extra_args=("--max-unpacked-mb", str(LIMIT_MB), "--stem-cells", "1")))


@pytest.fixture(scope="module")
def c(layered_agent):
    client = Client(layered_agent.target)
    yield client
    client.close()


def _fails(call, status, etype, *words):
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == status, err.value.details()
    assert error_type(err.value) == etype, err.value.details()
    for word in words:
        assert word in err.value.details(), (word, err.value.details())
    return err.value.details()


def _read(c, name, *paths):
    resp, body = c.invoke_json(name, {"paths": list(paths)})
    assert not resp.function_error, body
    return resp, body


def test_layer_shared_by_two_functions_maps_one_inode(c, layered_agent):
    shared = c.publish_layer("shared-data", {"data/greeting.txt": "hello from a layer",
                                             "python/layerlib.py": "VALUE = 42\n"})
    c.publish_layer("shared-other", {"other.txt": "x"})
    assert (shared.version, shared.layer_version_arn.endswith(":layer:shared-data:1")) == (1, True)
    code = {"app.py": READER + "\nimport layerlib\ndef lib(e, c):\n    return layerlib.VALUE\n"}
    c.create("uses-one", code, layers=["shared-data:1"])
    c.create("uses-two", code, layers=["shared-other:1", shared.layer_version_arn])  # merged tree
    path = "/opt/data/greeting.txt"
    _, one = _read(c, "uses-one", path)
    _, two = _read(c, "uses-two", path)
    assert one[path]["text"] == two[path]["text"] == "hello from a layer"
    # The same file inside both sandboxes: same device, same inode, so the
    # same page-cache pages (a hardlink in the merged tree, never a copy).
    assert (one[path]["ino"], one[path]["dev"]) == (two[path]["ino"], two[path]["dev"])
    host_file = layered_agent.data_dir / "code" / shared.content_sha256 / "data" / "greeting.txt"
    assert host_file.stat().st_ino == one[path]["ino"]
    # /opt/python is on sys.path, after /var/task.
    c.functions.UpdateFunctionConfiguration(functions_pb2.UpdateFunctionConfigurationRequest(
        name="uses-two", handler="app.lib"))
    assert c.invoke_json("uses-two")[1] == 42
    got = c.layers.GetLayerVersion(layers_pb2.GetLayerVersionRequest(name="shared-data", version=1))
    assert list(got.used_by) == ["uses-one", "uses-two"]
    cfg = c.functions.GetFunction(functions_pb2.GetFunctionRequest(name="uses-two"))
    assert list(cfg.spec.layers) == ["shared-other:1", "shared-data:1"]  # ARN normalised, order kept


def test_order_and_overrides(c):
    c.publish_layer("order-low", {"conf.txt": "low", "only-low.txt": "from low"})
    c.publish_layer("order-high", {"conf.txt": "high"})
    c.create("order-up", {"app.py": READER}, layers=["order-low:1", "order-high:1"])
    c.create("order-down", {"app.py": READER}, layers=["order-high:1", "order-low:1"])
    _, up = _read(c, "order-up", "/opt/conf.txt", "/opt/only-low.txt")
    assert up["/opt/conf.txt"]["text"] == "high", "the later layer wins"
    assert up["/opt/only-low.txt"]["text"] == "from low", "files of earlier layers stay visible"
    _, down = _read(c, "order-down", "/opt/conf.txt")
    assert down["/opt/conf.txt"]["text"] == "low"


def test_opt_is_read_only(c):
    c.publish_layer("ro", {"file.txt": "original"})
    c.create("opt-writer", {"app.py": """import errno, os
def handler(event, context):
    out = {}
    for name, op in (("create", lambda: open("/opt/new.txt", "w")), ("append", lambda: open("/opt/file.txt", "a")),
                     ("unlink", lambda: os.unlink("/opt/file.txt")), ("mkdir", lambda: os.mkdir("/opt/d"))):
        try:
            op()
            out[name] = "allowed"
        except OSError as exc:
            out[name] = errno.errorcode[exc.errno]
    out["text"] = open("/opt/file.txt").read()
    return out
"""}, layers=["ro:1"])
    body = c.invoke_json("opt-writer")[1]
    # Files are 0444 root's as well: opening one for writing fails on its mode first.
    assert body.pop("append") in ("EACCES", "EROFS")
    assert body == {"create": "EROFS", "unlink": "EROFS", "mkdir": "EROFS", "text": "original"}


def test_layers_refused_clearly(c):
    for i in range(6):
        c.publish_layer(f"many-{i}", {f"f{i}": "x"})
    refs = [f"many-{i}:1" for i in range(6)]
    _fails(lambda: c.create("too-many", {"app.py": READER}, layers=refs), grpc.StatusCode.INVALID_ARGUMENT,
           "InvalidParameterValueException", "6 layers given", "at most 5")
    _fails(lambda: c.create("unknown-layer", {"app.py": READER}, layers=["no-such-layer:1"]),
           grpc.StatusCode.INVALID_ARGUMENT, "InvalidParameterValueException", "no-such-layer:1 does not exist")
    _fails(lambda: c.create("unknown-version", {"app.py": READER}, layers=["many-0:7"]),
           grpc.StatusCode.INVALID_ARGUMENT, "InvalidParameterValueException", "many-0:7 does not exist",
           "published versions of many-0: 1")
    _fails(lambda: c.create("bad-ref", {"app.py": READER}, layers=["many-0"]),
           grpc.StatusCode.INVALID_ARGUMENT, "InvalidParameterValueException", "NAME:VERSION")
    for name in ("too-many", "unknown-layer", "unknown-version", "bad-ref"):
        _fails(lambda: c.functions.GetFunction(functions_pb2.GetFunctionRequest(name=name)),
               grpc.StatusCode.NOT_FOUND, "ResourceNotFoundException")


def test_package_over_limit_refused_and_old_version_serves(c):
    limit = LIMIT_MB * 1024 * 1024
    c.publish_layer("bulk", {"blob.bin": b"\0" * 700_000})
    c.create("sized", {"app.py": "def handler(e, c):\n    return 'v1'\n"}, layers=["bulk:1"])
    assert c.invoke_json("sized")[1] == "v1"
    big = {"app.py": "def handler(e, c):\n    return 'v2'\n", "pad.bin": b"\0" * 400_000}
    details = _fails(lambda: c.update_code("sized", big), grpc.StatusCode.INVALID_ARGUMENT,
                     "InvalidParameterValueException", "bulk:1 700000 bytes", f"at most {limit} bytes (1 MB)")
    assert "function code (4000" in details and "unpack to 1100" in details
    # A second layer that would not fit is refused too.
    c.publish_layer("bulk-more", {"more.bin": b"\0" * 400_000})
    _fails(lambda: c.functions.UpdateFunctionConfiguration(functions_pb2.UpdateFunctionConfigurationRequest(
        name="sized", layers=functions_pb2.LayerRefs(refs=["bulk:1", "bulk-more:1"]))),
        grpc.StatusCode.INVALID_ARGUMENT, "InvalidParameterValueException", "bulk-more:1 400000 bytes")
    _fails(lambda: c.create("sized-new", big, layers=["bulk:1"]), grpc.StatusCode.INVALID_ARGUMENT,
           "InvalidParameterValueException", "at most")
    cfg = c.functions.GetFunction(functions_pb2.GetFunctionRequest(name="sized"))
    assert list(cfg.spec.layers) == ["bulk:1"] and cfg.revision == 1
    assert c.invoke_json("sized")[1] == "v1"


def test_versions_are_immutable(c):
    v1 = c.publish_layer("ver", {"v.txt": "one"}, description="first")
    c.create("ver-user", {"app.py": READER}, layers=["ver:1"])
    v2 = c.publish_layer("ver", {"v.txt": "two"})
    assert (v1.version, v2.version) == (1, 2) and v1.content_sha256 != v2.content_sha256
    got = c.layers.GetLayerVersion(layers_pb2.GetLayerVersionRequest(name="ver", version=1))
    assert (got.content_sha256, got.description) == (v1.content_sha256, "first")
    assert _read(c, "ver-user", "/opt/v.txt")[1]["/opt/v.txt"]["text"] == "one"
    listed = c.layers.ListLayerVersions(layers_pb2.ListLayerVersionsRequest(name="ver")).versions
    assert [v.version for v in listed] == [1, 2]


def test_delete_in_use_refused(c):
    c.publish_layer("busy-layer", {"x": "1"})
    c.create("busy-user", {"app.py": READER}, layers=["busy-layer:1"])
    delete = layers_pb2.DeleteLayerVersionRequest(name="busy-layer", version=1)
    _fails(lambda: c.layers.DeleteLayerVersion(delete), grpc.StatusCode.FAILED_PRECONDITION,
           "ResourceInUseException", "busy-layer:1", "busy-user")
    assert _read(c, "busy-user", "/opt/x")[1]["/opt/x"]["text"] == "1"
    c.functions.UpdateFunctionConfiguration(functions_pb2.UpdateFunctionConfigurationRequest(
        name="busy-user", layers=functions_pb2.LayerRefs(refs=[])))
    c.layers.DeleteLayerVersion(delete)
    _fails(lambda: c.layers.GetLayerVersion(layers_pb2.GetLayerVersionRequest(name="busy-layer", version=1)),
           grpc.StatusCode.NOT_FOUND, "ResourceNotFoundException")
    assert c.publish_layer("busy-layer", {"x": "2"}).version == 2, "numbers are never reused"
    assert _read(c, "busy-user", "/opt/x")[1]["/opt/x"] == {"errno": 2}


def test_layered_functions_use_stem_cells(c, layered_agent):
    """A stem cell gets the layers' tree at /opt along with the code, read-only."""
    def wait_for_cell():  # started and not yet specialised, per the agent's lifecycle log
        deadline = time.monotonic() + 20
        while True:
            log = layered_agent.log()
            if log.count("created env=stem-python3.11-") > log.count("specialised env=stem-python3.11-"):
                return
            if time.monotonic() > deadline:
                pytest.skip("no stem cells on this host")
            time.sleep(0.05)

    c.publish_layer("stemmed", {"s.txt": "layered", "python/stemmod.py": "VALUE = 'from the layer'\n"})
    c.create("stem-layered", {"app.py": READER}, layers=["stemmed:1"])
    c.create("stem-plain", {"app.py": READER})
    c.create("stem-import", {"app.py": "import stemmod\n\ndef handler(event, context):\n"
                                        "    return stemmod.VALUE\n"}, layers=["stemmed:1"])
    wait_for_cell()
    resp, body = _read(c, "stem-layered", "/opt/s.txt")
    assert resp.start_kind == invoker_pb2.PREWARMED and body["/opt/s.txt"]["text"] == "layered"
    wait_for_cell()
    resp, body = _read(c, "stem-plain", "/opt/s.txt")
    assert resp.start_kind == invoker_pb2.PREWARMED and body["/opt/s.txt"] == {"errno": 2}
    wait_for_cell()
    resp, body = c.invoke_json("stem-import", {})
    assert resp.start_kind == invoker_pb2.PREWARMED and body == "from the layer", "/opt/python is on sys.path"
    # Read-only, as in a cold start: the shared layer cannot be changed from a sandbox.
    c.create("stem-writer", {"app.py": "import errno\n\ndef handler(event, context):\n    try:\n"
                                        "        open('/opt/s.txt', 'w')\n    except OSError as exc:\n"
                                        "        return errno.errorcode[exc.errno]\n    return 'written'\n"},
             layers=["stemmed:1"])
    wait_for_cell()
    resp, body = c.invoke_json("stem-writer", {})
    assert resp.start_kind == invoker_pb2.PREWARMED and body in ("EROFS", "EACCES"), body


@pytest.fixture(scope="module")
def probe_so(tmp_path_factory):
    if not shutil.which("gcc"):
        pytest.skip("gcc is needed to build the test library")
    d = tmp_path_factory.mktemp("probe")
    (d / "probe.c").write_text("int layer_probe(void) { return 42; }\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", str(d / "libprobe.so"), str(d / "probe.c")],
                   check=True, capture_output=True, timeout=60)
    return (d / "libprobe.so").read_bytes()


MAPS = """def handler(event, context):
    return "libprobe.so" in open("/proc/self/maps").read()
"""


def test_preload_maps_library_before_first_invoke(c, probe_so):
    c.publish_layer("native", {"lib/libprobe.so": probe_so}, modes={"lib/libprobe.so": 0o755})
    c.create("preloaded", {"app.py": MAPS}, layers=["native:1"], preload_libraries=["/opt/lib/libprobe.so"])
    c.create("not-preloaded", {"app.py": MAPS}, layers=["native:1"])
    resp, mapped = c.invoke_json("preloaded")
    # COLD or PREWARMED, depending on whether this module's stem cell has been
    # replaced yet: both load the library during init.
    assert resp.start_kind in (invoker_pb2.COLD, invoker_pb2.PREWARMED), resp
    assert mapped is True, "loaded during init, before the first invoke"
    assert c.invoke_json("not-preloaded")[1] is False
    cfg = c.functions.GetFunction(functions_pb2.GetFunctionRequest(name="preloaded"))
    assert list(cfg.spec.preload_libraries) == ["/opt/lib/libprobe.so"]


def test_missing_preload_library_is_an_init_error(c):
    c.create("preload-missing", {"app.py": "def handler(e, c):\n    return 1\n"},
             preload_libraries=["/var/task/lib/libnope.so"])
    resp, body = c.invoke_json("preload-missing")
    assert resp.function_error == "Unhandled"
    assert body["errorType"] == "Runtime.PreloadError"
    assert "/var/task/lib/libnope.so" in body["errorMessage"]


def test_preload_paths_validated_at_deploy(c):
    _fails(lambda: c.create("preload-bad", {"app.py": MAPS}, preload_libraries=["/etc/../lib/x.so"]),
           grpc.StatusCode.INVALID_ARGUMENT, "InvalidParameterValueException", "preload_libraries", "/var/task/")
    _fails(lambda: c.create("preload-noopt", {"app.py": MAPS}, preload_libraries=["/opt/lib/x.so"]),
           grpc.StatusCode.INVALID_ARGUMENT, "InvalidParameterValueException", "no layers")
    runtimes = c.functions.ListRuntimes(functions_pb2.ListRuntimesRequest()).runtimes
    node = next((r.name for r in runtimes if r.name.startswith("nodejs")), None)
    if node:
        _fails(lambda: c.create("preload-node", {"index.js": "exports.handler = async () => 1;\n"},
                                handler="index.handler", runtime=node, preload_libraries=["/var/task/x.so"]),
               grpc.StatusCode.INVALID_ARGUMENT, "InvalidParameterValueException", "only python3.x runtimes")


def test_layers_survive_restart(tmp_path):
    """Versions, counters and merged trees are durable; a restarted agent
    serves layered functions at once."""
    proc = AgentProcess(tmp_path / "data").start()
    try:
        c = Client(proc.target)
        c.publish_layer("durable-a", {"a.txt": "A"})
        c.publish_layer("durable-b", {"b.txt": "B"})
        c.create("durable-fn", {"app.py": READER}, layers=["durable-a:1", "durable-b:1"])
        c.close()
        assert proc.stop() == 0
        proc.start()
        c = Client(proc.target)
        _, body = _read(c, "durable-fn", "/opt/a.txt", "/opt/b.txt")
        assert (body["/opt/a.txt"]["text"], body["/opt/b.txt"]["text"]) == ("A", "B")
        assert c.publish_layer("durable-a", {"a.txt": "A2"}).version == 2
        assert json.loads(c.invoke("durable-fn", {"paths": []}).payload) == {}
        c.close()
    finally:
        proc.cleanup()
