// AVX-512 with BF16 dot products (vdpbf16ps): Zen 4/5, Sapphire Rapids and later.
//
// MXFP4 dot path: 64 bytes (4 blocks of 32 values, one per 128-bit lane) are split into
// nibbles with shifts and turned into bf16 through a 16-entry vpermw table; the activation is
// prepared once per call in the matching order, so each 4-block step is 4 vpermw, 4 vdpbf16ps
// and one fp32 FMA with the 4 block scales (shuffles are the scarce resource).
// GEMM path (8+ tokens on one expert): rows are decoded to raw bf16 FP4 values in a panel, the
// tokens' activations packed as bf16 pairs, 16 tokens per vector; a 12-row x 16-token
// microkernel broadcasts weight pairs, and each block's partial sums are scaled in fp32.
#include <immintrin.h>

#include "kernels.h"

namespace {

#include "common.inc"

#ifndef ISA_AMX
#define ISA_AMX 0
#define ISA_NAME "avx512bf16"
#define ISA_TABLE_FN gptoss_table_avx512bf16
#endif
#define ISA_HAS_DOT_ROWS 1
#define ISA_HAS_GEMM 1
constexpr int NT_MAX = 4;

inline __m512bh as_bh(__m512i v) { return (__m512bh)v; }

// FP4 values as bf16 bits, twice (vpermw reads 5 index bits). Constant-initialized: a static
// constructor would run AVX-512 code at load time, on every CPU.
alignas(64) constexpr uint16_t FP4_BF16[32] = {
    0x0000, 0x3F00, 0x3F80, 0x3FC0, 0x4000, 0x4040, 0x4080, 0x40C0,
    0x8000, 0xBF00, 0xBF80, 0xBFC0, 0xC000, 0xC040, 0xC080, 0xC0C0,
    0x0000, 0x3F00, 0x3F80, 0x3FC0, 0x4000, 0x4040, 0x4080, 0x40C0,
    0x8000, 0xBF00, 0xBF80, 0xBFC0, 0xC000, 0xC040, 0xC080, 0xC0C0};

// fp32 2^(s-127) of 16 blocks, one per dword, from their scale bytes (`n` <= 16 of them).
// Bytes 0 (2^-127, a subnormal) and 255 (NaN) need fix-ups; `odd` says one may be there.
inline __m512i scales16(const uint8_t* s, int n, bool odd) {
    __m512i v = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(__mmask16((1u << n) - 1), s));
    __m512i bits = _mm512_slli_epi32(v, 23);
    if (odd) {
        bits = _mm512_mask_mov_epi32(bits, _mm512_cmpeq_epi32_mask(v, _mm512_setzero_si512()),
                                     _mm512_set1_epi32(0x00400000));
        bits = _mm512_mask_mov_epi32(bits, _mm512_cmpeq_epi32_mask(v, _mm512_set1_epi32(255)),
                                     _mm512_set1_epi32(0x7fc00000));
    }
    return bits;
}

// quad j (blocks 4j .. 4j+3) of scales16's vector, each block's scale over its 128-bit lane
inline __m512 scale_quad(__m512i s16, int j) {
    const __m512i idx = _mm512_add_epi32(_mm512_set1_epi32(4 * j),
                                         _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0));
    return _mm512_castsi512_ps(_mm512_permutexvar_epi32(idx, s16));
}

inline bool odd_scales(const uint8_t* s, int64_t n) {
    const __m512i ff = _mm512_set1_epi8(char(0xff));
    __mmask64 odd = 0;
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m512i v = _mm512_loadu_si512(s + i);
        odd |= _mm512_testn_epi8_mask(v, v) | _mm512_cmpeq_epi8_mask(v, ff);
    }
    if (i < n) {
        const __mmask64 m = ~0ull >> (64 - (n - i));
        __m512i v = _mm512_maskz_loadu_epi8(m, s + i);
        odd |= m & (_mm512_testn_epi8_mask(v, v) | _mm512_cmpeq_epi8_mask(v, ff));
    }
    return odd != 0;
}

