"""LoRA adapters on the attention projections and on every expert, applied as module swaps.

`apply_lora(model, LoraSpec(...))` turns each `AttentionBlock` into a `LoraAttentionBlock` and
each `MLPBlock` into a `LoraMLPBlock` in place (the base parameters stay where they are, under the
same names) and adds the adapters:

  block.{n}.attn.lora.{q,k,v,o}.A / .B     A [r, in], B [out, r]    (q, k, v share the fused qkv)
  block.{n}.mlp.lora.{mlp1,mlp2}.A / .B    A [E, r, in], B [E, out, r]   (one pair per expert)

A projection then computes `base(x) + scaling * (x A^T) B^T` with `scaling = alpha / r`
(`alpha / sqrt(r)` with `rslora`), as PEFT's LoRA does; for experts `W_e + scaling * B_e A_e`
is PEFT's parameter-level LoRA (`target_parameters`) on the fused expert tensors (the export to
PEFT's names and layouts is in `peft_format.py`). B starts at zero, so a fresh adapter leaves the
model's output unchanged; A starts uniform in +-1/sqrt(in) (PEFT's Kaiming default).

Base experts may be dense (any dtype) or packed MXFP4: packed experts stay frozen and are
dequantized one used expert at a time, in the forward and again in the backward
(`PackedExpertLinear`), so no dequantized expert outlives its matrix product (QLoRA-style).
Adapters are fp32 and cast to the activations' dtype where they are used.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels import reference as ref
from ..model.attention import AttentionBlock
from ..model.moe import MLPBlock, PackedMXFP4
from ..kernels import mxfp4

ATTENTION_TARGETS = ("q", "k", "v", "o")
EXPERT_TARGETS = ("mlp1", "mlp2")


class LoraError(ValueError):
    """An adapter specification or adapter file that does not fit the model."""


@dataclass(frozen=True)
class LoraSpec:
    """Which projections get adapters, their rank and scale."""
    rank: int = 8
    alpha: float = 16.0
    attention: tuple[str, ...] = ATTENTION_TARGETS
    experts: tuple[str, ...] = EXPERT_TARGETS
    rslora: bool = False
    train_router: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "attention", tuple(self.attention))
        object.__setattr__(self, "experts", tuple(self.experts))
        if not isinstance(self.rank, int) or self.rank <= 0:
            raise LoraError(f"LoRA rank must be a positive integer, got {self.rank!r}")
        if not (isinstance(self.alpha, (int, float)) and self.alpha > 0):
            raise LoraError(f"LoRA alpha must be positive, got {self.alpha!r}")
        bad = [t for t in self.attention if t not in ATTENTION_TARGETS]
        bad += [t for t in self.experts if t not in EXPERT_TARGETS]
        if bad:
            raise LoraError(f"unknown LoRA targets {bad}; attention targets are "
                            f"{ATTENTION_TARGETS}, expert targets {EXPERT_TARGETS}")
        if not self.attention and not self.experts:
            raise LoraError("LoRA needs at least one target")

    @property
    def scaling(self) -> float:
        return self.alpha / (math.sqrt(self.rank) if self.rslora else self.rank)


def _uniform(shape: tuple[int, ...], fan_in: int, seed: int, name: str) -> torch.Tensor:
    g = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(name.encode())) % 2**63)
    bound = 1.0 / math.sqrt(fan_in)
    return (torch.rand(shape, generator=g, dtype=torch.float32) * 2 - 1) * bound


class LoraPair(nn.Module):
    """A [.., r, in] and B [.., out, r] (a leading expert dimension for experts)."""

    def __init__(self, experts: int | None, rank: int, fan_in: int, fan_out: int,
                 scaling: float, *, seed: int, name: str, device=None):
        super().__init__()
        lead = () if experts is None else (experts,)
        self.scaling = scaling
        self.A = nn.Parameter(_uniform(lead + (rank, fan_in), fan_in, seed, name).to(device))
        self.B = nn.Parameter(torch.zeros(lead + (fan_out, rank), device=device))

    def forward(self, x: torch.Tensor, expert: int | None = None) -> torch.Tensor:
        """x [..., in] -> scaling * (x A^T) B^T [..., out] in x's dtype."""
        A, B = (self.A, self.B) if expert is None else (self.A[expert], self.B[expert])
        return F.linear(F.linear(x, A.to(x.dtype)), B.to(x.dtype)) * self.scaling

    def delta(self, expert: int | None = None) -> torch.Tensor:
        """scaling * B A in fp32: [out, in] (or [E, out, in] for all experts)."""
        if expert is not None:
            return self.scaling * (self.B[expert] @ self.A[expert])
        return self.scaling * (self.B @ self.A)


