"""The sampler and SamplingParams against independent oracles: numpy softmax (chi-square goodness
of fit), transformers' logits warpers and repetition penalty, OpenAI's published penalty formula."""
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from gptoss.engine.detokenizer import Detokenizer
from gptoss.engine.sampler import (Sampler, SamplingParams,
                                   SamplingParamsError, filtered_probs)

# chi-square 0.999 quantiles (scipy.stats.chi2.ppf(0.999, df)), so a correct sampler fails a
# test with probability 1e-3 at most; the seeds are fixed, so each run is deterministic.
CHI2_999 = {1: 10.828, 2: 13.816, 3: 16.266, 4: 18.467, 5: 20.515, 6: 22.458, 7: 24.322,
            8: 26.124, 9: 27.877, 10: 29.588, 11: 31.264}
LOGITS = [2.0, 1.5, 1.2, 1.0, 0.3, 0.0, -0.4, -1.0, -1.5, -2.2, 0.8, 0.6]


@dataclass
class Row:
    params: SamplingParams
    seed: int = 0
    prompt_token_ids: list = field(default_factory=list)
    output_token_ids: list = field(default_factory=list)
    logits_processor: object = None

    def __post_init__(self):
        self.generator = torch.Generator().manual_seed(self.seed)


def softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def sample_counts(params: SamplingParams, logits, n_rows=400, n_steps=30) -> np.ndarray:
    """n_rows * n_steps draws, each row with its own generator (seeds 0..n_rows-1)."""
    rows = [Row(params, seed=s) for s in range(n_rows)]
    batch = torch.tensor([logits] * n_rows, dtype=torch.float32)
    counts = np.zeros(len(logits))
    sampler = Sampler()
    for _ in range(n_steps):
        for t in sampler(batch, rows).token_ids:
            counts[t] += 1
    return counts


def chi_square(counts: np.ndarray, expected_p: np.ndarray) -> tuple[float, int]:
    support = expected_p > 0
    assert counts[~support].sum() == 0, "sampled a token outside the support"
    n = counts.sum()
    exp = expected_p[support] * n
    return float(((counts[support] - exp) ** 2 / exp).sum()), int(support.sum()) - 1


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_sampled_frequencies_match_softmax(temperature):
    counts = sample_counts(SamplingParams(temperature=temperature), LOGITS)
    stat, df = chi_square(counts, softmax(np.array(LOGITS) / temperature))
    assert stat < CHI2_999[df], f"chi2={stat:.2f} df={df}"


def test_chi_square_detects_a_wrong_distribution():
    # the test can fail: frequencies at temperature 1 do not fit the T=0.6 softmax
    counts = sample_counts(SamplingParams(temperature=1.0), LOGITS)
    stat, df = chi_square(counts, softmax(np.array(LOGITS) / 0.6))
    assert stat > CHI2_999[df]


def hf_filtered_probs(logits, temperature, top_k=0, top_p=1.0, min_p=0.0):
    from transformers.generation.logits_process import (MinPLogitsWarper, TemperatureLogitsWarper,
                                                        TopKLogitsWarper, TopPLogitsWarper)
    x = torch.tensor([logits], dtype=torch.float32)
    ids = torch.zeros(1, 1, dtype=torch.long)
    x = TemperatureLogitsWarper(temperature)(ids, x)
    if top_k:
        x = TopKLogitsWarper(top_k)(ids, x)
    if top_p < 1.0:
        x = TopPLogitsWarper(top_p)(ids, x)
    if min_p > 0:
        x = MinPLogitsWarper(min_p)(ids, x)
    return torch.softmax(x, -1)[0].numpy()


@pytest.mark.parametrize("kw", [dict(top_k=4), dict(top_p=0.7), dict(min_p=0.3),
                                dict(top_k=6, top_p=0.8, min_p=0.1), dict(top_p=0.05)])
def test_filters_match_transformers_warpers(kw):
    pytest.importorskip("transformers")
    params = SamplingParams(temperature=0.8, **kw)
    ours = filtered_probs(torch.tensor([LOGITS]), [params])[0].numpy()
    theirs = hf_filtered_probs(LOGITS, 0.8, **kw)
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    counts = sample_counts(params, LOGITS, n_rows=200, n_steps=20)
    stat, df = chi_square(counts, theirs.astype(np.float64))
    if df:
        assert stat < CHI2_999[df], f"chi2={stat:.2f} df={df}"
    else:
        assert counts[np.argmax(theirs)] == counts.sum()


def test_repetition_penalty_matches_transformers():
    pytest.importorskip("transformers")
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor
    logits = torch.randn(1, 50, generator=torch.Generator().manual_seed(3))
    prompt, output = [1, 2, 3, 40], [5, 5, 2, 49]
    hf = RepetitionPenaltyLogitsProcessor(1.3)(torch.tensor([prompt + output]), logits.clone())
    row = Row(SamplingParams(temperature=0, repetition_penalty=1.3), 0, prompt, output)
    x = Sampler._process_row(logits[0].clone(), row)
    torch.testing.assert_close(x, hf[0])


