// Unit tests of the imgresize C interface, in C++ with no framework: each
// TEST registers itself, CHECK records a failure and goes on. Prints one line
// per failure and ends with "N passed, M failed"; exits 1 if any failed.
// Run by `make -C native test` (and from pytest, native/tests/test_imgresize.py).

#include "imgresize.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace {

struct Case {
    const char *name;
    std::function<void()> body;
};

std::vector<Case> &registry() {
    static std::vector<Case> cases;
    return cases;
}

int g_failures = 0;

struct Register {
    Register(const char *name, std::function<void()> body) { registry().push_back({name, std::move(body)}); }
};

#define TEST(name)                                   \
    void test_##name();                              \
    const Register reg_##name(#name, test_##name);   \
    void test_##name()

#define CHECK(cond)                                                                       \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            std::printf("  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);        \
            ++g_failures;                                                                 \
        }                                                                                 \
    } while (0)

#define CHECK_EQ(a, b)                                                                          \
    do {                                                                                        \
        const auto va_ = (a);                                                                   \
        const auto vb_ = (b);                                                                   \
        if (!(va_ == vb_)) {                                                                    \
            std::printf("  %s:%d: CHECK_EQ(%s, %s) failed: %lld != %lld\n", __FILE__, __LINE__, \
                        #a, #b, static_cast<long long>(va_), static_cast<long long>(vb_));      \
            ++g_failures;                                                                       \
        }                                                                                       \
    } while (0)

using Image = std::vector<uint8_t>;

int resize(const Image &src, size_t sw, size_t sh, Image &dst, size_t dw, size_t dh, int ch, int method) {
    dst.assign(dw * dh * ch, 0);
    return ir_resize(src.data(), sw, sh, sw * ch, dst.data(), dw, dh, dw * ch, ch, method);
}

Image random_image(size_t w, size_t h, int ch, unsigned seed) {
    std::mt19937 rng(seed);
    Image img(w * h * ch);
    for (auto &v : img) {
        v = static_cast<uint8_t>(rng() & 0xff);
    }
    return img;
}

// Floating-point references of the two methods, written as directly as the
// definitions in imgresize.h: the library's integer versions must agree to
// within one level (rounding of the 11-bit weights).
double ref_bilinear(const Image &s, size_t sw, size_t sh, int ch, size_t dw, size_t dh, size_t x, size_t y,
                    int c) {
    auto coord = [](size_t d, size_t src, size_t dst, size_t &i0, size_t &i1, double &w) {
        double f = (d + 0.5) * static_cast<double>(src) / static_cast<double>(dst) - 0.5;
        f = std::max(0.0, std::min(f, static_cast<double>(src - 1)));
        i0 = static_cast<size_t>(std::floor(f));
        i1 = std::min(i0 + 1, src - 1);
        w = f - static_cast<double>(i0);
    };
    size_t x0, x1, y0, y1;
    double wx, wy;
    coord(x, sw, dw, x0, x1, wx);
    coord(y, sh, dh, y0, y1, wy);
    auto p = [&](size_t px, size_t py) { return static_cast<double>(s[(py * sw + px) * ch + c]); };
    return (p(x0, y0) * (1 - wx) + p(x1, y0) * wx) * (1 - wy) + (p(x0, y1) * (1 - wx) + p(x1, y1) * wx) * wy;
}

double ref_area(const Image &s, size_t sw, size_t sh, int ch, size_t dw, size_t dh, size_t x, size_t y, int c) {
    const double x_lo = static_cast<double>(x) * sw / dw, x_hi = static_cast<double>(x + 1) * sw / dw;
    const double y_lo = static_cast<double>(y) * sh / dh, y_hi = static_cast<double>(y + 1) * sh / dh;
    double sum = 0, area = 0;
    for (size_t sy = 0; sy < sh; ++sy) {
        const double oy = std::min<double>(y_hi, sy + 1) - std::max<double>(y_lo, sy);
        if (oy <= 0) continue;
        for (size_t sx = 0; sx < sw; ++sx) {
            const double ox = std::min<double>(x_hi, sx + 1) - std::max<double>(x_lo, sx);
            if (ox <= 0) continue;
            sum += s[(sy * sw + sx) * ch + c] * ox * oy;
            area += ox * oy;
        }
    }
    return sum / area;
}

TEST(version_and_strerror) {
    CHECK_EQ(ir_version(), IR_VERSION);
    for (int s = IR_OK; s <= IR_EINTERNAL; ++s) {
        CHECK(std::strcmp(ir_strerror(s), "unknown status") != 0);
    }
    CHECK(std::strcmp(ir_strerror(-1), "unknown status") == 0);
    CHECK(std::strcmp(ir_strerror(99), "unknown status") == 0);
}

TEST(argument_errors_leave_dst_untouched) {
    Image src(16 * 16 * 3, 7), dst(8 * 8 * 3, 0xAB);
    const Image before = dst;
    const uint8_t *s = src.data();
    uint8_t *d = dst.data();
    CHECK_EQ(ir_resize(nullptr, 16, 16, 48, d, 8, 8, 24, 3, IR_AREA), IR_ENULL);
    CHECK_EQ(ir_resize(s, 16, 16, 48, nullptr, 8, 8, 24, 3, IR_AREA), IR_ENULL);
    CHECK_EQ(ir_resize(s, 0, 16, 48, d, 8, 8, 24, 3, IR_AREA), IR_EDIMS);
    CHECK_EQ(ir_resize(s, 16, 16, 48, d, 8, 0, 24, 3, IR_AREA), IR_EDIMS);
    CHECK_EQ(ir_resize(s, 65536, 1, 65536 * 3, d, 8, 8, 24, 3, IR_AREA), IR_EDIMS);
    CHECK_EQ(ir_resize(s, 16, 16, 48, d, 8, 8, 24, 0, IR_AREA), IR_ECHANNELS);
    CHECK_EQ(ir_resize(s, 16, 16, 48, d, 8, 8, 24, 5, IR_AREA), IR_ECHANNELS);
    CHECK_EQ(ir_resize(s, 16, 16, 47, d, 8, 8, 24, 3, IR_AREA), IR_ESTRIDE);
    CHECK_EQ(ir_resize(s, 16, 16, 48, d, 8, 8, 23, 3, IR_AREA), IR_ESTRIDE);
    CHECK_EQ(ir_resize(s, 16, 16, SIZE_MAX / 2, d, 8, 8, 24, 3, IR_AREA), IR_ESTRIDE);
    CHECK_EQ(ir_resize(s, 16, 16, 48, d, 8, 8, 24, 3, 2), IR_EMETHOD);
    CHECK_EQ(ir_resize(s, 16, 16, 48, d, 8, 8, 24, 3, -1), IR_EMETHOD);
    CHECK(dst == before);
    // In place, or any overlap, is refused: the methods read source pixels
    // after writing destination ones.
    CHECK_EQ(ir_resize(src.data(), 8, 8, 24, src.data() + 10, 8, 8, 24, 3, IR_BILINEAR), IR_EOVERLAP);
    CHECK_EQ(ir_resize(src.data() + 24 * 8, 8, 8, 24, src.data(), 8, 8, 24, 3, IR_AREA), IR_OK);
}

TEST(same_size_is_a_copy) {
    for (int ch = 1; ch <= 4; ++ch) {
        const Image src = random_image(13, 7, ch, 1);
        Image dst;
        CHECK_EQ(resize(src, 13, 7, dst, 13, 7, ch, IR_BILINEAR), IR_OK);
        CHECK(dst == src);
        CHECK_EQ(resize(src, 13, 7, dst, 13, 7, ch, IR_AREA), IR_OK);
        CHECK(dst == src);
    }
}

TEST(constant_image_stays_constant) {
    const size_t sizes[][2] = {{1, 1}, {3, 5}, {17, 2}, {64, 64}, {100, 1}};
    for (auto &from : sizes) {
        for (auto &to : sizes) {
            for (int method : {IR_BILINEAR, IR_AREA}) {
                const Image src(from[0] * from[1] * 3, 201);
                Image dst;
                CHECK_EQ(resize(src, from[0], from[1], dst, to[0], to[1], 3, method), IR_OK);
                CHECK(dst == Image(to[0] * to[1] * 3, 201));
            }
        }
    }
}

TEST(area_halving_is_the_rounded_mean_of_2x2_blocks) {
    const Image src = random_image(32, 20, 1, 2);
    Image dst;
    CHECK_EQ(resize(src, 32, 20, dst, 16, 10, 1, IR_AREA), IR_OK);
    for (size_t y = 0; y < 10; ++y) {
        for (size_t x = 0; x < 16; ++x) {
            const unsigned sum = src[2 * y * 32 + 2 * x] + src[2 * y * 32 + 2 * x + 1] +
                                 src[(2 * y + 1) * 32 + 2 * x] + src[(2 * y + 1) * 32 + 2 * x + 1];
            CHECK_EQ(dst[y * 16 + x], (sum + 2) / 4);
        }
    }
}

TEST(area_to_one_pixel_is_the_mean) {
    Image src(65535);
    unsigned long long sum = 0;
    for (size_t i = 0; i < src.size(); ++i) {
        src[i] = static_cast<uint8_t>(i * 7 % 256);
        sum += src[i];
    }
    Image dst;
    CHECK_EQ(resize(src, 65535, 1, dst, 1, 1, 1, IR_AREA), IR_OK);
    CHECK_EQ(dst[0], (sum + 65535 / 2) / 65535);
}

TEST(bilinear_doubling_of_two_pixels) {
    // Centres at 0.25, 0.75 ... of the source: 0, 1/4, 3/4, 1 of the way.
    const Image src = {0, 255};
    Image dst;
    CHECK_EQ(resize(src, 2, 1, dst, 4, 1, 1, IR_BILINEAR), IR_OK);
    CHECK(dst == (Image{0, 64, 191, 255}));
}

TEST(methods_match_floating_point_references) {
    const size_t sizes[][4] = {{37, 23, 10, 7}, {10, 7, 37, 23}, {64, 48, 33, 17}, {5, 9, 12, 4}, {1, 9, 3, 2}};
    unsigned seed = 10;
    for (auto &sz : sizes) {
        for (int ch : {1, 3}) {
            const Image src = random_image(sz[0], sz[1], ch, seed++);
            for (int method : {IR_BILINEAR, IR_AREA}) {
                Image dst;
                CHECK_EQ(resize(src, sz[0], sz[1], dst, sz[2], sz[3], ch, method), IR_OK);
                int worst = 0;
                for (size_t y = 0; y < sz[3]; ++y) {
                    for (size_t x = 0; x < sz[2]; ++x) {
                        for (int c = 0; c < ch; ++c) {
                            const double ref = method == IR_BILINEAR
                                ? ref_bilinear(src, sz[0], sz[1], ch, sz[2], sz[3], x, y, c)
                                : ref_area(src, sz[0], sz[1], ch, sz[2], sz[3], x, y, c);
                            const int diff = std::abs(dst[(y * sz[2] + x) * ch + c] - static_cast<int>(std::lround(ref)));
                            worst = std::max(worst, diff);
                        }
                    }
                }
                CHECK(worst <= 1);
            }
        }
    }
}

TEST(channels_are_independent) {
    const size_t sw = 21, sh = 13, dw = 8, dh = 30;
    Image planes[3], rgb(sw * sh * 3);
    for (int c = 0; c < 3; ++c) {
        planes[c] = random_image(sw, sh, 1, 40 + c);
        for (size_t i = 0; i < sw * sh; ++i) {
            rgb[i * 3 + c] = planes[c][i];
        }
    }
    for (int method : {IR_BILINEAR, IR_AREA}) {
        Image out;
        CHECK_EQ(resize(rgb, sw, sh, out, dw, dh, 3, method), IR_OK);
        for (int c = 0; c < 3; ++c) {
            Image plane;
            CHECK_EQ(resize(planes[c], sw, sh, plane, dw, dh, 1, method), IR_OK);
            bool same = true;
            for (size_t i = 0; i < dw * dh; ++i) {
                same = same && out[i * 3 + c] == plane[i];
            }
            CHECK(same);
        }
    }
}

TEST(strides_skip_padding_and_leave_it_alone) {
    const size_t sw = 9, sh = 6, dw = 4, dh = 3, ch = 2, spad = 5, dpad = 3;
    const Image packed = random_image(sw, sh, ch, 7);
    Image padded((sw * ch + spad) * sh, 0xEE);
    for (size_t y = 0; y < sh; ++y) {
        std::memcpy(&padded[y * (sw * ch + spad)], &packed[y * sw * ch], sw * ch);
    }
    for (int method : {IR_BILINEAR, IR_AREA}) {
        Image want;
        CHECK_EQ(resize(packed, sw, sh, want, dw, dh, ch, method), IR_OK);
        const size_t dstride = dw * ch + dpad;
        Image got(dstride * dh, 0x5A);
        CHECK_EQ(ir_resize(padded.data(), sw, sh, sw * ch + spad, got.data(), dw, dh, dstride, ch, method), IR_OK);
        for (size_t y = 0; y < dh; ++y) {
            CHECK(std::memcmp(&got[y * dstride], &want[y * dw * ch], dw * ch) == 0);
            for (size_t i = dw * ch; i < dstride; ++i) {
                CHECK_EQ(got[y * dstride + i], 0x5A);
            }
        }
        CHECK_EQ(ir_checksum(got.data(), dw, dh, dstride, ch), ir_checksum(want.data(), dw, dh, dw * ch, ch));
    }
}

TEST(checksum_is_fnv1a_64) {
    const uint8_t a = 'a';
    CHECK_EQ(ir_checksum(&a, 0, 1, 0, 1), 0xcbf29ce484222325ull);
    CHECK_EQ(ir_checksum(&a, 1, 1, 1, 1), 0xaf63dc4c8601ec8cull);
    CHECK_EQ(ir_checksum(nullptr, 1, 1, 1, 1), 0u);
}

}  // namespace

int main() {
    int passed = 0, failed = 0;
    for (const Case &c : registry()) {
        const int before = g_failures;
        c.body();
        if (g_failures == before) {
            ++passed;
        } else {
            ++failed;
            std::printf("FAILED %s\n", c.name);
        }
    }
    std::printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
