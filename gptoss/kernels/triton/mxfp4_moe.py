"""Routed MXFP4 experts in two Triton kernels, reading `blocks`/`scales` as stored.

Assignments (token, slot) are grouped by expert into row tiles (`routing.py`); each program
multiplies one tile by a slice of its expert's matrix, dequantizing the FP4 nibbles on the fly:
  up:   h = x W1^T + b1 (interleaved rows: even = gate, odd = linear), rounded to bf16 as the
        reference's bf16 linear does, then the clamped SwiGLU in fp32 -> y [A, I] bf16;
  down: o = y W2^T + b2 rounded to bf16, times the routing weight in fp32 -> [A, H] fp32.
The k routed outputs of a token are summed in fp32 and rounded once (as the reference).
Byte b of a block holds element 2i (low nibble) and 2i+1 (high nibble), so a program loads each
byte once and multiplies the low nibbles by the even activations and the high by the odd.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import interpreted
from .numerics import mma, to_bf16
from .routing import expert_tiles

BLOCK_N = 64     # output units per program
BLOCK_K = 128    # contraction elements per step (four MXFP4 blocks)


@triton.jit
def _fp4_value(nibble):
    """int32 nibble -> its E2M1 value in fp32 (sign, 2 exponent bits, 1 mantissa bit)."""
    e = (nibble >> 1) & 3
    m = (nibble & 1).to(tl.float32)
    mag = tl.where(e == 0, 0.5 * m, (2.0 + m) * (1 << e).to(tl.float32) * 0.25)
    return tl.where((nibble & 8) != 0, -mag, mag)


@triton.jit
def _scale_value(s):
    """int32 E8M0 byte -> 2**(s - 127) in fp32, built from its bits (0: subnormal, 255: NaN)."""
    bits = tl.where(s == 0, 0x00400000, tl.where(s == 255, 0x7FC00000, s << 23))
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _row_dot(acc, act_ptr, act_rows, row_ok, blocks_ptr, scales_ptr, w_rows, w_ok,
             K: tl.constexpr, BLOCK_K: tl.constexpr, INTERPRETED: tl.constexpr):
    """acc [M, N] += act[act_rows, :K] @ W[w_rows, :K]^T with W read as MXFP4."""
    j = tl.arange(0, BLOCK_K // 2)
    for k0 in range(0, K, BLOCK_K):
        even = k0 + 2 * j                                        # [BK/2] even columns
        k_ok = even < K
        xe = tl.load(act_ptr + act_rows[:, None] * K + even[None, :],
                     mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        xo = tl.load(act_ptr + act_rows[:, None] * K + even[None, :] + 1,
                     mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        wm = w_ok[:, None] & k_ok[None, :]
        byte = tl.load(blocks_ptr + w_rows[:, None] * (K // 2) + (even // 2)[None, :],
                       mask=wm, other=0).to(tl.int32)
        s = tl.load(scales_ptr + w_rows[:, None] * (K // 32) + (even // 32)[None, :],
                    mask=wm, other=127).to(tl.int32)
        f = _scale_value(s)
        lo = to_bf16(_fp4_value(byte & 15) * f, INTERPRETED)       # [N, BK/2]
        hi = to_bf16(_fp4_value(byte >> 4) * f, INTERPRETED)
        acc += mma(xe, tl.trans(lo), INTERPRETED)
        acc += mma(xo, tl.trans(hi), INTERPRETED)
    return acc


@triton.jit
def _tile_rows(order_ptr, expert_ptr, start_ptr, end_ptr, BLOCK_M: tl.constexpr):
    tile = tl.program_id(0)
    e = tl.load(expert_ptr + tile)
    start = tl.load(start_ptr + tile)
    end = tl.load(end_ptr + tile)
    r = start + tl.arange(0, BLOCK_M)
    ok = r < end  # an unused tile (expert -1) has end == start
    a = tl.load(order_ptr + r, mask=ok, other=0).to(tl.int64)
    return e.to(tl.int64), a, ok


@triton.jit
def _moe_up(x_ptr, order_ptr, expert_ptr, start_ptr, end_ptr, blocks_ptr, scales_ptr, bias_ptr,
            y_ptr, limit, alpha, H: tl.constexpr, I: tl.constexpr, TOP_K: tl.constexpr,
            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
            INTERPRETED: tl.constexpr):
    e, a, ok = _tile_rows(order_ptr, expert_ptr, start_ptr, end_ptr, BLOCK_M)
    if tl.load(expert_ptr + tl.program_id(0)) >= 0:
        n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)   # intermediate units
        n_ok = n < I
        gate_rows = e * (2 * I) + 2 * n
        token = a // TOP_K
        g = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        g = _row_dot(g, x_ptr, token, ok, blocks_ptr, scales_ptr, gate_rows, n_ok, H, BLOCK_K,
                     INTERPRETED)
        lin = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        lin = _row_dot(lin, x_ptr, token, ok, blocks_ptr, scales_ptr, gate_rows + 1, n_ok, H,
                       BLOCK_K, INTERPRETED)
        bg = tl.load(bias_ptr + gate_rows, mask=n_ok, other=0.0).to(tl.float32)
        bl = tl.load(bias_ptr + gate_rows + 1, mask=n_ok, other=0.0).to(tl.float32)
        g = to_bf16(g + bg[None, :], INTERPRETED).to(tl.float32)
        lin = to_bf16(lin + bl[None, :], INTERPRETED).to(tl.float32)
        g = tl.minimum(g, limit)
        lin = tl.minimum(tl.maximum(lin, -limit), limit)
        y = g * tl.sigmoid(alpha * g) * (lin + 1.0)
        tl.store(y_ptr + a[:, None] * I + n[None, :], to_bf16(y, INTERPRETED),
                 mask=ok[:, None] & n_ok[None, :])


@triton.jit
def _moe_down(y_ptr, order_ptr, expert_ptr, start_ptr, end_ptr, blocks_ptr, scales_ptr,
              bias_ptr, weight_ptr, out_ptr, H: tl.constexpr, I: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
              INTERPRETED: tl.constexpr):
    e, a, ok = _tile_rows(order_ptr, expert_ptr, start_ptr, end_ptr, BLOCK_M)
    if tl.load(expert_ptr + tl.program_id(0)) >= 0:
        n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)   # hidden units
        n_ok = n < H
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        acc = _row_dot(acc, y_ptr, a, ok, blocks_ptr, scales_ptr, e * H + n, n_ok, I, BLOCK_K,
                       INTERPRETED)
        b = tl.load(bias_ptr + e * H + n, mask=n_ok, other=0.0).to(tl.float32)
        w = tl.load(weight_ptr + a, mask=ok, other=0.0).to(tl.float32)
        o = to_bf16(acc + b[None, :], INTERPRETED).to(tl.float32) * w[:, None]
        tl.store(out_ptr + a[:, None] * H + n[None, :], o, mask=ok[:, None] & n_ok[None, :])


def _block_k(cols: int) -> int:
    return max(32, min(BLOCK_K, triton.next_power_of_2(cols)))


def moe(t: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor, w1_blocks: torch.Tensor,
        w1_scales: torch.Tensor, b1: torch.Tensor, w2_blocks: torch.Tensor,
        w2_scales: torch.Tensor, b2: torch.Tensor, limit: float, alpha: float) -> torch.Tensor:
    """Same contract as `MLPBlock.experts_reference`: t [N, H] bf16, ids/weights [N, k] ->
    sum_k weights[:, k] * expert_{ids[:, k]}(t) [N, H] (bf16, summed in fp32, rounded once).
    Expert matrices: w1 blocks [E, 2I, H/32, 16] / scales [E, 2I, H/32], w2 [E, H, I/32, 16] /
    [E, H, I/32], uint8 as stored; b1 [E, 2I], b2 [E, H]."""
    N, H = t.shape
    E, two_i = w1_blocks.shape[:2]
    I, top_k = two_i // 2, ids.shape[1]
    A = N * top_k
    block_m = 16 if A <= 64 else 64
    tiles = expert_tiles(ids, E, block_m)
    x = t.contiguous()
    y = torch.empty(A, I, dtype=torch.bfloat16, device=t.device)
    out = torch.empty(A, H, dtype=torch.float32, device=t.device)
    interp = interpreted()
    plan = (tiles.order, tiles.expert, tiles.start, tiles.end)
    _moe_up[(tiles.max_tiles, triton.cdiv(I, BLOCK_N))](
        x, *plan, w1_blocks, w1_scales, b1, y, float(limit), float(alpha), H=H, I=I,
        TOP_K=top_k, BLOCK_M=block_m, BLOCK_N=BLOCK_N, BLOCK_K=_block_k(H), INTERPRETED=interp)
    _moe_down[(tiles.max_tiles, triton.cdiv(H, BLOCK_N))](
        y, *plan, w2_blocks, w2_scales, b2, weights.contiguous(), out, H=H, I=I,
        BLOCK_M=block_m, BLOCK_N=BLOCK_N, BLOCK_K=_block_k(I), INTERPRETED=interp)
    return out.view(N, top_k, H).sum(1).to(t.dtype)
