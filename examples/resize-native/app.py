"""Makes a thumbnail of an image with a C++ library called through cffi.

The library is native/imgresize (C interface, C++ inside); its typed Python
facade is native/python/imgresize. Both are symlinked into this folder, and
`fnctl package` (the build step in function.json) compiles them into the zip:
lib/libimgresize.so, imgresize/_ffi.*.so (the cffi extension) and
_cffi_backend.*.so. The input is a generated test card, so the result is the
same on every host: the example runner checks its checksums.
"""

import imgresize
from imgresize import Image, Method

_CARDS: dict[tuple[int, int], Image] = {}


def test_card(width: int, height: int) -> Image:
    """An RGB test card: red ramps left to right, green top to bottom, blue is
    an XOR pattern (edges at every scale, which shows resampling errors)."""
    card = _CARDS.get((width, height))
    if card is None:
        red = bytes(x * 255 // max(width - 1, 1) for x in range(width))
        rows = []
        for y in range(height):
            row = bytearray(width * 3)
            row[0::3] = red
            row[1::3] = bytes([y * 255 // max(height - 1, 1)]) * width
            row[2::3] = bytes((x ^ y) & 0xFF for x in range(width))
            rows.append(bytes(row))
        card = _CARDS[(width, height)] = Image(width, height, 3, b"".join(rows))
    return card


test_card(320, 240)  # the default, made during init (which runs with a whole core)


def describe(img: Image) -> dict:
    return {"width": img.width, "height": img.height, "checksum": f"{img.checksum():016x}",
            "mean": round(img.mean(), 3)}


def handler(event, context):
    card = test_card(int(event.get("width", 320)), int(event.get("height", 240)))
    width, height = event.get("thumbnail", [80, 60])
    thumbnail = card.resize(width, height, Method.AREA)          # shrink: mean of each covered area
    restored = thumbnail.resize(card.width, card.height, Method.BILINEAR)  # and back up
    return {
        "library": imgresize.version(),
        "source": describe(card),
        "thumbnail": describe(thumbnail),
        "restored": describe(restored),
        # An area filter keeps the mean brightness (up to rounding of each pixel).
        "mean_preserved": abs(thumbnail.mean() - card.mean()) < 0.5,
    }
