"""A contiguous KV cache for incremental decoding (the engine has a paged one).

Full-attention layers keep every position; sliding-window layers keep a ring buffer of `window`
positions per sequence, so their memory is O(window), not O(context).
Implements the cache contract of docs/architecture.md.
"""
from __future__ import annotations

import torch

from ..config import ModelConfig


class DynamicCache:
    def __init__(self, config: ModelConfig, batch_size: int, *, dtype: torch.dtype,
                 device="cpu", initial_capacity: int = 256):
        self.windows = [config.window(i) for i in range(config.num_layers)]
        heads = (config.num_kv_heads, config.head_dim)
        self.k, self.v, self.pos = [], [], []
        for window in self.windows:
            cap = window if window else initial_capacity  # sliding layers: a ring of `window`
            self.k.append(torch.zeros(batch_size, cap, *heads, dtype=dtype, device=device))
            self.v.append(torch.zeros(batch_size, cap, *heads, dtype=dtype, device=device))
            self.pos.append(torch.full((batch_size, cap), -1, dtype=torch.long, device=device))

    def held_positions(self, layer: int) -> int:
        """How many key positions layer `layer` stores per sequence (its capacity)."""
        return self.pos[layer].shape[1]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor):
        """Store k/v [B, T, Hkv, D] at `positions` [B, T]; return keys, values and key positions
        that the new queries may attend to (masking is left to the caller)."""
        if self.windows[layer]:
            return self._update_ring(layer, k, v, positions)
        return self._update_full(layer, k, v, positions)

    def _update_full(self, layer, k, v, positions):
        needed = int(positions.max()) + 1
        if needed > self.pos[layer].shape[1]:
            self._grow(layer, max(needed, 2 * self.pos[layer].shape[1]))
        b, t = torch.nonzero(positions >= 0, as_tuple=True)
        slots = positions[b, t]
        self.k[layer][b, slots], self.v[layer][b, slots] = k[b, t], v[b, t]
        self.pos[layer][b, slots] = slots
        end = int(self.pos[layer].max()) + 1
        return self.k[layer][:, :end], self.v[layer][:, :end], self.pos[layer][:, :end]

    def _update_ring(self, layer, k, v, positions):
        window = self.windows[layer]
        # new queries see the ring's old contents plus the new keys themselves
        k_all = torch.cat([self.k[layer], k], dim=1)
        v_all = torch.cat([self.v[layer], v], dim=1)
        pos_all = torch.cat([self.pos[layer], positions], dim=1)
        # only the last `window` new positions of each row survive in the ring (unique slots)
        newest = positions.max(dim=1, keepdim=True).values
        keep = (positions >= 0) & (positions > newest - window)
        b, t = torch.nonzero(keep, as_tuple=True)
        slots = positions[b, t] % window
        self.k[layer][b, slots], self.v[layer][b, slots] = k[b, t], v[b, t]
        self.pos[layer][b, slots] = positions[b, t]
        return k_all, v_all, pos_all

    def _grow(self, layer: int, capacity: int) -> None:
        def padded(t: torch.Tensor, fill) -> torch.Tensor:
            return torch.cat([t, t.new_full((t.shape[0], capacity - t.shape[1], *t.shape[2:]), fill)], 1)
        self.k[layer], self.v[layer] = padded(self.k[layer], 0), padded(self.v[layer], 0)
        self.pos[layer] = padded(self.pos[layer], -1)
