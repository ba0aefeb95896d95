"""`gptoss random-checkpoint` and `gptoss convert` through the real dispatcher."""
from __future__ import annotations

import json

import pytest

from gptoss.cli import main
from gptoss.config import ModelConfig
from gptoss.weights.commands import parse_size
from gptoss.weights.loader import detect_layout, open_checkpoint

SMALL = ["--preset", "tiny", "--vocab", "512", "--quiet"]


def test_random_checkpoint_with_overrides(tmp_path, capsys):
    out = tmp_path / "ckpt"
    assert main(["random-checkpoint", *SMALL, "--out", str(out), "--seed", "3", "--layers", "3",
                 "--experts", "6", "--experts-per-token", "3", "--sliding-window", "5",
                 "--hidden", "96", "--intermediate", "32", "--heads", "6", "--kv-heads", "3",
                 "--head-dim", "8"]) == 0
    assert str(out) in capsys.readouterr().out
    config = ModelConfig.from_file(out / "config.json")
    assert (config.num_layers, config.num_experts, config.experts_per_token) == (3, 6, 3)
    assert (config.sliding_window, config.hidden_size, config.intermediate_size) == (5, 96, 32)
    assert (config.num_heads, config.num_kv_heads, config.head_dim, config.vocab_size) == (6, 3, 8, 512)
    assert config.layer_types == ("sliding_attention", "full_attention", "sliding_attention")
    with open_checkpoint(out) as ckpt:  # every tensor's shape agrees with the config
        assert ckpt.layout == "hf-mxfp4"


@pytest.mark.parametrize("layout, detected", [("original", "original"), ("hf-bf16", "hf-bf16"),
                                               ("bf16", "hf-bf16")])
def test_random_checkpoint_layouts(tmp_path, layout, detected):
    out = tmp_path / "ckpt"
    assert main(["random-checkpoint", *SMALL, "--out", str(out), "--layout", layout]) == 0
    assert detect_layout(out) == detected


def test_convert_round_trip(tmp_path):
    src, orig, back = tmp_path / "src", tmp_path / "orig", tmp_path / "back"
    assert main(["random-checkpoint", *SMALL, "--out", str(src), "--shard-size", "100kB"]) == 0
    assert len(list(src.glob("*.safetensors"))) > 1
    assert main(["convert", str(src), str(orig), "--layout", "original", "--quiet"]) == 0
    assert main(["convert", str(orig), str(back), "--layout", "hf-mxfp4", "--quiet",
                 "--shard-size", "100kB"]) == 0
    assert detect_layout(orig) == "original" and detect_layout(back) == "hf-mxfp4"
    assert (json.loads((back / "model.safetensors.index.json").read_text())
            == json.loads((src / "model.safetensors.index.json").read_text()))
    for shard in src.glob("*.safetensors"):
        assert (back / shard.name).read_bytes() == shard.read_bytes()


def test_refuses_a_non_empty_folder_without_force(tmp_path, capsys):
    out = tmp_path / "ckpt"
    out.mkdir()
    (out / "keep.txt").write_text("data")
    assert main(["random-checkpoint", *SMALL, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not empty" in err and "--force" in err
    assert main(["random-checkpoint", *SMALL, "--out", str(out), "--force"]) == 0
    assert (out / "keep.txt").read_text() == "data"


@pytest.mark.parametrize("argv, message", [
    (["random-checkpoint", *SMALL, "--heads", "5", "--kv-heads", "2"], "num_heads (5) must be divisible"),
    (["random-checkpoint", *SMALL, "--hidden", "100"], "hidden_size (100) must be a multiple of 32"),
    (["random-checkpoint", *SMALL, "--experts", "2", "--experts-per-token", "3"], "experts_per_token"),
    (["convert", "/nonexistent/src", "X", "--layout", "original"], "no such folder"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    argv = [a if a != "X" else str(tmp_path / "dst") for a in argv]
    if argv[0] == "random-checkpoint":
        argv += ["--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_parse_size():
    assert parse_size("4.8GB") == 4_800_000_000
    assert parse_size("2MiB") == 2 * 2**20
    assert parse_size("1000") == 1000
    with pytest.raises(Exception, match="not a size"):
        parse_size("lots")
