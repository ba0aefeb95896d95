"""Write checkpoints: random weights for any config, or another checkpoint converted.

Both go through one path: a stream of canonical tensors (one at a time) -> the target layout's
rules -> `ShardWriter`, which streams each shard to disk. Memory stays near the largest single
tensor (the 20b embedding, 1.2 GB), whatever the checkpoint size.

Files written, as users have them:
  hf-mxfp4 / hf-bf16  config.json (HF dialect; `quantization_config` only for mxfp4),
                      generation_config.json, model-0000K-of-0000N.safetensors,
                      model.safetensors.index.json
  original            config.json (original dialect), dtypes.json, model.safetensors
                      (model-0000K-of-0000N.safetensors when `shard_size` splits it)
Conversions keep every tensor's bits and dtype (HF -> original -> HF is bit-identical), except
experts when the expert form changes: mxfp4 -> hf-bf16 dequantizes exactly to bf16, hf-bf16 ->
mxfp4 quantizes with the rule documented in `mxfp4.py` (lossy unless the values came from MXFP4).
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path

import torch

from ..config import ModelConfig
from . import layouts
from .layouts import HF_MXFP4, ORIGINAL, TensorSpec
from .loader import iter_canonical, open_checkpoint, with_experts
from .random_weights import random_canonical
from .reader import INDEX_NAME, CheckpointError
from .shards import ShardWriter, plan_shards, shard_filenames

DEFAULT_SHARD_SIZE = 4_800_000_000  # bytes, as the published HF shards
# carried over from a Hugging Face source folder to a Hugging Face destination
_HF_EXTRA_FILES = ("generation_config.json", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json", "chat_template.jinja")
_DTYPES_JSON = {torch.bfloat16: "BF16", torch.float16: "FP16", torch.float32: "FP32"}


def prepare_output(out_dir: str | Path, *, overwrite: bool) -> Path:
    """Create `out_dir`; refuse a non-empty one unless `overwrite`, which removes only the
    checkpoint files a previous write left there (shards, index, configs)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise CheckpointError(f"{out}: folder is not empty; choose another or pass --force "
                                  "(overwrite=True) to replace the checkpoint files in it")
        for p in [*out.glob("*.safetensors"), *out.glob("*.partial"), out / INDEX_NAME,
                  out / "config.json", out / "dtypes.json", out / "generation_config.json"]:
            p.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


def generation_config(config: ModelConfig) -> dict:
    return {"bos_token_id": 199998, "do_sample": True, "eos_token_id": list(config.eos_token_ids),
            "pad_token_id": config.pad_token_id}


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def _write_tensors(out: Path, layout: str, config: ModelConfig, canonical: list[TensorSpec],
                   stream: Iterable[tuple[str, torch.Tensor]], shard_size: int | None,
                   progress: bool) -> list[TensorSpec]:
    """Split each canonical tensor by the layout's rules and stream it into shards."""
    specs = layouts.layout_specs(layout, config, canonical)
    if layout == ORIGINAL:
        shards = plan_shards(specs, shard_size)
        names = shard_filenames(len(shards), single_name="model.safetensors")
    else:
        shards = plan_shards(specs, shard_size or DEFAULT_SHARD_SIZE)
        names = shard_filenames(len(shards))
    rule_of = {r.canonical: r for r in layouts.rules(layout, config)}
    writer = ShardWriter(out, shards, names, progress=progress, desc=f"writing {out.name}")
    try:
        for name, tensor in stream:
            for part_name, part in rule_of[name].split(tensor):
                writer.write(part_name, part)
    finally:
        writer.close()
    if layout != ORIGINAL:
        writer.write_index()
    return specs


def _write_configs(out: Path, layout: str, config: ModelConfig, specs: list[TensorSpec],
                   hf_config: dict | None = None) -> None:
    if layout == ORIGINAL:
        _write_json(out / "config.json", config.to_original_dict())
        _write_json(out / "dtypes.json", {s.name: _dtype_label(s) for s in specs})
        return
    d = dict(hf_config) if hf_config else config.to_hf_dict(quantized=layout == HF_MXFP4)
    d.pop("quantization_config", None)
    if layout == HF_MXFP4:
        d["quantization_config"] = config.to_hf_dict(quantized=True)["quantization_config"]
    _write_json(out / "config.json", d)
    if not (out / "generation_config.json").exists():
        _write_json(out / "generation_config.json", generation_config(config))


