// AVX2 + FMA (Haswell and later, Zen 1-3): fp32 products and sums, 8 lanes wide.
//
// MXFP4 dot path: two blocks (32 bytes, one per 128-bit lane) per step. Their nibbles become
// bf16 bit patterns through two 16-entry vpshufb tables (the patterns' low and high bytes), the
// bytes are interleaved into words (vpunpck), and the words become fp32 with a shift (even
// words) or a mask (odd words): 8 vectors of 8 weights, 4 of each block in each lane, with no
// cross-lane shuffle. The activation is prepared once per call in that order (`prep`). Each
// block's partial sum is multiplied by its scale in fp32. Rows go in pairs (two memory streams,
// driver.inc's mx_dot_t), as on the AVX-512 paths.
// Dense bf16 rows: 16 weights a step, widened by the same shift and mask, against the
// activation widened once per call.
#include <immintrin.h>

#include "kernels.h"

namespace {

#include "common.inc"

#define ISA_NAME "avx2"
#define ISA_HAS_DOT_ROWS 1
#define ISA_HAS_GEMM 1
constexpr int NT_MAX = 4;

inline float hsum(__m256 a) {
    __m128 v = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    v = _mm_add_ps(v, _mm_movehl_ps(v, v));
    v = _mm_add_ss(v, _mm_shuffle_ps(v, v, 1));
    return _mm_cvtss_f32(v);
}

// bf16 bit patterns of the 16 FP4 values (sign, then 0, 0.5, 1, 1.5, 2, 3, 4, 6): low bytes,
// high bytes, each twice (vpshufb looks up within each 128-bit lane). Constant-initialized (no
// static constructor compiled with AVX2 flags).
alignas(32) constexpr uint8_t FP4_BF16_LO[32] = {
    0x00, 0x00, 0x80, 0xC0, 0x00, 0x40, 0x80, 0xC0, 0x00, 0x00, 0x80, 0xC0, 0x00, 0x40, 0x80, 0xC0,
    0x00, 0x00, 0x80, 0xC0, 0x00, 0x40, 0x80, 0xC0, 0x00, 0x00, 0x80, 0xC0, 0x00, 0x40, 0x80, 0xC0};
alignas(32) constexpr uint8_t FP4_BF16_HI[32] = {
    0x00, 0x3F, 0x3F, 0x3F, 0x40, 0x40, 0x40, 0x40, 0x80, 0xBF, 0xBF, 0xBF, 0xC0, 0xC0, 0xC0, 0xC0,
    0x00, 0x3F, 0x3F, 0x3F, 0x40, 0x40, 0x40, 0x40, 0x80, 0xBF, 0xBF, 0xBF, 0xC0, 0xC0, 0xC0, 0xC0};

// element (within its block) of lane slot i (0..3) of decoded vector v (0..7), see decode_half
constexpr int element_of(int v, int i) {
    return (v & 4 ? 1 : 0) + (v & 2 ? 16 : 0) + (v & 1 ? 2 : 0) + 4 * i;
}

// values in element_of order: 64 per pair of blocks, the last pair zero-padded when k / 32 is odd
inline int64_t padded_k(int64_t k) { return ((k / 32 + 1) / 2) * 64; }

// one or two blocks per step; per pair of blocks 64 floats: vector v, lane l, slot i holds
// x[32 (2 pair + l) + element_of(v, i)] (zero past the last block)
int64_t prep_bytes(int64_t k) { return padded_k(k) * 4; }

void prep(const uint16_t* x, int64_t k, uint8_t* dst) {
    float* d = reinterpret_cast<float*>(dst);
    const int64_t groups = k / 32, pairs = (groups + 1) / 2;
    for (int64_t p = 0; p < pairs; ++p)
        for (int v = 0; v < 8; ++v)
            for (int l = 0; l < 2; ++l)
                for (int i = 0; i < 4; ++i) {
                    const int64_t g = 2 * p + l;
                    d[p * 64 + v * 8 + l * 4 + i] = g < groups ? bf2f(x[g * 32 + element_of(v, i)]) : 0.0f;
                }
}

// 32 bytes (block g in the low lane, g+1 in the high one), the even (ODD = 0) or odd (ODD = 1)
// elements -> w[0..3] = vectors v = 4 ODD + 0..3 of element_of
template <int ODD>
[[gnu::always_inline]] inline void decode_half(__m256i bytes, __m256i tlo, __m256i thi, __m256 w[4]) {
    const __m256i nib = _mm256_set1_epi8(0x0f);
    const __m256i n = ODD ? _mm256_and_si256(_mm256_srli_epi16(bytes, 4), nib)
                          : _mm256_and_si256(bytes, nib);
    const __m256i lo = _mm256_shuffle_epi8(tlo, n), hi = _mm256_shuffle_epi8(thi, n);
    const __m256i words[2] = {_mm256_unpacklo_epi8(lo, hi), _mm256_unpackhi_epi8(lo, hi)};
    const __m256i odd_word = _mm256_set1_epi32(int32_t(0xffff0000u));
    for (int j = 0; j < 2; ++j) {
        w[2 * j] = _mm256_castsi256_ps(_mm256_slli_epi32(words[j], 16));
        w[2 * j + 1] = _mm256_castsi256_ps(_mm256_and_si256(words[j], odd_word));
    }
}

// fp32 2^(s-127) of 8 scale bytes (byte 0: 2^-127, 255: NaN, as scale_of)
[[gnu::always_inline]] inline __m256 scales8(const uint8_t* s) {
    const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(s)));
    __m256i bits = _mm256_slli_epi32(v, 23);
    bits = _mm256_blendv_epi8(bits, _mm256_set1_epi32(0x00400000),
                              _mm256_cmpeq_epi32(v, _mm256_setzero_si256()));
    bits = _mm256_blendv_epi8(bits, _mm256_set1_epi32(0x7fc00000),
                              _mm256_cmpeq_epi32(v, _mm256_set1_epi32(255)));
    return _mm256_castsi256_ps(bits);
}

