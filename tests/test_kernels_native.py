"""The native CPU kernels (libgptoss_cpu) against oracles written here from the reference codec.

Every instruction set this CPU can run is tested (the portable one always), so the AVX2 and
portable paths are checked on an AVX-512 machine too.

Tolerances, and why:
- MoE: the oracle dequantizes with `kernels.mxfp4.dequantize` and computes in fp32, rounding to
  bf16 at the points the kernel's contract names (first linear + bias, SwiGLU output, second
  linear + bias, the final sum). The kernel sums in fp32 in another order (blocks, lanes), so
  an intermediate rounding can land one bf16 step (2^-8 relative) away, which moves the output
  by at most about one bf16 step of a term: |got - oracle| <= 2^-7 |oracle| + 2^-7 rms(oracle).
- linear: one rounding of an fp32 sum: <= 2^-8 relative to the fp32 oracle (plus 1e-5 for sums
  near zero, relative to rms); with fp32 output, 1e-5 relative (summation order only).
- attention: fp32 softmax and sums, bf16 output: |got - oracle| <= 2^-8 |oracle| + 2^-9.
NaN (scale byte 255) must come out NaN exactly where the oracle has it.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from gptoss.kernels import reference as ref
from gptoss.kernels.cpu import library as native
from gptoss.kernels.cpu.native import build
from gptoss.kernels.mxfp4 import dequantize, quantize

ISAS = native.usable_isas()


def test_native_kernels_load_and_pick_the_best_isa():
    assert native.native() is not None, "the native kernels did not build or load"
    assert ISAS[-1] == "portable"
    assert native.isa() == ISAS[0]
    assert native.native().gptoss_source_hash().decode() == build.source_hash()


def assert_bf16_close(got, expected, rtol, atol_rms):
    got, expected = got.float(), expected.float()
    assert torch.equal(got.isnan(), expected.isnan())
    ok = ~expected.isnan()
    finite = expected[ok]
    scale = finite.square().mean().sqrt() if finite.numel() else torch.tensor(0.0)
    err = (got[ok] - finite).abs()
    bound = rtol * finite.abs() + atol_rms * scale
    assert bool((err <= bound).all()), f"max excess {float((err - bound).max()):.3g}"


# ---- MoE ---------------------------------------------------------------------------------------
def moe_case(E, H, I, N, k, seed=0, odd_scales=False):
    g = torch.Generator().manual_seed(seed)
    w1 = torch.randn(E, 2 * I, H, generator=g) * (2.5 / H ** 0.5)
    w2 = torch.randn(E, H, I, generator=g) / I ** 0.5
    b1 = (torch.randn(E, 2 * I, generator=g) * 0.1).bfloat16()
    b2 = (torch.randn(E, H, generator=g) * 0.1).bfloat16()
    blocks1, scales1 = quantize(w1)
    blocks2, scales2 = quantize(w2)
    if odd_scales:  # scale byte 0 (2^-127) in one block, 255 (NaN) in one block of expert 0
        scales1[:, 3, 0] = 0
        scales2[0, 1, -1] = 255
    x = torch.randn(N, H, generator=g).bfloat16()
    ids, weights = ref.top_k_softmax(torch.randn(N, E, generator=g), k, torch.bfloat16)
    return x, ids, weights, blocks1, scales1, b1, blocks2, scales2, b2


def moe_oracle(x, ids, weights, blocks1, scales1, b1, blocks2, scales2, b2, limit=7.0,
               alpha=1.702):
    w1, w2 = dequantize(blocks1, scales1, torch.float32), dequantize(blocks2, scales2, torch.float32)
    rnd = lambda t: t.bfloat16().float()  # noqa: E731
    out = torch.zeros(x.shape)
    for n in range(x.shape[0]):
        for j in range(ids.shape[1]):
            e = int(ids[n, j])
            h = rnd(w1[e] @ x[n].float() + b1[e].float())
            y = rnd(ref.swiglu(h, limit, alpha))
            out[n] += weights[n, j].float() * rnd(w2[e] @ y + b2[e].float())
    return out.bfloat16()


MOE_CASES = {  # (experts, hidden, intermediate, tokens, top_k)
    "one token, top-1": (4, 64, 64, 1, 1),
    "odd experts, 3 blocks (tail)": (5, 96, 160, 3, 3),
    "gemm path (>= 8 tokens per expert)": (3, 160, 96, 24, 2),
    "gemm and dot paths mixed, 5 block tail": (7, 160, 224, 13, 4),
    "16 tokens (batched decode)": (8, 128, 64, 16, 4),
    "20b-wide, one token": (6, 2880, 2880, 1, 4),
    "20b-wide, 4 tokens per expert": (4, 2880, 2880, 8, 2),
    "2 and 5 token groups of 16 (prefill)": (2, 64, 96, 70, 2),
    "17 to 32 tokens per expert": (3, 96, 64, 40, 2),
}


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("case", list(MOE_CASES))
def test_moe_matches_oracle(isa, case):
    args = moe_case(*MOE_CASES[case])
    with native.use_isa(isa):
        got = native.moe(*args, 7.0, 1.702)
    assert got.dtype == torch.bfloat16 and got.shape == args[0].shape
    assert_bf16_close(got, moe_oracle(*args), 2 ** -7, 2 ** -7)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("tokens", [2, 20])  # dot path, gemm path
def test_moe_scale_bytes_0_and_255(isa, tokens):
    args = moe_case(3, 96, 64, tokens, 2, seed=1, odd_scales=True)
    expected = moe_oracle(*args)
    assert expected.isnan().any() and not expected.isnan().all()
    with native.use_isa(isa):
        got = native.moe(*args, 7.0, 1.702)
    assert_bf16_close(got, expected, 2 ** -7, 2 ** -7)


def test_moe_block_native_equals_reference_path():
    """The model's MLPBlock: native kernel vs its PyTorch path (dequantize per used expert)."""
    from gptoss.model.moe import MLPBlock
    torch.manual_seed(0)
    block = MLPBlock(hidden=128, intermediate=96, num_experts=5, top_k=2, limit=7.0,
                     alpha=1.702, eps=1e-5, packed=True, dtype=torch.bfloat16)
    x, ids, weights, b1s, s1, b1, b2s, s2, b2 = moe_case(5, 128, 96, 1, 2, seed=2)
    block.mlp1_weight.blocks.copy_(b1s)
    block.mlp1_weight.scales.copy_(s1)
    block.mlp2_weight.blocks.copy_(b2s)
    block.mlp2_weight.scales.copy_(s2)
    with torch.no_grad():
        block.mlp1_bias.copy_(b1)
        block.mlp2_bias.copy_(b2)
        block.gate.weight.normal_()
    x = torch.randn(2, 7, 128).bfloat16()
    with torch.no_grad():
        got = block(x)
        with native.reference_only():
            expected = block(x)
    assert_bf16_close(got - x, expected - x, 2 ** -6, 2 ** -6)


