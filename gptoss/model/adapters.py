"""Serving LoRA adapters without merging: low-rank deltas added per batch row.

The base weights (packed MXFP4 experts and the native kernels included) stay untouched. An
`Adapter` holds one adapter's matrices in fp32 on the model's device (they are small; each
delta is computed in fp32 and rounded once, with the output it joins, where a merge into bf16
weights would round the merged weights); an `AdapterBatch` binds adapters to the rows of one
forward pass (row b is computed by `rows[b]`, None = the base) and is passed explicitly down
the blocks (`Transformer.hidden_states(..., adapters=)`).

  attention   y = base(x) + s * (x A^T) B^T on the rows of each adapter (q, k, v on the fused
              qkv output, o on the output projection), A [r, in], B [out, r]
  experts     for each (token, routed expert e) of an adapter's rows, the delta s * B_e A_e is
              added to expert e's gate_up output before the activation and to its down output
              before the routing weight: where the merged weight W_e + s B_e A_e would act

so a row's result equals the merged model's (`gptoss merge`) up to floating-point rounding. Rows
without expert adapters keep the base MoE path (the native kernel on CPU); rows with them run the
used experts one at a time (dequantized per expert when packed), which costs more per token.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F

ATTENTION = ("q", "k", "v", "o")
EXPERTS = ("mlp1", "mlp2")


@dataclass
class Adapter:
    """One adapter: `pairs[(layer, target)] = (A, B)` with the shapes of the module doc (a
    leading expert dimension for "mlp1" / "mlp2"); each delta is multiplied by `scaling`."""

    name: str
    scaling: float
    pairs: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    def has(self, layer: int, targets: Sequence[str]) -> bool:
        return any((layer, t) in self.pairs for t in targets)

    def delta(self, layer: int, target: str, x: torch.Tensor, expert: int | None = None
              ) -> torch.Tensor | None:
        """s * (x A^T) B^T for x [..., in] -> [..., out] in fp32, or None (no adapter)."""
        pair = self.pairs.get((layer, target))
        if pair is None:
            return None
        A, B = pair if expert is None else (pair[0][expert], pair[1][expert])
        return F.linear(F.linear(x.float(), A), B) * self.scaling


class AdapterBatch:
    """The adapters of a [B, T] forward pass: `rows[b]` is row b's Adapter or None."""

    def __init__(self, rows: Sequence[Adapter | None]):
        self.rows = list(rows)
        groups: dict[int, tuple[Adapter, list[int]]] = {}
        for b, adapter in enumerate(self.rows):
            if adapter is not None:
                groups.setdefault(id(adapter), (adapter, []))[1].append(b)
        # [(adapter, its row indices)], the indices as a tensor once per pass
        self.groups = [(a, torch.tensor(rows)) for a, rows in groups.values()]

    def __bool__(self) -> bool:
        return bool(self.groups)

    # ---- attention ---------------------------------------------------------------------------
    def add_qkv(self, layer: int, h: torch.Tensor, qkv: torch.Tensor, sizes: Sequence[int]
                ) -> torch.Tensor:
        """qkv [B, T, Q+2K] of the base projection of h [B, T, H], plus each row's q/k/v delta."""
        return self._add(layer, ("q", "k", "v"), h, qkv, sizes)

    def add_out(self, layer: int, attn: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """y [B, T, H] of the base output projection of attn [B, T, Q], plus each row's delta."""
        return self._add(layer, ("o",), attn, y, (y.shape[-1],))

    def _add(self, layer: int, targets, x: torch.Tensor, y: torch.Tensor, sizes) -> torch.Tensor:
        for adapter, rows in self.groups:
            if not adapter.has(layer, targets):
                continue
            index = rows.to(x.device)
            xs = x.index_select(0, index)
            parts = [adapter.delta(layer, t, xs) for t in targets]
            parts = [p if p is not None else xs.new_zeros(*xs.shape[:-1], n, dtype=torch.float32)
                     for p, n in zip(parts, sizes)]
            rows_y = y.index_select(0, index).float() + torch.cat(parts, dim=-1)
            y = y.index_copy(0, index, rows_y.to(y.dtype))
        return y

    # ---- experts -----------------------------------------------------------------------------
    def expert_tokens(self, layer: int, T: int) -> list[tuple[Adapter, torch.Tensor]]:
        """For each adapter with expert targets in `layer`: its flat token indices in [B*T]."""
        out = []
        for adapter, rows in self.groups:
            if adapter.has(layer, EXPERTS):
                tokens = (rows[:, None] * T + torch.arange(T)).flatten()
                out.append((adapter, tokens))
        return out
