"""Held-out metrics of a demo checkpoint (issue 13's acceptance list), and the model card.

`evaluate_checkpoint(folder, heldout_jsonl)` renders each held-out record's prompt as the server
renders a chat-completions request (`harmony.chat.render_chat`, today's date unless the record
gives one), decodes greedily with the engine (`LLM.generate`), parses the reply with gptoss's
harmony parser and scores:
  well_formed      the reply is analysis messages then a final answer ending `<|return|>`, or
                   then a `functions.*` call ending `<|call|>`, with no parser warning
  ended            it stopped on a stop token before `max_tokens`
  add2_exact       2-digit additions (their own held-out set): the answer's last number is a + b
  right_function   tool-call records: the first call names the expected function
  arguments_valid  its arguments parse as JSON and validate against the tool's schema
  uses_result      given the record's call and tool result, the final answer contains every
                   value of the result that the reference answer quotes
  json_valid       response-format records: the final answer is JSON valid against the schema
  refuses          unknown-tool records: no call, and the answer says it can't
  reasoning_median_chars  per effort, the median analysis length in characters
  well_formed_t1, ended_t1  the first two again with temperature 1 sampling (the CLI's default),
                   which also shows how much probability the tokens outside the corpus keep
Percentages are of the records of that kind (0-100).
"""
from __future__ import annotations

import json
import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import torch

from ..engine import LLM, SamplingParams
from ..harmony.chat import render_chat
from ..harmony.parser import HarmonyStreamParser, ParsedMessage
from . import corpus

CARD_TEMPLATE = Path(__file__).parent / "MODEL_CARD.md"


@dataclass
class Reply:
    messages: list[ParsedMessage]
    warnings: list[str]
    finish_reason: str | None

    @property
    def final(self) -> str | None:
        return next((m.text for m in self.messages if m.channel == "final"), None)

    @property
    def call(self) -> ParsedMessage | None:
        return next((m for m in self.messages if (m.recipient or "").startswith("functions.")),
                    None)

    @property
    def reasoning(self) -> str:
        return "".join(m.text for m in self.messages if m.channel == "analysis")

    @property
    def well_formed(self) -> bool:
        ms = self.messages
        if self.warnings or not ms or any(m.role != "assistant" for m in ms):
            return False
        *head, last = ms
        if any(m.channel != "analysis" or m.end_token != "<|end|>" for m in head):
            return False
        if last.recipient:
            return last.recipient.startswith("functions.") and last.end_token == "<|call|>"
        return last.channel == "final" and last.end_token == "<|return|>"


def prompt_of(record: dict, upto: int) -> list[int]:
    options = {k: record[k] for k in ("tools", "response_format") if k in record}
    return render_chat(record["messages"][:upto], reasoning_effort=record["reasoning_effort"],
                       current_date=record.get("current_date"), **options)


def reply_start(record: dict) -> int:
    """Index of the first reply message (after the last user message)."""
    return max(i for i, m in enumerate(record["messages"]) if m["role"] == "user") + 1


def generate(llm: LLM, prompts: list[list[int]], max_tokens: int, temperature: float = 0.0,
             seed: int | None = None) -> list[Reply]:
    params = SamplingParams(temperature=temperature, max_tokens=max_tokens, seed=seed)
    outs = llm.generate(prompts, params)
    replies = []
    for out in outs:
        parser = HarmonyStreamParser(llm.tokenizer)
        parser.feed_many(out.token_ids)
        parser.close()
        replies.append(Reply(parser.messages, parser.warnings, out.finish_reason))
    return replies


def _pct(flags: list[bool]) -> float | None:
    return round(100.0 * sum(flags) / len(flags), 1) if flags else None


def _last_int(text: str | None) -> int | None:
    found = re.findall(r"-?\d+", text or "")
    return int(found[-1]) if found else None


def _valid(text: str | None, schema: dict) -> bool:
    try:
        jsonschema.validate(json.loads(text or ""), schema)
        return True
    except (ValueError, jsonschema.ValidationError, jsonschema.SchemaError):
        return False


def _quoted(result: dict, reference: str) -> list[str]:
    return [str(v) for v in result.values() if not isinstance(v, (dict, list))
            and str(v) in reference]


