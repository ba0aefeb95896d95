"""MXFP4 against independent oracles: numpy float64 arithmetic written from the format's
definition, transformers' own dequantizer, and a brute-force nearest-value search."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gptoss.kernels import mxfp4

# E2M1 written out from the format definition (not imported from the code under test)
E2M1 = np.array([0, .5, 1, 1.5, 2, 3, 4, 6, -0.0, -.5, -1, -1.5, -2, -3, -4, -6], dtype=np.float64)
MAGNITUDES = E2M1[:8]


def numpy_dequantize(blocks: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """float64 oracle: low nibble first, value * 2**(scale-127); scale 255 -> NaN."""
    vals = np.stack([E2M1[blocks & 0x0F], E2M1[blocks >> 4]], axis=-1)
    vals = vals.reshape(*blocks.shape[:-1], 32)
    out = np.ldexp(vals, scales.astype(np.int64)[..., None] - 127)
    out[scales == 255] = np.nan
    return out.reshape(*blocks.shape[:-2], -1)


def brute_force_quantize_block(x: np.ndarray) -> tuple[list[int], int]:
    """One block of 32 float64 values -> (codes, scale byte) by exhaustive search."""
    amax = float(np.abs(x).max())
    k = -127 if amax == 0 else next(k for k in range(-127, 128) if amax <= 7 * 2.0 ** k)
    codes = []
    for v in x:
        m = abs(v) / 2.0 ** k
        dist = np.abs(MAGNITUDES - min(m, 6.0))
        best = np.flatnonzero(dist == dist.min())
        code = int(best[0] if len(best) == 1 else best[best % 2 == 0][0])  # tie -> even code
        codes.append(code | (8 if math.copysign(1.0, v) < 0 else 0))
    return codes, k + 127


def pack_codes(codes: list[int]) -> list[int]:
    return [codes[2 * i] | (codes[2 * i + 1] << 4) for i in range(16)]


# ---- dequantization ----------------------------------------------------------------------------
def test_table_matches_the_format():
    assert np.array_equal(np.array(mxfp4.FP4_VALUES), E2M1)
    assert np.array_equal(np.signbit(np.array(mxfp4.FP4_VALUES)), np.signbit(E2M1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dequantize_every_scale_byte_exactly(dtype):
    gen = torch.Generator().manual_seed(0)
    blocks = torch.randint(0, 256, (256, 3, 16), dtype=torch.uint8, generator=gen)
    blocks[:, 0] = (torch.arange(256 * 16) % 256).reshape(256, 16).to(torch.uint8)  # every byte
    scales = torch.arange(256, dtype=torch.uint8)[:, None].expand(256, 3).contiguous()
    got = mxfp4.dequantize(blocks, scales, dtype).to(torch.float64).numpy()
    # exact float64 values rounded once to the target (only 6*2**127 etc. overflow to inf)
    with np.errstate(over="ignore"):
        want64 = numpy_dequantize(blocks.numpy(), scales.numpy())
    want = torch.from_numpy(want64).to(dtype).to(torch.float64).numpy()
    assert np.isfinite(want[:253]).all()  # 6 * 2**126 and up overflow fp32
    np.testing.assert_array_equal(got, want)  # exact, NaN where scale is 255
    assert np.array_equal(np.signbit(got[~np.isnan(got)]), np.signbit(want[~np.isnan(want)]))


def test_dequantize_matches_transformers():
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors
    gen = torch.Generator().manual_seed(1)
    blocks = torch.randint(0, 256, (3, 10, 4, 16), dtype=torch.uint8, generator=gen)
    scales = torch.randint(100, 140, (3, 10, 4), dtype=torch.uint8, generator=gen)
    theirs = convert_moe_packed_tensors(blocks, scales, dtype=torch.bfloat16)  # [E, in, out]
    ours = mxfp4.dequantize(blocks, scales, torch.bfloat16)  # [E, out, in]
    assert torch.equal(ours.transpose(1, 2), theirs)


def test_dequantize_chunking_does_not_change_the_result():
    gen = torch.Generator().manual_seed(2)
    blocks = torch.randint(0, 256, (5, 7, 3, 16), dtype=torch.uint8, generator=gen)
    scales = torch.randint(110, 140, (5, 7, 3), dtype=torch.uint8, generator=gen)
    assert torch.equal(mxfp4.dequantize(blocks, scales, chunk_blocks=4),
                       mxfp4.dequantize(blocks, scales))


def test_dequantize_rejects_mismatched_inputs():
    with pytest.raises(mxfp4.MXFP4Error, match="do not match"):
        mxfp4.dequantize(torch.zeros(2, 3, 16, dtype=torch.uint8), torch.zeros(2, 4, dtype=torch.uint8))
    with pytest.raises(mxfp4.MXFP4Error, match="uint8"):
        mxfp4.dequantize(torch.zeros(2, 3, 16, dtype=torch.int8), torch.zeros(2, 3, dtype=torch.uint8))


# ---- quantization ------------------------------------------------------------------------------
def _awkward_values(gen: torch.Generator) -> torch.Tensor:
    """[24, 64]: normal data at many scales plus exact ties, zeros, -0.0, tiny and huge values."""
    x = torch.randn(24, 64, generator=gen, dtype=torch.float64)
    x *= torch.logspace(-30, 30, 24, dtype=torch.float64)[:, None]
    grid = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.5, 7.0, 0.0], dtype=torch.float64)
    x[0, :10] = grid  # exact midpoints of the FP4 grid (amax 7 -> scale 2**0)
    x[0, 10:20] = -grid
    x[1] = 0.0
    x[2, :32] = -0.0
    x[3, :32] = 1e-40  # fp32 subnormals
    x[4, :32] = torch.linspace(-3e38, 3e38, 32, dtype=torch.float64)
    return x.to(torch.float32)


def test_quantize_matches_brute_force_search():
    x = _awkward_values(torch.Generator().manual_seed(3))
    blocks, scales = mxfp4.quantize(x)
    assert blocks.shape == (24, 2, 16) and scales.shape == (24, 2)
    xs = x.to(torch.float64).numpy().reshape(-1, 32)
    for i, block in enumerate(xs):
        codes, scale = brute_force_quantize_block(block)
        assert scales.reshape(-1)[i].item() == scale, f"block {i}"
        assert blocks.reshape(-1, 16)[i].tolist() == pack_codes(codes), f"block {i}"


def test_quantize_ties_go_to_even():
    x = torch.zeros(32)
    x[:8] = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 7.0])
    blocks, scales = mxfp4.quantize(x)
    assert scales.item() == 127
    got = mxfp4.dequantize(blocks, scales, torch.float32)[:8].tolist()
    assert got == [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 6.0]


def test_quantize_bf16_input_and_chunking():
    x = torch.randn(9, 4, 96, generator=torch.Generator().manual_seed(4)).to(torch.bfloat16)
    a = mxfp4.quantize(x)
    b = mxfp4.quantize(x.float(), chunk_blocks=5)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("bad, match", [
    (torch.tensor([float("nan")] * 32), "non-finite"),
    (torch.tensor([float("inf")] * 32), "non-finite"),
    (torch.zeros(31), "multiple of 32"),
    (torch.zeros(32, dtype=torch.int32), "floating-point"),
])
def test_quantize_rejects_bad_input(bad, match):
    with pytest.raises(mxfp4.MXFP4Error, match=match):
        mxfp4.quantize(bad)


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=16 * 6, max_size=16 * 6), st.lists(st.integers(0, 252), min_size=6, max_size=6))
def test_dequantized_values_are_a_fixed_point(raw, scale_list):
    blocks = torch.frombuffer(bytearray(raw), dtype=torch.uint8).reshape(6, 16)
    scales = torch.tensor(scale_list, dtype=torch.uint8)
    values = mxfp4.dequantize(blocks, scales, torch.float32)
    again = mxfp4.dequantize(*mxfp4.quantize(values), torch.float32)
    assert torch.equal(again, values)
    assert torch.equal(torch.signbit(again), torch.signbit(values))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, width=32), min_size=64, max_size=64))
def test_quantizer_output_is_reproduced_byte_for_byte(values):
    blocks, scales = mxfp4.quantize(torch.tensor(values, dtype=torch.float32))
    again = mxfp4.quantize(mxfp4.dequantize(blocks, scales, torch.float32))
    assert torch.equal(again[0], blocks) and torch.equal(again[1], scales)


# ---- round-trip error ----------------------------------------------------------------------------
def test_roundtrip_error_report():
    x = torch.randn(64, 256, generator=torch.Generator().manual_seed(5)) * 0.02
    report = mxfp4.roundtrip_error(x)
    y = mxfp4.dequantize(*mxfp4.quantize(x), torch.float32)
    err = (y - x).double()
    assert report.max_abs == pytest.approx(float(err.abs().max()), rel=1e-6)
    assert report.rms == pytest.approx(float(err.square().mean().sqrt()), rel=1e-6)
    assert report.relative_rms == pytest.approx(float(err.norm() / x.double().norm()), rel=1e-6)
    assert report.exact_fraction == pytest.approx(float((err == 0).double().mean()))
    # the rule's bound: an element is off by at most 2**k < amax / 3.5 of its block
    assert 0 < report.max_block_relative <= 1 / 3.5
    assert 0.05 < report.relative_rms < 0.2  # what 4-bit values with a shared scale give


def test_roundtrip_error_of_representable_values_is_zero():
    gen = torch.Generator().manual_seed(6)
    blocks = torch.randint(0, 256, (8, 4, 16), dtype=torch.uint8, generator=gen)
    scales = torch.randint(120, 130, (8, 4), dtype=torch.uint8, generator=gen)
    report = mxfp4.roundtrip_error(mxfp4.dequantize(blocks, scales, torch.float32))
    assert report.max_abs == 0 and report.exact_fraction == 1.0
