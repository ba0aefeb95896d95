"""`gptoss serve`: the OpenAI-compatible server on the continuous-batching engine."""
from __future__ import annotations

import argparse
import logging
import os

from ..console.commands import add_model_arguments, llm_options, resolve_model


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve", help="serve a model over the OpenAI API (chat completions, responses)",
        description="Serve a model over an OpenAI-compatible HTTP API: /v1/chat/completions, "
                    "/v1/responses, /v1/models, /health, /metrics.")
    add_model_arguments(p)
    p.add_argument("--served-model-name", default=None, metavar="NAME",
                   help="the model name clients use (default: the repo id or folder name)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=os.environ.get("GPTOSS_API_KEY"), metavar="KEY",
                   help="require `Authorization: Bearer KEY` (default: $GPTOSS_API_KEY; none)")
    p.add_argument("--db", default=None, metavar="PATH",
                   help="SQLite file of stored responses (default: the user data directory; "
                        "':memory:' keeps nothing)")
    p.add_argument("--max-num-seqs", type=int, default=16, metavar="N",
                   help="requests decoded together in one step")
    p.add_argument("--max-tokens-default", type=int, default=None, metavar="N",
                   help="output limit for requests that set none (default: the context's room)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .app import create_app, serve
    from .context import ServerOptions, model_names_for
    from ..engine import AsyncEngine
    from .store import default_db_path
    from ..demo.shipped import DEMO_NAME

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    model = resolve_model(args)
    served = args.served_model_name or (DEMO_NAME if getattr(args, "demo_model", False) else None)
    engine = AsyncEngine.from_model(model, max_num_seqs=args.max_num_seqs, **llm_options(args))
    options = ServerOptions(model_names=model_names_for(model, served),
                            api_key=args.api_key, db_path=args.db or default_db_path(),
                            max_tokens_default=args.max_tokens_default)
    app = create_app(engine, options)
    print(f"gptoss serve: {options.model_names[0]} on http://{args.host}:{args.port}/v1 "
          f"(context {engine.context_length} tokens)", flush=True)
    serve(app, args.host, args.port, log_level=args.log_level)
    return 0
