"""native/: the C++ unit tests (through make), the cffi facade against a
pure-Python reference, its argument checks, and the bigpad generator.

Everything is built into a temporary directory by native/build.py (the same
code as `make native`), so the tests work from a clean clone and do not race
with a developer's native/build/.
"""

from __future__ import annotations

import ctypes
import doctest
import importlib
import importlib.util
import random
import subprocess
import sys
from pathlib import Path

import pytest

NATIVE = Path(__file__).resolve().parents[1]


def _load(name: str, path: Path):
    """native/'s scripts as modules, under names that cannot clash with installed packages."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bigpad = _load("native_bigpad", NATIVE / "bigpad.py")
native_build = _load("native_build", NATIVE / "build.py")


@pytest.fixture(scope="session")
def build_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("native-build")


@pytest.fixture(scope="session")
def ir(build_dir):
    """The facade, imported from the freshly built tree."""
    path = native_build.build(build_dir)
    sys.path.insert(0, str(path))
    try:
        yield importlib.import_module("imgresize")
    finally:
        sys.path.remove(str(path))


def test_cpp_unit_tests(build_dir):
    proc = subprocess.run(["make", "-s", "-C", str(NATIVE), "test", f"BUILD={build_dir}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith(" passed, 0 failed"), proc.stdout


def test_library_exports_only_its_api(ir, build_dir):
    out = subprocess.run(["nm", "-D", "--defined-only", str(build_dir / "lib" / "libimgresize.so")],
                         capture_output=True, text=True, check=True).stdout
    functions = {line.split()[-1] for line in out.splitlines() if line.split()[1] == "T"}
    assert functions == {"ir_version", "ir_strerror", "ir_resize", "ir_checksum"}


def test_docstring_example(ir):
    assert doctest.testmod(ir).failed == 0


def test_version_and_constants(ir):
    assert ir.version() == "1.0.0"
    assert (ir.MAX_SIDE, ir.MAX_CHANNELS) == (65535, 4)


# -- results against pure-Python references ---------------------------------------

def area_reference(data: bytes, w: int, h: int, ch: int, nw: int, nh: int) -> bytes:
    """Exact area averaging in integers: a source pixel is nw (nh) units wide
    (high), a destination pixel w (h); weights are the overlaps."""
    def axis(src: int, dst: int) -> list[list[tuple[int, int]]]:
        spans = []
        for d in range(dst):
            lo, hi = d * src, (d + 1) * src
            spans.append([(s, min(hi, (s + 1) * dst) - max(lo, s * dst)) for s in range(src)
                          if min(hi, (s + 1) * dst) > max(lo, s * dst)])
        return spans

    xs, ys, total = axis(w, nw), axis(h, nh), w * h
    out = bytearray()
    for y_span in ys:
        for x_span in xs:
            for c in range(ch):
                acc = sum(data[(sy * w + sx) * ch + c] * wx * wy for sy, wy in y_span for sx, wx in x_span)
                out.append((acc + total // 2) // total)
    return bytes(out)


@pytest.mark.parametrize("w,h,ch,nw,nh", [(8, 6, 1, 4, 3), (7, 5, 3, 3, 2), (5, 4, 4, 9, 7), (13, 1, 2, 5, 1),
                                          (1, 1, 3, 4, 4), (16, 16, 1, 1, 1)])
def test_area_matches_exact_reference(ir, w, h, ch, nw, nh):
    data = random.Random(w * 1000 + nw).randbytes(w * h * ch)
    assert ir.resize(data, w, h, ch, nw, nh, ir.Method.AREA) == area_reference(data, w, h, ch, nw, nh)


def test_bilinear_known_values(ir):
    assert ir.resize(bytes([0, 255]), 2, 1, 1, 4, 1, ir.Method.BILINEAR) == bytes([0, 64, 191, 255])
    img = ir.Image(3, 3, 1, bytes([10, 20, 30, 40, 50, 60, 70, 80, 90]))
    assert img.resize(3, 3, ir.Method.BILINEAR) == img, "same size is a copy"
    assert img.resize(1, 1, ir.Method.BILINEAR).data == bytes([50]), "the centre pixel"


def test_buffers_and_strides(ir):
    packed = bytes(range(24))                         # 4x3 grey
    padded = b"".join(packed[y * 4:(y + 1) * 4] + b"\xff\xff" for y in range(3))
    want = ir.resize(packed, 4, 3, 1, 2, 2)
    assert ir.resize(padded, 4, 3, 1, 2, 2, stride=6) == want
    assert ir.resize(bytearray(packed), 4, 3, 1, 2, 2) == want
    assert ir.resize(memoryview(padded)[:-2], 4, 3, 1, 2, 2, stride=6) == want
    assert ir.checksum(padded, 4, 3, 1, stride=6) == ir.checksum(packed, 4, 3, 1)
    assert ir.resize(packed, 4, 3, 1, 2, 2, method=1) == want, "an int method is accepted"


def test_checksum_is_fnv1a(ir):
    assert ir.checksum(b"a", 1, 1, 1) == 0xAF63DC4C8601EC8C
    h = 0xCBF29CE484222325
    for b in bytes(range(30)):
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    assert ir.Image(5, 2, 3, bytes(range(30))).checksum() == h


def test_area_keeps_the_mean(ir):
    img = ir.Image(64, 48, 3, random.Random(3).randbytes(64 * 48 * 3))
    assert abs(img.resize(16, 12).mean() - img.mean()) < 0.5


# -- argument checks --------------------------------------------------------------

@pytest.mark.parametrize("args,kwargs,error,match", [
    ((b"\0" * 4, 2.0, 2, 1, 1, 1), {}, TypeError, "width must be an int, not float"),
    ((b"\0" * 4, True, 2, 1, 1, 1), {}, TypeError, "width must be an int, not bool"),
    (("abcd", 2, 2, 1, 1, 1), {}, TypeError, "data must be bytes"),
    ((b"\0" * 4, 0, 2, 1, 1, 1), {}, ValueError, "width must be between 1 and 65535, got 0"),
    ((b"\0" * 4, 2, 2, 1, 65536, 1), {}, ValueError, "new_width must be between 1 and 65535"),
    ((b"\0" * 4, 2, 2, 5, 1, 1), {}, ValueError, "channels must be between 1 and 4, got 5"),
    ((b"\0" * 3, 2, 2, 1, 1, 1), {}, ValueError, "data holds 3 bytes; a 2x2 image with 1 channel"),
    ((b"\0" * 8, 2, 2, 1, 1, 1), {"stride": 1}, ValueError, "stride must be between 2"),
    ((b"\0" * 4, 2, 2, 1, 1, 1), {"method": 7}, ValueError, "method must be one of"),
])
def test_bad_arguments_are_named(ir, args, kwargs, error, match):
    with pytest.raises(error, match=match):
        ir.resize(*args, **kwargs)


def test_image_checks_its_size(ir):
    with pytest.raises(ValueError, match="data holds 5 bytes, not 2x2x1 = 4"):
        ir.Image(2, 2, 1, b"\0" * 5)
    assert isinstance(ir.Image(2, 1, 1, bytearray(2)).data, bytes)


def test_library_status_becomes_exception(ir):
    err = ir.ImgResizeError(6, "ir_resize")  # IR_EOVERLAP: the facade's own buffers never overlap
    assert str(err) == "ir_resize failed: source and destination buffers overlap (ir_status 6)"
    assert err.status == 6


def test_missing_extension_says_how_to_build(tmp_path):
    proc = subprocess.run([sys.executable, "-c", "import imgresize"], cwd=tmp_path, capture_output=True,
                          text=True, env={"PYTHONPATH": str(NATIVE / "python")})
    assert proc.returncode == 1
    assert "make native" in proc.stderr and "fnctl package" in proc.stderr


# -- the large-library generator ----------------------------------------------------

def test_bigpad_library(tmp_path):
    size = 3 * bigpad.PAGE + 123
    path = bigpad.build(tmp_path, size=size, name="pad", seed=5)
    assert path == tmp_path / "libpad.so" and path.stat().st_size > size
    data = bigpad.padding(size, 5)
    assert 0 not in data and data == bigpad.padding(size, 5)
    lib = ctypes.CDLL(str(path))
    lib.bigpad_size.restype = ctypes.c_size_t
    lib.bigpad_checksum.restype = ctypes.c_uint64
    lib.bigpad_checksum.argtypes = [ctypes.c_size_t] * 3
    assert lib.bigpad_size() == size
    h = 0xCBF29CE484222325
    for b in data[100::bigpad.PAGE]:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    assert lib.bigpad_checksum(100, 1 << 40, bigpad.PAGE) == h, "reads the padding, clamped to its end"
    assert lib.ir_version() == 10000, "a real library: imgresize's API is in it"
    assert data in path.read_bytes(), "the padding is stored in the file, not zero-filled at load"