// blocks g and g+1 of a row (`tail`: only g exists; the high lane is zero)
[[gnu::always_inline]] inline __m256i load_pair(const uint8_t* src, bool tail) {
    return tail ? _mm256_zextsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src)))
                : _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src));
}

// the scales of blocks g8 .. g8+7 of a row of `groups` blocks; lanes past the row's end get
// 1.0 (they multiply zeros)
[[gnu::always_inline]] inline __m256 group_scales(const uint8_t* s, int64_t g8, int64_t groups) {
    if (g8 + 8 <= groups) return scales8(s + g8);
    alignas(8) uint8_t tmp[8] = {127, 127, 127, 127, 127, 127, 127, 127};
    std::memcpy(tmp, s + g8, size_t(groups - g8));
    return scales8(tmp);
}

// lane l of pair j of an 8-block group takes scale 2j + l
alignas(32) constexpr int32_t SCALE_PICK[4][8] = {{0, 0, 0, 0, 1, 1, 1, 1}, {2, 2, 2, 2, 3, 3, 3, 3},
                                                  {4, 4, 4, 4, 5, 5, 5, 5}, {6, 6, 6, 6, 7, 7, 7, 7}};

template <int NT, int R>
void mx_dot_rows(const uint8_t* const* b, const uint8_t* const* s, int64_t groups,
                 const uint8_t* const* xp, float* const* out) {
    const __m256i tlo = _mm256_load_si256(reinterpret_cast<const __m256i*>(FP4_BF16_LO));
    const __m256i thi = _mm256_load_si256(reinterpret_cast<const __m256i*>(FP4_BF16_HI));
    __m256 acc[R][NT];
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < NT; ++t) acc[r][t] = _mm256_setzero_ps();
    // one pair of blocks of every row (`tail`: only block g exists)
    auto step = [&](int64_t g, const __m256* sc8, int j, bool tail) [[gnu::always_inline]] {
        const __m256i pick = _mm256_load_si256(reinterpret_cast<const __m256i*>(SCALE_PICK[j]));
        for (int r = 0; r < R; ++r) {
            const uint8_t* src = b[r] + 16 * g;
            if (R > 1 && j % 2 == 0)  // the streams' lines, ahead (see driver.inc's mx_dot_t)
                _mm_prefetch(reinterpret_cast<const char*>(src + 1024), _MM_HINT_T0);
            const __m256i bytes = load_pair(src, tail);
            const __m256 sc = _mm256_permutevar8x32_ps(sc8[r], pick);
            const float* x0 = reinterpret_cast<const float*>(xp[0]) + (g / 2) * 64;
            if constexpr (NT == 1) {  // four short chains, each half decoded just before use
                __m256 w[4];
                decode_half<0>(bytes, tlo, thi, w);
                __m256 pa = _mm256_mul_ps(w[0], _mm256_loadu_ps(x0));
                __m256 pb = _mm256_mul_ps(w[1], _mm256_loadu_ps(x0 + 8));
                pa = _mm256_fmadd_ps(w[2], _mm256_loadu_ps(x0 + 16), pa);
                pb = _mm256_fmadd_ps(w[3], _mm256_loadu_ps(x0 + 24), pb);
                decode_half<1>(bytes, tlo, thi, w);
                __m256 pc = _mm256_mul_ps(w[0], _mm256_loadu_ps(x0 + 32));
                __m256 pd = _mm256_mul_ps(w[1], _mm256_loadu_ps(x0 + 40));
                pc = _mm256_fmadd_ps(w[2], _mm256_loadu_ps(x0 + 48), pc);
                pd = _mm256_fmadd_ps(w[3], _mm256_loadu_ps(x0 + 56), pd);
                const __m256 part = _mm256_add_ps(_mm256_add_ps(pa, pb), _mm256_add_ps(pc, pd));
                acc[r][0] = _mm256_fmadd_ps(part, sc, acc[r][0]);
            } else {  // the whole pair decoded, then each token's products
                __m256 w[8];
                decode_half<0>(bytes, tlo, thi, w);
                decode_half<1>(bytes, tlo, thi, w + 4);
                for (int t = 0; t < NT; ++t) {
                    const float* x = reinterpret_cast<const float*>(xp[t]) + (g / 2) * 64;
                    __m256 pa = _mm256_mul_ps(w[0], _mm256_loadu_ps(x));
                    __m256 pb = _mm256_mul_ps(w[1], _mm256_loadu_ps(x + 8));
                    for (int v = 2; v < 8; v += 2) {
                        pa = _mm256_fmadd_ps(w[v], _mm256_loadu_ps(x + 8 * v), pa);
                        pb = _mm256_fmadd_ps(w[v + 1], _mm256_loadu_ps(x + 8 * v + 8), pb);
                    }
                    acc[r][t] = _mm256_fmadd_ps(_mm256_add_ps(pa, pb), sc, acc[r][t]);
                }
            }
        }
    };
    for (int64_t g8 = 0; g8 < groups; g8 += 8) {
        __m256 sc8[R];
        for (int r = 0; r < R; ++r) sc8[r] = group_scales(s[r], g8, groups);
        if (g8 + 8 <= groups) {
            for (int j = 0; j < 4; ++j) step(g8 + 2 * j, sc8, j, false);
        } else {
            for (int j = 0; g8 + 2 * j < groups; ++j)
                step(g8 + 2 * j, sc8, j, g8 + 2 * j + 1 == groups);
        }
    }
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < NT; ++t) out[r][t] = hsum(acc[r][t]);
}

