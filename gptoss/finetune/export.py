"""Writing trained weights: a full fine-tune's parameters, or a base checkpoint with an adapter
folded in (`gptoss merge`), in any of the three layouts.

Both stream canonical tensors one at a time (a merge never holds the checkpoint: each base
tensor is read, its adapter update `scaling * B A` added in fp32, and written). Dense outputs
(hf-bf16) are rounded once to `dtype`: the merged bf16 weights are exactly bf16(W + scaling·B·A).
Packed outputs (hf-mxfp4, original) re-quantize every expert matrix with `mxfp4.quantize`, and the
error of that rounding is measured tensor by tensor (`mxfp4.RoundTripError`) and returned.
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import ModelConfig
from ..kernels import mxfp4
from ..weights import layouts
from ..weights.layouts import ORIGINAL
from ..weights.loader import iter_canonical, open_checkpoint, resolve_folder, with_experts
from ..weights.writer import _HF_EXTRA_FILES, _write_configs, _write_tensors, prepare_output
from .lora import LoraError, adapter_delta
from .peft_format import load_adapter

DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float32": torch.float32,
          "fp32": torch.float32}


@dataclass
class WriteReport:
    """Where the weights went and, for packed layouts, each re-quantized tensor's error."""
    folder: Path
    layout: str
    quantization: dict[str, mxfp4.RoundTripError] = field(default_factory=dict)

    @property
    def max_relative_rms(self) -> float:
        return max((e.relative_rms for e in self.quantization.values()), default=0.0)

    @property
    def max_abs(self) -> float:
        return max((e.max_abs for e in self.quantization.values()), default=0.0)

    def summary(self) -> str:
        text = f"wrote a {self.layout} checkpoint to {self.folder}"
        if self.quantization:
            text += (f"; experts re-quantized to MXFP4 ({len(self.quantization)} tensors): "
                     f"largest error {self.max_abs:.3g}, largest relative RMS error "
                     f"{self.max_relative_rms:.3%}")
        return text


def _output(stream: Iterable[tuple[str, torch.Tensor]], *, packed: bool, dtype: torch.dtype,
            report: WriteReport) -> Iterator[tuple[str, torch.Tensor]]:
    """Dense canonical tensors -> the layout's form: experts quantized (error measured) when
    `packed`, floating tensors in `dtype`."""
    for name, tensor in stream:
        if packed and layouts.is_expert_matrix(name):
            report.quantization[name] = mxfp4.roundtrip_error(tensor)
            blocks, scales = mxfp4.quantize(tensor)
            yield name + ".blocks", blocks
            yield name + ".scales", scales
        else:
            yield name, tensor.to(dtype) if tensor.is_floating_point() else tensor


def _write(stream, config: ModelConfig, out: Path, layout: str, dtype: torch.dtype,
           source: Path | None, progress: bool) -> WriteReport:
    layout = layouts.normalize_layout(layout)
    packed = layouts.is_packed(layout)
    report = WriteReport(out, layout)
    canonical = layouts.canonical_specs(config, packed=packed, dtype=dtype)
    specs = _write_tensors(out, layout, config, canonical,
                           _output(stream, packed=packed, dtype=dtype, report=report),
                           None, progress)
    hf_config = None
    if layout != ORIGINAL and source is not None and (source / "config.json").is_file():
        d = json.loads((source / "config.json").read_text())
        hf_config = d if "model_type" in d else None
    if layout != ORIGINAL and source is not None:
        for name in _HF_EXTRA_FILES:
            if (source / name).is_file():
                shutil.copyfile(source / name, out / name)
    _write_configs(out, layout, config, specs, hf_config)
    if hf_config is not None and dtype != torch.bfloat16:
        d = json.loads((out / "config.json").read_text())
        d["torch_dtype"] = str(dtype).removeprefix("torch.")
        (out / "config.json").write_text(json.dumps(d, indent=2) + "\n")
    return report


def write_model(state: dict[str, torch.Tensor], config: ModelConfig, out: str | Path,
                layout: str = "hf-bf16", *, dtype: torch.dtype = torch.bfloat16,
                source: str | Path | None = None, overwrite: bool = True,
                progress: bool = False) -> WriteReport:
    """Write canonical parameters with dense experts (a full fine-tune) as a checkpoint."""
    out = prepare_output(out, overwrite=overwrite)
    names = [s.name for s in layouts.canonical_specs(config, packed=False)]
    missing = [n for n in names if n not in state]
    if missing:
        raise LoraError(f"cannot write the model: no tensor for {missing[:3]}")
    src = resolve_folder(source) if source is not None else None
    return _write(((n, state[n]) for n in names), config, out, layout, dtype, src, progress)


def merge_adapter(base: str | Path, adapter: str | Path, out: str | Path, *,
                  layout: str | None = None, dtype: torch.dtype = torch.bfloat16,
                  overwrite: bool = False, progress: bool = True) -> WriteReport:
    """Fold the PEFT adapter folder `adapter` into checkpoint `base`, written to `out` in
    `layout` (default: the base's layout)."""
    with open_checkpoint(base) as ckpt:
        if Path(out).resolve() in (ckpt.folder.resolve(), ckpt.folder.parent.resolve()):
            raise LoraError(f"{out}: the destination must differ from the base checkpoint")
        spec, state = load_adapter(adapter, ckpt.config)
        out = prepare_output(out, overwrite=overwrite)
        source = ckpt.folder

        def merged():
            dense = with_experts(iter_canonical(ckpt), packed=False, dense_dtype=torch.float32)
            for name, tensor in dense:
                delta = adapter_delta(spec, state, name, ckpt.config)
                yield name, tensor if delta is None else tensor.float() + delta
        return _write(merged(), ckpt.config, out, layout or ckpt.layout, dtype, source, progress)
