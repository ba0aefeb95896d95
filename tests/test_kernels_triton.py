"""Triton kernels against kernels/reference.py: on CUDA tensors where a GPU is present, else on
CPU tensors in Triton's interpreter (TRITON_INTERPRET=1, set here before the kernels are
defined). Small shapes, with the edge cases of the CPU kernels' tests: scale bytes 0 and 255,
tails, window boundaries, sinks, odd expert counts, one token, padding."""
from __future__ import annotations

import os
import warnings

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
from gptoss.kernels import triton as triton_kernels  # noqa: E402

if triton_kernels.missing_reason():
    pytest.skip(triton_kernels.missing_reason(), allow_module_level=True)
if not triton_kernels.interpreted() and not torch.cuda.is_available():
    pytest.skip("TRITON_INTERPRET is not 1 and there is no CUDA device", allow_module_level=True)

from gptoss.kernels import reference as ref  # noqa: E402
from gptoss.kernels.triton import attention, mxfp4_moe, rms_norm, routing  # noqa: E402
from gptoss.model.moe import MLPBlock  # noqa: E402

DEVICE = "cpu" if triton_kernels.interpreted() else "cuda"
LIMIT, ALPHA = 7.0, 1.702


@pytest.fixture(autouse=True)
def _quiet_numpy():
    with warnings.catch_warnings():  # the interpreter's exp/sigmoid overflow to 0 or 1, as wanted
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


# ---- routing -----------------------------------------------------------------------------------
@pytest.mark.parametrize("N,k,E,rows", [(1, 4, 32, 16), (7, 2, 5, 4), (40, 3, 7, 16), (3, 1, 1, 2)])
def test_expert_tiles_cover_each_assignment_once(N, k, E, rows):
    g = torch.Generator().manual_seed(N)
    ids = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(N)])
    plan = routing.expert_tiles(ids, E, rows)
    seen = []
    for e, start, end in zip(plan.expert.tolist(), plan.start.tolist(), plan.end.tolist()):
        if e < 0:
            assert start == end
            continue
        assert 0 < end - start <= rows or end - start > 0
        tile = plan.order[start:min(end, start + rows)].tolist()
        assert all(int(ids.reshape(-1)[a]) == e for a in tile)
        seen += tile
    assert sorted(seen) == list(range(N * k))


# ---- MoE ---------------------------------------------------------------------------------------
def _packed_block(E, H, I, k, seed, scale_lo=116, scale_hi=124) -> MLPBlock:
    """Random packed experts; scale bytes 116..123 (2**-11..2**-4, as in the real checkpoints)"""
    g = torch.Generator().manual_seed(seed)
    block = MLPBlock(hidden=H, intermediate=I, num_experts=E, top_k=k, limit=LIMIT, alpha=ALPHA,
                     eps=1e-5, packed=True, dtype=torch.bfloat16, device="cpu")
    for m in (block.mlp1_weight, block.mlp2_weight):
        m.blocks.copy_(torch.randint(0, 256, m.blocks.shape, generator=g, dtype=torch.uint8))
        m.scales.copy_(torch.randint(scale_lo, scale_hi, m.scales.shape, generator=g,
                                     dtype=torch.uint8))
    with torch.no_grad():
        block.mlp1_bias.copy_(torch.randn(block.mlp1_bias.shape, generator=g))
        block.mlp2_bias.copy_(torch.randn(block.mlp2_bias.shape, generator=g))
    return block.requires_grad_(False)