class PackedExpertLinear(torch.autograd.Function):
    """x [n, in] @ dequantize(blocks, scales)^T + bias, the weight rebuilt in the backward
    rather than saved; the packed weight itself is frozen (no gradient)."""

    @staticmethod
    def forward(ctx, x, blocks, scales, bias):
        ctx.save_for_backward(blocks, scales)
        ctx.bias_grad = bias is not None and bias.requires_grad
        return F.linear(x, mxfp4.dequantize(blocks, scales, x.dtype), bias)

    @staticmethod
    def backward(ctx, grad):
        blocks, scales = ctx.saved_tensors
        grad_x = grad @ mxfp4.dequantize(blocks, scales, grad.dtype) if ctx.needs_input_grad[0] \
            else None
        grad_bias = grad.sum(0) if ctx.bias_grad else None
        return grad_x, None, None, grad_bias


class LoraAttentionBlock(AttentionBlock):
    """An `AttentionBlock` whose projections add LoRA deltas (`lora.q/k/v` on qkv, `lora.o`)."""

    def project_qkv(self, h: torch.Tensor) -> torch.Tensor:
        base = super().project_qkv(h)
        parts = [(t, n) for t, n in zip("qkv", self.qkv_sizes)]
        if not any(t in self.lora for t, _ in parts):
            return base
        deltas = [self.lora[t](h) if t in self.lora else h.new_zeros(*h.shape[:-1], n)
                  for t, n in parts]
        return base + torch.cat(deltas, dim=-1)

    def project_out(self, attn: torch.Tensor) -> torch.Tensor:
        base = super().project_out(attn)
        return base + self.lora["o"](attn) if "o" in self.lora else base

    @property
    def qkv_sizes(self) -> tuple[int, int, int]:
        q, kv = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        return q, kv, kv


class LoraMLPBlock(MLPBlock):
    """An `MLPBlock` whose routed experts add per-expert LoRA deltas (`lora.mlp1`, `lora.mlp2`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        t = self.norm(x).reshape(-1, shape[-1])  # [N, H]
        logits = F.linear(t, self.gate.weight, self.gate.bias)
        ids, weights = ref.top_k_softmax(logits, self.top_k, t.dtype)  # [N, k]
        out = torch.zeros(t.shape, dtype=torch.float32, device=t.device)
        for e in torch.unique(ids).tolist():
            token, slot = torch.nonzero(ids == e, as_tuple=True)
            h = ref.swiglu(self.expert_linear(t[token], e, "mlp1"), self.limit, self.alpha)
            y = self.expert_linear(h, e, "mlp2")
            out.index_add_(0, token, y.float() * weights[token, slot, None].float())
        return x + out.to(t.dtype).view(shape)

    def expert_linear(self, x: torch.Tensor, e: int, which: str) -> torch.Tensor:
        """Expert e's `which` matrix (mlp1: [2I, H], mlp2: [H, I]) with its bias and adapter."""
        weight = getattr(self, which + "_weight")
        bias = getattr(self, which + "_bias")[e]
        if isinstance(weight, PackedMXFP4):
            y = PackedExpertLinear.apply(x, weight.blocks[e], weight.scales[e], bias)
        else:
            y = F.linear(x, weight[e], bias)
        return y + self.lora[which](x, e) if which in self.lora else y


