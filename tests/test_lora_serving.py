"""Serving LoRA adapters without merging (`LLM(..., lora=...)`, `gptoss serve --lora`).

Oracles: the same adapter folded into the base by `gptoss merge` (to fp32 weights, so the merge
itself is exact) and, for an adapter made by PEFT, PEFT on transformers' GptOssForCausalLM.
A mixed batch (base row + adapter-1 row + adapter-2 row) must give each row the logits of its own
model; the prefix cache must not hand one adapter's KV to another.
"""
from __future__ import annotations

import json

import pytest
import torch

from gptoss.engine import LLM, PromptError, SamplingParams
from gptoss.engine.sampler import SamplingParamsError
from gptoss.finetune.export import merge_adapter
from gptoss.finetune.lora import LoraError, LoraSpec
from gptoss.finetune.peft_format import expected_shapes, save_adapter
from gptoss.weights.loader import load_model, open_checkpoint

SPECS = {  # two adapters that differ in every way they can
    "a1": LoraSpec(rank=4, alpha=8),
    "a2": LoraSpec(rank=2, alpha=3, attention=("q", "v"), experts=("mlp2",), rslora=True),
}


def make_adapter(checkpoint, spec: LoraSpec, out, seed: int, std: float = 0.3):
    """A PEFT folder of `spec` on `checkpoint` with random (non-zero) A and B."""
    with open_checkpoint(checkpoint) as ckpt:
        config = ckpt.config
    g = torch.Generator().manual_seed(seed)
    state = {name: torch.randn(shape, generator=g) * std
             for name, shape in expected_shapes(spec, config).items()}
    return save_adapter(state, spec, config, out)


def merged(checkpoint, adapter, out):
    merge_adapter(checkpoint, adapter, out, layout="hf-bf16", dtype=torch.float32, progress=False)
    return out


@pytest.fixture(scope="module")
def adapters(tiny_checkpoints, tmp_path_factory):
    """{name: (adapter folder, merged fp32 checkpoint)} on the packed hf-mxfp4 tiny checkpoint."""
    root = tmp_path_factory.mktemp("lora_serving")
    base = tiny_checkpoints["hf-mxfp4"]
    out = {}
    for i, (name, spec) in enumerate(sorted(SPECS.items())):
        folder = make_adapter(base, spec, root / name, seed=10 + i)
        out[name] = (folder, merged(base, folder, root / f"{name}-merged"))
    return out


def rel_err(a, b) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def ids(tiny_config):
    return torch.randint(0, tiny_config.vocab_size, (3, 20), generator=torch.Generator().manual_seed(1))


def test_mixed_batch_rows_equal_their_merged_models(tiny_checkpoints, adapters, ids,
                                                    one_torch_thread):
    base = tiny_checkpoints["hf-mxfp4"]
    llm = LLM(base, dtype=torch.float32, lora={n: f for n, (f, _) in adapters.items()})
    rows = [None, "a1", "a2"]
    with torch.no_grad():
        got = llm.model(ids, adapters=llm.lora.batch(rows))
        want = [load_model(base, dtype=torch.float32)(ids[:1])]
        want += [load_model(adapters[n][1], dtype=torch.float32)(ids[b:b + 1])
                 for b, n in enumerate(rows) if n]
    for b, name in enumerate(rows):
        assert float((got[b] - want[b][0]).abs().max()) < 1e-4, name
    assert rel_err(want[1][0], want[0][0]) > 1e-2 and rel_err(want[2][0], want[1][0]) > 1e-2


