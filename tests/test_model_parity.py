"""The model against transformers' GptOssForCausalLM (the independent oracle), in fp32.

The oracle's parameters are randomised here and mapped onto our canonical names by a mapping
written in this file (independent of gptoss.weights), with dense experts.
"""
import pytest
import torch

transformers = pytest.importorskip("transformers")

from gptoss.config import ModelConfig  # noqa: E402
from gptoss.model.cache import DynamicCache  # noqa: E402
from gptoss.model.transformer import Transformer  # noqa: E402

CONFIGS = {
    "gqa2": dict(num_layers=2, num_experts=4, experts_per_token=2, num_heads=4, num_kv_heads=2),
    "mqa": dict(num_layers=3, num_experts=8, experts_per_token=4, num_heads=4, num_kv_heads=1),
    "mha": dict(num_layers=2, num_experts=6, experts_per_token=1, num_heads=2, num_kv_heads=2),
    "gqa4": dict(num_layers=4, num_experts=5, experts_per_token=3, num_heads=8, num_kv_heads=2,
                 hidden_size=96, intermediate_size=32),
}


def small_config(**kw) -> ModelConfig:
    base = dict(vocab_size=512, hidden_size=64, intermediate_size=64, head_dim=16,
                sliding_window=8, eos_token_ids=(2,), pad_token_id=0)
    base.update(kw)
    return ModelConfig.preset("tiny").replace(**base)


def hf_model(config: ModelConfig, seed: int, scale: float = 0.3):
    from transformers import GptOssConfig, GptOssForCausalLM

    hf_config = GptOssConfig(**config.to_hf_dict(quantized=False))
    hf_config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = GptOssForCausalLM(hf_config).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
            elif "sinks" in name:
                p.copy_(torch.randn_like(p))
            else:  # large enough that the SwiGLU clamps and the window matter
                p.copy_(torch.randn_like(p) * (0.5 if p.dim() == 1 else scale))
    return model


def canonical_state(hf, config: ModelConfig) -> dict[str, torch.Tensor]:
    sd = hf.state_dict()
    out = {"embedding.weight": sd["model.embed_tokens.weight"],
           "norm.scale": sd["model.norm.weight"], "unembedding.weight": sd["lm_head.weight"]}
    for i in range(config.num_layers):
        p, b = f"model.layers.{i}.", f"block.{i}."
        out[b + "attn.norm.scale"] = sd[p + "input_layernorm.weight"]
        for kind in ("weight", "bias"):
            out[b + f"attn.qkv.{kind}"] = torch.cat(
                [sd[p + f"self_attn.{x}_proj.{kind}"] for x in "qkv"])
            out[b + f"attn.out.{kind}"] = sd[p + f"self_attn.o_proj.{kind}"]
            out[b + f"mlp.gate.{kind}"] = sd[p + f"mlp.router.{kind}"]
        out[b + "attn.sinks"] = sd[p + "self_attn.sinks"]
        out[b + "mlp.norm.scale"] = sd[p + "post_attention_layernorm.weight"]
        out[b + "mlp.mlp1_weight"] = sd[p + "mlp.experts.gate_up_proj"].transpose(1, 2)
        out[b + "mlp.mlp1_bias"] = sd[p + "mlp.experts.gate_up_proj_bias"]
        out[b + "mlp.mlp2_weight"] = sd[p + "mlp.experts.down_proj"].transpose(1, 2)
        out[b + "mlp.mlp2_bias"] = sd[p + "mlp.experts.down_proj_bias"]
    return {k: v.contiguous().clone() for k, v in out.items()}


def ours_from(hf, config: ModelConfig) -> Transformer:
    model = Transformer(config, experts="dense", dtype=torch.float32, device="meta")
    model.load_state_dict(canonical_state(hf, config), assign=True, strict=True)
    return model.eval()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def pair(request):
    config = small_config(**CONFIGS[request.param])
    hf = hf_model(config, seed=sorted(CONFIGS).index(request.param))
    return config, hf, ours_from(hf, config)


@torch.no_grad()
def test_logits_match_transformers(pair):
    config, hf, ours = pair
    ids = torch.randint(0, config.vocab_size, (2, 40), generator=torch.Generator().manual_seed(1))
    expected = hf(ids).logits
    got = ours(ids)
    assert rel_err(got, expected) < 1e-4
    # per position too, past the sliding window (8) where both attention kinds differ
    for t in (0, 7, 8, 20, 39):
        assert rel_err(got[:, t], expected[:, t]) < 1e-4


