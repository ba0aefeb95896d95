"""The paged KV cache against the model's contiguous DynamicCache (the oracle) and by occupancy."""
import math

import pytest
import torch

from gptoss.config import ModelConfig
from gptoss.engine.kv_cache import PagedKVCache
from gptoss.model.cache import DynamicCache
from gptoss.model.transformer import Transformer

from gptoss.kernels.reference import visibility_mask


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small_config(**kw) -> ModelConfig:
    base = dict(vocab_size=300, hidden_size=64, intermediate_size=64, head_dim=16, num_layers=4,
                sliding_window=8, num_heads=4, num_kv_heads=2)
    base.update(kw)
    return ModelConfig.preset("tiny").replace(**base)


def random_model(config: ModelConfig, seed: int = 0) -> Transformer:
    model = Transformer(config, experts="dense", dtype=torch.float32, device="cpu").eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("scale"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * (0.5 if p.dim() == 1 else 0.3))
    return model


def new_cache(config, bs=4, full=64, sliding=64, **kw):
    return PagedKVCache(config, block_size=bs, full_blocks=full, sliding_blocks=sliding,
                        dtype=torch.float32, **kw)


def visible_keys(k_all, key_pos, q_pos, window):
    """{(b, t): {key position: key vector}} that each query may attend to."""
    mask = visibility_mask(q_pos, key_pos, window)
    out = {}
    for b in range(q_pos.shape[0]):
        for t in range(q_pos.shape[1]):
            if q_pos[b, t] >= 0:
                out[b, t] = {int(key_pos[b, s]): k_all[b, s] for s in range(key_pos.shape[1])
                             if mask[b, t, s]}
    return out