def test_bf16_native_path(tiny_checkpoints, ids, tmp_path, one_torch_thread):
    """bf16 on CPU: base rows keep the native kernels (bit for bit the adapter-free model);
    adapter rows stay within bf16 noise of the exact (fp32) merged model, as a merge into bf16
    weights does (position by position: in a random model bf16 noise may flip a token's routing
    somewhere, in either)."""
    base = tiny_checkpoints["hf-mxfp4"]
    folder = make_adapter(base, SPECS["a1"], tmp_path / "a", seed=3, std=0.1)
    llm = LLM(base, lora={"a": folder})
    plain = load_model(base)
    with torch.no_grad():
        got = llm.model(ids, adapters=llm.lora.batch([None, "a", None])).float()
        assert torch.equal(got[0], plain(ids[:1])[0].float())
        assert torch.equal(got[2], plain(ids[2:])[0].float())
        m = merged(base, folder, tmp_path / "m")
        exact = load_model(m, dtype=torch.float32)(ids[1:2])[0]
        bf16_merge = load_model(m)(ids[1:2])[0].float()
        base_err = rel_err(plain(ids[1:2])[0].float(), exact)

    def median_err(a):
        return float(((a - exact).norm(dim=-1) / exact.norm(dim=-1)).median())
    assert median_err(got[1]) < min(3e-2, 1.5 * median_err(bf16_merge)) and base_err > 0.3


def test_bf16_engine_decodes_with_adapters(tiny_checkpoints, tmp_path, one_torch_thread):
    """The bf16 engine (paged native decode attention, native MoE for base rows) with a mixed
    batch: each request's greedy tokens are the argmax of the cache-free forward of its own
    adapter over the same sequence (up to a bf16 near-tie)."""
    base = tiny_checkpoints["hf-mxfp4"]
    folder = make_adapter(base, SPECS["a1"], tmp_path / "a", seed=4, std=0.1)
    llm = LLM(base, lora={"a": folder}, kv_cache_tokens=1024)
    prompt = list(range(3, 23))
    outs = generate_all(llm, [prompt] * 2, [None, "a"], max_tokens=8)
    assert outs[0].token_ids != outs[1].token_ids
    for out, name in zip(outs, [None, "a"]):
        seq = torch.tensor([prompt + out.token_ids])
        with torch.no_grad():
            logits = llm.model(seq, adapters=llm.lora.batch([name]))[0].float()
        steps = logits[len(prompt) - 1:-1]  # the logits that chose each output token
        chosen = steps.gather(1, torch.tensor(out.token_ids)[:, None])[:, 0]
        assert float((steps.max(-1).values - chosen).max()) < 0.05, name


def generate_all(llm, prompts, loras, max_tokens=6):
    params = [SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True, logprobs=2,
                             lora=n) for n in loras]
    return llm.generate(prompts, params)


def test_engine_batches_adapters_and_keeps_their_kv_apart(tiny_checkpoints, adapters,
                                                          one_torch_thread):
    base = tiny_checkpoints["hf-mxfp4"]
    llm = LLM(base, dtype=torch.float32, lora={n: f for n, (f, _) in adapters.items()},
              kv_cache_tokens=1024)
    seen = []
    forward = llm.model.hidden_states
    llm.model.hidden_states = lambda *a: seen.append(a[3]) or forward(*a)
    prompt = list(range(5, 40))  # two full KV blocks of 16: cacheable
    out = generate_all(llm, [prompt] * 3, [None, "a1", "a2"])
    assert any(b is not None and len(b.groups) == 2 and None in b.rows for b in seen)
    for o, name in zip(out, [None, "a1", "a2"]):
        oracle = LLM(base if name is None else adapters[name][1], dtype=torch.float32)
        (want,) = generate_all(oracle, [prompt], [None])
        assert o.token_ids == want.token_ids, name
        for lp, wlp in zip(o.logprobs, want.logprobs):
            assert abs(lp.logprob - wlp.logprob) < 1e-4
    # all three were admitted together, so none could reuse another's blocks; now a1 runs
    # after base and a2 have cached the prompt: it must not take their KV, only its own
    (again,) = generate_all(llm, [prompt], ["a1"])
    assert again.token_ids == out[1].token_ids and again.num_cached_tokens == 32
    llm.lora.adapters["a3"] = llm.lora.adapters["a1"]  # same weights, another name: no reuse
    (other,) = generate_all(llm, [prompt], ["a3"])
    assert other.num_cached_tokens == 0 and other.token_ids == out[1].token_ids


