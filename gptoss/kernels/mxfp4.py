"""MXFP4: 4-bit E2M1 values in blocks of 32 sharing one power-of-two (E8M0) scale.

Storage (as in the published gpt-oss checkpoints): a matrix [..., rows, cols] is stored as
  blocks [..., rows, cols/32, 16] uint8 — byte i of a block holds element 2i in its low nibble and
                                           element 2i+1 in its high nibble;
  scales [..., rows, cols/32]     uint8 — the block's value is `FP4_VALUES[nibble] * 2**(scale - 127)`.

Dequantization is exact: every FP4 value times a power of two is representable in fp32 and bf16
(except beyond their range: with scale bytes 253 and 254 the largest values overflow to inf).
Scale byte 255 is NaN in the OCP MX specification (E8M0); such a block dequantizes to NaN.

Quantization rule (`quantize`), chosen so that it never clips much and is a fixed point:
  1. The input is first rounded to fp32; non-finite values are rejected.
  2. For each block of 32, with `amax` the largest magnitude, the scale is the smallest power of
     two 2**k (k in [-127, 127]) with `amax <= 7 * 2**k`. An all-zero block gets k = -127.
  3. Each `x / 2**k` is rounded to the nearest FP4 value, ties to the even code (0, 1, 2, 4 win
     ties), and magnitudes above 6 (only possible in (6, 7]) saturate to 6. The sign bit of `x` is
     kept, so -0.0 and tiny negatives become the -0 code.
  Why 7 and not 6: a block max in (6, 7]·2**k rounds to 6 with the same worst error (2**k) as the
  coarser scale 2**(k+1) would give it, while the other 31 values keep the finer grid. The largest
  code of a nonzero block is then always 4 or 6, so `quantize(dequantize(b, s)) == (b, s)` for
  every (b, s) this function produces, and `dequantize(quantize(dequantize(b, s)))` equals
  `dequantize(b, s)` for any blocks and scales without overflow/underflow (a real checkpoint whose
  blocks peak at code 3 or less re-encodes to the same values with a different exponent).
  Error bound: each element is off by at most 2**(k-1) when its magnitude is below 4·2**k and by
  at most 2**k above that; `roundtrip_error` reports the error actually made.

All functions work in row chunks so that a 20b expert tensor is never held in several copies.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

BLOCK = 32  # values per block
BLOCK_BYTES = 16  # bytes per block (two values per byte)
SCALE_BIAS = 127

# nibble -> value (E2M1: sign, 2 exponent bits, 1 mantissa bit)
FP4_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
              -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)

# Rounding |x| / 2**k onto codes 0..7: code = number of thresholds passed. Between an even code c
# and c+1 a tie stays at c (strict >); between an odd code and the next even one it goes up (>=).
_THRESHOLDS = ((0.25, True), (0.75, False), (1.25, True), (1.75, False),
               (2.5, True), (3.5, False), (5.0, True))

_CHUNK_BLOCKS = 1 << 16  # blocks per chunk: 2 MiB of fp32 values, a few MiB of temporaries


class MXFP4Error(ValueError):
    """Blocks and scales that do not fit together, or values that cannot be quantized."""


def fp4_table(dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """The 16 nibble values as a tensor [16]."""
    return torch.tensor(FP4_VALUES, dtype=dtype, device=device)


def _pair_table(device) -> torch.Tensor:
    """[256, 2] fp32: byte -> (value of low nibble, value of high nibble)."""
    table = fp4_table(torch.float32, device)
    byte = torch.arange(256, device=device)
    return torch.stack((table[byte & 0x0F], table[byte >> 4]), dim=-1)


def check_packed(blocks: torch.Tensor, scales: torch.Tensor) -> None:
    """Raise MXFP4Error unless blocks [..., G, 16] and scales [..., G] are uint8 and agree."""
    if blocks.dtype != torch.uint8 or scales.dtype != torch.uint8:
        raise MXFP4Error(f"blocks and scales must be uint8, got {blocks.dtype} and {scales.dtype}")
    if blocks.dim() < 2 or blocks.shape[-1] != BLOCK_BYTES or blocks.shape[:-1] != scales.shape:
        raise MXFP4Error(f"blocks {list(blocks.shape)} and scales {list(scales.shape)} do not "
                         f"match: expected blocks [..., G, {BLOCK_BYTES}] and scales [..., G]")


def dequantize(blocks: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype = torch.bfloat16,
               *, chunk_blocks: int = _CHUNK_BLOCKS) -> torch.Tensor:
    """blocks [..., G, 16], scales [..., G] (uint8) -> values [..., G*32] in `dtype`, exactly.

    The result is allocated once; work proceeds `chunk_blocks` blocks at a time.
    """
    check_packed(blocks, scales)
    *prefix, groups, _ = blocks.shape
    n = math.prod(prefix) * groups
    flat_blocks = blocks.reshape(n, BLOCK_BYTES)
    flat_scales = scales.reshape(n)
    out = torch.empty(n, BLOCK, dtype=dtype, device=blocks.device)
    pairs = _pair_table(blocks.device)
    for r0 in range(0, n, chunk_blocks):
        r1 = min(r0 + chunk_blocks, n)
        vals = pairs[flat_blocks[r0:r1].long()].reshape(r1 - r0, BLOCK)  # [c, 32] fp32
        exp = flat_scales[r0:r1].to(torch.int32) - SCALE_BIAS  # [c]
        vals = torch.ldexp(vals, exp[:, None].to(torch.float32))
        out[r0:r1] = vals.masked_fill_((exp == 128)[:, None], math.nan)  # E8M0 255 = NaN
    return out.reshape(*prefix, groups * BLOCK)


def _block_exponent(amax: torch.Tensor) -> torch.Tensor:
    """amax [c] fp32 >= 0 -> k [c] int32: the smallest k with amax <= 7 * 2**k, within [-127, 127].

    From the fp32 bits: amax = f * 2**E with f in [1, 2); 7 * 2**k = 1.75 * 2**(k+2), so
    k = E - 2 when f <= 1.75 (mantissa bits <= 0x600000) and E - 1 otherwise. Zero and
    subnormal amax give k <= -128 and clamp to -127, which also satisfies the rule.
    """
    bits = amax.view(torch.int32)
    k = (bits >> 23) - (SCALE_BIAS + 2) + ((bits & 0x7FFFFF) > 0x600000).to(torch.int32)
    return k.clamp_(-SCALE_BIAS, SCALE_BIAS)


def _encode_chunk(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [c, 32] fp32 (finite) -> (blocks [c, 16] uint8, scales [c] uint8)."""
    mag = x.abs()
    k = _block_exponent(mag.amax(dim=1))
    mag = torch.ldexp(mag, (-k)[:, None].to(torch.float32), out=mag)  # |x| / 2**k, exact
    code = (x.view(torch.int32) < 0).to(torch.uint8) << 3  # the sign bit, -0.0 included
    for threshold, strict in _THRESHOLDS:
        code += (mag > threshold) if strict else (mag >= threshold)
    packed = code[:, 0::2] | (code[:, 1::2] << 4)
    return packed, (k + SCALE_BIAS).to(torch.uint8)


