"""Shared pytest fixtures. Keep each fixture small and documented; add new ones below."""
from __future__ import annotations

import os

import pytest
import torch

from gptoss.config import ModelConfig

# The Triton kernels' tests run in Triton's interpreter on machines without a GPU; it must be
# chosen before anything (transformers, peft) first imports triton
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

CHECKPOINT_LAYOUTS = ("hf-mxfp4", "original", "hf-bf16")


@pytest.fixture(scope="session")
def tiny_config() -> ModelConfig:
    """The `tiny` preset with a 1024-token vocabulary (fast; not for the real tokenizer)."""
    return ModelConfig.preset("tiny").replace(vocab_size=1024, eos_token_ids=(2,), pad_token_id=0)


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory, tiny_config) -> dict:
    """Random checkpoints of `tiny_config` (seed 0), written once per session:
    {"hf-mxfp4": Path, "original": Path, "hf-bf16": Path}. Treat them as read-only."""
    from gptoss.weights.writer import write_random_checkpoint
    root = tmp_path_factory.mktemp("tiny_checkpoints")
    return {layout: write_random_checkpoint(tiny_config, root / layout, seed=0, layout=layout,
                                            progress=False)
            for layout in CHECKPOINT_LAYOUTS}


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module: on a shared 2-core machine a second OpenMP thread mostly
    waits for a busy core (10x slower steps); restored afterwards."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def harmony_tiny_checkpoint(tmp_path_factory):
    """A random hf-mxfp4 `tiny` checkpoint with the real 201088-token vocabulary (so harmony
    renderings fit) and hidden size 128 (seed 0), written once per session. Read-only."""
    from gptoss.weights.writer import write_random_checkpoint
    config = ModelConfig.preset("tiny").replace(hidden_size=128)
    return write_random_checkpoint(config, tmp_path_factory.mktemp("harmony_tiny") / "ckpt",
                                   seed=0, progress=False)
