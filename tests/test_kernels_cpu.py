"""CPU fast paths against the plain reference kernels."""
import pytest
import torch

from gptoss.kernels import reference as ref
from gptoss.kernels.cpu import attention as cpu_attention


def case(B, T, S, Hq, Hkv, D, window, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, Hq, D, generator=g).to(dtype)
    k = torch.randn(B, S, Hkv, D, generator=g).to(dtype)
    v = torch.randn(B, S, Hkv, D, generator=g).to(dtype)
    sinks = (2 * torch.randn(Hq, generator=g)).to(dtype)
    q_pos = torch.arange(S - T, S).expand(B, T).clone()
    k_pos = torch.arange(S).expand(B, S).clone()
    if B > 1:  # padding: two padded queries, three empty key slots in row 1
        q_pos[1, :2] = -1
        k_pos[1, -3:] = -1
    return q, k, v, sinks, ref.visibility_mask(q_pos, k_pos, window)


@pytest.mark.parametrize("shape", [(1, 1, 1, 2, 1, 8), (2, 40, 40, 4, 2, 16),
                                   (3, 16, 200, 8, 2, 64), (2, 1, 33, 8, 8, 16),
                                   (1, 64, 300, 64, 8, 64)])
@pytest.mark.parametrize("window", [0, 8, 128])
def test_flash_sink_attention_matches_reference_fp32(shape, window):
    q, k, v, sinks, visible = case(*shape, window, torch.float32)
    expected = ref.sink_attention(q, k, v, sinks, visible, 0.125)
    got = cpu_attention.sink_attention(q, k, v, sinks, visible, 0.125)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_flash_sink_attention_bf16_close_to_fp32_reference():
    q, k, v, sinks, visible = case(2, 48, 96, 8, 2, 64, 16, torch.bfloat16)
    expected = ref.sink_attention(q.float(), k.float(), v.float(), sinks.float(), visible, 0.125)
    got = cpu_attention.sink_attention(q, k, v, sinks, visible, 0.125)
    assert got.dtype == torch.bfloat16
    assert float((got.float() - expected).norm() / expected.norm()) < 1e-2


def test_row_without_visible_keys_is_zero():
    q, k, v, sinks, visible = case(1, 4, 10, 4, 2, 16, 0, torch.float32)
    visible[:, 1] = False
    got = cpu_attention.sink_attention(q, k, v, sinks, visible, 0.25)
    assert torch.equal(got[0, 1], torch.zeros_like(got[0, 1]))
    assert torch.isfinite(got).all()
