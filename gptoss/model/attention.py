"""Attention with a fused qkv projection, YaRN rotary, grouped-query heads, sinks and an optional
sliding window. Masking is by absolute positions (see docs/architecture.md, the cache contract)."""
from __future__ import annotations

import torch
from torch import nn

from ..kernels import dispatch
from ..kernels import reference as ref
from ..kernels.cpu import attention as cpu_attention
from ..kernels.cpu import library as native
from .adapters import AdapterBatch
from .layers import RMSNorm


# on CPU, chunks of at least this many query tokens use the fused flash kernel (prefill); single
# decode tokens are faster on the reference einsum path
FLASH_MIN_TOKENS = 32


def attention_kernel(device: torch.device, num_tokens: int, needs_grad: bool = False):
    # the flash kernel's log-sum-exp output has no gradient, so the sink factor's gradient would
    # be lost: training (anything that needs a gradient) takes the differentiable reference
    if device.type == "cpu" and num_tokens >= FLASH_MIN_TOKENS and not needs_grad:
        return cpu_attention.sink_attention
    return ref.sink_attention


class AttentionBlock(nn.Module):
    """x + out(attention(rmsnorm(x))); parameter names follow the original checkpoint."""

    kernels = "auto"  # GPU kernel choice (kernels/dispatch.py)

    def __init__(self, *, layer: int, hidden: int, num_heads: int, num_kv_heads: int,
                 head_dim: int, window: int, eps: float, dtype: torch.dtype, device=None):
        super().__init__()
        self.layer, self.window = layer, window
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        q_dim, kv_dim = num_heads * head_dim, num_kv_heads * head_dim
        self.norm = RMSNorm(hidden, eps, dtype=dtype, device=device)
        self.qkv = nn.Linear(hidden, q_dim + 2 * kv_dim, bias=True, dtype=dtype, device=device)
        self.sinks = nn.Parameter(torch.zeros(num_heads, dtype=dtype, device=device))
        self.out = nn.Linear(q_dim, hidden, bias=True, dtype=dtype, device=device)
        self.scale = head_dim ** -0.5

    def forward(self, x: torch.Tensor, positions: torch.Tensor, cos_sin, cache=None,
                adapters: AdapterBatch | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        h = self.norm(x)
        qkv = self.project_qkv(h)  # [B, T, Q+2K]
        q_dim, kv_dim = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        if adapters:
            qkv = adapters.add_qkv(self.layer, h, qkv, (q_dim, kv_dim, kv_dim))
        q = qkv[..., :q_dim].view(B, T, self.num_heads, self.head_dim)
        k = qkv[..., q_dim:q_dim + kv_dim].view(B, T, self.num_kv_heads, self.head_dim)
        v = qkv[..., q_dim + kv_dim:].view(B, T, self.num_kv_heads, self.head_dim)
        cos, sin = cos_sin
        q, k = ref.apply_rotary(q, cos, sin), ref.apply_rotary(k, cos, sin)
        if dispatch.use_triton(self.kernels, q, k, v, self.sinks):
            attn = self._attend_triton(q, k, v, positions, cache)
        elif T == 1 and getattr(cache, "dtype", None) == torch.bfloat16 and native.usable(q, k):
            attn = self._decode_paged(q, k, v, positions, cache)
        else:
            if cache is not None:
                k, v, key_pos = cache.update(self.layer, k, v, positions)
            else:
                key_pos = positions
            visible = ref.visibility_mask(positions, key_pos, self.window)
            needs_grad = torch.is_grad_enabled() and any(
                t.requires_grad for t in (q, k, v, self.sinks))
            attn = attention_kernel(x.device, T, needs_grad)(q, k, v, self.sinks, visible,
                                                             self.scale)
        y = self.project_out(attn)
        return x + (adapters.add_out(self.layer, attn, y) if adapters else y)

    def project_qkv(self, h: torch.Tensor) -> torch.Tensor:
        """[B, T, H] -> [B, T, Q+2K] (fine-tuning adds its adapters here)."""
        return native.linear_or_torch(h, self.qkv.weight, self.qkv.bias)

    def project_out(self, attn: torch.Tensor) -> torch.Tensor:
        """[B, T, Q] -> [B, T, H]."""
        return native.linear_or_torch(attn, self.out.weight, self.out.bias)

    def _decode_paged(self, q, k, v, positions, cache) -> torch.Tensor:
        """One token per row, reading the paged cache's blocks in place -> [B, 1, Q]."""
        k_slots, v_slots, slots, key_pos = cache.update_paged(self.layer, k, v, positions)
        out = native.attention_decode(q[:, 0], k_slots, v_slots, slots, key_pos, positions[:, 0],
                                      self.sinks, self.window, self.scale)
        return out[:, None]

    def _attend_triton(self, q, k, v, positions, cache) -> torch.Tensor:
        """The Triton kernel; a paged cache's blocks are read in place -> [B, T, Q]."""
        from ..kernels.triton import attention as kernel  # triton is optional: imported if used
        if hasattr(cache, "update_paged"):
            k_slots, v_slots, slots, key_pos = cache.update_paged(self.layer, k, v, positions)
            lengths = cache.key_lengths(self.layer) if hasattr(cache, "key_lengths") else None
            return kernel.sink_attention_paged(q, k_slots, v_slots, slots, key_pos, positions,
                                               self.sinks, self.window, self.scale, lengths)
        key_pos = positions
        if cache is not None:
            k, v, key_pos = cache.update(self.layer, k, v, positions)
        return kernel.sink_attention(q, k, v, positions, key_pos, self.sinks, self.window,
                                     self.scale)
