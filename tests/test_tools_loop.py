"""The built-in tool loop end to end on a tiny random checkpoint: `LLM.chat(builtin_tools=...)`,
`gptoss chat --python` driven over a pipe, and /v1/responses on the real engine.

A random model cannot be asked to call a tool, so its output is forced through the engine's
logits hook (a logits processor that, for each engine request of the turn, makes the model emit
the next scripted segment). What is proven is the loop's side: the call is recognised, the real
sandboxed python tool runs, its result is rendered into the next prompt (checked by parsing that
prompt with openai-harmony, the independent oracle) and generation continues in the same turn.
"""
from __future__ import annotations

import pytest
import torch
from openai.types.responses import ResponseCodeInterpreterToolCall, ResponseStreamEvent
from openai_harmony import Role
from pydantic import TypeAdapter

from gptoss.harmony.tokenizer import get_tokenizer, load_harmony_encoding
from gptoss.tools.python import PythonTool
from gptoss.tools.sandbox import SandboxConfig, namespaces_available

pytestmark = pytest.mark.skipif(not namespaces_available(),
                                reason="Linux namespaces (unshare) are not allowed here")
CODE = "print(6 * 7)"


def harmony(text: str) -> list[int]:
    return get_tokenizer().encode(text, allowed_special="all")


CALL = harmony(f"<|channel|>analysis<|message|>Compute it.<|end|><|start|>assistant"
               f"<|channel|>analysis to=python code<|message|>{CODE}<|call|>")
ANSWER = harmony("<|channel|>final<|message|>It is 42.<|return|>")


class Segments:
    """Test-only logits processor: forces script k on the turn's k-th engine request (a new
    request starts with no generated tokens)."""

    def __init__(self, scripts):
        self.scripts, self.k = [list(s) for s in scripts], -1

    def __call__(self, generated, logits):
        if not generated:
            self.k += 1
        script = self.scripts[min(self.k, len(self.scripts) - 1)]
        forced = torch.full_like(logits, float("-inf"))
        forced[script[min(len(generated), len(script) - 1)]] = 0.0
        return forced


@pytest.fixture(scope="module")
def llm(harmony_tiny_checkpoint):
    from gptoss.engine import LLM
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield LLM(harmony_tiny_checkpoint, dtype=torch.float32, dequantize=True)
    torch.set_num_threads(threads)


def prompts_of(llm):
    """Record every prompt the engine is given (wraps add_request)."""
    seen, original = [], llm.add_request

    def add_request(prompt, *args, **kwargs):
        seen.append(list(prompt.prompt_token_ids if hasattr(prompt, "prompt_token_ids") else prompt))
        return original(prompt, *args, **kwargs)

    llm.add_request = add_request
    return seen


def tail_messages(prompt: list[int]):
    """openai-harmony's reading of a prompt's messages (the trailing `<|start|>assistant` cut)."""
    encoding = load_harmony_encoding()
    return encoding.parse_messages_from_completion_tokens(prompt[:-2], role=Role.SYSTEM)


def test_llm_chat_runs_python_and_continues(llm):
    from gptoss.engine import SamplingParams
    seen = prompts_of(llm)
    try:
        out = llm.chat([{"role": "user", "content": "What is 6*7?"}], SamplingParams(max_tokens=80),
                       logits_processor=Segments([CALL, ANSWER]), builtin_tools=["python"])
    finally:
        del llm.add_request
    assert out.content == "It is 42." and out.tool_calls == []
    (step,) = out.builtin_calls
    assert step.recipient == "python" and step.call.text == CODE
    assert step.output.messages[0].content[0].text == "42\n" and step.output.error is None
    assert [(m.role, m.text) for m in out.messages if m.role == "tool"] == [("tool", "42\n")]
    assert len(seen) == 2
    # the system message of the first prompt carries the tool's own description
    assert "# Tools\n\n## python" in get_tokenizer().decode(seen[0])
    # the second prompt = the first + the call + the tool's result, as openai-harmony reads it
    assert seen[1][:len(seen[0])] == seen[0]
    *_, call, result = tail_messages(seen[1])
    assert call.recipient == "python" and call.content[0].text == CODE
    assert result.author.role == Role.TOOL and result.author.name == "python"
    assert result.recipient == "assistant" and result.content[0].text == "42\n"
    assert out.usage.prompt_tokens == len(seen[0]) + len(seen[1])