def _routing(N, E, k, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(N, E, generator=g)
    return ref.top_k_softmax(logits, k, torch.bfloat16)


def _check_moe(block: MLPBlock, N: int, seed: int):
    E, H = block.gate.weight.shape
    g = torch.Generator().manual_seed(seed + 1)
    t = torch.randn(N, H, generator=g).to(torch.bfloat16)
    ids, weights = _routing(N, E, block.top_k, seed)
    expected = block.experts_reference(t, ids, weights)
    got = mxfp4_moe.moe(t.to(DEVICE), ids.to(DEVICE), weights.to(DEVICE),
                        *(x.to(DEVICE) for x in (block.mlp1_weight.blocks, block.mlp1_weight.scales,
                                                 block.mlp1_bias, block.mlp2_weight.blocks,
                                                 block.mlp2_weight.scales, block.mlp2_bias)),
                        LIMIT, ALPHA).cpu()
    assert got.dtype == torch.bfloat16 and got.shape == expected.shape
    # bf16 outputs; both round h and the expert outputs at the same points, but the products are
    # summed in another order, so h may differ by one bf16 step, which the down projection carries
    amax = float(expected.float().nan_to_num().abs().max())
    torch.testing.assert_close(got.float(), expected.float(), rtol=2e-2, atol=1e-2 * amax,
                               equal_nan=True)
    return got, ids


@pytest.mark.parametrize("N,H,I,E,k", [
    (1, 64, 64, 8, 2),     # one token (decode)
    (5, 96, 32, 5, 2),     # odd expert count, contraction tails (96 and 32 are not 128-multiples)
    (40, 64, 96, 7, 3),    # 120 assignments: the 64-row tiles, some experts with several tiles
    (3, 32, 64, 4, 4),     # every expert used by every token
])
def test_moe_matches_reference(N, H, I, E, k):
    _check_moe(_packed_block(E, H, I, k, seed=N + E), N, seed=N)


def test_moe_scale_bytes_0_and_255():
    block = _packed_block(4, 64, 64, 2, seed=3)
    block.mlp1_weight.scales[1, :, 0] = 0        # 2**-127: subnormal fp32 values
    block.mlp2_weight.scales[2, 5, 1] = 255       # NaN block: reaches the outputs of expert 2
    got, ids = _check_moe(block, 6, seed=3)
    uses_2 = (ids == 2).any(1)
    assert torch.isnan(got[uses_2]).any() and not torch.isnan(got[~uses_2]).any()


def test_moe_unused_experts_and_large_scales():
    block = _packed_block(6, 64, 32, 1, seed=9, scale_lo=128, scale_hi=133)
    _check_moe(block, 2, seed=9)  # at most 2 of 6 experts used; values up to 6 * 2**5


# ---- attention ---------------------------------------------------------------------------------
def _attention_case(B, T, S, Hq, Hkv, D, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, Hq, D, generator=g).to(torch.bfloat16)
    k = torch.randn(B, S, Hkv, D, generator=g).to(torch.bfloat16)
    v = torch.randn(B, S, Hkv, D, generator=g).to(torch.bfloat16)
    sinks = (torch.randn(Hq, generator=g) * 2).to(torch.bfloat16)
    return q, k, v, sinks


def _reference(q, k, v, sinks, q_pos, key_pos, window):
    visible = ref.visibility_mask(q_pos, key_pos, window)
    return ref.sink_attention(q, k, v, sinks, visible, q.shape[-1] ** -0.5)


@pytest.mark.parametrize("window", [0, 4, 8])
@pytest.mark.parametrize("B,T,S,Hq,Hkv,D", [
    (2, 1, 37, 8, 2, 16),    # decode: one query per row, a key tail (37 = 64 - 27)
    (1, 13, 13, 4, 4, 32),   # prefill from empty, no grouping
    (2, 9, 70, 8, 1, 16),    # prefill after a prefix, two key tiles
])
def test_attention_matches_reference(B, T, S, Hq, Hkv, D, window):
    q, k, v, sinks = _attention_case(B, T, S, Hq, Hkv, D, seed=B * T + window)
    key_pos = torch.arange(S).expand(B, S).clone()
    q_pos = torch.arange(S - T, S).expand(B, T).clone()
    if B > 1:  # the second row is shorter: later keys empty, its last query is padding
        key_pos[1, S - 5:] = -1
        q_pos[1] -= 5
        q_pos[1, -1] = -1
    expected = _reference(q, k, v, sinks, q_pos, key_pos, window)
    got = attention.sink_attention(*(x.to(DEVICE) for x in (q, k, v, q_pos, key_pos, sinks)),
                                   window, D ** -0.5).cpu()
    valid = (q_pos >= 0)[..., None].expand_as(got)
    torch.testing.assert_close(got.float()[valid], expected.float()[valid], rtol=1e-2, atol=1e-2)
    assert torch.all(got.float()[~valid] == 0)  # padding sees nothing: all mass on the sink


def test_attention_reads_paged_slots_in_place():
    """Keys scattered over a storage of slots (as the paged cache holds them), rows with
    different lengths, a window boundary exactly at the block edge."""
    B, T, Hq, Hkv, D, S, window = 2, 3, 4, 2, 16, 40, 16
    q, k, v, sinks = _attention_case(B, T, S, Hq, Hkv, D, seed=11)
    g = torch.Generator().manual_seed(12)
    slots = torch.randperm(B * S + 20, generator=g)[:B * S].view(B, S)
    k_store = torch.zeros(B * S + 20, Hkv, D, dtype=torch.bfloat16)
    v_store = torch.zeros_like(k_store)
    k_store[slots.flatten()] = k.reshape(-1, Hkv, D)
    v_store[slots.flatten()] = v.reshape(-1, Hkv, D)
    key_pos = torch.arange(S).expand(B, S).clone() + 10   # a sliding view starting at 10
    lengths = torch.tensor([S, 25])
    key_pos[1, 25:] = -1
    q_pos = torch.stack([torch.arange(S + 7, S + 10), torch.arange(32, 35)])
    expected = _reference(q, k, v, sinks, q_pos, key_pos, window)
    got = attention.sink_attention_paged(
        *(x.to(DEVICE) for x in (q, k_store, v_store, slots, key_pos, q_pos, sinks)), window,
        D ** -0.5, lengths=lengths.to(DEVICE)).cpu()
    torch.testing.assert_close(got.float(), expected.float(), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("window,splits", [(0, 3), (16, 4), (0, None)])
def test_attention_decode_split_over_keys(window, splits):
    """Flash-decoding: keys divided among programs (the last splits see few or no keys: with
    a window most of them see nothing), partial softmaxes combined in fp32."""
    B, T, S, Hq, Hkv, D = 2, 1, 600, 8, 2, 16
    q, k, v, sinks = _attention_case(B, T, S, Hq, Hkv, D, seed=21)
    key_pos = torch.arange(S).expand(B, S).clone()
    key_pos[1, 400:] = -1
    q_pos = torch.tensor([[S - 1], [399]])
    expected = _reference(q, k, v, sinks, q_pos, key_pos, window)
    B_, S_ = k.shape[:2]
    slots = torch.arange(B_ * S_).view(B_, S_)
    got = attention.sink_attention_paged(
        *(x.to(DEVICE) for x in (q, k.reshape(-1, Hkv, D), v.reshape(-1, Hkv, D), slots,
                                 key_pos, q_pos, sinks)), window, D ** -0.5, splits=splits).cpu()
    torch.testing.assert_close(got.float(), expected.float(), rtol=1e-2, atol=1e-2)
    assert attention._splits(1, S, 4) > 1 and attention._splits(5, S, 4) == 1


def test_attention_dominant_sink_and_no_visible_key():
    B, T, S, Hq, Hkv, D = 1, 2, 8, 4, 2, 16
    q, k, v, _ = _attention_case(B, T, S, Hq, Hkv, D, seed=5)
    sinks = torch.tensor([30.0, -30.0, 0.0, 5.0], dtype=torch.bfloat16)
    key_pos = torch.arange(S)[None].clone()
    q_pos = torch.tensor([[7, 20]])  # with window 4 the second query sees no key
    expected = _reference(q, k, v, sinks, q_pos, key_pos, 4)
    got = attention.sink_attention(*(x.to(DEVICE) for x in (q, k, v, q_pos, key_pos, sinks)), 4,
                                   D ** -0.5).cpu()
    torch.testing.assert_close(got.float(), expected.float(), rtol=1e-2, atol=1e-3)
    assert torch.all(got[0, 1] == 0)


# ---- RMSNorm -----------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,scale_dtype", [((3, 64), torch.bfloat16),
                                               ((2, 5, 96), torch.float32),
                                               ((1, 1, 2880), torch.bfloat16)])
