"""The streaming harmony parser against openai-harmony's StreamableParser (the oracle) on
well-formed streams, and its never-raise contract on arbitrary token sequences."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai_harmony import HarmonyError, Role, StreamableParser

from gptoss.harmony.parser import (MAX_HEADER_TOKENS, HarmonyStreamParser, MessageDone,
                                   MessageStarted, ParsedMessage, TextDelta, ToolCall)
from gptoss.harmony.tokenizer import get_tokenizer, load_harmony_encoding

SPECIALS = {"startoftext": 199998, "endoftext": 199999, "return": 200002, "constrain": 200003,
            "channel": 200005, "start": 200006, "end": 200007, "message": 200008, "call": 200012}
END_NAMES = ["<|end|>", "<|return|>", "<|call|>"]
HYPO = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                      HealthCheck.too_slow])


@pytest.fixture(scope="module")
def tok():
    return get_tokenizer()


@pytest.fixture(scope="module")
def byte_ids(tok):
    """Token id of each single byte (o200k has all 256), to split characters across tokens."""
    return [tok.encoding.encode_single_token(bytes([b])) for b in range(256)]


def encode(tok, text: str) -> list[int]:
    return tok.encode(text, allowed_special="all")


def oracle(ids: list[int]) -> list[tuple]:
    parser = StreamableParser(load_harmony_encoding(), role=Role.ASSISTANT)
    for token_id in ids:
        parser.process(token_id)
    parser.process_eos()
    return [(m.author.role.value, m.channel, m.recipient, m.content_type, m.content[0].text)
            for m in parser.messages]


def oracle_names(ids: list[int]) -> list[str | None]:
    parser = StreamableParser(load_harmony_encoding(), role=Role.ASSISTANT)
    for token_id in ids:
        parser.process(token_id)
    parser.process_eos()
    return [m.author.name for m in parser.messages]


def parse(tok, ids, start_role="assistant"):
    parser = HarmonyStreamParser(tok, start_role=start_role)
    events = parser.feed_many(ids) + parser.close()
    return parser, events


def fields(messages: list[ParsedMessage]) -> list[tuple]:
    return [(m.role, m.channel, m.recipient, m.content_type, m.text) for m in messages]


def check_events(parser: HarmonyStreamParser, events: list) -> None:
    """Events tell the story of `messages`: started → deltas → done, per index, in order."""
    done = [e for e in events if isinstance(e, MessageDone)]
    assert [e.index for e in done] == list(range(len(parser.messages)))
    assert [e.message for e in done] == parser.messages
    for index, message in enumerate(parser.messages):
        mine = [e for e in events if getattr(e, "index", None) == index]
        assert isinstance(mine[0], MessageStarted)
        assert (mine[0].role, mine[0].channel, mine[0].recipient, mine[0].content_type) == (
            message.role, message.channel, message.recipient, message.content_type)
        deltas = [e for e in mine if isinstance(e, TextDelta)]
        assert "".join(d.text for d in deltas) == message.text
        assert all(d.text and (d.channel, d.recipient) == (message.channel, message.recipient)
                   for d in deltas)
        assert message.end_token in (*END_NAMES, None)
        calls = [e for e in mine if isinstance(e, ToolCall)]
        is_call = (message.role == "assistant" and message.recipient is not None
                   and message.end_token is not None)
        assert len(calls) == is_call
        if calls:
            assert (calls[0].recipient, calls[0].arguments, calls[0].content_type) == (
                message.recipient, message.text, message.content_type)
    assert all(isinstance(w, str) and w for w in parser.warnings)


# ---- well-formed streams: equal to openai-harmony ------------------------------------------
_name = st.from_regex(r"[a-z_][a-z0-9_]{0,12}", fullmatch=True)
_recipient = st.one_of(_name.map("functions.{}".format), st.sampled_from(
    ["browser.search", "browser.open", "python", "container.exec"]))
_ctype = st.sampled_from(["", " <|constrain|>json", " json", "<|constrain|>json"])


@st.composite
def header(draw, first: bool) -> str:
    """Header text after `<|start|>` (after the prompt's `<|start|>assistant` when `first`)."""
    kind = draw(st.sampled_from(["analysis", "preamble", "call_before", "call_after", "final",
                                 "tool_result", "user"] if not first else
                                ["analysis", "preamble", "call_before", "call_after", "final"]))
    role = "" if first else "assistant"
    if kind in ("analysis", "final"):
        return f"{role}<|channel|>{kind}"
    if kind == "preamble":
        return f"{role}<|channel|>commentary"
    if kind == "tool_result":
        return f"{draw(_recipient)} to=assistant<|channel|>commentary"
    if kind == "user":
        return "user"
    recipient, ctype = draw(_recipient), draw(_ctype)
    if kind == "call_before":
        return f"{role} to={recipient}<|channel|>commentary{ctype}"
    return f"{role}<|channel|>commentary to={recipient}{ctype}"


_content = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)