// ---- GEMM path (12+ tokens on one expert) ------------------------------------------------------
// The item's rows are decoded once into an fp32 panel, each weight multiplied by its block's
// scale (a power of two: exact, the dequantized value the reference multiplies), in the dot
// path's element order; the tokens' activations are packed as fp32, [token group of 8][k][8],
// in that order too. A 6-row x 16-token microkernel broadcasts one weight per row and step.
constexpr int GEMM_ROWS = 6, GEMM_COLS = 8;

// tokens per expert from which the GEMM path is used: measured on a 2-vCPU AMD EPYC (one 20b
// expert matrix, one thread), the GEMM path runs 1.04x / 0.96x / 1.44x / 1.99x the dot path at 4 / 8 /
// 16 / 64 tokens; the crossover is near 10
#define ISA_GEMM_MIN_TOKENS 1
inline int64_t gemm_min_tokens() { return 12; }

// the panel: MX_ROWS rows of padded_k fp32 values, in the driver's uint16 units
#define ISA_GEMM_PANEL 1
inline int64_t gemm_panel_halfwords(int64_t k) { return 32 * padded_k(k) * 2; }

int64_t gemm_xt_bytes(int64_t k, int64_t n) {
    return ((n + GEMM_COLS - 1) / GEMM_COLS) * padded_k(k) * GEMM_COLS * 4;
}

