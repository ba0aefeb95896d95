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

import torch

from .detokenizer import Detokenizer
from .sampler import LogitsProcessor, SamplingParams, TokenLogprobs

FINISH_REASONS = ("stop", "length", "abort")
_ids = itertools.count()


class RequestStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


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
    detokenizer: Detokenizer
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

    def __post_init__(self) -> None:
        if not self.request_id:
            self.request_id = f"req-{next(_ids)}"
        seed = self.params.seed if self.params.seed is not None else secrets.randbits(62)
        self.generator = torch.Generator(device="cpu").manual_seed(seed)

    # ---- tokens ------------------------------------------------------------------------------
    @property
    def all_token_ids(self) -> list[int]:
        return self.prompt_token_ids + self.output_token_ids

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
            self.detokenizer.finish()
            return
        self.detokenizer.feed(token_id)
        if self.detokenizer.stopped:
            self.finish_reason = "stop"
        elif len(self.output_token_ids) >= self.max_tokens:
            self.finish_reason = "length"
            self.detokenizer.finish()

    def abort(self) -> None:
        if self.finish_reason is None:
            self.finish_reason = "abort"
            self.detokenizer.finish()

    def output(self) -> RequestOutput:
        return RequestOutput(
            request_id=self.request_id, prompt_token_ids=list(self.prompt_token_ids),
            token_ids=list(self.output_token_ids), text=self.detokenizer.text,
            finish_reason=self.finish_reason,
            logprobs=list(self.logprobs) if self.params.logprobs is not None else None,
            num_cached_tokens=self.num_cached_tokens)
