"""Writing, loading and converting checkpoints. The independent oracle is transformers: its
`GptOssForCausalLM.from_pretrained` reads the folders we write, and its parameters must equal our
canonical tensors under the renaming written out below (not taken from gptoss.weights)."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from gptoss.kernels import mxfp4
from gptoss.weights.loader import (detect_layout, iter_canonical, load_model, open_checkpoint,
                                   with_experts)
from gptoss.weights.writer import convert_checkpoint, write_random_checkpoint

transformers = pytest.importorskip("transformers")


def raw_tensors(folder) -> dict[str, tuple[torch.dtype, list[int], bytes]]:
    """Every tensor of every *.safetensors file in `folder`, as (dtype, shape, raw bytes)."""
    out = {}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), "pt") as f:
            for name in f.keys():
                t = f.get_tensor(name)
                out[name] = (t.dtype, list(t.shape), t.contiguous().view(torch.uint8).numpy().tobytes())
    return out


def canonical(folder, *, packed: bool, dtype=torch.float32) -> dict[str, torch.Tensor]:
    with open_checkpoint(folder) as ckpt:
        stream = with_experts(iter_canonical(ckpt), packed=packed, dense_dtype=dtype)
        return {n: (t.to(dtype) if t.is_floating_point() else t) for n, t in stream}


def expected_hf_params(c: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """transformers' parameter names -> values, from canonical tensors (dense experts)."""
    Q, K = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
    out = {"model.embed_tokens.weight": c["embedding.weight"], "model.norm.weight": c["norm.scale"],
           "lm_head.weight": c["unembedding.weight"]}
    for i in range(config.num_layers):
        h, b = f"model.layers.{i}.", f"block.{i}."
        for kind in ("weight", "bias"):
            qkv = c[b + f"attn.qkv.{kind}"]
            out[h + f"self_attn.q_proj.{kind}"] = qkv[:Q]
            out[h + f"self_attn.k_proj.{kind}"] = qkv[Q:Q + K]
            out[h + f"self_attn.v_proj.{kind}"] = qkv[Q + K:]
            out[h + f"self_attn.o_proj.{kind}"] = c[b + f"attn.out.{kind}"]
            out[h + f"mlp.router.{kind}"] = c[b + f"mlp.gate.{kind}"]
        out[h + "self_attn.sinks"] = c[b + "attn.sinks"]
        out[h + "input_layernorm.weight"] = c[b + "attn.norm.scale"]
        out[h + "post_attention_layernorm.weight"] = c[b + "mlp.norm.scale"]
        out[h + "mlp.experts.gate_up_proj"] = c[b + "mlp.mlp1_weight"].transpose(1, 2)  # [E, H, 2I]
        out[h + "mlp.experts.gate_up_proj_bias"] = c[b + "mlp.mlp1_bias"]
        out[h + "mlp.experts.down_proj"] = c[b + "mlp.mlp2_weight"].transpose(1, 2)  # [E, I, H]
        out[h + "mlp.experts.down_proj_bias"] = c[b + "mlp.mlp2_bias"]
    return out


def assert_params_equal(hf_model, expected: dict[str, torch.Tensor]) -> None:
    params = dict(hf_model.named_parameters())
    assert sorted(params) == sorted(expected)
    for name, value in expected.items():
        assert torch.equal(params[name].detach().float(), value.float()), name


# ---- what the writer produces --------------------------------------------------------------------
def test_files_of_each_layout(tiny_checkpoints, tiny_config):
    for layout, folder in tiny_checkpoints.items():
        assert detect_layout(folder) == layout
        config = json.loads((folder / "config.json").read_text())
        if layout == "original":
            assert {p.name for p in folder.iterdir()} == {"config.json", "dtypes.json",
                                                          "model.safetensors"}
            assert config["num_experts"] == tiny_config.num_experts
            dtypes = json.loads((folder / "dtypes.json").read_text())
            assert dtypes["block.0.mlp.mlp1_weight.blocks"] == "FP4"
            assert dtypes["block.0.mlp.mlp2_weight.scales"] == "UE8"
            assert dtypes["block.0.attn.qkv.weight"] == "BF16"
            continue
        assert config["model_type"] == "gpt_oss"
        assert ("quantization_config" in config) == (layout == "hf-mxfp4")
        gen = json.loads((folder / "generation_config.json").read_text())
        assert gen["eos_token_id"] == list(tiny_config.eos_token_ids)
        assert gen["bos_token_id"] == 199998
        index = json.loads((folder / "model.safetensors.index.json").read_text())
        raw = raw_tensors(folder)
        assert sorted(index["weight_map"]) == sorted(raw)
        assert index["metadata"]["total_size"] == sum(len(v[2]) for v in raw.values())


