"""Grouping routed (token, slot) assignments by expert into fixed-size row tiles, in tensor ops
only (no host synchronisation, so it can be captured in a CUDA graph).

For N tokens with k experts each there are A = N*k assignments; assignment a = token*k + slot.
The tiles cover the assignments sorted by expert, each tile holding at most `tile_rows` rows of
one expert. At most ceil(A / tile_rows) + E tiles exist; unused trailing tiles have expert -1.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ExpertTiles:
    order: torch.Tensor    # [A] int32: assignments sorted by expert (stable)
    expert: torch.Tensor   # [max_tiles] int32: the tile's expert, -1 = unused
    start: torch.Tensor    # [max_tiles] int32: first row of the tile in `order`
    end: torch.Tensor      # [max_tiles] int32: one past the expert's last row in `order`
                           # (= start for an unused tile)

    @property
    def max_tiles(self) -> int:
        return self.expert.shape[0]


def max_tiles(assignments: int, num_experts: int, tile_rows: int) -> int:
    return -(-assignments // tile_rows) + min(num_experts, assignments)


def expert_tiles(ids: torch.Tensor, num_experts: int, tile_rows: int) -> ExpertTiles:
    """ids [N, k] (expert of each assignment) -> the tile plan."""
    flat = ids.reshape(-1)
    order = torch.argsort(flat, stable=True)
    # [E]; not bincount, which asks the host for the largest id on CUDA
    counts = torch.zeros(num_experts, dtype=torch.long, device=ids.device).scatter_add_(
        0, flat, torch.ones_like(flat))
    first_row = torch.cumsum(counts, 0) - counts                            # [E]
    tiles = (counts + tile_rows - 1) // tile_rows                           # [E]
    tiles_end = torch.cumsum(tiles, 0)                                      # [E]
    t = torch.arange(max_tiles(flat.numel(), num_experts, tile_rows), device=ids.device)
    expert = torch.searchsorted(tiles_end, t, right=True)                   # [T] in [0, E]
    used = expert < num_experts
    e = expert.clamp(max=num_experts - 1)
    local = t - (tiles_end[e] - tiles[e])
    start = first_row[e] + local * tile_rows
    end = torch.where(used, first_row[e] + counts[e], start)  # an unused tile has no rows
    i32 = torch.int32
    return ExpertTiles(order.to(i32), torch.where(used, e, -1).to(i32), start.to(i32),
                       end.to(i32))
