// imgresize: bilinear and area resampling of 8-bit interleaved images.
// The C interface and its rules are in imgresize.h; everything here is
// internal. Both methods work in integers only, so results are identical on
// every compiler and CPU (the example function and the tests check checksums).

#include "imgresize.h"

#include <algorithm>
#include <cstdint>
#include <exception>
#include <new>
#include <vector>

namespace {

constexpr int kCoefBits = 11;  // bilinear weights in 1/2048, as OpenCV
constexpr uint32_t kCoefOne = 1u << kCoefBits;

// One tap pair of the bilinear filter along one axis: dst coordinate d reads
// src[i0] * (1 - w) + src[i1] * w, w in units of 1/kCoefOne.
struct LinearTap {
    size_t i0, i1;
    uint32_t w;
};

// Pixel centres aligned: d maps to (d + 0.5) * src / dst - 0.5, clamped to
// [0, src - 1]. Computed as the exact fraction ((2d + 1) * src - dst) / (2 dst).
std::vector<LinearTap> linear_taps(size_t src, size_t dst) {
    std::vector<LinearTap> taps(dst);
    const int64_t den = 2 * static_cast<int64_t>(dst);
    for (size_t d = 0; d < dst; ++d) {
        const int64_t num = (2 * static_cast<int64_t>(d) + 1) * static_cast<int64_t>(src) - static_cast<int64_t>(dst);
        size_t i0 = 0;
        uint32_t w = 0;
        if (num > 0) {
            i0 = static_cast<size_t>(num / den);
            w = static_cast<uint32_t>(((num % den) * kCoefOne + den / 2) / den);
            if (w == kCoefOne) {  // rounded up onto the next pixel
                ++i0;
                w = 0;
            }
        }
        if (i0 >= src - 1) {
            taps[d] = {src - 1, src - 1, 0};
        } else {
            taps[d] = {i0, i0 + 1, w};
        }
    }
    return taps;
}

void resize_bilinear(const uint8_t *src, size_t sw, size_t sh, size_t sstride, uint8_t *dst, size_t dw,
                     size_t dh, size_t dstride, int ch) {
    const std::vector<LinearTap> xs = linear_taps(sw, dw), ys = linear_taps(sh, dh);
    for (size_t dy = 0; dy < dh; ++dy) {
        const LinearTap &ty = ys[dy];
        const uint8_t *r0 = src + ty.i0 * sstride, *r1 = src + ty.i1 * sstride;
        uint8_t *out = dst + dy * dstride;
        for (size_t dx = 0; dx < dw; ++dx) {
            const LinearTap &tx = xs[dx];
            const size_t a = tx.i0 * ch, b = tx.i1 * ch;
            for (int c = 0; c < ch; ++c) {
                // Each term is at most 255 * 2^11; the sum at most 255 * 2^22.
                const uint32_t top = r0[a + c] * (kCoefOne - tx.w) + r0[b + c] * tx.w;
                const uint32_t bottom = r1[a + c] * (kCoefOne - tx.w) + r1[b + c] * tx.w;
                const uint32_t v = top * (kCoefOne - ty.w) + bottom * ty.w;
                out[dx * ch + c] = static_cast<uint8_t>((v + (1u << (2 * kCoefBits - 1))) >> (2 * kCoefBits));
            }
        }
    }
}

// The source pixels one destination pixel covers along one axis, with the
// length of each overlap. Measured in units where a source pixel is `dst`
// long and a destination pixel `src` long, so every overlap is an integer and
// the weights of one destination pixel add up to `src`.
struct AreaSpan {
    size_t first;                // index into AreaAxis::weights
    size_t count;
};

struct AreaAxis {
    std::vector<AreaSpan> spans;       // one per destination pixel
    std::vector<size_t> index;         // source pixel of each weight
    std::vector<uint64_t> weights;
};

AreaAxis area_axis(size_t src, size_t dst) {
    AreaAxis axis;
    axis.spans.reserve(dst);
    for (size_t d = 0; d < dst; ++d) {
        const uint64_t lo = static_cast<uint64_t>(d) * src, hi = lo + src;
        AreaSpan span{axis.weights.size(), 0};
        for (size_t s = static_cast<size_t>(lo / dst); s < src && static_cast<uint64_t>(s) * dst < hi; ++s) {
            const uint64_t s_lo = static_cast<uint64_t>(s) * dst, s_hi = s_lo + dst;
            const uint64_t overlap = std::min(hi, s_hi) - std::max(lo, s_lo);
            if (overlap == 0) {
                continue;
            }
            axis.index.push_back(s);
            axis.weights.push_back(overlap);
            ++span.count;
        }
        axis.spans.push_back(span);
    }
    return axis;
}

void resize_area(const uint8_t *src, size_t sw, size_t sh, size_t sstride, uint8_t *dst, size_t dw, size_t dh,
                 size_t dstride, int ch) {
    const AreaAxis xs = area_axis(sw, dw), ys = area_axis(sh, dh);
    const size_t n = dw * ch;
    std::vector<uint64_t> row(n), acc(n);
    // Every destination pixel's weights add up to sw * sh, and each sum is at
    // most 255 * sw * sh <= 255 * 65535^2, well inside 64 bits.
    const uint64_t total = static_cast<uint64_t>(sw) * sh;
    for (size_t dy = 0; dy < dh; ++dy) {
        std::fill(acc.begin(), acc.end(), 0);
        const AreaSpan &vy = ys.spans[dy];
        for (size_t k = vy.first; k < vy.first + vy.count; ++k) {
            const uint8_t *in = src + ys.index[k] * sstride;
            for (size_t dx = 0; dx < dw; ++dx) {
                const AreaSpan &vx = xs.spans[dx];
                for (int c = 0; c < ch; ++c) {
                    uint64_t sum = 0;
                    for (size_t j = vx.first; j < vx.first + vx.count; ++j) {
                        sum += in[xs.index[j] * ch + c] * xs.weights[j];
                    }
                    row[dx * ch + c] = sum;
                }
            }
            const uint64_t wy = ys.weights[k];
            for (size_t i = 0; i < n; ++i) {
                acc[i] += row[i] * wy;
            }
        }
        uint8_t *out = dst + dy * dstride;
        for (size_t i = 0; i < n; ++i) {
            out[i] = static_cast<uint8_t>((acc[i] + total / 2) / total);
        }
    }
}

// Bytes an image spans in memory: every row but the last at full stride.
size_t extent(size_t width, size_t height, size_t stride, int ch) {
    return (height - 1) * stride + width * static_cast<size_t>(ch);
}

int check_image(const uint8_t *p, size_t w, size_t h, size_t stride, int ch) {
    if (p == nullptr) {
        return IR_ENULL;
    }
    if (w == 0 || h == 0 || w > IR_MAX_SIDE || h > IR_MAX_SIDE) {
        return IR_EDIMS;
    }
    // stride * (h - 1) must not wrap around: the image has to fit in memory.
    if (stride < w * static_cast<size_t>(ch) || stride > SIZE_MAX / h) {
        return IR_ESTRIDE;
    }
    return IR_OK;
}

}  // namespace