def test_rms_norm_matches_reference(shape, scale_dtype):
    g = torch.Generator().manual_seed(shape[-1])
    x = (torch.randn(shape, generator=g) * 3).to(torch.bfloat16)
    scale = torch.randn(shape[-1], generator=g).to(scale_dtype)
    expected = ref.rms_norm(x, scale, 1e-5)
    got = rms_norm.rms_norm(x.to(DEVICE), scale.to(DEVICE), 1e-5).cpu()
    torch.testing.assert_close(got.float(), expected.float(), rtol=1e-2, atol=1e-2)


# ---- the model through the Triton kernels ------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_models(tiny_checkpoints):
    from gptoss.weights.loader import load_model
    path = tiny_checkpoints["hf-mxfp4"]
    reference = load_model(path, device=DEVICE, kernels="reference")  # same linear layers
    fast = load_model(path, device=DEVICE, kernels="triton")
    return reference, fast


def test_model_logits_match_the_reference_path(tiny_models):
    from gptoss.kernels.cpu import library as native
    reference, fast = tiny_models
    ids = torch.randint(0, 1024, (2, 11), generator=torch.Generator().manual_seed(0))
    positions = torch.arange(11).expand(2, 11).clone()
    positions[1, 8:] = -1  # padding at the end of the second row
    with native.reference_only():
        expected = reference(ids.to(DEVICE), positions.to(DEVICE)).cpu()
    got = fast(ids.to(DEVICE), positions.to(DEVICE)).cpu()
    real = positions >= 0
    # the interpreter reproduces the bf16 reference bit for bit layer by layer; on a GPU the
    # kernels sum in another order, which a random 4-layer model amplifies a little
    tol = 3e-2 if DEVICE == "cpu" else 1e-1
    torch.testing.assert_close(got[real].float(), expected[real].float(), rtol=tol, atol=tol)


