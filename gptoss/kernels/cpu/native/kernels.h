// The C ABI of libgptoss_cpu: argument structs (mirrored by ctypes in
// gptoss/kernels/cpu/library.py; keep the two in the same field order) and the table of
// entry points that each instruction-set translation unit provides.
#pragma once
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

extern "C" {

// Routed experts of one MoE layer, MXFP4 weights read as stored.
//   x       [n, hidden] bf16              (normed activations)
//   ids     [n, top_k] int64, weights [n, top_k] fp32 (the routing weights, already rounded
//                                                      as the model rounds them)
//   w1      blocks [E, 2I, hidden/32, 16], scales [E, 2I, hidden/32] uint8, b1 [E, 2I] bf16
//           (rows interleaved: even = gate, odd = linear)
//   w2      blocks [E, hidden, I/32, 16], scales [E, hidden, I/32] uint8, b2 [E, hidden] bf16
//   out     [n, hidden] bf16 = sum_k w_k * (W2 swiglu(W1 x + b1) + b2), accumulated in fp32
struct MoeArgs {
    const uint16_t* x;
    const int64_t* ids;
    const float* weights;
    const uint8_t* w1_blocks;
    const uint8_t* w1_scales;
    const uint16_t* b1;
    const uint8_t* w2_blocks;
    const uint8_t* w2_scales;
    const uint16_t* b2;
    uint16_t* out;
    int64_t n, hidden, inter, experts, top_k;
    float limit, alpha;
    int32_t threads;
};

// out [n, rows] = x [n, k] @ w [rows, k]^T (+ bias [rows]), bf16 in, fp32 accumulation,
// rounded once to bf16 (out_f32 = 0) or stored as fp32 (out_f32 = 1).
struct LinearArgs {
    const uint16_t* x;
    const uint16_t* w;
    const uint16_t* bias;  // may be null
    void* out;
    int64_t n, rows, k;
    int64_t x_stride;      // elements between rows of x
    int32_t out_f32;
    int32_t threads;
};

// One query token per sequence over a paged KV cache, read in place.
//   q       [n, hq, d] bf16 (rotary applied)
//   k, v    [slots, hkv, d] bf16 (one layer of the cache)
//   slots   [n, s] int64: cache slot of each key, key_pos [n, s] int64 (-1 = empty)
//   q_pos   [n] int64; key visible iff 0 <= key_pos <= q_pos and (window == 0 or
//           q_pos - key_pos < window)
//   sinks   [hq] fp32 (one extra logit per head, no value)
//   out     [n, hq * d] bf16
struct AttnArgs {
    const uint16_t* q;
    const uint16_t* k;
    const uint16_t* v;
    const int64_t* slots;
    const int64_t* key_pos;
    const int64_t* q_pos;
    const float* sinks;
    uint16_t* out;
    int64_t n, s, hq, hkv, d, window;
    float scale;
    int32_t threads;
};

struct KernelTable {
    const char* name;
    void (*moe)(const MoeArgs*);
    void (*linear)(const LinearArgs*);
    void (*attention)(const AttnArgs*);
};

}  // extern "C"
