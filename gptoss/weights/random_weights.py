"""Random canonical weights that make a numerically sane gpt-oss model.

Every tensor has its own generator seeded from (seed, tensor name), so a tensor does not depend on
which others were generated before it. Scales are chosen so that activations stay O(1) at any
width and routing, attention and the SwiGLU clamp all do something non-trivial:
  matrices        N(0, 1/fan_in)   (q/k/v, out, router, unembedding: outputs ~ unit variance)
  mlp1 (experts)  N(0, 2.5²/H)     (gate/linear pre-activations ~ N(0, 2.5²): ~0.5% exceed the
                                     swiglu limit 7, so the clamp is exercised)
  mlp2 (experts)  N(0, 1/I)
  embedding       N(0, 1)
  biases          N(0, 0.1²)       norm scales 1 + N(0, 0.1²)      sinks N(0, 1)
Expert matrices are drawn in fp32 one expert at a time and quantized with `mxfp4.quantize`, so
blocks and scales are realistic; everything else is stored in bf16.
"""
from __future__ import annotations

import math
import zlib
from collections.abc import Iterator

import torch

from ..config import ModelConfig
from . import mxfp4
from .layouts import canonical_specs

_CHUNK = 1 << 22  # values drawn per call: 16 MiB of fp32


def _generator(seed: int, name: str) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 0x9E3779B1 + zlib.crc32(name.encode())) % 2**63)


def _normal(shape: tuple[int, ...], std: float, mean: float, gen: torch.Generator,
            dtype: torch.dtype) -> torch.Tensor:
    """N(mean, std²) in `dtype`, drawn in fp32 row chunks (never a full fp32 copy)."""
    out = torch.empty(shape, dtype=dtype)
    rows = out.reshape(shape[0], -1)
    step = max(1, _CHUNK // max(rows.shape[1], 1))
    for r0 in range(0, rows.shape[0], step):
        r1 = min(r0 + step, rows.shape[0])
        rows[r0:r1] = torch.randn(r1 - r0, rows.shape[1], generator=gen) * std + mean
    return out


def _std(name: str, config: ModelConfig) -> tuple[float, float]:
    """(std, mean) of a canonical float tensor."""
    H = config.hidden_size
    if name.endswith(("norm.scale",)):
        return 0.1, 1.0
    if name.endswith(("bias",)):
        return 0.1, 0.0
    if name.endswith("sinks") or name == "embedding.weight":
        return 1.0, 0.0
    if name.endswith("attn.out.weight"):
        return 1 / math.sqrt(config.q_dim), 0.0
    return 1 / math.sqrt(H), 0.0  # qkv, router, unembedding


def _experts(name: str, shape: tuple[int, ...], config: ModelConfig, seed: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed random experts: blocks [E, rows, cols/32, 16] and scales [E, rows, cols/32]."""
    experts, rows, groups = shape[:3]
    std = (2.5 / math.sqrt(config.hidden_size) if "mlp1" in name
           else 1 / math.sqrt(config.intermediate_size))
    gen = _generator(seed, name)
    blocks = torch.empty(shape, dtype=torch.uint8)
    scales = torch.empty(shape[:3], dtype=torch.uint8)
    for e in range(experts):
        dense = _normal((rows, groups * 32), std, 0.0, gen, torch.float32)
        blocks[e], scales[e] = mxfp4.quantize(dense)
    return blocks, scales


def random_canonical(config: ModelConfig, seed: int) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (canonical name, tensor) for every tensor, in checkpoint order, experts packed."""
    pending_scales = None
    for spec in canonical_specs(config, packed=True):
        if spec.name.endswith(".blocks"):
            blocks, pending_scales = _experts(spec.name.removesuffix(".blocks"), spec.shape,
                                              config, seed)
            yield spec.name, blocks
        elif spec.name.endswith(".scales"):
            yield spec.name, pending_scales
            pending_scales = None
        else:
            std, mean = _std(spec.name, config)
            yield spec.name, _normal(spec.shape, std, mean, _generator(seed, spec.name), spec.dtype)
