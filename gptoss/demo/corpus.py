"""The demo model's synthetic corpus: seeded, reproducible harmony conversations.

`generate(n, seed=..., split="train"|"heldout")` draws `n` records from the tasks in `tasks.py`
(mixed by `MIX`) with `random.Random(seed)`: the same arguments always give the same records.
Each record is one line of the fine-tuning data format (docs/finetune.md, chat-completions form):
`messages`, the request options (`tools`, `response_format`), `reasoning_effort` (drawn evenly
from low / medium / high) and, on a third of the records, a `current_date` (the server renders
today's date; the model should not care), plus `demo` (task, split key, what the evaluator
checks; the fine-tuning loader ignores it).
Split: a problem (its `key`: the numbers, the word, the tool and arguments, and the effort) is
held out iff a keyed hash of it falls in the held-out tenth, so the two splits never share a
problem, whatever the seeds; a draw from the other split is drawn again.
"""
from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from pathlib import Path

from . import tasks
from .tasks import EFFORTS, GREETINGS, INSTRUCTIONS, Sample

SPLITS = ("train", "heldout")
HELDOUT_PER_MILLE = 100
# task -> weight (relative frequency)
MIX = {tasks.greeting: 6, tasks.fact: 4, tasks.addition: 20, tasks.subtraction: 5,
       tasks.multiplication: 5, tasks.reverse: 5, tasks.upper: 4, tasks.count_letters: 4,
       tasks.function_call: 27, tasks.unknown_tool: 5, tasks.json_answer: 15}
# the first-stage corpora (train.py's `curriculum`: trained before the main corpus): "echo"
# (the recipe "copy"), "arith", additions and echo records, and "arith-values", the same with
# the echo records' named items drawn from every tool value (`tasks.echo_values`)
CURRICULA = {"echo": {tasks.echo: 1}, "arith": {tasks.addition: 3, tasks.echo: 1},
             "arith-values": {tasks.addition: 3, tasks.echo_values: 1}}


def main_mix(echo_weight: int = 0, wide_zones: bool = False) -> dict:
    """`MIX`, with echo records at `echo_weight` (0: none) and, with `wide_zones`, function calls
    drawn by `tasks.function_call_wide` in place of `tasks.function_call` (`MIX` itself when
    neither is asked for)."""
    mix = MIX
    if wide_zones:
        mix = {(tasks.function_call_wide if k is tasks.function_call else k): v
               for k, v in mix.items()}
    return {**mix, tasks.echo: echo_weight} if echo_weight else mix


def split_of(key: str) -> str:
    digest = hashlib.sha256(b"gptoss-demo-split:" + key.encode()).digest()
    return "heldout" if int.from_bytes(digest[:4], "big") % 1000 < HELDOUT_PER_MILLE else "train"


def _date(rng: random.Random) -> str | None:
    if rng.random() >= 1 / 3:
        return None
    return f"{rng.randint(2024, 2027)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def _with_context(rng: random.Random, sample: Sample) -> list[dict]:
    """Instructions first (sometimes), and sometimes an earlier greeting exchange."""
    messages = list(sample.messages)
    lead = [m for m in messages if m["role"] == "system"]
    body = [m for m in messages if m["role"] != "system"]
    if rng.random() < 0.15 and sample.task != "greeting":
        ask, answer = rng.choice(GREETINGS[:6])
        body = [{"role": "user", "content": ask}, {"role": "assistant", "content": answer}] + body
    instruction = rng.choice(INSTRUCTIONS)
    if instruction and not lead:
        lead = [{"role": "system", "content": instruction}]
    return lead + body


def record(sample: Sample, effort: str, rng: random.Random) -> dict:
    out = {"messages": _with_context(rng, sample), **sample.options, "reasoning_effort": effort}
    date = _date(rng)
    if date:
        out["current_date"] = date
    out["demo"] = {"task": sample.task, "key": sample.key, **sample.meta}
    return out


def iter_records(seed: int, split: str = "train", mix: dict | None = None) -> Iterator[dict]:
    """An endless stream of records of `split`, deterministic in `seed`, drawn by `mix`
    (default `MIX`)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    rng = random.Random(seed)
    mix = MIX if mix is None else mix
    makers, weights = list(mix), list(mix.values())
    while True:
        maker = rng.choices(makers, weights)[0]
        effort = rng.choice(EFFORTS)
        sample = maker(rng, effort)
        if split_of(sample.key) == split:
            yield record(sample, effort, rng)


def generate(n: int, *, seed: int = 0, split: str = "train", mix: dict | None = None
             ) -> list[dict]:
    stream = iter_records(seed, split, mix)
    return [next(stream) for _ in range(n)]


def write_jsonl(records: list[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


def addition_records(n: int, *, seed: int, digits: int = 2, split: str = "heldout") -> list[dict]:
    """`n` addition problems of `digits` digits only (the evaluator's addition set)."""
    rng, out = random.Random(seed), []
    while len(out) < n:
        effort = rng.choice(EFFORTS)
        sample = tasks.addition(rng, effort, digits=digits)
        if split_of(sample.key) == split:
            out.append(record(sample, effort, rng))
    return out