@st.composite
def well_formed(draw, tok, byte_ids) -> list[int]:
    ids: list[int] = []
    count = draw(st.integers(1, 4))
    for i in range(count):
        head = draw(header(first=i == 0))
        ids += encode(tok, ("" if i == 0 else "<|start|>") + head + "<|message|>")
        text = draw(_content)
        if draw(st.booleans()):  # one token per byte: multi-byte characters split across tokens
            ids += [byte_ids[b] for b in text.encode("utf-8")]
        else:
            ids += tok.encode(text)
        last = i == count - 1
        if not (last and draw(st.booleans())):  # the last message may be cut off
            ids.append(SPECIALS[draw(st.sampled_from(["end", "return", "call"]))])
    return ids


@settings(HYPO, max_examples=300)
@given(data=st.data())
def test_well_formed_streams_equal_openai_harmony(tok, byte_ids, data):
    ids = data.draw(well_formed(tok, byte_ids))
    parser, events = parse(tok, ids)
    expected = oracle(ids)
    assert fields(parser.messages) == expected
    assert [m.name for m in parser.messages] == oracle_names(ids)  # a tool's author name kept
    check_events(parser, events)
    cut = ids[-1] not in (200002, 200007, 200012)
    assert [m.end_token is None for m in parser.messages][-1] == cut
    # the same stream one token at a time gives the same result
    one = HarmonyStreamParser(tok)
    for token_id in ids:
        one.feed(token_id)
    one.close()
    assert one.messages == parser.messages


_header_word = st.sampled_from(["assistant", "user", "tool", "to=functions.f", "to=python", "json",
                                "<|constrain|>json", "functions.g", "commentary", "x",
                                "<|channel|>final", "<|channel|>commentary", "<|channel|>analysis"])
_odd_header = st.lists(st.tuples(st.sampled_from(["", " ", "  ", "\n", " \t"]), _header_word),
                       max_size=5).map(lambda pairs: "".join(a + b for a, b in pairs))


def _documented_divergence(theirs: tuple, ours: tuple) -> bool:
    """A lone `<|constrain|>TYPE`: openai-harmony's recipient, our content type (see below)."""
    return ((theirs[2] or "").startswith("<|constrain|>") and theirs[3] is None
            and ours == (theirs[0], theirs[1], None, theirs[2], theirs[4]))


@settings(HYPO, max_examples=400)
@given(head=_odd_header, first=st.booleans(), body=st.text(max_size=5))
def test_we_agree_with_openai_harmony_unless_we_warn(tok, head, first, body):
    """Odd but accepted headers: where openai-harmony parses one and we record no warning, the
    messages are equal (apart from the one documented divergence)."""
    prefix = "" if first else "<|channel|>final<|message|>x<|end|><|start|>"
    ids = encode(tok, prefix + head + "<|message|>") + tok.encode(body) + [SPECIALS["end"]]
    parser, events = parse(tok, ids)
    check_events(parser, events)
    try:
        expected = oracle(ids)
    except HarmonyError:  # harmony rejects the header; our best effort is checked elsewhere
        return
    if not parser.warnings:
        got = fields(parser.messages)
        assert len(got) == len(expected)
        assert all(a == b or _documented_divergence(a, b) for a, b in zip(expected, got))
        assert [m.name for m in parser.messages] == oracle_names(ids)


