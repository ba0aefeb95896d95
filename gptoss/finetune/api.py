"""`finetune(...)`: load, prepare, train and export, the Python face of `gptoss finetune`.

LoRA: the base model is frozen in the compute dtype (experts packed MXFP4 or dense, `experts`),
adapters are fp32 (`lora.py`); the result is a PEFT adapter folder `OUT/adapter`.
Full: every parameter is trained in fp32 (bf16 autocast with `precision="bf16"`), experts dense;
the result is a checkpoint `OUT/model` in `save_layout` (hf-mxfp4 re-quantizes the experts).
With several processes (torchrun, or `nproc`), full training shards the model with FSDP.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..weights.layouts import is_packed
from ..weights.loader import detect_layout, load_model
from . import distributed
from .config import TrainConfig, TrainConfigError
from .data import Dataset, load_jsonl
from .lora import adapter_state, apply_lora
from .peft_format import save_adapter
from .trainer import Trainer, TrainResult


@dataclass
class FinetuneResult:
    train: TrainResult
    output: Path  # the adapter folder (LoRA) or the checkpoint folder (full)

    @property
    def history(self) -> list[dict]:
        return self.train.history


def prepare_model(model_path: str | Path, config: TrainConfig):
    """Load `model_path` for `config.method`; the parameters to train require gradients."""
    c = config
    packed_source = is_packed(detect_layout(model_path))
    if c.method == "lora":
        dequantize = packed_source and c.experts == "dense"
        quantize = not packed_source and c.experts == "mxfp4"
        model = load_model(model_path, device=c.device, dtype=c.compute_dtype,
                           dequantize=dequantize, quantize=quantize)
        apply_lora(model, c.lora, seed=c.seed)
        return model
    model = load_model(model_path, device=c.device, dtype=torch.float32, dequantize=True)
    return model.requires_grad_(True)


def _load_data(path, config: TrainConfig) -> Dataset:
    return load_jsonl(path, train_on=config.train_on, max_length=config.max_length,
                      on_error=config.on_error)


def report_bad(data: Dataset, limit: int = 20) -> list[str]:
    lines = [f"{data.path}: skipped {b}" for b in data.bad[:limit]]
    if len(data.bad) > limit:
        lines.append(f"{data.path}: ... and {len(data.bad) - limit} more bad records")
    return lines


def finetune(model: str | Path, data: str | Path | Dataset, out: str | Path, *,
             eval_data: str | Path | Dataset | None = None, config: TrainConfig | None = None,
             resume: bool | str | Path = False, progress: bool = True,
             log=print) -> FinetuneResult:
    """Train `model` (a checkpoint folder or repo id) on `data` (JSONL path or a Dataset) and
    write the result under `out` (see the module doc). `resume=True` continues from the latest
    checkpoint in `out`, or give a checkpoint folder."""
    c = config or TrainConfig()
    if c.method == "lora" and c.lora.train_router:
        raise TrainConfigError("finetune() exports PEFT adapters, which cannot hold a trained "
                               "router; keep the router frozen (use apply_lora and Trainer "
                               "directly to train it)")
    dist = distributed.from_environment(c.device)
    train = data if isinstance(data, Dataset) else _load_data(data, c)
    held = (eval_data if isinstance(eval_data, Dataset) or eval_data is None
            else _load_data(eval_data, c))
    if dist.rank == 0 and log:
        for d in [train] + ([held] if held else []):
            for line in report_bad(d):
                log(line)
            log(d.summary())
    torch.manual_seed(c.seed)
    net = prepare_model(model, c)
    wrap, state = None, None
    if c.method == "lora":
        state = lambda: adapter_state(net)  # noqa: E731
        if dist.active:
            raise TrainConfigError("LoRA runs in one process; use --nproc / torchrun for "
                                   "--method full (FSDP)")
    elif dist.active:
        wrap = lambda m: distributed.shard(m, c.device)  # noqa: E731
    out = Path(out)
    trainer = Trainer(net, train, c, out, eval_data=held, dist=dist, progress=progress,
                      trainable_state=state, wrap=wrap)
    result = trainer.run(resume=resume or None)
    output = _export(net, c, out, model, dist)
    if dist.rank == 0:
        (out / "history.json").write_text(json.dumps(result.history, indent=1) + "\n")
    return FinetuneResult(result, output)


def _export(net, c: TrainConfig, out: Path, model_path, dist) -> Path:
    if c.method == "lora":
        return save_adapter(adapter_state(net), c.lora, net.config, out / "adapter",
                            base_model=str(model_path))
    from .export import write_model
    state = distributed.full_state(net)  # collective under FSDP
    if dist.rank == 0:
        write_model(state, net.config, out / "model", c.save_layout, source=model_path)
    dist.barrier()
    return out / "model"
