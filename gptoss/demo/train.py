"""`demo_train`: corpus -> compact random model -> full-parameter training -> pack -> evaluate.

Everything under `out`:
  data/train.jsonl, data/heldout.jsonl   the corpus (fine-tuning data format, `corpus.py`)
  data/first.jsonl, data/first_heldout.jsonl  the first stage's corpus (if any;
                                         `corpus.CURRICULA`)
  vocab.json                             the compact vocabulary (`vocab.py`)
  init/                                  the random compact checkpoint training starts from
                                         (number_init "digits": number tokens from shared digit
                                         vectors, `number_rows`)
  first/                                 the first stage's `gptoss.finetune` output, if any (its
                                         model/ is where the main training starts)
  run/                                   `gptoss.finetune` output: checkpoints, history.json,
                                         model/ (the trained compact checkpoint, hf-bf16)
  gptoss-demo.safetensors                the package (`package.py`), experts MXFP4
  expanded/                              the package expanded to a standard checkpoint
  scores.json, MODEL_CARD.md             held-out metrics (`evaluate.py`) and the filled card
Training is the project's own pipeline (`gptoss.finetune.finetune`, method "full"): on the
first stage's corpus if the options ask for one (`first_records`), then on the main corpus,
each rendered by `gptoss.finetune.data` and renumbered into the compact vocabulary. The same seed and options
give the same corpus, initial weights and data order.
"""
from __future__ import annotations

import json
import math
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
from ..harmony.tokenizer import get_tokenizer
from ..weights.random_weights import random_canonical
from ..weights.writer import write_canonical
from . import corpus
from .package import SIZE_LIMIT, expand, pack
from .vocab import DemoVocab, vocab_from_examples


NUMBER_INIT = ("digits", "random")
ENTITY_INIT = ("codes", "random")
def _check_init(number_init: str, entity_init: str = "random") -> None:
    if number_init not in NUMBER_INIT:
        raise ValueError(f"number_init must be one of {NUMBER_INIT}, got {number_init!r}")
    if entity_init not in ENTITY_INIT:
        raise ValueError(f"entity_init must be one of {ENTITY_INIT}, got {entity_init!r}")


# named option sets, as changes to the defaults: "shipped" is the recipe of the packaged model
# (the defaults: digit-structured number rows, code-structured rows for the tools' categorical
# values, lr 1e-3, a first stage of 1,800 steps of additions and echo records that repeat tool
# values too, echo records in the main mix, get_time over 25 zones); "v2" the model shipped on
# 4 December 2026 (the same without the value rows and value echoes), "v1" the first shipped
# model's (3 December 2026) and "copy" the copy-learning variant measured on 3 December 2026
# (docs/demo.md)
RECIPES = {"shipped": {},
           "v2": {"entity_init": "random", "curriculum": "arith"},
           "v1": {"lr": 3e-3, "number_init": "random", "entity_init": "random", "first_records": 0,
                  "echo_weight": 0, "wide_zones": False},
           "copy": {"entity_init": "random", "first_records": 4800, "curriculum": "echo",
                    "wide_zones": False}}


@dataclass(frozen=True)
class DemoTrainOptions:
    preset: str = "demo"
    seed: int = 0
    records: int = 30000  # training conversations (one epoch; ~6.0M tokens, docs/demo.md)
    first_records: int = 28800  # a first stage trained before the corpus (0: none)
    curriculum: str = "arith-values"  # its corpus: a key of corpus.CURRICULA
    echo_weight: int = 4  # echo records' weight in the main mix (corpus.MIX's weights sum to 100)
    wide_zones: bool = True  # get_time calls about 25 zones, not 5 (tools.WIDE_ZONES)
    heldout: int = 400  # held-out conversations for the eval loss and the metrics
    batch_size: int = 16
    lr: float = 1e-3
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    other_rows: int = 2048
    number_init: str = "digits"  # "digits" | "random" (see `number_rows`)
    entity_init: str = "codes"  # "codes" | "random" (see `entity_rows`)
    max_length: int = 640
    save_every: int | None = 200
    evaluate: bool = True
    eval_max_tokens: int = 256
    eval_additions: int = 100  # 2-digit additions scored (their own held-out set)
    config_changes: dict = field(default_factory=dict)  # ModelConfig overrides (tests)

    def __post_init__(self) -> None:
        _check_init(self.number_init, self.entity_init)
        if self.first_records < 0 or self.echo_weight < 0:
            raise ValueError("first_records and echo_weight must be >= 0, got "
                             f"{self.first_records} and {self.echo_weight}")
        if self.curriculum not in corpus.CURRICULA:
            raise ValueError(f"curriculum must be one of {tuple(corpus.CURRICULA)}, got "
                             f"{self.curriculum!r}")

    def train_config(self) -> TrainConfig:
        return TrainConfig(method="full", precision="fp32", epochs=1, batch_size=self.batch_size,
                           lr=self.lr, warmup_steps=self.warmup_steps,
                           min_lr_ratio=self.min_lr_ratio, weight_decay=0.0,
                           gradient_checkpointing=False, seed=self.seed,
                           max_length=self.max_length, save_every=self.save_every,
                           save_layout="hf-bf16")