// 64 bytes of 4 blocks (one per 128-bit lane) -> 4 vectors of 32 bf16. Word j of the bytes
// holds elements 4j .. 4j+3 of the 128 (nibbles from the low end); w[p] takes nibble p of every
// word through a 16-entry vpermw table, so w[p] word j = element 4j+p, and its 128-bit lane j
// still covers block j (the scale vector's layout).
inline void decode4(__m512i v, __m512i w[4]) {
    // vpermw reads index bits 4:0 only and the table repeats its 16 values, so the bits above
    // each nibble need no masking
    const __m512i tbl = _mm512_load_si512(FP4_BF16);
    w[0] = _mm512_permutexvar_epi16(v, tbl);
    w[1] = _mm512_permutexvar_epi16(_mm512_srli_epi16(v, 4), tbl);
    w[2] = _mm512_permutexvar_epi16(_mm512_srli_epi16(v, 8), tbl);
    w[3] = _mm512_permutexvar_epi16(_mm512_srli_epi16(v, 12), tbl);
}

int64_t prep_bytes(int64_t k) { return ((k / 32 + 3) / 4) * 256; }

// x [k] -> per 4 blocks (128 values), 4 vectors matching decode4: vector p, word j = x[4j + p]
// (zero past the last block)
void prep(const uint16_t* x, int64_t k, uint8_t* dst) {
    uint16_t* d = reinterpret_cast<uint16_t*>(dst);
    const int64_t quads = (k / 32 + 3) / 4;
    for (int64_t q = 0; q < quads; ++q)
        for (int p = 0; p < 4; ++p)
            for (int j = 0; j < 32; ++j) {
                int64_t i = q * 128 + 4 * j + p;
                d[q * 128 + p * 32 + j] = i < k ? x[i] : 0;
            }
}

// R rows x NT tokens; per 4 blocks (64 bytes) of a row: 3 shifts, 4 vpermw, 1 scale permute,
// and per token 4 vdpbf16ps and 1 FMA. The R rows' chains are independent and share the
// activation loads.
template <int NT, int R>
void mx_dot_rows(const uint8_t* const* b, const uint8_t* const* s, int64_t groups,
                 const uint8_t* const* xp, float* const* out) {
    const int64_t quads = groups / 4, tail = groups % 4;
    bool odd = false;
    for (int r = 0; r < R; ++r) odd |= odd_scales(s[r], groups);
    __m512 acc[R][NT];
    __m512i s16[R];
    for (int r = 0; r < R; ++r) {
        s16[r] = _mm512_setzero_si512();
        for (int t = 0; t < NT; ++t) acc[r][t] = _mm512_setzero_ps();
    }
    auto step = [&](int64_t q, __mmask64 m) {
        __m512i w[R][4];
        __m512 sc[R];
        for (int r = 0; r < R; ++r) {
            if (q % 4 == 0)
                s16[r] = scales16(s[r] + 4 * q, int(std::min<int64_t>(16, groups - 4 * q)), odd);
            if (R > 1) _mm_prefetch(reinterpret_cast<const char*>(b[r] + 64 * q + 1024), _MM_HINT_T0);
            decode4(_mm512_maskz_loadu_epi8(m, b[r] + 64 * q), w[r]);
            sc[r] = scale_quad(s16[r], int(q % 4));
        }
        for (int t = 0; t < NT; ++t) {
            const uint16_t* x = reinterpret_cast<const uint16_t*>(xp[t]) + q * 128;
            __m512bh xv[4];
            for (int i = 0; i < 4; ++i) xv[i] = as_bh(_mm512_loadu_si512(x + 32 * i));
            for (int r = 0; r < R; ++r) {
                __m512 part = _mm512_dpbf16_ps(_mm512_setzero_ps(), as_bh(w[r][0]), xv[0]);
                for (int i = 1; i < 4; ++i) part = _mm512_dpbf16_ps(part, as_bh(w[r][i]), xv[i]);
                acc[r][t] = _mm512_fmadd_ps(part, sc[r], acc[r][t]);
            }
        }
    };
    for (int64_t q = 0; q < quads; ++q) step(q, ~0ull);
    if (tail) step(quads, ~0ull >> (64 - 16 * tail));
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < NT; ++t) out[r][t] = _mm512_reduce_add_ps(acc[r][t]);
}

