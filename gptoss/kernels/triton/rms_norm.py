"""Fused RMSNorm in Triton: one program per row, fp32 inside, cast back once."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import interpreted
from .numerics import to_bf16


@triton.jit
def _rms_norm(x_ptr, scale_ptr, out_ptr, H, eps, BLOCK: tl.constexpr, INTERPRETED: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    i = tl.arange(0, BLOCK)
    ok = i < H
    x = tl.load(x_ptr + row * H + i, mask=ok, other=0.0).to(tl.float32)
    w = tl.load(scale_ptr + i, mask=ok, other=0.0).to(tl.float32)
    inv = tl.rsqrt(tl.sum(x * x, axis=0) / H + eps)
    tl.store(out_ptr + row * H + i, to_bf16(x * inv * w, INTERPRETED), mask=ok)


def rms_norm(x: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    """Same contract as `reference.rms_norm` for bf16 x [..., H]:
    x * rsqrt(mean(x^2) + eps) * scale (scale bf16 or fp32)."""
    H = x.shape[-1]
    flat = x.reshape(-1, H).contiguous()
    out = torch.empty_like(flat)
    if flat.shape[0]:
        _rms_norm[(flat.shape[0],)](flat, scale.contiguous(), out, H, float(eps),
                                    BLOCK=triton.next_power_of_2(H),
                                    INTERPRETED=interpreted())
    return out.view(x.shape)