def test_view_returns_what_dynamic_cache_returns():
    """Same update calls on both caches (chunks of 5, 3, then single decodes, rows of different
    lengths with padding): every query sees the same key positions with the same vectors."""
    config = small_config()
    paged, dyn = new_cache(config), DynamicCache(config, 2, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    done = [0, 0]
    for chunks in [(5, 3), (3, 3), (1, 1), (1, 0), (1, 1), (6, 1), (1, 1)]:
        rows = [(f"s{b}", done[b], n) for b, n in enumerate(chunks) if n]
        for sid, start, n in rows:
            if sid not in paged.seqs:
                paged.admit(sid, paged.find_prefix([]))
            paged.allocate(sid, start, start + n)
        T = max(chunks)
        view = paged.view(rows, T)
        pos = torch.full((2, T), -1)
        for b, n in enumerate(chunks):
            pos[b, :n] = torch.arange(done[b], done[b] + n)
        active = [b for b, n in enumerate(chunks) if n]
        for layer in range(config.num_layers):
            k = torch.randn(2, T, 2, 16, generator=g)
            v = torch.randn(2, T, 2, 16, generator=g)
            kd, _, pd = dyn.update(layer, k, v, pos)
            kp, vp, pp = view.update(layer, k[active], v[active], pos[active])
            window = config.window(layer)
            want = visible_keys(kd[active], pd[active], pos[active], window)
            got = visible_keys(kp, pp, pos[active], window)
            assert want.keys() == got.keys()
            for key in want:
                assert want[key].keys() == got[key].keys()
                for p in want[key]:
                    torch.testing.assert_close(got[key][p], want[key][p])
        for b, n in enumerate(chunks):
            done[b] += n
            if n:
                paged.advance(f"s{b}", list(range(done[b])), done[b])


def test_sliding_layers_hold_a_window_of_blocks_full_layers_everything():
    """window 128, blocks of 16: between steps a sequence holds at most ceil(128/16) + 1 = 9
    sliding blocks (the 127 positions the next query sees, rounded out to whole blocks)."""
    config = small_config(sliding_window=128)
    cache = new_cache(config, bs=16, full=40, sliding=20)
    sliding_group = [g.window for g in cache.groups].index(128)
    cache.admit("a", cache.find_prefix([]))
    cache.allocate("a", 0, 50)  # a prefill chunk of 50, then 500 decode steps
    cache.advance("a", list(range(50)), 50)
    worst = 0
    for pos in range(50, 550):
        assert cache.can_allocate("a", pos, pos + 1)
        cache.allocate("a", pos, pos + 1)
        cache.advance("a", list(range(pos + 1)), pos + 1)
        held = cache.held_blocks("a")
        worst = max(worst, held[sliding_group])
        assert held[1 - sliding_group] == math.ceil((pos + 1) / 16)
    assert worst == 128 // 16 + 1
    assert cache.num_free_blocks()[sliding_group] == 20 - cache.held_blocks("a")[sliding_group]


def test_free_releases_every_block_at_once():
    config = small_config()
    cache = new_cache(config, bs=4, full=10, sliding=10)
    cache.admit("a", cache.find_prefix([]))
    cache.allocate("a", 0, 30)
    assert cache.num_free_blocks() == [10 - 8, 10 - 8]
    assert not cache.can_allocate("a", 30, 50)  # needs 5 more full blocks, 2 are free
    cache.free("a")
    assert cache.num_free_blocks() == [10, 10]


def test_prefix_blocks_are_shared_and_survive_free():
    config = small_config()  # window 8, blocks of 4
    cache = new_cache(config, bs=4, full=20, sliding=20)
    tokens = list(range(100, 123))  # 23 tokens: 5 full blocks
    cache.admit("a", cache.find_prefix(tokens))
    cache.allocate("a", 0, 23)
    cache.advance("a", tokens, 23)
    full_a = list(cache.seqs["a"].tables[0])
    other = tokens[:18] + [7, 7, 7]
    hit = cache.find_prefix(other)
    assert hit.num_tokens == 16  # 4 whole blocks shared (block 4 differs at position 18)
    assert hit.tables[0] == full_a[:4]  # full layers: all four blocks
    # sliding layers (window 8): the first new query (position 16) sees 9..16 -> blocks 2, 3
    assert hit.tables[1][:2] == [-1, -1] and all(b >= 0 for b in hit.tables[1][2:])
    cache.free("a")
    assert cache.num_free_blocks() == [20, 20]
    assert cache.find_prefix(other).tables == hit.tables  # cached blocks outlive the sequence
    cache.admit("b", hit)
    assert cache.num_free_blocks() == [16, 18]
    assert not cache.find_prefix(tokens[:4]).num_tokens  # a prefix must leave a token to compute


@torch.no_grad()
def test_model_logits_with_the_paged_cache_equal_a_full_forward():
    """Three sequences of different lengths, chunked prefill (chunks of 7) then decode, batched
    together with padding: every position's logits equal one uncached forward of that sequence,
    which equals DynamicCache's (already tested by the model's own tests)."""
    config = small_config()
    model = random_model(config)
    g = torch.Generator().manual_seed(1)
    seqs = [torch.randint(0, 300, (n,), generator=g).tolist() for n in (19, 11, 26)]
    want = [model(torch.tensor([s]))[0] for s in seqs]  # [n, V] each, no cache
    cache = new_cache(config, bs=4, full=64, sliding=64)
    done = [0, 0, 0]
    got = [[] for _ in seqs]
    for sid in range(3):
        cache.admit(str(sid), cache.find_prefix([]))
    while any(d < len(s) for d, s in zip(done, seqs)):
        rows = [(str(i), done[i], min(7, len(s) - done[i])) for i, s in enumerate(seqs)
                if done[i] < len(s)]
        T = max(n for _, _, n in rows)
        ids, pos = torch.zeros(len(rows), T, dtype=torch.long), torch.full((len(rows), T), -1)
        for b, (sid, start, n) in enumerate(rows):
            cache.allocate(sid, start, start + n)
            ids[b, :n] = torch.tensor(seqs[int(sid)][start:start + n])
            pos[b, :n] = torch.arange(start, start + n)
        logits = model(ids, pos, cache.view(rows, T))
        for b, (sid, start, n) in enumerate(rows):
            i = int(sid)
            got[i].append(logits[b, :n])
            done[i] += n
            cache.advance(sid, seqs[i], done[i])
    for w, parts in zip(want, got):
        torch.testing.assert_close(torch.cat(parts), w, atol=2e-4, rtol=2e-4)
