"""EngineConfig: batching and KV-cache sizes, validated on construction."""
from __future__ import annotations

from dataclasses import dataclass

from ..config import ModelConfig


class EngineConfigError(ValueError):
    """An invalid engine setting; the message names the field."""


@dataclass(frozen=True)
class EngineConfig:
    max_num_seqs: int = 16              # requests running at once
    max_num_batched_tokens: int = 512   # tokens per step (prefill chunks + decodes)
    block_size: int = 16                # positions per KV block
    kv_cache_tokens: int = 32768        # positions the full-attention layers can hold, all requests
    max_model_len: int | None = None    # context limit; None: min(model's, kv_cache_tokens)
    prefix_caching: bool = True
    cuda_graphs: bool = True            # on CUDA, replay decode steps from captured graphs

    def __post_init__(self) -> None:
        for name in ("max_num_seqs", "max_num_batched_tokens", "block_size", "kv_cache_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise EngineConfigError(f"EngineConfig.{name} must be a positive integer, got {value!r}")
        if self.max_model_len is not None and (not isinstance(self.max_model_len, int)
                                               or self.max_model_len <= 0):
            raise EngineConfigError(f"EngineConfig.max_model_len must be a positive integer, "
                                    f"got {self.max_model_len!r}")

    def context_length(self, model: ModelConfig) -> int:
        limit = min(model.max_position_embeddings, self.kv_cache_tokens)
        if self.max_model_len is None:
            return limit
        if self.max_model_len > limit:
            raise EngineConfigError(
                f"EngineConfig.max_model_len={self.max_model_len} exceeds what the model "
                f"({model.max_position_embeddings}) or the KV cache (kv_cache_tokens="
                f"{self.kv_cache_tokens}) allows")
        return self.max_model_len

    def full_blocks(self) -> int:
        return -(-self.kv_cache_tokens // self.block_size)

    def sliding_blocks(self, window: int) -> int:
        """Enough for every running request's window and one step's chunks, twice over (the
        surplus keeps recently released blocks around for prefix reuse)."""
        per_seq = -(-window // self.block_size) + 2
        chunks = -(-self.max_num_batched_tokens // self.block_size)
        return 2 * (self.max_num_seqs * per_seq + chunks)
