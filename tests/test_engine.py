"""The engine on a tiny random checkpoint (fp32, experts dequantized), against transformers'
greedy generation (the oracle), against itself run one request at a time, and its bookkeeping
(prefix reuse, cancel, waiting for memory, context limit, stop handling, streaming)."""
import asyncio

import pytest
import torch

from gptoss.config import ModelConfig
from gptoss.engine.events import FinishEvent, TokenEvent
from gptoss.engine.llm import LLM, PromptError
from gptoss.engine.sampler import SamplingParams
from gptoss.harmony.output import HarmonyOutput, PartDone
from gptoss.engine.async_engine import AsyncEngine

N_NEW = 10


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class ForceTokens:
    """A logits processor that makes the model emit `script` (test-only: a random model cannot
    be asked for a particular answer). It proves what the engine does with those tokens, not
    what a real model would say."""

    def __init__(self, script):
        self.script = list(script)

    def __call__(self, generated, logits):
        n = len(generated)
        forced = torch.full_like(logits, float("-inf"))
        forced[self.script[min(n, len(self.script) - 1)]] = 0.0
        return forced


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from gptoss.weights.writer import write_random_checkpoint
    out = tmp_path_factory.mktemp("tiny")
    return write_random_checkpoint(ModelConfig.preset("tiny"), out, seed=0, layout="hf-mxfp4",
                                   overwrite=True, progress=False)


@pytest.fixture(scope="module")
def model(checkpoint):
    from gptoss.weights.loader import load_model
    return load_model(checkpoint, dtype=torch.float32, dequantize=True)


def make_llm(model, **kw):
    return LLM(model, **kw)


def prompts(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 45, (n,), generator=g).tolist()
    return [torch.randint(0, 199_000, (L,), generator=g).tolist() for L in lengths]


GREEDY = SamplingParams(temperature=0, max_tokens=N_NEW, ignore_eos=True)


def test_batched_greedy_equals_alone_and_transformers(model, checkpoint):
    batch = prompts()
    llm = make_llm(model, max_num_batched_tokens=96)  # forces chunked prefills beside decodes
    steps = []
    schedule = llm.scheduler.schedule
    llm.scheduler.schedule = lambda: steps.append(schedule()) or steps[-1]
    together = [o.token_ids for o in llm.generate(batch, GREEDY)]
    def decode(c):
        return c.start >= len(c.request.prompt_token_ids)
    assert any(any(decode(c) for c in s.chunks) and any(not decode(c) for c in s.chunks)
               for s in steps), "no step mixed a prefill chunk with decodes"
    alone = [make_llm(model, prefix_caching=False).generate([p], GREEDY)[0].token_ids
             for p in batch]
    assert together == alone

    from transformers import GptOssForCausalLM, Mxfp4Config
    hf = GptOssForCausalLM.from_pretrained(checkpoint, dtype=torch.float32,
                                           quantization_config=Mxfp4Config(dequantize=True)).eval()
    for p, ours in zip(batch, together):
        ids = torch.tensor([p])
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                          max_new_tokens=N_NEW, min_new_tokens=N_NEW, pad_token_id=199999)
        assert out[0, len(p):].tolist() == ours


def test_seeded_sampling_is_reproducible_across_batch_compositions(model):
    target = [11, 22, 33, 44, 55, 66, 77]
    params = SamplingParams(temperature=0.9, top_p=0.95, seed=42, max_tokens=12, ignore_eos=True)
    others = prompts(5, seed=3)
    other_params = [SamplingParams(temperature=1.2, seed=i, max_tokens=8 + i, ignore_eos=True)
                    for i in range(5)]
    alone = make_llm(model).generate([target], params)[0].token_ids
    mixed = make_llm(model).generate(others[:2] + [target] + others[2:],
                                     other_params[:2] + [params] + other_params[2:])[2].token_ids
    reordered = make_llm(model, max_num_seqs=3).generate(
        [target] + others[::-1], [params] + other_params[::-1])[0].token_ids
    assert alone == mixed == reordered
    unseeded = make_llm(model).generate([target], SamplingParams(temperature=0.9, top_p=0.95,
                                                                  seed=43, max_tokens=12, ignore_eos=True))
    assert unseeded[0].token_ids != alone  # the seed matters


