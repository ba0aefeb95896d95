"""The mixture-of-experts block: router, then only the routed experts are computed.

Experts are held either packed (MXFP4 `blocks`/`scales`) or dense (`mlp1_weight` [E, 2I, H],
`mlp2_weight` [E, H, I]); the loader decides which. Packed bf16 experts on CPU run in the native
kernel, which reads blocks and scales as stored; otherwise each used expert is dequantized on
the fly (the reference path). Both sum the routing-weighted expert outputs in fp32 and round
once, as the reference implementation's final einsum does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels import dispatch
from ..kernels import reference as ref
from ..kernels.cpu import library as native
from ..kernels.mxfp4 import dequantize
from .adapters import Adapter, AdapterBatch
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
                 device=None, layer: int = 0):
        super().__init__()
        self.layer = layer  # which adapter matrices apply (model/adapters.py)
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

    def forward(self, x: torch.Tensor, adapters: AdapterBatch | None = None) -> torch.Tensor:
        shape = x.shape
        t = self.norm(x).reshape(-1, shape[-1])  # [N, H]
        logits = native.linear_or_torch(t, self.gate.weight, self.gate.bias)
        ids, weights = ref.top_k_softmax(logits, self.top_k, t.dtype)  # [N, k] each
        adapted = adapters.expert_tokens(self.layer, shape[-2]) if adapters else []
        if adapted:
            out = self.experts_with_adapters(t, ids, weights, adapted)
        else:
            out = self.experts(t, ids, weights)
        return x + out.view(shape)

    def experts(self, t: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """The base model's routed experts: t [N, H] -> [N, H] (Triton on CUDA, the native
        kernel on CPU, when they can)."""
        packed = isinstance(self.mlp1_weight, PackedMXFP4)
        if packed and dispatch.use_triton(self.kernels, t, self.mlp1_bias):
            return self.experts_triton(t, ids, weights)
        if packed and native.usable(t, self.mlp1_bias):
            return native.moe(t, ids, weights, self.mlp1_weight.blocks, self.mlp1_weight.scales,
                              self.mlp1_bias, self.mlp2_weight.blocks, self.mlp2_weight.scales,
                              self.mlp2_bias, self.limit, self.alpha)
        return self.experts_reference(t, ids, weights)

    def experts_triton(self, t: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor
                       ) -> torch.Tensor:
        """The packed experts in the Triton kernels (same contract as `experts_reference`)."""
        from ..kernels.triton.mxfp4_moe import moe  # triton is optional: imported if used
        return moe(t, ids, weights, self.mlp1_weight.blocks, self.mlp1_weight.scales,
                   self.mlp1_bias, self.mlp2_weight.blocks, self.mlp2_weight.scales,
                   self.mlp2_bias, self.limit, self.alpha)
    def experts_with_adapters(self, t: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor,
                              adapted: list[tuple[Adapter, torch.Tensor]]) -> torch.Tensor:
        """Each adapter's tokens through its adapted experts, the other tokens through the
        base path (`adapted`: [(adapter, its token indices in [N])])."""
        out = torch.empty_like(t)
        plain = torch.ones(t.shape[0], dtype=torch.bool, device=t.device)
        for adapter, tokens in adapted:
            tokens = tokens.to(t.device)
            plain[tokens] = False
            out[tokens] = self.experts_reference(t[tokens], ids[tokens], weights[tokens], adapter)
        rest = plain.nonzero()[:, 0]
        if len(rest):
            out[rest] = self.experts(t[rest], ids[rest], weights[rest])
        return out

    def experts_reference(self, t: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor,
                          adapter: Adapter | None = None) -> torch.Tensor:
        """t [N, H] -> sum_k weights[:, k] * expert_{ids[:, k]}(t) [N, H], summed in fp32;
        with `adapter`, its per-expert deltas act on both expert matrices."""
        out = torch.zeros(t.shape, dtype=torch.float32, device=t.device)
        for e in torch.unique(ids).tolist():
            token, slot = torch.nonzero(ids == e, as_tuple=True)
            w1, w2 = self.weights(e, t.dtype)
            if adapter is None:
                y = ref.expert_mlp(t[token], w1, self.mlp1_bias[e], w2, self.mlp2_bias[e],
                                   self.limit, self.alpha)
            else:
                y = self._adapted_expert(t[token], e, w1, w2, adapter)
            out.index_add_(0, token, y.float() * weights[token, slot, None].float())
        return out.to(t.dtype)

    def _adapted_expert(self, x: torch.Tensor, e: int, w1: torch.Tensor, w2: torch.Tensor,
                        adapter: Adapter) -> torch.Tensor:
        """Expert e on x [n, H] with the adapter's deltas where its merged weights would act
        -> [n, H] fp32 (the deltas are fp32 and join the base outputs before any rounding)."""
        h = F.linear(x, w1, self.mlp1_bias[e]).float()  # [n, 2I], before the activation
        d = adapter.delta(self.layer, "mlp1", x, e)
        h = ref.swiglu(h if d is None else h + d, self.limit, self.alpha).to(x.dtype)
        y = F.linear(h, w2, self.mlp2_bias[e]).float()
        d = adapter.delta(self.layer, "mlp2", h, e)
        return y if d is None else y + d