def score(records: list[dict], replies: list[Reply], adds: list[tuple[dict, Reply]],
          answers: list[tuple[dict, Reply]]) -> dict:
    calls = [(r, y) for r, y in zip(records, replies) if r["demo"]["task"] == "call"]
    tools = lambda r: {t["function"]["name"]: t["function"] for t in r["tools"]}  # noqa: E731
    args_ok = []
    for r, y in calls:
        name = (y.call.recipient or "").removeprefix("functions.") if y.call else None
        args_ok.append(name in tools(r) and _valid(y.call.text, tools(r)[name]["parameters"]))
    efforts = {e: [len(y.reasoning) for r, y in zip(records, replies)
                   if r["reasoning_effort"] == e] for e in corpus.EFFORTS}
    return {
        "replies": len(replies),
        "well_formed": _pct([y.well_formed for y in replies]),
        "ended": _pct([y.finish_reason == "stop" for y in replies]),
        "add2_exact": _pct([_last_int(y.final) == int(r["demo"]["answer"]) for r, y in adds]),
        "right_function": _pct([bool(y.call) and y.call.recipient == "functions."
                                + r["demo"]["function"] for r, y in calls]),
        "arguments_valid": _pct(args_ok),
        "uses_result": _pct([y.final is not None and all(
            v in y.final for v in _quoted(r["demo"]["result"], r["messages"][-1]["content"]))
            for r, y in answers]),
        "json_valid": _pct([_valid(y.final, r["demo"]["schema"]) for r, y in zip(records, replies)
                            if r["demo"]["task"] == "json"]),
        "refuses": _pct([y.call is None and "can't" in (y.final or "")
                         for r, y in zip(records, replies) if r["demo"]["task"] == "refuse"]),
        "reasoning_median_chars": {e: statistics.median(v) if v else None
                                   for e, v in efforts.items()},
    }


def evaluate_checkpoint(folder: str | Path, heldout: str | Path, *, seed: int = 2,
                        additions: int = 100, max_tokens: int = 256,
                        log: Callable[[str], None] | None = print) -> dict:
    """The metrics above on the held-out JSONL (see the module doc)."""
    llm = LLM(folder, dtype=torch.float32, max_num_seqs=32)
    records = [json.loads(line) for line in Path(heldout).read_text().splitlines() if line]
    adds = corpus.addition_records(additions, seed=seed, digits=2)
    replies = generate(llm, [prompt_of(r, reply_start(r)) for r in records + adds], max_tokens)
    calls = [r for r in records if r["demo"]["task"] == "call"]
    answers = generate(llm, [prompt_of(r, len(r["messages"]) - 1) for r in calls], max_tokens)
    scores = score(records, replies[:len(records)], list(zip(adds, replies[len(records):])),
                   list(zip(calls, answers)))
    sampled = generate(llm, [prompt_of(r, reply_start(r)) for r in records], max_tokens,
                       temperature=1.0, seed=seed)
    scores["well_formed_t1"] = _pct([y.well_formed for y in sampled])
    scores["ended_t1"] = _pct([y.finish_reason == "stop" for y in sampled])
    if log:
        log("held-out scores: " + json.dumps(scores))
    return scores


def _init_text(options: dict) -> str:
    """The card's sentence on the initial weights (train.py's number_init and entity_init)."""
    structured = []
    if options.get("number_init") == "digits":
        structured.append("the number tokens 0-999 (one vector per digit and place, so what is "
                          "learnt about \"7 in the ones place\" serves every such number)")
    if options.get("entity_init") == "codes":
        structured.append("the tokens of the tools' categorical values such as stock symbols, "
                          "currencies and time zones (one vector per place of a short code, so "
                          "copying one is a single map for all of them)")
    if not structured:
        return "All weights start from plain random values."
    return ("At the start, the embedding rows of " + " and of ".join(structured)
            + " are sums of shared random vectors, with their unembedding rows tied to them; "
            "all other weights start from plain random values.")


def _recipe_text(options: dict) -> dict:
    """The card's sentences that depend on the recipe (train.py's RECIPES)."""
    from .train import RECIPES
    named = next((name for name, changes in RECIPES.items() if changes and all(
        options.get(k) == v for k, v in changes.items())), None)
    first = options.get("first_records", 0)
    what = {"arith": "additions and repetitions of numbers, times and words",
            "arith-values": "additions and repetitions of numbers, times, words and tool values"
            }.get(options.get("curriculum"), "repetitions of numbers, times and words")
    return {"warmup_text": f"{first} conversations of {what} (a first stage), then on "
                           if first else "",
            "recipe_flag": f" --recipe {named}" if named else "",
            "init_text": _init_text(options),
            "echo_text": "; repeating a list of items" if options.get("echo_weight") else ""}


def write_model_card(path: str | Path, scores: dict, summary: dict) -> Path:
    """The card template with its `{placeholders}` filled from the scores and the run."""
    values = {k: ("n/a" if v is None else v) for k, v in scores.items()
              if not isinstance(v, dict)}
    for effort, v in scores["reasoning_median_chars"].items():
        values[f"reasoning_{effort}"] = "n/a" if v is None else v
    values.update(parameters=summary["parameters"]["total"],
                  body_parameters=summary["parameters"]["without_embeddings"],
                  package_mb=round(summary["package_bytes"] / 1e6, 1),
                  train_minutes=round(summary["train_seconds"] / 60, 1),
                  train_tokens=summary["train_tokens"], steps=summary["steps"],
                  records=summary["options"]["records"], seed=summary["options"]["seed"],
                  lr=summary["options"]["lr"], **_recipe_text(summary["options"]))
    text = CARD_TEMPLATE.read_text()
    for key, value in values.items():
        text = text.replace("{" + key + "}", str(value))
    Path(path).write_text(text)
    return Path(path)
