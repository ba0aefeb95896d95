"""Decode CUDA graphs: the host-side parts on CPU (padded sizes, the static cache view against
the engine's CacheView, the runner's routing); graph replay against eager decoding on CUDA."""
from __future__ import annotations

import pytest
import torch

from gptoss.engine.cuda_graphs import DecodeGraphs, StaticCacheView, decode_logits, padded_batch
from gptoss.engine.kv_cache import PagedKVCache, PrefixHit
from gptoss.engine.runner import ModelRunner
from gptoss.kernels.cpu import library as native


def test_padded_batch():
    sizes = (1, 2, 4, 8, 64)
    assert [padded_batch(n, sizes) for n in (1, 2, 3, 5, 8, 9, 64)] == [1, 2, 4, 8, 8, 64, 64]
    assert padded_batch(65, sizes) is None


def _cache_with_sequences(config, lengths):
    cache = PagedKVCache(config, block_size=4, full_blocks=64, sliding_blocks=64)
    for i, n in enumerate(lengths):
        cache.admit(f"s{i}", PrefixHit())
        cache.allocate(f"s{i}", 0, n + 1)  # the prompt and the token about to be decoded
        cache.advance(f"s{i}", list(range(n)), n)
    return cache


def test_static_view_holds_what_the_cache_view_holds(tiny_config):
    lengths = [3, 17, 9]  # window 8: the sliding group's keys start past 0 for 17 and 9
    cache = _cache_with_sequences(tiny_config, lengths)
    free = cache.num_free_blocks()
    static = StaticCacheView(cache, batch=4, max_len=64)
    assert cache.num_free_blocks() == [f - 1 for f in free]  # one scratch block per group
    rows = [(f"s{i}", n, 1) for i, n in enumerate(lengths)]
    static.fill(rows)
    view = cache.view(rows, 1)
    for g in range(len(cache.groups)):
        dst, gather, key_pos, lengths_g = static.device_buffers[g]
        assert dst[:3].tolist() == view.dst[g].tolist()
        assert dst[3] == static.scratch[g]
        width = view.gather[g].shape[1]
        assert torch.equal(key_pos[:3, :width], view.key_pos[g])
        live = view.key_pos[g] >= 0
        assert torch.equal(gather[:3, :width][live], view.gather[g][live])
        assert torch.all(key_pos[:, width:] == -1) and torch.all(key_pos[3] == -1)
        assert lengths_g.tolist() == live.sum(1).tolist() + [0]
    static.fill(rows[:1])  # a shorter step after a longer one: no stale keys stay visible
    for g in range(len(cache.groups)):
        _, _, key_pos, lengths_g = static.device_buffers[g]
        view = cache.view(rows[:1], 1)
        width = view.key_pos[g].shape[1]
        assert torch.equal(key_pos[:1, :width], view.key_pos[g])
        assert torch.all(key_pos[:, width:] == -1) and torch.all(key_pos[1:] == -1)
        assert lengths_g[1:].tolist() == [0, 0, 0]


def test_static_view_refuses_what_it_was_not_sized_for(tiny_config):
    cache = _cache_with_sequences(tiny_config, [30, 2])
    static = StaticCacheView(cache, batch=1, max_len=16)
    with pytest.raises(ValueError, match="up to 1 one-token rows"):
        static.fill([("s0", 30, 1), ("s1", 2, 1)])
    with pytest.raises(ValueError, match="more than the 16"):
        static.fill([("s0", 30, 1)])


