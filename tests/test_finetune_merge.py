"""`gptoss merge`: an adapter folded into a checkpoint, checked against the unmerged adapter.

Dense output: the merged tensors are exactly W + scaling * B A rounded once (computed here the
way PEFT computes the delta from its own file layout, independent of gptoss's code), and an
fp32 merge reproduces the adapter's logits. MXFP4 output: the reported quantization error is the
error actually in the written experts, and the logits move by no more than that error allows.
"""
import pytest
import torch
from safetensors.torch import load_file

from gptoss.cli import main as cli
from gptoss.finetune.export import merge_adapter
from gptoss.finetune.lora import LoraSpec, adapter_state, apply_lora
from gptoss.finetune.peft_format import save_adapter
from gptoss.weights.loader import iter_canonical, load_model, open_checkpoint, with_experts

SPEC = LoraSpec(rank=4, alpha=8)


def rel_err(a, b) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def adapted(tiny_checkpoints, tmp_path_factory):
    """(adapter folder, fp32 logits of the base with the adapter applied, ids)."""
    model = load_model(tiny_checkpoints["hf-mxfp4"], dtype=torch.float32)
    apply_lora(model, SPEC, seed=0)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora." in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    folder = save_adapter(adapter_state(model), SPEC, model.config,
                          tmp_path_factory.mktemp("adapter") / "a")
    ids = torch.randint(0, model.config.vocab_size, (2, 20), generator=g)
    with torch.no_grad():
        return folder, model(ids), ids


def peft_style_delta(folder, layer: int, which: str, experts: int) -> torch.Tensor:
    """The update of canonical `mlp{1,2}_weight` [E, out, in] from PEFT's own tensors."""
    t = load_file(folder / "adapter_model.safetensors")
    stem = f"base_model.model.model.layers.{layer}.mlp.experts."
    stem += "base_layer." if which == "mlp1" else ""
    A, B = t[stem + "lora_A.weight"], t[stem + "lora_B.weight"]
    A = A.reshape(experts, -1, A.shape[-1])
    B = B.reshape(B.shape[0], -1, experts)
    hf = torch.einsum("ore,eri->eio", B, A) * SPEC.scaling  # PEFT's (experts, in, out)
    return hf.transpose(1, 2)


def dense_tensors(folder) -> dict[str, torch.Tensor]:
    with open_checkpoint(folder) as ckpt:
        return {n: t.clone() for n, t in with_experts(iter_canonical(ckpt), packed=False,
                                                      dense_dtype=torch.float32)}


def test_merge_to_bf16_is_exact(tiny_checkpoints, adapted, tmp_path):
    folder, _, _ = adapted
    merge_adapter(tiny_checkpoints["hf-mxfp4"], folder, tmp_path / "m", layout="hf-bf16",
                  progress=False)
    base, merged = dense_tensors(tiny_checkpoints["hf-mxfp4"]), dense_tensors(tmp_path / "m")
    E = 8
    for n in range(4):
        for which in ("mlp1", "mlp2"):
            name = f"block.{n}.mlp.{which}_weight"
            expected = (base[name].float() + peft_style_delta(folder, n, which, E)).bfloat16()
            assert torch.equal(merged[name].bfloat16(), expected), name
    assert torch.equal(merged["embedding.weight"], base["embedding.weight"])  # untouched


def test_merge_fp32_reproduces_the_adapter_logits(tiny_checkpoints, adapted, tmp_path):
    folder, expected, ids = adapted
    assert cli(["merge", str(tiny_checkpoints["hf-mxfp4"]), str(folder), str(tmp_path / "m"),
                "--layout", "hf-bf16", "--dtype", "float32", "--quiet"]) == 0
    with torch.no_grad():
        got = load_model(tmp_path / "m", dtype=torch.float32)(ids)
    assert float((got - expected).abs().max()) < 1e-4


@pytest.mark.parametrize("layout", ["hf-mxfp4", "original"])
def test_merge_to_mxfp4_within_the_reported_error(layout, tiny_checkpoints, adapted, tmp_path,
                                                  capsys):
    folder, expected, ids = adapted
    assert cli(["merge", str(tiny_checkpoints["hf-mxfp4"]), str(folder), str(tmp_path / "m"),
                "--layout", layout, "--dtype", "float32", "--quiet"]) == 0
    assert "re-quantized to MXFP4" in capsys.readouterr().out
    report = merge_adapter(tiny_checkpoints["hf-mxfp4"], folder, tmp_path / "again",
                           layout=layout, dtype=torch.float32, progress=False)
    # the reported error is the error actually written: re-derive it from the files
    base = dense_tensors(tiny_checkpoints["hf-mxfp4"])
    written = dense_tensors(tmp_path / "m")
    worst = 0.0
    for n in range(4):
        for which in ("mlp1", "mlp2"):
            name = f"block.{n}.mlp.{which}_weight"
            target = base[name] + peft_style_delta(folder, n, which, 8)
            err = float((written[name] - target).abs().max())
            assert err == pytest.approx(report.quantization[name].max_abs, rel=1e-6)
            worst = max(worst, report.quantization[name].relative_rms)
    assert report.max_relative_rms == worst > 0
    # and the merged MXFP4 model is the fp32 merge with exactly that rounding: its logits equal
    # those of the fp32 merge quantized by `gptoss convert` (routing makes the logits' distance
    # from the unquantized adapter model non-linear in the weight error, so that distance is
    # reported by the weights, not bounded here)
    merge_adapter(tiny_checkpoints["hf-mxfp4"], folder, tmp_path / "fp32", layout="hf-bf16",
                  dtype=torch.float32, progress=False)
    assert cli(["convert", str(tmp_path / "fp32"), str(tmp_path / "conv"), "--layout", layout,
                "--quiet"]) == 0
    with torch.no_grad():
        got = load_model(tmp_path / "m", dtype=torch.float32)(ids)
        converted = load_model(tmp_path / "conv", dtype=torch.float32)(ids)
    assert torch.equal(got, converted)
    assert not torch.equal(got, expected)


def test_merge_errors_are_one_line(tiny_checkpoints, tmp_path, capsys):
    (tmp_path / "bad").mkdir()
    assert cli(["merge", str(tiny_checkpoints["hf-mxfp4"]), str(tmp_path / "bad"),
                str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "not a readable PEFT adapter folder" in err and "Traceback" not in err
