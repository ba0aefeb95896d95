"""The three published checkpoint layouts, as rules between their tensors and canonical names.

Canonical names (docs/architecture.md, "Canonical parameters") are the original layout's names;
experts are either packed (`mlp1_weight.blocks` [E, 2I, H/32, 16] + `.scales` [E, 2I, H/32],
uint8) or dense (`mlp1_weight` [E, 2I, H]). Each `Rule` says which layout tensors make one
canonical tensor and how:
  same       one tensor, renamed;
  concat     HF q/k/v projections -> fused qkv rows (q, then k, then v);
  transpose  HF bf16 experts: `gate_up_proj` [E, H, 2I] -> `mlp1_weight` [E, 2I, H],
             `down_proj` [E, I, H] -> `mlp2_weight` [E, H, I].
The gate/linear interleaving of mlp1 rows (even = gate, odd = linear) is the same in all layouts.
`join` builds the canonical tensor (loading), `split` takes it apart again (writing); both are
exact, so conversions between layouts preserve every bit.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import ModelConfig

HF_MXFP4, HF_BF16, ORIGINAL = "hf-mxfp4", "hf-bf16", "original"
LAYOUTS = (HF_MXFP4, HF_BF16, ORIGINAL)
LAYOUT_ALIASES = {"hf": HF_MXFP4, "mxfp4": HF_MXFP4, "bf16": HF_BF16}
EXPERT_MATRICES = ("mlp1_weight", "mlp2_weight")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n * self.dtype.itemsize


@dataclass(frozen=True)
class Rule:
    canonical: str
    sources: tuple[str, ...]
    kind: str = "same"  # "same" | "concat" | "transpose"
    sizes: tuple[int, ...] = ()  # rows per source for "concat"

    def join(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        if self.kind == "concat":
            if len({t.dtype for t in tensors}) != 1:
                raise ValueError(f"{', '.join(self.sources)} have different dtypes "
                                 f"{[str(t.dtype) for t in tensors]}")
            return torch.cat(tensors, dim=0)
        if self.kind == "transpose":
            return tensors[0].transpose(1, 2).contiguous()
        return tensors[0]

    def split(self, tensor: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        if self.kind == "concat":
            parts = [p.contiguous() for p in tensor.split(list(self.sizes), dim=0)]
            return list(zip(self.sources, parts))
        if self.kind == "transpose":
            return [(self.sources[0], tensor.transpose(1, 2).contiguous())]
        return [(self.sources[0], tensor)]


def normalize_layout(name: str) -> str:
    layout = LAYOUT_ALIASES.get(name, name)
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {name!r}; choose one of {', '.join(LAYOUTS)}")
    return layout


def is_packed(layout: str) -> bool:
    """Whether a layout stores experts as MXFP4 blocks and scales (else dense bf16)."""
    return layout != HF_BF16


def is_expert_matrix(name: str) -> bool:
    return name.rsplit(".", 1)[-1] in EXPERT_MATRICES or name.endswith((".blocks", ".scales"))


def canonical_specs(config: ModelConfig, *, packed: bool,
                    dtype: torch.dtype = torch.bfloat16) -> list[TensorSpec]:
    """Every canonical tensor in checkpoint order, with its shape; floats in `dtype`."""
    c = config
    E, H, I, V = c.num_experts, c.hidden_size, c.intermediate_size, c.vocab_size
    specs = [TensorSpec("embedding.weight", (V, H), dtype)]
    for n in range(c.num_layers):
        p = f"block.{n}."
        specs += [TensorSpec(p + "attn.norm.scale", (H,), dtype),
                  TensorSpec(p + "attn.qkv.weight", (c.qkv_dim, H), dtype),
                  TensorSpec(p + "attn.qkv.bias", (c.qkv_dim,), dtype),
                  TensorSpec(p + "attn.sinks", (c.num_heads,), dtype),
                  TensorSpec(p + "attn.out.weight", (H, c.q_dim), dtype),
                  TensorSpec(p + "attn.out.bias", (H,), dtype),
                  TensorSpec(p + "mlp.norm.scale", (H,), dtype),
                  TensorSpec(p + "mlp.gate.weight", (E, H), dtype),
                  TensorSpec(p + "mlp.gate.bias", (E,), dtype)]
        for matrix, bias, rows, cols in (("mlp1_weight", "mlp1_bias", 2 * I, H),
                                         ("mlp2_weight", "mlp2_bias", H, I)):
            if packed:
                specs += [TensorSpec(f"{p}mlp.{matrix}.blocks", (E, rows, cols // 32, 16), torch.uint8),
                          TensorSpec(f"{p}mlp.{matrix}.scales", (E, rows, cols // 32), torch.uint8)]
            else:
                specs.append(TensorSpec(f"{p}mlp.{matrix}", (E, rows, cols), dtype))
            specs.append(TensorSpec(f"{p}mlp.{bias}", (E, rows), dtype))
    specs += [TensorSpec("norm.scale", (H,), dtype), TensorSpec("unembedding.weight", (V, H), dtype)]
    return specs


_HF_LAYER = {  # canonical suffix -> HF suffix, one to one
    "attn.norm.scale": "input_layernorm.weight",
    "attn.sinks": "self_attn.sinks",
    "attn.out.weight": "self_attn.o_proj.weight",
    "attn.out.bias": "self_attn.o_proj.bias",
    "mlp.norm.scale": "post_attention_layernorm.weight",
    "mlp.gate.weight": "mlp.router.weight",
    "mlp.gate.bias": "mlp.router.bias",
    "mlp.mlp1_weight.blocks": "mlp.experts.gate_up_proj_blocks",
    "mlp.mlp1_weight.scales": "mlp.experts.gate_up_proj_scales",
    "mlp.mlp1_bias": "mlp.experts.gate_up_proj_bias",
    "mlp.mlp2_weight.blocks": "mlp.experts.down_proj_blocks",
    "mlp.mlp2_weight.scales": "mlp.experts.down_proj_scales",
    "mlp.mlp2_bias": "mlp.experts.down_proj_bias",
}
_HF_GLOBAL = {"embedding.weight": "model.embed_tokens.weight", "norm.scale": "model.norm.weight",
              "unembedding.weight": "lm_head.weight"}


def _hf_rule(name: str, config: ModelConfig) -> Rule:
    if name in _HF_GLOBAL:
        return Rule(name, (_HF_GLOBAL[name],))
    _, n, suffix = name.split(".", 2)
    hf = f"model.layers.{n}."
    if suffix in ("attn.qkv.weight", "attn.qkv.bias"):
        kind = suffix.rsplit(".", 1)[1]
        return Rule(name, tuple(f"{hf}self_attn.{x}_proj.{kind}" for x in "qkv"), "concat",
                    (config.q_dim, config.kv_dim, config.kv_dim))
    if suffix == "mlp.mlp1_weight":
        return Rule(name, (hf + "mlp.experts.gate_up_proj",), "transpose")
    if suffix == "mlp.mlp2_weight":
        return Rule(name, (hf + "mlp.experts.down_proj",), "transpose")
    return Rule(name, (hf + _HF_LAYER[suffix],))


def rules(layout: str, config: ModelConfig) -> list[Rule]:
    """The rules of `layout` in canonical checkpoint order."""
    layout = normalize_layout(layout)
    names = [s.name for s in canonical_specs(config, packed=is_packed(layout))]
    if layout == ORIGINAL:
        return [Rule(name, (name,)) for name in names]
    return [_hf_rule(name, config) for name in names]


def layout_specs(layout: str, config: ModelConfig, canonical: list[TensorSpec]) -> list[TensorSpec]:
    """The layout's tensors (names, shapes, dtypes) for the canonical `canonical` specs, in order."""
    by_name = {r.canonical: r for r in rules(layout, config)}
    out = []
    for spec in canonical:
        meta = torch.empty(spec.shape, dtype=spec.dtype, device="meta")
        out += [TensorSpec(n, tuple(t.shape), t.dtype) for n, t in by_name[spec.name].split(meta)]
    return out
