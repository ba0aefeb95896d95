"""Small layers: RMSNorm and YaRN rotary embeddings (parameters only; math in kernels.reference)."""
from __future__ import annotations

import torch
from torch import nn

from ..kernels import dispatch
from ..kernels import reference as ref


class RMSNorm(nn.Module):
    kernels = "auto"  # GPU kernel choice (kernels/dispatch.py)

    def __init__(self, dim: int, eps: float, *, dtype: torch.dtype, device=None):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(dim, dtype=dtype, device=device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if dispatch.use_triton(self.kernels, x, self.scale):
            from ..kernels.triton.rms_norm import rms_norm  # triton is optional: imported if used
            return rms_norm(x, self.scale, self.eps)
        return ref.rms_norm(x, self.scale, self.eps)


class Rotary(nn.Module):
    """YaRN-scaled rotary embedding; `cos_sin(positions [B, T])` -> two [B, T, 1, D/2] fp32."""

    def __init__(self, head_dim: int, theta: float, factor: float, ntk_alpha: float,
                 ntk_beta: float, context: int):
        super().__init__()
        inv_freq, self.concentration = ref.yarn_inv_freq(head_dim, theta, factor, ntk_alpha,
                                                         ntk_beta, context)
        # computed, not loaded: kept out of the state dict
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def cos_sin(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return ref.rotary_cos_sin(positions, self.inv_freq, self.concentration)