def test_presence_and_frequency_penalties_follow_openai_formula():
    # OpenAI: mu[j] - c[j] * alpha_frequency - (c[j] > 0) * alpha_presence, c over the output
    logits = np.random.default_rng(0).normal(size=30).astype(np.float32)
    prompt, output = [7, 8], [3, 3, 3, 9, 20]
    counts = np.bincount(output, minlength=30)
    expected = logits - counts * 0.5 - (counts > 0) * 1.25
    row = Row(SamplingParams(presence_penalty=1.25, frequency_penalty=0.5), 0, prompt, output)
    x = Sampler._process_row(torch.tensor(logits), row).numpy()
    np.testing.assert_allclose(x, expected, rtol=1e-6)


def test_greedy_is_argmax_after_the_logits_processor():
    logits = torch.tensor([LOGITS])
    plain = Row(SamplingParams(temperature=0))
    masked = Row(SamplingParams(temperature=0),
                 logits_processor=lambda ids, x: x.masked_fill(torch.arange(len(x)) != 3, -float("inf")))
    out = Sampler()(logits.repeat(2, 1), [plain, masked])
    assert out.token_ids == [int(np.argmax(LOGITS)), 3]


def test_seeded_rows_do_not_depend_on_the_rest_of_the_batch():
    rng = torch.Generator().manual_seed(1)
    target_logits = torch.randn(1000, generator=rng)
    other_logits = torch.randn(3, 1000, generator=rng)
    target = SamplingParams(temperature=0.9, top_p=0.95, seed=1234)

    def run(logits, rows, index, steps=20):
        return [Sampler()(logits, rows).token_ids[index] for _ in range(steps)]

    alone = run(target_logits[None], [Row(target, seed=1234)], 0)
    others = [Row(SamplingParams(temperature=1.3, top_k=5), seed=9),
              Row(SamplingParams(temperature=0)), Row(SamplingParams(min_p=0.2), seed=4)]
    mixed_logits = torch.stack([other_logits[0], other_logits[1], target_logits, other_logits[2]])
    mixed = run(mixed_logits, others[:2] + [Row(target, seed=1234)] + others[2:], 2)
    assert alone == mixed
    assert len(set(alone)) > 1  # not trivially constant


def test_logprobs_are_raw_log_softmax_with_top_n():
    logits = np.array(LOGITS, dtype=np.float32)
    row = Row(SamplingParams(temperature=0.5, top_k=2, logprobs=3), seed=5)
    out = Sampler()(torch.tensor([LOGITS]), [row])
    lp = np.log(softmax(logits.astype(np.float64)))
    got = out.logprobs[0]
    assert got.token_id == out.token_ids[0]
    assert got.logprob == pytest.approx(lp[got.token_id], abs=1e-5)
    assert [t for t, _ in got.top] == list(np.argsort(-lp)[:3])
    np.testing.assert_allclose([v for _, v in got.top], np.sort(lp)[::-1][:3], atol=1e-5)


@pytest.mark.parametrize("kw, field_name", [
    (dict(temperature=-1), "temperature"), (dict(top_p=0), "top_p"), (dict(top_k=-3), "top_k"),
    (dict(min_p=1.5), "min_p"), (dict(presence_penalty=3), "presence_penalty"),
    (dict(repetition_penalty=0), "repetition_penalty"), (dict(max_tokens=0), "max_tokens"),
    (dict(logprobs=21), "logprobs"), (dict(stop=[""]), "stop"), (dict(seed=-1), "seed"),
    (dict(temperature=float("nan")), "temperature")])
def test_invalid_params_name_the_field(kw, field_name):
    with pytest.raises(SamplingParamsError, match=field_name):
        SamplingParams(**kw)


def test_default_stop_ids_are_the_models():
    # None: the engine stops on the checkpoint's generation_config eos ids (test_engine.py)
    assert SamplingParams().stop_token_ids is None
    assert SamplingParams(stop_token_ids=[5]).stop_token_ids == (5,)
    assert SamplingParams(stop="x").stop == ("x",)
    assert SamplingParams(top_k=-1).top_k == 0


def test_detokenizer_stop_string_across_tokens_and_utf8():
    from gptoss.harmony.tokenizer import get_tokenizer
    tok = get_tokenizer()
    ids = tok.encode("Hello wor" + "ld. Ünïcödé 🙂 END more")
    det = Detokenizer(tok, stop=("🙂 END",))
    streamed = ""
    for t in ids:
        det.feed(t)
        streamed += det.delta()
        if det.stopped:
            break
    det.finish()
    streamed += det.delta()
    assert det.text == streamed == "Hello world. Ünïcödé "
