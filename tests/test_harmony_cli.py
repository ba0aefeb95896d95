"""`gptoss tokenize` and `gptoss render` through the real dispatcher (`gptoss.cli.main`)."""
from __future__ import annotations

import io
import json

import pytest
from openai_harmony import Conversation, Message, ReasoningEffort, Role, SystemContent

from gptoss.cli import main
from gptoss.harmony.tokenizer import load_harmony_encoding

ENC = load_harmony_encoding()


def run(monkeypatch, capsys, argv, stdin: str | bytes):
    if isinstance(stdin, bytes):  # a real byte stream, as a terminal or a pipe gives
        stream = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    else:
        stream = io.StringIO(stdin)
    monkeypatch.setattr("sys.stdin", stream)
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_tokenize_hello_world(monkeypatch, capsys):
    code, out, err = run(monkeypatch, capsys, ["tokenize"], "hello world")
    assert (code, json.loads(out), err) == (0, [24912, 2375], "")


def test_tokenize_special_text(monkeypatch, capsys):
    text = "<|start|>assistant<|channel|>final<|message|>Hi<|end|>"
    code, out, _ = run(monkeypatch, capsys, ["tokenize", "--allow-special"], text)
    assert code == 0 and json.loads(out) == [200006, 173781, 200005, 17196, 200008, 12194, 200007]
    code, out, _ = run(monkeypatch, capsys, ["tokenize"], text)
    assert code == 0 and json.loads(out) == ENC.encode(text, disallowed_special=())


def test_tokenize_reads_bytes_exactly(monkeypatch, capsys):
    text = "a\r\nb ✓ 😊\n"
    code, out, _ = run(monkeypatch, capsys, ["tokenize"], text.encode())
    assert code == 0 and json.loads(out) == ENC.encode(text)


def test_tokenize_rejects_invalid_utf8(monkeypatch, capsys):
    code, out, err = run(monkeypatch, capsys, ["tokenize"], b"ok \xff")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "not valid UTF-8" in err


def test_render_request(monkeypatch, capsys):
    request = {"model": "gpt-oss-20b", "stream": False, "current_date": "2025-08-05",
               "reasoning_effort": "low", "messages": [{"role": "user", "content": "What is 2 + 2?"}]}
    code, out, err = run(monkeypatch, capsys, ["render"], json.dumps(request))
    assert code == 0 and err == ""
    result = json.loads(out)
    system = (SystemContent.new().with_reasoning_effort(ReasoningEffort.LOW)
              .with_conversation_start_date("2025-08-05"))
    expected = ENC.render_conversation_for_completion(Conversation.from_messages([
        Message.from_role_and_content(Role.SYSTEM, system),
        Message.from_role_and_content(Role.USER, "What is 2 + 2?")]), Role.ASSISTANT)
    assert result["token_ids"] == expected
    assert result["text"] == ENC.decode_utf8(expected)
    assert result["text"].endswith("<|start|>user<|message|>What is 2 + 2?<|end|><|start|>assistant")


@pytest.mark.parametrize("stdin, match", [
    ("{not json", "stdin is not JSON"),
    ("[1, 2]", 'expected a JSON object with "messages"'),
    (json.dumps({"messages": [{"role": "robot", "content": "hi"}]}), r"messages[0].role"),
    (json.dumps({"messages": [{"role": "user", "content": "hi"}], "reasoning_effort": 3}),
     "reasoning_effort"),
])
def test_render_bad_input_is_one_line_and_exit_2(monkeypatch, capsys, stdin, match):
    code, out, err = run(monkeypatch, capsys, ["render"], stdin)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("gptoss render: error:") and match in err
