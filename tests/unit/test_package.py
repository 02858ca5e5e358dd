"""fnctl package without an agent: what goes into the zip, where, with which
modes; the three ways a library is built; errors that name the failing step.
The zips are unpacked and run here, as the sandbox would run them
(LD_LIBRARY_PATH=<root>/lib, the root first on sys.path)."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from runtime.cli import fnctl, package

ADD_C = '#include "add.h"\nint add(int a, int b) { return a + b; }\n'
MUL_CPP = ('#include "add.h"\n#include <vector>\n#include <numeric>\n'
           'extern "C" int mul_sum(int n) { std::vector<int> v(n); std::iota(v.begin(), v.end(), 1);'
           ' return std::accumulate(v.begin(), v.end(), 0) * add(1, 1); }\n')
ADD_H = '#ifdef __cplusplus\nextern "C" {\n#endif\nint add(int a, int b);\nint mul_sum(int n);\n' \
        '#ifdef __cplusplus\n}\n#endif\n'
ADD_BUILD = ('from cffi import FFI\nffibuilder = FFI()\nffibuilder.cdef("int add(int, int); int mul_sum(int);")\n'
             'ffibuilder.set_source("pkg._add", \'#include "add.h"\', libraries=["add"])\n')


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def entries(zip_path: Path) -> dict[str, int]:
    """name -> unix mode of every entry."""
    with zipfile.ZipFile(zip_path) as zf:
        return {i.filename: i.external_attr >> 16 for i in zf.infolist()}


def run_unpacked(zip_path: Path, dest: Path, code: str) -> str:
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(dest)
    env = {"LD_LIBRARY_PATH": str(dest / "lib"), "PATH": os.environ.get("PATH", "")}
    proc = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(dest)!r}); {code}"],
                          capture_output=True, text=True, env=env, cwd=dest)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_sources_library_and_cffi_extension(tmp_path):
    shared = write(tmp_path / "shared", {"helper.py": "X = 1\n"})
    src = write(tmp_path / "fn", {
        "app.py": "def handler(e, c):\n    return 1\n", "data/table.txt": "t\n",
        "native/add/add.c": ADD_C, "native/add/add.h": ADD_H, "native/add/sub/mul.cpp": MUL_CPP,
        "pkg/__init__.py": "", "pkg/add_build.py": ADD_BUILD,
        "__pycache__/app.cpython-311.pyc": "junk", ".git/HEAD": "ref\n", "old.pyc": "junk",
    })
    (src / "helper.py").symlink_to(shared / "helper.py")
    os.chmod(src / "data" / "table.txt", 0o600)
    result = package.package(src, tmp_path / "out" / "fn.zip")

    assert result.libraries == ("lib/libadd.so",)
    ext = result.extensions[0]
    assert ext.startswith("pkg/_add.cpython-") and ext.endswith(".so")
    assert result.extensions[1].startswith("_cffi_backend.")
    modes = entries(result.zip_path)
    assert set(modes) == {"app.py", "helper.py", "data/", "data/table.txt", "pkg/", "pkg/__init__.py", "lib/",
                          "lib/libadd.so", ext, result.extensions[1]}, "no native/, build script, caches or VCS"
    assert stat.S_IMODE(modes["app.py"]) == 0o644 and stat.S_IMODE(modes["data/table.txt"]) == 0o644
    assert stat.S_IMODE(modes["lib/libadd.so"]) == 0o755 and stat.S_IMODE(modes[ext]) == 0o755
    assert stat.S_ISREG(modes["helper.py"]), "a symlink is followed: its content is packaged"
    assert result.size == result.zip_path.stat().st_size and result.files == 7

    out = run_unpacked(result.zip_path, tmp_path / "unpacked",
                       "from pkg._add import lib; import helper; print(lib.add(2, 3), lib.mul_sum(4), helper.X)")
    assert out == "5 20 1", "C and C++ sources in one library; the extension finds it on LD_LIBRARY_PATH"

    again = package.package(src, tmp_path / "again.zip")
    assert set(entries(again.zip_path)) == set(modes)


def test_makefile_library(tmp_path):
    src = write(tmp_path / "fn", {
        "app.py": "",
        "native/add/Makefile": "$(LIBDIR)/libadd.so: add.c\n\tcc -O2 -fPIC -shared -o $@ add.c\n",
        "native/add/add.c": ADD_C, "native/add/add.h": ADD_H,
    })
    result = package.package(src, tmp_path / "fn.zip")
    assert result.libraries == ("lib/libadd.so",) and result.extensions == ()
    assert "lib/libadd.so" in entries(result.zip_path)


def test_prebuilt_library_is_copied_and_linkable(tmp_path):
    lib = tmp_path / "prebuilt"
    lib.mkdir()
    write(lib, {"add.c": ADD_C, "add.h": ADD_H})
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(lib / "libadd.so"), str(lib / "add.c")], check=True)
    src = write(tmp_path / "fn", {"app.py": "", "add_build.py": (
        # add.h is not on any include path here: the build script declares what it uses itself.
        'from cffi import FFI\nffibuilder = FFI()\nffibuilder.cdef("int add(int, int);")\n'
        'ffibuilder.set_source("_add", "int add(int a, int b);", libraries=["add"])\n')})
    (src / "lib").mkdir()
    (src / "lib" / "libadd.so").write_bytes((lib / "libadd.so").read_bytes())
    result = package.package(src, tmp_path / "fn.zip")
    assert result.libraries == () and result.extensions[0].startswith("_add.cpython-")
    assert run_unpacked(result.zip_path, tmp_path / "unpacked", "from _add import lib; print(lib.add(40, 2))") == "42"


@pytest.mark.parametrize("files,match", [
    ({"native/empty/README": "x"}, re.escape("building native/empty: no Makefile, CMakeLists.txt or C/C++ source")),
    ({"native/bad/bad.c": "int f( {"}, r"(?s)building native/bad failed \(exit 1\): cc .*/fn/native/bad/bad.c:1:8: error"),
    ({"native/has space/a.c": ""}, "a library name may hold"),
    ({"native/a.c": ""}, "native/a.c: a library's sources go in native/NAME/"),
    ({"x_build.py": "y = 1\n"}, "x_build.py defines no ffibuilder"),
    ({"native/m/Makefile": "all:\n\ttrue\n"}, "building native/m: no lib/libm.so was produced"),
])
def test_errors_name_the_step(tmp_path, files, match):
    src = write(tmp_path / "fn", {"app.py": "", **files})
    with pytest.raises(package.PackageError, match=match):
        package.package(src, tmp_path / "fn.zip")
    assert not (tmp_path / "fn.zip").exists()


def test_cli(tmp_path, capsys):
    src = write(tmp_path / "fn", {"app.py": "def handler(e, c):\n    return 1\n"})
    out = tmp_path / "fn.zip"
    assert fnctl.main(["package", str(src), "-o", str(out)]) == 0
    assert f"wrote {out}: 1 files" in capsys.readouterr().out
    assert set(entries(out)) == {"app.py"}

    write(src, {"native/bad/bad.c": "nope"})
    assert fnctl.main(["package", str(src), "-o", str(out)]) == 2
    assert "fnctl: package: building native/bad failed" in capsys.readouterr().err
    assert fnctl.main(["package", str(tmp_path / "missing")]) == 2
    assert "not a directory" in capsys.readouterr().err
