"""Whether a model fits a device, stated before anything is loaded.

A plan adds up, in bytes:
- weights: every canonical tensor at its held dtype (experts packed MXFP4: 17 bytes per 32
  values, or dense in `dtype`), from `weights/layouts.canonical_specs`;
- KV cache: what `engine.PagedKVCache` allocates for `EngineConfig(kv_cache_tokens =
  context * batch, max_num_seqs = batch)`: every full-attention layer holds all those positions,
  every sliding layer a few blocks more than its window per sequence;
- workspace: activations of one step of `max_num_batched_tokens` tokens (q/k/v, the routed
  experts' intermediates, the sampled rows' fp32 logits) plus a fixed reserve for the CUDA
  context, cuBLAS workspaces, CUDA graphs and the allocator's slack.
`check` raises MemoryPlanError naming the numbers when the total exceeds the device.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import ModelConfig
from .engine.config import EngineConfig
from .weights.layouts import canonical_specs

GiB = 2**30
RESERVE = 1 * GiB  # CUDA context, cuBLAS workspace, graph pools, allocator slack


class MemoryPlanError(ValueError):
    """The model, its KV cache and workspace do not fit the device (the message has the sums)."""


@dataclass(frozen=True)
class MemoryPlan:
    weights: int
    kv_cache: int
    workspace: int
    context: int
    batch: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.workspace

    def fits(self, capacity: int) -> bool:
        return self.total <= capacity

    def describe(self, capacity: int | None = None) -> str:
        rows = [("weights", self.weights),
                (f"KV cache ({self.context} tokens x {self.batch})", self.kv_cache),
                ("workspace", self.workspace), ("total", self.total)]
        if capacity is not None:
            rows.append(("device", capacity))
        lines = [f"{name:<34} {size / GiB:8.2f} GiB" for name, size in rows]
        if capacity is not None:
            verdict = "fits" if self.fits(capacity) else "does NOT fit"
            lines.append(f"{verdict}: {(capacity - self.total) / GiB:+.2f} GiB to spare")
        return "\n".join(lines)


def weight_bytes(config: ModelConfig, *, packed: bool = True,
                 dtype: torch.dtype = torch.bfloat16) -> int:
    return sum(spec.nbytes for spec in canonical_specs(config, packed=packed, dtype=dtype))


def engine_config_for(context: int, batch: int, **overrides) -> EngineConfig:
    """The engine settings a plan for `batch` sequences of `context` tokens assumes."""
    return EngineConfig(kv_cache_tokens=context * batch, max_num_seqs=batch, **overrides)


def kv_cache_bytes(config: ModelConfig, engine: EngineConfig,
                   dtype: torch.dtype = torch.bfloat16) -> int:
    """Bytes of the paged cache `engine` sizes: k and v for each layer's group of blocks."""
    per_position = 2 * config.num_kv_heads * config.head_dim * dtype.itemsize
    windows = [config.window(i) for i in range(config.num_layers)]
    sliding = engine.sliding_blocks(max(windows))
    blocks = sum(sliding if w else engine.full_blocks() for w in windows)
    return blocks * engine.block_size * per_position


def workspace_bytes(config: ModelConfig, engine: EngineConfig) -> int:
    c, T = config, engine.max_num_batched_tokens
    per_token = (2 * (c.hidden_size * 4 + c.qkv_dim + c.q_dim)           # bf16 activations
                 + c.experts_per_token * (2 * c.intermediate_size + 4 * c.hidden_size))
    logits = engine.max_num_seqs * c.vocab_size * (4 + 2)                 # fp32 + bf16 rows
    return RESERVE + T * per_token + logits


def plan(config: ModelConfig, *, context: int, batch: int = 1, packed: bool = True,
         dtype: torch.dtype = torch.bfloat16, engine: EngineConfig | None = None) -> MemoryPlan:
    """The plan for `batch` sequences of `context` tokens (context 0: weights and workspace)."""
    if context < 0 or batch <= 0:
        raise MemoryPlanError(f"need context >= 0 and batch >= 1, got {context} and {batch}")
    engine = engine or (engine_config_for(context, batch) if context else
                        EngineConfig(max_num_seqs=batch))
    kv = kv_cache_bytes(config, engine, dtype) if context else 0
    return MemoryPlan(weight_bytes(config, packed=packed, dtype=dtype), kv,
                      workspace_bytes(config, engine), context, batch)


def device_capacity(device: str | torch.device) -> int:
    """Free bytes on a CUDA device now (what a load can still allocate)."""
    device = torch.device(device)
    if device.type != "cuda":
        raise MemoryPlanError(f"a memory plan needs a CUDA device, got {device}")
    if not torch.cuda.is_available():
        raise MemoryPlanError(f"{device}: CUDA is not available in this PyTorch build or machine")
    free, _ = torch.cuda.mem_get_info(device)
    return free


def check(memory: MemoryPlan, capacity: int, what: str) -> None:
    if not memory.fits(capacity):
        raise MemoryPlanError(
            f"{what} does not fit: needs {memory.total / GiB:.2f} GiB (weights "
            f"{memory.weights / GiB:.2f} + KV cache {memory.kv_cache / GiB:.2f} + workspace "
            f"{memory.workspace / GiB:.2f}), the device has {capacity / GiB:.2f} GiB free")


def check_cache(config: ModelConfig, engine: EngineConfig, dtype: torch.dtype,
                device: str | torch.device) -> None:
    """Before the engine allocates its KV cache on a CUDA device: cache + workspace must fit."""
    need = MemoryPlan(0, kv_cache_bytes(config, engine, dtype), workspace_bytes(config, engine),
                      engine.kv_cache_tokens, engine.max_num_seqs)
    check(need, device_capacity(device), f"the KV cache for {engine.kv_cache_tokens} tokens "
                                         f"(kv_cache_tokens) on {device}")
