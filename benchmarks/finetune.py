"""LoRA training speed and peak memory: gptoss against transformers + PEFT, in one run.

Same checkpoint (random weights, two 20b-shaped layers, hf-bf16 so that both hold the experts in
bf16), same token sequences (loss on the second half of each), same LoRA (rank, alpha, q/k/v/o and
both expert tensors), AdamW, activation checkpointing, bf16. Each engine runs in its own process
(peak memory = that process's peak RSS, model included); tokens/s counts every token of the
timed steps (the first step is a warm-up and is not timed).

    python benchmarks/finetune.py [--seq 256] [--steps 3] [--rank 8] [--layers 2] [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def sequences(vocab: int, count: int, length: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, vocab, (length,), generator=g).tolist() for _ in range(count)]


def run_gptoss(folder: Path, seqs, rank: int, steps: int, experts: str) -> dict:
    from gptoss.finetune.batches import LossModel, collate
    from gptoss.finetune.data import Example
    from gptoss.finetune.lora import LoraSpec, apply_lora
    from gptoss.weights.loader import load_model
    model = load_model(folder, dtype=torch.bfloat16, quantize=experts == "mxfp4")
    params = apply_lora(model, LoraSpec(rank=rank, alpha=2 * rank))
    loss_model = LossModel(model, checkpointing=True)
    opt = torch.optim.AdamW(params, lr=1e-4)
    batches = [collate([Example(tuple(s), tuple([0] * (len(s) // 2) + [1] * (len(s) - len(s) // 2)), 0)])
               for s in seqs]

    def step(b):
        loss = loss_model(b.ids, b.positions, b.targets) / b.target_count
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)
    return _timed(step, batches, steps)


def run_peft(folder: Path, seqs, rank: int, steps: int) -> dict:
    from peft import LoraConfig, get_peft_model
    from transformers import GptOssForCausalLM
    model = GptOssForCausalLM.from_pretrained(folder, dtype=torch.bfloat16,
                                              attn_implementation="eager")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    config = LoraConfig(r=rank, lora_alpha=2 * rank,
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                        target_parameters=["mlp.experts.gate_up_proj", "mlp.experts.down_proj"])
    model = get_peft_model(model, config)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step(s):
        ids = torch.tensor([s])
        labels = ids.clone()
        labels[:, :len(s) // 2] = -100
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)
    return _timed(step, seqs, steps)


def _timed(step, batches, steps: int) -> dict:
    step(batches[0])  # warm-up
    tokens, t0 = 0, time.perf_counter()
    losses = []
    for i in range(steps):
        b = batches[(i + 1) % len(batches)]
        losses.append(step(b))
        tokens += b.tokens if hasattr(b, "tokens") else len(b)
    seconds = time.perf_counter() - t0
    return {"tokens_per_s": tokens / seconds, "step_s": seconds / steps, "losses": losses,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def _child(args) -> None:
    seqs = sequences(201088, args.steps + 1, args.seq)
    torch.set_num_threads(args.threads)
    if args.engine == "peft":
        out = run_peft(Path(args.folder), seqs, args.rank, args.steps)
    else:
        out = run_gptoss(Path(args.folder), seqs, args.rank, args.steps,
                         "mxfp4" if args.engine == "gptoss-mxfp4" else "dense")
    print("RESULT " + json.dumps(out))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--engines", default="gptoss,peft,gptoss-mxfp4")
    p.add_argument("--keep", metavar="DIR", help="write (or reuse) the checkpoint here")
    p.add_argument("--engine", help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.engine:
        return _child(args)
    from gptoss.config import ModelConfig
    from gptoss.weights.writer import write_random_checkpoint
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_ft_"))
    folder = root / "ckpt"
    if not (folder / "config.json").is_file():
        config = ModelConfig.preset("20b").replace(num_layers=args.layers)
        write_random_checkpoint(config, folder, seed=0, layout="hf-bf16")
    rows = []
    for engine in args.engines.split(","):
        cmd = [sys.executable, __file__, "--engine", engine, "--folder", str(folder),
               "--seq", str(args.seq), "--steps", str(args.steps), "--rank", str(args.rank),
               "--threads", str(args.threads)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            print(f"{engine} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append((engine, json.loads(line[7:])))
    print(f"\nLoRA r={args.rank} on {args.layers} 20b-shaped layers, seq {args.seq}, "
          f"{args.steps} timed steps, {args.threads} threads")
    print(f"{'engine':<22}{'tokens/s':>10}{'s/step':>9}{'peak RSS GB':>13}  losses")
    for engine, r in rows:
        print(f"{engine:<22}{r['tokens_per_s']:>10.1f}{r['step_s']:>9.2f}{r['peak_rss_gb']:>13.2f}"
              f"  {', '.join(f'{x:.3f}' for x in r['losses'])}")


if __name__ == "__main__":
    main()
