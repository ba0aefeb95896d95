"""A lenient streaming parser of gpt-oss output tokens in the harmony format.

Feed it the sampled token ids one by one; it returns events (message started, text delta, message
done, tool call). On every well-formed stream its messages equal openai-harmony's
`StreamableParser`'s. It never raises on model output: malformed headers, unknown roles, a missing
`<|message|>`, stray or reserved special tokens and output cut off at the token limit all give
best-effort messages plus a string in `warnings`. Only a non-integer token id raises (TypeError).
An id outside the tokenizer's vocabulary reads as U+FFFD inside a message's content (as
openai-harmony's parser does) and is ignored elsewhere. A tool's message keeps its author's name
(`browser.search to=assistant` has role "tool" and name "browser.search", as in openai-harmony).

Grammar: `<|start|>` ROLE [` to=R`] [`<|channel|>` CHANNEL [` to=R`] [` <|constrain|>TYPE`]]
`<|message|>` TEXT (`<|end|>` | `<|return|>` | `<|call|>`). With `start_role` set, the stream
begins inside the header that the prompt's trailing `<|start|>assistant` opened.
"""
from __future__ import annotations

import codecs
import functools
import operator
import re
from dataclasses import dataclass
from typing import Iterable, Union

from gptoss.harmony.tokenizer import (CALL, CHANNEL, CONSTRAIN, END, ENDOFTEXT, MESSAGE, NUM_RANKS,
                                      NUM_TOKENS, RETURN, START, Tokenizer, get_tokenizer)

END_TOKENS = {END: "<|end|>", RETURN: "<|return|>", CALL: "<|call|>"}
ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
MAX_HEADER_TOKENS = 128  # a header longer than this lost its <|message|>: stream the rest as text

_CHANNEL_TEXT, _CONSTRAIN_TEXT = "<|channel|>", "<|constrain|>"
_CHANNEL_VALUE = re.compile(r"[^\s<]*")  # a channel name ends at whitespace or '<' (as harmony's)
_WORD = re.compile(r"[^ \t\n\f\r]+")  # header words are split on ASCII whitespace (as harmony's)


@dataclass(slots=True)
class ParsedMessage:
    role: str
    channel: str | None
    recipient: str | None
    content_type: str | None
    text: str
    end_token: str | None  # "<|end|>", "<|return|>", "<|call|>" or None if cut off
    name: str | None = None  # the author's name: a tool's (`browser.search`), else None


@dataclass(slots=True)
class MessageStarted:
    index: int
    role: str
    channel: str | None
    recipient: str | None
    content_type: str | None


@dataclass(slots=True)
class TextDelta:
    index: int
    channel: str | None
    recipient: str | None
    text: str


@dataclass(slots=True)
class MessageDone:
    index: int
    message: ParsedMessage


@dataclass(slots=True)
class ToolCall:
    """An assistant message with a recipient that ended with an end token (usually <|call|>)."""
    index: int
    recipient: str
    arguments: str
    content_type: str | None


Event = Union[MessageStarted, TextDelta, MessageDone, ToolCall]


@dataclass(slots=True)
class _Header:
    role: str
    channel: str | None = None
    recipient: str | None = None
    content_type: str | None = None
    name: str | None = None


# ---- header text → fields -------------------------------------------------------------------
def _take_channel(text: str, warnings: list[str]) -> tuple[str | None, str]:
    """Cut `<|channel|>NAME` out of the header text; extra channel markers are dropped."""
    channel = None
    while (idx := text.find(_CHANNEL_TEXT)) >= 0:
        rest = text[idx + len(_CHANNEL_TEXT):]
        value = _CHANNEL_VALUE.match(rest).group()
        if channel is not None:
            warnings.append(f"header has a second channel {value!r}; kept {channel!r}")
        elif value:
            channel = value
        else:
            warnings.append("header has <|channel|> with no channel name")
        text = text[:idx] + rest[len(value):]
    return channel, text.strip().replace(_CONSTRAIN_TEXT, " " + _CONSTRAIN_TEXT)