def test_published_tensor_names_shapes_and_dtypes(tiny_checkpoints, tiny_config):
    c = tiny_config
    E, H, I = c.num_experts, c.hidden_size, c.intermediate_size
    mx = raw_tensors(tiny_checkpoints["hf-mxfp4"])
    p = "model.layers.1.mlp.experts."
    assert mx[p + "gate_up_proj_blocks"][:2] == (torch.uint8, [E, 2 * I, H // 32, 16])
    assert mx[p + "gate_up_proj_scales"][:2] == (torch.uint8, [E, 2 * I, H // 32])
    assert mx[p + "down_proj_blocks"][:2] == (torch.uint8, [E, H, I // 32, 16])
    assert mx[p + "gate_up_proj_bias"][:2] == (torch.bfloat16, [E, 2 * I])
    assert mx["model.layers.0.self_attn.k_proj.weight"][:2] == (torch.bfloat16,
                                                                [c.kv_dim, H])
    bf = raw_tensors(tiny_checkpoints["hf-bf16"])
    assert bf[p + "gate_up_proj"][:2] == (torch.bfloat16, [E, H, 2 * I])
    assert bf[p + "down_proj"][:2] == (torch.bfloat16, [E, I, H])
    orig = raw_tensors(tiny_checkpoints["original"])
    assert orig["block.1.attn.qkv.weight"][:2] == (torch.bfloat16, [c.qkv_dim, H])
    assert orig["block.1.mlp.mlp1_weight.blocks"][:2] == (torch.uint8, [E, 2 * I, H // 32, 16])


def test_random_weights_are_sane_and_seeded(tiny_checkpoints, tiny_config, tmp_path):
    c = canonical(tiny_checkpoints["hf-mxfp4"], packed=False)
    assert all(torch.isfinite(t).all() for t in c.values())
    assert 0.5 < float(c["embedding.weight"].std()) < 2
    assert 0.05 < float(c["block.0.mlp.mlp1_bias"].std()) < 0.2
    scales = canonical(tiny_checkpoints["hf-mxfp4"], packed=True)["block.0.mlp.mlp1_weight.scales"]
    assert 110 < float(scales.float().mean()) < 127  # realistic MXFP4 exponents
    again = write_random_checkpoint(tiny_config, tmp_path / "a", seed=0, progress=False)
    other = write_random_checkpoint(tiny_config, tmp_path / "b", seed=1, progress=False)
    assert raw_tensors(again) == raw_tensors(tiny_checkpoints["hf-mxfp4"])
    assert raw_tensors(other) != raw_tensors(again)


def test_same_seed_same_model_in_every_layout(tiny_checkpoints):
    ref = canonical(tiny_checkpoints["hf-mxfp4"], packed=False)
    for layout in ("original", "hf-bf16"):
        got = canonical(tiny_checkpoints[layout], packed=False)
        assert sorted(got) == sorted(ref)
        for name in ref:
            assert torch.equal(got[name], ref[name]), (layout, name)


# ---- transformers reads what we write ------------------------------------------------------------
def test_transformers_loads_hf_mxfp4(tiny_checkpoints, tiny_config):
    from transformers import GptOssForCausalLM, Mxfp4Config
    model = GptOssForCausalLM.from_pretrained(tiny_checkpoints["hf-mxfp4"], dtype=torch.float32,
                                              quantization_config=Mxfp4Config(dequantize=True))
    ours = canonical(tiny_checkpoints["hf-mxfp4"], packed=False)
    assert_params_equal(model, expected_hf_params(ours, tiny_config))


def test_transformers_loads_hf_bf16(tiny_checkpoints, tiny_config):
    from transformers import GptOssForCausalLM
    model = GptOssForCausalLM.from_pretrained(tiny_checkpoints["hf-bf16"], dtype=torch.bfloat16)
    ours = canonical(tiny_checkpoints["hf-bf16"], packed=False, dtype=torch.bfloat16)
    assert_params_equal(model, expected_hf_params(ours, tiny_config))


def test_reads_a_bf16_checkpoint_saved_by_transformers(tiny_checkpoints, tiny_config, tmp_path):
    """transformers writes an fp32 HF checkpoint; we load it and quantize it back bit-exactly."""
    from transformers import GptOssForCausalLM, Mxfp4Config
    model = GptOssForCausalLM.from_pretrained(tiny_checkpoints["hf-mxfp4"], dtype=torch.float32,
                                              quantization_config=Mxfp4Config(dequantize=True))
    model.config.quantization_config = None
    del model.config.quantization_config
    model.save_pretrained(tmp_path / "saved")
    assert detect_layout(tmp_path / "saved") == "hf-bf16"
    ours = canonical(tmp_path / "saved", packed=False)
    assert_params_equal(model, expected_hf_params(ours, tiny_config))
    back = convert_checkpoint(tmp_path / "saved", tmp_path / "mx", "hf-mxfp4", progress=False)
    packed = canonical(back, packed=True)
    ref = canonical(tiny_checkpoints["hf-mxfp4"], packed=True)
    for name in ref:
        if name.endswith((".blocks", ".scales")):
            assert torch.equal(packed[name], ref[name]), name


# ---- conversions ---------------------------------------------------------------------------------
def test_hf_to_original_to_hf_is_bit_identical(tiny_checkpoints, tmp_path):
    src = tiny_checkpoints["hf-mxfp4"]
    orig = convert_checkpoint(src, tmp_path / "orig", "original", progress=False)
    assert raw_tensors(orig) == raw_tensors(tiny_checkpoints["original"])
    back = convert_checkpoint(orig, tmp_path / "hf", "hf-mxfp4", progress=False)
    assert raw_tensors(back) == raw_tensors(src)
    assert json.loads((back / "config.json").read_text())["quantization_config"]["quant_method"] == "mxfp4"


def test_mxfp4_to_bf16_and_back(tiny_checkpoints, tmp_path):
    bf = convert_checkpoint(tiny_checkpoints["hf-mxfp4"], tmp_path / "bf", "hf-bf16", progress=False)
    assert raw_tensors(bf) == raw_tensors(tiny_checkpoints["hf-bf16"])  # exact dequantization
    assert "quantization_config" not in json.loads((bf / "config.json").read_text())
    mx = convert_checkpoint(bf, tmp_path / "mx", "hf-mxfp4", progress=False)
    assert raw_tensors(mx) == raw_tensors(tiny_checkpoints["hf-mxfp4"])  # quantizer fixed point
    orig = convert_checkpoint(bf, tmp_path / "orig", "original", progress=False)
    assert raw_tensors(orig) == raw_tensors(tiny_checkpoints["original"])


def test_sharded_writes_load_the_same(tiny_config, tiny_checkpoints, tmp_path):
    hf = write_random_checkpoint(tiny_config, tmp_path / "hf", seed=0, shard_size=200_000,
                                 progress=False)
    shards = sorted(p.name for p in hf.glob("*.safetensors"))
    assert len(shards) > 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    orig = write_random_checkpoint(tiny_config, tmp_path / "orig", seed=0, layout="original",
                                   shard_size=200_000, progress=False)
    assert len(list(orig.glob("*.safetensors"))) > 2 and not (orig / "model.safetensors").exists()
    ref = raw_tensors(tiny_checkpoints["hf-mxfp4"])
    assert raw_tensors(hf) == ref
    assert raw_tensors(orig) == raw_tensors(tiny_checkpoints["original"])


def test_repo_root_with_original_subfolder(tiny_checkpoints, tiny_config, tmp_path):
    root = write_random_checkpoint(tiny_config, tmp_path / "repo", seed=0, progress=False)
    convert_checkpoint(root, root / "original", "original", progress=False)
    assert detect_layout(root) == "hf-mxfp4"  # the root wins
    only = tmp_path / "only"
    convert_checkpoint(root, only / "original", "original", progress=False)
    assert detect_layout(only) == "original"  # a folder holding just original/


# ---- load_model --------------------------------------------------------------------------------
def test_load_model_every_layout_gives_the_same_logits(tiny_checkpoints):
    ids = torch.tensor([[5, 17, 300, 2, 999, 42, 7, 8, 9, 10, 11, 12]])
    logits = {}
    for layout, folder in tiny_checkpoints.items():
        model = load_model(folder, dtype=torch.float32)
        assert model.experts == ("dense" if layout == "hf-bf16" else "mxfp4")
        with torch.no_grad():
            logits[layout] = model(ids)
    assert logits["hf-mxfp4"].shape == (1, 12, 1024)
    assert float(logits["hf-mxfp4"].std()) > 0.3  # not degenerate
    torch.testing.assert_close(logits["original"], logits["hf-mxfp4"], rtol=0, atol=0)
    torch.testing.assert_close(logits["hf-bf16"], logits["hf-mxfp4"], rtol=1e-5, atol=1e-5)


def test_load_model_matches_transformers_logits(tiny_checkpoints):
    from transformers import GptOssForCausalLM, Mxfp4Config
    folder = tiny_checkpoints["hf-mxfp4"]
    theirs = GptOssForCausalLM.from_pretrained(folder, dtype=torch.float32,
                                               quantization_config=Mxfp4Config(dequantize=True))
    ids = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]])
    ours = load_model(folder, dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), theirs(ids).logits, rtol=1e-4, atol=1e-4)


def test_load_model_expert_options(tiny_checkpoints):
    packed = load_model(tiny_checkpoints["hf-mxfp4"])
    state = packed.state_dict()
    assert state["block.0.mlp.mlp1_weight.blocks"].dtype == torch.uint8
    assert state["block.0.attn.qkv.weight"].dtype == torch.bfloat16
    dense = load_model(tiny_checkpoints["hf-mxfp4"], dtype=torch.float32, dequantize=True)
    want = mxfp4.dequantize(state["block.0.mlp.mlp1_weight.blocks"],
                            state["block.0.mlp.mlp1_weight.scales"], torch.float32)
    assert torch.equal(dense.state_dict()["block.0.mlp.mlp1_weight"], want)
    requantized = load_model(tiny_checkpoints["hf-bf16"], quantize=True).state_dict()
    for name, value in state.items():
        assert torch.equal(requantized[name], value), name
    with pytest.raises(ValueError, match="at most one"):
        load_model(tiny_checkpoints["hf-mxfp4"], dequantize=True, quantize=True)


def test_load_model_resolves_a_cached_hub_repo(tiny_checkpoints, tmp_path, monkeypatch):
    """A repo id found in the local Hugging Face cache loads offline."""
    import shutil

    import huggingface_hub.constants
    repo = tmp_path / "hub" / "models--someone--tiny-gpt-oss"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(tiny_checkpoints["hf-mxfp4"], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert detect_layout("someone/tiny-gpt-oss") == "hf-mxfp4"
    model = load_model("someone/tiny-gpt-oss")
    assert model.config.num_layers == 4


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_load_model_on_cuda(tiny_checkpoints):
    ids = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]])
    for layout, folder in tiny_checkpoints.items():
        cpu = load_model(folder, dtype=torch.float32)
        gpu = load_model(folder, device="cuda", dtype=torch.float32)
        assert all(t.device.type == "cuda" for t in gpu.state_dict().values()), layout
        with torch.no_grad():
            torch.testing.assert_close(gpu(ids.cuda()).cpu(), cpu(ids), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("experts", ["mxfp4", "dense"])
def test_canonical_names_are_the_model_state_dict(tiny_config, experts):
    """The contract in docs/architecture.md: loader names/shapes == Transformer.state_dict()."""
    from gptoss.model.transformer import Transformer
    from gptoss.weights.layouts import canonical_specs
    model = Transformer(tiny_config, experts=experts, dtype=torch.bfloat16, device="meta")
    state = {n: (tuple(t.shape), t.dtype) for n, t in model.state_dict().items()}
    specs = {s.name: (s.shape, s.dtype) for s in canonical_specs(tiny_config, packed=experts == "mxfp4")}
    assert state == specs


def test_fp32_norm_scales_stay_fp32_in_a_bf16_model(tiny_checkpoints, tiny_config, tmp_path):
    """A checkpoint's fp32 RMSNorm scales are held in fp32 (they used to be rounded to bf16), so
    the norm equals transformers' GptOssRMSNorm holding the same fp32 weight."""
    import shutil
    from safetensors.torch import load_file, save_file
    from transformers.models.gpt_oss.modeling_gpt_oss import GptOssRMSNorm

    folder = tmp_path / "fp32-norms"
    shutil.copytree(tiny_checkpoints["hf-mxfp4"], folder)
    g = torch.Generator().manual_seed(3)
    for path in folder.glob("*.safetensors"):
        tensors = load_file(path)
        for name in tensors:
            if name.endswith(("layernorm.weight", "model.norm.weight")):
                tensors[name] = 1 + 0.1 * torch.randn(tensors[name].shape, generator=g)  # fp32
        save_file(tensors, path, metadata={"format": "pt"})
    stored = {n: t for p in folder.glob("*.safetensors") for n, t in load_file(p).items()}
    model = load_model(folder, dtype=torch.bfloat16)
    scale = model.block[0].attn.norm.scale
    want = stored["model.layers.0.input_layernorm.weight"]
    assert scale.dtype == torch.float32 and torch.equal(scale, want)
    assert model.norm.scale.dtype == torch.float32 and model.embedding.weight.dtype == torch.bfloat16
    assert not torch.equal(want.to(torch.bfloat16).float(), want)  # the test can see rounding

    oracle = GptOssRMSNorm(tiny_config.hidden_size, eps=tiny_config.rms_norm_eps)
    with torch.no_grad():
        oracle.weight.copy_(want)
    x = torch.randn(3, tiny_config.hidden_size, generator=g).to(torch.bfloat16)
    with torch.no_grad():
        assert torch.equal(model.block[0].attn.norm(x), oracle(x))
