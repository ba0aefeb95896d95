"""`POST /v1/completions`: legacy text completions (lm-evaluation-harness and many tools use it).

The prompt is raw text (special tokens such as `<|start|>` are read as such, so a harmony prompt
written out works) or token ids; the model continues it with no chat template. The text is the
tokens' UTF-8 decoding, without the token that ended the request (`<|return|>`…); `stop`
strings cut it (`engine.Detokenizer`). `echo` prepends the prompt's text; `logprobs` gives the
legacy shape (`tokens`, `token_logprobs`, `top_logprobs`, `text_offset`) for generated tokens
(prompt logprobs, needed by `echo` with `logprobs`, are not computed: a 400).
"""
from __future__ import annotations

import time
from typing import Any, AsyncIterator

from pydantic import Field, field_validator

from ..engine import SamplingParams, SamplingParamsError
from ..engine.detokenizer import Detokenizer
from ..harmony.output import PartDelta, PartDone, PartStarted
from .context import ServerContext
from .generation import Finished, Generation, merged
from .pipeline import SAMPLING_PARAMS, SEED_MODULUS
from .protocol import (
    MAX_N, MAX_STOP_STRINGS, SEED_RANGE, Int, InvalidRequest, RequestBody, StreamOptions,
    UnsupportedFeature, Usage, new_id, now)

MAX_LOGPROBS = 5            # as OpenAI's legacy endpoint
DEFAULT_MAX_TOKENS = 16     # OpenAI's default for this endpoint


