"""Load a checkpoint in any published layout into canonical tensors and a `Transformer`.

Layouts (see `layouts.py`): "hf-mxfp4" (the Hugging Face repo root of openai/gpt-oss-*),
"hf-bf16" (unquantized HF fine-tunes) and "original" (the `original/` folder). The layout is read
from the tensor names, the config from `config.json` (either dialect). A HF repo root that also
has `original/` loads the root; a folder with only `original/` loads that.

`load_model` builds the model on the meta device and assigns tensors one at a time. On CPU,
tensors used as stored are read through the file mapping and moved into huge-page private
memory one at a time, dropping their file pages (`resident.py`; `resident=False` keeps the
mapped views); tensors that are fused, transposed, cast or (de)quantized are read into private
memory first, so their file pages are not kept mapped beside the result: the checkpoint is never
held twice.
Experts: a packed checkpoint stays packed MXFP4 unless `dequantize=True` (exact, to `dtype`); a
bf16 checkpoint stays dense (in `dtype`) unless `quantize=True`, which quantizes it with the
rule documented in `kernels/mxfp4.py` (lossy). Everything else is cast to `dtype`, except norm
scales stored in fp32, which stay fp32 (as the reference model holds them; RMSNorm computes in
fp32 anyway, so only their rounding would change).
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import ConfigError, ModelConfig
from ..kernels import mxfp4
from ..model.transformer import Transformer
from . import layouts
from .layouts import HF_BF16, HF_MXFP4, ORIGINAL
from .reader import INDEX_NAME, CheckpointError, SafetensorsFolder
from .resident import make_resident

__all__ = ["CheckpointError", "Checkpoint", "detect_layout", "open_checkpoint", "load_model",
           "iter_canonical", "with_experts", "resolve_folder"]

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _has_weights(folder: Path) -> bool:
    return (folder / INDEX_NAME).is_file() or any(folder.glob("*.safetensors"))


def _download(repo_id: str) -> Path:
    """Resolve a Hugging Face repo id to a local snapshot (root files only, not original/)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import EntryNotFoundError
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    try:
        return Path(snapshot_download(repo_id, local_files_only=offline,
                                      ignore_patterns=["original/*", "metal/*"]))
    except (OSError, ValueError, EntryNotFoundError) as exc:
        how = ("HF_HUB_OFFLINE is set and it is not in the local cache" if offline
               else "it could not be downloaded from the Hugging Face Hub")
        raise CheckpointError(
            f"{repo_id!r} is not a local folder, and as a Hugging Face repo id {how} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). Download it "
            f"where there is network (`hf download {repo_id} --local-dir DIR`) and pass DIR, "
            "or check the path") from None


def resolve_folder(path: str | Path) -> Path:
    """The folder whose safetensors make the checkpoint (downloading a repo id if needed)."""
    folder = Path(path).expanduser()
    if not folder.exists():
        if not _REPO_ID.match(str(path)):
            raise CheckpointError(f"{path}: no such folder")
        folder = _download(str(path))
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: expected a checkpoint folder, not a file")
    if not _has_weights(folder) and _has_weights(folder / "original"):
        folder = folder / "original"
    if not _has_weights(folder):
        raise CheckpointError(f"{folder}: no *.safetensors files and no {INDEX_NAME}")
    return folder


def _layout_of(names: Iterable[str], where: Path) -> str:
    names = list(names)
    if any(n.startswith("block.") or n == "embedding.weight" for n in names):
        return ORIGINAL
    if any(n.endswith("mlp.experts.gate_up_proj_blocks") for n in names):
        return HF_MXFP4
    if any(n.endswith("mlp.experts.gate_up_proj") for n in names):
        return HF_BF16
    sample = ", ".join(repr(n) for n in names[:3])
    raise CheckpointError(f"{where}: unknown checkpoint layout (tensors such as {sample} are "
                          f"neither {HF_MXFP4}, {HF_BF16} nor {ORIGINAL})")


def detect_layout(path: str | Path) -> str:
    """"hf-mxfp4" | "hf-bf16" | "original" for a checkpoint folder (or repo id)."""
    with SafetensorsFolder(resolve_folder(path)) as reader:
        return _layout_of(reader.names(), reader.index or reader.folder)


@dataclass
class Checkpoint:
    """An opened, validated checkpoint: read tensors with `iter_canonical`."""
    folder: Path
    layout: str
    config: ModelConfig
    reader: SafetensorsFolder

    def close(self) -> None:
        self.reader.close()

    def __enter__(self) -> "Checkpoint":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _read_config(folder: Path) -> ModelConfig:
    try:
        return ModelConfig.from_file(folder / "config.json")
    except ConfigError as exc:
        raise CheckpointError(f"bad config: {exc}") from None