// dense bf16 rows: 4 rows at a time share each activation load
template <int NT, int R>
void bf16_dot_t(const uint16_t* w, int64_t ldw, int64_t k, const uint16_t* const* x, float* out) {
    __m512 acc[R][NT];
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < NT; ++t) acc[r][t] = _mm512_setzero_ps();
    // full steps with plain loads (masked loads halve the throughput on Zen), then the tail
    auto step = [&](int64_t i, __mmask32 m, bool full) {
        __m512i xv[NT];
        for (int t = 0; t < NT; ++t)
            xv[t] = full ? _mm512_loadu_si512(x[t] + i) : _mm512_maskz_loadu_epi16(m, x[t] + i);
        for (int r = 0; r < R; ++r) {
            __m512i wv = full ? _mm512_loadu_si512(w + r * ldw + i)
                              : _mm512_maskz_loadu_epi16(m, w + r * ldw + i);
            for (int t = 0; t < NT; ++t) acc[r][t] = _mm512_dpbf16_ps(acc[r][t], as_bh(wv), as_bh(xv[t]));
        }
    };
    const int64_t full = k / 32 * 32;
    for (int64_t i = 0; i < full; i += 32) step(i, ~0u, true);
    if (full < k) step(full, ~0u >> (32 - (k - full)), false);
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

// ---- packed activations for the GEMM paths ------------------------------------------------------
// [token group of 16][k/2 pairs][16 tokens] dwords (zero-padded tokens); pair p of block g holds
// elements gemm_order(2 (p % 16)) and gemm_order(2 (p % 16) + 1) of the block, the order in which
// the path's weight decode lays a block's 32 values out
constexpr int GEMM_COLS = 16;
#if ISA_AMX
constexpr int gemm_order(int P) { return 4 * (P % 8) + P / 8; }  // amx_decode's lane layout
#else
constexpr int gemm_order(int P) { return P; }  // decode_row: natural order
#endif

int64_t gemm_xt_bytes(int64_t k, int64_t n) {
    return ((n + GEMM_COLS - 1) / GEMM_COLS) * (k / 2) * GEMM_COLS * 4;
}

void gemm_pack_x(const uint16_t* const* x, int64_t n, int64_t k, uint8_t* xt) {
    uint32_t* d = reinterpret_cast<uint32_t*>(xt);
    const int64_t pairs = k / 2, tgroups = (n + GEMM_COLS - 1) / GEMM_COLS;
    for (int64_t tg = 0; tg < tgroups; ++tg)
        for (int c = 0; c < GEMM_COLS; ++c) {
            int64_t t = tg * GEMM_COLS + c;
            uint32_t* col = d + tg * pairs * GEMM_COLS + c;
            for (int64_t p = 0; p < pairs; ++p) {
                uint32_t v = 0;
                if (t < n) {
                    const uint16_t* src = x[t] + (p / 16) * 32;
                    v = uint32_t(src[gemm_order(2 * (p % 16))]) |
                        uint32_t(src[gemm_order(2 * (p % 16) + 1)]) << 16;
                }
                col[p * GEMM_COLS] = v;
            }
        }
}

#if ISA_AMX
#include "amx.inc"
#else
// ---- GEMM path -----------------------------------------------------------------------------------
constexpr int GEMM_ROWS = 12;

// one row's blocks -> raw FP4 values as bf16, natural order (the scale is applied later)
inline void decode_row(const uint8_t* b, int64_t groups, uint16_t* dst) {
    const __m512i tbl = _mm512_load_si512(FP4_BF16);
    const __m512i m = _mm512_set1_epi32(0x0f);
    for (int64_t g = 0; g < groups; ++g) {
        __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 16 * g)));
        __m512i idx = _mm512_or_si512(_mm512_and_si512(v, m),
                                      _mm512_slli_epi32(_mm512_srli_epi32(v, 4), 16));
        _mm512_storeu_si512(dst + 32 * g, _mm512_permutexvar_epi16(idx, tbl));
    }
}

// R rows of the panel (k = 32 * groups) x one 16-token group -> out rows [R][n] (cols c0..)
template <int R>
void micro(const uint16_t* panel, const float* sc, int64_t groups, const uint32_t* xt,
           float* out, int64_t ldo, int ncols) {
    __m512 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
    const int64_t k = groups * 32;
    for (int64_t g = 0; g < groups; ++g) {
        __m512 part[R];
        for (int r = 0; r < R; ++r) part[r] = _mm512_setzero_ps();
        for (int p = 0; p < 16; ++p) {
            __m512i xv = _mm512_loadu_si512(xt + (g * 16 + p) * GEMM_COLS);
            for (int r = 0; r < R; ++r) {
                int32_t wp;
                std::memcpy(&wp, panel + r * k + g * 32 + 2 * p, 4);
                part[r] = _mm512_dpbf16_ps(part[r], as_bh(_mm512_set1_epi32(wp)), as_bh(xv));
            }
        }
        for (int r = 0; r < R; ++r)
            acc[r] = _mm512_fmadd_ps(part[r], _mm512_set1_ps(sc[r * groups + g]), acc[r]);
    }
    const __mmask16 m = ncols >= 16 ? 0xffff : __mmask16((1u << ncols) - 1);
    for (int r = 0; r < R; ++r) _mm512_mask_storeu_ps(out + r * ldo, m, acc[r]);
}