def test_a_function_call_still_ends_the_turn(llm):
    from gptoss.engine import SamplingParams
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}}}}}]
    call = harmony('<|channel|>commentary to=functions.lookup <|constrain|>json<|message|>'
                   '{"q": "x"}<|call|>')
    with PythonTool(SandboxConfig(timeout_s=10), stateless=True) as python:
        out = llm.chat([{"role": "user", "content": "look it up"}], SamplingParams(max_tokens=40),
                       tools=tools, logits_processor=Segments([call, ANSWER]),
                       builtin_tools=[python])
    assert [(c.name, c.arguments) for c in out.tool_calls] == [("lookup", '{"q": "x"}')]
    assert out.builtin_calls == [] and out.content == ""


def test_gptoss_chat_over_a_pipe_shows_the_call_and_its_result(tmp_path, harmony_tiny_checkpoint):
    from test_engine_cli import run_cli
    proc, prompts = run_cli(tmp_path, ["chat", "--model", str(harmony_tiny_checkpoint),
                                       "--python", "--max-tokens", "60"],
                            [CALL, ANSWER], "What is 6*7?\n/quit\n")
    assert proc.returncode == 0, proc.stderr
    assert f"-> python({CODE})" in proc.stdout
    assert "<- python: 42" in proc.stdout
    assert "It is 42." in proc.stdout
    assert len(prompts) == 2
    *_, call, result = tail_messages(prompts[1])
    assert call.recipient == "python" and result.content[0].text == "42\n"


class ForcingEngine:
    """The real AsyncEngine with each submitted request forced by the turn's processor."""

    def __init__(self, engine, processor):
        self.engine, self.processor = engine, processor
        self.tokenizer, self.context_length = engine.tokenizer, engine.context_length

    def submit(self, prompt, params=None, **kwargs):
        return self.engine.submit(prompt, params, logits_processor=self.processor)

    def stats(self):
        return self.engine.stats()

    def close(self):
        self.engine.close()


def test_responses_code_interpreter_on_the_real_engine(llm):
    import openai

    from gptoss.engine import AsyncEngine
    from gptoss.server.app import create_app
    from gptoss.server.context import ServerOptions
    from gptoss.server.testing import LiveServer

    processor = Segments([CALL, ANSWER])
    engine = ForcingEngine(AsyncEngine(llm), processor)
    options = ServerOptions(model_names=("tiny",), builtin_tools={
        "python": lambda: PythonTool(SandboxConfig(timeout_s=10), stateless=True)})
    with LiveServer(create_app(engine, options)) as server:
        client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0)
        events = list(client.responses.create(
            model="tiny", input="What is 6*7?", max_output_tokens=80, stream=True,
            tools=[{"type": "code_interpreter", "container": {"type": "auto"}}]))
        stored = client.responses.retrieve(events[-1].response.id)
    engine.engine.close()
    adapter = TypeAdapter(ResponseStreamEvent)
    for e in events:
        adapter.validate_python(e.model_dump())
    kinds = [e.type for e in events]
    order = ["response.created", "response.reasoning_text.done",
             "response.code_interpreter_call.in_progress", "response.code_interpreter_call_code.done",
             "response.code_interpreter_call.interpreting", "response.code_interpreter_call.completed",
             "response.output_text.done", "response.completed"]
    positions = [kinds.index(k) for k in order]
    assert positions == sorted(positions)
    assert [item.type for item in stored.output] == ["reasoning", "code_interpreter_call", "message"]
    call = stored.output[1]
    assert isinstance(call, ResponseCodeInterpreterToolCall)
    assert call.code == CODE and call.outputs[0].logs == "42\n"
    assert stored.output[2].content[0].text == "It is 42."
    assert stored.usage.output_tokens == len(CALL) + len(ANSWER)