def test_shared_prefix_is_computed_once(model):
    system = list(range(1000, 1040))  # 40 tokens: two whole blocks of 16 are reusable
    suffixes = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
    params = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)
    llm = make_llm(model)
    first = llm.generate([system + [1, 2]], params)[0]
    before = llm.scheduler.stats.computed_tokens
    outs = llm.generate([system + s for s in suffixes], params)
    computed = llm.scheduler.stats.computed_tokens - before
    # each request computes its prompt after the 32 cached tokens, then 3 decode positions
    assert computed == sum(len(system) + len(s) - 32 + 3 for s in suffixes)
    assert [o.num_cached_tokens for o in outs] == [32, 32, 32] and first.num_cached_tokens == 0
    fresh = make_llm(model, prefix_caching=False).generate([system + s for s in suffixes], params)
    assert [o.token_ids for o in outs] == [o.token_ids for o in fresh]


def test_cancel_frees_blocks_at_once(model):
    llm = make_llm(model)
    free = llm.cache.num_free_blocks()
    a = llm.add_request(prompts(1)[0], SamplingParams(max_tokens=50, ignore_eos=True))
    b = llm.add_request(prompts(1, seed=1)[0], SamplingParams(max_tokens=50, ignore_eos=True))
    for _ in range(3):
        llm.step()
    held_b = llm.cache.held_blocks(b.request_id)
    llm.abort(a.request_id)
    assert a.output().finish_reason == "abort"
    assert [f - h for f, h in zip(free, held_b)] == llm.cache.num_free_blocks()
    llm.abort(b.request_id)
    assert llm.cache.num_free_blocks() == free and not llm.has_unfinished()


def test_requests_that_do_not_fit_wait_instead_of_failing(model):
    batch = prompts(6, seed=5)
    # 96 KV positions for six requests of up to 44 + 10 tokens: they must take turns
    llm = make_llm(model, kv_cache_tokens=96, max_model_len=96)
    running = []
    step = llm.step
    llm.step = lambda: running.append(len(llm.scheduler.running)) or step()
    outs = llm.generate(batch, GREEDY)
    assert max(running) < len(batch)  # some of them had to wait
    assert all(o.finish_reason == "length" for o in outs)
    alone = [make_llm(model).generate([p], GREEDY)[0].token_ids for p in batch]
    assert [o.token_ids for o in outs] == alone


def test_prompt_plus_max_tokens_beyond_the_context_is_a_clear_error(model):
    llm = make_llm(model, max_model_len=64)
    with pytest.raises(PromptError, match="60 tokens \\+ max_tokens 10.*context length of 64"):
        llm.generate([list(range(60))], SamplingParams(max_tokens=10))
    out = llm.generate([list(range(60))], SamplingParams(temperature=0, ignore_eos=True))[0]
    assert len(out.token_ids) == 4 and out.finish_reason == "length"


def test_stop_tokens_stop_strings_and_logprobs(model):
    llm = make_llm(model)
    tok = llm.tokenizer
    words = tok.encode(" alpha beta gamma delta")
    script = words + [200002]
    out = llm.generate([[1, 2, 3]], SamplingParams(max_tokens=20, logprobs=2))
    assert len(out[0].logprobs) == len(out[0].token_ids)
    req = llm.make_request([1, 2, 3], SamplingParams(max_tokens=20), logits_processor=ForceTokens(script))
    llm.add_request(req)
    while not req.finished:
        llm.step()
    assert req.output().token_ids == script and req.output().finish_reason == "stop"
    assert req.output().text == " alpha beta gamma delta"  # the stop token is not text
    req = llm.make_request([1, 2, 3], SamplingParams(max_tokens=20, stop=("a del",)),
                           logits_processor=ForceTokens(script))
    llm.add_request(req)
    while not req.finished:
        llm.step()
    assert req.output().text == " alpha beta gamm" and req.output().finish_reason == "stop"


