"""Stop strings over streamed text: the one matcher every consumer uses.

The engine's detokenizer applies it to a plain completion's text (`LLM.generate(stop=...)`);
`harmony.output` applies it to the answer's text parts only, as the OpenAI APIs do (a stop string
never cuts the chain of thought or a tool call's arguments).
"""
from __future__ import annotations

from typing import Sequence


class StopMatcher:
    """Feed text pieces in order; `feed` returns what may be shown now.

    The last `len(longest stop) - 1` characters are held back until they can no longer begin a
    match, so streamed text never shows part of a stop string. On the first match `hit` is set,
    `feed` returns the text before it, and everything after is dropped.
    """

    def __init__(self, stop: Sequence[str] = ()) -> None:
        self.stop = tuple(stop)
        self.keep = max(map(len, self.stop)) - 1 if self.stop else 0
        self.held, self.hit = "", False

    def feed(self, text: str) -> str:
        if self.hit:
            return ""
        if not self.stop:
            return text
        self.held += text
        found = [i for i in (self.held.find(s) for s in self.stop) if i >= 0]
        if found:
            out, self.held, self.hit = self.held[:min(found)], "", True
            return out
        cut = max(0, len(self.held) - self.keep)
        out, self.held = self.held[:cut], self.held[cut:]
        return out

    def flush(self) -> str:
        """The held-back text, at the end of the stream (or of a text part)."""
        out, self.held = self.held, ""
        return out