def test_generate_and_chat_take_lora_by_name(tiny_checkpoints, adapters, one_torch_thread):
    base = tiny_checkpoints["hf-mxfp4"]
    llm = LLM(base, dtype=torch.float32, lora={"a1": adapters["a1"][0]})
    greedy = SamplingParams(temperature=0, max_tokens=5, ignore_eos=True)
    (got,) = llm.generate([[7, 8, 9, 10]], greedy, lora="a1")
    (want,) = LLM(adapters["a1"][1], dtype=torch.float32).generate([[7, 8, 9, 10]], greedy)
    assert got.token_ids == want.token_ids
    with pytest.raises(PromptError, match="unknown LoRA adapter 'nope'.*'a1'"):
        llm.generate([[1, 2]], greedy, lora="nope")
    with pytest.raises(SamplingParamsError, match="lora"):
        SamplingParams(lora=3)


# ---- PEFT's own adapter, against PEFT on transformers ------------------------------------------
def test_peft_made_adapter_served_like_peft(tiny_checkpoints, ids, tmp_path, one_torch_thread):
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    ckpt = tiny_checkpoints["hf-bf16"]
    hf = transformers.GptOssForCausalLM.from_pretrained(ckpt, dtype=torch.float32,
                                                        attn_implementation="eager").eval()
    with torch.no_grad():
        base_want = hf(ids[:1]).logits[0]
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj"],
                             target_parameters=["gate_up_proj", "down_proj"],
                             init_lora_weights=False)
    model = peft.get_peft_model(hf, config)
    with torch.no_grad():
        want = model(ids[1:]).logits
    model.save_pretrained(tmp_path / "peft")
    llm = LLM(ckpt, dtype=torch.float32, lora={"p": tmp_path / "peft"})
    with torch.no_grad():
        got = llm.model(ids, adapters=llm.lora.batch([None, "p", "p"]))
    assert float((got[0] - base_want).abs().max()) < 1e-4
    assert float((got[1:] - want).abs().max()) < 1e-4
    assert rel_err(want[0], base_want) > 1e-2


# ---- bad adapter folders ------------------------------------------------------------------------
def edit_config(folder, **changes):
    path = folder / "adapter_config.json"
    cfg = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    path.write_text(json.dumps(cfg))


@pytest.mark.parametrize("change, message", [
    (dict(r=None), r"no rank"),
    (dict(r=0), r"rank must be a positive integer"),
    (dict(r="four"), r"rank must be a positive integer"),
    (dict(lora_alpha=-1), r"alpha must be positive"),
    (dict(target_modules=["q_proj", "gate_proj"]), r"targets \['gate_proj'\] are not"),
    (dict(target_parameters=["mlp.router.weight"]), r"targets \['mlp.router.weight'\] are not"),
    (dict(peft_type="IA3"), r"only LORA"),
    (dict(r=3), r"does not hold rank 3|\[4, 64\] but the base model"),
])
def test_bad_adapter_config_is_refused_with_its_reason(tiny_checkpoints, adapters, tmp_path,
                                                       change, message):
    import shutil
    folder = shutil.copytree(adapters["a1"][0], tmp_path / "bad")
    edit_config(folder, **change)
    with pytest.raises(LoraError, match=message) as info:
        LLM(tiny_checkpoints["hf-mxfp4"], lora={"bad": folder})
    assert "'bad'" in str(info.value) and "adapter_config" in str(info.value) or \
        "adapter_model" in str(info.value)


def test_adapter_for_another_model_is_refused(tiny_checkpoints, harmony_tiny_checkpoint, tmp_path):
    """Same layer count and targets, hidden 128 instead of 64: every shape is named."""
    folder = make_adapter(harmony_tiny_checkpoint, SPECS["a2"], tmp_path / "other", seed=0)
    with pytest.raises(LoraError, match=r"made for another model") as info:
        LLM(tiny_checkpoints["hf-mxfp4"], lora={"other": folder})
    assert "hidden 64" in str(info.value)


def test_missing_folder_and_bad_names(tiny_checkpoints, adapters, tmp_path):
    with pytest.raises(LoraError, match="not a readable PEFT adapter folder"):
        LLM(tiny_checkpoints["hf-mxfp4"], lora={"x": tmp_path / "absent"})
    with pytest.raises(LoraError, match="non-empty"):
        LLM(tiny_checkpoints["hf-mxfp4"], lora={"": adapters["a1"][0]})
    with pytest.raises(LoraError, match="must map"):
        LLM(tiny_checkpoints["hf-mxfp4"], lora=[adapters["a1"][0]])
