"""Layers without an agent: the hardlink merge, the version store, and the
checks a function's layers and preload libraries go through."""

import asyncio
import io
import os
import stat
import zipfile

import pytest

from runtime.core import function as fnmod
from runtime.core import layers as layermod
from runtime.core.codestore import CodeStore
from runtime.core.function import FunctionSpec
from runtime.core.layers import LayerStore, merge_trees
from runtime.core.registry import FunctionRegistry
from runtime.core.store import Store
from runtime.errors import InvalidParameterValue, ResourceInUse, ResourceNotFound


def zip_of(files: dict, links: dict | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o100755 if name.endswith(".so") else 0o100644) << 16
            zf.writestr(info, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buf.getvalue()


@pytest.fixture
def code(tmp_path):
    return CodeStore(tmp_path / "code")


def test_merge_later_layer_wins_and_files_are_hardlinks(tmp_path, code):
    a = code.put(zip_of({"lib/liba.so": "A", "shared.txt": "from-a", "python/pkg/__init__.py": "",
                         "becomes_file/x": "1", "only_a.txt": "a"}, {"link": "only_a.txt"}))
    b = code.put(zip_of({"lib/libb.so": "B", "shared.txt": "from-b", "becomes_file": "now a file",
                         "python/pkg/mod.py": "x = 1\n"}))
    dest = tmp_path / "opt" / "merged"
    dest.parent.mkdir()
    merge_trees([a.path, b.path], dest)

    assert (dest / "shared.txt").read_text() == "from-b"
    assert (dest / "only_a.txt").read_text() == "a"
    assert (dest / "becomes_file").read_text() == "now a file"
    assert sorted(os.listdir(dest / "lib")) == ["liba.so", "libb.so"]
    assert sorted(os.listdir(dest / "python/pkg")) == ["__init__.py", "mod.py"]
    assert os.readlink(dest / "link") == "only_a.txt"
    # Same inode as the unpacked layer file: one copy in the page cache.
    for rel, src in (("shared.txt", b.path), ("lib/liba.so", a.path), ("lib/libb.so", b.path)):
        assert os.stat(dest / rel).st_ino == os.stat(src / rel).st_ino, rel
    assert os.stat(dest / "shared.txt").st_nlink == 2
    for d in (dest, dest / "lib", dest / "python" / "pkg"):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o555
    assert stat.S_IMODE(os.stat(dest / "lib/liba.so").st_mode) == 0o555
    assert not list(dest.parent.glob(".build-*"))


def test_merge_file_replaced_by_directory(tmp_path, code):
    a = code.put(zip_of({"x": "file"}))
    b = code.put(zip_of({"x/inner": "dir now"}))
    dest = tmp_path / "m"
    merge_trees([a.path, b.path], dest)
    assert (dest / "x" / "inner").read_text() == "dir now"


def _layers(tmp_path, code) -> LayerStore:
    return LayerStore(Store(tmp_path / "registry.db"), code, tmp_path / "opt")


def test_versions_are_immutable_and_never_reused(tmp_path, code):
    layers = _layers(tmp_path, code)
    v1 = asyncio.run(layers.publish("util", "first", zip_of({"f": "1"})))
    v2 = asyncio.run(layers.publish("util", "", zip_of({"f": "2"})))
    assert (v1.version, v2.version) == (1, 2) and v1.sha256 != v2.sha256
    assert layers.get("util", 1) == v1 and (code.path(v1.sha256) / "f").read_text() == "1"
    assert v1.arn.endswith(":layer:util:1")
    layers.delete("util", 2)
    with pytest.raises(ResourceNotFound):
        layers.get("util", 2)
    assert asyncio.run(layers.publish("util", "", zip_of({"f": "3"}))).version == 3
    reopened = _layers(tmp_path, code)  # durable, counter included
    assert [lv.ref for lv in reopened.list()] == ["util:1", "util:3"]
    assert asyncio.run(reopened.publish("util", "", zip_of({"f": "4"}))).version == 4
    assert reopened.published() == {"util": [1, 3, 4]}
    with pytest.raises(InvalidParameterValue, match="not a valid layer name"):
        asyncio.run(reopened.publish("bad name", "", zip_of({"f": "1"})))


def test_opt_dir_one_layer_binds_its_tree_several_a_cached_merge(tmp_path, code):
    layers = _layers(tmp_path, code)
    a = asyncio.run(layers.publish("a", "", zip_of({"a": "1"})))
    asyncio.run(layers.publish("b", "", zip_of({"b": "2"})))
    assert layers.opt_dir(()) is None
    assert layers.opt_dir(("a:1",)) == code.path(a.sha256)
    merged = layers.prepare(("a:1", "b:1"))
    assert merged.parent == tmp_path / "opt" and sorted(os.listdir(merged)) == ["a", "b"]
    ino = os.stat(merged).st_ino
    assert layers.prepare(("a:1", "b:1")) == merged and os.stat(merged).st_ino == ino  # built once
    assert layers.prepare(("b:1", "a:1")) != merged  # order matters
    layermod.GRACE_S, old = -1.0, layermod.GRACE_S
    try:
        removed = layers.collect([("a:1", "b:1")])
    finally:
        layermod.GRACE_S = old
    assert len(removed) == 1 and merged.is_dir()


def test_layer_references_validated():
    published = {"a": [1, 2], "b": [1], "c": [1], "d": [1], "e": [1], "f": [1]}
    assert fnmod.validate_layers(["a:2", fnmod.LAYER_ARN_PREFIX + "b:1"], published) == ("a:2", "b:1")
    with pytest.raises(InvalidParameterValue, match="at most 5"):
        fnmod.validate_layers(["a:1", "b:1", "c:1", "d:1", "e:1", "f:1"], published)
    with pytest.raises(InvalidParameterValue, match=r"a:3 does not exist: published versions of a: 1, 2"):
        fnmod.validate_layers(["a:3"], published)
    with pytest.raises(InvalidParameterValue, match="no layer named 'zz'"):
        fnmod.validate_layers(["zz:1"], published)
    with pytest.raises(InvalidParameterValue, match="listed twice"):
        fnmod.validate_layers(["a:1", "a:2"], published)
    for bad in ("a", "a:0", "a:x", ":1", "a b:1"):
        with pytest.raises(InvalidParameterValue, match="NAME:VERSION"):
            fnmod.validate_layers([bad], published)


@pytest.mark.parametrize("path,words", [
    ("lib/x.so", "absolute"), ("/usr/lib/x.so", "/var/task/ or /opt/"), ("/var/task/../etc/x.so", "'..'"),
    ("/var/task//x.so", "normalised"), ("/var/task/a:b.so", "':'"), ("/opt/lib/x.so", "no layers"),
])
def test_preload_paths_validated(path, words):
    with pytest.raises(InvalidParameterValue, match="preload_libraries") as exc:
        fnmod.validate_preload("python3.11", [path], has_layers=False)
    assert words in str(exc.value)


def test_preload_limits_and_runtimes():
    ok = ["/var/task/lib/a.so", "/opt/lib/b.so"]
    assert fnmod.validate_preload("python3.11", ok, has_layers=True) == tuple(ok)
    with pytest.raises(InvalidParameterValue, match="at most 16"):
        fnmod.validate_preload("python3.11", [f"/var/task/{i}.so" for i in range(17)], True)
    with pytest.raises(InvalidParameterValue, match="only python3.x runtimes"):
        fnmod.validate_preload("nodejs20.x", ok, True)


def test_package_size_names_every_size():
    fnmod.validate_package_size(10, [("a:1", 20)], 30)
    with pytest.raises(InvalidParameterValue) as exc:
        fnmod.validate_package_size(11, [("a:1", 20), ("b:2", 5)], 30)
    assert str(exc.value) == ("layers: function code (11 bytes) and layers (a:1 20 bytes, b:2 5 bytes) unpack to "
                              "36 bytes together: at most 30 bytes are allowed")


def test_spec_json_round_trip_keeps_tuples():
    spec = FunctionSpec("f", "python3.11", "app.handler", layers=("a:1",), preload_libraries=("/opt/x.so",))
    assert FunctionSpec.from_json(spec.to_json()) == spec


def _registry(tmp_path, max_unpacked: int) -> FunctionRegistry:
    store = Store(tmp_path / "registry.db")
    return FunctionRegistry(store, CodeStore(tmp_path / "code", max_unpacked=max_unpacked),
                            {"python3.11": object()})


def test_registry_size_limit_and_delete_in_use(tmp_path):
    reg = _registry(tmp_path, max_unpacked=1000)
    asyncio.run(reg.layers.publish("big", "", zip_of({"blob": "x" * 600})))
    spec = FunctionSpec("fn", "python3.11", "app.handler", layers=("big:1",))
    app = {"app.py": "def handler(e, c):\n    return 1\n"}
    with pytest.raises(InvalidParameterValue, match=r"function code \(532 bytes\).*big:1 600 bytes.*at most 1000"):
        asyncio.run(reg.create(spec, zip_of({**app, "pad": "y" * 500})))
    assert reg.names() == []
    cfg = asyncio.run(reg.create(spec, zip_of(app)))
    assert cfg.spec.layers == ("big:1",)
    with pytest.raises(InvalidParameterValue, match="at most 1000 bytes"):  # the old code stays
        asyncio.run(reg.update_code("fn", zip_of({**app, "pad": "y" * 500})))
    assert reg.get("fn").code_sha256 == cfg.code_sha256
    with pytest.raises(ResourceInUse, match="used by 1 function"):
        reg.delete_layer("big", 1)
    asyncio.run(reg.update_configuration("fn", {"layers": ()}))
    reg.delete_layer("big", 1)
    assert reg.layers.list() == []
