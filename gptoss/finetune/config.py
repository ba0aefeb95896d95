"""`TrainConfig`: every choice a fine-tuning run makes, validated once."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from .data import ON_ERROR, TRAIN_ON
from .lora import LoraSpec

METHODS = ("lora", "full")
EXPERT_FORMS = ("auto", "mxfp4", "dense")
PRECISIONS = ("fp32", "bf16")
# fields that may change between a run and its resumption without changing the loss curve
RESUMABLE_CHANGES = ("eval_every", "save_every", "keep_checkpoints")


class TrainConfigError(ValueError):
    """An invalid training option."""


@dataclass(frozen=True)
class TrainConfig:
    method: str = "lora"  # "lora" | "full"
    lora: LoraSpec = field(default_factory=LoraSpec)
    experts: str = "auto"  # LoRA base experts: as stored, packed MXFP4 (frozen), or dense
    precision: str = "bf16"  # "bf16": bf16 compute (autocast for full), fp32 master weights
    epochs: int = 1
    max_steps: int | None = None  # overrides epochs
    batch_size: int = 1  # conversations per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step (per rank)
    lr: float = 2e-4
    min_lr_ratio: float = 0.0  # the cosine ends at lr * min_lr_ratio
    warmup_steps: int = 0
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    max_grad_norm: float | None = 1.0
    gradient_checkpointing: bool = True
    eval_every: int | None = None  # steps; eval also runs at the end when eval data is given
    save_every: int | None = None  # steps; a checkpoint is also written at the end
    keep_checkpoints: int = 2
    seed: int = 0
    train_on: str = "all"  # "all" assistant tokens (analysis too) or "final" only
    max_length: int | None = None  # longer conversations are skipped (and reported)
    on_error: str = "skip"  # bad records: "skip" (reported) or "raise"
    save_layout: str = "hf-bf16"  # full fine-tuning: the layout of the trained checkpoint
    device: str = "cpu"

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(self.betas))
        for name, allowed in (("method", METHODS), ("experts", EXPERT_FORMS),
                              ("precision", PRECISIONS), ("train_on", TRAIN_ON),
                              ("on_error", ON_ERROR)):
            if getattr(self, name) not in allowed:
                raise TrainConfigError(f"{name} must be one of {allowed}, "
                                       f"got {getattr(self, name)!r}")
        for name in ("epochs", "batch_size", "grad_accum"):
            _positive_int(name, getattr(self, name))
        for name in ("max_steps", "eval_every", "save_every", "max_length"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise TrainConfigError(f"warmup_steps must be >= 0, got {self.warmup_steps!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise TrainConfigError(f"lr must be a positive number, got {self.lr!r}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise TrainConfigError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise TrainConfigError(f"max_grad_norm must be positive, got {self.max_grad_norm!r}")
        if self.method == "full" and self.experts == "mxfp4":
            raise TrainConfigError("full fine-tuning trains dense experts; packed MXFP4 experts "
                                   "can only be a frozen LoRA base (use --experts dense or auto)")

    @property
    def compute_dtype(self):
        import torch
        return torch.bfloat16 if self.precision == "bf16" else torch.float32

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        d["lora"]["attention"] = list(self.lora.attention)
        d["lora"]["experts"] = list(self.lora.experts)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        d = dict(d)
        d["lora"] = LoraSpec(**d.get("lora", {}))
        try:
            return cls(**d)
        except TypeError as exc:
            raise TrainConfigError(f"unreadable training config ({exc})") from None

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def _positive_int(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise TrainConfigError(f"{name} must be a positive integer, got {value!r}")


def resume_mismatch(saved: TrainConfig, current: TrainConfig) -> list[str]:
    """Fields that differ in a way that would change the loss curve."""
    a, b = saved.to_dict(), current.to_dict()
    return [k for k in a if k not in RESUMABLE_CHANGES and a[k] != b.get(k)]
