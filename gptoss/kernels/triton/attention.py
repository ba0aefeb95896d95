"""Sink attention with the sliding window over the paged KV cache, one Triton kernel for prefill
and decode (flash-style: scores never leave the chip).

A program takes one (row b, kv head h) and BLOCK_M query rows, each a (token t, head in the
group g) pair, so the G = Hq/Hkv query heads sharing a kv head read its keys once. Keys are read
in place through `slots` [B, S] (storage slot of each key, as `CacheView.update_paged` returns
them) up to `lengths[b]`. The running softmax starts from the sink: max = sink logit, sum = 1,
value 0 (the sink takes mass and adds no value), so a row with no visible key outputs 0 as the
reference does. Scores q.k are bf16 products summed in fp32; softmax and p.v in fp32.
Decoding over a long cache splits the keys among programs (flash-decoding): each keeps its own
running max, sum and values, the first starting from the sink, and `_combine_splits` rescales
and adds them in fp32.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import interpreted
from .numerics import mma, to_bf16

BLOCK_N = 64  # keys per step
SPLIT_MIN_KEYS = 256   # decode: at least this many keys per split
MAX_SPLITS = 16
TARGET_PROGRAMS = 256  # about two waves on a 132-SM GPU


@triton.jit
def _sink_attention(q_ptr, k_ptr, v_ptr, slots_ptr, key_pos_ptr, lengths_ptr, q_pos_ptr,
                    sinks_ptr, out_ptr, part_ptr, scale, window, T, S, split_keys,
                    HQ: tl.constexpr, HKV: tl.constexpr, D: tl.constexpr, G: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SPLITS: tl.constexpr,
                    INTERPRETED: tl.constexpr):
    b = tl.program_id(0) // HKV
    h = tl.program_id(0) % HKV
    split = tl.program_id(2)
    r = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    t, g = r // G, r % G
    row_ok = t < T
    head = h * G + g
    d = tl.arange(0, D)
    q_off = ((b * T + t).to(tl.int64) * HQ + head) * D
    q = tl.load(q_ptr + q_off[:, None] + d[None, :], mask=row_ok[:, None], other=0.0)
    q_pos = tl.load(q_pos_ptr + b * T + t, mask=row_ok, other=-1)
    # the running max and sum start from the sink in the first split (sum = 1, value 0)
    sink = tl.load(sinks_ptr + head, mask=row_ok, other=0.0).to(tl.float32)
    m = tl.where(split == 0, sink, float("-inf"))
    l = tl.where(split == 0, 1.0, 0.0) + tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, D), dtype=tl.float32)
    n_keys = tl.load(lengths_ptr + b)
    first = split * split_keys
    last = tl.minimum(n_keys, first + split_keys)
    for s0 in range(first, last, BLOCK_N):
        s = s0 + tl.arange(0, BLOCK_N)
        s_ok = s < last
        slot = tl.load(slots_ptr + b.to(tl.int64) * S + s, mask=s_ok, other=0).to(tl.int64)
        k_pos = tl.load(key_pos_ptr + b.to(tl.int64) * S + s, mask=s_ok, other=-1)
        kv_off = (slot * HKV + h) * D
        k = tl.load(k_ptr + kv_off[:, None] + d[None, :], mask=s_ok[:, None], other=0.0)
        v = tl.load(v_ptr + kv_off[:, None] + d[None, :], mask=s_ok[:, None], other=0.0)
        scores = mma(q, tl.trans(k), INTERPRETED) * scale                  # [M, N] fp32
        dist = q_pos[:, None] - k_pos[None, :]
        visible = (k_pos[None, :] >= 0) & (dist >= 0) & ((window == 0) | (dist < window))
        scores = tl.where(visible, scores, float("-inf"))
        m_new = tl.maximum(m, tl.max(scores, axis=1))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)  # a split that saw nothing yet
        rescale = tl.exp(m - m_use)
        p = tl.exp(scores - m_use[:, None])
        l = l * rescale + tl.sum(p, axis=1)
        acc = acc * rescale[:, None] + tl.dot(p, v.to(tl.float32), input_precision="ieee")
        m = m_new
    if SPLITS == 1:
        out = acc / l[:, None]
        tl.store(out_ptr + q_off[:, None] + d[None, :], to_bf16(out, INTERPRETED),
                 mask=row_ok[:, None])
    else:  # partial (m, l, acc) per split, combined by `_combine_splits`
        base = ((b * T + t).to(tl.int64) * HQ + head) * SPLITS + split
        tl.store(part_ptr + base[:, None] * (D + 2) + d[None, :], acc, mask=row_ok[:, None])
        tl.store(part_ptr + base * (D + 2) + D, m, mask=row_ok)
        tl.store(part_ptr + base * (D + 2) + D + 1, l, mask=row_ok)


def _splits(T: int, S: int, programs: int) -> int:
    """Key splits for decode (flash-decoding): enough programs to fill a GPU when few rows and
    kv heads would each scan a long cache alone; 1 for prefill and short caches."""
    if T > 1 or S < 2 * SPLIT_MIN_KEYS:
        return 1
    return max(1, min(MAX_SPLITS, S // SPLIT_MIN_KEYS, -(-TARGET_PROGRAMS // programs)))


def _combine_splits(part: torch.Tensor, D: int) -> torch.Tensor:
    """part [..., splits, D + 2] (acc, max, sum per split) -> the softmax output [..., D]."""
    acc, m, l = part[..., :D], part[..., D], part[..., D + 1]
    top = m.max(dim=-1, keepdim=True).values      # finite: the first split holds the sink
    w = torch.exp(m - top)                        # 0 for a split that saw no visible key
    return (acc * w[..., None]).sum(-2) / (l * w).sum(-1, keepdim=True)


def sink_attention_paged(q: torch.Tensor, k_slots: torch.Tensor, v_slots: torch.Tensor,
                         slots: torch.Tensor, key_pos: torch.Tensor, q_pos: torch.Tensor,
                         sinks: torch.Tensor, window: int, scale: float,
                         lengths: torch.Tensor | None = None, splits: int | None = None
                         ) -> torch.Tensor:
    """q [B, T, Hq, D], k_slots/v_slots [N, Hkv, D] (a layer's storage), slots/key_pos [B, S]
    (slot and position of each key, -1 = empty), q_pos [B, T] (-1 = padding), sinks [Hq],
    lengths [B] (keys to read per row, default S) -> [B, T, Hq*D] in bf16.
    Key j is visible to query i iff 0 <= pos_j <= pos_i and, with a window, pos_i - pos_j < window
    (as `reference.visibility_mask`). `splits` (default: chosen by `_splits`) divides the keys
    among programs whose partial softmaxes are combined in fp32."""
    B, T, HQ, D = q.shape
    HKV = k_slots.shape[1]
    S = slots.shape[1]
    G = HQ // HKV
    if lengths is None:
        lengths = torch.full((B,), S, dtype=torch.int32, device=q.device)
    out = torch.empty(B, T, HQ, D, dtype=v_slots.dtype, device=q.device)
    block_m = max(16, min(64, triton.next_power_of_2(T * G)))
    rows = triton.cdiv(T * G, block_m)
    splits = splits or _splits(T, S, B * HKV * rows)
    split_keys = triton.cdiv(triton.cdiv(S, splits), BLOCK_N) * BLOCK_N
    part = (torch.empty(B, T, HQ, splits, D + 2, dtype=torch.float32, device=q.device)
            if splits > 1 else out)
    _sink_attention[(B * HKV, rows, splits)](
        q.contiguous(), k_slots.contiguous(), v_slots.contiguous(), slots.contiguous(),
        key_pos.contiguous(), lengths.to(torch.int32).contiguous(), q_pos.contiguous(),
        sinks.contiguous(), out, part, float(scale), int(window), T, S, split_keys, HQ=HQ,
        HKV=HKV, D=D, G=G, BLOCK_M=block_m, BLOCK_N=BLOCK_N, SPLITS=splits,
        INTERPRETED=interpreted())
    if splits > 1:
        out = _combine_splits(part, D).to(out.dtype)
    return out.view(B, T, HQ * D)


def sink_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_pos: torch.Tensor,
                   key_pos: torch.Tensor, sinks: torch.Tensor, window: int, scale: float
                   ) -> torch.Tensor:
    """Contiguous keys: k/v [B, S, Hkv, D], key_pos [B, S] -> [B, T, Hq*D]."""
    B, S = k.shape[:2]
    slots = torch.arange(B * S, device=k.device).view(B, S)
    return sink_attention_paged(q, k.reshape(B * S, *k.shape[2:]), v.reshape(B * S, *v.shape[2:]),
                                slots, key_pos, q_pos, sinks, window, scale)
