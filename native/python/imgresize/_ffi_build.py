"""cffi build script of ``imgresize._ffi``: API mode, out of line.

The extension is C compiled against imgresize.h and linked with
libimgresize.so; cffi checks every declaration below against the header at
compile time, so a mismatch fails the build instead of corrupting memory.

Where the header and library are is the builder's business, passed the
standard way: ``CPPFLAGS=-I<dir of imgresize.h>`` and
``LDFLAGS=-L<dir of libimgresize.so>`` in the environment, which is what
``native/build.py`` and ``fnctl package`` set. Run by hand:
``CPPFLAGS=-I../../imgresize LDFLAGS=-L../../build/lib python _ffi_build.py``.
"""

from cffi import FFI

CDEF = """
#define IR_VERSION ...
#define IR_MAX_SIDE ...
#define IR_MAX_CHANNELS ...

typedef enum ir_method { IR_BILINEAR, IR_AREA, ... } ir_method;
typedef enum ir_status {
    IR_OK, IR_ENULL, IR_EDIMS, IR_ECHANNELS, IR_ESTRIDE, IR_EMETHOD, IR_EOVERLAP,
    IR_ENOMEM, IR_EINTERNAL, ...
} ir_status;

int ir_version(void);
const char *ir_strerror(int status);
int ir_resize(const uint8_t *src, size_t src_w, size_t src_h, size_t src_stride,
              uint8_t *dst, size_t dst_w, size_t dst_h, size_t dst_stride,
              int channels, int method);
uint64_t ir_checksum(const uint8_t *img, size_t width, size_t height, size_t stride,
                     int channels);
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source("imgresize._ffi", '#include "imgresize.h"', libraries=["imgresize"])

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
