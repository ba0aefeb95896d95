"""A lazy reader over the safetensors files of one checkpoint folder.

Headers are parsed here (cheap: a few KB per file) to give every tensor's file, shape and dtype
before any data is read, and to turn truncated or corrupt files into clear errors. Tensor data
comes from `safetensors.safe_open` one tensor at a time, either memory-mapped (`mapped=True`: a
view of the file, for tensors used as they are, so a loaded model never holds the checkpoint
twice) or read into private memory (`mapped=False`: for tensors about to be transformed, so the
file pages they came from are not kept mapped beside the result).
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

INDEX_NAME = "model.safetensors.index.json"
_MAX_HEADER = 100 * 1024 * 1024

DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32,
          "F64": torch.float64, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16,
          "I32": torch.int32, "I64": torch.int64, "BOOL": torch.bool,
          "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the file and the tensor."""


@dataclass(frozen=True)
class TensorInfo:
    file: Path
    shape: tuple[int, ...]
    dtype: torch.dtype


def _entry(path: Path, name: str, entry, data_size: int) -> TensorInfo:
    """Validate one header entry against the file's data section."""
    where = f"{path}: tensor {name!r}"
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
        raise CheckpointError(f"{where}: malformed header entry {entry!r}")
    dtype = DTYPES.get(entry["dtype"])
    if dtype is None:
        raise CheckpointError(f"{where}: unsupported dtype {entry['dtype']!r}")
    shape, offsets = entry["shape"], entry["data_offsets"]
    if (not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape)
            or not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) for o in offsets)):
        raise CheckpointError(f"{where}: malformed shape {shape!r} or offsets {offsets!r}")
    numel = 1
    for d in shape:
        numel *= d
    begin, end = offsets
    if end - begin != numel * dtype.itemsize or begin < 0:
        raise CheckpointError(f"{where}: offsets {offsets} do not hold {shape} {entry['dtype']}")
    if end > data_size:
        raise CheckpointError(f"{where} ends at data byte {end} but the file holds only "
                              f"{data_size} data bytes: the file is truncated (incomplete "
                              "download or copy?)")
    return TensorInfo(path, tuple(shape), dtype)


def read_header(path: Path) -> dict[str, TensorInfo]:
    """Parse and validate a safetensors header without reading tensor data."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path}: {size} bytes, too short to be a safetensors file")
            (length,) = struct.unpack("<Q", head)
            if length > min(_MAX_HEADER, size - 8):
                raise CheckpointError(f"{path}: header length {length} exceeds the file "
                                      f"({size} bytes): truncated or not a safetensors file")
            raw = f.read(length)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: corrupt safetensors header ({exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
    data_size = size - 8 - length
    return {name: _entry(path, name, entry, data_size)
            for name, entry in header.items() if name != "__metadata__"}


def _read_index(folder: Path) -> dict[str, Path]:
    path = folder / INDEX_NAME
    try:
        index = json.loads(path.read_text())
        weight_map = index["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError("weight_map is not an object")
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: not a valid safetensors index ({exc!r})") from None
    out = {}
    root = folder.resolve()
    for name, file in weight_map.items():
        shard = folder / str(file)
        if not isinstance(file, str) or not shard.resolve().is_relative_to(root):
            raise CheckpointError(f"{path} names shard {file!r} for tensor {name!r}, which is "
                                  f"not a file inside {folder}")
        if not shard.is_file():
            raise CheckpointError(f"{path} names shard {file!r} for tensor {name!r}, "
                                  f"but {shard} does not exist")
        out[name] = shard
    return out


class SafetensorsFolder:
    """The tensors of a folder: sharded with `model.safetensors.index.json`, or every
    `*.safetensors` file in it. `info(name)` costs nothing; `get(name)` reads one tensor."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.index = self.folder / INDEX_NAME if (self.folder / INDEX_NAME).is_file() else None
        self._infos: dict[str, TensorInfo] = {}
        self._handles: dict[tuple[Path, bool], object] = {}
        if self.index is not None:
            self._load_indexed()
        else:
            self._load_unindexed()

    def _load_indexed(self) -> None:
        shards = _read_index(self.folder)
        headers = {p: read_header(p) for p in sorted(set(shards.values()))}
        for name, shard in shards.items():
            if name not in headers[shard]:
                raise CheckpointError(f"{self.index} places tensor {name!r} in {shard.name}, "
                                      f"but {shard} does not contain it")
            self._infos[name] = headers[shard][name]

    def _load_unindexed(self) -> None:
        files = sorted(self.folder.glob("*.safetensors"))
        if not files:
            raise CheckpointError(f"{self.folder}: no *.safetensors files and no {INDEX_NAME}")
        for path in files:
            for name, info in read_header(path).items():
                if name in self._infos:
                    raise CheckpointError(f"tensor {name!r} appears in both "
                                          f"{self._infos[name].file} and {path}")
                self._infos[name] = info

    @property
    def files(self) -> list[Path]:
        return sorted({i.file for i in self._infos.values()})

    def names(self) -> list[str]:
        return list(self._infos)

    def __contains__(self, name: str) -> bool:
        return name in self._infos

    def info(self, name: str) -> TensorInfo:
        try:
            return self._infos[name]
        except KeyError:
            where = self.index or self.folder
            raise CheckpointError(f"{where}: no tensor {name!r}") from None

    def _handle(self, file: Path, mapped: bool):
        handle = self._handles.get((file, mapped))
        if handle is None:
            if mapped:
                handle = safe_open(str(file), framework="pt")
            else:
                try:  # safetensors >= 0.8 reads with pread(2) instead of mapping the file
                    handle = safe_open(str(file), framework="pt", backend="pread")
                except TypeError:
                    handle = safe_open(str(file), framework="pt")
            self._handles[(file, mapped)] = handle
        return handle

    def get(self, name: str, *, mapped: bool = True) -> torch.Tensor:
        """Read one tensor (CPU, in its stored dtype): a memory-mapped view, or a private copy."""
        info = self.info(name)
        try:
            tensor = self._handle(info.file, mapped).get_tensor(name)
        except (SafetensorError, OSError, RuntimeError) as exc:
            raise CheckpointError(f"{info.file}: cannot read tensor {name!r} ({exc})") from None
        if tuple(tensor.shape) != info.shape or tensor.dtype != info.dtype:
            raise CheckpointError(f"{info.file}: tensor {name!r} read as {list(tensor.shape)} "
                                  f"{tensor.dtype}, header says {list(info.shape)} {info.dtype}")
        return tensor

    def close(self) -> None:
        """Drop the file handles; tensors already returned stay valid."""
        self._handles.clear()

    def __enter__(self) -> "SafetensorsFolder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