class CompletionRequest(RequestBody):
    model: str
    prompt: str | list[str] | list[Int] | list[list[Int]]
    max_tokens: Int | None = Field(default=DEFAULT_MAX_TOKENS, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    seed: Int | None = Field(default=None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    n: Int = Field(default=1, ge=1, le=MAX_N)
    best_of: Int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    logprobs: Int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    echo: bool = False
    suffix: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    logit_bias: dict[str, float] | None = None

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value):
        if isinstance(value, list) and (len(value) > MAX_STOP_STRINGS or not all(value)):
            raise ValueError(f"at most {MAX_STOP_STRINGS} non-empty stop sequences are allowed")
        return value

    @property
    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class TextOutput:
    """Plain-text counterpart of `harmony.output.HarmonyOutput` for `Generation`: one text part
    (0), stop strings applied, the ending token (one of `eos_ids`) left out."""

    called = False
    reasoning_tokens = 0

    def __init__(self, tokenizer, eos_ids: tuple[int, ...], stop: list[str]) -> None:
        self.text = Detokenizer(tokenizer, tuple(stop))
        self.eos_ids, self._started = set(eos_ids), False

    @property
    def stopped(self) -> bool:
        return self.text.stopped

    def feed(self, token_id: int, logprobs: Any = None) -> list:
        out = [] if self._started else [PartStarted(0, "text")]
        self._started = True
        if token_id in self.eos_ids:  # the ending token: neither text nor a logprob
            logprobs = None
        else:
            self.text.feed(token_id)
        delta = self.text.delta()
        if self.text.stopped:
            self.text.finish()
            delta += self.text.delta()
            return out + [PartDelta(0, "text", delta, [logprobs] if logprobs else [])] + self._done()
        return out + [PartDelta(0, "text", delta, [logprobs] if logprobs else [])]

    def close(self) -> list:
        if self.text.stopped:
            return []
        self.text.finish()
        tail = self.text.delta()
        out = [] if self._started else [PartStarted(0, "text")]
        self._started = True
        return out + ([PartDelta(0, "text", tail)] if tail else []) + self._done()

    def _done(self) -> list:
        return [PartDone(0, "text", self.text.text)]


def _prompts(ctx: ServerContext, req: CompletionRequest) -> list[list[int]]:
    p = req.prompt
    if isinstance(p, str):
        texts: list = [p]
    elif p and all(isinstance(t, int) for t in p):
        texts = [p]
    else:
        texts = list(p)
    if not texts:
        raise InvalidRequest("prompt: expected at least one prompt", param="prompt")
    encode = ctx.engine.tokenizer.encode
    prompts = [encode(t, allowed_special="all") if isinstance(t, str) else list(t) for t in texts]
    if any(not ids for ids in prompts):
        raise InvalidRequest("prompt: a prompt must have at least one token", param="prompt")
    return prompts


def _unsupported(req: CompletionRequest) -> None:
    if req.suffix:
        raise UnsupportedFeature("suffix (insertion) is not supported", param="suffix")
    if req.best_of not in (None, req.n):
        raise UnsupportedFeature("best_of other than n is not supported", param="best_of")
    if req.logit_bias:
        raise UnsupportedFeature("logit_bias is not supported", param="logit_bias")
    if req.echo and req.logprobs is not None:
        raise UnsupportedFeature("echo with logprobs needs prompt logprobs, which this server "
                                 "does not compute", param="echo")


def _params(req: CompletionRequest, limit: int, seed: int | None) -> SamplingParams:
    try:
        return SamplingParams(
            temperature=1.0 if req.temperature is None else req.temperature,
            top_p=1.0 if req.top_p is None else req.top_p, seed=seed, max_tokens=limit,
            logprobs=req.logprobs, presence_penalty=req.presence_penalty or 0.0,
            frequency_penalty=req.frequency_penalty or 0.0)
    except SamplingParamsError as exc:
        field_name = str(exc).split(" ")[0].removeprefix("SamplingParams.")
        raise InvalidRequest(str(exc), param=SAMPLING_PARAMS.get(field_name)) from None


async def start(ctx: ServerContext, req: CompletionRequest) -> tuple[list[list[int]], list[Generation]]:
    """The prompts (token ids) and one started generation per prompt and choice, in the order
    of the response's `choices` (prompt-major)."""
    ctx.check_model(req.model)
    _unsupported(req)
    prompts = _prompts(ctx, req)
    limits = [ctx.token_limit(len(p), req.max_tokens, "max_tokens") for p in prompts]
    arrival, generations = time.monotonic(), []
    try:
        for prompt, limit in zip(prompts, limits):
            for i in range(req.n):
                seed = None if req.seed is None else (req.seed + i) % SEED_MODULUS
                stream = _submit(ctx, prompt, _params(req, limit, seed))
                output = TextOutput(ctx.engine.tokenizer, ctx.engine.eos_token_ids, req.stop_list)
                generations.append(Generation(stream, output, len(prompt), metrics=ctx.metrics,
                                              arrival=arrival))
    except BaseException:
        for g in generations:
            g.stream.cancel()
        raise
    return prompts, generations


def _submit(ctx: ServerContext, prompt: list[int], params: SamplingParams):
    try:
        return ctx.engine.submit(prompt, params)
    except ValueError as exc:  # PromptError (a token id outside the vocabulary…)
        raise InvalidRequest(str(exc), param="prompt") from None


class _Choice:
    def __init__(self, echo: str) -> None:
        self.text, self.finish = [echo], None
        self.tokens: list[str] = []
        self.token_logprobs: list[float] = []
        self.top: list[dict[str, float]] = []
        self.offsets: list[int] = []
        self.length = len(echo)

    def add(self, tokenizer, event: PartDelta) -> dict[str, Any] | None:
        self.text.append(event.text)
        if not event.logprobs:
            self.length += len(event.text)
            return None
        piece = _logprobs(tokenizer, event.logprobs, self.length)
        self.length += len(event.text)
        for key, values in (("tokens", self.tokens), ("token_logprobs", self.token_logprobs),
                            ("top_logprobs", self.top), ("text_offset", self.offsets)):
            values += piece[key]
        return piece


def _logprobs(tokenizer, logprobs: list, offset: int) -> dict[str, list]:
    """The legacy logprobs object of some generated tokens (text offsets from `offset`)."""
    def text(token_id: int) -> str:
        return tokenizer.token_bytes(token_id).decode("utf-8", errors="replace")

    out: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for lp in logprobs:
        out["tokens"].append(text(lp.token_id))
        out["token_logprobs"].append(lp.logprob)
        out["top_logprobs"].append({text(t): v for t, v in lp.top})
        out["text_offset"].append(offset)
        offset += len(out["tokens"][-1])
    return out


def _usage(prompts: list[list[int]], finished: list[Finished]) -> dict[str, Any]:
    prompt = sum(len(p) for p in prompts)
    completion = sum(f.completion_tokens for f in finished)
    return Usage(prompt_tokens=prompt, completion_tokens=completion,
                 total_tokens=prompt + completion).model_dump()


def _echo(ctx: ServerContext, req: CompletionRequest, prompts, index: int) -> str:
    if not req.echo:
        return ""
    return ctx.engine.tokenizer.decode(prompts[index // req.n])


async def complete(ctx: ServerContext, req: CompletionRequest, prompts: list[list[int]],
                   generations: list[Generation]) -> dict[str, Any]:
    """Run every choice to its end; the `text_completion` object."""
    choices = [_Choice(_echo(ctx, req, prompts, i)) for i in range(len(generations))]
    finished: list[Finished] = []
    async for i, event in merged(generations):
        if isinstance(event, PartDelta):
            choices[i].add(ctx.engine.tokenizer, event)
        elif isinstance(event, Finished):
            choices[i].finish = event.reason
            finished.append(event)
    body = [{"index": i, "text": "".join(c.text), "finish_reason": c.finish,
             "logprobs": None if req.logprobs is None else {
                 "tokens": c.tokens, "token_logprobs": c.token_logprobs, "top_logprobs": c.top,
                 "text_offset": c.offsets}} for i, c in enumerate(choices)]
    return {"id": new_id("cmpl-"), "object": "text_completion", "created": now(),
            "model": req.model, "choices": body, "usage": _usage(prompts, finished)}


async def stream_chunks(ctx: ServerContext, req: CompletionRequest, prompts: list[list[int]],
                        generations: list[Generation]) -> AsyncIterator[dict[str, Any]]:
    """The streamed `text_completion` chunks: text deltas, each choice's finish, then usage
    (with `stream_options.include_usage`)."""
    cid, created = new_id("cmpl-"), now()

    def chunk(i: int, text: str, finish=None, logprobs=None) -> dict[str, Any]:
        return {"id": cid, "object": "text_completion", "created": created, "model": req.model,
                "choices": [{"index": i, "text": text, "finish_reason": finish,
                             "logprobs": logprobs}]}

    choices = [_Choice(_echo(ctx, req, prompts, i)) for i in range(len(generations))]
    for i, c in enumerate(choices):
        if c.text[0]:
            yield chunk(i, c.text[0])
    finished: list[Finished] = []
    async for i, event in merged(generations):
        if isinstance(event, PartDelta) and (event.text or event.logprobs):
            yield chunk(i, event.text, logprobs=choices[i].add(ctx.engine.tokenizer, event))
        elif isinstance(event, Finished):
            finished.append(event)
            yield chunk(i, "", finish=event.reason)
    if req.stream_options and req.stream_options.include_usage:
        yield {"id": cid, "object": "text_completion", "created": created, "model": req.model,
               "choices": [], "usage": _usage(prompts, finished)}
