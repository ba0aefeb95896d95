"""gptoss.finetune: LoRA (attention and every expert) and full fine-tuning on harmony
conversations, PEFT-compatible adapters, merging back into any checkpoint layout.

Public names (imported on first use): `finetune`, `TrainConfig`, `LoraSpec`, `load_jsonl`,
`merge_adapter`, `save_adapter`, `load_adapter`, `apply_lora`. See docs/finetune.md.
"""
from __future__ import annotations

from typing import Any

_LAZY = {
    "finetune": "gptoss.finetune.api", "TrainConfig": "gptoss.finetune.config",
    "LoraSpec": "gptoss.finetune.lora", "apply_lora": "gptoss.finetune.lora",
    "load_jsonl": "gptoss.finetune.data", "merge_adapter": "gptoss.finetune.export",
    "save_adapter": "gptoss.finetune.peft_format", "load_adapter": "gptoss.finetune.peft_format",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gptoss.finetune' has no attribute {name!r}")
