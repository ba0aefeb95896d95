"""Continuous batching: every step admits, runs and retires requests.

`schedule()` spends a token budget: first on running requests in admission order (a decode
costs 1 token, an unfinished prompt continues with a chunk), then on waiting requests in arrival
order, each starting from its longest cached prefix. A request that cannot get KV blocks waits
(admission stops at the first that does not fit, so arrival order is kept); a running request
that cannot grow preempts the most recently admitted one, which frees its blocks and is later
recomputed (mostly from the prefix cache). `postprocess()` records computed positions and sampled
tokens and retires finished requests, freeing their blocks.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .kv_cache import PagedKVCache
from .request import Request, RequestStatus
from .sampler import SamplerOutput


@dataclass
class ScheduledChunk:
    """Positions [start, start + length) of `request` are computed this step."""

    request: Request
    start: int
    length: int
    samples: bool = field(init=False)  # the chunk reaches the last token: sample the next one

    def __post_init__(self) -> None:
        self.samples = self.start + self.length == self.request.num_tokens


@dataclass
class SchedulerOutput:
    chunks: list[ScheduledChunk] = field(default_factory=list)
    preempted: list[Request] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return sum(c.length for c in self.chunks)


@dataclass
class SchedulerStats:
    computed_tokens: int = 0   # positions whose KV was computed (prompt and output)
    cached_tokens: int = 0     # positions taken from the prefix cache at admission
    preemptions: int = 0


class Scheduler:
    def __init__(self, cache: PagedKVCache, *, max_num_seqs: int, max_num_batched_tokens: int):
        self.cache = cache
        self.max_num_seqs, self.max_num_batched_tokens = max_num_seqs, max_num_batched_tokens
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []  # admission order
        self.stats = SchedulerStats()

    def add(self, request: Request) -> None:
        self.waiting.append(request)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    # ---- schedule ----------------------------------------------------------------------------
    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput()
        budget = self.max_num_batched_tokens
        for request in list(self.running):
            if budget == 0:
                break
            if request.status is not RequestStatus.RUNNING:
                continue  # preempted earlier in this loop
            n = self._grow(request, min(request.num_uncomputed, budget), out)
            if n:
                out.chunks.append(ScheduledChunk(request, request.num_computed_tokens, n))
                budget -= n
        while budget and not out.preempted and self.waiting and len(self.running) < self.max_num_seqs:
            chunk = self._admit(self.waiting[0], budget)
            if chunk is None:
                break  # the oldest waiting request does not fit yet: it waits, so do the rest
            self.waiting.popleft()
            out.chunks.append(chunk)
            budget -= chunk.length
        return out

    def _grow(self, request: Request, n: int, out: SchedulerOutput) -> int:
        """Allocate blocks for the next n positions, shrinking a prompt chunk or preempting the
        newest running requests when memory is short. Returns the length scheduled (0: none)."""
        start = request.num_computed_tokens
        while True:
            m = n
            while m and not self.cache.can_allocate(request.request_id, start, start + m):
                m //= 2
            if m:
                self.cache.allocate(request.request_id, start, start + m)
                return m
            victim = self.running[-1]
            self._preempt(victim)
            out.preempted.append(victim)
            if victim is request:
                return 0

    def _admit(self, request: Request, budget: int) -> ScheduledChunk | None:
        hit = self.cache.find_prefix(request.all_token_ids, request.cache_salt)
        n = min(request.num_tokens - hit.num_tokens, budget)
        # admit only if the whole prompt fits now (its first chunk may be shorter), so that a
        # long prompt does not start, stall and get preempted over and over
        while n and not self.cache.can_admit(hit, hit.num_tokens + n, request.num_tokens + 1):
            n //= 2
        if not n:
            return None
        self.cache.admit(request.request_id, hit, request.cache_salt)
        self.cache.allocate(request.request_id, hit.num_tokens, hit.num_tokens + n)
        if not request.output_token_ids:  # first admission, not a recomputation
            request.num_cached_tokens = hit.num_tokens
        self.stats.cached_tokens += hit.num_tokens
        request.num_computed_tokens = hit.num_tokens
        request.status = RequestStatus.RUNNING
        self.running.append(request)
        return ScheduledChunk(request, hit.num_tokens, n)

    def _preempt(self, request: Request) -> None:
        self.running.remove(request)
        self.cache.free(request.request_id)
        request.status, request.num_computed_tokens = RequestStatus.WAITING, 0
        self.waiting.appendleft(request)
        self.stats.preemptions += 1

    # ---- after the step ----------------------------------------------------------------------
    def postprocess(self, out: SchedulerOutput, sampled: SamplerOutput) -> list[Request]:
        """Apply a step's results; `sampled` has one token per chunk with `samples` set, in
        chunk order. Returns the requests that received a token or finished."""
        updated, tokens = [], iter(zip(sampled.token_ids, sampled.logprobs))
        for chunk in out.chunks:
            request = chunk.request
            self.stats.computed_tokens += chunk.length
            token = next(tokens) if chunk.samples else None
            if request.finished:  # aborted while the step ran
                continue
            request.num_computed_tokens += chunk.length
            self.cache.advance(request.request_id, request.all_token_ids, request.num_computed_tokens)
            if token is not None:
                request.append_token(*token)
                updated.append(request)
                if request.finish_reason is not None:
                    self._retire(request)
        return updated

    def abort(self, request_id: str) -> Request | None:
        """Cancel a request wherever it is; its blocks are freed at once."""
        for request in list(self.waiting) + self.running:
            if request.request_id == request_id:
                if request in self.running:
                    self.running.remove(request)
                else:
                    self.waiting.remove(request)
                request.abort()
                self._retire(request)
                return request
        return None

    def _retire(self, request: Request) -> None:
        if request in self.running:
            self.running.remove(request)
        self.cache.free(request.request_id)
        request.status = RequestStatus.FINISHED