# ---- linear ------------------------------------------------------------------------------------
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("shape", [(1, 5, 7), (3, 37, 64), (5, 100, 2880), (16, 33, 4096)])
def test_linear_matches_fp32(isa, shape):
    N, R, K = shape
    g = torch.Generator().manual_seed(N * R)
    x, w = torch.randn(N, K, generator=g).bfloat16(), torch.randn(R, K, generator=g).bfloat16()
    b = torch.randn(R, generator=g).bfloat16()
    expected = x.float() @ w.float().T
    with native.use_isa(isa):
        got = native.linear(x, w, b)
        got32 = native.linear(x, w, None, torch.float32)
    assert_bf16_close(got, expected + b.float(), 2 ** -8, 1e-5)
    torch.testing.assert_close(got32, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


def test_linear_or_torch_takes_strided_rows_and_falls_back():
    w = torch.randn(40, 64).bfloat16()
    x = torch.randn(3, 128).bfloat16()[:, ::2]  # strided columns: copied
    torch.testing.assert_close(native.linear_or_torch(x, w).float(), x.float() @ w.float().T,
                               rtol=2 ** -7, atol=1e-2)
    many = torch.randn(native.linear_max_rows() + 1, 64).bfloat16()  # torch's GEMM
    torch.testing.assert_close(native.linear_or_torch(many, w), torch.nn.functional.linear(many, w))
    assert native.linear_max_rows() == (native.LINEAR_MAX_ROWS_AMX if "amx" in ISAS
                                        else native.LINEAR_MAX_ROWS)


# ---- paged decode attention --------------------------------------------------------------------
def attention_case(N, S, Hq, Hkv, D, slots_total, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(N, Hq, D, generator=g).bfloat16()
    k = torch.randn(slots_total, Hkv, D, generator=g).bfloat16()
    v = torch.randn(slots_total, Hkv, D, generator=g).bfloat16()
    slots = torch.stack([torch.randperm(slots_total, generator=g)[:S] for _ in range(N)])
    key_pos = torch.arange(S).expand(N, S).clone()
    q_pos = torch.full((N,), S - 1)
    if N > 1:  # empty slots at the end of row 1
        key_pos[1, -5:] = -1
        q_pos[1] = S - 6
    if N > 2:  # a padding row: nothing visible, output 0
        q_pos[2] = -1
    sinks = 2 * torch.randn(Hq, generator=g)
    return q, k, v, slots, key_pos, q_pos, sinks


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("shape,window", [((1, 1, 2, 1, 8), 0), ((3, 40, 8, 2, 16), 8),
                                          ((4, 300, 64, 8, 64), 128), ((2, 129, 64, 8, 64), 128),
                                          ((2, 128, 8, 8, 64), 128), ((3, 700, 64, 8, 64), 0)])
def test_decode_attention_matches_reference(isa, shape, window):
    q, k, v, slots, key_pos, q_pos, sinks = attention_case(*shape, slots_total=1024)
    visible = ref.visibility_mask(q_pos[:, None], key_pos, window)
    expected = ref.sink_attention(q.float()[:, None], k[slots].float(), v[slots].float(), sinks,
                                  visible, 0.125)[:, 0]
    with native.use_isa(isa):
        got = native.attention_decode(q, k, v, slots, key_pos, q_pos, sinks, window, 0.125)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected, rtol=2 ** -8, atol=2 ** -9)
    if shape[0] > 2:
        assert not got[2].any()


# ---- selection, fallback -----------------------------------------------------------------------
def run_python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


def test_env_selects_an_isa_or_disables_the_kernels():
    code = "from gptoss.kernels.cpu import library as L; print(L.isa())"
    assert run_python(code, GPTOSS_CPU_KERNELS="portable").stdout.strip() == "portable"
    assert run_python(code, GPTOSS_CPU_KERNELS="off").stdout.strip() == "None"


def test_unusable_choice_warns_once_and_the_model_still_runs():
    code = ("import torch, gptoss\nfrom gptoss.config import ModelConfig\n"
            "from gptoss.model.transformer import Transformer\n"
            "m = Transformer(ModelConfig.preset('tiny').replace(vocab_size=256), device='cpu')\n"
            "for p in m.parameters(): torch.nn.init.normal_(p, std=0.02)\n"
            "print(m(torch.tensor([[1, 2, 3]])).shape)\nprint(m(torch.tensor([[1]])).shape)")
    result = run_python(code, GPTOSS_CPU_KERNELS="sse9")
    assert result.returncode == 0, result.stderr
    assert "torch.Size([1, 3, 256])" in result.stdout
    assert result.stderr.count("native CPU kernels unavailable") == 1
    assert "names no built instruction set" in result.stderr


def test_build_reports_a_missing_compiler(tmp_path, monkeypatch):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(build.BuildError, match="no C\\+\\+ compiler"):
        build.build(tmp_path / "lib.so")


# ---- random weights, quantization ------------------------------------------------------------
def test_native_quantize_equals_reference_rule():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 64, generator=g) * torch.logspace(-44, 37, 4000)[:, None]
    x[0] = 0.0
    x[1, 3] = -0.0
    x[2] = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.5] * 8)  # rounding ties
    blocks, scales = native.mxfp4_quantize(x.contiguous())
    expected_blocks, expected_scales = quantize(x)
    assert torch.equal(blocks.view_as(expected_blocks), expected_blocks)
    assert torch.equal(scales.view_as(expected_scales), expected_scales)


