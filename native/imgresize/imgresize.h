/*
 * imgresize: resampling of 8-bit interleaved images (grey, grey+alpha, RGB,
 * RGBA), with a C interface so that any FFI (cffi, ctypes, JNI) can call it.
 *
 * Methods:
 *   IR_BILINEAR  pixel centres aligned ((x + 0.5) * src/dst - 0.5), edges
 *                clamped; 11-bit fixed-point weights, as OpenCV's INTER_LINEAR.
 *   IR_AREA      each destination pixel is the mean of the source area it
 *                covers, fractional pixels weighted by their share; exact
 *                integer arithmetic, rounded to nearest. The method of choice
 *                for shrinking.
 *
 * Both methods use integers only, so a given input gives the same bytes on
 * every compiler and CPU.
 *
 * Rules of the interface:
 *   - Every function that can fail returns an ir_status; nothing throws
 *     across this boundary (C++ exceptions are caught inside and become
 *     IR_ENOMEM or IR_EINTERNAL).
 *   - Buffers belong to the caller and are only read (src) or written (dst)
 *     during the call; the library keeps no pointer after it returns.
 *   - A row stride is in bytes and is at least width * channels; images
 *     larger than IR_MAX_SIDE on either side are refused.
 *   - Functions are reentrant: no global state.
 */
#ifndef IMGRESIZE_H
#define IMGRESIZE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The library is built with -fvisibility=hidden: only IR_API names are exported. */
#if defined(__GNUC__)
#define IR_API __attribute__((visibility("default")))
#else
#define IR_API
#endif

#define IR_VERSION 10000 /* major * 10000 + minor * 100 + patch */
#define IR_MAX_SIDE 65535
#define IR_MAX_CHANNELS 4

typedef enum ir_method {
    IR_BILINEAR = 0,
    IR_AREA = 1
} ir_method;

typedef enum ir_status {
    IR_OK = 0,
    IR_ENULL = 1,      /* a buffer pointer is NULL */
    IR_EDIMS = 2,      /* a width or height is 0 or above IR_MAX_SIDE */
    IR_ECHANNELS = 3,  /* channels is not 1..IR_MAX_CHANNELS */
    IR_ESTRIDE = 4,    /* a stride is smaller than width * channels */
    IR_EMETHOD = 5,    /* not an ir_method */
    IR_EOVERLAP = 6,   /* src and dst buffers overlap */
    IR_ENOMEM = 7,     /* the working buffers could not be allocated */
    IR_EINTERNAL = 8   /* a bug: an unexpected exception inside the library */
} ir_status;

/* IR_VERSION of the built library (also the cheapest call there is). */
IR_API int ir_version(void);

/* A static, human-readable description of a status ("unknown status" for
 * values outside the enum). Never NULL. */
IR_API const char *ir_strerror(int status);

/* Resizes src (src_w x src_h pixels, src_stride bytes per row) into dst
 * (dst_w x dst_h, dst_stride bytes per row), both with `channels` interleaved
 * 8-bit channels. Returns IR_OK, or the first problem found with the
 * arguments; on error dst is untouched. */
IR_API int ir_resize(const uint8_t *src, size_t src_w, size_t src_h, size_t src_stride,
              uint8_t *dst, size_t dst_w, size_t dst_h, size_t dst_stride,
              int channels, int method);

/* FNV-1a (64-bit) over width * channels bytes of each of `height` rows: a
 * checksum of the pixels that ignores row padding. 0 when img is NULL. */
IR_API uint64_t ir_checksum(const uint8_t *img, size_t width, size_t height, size_t stride,
                     int channels);

#ifdef __cplusplus
}
#endif

#endif /* IMGRESIZE_H */
