"""Harmony render and parse throughput: gptoss beside openai-harmony, in the same run.

    python benchmarks/harmony_speed.py [--repeat 5]

render: a realistic multi-turn conversation (system with tools and reasoning effort, developer
        instructions and function tools, user, assistant analysis, a tool call and its result,
        final answer, a follow-up) rendered for completion. gptoss uses
        `gptoss.harmony.render.render_for_completion` when that module exists; until then it
        falls back to openai-harmony's rendering decoded to text and re-encoded by gptoss's
        tokenizer (the row label says which ran).
parse:  a long completion (analysis, a tool call in each header order, a final answer; English,
        code, CJK and emoji) fed one token at a time. gptoss: `HarmonyStreamParser.feed`, which
        returns each text delta; openai-harmony: `StreamableParser.process` plus reading
        `last_content_delta`, the per-token work a streaming server does.
Each figure is the best of `--repeat` runs. Both sides' outputs are checked to agree first.
"""
from __future__ import annotations

import argparse
import time

from openai_harmony import (Author, Conversation, DeveloperContent, Message, ReasoningEffort,
                            Role, StreamableParser, SystemContent, ToolDescription)

from gptoss.harmony.parser import HarmonyStreamParser
from gptoss.harmony.tokenizer import get_tokenizer, load_harmony_encoding

WEATHER = ToolDescription.new("get_weather", "Current weather for a city.", parameters={
    "type": "object", "required": ["city"],
    "properties": {"city": {"type": "string", "description": "City name"},
                   "unit": {"type": "string", "enum": ["celsius", "fahrenheit"],
                            "default": "celsius"}}})
SEARCH = ToolDescription.new("search_docs", "Search the internal documentation.", parameters={
    "type": "object", "properties": {"query": {"type": "string"},
                                     "limit": {"type": "integer", "default": 5}}})
PARAGRAPH = ("The quick brown fox jumps over the lazy dog while the parser streams every token. "
             "def f(x):\n    return {\"key\": [x, 2.5, None]}  # code\n"
             "中文字符测试，日本語のテキスト、한국어 문장. Emoji 😀👍🏽👨\u200d👩\u200d👧 and math ∑∫√. ")


def conversation() -> Conversation:
    system = (SystemContent.new().with_reasoning_effort(ReasoningEffort.HIGH)
              .with_conversation_start_date("2025-06-28").with_browser_tool())
    developer = (DeveloperContent.new().with_instructions("Answer briefly. " * 20)
                 .with_function_tools([WEATHER, SEARCH]))
    call = (Message.from_role_and_content(Role.ASSISTANT, '{"city": "Tokyo"}')
            .with_channel("commentary").with_recipient("functions.get_weather")
            .with_content_type("<|constrain|>json"))
    result = (Message.from_author_and_content(Author.new(Role.TOOL, "functions.get_weather"),
                                              '{"temp_c": 21, "sky": "clear"}')
              .with_channel("commentary").with_recipient("assistant"))
    return Conversation.from_messages([
        Message.from_role_and_content(Role.SYSTEM, system),
        Message.from_role_and_content(Role.DEVELOPER, developer),
        Message.from_role_and_content(Role.USER, "What's the weather in Tokyo? " + PARAGRAPH),
        Message.from_role_and_content(Role.ASSISTANT, PARAGRAPH * 3).with_channel("analysis"),
        call, result,
        Message.from_role_and_content(Role.ASSISTANT, PARAGRAPH * 2).with_channel("final"),
        Message.from_role_and_content(Role.USER, "And tomorrow? " + PARAGRAPH),
    ])


def gptoss_renderer(tok, enc):
    """(label, conversation → ids): the real renderer when present, else the fallback."""
    try:
        from gptoss.harmony.render import render_for_completion
    except ImportError:
        def fallback(conv):
            text = enc.decode(enc.render_conversation_for_completion(conv, Role.ASSISTANT))
            return tok.encode(text, allowed_special="all")
        return "render (fallback: harmony text -> gptoss encode)", fallback
    return "render", render_for_completion


def completion_ids(tok) -> list[int]:
    text = ("<|channel|>analysis<|message|>" + PARAGRAPH * 60 + "<|end|>"
            "<|start|>assistant to=functions.get_weather<|channel|>commentary <|constrain|>json"
            '<|message|>{"city": "Tokyo", "unit": "celsius"}<|call|>'
            "<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>"
            '{"temp_c": 21}<|end|>'
            "<|start|>assistant<|channel|>commentary to=functions.search_docs <|constrain|>json"
            '<|message|>{"query": "weather"}<|call|>'
            "<|start|>assistant<|channel|>final<|message|>" + PARAGRAPH * 60 + "<|return|>")
    return tok.encode(text, allowed_special="all")


def best_seconds(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def parse_gptoss(tok, ids):
    parser = HarmonyStreamParser(tok)
    feed = parser.feed
    for token_id in ids:
        feed(token_id)
    parser.close()
    return [(m.role, m.channel, m.recipient, m.content_type, m.text) for m in parser.messages]


def parse_harmony(enc, ids, read_delta=True):
    parser = StreamableParser(enc, role=Role.ASSISTANT)
    for token_id in ids:
        parser.process(token_id)
        if read_delta:
            parser.last_content_delta
    parser.process_eos()
    return [(m.author.role.value, m.channel, m.recipient, m.content_type, m.content[0].text)
            for m in parser.messages]


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    args.add_argument("--repeat", type=int, default=5)
    repeat = args.parse_args().repeat
    tok, enc = get_tokenizer(), load_harmony_encoding()

    conv = conversation()
    label, render = gptoss_renderer(tok, enc)
    peer_ids = enc.render_conversation_for_completion(conv, Role.ASSISTANT)
    assert render(conv) == peer_ids, "gptoss and openai-harmony render different tokens"
    loops = 20
    ours = best_seconds(lambda: [render(conv) for _ in range(loops)], repeat)
    peer = best_seconds(lambda: [enc.render_conversation_for_completion(conv, Role.ASSISTANT)
                                 for _ in range(loops)], repeat)
    n = len(peer_ids) * loops
    rows = [(label, n / ours, n / peer, ours / n * 1e6)]

    ids = completion_ids(tok)
    assert parse_gptoss(tok, ids) == parse_harmony(enc, ids), "parsed messages differ"
    ours = best_seconds(lambda: parse_gptoss(tok, ids), repeat)
    peer = best_seconds(lambda: parse_harmony(enc, ids), repeat)
    bare = best_seconds(lambda: parse_harmony(enc, ids, read_delta=False), repeat)
    rows.append(("parse", len(ids) / ours, len(ids) / peer, ours / len(ids) * 1e6))

    print(f"conversation: {len(peer_ids)} tokens; completion: {len(ids)} tokens; best of {repeat}")
    print(f"| {'':<50} | {'gptoss tok/s':>13} | {'openai-harmony tok/s':>20} "
          f"| {'gptoss µs/token':>15} |")
    print(f"|{'-' * 52}|{'-' * 14}:|{'-' * 21}:|{'-' * 16}:|")
    for name, ours_tps, peer_tps, us in rows:
        print(f"| {name:<50} | {ours_tps:>13,.0f} | {peer_tps:>20,.0f} | {us:>15.3f} |")
    print(f"(openai-harmony parse without reading deltas: {len(ids) / bare:,.0f} tok/s)")


if __name__ == "__main__":
    main()