@pytest.mark.parametrize("layer", [0, 1])  # sliding (window 8), full
def test_attention_block_over_the_paged_cache(tiny_models, layer):
    """Prefill then decode through the engine's paged cache: the kernel reads its blocks."""
    import contextlib
    from gptoss.engine.kv_cache import PagedKVCache, PrefixHit
    from gptoss.kernels.cpu import library as native
    reference, fast = tiny_models
    outputs = []
    for model, kernels, context in ((reference, "reference", native.reference_only()),
                                    (fast, "triton", contextlib.nullcontext())):
        cache = PagedKVCache(model.config, block_size=4, full_blocks=16, sliding_blocks=16,
                             device=DEVICE)
        block = model.block[layer].attn
        g = torch.Generator().manual_seed(layer)
        x = torch.randn(1, 14, model.config.hidden_size, generator=g).to(torch.bfloat16)
        cache.admit("a", PrefixHit())
        out = []
        for start, length in ((0, 11), (11, 1), (12, 1), (13, 1)):
            cache.allocate("a", start, start + length)
            pos = torch.arange(start, start + length)[None]
            view = cache.view([("a", start, length)], length)
            cos_sin = model.rotary.cos_sin(pos.to(DEVICE))
            with context:
                out.append(block(x[:, start:start + length].to(DEVICE), pos.to(DEVICE),
                                 cos_sin, view).cpu())
            cache.advance("a", list(range(start + length)), start + length)
        outputs.append(torch.cat(out, dim=1))
        assert block.kernels == kernels
    torch.testing.assert_close(outputs[1].float(), outputs[0].float(), rtol=1e-2, atol=1e-2)


@pytest.mark.slow  # about 25 s in the interpreter
def test_engine_greedy_tokens_match_the_reference_path(tiny_models):
    """Prefill and decode over the paged cache (blocks read in place by the kernel)."""
    from gptoss.engine.llm import LLM
    from gptoss.engine.sampler import SamplingParams
    from gptoss.kernels.cpu import library as native
    reference, fast = tiny_models
    prompts = [[5, 17, 300, 42, 7, 9, 11, 600, 3, 4], [8, 9, 10]]
    params = SamplingParams(temperature=0.0, max_tokens=4, stop_token_ids=[])  # past the window

    def greedy(model):
        llm = LLM(model, block_size=4, kv_cache_tokens=128, max_num_seqs=2)  # small: the
        # interpreter copies each kernel argument (the whole cache layer) in and out per call
        return [out.token_ids for out in llm.generate(prompts, params)]

    with native.reference_only():
        expected = greedy(reference)
    assert greedy(fast) == expected
