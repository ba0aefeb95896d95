"""Sink attention with the sliding window over the paged KV cache, one Triton kernel for prefill
and decode (flash-style: scores never leave the chip).

A program takes one (row b, kv head h) and BLOCK_M query rows, each a (token t, head in the
group g) pair, so the G = Hq/Hkv query heads sharing a kv head read its keys once. Keys are read
in place through `slots` [B, S] (storage slot of each key, as `CacheView.update_paged` returns
them) up to `lengths[b]`. The running softmax starts from the sink: max = sink logit, sum = 1,
value 0 (the sink takes mass and adds no value), so a row with no visible key outputs 0 as the
reference does. Scores q.k are bf16 products summed in fp32; softmax and p.v in fp32.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import interpreted
from .numerics import mma, to_bf16

BLOCK_N = 64  # keys per step


@triton.jit
def _sink_attention(q_ptr, k_ptr, v_ptr, slots_ptr, key_pos_ptr, lengths_ptr, q_pos_ptr,
                    sinks_ptr, out_ptr, scale, window, T, S, HQ: tl.constexpr,
                    HKV: tl.constexpr, D: tl.constexpr, G: tl.constexpr, BLOCK_M: tl.constexpr,
                    BLOCK_N: tl.constexpr, INTERPRETED: tl.constexpr):
    b = tl.program_id(0) // HKV
    h = tl.program_id(0) % HKV
    r = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    t, g = r // G, r % G
    row_ok = t < T
    head = h * G + g
    d = tl.arange(0, D)
    q_off = ((b * T + t).to(tl.int64) * HQ + head) * D
    q = tl.load(q_ptr + q_off[:, None] + d[None, :], mask=row_ok[:, None], other=0.0)
    q_pos = tl.load(q_pos_ptr + b * T + t, mask=row_ok, other=-1)
    m = tl.load(sinks_ptr + head, mask=row_ok, other=0.0).to(tl.float32)  # running max
    l = tl.full((BLOCK_M,), 1.0, tl.float32)                               # running sum
    acc = tl.zeros((BLOCK_M, D), dtype=tl.float32)
    n_keys = tl.load(lengths_ptr + b)
    for s0 in range(0, n_keys, BLOCK_N):
        s = s0 + tl.arange(0, BLOCK_N)
        s_ok = s < n_keys
        slot = tl.load(slots_ptr + b.to(tl.int64) * S + s, mask=s_ok, other=0).to(tl.int64)
        k_pos = tl.load(key_pos_ptr + b.to(tl.int64) * S + s, mask=s_ok, other=-1)
        kv_off = (slot * HKV + h) * D
        k = tl.load(k_ptr + kv_off[:, None] + d[None, :], mask=s_ok[:, None], other=0.0)
        v = tl.load(v_ptr + kv_off[:, None] + d[None, :], mask=s_ok[:, None], other=0.0)
        scores = mma(q, tl.trans(k), INTERPRETED) * scale                     # [M, N] fp32
        dist = q_pos[:, None] - k_pos[None, :]
        visible = (k_pos[None, :] >= 0) & (dist >= 0) & ((window == 0) | (dist < window))
        scores = tl.where(visible, scores, float("-inf"))
        m_new = tl.maximum(m, tl.max(scores, axis=1))
        rescale = tl.exp(m - m_new)
        p = tl.exp(scores - m_new[:, None])
        l = l * rescale + tl.sum(p, axis=1)
        acc = acc * rescale[:, None] + tl.dot(p, v.to(tl.float32), input_precision="ieee")
        m = m_new
    out = acc / l[:, None]
    tl.store(out_ptr + q_off[:, None] + d[None, :], to_bf16(out, INTERPRETED),
             mask=row_ok[:, None])


def sink_attention_paged(q: torch.Tensor, k_slots: torch.Tensor, v_slots: torch.Tensor,
                         slots: torch.Tensor, key_pos: torch.Tensor, q_pos: torch.Tensor,
                         sinks: torch.Tensor, window: int, scale: float,
                         lengths: torch.Tensor | None = None) -> torch.Tensor:
    """q [B, T, Hq, D], k_slots/v_slots [N, Hkv, D] (a layer's storage), slots/key_pos [B, S]
    (slot and position of each key, -1 = empty), q_pos [B, T] (-1 = padding), sinks [Hq],
    lengths [B] (keys to read per row, default S) -> [B, T, Hq*D] in bf16.
    Key j is visible to query i iff 0 <= pos_j <= pos_i and, with a window, pos_i - pos_j < window
    (as `reference.visibility_mask`)."""
    B, T, HQ, D = q.shape
    HKV = k_slots.shape[1]
    S = slots.shape[1]
    G = HQ // HKV
    if lengths is None:
        lengths = torch.full((B,), S, dtype=torch.int32, device=q.device)
    out = torch.empty(B, T, HQ, D, dtype=v_slots.dtype, device=q.device)
    block_m = max(16, min(64, triton.next_power_of_2(T * G)))
    grid = (B * HKV, triton.cdiv(T * G, block_m))
    _sink_attention[grid](
        q.contiguous(), k_slots.contiguous(), v_slots.contiguous(), slots.contiguous(),
        key_pos.contiguous(), lengths.to(torch.int32).contiguous(), q_pos.contiguous(),
        sinks.contiguous(), out, float(scale), int(window), T, S, HQ=HQ, HKV=HKV, D=D, G=G,
        BLOCK_M=block_m, BLOCK_N=BLOCK_N, INTERPRETED=interpreted())
    return out.view(B, T, HQ * D)


def sink_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_pos: torch.Tensor,
                   key_pos: torch.Tensor, sinks: torch.Tensor, window: int, scale: float
                   ) -> torch.Tensor:
    """Contiguous keys: k/v [B, S, Hkv, D], key_pos [B, S] -> [B, T, Hq*D]."""
    B, S = k.shape[:2]
    slots = torch.arange(B * S, device=k.device).view(B, S)
    return sink_attention_paged(q, k.reshape(B * S, *k.shape[2:]), v.reshape(B * S, *v.shape[2:]),
                                slots, key_pos, q_pos, sinks, window, scale)
