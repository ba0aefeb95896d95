"""Training checkpoints: written atomically, found again by `--resume`.

A checkpoint is a folder `OUT/checkpoints/step-NNNNNNNN/` holding
  trainable.safetensors   the trained tensors (adapters, or every parameter for full training)
  optimizer.pt            AdamW state (per rank when sharded: optimizer-rank{r}.pt), LR schedule
  state.json              step, the training config, the loss history so far, RNG state
It is written into `step-NNNNNNNN.partial-<pid>/` and renamed into place only when complete, so
a crash never leaves a half-written checkpoint where `--resume` would find it. Older checkpoints
beyond `keep` are removed after a new one is in place.
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

_STEP_DIR = re.compile(r"^step-(\d{8})$")


class CheckpointNotFound(ValueError):
    """`--resume` found no complete checkpoint."""


@dataclass
class SavedState:
    step: int
    config: dict
    history: list[dict]
    trainable: dict[str, torch.Tensor]
    optimizer: dict
    folder: Path


def checkpoint_root(out: Path) -> Path:
    return Path(out) / "checkpoints"


def _rng_state() -> str:
    return base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode()


def _set_rng_state(text: str) -> None:
    raw = torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)
    torch.set_rng_state(raw.clone())


def save(out: Path, *, step: int, config: dict, history: list[dict],
         trainable: dict[str, torch.Tensor] | None, optimizer: dict, rank: int = 0,
         keep: int = 2, barrier=lambda: None) -> Path:
    """Write the checkpoint of `step` (rank 0 writes the shared files; every rank its optimizer
    shard when `rank` names one) and return its folder."""
    root = checkpoint_root(out)
    final = root / f"step-{step:08d}"
    partial = root / f"step-{step:08d}.partial"
    if rank == 0:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    barrier()
    torch.save(optimizer, partial / f"optimizer-rank{rank}.pt")
    if rank == 0:
        save_file({k: v.detach().contiguous().cpu() for k, v in trainable.items()},
                  partial / "trainable.safetensors")
        state = {"step": step, "config": config, "history": history, "rng": _rng_state()}
        (partial / "state.json").write_text(json.dumps(state, indent=1) + "\n")
    barrier()
    if rank == 0:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        for old in sorted(complete_checkpoints(out))[:-keep] if keep > 0 else []:
            shutil.rmtree(old[1], ignore_errors=True)
    barrier()
    return final


def complete_checkpoints(out: Path) -> list[tuple[int, Path]]:
    root = checkpoint_root(out)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and (p / "state.json").is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def load(path: Path, *, rank: int = 0) -> SavedState:
    """Read a checkpoint: `path` is a step folder, or a run's OUT folder (its latest step)."""
    path = Path(path)
    if not _STEP_DIR.match(path.name):
        found = complete_checkpoints(path)
        if not found:
            raise CheckpointNotFound(f"{checkpoint_root(path)}: no complete checkpoint to "
                                     "resume from")
        path = found[-1][1]
    try:
        state = json.loads((path / "state.json").read_text())
        trainable = load_file(path / "trainable.safetensors")
        optimizer = torch.load(path / f"optimizer-rank{rank}.pt", weights_only=False)
    except (OSError, ValueError) as exc:
        raise CheckpointNotFound(f"{path}: unreadable checkpoint ({exc})") from None
    _set_rng_state(state["rng"])
    return SavedState(state["step"], state["config"], state["history"], trainable, optimizer,
                      path)
