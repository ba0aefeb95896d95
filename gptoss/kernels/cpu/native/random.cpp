// Random weights for generated checkpoints, fast and reproducible (setup of every speed check):
// a counter-based generator, so value i depends only on (key, i), never on threads or chunks.
//   uniform:  u64 = splitmix64(key + (i/2 + 1) * golden); value i takes its low (even i) or high
//             (odd i) 32 bits
//   normal:   a piecewise-linear inverse CDF through a table of quantiles passed by the caller
//             (gptoss/weights/random_weights.py computes it, and mirrors this file in torch)
//   MXFP4:    values * std, quantized by exactly the rule of kernels/mxfp4.py `quantize`
#include "kernels.h"

namespace {

inline uint64_t splitmix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

constexpr int TABLE_BITS = 12;  // table has 2^12 + 1 quantiles

inline float normal_at(uint64_t key, int64_t i, const float* table) {
    uint64_t r = splitmix64(key + uint64_t(i / 2 + 1) * 0x9E3779B97F4A7C15ull);
    uint32_t u = (i & 1) ? uint32_t(r >> 32) : uint32_t(r);
    uint32_t j = u >> (32 - TABLE_BITS);
    float frac = float(u & ((1u << (32 - TABLE_BITS)) - 1)) * (1.0f / float(1u << (32 - TABLE_BITS)));
    float lo = table[j], hi = table[j + 1];
    float step = hi - lo;
    float scaled = step * frac;
    return lo + scaled;
}

// one block of 32 fp32 (finite) -> 16 bytes + scale byte, as mxfp4._encode_chunk
inline void encode_block(const float* x, uint8_t* blocks, uint8_t* scale) {
    float amax = 0.0f;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[i]));
    uint32_t bits;
    std::memcpy(&bits, &amax, 4);
    int k = int(bits >> 23) - (127 + 2) + ((bits & 0x7fffff) > 0x600000 ? 1 : 0);
    k = std::min(127, std::max(-127, k));
    // |x| / 2^k as a product with the exact power of two (2^-k; 2^127 at most, 2^-127 is the
    // subnormal 0x00400000), which rounds exactly as ldexp does; written to vectorize
    int e = 127 - k;
    uint32_t pbits = e > 0 ? uint32_t(e) << 23 : 0x00400000u;
    float inv;
    std::memcpy(&inv, &pbits, 4);
    uint8_t code[32];
    for (int i = 0; i < 32; ++i) {
        float mag = std::fabs(x[i]) * inv;
        uint32_t xb;
        std::memcpy(&xb, &x[i], 4);
        int c = int(xb >> 31) << 3;
        c += (mag > 0.25f) + (mag >= 0.75f) + (mag > 1.25f) + (mag >= 1.75f) + (mag > 2.5f) +
             (mag >= 3.5f) + (mag > 5.0f);
        code[i] = uint8_t(c);
    }
    for (int i = 0; i < 16; ++i) blocks[i] = uint8_t(code[2 * i] | (code[2 * i + 1] << 4));
    *scale = uint8_t(k + 127);
}

template <class F>
void parallel_blocks(int threads, int64_t n, F&& f) {
#pragma omp parallel for schedule(static) num_threads(threads > 0 ? threads : 1) if (threads > 1)
    for (int64_t b = 0; b < n; ++b) f(b);
}

}  // namespace

extern "C" {

// out[i] = normal value i of `key`, for i in [offset, offset + n)
void gptoss_random_normal(uint64_t key, int64_t offset, int64_t n, const float* table,
                          float* out, int32_t threads) {
    const int64_t chunk = 4096, chunks = (n + chunk - 1) / chunk;
    parallel_blocks(threads, chunks, [&](int64_t c) {
        for (int64_t i = c * chunk; i < std::min(n, (c + 1) * chunk); ++i)
            out[i] = normal_at(key, offset + i, table);
    });
}

// blocks [n_blocks, 16], scales [n_blocks] = quantize(std * normal values offset ...)
void gptoss_random_mxfp4(uint64_t key, int64_t offset, int64_t n_blocks, float std_,
                         const float* table, uint8_t* blocks, uint8_t* scales, int32_t threads) {
    parallel_blocks(threads, n_blocks, [&](int64_t b) {
        float x[32];
        for (int i = 0; i < 32; ++i) x[i] = normal_at(key, offset + b * 32 + i, table) * std_;
        encode_block(x, blocks + b * 16, scales + b);
    });
}

// the quantization rule alone: x [n_blocks * 32] fp32 (finite) -> blocks, scales
void gptoss_mxfp4_quantize(const float* x, int64_t n_blocks, uint8_t* blocks, uint8_t* scales,
                           int32_t threads) {
    parallel_blocks(threads, n_blocks,
                    [&](int64_t b) { encode_block(x + b * 32, blocks + b * 16, scales + b); });
}

}  // extern "C"