void gemm_pack_x(const uint16_t* const* x, int64_t n, int64_t k, uint8_t* xt) {
    float* d = reinterpret_cast<float*>(xt);
    const int64_t kp = padded_k(k), groups = k / 32, tgroups = (n + GEMM_COLS - 1) / GEMM_COLS;
    for (int64_t tg = 0; tg < tgroups; ++tg)
        for (int64_t kk = 0; kk < kp; ++kk) {
            const int64_t g = 2 * (kk / 64) + (kk % 8) / 4;
            const int64_t src = g * 32 + element_of(int(kk % 64) / 8, int(kk % 4));
            for (int c = 0; c < GEMM_COLS; ++c) {
                const int64_t t = tg * GEMM_COLS + c;
                d[(tg * kp + kk) * GEMM_COLS + c] = t < n && g < groups ? bf2f(x[t][src]) : 0.0f;
            }
        }
}

// one row's blocks -> kp dequantized fp32 weights, element_of order
inline void decode_row_f32(const uint8_t* b, const uint8_t* s, int64_t groups, float* dst) {
    const __m256i tlo = _mm256_load_si256(reinterpret_cast<const __m256i*>(FP4_BF16_LO));
    const __m256i thi = _mm256_load_si256(reinterpret_cast<const __m256i*>(FP4_BF16_HI));
    for (int64_t g8 = 0; g8 < groups; g8 += 8) {
        const __m256 sc8 = group_scales(s, g8, groups);
        for (int j = 0; j < 4 && g8 + 2 * j < groups; ++j) {
            const int64_t g = g8 + 2 * j;
            const __m256i bytes = load_pair(b + 16 * g, g + 1 == groups);
            const __m256 sc = _mm256_permutevar8x32_ps(
                sc8, _mm256_load_si256(reinterpret_cast<const __m256i*>(SCALE_PICK[j])));
            __m256 w[8];
            decode_half<0>(bytes, tlo, thi, w);
            decode_half<1>(bytes, tlo, thi, w + 4);
            for (int v = 0; v < 8; ++v)
                _mm256_storeu_ps(dst + (g / 2) * 64 + 8 * v, _mm256_mul_ps(w[v], sc));
        }
    }
}

// R panel rows x G token groups (of 8) -> out rows [R][n], columns c0 .. c0 + 8 G (clipped)
template <int R, int G>
void micro(const float* panel, int64_t kp, const float* xt, float* out, int64_t n, int64_t c0) {
    __m256 acc[R][G];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
        for (int j = 0; j < G; ++j) acc[r][j] = _mm256_setzero_ps();
    for (int64_t kk = 0; kk < kp; ++kk) {
        __m256 xv[G];
#pragma GCC unroll 2
        for (int j = 0; j < G; ++j) xv[j] = _mm256_loadu_ps(xt + (j * kp + kk) * GEMM_COLS);
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
            const __m256 w = _mm256_broadcast_ss(panel + r * kp + kk);
#pragma GCC unroll 2
            for (int j = 0; j < G; ++j) acc[r][j] = _mm256_fmadd_ps(w, xv[j], acc[r][j]);
        }
    }
    // (the results leave through a copy: storing from acc directly makes GCC keep acc in
    // memory inside the loop above)
    alignas(32) float v[R][G][8];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
        for (int j = 0; j < G; ++j) _mm256_store_ps(v[r][j], acc[r][j]);
    for (int r = 0; r < R; ++r)
        for (int j = 0; j < G; ++j) {
            const int64_t c = c0 + j * GEMM_COLS, cols = std::min<int64_t>(GEMM_COLS, n - c);
            for (int64_t i = 0; i < cols; ++i) out[r * n + c + i] = v[r][j][i];
        }
}

template <int R>
void micro_all(const float* panel, int64_t kp, const float* xt, int64_t n, float* out) {
    const int64_t tgroups = (n + GEMM_COLS - 1) / GEMM_COLS;
    int64_t tg = 0;
    for (; tg + 2 <= tgroups; tg += 2)
        micro<R, 2>(panel, kp, xt + tg * kp * GEMM_COLS, out, n, tg * GEMM_COLS);
    if (tg < tgroups) micro<R, 1>(panel, kp, xt + tg * kp * GEMM_COLS, out, n, tg * GEMM_COLS);
}

