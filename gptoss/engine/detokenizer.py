"""Incremental detokenization with stop strings.

Token bytes are decoded as UTF-8 incrementally (a character split across tokens appears once it
is complete). Special tokens appear as their names (`<|channel|>`), so harmony structure stays
readable; the token that ended the request (a stop token) is not part of the text.
"""
from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from typing import Protocol


class TokenDecoder(Protocol):
    def token_bytes(self, token_id: int) -> bytes: ...


@dataclass
class Detokenizer:
    """Feeds generated tokens; `text` is the output so far, `stopped` once a stop string matched.

    With stop strings, the last `len(longest stop) - 1` characters are held back from `delta()`
    until they can no longer begin a match, so a streamed text never shows a stop string.
    """

    tokenizer: TokenDecoder
    stop: tuple[str, ...] = ()
    text: str = ""
    stopped: bool = False
    _emitted: int = 0
    _decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace"))

    def feed(self, token_id: int) -> None:
        if self.stopped:
            return
        start = len(self.text)
        self.text += self._decoder.decode(self.tokenizer.token_bytes(token_id))
        self._check_stop(start)

    def finish(self) -> None:
        """Flush an incomplete UTF-8 tail (as U+FFFD) at the end of the request."""
        if not self.stopped:
            start = len(self.text)
            self.text += self._decoder.decode(b"", final=True)
            self._check_stop(start)
        self.stopped = True

    def delta(self) -> str:
        """Text not yet returned by delta(); holds back a possible stop-string prefix."""
        end = len(self.text)
        if self.stop and not self.stopped:
            end = max(self._emitted, end - (max(map(len, self.stop)) - 1))
        out, self._emitted = self.text[self._emitted:end], end
        return out

    def _check_stop(self, start: int) -> None:
        if not self.stop:
            return
        longest = max(map(len, self.stop))
        lo = max(0, start - longest + 1)  # a match may straddle the previous text
        hits = [i for i in (self.text.find(s, lo) for s in self.stop) if i >= 0]
        if hits:
            self.text = self.text[:min(hits)]
            self.stopped = True