@torch.no_grad()
def test_padded_batch_equals_single_sequences(pair):
    config, _, ours = pair
    g = torch.Generator().manual_seed(2)
    lengths = [23, 9, 31]
    T = max(lengths)
    ids = torch.randint(0, config.vocab_size, (len(lengths), T), generator=g)
    positions = torch.full((len(lengths), T), -1)
    for row, n in enumerate(lengths):  # left padding for row 1, right padding for the others
        if row == 1:
            positions[row, T - n:] = torch.arange(n)
        else:
            positions[row, :n] = torch.arange(n)
    batched = ours(ids, positions)
    for row, n in enumerate(lengths):
        valid = positions[row] >= 0
        alone = ours(ids[row:row + 1, valid])
        assert rel_err(batched[row, valid], alone[0]) < 1e-4


@torch.no_grad()
def test_incremental_decoding_matches_full_forward(pair):
    config, _, ours = pair
    ids = torch.randint(0, config.vocab_size, (2, 37), generator=torch.Generator().manual_seed(3))
    full = ours(ids)
    cache = DynamicCache(config, batch_size=2, dtype=torch.float32, initial_capacity=4)
    chunks = [(0, 5), (5, 6), (6, 19), (19, 20)] + [(t, t + 1) for t in range(20, 37)]
    for start, end in chunks:
        pos = torch.arange(start, end).expand(2, -1)
        step = ours(ids[:, start:end], pos, cache)
        assert rel_err(step, full[:, start:end]) < 1e-4, (start, end)
    for layer in range(config.num_layers):
        held = cache.held_positions(layer)
        if config.window(layer):
            assert held == config.sliding_window
        else:
            assert held >= 37


@torch.no_grad()
def test_greedy_generation_matches_transformers(pair):
    config, hf, ours = pair
    prompt = torch.randint(0, config.vocab_size, (1, 6), generator=torch.Generator().manual_seed(4))
    expected = hf.generate(prompt, max_new_tokens=64, do_sample=False, min_new_tokens=64,
                           eos_token_id=None, pad_token_id=0)[0, 6:].tolist()
    cache = DynamicCache(config, batch_size=1, dtype=torch.float32)
    logits = ours(prompt, torch.arange(6)[None], cache)
    got = []
    for t in range(6, 70):
        nxt = int(logits[0, -1].argmax())
        got.append(nxt)
        logits = ours(torch.tensor([[nxt]]), torch.tensor([[t]]), cache)
    assert got == expected


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@torch.no_grad()
def test_cuda_matches_transformers(pair):
    config, hf, ours = pair
    ids = torch.randint(0, config.vocab_size, (2, 40), generator=torch.Generator().manual_seed(5))
    expected = hf(ids).logits
    got = ours.to("cuda")(ids.cuda()).cpu()
    ours.to("cpu")
    assert rel_err(got, expected) < 1e-4


@torch.no_grad()
def test_bf16_close_to_fp32_oracle(pair):
    # bf16 rounding flips near-tied expert choices, so this uses gentler weights than the others
    config, _, _ = pair
    hf = hf_model(config, seed=7, scale=0.05)
    ids = torch.randint(0, config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(6))
    expected = hf(ids).logits
    bf16 = Transformer(config, experts="dense", dtype=torch.bfloat16, device="meta")
    state = {k: v.to(torch.bfloat16) for k, v in canonical_state(hf, config).items()}
    bf16.load_state_dict(state, assign=True, strict=True)
    got = bf16(ids).float()
    assert bf16.dtype == torch.bfloat16
    assert rel_err(got, expected) < 5e-2


@torch.no_grad()
@pytest.mark.parametrize("bad", [-1, 512, 10**6])
def test_out_of_range_ids_raise_as_in_transformers(pair, bad):
    """(They used to be clamped silently.) transformers' embedding raises; so does ours, by name."""
    from gptoss.model.transformer import TokenIdError

    config, hf, ours = pair
    ids = torch.tensor([[1, 2, bad]])
    with pytest.raises(IndexError):
        hf(ids)
    with pytest.raises(TokenIdError, match=f"\\[0, {config.vocab_size}\\).*{bad}"):
        ours(ids)