bool mx_gemm(const uint8_t* blocks, const uint8_t* scales, int64_t groups, int64_t rows,
             const uint8_t* xt, int64_t n, uint16_t* panel16, float* out) {
    if (rows > 32) return false;  // the panel holds 32 (MX_ROWS) rows
    const int64_t kp = padded_k(groups * 32);
    float* panel = reinterpret_cast<float*>(panel16);
    for (int64_t r = 0; r < rows; ++r)
        decode_row_f32(blocks + r * groups * 16, scales + r * groups, groups, panel + r * kp);
    const float* x = reinterpret_cast<const float*>(xt);
    int64_t r = 0;
    for (; r + GEMM_ROWS <= rows; r += GEMM_ROWS) micro_all<GEMM_ROWS>(panel + r * kp, kp, x, n, out + r * n);
    switch (rows - r) {
        case 0: break;
        case 1: micro_all<1>(panel + r * kp, kp, x, n, out + r * n); break;
        case 2: micro_all<2>(panel + r * kp, kp, x, n, out + r * n); break;
        case 3: micro_all<3>(panel + r * kp, kp, x, n, out + r * n); break;
        case 4: micro_all<4>(panel + r * kp, kp, x, n, out + r * n); break;
        default: micro_all<5>(panel + r * kp, kp, x, n, out + r * n); break;
    }
    return true;
}

// ---- dense bf16 rows -----------------------------------------------------------------------
// the activation widened once per call: per 16 values, the 8 even elements then the 8 odd
inline void widen(const uint16_t* x, int64_t k16, float* dst) {
    for (int64_t h = 0; h < k16; ++h)
        for (int i = 0; i < 8; ++i) {
            dst[h * 16 + i] = bf2f(x[h * 16 + 2 * i]);
            dst[h * 16 + 8 + i] = bf2f(x[h * 16 + 2 * i + 1]);
        }
}

// R rows x NT tokens, 16 weights a step; with one token the even and odd products keep their
// own sums (twice the independent FMA chains)
template <int NT, int R>
void bf16_dot_t(const uint16_t* w, int64_t ldw, int64_t k, const float* const* xf,
                const uint16_t* const* x, float* out) {
    constexpr int C = NT == 1 ? 2 : 1;
    const __m256i odd_word = _mm256_set1_epi32(int32_t(0xffff0000u));
    __m256 acc[R][NT][C];
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < NT; ++t)
            for (int c = 0; c < C; ++c) acc[r][t][c] = _mm256_setzero_ps();
    const int64_t k16 = k / 16;
    for (int64_t h = 0; h < k16; ++h) {
        for (int r = 0; r < R; ++r) {
            const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + r * ldw + 16 * h));
            const __m256 even = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
            const __m256 odd = _mm256_castsi256_ps(_mm256_and_si256(v, odd_word));
            for (int t = 0; t < NT; ++t) {
                const float* xs = xf[t] + 16 * h;
                acc[r][t][0] = _mm256_fmadd_ps(even, _mm256_loadu_ps(xs), acc[r][t][0]);
                acc[r][t][C - 1] = _mm256_fmadd_ps(odd, _mm256_loadu_ps(xs + 8), acc[r][t][C - 1]);
            }
        }
    }
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < NT; ++t) {
            float sum = hsum(C == 2 ? _mm256_add_ps(acc[r][t][0], acc[r][t][C - 1]) : acc[r][t][0]);
            for (int64_t i = 16 * k16; i < k; ++i) sum += bf2f(w[r * ldw + i]) * bf2f(x[t][i]);
            out[r * NT + t] = sum;
        }
}

template <int NT>
void bf16_dot_n(const uint16_t* w, int64_t ldw, int64_t k, int64_t rows, const uint16_t* const* x,
                float* out) {
    // widened activations: once per call (a call covers LIN_ROWS rows, so 1/64 of the work)
    thread_local std::vector<float> buffer;
    const int64_t k16 = k / 16;
    if (int64_t(buffer.size()) < NT * k16 * 16) buffer.resize(NT * k16 * 16);
    const float* xf[NT];
    for (int t = 0; t < NT; ++t) {
        widen(x[t], k16, buffer.data() + t * k16 * 16);
        xf[t] = buffer.data() + t * k16 * 16;
    }
    constexpr int R = NT <= 2 ? 4 : 2;
    int64_t r = 0;
    for (; r + R <= rows; r += R) bf16_dot_t<NT, R>(w + r * ldw, ldw, k, xf, x, out + r * NT);
    for (; r < rows; ++r) bf16_dot_t<NT, 1>(w + r * ldw, ldw, k, xf, x, out + r * NT);
}

#include "driver.inc"

}  // namespace

extern "C" const KernelTable* gptoss_table_avx2() { return &TABLE; }
