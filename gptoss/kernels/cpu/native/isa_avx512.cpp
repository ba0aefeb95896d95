// AVX-512 without BF16 dot products (Skylake-X, Cascade Lake, Ice Lake): everything widens to
// fp32 and uses FMA. FP4 nibbles become fp32 through a 16-entry vpermps table; the activation is
// prepared once per call as fp32, each block's even elements then its odd ones, so the low and
// high nibbles of 16 bytes meet their activations without shuffles.
#include <immintrin.h>

#include "kernels.h"

namespace {

#include "common.inc"

#define ISA_NAME "avx512"
#define ISA_HAS_DOT_ROWS 1
#define ISA_HAS_GEMM 0
constexpr int NT_MAX = 4;

// constant-initialized (a static constructor would run AVX-512 code at load, on every CPU)
alignas(64) constexpr float FP4_F32[16] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f,
                                           -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

int64_t prep_bytes(int64_t k) { return k * 4; }

// x [k] bf16 -> per block of 32: fp32 x[0], x[2], .., x[30], then x[1], x[3], .., x[31]
void prep(const uint16_t* x, int64_t k, uint8_t* dst) {
    float* d = reinterpret_cast<float*>(dst);
    for (int64_t g = 0; g < k / 32; ++g)
        for (int i = 0; i < 16; ++i) {
            d[g * 32 + i] = bf2f(x[g * 32 + 2 * i]);
            d[g * 32 + 16 + i] = bf2f(x[g * 32 + 2 * i + 1]);
        }
}

// R rows x NT tokens, one block (16 bytes, 32 values) a step. The block's scale multiplies the
// 16-entry table (FP4 values times a power of two: exact, NaN for byte 255), so the permutes
// yield the dequantized weights and the products accumulate directly, as the reference's
// dequantize-then-multiply does.
template <int NT, int R>
void mx_dot_rows(const uint8_t* const* b, const uint8_t* const* s, int64_t groups,
                 const uint8_t* const* xp, float* const* out) {
    const __m512 table = _mm512_load_ps(FP4_F32);
    const __m512i m = _mm512_set1_epi32(0x0f);
    __m512 acc[R][NT][2];  // low and high nibbles' sums apart: two FMA chains, not one twice as long
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < NT; ++t) acc[r][t][0] = acc[r][t][1] = _mm512_setzero_ps();
    for (int64_t g = 0; g < groups; ++g) {
        __m512 lo[R], hi[R];
        for (int r = 0; r < R; ++r) {
            if (R > 1 && g % 4 == 0)  // the two streams, ahead (see driver.inc's mx_dot_t)
                _mm_prefetch(reinterpret_cast<const char*>(b[r] + 16 * g + 1024), _MM_HINT_T0);
            const __m512 scaled = _mm512_mul_ps(table, _mm512_set1_ps(scale_of(s[r][g])));
            const __m512i v = _mm512_cvtepu8_epi32(
                _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[r] + 16 * g)));
            lo[r] = _mm512_permutexvar_ps(_mm512_and_si512(v, m), scaled);
            hi[r] = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), scaled);
        }
        for (int t = 0; t < NT; ++t) {
            const float* x = reinterpret_cast<const float*>(xp[t]) + g * 32;
            const __m512 x0 = _mm512_loadu_ps(x), x1 = _mm512_loadu_ps(x + 16);
            for (int r = 0; r < R; ++r) {
                acc[r][t][0] = _mm512_fmadd_ps(lo[r], x0, acc[r][t][0]);
                acc[r][t][1] = _mm512_fmadd_ps(hi[r], x1, acc[r][t][1]);
            }
        }
    }
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < NT; ++t)
            out[r][t] = _mm512_reduce_add_ps(_mm512_add_ps(acc[r][t][0], acc[r][t][1]));
}

inline __m512 load_bf16(const uint16_t* p, __mmask16 m) {
    if (m == 0xffff)
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
}

template <int NT, int R>
void bf16_dot_t(const uint16_t* w, int64_t ldw, int64_t k, const uint16_t* const* x, float* out) {
    __m512 acc[R][NT];
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < NT; ++t) acc[r][t] = _mm512_setzero_ps();
    auto step = [&](int64_t i, __mmask16 m) {
        __m512 xv[NT];
        for (int t = 0; t < NT; ++t) xv[t] = load_bf16(x[t] + i, m);
        for (int r = 0; r < R; ++r) {
            __m512 wv = load_bf16(w + r * ldw + i, m);
            for (int t = 0; t < NT; ++t) acc[r][t] = _mm512_fmadd_ps(wv, xv[t], acc[r][t]);
        }
    };
    const int64_t full = k / 16 * 16;
    for (int64_t i = 0; i < full; i += 16) step(i, 0xffff);
    if (full < k) step(full, __mmask16((1u << (k - full)) - 1));
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < NT; ++t) out[r * NT + t] = _mm512_reduce_add_ps(acc[r][t]);
}

template <int NT>
void bf16_dot_n(const uint16_t* w, int64_t ldw, int64_t k, int64_t rows, const uint16_t* const* x,
                float* out) {
    int64_t r = 0;
    for (; r + 4 <= rows; r += 4) bf16_dot_t<NT, 4>(w + r * ldw, ldw, k, x, out + r * NT);
    for (; r < rows; ++r) bf16_dot_t<NT, 1>(w + r * ldw, ldw, k, x, out + r * NT);
}

// ---- decode attention: q . k in fp32 FMA, a key row widened as its even then odd elements ------
struct QHeads {
    alignas(64) float f[8][64];  // per head and half: the even dims' values, then the odd ones
    explicit QHeads(const uint16_t* q) {
        for (int g = 0; g < 8; ++g)
            for (int half = 0; half < 2; ++half)
                for (int i = 0; i < 16; ++i) {
                    f[g][32 * half + i] = bf2f(q[g * 64 + 32 * half + 2 * i]);
                    f[g][32 * half + 16 + i] = bf2f(q[g * 64 + 32 * half + 2 * i + 1]);
                }
    }
};

inline void key_partials(const QHeads& q, const uint16_t* k, __m512 part[8]) {
    const __m512i odd = _mm512_set1_epi32(int32_t(0xffff0000u));
    __m512 kv[4];
    for (int half = 0; half < 2; ++half) {
        const __m512i raw = _mm512_loadu_si512(k + 32 * half);
        kv[2 * half] = _mm512_castsi512_ps(_mm512_slli_epi32(raw, 16));
        kv[2 * half + 1] = _mm512_castsi512_ps(_mm512_and_si512(raw, odd));
    }
    for (int g = 0; g < 8; ++g) {
        __m512 s = _mm512_mul_ps(_mm512_load_ps(q.f[g]), kv[0]);
        for (int i = 1; i < 4; ++i) s = _mm512_fmadd_ps(_mm512_load_ps(q.f[g] + 16 * i), kv[i], s);
        part[g] = s;
    }
}

#include "attn_avx512.inc"
#include "driver.inc"

}  // namespace

extern "C" const KernelTable* gptoss_table_avx512() { return &TABLE; }
