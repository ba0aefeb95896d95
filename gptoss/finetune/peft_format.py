"""PEFT adapter folders: `adapter_config.json` + `adapter_model.safetensors` in Hugging Face names.

What `peft` writes for `GptOssForCausalLM` with
`LoraConfig(target_modules=[q_proj, k_proj, v_proj, o_proj],
target_parameters=["mlp.experts.gate_up_proj", "mlp.experts.down_proj"])`, and what it loads:

  attention   base_model.model.model.layers.{n}.self_attn.{q,k,v,o}_proj.lora_A.weight [r, in]
                                                                   .lora_B.weight [out, r]
  experts     base_model.model.model.layers.{n}.mlp.experts[.base_layer].lora_A.weight [E*r, in]
                                                                         .lora_B.weight [out, E*r]

For the experts (PEFT's `ParamWrapper` on the 3-d parameters `gate_up_proj` [E, H, 2I] and
`down_proj` [E, I, H], stored (experts, in, out)): lora_A's rows are ordered (expert, rank) and
lora_B's columns (rank, expert), and expert e's update of the (in, out) matrix is
`scaling * A_e^T B_e^T`, i.e. `scaling * B_e A_e` on gptoss's (out, in) matrices. Several
parameters targeted on one module nest in the module's parameter order, whatever the order of
`target_parameters`: gate_up_proj is innermost (`experts.base_layer.lora_*` when down_proj is
targeted too), down_proj outside it (`experts.lora_*`). A `target_parameters` entry names a
parameter by any dot-separated suffix (`gate_up_proj`, `experts.gate_up_proj`, ...).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..config import ModelConfig
from .lora import LoraError, LoraSpec

CONFIG_NAME, WEIGHTS_NAME = "adapter_config.json", "adapter_model.safetensors"
_PREFIX = "base_model.model.model.layers."
_ATTN = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj"}
_EXPERT = {"mlp1": "mlp.experts.gate_up_proj", "mlp2": "mlp.experts.down_proj"}
_EXPERT_BACK = {v: k for k, v in _EXPERT.items()}


def _expert_keys(targets) -> dict[str, str]:
    """gptoss expert targets -> their key stems under `mlp.experts.` (nesting: see above)."""
    order = [t for t in ("mlp1", "mlp2") if t in targets]
    return {t: "base_layer." * (len(order) - 1 - i) for i, t in enumerate(order)}


def _expert_target(entry: str) -> str | None:
    """A `target_parameters` entry -> "mlp1" | "mlp2" (None: not a gpt-oss expert tensor)."""
    for target, full in _EXPERT.items():
        if ("." + full).endswith("." + entry):
            return target
    return None


def _to_peft(name: str, t: torch.Tensor, nests: dict[str, str], E: int) -> tuple[str, torch.Tensor]:
    _, n, area, _, target, ab = name.split(".")  # block.N.attn.lora.q.A
    if area == "attn":
        return f"{_PREFIX}{n}.self_attn.{_ATTN[target]}.lora_{ab}.weight", t
    key = f"{_PREFIX}{n}.mlp.experts.{nests[target]}lora_{ab}.weight"
    if ab == "A":  # [E, r, in] -> [E*r, in]
        return key, t.reshape(-1, t.shape[-1])
    return key, t.permute(1, 2, 0).reshape(t.shape[1], -1)  # [E, out, r] -> [out, r*E]


def adapter_config(spec: LoraSpec, base_model: str | None) -> dict:
    return {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
        "r": spec.rank, "lora_alpha": spec.alpha, "use_rslora": spec.rslora,
        "target_modules": [_ATTN[t] for t in spec.attention],
        "target_parameters": [_EXPERT[t] for t in spec.experts] or None,
        "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False, "use_dora": False,
        "init_lora_weights": True, "inference_mode": True, "modules_to_save": None,
        "layers_to_transform": None, "layers_pattern": None, "rank_pattern": {},
        "alpha_pattern": {},
    }


def save_adapter(state: dict[str, torch.Tensor], spec: LoraSpec, config: ModelConfig,
                 out: str | Path, *, base_model: str | None = None) -> Path:
    """Write `state` (gptoss adapter names, from `lora.adapter_state`) as a PEFT folder."""
    if spec.train_router:
        raise LoraError("a trained router is not a LoRA adapter that PEFT can load; merge the "
                        "run instead (gptoss merge) or train with the router frozen")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    nests = _expert_keys(spec.experts)
    tensors = dict(_to_peft(n, t.detach().float().cpu(), nests, config.num_experts)
                   for n, t in state.items())
    save_file({k: v.contiguous() for k, v in tensors.items()}, out / WEIGHTS_NAME,
              metadata={"format": "pt"})
    (out / CONFIG_NAME).write_text(json.dumps(adapter_config(spec, base_model), indent=2) + "\n")
    return out


def _spec_from(cfg: dict, where: Path) -> LoraSpec:
    if not isinstance(cfg, dict):
        raise LoraError(f"{where}: expected a JSON object, got {type(cfg).__name__}")
    if cfg.get("peft_type") != "LORA":
        raise LoraError(f"{where}: peft_type is {cfg.get('peft_type')!r}, only LORA is supported")
    for key in ("rank_pattern", "alpha_pattern"):
        if cfg.get(key):
            raise LoraError(f"{where}: per-module {key} is not supported")
    if cfg.get("layers_to_transform") is not None:
        raise LoraError(f"{where}: layers_to_transform is not supported (adapt every layer)")
    for key in ("use_dora", "fan_in_fan_out"):
        if cfg.get(key):
            raise LoraError(f"{where}: {key}=true is not supported")
    if cfg.get("bias", "none") != "none" or cfg.get("modules_to_save") or cfg.get("lora_bias"):
        raise LoraError(f"{where}: adapters with trained biases or modules_to_save are not "
                        "supported")
    modules = cfg.get("target_modules") or []
    if isinstance(modules, str):
        raise LoraError(f"{where}: target_modules given as a pattern ({modules!r}); expected a "
                        "list of q_proj, k_proj, v_proj, o_proj")
    back = {v: k for k, v in _ATTN.items()}
    unknown = [m for m in modules if m not in back]
    params = cfg.get("target_parameters") or []
    if isinstance(params, str) or not all(isinstance(p, str) for p in params):
        raise LoraError(f"{where}: target_parameters must be a list of names such as "
                        f"mlp.experts.gate_up_proj, got {params!r}")
    unknown += [p for p in params if _expert_target(p) is None]
    if unknown:
        raise LoraError(f"{where}: targets {unknown} are not gpt-oss attention projections or "
                        "expert tensors")
    if "r" not in cfg:
        raise LoraError(f"{where}: no rank (`r`)")
    try:
        return LoraSpec(rank=cfg["r"], alpha=cfg.get("lora_alpha", 8),
                        attention=tuple(t for t in "qkvo" if _ATTN[t] in modules),
                        experts=tuple(t for t in ("mlp1", "mlp2")
                                      if t in {_expert_target(p) for p in params}),
                        rslora=bool(cfg.get("use_rslora", False)))
    except LoraError as exc:
        raise LoraError(f"{where}: {exc}") from None


def expected_shapes(spec: LoraSpec, config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The shape of every adapter tensor `spec` gives a model of `config` (gptoss names)."""
    c, r, E = config, spec.rank, config.num_experts
    io = {"q": (c.hidden_size, c.q_dim), "k": (c.hidden_size, c.kv_dim),
          "v": (c.hidden_size, c.kv_dim), "o": (c.q_dim, c.hidden_size),
          "mlp1": (c.hidden_size, 2 * c.intermediate_size),
          "mlp2": (c.intermediate_size, c.hidden_size)}
    shapes = {}
    for n in range(c.num_layers):
        for t in spec.attention:
            shapes[f"block.{n}.attn.lora.{t}.A"] = (r, io[t][0])
            shapes[f"block.{n}.attn.lora.{t}.B"] = (io[t][1], r)
        for t in spec.experts:
            shapes[f"block.{n}.mlp.lora.{t}.A"] = (E, r, io[t][0])
            shapes[f"block.{n}.mlp.lora.{t}.B"] = (E, io[t][1], r)
    return shapes


