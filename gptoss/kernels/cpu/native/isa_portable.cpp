// Portable kernels: plain C++ with the same numerics as the vector paths (fp32 sums, each
// MXFP4 block's partial sum scaled in fp32). The path on CPUs without AVX2.
#include "kernels.h"

namespace {

#include "common.inc"

#define ISA_NAME "portable"
constexpr int NT_MAX = 4;
#define ISA_HAS_GEMM 0

const float FP4[16] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f,
                       -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

int64_t prep_bytes(int64_t k) { return k * 4; }

void prep(const uint16_t* x, int64_t k, uint8_t* dst) {
    float* d = reinterpret_cast<float*>(dst);
    for (int64_t i = 0; i < k; ++i) d[i] = bf2f(x[i]);
}

template <int NT>
void mx_dot_t(const uint8_t* blocks, const uint8_t* scales, int64_t groups, int64_t rows,
              const uint8_t* const* xp, float* out) {
    const int nt = NT;
    for (int64_t r = 0; r < rows; ++r) {
        float acc[NT_MAX] = {0, 0, 0, 0};
        for (int64_t g = 0; g < groups; ++g) {
            const uint8_t* b = blocks + (r * groups + g) * 16;
            float sc = scale_of(scales[r * groups + g]);
            for (int t = 0; t < nt; ++t) {
                const float* x = reinterpret_cast<const float*>(xp[t]) + g * 32;
                float part = 0.0f;
                for (int i = 0; i < 16; ++i)
                    part += FP4[b[i] & 15] * x[2 * i] + FP4[b[i] >> 4] * x[2 * i + 1];
                acc[t] += part * sc;
            }
        }
        for (int t = 0; t < nt; ++t) out[r * nt + t] = acc[t];
    }
}

template <int NT>
void bf16_dot_n(const uint16_t* w, int64_t ldw, int64_t k, int64_t rows, const uint16_t* const* x,
                float* out) {
    const int nt = NT;
    for (int64_t r = 0; r < rows; ++r)
        for (int t = 0; t < nt; ++t) {
            float acc = 0.0f;
            for (int64_t i = 0; i < k; ++i) acc += bf2f(w[r * ldw + i]) * bf2f(x[t][i]);
            out[r * nt + t] = acc;
        }
}

#include "driver.inc"

}  // namespace

extern "C" const KernelTable* gptoss_table_portable() { return &TABLE; }