def test_constrain_right_after_channel_is_a_content_type(tok):
    """openai-harmony reads `<|channel|>final<|constrain|>json` (no space, no recipient) as
    recipient '<|constrain|>json'; we read it as the content type (a deliberate divergence)."""
    ids = encode(tok, "<|channel|>final<|constrain|>json<|message|>{}<|return|>")
    parser, _ = parse(tok, ids)
    assert fields(parser.messages) == [("assistant", "final", None, "<|constrain|>json", "{}")]
    ids = encode(tok, "<|channel|>final <|constrain|>json<|message|>{}<|return|>")
    assert fields(parse(tok, ids)[0].messages) == [
        ("assistant", "final", None, "<|constrain|>json", "{}")]


@pytest.mark.parametrize("text", [
    " to=functions.get_weather<|channel|>commentary <|constrain|>json<|message|>{\"c\": 1}<|call|>",
    "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{\"c\": 1}<|call|>",
])
def test_tool_call_in_both_header_orders(tok, text):
    parser, events = parse(tok, encode(tok, text))
    assert fields(parser.messages) == oracle(encode(tok, text))
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert calls == [ToolCall(0, "functions.get_weather", '{"c": 1}', "<|constrain|>json")]
    assert parser.messages[0].end_token == "<|call|>"
    assert parser.warnings == []


def test_prompt_role_repeated_by_the_model(tok):
    text = "assistant<|channel|>final<|message|>hi<|return|>"
    parser = _run(tok, text)
    assert fields(parser.messages) == oracle(encode(tok, text))
    assert fields(parser.messages) == [("assistant", "final", None, None, "hi")]


def test_current_channel_and_recipient(tok):
    parser = HarmonyStreamParser(tok)
    parser.feed_many(encode(tok, "<|channel|>commentary to=functions.f<|message|>{"))
    assert (parser.current_channel, parser.current_recipient) == ("commentary", "functions.f")
    assert parser.current_role == "assistant"
    parser.feed(SPECIALS["call"])
    assert (parser.current_channel, parser.current_recipient) == (None, None)


# ---- UTF-8 across tokens ---------------------------------------------------------------------
def test_emoji_split_into_byte_tokens(tok, byte_ids):
    parser = HarmonyStreamParser(tok)
    parser.feed_many(encode(tok, "<|channel|>final<|message|>"))
    emoji = "😀".encode("utf-8")
    assert len(emoji) == 4
    assert [parser.feed(byte_ids[b]) for b in emoji[:3]] == [[], [], []]
    assert parser.feed(byte_ids[emoji[3]]) == [TextDelta(0, "final", None, "😀")]
    parser.feed(SPECIALS["end"])
    assert parser.messages[0].text == "😀"


@pytest.mark.parametrize("raw, expected", [
    (b"a\xffb", "a\ufffdb"),                    # a byte that never occurs in UTF-8
    (b"\x80x", "\ufffdx"),                      # a lone continuation byte
    (b"\xf0\x9f" + b"A", "\ufffdA"),            # a character cut short mid-stream
    (b"ok\xe4\xb8", "ok\ufffd"),                # a character cut short by the end token
    (b"\xed\xa0\x80", "\ufffd\ufffd\ufffd"),    # an encoded surrogate
])
def test_invalid_bytes_become_replacement_characters(tok, byte_ids, raw, expected):
    ids = encode(tok, "<|channel|>final<|message|>") + [byte_ids[b] for b in raw] + [200007]
    parser, events = parse(tok, ids)
    assert parser.messages[0].text == expected
    assert fields(parser.messages) == oracle(ids)
    check_events(parser, events)


def test_incomplete_character_at_cut_off(tok, byte_ids):
    ids = encode(tok, "<|channel|>final<|message|>hi") + [byte_ids[0xF0], byte_ids[0x9F]]
    parser, events = parse(tok, ids)
    assert parser.messages[0].text == "hi\ufffd"
    assert parser.messages[0].end_token is None
    assert fields(parser.messages) == oracle(ids)
    assert any("cut off" in w for w in parser.warnings)


# ---- malformed output: best effort plus a warning ----------------------------------------------
def _run(tok, text, start_role="assistant", extra=()):
    parser, events = parse(tok, encode(tok, text) + list(extra), start_role)
    check_events(parser, events)
    return parser


