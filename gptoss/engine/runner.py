"""Runs a scheduled step: model forward over the chunks, then the sampler.

Chunks of similar length share a forward pass as rows of one [B, T] batch (padding positions are
-1); a long prefill chunk and single-token decodes run as separate passes, so that padding never
multiplies the work (the model computes padded tokens too). Logits are computed only for the
last token of each chunk that samples (the unembedding is the largest matrix of the model).
Rows of different LoRA adapters (and of the base model) share a pass: each row adds its own
adapter's deltas (engine/lora.py).
"""
from __future__ import annotations

from typing import Sequence

import torch

from .kv_cache import PagedKVCache
from .lora import LoraAdapters
from .sampler import Sampler, SamplerOutput
from .scheduler import ScheduledChunk, SchedulerOutput

# a group's padded size may exceed its real token count by this factor
MAX_PADDING = 1.25


def group_chunks(chunks: Sequence[ScheduledChunk]) -> list[list[ScheduledChunk]]:
    """Greedy grouping by length (longest first) while padding stays within MAX_PADDING."""
    groups: list[list[ScheduledChunk]] = []
    for chunk in sorted(chunks, key=lambda c: -c.length):
        if groups:
            group = groups[-1]
            padded = (len(group) + 1) * group[0].length
            real = sum(c.length for c in group) + chunk.length
            if padded <= MAX_PADDING * real:
                group.append(chunk)
                continue
        groups.append([chunk])
    return groups


def _for_sampler(logits: torch.Tensor, requests) -> torch.Tensor:
    """Plain greedy rows (no logits processor, penalty or logprobs) take their max where the
    logits are (on a GPU: N token ids cross to the host instead of N x V logits); anything else
    is sampled from host logits."""
    plain = all(r.params.greedy and r.logits_processor is None and not r.params.penalized
                and r.params.logprobs is None for r in requests)
    return logits if plain else logits.cpu()


class ModelRunner:
    """`run(step) -> SamplerOutput` with one token per sampling chunk, in chunk order."""

    def __init__(self, model: torch.nn.Module, cache: PagedKVCache, sampler: Sampler | None = None,
                 adapters: LoraAdapters | None = None, graphs=None):
        self.model, self.cache = model, cache
        self.sampler = sampler or Sampler()
        self.adapters = adapters or LoraAdapters()
        self.device = next(model.parameters()).device
        self.graphs = graphs  # cuda_graphs.DecodeGraphs replaying all-decode steps, or None

    @torch.inference_mode()
    def run(self, step: SchedulerOutput) -> SamplerOutput:
        if self.graphs is not None and self._replayable(step.chunks):
            rows = [(c.request.request_id, c.start, 1) for c in step.chunks]
            tokens = [c.request.all_token_ids[c.start] for c in step.chunks]
            requests = [c.request for c in step.chunks]
            return self.sampler(_for_sampler(self.graphs.run(rows, tokens), requests), requests)
        hidden: dict[int, torch.Tensor] = {}  # id(chunk) -> final hidden state [H] of its last token
        for group in group_chunks(step.chunks):
            h = self._forward(group)
            for b, chunk in enumerate(group):
                if chunk.samples:
                    hidden[id(chunk)] = h[b, chunk.length - 1]
        sampling = [c for c in step.chunks if c.samples]
        if not sampling:
            return SamplerOutput([], [])
        logits = self.model.logits(torch.stack([hidden[id(c)] for c in sampling]))  # [N, V]
        requests = [c.request for c in sampling]
        return self.sampler(_for_sampler(logits, requests), requests)

    def _replayable(self, chunks: Sequence[ScheduledChunk]) -> bool:
        """Every chunk decodes one token of the base model (no LoRA adapter: the graphs hold
        none) and samples it, and a graph holds that many rows."""
        return (bool(chunks) and all(c.length == 1 and c.samples and c.request.params.lora is None
                                     for c in chunks)
                and self.graphs.handles(len(chunks)))

    def _forward(self, group: list[ScheduledChunk]) -> torch.Tensor:
        """One forward pass over a group of chunks -> final hidden states [B, T, H]."""
        B, T = len(group), group[0].length
        ids = torch.zeros(B, T, dtype=torch.long)
        pos = torch.full((B, T), -1, dtype=torch.long)
        rows = []
        for b, chunk in enumerate(group):
            tokens = chunk.request.all_token_ids[chunk.start:chunk.start + chunk.length]
            ids[b, :chunk.length] = torch.tensor(tokens)
            pos[b, :chunk.length] = torch.arange(chunk.start, chunk.start + chunk.length)
            rows.append((chunk.request.request_id, chunk.start, chunk.length))
        view = self.cache.view(rows, T)
        lora = self.adapters.batch([chunk.request.params.lora for chunk in group])
        return self.model.hidden_states(ids.to(self.device), pos.to(self.device), view, lora)
