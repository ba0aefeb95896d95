"""`demo_train`: corpus -> compact random model -> full-parameter training -> pack -> evaluate.

Everything under `out`:
  data/train.jsonl, data/heldout.jsonl   the corpus (fine-tuning data format, `corpus.py`)
  vocab.json                             the compact vocabulary (`vocab.py`)
  init/                                  the random compact checkpoint training starts from
  run/                                   `gptoss.finetune` output: checkpoints, history.json,
                                         model/ (the trained compact checkpoint, hf-bf16)
  gptoss-demo.safetensors                the package (`package.py`), experts MXFP4
  expanded/                              the package expanded to a standard checkpoint
  scores.json, MODEL_CARD.md             held-out metrics (`evaluate.py`) and the filled card
Training is the project's own pipeline (`gptoss.finetune.finetune`, method "full") on the corpus
rendered by `gptoss.finetune.data` and renumbered into the compact vocabulary. The same seed and
options give the same corpus, initial weights and data order.
"""
from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..config import ModelConfig
from ..finetune.api import finetune
from ..finetune.config import TrainConfig
from ..finetune.data import Dataset, Example, load_jsonl
from ..weights.random_weights import random_canonical
from ..weights.writer import write_canonical
from . import corpus
from .package import SIZE_LIMIT, expand, pack
from .vocab import DemoVocab, vocab_from_examples


@dataclass(frozen=True)
class DemoTrainOptions:
    preset: str = "demo"
    seed: int = 0
    records: int = 30000  # training conversations (one epoch; ~6.0M tokens, docs/demo.md)
    heldout: int = 400  # held-out conversations for the eval loss and the metrics
    batch_size: int = 16
    lr: float = 3e-3
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    other_rows: int = 2048
    max_length: int = 640
    save_every: int | None = 200
    evaluate: bool = True
    eval_max_tokens: int = 256
    eval_additions: int = 100  # 2-digit additions scored (their own held-out set)
    config_changes: dict = field(default_factory=dict)  # ModelConfig overrides (tests)

    def train_config(self) -> TrainConfig:
        return TrainConfig(method="full", precision="fp32", epochs=1, batch_size=self.batch_size,
                           lr=self.lr, warmup_steps=self.warmup_steps,
                           min_lr_ratio=self.min_lr_ratio, weight_decay=0.0,
                           gradient_checkpointing=False, seed=self.seed,
                           max_length=self.max_length, save_every=self.save_every,
                           save_layout="hf-bf16")


def write_corpus(out: Path, options: DemoTrainOptions) -> tuple[Path, Path]:
    train = corpus.write_jsonl(corpus.generate(options.records, seed=options.seed),
                               out / "data" / "train.jsonl")
    held = corpus.write_jsonl(corpus.generate(options.heldout, seed=options.seed + 1,
                                              split="heldout"), out / "data" / "heldout.jsonl")
    return train, held


def compact(data: Dataset, vocab: DemoVocab) -> Dataset:
    """`data` renumbered into the compact vocabulary."""
    examples = [Example(vocab.to_compact(e.tokens), e.mask, e.line) for e in data.examples]
    return Dataset(data.path, examples, list(data.bad))


def _tied_others(stream: Iterator[tuple[str, torch.Tensor]], vocab: DemoVocab):
    """Random canonical tensors with every `other` unembedding row equal to the first one."""
    for name, tensor in stream:
        if name == "unembedding.weight":
            tensor = tensor.clone()
            tensor[vocab.other:] = tensor[vocab.other]
        yield name, tensor


def write_initial(out: Path, config: ModelConfig, vocab: DemoVocab, seed: int) -> Path:
    compact_config = config.replace(vocab_size=vocab.size)
    stream = _tied_others(random_canonical(compact_config, seed), vocab)
    return write_canonical(compact_config, out, stream, overwrite=True)


def demo_train(out: str | Path, options: DemoTrainOptions | None = None, *,
               resume: bool = False, progress: bool = True, log=print) -> dict:
    """Run the whole recipe (see the module doc); returns a summary (also out/summary.json).
    `resume` continues the training from the latest checkpoint in out/run (same options: the
    corpus and the initial weights are regenerated identically)."""
    o = options or DemoTrainOptions()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = ModelConfig.preset(o.preset).replace(**o.config_changes)
    c = o.train_config()
    train_file, held_file = write_corpus(out, o)
    train = load_jsonl(train_file, max_length=c.max_length)
    held = load_jsonl(held_file, max_length=c.max_length)
    vocab = vocab_from_examples([e.tokens for e in train.examples + held.examples], o.other_rows)
    vocab.save(out / "vocab.json")
    log = log or (lambda text: None)
    log(f"{train.summary()}; vocabulary {len(vocab.token_ids)} ids + {vocab.other_rows} shared")
    init = write_initial(out / "init", config, vocab, o.seed)
    began = time.perf_counter()
    result = finetune(init, compact(train, vocab), out / "run", eval_data=compact(held, vocab),
                      config=c, resume=resume, progress=progress, log=log)
    seconds = time.perf_counter() - began
    package = pack(result.output, vocab, out / "gptoss-demo.safetensors")
    size = package.stat().st_size
    if size > SIZE_LIMIT:
        raise ValueError(f"{package}: {size} bytes, over the {SIZE_LIMIT}-byte package limit")
    tokens = sum(h["tokens"] for h in result.history)
    summary = {"options": asdict(o), "config": config.to_hf_dict(), "steps": result.train.steps,
               "train_seconds": round(seconds, 1), "train_tokens": tokens,
               "tokens_per_second": round(tokens / max(seconds, 1e-9), 1),
               "final_loss": result.history[-1]["loss"] if result.history else None,
               "eval_losses": result.train.eval_losses, "package_bytes": size,
               "parameters": parameter_count(config)}
    if o.evaluate:
        from .evaluate import evaluate_checkpoint, write_model_card
        expanded = expand(package, out / "expanded", overwrite=True)
        scores = evaluate_checkpoint(expanded, held_file, seed=o.seed + 2,
                                     additions=o.eval_additions, max_tokens=o.eval_max_tokens,
                                     log=log)
        (out / "scores.json").write_text(json.dumps(scores, indent=1) + "\n")
        write_model_card(out / "MODEL_CARD.md", scores, summary)
        summary["scores"] = scores
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def parameter_count(config: ModelConfig) -> dict:
    """Parameters of the expanded model: all, and without the embedding and unembedding."""
    H, E, I = config.hidden_size, config.num_experts, config.intermediate_size
    attn = config.qkv_dim * (H + 1) + config.num_heads + H * (config.q_dim + 1) + H
    mlp = E * (H + 1) + E * (2 * I * H + 2 * I + H * I + H) + H
    body = config.num_layers * (attn + mlp) + H
    return {"total": body + 2 * config.vocab_size * H, "without_embeddings": body}


def clean(out: str | Path) -> None:
    """Remove a previous run's folder (the command's --force)."""
    shutil.rmtree(out, ignore_errors=True)
