"""Grammar-constrained harmony replies, checked by independent oracles: openai-harmony's parser
reads the generated tokens, `jsonschema` validates the JSON, and openai-harmony's own rendering
of a reply must be accepted by the grammar. Random logits stand in for a model."""
from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest
import torch
from openai_harmony import Message, RenderOptions, Role

from gptoss.engine.constraints import (
    CALL, RETURN, VOCAB_SIZE, ConstraintError, ConstraintSpec, ToolSchema, compiler_for)
from gptoss.harmony.tokenizer import get_tokenizer, load_harmony_encoding

STRICT = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "tags": {"type": "array", "items": {"type": "string", "enum": ["red", "green", "blue"]},
                 "maxItems": 3},
        "address": {"type": "object", "properties": {"city": {"type": "string"}},
                    "required": ["city"], "additionalProperties": False},
        "score": {"type": ["number", "null"]},
    },
    "required": ["name", "age", "tags", "address", "score"],
    "additionalProperties": False,
}
WEATHER = {"type": "object", "properties": {"location": {"type": "string"},
                                            "unit": {"type": "string", "enum": ["c", "f"]}},
           "required": ["location", "unit"], "additionalProperties": False}
RUNS, MAX_TOKENS = 20, 96


@pytest.fixture(scope="module")
def compiler():
    return compiler_for(get_tokenizer())


def generate(constraint, max_tokens: int, seed: int, prefix: list[int] = ()) -> list[int]:
    """Greedy decoding of iid random logits [V] (a random choice among the allowed tokens)
    through the constraint, after `prefix`, until a stop token or the limit."""
    rng = np.random.default_rng(seed)
    out: list[int] = list(prefix)
    while len(out) < max_tokens:
        logits = constraint(out, torch.from_numpy(rng.standard_normal(VOCAB_SIZE, dtype=np.float32)))
        out.append(int(torch.argmax(logits)))
        if out[-1] in (RETURN, CALL):
            break
    return out


def parse(tokens: list[int]):
    return load_harmony_encoding().parse_messages_from_completion_tokens(tokens, role=Role.ASSISTANT)


def test_strict_schema_random_logits_always_valid(compiler):
    for seed in range(RUNS):
        spec = ConstraintSpec(max_tokens=MAX_TOKENS, final_schema=STRICT)
        tokens = generate(compiler.compile(spec), MAX_TOKENS, seed)
        assert len(tokens) <= MAX_TOKENS and tokens[-1] == RETURN
        final = parse(tokens)[-1]
        assert final.channel == "final" and final.recipient is None
        jsonschema.validate(json.loads(final.content[0].text), STRICT)


@pytest.mark.parametrize("named", [False, True])
def test_required_tool_call_random_logits_always_well_formed(compiler, named):
    tools = (ToolSchema("get_weather", WEATHER),) if named else (
        ToolSchema("get_weather", WEATHER), ToolSchema("get_time", None), ToolSchema("lookup", STRICT))
    schemas = {"get_weather": WEATHER, "get_time": {"type": "object"}, "lookup": STRICT}
    seen = set()
    for seed in range(RUNS):
        tokens = generate(compiler.compile(ConstraintSpec(max_tokens=MAX_TOKENS, tools=tools)),
                          MAX_TOKENS, seed)
        assert len(tokens) <= MAX_TOKENS and tokens[-1] == CALL
        call = parse(tokens)[-1]
        name = call.recipient.removeprefix("functions.")
        assert call.channel == "commentary" and call.content_type == "<|constrain|>json"
        jsonschema.validate(json.loads(call.content[0].text), schemas[name])
        seen.add(name)
    assert seen == ({"get_weather"} if named else set(schemas))  # every allowed tool reachable


def test_reasoning_budget_closes_analysis_and_text_is_free(compiler):
    spec = ConstraintSpec(max_tokens=200, final_schema=WEATHER, max_reasoning_tokens=7)
    constraint = compiler.compile(spec)
    assert constraint.reasoning_budget == 7
    prefix = get_tokenizer().encode("<|channel|>analysis<|message|>", allowed_special="all")
    tokens = generate(constraint, 200, seed=1, prefix=prefix)
    messages = parse(tokens)
    assert messages[0].channel == "analysis" and messages[-1].channel == "final"
    assert tokens.index(200007) - len(prefix) <= 7  # <|end|> after at most 7 text tokens
    jsonschema.validate(json.loads(messages[-1].content[0].text), WEATHER)
    # the analysis text is not constrained to the schema: plain prose is accepted there
    prose = get_tokenizer().encode("Let me think; not JSON!", allowed_special="all")
    c = compiler.compile(ConstraintSpec(max_tokens=200, final_schema=WEATHER, max_reasoning_tokens=50))
    assert c.matcher.validate_tokens(prefix + prose) == len(prefix + prose)


