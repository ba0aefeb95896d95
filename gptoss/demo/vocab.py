"""The demo model's vocabulary: the o200k_harmony ids its corpus uses, in a compact numbering.

Training runs on a compact vocabulary (`DemoVocab.size` rows): row k < len(token_ids) is token
`token_ids[k]`; the `other_rows` rows after them stand for every other token of the 201088. They
start identical and so stay (nearly) identical under training (identical rows get identical
gradients and AdamW updates), and the packed model keeps their mean as the one shared row of
every unused token. They are never a target; their number sets how much softmax mass the
training sees on them (the expanded model has 201088 - len(token_ids) such rows).
Numbering the corpus's ids compactly makes the unembedding (and its softmax) of a training step
about 100x cheaper than over the full vocabulary, which is what makes training on 2 CPU cores
practical.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..harmony.tokenizer import get_tokenizer

FULL_VOCAB = 201088
DEFAULT_OTHER_ROWS = 2048


class VocabError(ValueError):
    """A vocabulary file that cannot be used."""


@dataclass(frozen=True)
class DemoVocab:
    token_ids: tuple[int, ...]  # sorted real ids with their own rows
    other_rows: int = DEFAULT_OTHER_ROWS

    def __post_init__(self) -> None:
        ids = self.token_ids
        if list(ids) != sorted(set(ids)) or not ids or ids[0] < 0 or ids[-1] >= FULL_VOCAB:
            raise VocabError(f"token_ids must be sorted distinct ids in [0, {FULL_VOCAB})")
        if self.other_rows < 1:
            raise VocabError(f"other_rows must be >= 1, got {self.other_rows}")

    @property
    def size(self) -> int:
        """Rows of the compact embedding and unembedding."""
        return len(self.token_ids) + self.other_rows

    @property
    def other(self) -> int:
        """The compact row of a token without its own row."""
        return len(self.token_ids)

    def compact_map(self) -> dict[int, int]:
        return {t: k for k, t in enumerate(self.token_ids)}

    def to_compact(self, ids: Iterable[int]) -> tuple[int, ...]:
        table = self.compact_map()
        return tuple(table.get(t, self.other) for t in ids)

    def save(self, path: str | Path) -> Path:
        Path(path).write_text(json.dumps({"token_ids": list(self.token_ids),
                                          "other_rows": self.other_rows}) + "\n")
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "DemoVocab":
        try:
            d = json.loads(Path(path).read_text())
            return cls(tuple(d["token_ids"]), d.get("other_rows", DEFAULT_OTHER_ROWS))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise VocabError(f"{path}: not a demo vocabulary ({exc})") from None


def base_token_ids() -> set[int]:
    """Ids every demo vocabulary keeps, whatever the corpus: the harmony special tokens, the
    numbers 0-999 with and without a leading space, and printable ASCII characters."""
    tok = get_tokenizer()
    ids = set(range(199998, 200013))
    texts = [str(n) for n in range(1000)] + [chr(c) for c in range(32, 127)]
    for text in texts + [" " + t for t in texts]:
        ids.update(tok.encode(text))
    return ids


def vocab_from_examples(token_lists: Iterable[Iterable[int]],
                        other_rows: int = DEFAULT_OTHER_ROWS) -> DemoVocab:
    """The ids of the rendered corpus (`token_lists`) plus `base_token_ids()`."""
    ids = base_token_ids()
    for tokens in token_lists:
        ids.update(tokens)
    return DemoVocab(tuple(sorted(ids)), other_rows)
