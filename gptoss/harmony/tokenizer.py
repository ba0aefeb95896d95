"""The o200k_harmony tokenizer, available offline.

The BPE ranks are those of tiktoken's `o200k_base` (pinned by sha256). They are found, in order:
1. in tiktoken's own cache (`TIKTOKEN_CACHE_DIR`, `DATA_GYM_CACHE_DIR` or `<tmp>/data-gym-cache`);
2. in gptoss's cache (`$GPTOSS_CACHE_DIR` or `$XDG_CACHE_HOME/gptoss` or `~/.cache/gptoss`);
3. in a model folder's `tokenizer.json` (byte-level BPE vocabulary, checked to be o200k);
4. rebuilt from the ranks shipped in the `quicktok-v1` package.
Every candidate is verified against the pinned sha256 before use; the verified file is cached in
gptoss's cache, and `TIKTOKEN_ENCODINGS_BASE` is pointed at it so that openai-harmony loads offline.
No code path here touches the network.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import struct
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import tiktoken
import tiktoken.load

VOCAB_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
VOCAB_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
VOCAB_FILE = "o200k_base.tiktoken"
NUM_RANKS = 199998
VOCAB_SIZE = 201088   # the model's embedding rows
# ids the tokenizer decodes: openai-harmony's reserved range ends at <|reserved_201088|>, one past
# the last embedding row (a model never samples it, but a decoder must not fail on it)
NUM_TOKENS = VOCAB_SIZE + 1

# the named harmony specials; every other id in [200000, 201088] is <|reserved_N|>
NAMED_SPECIALS = {
    "<|startoftext|>": 199998, "<|endoftext|>": 199999, "<|return|>": 200002,
    "<|constrain|>": 200003, "<|channel|>": 200005, "<|start|>": 200006, "<|end|>": 200007,
    "<|message|>": 200008, "<|call|>": 200012,
}
# the same ids by name, for code that matches tokens
STARTOFTEXT, ENDOFTEXT = NAMED_SPECIALS["<|startoftext|>"], NAMED_SPECIALS["<|endoftext|>"]
RETURN, CONSTRAIN = NAMED_SPECIALS["<|return|>"], NAMED_SPECIALS["<|constrain|>"]
CHANNEL, START, END = NAMED_SPECIALS["<|channel|>"], NAMED_SPECIALS["<|start|>"], NAMED_SPECIALS["<|end|>"]
MESSAGE, CALL = NAMED_SPECIALS["<|message|>"], NAMED_SPECIALS["<|call|>"]
O200K_PATTERN = "|".join([
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"\p{N}{1,3}",
    r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
    r"\s*[\r\n]+",
    r"\s+(?!\S)",
    r"\s+",
])


class TokenizerError(ValueError):
    """The vocabulary could not be found or failed verification."""


def harmony_special_tokens() -> dict[str, int]:
    specials = {f"<|reserved_{i}|>": i for i in range(200000, NUM_TOKENS)}
    for name, token_id in NAMED_SPECIALS.items():
        specials.pop(f"<|reserved_{token_id}|>", None)
        specials[name] = token_id
    return specials


# ---- locating and verifying the vocabulary file -------------------------------------------------
def gptoss_cache_dir() -> Path:
    if os.environ.get("GPTOSS_CACHE_DIR"):
        return Path(os.environ["GPTOSS_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gptoss"


def tiktoken_cache_file() -> Path:
    base = (os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
            or os.path.join(tempfile.gettempdir(), "data-gym-cache"))
    return Path(base) / hashlib.sha1(VOCAB_URL.encode()).hexdigest()


def _verified(data: bytes) -> bool:
    return hashlib.sha256(data).hexdigest() == VOCAB_SHA256


def _ranks_to_text(pairs: list[tuple[bytes, int]]) -> bytes:
    pairs.sort(key=lambda p: p[1])
    return b"".join(base64.b64encode(tok) + b" " + str(rank).encode() + b"\n" for tok, rank in pairs)


def vocab_from_quicktok() -> bytes:
    """Rewrite quicktok's o200k ranks (u32 count, then u16 len + bytes + u32 rank) as tiktoken text."""
    try:
        raw = resources.files("quicktok").joinpath("data/o200k.vocab").read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise TokenizerError(f"the quicktok-v1 package or its o200k.vocab is missing ({exc}); "
                             "reinstall gptoss with its dependencies") from None
    (count,), offset, pairs = struct.unpack_from("<I", raw, 0), 4, []
    for _ in range(count):
        (length,) = struct.unpack_from("<H", raw, offset)
        token = raw[offset + 2: offset + 2 + length]
        (rank,) = struct.unpack_from("<I", raw, offset + 2 + length)
        pairs.append((token, rank))
        offset += 6 + length
    return _ranks_to_text(pairs)


