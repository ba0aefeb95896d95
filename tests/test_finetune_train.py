"""Fine-tuning end to end on a tiny random checkpoint (CPU, fp32): the loss falls and held-out
greedy outputs equal their targets (LoRA on packed MXFP4 experts, and full training); a run
resumed from a mid-run checkpoint continues on exactly the uninterrupted loss curve; FSDP with
two gloo processes gives the one-process curve."""
import json
import shutil

import pytest
import torch

from gptoss.cli import main as cli
from gptoss.finetune import distributed
from gptoss.finetune.api import finetune, prepare_model
from gptoss.finetune.checkpoint import complete_checkpoints
from gptoss.finetune.config import TrainConfig, TrainConfigError
from gptoss.finetune.data import Dataset, Example, load_jsonl
from gptoss.finetune.lora import LoraSpec, load_adapter_state
from gptoss.finetune.peft_format import load_adapter
from gptoss.finetune.trainer import lr_factor
from gptoss.weights.loader import load_model

from finetune_task import HELD_OUT_TEMPLATES, TRAIN_TEMPLATES, greedy_matches, write_task


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    root = tmp_path_factory.mktemp("task")
    write_task(root / "train.jsonl", TRAIN_TEMPLATES)
    write_task(root / "eval.jsonl", HELD_OUT_TEMPLATES)
    return root / "train.jsonl", root / "eval.jsonl"


def test_lora_learns_the_task(harmony_tiny_checkpoint, task, tmp_path, one_torch_thread):
    config = TrainConfig(method="lora", precision="fp32", lr=1e-2, max_steps=80, batch_size=4,
                         warmup_steps=5, lora=LoraSpec(rank=8, alpha=16), eval_every=40)
    result = finetune(harmony_tiny_checkpoint, task[0], tmp_path, eval_data=task[1],
                      config=config, progress=False, log=None)
    losses = [h["loss"] for h in result.history]
    assert sum(losses[-5:]) / 5 < losses[0] / 4
    assert result.train.eval_losses[-1][1] < result.train.eval_losses[0][1]
    model = prepare_model(harmony_tiny_checkpoint, config)  # packed MXFP4 base experts
    _, state = load_adapter(result.output, model.config)  # through the exported PEFT folder
    load_adapter_state(model, state)
    held_out = load_jsonl(task[1]).examples
    assert greedy_matches(model, held_out) == len(held_out)


def test_full_finetuning_learns_the_task(harmony_tiny_checkpoint, task, tmp_path,
                                         one_torch_thread):
    config = TrainConfig(method="full", precision="fp32", lr=5e-3, max_steps=40, batch_size=4,
                         warmup_steps=3)
    result = finetune(harmony_tiny_checkpoint, task[0], tmp_path, config=config,
                      progress=False, log=None)
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0] / 10
    model = load_model(result.output, dtype=torch.float32)  # the written hf-bf16 checkpoint
    held_out = load_jsonl(task[1]).examples
    assert greedy_matches(model, held_out) == len(held_out)


def _short_run(**changes) -> TrainConfig:
    base = dict(method="lora", precision="fp32", lr=5e-3, max_steps=6, batch_size=2,
                grad_accum=2, warmup_steps=2, save_every=3, keep_checkpoints=5,
                lora=LoraSpec(rank=2, alpha=4))
    base.update(changes)
    return TrainConfig(**base)


@pytest.mark.parametrize("experts", ["mxfp4", "dense"])
def test_resume_reproduces_the_loss_curve_exactly(experts, harmony_tiny_checkpoint, task,
                                                  tmp_path, one_torch_thread):
    config = _short_run(experts=experts)
    whole = finetune(harmony_tiny_checkpoint, task[0], tmp_path / "whole", config=config,
                     progress=False, log=None)
    mid = dict(complete_checkpoints(tmp_path / "whole"))[3]
    shutil.copytree(mid, tmp_path / "resumed" / "checkpoints" / mid.name)
    resumed = finetune(harmony_tiny_checkpoint, task[0], tmp_path / "resumed", config=config,
                       resume=True, progress=False, log=None)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in whole.history]
    assert len(whole.history) == 6
    a = load_adapter(whole.output, prepare_model(harmony_tiny_checkpoint, config).config)[1]
    b = load_adapter(resumed.output, prepare_model(harmony_tiny_checkpoint, config).config)[1]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_changed_options(harmony_tiny_checkpoint, task, tmp_path,
                                        one_torch_thread):
    finetune(harmony_tiny_checkpoint, task[0], tmp_path, config=_short_run(max_steps=3),
             progress=False, log=None)
    with pytest.raises(TrainConfigError, match="lr"):
        finetune(harmony_tiny_checkpoint, task[0], tmp_path,
                 config=_short_run(max_steps=3, lr=1e-3), resume=True, progress=False, log=None)