def _reply_tokens(message: Message) -> list[int]:
    """openai-harmony's rendering of an assistant message, minus the prompt's `<|start|>assistant`."""
    ids = load_harmony_encoding().render(message, RenderOptions(conversation_has_function_tools=True))
    return ids[2:]


def test_grammar_accepts_harmony_rendered_replies(compiler):
    tok = get_tokenizer()
    answer = {"location": "Paris", "unit": "c"}
    call = (Message.from_role_and_content(Role.ASSISTANT, json.dumps(answer))
            .with_channel("commentary").with_recipient("functions.get_weather")
            .with_content_type("<|constrain|>json"))
    c = compiler.compile(ConstraintSpec(max_tokens=100, tools=(ToolSchema("get_weather", WEATHER),)))
    assert c.matcher.consume_tokens(_reply_tokens(call)) and c.done
    # the model's own header order, with an analysis message first
    text = ('<|channel|>analysis<|message|>Need weather.<|end|><|start|>assistant<|channel|>commentary'
            ' to=functions.get_weather <|constrain|>json<|message|>{"location":"Oslo","unit":"f"}<|call|>')
    c = compiler.compile(ConstraintSpec(max_tokens=100, tools=(ToolSchema("get_weather", WEATHER),)))
    assert c.matcher.consume_tokens(tok.encode(text, allowed_special="all")) and c.done
    # a final answer (harmony ends a rendered final with <|end|>; generation ends with <|return|>)
    final = _reply_tokens(Message.from_role_and_content(Role.ASSISTANT, json.dumps(answer)).with_channel("final"))
    c = compiler.compile(ConstraintSpec(max_tokens=100, final_schema=WEATHER))
    assert c.matcher.consume_tokens(final[:-1] + [RETURN]) and c.done
    # but not a schema violation, nor a call of an undeclared tool
    bad = tok.encode('<|channel|>final<|message|>{"location":"Oslo","unit":"k"}<|return|>', allowed_special="all")
    c = compiler.compile(ConstraintSpec(max_tokens=100, final_schema=WEATHER))
    assert c.matcher.validate_tokens(bad) < len(bad)


def test_either_final_or_tool_call(compiler):
    spec = ConstraintSpec(max_tokens=MAX_TOKENS, final_schema=WEATHER, tools=(ToolSchema("get_time"),))
    kinds = set()
    for seed in range(8):
        last = parse(generate(compiler.compile(spec), MAX_TOKENS, seed))[-1]
        kinds.add(last.channel)
        jsonschema.validate(json.loads(last.content[0].text),
                            WEATHER if last.channel == "final" else {"type": "object"})
    assert kinds <= {"final", "commentary"} and kinds


def test_mask_blocks_reserved_range_and_ids_beyond_vocab(compiler):
    c = compiler.compile(ConstraintSpec(max_tokens=50, final_schema=WEATHER))
    logits = c(torch.zeros(0, dtype=torch.long).tolist(), torch.zeros(VOCAB_SIZE + 64))
    allowed = torch.isfinite(logits).nonzero().flatten().tolist()
    assert allowed == [200005]  # <|channel|> (or ` to=`: not allowed without tools)
    c = compiler.compile(ConstraintSpec(max_tokens=50, final_schema=WEATHER))
    prefix = get_tokenizer().encode("<|channel|>analysis<|message|>", allowed_special="all")
    logits = c(prefix, torch.zeros(VOCAB_SIZE + 64))
    finite = torch.isfinite(logits)
    assert finite[:199998].all() and finite[200007]          # any text token, or <|end|>
    assert not finite[199998:200007].any() and not finite[200008:].any()


def test_off_grammar_token_ends_the_request(compiler):
    c = compiler.compile(ConstraintSpec(max_tokens=50, final_schema=WEATHER))
    logits = c([24912], torch.zeros(VOCAB_SIZE))  # "hello" where <|channel|> was required
    assert c.error and "24912" in c.error
    assert torch.isfinite(logits).nonzero().flatten().tolist() == [RETURN, CALL]


def test_errors_are_clear(compiler):
    with pytest.raises(ConstraintError, match="too small"):
        compiler.compile(ConstraintSpec(max_tokens=5, final_schema=STRICT))
    with pytest.raises(ConstraintError, match="schema"):
        compiler.compile(ConstraintSpec(max_tokens=50, final_schema={"type": "object", "required": 3}))
    with pytest.raises(ConstraintError, match="tool name"):
        ConstraintSpec(max_tokens=50, tools=(ToolSchema("bad name"),))
    with pytest.raises(ConstraintError):
        ConstraintSpec(max_tokens=50)
