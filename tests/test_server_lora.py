"""`gptoss serve --lora NAME=DIR` and `gptoss generate --lora DIR`: one engine serving two
adapters and the base, chosen by the request's `model`, driven by the official `openai` client.
The oracle of each adapter's greedy reply is `LLM.chat` on the adapter merged into the base
(`gptoss merge`, fp32, exact)."""
from __future__ import annotations

import asyncio

import openai
import pytest
import torch

from gptoss.cli import main
from gptoss.engine import LLM, AsyncEngine, SamplingParams
from gptoss.server.app import create_app
from gptoss.server.commands import parse_lora
from gptoss.server.context import ServerOptions
from gptoss.server.testing import LiveServer

from test_lora_serving import SPECS, make_adapter, merged

USER = [{"role": "user", "content": "Name a colour."}]
NAMES = ("tiny", "a1", "a2")
MAX_TOKENS = 8


@pytest.fixture(scope="module")
def adapters(harmony_tiny_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("server_lora")
    out = {}
    for i, (name, spec) in enumerate(sorted(SPECS.items())):
        folder = make_adapter(harmony_tiny_checkpoint, spec, root / name, seed=20 + i)
        out[name] = (folder, merged(harmony_tiny_checkpoint, folder, root / f"{name}-merged"))
    return out


@pytest.fixture(scope="module")
def served(harmony_tiny_checkpoint, adapters, tmp_path_factory):
    lora = {n: str(f) for n, (f, _) in adapters.items()}
    engine = AsyncEngine.from_model(harmony_tiny_checkpoint, dtype=torch.float32, lora=lora,
                                    kv_cache_tokens=4096)
    app = create_app(engine, ServerOptions(model_names=("tiny",), lora=lora))
    with LiveServer(app) as live:
        yield live
    engine.close()


def expected_reply(checkpoint) -> tuple[str | None, str | None, int]:
    out = LLM(checkpoint, dtype=torch.float32).chat(
        USER, SamplingParams(temperature=0, max_tokens=MAX_TOKENS))
    return out.reasoning or None, out.content or None, len(out.token_ids)


def test_models_lists_adapters_with_their_base(served, adapters):
    client = openai.OpenAI(base_url=served.base_url + "/v1", api_key="x", max_retries=0)
    cards = {m.id: m for m in client.models.list().data}
    assert list(cards) == list(NAMES)
    assert cards["a1"].parent == "tiny" and cards["a1"].root == str(adapters["a1"][0])
    assert getattr(cards["tiny"], "parent", None) is None
    assert client.models.retrieve("a2").id == "a2"
    with pytest.raises(openai.NotFoundError, match="a3"):
        client.models.retrieve("a3")


def test_greedy_replies_by_model_name_in_one_batch(served, adapters, harmony_tiny_checkpoint):
    client = openai.AsyncOpenAI(base_url=served.base_url + "/v1", api_key="x", max_retries=0,
                                timeout=120)

    async def ask(model):
        r = await client.chat.completions.create(model=model, messages=USER, temperature=0,
                                                 max_tokens=MAX_TOKENS)
        m = r.choices[0].message
        return getattr(m, "reasoning_content", None), m.content, r.usage.completion_tokens, r.model

    async def all_at_once():  # concurrent: base and both adapters decode in the same steps
        return await asyncio.gather(*(ask(n) for n in NAMES))

    got = asyncio.run(all_at_once())
    want = [expected_reply(harmony_tiny_checkpoint)]
    want += [expected_reply(adapters[n][1]) for n in NAMES[1:]]
    for name, g, w in zip(NAMES, got, want):
        assert g == (*w, name), name
    assert len({w[:2] for w in want}) == 3  # the three models answer differently


def test_unknown_model_is_a_404(served):
    client = openai.OpenAI(base_url=served.base_url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.NotFoundError, match="`a3` does not exist.*`a1`, `a2`"):
        client.chat.completions.create(model="a3", messages=USER, max_tokens=2)
    resp = client.responses.create(model="a2", input="Hi", max_output_tokens=4, temperature=0)
    assert resp.model == "a2" and resp.status in ("completed", "incomplete")


def test_lora_option_parsing_and_name_clash():
    assert parse_lora(["x=/a=b", "y=c"]) == {"x": "/a=b", "y": "c"}
    for bad in (["x"], ["=dir"], ["x="]):
        with pytest.raises(ValueError, match="NAME=DIR"):
            parse_lora(bad)
    with pytest.raises(ValueError, match="given twice"):
        parse_lora(["x=a", "x=b"])
    with pytest.raises(ValueError, match="also a name of the base model"):
        ServerOptions(model_names=("tiny",), lora={"tiny": "dir"})


def test_console_generate_with_lora(harmony_tiny_checkpoint, adapters, capsys, tmp_path):
    def generate(model, *extra):
        assert main(["generate", "hello", "--raw", "--model", str(model), "--temperature", "0",
                     "--max-tokens", "6", "--dtype", "float32", *extra]) == 0
        return capsys.readouterr().out

    with_lora = generate(harmony_tiny_checkpoint, "--lora", str(adapters["a1"][0]))
    assert with_lora == generate(adapters["a1"][1])
    assert with_lora != generate(harmony_tiny_checkpoint)
    assert main(["generate", "hello", "--model", str(harmony_tiny_checkpoint),
                 "--lora", str(tmp_path / "absent")]) == 2
    assert "not a readable PEFT adapter folder" in capsys.readouterr().err
