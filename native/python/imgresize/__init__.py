"""imgresize: bilinear and area resampling of 8-bit images, in C++ through cffi.

A typed facade over the compiled extension ``imgresize._ffi`` (built from
``_ffi_build.py`` against ``libimgresize.so``, see native/imgresize/imgresize.h).
Arguments are checked here, in Python, so that mistakes become ``TypeError`` or
``ValueError`` naming the argument; the library checks them again and any
status it returns becomes ``ImgResizeError``.

    >>> img = Image(4, 2, 1, bytes(range(8)))      # 4x2 grey, values 0..7
    >>> img.resize(2, 1, Method.AREA).data          # means of 0,1,4,5 and 2,3,6,7, rounded
    b'\\x03\\x05'
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Protocol, Union, cast

try:
    from imgresize._ffi import ffi, lib as _lib
except ImportError as exc:  # the facade is useless without it: say how to get it
    raise ImportError(
        f"imgresize: the compiled extension imgresize._ffi cannot be loaded ({exc}). Build it with "
        "`make native` (native/build.py) or package the function with `fnctl package`; in a sandbox "
        "libimgresize.so must be in /var/task/lib") from exc

__all__ = ["MAX_CHANNELS", "MAX_SIDE", "Buffer", "Image", "ImgResizeError", "Method", "checksum", "resize",
           "version"]

Buffer = Union[bytes, bytearray, memoryview]


class _Lib(Protocol):
    """The C functions of imgresize.h as cffi exposes them (for type checkers)."""

    IR_OK: int
    IR_VERSION: int
    IR_MAX_SIDE: int
    IR_MAX_CHANNELS: int

    def ir_version(self) -> int: ...
    def ir_strerror(self, status: int) -> object: ...  # const char *
    def ir_resize(self, src: object, src_w: int, src_h: int, src_stride: int, dst: object, dst_w: int,
                  dst_h: int, dst_stride: int, channels: int, method: int) -> int: ...
    def ir_checksum(self, img: object, width: int, height: int, stride: int, channels: int) -> int: ...


lib = cast(_Lib, _lib)
MAX_SIDE: int = lib.IR_MAX_SIDE
MAX_CHANNELS: int = lib.IR_MAX_CHANNELS


class Method(enum.IntEnum):
    """Resampling methods (ir_method)."""

    BILINEAR = 0  # pixel centres aligned, 11-bit weights; for enlarging and mild shrinking
    AREA = 1      # mean of the covered source area, exact; for shrinking


class ImgResizeError(Exception):
    """The library refused a call: ``status`` is the ir_status code."""

    def __init__(self, status: int, call: str):
        self.status = status
        message = ffi.string(lib.ir_strerror(status)).decode()
        super().__init__(f"{call} failed: {message} (ir_status {status})")


def version() -> str:
    """The library's version, "major.minor.patch"."""
    v = lib.ir_version()
    return f"{v // 10000}.{v // 100 % 100}.{v % 100}"


def _int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _check_layout(data: object, width: object, height: object, channels: object,
                  stride: object) -> tuple[int, int, int, int]:
    """(width, height, channels, stride) checked against each other and against len(data)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, bytearray or memoryview, not {type(data).__name__}")
    w = _int("width", width, 1, MAX_SIDE)
    h = _int("height", height, 1, MAX_SIDE)
    c = _int("channels", channels, 1, MAX_CHANNELS)
    row = w * c
    s = row if stride is None else _int("stride", stride, row, 1 << 40)
    need = (h - 1) * s + row
    size = data.nbytes if isinstance(data, memoryview) else len(data)
    if size < need:
        raise ValueError(f"data holds {size} bytes; a {w}x{h} image with {c} channel(s) and a stride of "
                         f"{s} needs {need}")
    if isinstance(data, memoryview) and not data.c_contiguous:
        raise ValueError("data must be a contiguous buffer")
    return w, h, c, s


def resize(data: Buffer, width: int, height: int, channels: int, new_width: int, new_height: int,
           method: Method = Method.AREA, stride: int | None = None) -> bytes:
    """``data`` (``width`` x ``height`` pixels of ``channels`` interleaved
    bytes, rows ``stride`` bytes apart, default packed) resampled to
    ``new_width`` x ``new_height``; the result is packed."""
    w, h, c, s = _check_layout(data, width, height, channels, stride)
    nw = _int("new_width", new_width, 1, MAX_SIDE)
    nh = _int("new_height", new_height, 1, MAX_SIDE)
    if not isinstance(method, Method):
        try:
            method = Method(method)
        except ValueError:
            raise ValueError(f"method must be one of {[m.name for m in Method]}, got {method!r}") from None
    out = bytearray(nw * nh * c)
    # SAFETY: both cdata views borrow the Python buffers and live only for this
    # call; `data` and `out` are kept alive by the local names meanwhile, the
    # library keeps no pointer after returning, and the sizes were checked above.
    src = ffi.from_buffer("uint8_t[]", data)
    dst = ffi.from_buffer("uint8_t[]", out, require_writable=True)
    status = lib.ir_resize(src, w, h, s, dst, nw, nh, nw * c, c, int(method))
    if status != lib.IR_OK:
        raise ImgResizeError(status, "ir_resize")
    return bytes(out)


def checksum(data: Buffer, width: int, height: int, channels: int, stride: int | None = None) -> int:
    """FNV-1a 64 of the image's pixels (row padding excluded)."""
    w, h, c, s = _check_layout(data, width, height, channels, stride)
    # SAFETY: read-only borrow of `data` for the duration of the call (size checked).
    return lib.ir_checksum(ffi.from_buffer("uint8_t[]", data), w, h, s, c)


@dataclasses.dataclass(frozen=True)
class Image:
    """A packed 8-bit image: ``width * height * channels`` bytes, rows top down."""

    width: int
    height: int
    channels: int
    data: bytes

    def __post_init__(self) -> None:
        _check_layout(self.data, self.width, self.height, self.channels, None)
        if len(self.data) != self.width * self.height * self.channels:
            raise ValueError(f"data holds {len(self.data)} bytes, not {self.width}x{self.height}x"
                             f"{self.channels} = {self.width * self.height * self.channels}")
        if not isinstance(self.data, bytes):
            object.__setattr__(self, "data", bytes(self.data))

    def resize(self, width: int, height: int, method: Method = Method.AREA) -> "Image":
        return Image(width, height, self.channels,
                     resize(self.data, self.width, self.height, self.channels, width, height, method))

    def checksum(self) -> int:
        return checksum(self.data, self.width, self.height, self.channels)

    def mean(self) -> float:
        """Mean of all samples (all channels together)."""
        return sum(self.data) / len(self.data)
