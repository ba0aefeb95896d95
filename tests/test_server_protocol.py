"""The wire models against the official `openai` client's own types (the oracle for shapes)."""
from __future__ import annotations

import pytest
from openai.types.chat import ChatCompletion as OAChatCompletion
from openai.types.chat import ChatCompletionChunk as OAChunk
from openai.types.responses import Response as OAResponse
from pydantic import ValidationError

from gptoss.server import protocol as p
from gptoss.server import responses_protocol as rp


def test_chat_completion_parses_as_openai_type():
    call = p.ToolCall(id="call_1", function=p.FunctionCall(name="f", arguments='{"a":1}'))
    logprob = p.TokenLogprob(token="Hi", logprob=-0.5, bytes=[72, 105],
                             top_logprobs=[p.TopLogprob(token="Hi", logprob=-0.5, bytes=[72, 105])])
    ours = p.ChatCompletion(
        id="chatcmpl-1", model="m",
        choices=[p.Choice(index=0, finish_reason="tool_calls",
                          message=p.AssistantMessage(content=None, reasoning_content="think",
                                                     reasoning="think", tool_calls=[call]),
                          logprobs=p.ChoiceLogprobs(content=[logprob]))],
        usage=p.Usage(prompt_tokens=3, completion_tokens=4, total_tokens=7,
                      completion_tokens_details=p.CompletionTokensDetails(reasoning_tokens=2)))
    theirs = OAChatCompletion.model_validate(ours.model_dump())
    assert theirs.choices[0].message.tool_calls[0].function.arguments == '{"a":1}'
    assert theirs.choices[0].message.reasoning_content == "think"  # extra field kept
    assert theirs.usage.completion_tokens_details.reasoning_tokens == 2
    assert theirs.choices[0].logprobs.content[0].top_logprobs[0].token == "Hi"


def test_chunk_parses_as_openai_type():
    chunk = p.ChatCompletionChunk(
        id="c", created=1, model="m",
        choices=[p.ChunkChoice(index=0, delta=p.Delta(tool_calls=[p.DeltaToolCall(
            index=0, id="call_1", type="function", function=p.DeltaFunction(name="f", arguments=""))]))])
    theirs = OAChunk.model_validate(chunk.model_dump(exclude_none=True))
    assert theirs.choices[0].delta.tool_calls[0].function.name == "f"


def test_response_object_parses_as_openai_type():
    ours = rp.ResponseObject(
        id="resp_1", status="completed", model="m",
        output=[rp.OutputReasoning(id="rs_1", content=[rp.ReasoningText(text="hmm")]),
                rp.OutputFunctionCall(id="fc_1", call_id="call_1", name="f", arguments="{}"),
                rp.OutputMessage(id="msg_1", content=[rp.OutputText(text="hello")])],
        usage=rp.ResponseUsage(input_tokens=5, output_tokens=6, total_tokens=11))
    theirs = OAResponse.model_validate(ours.model_dump())
    assert theirs.output_text == "hello"
    assert theirs.output[1].call_id == "call_1"
    assert theirs.output[0].content[0].text == "hmm"
    assert theirs.usage.total_tokens == 11


def _chat(**kw):
    return p.ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], **kw})


@pytest.mark.parametrize("bad", [
    {"messages": []},
    {"messages": [{"role": "wizard", "content": "x"}]},
    {"temperature": 3},
    {"top_p": 0},
    {"n": 0},
    {"max_tokens": 0},
    {"top_logprobs": 5},                      # without logprobs
    {"logprobs": True, "top_logprobs": 21},
    {"stop": ["a", "b", "c", "d", "e"]},
    {"stream_options": {"include_usage": True}},  # without stream
    {"tool_choice": "sometimes"},
    {"response_format": {"type": "json_schema"}},
    {"tools": [{"type": "function", "function": {"name": "bad name!"}}]},
])
def test_invalid_chat_requests_are_rejected(bad):
    with pytest.raises(ValidationError):
        _chat(**bad)


def test_chat_request_fields():
    req = _chat(stop="END", max_completion_tokens=7, max_tokens=9, user="ignored",
                tool_choice={"type": "function", "function": {"name": "f"}},
                response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}})
    assert req.stop_list == ["END"] and req.token_limit == 7
    assert req.tool_choice.function.name == "f"
    assert req.response_format.json_schema.schema_ == {"type": "object"}


def test_responses_request_items():
    req = rp.ResponsesRequest.model_validate({"model": "m", "input": [
        {"role": "user", "content": "hi"},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "42"},
        {"type": "reasoning", "id": "rs", "summary": [], "content": [{"type": "reasoning_text", "text": "t"}]},
    ], "text": {"format": {"type": "json_schema", "name": "n", "schema": {"type": "object"}}}})
    kinds = [type(item).__name__ for item in req.input]
    assert kinds == ["MessageItem", "FunctionCallItem", "FunctionCallOutputItem", "ReasoningItem"]
    assert req.text.format.schema_ == {"type": "object"} and req.store is True
    with pytest.raises(ValidationError):
        rp.ResponsesRequest.model_validate({"model": "m", "input": [{"type": "function_call"}]})
    with pytest.raises(ValidationError):
        rp.ResponsesRequest.model_validate({"model": "m", "input": "x", "tools": [{"type": "function"}]})