def _byte_decoder() -> dict[str, int]:
    """Inverse of the byte-level BPE alphabet: printable bytes map to themselves, the rest to 256+n."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[chr(b)] = b
        else:
            table[chr(256 + extra)] = b
            extra += 1
    return table


def vocab_from_tokenizer_json(path: Path) -> bytes:
    """Rebuild the ranks from a Hugging Face `tokenizer.json`; raises unless it is o200k's."""
    try:
        vocab = json.loads(path.read_text(encoding="utf-8"))["model"]["vocab"]
        decoder = _byte_decoder()
        pairs = [(bytes(decoder[c] for c in tok), rank) for tok, rank in vocab.items()
                 if rank < NUM_RANKS]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TokenizerError(f"{path}: not a byte-level BPE tokenizer.json ({exc})") from None
    data = _ranks_to_text(pairs)
    if not _verified(data):
        raise TokenizerError(f"{path}: its vocabulary is not o200k_base (sha256 mismatch)")
    return data


def _candidates(model_dir: Path | None):
    for path in (tiktoken_cache_file(), gptoss_cache_dir() / VOCAB_FILE):
        if path.is_file():
            yield str(path), path.read_bytes
    if model_dir is not None and (Path(model_dir) / "tokenizer.json").is_file():
        path = Path(model_dir) / "tokenizer.json"
        yield str(path), lambda: vocab_from_tokenizer_json(path)
    yield "quicktok-v1", vocab_from_quicktok


def ensure_vocab_file(model_dir: str | Path | None = None) -> Path:
    """Return the verified `o200k_base.tiktoken` in gptoss's cache, creating it if needed."""
    target = gptoss_cache_dir() / VOCAB_FILE
    rejected = []
    for source, read in _candidates(Path(model_dir) if model_dir else None):
        try:
            data = read()
        except TokenizerError as exc:
            rejected.append(str(exc))
            continue
        if not _verified(data):
            rejected.append(f"{source}: sha256 mismatch (expected {VOCAB_SHA256})")
            continue
        if source != str(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(f".tmp{os.getpid()}")
            tmp.write_bytes(data)
            os.replace(tmp, target)
        os.environ.setdefault("TIKTOKEN_ENCODINGS_BASE", str(target.parent))
        return target
    raise TokenizerError("no verified o200k_base vocabulary found: " + "; ".join(rejected))


# ---- the tokenizer ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Tokenizer:
    """o200k_harmony: tiktoken's encoder with harmony's special tokens."""

    encoding: tiktoken.Encoding

    @property
    def vocab_size(self) -> int:
        return VOCAB_SIZE

    @functools.cached_property
    def special_ids(self) -> dict[str, int]:
        return harmony_special_tokens()

    def encode(self, text: str, allowed_special: str | set[str] = frozenset()) -> list[int]:
        """Encode text; special-token text is encoded as plain text unless allowed."""
        return self.encoding.encode(text, allowed_special=allowed_special, disallowed_special=())

    def decode(self, ids: list[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids: list[int]) -> bytes:
        return self.encoding.decode_bytes(ids)

    def token_bytes(self, token_id: int) -> bytes:
        return self.encoding.decode_single_token_bytes(token_id)

    def is_special(self, token_id: int) -> bool:
        return token_id >= NUM_RANKS


@functools.lru_cache(maxsize=None)
def _load(vocab_path: str) -> Tokenizer:
    ranks = tiktoken.load.load_tiktoken_bpe(vocab_path, expected_hash=VOCAB_SHA256)
    encoding = tiktoken.Encoding(name="o200k_harmony", pat_str=O200K_PATTERN,
                                 mergeable_ranks=ranks, special_tokens=harmony_special_tokens(),
                                 explicit_n_vocab=NUM_TOKENS)
    return Tokenizer(encoding)


def get_tokenizer(model_dir: str | Path | None = None) -> Tokenizer:
    """The o200k_harmony tokenizer (cached); `model_dir` may supply a `tokenizer.json`."""
    # memoized per (model_dir, cache locations): locating and hashing the file costs ~6 ms
    return _located(str(model_dir) if model_dir else None, gptoss_cache_dir(), tiktoken_cache_file())


@functools.lru_cache(maxsize=None)
def _located(model_dir: str | None, cache_dir: Path, tiktoken_file: Path) -> Tokenizer:
    return _load(str(ensure_vocab_file(model_dir)))


@functools.lru_cache(maxsize=None)
def load_harmony_encoding():
    """openai-harmony's HARMONY_GPT_OSS encoding, loaded from the local vocabulary."""
    ensure_vocab_file()
    from openai_harmony import HarmonyEncodingName, load_harmony_encoding as _load_encoding

    return _load_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)