def test_random_streams_native_equal_torch(monkeypatch):
    from gptoss.weights import random_weights as rw
    key = rw._key(3, "block.0.mlp.mlp1_weight")
    fast = rw.normal_stream(key, 12345, 50001)
    blocks, scales = native.random_mxfp4(key, 64, 48, 96, 0.05, rw.normal_table())
    monkeypatch.setattr(native, "native", lambda: None)  # the torch mirror
    slow = rw.normal_stream(key, 12345, 50001)
    assert torch.equal(fast, slow)
    expected = quantize(rw.normal_stream(key, 64, 48 * 96).view(48, 96) * 0.05)
    assert torch.equal(blocks, expected[0]) and torch.equal(scales, expected[1])
    assert abs(float(fast.mean())) < 0.02 and abs(float(fast.std()) - 1) < 0.02


def test_no_vector_code_runs_at_load_or_in_shared_functions():
    """Only the per-ISA kernels (in anonymous namespaces) may use AVX registers: static
    initializers run, and shared template code may be called, on CPUs without AVX-512/AVX2."""
    import shutil
    if not shutil.which("objdump"):
        pytest.skip("objdump not installed")
    loaded = native.native()
    if loaded is None:
        pytest.skip("native kernels unavailable")
    lib = loaded._name  # the file actually loaded: in-tree, or the cache's copy
    asm = subprocess.run(["objdump", "-d", "-C", "--no-show-raw-insn", str(lib)],
                         capture_output=True, text=True, check=True).stdout
    offenders, name = set(), ""
    for line in asm.splitlines():
        if line.endswith(">:"):
            name = line
        elif ("ymm" in line or "zmm" in line) and "anonymous namespace" not in name:
            offenders.add(name)
    assert not offenders, sorted(offenders)[:5]


def test_gradients_take_the_torch_path():
    w = torch.randn(8, 64).bfloat16().requires_grad_()
    x = torch.randn(2, 64).bfloat16()
    y = native.linear_or_torch(x, w)
    assert y.grad_fn is not None
    with torch.no_grad():
        assert native.linear_or_torch(x, w).grad_fn is None