def _check_layer_count(reader: SafetensorsFolder, config: ModelConfig, config_path: Path):
    """The config's layer count against the layers the tensors name, before anything is sized
    by it (a wrong num_hidden_layers would otherwise build a huge expectation first)."""
    layers = {int(m.group(1)) for n in reader.names() if (m := _LAYER_INDEX.search(n))}
    held = max(layers) + 1 if layers else 0
    if config.num_layers > held:  # fewer: _validate names the first unexpected tensor
        raise CheckpointError(f"{config_path} says num_hidden_layers = {config.num_layers}, but "
                              f"the checkpoint's tensors hold {held} layers")


def _validate(reader: SafetensorsFolder, layout: str, config: ModelConfig, config_path: Path):
    canonical = layouts.canonical_specs(config, packed=layouts.is_packed(layout))
    expected = {s.name: s for s in layouts.layout_specs(layout, config, canonical)}
    where = reader.index or reader.folder
    for name, spec in expected.items():
        if name not in reader:
            raise CheckpointError(f"{where}: missing tensor {name!r} (expected {list(spec.shape)} "
                                  f"for a {layout} checkpoint of {config_path})")
        info = reader.info(name)
        if info.shape != spec.shape:
            raise CheckpointError(f"{info.file}: tensor {name!r} has shape {list(info.shape)}, "
                                  f"but {config_path} implies {list(spec.shape)}")
        ok = (info.dtype == torch.uint8 if spec.dtype == torch.uint8 else
              info.dtype in (torch.bfloat16, torch.float16, torch.float32))
        if not ok:
            want = "uint8" if spec.dtype == torch.uint8 else "bf16, fp16 or fp32"
            raise CheckpointError(f"{info.file}: tensor {name!r} has dtype {info.dtype}, "
                                  f"expected {want}")
    for name in reader.names():
        if name not in expected:
            raise CheckpointError(f"{reader.info(name).file}: unexpected tensor {name!r} (not "
                                  f"part of a {layout} checkpoint of {config_path})")


def open_checkpoint(path: str | Path) -> Checkpoint:
    """Find the folder, detect the layout, read the config and check every tensor's header."""
    folder = resolve_folder(path)
    reader = SafetensorsFolder(folder)
    try:
        layout = _layout_of(reader.names(), reader.index or folder)
        config = _read_config(folder)
        _check_layer_count(reader, config, folder / "config.json")
        _validate(reader, layout, config, folder / "config.json")
    except BaseException:
        reader.close()
        raise
    return Checkpoint(folder, layout, config, reader)


_LAYER_INDEX = re.compile(r"(?:^|\.)(?:block|layers)\.(\d+)\.")
FINITE_CHUNK = 1 << 24  # elements checked at a time (a 16 MB mask, not one the tensor's size)


def _check_finite(ckpt: Checkpoint, name: str, tensor: torch.Tensor) -> None:
    """Refuse a stored tensor holding NaN or infinity (an MXFP4 scale byte 255 is NaN): such a
    model would load and then sample token 0 forever. FP4 blocks are always finite."""
    scales = tensor.dtype == torch.uint8
    if scales and not name.endswith("scales"):
        return
    flat = tensor.reshape(-1)
    for start in range(0, flat.numel(), FINITE_CHUNK):
        part = flat[start:start + FINITE_CHUNK]
        bad = part == 255 if scales else ~torch.isfinite(part)
        if bad.any():
            index = start + int(bad.nonzero()[0, 0])
            what = "the scale byte 255 (NaN)" if scales else f"{float(flat[index])}"
            raise CheckpointError(f"{ckpt.reader.info(name).file}: tensor {name!r} holds "
                                  f"{what} at flat index {index}: the checkpoint is corrupt")


def iter_canonical(ckpt: Checkpoint, mapped: Callable[[str, torch.dtype], bool] | None = None
                   ) -> Iterator[tuple[str, torch.Tensor]]:
    """(canonical name, tensor) in checkpoint order, in the stored dtypes and expert form.

    A renamed-only tensor is a memory-mapped view of its file when `mapped(canonical name,
    stored dtype)` says the caller keeps it unchanged; every other tensor is a private copy.
    """
    for rule in layouts.rules(ckpt.layout, ckpt.config):
        keep = (rule.kind == "same" and mapped is not None
                and mapped(rule.canonical, ckpt.reader.info(rule.sources[0]).dtype))
        sources = [ckpt.reader.get(s, mapped=keep) for s in rule.sources]
        for source, stored in zip(rule.sources, sources):
            _check_finite(ckpt, source, stored)
        try:
            tensor = rule.join(sources)
        except ValueError as exc:  # e.g. q/k/v of different dtypes
            if isinstance(exc, CheckpointError):
                raise
            file = ckpt.reader.info(rule.sources[0]).file
            raise CheckpointError(f"{file}: cannot build {rule.canonical!r}: {exc}") from None
        yield rule.canonical, tensor


