"""End to end: folders written by `gptoss random-checkpoint`, read by transformers (the oracle)
and by gptoss in every layout and expert mode, give the same fp32 logits and greedy tokens."""
import pytest
import torch

transformers = pytest.importorskip("transformers")

from gptoss.cli import main as cli  # noqa: E402
from gptoss.config import ModelConfig  # noqa: E402
from gptoss.model.cache import DynamicCache  # noqa: E402
from gptoss.weights.loader import load_model  # noqa: E402

VARIANTS = {
    # name: random-checkpoint overrides (all with a shrunken sliding window of 8)
    "tiny": ["--preset", "tiny"],
    "gqa4-e6": ["--preset", "tiny", "--vocab", "2048", "--heads", "8", "--kv-heads", "2",
                "--experts", "6", "--experts-per-token", "3", "--layers", "3"],
    "mqa-e4-top1": ["--preset", "tiny", "--vocab", "2048", "--heads", "4", "--kv-heads", "1",
                    "--experts", "4", "--experts-per-token", "1", "--hidden", "96"],
}


def rel_err(a, b) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def folders(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    out = {}
    for layout in ("hf-mxfp4", "hf-bf16", "original"):
        out[layout] = root / layout
        argv = ["random-checkpoint", *VARIANTS[request.param], "--sliding-window", "8",
                "--seed", "3", "--layout", layout, "--out", str(out[layout])]
        assert cli(argv) == 0
    return out


def oracle(folder):
    from transformers import GptOssForCausalLM, Mxfp4Config

    kwargs = {}
    if (folder / "config.json").read_text().find("mxfp4") >= 0:
        kwargs["quantization_config"] = Mxfp4Config(dequantize=True)
    model = GptOssForCausalLM.from_pretrained(folder, dtype=torch.float32,
                                              attn_implementation="eager", **kwargs)
    return model.eval()


@torch.no_grad()
def test_all_layouts_match_transformers(folders):
    hf = oracle(folders["hf-mxfp4"])
    config = ModelConfig.from_file(folders["hf-mxfp4"] / "config.json")
    ids = torch.randint(0, config.vocab_size, (2, 40), generator=torch.Generator().manual_seed(0))
    expected = hf(ids).logits
    assert float(expected.std()) > 0  # a degenerate model would prove nothing
    hf_bf16 = oracle(folders["hf-bf16"])(ids).logits
    assert rel_err(hf_bf16, expected) < 1e-4  # the oracle itself agrees across its two layouts
    for layout, kwargs in [("hf-mxfp4", {}), ("hf-mxfp4", {"dequantize": True}),
                           ("original", {}), ("hf-bf16", {})]:
        ours = load_model(folders[layout], dtype=torch.float32, **kwargs)
        got = ours(ids)
        assert rel_err(got, expected) < 1e-4, (layout, kwargs)
        for t in (0, 7, 8, 39):  # inside and past the window of 8
            assert rel_err(got[:, t], expected[:, t]) < 1e-4, (layout, kwargs, t)


@torch.no_grad()
def test_greedy_64_tokens_match_transformers(folders):
    hf = oracle(folders["hf-mxfp4"])
    ours = load_model(folders["hf-mxfp4"], dtype=torch.float32)
    config = ours.config
    prompt = torch.randint(0, config.vocab_size, (1, 5), generator=torch.Generator().manual_seed(1))
    expected = hf.generate(prompt, max_new_tokens=64, min_new_tokens=64, do_sample=False,
                           eos_token_id=None, pad_token_id=0)[0, 5:].tolist()
    cache = DynamicCache(config, batch_size=1, dtype=torch.float32)
    logits = ours(prompt, torch.arange(5)[None], cache)
    got = []
    for t in range(5, 69):
        got.append(int(logits[0, -1].argmax()))
        logits = ours(torch.tensor([[got[-1]]]), torch.tensor([[t]]), cache)
    assert got == expected