def _fsdp_worker(model, data, out, config):
    torch.set_num_threads(1)
    result = finetune(model, data, out, config=config, progress=False, log=None)
    if distributed.from_environment("cpu").rank == 0:
        (out / "losses.json").write_text(json.dumps([h["loss"] for h in result.history]))


def random_dataset(vocab: int, count: int, seed: int = 0) -> Dataset:
    """Token sequences of 10-30 ids below `vocab`, the second half of each learned."""
    g = torch.Generator().manual_seed(seed)
    examples = []
    for i in range(count):
        n = int(torch.randint(10, 30, (1,), generator=g))
        tokens = torch.randint(0, vocab, (n,), generator=g).tolist()
        examples.append(Example(tuple(tokens), tuple([0] * (n // 2) + [1] * (n - n // 2)), i + 1))
    return Dataset("random", examples)


def test_fsdp_two_gloo_processes_match_one(tiny_checkpoints, tiny_config, tmp_path,
                                           one_torch_thread):
    model, data = tiny_checkpoints["hf-mxfp4"], random_dataset(tiny_config.vocab_size, 10)
    # one process accumulating 4 micro-batches of 2 = two processes accumulating 2 each; an
    # epoch's second step has 2 conversations, so rank 1 runs a zero-weight padding batch
    one = TrainConfig(method="full", precision="fp32", lr=1e-3, max_steps=3, grad_accum=4,
                      batch_size=2)
    expected = finetune(model, data, tmp_path / "one", config=one, progress=False, log=None)
    two = one.replace(grad_accum=2)
    distributed.spawn(2, _fsdp_worker, model, data, tmp_path / "two", two)
    got = json.loads((tmp_path / "two" / "losses.json").read_text())
    assert got == pytest.approx([h["loss"] for h in expected.history], rel=1e-5)
    a = load_model(tmp_path / "one" / "model", dtype=torch.float32).state_dict()
    b = load_model(tmp_path / "two" / "model", dtype=torch.float32).state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-2) for k in a)  # bf16 files, float noise


def test_cli_finetune_resume_and_bad_records(harmony_tiny_checkpoint, task, tmp_path, capsys,
                                             one_torch_thread):
    data = tmp_path / "data.jsonl"
    data.write_text(task[0].read_text() + "{oops\n" + '{"messages": [{"role": "user"}]}\n')
    argv = ["finetune", "--model", str(harmony_tiny_checkpoint), "--data", str(data),
            "--out", str(tmp_path / "run"), "--precision", "fp32", "--max-steps", "2",
            "--rank", "2", "--quiet", "--save-every", "1"]
    assert cli(argv) == 0
    out = capsys.readouterr().out
    assert "line 33: invalid JSON" in out and "line 34:" in out and "skipped 2 bad" in out
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").is_file()
    assert cli(argv + ["--resume"]) == 0  # already at the last step: nothing more to train
    assert cli(argv + ["--on-error", "raise"]) == 2
    err = capsys.readouterr().err
    assert "line 33: invalid JSON" in err and "Traceback" not in err


def test_lr_schedule():
    f = [lr_factor(s, total=10, warmup=2, min_ratio=0.1) for s in range(10)]
    assert f[:2] == [0.5, 1.0] and f[2] == 1.0
    assert f[-1] == pytest.approx(0.1) and all(a >= b for a, b in zip(f[2:], f[3:]))


@pytest.mark.parametrize("method", ["lora", "full"])
def test_bf16_runs_train(method, tiny_checkpoints, tiny_config, tmp_path, one_torch_thread):
    """bf16 compute (LoRA: bf16 base, fp32 adapters; full: fp32 weights under autocast)."""
    config = TrainConfig(method=method, precision="bf16", lr=3e-3, max_steps=6, batch_size=4,
                         lora=LoraSpec(rank=4, alpha=8))
    data = random_dataset(tiny_config.vocab_size, 4)
    result = finetune(tiny_checkpoints["hf-mxfp4"], data, tmp_path, config=config,
                      progress=False, log=None)
    losses = [h["loss"] for h in result.history]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


def test_finetune_refuses_a_trained_router_it_cannot_export(tiny_checkpoints, tiny_config,
                                                            tmp_path):
    config = TrainConfig(lora=LoraSpec(train_router=True))
    with pytest.raises(TrainConfigError, match="router"):
        finetune(tiny_checkpoints["hf-mxfp4"], random_dataset(tiny_config.vocab_size, 2),
                 tmp_path, config=config, progress=False, log=None)
