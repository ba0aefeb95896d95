"""The demo model's compact package (one safetensors file) and its expansion to a checkpoint.

Packed form (`gptoss-demo.safetensors`, format `gptoss-demo/1` in its metadata):
  demo.token_ids     int32 [n]        the real ids that have their own rows (sorted)
  embedding.rows     bf16 [n + 1, H]  their embedding rows, then the one row all others share
  unembedding.rows   bf16 [n + 1, H]  the same for the unembedding
  every other canonical tensor (docs/architecture.md) as stored; experts packed MXFP4
  metadata "config"  the HF config.json of the expanded model (vocab_size 201088)
`expand` writes a standard hf-mxfp4 checkpoint folder (full 201088-row embedding and
unembedding, every unused row the shared one); `cached_expansion` does it once per package
content, into gptoss's cache. The packed model and its expansion give the same logits on the
packed ids (tests/test_demo_package.py checks it against transformers).
The shared row is the mean of the rows of the unused tokens: for a model trained on the compact
vocabulary (see vocab.py) those rows are (nearly) identical already.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..config import GENERATION_EOS_TOKEN_IDS, ModelConfig
from ..harmony.tokenizer import gptoss_cache_dir
from ..weights import layouts
from ..weights.loader import iter_canonical, open_checkpoint, with_experts
from ..weights.reader import CheckpointError
from ..weights.writer import write_canonical
from .shipped import NOTICE, PACKAGED, packaged_model
from .vocab import FULL_VOCAB, DemoVocab

FORMAT = "gptoss-demo/1"
SIZE_LIMIT = 30 * 1000 * 1000  # bytes on disk
_ROWS = {"embedding.weight": "embedding.rows", "unembedding.weight": "unembedding.rows"}
_DONE = "demo-expanded.json"


def _rows(weight: torch.Tensor, vocab: DemoVocab, where: str) -> torch.Tensor:
    """[V, H] -> [n + 1, H] bf16: the vocabulary's rows, then the mean of the others."""
    n = len(vocab.token_ids)
    if weight.shape[0] == vocab.size:  # compact numbering: the others follow the ids
        own, others = weight[:n], weight[n:]
    elif weight.shape[0] == FULL_VOCAB:
        ids = torch.tensor(vocab.token_ids)
        keep = torch.ones(FULL_VOCAB, dtype=torch.bool)
        keep[ids] = False
        own, others = weight[ids], weight[keep]
    else:
        raise CheckpointError(f"{where}: {weight.shape[0]} rows fit neither the demo vocabulary "
                              f"({vocab.size} rows) nor the full one ({FULL_VOCAB})")
    shared = others.float().mean(0, keepdim=True)
    return torch.cat([own.float(), shared]).to(torch.bfloat16)


def pack(checkpoint: str | Path, vocab: DemoVocab, out_file: str | Path) -> Path:
    """Pack a checkpoint (any layout; compact or full vocabulary) into one demo file."""
    tensors: dict[str, torch.Tensor] = {"demo.token_ids": torch.tensor(vocab.token_ids,
                                                                       dtype=torch.int32)}
    with open_checkpoint(checkpoint) as ckpt:
        # a harmony model stops on <|return|>, <|endoftext|> and <|call|> (config.json keeps
        # only the first; the list travels in the package and the expanded generation_config)
        config = ckpt.config.replace(vocab_size=FULL_VOCAB, eos_token_ids=GENERATION_EOS_TOKEN_IDS,
                                     pad_token_id=GENERATION_EOS_TOKEN_IDS[1])
        for name, tensor in with_experts(iter_canonical(ckpt), packed=True):
            if name in _ROWS:
                tensors[_ROWS[name]] = _rows(tensor, vocab, f"{ckpt.folder}: {name}")
            else:
                tensors[name] = tensor.to(torch.bfloat16) if tensor.is_floating_point() else tensor
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    hf_config = {**config.to_hf_dict(quantized=True), "eos_token_id": list(config.eos_token_ids)}
    metadata = {"format": FORMAT, "config": json.dumps(hf_config)}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out), metadata=metadata)
    return out


def read_config(packed: str | Path) -> ModelConfig:
    with safe_open(str(packed), "pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{packed}: not a {FORMAT} demo package "
                              f"(format {meta.get('format')!r})")
    return ModelConfig.from_hf_dict(json.loads(meta["config"]))


def _expanded_stream(f, config: ModelConfig) -> Iterator[tuple[str, torch.Tensor]]:
    ids = f.get_tensor("demo.token_ids").long()
    for spec in layouts.canonical_specs(config, packed=True):
        if spec.name in _ROWS:
            rows = f.get_tensor(_ROWS[spec.name])
            full = rows[-1:].expand(FULL_VOCAB, -1).clone()
            full[ids] = rows[:-1]
            yield spec.name, full
        else:
            yield spec.name, f.get_tensor(spec.name)


def expand(packed: str | Path, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Write the packed model as a standard hf-mxfp4 checkpoint folder."""
    config = read_config(packed)
    with safe_open(str(packed), "pt") as f:
        try:
            return write_canonical(config, out_dir, _expanded_stream(f, config),
                                   layout=layouts.HF_MXFP4, overwrite=overwrite)
        except KeyError as exc:
            raise CheckpointError(f"{packed}: the package lacks tensor {exc}") from None


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cached_expansion(packed: str | Path, cache_dir: str | Path | None = None) -> Path:
    """The expanded checkpoint of `packed`, written once into `cache_dir` (default: gptoss's
    cache, `demo/<sha256 prefix>/`); a half-written expansion is never used."""
    packed = Path(packed)
    digest = _digest(packed)
    target = Path(cache_dir or gptoss_cache_dir() / "demo") / digest[:16]
    if (target / _DONE).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=target.parent))
    try:
        expand(packed, tmp / "ckpt")
        (tmp / "ckpt" / _DONE).write_text(json.dumps({"package": str(packed),
                                                      "sha256": digest}) + "\n")
        try:
            os.replace(tmp / "ckpt", target)
        except OSError:  # another process finished first
            if not (target / _DONE).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def demo_checkpoint(log=None) -> Path:
    """The packaged demo model as a checkpoint folder (expanded once into the cache), saying
    `NOTICE` through `log` first. Raises CheckpointError when this install has no package."""
    packed = packaged_model()
    if packed is None:
        raise CheckpointError(f"no demo model in this install ({PACKAGED} is absent); "
                              "pass --model")
    if log is not None:
        log(NOTICE)
    return cached_expansion(packed)
