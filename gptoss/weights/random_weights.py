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
Values come from a counter-based normal stream per tensor, keyed by (seed, tensor name): value
i depends only on (key, i), so a tensor does not depend on which others were generated before it,
nor on thread counts. The stream (splitmix64 uniforms through a piecewise-linear inverse normal
CDF, `normal_stream`) is computed by the native kernels when they are loaded and by the same
arithmetic in torch otherwise, with identical results. It is N(0, 1) up to the interpolation,
truncated at about +-3.7 (the outermost quantiles of the table). Expert matrices are scaled and
quantized with the rule of `mxfp4.quantize` block by block (natively, without an fp32 copy), so
blocks and scales are realistic; everything else is stored in bf16.
"""
from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Iterator

import torch

from ..config import ModelConfig
from ..kernels import mxfp4
from ..kernels.cpu import library as native
from .layouts import canonical_specs

_CHUNK = 1 << 22  # values per chunk: 16 MiB of fp32
_TABLE_BITS = 12  # 2**12 intervals between quantiles (as native/random.cpp)
_GOLDEN = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1


@functools.lru_cache(maxsize=None)
def normal_table() -> torch.Tensor:
    """fp32 [2**12 + 1]: standard normal quantiles at (j + 0.5) / (2**12 + 1)."""
    n = (1 << _TABLE_BITS) + 1
    p = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    return torch.special.ndtri(p).to(torch.float32)


def _key(seed: int, name: str) -> int:
    return (seed * 0x9E3779B1 + zlib.crc32(name.encode())) % 2**63


def _signed(c: int) -> int:
    return c - (1 << 64) if c >= 1 << 63 else c


def _shr(z: torch.Tensor, k: int) -> torch.Tensor:  # logical shift of int64 bit patterns
    return (z >> k) & ((1 << (64 - k)) - 1)


def normal_stream(key: int, offset: int, n: int) -> torch.Tensor:
    """Values offset .. offset+n-1 of the normal stream `key` (fp32 [n]): the native kernel's
    result when loaded, else the same arithmetic in torch (int64 ops wrap like uint64)."""
    if native.native() is not None:
        return native.random_normal(key, offset, n, normal_table())
    i = torch.arange(offset, offset + n, dtype=torch.int64)
    z = torch.tensor(_signed(key), dtype=torch.int64) + (i // 2 + 1) * _signed(_GOLDEN)
    z = (z ^ _shr(z, 30)) * _signed(0xBF58476D1CE4E5B9)
    z = (z ^ _shr(z, 27)) * _signed(0x94D049BB133111EB)
    z = z ^ _shr(z, 31)
    u = torch.where(i % 2 == 1, _shr(z, 32), z & 0xFFFFFFFF)
    j = u >> (32 - _TABLE_BITS)
    frac = (u & ((1 << (32 - _TABLE_BITS)) - 1)).to(torch.float32) * 2.0 ** -(32 - _TABLE_BITS)
    table = normal_table()
    lo, hi = table[j], table[j + 1]
    return lo + (hi - lo) * frac


def _normal(shape: tuple[int, ...], std: float, mean: float, key: int,
            dtype: torch.dtype) -> torch.Tensor:
    """N(mean, std²) in `dtype`, drawn in fp32 chunks (never a full fp32 copy)."""
    out = torch.empty(shape, dtype=dtype)
    flat = out.view(-1)
    for i0 in range(0, flat.numel(), _CHUNK):
        n = min(_CHUNK, flat.numel() - i0)
        flat[i0:i0 + n] = normal_stream(key, i0, n) * std + mean
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
    cols = groups * 32
    std = (2.5 / math.sqrt(config.hidden_size) if "mlp1" in name
           else 1 / math.sqrt(config.intermediate_size))
    key = _key(seed, name)
    blocks = torch.empty(shape, dtype=torch.uint8)
    scales = torch.empty(shape[:3], dtype=torch.uint8)
    for e in range(experts):
        offset = e * rows * cols
        if native.native() is not None:
            blocks[e], scales[e] = native.random_mxfp4(key, offset, rows, cols, std, normal_table())
        else:
            values = normal_stream(key, offset, rows * cols).view(rows, cols) * std
            blocks[e], scales[e] = mxfp4.quantize(values)
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
            yield spec.name, _normal(spec.shape, std, mean, _key(seed, spec.name), spec.dtype)