def _check_shapes(spec: LoraSpec, state: dict[str, torch.Tensor], config: ModelConfig,
                  where: Path) -> None:
    for name, shape in expected_shapes(spec, config).items():
        if tuple(state[name].shape) != shape:
            raise LoraError(f"{where}: {name} is {list(state[name].shape)} but the base model "
                            f"(hidden {config.hidden_size}, {config.num_heads} heads, "
                            f"{config.num_experts} experts) needs {list(shape)}; the adapter was "
                            "made for another model")


def load_adapter(folder: str | Path, config: ModelConfig
                 ) -> tuple[LoraSpec, dict[str, torch.Tensor]]:
    """A PEFT adapter folder -> (spec, tensors in gptoss names and shapes)."""
    folder = Path(folder)
    try:
        cfg = json.loads((folder / CONFIG_NAME).read_text())
        tensors = load_file(folder / WEIGHTS_NAME)
    except (OSError, ValueError) as exc:
        raise LoraError(f"{folder}: not a readable PEFT adapter folder ({exc})") from None
    spec = _spec_from(cfg, folder / CONFIG_NAME)
    nests = _expert_keys(spec.experts)
    names = {}
    for n in range(config.num_layers):
        for t in spec.attention:
            for ab in "AB":
                names[f"{_PREFIX}{n}.self_attn.{_ATTN[t]}.lora_{ab}.weight"] = \
                    (f"block.{n}.attn.lora.{t}.{ab}", None)
        for t in spec.experts:
            for ab in "AB":
                names[f"{_PREFIX}{n}.mlp.experts.{nests[t]}lora_{ab}.weight"] = \
                    (f"block.{n}.mlp.lora.{t}.{ab}", ab)
    extra = sorted(set(tensors) - set(names))
    missing = sorted(set(names) - set(tensors))
    if extra or missing:
        raise LoraError(f"{folder / WEIGHTS_NAME}: tensors do not match the adapter config "
                        f"(unexpected {extra[:2]}, missing {missing[:2]})")
    E, r = config.num_experts, spec.rank
    out = {}
    for key, (name, ab) in names.items():
        t = tensors[key].float()
        try:
            if ab == "A":
                t = t.reshape(E, r, t.shape[-1])
            elif ab == "B":
                t = t.reshape(t.shape[0], r, E).permute(2, 0, 1).contiguous()
        except RuntimeError:
            raise LoraError(f"{folder / WEIGHTS_NAME}: {key} is {list(t.shape)}, which does not "
                            f"hold rank {r} for {E} experts") from None
        out[name] = t
    _check_shapes(spec, out, config, folder / WEIGHTS_NAME)
    return spec, out
