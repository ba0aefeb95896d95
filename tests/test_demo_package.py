"""The demo package: pack -> expand gives a standard checkpoint that transformers'
GptOssForCausalLM (the oracle) reads with the unpacked model's logits on the corpus's tokens;
a compact-vocabulary model packs to the same logits; the demo shape packs under 30 MB; the
expansion is cached."""
from __future__ import annotations

import pytest
import torch

from gptoss.config import GENERATION_EOS_TOKEN_IDS, ModelConfig, generation_eos_token_ids
from gptoss.demo import corpus
from gptoss.demo.package import (SIZE_LIMIT, cached_expansion, expand, pack, packaged_model,
                                 read_config)
from gptoss.demo.train import write_initial
from gptoss.demo.vocab import FULL_VOCAB, DemoVocab, vocab_from_examples
from gptoss.finetune.data import render_record
from gptoss.weights.loader import load_model

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def corpus_tokens():
    return [render_record(r)[0] for r in corpus.generate(40, seed=0)]


@pytest.fixture(scope="module")
def vocab(corpus_tokens):
    return vocab_from_examples(corpus_tokens, other_rows=16)


def oracle(folder):
    from transformers import GptOssForCausalLM, Mxfp4Config
    return GptOssForCausalLM.from_pretrained(
        folder, dtype=torch.float32, attn_implementation="eager",
        quantization_config=Mxfp4Config(dequantize=True)).eval()


@torch.no_grad()
def test_expanded_package_matches_the_unpacked_model(harmony_tiny_checkpoint, vocab,
                                                     corpus_tokens, tmp_path):
    packed = pack(harmony_tiny_checkpoint, vocab, tmp_path / "demo.safetensors")
    folder = expand(packed, tmp_path / "expanded")
    ids = torch.tensor([corpus_tokens[0][:96]])
    ours = load_model(harmony_tiny_checkpoint, dtype=torch.float32, dequantize=True)(ids)[0]
    theirs = oracle(folder)(ids).logits[0]
    cols = torch.tensor(vocab.token_ids)
    err = (theirs[:, cols] - ours[:, cols]).norm() / ours[:, cols].norm()
    assert err < 1e-4
    # every token without its own row has the one shared row's logit
    other = torch.ones(FULL_VOCAB, dtype=torch.bool)
    other[cols] = False
    rest = theirs[:, other]
    assert torch.equal(rest, rest[:, :1].expand_as(rest))
    assert read_config(packed).vocab_size == FULL_VOCAB
    # it stops on <|return|>, <|endoftext|> and <|call|>, as the published checkpoints do
    assert generation_eos_token_ids(folder) == GENERATION_EOS_TOKEN_IDS


@torch.no_grad()
def test_compact_model_packs_to_the_same_logits(vocab, corpus_tokens, tmp_path):
    config = ModelConfig.preset("tiny").replace(hidden_size=64)
    compact = write_initial(tmp_path / "compact", config, vocab, seed=1)
    folder = expand(pack(compact, vocab, tmp_path / "p.safetensors"), tmp_path / "x")
    tokens = corpus_tokens[1][:80]
    small = load_model(compact, dtype=torch.float32, dequantize=True)(
        torch.tensor([vocab.to_compact(tokens)]))[0]
    full = load_model(folder, dtype=torch.float32, dequantize=True)(torch.tensor([tokens]))[0]
    torch.testing.assert_close(full[:, torch.tensor(vocab.token_ids)], small[:, :vocab.other],
                               rtol=1e-5, atol=1e-5)
    # the tied "other" rows became the shared row: an unused token's logit is theirs
    unused = next(i for i in range(FULL_VOCAB) if i not in set(vocab.token_ids))
    torch.testing.assert_close(full[:, unused], small[:, vocab.other], rtol=1e-5, atol=1e-5)


def test_demo_shape_packs_under_the_size_limit(corpus_tokens, tmp_path):
    # a corpus vocabulary as large as the real one (about 2,200 ids) at the demo preset's shape
    ids = sorted(set(range(0, 200013, 80)) | set(vocab_from_examples(corpus_tokens).token_ids))
    vocab = DemoVocab(tuple(ids), other_rows=8)
    compact = write_initial(tmp_path / "c", ModelConfig.preset("demo"), vocab, seed=0)
    packed = pack(compact, vocab, tmp_path / "demo.safetensors")
    assert len(ids) > 2200 and packed.stat().st_size < SIZE_LIMIT


def test_expansion_is_cached(harmony_tiny_checkpoint, vocab, tmp_path):
    packed = pack(harmony_tiny_checkpoint, vocab, tmp_path / "demo.safetensors")
    first = cached_expansion(packed, tmp_path / "cache")
    stamp = (first / "config.json").stat().st_mtime_ns
    assert cached_expansion(packed, tmp_path / "cache") == first
    assert (first / "config.json").stat().st_mtime_ns == stamp
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [first.name]


def test_the_shipped_package_is_small_and_expands_to_the_full_vocabulary():
    """The trained demo ships in the package (issue 13): within the size limit (30 MB), and it
    declares the full vocabulary its expansion restores."""
    packed = packaged_model()
    assert packed is not None and packed.stat().st_size <= SIZE_LIMIT == 30 * 1000 * 1000
    assert read_config(packed).vocab_size == FULL_VOCAB == 201088