extern "C" {

int ir_version(void) {
    return IR_VERSION;
}

const char *ir_strerror(int status) {
    switch (status) {
        case IR_OK: return "success";
        case IR_ENULL: return "a buffer pointer is NULL";
        case IR_EDIMS: return "width and height must be between 1 and 65535";
        case IR_ECHANNELS: return "channels must be between 1 and 4";
        case IR_ESTRIDE: return "a row stride is smaller than width * channels, or too large";
        case IR_EMETHOD: return "unknown resampling method";
        case IR_EOVERLAP: return "source and destination buffers overlap";
        case IR_ENOMEM: return "out of memory";
        case IR_EINTERNAL: return "internal error";
        default: return "unknown status";
    }
}

int ir_resize(const uint8_t *src, size_t src_w, size_t src_h, size_t src_stride, uint8_t *dst, size_t dst_w,
              size_t dst_h, size_t dst_stride, int channels, int method) {
    if (channels < 1 || channels > IR_MAX_CHANNELS) {
        return IR_ECHANNELS;
    }
    if (int rc = check_image(src, src_w, src_h, src_stride, channels); rc != IR_OK) {
        return rc;
    }
    if (int rc = check_image(dst, dst_w, dst_h, dst_stride, channels); rc != IR_OK) {
        return rc;
    }
    if (method != IR_BILINEAR && method != IR_AREA) {
        return IR_EMETHOD;
    }
    const uintptr_t s0 = reinterpret_cast<uintptr_t>(src), d0 = reinterpret_cast<uintptr_t>(dst);
    const uintptr_t s1 = s0 + extent(src_w, src_h, src_stride, channels);
    const uintptr_t d1 = d0 + extent(dst_w, dst_h, dst_stride, channels);
    if (s0 < d1 && d0 < s1) {
        return IR_EOVERLAP;
    }
    try {
        if (method == IR_BILINEAR) {
            resize_bilinear(src, src_w, src_h, src_stride, dst, dst_w, dst_h, dst_stride, channels);
        } else {
            resize_area(src, src_w, src_h, src_stride, dst, dst_w, dst_h, dst_stride, channels);
        }
    } catch (const std::bad_alloc &) {
        return IR_ENOMEM;
    } catch (...) {
        return IR_EINTERNAL;
    }
    return IR_OK;
}

uint64_t ir_checksum(const uint8_t *img, size_t width, size_t height, size_t stride, int channels) {
    if (img == nullptr || channels < 1) {
        return 0;
    }
    uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a offset basis
    const size_t n = width * static_cast<size_t>(channels);
    for (size_t y = 0; y < height; ++y) {
        const uint8_t *row = img + y * stride;
        for (size_t i = 0; i < n; ++i) {
            h = (h ^ row[i]) * 0x100000001b3ull;  // FNV prime
        }
    }
    return h;
}

}  // extern "C"
