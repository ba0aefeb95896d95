// AVX-512 BF16 with AMX (tdpbf16ps): Intel Sapphire Rapids and later. The avx512bf16 unit,
// except that the MoE's GEMM path (3+ tokens on one expert) runs on the tile unit (amx.inc).
#include <cstdlib>

#define ISA_AMX 1
#define ISA_NAME "amx"
#define ISA_TABLE_FN gptoss_table_amx
#include "isa_avx512bf16.cpp"