def _take_role(words: list[str], role: str | None, warnings: list[str]) -> tuple[str, str | None]:
    """(role, author name): the role given by the prompt, else the first word (removed from
    `words`). A tool's author name is that word (`browser.search`, or `tool` itself)."""
    if role is not None:
        if words and words[0] == role:
            words.pop(0)
        return role, None
    if not words or words[0].startswith(("to=", _CONSTRAIN_TEXT)):
        warnings.append("header has no role; assuming assistant")
        return "assistant", None
    first = words.pop(0)
    if first in ROLES:
        return first, first if first == "tool" else None
    if words:  # `functions.x to=assistant`: a tool's message, as openai-harmony reads it
        if words[0] == "tool":  # openai-harmony also drops a following word equal to the role
            words.pop(0)
        return "tool", first
    warnings.append(f"unknown role {first!r}")
    return first, None


def _split_target(words: list[str], warnings: list[str]) -> tuple[str | None, str | None]:
    """(recipient, content type) from the words after the role, read as openai-harmony does where
    it accepts the header; otherwise by prefix (`to=`, `<|constrain|>`)."""
    if len(words) == 1 and not words[0].startswith(("to=", _CONSTRAIN_TEXT)):
        warnings.append(f"recipient {words[0]!r} without 'to='")
        return words[0], None
    if (len(words) == 2 and not words[1].startswith("to=")
            and not words[0].startswith(_CONSTRAIN_TEXT)):
        if not words[0].startswith("to="):
            warnings.append(f"recipient {words[0]!r} without 'to='")
        return words[0].removeprefix("to="), words[1]
    recipient = content_type = None
    bare = []
    for word in words:
        if word.startswith("to=") and recipient is None:
            recipient = word[3:]
        elif word.startswith(_CONSTRAIN_TEXT) and content_type is None:
            content_type = word
        else:
            bare.append(word)
    if content_type is None and recipient is not None and len(bare) == 1:
        content_type = bare.pop()
    if bare:
        warnings.append(f"unexpected words in header dropped: {' '.join(bare)!r}")
    return recipient, content_type


def parse_header(text: str, role: str | None, warnings: list[str]) -> _Header:
    """Fields of a complete header (the text between `<|start|>` and `<|message|>`)."""
    channel, text = _take_channel(text, warnings)
    words = _WORD.findall(text)
    author, name = _take_role(words, role, warnings)
    header = _Header(author, channel, name=name)
    header.recipient, header.content_type = _split_target(words, warnings)
    return header


def parse_bodiless_header(text: str, role: str | None, warnings: list[str]) -> tuple[_Header, str]:
    """A header whose `<|message|>` never came: leading role / `to=` / `<|constrain|>` words are
    header, the rest of the text (whitespace kept) is the message's content."""
    channel, text = _take_channel(text, warnings)
    header = _Header(role or "assistant", channel)
    for match in _WORD.finditer(text):
        word = match.group()
        if role is None and header.role == "assistant" and word in ROLES and match.start() == 0:
            header.role = word
        elif word.startswith("to=") and header.recipient is None:
            header.recipient = word[3:]
        elif word.startswith(_CONSTRAIN_TEXT) and header.content_type is None:
            header.content_type = word
        elif word != role:
            return header, text[match.start():]
    return header, ""


# ---- token id → text, cached per tokenizer --------------------------------------------------
@functools.lru_cache(maxsize=8)
def _token_table(tokenizer: Tokenizer) -> list:
    """Slot per id, filled on first use: the token's text when its bytes are complete UTF-8,
    else its raw bytes (part of a multi-byte character)."""
    return [None] * NUM_RANKS


