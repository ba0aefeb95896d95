"""The memory plan against what is really stored and allocated: the safetensors files' tensor
bytes (read from their headers) and the bytes of the tensors `PagedKVCache` allocates."""
from __future__ import annotations

import json
import struct

import pytest
import torch

from gptoss import memory_plan
from gptoss.cli import main
from gptoss.config import ModelConfig
from gptoss.engine.config import EngineConfig
from gptoss.engine.kv_cache import PagedKVCache


def stored_tensor_bytes(folder) -> int:
    """Sum of every tensor's byte range in the folder's safetensors headers."""
    total = 0
    for path in folder.glob("*.safetensors"):
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        total += sum(end - start for name, info in header.items() if name != "__metadata__"
                     for start, end in [info["data_offsets"]])
    return total


def test_weight_bytes_equal_the_stored_tensors(tiny_checkpoints, tiny_config):
    assert memory_plan.weight_bytes(tiny_config, packed=True) == \
        stored_tensor_bytes(tiny_checkpoints["hf-mxfp4"])
    assert memory_plan.weight_bytes(tiny_config, packed=False) == \
        stored_tensor_bytes(tiny_checkpoints["hf-bf16"])


@pytest.mark.parametrize("context,batch", [(100, 1), (64, 3), (1000, 2)])
def test_kv_cache_bytes_equal_the_allocated_cache(tiny_config, context, batch):
    engine = memory_plan.engine_config_for(context, batch, block_size=16)
    cache = PagedKVCache(tiny_config, block_size=engine.block_size,
                         full_blocks=engine.full_blocks(),
                         sliding_blocks=engine.sliding_blocks(tiny_config.sliding_window))
    allocated = sum(g.k.nbytes + g.v.nbytes for g in cache.groups)
    assert memory_plan.kv_cache_bytes(tiny_config, engine) == allocated


def test_kv_cache_grows_with_context_times_batch():
    config = ModelConfig.preset("20b")
    one = memory_plan.plan(config, context=8192, batch=1).kv_cache
    four = memory_plan.plan(config, context=8192, batch=4).kv_cache
    # the 12 full-attention layers hold every position: 12 layers * 2 (k, v) * 8 heads * 64 * 2 B
    assert four - one >= 3 * 8192 * 12 * 2 * 8 * 64 * 2


def test_120b_with_packed_experts_and_128k_context_fits_80gb():
    plan = memory_plan.plan(ModelConfig.preset("120b"), context=131072, batch=1)
    assert plan.fits(80 * 10**9)
    assert 60 * 2**30 < plan.weights < 62 * 2**30  # the published checkpoint: about 65 GB
    dense = memory_plan.plan(ModelConfig.preset("120b"), context=131072, packed=False)
    assert not dense.fits(80 * 10**9)


def test_check_names_the_numbers():
    plan = memory_plan.plan(ModelConfig.preset("120b"), context=131072, batch=4)
    with pytest.raises(memory_plan.MemoryPlanError, match=r"needs 79\.\d\d GiB .*weights 60\.77"
                                                          r".*has 74\.51 GiB free"):
        memory_plan.check(plan, 80 * 10**9, "120b")


def test_plan_command(capsys, tiny_checkpoints):
    assert main(["plan", "--model", "120b", "--context", "131072", "--gpu-memory", "80GB"]) == 0
    out = capsys.readouterr().out
    assert "fits" in out and "NOT" not in out
    assert main(["plan", "--model", "120b", "--batch", "4", "--gpu-memory", "80GB"]) == 1
    assert "does not fit: needs" in capsys.readouterr().err
    assert main(["plan", "--model", str(tiny_checkpoints["hf-mxfp4"]), "--context", "64",
                 "--gpu-memory", "2GiB"]) == 0
    assert main(["plan", "--model", "/nonexistent", "--gpu-memory", "1GB"]) == 2


def test_loader_checks_the_plan_before_allocating_on_cuda(tiny_checkpoints, monkeypatch):
    from gptoss.weights.loader import load_model
    monkeypatch.setattr(memory_plan, "device_capacity", lambda device: 10**6)
    with pytest.raises(memory_plan.MemoryPlanError, match="does not fit.*0.00 GiB free"):
        load_model(tiny_checkpoints["hf-mxfp4"], device="cuda")
