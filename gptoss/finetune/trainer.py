"""The training loop: AdamW, warm-up + cosine schedule, accumulation, eval, checkpoints, resume.

`Trainer(model, train, config, out, eval_data=..., dist=...).run(resume=...)` trains the
parameters of `model` that require gradients (see `prepare.py` for LoRA and full training),
and returns the loss history. Everything that decides the loss curve is a function of the
config and the step number (data order: `batches.py`; the schedule: `lr_factor`), and the
checkpoint holds the trained tensors, AdamW's state and the RNG state, so a run resumed from a
checkpoint continues on exactly the curve of an uninterrupted run.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from .batches import LossModel, MicroBatch, count_targets, micro_batches, step_examples
from .batches import steps_per_epoch
from .config import TrainConfig, TrainConfigError, resume_mismatch
from .data import Dataset
from .distributed import Dist, full_state


@dataclass
class TrainResult:
    history: list[dict]  # one entry per step: step, loss, lr, tokens (+ eval_loss when run)
    steps: int
    checkpoint: Path | None = None
    eval_losses: list[tuple[int, float]] = field(default_factory=list)


def lr_factor(step: int, *, total: int, warmup: int, min_ratio: float) -> float:
    """Multiplier of the base LR at 0-based `step`: linear warm-up over `warmup` steps to 1,
    then a cosine down to `min_ratio` at the last step."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup - 1)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


