"""Every bad checkpoint gives one CheckpointError whose message names the file and the tensor."""
from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from gptoss.weights.loader import CheckpointError, detect_layout, load_model, open_checkpoint
from gptoss.weights.writer import convert_checkpoint, write_random_checkpoint


@pytest.fixture
def copy_of(tiny_checkpoints, tmp_path):
    def make(layout: str):
        dst = tmp_path / layout
        shutil.copytree(tiny_checkpoints[layout], dst)
        return dst
    return make


def rewrite(path, change) -> None:
    """Rewrite one safetensors file after `change(dict of tensors)`."""
    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k).clone() for k in f.keys()}
    change(tensors)
    save_file(tensors, str(path))


def shard_of(folder, name: str):
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    return folder / index["weight_map"][name]


def expect(path, *fragments):
    with pytest.raises(CheckpointError) as info:
        open_checkpoint(path)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert "\n" not in message.strip()
    return message


def test_missing_tensor(copy_of):
    folder = copy_of("original")
    rewrite(folder / "model.safetensors", lambda t: t.pop("block.1.attn.sinks"))
    expect(folder, str(folder), "missing tensor 'block.1.attn.sinks'")


def test_missing_tensor_in_hf_index(copy_of):
    folder = copy_of("hf-mxfp4")
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    del index["weight_map"]["model.layers.2.self_attn.v_proj.bias"]
    index_path.write_text(json.dumps(index))
    expect(folder, "model.safetensors.index.json", "'model.layers.2.self_attn.v_proj.bias'")


def test_unexpected_shape(copy_of):
    folder = copy_of("hf-mxfp4")
    name = "model.layers.0.mlp.experts.down_proj_scales"
    shard = shard_of(folder, name)
    rewrite(shard, lambda t: t.__setitem__(name, t[name][:, :, :1].contiguous()))
    expect(folder, str(shard), repr(name), "has shape [8, 64, 1]", "implies [8, 64, 2]")


def test_unexpected_dtype(copy_of):
    folder = copy_of("original")
    name = "block.0.mlp.mlp1_weight.blocks"
    rewrite(folder / "model.safetensors", lambda t: t.__setitem__(name, t[name].to(torch.int8)))
    expect(folder, "model.safetensors", repr(name), "dtype torch.int8", "uint8")
    rewrite(folder / "model.safetensors",
            lambda t: t.update({name: t[name].view(torch.uint8), "norm.scale": t["norm.scale"].int()}))
    expect(folder, "model.safetensors", "'norm.scale'", "torch.int32")


def test_truncated_shard(copy_of):
    folder = copy_of("hf-mxfp4")
    shard = shard_of(folder, "lm_head.weight")
    data = shard.read_bytes()
    shard.write_bytes(data[:len(data) - 1000])
    message = expect(folder, str(shard), "truncated")
    assert re.search(r"tensor '[^']+'", message)


def test_corrupt_header(copy_of):
    folder = copy_of("original")
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[8:20] = b"not json {{{"
    path.write_bytes(bytes(data))
    expect(folder, str(path), "corrupt safetensors header")
    path.write_bytes(b"\xff" * 8 + b"rest")
    expect(folder, str(path), "header length")
    path.write_bytes(b"abc")
    expect(folder, str(path), "too short")


def test_index_names_a_missing_shard(copy_of):
    folder = copy_of("hf-mxfp4")
    shard = shard_of(folder, "model.embed_tokens.weight")
    shard.unlink()
    message = expect(folder, "model.safetensors.index.json", shard.name, "does not exist")
    assert re.search(r"for tensor '[^']+'", message)


def test_index_places_a_tensor_in_the_wrong_shard(copy_of):
    folder = copy_of("hf-mxfp4")
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["model.layers.0.self_attn.extra"] = index["weight_map"]["lm_head.weight"]
    index_path.write_text(json.dumps(index))
    expect(folder, "model.safetensors.index.json", "'model.layers.0.self_attn.extra'",
           "does not contain it")