def _initial_rows(folder):
    """The embedding and unembedding matrices of a checkpoint written by `write_initial`."""
    from safetensors.torch import load_file
    state = {}
    for f in folder.glob("*.safetensors"):
        state.update(load_file(f))
    emb = next(v for k, v in state.items() if k.endswith("embed_tokens.weight"))
    unemb = next(v for k, v in state.items() if k.endswith("lm_head.weight"))
    return emb.float(), unemb.float()


def test_number_rows_share_one_vector_per_digit_and_place(vocab, tmp_path):
    """number_init "digits": a number's embedding row is (length + digit-at-place vectors) /
    sqrt(digits + 1), so 47 - 17 = 42 - 12 (tens 4 vs 1, the ones cancel), a single digit
    differs from a two-digit number ending in it by the length and tens parts only; the
    unembedding row is the embedding row x UNEMBED_TIE / sqrt(H); "random" leaves both random."""
    from gptoss.demo.train import UNEMBED_TIE
    from gptoss.harmony.tokenizer import get_tokenizer
    config = ModelConfig.preset("tiny").replace(hidden_size=64)
    tok, table = get_tokenizer(), vocab.compact_map()

    def rows(init):
        return _initial_rows(write_initial(tmp_path / init, config, vocab, seed=3,
                                           number_init=init))

    def row(m, n):
        (i,) = tok.encode(str(n))
        return m[table[i]]

    emb, unemb = rows("digits")
    s2, s3 = 3 ** 0.5, 2.0  # sqrt(digits + 1)
    torch.testing.assert_close((row(emb, 47) - row(emb, 17)) * s2,
                               (row(emb, 42) - row(emb, 12)) * s2, rtol=0, atol=0.05)
    torch.testing.assert_close((row(emb, 347) - row(emb, 947)) * s3,
                               (row(emb, 302) - row(emb, 902)) * s3, rtol=0, atol=0.05)
    assert torch.nn.functional.cosine_similarity(row(emb, 47), row(emb, 17), dim=0) > 0.4
    assert abs(torch.nn.functional.cosine_similarity(row(emb, 47), row(emb, 74), dim=0)) < 0.4
    torch.testing.assert_close(row(unemb, 47), row(emb, 47) * UNEMBED_TIE / 64 ** 0.5,
                               rtol=0.02, atol=1e-3)
    remb, runemb = rows("random")
    assert abs(torch.nn.functional.cosine_similarity(row(remb, 47), row(remb, 17), dim=0)) < 0.4
    assert not torch.allclose(row(runemb, 47), row(remb, 47) * UNEMBED_TIE / 64 ** 0.5, atol=1e-3)
    with pytest.raises(ValueError, match="number_init"):
        write_initial(tmp_path / "bad", config, vocab, seed=3, number_init="zeros")


def test_entity_rows_span_a_small_code_space(corpus_tokens, tmp_path):
    """entity_init "codes": the tokens of the tools' categorical values start from sums of
    per-place code vectors, so together they span at most ENTITY_BASE x places dimensions (21
    here, of hidden 64), each row has std about 1 and differs from the others, and the
    unembedding rows are tied to them (x UNEMBED_TIE / sqrt(H)); number rows are as
    number_init "digits" alone makes them. With "random" the same rows span the full width.
    (The checkpoint stores bf16: singular values under 0.5 count as zero.)"""
    from gptoss.demo.tools import VALUES
    from gptoss.demo.train import ENTITY_BASE, UNEMBED_TIE
    from gptoss.harmony.tokenizer import get_tokenizer
    tok = get_tokenizer()
    forms = [tok.encode(f) for v in VALUES for f in (v, " " + v)]
    vocab = vocab_from_examples(corpus_tokens + forms, other_rows=16)
    table = vocab.compact_map()
    numbers = {table[i] for n in range(1000) for i in tok.encode(str(n))
               if len(tok.encode(str(n))) == 1 and i in table}
    values = sorted({table[i] for ids in forms for i in ids} - numbers)
    assert len(values) > 200
    config = ModelConfig.preset("tiny").replace(hidden_size=64)

    def rows(entity_init):
        return _initial_rows(write_initial(tmp_path / entity_init, config, vocab, seed=3,
                                           number_init="digits", entity_init=entity_init))

    emb, unemb = rows("codes")
    code = emb[values]
    assert int(torch.linalg.matrix_rank(code, atol=0.5)) <= ENTITY_BASE * 3 == 21
    assert 0.7 < float(code.std()) < 1.3
    assert len({tuple(r.tolist()) for r in code}) == len(values)
    torch.testing.assert_close(unemb[values], code * UNEMBED_TIE / 64 ** 0.5, rtol=0.02,
                               atol=1e-3)
    remb, _ = rows("random")
    assert int(torch.linalg.matrix_rank(remb[values], atol=0.5)) == 64
    number_list = sorted(numbers)
    torch.testing.assert_close(emb[number_list], remb[number_list], rtol=0, atol=0)
    with pytest.raises(ValueError, match="entity_init"):
        write_initial(tmp_path / "bad", config, vocab, seed=3, entity_init="zeros")