class Trainer:
    def __init__(self, model, train: Dataset, config: TrainConfig, out: str | Path, *,
                 eval_data: Dataset | None = None, dist: Dist | None = None,
                 progress: bool = True, trainable_state=None, wrap=None):
        """`trainable_state() -> {name: tensor}` gives what a checkpoint stores;
        `wrap(loss_model) -> module` shards it (FSDP) before the optimizer is built."""
        self.config, self.out = config, Path(out)
        self.train, self.eval_data = train, eval_data
        self.dist = dist or Dist()
        self.progress = progress and self.dist.rank == 0
        self.model = model
        self.loss_model = LossModel(model, checkpointing=config.gradient_checkpointing)
        if wrap is not None:
            self.loss_model = wrap(self.loss_model)
        self.params = [p for p in self.loss_model.parameters() if p.requires_grad]
        if not self.params:
            raise TrainConfigError("nothing to train: no parameter requires a gradient")
        self.trainable_state = trainable_state
        self.per_step = config.batch_size * config.grad_accum * self.dist.world_size
        self.total_steps = config.max_steps or config.epochs * steps_per_epoch(len(train),
                                                                               self.per_step)
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr, betas=config.betas,
                                           weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, total=self.total_steps,
                                                warmup=config.warmup_steps,
                                                min_ratio=config.min_lr_ratio))
        self.history: list[dict] = []
        self.eval_losses: list[tuple[int, float]] = []

    # ---- one step ---------------------------------------------------------------------------
    def _loss(self, batch: MicroBatch) -> torch.Tensor:
        device = torch.device(self.config.device)
        return self.loss_model(batch.ids.to(device), batch.positions.to(device),
                               batch.targets.to(device))

    def _autocast(self):
        c = self.config
        if c.method == "full" and c.precision == "bf16":
            return torch.autocast(torch.device(c.device).type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _padded(self, batches: list[MicroBatch], count: int) -> list[tuple[MicroBatch, float]]:
        """(batch, weight): every rank runs the same number of forward/backward passes (FSDP's
        collectives must pair up); a rank with fewer batches repeats one with weight 0."""
        most = math.ceil(count / self.config.batch_size / self.dist.world_size)
        out = [(b, 1.0) for b in batches]
        while len(out) < most:
            out.append((out[0][0] if out else self._first_batch(), 0.0))
        return out

    def _first_batch(self) -> MicroBatch:
        return micro_batches(self.train.examples[:1], 1)[0]

    def train_step(self, step: int) -> dict:
        c = self.config
        examples = step_examples(self.train.examples, seed=c.seed, step=step,
                                 per_step=self.per_step)
        targets = count_targets(examples)  # the same on every rank: all see the whole step
        batches = micro_batches(examples, c.batch_size, self.dist.rank, self.dist.world_size)
        loss_sum, tokens = torch.zeros(2, dtype=torch.float64), 0
        for batch, weight in self._padded(batches, len(examples)):
            with self._autocast():
                loss = self._loss(batch)
            # gradients are averaged over ranks, hence the world size
            (loss * (weight * self.dist.world_size / max(targets, 1))).backward()
            loss_sum[0] += float(loss.detach()) * weight
            tokens += batch.tokens if weight else 0
        loss_sum[1] = tokens
        self.dist.all_reduce_sum(loss_sum)
        if c.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, c.max_grad_norm)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"step": step + 1, "loss": float(loss_sum[0]) / max(targets, 1), "lr": lr,
                "tokens": int(loss_sum[1])}

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean cross-entropy per learned token over the eval data."""
        examples = self.eval_data.examples
        batches = micro_batches(examples, self.config.batch_size, self.dist.rank,
                                self.dist.world_size)
        total = torch.zeros(1, dtype=torch.float64)
        for batch, weight in self._padded(batches, len(examples)):
            with self._autocast():
                loss = self._loss(batch)
            total[0] += float(loss) * weight
        self.dist.all_reduce_sum(total)
        return float(total[0]) / max(count_targets(examples), 1)

    # ---- the run ----------------------------------------------------------------------------
    def run(self, resume: str | Path | bool | None = None) -> TrainResult:
        start = self._resume(resume) if resume else 0
        bar = tqdm(total=self.total_steps, initial=start, desc="finetune", unit="step",
                   disable=not self.progress, dynamic_ncols=True)
        began, seen, last = time.perf_counter(), 0, None
        try:
            for step in range(start, self.total_steps):
                entry = self.train_step(step)
                seen += entry["tokens"]
                if self._due(self.config.eval_every, step) and self.eval_data is not None:
                    entry["eval_loss"] = self._eval(step)
                self.history.append(entry)
                rate = seen / max(time.perf_counter() - began, 1e-9)
                bar.set_postfix(loss=f"{entry['loss']:.4f}", lr=f"{entry['lr']:.2e}",
                                tok_s=f"{rate:.0f}", refresh=False)
                bar.update(1)
                if self._due(self.config.save_every, step):
                    last = self.save(step + 1)
        finally:
            bar.close()
        if self.eval_data is not None and (not self.history or "eval_loss" not in self.history[-1]):
            self._eval(self.total_steps - 1)
        if last is None or not last.name.endswith(f"{self.total_steps:08d}"):
            last = self.save(self.total_steps)
        return TrainResult(self.history, self.total_steps, last, self.eval_losses)

    def _due(self, every: int | None, step: int) -> bool:
        return bool(every) and (step + 1) % every == 0 and step + 1 < self.total_steps

    def _eval(self, step: int) -> float:
        loss = self.evaluate()
        self.eval_losses.append((step + 1, loss))
        if self.progress:
            tqdm.write(f"step {step + 1}: eval loss {loss:.4f}")
        return loss

    def save(self, step: int) -> Path:
        state = (self.trainable_state() if self.trainable_state
                 else full_state(self.model, only_trainable=True))
        optim = {"optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict()}
        return ckpt.save(self.out, step=step, config=self.config.to_dict(),
                         history=self.history, trainable=state, optimizer=optim,
                         rank=self.dist.rank, keep=self.config.keep_checkpoints,
                         barrier=self.dist.barrier)

    def _resume(self, resume) -> int:
        path = self.out if resume is True else Path(resume)
        saved = ckpt.load(path, rank=self.dist.rank)
        bad = resume_mismatch(TrainConfig.from_dict(saved.config), self.config)
        if bad:
            raise TrainConfigError(f"{saved.folder}: cannot resume with different {bad} (the loss "
                                   "curve would change); use the run's original options")
        self.load_trainable(saved.trainable)
        self.optimizer.load_state_dict(saved.optimizer["optimizer"])
        self.scheduler.load_state_dict(saved.optimizer["scheduler"])
        self.history = list(saved.history)
        return saved.step

    def load_trainable(self, state: dict[str, torch.Tensor]) -> None:
        params = dict(self.model.named_parameters())
        missing = [n for n, p in params.items() if p.requires_grad and n not in state]
        if missing:
            raise TrainConfigError(f"the checkpoint lacks trained tensors {missing[:3]}")
        with torch.no_grad():
            for name, tensor in state.items():
                _copy_into(params[name], tensor)


def _copy_into(param: torch.Tensor, full: torch.Tensor) -> None:
    """Copy a full tensor into a parameter (a DTensor shard under FSDP takes its slice)."""
    to_local = getattr(param, "to_local", None)
    if to_local is None:
        param.copy_(full.to(param.dtype))
        return
    from torch.distributed.tensor import distribute_tensor
    shard = distribute_tensor(full.to(param.dtype), param.device_mesh, param.placements)
    param.to_local().copy_(shard.to_local())
