"""LoRA adapters served by one engine without merging, chosen per request by name.

`LoraAdapters.load({"name": folder, ...}, model)` reads each PEFT adapter folder (the ones
`gptoss finetune` exports and PEFT's own for gpt-oss: attention projections and the fused expert
tensors, `finetune/peft_format.py`), validates it against the model (targets, rank and alpha, the
shape of every tensor) and keeps it as a `model.adapters.Adapter` (fp32, on the model's
device). A request names its adapter in `SamplingParams.lora` (None: the base model); the runner
binds the rows of each forward pass to their adapters (`batch`), so requests for different
adapters and the base share a batch. Their KV blocks never mix in the prefix cache: a request's
block hashes start from its adapter's salt (`block_pool.adapter_salt`).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from ..finetune.lora import LoraError
from ..finetune.peft_format import load_adapter
from ..model.adapters import Adapter, AdapterBatch
from .request import PromptError

__all__ = ["LoraAdapters", "LoraError"]


def _adapter(name: str, folder: Path, model: torch.nn.Module) -> Adapter:
    spec, state = load_adapter(folder, model.config)
    adapter = Adapter(name, spec.scaling)
    for key, tensor in state.items():  # block.{n}.{attn|mlp}.lora.{target}.{A|B}
        _, n, _, _, target, ab = key.split(".")
        if ab == "A":
            B = state[key[:-1] + "B"]
            adapter.pairs[(int(n), target)] = tuple(
                t.to(device=model.device, dtype=torch.float32).contiguous() for t in (tensor, B))
    return adapter


class LoraAdapters:
    """The adapters one engine serves, by name."""

    def __init__(self, adapters: Mapping[str, Adapter] | None = None,
                 folders: Mapping[str, Path] | None = None):
        self.adapters = dict(adapters or {})
        self.folders = dict(folders or {})

    @classmethod
    def load(cls, lora: Mapping[str, str | Path] | None, model: torch.nn.Module) -> "LoraAdapters":
        """`{name: PEFT adapter folder}` -> the loaded adapters; LoraError names the bad one."""
        if lora is None:
            return cls()
        if not isinstance(lora, Mapping):
            raise LoraError(f"lora must map adapter names to folders, got {type(lora).__name__}")
        if getattr(model, "lora_spec", None) is not None:
            raise LoraError("the model carries training adapters (finetune.apply_lora); serve its "
                            "base model with the exported adapter folder instead")
        adapters, folders = {}, {}
        for name, folder in lora.items():
            if not isinstance(name, str) or not name.strip():
                raise LoraError(f"LoRA adapter names must be non-empty strings, got {name!r}")
            folders[name] = Path(folder)
            try:
                adapters[name] = _adapter(name, folders[name], model)
            except LoraError as exc:
                raise LoraError(f"LoRA adapter {name!r}: {exc}") from None
        return cls(adapters, folders)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.adapters)

    def check(self, name: str | None) -> None:
        """PromptError unless `name` is None (the base model) or a loaded adapter."""
        if name is not None and name not in self.adapters:
            loaded = ", ".join(map(repr, self.adapters)) or "none"
            raise PromptError(f"unknown LoRA adapter {name!r} (loaded: {loaded})")

    def batch(self, names: Sequence[str | None]) -> AdapterBatch | None:
        """The adapters of a forward pass's rows (None: every row is the base model)."""
        if not any(n is not None for n in names):
            return None
        return AdapterBatch([None if n is None else self.adapters[n] for n in names])