def _dtype_label(spec: TensorSpec) -> str:
    if spec.name.endswith(".blocks"):
        return "FP4"
    if spec.name.endswith(".scales"):
        return "UE8"
    return _DTYPES_JSON.get(spec.dtype, str(spec.dtype).removeprefix("torch."))


def write_random_checkpoint(config: ModelConfig, out_dir: str | Path, *, seed: int,
                            layout: str = HF_MXFP4, shard_size: int | None = None,
                            overwrite: bool = False, progress: bool = True) -> Path:
    """Write a complete checkpoint of random weights (see `random_weights.py`) in `layout`.

    The same seed gives the same model in every layout (hf-bf16 holds the dequantized experts).
    """
    layout = layouts.normalize_layout(layout)
    out = prepare_output(out_dir, overwrite=overwrite)
    packed = layouts.is_packed(layout)
    canonical = layouts.canonical_specs(config, packed=packed)
    stream = with_experts(random_canonical(config, seed), packed=packed)
    specs = _write_tensors(out, layout, config, canonical, stream, shard_size, progress)
    _write_configs(out, layout, config, specs)
    return out


def write_canonical(config: ModelConfig, out_dir: str | Path,
                    stream: Iterable[tuple[str, torch.Tensor]], *, layout: str = HF_MXFP4,
                    overwrite: bool = False, progress: bool = False) -> Path:
    """Write a stream of canonical tensors (checkpoint order, experts packed; see
    `random_canonical`) as a complete checkpoint in `layout`."""
    layout = layouts.normalize_layout(layout)
    out = prepare_output(out_dir, overwrite=overwrite)
    packed = layouts.is_packed(layout)
    canonical = layouts.canonical_specs(config, packed=packed)
    specs = _write_tensors(out, layout, config, canonical, with_experts(stream, packed=packed),
                           None, progress)
    _write_configs(out, layout, config, specs)
    return out


def convert_checkpoint(src: str | Path, dst: str | Path, layout: str, *,
                       shard_size: int | None = None, overwrite: bool = False,
                       progress: bool = True) -> Path:
    """Rewrite the checkpoint at `src` (any layout) into `dst` in `layout`."""
    layout = layouts.normalize_layout(layout)
    with open_checkpoint(src) as ckpt:
        if Path(dst).resolve() in (ckpt.folder.resolve(), ckpt.folder.parent.resolve()):
            raise CheckpointError(f"{dst}: the destination must differ from the source folder")
        out = prepare_output(dst, overwrite=overwrite)
        packed = layouts.is_packed(layout)
        canonical = _source_canonical_specs(ckpt, packed)
        stream = with_experts(iter_canonical(ckpt), packed=packed)
        specs = _write_tensors(out, layout, ckpt.config, canonical, stream, shard_size, progress)
        hf_config = None
        if layout != ORIGINAL and ckpt.layout != ORIGINAL:
            hf_config = json.loads((ckpt.folder / "config.json").read_text())
            for name in _HF_EXTRA_FILES:
                if (ckpt.folder / name).is_file():
                    shutil.copyfile(ckpt.folder / name, out / name)
        _write_configs(out, layout, ckpt.config, specs, hf_config)
    return out


def _source_canonical_specs(ckpt, packed: bool) -> list[TensorSpec]:
    """Canonical specs with the source's dtypes (kept bit for bit); experts that change form
    are uint8 (quantized) or bf16 (dequantized)."""
    stored = {rule.canonical: ckpt.reader.info(rule.sources[0]).dtype
              for rule in layouts.rules(ckpt.layout, ckpt.config)}
    return [TensorSpec(s.name, s.shape, stored.get(s.name, s.dtype))
            for s in layouts.canonical_specs(ckpt.config, packed=packed)]
