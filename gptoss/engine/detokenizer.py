"""Incremental detokenization of a plain completion, with stop strings.

Token bytes are decoded as UTF-8 incrementally (a character split across tokens appears once it
is complete). Special tokens appear as their names (`<|channel|>`); the token that ended the
request (a stop token) is not part of the text. The engine builds one only for a request with
stop strings (it must see the text to stop); otherwise nothing in the engine decodes tokens: a
consumer decodes them once (the harmony parser, or `decode_text` for `RequestOutput.text`).
"""
from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from typing import Protocol, Sequence

from ..harmony.stop import StopMatcher


class TokenDecoder(Protocol):
    def token_bytes(self, token_id: int) -> bytes: ...


def decode_text(tokenizer: TokenDecoder, token_ids: Sequence[int]) -> str:
    """The text of `token_ids`, as a Detokenizer fed them one by one would show it."""
    return b"".join(map(tokenizer.token_bytes, token_ids)).decode("utf-8", errors="replace")


@dataclass
class Detokenizer:
    """Feeds generated tokens; `text` is the output so far, `stopped` once a stop string matched.

    `delta()` returns the text not yet returned, holding back a possible stop-string prefix
    (`harmony.stop.StopMatcher`), so a streamed text never shows a stop string.
    """

    tokenizer: TokenDecoder
    stop: tuple[str, ...] = ()
    stopped: bool = False
    _shown: list[str] = field(default_factory=list)
    _emitted: int = 0
    _matcher: StopMatcher = field(init=False)
    _decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace"))

    def __post_init__(self) -> None:
        self._matcher = StopMatcher(self.stop)

    @property
    def text(self) -> str:
        return "".join(self._shown) + self._matcher.held

    def feed(self, token_id: int) -> None:
        if not self.stopped:
            self._add(self._decoder.decode(self.tokenizer.token_bytes(token_id)))

    def finish(self) -> None:
        """Flush an incomplete UTF-8 tail (as U+FFFD) and the held-back text."""
        if not self.stopped:
            self._add(self._decoder.decode(b"", final=True))
            self._shown.append(self._matcher.flush())
        self.stopped = True

    def delta(self) -> str:
        """Text not yet returned by delta()."""
        shown = "".join(self._shown)
        out, self._emitted = shown[self._emitted:], len(shown)
        return out

    def _add(self, piece: str) -> None:
        self._shown.append(self._matcher.feed(piece))
        self.stopped = self._matcher.hit
