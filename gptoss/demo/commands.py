"""`gptoss demo-train`: build the packaged demo model from scratch (docs/demo.md)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo-train", help="train the tiny demo model from scratch (corpus, training, package)",
        description="Generate the demo corpus, train the demo preset from random weights with "
                    "full-parameter fine-tuning, pack it (gptoss-demo.safetensors, at most 30 "
                    "MB), expand it and score it on held-out prompts. Copy OUT/gptoss-demo."
                    "safetensors to gptoss/demo/model/ to make it the default model.")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--records", type=int, default=None, metavar="N",
                   help="training conversations (one epoch; default: the recipe's)")
    p.add_argument("--first-records", type=int, default=None, metavar="N",
                   help="conversations of a first stage trained before the main corpus (0: "
                        "none; default: the recipe's)")
    p.add_argument("--curriculum", choices=("echo", "arith", "arith-values"), default=None,
                   help="the first stage's corpus: echo (repeating items), arith (additions "
                        "and echo records) or arith-values (the same, the echo records "
                        "repeating tool values too); default: the recipe's")
    p.add_argument("--heldout", type=int, default=None, metavar="N",
                   help="held-out conversations scored at the end")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--recipe", choices=("shipped", "v2", "v1", "copy"), default="shipped",
                   help="option set: shipped (the packaged model's, default), v2 and v1 (earlier "
                        "shipped models') or copy (a first stage of echo records only, 5 time "
                        "zones); docs/demo.md; the flags below override it")
    p.add_argument("--number-init", choices=("digits", "random"), default=None,
                   help="initial rows of the number tokens 0-999: random or digits (built from "
                        "shared per-digit vectors, docs/demo.md)")
    p.add_argument("--entity-init", choices=("codes", "random"), default=None,
                   help="initial rows of the tokens of the tools' categorical values (symbols, "
                        "currencies, zones, names...): random or codes (built from shared "
                        "per-place vectors, docs/demo.md)")
    p.add_argument("--echo-weight", type=int, default=None, metavar="W",
                   help="echo records' weight in the main mix (the other tasks' sum to 100)")
    p.add_argument("--wide-zones", action=argparse.BooleanOptionalAction, default=None,
                   help="get_time calls about 25 time zones, not 5 (default: the recipe's)")
    p.add_argument("--preset", default="demo", help="model shape (a config preset)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch threads (default: torch's; 1 is faster on a busy machine)")
    p.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation")
    p.add_argument("--force", action="store_true", help="replace a previous run in --out")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in --out from its latest checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_demo_train)


def _demo_train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .train import RECIPES, DemoTrainOptions, clean, demo_train
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.resume:
        if not args.force:
            raise ValueError(f"{out}: folder is not empty; choose another, pass --force to "
                             "replace it or --resume to continue it")
        clean(out)
    changes = {k: v for k, v in (("records", args.records), ("heldout", args.heldout),
                                 ("batch_size", args.batch_size), ("lr", args.lr),
                                 ("number_init", args.number_init),
                                 ("entity_init", args.entity_init),
                                 ("first_records", args.first_records),
                                 ("curriculum", args.curriculum),
                                 ("echo_weight", args.echo_weight),
                                 ("wide_zones", args.wide_zones))
               if v is not None}
    base = replace(DemoTrainOptions(seed=args.seed, preset=args.preset,
                                    evaluate=not args.no_eval), **RECIPES[args.recipe])
    options = replace(base, **changes)
    if options.evaluate:
        try:
            import jsonschema  # noqa: F401
        except ModuleNotFoundError:
            raise ValueError("the held-out evaluation needs jsonschema: pip install "
                             "'gptoss[demo]' (or pass --no-eval)") from None
    if args.threads is not None:
        import torch
        torch.set_num_threads(args.threads)
    summary = demo_train(out, options, resume=args.resume, progress=not args.quiet)
    print(json.dumps({k: summary[k] for k in ("steps", "train_seconds", "tokens_per_second",
                                              "final_loss", "package_bytes")}))
    print(f"wrote {out / 'gptoss-demo.safetensors'}"
          + (f" and {out / 'MODEL_CARD.md'}" if options.evaluate else ""))
    return 0