def with_experts(stream: Iterable[tuple[str, torch.Tensor]], *, packed: bool,
                 dense_dtype: torch.dtype = torch.bfloat16) -> Iterator[tuple[str, torch.Tensor]]:
    """Convert expert matrices in a canonical stream to packed (quantize) or dense (dequantize,
    exact, in `dense_dtype`); other tensors pass through. `.blocks` must precede `.scales`."""
    held: dict[str, torch.Tensor] = {}
    for name, tensor in stream:
        if name.endswith(".blocks") and not packed:
            held[name.removesuffix(".blocks")] = tensor
        elif name.endswith(".scales") and not packed:
            base = name.removesuffix(".scales")
            yield base, mxfp4.dequantize(held.pop(base), tensor, dense_dtype)
        elif packed and layouts.is_expert_matrix(name) and not name.endswith((".blocks", ".scales")):
            blocks, scales = mxfp4.quantize(tensor)
            yield name + ".blocks", blocks
            yield name + ".scales", scales
        else:
            yield name, tensor


def _assign(model: torch.nn.Module, name: str, tensor: torch.Tensor) -> None:
    module_name, _, attr = name.rpartition(".")
    module = model.get_submodule(module_name)
    current = module._parameters.get(attr)
    if current is None and attr not in module._buffers:
        raise CheckpointError(f"the model has no parameter {name!r}")
    old = current if current is not None else module._buffers[attr]
    if tuple(old.shape) != tuple(tensor.shape):
        raise CheckpointError(f"tensor {name!r} is {list(tensor.shape)}, the model expects "
                              f"{list(old.shape)}")
    if current is not None:
        module._parameters[attr] = torch.nn.Parameter(tensor, requires_grad=current.requires_grad)
    else:
        module._buffers[attr] = tensor


def _keeps_fp32(name: str, tensor: torch.Tensor) -> bool:
    """An fp32 RMSNorm scale is held in fp32 whatever the model dtype."""
    return name.endswith("norm.scale") and tensor.dtype == torch.float32


def _check_fits(ckpt: Checkpoint, device: torch.device, packed: bool, dtype: torch.dtype):
    """On CUDA, refuse before allocating a model whose weights and workspace exceed the free
    memory (the KV cache is planned by the engine, or `gptoss plan`)."""
    if device.type != "cuda":
        return
    from .. import memory_plan  # it sizes the engine's cache, so it imports engine/, above us
    plan = memory_plan.plan(ckpt.config, context=0, packed=packed, dtype=dtype)
    memory_plan.check(plan, memory_plan.device_capacity(device), f"{ckpt.folder} on {device}")


def load_model(path: str | Path, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.bfloat16, dequantize: bool = False,
               quantize: bool = False, resident: bool = True, kernels: str = "auto"):
    """Load a checkpoint folder or HF repo id into a `Transformer` on `device`.

    Experts: packed checkpoints stay packed unless `dequantize`; bf16 checkpoints stay dense
    unless `quantize`. Non-expert tensors and dense experts are in `dtype` (fp32 norm scales
    stay fp32). On CPU, tensors used as stored are moved out of the file mapping into huge-page
    private memory one at a time (`resident`, see weights/resident.py: faster decoding, the same
    peak RSS); `resident=False` keeps them memory-mapped. On CUDA the memory plan is checked
    first (MemoryPlanError naming the sizes). `kernels` chooses the GPU kernels
    ("auto" | "triton" | "reference", see kernels/dispatch.py).
    """
    if dequantize and quantize:
        raise ValueError("choose at most one of dequantize and quantize")
    with open_checkpoint(path) as ckpt:
        packed = (layouts.is_packed(ckpt.layout) and not dequantize) or quantize
        _check_fits(ckpt, torch.device(device), packed, dtype)
        model = Transformer(ckpt.config, experts="mxfp4" if packed else "dense", dtype=dtype,
                            device="meta")
        cpu = torch.device(device).type == "cpu"

        mapped: set[str] = set()

        def unchanged(name: str, stored: torch.dtype) -> bool:  # used as stored: keep mapped
            keep = (cpu and packed) if stored == torch.uint8 else (
                cpu and stored == dtype and not (quantize and layouts.is_expert_matrix(name)))
            if keep:
                mapped.add(name)
            return keep

        stream = with_experts(iter_canonical(ckpt, unchanged), packed=packed, dense_dtype=dtype)
        for name, tensor in stream:
            if tensor.is_floating_point() and not _keeps_fp32(name, tensor):
                tensor = tensor.to(dtype)
            if name in mapped and resident:
                tensor = make_resident(tensor)
            _assign(model, name, tensor.to(device))
    left = [n for n, t in model.state_dict().items() if t.is_meta]
    if left:
        raise CheckpointError(f"{ckpt.folder}: nothing loaded for {left[:3]} (model and "
                              "checkpoint names disagree)")
    # loaded for inference: no gradients (so the CPU fast paths, which have no backward, apply);
    # fine-tuning turns them on for what it trains
    return model.to(device).eval().requires_grad_(False).use_kernels(kernels)

