"""Sink attention on PyTorch's fused CPU flash-attention kernel.

The kernel computes plain softmax attention and returns each row's log-sum-exp `lse` of the
scaled, masked scores. A sink logit `s` adds `exp(s)` to the softmax denominator only, so the
sink version is the plain output times `exp(lse) / (exp(lse) + exp(s)) = sigmoid(lse - s)`.
This never materialises the [B, H, T, S] score tensor, which the reference does in fp32.
A row with no visible key gets output 0, as in the reference (all mass on the sink).
"""
from __future__ import annotations

import torch

_flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu


def sink_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sinks: torch.Tensor,
                   visible: torch.Tensor, scale: float) -> torch.Tensor:
    """Same contract as `reference.sink_attention`: q [B, T, Hq, D], k/v [B, S, Hkv, D],
    sinks [Hq], visible [B, T, S] -> [B, T, Hq*D]."""
    B, T, Hq, D = q.shape
    group = Hq // k.shape[2]
    # [B, H, T|S, D]; query head h reads kv head h // group
    qh = q.transpose(1, 2)
    kh = k.repeat_interleave(group, dim=2).transpose(1, 2)
    vh = v.repeat_interleave(group, dim=2).transpose(1, 2)
    mask = torch.zeros(B, 1, T, visible.shape[-1], dtype=q.dtype, device=q.device)
    mask.masked_fill_(~visible[:, None], float("-inf"))
    out, lse = _flash(qh, kh, vh, 0.0, False, attn_mask=mask, scale=scale)  # lse [B, H, T] fp32
    factor = torch.sigmoid(lse - sinks.float()[None, :, None]).to(out.dtype)
    return (out * factor[..., None]).transpose(1, 2).reshape(B, T, Hq * D)
