"""Plain PyTorch kernels: the numerical oracle every fast path is tested against.

Each function computes exactly what openai/gpt-oss `gpt_oss/torch/model.py` computes, with fp32
accumulation for the reductions where that only adds precision (norms, softmax).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    """x [..., H] -> x * rsqrt(mean(x^2) + eps) * scale, computed in fp32, cast back."""
    t = x.float()
    t = t * torch.rsqrt(t.pow(2).mean(dim=-1, keepdim=True) + eps)
    return (t * scale.float()).to(x.dtype)


def yarn_inv_freq(head_dim: int, theta: float, factor: float, ntk_alpha: float, ntk_beta: float,
                  context: int) -> tuple[torch.Tensor, float]:
    """YaRN frequencies [head_dim/2] (fp32) and the concentration that scales cos and sin.

    The ramp bounds are fractional (no floor/ceil): dims below `low` extrapolate (keep inv_freq),
    dims above `high` interpolate (inv_freq / factor), a linear blend in between.
    """
    half = head_dim // 2
    freq = theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    concentration = 0.1 * math.log(factor) + 1.0 if factor > 1 else 1.0
    if factor <= 1:
        return 1.0 / freq, concentration
    low = half * math.log(context / (ntk_beta * 2 * math.pi)) / math.log(theta)
    high = half * math.log(context / (ntk_alpha * 2 * math.pi)) / math.log(theta)
    ramp = ((torch.arange(half, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    extrapolation = 1 - ramp  # 1 where the dimension keeps its original frequency
    inv_freq = (1.0 / (factor * freq)) * (1 - extrapolation) + (1.0 / freq) * extrapolation
    return inv_freq, concentration


def rotary_cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor, concentration: float):
    """positions [B, T] -> cos, sin [B, T, 1, D/2] in fp32 (padding positions -1 are harmless)."""
    angles = positions.to(torch.float32)[..., None] * inv_freq.to(positions.device)
    return (angles.cos() * concentration)[..., None, :], (angles.sin() * concentration)[..., None, :]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Half-split rotation of x [B, T, heads, D]: first D/2 dims against the last D/2."""
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)


def visibility_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int) -> torch.Tensor:
    """[B, T] query and [B, S] key positions -> bool [B, T, S]: key visible to query.

    Visible iff 0 <= k <= q and, with a window, q - k < window. A -1 position is padding.
    """
    q, k = q_pos[:, :, None], k_pos[:, None, :]
    visible = (k >= 0) & (k <= q)
    if window > 0:
        visible &= (q - k) < window
    return visible


def sink_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sinks: torch.Tensor,
                   visible: torch.Tensor, scale: float) -> torch.Tensor:
    """Grouped-query attention with one learned sink logit per query head.

    q [B, T, Hq, D], k/v [B, S, Hkv, D], sinks [Hq], visible [B, T, S] -> [B, T, Hq*D].
    Query head h reads kv head h // (Hq/Hkv). The sink is an extra (unscaled) logit column that
    takes probability mass and contributes no value.
    """
    B, T, Hq, D = q.shape
    Hkv = k.shape[2]
    # scores, softmax and the weighted sum in fp32 (bf16 scores of magnitude ~10 would be off by
    # ~0.05 before the exponential: visible drift in long bf16 decodes)
    qg = q.float().view(B, T, Hkv, Hq // Hkv, D)
    scores = torch.einsum("btkgd,bskd->bkgts", qg, k.float()) * scale  # [B, Hkv, G, T, S]
    scores = scores.masked_fill(~visible[:, None, None], float("-inf"))
    sink = sinks.float().view(1, Hkv, Hq // Hkv, 1, 1).expand(B, -1, -1, T, 1)
    probs = torch.softmax(torch.cat([scores, sink], dim=-1), dim=-1)[..., :-1]
    out = torch.einsum("bkgts,bskd->btkgd", probs, v.float())
    return out.reshape(B, T, Hq * D).to(v.dtype)


def swiglu(h: torch.Tensor, limit: float, alpha: float) -> torch.Tensor:
    """h [..., 2I] with interleaved (gate, linear) pairs -> [..., I].

    gate is clamped above only, linear on both sides; out = gate * sigmoid(alpha * gate) * (lin + 1).
    """
    t = h.float()  # fp32, rounded once: in bf16 each of the five ops would round
    gate, lin = t[..., ::2], t[..., 1::2]
    gate = gate.clamp(max=limit)
    lin = lin.clamp(min=-limit, max=limit)
    return (gate * torch.sigmoid(alpha * gate) * (lin + 1)).to(h.dtype)


def top_k_softmax(logits: torch.Tensor, top_k: int, dtype: torch.dtype):
    """Router logits [N, E] -> (expert ids [N, k], weights [N, k] in `dtype`): top-k of the raw
    logits, then a softmax over those k values only."""
    values, ids = torch.topk(logits, top_k, dim=-1, sorted=True)
    return ids, torch.softmax(values.float(), dim=-1).to(dtype)


def expert_mlp(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor,
               b2: torch.Tensor, limit: float, alpha: float) -> torch.Tensor:
    """One expert on its tokens: x [n, H], w1 [2I, H], w2 [H, I] -> [n, H] (bias b2 included)."""
    h = swiglu(F.linear(x, w1, b1), limit, alpha)
    return F.linear(h, w2, b2)

