"""The paged KV cache: fixed-size blocks, one block table per sequence and layer group.

Layers are grouped by attention window (all full-attention layers in one group, all sliding
layers in another); each group has its own `BlockPool` and storage
`k, v [layers in group, num_blocks * block_size, Hkv, D]`, and a block id addresses the same
positions in every layer of its group. A sequence's table maps logical block j (positions
[j*bs, (j+1)*bs)) to a block id, or -1 where the block was released or never needed.

Sliding-window groups release a block as soon as no future query can see it: after computing up
to position e-1 the next query is at e and sees keys >= e - window + 1, so between steps a
sequence holds at most ceil(window / bs) + 1 blocks per sliding group (the window-1 visible
positions, rounded out to whole blocks at both ends; 9 blocks of 16 for a 128 window). During a
prefill chunk of C tokens it holds the window plus the chunk.

`view(rows, T)` binds the cache to one forward pass; its `update(layer, k, v, positions)`
implements the cache contract of docs/architecture.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from ..config import ModelConfig
from ..weights.resident import huge_zeros
from .block_pool import BlockPool, chain_hash


@dataclass
class KVGroup:
    window: int          # 0 = full attention
    layers: list[int]    # model layer indices in this group
    pool: BlockPool
    k: torch.Tensor      # [len(layers), num_blocks * block_size, Hkv, D]
    v: torch.Tensor


@dataclass
class PrefixHit:
    """Cached blocks a new sequence can start from (`num_tokens` is a multiple of bs)."""

    num_tokens: int = 0
    tables: list[list[int]] = field(default_factory=list)  # per group, -1 = not needed
    hashes: list[bytes] = field(default_factory=list)


@dataclass
class SeqBlocks:
    tables: list[list[int]]  # per group: logical block -> block id or -1
    hashes: list[bytes]      # chain hashes of the full blocks registered so far
    salt: bytes | None = None  # where the chain starts (block_pool.adapter_salt)


class PagedKVCache:
    def __init__(self, config: ModelConfig, *, block_size: int = 16, full_blocks: int,
                 sliding_blocks: int, dtype: torch.dtype = torch.bfloat16, device="cpu",
                 prefix_caching: bool = True):
        self.block_size, self.prefix_caching = block_size, prefix_caching
        self.device = torch.device(device)
        windows = sorted({config.window(i) for i in range(config.num_layers)})
        self.groups: list[KVGroup] = []
        self.layer_group: list[tuple[int, int]] = [(0, 0)] * config.num_layers
        for g, window in enumerate(windows):
            layers = [i for i in range(config.num_layers) if config.window(i) == window]
            n = sliding_blocks if window else full_blocks
            shape = (len(layers), n * block_size, config.num_kv_heads, config.head_dim)
            self.groups.append(KVGroup(window, layers, BlockPool(n, block_size),
                                       huge_zeros(shape, dtype, device),
                                       huge_zeros(shape, dtype, device)))
            for i, layer in enumerate(layers):
                self.layer_group[layer] = (g, i)
        self.seqs: dict[str, SeqBlocks] = {}

    # ---- sizes -------------------------------------------------------------------------------
    def num_free_blocks(self) -> list[int]:
        return [g.pool.num_free for g in self.groups]

    def num_blocks(self) -> list[int]:
        return [g.pool.num_blocks for g in self.groups]

    def held_blocks(self, seq_id: str) -> list[int]:
        """Blocks the sequence holds in each group."""
        return [sum(b >= 0 for b in t) for t in self.seqs[seq_id].tables]

    # ---- allocation --------------------------------------------------------------------------
    def _first_visible(self, window: int, pos: int) -> int:
        """The lowest key position a query at `pos` may see in a group with `window`."""
        return max(0, pos - window + 1) if window else 0

    def _new_blocks(self, window: int, table_len: int, start: int, end: int) -> list[bool]:
        """For logical blocks table_len .. ceil(end/bs)-1: True if it must be allocated to compute
        positions [start, end), False if it lies wholly before the window (stays -1)."""
        low = self._first_visible(window, start)
        last = -(-end // self.block_size)
        return [(j + 1) * self.block_size > low for j in range(table_len, last)]

    def can_allocate(self, seq_id: str, start: int, end: int) -> bool:
        seq = self.seqs[seq_id]
        return all(sum(self._new_blocks(g.window, len(t), start, end)) <= g.pool.num_free
                   for g, t in zip(self.groups, seq.tables))

    def allocate(self, seq_id: str, start: int, end: int) -> None:
        """Give the sequence blocks for positions [start, end); check `can_allocate` first."""
        seq = self.seqs[seq_id]
        for g, table in zip(self.groups, seq.tables):
            for needed in self._new_blocks(g.window, len(table), start, end):
                table.append(g.pool.allocate() if needed else -1)

    def can_admit(self, hit: PrefixHit, end: int, full_end: int = 0) -> bool:
        """Whether a new sequence starting from `hit` can get blocks up to position `end`, and
        its full-attention groups up to `full_end` (e.g. the whole prompt, of which `end` is
        the first chunk)."""
        for g, tail in zip(self.groups, hit.tables or [[] for _ in self.groups]):
            revived = sum(1 for b in tail if b >= 0 and g.pool.is_free(b))
            stop = end if g.window else max(end, full_end)
            new = sum(self._new_blocks(g.window, len(tail), hit.num_tokens, stop))
            if revived + new > g.pool.num_free:
                return False
        return True

    def admit(self, seq_id: str, hit: PrefixHit, salt: bytes | None = None) -> None:
        """Start a sequence's tables from a prefix hit (taking references to its blocks); its
        block hashes chain from `salt` (the one `find_prefix` was given)."""
        if seq_id in self.seqs:
            raise ValueError(f"sequence {seq_id!r} already holds KV blocks")
        tables = [list(t) for t in hit.tables] if hit.tables else [[] for _ in self.groups]
        for g, table in zip(self.groups, tables):
            for b in table:
                if b >= 0:
                    g.pool.acquire(b)
        self.seqs[seq_id] = SeqBlocks(tables, list(hit.hashes), salt)

    def free(self, seq_id: str) -> None:
        """Release every block of the sequence at once (finish, cancel, preemption)."""
        seq = self.seqs.pop(seq_id, None)
        if seq is None:
            return
        for g, table in zip(self.groups, seq.tables):
            for b in table:
                if b >= 0:
                    g.pool.release(b)

    # ---- after a step ------------------------------------------------------------------------
    def advance(self, seq_id: str, token_ids: Sequence[int], num_computed: int) -> None:
        """The sequence now has KV for positions < num_computed: register its newly full blocks
        in the prefix cache, then release sliding blocks no future query can see."""
        seq, bs = self.seqs[seq_id], self.block_size
        while self.prefix_caching and (len(seq.hashes) + 1) * bs <= num_computed:
            j = len(seq.hashes)
            tokens = token_ids[j * bs:(j + 1) * bs]
            seq.hashes.append(chain_hash(seq.hashes[-1] if seq.hashes else seq.salt, tokens))
            for g, table in zip(self.groups, seq.tables):
                if table[j] >= 0:
                    g.pool.register(table[j], seq.hashes[j], tokens)
        for g, table in zip(self.groups, seq.tables):
            if not g.window:
                continue
            low = self._first_visible(g.window, num_computed)
            for j in range(min(low // bs, len(table))):
                if table[j] >= 0:
                    g.pool.release(table[j])
                    table[j] = -1

    # ---- prefix cache ------------------------------------------------------------------------
    def find_prefix(self, token_ids: Sequence[int], salt: bytes | None = None) -> PrefixHit:
        """The longest cached block-aligned prefix usable by a new sequence whose hashes chain
        from `salt` (no side effects).

        At least one token is left to compute (its logits are needed). Full-attention groups
        need every block of the prefix; a sliding group needs only the blocks its first new
        query can see.
        """
        bs = self.block_size
        if not self.prefix_caching:
            return PrefixHit()
        hashes: list[bytes] = []
        for j in range((len(token_ids) - 1) // bs):
            hashes.append(chain_hash(hashes[-1] if hashes else salt, token_ids[j * bs:(j + 1) * bs]))
        found = [[g.pool.lookup(h, token_ids[j * bs:(j + 1) * bs]) for j, h in enumerate(hashes)]
                 for g in self.groups]
        for k in range(len(hashes), 0, -1):
            tables = self._prefix_tables(found, k)
            if tables is not None:
                return PrefixHit(k * bs, tables, hashes[:k])
        return PrefixHit()

    def _prefix_tables(self, found: list[list[int | None]], k: int) -> list[list[int]] | None:
        tables = []
        for g, hits in zip(self.groups, found):
            low_block = self._first_visible(g.window, k * self.block_size) // self.block_size
            needed = hits[low_block:k]
            if any(b is None for b in needed):
                return None
            tables.append([-1] * low_block + list(needed))
        return tables

    # ---- one forward pass ----------------------------------------------------------------------
    def view(self, rows: Sequence[tuple[str, int, int]], T: int) -> "CacheView":
        return CacheView(self, rows, T)


class CacheView:
    """The cache bound to one forward pass over rows [B] of (seq_id, start, length), each padded
    to T tokens (row b computes positions start..start+length-1; the rest is padding)."""

    def __init__(self, cache: PagedKVCache, rows: Sequence[tuple[str, int, int]], T: int):
        self.cache = cache
        self.dst, self.src, self.gather, self.key_pos = [], [], [], []
        for g in range(len(cache.groups)):
            dst, src, gather, key_pos = (x.to(cache.device) for x in self._index(g, rows, T))
            self.dst.append(dst)
            self.src.append(src)
            self.gather.append(gather)
            self.key_pos.append(key_pos)

    def _index(self, g: int, rows, T: int):
        """-> dst [n] slots to write, src [n] their rows in the flat [B*T] batch, gather [B, S]
        slots to read and key_pos [B, S] their positions (-1 = empty), all in tensor ops."""
        cache, bs = self.cache, self.cache.block_size
        window = cache.groups[g].window
        tables = [cache.seqs[seq_id].tables[g] for seq_id, _, _ in rows]
        width = max(map(len, tables))
        table = torch.tensor([t + [-1] * (width - len(t)) for t in tables], dtype=torch.long)
        start = torch.tensor([r[1] for r in rows], dtype=torch.long)[:, None]     # [B, 1]
        end = start + torch.tensor([r[2] for r in rows], dtype=torch.long)[:, None]
        pos = start + torch.arange(T)                                             # [B, T]
        real = pos < end
        dst = (table.gather(1, (pos // bs).clamp(max=width - 1)) * bs + pos % bs)[real]
        src = torch.arange(len(rows) * T).view(-1, T)[real]
        first = (start - window + 1).clamp(min=0) // bs if window else torch.zeros_like(start)
        last = (end + bs - 1) // bs                                               # exclusive
        blocks = first + torch.arange(int((last - first).max()))                  # [B, nb]
        live = blocks < last
        ids = table.gather(1, blocks.clamp(max=width - 1))
        if bool((live & (ids < 0)).any()):
            b = int((live & (ids < 0)).any(1).nonzero()[0])
            raise RuntimeError(f"KV block table of {rows[b][0]!r} misses blocks for "
                               f"[{int(start[b])}, {int(end[b])})")
        ar = torch.arange(bs)
        gather = torch.where(live, ids, 0)[:, :, None] * bs + ar                  # [B, nb, bs]
        key_pos = blocks[:, :, None] * bs + ar
        key_pos = torch.where(live[:, :, None] & (key_pos < end[:, :, None]), key_pos, -1)
        return dst, src, gather.flatten(1), key_pos.flatten(1)

    @property
    def dtype(self) -> torch.dtype:
        """The storage dtype; a cache with `dtype` offers `update_paged`."""
        return self.cache.groups[0].k.dtype

    def update_paged(self, layer: int, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor):
        """Store k/v [B, T, Hkv, D] of the real tokens; return the layer's whole storage
        k_slots, v_slots [slots, Hkv, D], and slots, key_pos [B, S]: the storage slot and the
        position (-1 = empty) of every key the rows' queries may need, for a kernel that reads
        the blocks in place."""
        g, i = self.cache.layer_group[layer]
        group = self.cache.groups[g]
        B, T, H, D = k.shape
        src, dst = self.src[g], self.dst[g]
        kc, vc = group.k[i], group.v[i]  # [slots, Hkv, D]
        kc.index_copy_(0, dst, k.reshape(B * T, H, D).index_select(0, src).to(kc.dtype))
        vc.index_copy_(0, dst, v.reshape(B * T, H, D).index_select(0, src).to(vc.dtype))
        return kc, vc, self.gather[g], self.key_pos[g]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor):
        """Store k/v [B, T, Hkv, D] of the real tokens; return k_all, v_all [B, S, Hkv, D] and
        key_pos [B, S] (-1 = empty) for every position the rows' queries may need."""
        kc, vc, gather, key_pos = self.update_paged(layer, k, v, positions)
        B, S = gather.shape
        k_all = kc.index_select(0, gather.flatten()).view(B, S, *kc.shape[1:])
        v_all = vc.index_select(0, gather.flatten()).view(B, S, *vc.shape[1:])
        return k_all, v_all, key_pos
