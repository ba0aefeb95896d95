"""Training data: both record forms, the reply's reasoning kept, masks, bad records."""
import json

import pytest

from gptoss.finetune.data import DataError, load_jsonl
from gptoss.harmony.tokenizer import load_harmony_encoding

TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object",
                                                                        "properties": {}}}}]
RECORDS = [
    {"messages": [{"role": "user", "content": "Hi"},
                  {"role": "assistant", "reasoning_content": "think", "content": "Hello"}]},
    {"harmony": [{"role": "user", "content": "x"},
                 {"role": "assistant", "channel": "analysis", "content": "a"},
                 {"role": "assistant", "channel": "final", "content": "b"}]},
    {"messages": [{"role": "user", "content": "w"},
                  {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                                        "function": {"name": "f",
                                                                     "arguments": "{}"}}]},
                  {"role": "tool", "tool_call_id": "c1", "content": "42"},
                  {"role": "assistant", "content": "done"}], "tools": TOOLS},
]


def learned(example) -> str:
    return load_harmony_encoding().decode([t for t, m in zip(example.tokens, example.mask) if m])


@pytest.fixture()
def data_file(tmp_path):
    path = tmp_path / "d.jsonl"
    lines = [json.dumps(RECORDS[0]), "not json", json.dumps(RECORDS[1]), "",
             json.dumps({"messages": [{"role": "user", "content": "no reply"}]}),
             json.dumps(RECORDS[2]), json.dumps({"other": 1})]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_records_render_with_the_reply_learned(data_file):
    data = load_jsonl(data_file)
    assert [e.line for e in data.examples] == [1, 3, 6]
    texts = [learned(e) for e in data.examples]
    # the reply's reasoning is kept (a prompt would drop it once the final answer follows)
    assert texts[0] == ("<|channel|>analysis<|message|>think<|end|><|start|>assistant"
                        "<|channel|>final<|message|>Hello<|return|>")
    assert texts[1].endswith("<|channel|>final<|message|>b<|return|>")
    # the tool call is learned, the tool's result is not
    assert texts[2].startswith(" to=functions.f<|channel|>commentary")
    assert "42" not in texts[2] and texts[2].endswith("<|message|>done<|return|>")
    assert "Current date" not in load_harmony_encoding().decode(list(data.examples[0].tokens))


def test_final_only_mask(data_file):
    texts = [learned(e) for e in load_jsonl(data_file, train_on="final").examples]
    # after an analysis message the model writes the final message's header itself
    assert texts[0] == "<|start|>assistant<|channel|>final<|message|>Hello<|return|>"
    assert "analysis" not in texts[1] and "commentary" not in texts[2]


def test_bad_records_are_reported_by_line(data_file):
    data = load_jsonl(data_file)
    assert [(b.line, b.reason.split(" ")[0]) for b in data.bad] == [
        (2, "invalid"), (5, "nothing"), (7, "expected")]
    assert "skipped 3 bad records" in data.summary()
    with pytest.raises(DataError, match=r"line 2: invalid JSON"):
        load_jsonl(data_file, on_error="raise")
    with pytest.raises(DataError, match="longer than max_length"):
        load_jsonl(data_file, max_length=10, on_error="raise")


def test_no_usable_record_is_an_error(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("[1]\n")
    with pytest.raises(DataError, match="no usable conversations.*line 1"):
        load_jsonl(path)
    with pytest.raises(DataError, match="cannot read"):
        load_jsonl(tmp_path / "missing.jsonl")
