// AVX2 + FMA (Haswell and later, Zen 1-3): as the AVX-512 fp32 path, 8 lanes wide. An FP4
// nibble's magnitude comes from an 8-entry vpermps table and its sign bit is moved into place.
#include <immintrin.h>

#include "kernels.h"

namespace {

#include "common.inc"

#define ISA_NAME "avx2"
#define ISA_HAS_GEMM 0
constexpr int NT_MAX = 4;

// constant-initialized (no static constructor compiled with AVX2 flags)
alignas(32) constexpr float FP4_MAGNITUDE[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};

int64_t prep_bytes(int64_t k) { return k * 4; }

// x [k] bf16 -> per 16 values: fp32 x[0], x[2], .., x[14], then x[1], x[3], .., x[15]
void prep(const uint16_t* x, int64_t k, uint8_t* dst) {
    float* d = reinterpret_cast<float*>(dst);
    for (int64_t h = 0; h < k / 16; ++h)
        for (int i = 0; i < 8; ++i) {
            d[h * 16 + i] = bf2f(x[h * 16 + 2 * i]);
            d[h * 16 + 8 + i] = bf2f(x[h * 16 + 2 * i + 1]);
        }
}

// 8 nibbles (in the low 4 bits of each dword) -> fp32 values
inline __m256 fp4(__m256i n, __m256 mag) {
    __m256 v = _mm256_permutevar8x32_ps(mag, n);  // uses the low 3 bits
    __m256i sign = _mm256_slli_epi32(_mm256_and_si256(n, _mm256_set1_epi32(8)), 28);
    return _mm256_xor_ps(v, _mm256_castsi256_ps(sign));
}

template <int NT>
void mx_dot_t(const uint8_t* blocks, const uint8_t* scales, int64_t groups, int64_t rows,
              const uint8_t* const* xp, float* out) {
    const __m256 mag = _mm256_load_ps(FP4_MAGNITUDE);
    const __m256i m = _mm256_set1_epi32(0x0f);
    for (int64_t r = 0; r < rows; ++r) {
        const uint8_t* b = blocks + r * groups * 16;
        const uint8_t* s = scales + r * groups;
        __m256 acc[NT];
        for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
        for (int64_t g = 0; g < groups; ++g) {
            __m256 sc = _mm256_set1_ps(scale_of(s[g]));
            __m256 part[NT];
            for (int t = 0; t < NT; ++t) part[t] = _mm256_setzero_ps();
            for (int h = 0; h < 2; ++h) {  // two halves of 8 bytes = 16 values
                __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(b + 16 * g + 8 * h)));
                __m256 lo = fp4(_mm256_and_si256(v, m), mag), hi = fp4(_mm256_srli_epi32(v, 4), mag);
                for (int t = 0; t < NT; ++t) {
                    const float* x = reinterpret_cast<const float*>(xp[t]) + g * 32 + h * 16;
                    part[t] = _mm256_fmadd_ps(lo, _mm256_loadu_ps(x), part[t]);
                    part[t] = _mm256_fmadd_ps(hi, _mm256_loadu_ps(x + 8), part[t]);
                }
            }
            for (int t = 0; t < NT; ++t) acc[t] = _mm256_fmadd_ps(part[t], sc, acc[t]);
        }
        for (int t = 0; t < NT; ++t) {
            __m128 v = _mm_add_ps(_mm256_castps256_ps128(acc[t]), _mm256_extractf128_ps(acc[t], 1));
            v = _mm_add_ps(v, _mm_movehl_ps(v, v));
            v = _mm_add_ss(v, _mm_shuffle_ps(v, v, 1));
            out[r * NT + t] = _mm_cvtss_f32(v);
        }
    }
}

inline float hsum(__m256 a) {
    __m128 v = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    v = _mm_add_ps(v, _mm_movehl_ps(v, v));
    v = _mm_add_ss(v, _mm_shuffle_ps(v, v, 1));
    return _mm_cvtss_f32(v);
}

inline __m256 load_bf16(const uint16_t* p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(
        _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
}

template <int NT>
void bf16_dot_n(const uint16_t* w, int64_t ldw, int64_t k, int64_t rows, const uint16_t* const* x,
                float* out) {
    const int64_t k8 = k / 8 * 8;
    for (int64_t r = 0; r < rows; ++r) {
        __m256 acc[NT];
        for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
        for (int64_t i = 0; i < k8; i += 8) {
            __m256 wv = load_bf16(w + r * ldw + i);
            for (int t = 0; t < NT; ++t) acc[t] = _mm256_fmadd_ps(wv, load_bf16(x[t] + i), acc[t]);
        }
        for (int t = 0; t < NT; ++t) {
            float s = hsum(acc[t]);
            for (int64_t i = k8; i < k; ++i) s += bf2f(w[r * ldw + i]) * bf2f(x[t][i]);
            out[r * NT + t] = s;
        }
    }
}

#include "driver.inc"

}  // namespace

extern "C" const KernelTable* gptoss_table_avx2() { return &TABLE; }
