"""gptoss.weights: checkpoints in every published layout, random and converted checkpoints.

Public names (imported on first use, so `import gptoss.weights.commands` stays light):
`load_model`, `detect_layout`, `open_checkpoint`, `CheckpointError` (loader) and
`write_random_checkpoint`, `convert_checkpoint` (writer).
"""
from __future__ import annotations

from typing import Any

_LAZY = {name: "gptoss.weights.loader"
         for name in ("CheckpointError", "detect_layout", "load_model", "open_checkpoint")}
_LAZY.update({name: "gptoss.weights.writer"
              for name in ("write_random_checkpoint", "convert_checkpoint")})
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gptoss.weights' has no attribute {name!r}")
