// The exported C ABI: picks one instruction-set table at run time (best the CPU supports, or
// the one named by gptoss_select) and forwards every call to it.
#include "kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#ifdef __linux__
#include <sys/syscall.h>
#include <unistd.h>
#endif

extern "C" {
#ifdef GPTOSS_HAVE_AMX
const KernelTable* gptoss_table_amx();
#endif
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
// AMX: the CPU has the tile unit with bf16 (CPUID 7.0 EDX bits 22, 24), the OS saves the tile
// state (XCR0 bits 17, 18), and Linux grants this process the tile data (arch_prctl; asked once)
bool cpu_amx() {
    if (!cpu_avx512bf16()) return false;
    static const bool ok = [] {
        unsigned a, b, c, d;
        return __get_cpuid_count(7, 0, &a, &b, &c, &d) && ((d >> 22) & 1) && ((d >> 24) & 1);
    }();
    if (!ok) return false;
    static const bool granted = [] {
        unsigned a, b, c, d;
        __get_cpuid(1, &a, &b, &c, &d);
        if (!((c >> 27) & 1)) return false;
        unsigned lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        if ((lo & (3u << 17)) != (3u << 17)) return false;
#ifdef __linux__
        return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) == 0;
#else
        return false;
#endif
    }();
    return granted;
}
bool cpu_avx2() {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#endif
bool always() { return true; }

// best first
const Candidate CANDIDATES[] = {
#ifdef GPTOSS_HAVE_AMX
    {"amx", gptoss_table_amx, cpu_amx},
#endif
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