@pytest.mark.parametrize("eos", [200002, 199999, 200012])
def test_stops_on_each_eos_id_of_generation_config(checkpoint, eos):
    """The eos ids come from the checkpoint's generation_config.json, as transformers reads them
    (the published list includes <|endoftext|>, which the engine used to ignore)."""
    from transformers import GenerationConfig

    llm = LLM(checkpoint, dtype=torch.float32, dequantize=True)
    assert list(llm.eos_token_ids) == GenerationConfig.from_pretrained(checkpoint).eos_token_id
    script = llm.tokenizer.encode(" one two") + [eos, 500, 501]
    out = llm.generate([[1, 2, 3]], [SamplingParams(max_tokens=10)])[0]  # runs at all
    req = llm.add_request([1, 2, 3], SamplingParams(max_tokens=10),
                          logits_processor=ForceTokens(script))
    while not req.finished:
        llm.step()
    assert req.output().token_ids == script[:3] and req.output().finish_reason == "stop"
    assert out.finish_reason in ("stop", "length")


def test_async_streams_many_requests_and_cancel(model):
    llm = make_llm(model)
    batch = prompts(6, seed=7)
    expected = [o.token_ids for o in make_llm(model).generate(batch, GREEDY)]
    long = SamplingParams(temperature=0, max_tokens=200, ignore_eos=True)

    async def consume(stream):
        return [e for e in [event async for event in stream]]

    async def main(engine):
        streams = [engine.submit(p, GREEDY, ) for p in batch]
        victim = engine.submit(batch[0], long, )
        async for event in victim:
            if isinstance(event, TokenEvent) and event.token_id is not None:
                victim.cancel()
                break
        rest = [e async for e in victim]
        return await asyncio.gather(*(consume(s) for s in streams)), rest

    with AsyncEngine(llm) as engine:
        results, rest = asyncio.run(main(engine))
    for events, want in zip(results, expected):
        assert [e.token_id for e in events if isinstance(e, TokenEvent)] == want
        assert isinstance(events[-1], FinishEvent) and events[-1].finish_reason == "length"
        assert events[-1].usage.completion_tokens == N_NEW
    assert isinstance(rest[-1], FinishEvent) and rest[-1].finish_reason == "abort"
    assert llm.cache.num_free_blocks() == llm.cache.num_blocks()


def test_harmony_events_follow_the_tokens(model):
    llm = make_llm(model)
    tok = llm.tokenizer
    script = ([200005] + tok.encode("analysis") + [200008] + tok.encode("think") + [200007, 200006]
              + tok.encode("assistant") + [200005] + tok.encode("final") + [200008]
              + tok.encode("Hi there") + [200002])
    with AsyncEngine(llm) as engine:
        stream = engine.submit([200006, 173781], SamplingParams(max_tokens=40),
                               logits_processor=ForceTokens(script))
        events = list(stream)
    # the engine emits token ids only (it neither decodes nor parses); a consumer parses them
    assert all(isinstance(e, TokenEvent) for e in events[:-1])
    assert [e.token_id for e in events[:-1]] == script
    assert isinstance(events[-1], FinishEvent) and events[-1].finish_reason == "stop"
    output = HarmonyOutput(tok)
    parts = [p for e in events[:-1] for p in output.feed(e.token_id)] + output.close()
    done = [(p.kind, p.text) for p in parts if isinstance(p, PartDone)]
    assert done == [("reasoning", "think"), ("text", "Hi there")]


def test_chat_returns_reasoning_and_tool_calls(model):
    from gptoss.harmony.chat import render_chat
    llm = make_llm(model)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    script = llm.tokenizer.encode(
        "<|channel|>analysis<|message|>Use the tool.<|end|><|start|>assistant to=functions."
        'get_weather<|channel|>commentary <|constrain|>json<|message|>{"city":"Paris"}<|call|>',
        allowed_special="all")
    reply = llm.chat(messages, SamplingParams(max_tokens=60), reasoning_effort="low", tools=tools,
                     logits_processor=ForceTokens(script), current_date="2025-01-01")
    assert reply.reasoning == "Use the tool." and reply.content == ""
    assert [(c.name, c.arguments) for c in reply.tool_calls] == [("get_weather", '{"city":"Paris"}')]
    assert reply.finish_reason == "stop" and reply.token_ids == script
    prompt = render_chat(messages, tools=tools, reasoning_effort="low", current_date="2025-01-01")
    assert reply.usage.prompt_tokens == len(prompt) and reply.usage.completion_tokens == len(script)
