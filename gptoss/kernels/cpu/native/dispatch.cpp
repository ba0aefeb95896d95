// The exported C ABI: picks one instruction-set table at run time (best the CPU supports, or
// the one named by gptoss_select) and forwards every call to it.
#include "kernels.h"

extern "C" {
#ifdef GPTOSS_HAVE_AVX512BF16
const KernelTable* gptoss_table_avx512bf16();
#endif
#ifdef GPTOSS_HAVE_AVX512
const KernelTable* gptoss_table_avx512();
#endif
#ifdef GPTOSS_HAVE_AVX2
const KernelTable* gptoss_table_avx2();
#endif
const KernelTable* gptoss_table_portable();
}

namespace {

struct Candidate {
    const char* name;
    const KernelTable* (*table)();
    bool (*supported)();
};

#if defined(__x86_64__) || defined(__i386__)
bool has(bool v) { return v; }
bool cpu_avx512() {
    __builtin_cpu_init();
    return has(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"));
}
bool cpu_avx512bf16() { return cpu_avx512() && __builtin_cpu_supports("avx512bf16"); }
bool cpu_avx2() {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#endif
bool always() { return true; }

// best first
const Candidate CANDIDATES[] = {
#ifdef GPTOSS_HAVE_AVX512BF16
    {"avx512bf16", gptoss_table_avx512bf16, cpu_avx512bf16},
#endif
#ifdef GPTOSS_HAVE_AVX512
    {"avx512", gptoss_table_avx512, cpu_avx512},
#endif
#ifdef GPTOSS_HAVE_AVX2
    {"avx2", gptoss_table_avx2, cpu_avx2},
#endif
    {"portable", gptoss_table_portable, always},
};

const KernelTable* selected = nullptr;
std::string usable;

const KernelTable* current() {
    if (!selected)
        for (const auto& c : CANDIDATES)
            if (c.supported()) {
                selected = c.table();
                break;
            }
    return selected;
}

}  // namespace

extern "C" {

const char* gptoss_source_hash() { return GPTOSS_SOURCE_HASH; }

// comma-separated instruction sets that are both built in and supported here, best first
const char* gptoss_usable_isas() {
    if (usable.empty())
        for (const auto& c : CANDIDATES)
            if (c.supported()) usable += (usable.empty() ? "" : ",") + std::string(c.name);
    return usable.c_str();
}

// 0 on success, -1 if `name` is not built in, -2 if this CPU cannot run it
int gptoss_select(const char* name) {
    for (const auto& c : CANDIDATES)
        if (std::strcmp(c.name, name) == 0) {
            if (!c.supported()) return -2;
            selected = c.table();
            return 0;
        }
    return -1;
}

const char* gptoss_selected() { return current()->name; }

void gptoss_moe(const MoeArgs* a) { current()->moe(a); }
void gptoss_linear(const LinearArgs* a) { current()->linear(a); }
void gptoss_attention(const AttnArgs* a) { current()->attention(a); }

}  // extern "C"