class HarmonyStreamParser:
    """Parses one completion's tokens; see the module docstring for the contract."""

    def __init__(self, tokenizer: Tokenizer | None = None, start_role: str | None = "assistant"):
        self._tok = tokenizer or get_tokenizer()
        self._table = _token_table(self._tok)
        self.messages: list[ParsedMessage] = []
        self.warnings: list[str] = []
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._pending = False  # the decoder holds the first bytes of a character
        self._in_content = False
        self._in_header = False
        self._cur = _Header("assistant")
        self._parts: list[str] = []
        self._header: list[bytes] = []
        self._header_role: str | None = None
        if start_role is not None:
            self._begin_header(start_role)

    # -- public API
    @property
    def current_role(self) -> str | None:
        if self._in_content:
            return self._cur.role
        return self._header_role if self._in_header else None

    @property
    def current_channel(self) -> str | None:
        return self._cur.channel if self._in_content else None

    @property
    def current_recipient(self) -> str | None:
        return self._cur.recipient if self._in_content else None

    @property
    def current_content_type(self) -> str | None:
        return self._cur.content_type if self._in_content else None

    def feed(self, token_id: int) -> list[Event]:
        """Consume one token id; returns the events it completes (often one TextDelta)."""
        if self._in_content and 0 <= token_id < NUM_RANKS:  # hot path: ordinary content text
            entry = self._table[token_id]
            if entry is None:
                entry = self._fill(token_id)
            if entry.__class__ is str and not self._pending:
                self._parts.append(entry)
                cur = self._cur
                return [TextDelta(len(self.messages), cur.channel, cur.recipient, entry)]
            return self._content_bytes(entry)
        return self._feed_other(token_id)

    def feed_many(self, ids: Iterable[int]) -> list[Event]:
        events: list[Event] = []
        feed = self.feed
        for token_id in ids:
            events += feed(token_id)
        return events

    def close(self) -> list[Event]:
        """End of stream: a message cut off without an end token is completed with a warning."""
        if self._in_content:
            self.warnings.append(f"output cut off inside message {len(self.messages)} "
                                 "(no end token)")
            return self._finish(None)
        if self._in_header and (self._header or self._header_role is None):
            return self._abandon_header("output cut off inside a message header")
        self._in_header = False  # nothing fed after the prompt's `<|start|>assistant`: no message
        return []

    # -- token classes
    def _fill(self, token_id: int) -> str | bytes:
        data = self._tok.token_bytes(token_id)
        try:
            entry = data.decode("utf-8")
        except UnicodeDecodeError:
            entry = data
        self._table[token_id] = entry
        return entry

    def _content_bytes(self, entry: str | bytes) -> list[Event]:
        data = entry.encode("utf-8") if entry.__class__ is str else entry
        text = self._decoder.decode(data)
        self._pending = bool(self._decoder.getstate()[0])
        if not text:
            return []
        self._parts.append(text)
        return [TextDelta(len(self.messages), self._cur.channel, self._cur.recipient, text)]

    def _feed_other(self, token_id: int) -> list[Event]:
        try:
            token_id = operator.index(token_id)
        except TypeError:
            raise TypeError(f"token ids must be integers, got {type(token_id).__name__}: "
                            f"{token_id!r}") from None
        if not 0 <= token_id < NUM_TOKENS:
            if self._in_content:  # as openai-harmony: an undecodable token is U+FFFD
                self.warnings.append(f"token id {token_id} is outside the vocabulary; read as "
                                     "U+FFFD")
                return self._content_bytes(b"\xff")
            self.warnings.append(f"token id {token_id} is outside the vocabulary; ignored")
            return []
        if token_id < NUM_RANKS:  # text outside content
            if not self._in_header:
                self.warnings.append("text outside a message (missing <|start|>); read as a header")
                self._begin_header(None)
            return self._header_text(token_id)
        if self._in_content:
            return self._special_in_content(token_id)
        if self._in_header:
            return self._special_in_header(token_id)
        return self._special_between(token_id)

    def _name(self, token_id: int) -> str:
        return self._tok.decode([token_id])

    # -- specials, by state
    def _special_in_content(self, token_id: int) -> list[Event]:
        if token_id in END_TOKENS:
            return self._finish(END_TOKENS[token_id])
        if token_id in (START, CHANNEL, ENDOFTEXT):
            self.warnings.append(f"{self._name(token_id)} inside message {len(self.messages)} "
                                 "before its end token; message closed")
            role, events = self._cur.role, self._finish(None)
            if token_id == START:
                self._begin_header(None)
            elif token_id == CHANNEL:  # a new header of the same author
                self._begin_header(role)
                self._header.append(_CHANNEL_TEXT.encode())
            return events
        self.warnings.append(f"stray {self._name(token_id)} in message {len(self.messages)} "
                             "dropped")
        return []

    def _special_in_header(self, token_id: int) -> list[Event]:
        if token_id == MESSAGE:
            return self._start_content()
        if token_id in (CHANNEL, CONSTRAIN):
            self._header.append(self._name(token_id).encode())
            return []
        if token_id in END_TOKENS:
            self.warnings.append(f"header ended by {END_TOKENS[token_id]} without <|message|>")
            return self._bodiless(END_TOKENS[token_id])
        if token_id in (START, ENDOFTEXT):
            events = self._abandon_header(f"{self._name(token_id)} inside a message header")
            if token_id == START:
                self._begin_header(None)
            return events
        self.warnings.append(f"stray {self._name(token_id)} in a message header dropped")
        return []

    def _special_between(self, token_id: int) -> list[Event]:
        if token_id == START:
            self._begin_header(None)
        elif token_id in (CHANNEL, CONSTRAIN):
            self.warnings.append(f"{self._name(token_id)} without <|start|>; read as a header")
            self._begin_header(None)
            self._header.append(self._name(token_id).encode())
        elif token_id == MESSAGE:
            self.warnings.append("<|message|> without a header; assuming an assistant message")
            self._begin_header("assistant")
            return self._start_content()
        elif token_id != ENDOFTEXT:  # <|endoftext|> after an end token is an ordinary stop
            self.warnings.append(f"stray {self._name(token_id)} between messages ignored")
        return []

    # -- header
    def _begin_header(self, role: str | None) -> None:
        self._in_header, self._header_role, self._header = True, role, []

    def _header_text(self, token_id: int) -> list[Event]:
        self._header.append(self._tok.token_bytes(token_id))
        if len(self._header) <= MAX_HEADER_TOKENS:
            return []
        self.warnings.append(f"no <|message|> after {MAX_HEADER_TOKENS} header tokens; "
                             "the rest is read as content")
        self._decoder.reset()  # undecoded trailing bytes stay in the decoder for the content
        text = self._decoder.decode(b"".join(self._header))
        header, rest = parse_bodiless_header(text, self._header_role, self.warnings)
        events = self._open(header)
        if rest:
            self._parts.append(rest)
            events.append(TextDelta(len(self.messages), header.channel, header.recipient, rest))
        self._pending = bool(self._decoder.getstate()[0])
        return events

    def _start_content(self) -> list[Event]:
        text = b"".join(self._header).decode("utf-8", errors="replace")
        return self._open(parse_header(text, self._header_role, self.warnings))

    def _bodiless(self, end_token: str | None) -> list[Event]:
        """A header that ended without <|message|>: its non-header words become the content."""
        text = b"".join(self._header).decode("utf-8", errors="replace")
        header, rest = parse_bodiless_header(text, self._header_role, self.warnings)
        events = self._open(header)
        if rest:
            self._parts.append(rest)
            events.append(TextDelta(len(self.messages), header.channel, header.recipient, rest))
        return events + self._finish(end_token)

    def _abandon_header(self, why: str) -> list[Event]:
        if b"".join(self._header).strip():
            self.warnings.append(f"{why}; header read best-effort as a message")
            return self._bodiless(None)
        self.warnings.append(f"{why}; empty header dropped")
        self._in_header = False
        return []

    # -- content
    def _open(self, header: _Header) -> list[Event]:
        self._in_header, self._in_content, self._cur = False, True, header
        self._parts = []
        return [MessageStarted(len(self.messages), header.role, header.channel, header.recipient,
                               header.content_type)]

    def _finish(self, end_token: str | None) -> list[Event]:
        events: list[Event] = []
        tail = self._decoder.decode(b"", True)  # an unfinished character becomes U+FFFD
        self._decoder.reset()
        self._pending = False
        index, cur = len(self.messages), self._cur
        if tail:
            self._parts.append(tail)
            events.append(TextDelta(index, cur.channel, cur.recipient, tail))
        message = ParsedMessage(cur.role, cur.channel, cur.recipient, cur.content_type,
                                "".join(self._parts), end_token, cur.name)
        self.messages.append(message)
        self._in_content, self._parts = False, []
        events.append(MessageDone(index, message))
        if end_token == "<|call|>" and cur.recipient is None:
            self.warnings.append(f"message {index} ended with <|call|> but has no recipient")
        if cur.recipient is not None and cur.role == "assistant" and end_token is not None:
            events.append(ToolCall(index, cur.recipient, message.text, cur.content_type))
        return events
