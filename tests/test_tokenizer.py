"""o200k_harmony against its oracles: tiktoken's own `o200k_base` (loaded from a hash-verified
cache with the network blocked) for ordinary text, and openai-harmony for the special tokens.

The oracle never sees our regex or our merge code: tiktoken builds `o200k_base` from its own
`tiktoken_ext` definition and checks the file against the pinned sha256 itself.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import urllib.request

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gptoss.harmony import tokenizer as tk

PINNED_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
O200K_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
NAMED = {
    "<|startoftext|>": 199998, "<|endoftext|>": 199999, "<|return|>": 200002,
    "<|constrain|>": 200003, "<|channel|>": 200005, "<|start|>": 200006, "<|end|>": 200007,
    "<|message|>": 200008, "<|call|>": 200012,
}


class NetworkBlocked(RuntimeError):
    pass


def _refuse(*args, **kwargs):
    raise NetworkBlocked(f"network access attempted in a test: {args!r}")


def _block_network(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(socket.socket, "connect", _refuse)
    mp.setattr(socket.socket, "connect_ex", _refuse)
    mp.setattr(socket, "create_connection", _refuse)
    mp.setattr(socket, "getaddrinfo", _refuse)
    mp.setattr(urllib.request, "urlopen", _refuse)
    import requests
    mp.setattr(requests, "get", _refuse)
    mp.setattr(requests.Session, "request", _refuse)


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    """Fresh caches in tmp dirs and no network for the whole module; yields the verified vocab."""
    root = tmp_path_factory.mktemp("tokcache")
    with pytest.MonkeyPatch.context() as mp:
        _block_network(mp)
        mp.setenv("GPTOSS_CACHE_DIR", str(root / "gptoss"))
        mp.setenv("TIKTOKEN_CACHE_DIR", str(root / "tiktoken"))
        mp.delenv("DATA_GYM_CACHE_DIR", raising=False)
        mp.delenv("TIKTOKEN_ENCODINGS_BASE", raising=False)
        vocab = tk.ensure_vocab_file()  # nothing cached yet: rebuilt from quicktok-v1
        assert vocab.parent == root / "gptoss"
        data = vocab.read_bytes()
        # the oracle's cache entry: tiktoken checks it against its own pinned hash on load
        (root / "tiktoken").mkdir()
        shutil.copy(vocab, root / "tiktoken" / hashlib.sha1(O200K_URL.encode()).hexdigest())
        yield data


@pytest.fixture(scope="module")
def oracle(offline):
    import tiktoken

    return tiktoken.get_encoding("o200k_base")


@pytest.fixture(scope="module")
def tok(offline):
    return tk.get_tokenizer()


def test_network_is_blocked(offline):
    with pytest.raises(NetworkBlocked):
        socket.create_connection(("openaipublic.blob.core.windows.net", 443))
    import requests
    with pytest.raises(NetworkBlocked):
        requests.get(O200K_URL)


def test_vocab_is_the_pinned_file(offline):
    assert hashlib.sha256(offline).hexdigest() == PINNED_SHA256


# ---- a generated corpus --------------------------------------------------------------------
WORDS = ["hello", "world", "The", "QUICK", "brown", "Fox", "don't", "I'LL", "we've", "she's",
         "they'RE", "you'd", "o'clock", "naïve", "café", "Straße", "ÆØÅ", "İstanbul", "ǅemal"]
SCRIPTS = ["中文字符测试", "日本語のテキスト", "カタカナ", "한국어 문장", "مرحبا بالعالم", "שלום עולם",
           "नमस्ते दुनिया", "สวัสดีชาวโลก", "Привет мир", "Γειά σου κόσμε", "ሰላም", "ᚠᛇᚻ", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢"]
EMOJI = ["😀", "👍🏽", "👨\u200d👩\u200d👧\u200d👦", "🏳️\u200d🌈", "🇯🇵", "🇺🇸🇬🇧", "❤️", "🧑🏿\u200d💻",
         "\U0001f9d1\u200d\U0001f91d\u200d\U0001f9d1", "✈︎", "#️⃣", "🫠"]
COMBINING = ["e\u0301", "a\u0308\u0304", "n\u0303", "\u0915\u094d\u0937", "Z\u0351\u036b\u0343",
             "\u0627\u064e\u0644", "q\u0323\u0307"]
SPACES = [" ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\r\n", "\r\n\r\n", " \n ", "\u00a0",
          "\u3000", "\u2003", " \t\n", "\r", "\v\f"]
CODE = ["def f(x):\n    return x ** 2\n", "if (a && b) { c++; }", '{"key": [1, 2.5, null]}',
        "https://example.com/a/b?c=1&d=%20", "/usr/local/bin/", "SELECT * FROM t WHERE id=1;",
        "<div class=\"x\">&amp;</div>", "x = y if z else -1  # comment", "i += 1;\r\n\treturn",
        "$ ls -la | grep '.py'", "```python\nprint('hi')\n```", "λx.x", "a->b::c", "0x7fff_ffff"]
SPECIAL_LIKE = ["<|endoftext|>", "<|start|>", "<|endofprompt|>", "<|reserved_200018|>", "<|", "|>"]
PUNCT = ["...", "!!!", "?!", "—", "–", "«»", "“quoted”", "‘single’", "(", ")", "[]", "@#$%^&*",
         "~`", "•", "…", "¿¡", "。", "，", "、"]


def _number(rng: random.Random) -> str:
    digits = str(rng.randrange(10 ** rng.randint(1, 12)))
    return rng.choice([digits, digits + "." + str(rng.randrange(1000)), f"{int(digits):,}",
                       "-" + digits, digits + "%", "1e" + digits[:3]])


def _piece(rng: random.Random) -> str:
    kind = rng.randrange(10)
    if kind == 0:
        return _number(rng)
    if kind == 1:  # random code points from a few blocks, including unassigned ones
        lo = rng.choice([0x20, 0xA0, 0x370, 0x600, 0x900, 0x3040, 0x4E00, 0xAC00, 0x1F300, 0x10000])
        return "".join(chr(rng.randrange(lo, lo + 0x200)) for _ in range(rng.randint(1, 6)))
    pool = [WORDS, SCRIPTS, EMOJI, COMBINING, SPACES, CODE, SPECIAL_LIKE, PUNCT, WORDS][kind - 2]
    return rng.choice(pool)


def generated_corpus(n: int, seed: int = 1234) -> list[str]:
    rng = random.Random(seed)
    corpus = []
    for _ in range(n):
        pieces = [_piece(rng) for _ in range(rng.randint(1, 30))]
        corpus.append("".join(p + rng.choice(["", "", " ", "\n", SPACES[rng.randrange(16)]])
                              for p in pieces))
    return corpus


def test_generated_corpus_matches_tiktoken(tok, oracle):
    corpus = generated_corpus(4000)
    assert sum(len(s) for s in corpus) > 300_000
    for text in corpus:
        expected = oracle.encode(text, disallowed_special=())
        assert tok.encode(text) == expected, text
        assert tok.decode(expected) == text
    big = "".join(corpus)  # long runs and cross-piece merges
    assert tok.encode(big) == oracle.encode(big, disallowed_special=())


_piece_st = st.sampled_from(WORDS + SCRIPTS + EMOJI + COMBINING + SPACES + CODE + SPECIAL_LIKE
                            + PUNCT)
_text_st = st.lists(st.one_of(_piece_st, st.text(max_size=20),
                              st.text(alphabet="\r\n\t 0123456789'sStT", max_size=12)),
                    max_size=20).map("".join)


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=_text_st)
def test_hypothesis_text_matches_tiktoken(tok, oracle, text):
    ids = tok.encode(text)
    assert ids == oracle.encode(text, disallowed_special=())
    assert tok.decode(ids) == text
    assert tok.decode_bytes(ids) == text.encode("utf-8")
    assert b"".join(tok.token_bytes(i) for i in ids) == text.encode("utf-8")


# ---- special tokens ----------------------------------------------------------------------
def test_named_special_ids(tok):
    for name, token_id in NAMED.items():
        assert tok.special_ids[name] == token_id
        assert tok.encode(name, allowed_special="all") == [token_id]
        assert tok.decode([token_id]) == name
        assert tok.is_special(token_id)


def test_reserved_ids_and_endofprompt(tok, oracle):
    named_ids = set(NAMED.values())
    for token_id in range(200000, 201089):  # the last reserved id is 201088, as in harmony
        if token_id not in named_ids:
            assert tok.decode([token_id]) == f"<|reserved_{token_id}|>"
    assert len(tok.special_ids) == 2 + 1089
    assert "<|endofprompt|>" not in tok.special_ids
    assert tok.decode([200018]) == "<|reserved_200018|>"
    # o200k_base itself maps 200018 to <|endofprompt|>; harmony does not
    assert oracle.decode([200018]) == "<|endofprompt|>"
    text_ids = tok.encode("<|endofprompt|>", allowed_special="all")
    assert text_ids == oracle.encode("<|endofprompt|>", disallowed_special=())
    assert 200018 not in text_ids


def test_special_text_is_plain_unless_allowed(tok, oracle):
    text = "a<|start|>b<|endoftext|>"
    assert tok.encode(text) == oracle.encode(text, disallowed_special=())
    assert tok.encode(text, allowed_special={"<|start|>"})[1] == 200006
    assert 199999 not in tok.encode(text, allowed_special={"<|start|>"})


def test_specials_agree_with_openai_harmony(tok, offline):
    enc = tk.load_harmony_encoding()
    for token_id in range(199998, 201089):  # 201088 included: harmony decodes it too
        assert enc.decode([token_id]) == tok.decode([token_id]), token_id
    with pytest.raises(Exception):  # beyond both vocabularies
        enc.decode([201089])
    with pytest.raises(KeyError):
        tok.decode([201089])
    assert not any(tok.is_special(i) for i in (0, 1000, 199997))


def test_facts_page_samples(tok):
    assert tok.encode("hello world") == [24912, 2375]
    text = "<|start|>assistant<|channel|>final<|message|>Hi<|end|>"
    assert tok.encode(text, allowed_special="all") == [200006, 173781, 200005, 17196, 200008, 12194,
                                                      200007]
    assert tok.vocab_size == 201088


# ---- locating the vocabulary -------------------------------------------------------------
@pytest.fixture
def fresh_env(monkeypatch, tmp_path, offline):
    """Empty tiktoken/gptoss caches in tmp dirs, no network."""
    _block_network(monkeypatch)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken"))
    monkeypatch.setenv("GPTOSS_CACHE_DIR", str(tmp_path / "gptoss"))
    monkeypatch.delenv("DATA_GYM_CACHE_DIR", raising=False)
    monkeypatch.delenv("TIKTOKEN_ENCODINGS_BASE", raising=False)
    return tmp_path


@pytest.fixture
def no_quicktok(monkeypatch):
    """The last-resort source fails, so a test sees which earlier source was used."""
    def disabled():
        raise tk.TokenizerError("quicktok-v1 disabled by the test")
    monkeypatch.setattr(tk, "vocab_from_quicktok", disabled)


def _tiktoken_cache(root):
    path = root / "tiktoken" / hashlib.sha1(O200K_URL.encode()).hexdigest()
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _gptoss_cache(root):
    path = root / "gptoss" / "o200k_base.tiktoken"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_tiktoken_cache_is_used_first(fresh_env, offline, no_quicktok):
    _tiktoken_cache(fresh_env).write_bytes(offline)
    found = tk.ensure_vocab_file()
    assert found == fresh_env / "gptoss" / "o200k_base.tiktoken"
    assert found.read_bytes() == offline
    assert os.environ["TIKTOKEN_ENCODINGS_BASE"] == str(found.parent)


def test_xdg_cache_home_locates_gptoss_cache(fresh_env, offline, no_quicktok, monkeypatch):
    monkeypatch.delenv("GPTOSS_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(fresh_env / "xdg"))
    (fresh_env / "xdg" / "gptoss").mkdir(parents=True)
    (fresh_env / "xdg" / "gptoss" / "o200k_base.tiktoken").write_bytes(offline)
    assert tk.ensure_vocab_file() == fresh_env / "xdg" / "gptoss" / "o200k_base.tiktoken"


def test_corrupt_cache_is_rejected_and_next_source_used(fresh_env, offline, no_quicktok):
    corrupt = offline.replace(b" 1000\n", b" 1001\n", 1)
    _tiktoken_cache(fresh_env).write_bytes(corrupt)
    _gptoss_cache(fresh_env).write_bytes(offline)
    assert tk.ensure_vocab_file().read_bytes() == offline


def test_corrupt_caches_fall_back_to_quicktok(fresh_env, offline):
    _tiktoken_cache(fresh_env).write_bytes(b"garbage\n")
    _gptoss_cache(fresh_env).write_bytes(offline[:-100])
    assert tk.ensure_vocab_file().read_bytes() == offline


def test_every_source_bad_is_a_clear_error(fresh_env, offline, no_quicktok):
    _gptoss_cache(fresh_env).write_bytes(b"x")
    with pytest.raises(tk.TokenizerError, match="sha256 mismatch"):
        tk.ensure_vocab_file()
    assert issubclass(tk.TokenizerError, ValueError)


def _byte_to_char() -> dict[int, str]:
    """The byte-level BPE alphabet: visible latin-1 bytes stand for themselves; the others
    (control bytes, space, DEL, NBSP, soft hyphen) take code points 256, 257, ... in byte order."""
    def visible(b: int) -> bool:
        return 0x21 <= b <= 0x7E or 0xA1 <= b <= 0xAC or 0xAE <= b <= 0xFF
    hidden = [b for b in range(256) if not visible(b)]
    return {b: chr(b) if visible(b) else chr(256 + hidden.index(b)) for b in range(256)}


def _write_tokenizer_json(path, ranks: dict[bytes, int]) -> None:
    to_char = _byte_to_char()
    vocab = {"".join(to_char[b] for b in token): rank for token, rank in ranks.items()}
    added = [{"id": i, "content": name, "special": True} for name, i in NAMED.items()]
    doc = {"version": "1.0", "added_tokens": added,
           "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False},
           "decoder": {"type": "ByteLevel"},
           "model": {"type": "BPE", "byte_fallback": False, "vocab": vocab, "merges": []}}
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")


def _ranks(vocab_text: bytes) -> dict[bytes, int]:
    pairs = (line.split() for line in vocab_text.splitlines() if line)
    return {base64.b64decode(token): int(rank) for token, rank in pairs}


def test_o200k_tokenizer_json_is_accepted(fresh_env, offline, no_quicktok):
    model_dir = fresh_env / "model"
    model_dir.mkdir()
    _write_tokenizer_json(model_dir / "tokenizer.json", _ranks(offline))
    assert tk.ensure_vocab_file(model_dir).read_bytes() == offline


def test_other_tokenizer_json_is_rejected(fresh_env, offline, no_quicktok):
    model_dir = fresh_env / "model"
    model_dir.mkdir()
    ranks = _ranks(offline)
    ranks[b"hello"], ranks[b" world"] = ranks[b" world"], ranks[b"hello"]  # one swap: not o200k
    _write_tokenizer_json(model_dir / "tokenizer.json", ranks)
    with pytest.raises(tk.TokenizerError, match="tokenizer.json: its vocabulary is not o200k_base"):
        tk.ensure_vocab_file(model_dir)
    (model_dir / "tokenizer.json").write_text('{"model": {"type": "WordPiece"}}')
    with pytest.raises(tk.TokenizerError, match="not a byte-level BPE tokenizer.json"):
        tk.ensure_vocab_file(model_dir)


def test_openai_harmony_loads_offline(offline, oracle, tmp_path):
    """A fresh interpreter with only gptoss's cache, no harmony cache, and every proxy dead."""
    cache = tmp_path / "gptoss"
    cache.mkdir()
    (cache / "o200k_base.tiktoken").write_bytes(offline)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIKTOKEN", "DATA_GYM"))}
    dead = "http://127.0.0.1:9"
    env.update(GPTOSS_CACHE_DIR=str(cache), TIKTOKEN_CACHE_DIR=str(tmp_path / "tt"),
               TIKTOKEN_RS_CACHE_DIR=str(tmp_path / "rs"), HTTPS_PROXY=dead, HTTP_PROXY=dead,
               ALL_PROXY=dead, https_proxy=dead, http_proxy=dead, NO_PROXY="")
    script = (
        "from openai_harmony import Conversation, Message, Role\n"
        "from gptoss.harmony.tokenizer import load_harmony_encoding\n"
        "enc = load_harmony_encoding()\n"
        "user = Message.from_role_and_content(Role.USER, 'hello world')\n"
        "conv = Conversation.from_messages([user])\n"
        "print(enc.render_conversation_for_completion(conv, Role.ASSISTANT))\n")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    start, message, end = 200006, 200008, 200007
    expected = [start, *oracle.encode("user"), message, *oracle.encode("hello world"), end, start,
                *oracle.encode("assistant")]
    assert json.loads(out.stdout) == expected
