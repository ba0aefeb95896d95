"""`gptoss random-checkpoint` and `gptoss convert`."""
from __future__ import annotations

import argparse
import re

from ..config import ModelConfig
from .layouts import LAYOUT_ALIASES, LAYOUTS

# CLI flag -> ModelConfig field
_OVERRIDES = {"layers": "num_layers", "experts": "num_experts",
              "experts_per_token": "experts_per_token", "sliding_window": "sliding_window",
              "hidden": "hidden_size", "intermediate": "intermediate_size", "heads": "num_heads",
              "kv_heads": "num_kv_heads", "head_dim": "head_dim", "vocab": "vocab_size"}
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20,
          "gib": 2**30}


def parse_size(text: str) -> int:
    """'4.8GB', '500MiB', '1000000' -> bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 4.8GB, 500MiB, 1000000)")
    size = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if size <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive: {text!r}")
    return size


def _layout_arg(parser: argparse.ArgumentParser, **kw) -> None:
    parser.add_argument("--layout", choices=[*LAYOUTS, *LAYOUT_ALIASES], **kw,
                        help="hf-mxfp4 (HF repo root, MXFP4 experts), hf-bf16 (unquantized HF), "
                             "original (the original/ folder); aliases: "
                             + ", ".join(f"{a}={b}" for a, b in LAYOUT_ALIASES.items()))


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shard-size", type=parse_size, default=None, metavar="SIZE",
                        help="largest shard (default 4.8GB for HF layouts, one file for original)")
    parser.add_argument("--force", action="store_true",
                        help="write into a non-empty folder, replacing its checkpoint files")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def register(subparsers) -> None:
    p = subparsers.add_parser("random-checkpoint", help="write a checkpoint with random weights",
                              description="Write a complete checkpoint with random weights.")
    p.add_argument("--preset", required=True, choices=["tiny", "demo", "20b", "120b"])
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--seed", type=int, default=0)
    _layout_arg(p, default="hf-mxfp4")
    for flag in _OVERRIDES:
        p.add_argument("--" + flag.replace("_", "-"), type=int, default=None, metavar="N")
    _common(p)
    p.set_defaults(func=_random_checkpoint)

    c = subparsers.add_parser("convert", help="convert a checkpoint to another layout",
                              description="Convert a checkpoint folder (any layout) to LAYOUT. "
                                          "mxfp4 -> bf16 dequantizes exactly; bf16 -> mxfp4 "
                                          "quantizes (lossy).")
    c.add_argument("src", metavar="SRC")
    c.add_argument("dst", metavar="DST")
    _layout_arg(c, required=True)
    _common(c)
    c.set_defaults(func=_convert)

    pl = subparsers.add_parser("plan", help="state whether a model fits a GPU, before loading",
                               description="Add up the weights (experts packed unless --dense), "
                                           "the KV cache for --context tokens x --batch "
                                           "sequences and the workspace, against a device. "
                                           "Exit status 1 if it does not fit.")
    pl.add_argument("--model", required=True, metavar="M",
                    help="a checkpoint folder (only its config.json is read) or a preset: "
                         "20b, 120b")
    pl.add_argument("--context", type=int, default=None, metavar="N",
                    help="tokens per sequence (default: the model's maximum)")
    pl.add_argument("--batch", type=int, default=1, metavar="B", help="sequences at once")
    pl.add_argument("--dense", action="store_true", help="experts dequantized to bf16")
    where = pl.add_mutually_exclusive_group(required=True)
    where.add_argument("--device", metavar="cuda:N", help="use this device's free memory")
    where.add_argument("--gpu-memory", type=parse_size, metavar="SIZE",
                       help="the device's memory, e.g. 80GB")
    pl.set_defaults(func=_plan)


def _random_checkpoint(args: argparse.Namespace) -> int:
    from .writer import write_random_checkpoint
    changes = {field: getattr(args, flag) for flag, field in _OVERRIDES.items()
               if getattr(args, flag) is not None}
    config = ModelConfig.preset(args.preset).replace(**changes)
    out = write_random_checkpoint(config, args.out, seed=args.seed, layout=args.layout,
                                  shard_size=args.shard_size, overwrite=args.force,
                                  progress=not args.quiet)
    print(f"wrote a random {args.layout} checkpoint ({args.preset}, seed {args.seed}) to {out}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from .writer import convert_checkpoint
    out = convert_checkpoint(args.src, args.dst, args.layout, shard_size=args.shard_size,
                             overwrite=args.force, progress=not args.quiet)
    print(f"wrote a {args.layout} checkpoint to {out}")
    return 0


def _plan_config(model: str) -> ModelConfig:
    from pathlib import Path
    if model in ("20b", "120b"):
        return ModelConfig.preset(model)
    folder = Path(model).expanduser()
    for candidate in (folder / "config.json", folder / "original" / "config.json"):
        if candidate.is_file():
            return ModelConfig.from_file(candidate)
    raise ValueError(f"{model}: neither a preset (20b, 120b) nor a folder with a config.json")


def _plan(args: argparse.Namespace) -> int:
    import sys
    from .. import memory_plan
    config = _plan_config(args.model)
    context = config.max_position_embeddings if args.context is None else args.context
    plan = memory_plan.plan(config, context=context, batch=args.batch, packed=not args.dense)
    capacity = (args.gpu_memory if args.gpu_memory is not None
                else memory_plan.device_capacity(args.device))
    print(f"{args.model}: experts {'dense bf16' if args.dense else 'packed MXFP4'}")
    print(plan.describe(capacity))
    try:
        memory_plan.check(plan, capacity, f"{args.model} with {context} tokens x {args.batch}")
    except memory_plan.MemoryPlanError as exc:
        print(f"gptoss plan: {exc}", file=sys.stderr)
        return 1
    return 0
