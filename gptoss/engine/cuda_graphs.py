"""Decode steps replayed from CUDA graphs, one per padded batch size.

A step where every row decodes one token is captured once per size in `BATCH_SIZES` (up to the
engine's max_num_seqs) and replayed with new inputs written into the captured buffers: token
ids, positions and the paged cache's index tensors (`StaticCacheView`). Rows beyond the real
batch are padding: position -1 (attention gives them nothing), their k/v written to a scratch
block reserved in each cache group. The graphs run the Triton kernels only (the reference MoE
asks the host which experts were routed, a synchronisation a graph cannot hold), so
`DecodeGraphs.supported` says whether a model qualifies. Per step the host builds the index
tensors (vectorised, from the block tables) into pinned buffers and copies them in one
non-blocking transfer per buffer; the launch of the whole forward is one graph replay.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..kernels import dispatch
from .kv_cache import CacheView, PagedKVCache

BATCH_SIZES = (1, 2, 4, 8, 16, 32, 48, 64, 96, 128)


def padded_batch(rows: int, sizes: Sequence[int]) -> int | None:
    """The smallest captured size holding `rows` rows, or None when none does."""
    return next((s for s in sorted(sizes) if s >= rows), None)


class StaticCacheView:
    """Fixed buffers binding the paged cache to decode steps of up to `batch` rows of sequences
    up to `max_len` positions; `rows(n)` gives the cache contract over the first n rows.

    Per group g: dst [batch] (slot each row's new k/v goes to), gather/key_pos [batch, S_g]
    (slots and positions of the keys a row may see, -1 = none), lengths [batch] (keys to read).
    Row b's new k/v is row b of the step's batch (the `src` map is the identity)."""

    def __init__(self, cache: PagedKVCache, batch: int, max_len: int):
        self.cache, self.batch = cache, batch
        bs, dev = cache.block_size, cache.device
        self.scratch = [g.pool.allocate() * bs for g in cache.groups]  # padding rows write here
        self.widths = [((-(-g.window // bs) + 1) if g.window else -(-max_len // bs)) * bs
                       for g in cache.groups]
        self.src = torch.arange(batch, device=dev)
        self.used = [0] * len(self.widths)  # columns of gather/key_pos the last fill wrote
        # per group: dst, gather, key_pos, lengths (on the device, and pinned host copies)
        self.device_buffers: list[list[torch.Tensor]] = []
        self.host_buffers: list[list[torch.Tensor]] = []
        for g, width in enumerate(self.widths):
            host = [torch.full((batch,), self.scratch[g], dtype=torch.long),
                    torch.zeros(batch, width, dtype=torch.long),
                    torch.full((batch, width), -1, dtype=torch.long),
                    torch.zeros(batch, dtype=torch.int32)]
            if dev.type == "cuda":
                host = [h.pin_memory() for h in host]
            self.host_buffers.append(host)
            self.device_buffers.append([h.to(dev) for h in host])

    def fill(self, rows: Sequence[tuple[str, int, int]]) -> None:
        """Bind the buffers to decode rows (seq_id, position, 1); the rest become padding."""
        n = len(rows)
        if n > self.batch or any(length != 1 for _, _, length in rows):
            raise ValueError(f"a static view takes up to {self.batch} one-token rows, got "
                             f"{[length for _, _, length in rows]}")
        index = CacheView.__new__(CacheView)  # only its host-side index builder is used
        index.cache = self.cache
        for g, width in enumerate(self.widths):
            dst, _, gather, key_pos = CacheView._index(index, g, rows, 1)  # host tensors
            w = gather.shape[1]
            if w > width:
                raise ValueError(f"a row needs {w} keys, more than the {width} the graphs were "
                                 "captured for")
            h_dst, h_gather, h_pos, h_len = self.host_buffers[g]
            h_dst.fill_(self.scratch[g])
            h_dst[:n] = dst
            h_len.zero_()
            h_len[:n] = (key_pos >= 0).sum(1)  # a row's live keys are a prefix of its list
            # only the columns this step or the previous one used are rewritten and copied
            cols = max(w, self.used[g])
            h_gather[:, :cols] = 0
            h_pos[:, :cols] = -1
            h_gather[:n, :w] = gather
            h_pos[:n, :w] = key_pos
            self.used[g] = w
            d_dst, d_gather, d_pos, d_len = self.device_buffers[g]
            for device, host in ((d_dst, h_dst), (d_len, h_len), (d_gather[:, :cols],
                                 h_gather[:, :cols]), (d_pos[:, :cols], h_pos[:, :cols])):
                device.copy_(host, non_blocking=True)

    def rows(self, size: int) -> "StaticRows":
        return StaticRows(self, size)


class StaticRows:
    """The cache contract (docs/architecture.md) over the first `size` rows of a
    StaticCacheView: what a graph of that batch size reads and writes."""

    def __init__(self, view: StaticCacheView, size: int):
        self.view, self.size, self.cache = view, size, view.cache

    @property
    def dtype(self) -> torch.dtype:
        return self.cache.groups[0].k.dtype

    def _buffers(self, layer: int):
        g, i = self.cache.layer_group[layer]
        return (g, i, *(b[:self.size] for b in self.view.device_buffers[g]))

    def key_lengths(self, layer: int) -> torch.Tensor:
        return self._buffers(layer)[5]

    def update_paged(self, layer: int, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor):
        g, i, dst, gather, key_pos, _ = self._buffers(layer)
        group = self.cache.groups[g]
        B, T, H, D = k.shape
        src = self.view.src[:B * T]
        kc, vc = group.k[i], group.v[i]  # [slots, Hkv, D]
        kc.index_copy_(0, dst, k.reshape(B * T, H, D).index_select(0, src).to(kc.dtype))
        vc.index_copy_(0, dst, v.reshape(B * T, H, D).index_select(0, src).to(vc.dtype))
        return kc, vc, gather, key_pos

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor):
        kc, vc, gather, key_pos = self.update_paged(layer, k, v, positions)
        B, S = gather.shape
        return (kc.index_select(0, gather.flatten()).view(B, S, *kc.shape[1:]),
                vc.index_select(0, gather.flatten()).view(B, S, *vc.shape[1:]), key_pos)


def decode_logits(model, ids: torch.Tensor, positions: torch.Tensor, cache) -> torch.Tensor:
    """The forward of `model.forward` for one token per row -> logits [B, V], without the id
    check (a host synchronisation; the caller checks ids on the host)."""
    x = model.embedding(ids)
    cos_sin = model.rotary.cos_sin(positions)
    for block in model.block:
        x = block(x, positions, cos_sin, cache)
    return model.logits(model.norm(x)[:, -1])


class DecodeGraphs:
    """`run(rows, token_ids) -> logits [len(rows), V]` for all-decode steps, by graph replay."""

    def __init__(self, model, cache: PagedKVCache, *, max_batch: int, max_len: int,
                 sizes: Sequence[int] = BATCH_SIZES):
        self.model, self.vocab = model, model.config.vocab_size
        self.sizes = sorted({s for s in sizes if s < max_batch} | {max_batch})
        self.view = StaticCacheView(cache, self.sizes[-1], max_len)
        device = cache.device
        self.ids = torch.zeros(self.sizes[-1], 1, dtype=torch.long, device=device)
        self.positions = torch.full((self.sizes[-1], 1), -1, dtype=torch.long, device=device)
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._capture_all()

    @staticmethod
    def supported(model) -> bool:
        """A bf16 CUDA model with packed experts whose every layer runs the Triton kernels."""
        if model.device.type != "cuda" or model.dtype != torch.bfloat16:
            return False
        probe = torch.empty(1, dtype=torch.bfloat16, device=model.device)
        return model.experts == "mxfp4" and all(
            dispatch.use_triton(m.kernels, probe) for m in model.modules()
            if hasattr(type(m), "kernels"))

    def _capture_all(self) -> None:
        pool = None
        for size in reversed(self.sizes):  # largest first: the smaller ones reuse its pool
            views = self._views(size)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side), torch.inference_mode():
                for _ in range(2):  # compile and autotune outside the capture
                    decode_logits(self.model, *views)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool), torch.inference_mode():
                logits = decode_logits(self.model, *views)
            pool = graph.pool()
            self.graphs[size] = (graph, logits)

    def _views(self, size: int):
        return self.ids[:size], self.positions[:size], self.view.rows(size)

    def handles(self, rows: int) -> bool:
        return padded_batch(rows, self.sizes) is not None

    def run(self, rows: Sequence[tuple[str, int, int]], token_ids: Sequence[int]) -> torch.Tensor:
        """rows (seq_id, position, 1) with their input tokens -> logits [len(rows), V]."""
        n = len(rows)
        size = padded_batch(n, self.sizes)
        if size is None or any(not 0 <= t < self.vocab for t in token_ids):
            raise ValueError(f"cannot replay {n} rows (captured up to {self.sizes[-1]}) or "
                             f"token ids outside [0, {self.vocab})")
        host = torch.zeros(2, size, dtype=torch.long)
        host[0, :n] = torch.tensor(token_ids)
        host[1] = -1
        host[1, :n] = torch.tensor([start for _, start, _ in rows])
        self.ids[:size, 0].copy_(host[0], non_blocking=True)
        self.positions[:size, 0].copy_(host[1], non_blocking=True)
        self.view.fill(rows)
        graph, logits = self.graphs[size]
        graph.replay()
        return logits[:n]
