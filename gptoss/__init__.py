"""gptoss: run, serve and fine-tune OpenAI's gpt-oss models exactly as released."""
from __future__ import annotations

from typing import Any

from .config import ConfigError, ModelConfig

__version__ = "0.1.0"
__all__ = ["ModelConfig", "ConfigError", "load_model", "LLM", "SamplingParams", "__version__"]

_LAZY = {
    "load_model": ("gptoss.weights.loader", "load_model"),
    "LLM": ("gptoss.engine.llm", "LLM"),
    "SamplingParams": ("gptoss.engine.sampler", "SamplingParams"),
}


def __getattr__(name: str) -> Any:
    # heavy modules (torch, safetensors) are imported on first use, not at `import gptoss`
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'gptoss' has no attribute {name!r}")