def test_malformed_header_words(tok):
    parser = _run(tok, "<|channel|>commentary to=functions.f junk more words<|message|>x<|end|>")
    assert fields(parser.messages) == [("assistant", "commentary", "functions.f", None, "x")]
    assert any("junk more words" in w for w in parser.warnings)
    parser = _run(tok, "<|channel|><|message|>x<|end|>")
    assert fields(parser.messages) == [("assistant", None, None, None, "x")]
    assert any("no channel name" in w for w in parser.warnings)


def test_unknown_role(tok):
    parser = _run(tok, "<|start|>robot<|channel|>final<|message|>beep<|end|>", start_role=None)
    assert fields(parser.messages) == [("robot", "final", None, None, "beep")]
    assert any("unknown role 'robot'" in w for w in parser.warnings)


def test_missing_message_token(tok):
    parser = _run(tok, "<|channel|>final Hello  there<|end|>")
    assert fields(parser.messages) == [("assistant", "final", None, None, "Hello  there")]
    assert parser.messages[0].end_token == "<|end|>"
    assert any("without <|message|>" in w for w in parser.warnings)
    parser = _run(tok, "<|channel|>commentary to=functions.f {\"a\": 1}<|call|>")
    assert fields(parser.messages) == [("assistant", "commentary", "functions.f", None, '{"a": 1}')]


def test_header_that_never_ends_is_streamed(tok):
    words = " word" * (MAX_HEADER_TOKENS + 20)
    parser, events = parse(tok, encode(tok, "<|channel|>final" + words))
    assert fields(parser.messages) == [("assistant", "final", None, None, words.strip())]
    assert sum(isinstance(e, TextDelta) for e in events) > 10  # streamed, not held to the end
    check_events(parser, events)


@pytest.mark.parametrize("stray", ["<|message|>", "<|constrain|>", "<|startoftext|>",
                                   "<|reserved_200015|>", "<|reserved_201087|>"])
def test_stray_specials_in_content_are_dropped(tok, stray):
    parser = _run(tok, f"<|channel|>final<|message|>a{stray}b<|return|>")
    assert fields(parser.messages) == [("assistant", "final", None, None, "ab")]
    assert any(stray in w for w in parser.warnings)


def test_reserved_special_in_header_is_dropped(tok):
    parser = _run(tok, "<|channel|>fin<|reserved_200015|>al<|message|>x<|end|>")
    assert fields(parser.messages) == [("assistant", "final", None, None, "x")]
    assert any("<|reserved_200015|>" in w for w in parser.warnings)


def test_start_without_preceding_end(tok):
    parser = _run(tok, "<|channel|>analysis<|message|>think<|start|>assistant<|channel|>final"
                       "<|message|>answer<|return|>")
    assert fields(parser.messages) == [("assistant", "analysis", None, None, "think"),
                                       ("assistant", "final", None, None, "answer")]
    assert [m.end_token for m in parser.messages] == [None, "<|return|>"]
    assert any("<|start|>" in w for w in parser.warnings)


def test_channel_inside_content_starts_a_message(tok):
    parser = _run(tok, "<|channel|>analysis<|message|>think<|channel|>final<|message|>ok<|end|>")
    assert fields(parser.messages) == [("assistant", "analysis", None, None, "think"),
                                       ("assistant", "final", None, None, "ok")]


def test_text_and_message_token_outside_messages(tok):
    parser = _run(tok, "<|channel|>final<|message|>a<|end|>stray text<|start|>assistant"
                       "<|channel|>final<|message|>b<|end|><|message|>c<|end|><|end|>")
    assert [m.text for m in parser.messages] == ["a", "stray text", "b", "c"]
    assert len(parser.warnings) >= 3


def test_cut_off_at_token_limit(tok):
    parser = _run(tok, "<|channel|>final<|message|>The answer is")
    assert fields(parser.messages) == [("assistant", "final", None, None, "The answer is")]
    assert parser.messages[0].end_token is None
    parser = _run(tok, "<|channel|>analysis<|message|>x<|end|><|start|>assistant<|channel|>fi")
    assert fields(parser.messages)[1] == ("assistant", "fi", None, None, "")
    assert any("header" in w for w in parser.warnings)
    parser = _run(tok, "<|channel|>final<|message|>x<|end|><|start|>")
    assert len(parser.messages) == 1 and parser.warnings