def quantize(values: torch.Tensor, *, chunk_blocks: int = _CHUNK_BLOCKS
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """values [..., N] (float, N % 32 == 0) -> (blocks [..., N/32, 16], scales [..., N/32]) uint8.

    Blocks run along the last dimension. See the module docstring for the rounding rule.
    """
    if not values.is_floating_point():
        raise MXFP4Error(f"can only quantize floating-point values, got {values.dtype}")
    if values.dim() < 1 or values.shape[-1] % BLOCK:
        raise MXFP4Error(f"the last dimension ({list(values.shape)}) must be a multiple of {BLOCK}")
    *prefix, cols = values.shape
    groups = cols // BLOCK
    n = math.prod(prefix) * groups
    flat = values.reshape(n, BLOCK)
    blocks = torch.empty(n, BLOCK_BYTES, dtype=torch.uint8, device=values.device)
    scales = torch.empty(n, dtype=torch.uint8, device=values.device)
    for r0 in range(0, n, chunk_blocks):
        r1 = min(r0 + chunk_blocks, n)
        x = flat[r0:r1].to(torch.float32)
        if not torch.isfinite(x).all():
            raise MXFP4Error("cannot quantize non-finite values (inf or nan)")
        blocks[r0:r1], scales[r0:r1] = _encode_chunk(x)
    return blocks.reshape(*prefix, groups, BLOCK_BYTES), scales.reshape(*prefix, groups)


@dataclass(frozen=True)
class RoundTripError:
    """How far `dequantize(quantize(w))` is from `w` (all in fp32)."""
    max_abs: float  # largest |error|
    rms: float  # root-mean-square error
    relative_rms: float  # rms error / rms of w (0 for an all-zero w)
    max_block_relative: float  # largest |error| / amax of its block (<= 1/3.5 by the rule)
    exact_fraction: float  # share of elements reproduced exactly


def roundtrip_error(values: torch.Tensor, *, chunk_blocks: int = _CHUNK_BLOCKS) -> RoundTripError:
    """Quantize and dequantize `values` [..., N] chunk by chunk and measure the error."""
    flat = values.reshape(-1, BLOCK) if values.numel() else values.reshape(0, BLOCK)
    if values.dim() < 1 or values.shape[-1] % BLOCK:
        raise MXFP4Error(f"the last dimension ({list(values.shape)}) must be a multiple of {BLOCK}")
    sq_err = sq_val = 0.0
    max_abs = max_rel = 0.0
    exact = 0
    for r0 in range(0, flat.shape[0], chunk_blocks):
        x = flat[r0:r0 + chunk_blocks].to(torch.float32)
        blocks, scales = quantize(x)
        err = (dequantize(blocks, scales, torch.float32) - x).abs()
        amax = x.abs().amax(dim=1, keepdim=True)
        sq_err += float(err.double().square().sum())
        sq_val += float(x.double().square().sum())
        max_abs = max(max_abs, float(err.max()))
        max_rel = max(max_rel, float((err / amax.clamp_min(torch.finfo(torch.float32).tiny)).max()))
        exact += int((err == 0).sum())
    count = max(flat.numel(), 1)
    rms = math.sqrt(sq_err / count)
    return RoundTripError(max_abs=max_abs, rms=rms,
                          relative_rms=math.sqrt(sq_err / sq_val) if sq_val else 0.0,
                          max_block_relative=max_rel, exact_fraction=exact / count)
