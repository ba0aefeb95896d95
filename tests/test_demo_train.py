"""The demo recipe's plumbing on a very small shape and budget (it does not learn here): corpus,
compact training with the fine-tuning pipeline, package, expansion, held-out scores, model card;
and the default-model behaviour of generate / serve with and without a packaged model."""
from __future__ import annotations

import json
import re

import pytest

from gptoss.cli import main as cli
from gptoss.demo import shipped
from gptoss.demo.package import SIZE_LIMIT
from gptoss.demo.train import DemoTrainOptions, demo_train
from gptoss.demo.vocab import DemoVocab
from gptoss.weights.loader import load_model

SMALL = dict(num_layers=2, hidden_size=64, intermediate_size=64, num_heads=2, num_kv_heads=1,
             head_dim=32, sliding_window=16)


@pytest.fixture(scope="module")
def run(tmp_path_factory, one_torch_thread):
    out = tmp_path_factory.mktemp("demo")
    # the shipped recipe's machinery (digit and value-code rows, a first stage, echo records,
    # 25 zones)
    options = DemoTrainOptions(preset="demo", records=48, first_records=16, echo_weight=4,
                               curriculum="arith-values", number_init="digits",
                               entity_init="codes", heldout=12, batch_size=8, lr=1e-2,
                               warmup_steps=1, other_rows=8, save_every=None, eval_max_tokens=12,
                               eval_additions=6, config_changes=SMALL)
    return out, demo_train(out, options, progress=False, log=None)


def test_recipe_writes_every_artefact(run):
    out, summary = run
    losses = [h["loss"] for h in json.loads((out / "run" / "history.json").read_text())]
    assert summary["steps"] == 8 and summary["first_steps"] == 2  # the first stage, then 6
    assert len(losses) == 6 and losses[-1] < losses[0]
    first_losses = json.loads((out / "first" / "history.json").read_text())
    assert len(first_losses) == 2
    first = [json.loads(line) for line in (out / "data" / "first.jsonl").read_text().splitlines()]
    assert len(first) == 16 and {r["demo"]["task"] for r in first} <= {"add2", "add3", "echo"}
    assert 0 < (out / "gptoss-demo.safetensors").stat().st_size < SIZE_LIMIT
    model = load_model(out / "expanded")
    assert model.config.vocab_size == 201088 and model.config.hidden_size == 64
    scores = json.loads((out / "scores.json").read_text())
    assert scores["replies"] == 12
    for key in ("well_formed", "ended", "add2_exact"):
        assert 0 <= scores[key] <= 100
    card = (out / "MODEL_CARD.md").read_text()
    assert not re.findall(r"\{[a-z_0-9]+\}", card), "unfilled placeholders"
    # the rows standing for unused tokens started equal and stayed equal through training
    trained = load_model(out / "run" / "model")
    other = DemoVocab.load(out / "vocab.json").other
    rows = trained.unembedding.weight[other:].float()
    assert rows.shape[0] == 8 and float((rows - rows[0]).abs().max()) <= 1e-2 * float(rows[0].abs().max())
    lines = (out / "data" / "train.jsonl").read_text().splitlines()
    assert len(lines) == 48 and json.loads(lines[0])["demo"]["key"]


def test_command_line(tmp_path):
    argv = ["demo-train", "--out", str(tmp_path / "x"), "--preset", "tiny", "--records", "8",
            "--heldout", "2", "--batch-size", "8", "--recipe", "copy", "--first-records", "8",
            "--entity-init", "codes", "--no-eval", "--quiet"]
    assert cli(argv) == 0
    summary = json.loads((tmp_path / "x" / "summary.json").read_text())
    assert summary["options"]["lr"] == 1e-3 and summary["options"]["number_init"] == "digits"
    assert summary["first_steps"] == 1 and summary["options"]["echo_weight"] == 4
    assert summary["options"]["curriculum"] == "echo"
    assert summary["options"]["entity_init"] == "codes"  # the flag overrides the recipe's
    assert (tmp_path / "x" / "gptoss-demo.safetensors").is_file()
    assert cli(argv) == 2  # a non-empty --out needs --force (or --resume)
    assert cli(argv + ["--resume"]) == 0  # the run is complete: nothing left to train


def test_model_is_required_without_a_packaged_demo(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(shipped, "PACKAGED", tmp_path / "absent.safetensors")
    assert shipped.packaged_model() is None
    with pytest.raises(SystemExit) as exc:
        cli(["generate", "Hi"])
    assert exc.value.code == 2
    assert "the following arguments are required: --model" in capsys.readouterr().err


def test_packaged_demo_is_the_default(run, monkeypatch, tmp_path, capfd):
    out, _ = run
    monkeypatch.setattr(shipped, "PACKAGED", out / "gptoss-demo.safetensors")
    monkeypatch.setenv("GPTOSS_CACHE_DIR", str(tmp_path / "cache"))
    assert cli(["generate", "Hi", "--max-tokens", "4", "--temperature", "0", "--raw"]) == 0
    err = capfd.readouterr().err
    assert err.count("tiny demo model") == 1 and "openai/gpt-oss-20b" in err

    seen = {}
    import gptoss.server.app as app
    monkeypatch.setattr(app, "serve", lambda a, host, port, log_level: seen.update(app=a))
    assert cli(["serve", "--port", "0", "--db", ":memory:"]) == 0
    assert seen["app"].state.ctx.model_name == "gptoss-demo"
    assert "gptoss-demo on http://" in capfd.readouterr().out
