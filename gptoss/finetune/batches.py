"""Data order, micro-batches and the masked next-token loss.

Order: epoch k visits the examples in `randperm(n)` drawn from a generator seeded with
`seed + k`, so the order depends only on (seed, epoch) and a resumed run sees the same batches.
One optimizer step takes `batch_size * grad_accum * world_size` examples in that order (the last
step of an epoch takes what is left), split into micro-batches of `batch_size`; rank r of
`world_size` takes micro-batches r, r + world_size, ...
Micro-batches are padded on the right; padding has position -1 (never attended to, see the
cache contract in docs/architecture.md) and no loss.

Loss: the sum over the step's learned tokens of -log p(token | prefix), divided by the number of
learned tokens in the whole step (all micro-batches, all ranks): gradient accumulation and data
parallelism then give the gradient of one big batch. Logits are computed only at the positions
whose next token is learned, a chunk at a time under activation checkpointing, so the [T, V]
logits of a long sequence are never held.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .data import Example

LOSS_CHUNK = 1024  # logit rows per chunk


@dataclass(frozen=True)
class MicroBatch:
    ids: torch.Tensor  # [B, T] long (padding 0)
    positions: torch.Tensor  # [B, T] long (padding -1)
    targets: torch.Tensor  # [B, T] bool: the token at t is learned (t >= 1)
    tokens: int  # real tokens (not padding)

    @property
    def target_count(self) -> int:
        return int(self.targets.sum())


def collate(examples: Sequence[Example]) -> MicroBatch:
    T = max(len(e.tokens) for e in examples)
    ids = torch.zeros(len(examples), T, dtype=torch.long)
    positions = torch.full((len(examples), T), -1, dtype=torch.long)
    targets = torch.zeros(len(examples), T, dtype=torch.bool)
    for b, e in enumerate(examples):
        n = len(e.tokens)
        ids[b, :n] = torch.tensor(e.tokens)
        positions[b, :n] = torch.arange(n)
        targets[b, 1:n] = torch.tensor(e.mask[1:], dtype=torch.bool)
    return MicroBatch(ids, positions, targets, sum(len(e.tokens) for e in examples))


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(seed + epoch)
    return torch.randperm(n, generator=g).tolist()


def steps_per_epoch(n: int, per_step: int) -> int:
    return math.ceil(n / per_step)


def step_examples(examples: Sequence[Example], *, seed: int, step: int, per_step: int
                  ) -> list[Example]:
    """The examples of global optimizer step `step` (0-based) in the fixed order."""
    per_epoch = steps_per_epoch(len(examples), per_step)
    epoch, index = divmod(step, per_epoch)
    order = epoch_order(len(examples), seed, epoch)
    return [examples[i] for i in order[index * per_step:(index + 1) * per_step]]


def micro_batches(examples: Sequence[Example], batch_size: int, rank: int = 0,
                  world_size: int = 1) -> list[MicroBatch]:
    chunks = [examples[i:i + batch_size] for i in range(0, len(examples), batch_size)]
    return [collate(c) for c in chunks[rank::world_size]]


def count_targets(examples: Sequence[Example]) -> int:
    return sum(e.target_count for e in examples)


class LossModel(nn.Module):
    """`forward(ids, positions, targets) -> loss sum` around a `Transformer` (`.model`): the
    unit that training (and FSDP, which shards at `forward` boundaries) calls."""

    def __init__(self, model, *, checkpointing: bool = True):
        super().__init__()
        self.model = model
        self.checkpointing = checkpointing

    def forward(self, ids: torch.Tensor, positions: torch.Tensor, targets: torch.Tensor
                ) -> torch.Tensor:
        """Sum over the learned tokens (`targets` [B, T]) of the cross-entropy (fp32 scalar)."""
        m = self.model
        x = m.embedding(ids.clamp(0, m.config.vocab_size - 1))
        cos_sin = m.rotary.cos_sin(positions)
        for block in m.block:
            if self.checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, positions, cos_sin, use_reentrant=False)
            else:
                x = block(x, positions, cos_sin)
        hidden = m.norm(x)
        select = targets[:, 1:]  # position t predicts token t+1
        h = hidden[:, :-1][select]  # [n, H]
        labels = ids[:, 1:][select]
        total = hidden.new_zeros((), dtype=torch.float32)
        for r0 in range(0, h.shape[0], LOSS_CHUNK):
            args = (h[r0:r0 + LOSS_CHUNK], m.unembedding.weight, labels[r0:r0 + LOSS_CHUNK])
            if torch.is_grad_enabled():
                total = total + checkpoint(_chunk_loss, *args, use_reentrant=False)
            else:
                total = total + _chunk_loss(*args)
        return total


def _chunk_loss(h: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = F.linear(h, weight.to(h.dtype)).float()
    return F.cross_entropy(logits, labels, reduction="sum")
