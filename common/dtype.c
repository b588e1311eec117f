/* dtype.c -- the number formats of tensors on the wire (wire.h: bf16 and
 * fp16, --wire-dtype): conversions from and to fp32, rounding to nearest
 * even, with and without error feedback.
 *
 * Bit manipulation on the IEEE encodings, written without branches (every
 * special case is a select) so that the compiler vectorises each loop; this
 * file is built with -O3 (common/CMakeLists.txt). The fp16 pair follows
 * F. Giesen's float_to_half_fast3_rtne and half_to_float. test_wire checks
 * every one of the 65,536 codes of each format and 300,000 roundings
 * against a float64 reference. */
#include "wire.h"

#include <assert.h>
#include <string.h>

static inline uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float f32_from(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t to_bf16(float f) {
    const uint32_t u = f32_bits(f), a = u & 0x7fffffffu, hi = u >> 16;
    uint32_t r = (u + 0x7fffu + (hi & 1)) >> 16;                 // to nearest, ties to even; a carry rounds up
    r = a >= 0x7f7f8000u ? ((hi & 0x8000u) | 0x7f7fu) : r;      // finite but would round to inf: the largest
    r = a == 0x7f800000u ? hi : r;                               // inf stays inf
    r = a > 0x7f800000u ? (hi | 0x40u) : r;                      // NaN stays a (quiet) NaN
    return (uint16_t)r;
}

static inline float from_bf16(uint16_t h) { return f32_from((uint32_t)h << 16); }

/* m ? a : b for m all ones or all zeros: arithmetic, so loops of it vectorise (GCC does not if-convert every
 * nested ?: of these loops) */
static inline uint32_t pick(uint32_t m, uint32_t a, uint32_t b) { return (m & a) | (~m & b); }
static inline uint32_t mask(int c) { return 0u - (uint32_t)c; }

static inline uint16_t to_fp16(float f) {
    const uint32_t u = f32_bits(f), sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    // normal: re-bias the exponent (127 -> 15) and round to nearest even
    uint32_t r = (a + 0xc8000fffu + ((a >> 13) & 1)) >> 13;
    // below 2^-14: an fp16 subnormal (or 0); the FPU's add rounds to nearest even
    const uint32_t sub = f32_bits(f32_from(a) + 0.5f) - 0x3f000000u;
    r = pick(mask(a < 0x38800000u), sub, r);
    r = pick(mask(a >= 0x477ff000u), 0x7bffu, r);                // finite but would round to inf: saturate
    r = pick(mask(a >= 0x7f800000u), 0x7c00u | (mask(a > 0x7f800000u) & 0x0200u), r);   // inf; NaN quiet
    return (uint16_t)(sign | (r & 0x7fffu));
}

static inline float from_fp16(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, o0 = (uint32_t)(h & 0x7fffu) << 13,
                   exp = o0 & 0x0f800000u;
    uint32_t o = o0 + ((127u - 15u) << 23);
    o += mask(exp == 0x0f800000u) & ((128u - 16u) << 23);        // inf, NaN
    const uint32_t sub = f32_bits(f32_from(o + (1u << 23)) - f32_from(113u << 23));   // renormalised by the FPU
    return f32_from(pick(mask(exp == 0), sub, o) | sign);
}

/* x86-64: an AVX2 clone of each loop beside the baseline SSE2 one, picked at load time (GCC's ifunc); the
 * same integer operations, so the same bits */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__) && \
    !defined(__SANITIZE_THREAD__)   // (GCC's ifunc resolver runs before the sanitizers' runtimes start)
#define DTYPE_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define DTYPE_CLONES
#endif

static inline uint16_t load16(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);   // little-endian host (wire.c)
    return h;
}

const char *tfps_wire_dtype_name(int dtype) {
    switch (dtype) {
    case TFPS_DTYPE_FP32: return "fp32";
    case TFPS_DTYPE_BF16: return "bf16";
    case TFPS_DTYPE_FP16: return "fp16";
    default: return "?";
    }
}

DTYPE_CLONES void tfps_wire_encode(int dtype, const float *restrict src, uint16_t *restrict dst, size_t n) {
    assert(dtype == TFPS_DTYPE_BF16 || dtype == TFPS_DTYPE_FP16);
    if (dtype == TFPS_DTYPE_BF16)
        for (size_t i = 0; i < n; i++) dst[i] = to_bf16(src[i]);
    else
        for (size_t i = 0; i < n; i++) dst[i] = to_fp16(src[i]);
}

DTYPE_CLONES void tfps_wire_encode_ef(int dtype, const float *restrict src, float *restrict residual,
                                      uint16_t *restrict dst, size_t n) {
    assert(dtype == TFPS_DTYPE_BF16 || dtype == TFPS_DTYPE_FP16);
    if (dtype == TFPS_DTYPE_BF16)
        for (size_t i = 0; i < n; i++) {
            const float v = src[i] + residual[i];
            const uint16_t h = to_bf16(v);
            dst[i] = h;
            residual[i] = v - from_bf16(h);
        }
    else
        for (size_t i = 0; i < n; i++) {
            const float v = src[i] + residual[i];
            const uint16_t h = to_fp16(v);
            dst[i] = h;
            residual[i] = v - from_fp16(h);
        }
}

DTYPE_CLONES void tfps_wire_decode(int dtype, const uint8_t *restrict src, float *restrict dst, size_t n) {
    assert(dtype == TFPS_DTYPE_BF16 || dtype == TFPS_DTYPE_FP16);
    if (dtype == TFPS_DTYPE_BF16)
        for (size_t i = 0; i < n; i++) dst[i] = from_bf16(load16(src + 2 * i));
    else
        for (size_t i = 0; i < n; i++) dst[i] = from_fp16(load16(src + 2 * i));
}
