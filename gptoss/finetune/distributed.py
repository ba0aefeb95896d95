"""torch.distributed for fine-tuning: the process group, FSDP sharding and spawning workers.

Workers come from `torchrun` (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT in the
environment) or from `spawn(nproc, fn, ...)` (what `gptoss finetune --nproc N` does). CPU runs
use the gloo backend, CUDA runs nccl with one device per local rank. Full fine-tuning shards
each transformer block and then the rest of the model with FSDP2 (`fully_shard`): parameters,
gradients and AdamW state are split across ranks and gathered per block for its forward and
backward.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as tdist


@dataclass
class Dist:
    """This process's place in the group (world_size 1: no group at all)."""
    rank: int = 0
    world_size: int = 1

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def all_reduce_sum(self, t: torch.Tensor) -> None:
        if self.active:
            tdist.all_reduce(t, op=tdist.ReduceOp.SUM)

    def barrier(self) -> None:
        if self.active:
            tdist.barrier()


def from_environment(device: str) -> Dist:
    """Join the group torchrun (or `spawn`) described in the environment; no-op for one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not tdist.is_initialized():
        backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
        tdist.init_process_group(backend)
    if torch.device(device).type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return Dist(tdist.get_rank(), tdist.get_world_size())


def shard(loss_model: torch.nn.Module, device: str) -> torch.nn.Module:
    """FSDP2: each block its own unit, then the root (embedding, norms, unembedding)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    mesh = init_device_mesh(torch.device(device).type, (tdist.get_world_size(),))
    for block in loss_model.model.block:
        fully_shard(block, mesh=mesh)
    fully_shard(loss_model, mesh=mesh)
    return loss_model


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, fn, args) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    try:
        fn(*args)
    finally:
        if tdist.is_initialized():
            tdist.destroy_process_group()


def spawn(nproc: int, fn, *args) -> None:
    """Run `fn(*args)` in `nproc` worker processes joined into one group (blocks until done)."""
    import torch.multiprocessing as mp
    mp.spawn(_worker, args=(nproc, free_port(), fn, args), nprocs=nproc, join=True)


def full_state(module: torch.nn.Module, only_trainable: bool = False) -> dict[str, torch.Tensor]:
    """Parameters as full tensors (gathered from FSDP shards; collective: call on every rank)."""
    out = {}
    for name, p in module.named_parameters():
        if only_trainable and not p.requires_grad:
            continue
        full = p.full_tensor() if hasattr(p, "full_tensor") else p
        out[name] = full.detach()
    return out
