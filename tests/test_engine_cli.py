"""`gptoss chat` and `gptoss generate` driven as terminal programs (subprocess, pipes) on a tiny
random checkpoint.

A random model cannot be asked to call a tool, so a small driver (DRIVER below) wraps the
engine's `submit` to (1) log every prompt it receives and (2) for the first generations, attach
a logits processor that forces scripted harmony tokens. This proves the CLI's side of the loop:
parsing and showing the stream, asking the user for the tool result, and rendering the call and
the result into the next prompt, and `/effort` reaching the system message. It does not prove
that a trained model would call the tool.
"""
import json
import os
import subprocess
import sys

import pytest

from gptoss.config import ModelConfig
from gptoss.harmony.tokenizer import get_tokenizer

DRIVER = r'''
import json, sys, torch
import gptoss.engine.async_engine as stream
log_path, script_path, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
scripts = json.load(open(script_path))

class ForceTokens:
    def __init__(self, script):
        self.script = script
    def __call__(self, generated, logits):
        out = torch.full_like(logits, float("-inf"))
        out[self.script[min(len(generated), len(self.script) - 1)]] = 0.0
        return out

original = stream.AsyncEngine.submit
def submit(self, prompt, params=None, **kw):
    with open(log_path, "a") as f:
        f.write(json.dumps(prompt if isinstance(prompt, str) else list(prompt)) + "\n")
    if scripts:
        kw["logits_processor"] = ForceTokens(scripts.pop(0))
    return original(self, prompt, params, **kw)
stream.AsyncEngine.submit = submit

from gptoss.cli import main
sys.exit(main(argv))
'''

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from gptoss.weights.writer import write_random_checkpoint
    return write_random_checkpoint(ModelConfig.preset("tiny"), tmp_path_factory.mktemp("tiny"),
                                   seed=0, layout="hf-mxfp4", overwrite=True, progress=False)


def harmony(text: str) -> list[int]:
    return get_tokenizer().encode(text, allowed_special="all")


def run_cli(tmp_path, argv, scripts=(), stdin=""):
    log, script_file, driver = tmp_path / "prompts.jsonl", tmp_path / "scripts.json", tmp_path / "driver.py"
    driver.write_text(DRIVER)
    script_file.write_text(json.dumps([list(s) for s in scripts]))
    log.write_text("")
    env = dict(os.environ, NO_COLOR="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(driver), str(log), str(script_file), *argv],
                          input=stdin, capture_output=True, text=True, timeout=240, env=env)
    prompts = [json.loads(line) for line in log.read_text().splitlines()]
    return proc, prompts


def test_chat_tool_round_trip_effort_and_reasoning_toggle(tmp_path, checkpoint):
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps(TOOLS))
    call = harmony("<|channel|>analysis<|message|>Need the weather.<|end|>"
                   "<|start|>assistant to=functions.get_weather<|channel|>commentary "
                   '<|constrain|>json<|message|>{"city": "Paris"}<|call|>')
    answer = harmony("<|channel|>analysis<|message|>Got it.<|end|><|start|>assistant"
                     "<|channel|>final<|message|>It is sunny in Paris.<|return|>")
    hidden = harmony("<|channel|>analysis<|message|>secret thoughts<|end|><|start|>assistant"
                     "<|channel|>final<|message|>Bye.<|return|>")
    stdin = ("What is the weather in Paris?\n" "sunny, 21 C\n" "/effort high\n"
             "/reasoning hide\n" "Thanks\n" "/quit\n")
    proc, prompts = run_cli(tmp_path, ["chat", "--model", str(checkpoint), "--tools", str(tools),
                                       "--system", "Be brief.", "--max-tokens", "60"],
                            [call, answer, hidden], stdin)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "[analysis] Need the weather." in out
    assert '-> functions.get_weather({"city": "Paris"})' in out
    assert 'result of get_weather({"city": "Paris"})> ' in out
    assert "It is sunny in Paris." in out
    assert "(reasoning effort: high)" in out and "tok/s" in out
    assert "Bye." in out and "secret thoughts" not in out  # /reasoning hide
    tok = get_tokenizer()
    texts = [tok.decode(p) for p in prompts]
    assert len(texts) == 3
    assert "Reasoning: medium" in texts[0] and "Reasoning: high" in texts[2]
    assert "namespace functions" in texts[0] and "Be brief." in texts[0]
    # the second prompt carries the call and the user's result in harmony form
    assert ('<|start|>assistant to=functions.get_weather<|channel|>commentary <|constrain|>json'
            '<|message|>{"city": "Paris"}<|call|>') in texts[1]
    assert ("<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>"
            "sunny, 21 C<|end|>") in texts[1]
    assert texts[1].endswith("<|start|>assistant")
    assert "It is sunny in Paris." in texts[2]  # history kept across turns


def test_generate_streams_json_events_and_dims_reasoning(tmp_path, checkpoint):
    script = harmony("<|channel|>analysis<|message|>hmm<|end|><|start|>assistant"
                     "<|channel|>final<|message|>Answer.<|return|>")
    proc, prompts = run_cli(tmp_path, ["generate", "--model", str(checkpoint), "Hi?",
                                       "--reasoning-effort", "low", "--json"], [script])
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [e["token_id"] for e in events if e["type"] == "token"] == script
    done = [e["message"] for e in events if e["type"] == "message_done"]
    assert [(m["channel"], m["text"]) for m in done] == [("analysis", "hmm"), ("final", "Answer.")]
    assert events[-1]["type"] == "finish" and events[-1]["finish_reason"] == "stop"
    assert "Reasoning: low" in get_tokenizer().decode(prompts[0])

    proc, _ = run_cli(tmp_path, ["generate", "--model", str(checkpoint), "Hi?", "--color",
                                 "always"], [script])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "\x1b[2mhmm\x1b[0m\n\nAnswer.\n"


def test_generate_raw_and_errors(tmp_path, checkpoint):
    proc, prompts = run_cli(tmp_path, ["generate", "--model", str(checkpoint), "<|start|>plain",
                                       "--raw", "--max-tokens", "4", "--seed", "1"])
    assert proc.returncode == 0, proc.stderr
    assert prompts == ["<|start|>plain"] and proc.stdout.endswith("\n")
    proc, _ = run_cli(tmp_path, ["generate", "--model", str(tmp_path / "nowhere"), "x"])
    assert proc.returncode == 2 and "nowhere" in proc.stderr and "Traceback" not in proc.stderr
    proc, _ = run_cli(tmp_path, ["generate", "--model", str(checkpoint), "x", "--max-tokens",
                                 "999999"])
    assert proc.returncode == 2 and "context length" in proc.stderr