def test_cut_off_tool_call_is_not_a_tool_call(tok):
    parser, events = parse(tok, encode(tok, "<|channel|>commentary to=functions.f<|message|>{\"a"))
    assert parser.messages[0].recipient == "functions.f"
    assert not any(isinstance(e, ToolCall) for e in events)


def test_endoftext_and_empty_stream(tok):
    parser = _run(tok, "<|channel|>final<|message|>x<|endoftext|>")
    assert fields(parser.messages) == [("assistant", "final", None, None, "x")]
    assert parser.messages[0].end_token is None
    parser = _run(tok, "")
    assert parser.messages == [] and parser.warnings == []
    parser = _run(tok, "<|channel|>final<|message|>x<|end|><|endoftext|>")
    assert parser.messages[0].end_token == "<|end|>" and parser.warnings == []


def test_out_of_vocabulary_ids_and_programming_errors(tok):
    parser = HarmonyStreamParser(tok)
    assert parser.feed(201089) == [] and parser.feed(-1) == []  # in a header: ignored
    assert parser.feed(201088) == []  # <|reserved_201088|>: a stray special, dropped
    assert len(parser.warnings) == 3
    with pytest.raises(TypeError):
        parser.feed("hello")
    with pytest.raises(TypeError):
        parser.feed(1.0)
    parser.feed_many(encode(tok, "<|channel|>final<|message|>"))
    with pytest.raises(TypeError):
        parser.feed(None)
    # in content, as openai-harmony: an id outside the vocabulary is U+FFFD (was: ignored)
    assert [e.text for e in parser.feed(-5) + parser.feed(10**9)] == ["\ufffd", "\ufffd"]


@pytest.mark.parametrize("oov", [201089, 300000, 2**31])
def test_out_of_vocabulary_id_in_content_is_a_replacement_character_as_in_harmony(tok, oov):
    ids = encode(tok, "<|channel|>final<|message|>ab") + [oov]
    parser, events = parse(tok, ids)
    check_events(parser, events)
    assert fields(parser.messages) == oracle(ids)  # [("assistant", "final", …, "ab\ufffd")]
    assert parser.messages[0].text == "ab\ufffd"


@pytest.mark.parametrize("header", ["browser.search to=assistant<|channel|>commentary",
                                    "functions.get_weather to=assistant<|channel|>commentary",
                                    "python to=assistant", "tool to=assistant", "user"])
def test_author_name_of_a_tool_message_is_kept_as_in_harmony(tok, header):
    ids = encode(tok, f"<|start|>{header}<|message|>result<|end|>")
    parser, events = parse(tok, ids, start_role=None)
    expected = StreamableParser(load_harmony_encoding(), role=None)
    for token_id in ids:
        expected.process(token_id)
    want = [(m.author.role.value, m.author.name, m.recipient) for m in expected.messages]
    assert [(m.role, m.name, m.recipient) for m in parser.messages] == want


# ---- arbitrary token sequences never raise --------------------------------------------------
_token = st.one_of(
    st.sampled_from(list(SPECIALS.values())),
    st.integers(200000, 201087),            # reserved and named specials
    st.integers(0, 199997),                 # any text token, incl. byte-level pieces
    st.sampled_from([220, 198, 24912, 2375, 17196, 173781, 12194, 28, 935, 14032]),
    st.integers(-3, 3) | st.integers(201085, 201092),  # ids at and beyond the edges
)


@settings(HYPO, max_examples=400)
@given(ids=st.lists(_token, max_size=60), start_role=st.sampled_from(["assistant", None]),
       prefix=st.sampled_from(["", "<|channel|>analysis<|message|>", "<|start|>assistant",
                               " to=functions.f<|channel|>commentary json"]))
def test_random_tokens_never_raise(tok, ids, start_role, prefix):
    parser, events = parse(tok, encode(tok, prefix) + ids, start_role)
    check_events(parser, events)


@settings(HYPO, max_examples=150)
@given(data=st.data())
def test_truncated_well_formed_streams_never_raise(tok, byte_ids, data):
    ids = data.draw(well_formed(tok, byte_ids))
    cut = data.draw(st.integers(0, len(ids)))
    parser, events = parse(tok, ids[:cut])
    check_events(parser, events)
