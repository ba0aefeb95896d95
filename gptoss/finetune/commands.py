"""`gptoss finetune` and `gptoss merge`."""
from __future__ import annotations

import argparse

from ..weights.layouts import LAYOUT_ALIASES, LAYOUTS


def _targets(text: str, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    if text.strip().lower() == "none":
        return ()
    items = tuple(t.strip() for t in text.split(",") if t.strip())
    bad = [t for t in items if t not in allowed]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown {what} {bad}; choose from {', '.join(allowed)}"
                                          " (comma-separated) or none")
    return items


def _finetune_args(p: argparse.ArgumentParser) -> None:
    from .lora import ATTENTION_TARGETS, EXPERT_TARGETS
    p.add_argument("--model", required=True, help="base checkpoint folder (any layout) or repo id")
    p.add_argument("--data", required=True, metavar="JSONL", help="training conversations")
    p.add_argument("--eval", metavar="JSONL", help="held-out conversations for the eval loss")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--method", choices=["lora", "full"], default="lora")
    g = p.add_argument_group("LoRA")
    g.add_argument("--rank", type=int, default=8)
    g.add_argument("--alpha", type=float, default=16.0)
    g.add_argument("--lora-attention", default="q,k,v,o",
                   type=lambda s: _targets(s, ATTENTION_TARGETS, "attention targets"),
                   help="attention projections with adapters (default q,k,v,o; or none)")
    g.add_argument("--lora-experts", default="mlp1,mlp2",
                   type=lambda s: _targets(s, EXPERT_TARGETS, "expert targets"),
                   help="expert tensors with per-expert adapters: mlp1 (gate_up), mlp2 (down)")
    g.add_argument("--rslora", action="store_true", help="scale by alpha/sqrt(rank)")
    g.add_argument("--experts", choices=["auto", "mxfp4", "dense"], default="auto",
                   help="frozen base experts: as stored, packed MXFP4 (dequantized per used "
                        "expert, QLoRA-style) or dense")
    t = p.add_argument_group("training")
    t.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    t.add_argument("--epochs", type=int, default=1)
    t.add_argument("--max-steps", type=int)
    t.add_argument("--batch-size", type=int, default=1, help="conversations per micro-batch")
    t.add_argument("--grad-accum", type=int, default=1, help="micro-batches per step")
    t.add_argument("--lr", type=float, default=2e-4)
    t.add_argument("--min-lr-ratio", type=float, default=0.0)
    t.add_argument("--warmup-steps", type=int, default=0)
    t.add_argument("--weight-decay", type=float, default=0.0)
    t.add_argument("--max-grad-norm", type=float, default=1.0, help="0 turns clipping off")
    t.add_argument("--no-gradient-checkpointing", action="store_true")
    t.add_argument("--eval-every", type=int, metavar="STEPS")
    t.add_argument("--save-every", type=int, metavar="STEPS")
    t.add_argument("--keep-checkpoints", type=int, default=2)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--train-on", choices=["all", "final"], default="all",
                   help="learn all assistant tokens (analysis, tool calls) or the final channel")
    t.add_argument("--max-length", type=int, help="skip conversations with more tokens")
    t.add_argument("--on-error", choices=["skip", "raise"], default="skip",
                   help="bad records: skip them (each reported) or refuse the file")
    t.add_argument("--save-layout", choices=[*LAYOUTS, *LAYOUT_ALIASES], default="hf-bf16",
                   help="full fine-tuning: layout of the trained checkpoint")
    t.add_argument("--device", default="cpu")
    t.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                   help="continue from the latest checkpoint in --out (or the one given)")
    t.add_argument("--nproc", type=int, default=1,
                   help="worker processes for FSDP full fine-tuning (or launch with torchrun)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "finetune", help="fine-tune on JSONL conversations (LoRA or full)",
        description="Fine-tune a gpt-oss checkpoint on JSONL conversations (chat-completions "
                    "messages or harmony messages); loss on assistant tokens only. LoRA writes "
                    "a PEFT adapter to OUT/adapter, full fine-tuning a checkpoint to OUT/model.")
    _finetune_args(p)
    p.set_defaults(func=_finetune)
    m = subparsers.add_parser(
        "merge", help="fold a LoRA adapter into a checkpoint",
        description="Fold the PEFT adapter folder ADAPTER into BASE and write OUT in any layout; "
                    "MXFP4 layouts re-quantize the experts and report the quantization error.")
    m.add_argument("base", metavar="BASE")
    m.add_argument("adapter", metavar="ADAPTER")
    m.add_argument("out", metavar="OUT")
    m.add_argument("--layout", choices=[*LAYOUTS, *LAYOUT_ALIASES],
                   help="output layout (default: the base's)")
    m.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16",
                   help="dtype of the dense tensors written")
    m.add_argument("--force", action="store_true", help="write into a non-empty folder")
    m.add_argument("--quiet", action="store_true")
    m.set_defaults(func=_merge)


def config_from_args(args: argparse.Namespace):
    from .config import TrainConfig
    from .lora import LoraSpec
    from ..weights.layouts import normalize_layout
    return TrainConfig(
        method=args.method,
        lora=LoraSpec(rank=args.rank, alpha=args.alpha, attention=args.lora_attention,
                      experts=args.lora_experts, rslora=args.rslora),
        experts=args.experts, precision=args.precision, epochs=args.epochs,
        max_steps=args.max_steps, batch_size=args.batch_size, grad_accum=args.grad_accum,
        lr=args.lr, min_lr_ratio=args.min_lr_ratio, warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay, max_grad_norm=args.max_grad_norm or None,
        gradient_checkpointing=not args.no_gradient_checkpointing, eval_every=args.eval_every,
        save_every=args.save_every, keep_checkpoints=args.keep_checkpoints, seed=args.seed,
        train_on=args.train_on, max_length=args.max_length, on_error=args.on_error,
        save_layout=normalize_layout(args.save_layout), device=args.device)


def _run(model, data, out, eval_data, config, resume, progress) -> None:
    from .api import finetune
    result = finetune(model, data, out, eval_data=eval_data, config=config, resume=resume,
                      progress=progress)
    from . import distributed
    if distributed.from_environment(config.device).rank == 0:
        last = result.history[-1] if result.history else {}
        print(f"trained {result.train.steps} steps (last loss {last.get('loss', float('nan')):.4f})"
              f"; wrote {result.output}")


def _finetune(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    job = (args.model, args.data, args.out, args.eval, config, args.resume, not args.quiet)
    if args.nproc > 1:
        if config.method != "full":
            raise ValueError("--nproc shards full fine-tuning with FSDP; use --method full")
        from .distributed import spawn
        spawn(args.nproc, _run, *job)
    else:
        _run(*job)
    return 0


def _merge(args: argparse.Namespace) -> int:
    from .export import DTYPES, merge_adapter
    from ..weights.layouts import normalize_layout
    report = merge_adapter(args.base, args.adapter, args.out,
                           layout=normalize_layout(args.layout) if args.layout else None,
                           dtype=DTYPES[args.dtype], overwrite=args.force,
                           progress=not args.quiet)
    print(report.summary())
    return 0
