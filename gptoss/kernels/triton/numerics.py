"""Two Triton helpers that keep the kernels' numerics the same on a GPU and in the interpreter.

Triton's interpreter (3.x, numpy underneath) multiplies bf16 matrices wrongly and truncates
fp32 -> bf16 casts instead of rounding to nearest even. With `INTERPRETED` the helpers do the
same arithmetic another way: the bf16 values are multiplied in fp32 (each product is exact
either way; sums are fp32 in both), and the rounding is done on the bits.
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def mma(a, b, INTERPRETED: tl.constexpr):
    """a [M, K] @ b [K, N] of bf16 values, accumulated in fp32."""
    if INTERPRETED:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    return tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16))


@triton.jit
def to_bf16(x, INTERPRETED: tl.constexpr):
    """fp32 -> bf16, rounded to nearest even (inf and NaN kept)."""
    if INTERPRETED:
        bits = x.to(tl.int32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & -65536   # -65536 = 0xFFFF0000
        return bits.to(tl.float32, bitcast=True).to(tl.bfloat16)
    return x.to(tl.bfloat16)