def test_decode_over_the_static_view_equals_the_model(tiny_checkpoints):
    """The forward a graph captures (reference kernels, fp32) against Transformer.forward over
    the engine's CacheView: the same logits for the real rows, padding rows ignored."""
    from gptoss.weights.loader import load_model
    model = load_model(tiny_checkpoints["hf-mxfp4"], dtype=torch.float32, dequantize=True)
    lengths = [5, 12]
    cache = PagedKVCache(model.config, block_size=4, full_blocks=64, sliding_blocks=64,
                         dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    for i, n in enumerate(lengths):  # prefill: the history holds real keys and values
        cache.admit(f"s{i}", PrefixHit())
        cache.allocate(f"s{i}", 0, n + 1)
        prompt = torch.randint(0, 1024, (1, n), generator=g)
        with torch.inference_mode():
            model(prompt, torch.arange(n)[None], cache.view([(f"s{i}", 0, n)], n))
        cache.advance(f"s{i}", prompt[0].tolist(), n)
    rows = [(f"s{i}", n, 1) for i, n in enumerate(lengths)]
    ids = torch.tensor([[7], [300], [0], [0]])
    positions = torch.tensor([[5], [12], [-1], [-1]])
    static = StaticCacheView(cache, batch=4, max_len=32)
    static.fill(rows)
    with torch.inference_mode(), native.reference_only():
        got = decode_logits(model, ids, positions, static.rows(4))[:2]
        expected = model(ids[:2], positions[:2], cache.view(rows, 1))[:, -1]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


class _StubGraphs:
    def __init__(self, vocab):
        self.vocab, self.calls = vocab, []

    def handles(self, rows):
        return rows <= 2

    def run(self, rows, tokens):
        self.calls.append((rows, tokens))
        logits = torch.full((len(rows), self.vocab), -1e4)
        logits[:, 3] = 0.0
        return logits


def test_runner_replays_only_all_decode_steps(tiny_checkpoints):
    """Prefill steps run eagerly; decode steps of up to 2 rows go to the graphs."""
    from gptoss.engine.llm import LLM
    from gptoss.engine.sampler import SamplingParams
    llm = LLM(tiny_checkpoints["hf-mxfp4"])
    stub = llm.runner.graphs = _StubGraphs(llm.model_config.vocab_size)
    outs = llm.generate([[5, 6, 7], [8, 9]], SamplingParams(temperature=0, max_tokens=3,
                                                            stop_token_ids=[]))
    assert [o.token_ids[1:] for o in outs] == [[3, 3], [3, 3]]  # tokens 2 and 3 came from it
    rows, tokens = stub.calls[0]
    assert sorted(r[1] for r in rows) == [2, 3] and all(r[2] == 1 for r in rows)
    assert len(stub.calls) == 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_graph_replay_equals_eager_decoding_on_cuda(tiny_checkpoints):
    from gptoss.engine.llm import LLM
    from gptoss.engine.sampler import SamplingParams
    from gptoss.weights.loader import load_model
    model = load_model(tiny_checkpoints["hf-mxfp4"], device="cuda")
    assert DecodeGraphs.supported(model)
    params = SamplingParams(temperature=0, max_tokens=24, stop_token_ids=[], logprobs=1)
    prompts = [[5, 17, 300, 42, 7, 9, 11, 600, 3, 4, 5, 6], [8, 9, 10], [1, 2]]
    graphed = LLM(model, max_num_seqs=4)
    assert graphed.runner.graphs is not None
    eager = LLM(model, max_num_seqs=4, cuda_graphs=False)
    a, b = graphed.generate(prompts, params), eager.generate(prompts, params)
    assert [o.token_ids for o in a] == [o.token_ids for o in b]
    for x, y in zip(a, b):
        assert [s.logprob for s in x.logprobs] == pytest.approx(
            [s.logprob for s in y.logprobs], abs=1e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_triton_greedy_tokens_equal_the_reference_path_on_cuda(tiny_checkpoints):
    from gptoss.engine.llm import LLM
    from gptoss.engine.sampler import SamplingParams
    from gptoss.weights.loader import load_model
    params = SamplingParams(temperature=0, max_tokens=16, stop_token_ids=[], logprobs=4)
    prompts = [[5, 17, 300, 42, 7, 9, 11, 600, 3, 4], [8, 9, 10]]
    runs = []
    for kernels in ("triton", "reference"):
        model = load_model(tiny_checkpoints["hf-mxfp4"], device="cuda", kernels=kernels)
        runs.append(LLM(model).generate(prompts, params))
    for fast, ref in zip(*runs):  # equal up to a near-tie (as tests/test_engine_native.py)
        n = next((i for i, (a, b) in enumerate(zip(fast.token_ids, ref.token_ids)) if a != b),
                 len(ref.token_ids))
        if n < len(ref.token_ids):
            top = dict(ref.logprobs[n].top)
            assert fast.token_ids[n] in top
            assert top[ref.token_ids[n]] - top[fast.token_ids[n]] <= 1 / 16