def _write_split(folder: Path, train_name: str, held_name: str, mix: dict, records: int,
                 heldout: int, seed: int) -> tuple[Path, Path]:
    """`records` training and `heldout` held-out records of `mix` (seeds `seed`, `seed` + 1)."""
    train = corpus.write_jsonl(corpus.generate(records, seed=seed, mix=mix), folder / train_name)
    held = corpus.write_jsonl(corpus.generate(heldout, seed=seed + 1, split="heldout", mix=mix),
                              folder / held_name)
    return train, held


def write_corpus(out: Path, options: DemoTrainOptions) -> tuple[Path, Path]:
    return _write_split(out / "data", "train.jsonl", "heldout.jsonl",
                        corpus.main_mix(options.echo_weight, options.wide_zones), options.records,
                        options.heldout, options.seed)


def write_first_corpus(out: Path, options: DemoTrainOptions) -> tuple[Path, Path]:
    """The first stage's corpus (`corpus.CURRICULA[options.curriculum]`), and a few held out."""
    return _write_split(out / "data", "first.jsonl", "first_heldout.jsonl",
                        corpus.CURRICULA[options.curriculum], options.first_records,
                        max(options.heldout // 4, 1), options.seed + 3)


def compact(data: Dataset, vocab: DemoVocab) -> Dataset:
    """`data` renumbered into the compact vocabulary."""
    examples = [Example(vocab.to_compact(e.tokens), e.mask, e.line) for e in data.examples]
    return Dataset(data.path, examples, list(data.bad))


UNEMBED_TIE = 1.0  # a number's unembedding row = its embedding row x UNEMBED_TIE / sqrt(H)


def number_rows(vocab: DemoVocab, hidden: int, seed: int) -> dict[int, torch.Tensor]:
    """Compact row -> initial embedding row of each number token 0-999: the sum of random
    vectors for its length and for each digit at its place (ones, tens, hundreds), scaled to the
    embedding's std 1. Random, but shared by every number with that digit at that place, so what
    the model learns about "7 in the ones place" (reading it from 47, writing it into 17) serves
    all such numbers; each number token alone is too rare in the corpus to learn from."""
    g = torch.Generator().manual_seed(seed * 7919 + 17)
    length, place = torch.randn(3, hidden, generator=g), torch.randn(3, 10, hidden, generator=g)
    table, tok, rows = vocab.compact_map(), get_tokenizer(), {}
    for n in range(1000):
        text = str(n)
        ids = tok.encode(text)
        if len(ids) != 1 or ids[0] not in table:
            continue
        v = length[len(text) - 1] + sum(place[i, int(d)] for i, d in enumerate(reversed(text)))
        rows[table[ids[0]]] = v / math.sqrt(len(text) + 1)
    return rows


ENTITY_BASE = 7  # `entity_rows`: the base of the codes


def entity_rows(vocab: DemoVocab, hidden: int, seed: int,
                taken: frozenset = frozenset()) -> dict[int, torch.Tensor]:
    """Compact row -> initial embedding row of each token of the tools' categorical values
    (`tools.VALUES`, with and without a leading space), rows in `taken` left out: the k-th such
    token (in id order) gets code k in base ENTITY_BASE, and its row is the sum of one random
    vector per (place, digit) of the code, / sqrt(places), so std 1. The rows span
    ENTITY_BASE x places dimensions (21 for up to 343 tokens): one attention head's value
    projection (head_dim 32) can carry any of them whole, and copying one from a tool result is
    one token-independent map, as for numbers. Plain random rows span about `hidden` dimensions,
    more than the demo's value projections (2 KV heads x 32) can pass on."""
    from .tools import VALUES
    table, tok = vocab.compact_map(), get_tokenizer()
    ids = sorted({i for value in VALUES for form in (value, " " + value) for i in tok.encode(form)})
    rows = sorted({table[i] for i in ids if i in table and table[i] not in taken})
    places = 1
    while ENTITY_BASE ** places < len(rows):
        places += 1
    g = torch.Generator().manual_seed(seed * 7919 + 29)
    place = torch.randn(places, ENTITY_BASE, hidden, generator=g)
    return {r: sum(place[p, (k // ENTITY_BASE ** p) % ENTITY_BASE] for p in range(places))
            / math.sqrt(places) for k, r in enumerate(rows)}


def _initial_stream(stream: Iterator[tuple[str, torch.Tensor]], vocab: DemoVocab,
                    config: ModelConfig, seed: int, number_init: str, entity_init: str = "random"):
    """Random canonical tensors with every `other` unembedding row equal to the first one and,
    with number_init "digits", the number tokens' embedding and unembedding rows from
    `number_rows` (the unembedding's tied to the embedding's, so copying a number is one
    token-independent map); with entity_init "codes", the same for the tools' categorical values
    from `entity_rows`."""
    numbers = number_rows(vocab, config.hidden_size, seed) if number_init == "digits" else {}
    if entity_init == "codes":
        numbers.update(entity_rows(vocab, config.hidden_size, seed, frozenset(numbers)))
    index = torch.tensor(list(numbers), dtype=torch.long)
    values = torch.stack(list(numbers.values())) if numbers else None
    for name, tensor in stream:
        if name in ("embedding.weight", "unembedding.weight"):
            tensor = tensor.clone()
        if name == "unembedding.weight":
            tensor[vocab.other:] = tensor[vocab.other]
        if values is not None and name == "embedding.weight":
            tensor[index] = values.to(tensor.dtype)
        if values is not None and name == "unembedding.weight":
            scale = UNEMBED_TIE / math.sqrt(config.hidden_size)
            tensor[index] = (values * scale).to(tensor.dtype)
        yield name, tensor


def write_initial(out: Path, config: ModelConfig, vocab: DemoVocab, seed: int,
                  number_init: str = "random", entity_init: str = "random") -> Path:
    _check_init(number_init, entity_init)
    compact_config = config.replace(vocab_size=vocab.size)
    stream = _initial_stream(random_canonical(compact_config, seed), vocab, compact_config, seed,
                             number_init, entity_init)
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
    stages = [(train, held, out / "run")]
    if o.first_records:
        first_train, first_held = (load_jsonl(f, max_length=c.max_length)
                                   for f in write_first_corpus(out, o))
        stages.insert(0, (first_train, first_held, out / "first"))
    vocab = vocab_from_examples([e.tokens for data, held_out, _ in stages
                                 for e in data.examples + held_out.examples], o.other_rows)
    vocab.save(out / "vocab.json")
    log = log or (lambda text: None)
    log(f"{train.summary()}; vocabulary {len(vocab.token_ids)} ids + {vocab.other_rows} shared")
    start = write_initial(out / "init", config, vocab, o.seed, o.number_init, o.entity_init)
    began, history, steps = time.perf_counter(), [], 0
    for data, held_out, folder in stages:  # the first stage (if any), then the main corpus
        result = finetune(start, compact(data, vocab), folder,
                          eval_data=compact(held_out, vocab), config=c, resume=resume,
                          progress=progress, log=log)
        start, steps = result.output, steps + result.train.steps
        history += result.history
    seconds = time.perf_counter() - began
    package = pack(result.output, vocab, out / "gptoss-demo.safetensors")
    size = package.stat().st_size
    if size > SIZE_LIMIT:
        raise ValueError(f"{package}: {size} bytes, over the {SIZE_LIMIT}-byte package limit")
    tokens = sum(h["tokens"] for h in history)
    summary = {"options": asdict(o), "config": config.to_hf_dict(), "steps": steps,
               "first_steps": steps - result.train.steps,
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
