"""Model configuration: presets for the published models and the two config.json dialects.

`ModelConfig` is frozen and validated in `__post_init__`; layers receive plain numbers from it.
The Hugging Face dialect is `config.json` at a repository root (`model_type: gpt_oss`); the
original dialect is `original/config.json` of the published repositories.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SLIDING, FULL = "sliding_attention", "full_attention"
# `eos_token_id` of the published checkpoints' generation_config.json: <|return|>, <|endoftext|>,
# <|call|>
GENERATION_EOS_TOKEN_IDS = (200002, 199999, 200012)


class ConfigError(ValueError):
    """An inconsistent or unreadable model configuration."""


MAX_LAYERS = 1024  # gpt-oss-120b has 36; a bound that stops a corrupt config early


@dataclass(frozen=True)
class ModelConfig:
    num_layers: int = 24
    num_experts: int = 32
    experts_per_token: int = 4
    vocab_size: int = 201088
    hidden_size: int = 2880
    intermediate_size: int = 2880
    head_dim: int = 64
    num_heads: int = 64
    num_kv_heads: int = 8
    sliding_window: int = 128
    rope_theta: float = 150000.0
    rope_scaling_factor: float = 32.0
    rope_ntk_alpha: float = 1.0  # YaRN beta_slow
    rope_ntk_beta: float = 32.0  # YaRN beta_fast
    initial_context_length: int = 4096
    max_position_embeddings: int = 131072
    swiglu_limit: float = 7.0
    swiglu_alpha: float = 1.702
    rms_norm_eps: float = 1e-5
    # per layer: "sliding_attention" or "full_attention"; default alternates, layer 0 sliding
    layer_types: tuple[str, ...] = ()
    eos_token_ids: tuple[int, ...] = GENERATION_EOS_TOKEN_IDS
    pad_token_id: int = 199999

    def __post_init__(self) -> None:
        layers = self.num_layers  # bounded first: the default layer_types has one entry a layer
        if not isinstance(layers, int) or isinstance(layers, bool) or not 0 < layers <= MAX_LAYERS:
            raise ConfigError(f"num_layers must be an integer from 1 to {MAX_LAYERS}, got {layers!r}")
        if not self.layer_types:
            types = tuple(SLIDING if i % 2 == 0 else FULL for i in range(self.num_layers))
            object.__setattr__(self, "layer_types", types)
        else:
            object.__setattr__(self, "layer_types", tuple(self.layer_types))
        object.__setattr__(self, "eos_token_ids", tuple(self.eos_token_ids))
        self._validate()

    def _validate(self) -> None:
        positive = ["num_layers", "num_experts", "experts_per_token", "vocab_size", "hidden_size",
                    "intermediate_size", "head_dim", "num_heads", "num_kv_heads",
                    "initial_context_length", "max_position_embeddings"]
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(f"num_heads ({self.num_heads}) must be divisible by "
                              f"num_kv_heads ({self.num_kv_heads})")
        if self.experts_per_token > self.num_experts:
            raise ConfigError(f"experts_per_token ({self.experts_per_token}) exceeds "
                              f"num_experts ({self.num_experts})")
        if self.head_dim % 2:
            raise ConfigError(f"head_dim must be even for rotary embeddings, got {self.head_dim}")
        for name in ("hidden_size", "intermediate_size"):
            if getattr(self, name) % 32:
                raise ConfigError(f"{name} ({getattr(self, name)}) must be a multiple of 32 "
                                  "(the MXFP4 block size)")
        window = self.sliding_window
        if (not isinstance(window, int) or isinstance(window, bool) or window < 0
                or window > self.max_position_embeddings):
            raise ConfigError(f"sliding_window must be an integer from 0 (none) to "
                              f"max_position_embeddings ({self.max_position_embeddings}), "
                              f"got {window!r}")
        if len(self.layer_types) != self.num_layers:
            raise ConfigError(f"layer_types has {len(self.layer_types)} entries for "
                              f"{self.num_layers} layers")
        bad = sorted(set(self.layer_types) - {SLIDING, FULL})
        if bad:
            raise ConfigError(f"unknown layer types {bad}; expected {SLIDING!r} or {FULL!r}")
        for name in ("rope_theta", "rope_scaling_factor", "swiglu_limit", "rms_norm_eps"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number, got {value!r}")

    # ---- derived numbers -------------------------------------------------------------------
    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def qkv_dim(self) -> int:
        return self.q_dim + 2 * self.kv_dim

    def window(self, layer: int) -> int:
        """Keys visible to a query on `layer` (0 = unlimited)."""
        return self.sliding_window if self.layer_types[layer] == SLIDING else 0

    def replace(self, **changes: Any) -> "ModelConfig":
        if "num_layers" in changes and "layer_types" not in changes:
            changes["layer_types"] = ()
        try:
            return dataclasses.replace(self, **changes)
        except TypeError as exc:
            raise ConfigError(str(exc)) from None

    # ---- presets -----------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str) -> "ModelConfig":
        key = name.lower().removeprefix("openai/").removeprefix("gpt-oss-")
        if key not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**PRESETS[key])

    # ---- the Hugging Face dialect ------------------------------------------------------------
    @classmethod
    def from_hf_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        if d.get("model_type") not in (None, "gpt_oss"):
            raise ConfigError(f"model_type is {d.get('model_type')!r}, expected 'gpt_oss'")
        rope = d.get("rope_scaling") or d.get("rope_parameters") or {}
        rope_type = rope.get("rope_type", rope.get("type", "yarn"))
        if rope_type != "yarn":
            raise ConfigError(f"rope_scaling.rope_type is {rope_type!r}; gpt-oss uses 'yarn'")
        eos = d.get("eos_token_id", 200002)
        kw = dict(
            num_layers=d.get("num_hidden_layers"), num_experts=d.get("num_local_experts"),
            experts_per_token=d.get("num_experts_per_tok", d.get("experts_per_token", 4)),
            vocab_size=d.get("vocab_size"), hidden_size=d.get("hidden_size"),
            intermediate_size=d.get("intermediate_size"), head_dim=d.get("head_dim", 64),
            num_heads=d.get("num_attention_heads"), num_kv_heads=d.get("num_key_value_heads"),
            sliding_window=d.get("sliding_window") or 0,
            rope_theta=float(d.get("rope_theta", rope.get("rope_theta", 150000.0))),
            rope_scaling_factor=float(rope.get("factor", 32.0)),
            rope_ntk_alpha=float(rope.get("beta_slow", 1.0)),
            rope_ntk_beta=float(rope.get("beta_fast", 32.0)),
            initial_context_length=rope.get("original_max_position_embeddings",
                                            d.get("initial_context_length", 4096)),
            max_position_embeddings=d.get("max_position_embeddings", 131072),
            swiglu_limit=float(d.get("swiglu_limit", 7.0)),
            swiglu_alpha=float(d.get("swiglu_alpha", 1.702)),
            rms_norm_eps=float(d.get("rms_norm_eps", 1e-5)),
            layer_types=tuple(d.get("layer_types") or ()),
            eos_token_ids=tuple(eos if isinstance(eos, list) else [eos]),
            pad_token_id=d.get("pad_token_id", 199999) if d.get("pad_token_id") is not None else 199999,
        )
        missing = [k for k, v in kw.items() if v is None]
        if missing:
            raise ConfigError(f"config.json lacks required fields for {missing}")
        return cls(**kw)

    def to_hf_dict(self, quantized: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "architectures": ["GptOssForCausalLM"],
            "model_type": "gpt_oss",
            "attention_bias": True,
            "attention_dropout": 0.0,
            "eos_token_id": self.eos_token_ids[0],
            # transformers asserts padding_idx < vocab_size (shrunken test vocabularies)
            "pad_token_id": self.pad_token_id if self.pad_token_id < self.vocab_size else None,
            "experts_per_token": self.experts_per_token,
            "num_experts_per_tok": self.experts_per_token,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "hidden_size": self.hidden_size,
            "initial_context_length": self.initial_context_length,
            "initializer_range": 0.02,
            "intermediate_size": self.intermediate_size,
            "layer_types": list(self.layer_types),
            "max_position_embeddings": self.max_position_embeddings,
            "num_attention_heads": self.num_heads,
            "num_hidden_layers": self.num_layers,
            "num_key_value_heads": self.num_kv_heads,
            "num_local_experts": self.num_experts,
            "output_router_logits": False,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_scaling": {
                "beta_fast": self.rope_ntk_beta, "beta_slow": self.rope_ntk_alpha,
                "factor": self.rope_scaling_factor,
                "original_max_position_embeddings": self.initial_context_length,
                "rope_type": "yarn", "truncate": False,
            },
            "rope_theta": self.rope_theta,
            "router_aux_loss_coef": 0.9,
            "sliding_window": self.sliding_window,
            "swiglu_limit": self.swiglu_limit,
            "tie_word_embeddings": False,
            "torch_dtype": "bfloat16",
            "use_cache": True,
            "vocab_size": self.vocab_size,
        }
        if quantized:
            d["quantization_config"] = {
                "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                           "model.embed_tokens", "lm_head"],
                "quant_method": "mxfp4",
            }
        return d

    # ---- the original dialect ----------------------------------------------------------------
    @classmethod
    def from_original_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        required = ["num_hidden_layers", "num_experts", "hidden_size", "vocab_size"]
        missing = [k for k in required if k not in d]
        if missing:
            raise ConfigError(f"original config.json lacks {missing}")
        return cls(
            num_layers=d["num_hidden_layers"], num_experts=d["num_experts"],
            experts_per_token=d.get("experts_per_token", 4), vocab_size=d["vocab_size"],
            hidden_size=d["hidden_size"], intermediate_size=d.get("intermediate_size", 2880),
            head_dim=d.get("head_dim", 64), num_heads=d.get("num_attention_heads", 64),
            num_kv_heads=d.get("num_key_value_heads", 8),
            sliding_window=d.get("sliding_window", 128),
            rope_theta=float(d.get("rope_theta", 150000.0)),
            rope_scaling_factor=float(d.get("rope_scaling_factor", 32.0)),
            rope_ntk_alpha=float(d.get("rope_ntk_alpha", 1.0)),
            rope_ntk_beta=float(d.get("rope_ntk_beta", 32.0)),
            initial_context_length=d.get("initial_context_length", 4096),
            swiglu_limit=float(d.get("swiglu_limit", 7.0)),
        )

    def to_original_dict(self) -> dict[str, Any]:
        return {
            "num_hidden_layers": self.num_layers, "num_experts": self.num_experts,
            "experts_per_token": self.experts_per_token, "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size, "intermediate_size": self.intermediate_size,
            "swiglu_limit": self.swiglu_limit, "head_dim": self.head_dim,
            "num_attention_heads": self.num_heads, "num_key_value_heads": self.num_kv_heads,
            "sliding_window": self.sliding_window,
            "initial_context_length": self.initial_context_length,
            "rope_theta": self.rope_theta, "rope_scaling_factor": self.rope_scaling_factor,
            "rope_ntk_alpha": self.rope_ntk_alpha, "rope_ntk_beta": self.rope_ntk_beta,
        }

    # ---- files -------------------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | Path) -> "ModelConfig":
        """Read either dialect; the HF one is recognised by `model_type` / `num_local_experts`."""
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such file") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: not a readable JSON config ({exc})") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{path}: expected a JSON object")
        try:
            if "model_type" in d or "num_local_experts" in d:
                return cls.from_hf_dict(d)
            return cls.from_original_dict(d)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: invalid value ({exc})") from None


PRESETS: dict[str, dict[str, Any]] = {
    "20b": dict(num_layers=24, num_experts=32),
    "120b": dict(num_layers=36, num_experts=128),
    # small everywhere but the vocabulary, so that the real tokenizer works with it
    "tiny": dict(num_layers=4, num_experts=8, experts_per_token=2, hidden_size=64,
                 intermediate_size=64, head_dim=16, num_heads=4, num_kv_heads=2,
                 sliding_window=8),
    # the packaged demo model (gptoss/demo, docs/demo.md): the real vocabulary and window,
    # 4 layers, 4 experts (2 active), hidden 256; trained on a compact vocabulary
    "demo": dict(num_layers=4, num_experts=4, experts_per_token=2, hidden_size=256,
                 intermediate_size=256, head_dim=32, num_heads=8, num_kv_heads=2,
                 sliding_window=128),
}


def generation_eos_token_ids(folder: str | Path | None) -> tuple[int, ...]:
    """The end-of-sequence ids a checkpoint generates with: `eos_token_id` (an id or a list) of
    its `generation_config.json` (in the folder, or beside an `original/` folder's parent), else
    the published list `GENERATION_EOS_TOKEN_IDS`."""
    if folder is not None:
        for path in (Path(folder) / "generation_config.json",
                     Path(folder).parent / "generation_config.json"):
            if not path.is_file():
                continue
            try:
                eos = json.loads(path.read_text()).get("eos_token_id")
            except (OSError, ValueError, AttributeError) as exc:
                raise ConfigError(f"{path}: not a readable generation config ({exc})") from None
            ids = eos if isinstance(eos, list) else [eos] if eos is not None else []
            if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
                raise ConfigError(f"{path}: eos_token_id must be token ids, got {eos!r}")
            if ids:
                return tuple(ids)
    return GENERATION_EOS_TOKEN_IDS
