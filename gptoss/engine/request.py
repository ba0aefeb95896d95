"""A generation request's state as it moves through the engine, and what the engine returns.

Lifecycle: WAITING (queued, or preempted and to be recomputed) -> RUNNING (holds KV blocks;
`num_computed_tokens` of its tokens have KV in the cache) -> FINISHED (blocks freed).
"""
from __future__ import annotations

import enum
import itertools
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from .block_pool import adapter_salt
from .detokenizer import Detokenizer, decode_text
from .sampler import LogitsProcessor, SamplingParams, TokenLogprobs

FINISH_REASONS = ("stop", "length", "abort")
_ids = itertools.count()


class PromptError(ValueError):
    """A prompt the engine cannot take (empty, bad token ids, too long for the context)."""


class ContextLengthError(PromptError):
    """The prompt (plus the requested output tokens) does not fit the context."""

    def __init__(self, context_length: int, prompt_tokens: int, max_tokens: int | None):
        self.context_length, self.prompt_tokens, self.max_tokens = (context_length, prompt_tokens,
                                                                    max_tokens)
        asked = f" + max_tokens {max_tokens}" if max_tokens is not None else ""
        super().__init__(f"the prompt has {prompt_tokens} tokens{asked}, which exceeds the "
                         f"context length of {context_length} tokens")


def output_limit(context_length: int, prompt_tokens: int, max_tokens: int | None) -> int:
    """The context-length rule: a request may generate `max_tokens` (default: all the room left)
    if the prompt leaves room for them; otherwise ContextLengthError."""
    room = context_length - prompt_tokens
    if room <= 0 or (max_tokens is not None and max_tokens > room):
        raise ContextLengthError(context_length, prompt_tokens, max_tokens)
    return room if max_tokens is None else max_tokens


class RequestStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0  # prompt tokens served from the prefix cache

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class RequestOutput:
    """The result of one request. `token_ids` include the stop token that ended it (if any);
    `text` does not, and is cut before a matched stop string."""

    request_id: str
    prompt_token_ids: list[int]
    token_ids: list[int]
    text: str
    finish_reason: str | None
    logprobs: list[TokenLogprobs] | None = None
    num_cached_tokens: int = 0  # prompt tokens whose KV came from the prefix cache

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass(eq=False)
class Request:
    prompt_token_ids: list[int]
    params: SamplingParams
    tokenizer: Any   # decodes `RequestOutput.text` (and the text stop strings match)
    max_tokens: int  # resolved against the context length
    request_id: str = ""
    logits_processor: LogitsProcessor | None = None
    stop_token_ids: tuple[int, ...] = ()  # params.stop_token_ids, or the model's eos ids
    output_token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprobs] = field(default_factory=list)
    status: RequestStatus = RequestStatus.WAITING
    num_computed_tokens: int = 0
    num_cached_tokens: int = 0
    finish_reason: str | None = None
    arrival_time: float = field(default_factory=time.monotonic)
    first_token_time: float | None = None
    generator: torch.Generator = field(init=False)
    detokenizer: Detokenizer | None = field(init=False)  # only with stop strings

    def __post_init__(self) -> None:
        self.detokenizer = Detokenizer(self.tokenizer, self.params.stop) if self.params.stop else None
        if not self.request_id:
            self.request_id = f"req-{next(_ids)}"
        seed = self.params.seed if self.params.seed is not None else secrets.randbits(62)
        self.generator = torch.Generator(device="cpu").manual_seed(seed)

    # ---- tokens ------------------------------------------------------------------------------
    @property
    def all_token_ids(self) -> list[int]:
        return self.prompt_token_ids + self.output_token_ids

    @property
    def cache_salt(self) -> bytes | None:
        """Where its prefix-cache hashes start: KV computed by one adapter is not another's."""
        return adapter_salt(self.params.lora)

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def num_uncomputed(self) -> int:
        """Tokens whose KV is not yet in the cache (the whole prompt at first, then 1 per step)."""
        return self.num_tokens - self.num_computed_tokens

    @property
    def finished(self) -> bool:
        return self.status is RequestStatus.FINISHED

    # ---- outcomes ----------------------------------------------------------------------------
    def append_token(self, token_id: int, logprobs: TokenLogprobs | None) -> None:
        """Record a sampled token and decide whether the request is done."""
        if self.first_token_time is None:
            self.first_token_time = time.monotonic()
        self.output_token_ids.append(token_id)
        if logprobs is not None:
            self.logprobs.append(logprobs)
        if not self.params.ignore_eos and token_id in self.stop_token_ids:
            self.finish_reason = "stop"
            return
        if self.detokenizer is not None:
            self.detokenizer.feed(token_id)
            if self.detokenizer.stopped:
                self.finish_reason = "stop"
                return
        if len(self.output_token_ids) >= self.max_tokens:
            self.finish_reason = "length"

    def abort(self) -> None:
        if self.finish_reason is None:
            self.finish_reason = "abort"

    def usage(self) -> Usage:
        return Usage(len(self.prompt_token_ids), len(self.output_token_ids), self.num_cached_tokens)

    def text(self) -> str:
        """The output text: without the stop token that ended the request, cut before a matched
        stop string."""
        if self.detokenizer is not None:
            if self.finish_reason is not None:
                self.detokenizer.finish()
            return self.detokenizer.text
        ids = self.output_token_ids
        if self.finish_reason == "stop" and ids and ids[-1] in self.stop_token_ids:
            ids = ids[:-1]
        return decode_text(self.tokenizer, ids)

    def output(self) -> RequestOutput:
        return RequestOutput(
            request_id=self.request_id, prompt_token_ids=list(self.prompt_token_ids),
            token_ids=list(self.output_token_ids), text=self.text(),
            finish_reason=self.finish_reason,
            logprobs=list(self.logprobs) if self.params.logprobs is not None else None,
            num_cached_tokens=self.num_cached_tokens)