def test_unknown_layout(tmp_path):
    save_file({"encoder.weight": torch.zeros(2, 2)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"unknown checkpoint layout.*'encoder.weight'"):
        detect_layout(tmp_path)


def test_bad_config(copy_of):
    folder = copy_of("hf-mxfp4")
    config = json.loads((folder / "config.json").read_text())
    config["num_attention_heads"] = 5
    (folder / "config.json").write_text(json.dumps(config))
    expect(folder, "config.json", "num_heads (5) must be divisible by num_kv_heads (2)")
    (folder / "config.json").write_text("{ not json")
    expect(folder, "config.json", "not a readable JSON config")
    (folder / "config.json").unlink()
    expect(folder, "config.json", "no such file")


def test_config_disagrees_with_tensors(copy_of):
    folder = copy_of("original")
    config = json.loads((folder / "config.json").read_text())
    config["num_hidden_layers"] = 3
    (folder / "config.json").write_text(json.dumps(config))
    expect(folder, "model.safetensors", "unexpected tensor 'block.3.")
    config["num_hidden_layers"], config["num_experts"] = 4, 16
    (folder / "config.json").write_text(json.dumps(config))
    expect(folder, "model.safetensors", "'block.0.mlp.gate.weight'", "has shape [8, 64]")


def test_tensor_in_two_files(copy_of):
    folder = copy_of("original")
    save_file({"norm.scale": torch.ones(64, dtype=torch.bfloat16)}, str(folder / "extra.safetensors"))
    expect(folder, "'norm.scale'", "extra.safetensors", "model.safetensors")


def test_q_k_v_of_different_dtypes(copy_of):
    folder = copy_of("hf-mxfp4")
    name = "model.layers.1.self_attn.k_proj.weight"
    shard = shard_of(folder, name)
    rewrite(shard, lambda t: t.__setitem__(name, t[name].float()))
    with pytest.raises(CheckpointError, match=r"safetensors: cannot build 'block.1.attn.qkv.weight'"):
        load_model(folder)


def test_missing_folder_and_empty_folder(tmp_path):
    with pytest.raises(CheckpointError, match="nowhere: no such folder"):
        open_checkpoint(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="no \\*.safetensors files"):
        open_checkpoint(tmp_path)


def test_repo_id_offline_and_not_cached(tmp_path, monkeypatch):
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError) as info:
        load_model("openai/gpt-oss-20b")
    message = str(info.value)
    assert "'openai/gpt-oss-20b'" in message and "HF_HUB_OFFLINE" in message
    assert "hf download openai/gpt-oss-20b" in message


def test_writer_refuses_to_overwrite(tiny_config, tiny_checkpoints, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(CheckpointError, match="not empty"):
        write_random_checkpoint(tiny_config, out, seed=0, progress=False)
    write_random_checkpoint(tiny_config, out, seed=0, layout="original", progress=False, overwrite=True)
    write_random_checkpoint(tiny_config, out, seed=0, progress=False, overwrite=True)
    assert (out / "notes.txt").read_text() == "keep me"
    assert not (out / "model.safetensors").exists()  # the old layout's shard is gone
    assert detect_layout(out) == "hf-mxfp4"
    with pytest.raises(CheckpointError, match="must differ from the source"):
        convert_checkpoint(out, out, "original", overwrite=True, progress=False)


# ---- configs and tensors that would otherwise exhaust memory or load a broken model -----------
@pytest.mark.parametrize("window", [10 ** 9, 8.5, True, "128"])
def test_sliding_window_out_of_range_or_not_an_integer(copy_of, window):
    folder = copy_of("hf-mxfp4")
    config = json.loads((folder / "config.json").read_text())
    config["sliding_window"] = window
    (folder / "config.json").write_text(json.dumps(config))
    expect(folder, "config.json", "sliding_window must be an integer from 0",
           f"got {window!r}")


def test_huge_layer_count_fails_before_sizing_anything(copy_of):
    import time
    folder = copy_of("original")
    config = json.loads((folder / "config.json").read_text())
    config["num_hidden_layers"] = 10 ** 9
    (folder / "config.json").write_text(json.dumps(config))
    started = time.perf_counter()
    expect(folder, "config.json", "num_layers must be an integer from 1 to 1024",
           "got 1000000000")
    assert time.perf_counter() - started < 30  # not minutes and gigabytes first
    config["num_hidden_layers"] = 500  # plausible, but more than the tensors hold
    (folder / "config.json").write_text(json.dumps(config))
    expect(folder, "config.json", "num_hidden_layers = 500", "hold 4 layers")


@pytest.mark.parametrize("layout,name,value", [
    ("hf-mxfp4", "model.layers.1.self_attn.q_proj.weight", float("nan")),
    ("original", "block.0.attn.sinks", float("inf")),
    ("hf-bf16", "model.norm.weight", float("-inf"))])
def test_non_finite_weights_are_refused_at_load(copy_of, layout, name, value):
    folder = copy_of(layout)
    path = shard_of(folder, name) if (folder / "model.safetensors.index.json").exists() \
        else folder / "model.safetensors"

    def poison(tensors):
        tensors[name].view(-1)[3] = value
    rewrite(path, poison)
    with pytest.raises(CheckpointError) as info:
        load_model(folder)
    message = str(info.value)
    assert path.name in message and repr(name) in message and "flat index 3" in message, message


def test_nan_scale_byte_is_refused_at_load(copy_of):
    folder = copy_of("hf-mxfp4")
    name = "model.layers.0.mlp.experts.down_proj_scales"
    path = shard_of(folder, name)

    def poison(tensors):
        tensors[name].view(-1)[7] = 255
    rewrite(path, poison)
    with pytest.raises(CheckpointError, match=r"down_proj_scales'.*scale byte 255 \(NaN\) at flat "
                                              r"index 7"):
        load_model(folder)


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/passwd", 7])
def test_index_naming_a_shard_outside_the_folder(copy_of, shard):
    folder = copy_of("hf-mxfp4")
    (folder.parent / "outside.safetensors").write_bytes(b"")
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["lm_head.weight"] = shard
    index_path.write_text(json.dumps(index))
    expect(folder, "model.safetensors.index.json", repr(shard), "not a file inside")
