"""Streaming safetensors shards: the header is written from a plan before any data, then tensors
are appended one at a time as they are produced, so a 13 GB checkpoint is written with only one
tensor in memory. Each file is written as `NAME.partial` and renamed when complete."""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .layouts import TensorSpec
from .reader import DTYPE_NAMES, INDEX_NAME


def plan_shards(specs: list[TensorSpec], max_bytes: int | None) -> list[list[TensorSpec]]:
    """Split `specs` (order kept) into shards of at most `max_bytes` (a bigger tensor gets its own)."""
    shards: list[list[TensorSpec]] = [[]]
    size = 0
    for spec in specs:
        if shards[-1] and max_bytes is not None and size + spec.nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(spec)
        size += spec.nbytes
    return shards


def shard_filenames(count: int, *, single_name: str | None = None) -> list[str]:
    """Hugging Face names `model-00001-of-00003.safetensors`; `single_name` for one shard."""
    if count == 1 and single_name:
        return [single_name]
    return [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]


def _header(specs: list[TensorSpec]) -> bytes:
    entries: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for spec in specs:
        entries[spec.name] = {"dtype": DTYPE_NAMES[spec.dtype], "shape": list(spec.shape),
                              "data_offsets": [offset, offset + spec.nbytes]}
        offset += spec.nbytes
    raw = json.dumps(entries, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # data starts 8-byte aligned
    return struct.pack("<Q", len(raw)) + raw


class ShardWriter:
    """Writes the planned shards in order; `write(name, tensor)` must follow the plan's order."""

    def __init__(self, out_dir: Path, shards: list[list[TensorSpec]], filenames: list[str], *,
                 progress: bool = True, desc: str = "writing"):
        self.out_dir = Path(out_dir)
        self.plan = list(zip(filenames, shards))
        self._queue = [(i, spec) for i, (_, specs) in enumerate(self.plan) for spec in specs]
        self._pos = 0
        self._file = None
        self._shard = -1
        total = sum(s.nbytes for _, specs in self.plan for s in specs)
        self._bar = tqdm(total=total, unit="B", unit_scale=True, desc=desc, disable=not progress)

    def write(self, name: str, tensor: torch.Tensor) -> None:
        if self._pos >= len(self._queue):
            raise RuntimeError(f"tensor {name!r} is beyond the shard plan")
        shard, spec = self._queue[self._pos]
        if (name, tuple(tensor.shape), tensor.dtype) != (spec.name, spec.shape, spec.dtype):
            raise RuntimeError(f"expected {spec.name} {list(spec.shape)} {spec.dtype}, got "
                               f"{name} {list(tensor.shape)} {tensor.dtype}")
        if shard != self._shard:
            self._open(shard)
        data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
        self._file.write(memoryview(data.numpy()))
        self._bar.update(spec.nbytes)
        self._pos += 1
        if self._pos == len(self._queue) or self._queue[self._pos][0] != shard:
            self._finish()

    def _open(self, shard: int) -> None:
        filename, specs = self.plan[shard]
        self._shard = shard
        self._file = open(self.out_dir / (filename + ".partial"), "wb")
        self._file.write(_header(specs))

    def _finish(self) -> None:
        filename = self.plan[self._shard][0]
        self._file.close()
        self._file = None
        os.replace(self.out_dir / (filename + ".partial"), self.out_dir / filename)

    def close(self) -> None:
        """Check that every planned tensor was written; remove a half-written shard otherwise."""
        self._bar.close()
        if self._file is not None:
            self._file.close()
            (self.out_dir / (self.plan[self._shard][0] + ".partial")).unlink(missing_ok=True)
            self._file = None
        if self._pos != len(self._queue):
            missing = self._queue[self._pos][1].name
            raise RuntimeError(f"shards incomplete: stopped before {missing!r}")

    def write_index(self) -> Path:
        weight_map = {s.name: filename for filename, specs in self.plan for s in specs}
        total = sum(s.nbytes for _, specs in self.plan for s in specs)
        path = self.out_dir / INDEX_NAME
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        path.write_text(json.dumps(index, indent=2) + "\n")
        return path