def apply_lora(model: nn.Module, spec: LoraSpec, *, seed: int = 0) -> list[nn.Parameter]:
    """Freeze `model`, add adapters in place (see the module doc) and return the trainable
    parameters (adapters, plus the router when `spec.train_router`)."""
    if any(isinstance(m, (LoraAttentionBlock, LoraMLPBlock)) for m in model.modules()):
        raise LoraError("the model already has LoRA adapters")
    model.requires_grad_(False)
    c = model.config
    dev = model.device
    s = spec.scaling
    for n, block in enumerate(model.block):
        attn, mlp = block.attn, block.mlp
        attn.__class__, mlp.__class__ = LoraAttentionBlock, LoraMLPBlock
        shapes = {"q": (c.hidden_size, c.q_dim), "k": (c.hidden_size, c.kv_dim),
                  "v": (c.hidden_size, c.kv_dim), "o": (c.q_dim, c.hidden_size)}
        attn.lora = nn.ModuleDict({t: LoraPair(None, spec.rank, *shapes[t], s, seed=seed,
                                               name=f"block.{n}.attn.lora.{t}", device=dev)
                                   for t in spec.attention})
        shapes = {"mlp1": (c.hidden_size, 2 * c.intermediate_size),
                  "mlp2": (c.intermediate_size, c.hidden_size)}
        mlp.lora = nn.ModuleDict({t: LoraPair(c.num_experts, spec.rank, *shapes[t], s,
                                              seed=seed, name=f"block.{n}.mlp.lora.{t}",
                                              device=dev)
                                  for t in spec.experts})
        if spec.train_router:
            mlp.gate.requires_grad_(True)
    model.lora_spec = spec
    return [p for p in model.parameters() if p.requires_grad]


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters (and a trained router) by their gptoss names, e.g. `block.0.attn.lora.q.A`."""
    spec = lora_spec_of(model)
    keep = {n: p for n, p in model.named_parameters() if ".lora." in n}
    if spec.train_router:
        keep.update({n: p for n, p in model.named_parameters() if ".mlp.gate." in n})
    return {n: p.detach() for n, p in keep.items()}


def lora_spec_of(model: nn.Module) -> LoraSpec:
    spec = getattr(model, "lora_spec", None)
    if spec is None:
        raise LoraError("the model has no LoRA adapters (call apply_lora first)")
    return spec


def load_adapter_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy adapter tensors (gptoss names) into a model prepared by `apply_lora`."""
    params = dict(model.named_parameters())
    for name, tensor in state.items():
        if name not in params:
            raise LoraError(f"adapter tensor {name!r} has no place in the model")
        if tuple(params[name].shape) != tuple(tensor.shape):
            raise LoraError(f"adapter tensor {name!r} is {list(tensor.shape)}, the model expects "
                            f"{list(params[name].shape)}")
        with torch.no_grad():
            params[name].copy_(tensor)


@torch.no_grad()
def adapter_delta(spec: LoraSpec, state: dict[str, torch.Tensor], name: str, config
                  ) -> torch.Tensor | None:
    """The fp32 update `scaling * B A` of canonical tensor `name`, or None when no adapter
    touches it: `block.n.attn.qkv.weight` [Q+2K, H] (zero rows for an unadapted q, k or v),
    `block.n.attn.out.weight` [H, Q], `block.n.mlp.mlp{1,2}_weight` [E, out, in]."""
    parts = name.split(".")
    if parts[0] != "block":
        return None
    n, s = parts[1], spec.scaling

    def pair(area: str, t: str):
        a, b = (f"block.{n}.{area}.lora.{t}.{x}" for x in "AB")
        return (state[a].float(), state[b].float()) if a in state else None

    if name.endswith("attn.qkv.weight"):
        got = {t: pair("attn", t) for t in "qkv"}
        if not any(got.values()):
            return None
        sizes = (config.q_dim, config.kv_dim, config.kv_dim)
        return torch.cat([s * (ab[1] @ ab[0]) if ab else torch.zeros(size, config.hidden_size)
                          for ab, size in zip(got.values(), sizes)])
    if name.endswith("attn.out.weight"):
        ab = pair("attn", "o")
        return None if ab is None else s * (ab[1] @ ab[0])
    for t in EXPERT_TARGETS:
        if name.endswith(f"mlp.{t}_weight"):
            ab = pair("mlp", t)
            return None if ab is None else s * torch.bmm(ab[1], ab[0])
    return None
