"""The scheduler's policy, with the model replaced by a fixed token (the KV cache is real)."""
import torch

from gptoss.config import ModelConfig
from gptoss.engine.kv_cache import PagedKVCache
from gptoss.engine.request import Request, RequestStatus
from gptoss.engine.sampler import SamplerOutput, SamplingParams
from gptoss.engine.scheduler import Scheduler


class Bytes:
    def token_bytes(self, token_id):
        return b"x"


CONFIG = ModelConfig.preset("tiny")  # sliding window 8


def scheduler(full=64, sliding=64, bs=4, seqs=8, budget=32):
    cache = PagedKVCache(CONFIG, block_size=bs, full_blocks=full, sliding_blocks=sliding,
                         dtype=torch.float32)
    return Scheduler(cache, max_num_seqs=seqs, max_num_batched_tokens=budget)


def request(n_prompt, max_tokens=5, rid=None, first=0):
    params = SamplingParams(max_tokens=max_tokens, ignore_eos=True)
    return Request(list(range(first, first + n_prompt)), params, Bytes(),
                   max_tokens=max_tokens, request_id=rid or "")


def run_step(s: Scheduler, token=7):
    out = s.schedule()
    n = sum(c.samples for c in out.chunks)
    s.postprocess(out, SamplerOutput([token] * n, [None] * n))
    return out


def test_budget_chunks_prefill_and_decodes_come_first():
    s = scheduler(budget=16)
    a, b = request(10, rid="a"), request(30, rid="b")
    s.add(a)
    s.add(b)
    out = run_step(s)
    assert [(c.request.request_id, c.start, c.length) for c in out.chunks] == [("a", 0, 10), ("b", 0, 6)]
    out = run_step(s)  # a decodes first, b continues with what is left of the budget
    assert [(c.request.request_id, c.start, c.length) for c in out.chunks] == [("a", 10, 1), ("b", 6, 15)]
    assert not out.chunks[1].samples and len(b.output_token_ids) == 0
    out = run_step(s)
    assert [(c.request.request_id, c.length) for c in out.chunks] == [("a", 1), ("b", 9)]
    assert out.chunks[1].samples and b.output_token_ids == [7]


def test_max_num_seqs_and_fifo_admission():
    s = scheduler(seqs=2)
    reqs = [request(3, rid=str(i)) for i in range(4)]
    for r in reqs:
        s.add(r)
    run_step(s)
    assert [r.status for r in reqs] == [RequestStatus.RUNNING] * 2 + [RequestStatus.WAITING] * 2
    while s.has_unfinished():
        run_step(s)
    assert all(r.finish_reason == "length" and len(r.output_token_ids) == 5 for r in reqs)
    assert s.cache.num_free_blocks() == s.cache.num_blocks()


def test_oldest_waiting_request_that_does_not_fit_waits_and_keeps_order():
    s = scheduler(full=6)  # 24 positions
    big, small = request(20, max_tokens=3, rid="big"), request(2, max_tokens=2, rid="small")
    hog = request(8, max_tokens=30, rid="hog")
    s.add(hog)
    run_step(s)
    s.add(big)
    s.add(small)
    out = run_step(s)
    # big needs 5 blocks, 3 are free: it waits, and small (behind it) waits too
    assert [c.request.request_id for c in out.chunks] == ["hog"]
    assert big.status is RequestStatus.WAITING and small.status is RequestStatus.WAITING


def test_preemption_frees_the_newest_and_recomputes_it():
    s = scheduler(full=5, budget=64)  # 20 positions, two requests growing to 8 + 8 and 8 + 6
    a, b = request(8, max_tokens=8, rid="a"), request(8, max_tokens=6, rid="b", first=100)
    s.add(a)
    s.add(b)
    preempted = []
    while s.has_unfinished():
        preempted += [r.request_id for r in run_step(s).preempted]
    assert preempted and set(preempted) == {"b"}
    assert a.output_token_ids == [7] * 8 and b.output_token_ids == [7] * 6
    assert s.stats.preemptions == len(preempted)
    assert s.cache.num_free_blocks() == s.cache.num_blocks()


def test_abort_waiting_and_running():
    s = scheduler(seqs=1)
    a, b = request(5, max_tokens=50, rid="a"), request(5, rid="b")
    s.add(a)
    s.add(b)
    run_step(s)
    assert s.abort("b").finish_reason == "abort"
    assert s.abort("a").finish_reason == "abort"
    assert not s.has_unfinished() and s.cache.num_free_blocks() == s.cache.num_blocks()
    assert s.abort("a") is None
