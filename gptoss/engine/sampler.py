"""Sampling parameters and the batched sampler.

Order of operations on each row's logits (fp32): the request's logits processor (a hook for
constrained decoding) -> repetition / frequency / presence penalties -> temperature -> top-k ->
top-p -> min-p -> draw. Temperature 0 is greedy (argmax after the processor and the penalties).
Each request draws from its own `torch.Generator`, one draw per generated token, so a seeded
request gets the same tokens whatever else shares its batch (up to the floating-point
differences of the model's batched matmuls, which are negligible in fp32).
Logprobs are those of the model's raw distribution (log_softmax of the unprocessed logits).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import torch

from .constraints import StructuredOutput

MAX_LOGPROBS = 20

# `processor(output_token_ids, logits [V] fp32) -> logits [V]`: called once per generated token,
# before the penalties, with every token generated so far (so a stateful grammar matcher can
# advance by the ones it has not seen). Mask a token by setting its logit to -inf.
LogitsProcessor = Callable[[Sequence[int], torch.Tensor], torch.Tensor]


class SamplingParamsError(ValueError):
    """An invalid sampling parameter; the message names the field."""


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens and when to stop. Validated on construction; immutable."""

    temperature: float = 1.0          # 0 = greedy
    top_p: float = 1.0                # nucleus: smallest set with cumulative probability >= top_p
    top_k: int = 0                    # 0 (or -1) = no limit
    min_p: float = 0.0                # drop tokens below min_p * the top token's probability
    presence_penalty: float = 0.0     # OpenAI: subtracted once from every generated token's logit
    frequency_penalty: float = 0.0    # OpenAI: subtracted once per occurrence in the output
    repetition_penalty: float = 1.0   # CTRL/HF: prompt+output tokens, divide >0 logits, multiply <0
    seed: int | None = None
    max_tokens: int | None = None     # None: up to the context length
    stop_token_ids: tuple[int, ...] | None = None  # None: the model's end-of-sequence ids
    stop: tuple[str, ...] = ()        # stop strings; the text is cut before the match
    ignore_eos: bool = False          # do not stop on stop_token_ids (benchmarks)
    logprobs: int | None = None       # top-n logprobs per generated token (0..20)
    # enforce a JSON answer or a tool call by grammar-constrained decoding (engine/constraints.py)
    structured_output: StructuredOutput | None = None
    # the LoRA adapter (its name in `LLM(..., lora={name: folder})`) that computes this request;
    # None: the base model
    lora: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        object.__setattr__(self, "stop", tuple(self.stop or ()))
        if self.stop_token_ids is not None:
            object.__setattr__(self, "stop_token_ids", tuple(self.stop_token_ids))
        if self.top_k == -1:
            object.__setattr__(self, "top_k", 0)
        self._check_numbers()
        self._check_limits()

    def _check_numbers(self) -> None:
        def number(name, lo, hi, lo_open=False):
            value = getattr(self, name)
            where = f"SamplingParams.{name}"
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not math.isfinite(value)):
                raise SamplingParamsError(f"{where} must be a finite number, got {value!r}")
            if value < lo or value > hi or (lo_open and value == lo):
                bound = f"({lo}, {hi}]" if lo_open else f"[{lo}, {hi}]"
                raise SamplingParamsError(f"{where} must be in {bound}, got {value!r}")

        number("temperature", 0.0, 100.0)
        number("top_p", 0.0, 1.0, lo_open=True)
        number("min_p", 0.0, 1.0)
        number("presence_penalty", -2.0, 2.0)
        number("frequency_penalty", -2.0, 2.0)
        number("repetition_penalty", 0.0, 100.0, lo_open=True)

    def _check_limits(self) -> None:
        def integer(name, value, lo):
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise SamplingParamsError(f"SamplingParams.{name} must be an integer >= {lo}, "
                                          f"got {value!r}")

        integer("top_k", self.top_k, 0)
        if self.max_tokens is not None:
            integer("max_tokens", self.max_tokens, 1)
        if self.seed is not None:
            integer("seed", self.seed, 0)
        if self.logprobs is not None:
            integer("logprobs", self.logprobs, 0)
            if self.logprobs > MAX_LOGPROBS:
                raise SamplingParamsError(f"SamplingParams.logprobs must be <= {MAX_LOGPROBS}, "
                                          f"got {self.logprobs}")
        if self.structured_output is not None and not isinstance(self.structured_output,
                                                                 StructuredOutput):
            raise SamplingParamsError("SamplingParams.structured_output must be a "
                                      f"StructuredOutput, got {self.structured_output!r}")
        for token in self.stop_token_ids or ():
            integer("stop_token_ids[]", token, 0)
        for text in self.stop:
            if not isinstance(text, str) or not text:
                raise SamplingParamsError(f"SamplingParams.stop entries must be non-empty strings, "
                                          f"got {text!r}")
        if self.lora is not None and (not isinstance(self.lora, str) or not self.lora):
            raise SamplingParamsError(f"SamplingParams.lora must be an adapter name or None, "
                                      f"got {self.lora!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def penalized(self) -> bool:
        return bool(self.presence_penalty or self.frequency_penalty
                    or self.repetition_penalty != 1.0)


class SampleRow(Protocol):
    """What the sampler reads from a request (`engine.request.Request` provides it)."""

    params: SamplingParams
    generator: torch.Generator
    prompt_token_ids: list[int]
    output_token_ids: list[int]
    logits_processor: LogitsProcessor | None


@dataclass
class TokenLogprobs:
    """The chosen token's logprob and the top-n alternatives, from the raw distribution."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class SamplerOutput:
    token_ids: list[int]
    logprobs: list[TokenLogprobs | None]


class Sampler:
    """`sampler(logits [N, V], rows) -> SamplerOutput`, one token per row."""

    def __call__(self, logits: torch.Tensor, rows: Sequence[SampleRow]) -> SamplerOutput:
        """logits [N, V] in any float dtype. Rows without a processor or penalties are not
        copied; plain greedy rows take one batched argmax of the raw logits (exact in bf16)."""
        if logits.dim() != 2 or logits.shape[0] != len(rows):
            raise ValueError(f"sampler: logits {tuple(logits.shape)} do not match {len(rows)} rows")
        processed = {i: self._process_row(logits[i].to(torch.float32, copy=True), row)
                     for i, row in enumerate(rows)
                     if row.logits_processor is not None or row.params.penalized}
        tokens = [0] * len(rows)
        plain = [i for i, row in enumerate(rows) if row.params.greedy and i not in processed]
        if plain:
            # max(dim) returns the first maximal index like argmax, and is ~4x faster on bf16
            rows_max = (logits if len(plain) == len(rows) else logits[plain]).max(dim=-1)
            for i, t in zip(plain, rows_max.indices.tolist()):
                tokens[i] = t
        for i, x in processed.items():
            if rows[i].params.greedy:
                tokens[i] = int(torch.argmax(x))
        sampled = [i for i, row in enumerate(rows) if not row.params.greedy]
        if sampled:
            x = torch.stack([processed[i] if i in processed else logits[i].float() for i in sampled])
            probs = filtered_probs(x, [rows[i].params for i in sampled])
            for j, i in enumerate(sampled):
                tokens[i] = draw(probs[j], rows[i].generator)
        return SamplerOutput(tokens, self._logprobs(logits, rows, tokens))

    @staticmethod
    def _process_row(x: torch.Tensor, row: SampleRow) -> torch.Tensor:
        """One row's fp32 logits [V] after its logits processor and penalties."""
        if row.logits_processor is not None:
            x = row.logits_processor(row.output_token_ids, x)
            if not bool(torch.isfinite(x).any()):
                raise ValueError(f"the logits processor of request "
                                 f"{getattr(row, 'request_id', '?')!r} forbade every token")
        if row.params.penalized:
            x = apply_penalties(x, row.params, row.prompt_token_ids, row.output_token_ids)
        return x

    @staticmethod
    def _logprobs(raw: torch.Tensor, rows: Sequence[SampleRow], tokens: list[int]):
        out: list[TokenLogprobs | None] = [None] * len(rows)
        wanted = [i for i, row in enumerate(rows) if row.params.logprobs is not None]
        if not wanted:
            return out
        logp = torch.log_softmax(raw[wanted].float(), dim=-1)  # [n, V]
        for j, i in enumerate(wanted):
            n = rows[i].params.logprobs
            top = torch.topk(logp[j], n) if n else None
            pairs = list(zip(top.indices.tolist(), top.values.tolist())) if n else []
            out[i] = TokenLogprobs(tokens[i], float(logp[j, tokens[i]]), pairs)
        return out


def apply_penalties(logits: torch.Tensor, params: SamplingParams, prompt: Sequence[int],
                    output: Sequence[int]) -> torch.Tensor:
    """logits [V] -> penalized logits [V]. Repetition counts prompt and output tokens (as HF);
    presence and frequency count output tokens only (as OpenAI)."""
    V = logits.shape[0]
    out_ids = torch.tensor(list(output), dtype=torch.long)
    counts = torch.bincount(out_ids[out_ids < V], minlength=V).to(logits.dtype)
    if params.repetition_penalty != 1.0:
        seen = torch.tensor(list(prompt) + list(output), dtype=torch.long)
        seen = torch.unique(seen[seen < V])
        chosen = logits[seen]
        p = params.repetition_penalty
        logits[seen] = torch.where(chosen > 0, chosen / p, chosen * p)
    if params.frequency_penalty:
        logits = logits - params.frequency_penalty * counts
    if params.presence_penalty:
        logits = logits - params.presence_penalty * (counts > 0).to(logits.dtype)
    return logits


def filtered_probs(x: torch.Tensor, params: Sequence[SamplingParams]) -> torch.Tensor:
    """Processed logits [n, V] -> probabilities [n, V] after temperature, top-k, top-p, min-p."""
    temps = torch.tensor([p.temperature for p in params], dtype=x.dtype)[:, None]
    x = x / temps
    for i, p in enumerate(params):
        if p.top_k and p.top_k < x.shape[1]:
            kth = torch.topk(x[i], p.top_k).values[-1]
            x[i] = x[i].masked_fill(x[i] < kth, float("-inf"))
    probs = torch.softmax(x, dim=-1)
    for i, p in enumerate(params):
        if p.top_p < 1.0:
            probs[i] = top_p_filter(probs[i], p.top_p)
        if p.min_p > 0.0:
            row = probs[i]
            probs[i] = torch.where(row >= p.min_p * row.max(), row, torch.zeros_like(row))
    return probs / probs.sum(dim=-1, keepdim=True)


def top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """probs [V] -> probs with everything outside the nucleus zeroed (not renormalized).

    Keeps the most probable tokens while the probability mass before them is below top_p, so the
    smallest set reaching top_p is kept, and always the top token.
    """
    nonzero = int((probs > 0).sum())
    values, order = torch.topk(probs, nonzero)  # descending, only over the support
    mass_before = torch.cumsum(values, 0) - values
    keep = order[mass_before < top_p]
    out = torch.zeros_like(probs)
    out[keep] = probs[keep]
    return out


def draw(probs: torch.Tensor, generator: torch.Generator) -> int:
    """One token from probs [V] (sum 1): the exponential race argmax(p_i / E_i), E_i ~ Exp(1).

    Uses exactly V draws of `generator` per token, so a request's stream of random numbers does
    not depend on other requests.
    """
    race = torch.empty_like(probs).exponential_(generator=generator).clamp_min_(1e-30)
    return int(torch.argmax(probs / race))
