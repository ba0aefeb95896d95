"""The mixture-of-experts block: router, then only the routed experts are computed.

Experts are held either packed (MXFP4 `blocks`/`scales`) or dense (`mlp1_weight` [E, 2I, H],
`mlp2_weight` [E, H, I]); the loader decides which. Packed bf16 experts on CPU run in the native
kernel, which reads blocks and scales as stored; otherwise each used expert is dequantized on
the fly (the reference path). Both sum the routing-weighted expert outputs in fp32 and round
once, as the reference implementation's final einsum does.
"""
from __future__ import annotations

import torch
from torch import nn

from ..kernels import dispatch
from ..kernels import reference as ref
from ..kernels.cpu import library as native
from ..kernels.mxfp4 import dequantize
from .layers import RMSNorm


class PackedMXFP4(nn.Module):
    """An [E, rows, cols] expert matrix kept as MXFP4: blocks [E, rows, cols/32, 16], scales
    [E, rows, cols/32], both uint8."""

    def __init__(self, experts: int, rows: int, cols: int, device=None):
        super().__init__()
        self.register_buffer("blocks", torch.zeros(experts, rows, cols // 32, 16, dtype=torch.uint8,
                                                   device=device))
        self.register_buffer("scales", torch.zeros(experts, rows, cols // 32, dtype=torch.uint8,
                                                   device=device))

    def expert(self, e: int, dtype: torch.dtype) -> torch.Tensor:
        return dequantize(self.blocks[e], self.scales[e], dtype)


class MLPBlock(nn.Module):
    """x + sum_e w_e * expert_e(rmsnorm(x)) over the top-k routed experts."""

    kernels = "auto"  # GPU kernel choice (kernels/dispatch.py)

    def __init__(self, *, hidden: int, intermediate: int, num_experts: int, top_k: int,
                 limit: float, alpha: float, eps: float, packed: bool, dtype: torch.dtype,
                 device=None):
        super().__init__()
        self.top_k, self.limit, self.alpha = top_k, limit, alpha
        self.norm = RMSNorm(hidden, eps, dtype=dtype, device=device)
        self.gate = nn.Linear(hidden, num_experts, bias=True, dtype=dtype, device=device)
        if packed:
            self.mlp1_weight = PackedMXFP4(num_experts, 2 * intermediate, hidden, device)
            self.mlp2_weight = PackedMXFP4(num_experts, hidden, intermediate, device)
        else:
            self.mlp1_weight = nn.Parameter(torch.zeros(num_experts, 2 * intermediate, hidden,
                                                        dtype=dtype, device=device))
            self.mlp2_weight = nn.Parameter(torch.zeros(num_experts, hidden, intermediate,
                                                        dtype=dtype, device=device))
        self.mlp1_bias = nn.Parameter(torch.zeros(num_experts, 2 * intermediate, dtype=dtype,
                                                  device=device))
        self.mlp2_bias = nn.Parameter(torch.zeros(num_experts, hidden, dtype=dtype, device=device))

    def weights(self, e: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(self.mlp1_weight, PackedMXFP4):
            return self.mlp1_weight.expert(e, dtype), self.mlp2_weight.expert(e, dtype)
        return self.mlp1_weight[e], self.mlp2_weight[e]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        t = self.norm(x).reshape(-1, shape[-1])  # [N, H]
        logits = native.linear_or_torch(t, self.gate.weight, self.gate.bias)
        ids, weights = ref.top_k_softmax(logits, self.top_k, t.dtype)  # [N, k] each
        packed = isinstance(self.mlp1_weight, PackedMXFP4)
        if packed and dispatch.use_triton(self.kernels, t, self.mlp1_bias):
            out = self.experts_triton(t, ids, weights)
        elif packed and native.usable(t, self.mlp1_bias):
            out = native.moe(t, ids, weights, self.mlp1_weight.blocks, self.mlp1_weight.scales,
                             self.mlp1_bias, self.mlp2_weight.blocks, self.mlp2_weight.scales,
                             self.mlp2_bias, self.limit, self.alpha)
        else:
            out = self.experts_reference(t, ids, weights)
        return x + out.view(shape)

    def experts_triton(self, t: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor
                       ) -> torch.Tensor:
        """The packed experts in the Triton kernels (same contract as `experts_reference`)."""
        from ..kernels.triton.mxfp4_moe import moe  # triton is optional: imported if used
        return moe(t, ids, weights, self.mlp1_weight.blocks, self.mlp1_weight.scales,
                   self.mlp1_bias, self.mlp2_weight.blocks, self.mlp2_weight.scales,
                   self.mlp2_bias, self.limit, self.alpha)

    def experts_reference(self, t: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor
                          ) -> torch.Tensor:
        """t [N, H] -> sum_k weights[:, k] * expert_{ids[:, k]}(t) [N, H], summed in fp32."""
        out = torch.zeros(t.shape, dtype=torch.float32, device=t.device)
        for e in torch.unique(ids).tolist():
            token, slot = torch.nonzero(ids == e, as_tuple=True)
            w1, w2 = self.weights(e, t.dtype)
            y = ref.expert_mlp(t[token], w1, self.mlp1_bias[e], w2, self.mlp2_bias[e],
                               self.limit, self.alpha)
            out.index_add_(0, token, y.float() * weights[token, slot, None].float())
        return out.to(t.dtype)