template <int R>
void micro_all(const uint16_t* panel, const float* sc, int64_t groups, const uint8_t* xt,
               int64_t n, float* out) {
    const uint32_t* x = reinterpret_cast<const uint32_t*>(xt);
    const int64_t pairs = groups * 16;
    for (int64_t c0 = 0; c0 < n; c0 += GEMM_COLS)
        micro<R>(panel, sc, groups, x + (c0 / GEMM_COLS) * pairs * GEMM_COLS, out + c0, n,
                 int(std::min<int64_t>(GEMM_COLS, n - c0)));
}

bool mx_gemm(const uint8_t* blocks, const uint8_t* scales, int64_t groups, int64_t rows,
             const uint8_t* xt, int64_t n, uint16_t* panel, float* out) {
    float sc[32 * 96];  // rows (<= 32) x groups; larger shapes take the heap
    std::vector<float> big;
    float* s = sc;
    if (rows * groups > int64_t(sizeof(sc) / sizeof(float))) {
        big.resize(rows * groups);
        s = big.data();
    }
    for (int64_t r = 0; r < rows; ++r) {
        decode_row(blocks + r * groups * 16, groups, panel + r * groups * 32);
        for (int64_t g = 0; g < groups; ++g) s[r * groups + g] = scale_of(scales[r * groups + g]);
    }
    const int64_t k = groups * 32;
    int64_t r = 0;
    for (; r + GEMM_ROWS <= rows; r += GEMM_ROWS)
        micro_all<GEMM_ROWS>(panel + r * k, s + r * groups, groups, xt, n, out + r * n);
    switch (rows - r) {
        case 0: break;
        case 1: micro_all<1>(panel + r * k, s + r * groups, groups, xt, n, out + r * n); break;
        case 2: micro_all<2>(panel + r * k, s + r * groups, groups, xt, n, out + r * n); break;
        case 3: micro_all<3>(panel + r * k, s + r * groups, groups, xt, n, out + r * n); break;
        case 4: micro_all<4>(panel + r * k, s + r * groups, groups, xt, n, out + r * n); break;
        case 5: micro_all<5>(panel + r * k, s + r * groups, groups, xt, n, out + r * n); break;
        case 6: micro_all<6>(panel + r * k, s + r * groups, groups, xt, n, out + r * n); break;
        case 7: micro_all<7>(panel + r * k, s + r * groups, groups, xt, n, out + r * n); break;
        case 8: micro_all<8>(panel + r * k, s + r * groups, groups, xt, n, out + r * n); break;
        case 9: micro_all<9>(panel + r * k, s + r * groups, groups, xt, n, out + r * n); break;
        case 10: micro_all<10>(panel + r * k, s + r * groups, groups, xt, n, out + r * n); break;
        default: micro_all<11>(panel + r * k, s + r * groups, groups, xt, n, out + r * n); break;
    }
    return true;
}

#endif  // ISA_AMX

// ---- decode attention: q . k with vdpbf16ps (bf16 products are exact in fp32) -----------------
struct QHeads {
    __m512i lo[8], hi[8];  // dims 0-31 and 32-63 of each head, bf16
    explicit QHeads(const uint16_t* q) {
        for (int g = 0; g < 8; ++g) {
            lo[g] = _mm512_loadu_si512(q + g * 64);
            hi[g] = _mm512_loadu_si512(q + g * 64 + 32);
        }
    }
};

inline void key_partials(const QHeads& q, const uint16_t* k, __m512 part[8]) {
    const __m512bh k0 = as_bh(_mm512_loadu_si512(k)), k1 = as_bh(_mm512_loadu_si512(k + 32));
    for (int g = 0; g < 8; ++g)
        part[g] = _mm512_dpbf16_ps(_mm512_dpbf16_ps(_mm512_setzero_ps(), as_bh(q.lo[g]), k0),
                                   as_bh(q.hi[g]), k1);
}

#include "attn_avx512.inc"
#include "driver.inc"

}  // namespace

extern "C" const KernelTable* ISA_TABLE_FN() { return &TABLE; }
