"""LoRA adapters against PEFT on transformers' GptOssForCausalLM (the independent oracle).

An adapter with random (non-zero) A and B on every attention projection and on both expert
tensors is exported by gptoss as a PEFT folder, loaded by `peft` onto transformers' model of the
same checkpoint, and the fp32 logits must agree to 1e-4; an adapter made by `peft` itself is
loaded by gptoss the other way round.
"""
import pytest
import torch

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

from gptoss.finetune.lora import LoraSpec, adapter_state, apply_lora, load_adapter_state  # noqa: E402
from gptoss.finetune.peft_format import load_adapter, save_adapter  # noqa: E402
from gptoss.weights.loader import load_model  # noqa: E402

SPECS = {
    "all": LoraSpec(rank=4, alpha=8),
    "experts-only": LoraSpec(rank=2, alpha=3, attention=()),
    "qv-down": LoraSpec(rank=3, alpha=6, attention=("q", "v"), experts=("mlp2",), rslora=True),
}


def oracle(folder):
    from transformers import GptOssForCausalLM
    return GptOssForCausalLM.from_pretrained(folder, dtype=torch.float32,
                                             attn_implementation="eager").eval()


def randomize(model, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora." in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def rel_err(a, b) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def ids(tiny_config):
    return torch.randint(0, tiny_config.vocab_size, (2, 24),
                         generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", sorted(SPECS))
def test_gptoss_adapter_loads_in_peft_with_same_logits(name, tiny_checkpoints, ids, tmp_path,
                                                       one_torch_thread):
    from peft import PeftModel
    ours = load_model(tiny_checkpoints["hf-bf16"], dtype=torch.float32)
    base_logits = ours(ids)
    apply_lora(ours, SPECS[name], seed=0)
    assert torch.equal(ours(ids), base_logits)  # B = 0: a fresh adapter changes nothing
    randomize(ours, seed=2)
    with torch.no_grad():
        expected = ours(ids)
    assert rel_err(expected, base_logits) > 1e-2  # the adapter does something
    save_adapter(adapter_state(ours), SPECS[name], ours.config, tmp_path / "adapter")
    hf = PeftModel.from_pretrained(oracle(tiny_checkpoints["hf-bf16"]), tmp_path / "adapter")
    with torch.no_grad():
        got = hf(ids).logits
    assert float((got - expected).abs().max()) < 1e-4


def test_packed_base_gives_the_dense_logits(tiny_checkpoints, ids, one_torch_thread):
    """QLoRA-style: packed MXFP4 experts dequantized per expert = the dequantized model."""
    packed = load_model(tiny_checkpoints["hf-mxfp4"], dtype=torch.float32)
    dense = load_model(tiny_checkpoints["hf-mxfp4"], dtype=torch.float32, dequantize=True)
    for m in (packed, dense):
        apply_lora(m, SPECS["all"], seed=0)
        randomize(m, seed=2)
    with torch.no_grad():
        assert float((packed(ids) - dense(ids)).abs().max()) < 1e-5
    # and the gradients of the adapters agree too (dequantized again in the backward)
    grads = []
    for m in (packed, dense):
        m(ids).logsumexp(-1).mean().backward()
        grads.append({n: p.grad.clone() for n, p in m.named_parameters() if p.requires_grad})
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], atol=1e-5, rtol=1e-4), n


def test_peft_adapter_loads_in_gptoss_with_same_logits(tiny_checkpoints, ids, tmp_path,
                                                       one_torch_thread):
    from peft import LoraConfig, get_peft_model
    hf = oracle(tiny_checkpoints["hf-bf16"])
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                        target_parameters=["experts.down_proj", "gate_up_proj"],  # any order
                        init_lora_weights=False)  # random B as well as A
    peft_model = get_peft_model(hf, config)
    with torch.no_grad():
        expected = peft_model(ids).logits
    peft_model.save_pretrained(tmp_path / "peft")
    ours = load_model(tiny_checkpoints["hf-bf16"], dtype=torch.float32)
    spec, state = load_adapter(tmp_path / "peft", ours.config)
    assert spec.experts == ("mlp1", "mlp2")
    apply_lora(ours, spec)
    load_adapter_state(ours, state)
    with torch.no_grad():
        assert float((ours(ids) - expected).abs().max()) < 1e-4
