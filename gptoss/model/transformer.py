"""The gpt-oss transformer: embedding -> blocks (attention, MoE) -> norm -> unembedding."""
from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from ..kernels import dispatch
from ..kernels.cpu import library as native
from .adapters import AdapterBatch
from .attention import AttentionBlock
from .layers import RMSNorm, Rotary
from .moe import MLPBlock

EXPERT_MODES = ("mxfp4", "dense")


class TokenIdError(ValueError):
    """An input id outside the embedding table (the model never clamps one silently)."""


class TransformerBlock(nn.Module):
    def __init__(self, config: ModelConfig, layer: int, *, packed: bool, dtype, device):
        super().__init__()
        c = config
        self.attn = AttentionBlock(layer=layer, hidden=c.hidden_size, num_heads=c.num_heads,
                                   num_kv_heads=c.num_kv_heads, head_dim=c.head_dim,
                                   window=c.window(layer), eps=c.rms_norm_eps, dtype=dtype,
                                   device=device)
        self.mlp = MLPBlock(hidden=c.hidden_size, intermediate=c.intermediate_size,
                            num_experts=c.num_experts, top_k=c.experts_per_token,
                            limit=c.swiglu_limit, alpha=c.swiglu_alpha, eps=c.rms_norm_eps,
                            packed=packed, dtype=dtype, device=device, layer=layer)

    def forward(self, x, positions, cos_sin, cache=None, adapters: AdapterBatch | None = None):
        if adapters:  # (the module swaps of finetune/lora.py take no adapters)
            return self.mlp(self.attn(x, positions, cos_sin, cache, adapters), adapters)
        return self.mlp(self.attn(x, positions, cos_sin, cache))


class Transformer(nn.Module):
    """`forward(input_ids [B, T], positions [B, T] | None, cache | None) -> logits [B, T, V]`.

    `positions` are absolute; -1 marks padding. Without positions every row counts from 0.
    `experts="mxfp4"` keeps expert matrices packed, `"dense"` holds them in `dtype`.
    Parameters are created on `device` (use "meta" and load with `assign=True`).
    """

    def __init__(self, config: ModelConfig, *, experts: str = "mxfp4",
                 dtype: torch.dtype = torch.bfloat16, device="meta"):
        super().__init__()
        if experts not in EXPERT_MODES:
            raise ValueError(f"experts must be one of {EXPERT_MODES}, got {experts!r}")
        c = self.config = config
        self.experts = experts
        self.embedding = nn.Embedding(c.vocab_size, c.hidden_size, dtype=dtype, device=device)
        self.block = nn.ModuleList(
            TransformerBlock(c, i, packed=experts == "mxfp4", dtype=dtype, device=device)
            for i in range(c.num_layers))
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps, dtype=dtype, device=device)
        self.unembedding = nn.Linear(c.hidden_size, c.vocab_size, bias=False, dtype=dtype,
                                     device=device)
        self.rotary = Rotary(c.head_dim, c.rope_theta, c.rope_scaling_factor, c.rope_ntk_alpha,
                             c.rope_ntk_beta, c.initial_context_length)

    def use_kernels(self, choice: str) -> "Transformer":
        """Choose the GPU kernels of every layer: "auto" | "triton" | "reference" (see
        kernels/dispatch.py; CPU tensors keep the CPU path)."""
        dispatch.check_choice(choice)
        for module in self.modules():
            if hasattr(type(module), "kernels"):
                module.kernels = choice
        return self

    @property
    def dtype(self) -> torch.dtype:
        return self.embedding.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.embedding.weight.device

    def hidden_states(self, input_ids: torch.Tensor, positions: torch.Tensor | None = None,
                      cache=None, adapters: AdapterBatch | None = None) -> torch.Tensor:
        """input_ids [B, T] -> final-normed hidden states [B, T, H]. Raises TokenIdError for an
        id outside [0, vocab_size) (padding positions too: pad with a valid id such as 0).
        `adapters` adds each row's LoRA deltas (model/adapters.py); None: the base model."""
        self._check_ids(input_ids)
        if positions is None:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        x = self.embedding(input_ids)
        cos_sin = self.rotary.cos_sin(positions)
        for block in self.block:
            x = block(x, positions, cos_sin, cache, adapters)
        return self.norm(x)

    def _check_ids(self, input_ids: torch.Tensor) -> None:
        if input_ids.numel() == 0:
            return
        lo, hi = torch.aminmax(input_ids)
        V = self.config.vocab_size
        if int(lo) < 0 or int(hi) >= V:
            bad = input_ids[(input_ids < 0) | (input_ids >= V)].unique()[:5].tolist()
            raise TokenIdError(f"input ids must be in [0, {V}) (the embedding's rows); got {bad}")

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[..., H] -> [..., V]."""
        return native.linear_or_torch(hidden, self.unembedding.weight)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor | None = None,
                cache=None, adapters: AdapterBatch | None = None) -> torch.Tensor:
        return self.logits(self.hidden_states(input_ids, positions, cache, adapters))
