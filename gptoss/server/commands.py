"""`gptoss serve`: the OpenAI-compatible server on the continuous-batching engine."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from ..console.commands import add_model_arguments, llm_options, resolve_model
from ..tools.options import add_tool_arguments, check_tools, tool_factories
from .context import MAX_REQUEST_BYTES, MAX_TOKENS_DEFAULT


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve", help="serve a model over the OpenAI API (chat completions, responses)",
        description="Serve a model over an OpenAI-compatible HTTP API: /v1/chat/completions, "
                    "/v1/completions, /v1/responses, /v1/models, /tokenize, /detokenize, "
                    "/health, /metrics.")
    add_model_arguments(p)
    p.add_argument("--served-model-name", action="append", default=None, metavar="NAME",
                   help="a model name clients may use; repeat for several (all are listed by "
                        "/v1/models; without it: the repo id or folder name)")
    p.add_argument("--lora", action="append", default=[], metavar="NAME=DIR",
                   help="serve the PEFT adapter folder DIR without merging, to requests whose "
                        "`model` is NAME (repeatable; the base model's name serves the base)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=os.environ.get("GPTOSS_API_KEY"), metavar="KEY",
                   help="require `Authorization: Bearer KEY` (default: $GPTOSS_API_KEY; none)")
    p.add_argument("--db", default=None, metavar="PATH",
                   help="SQLite file of stored responses (default: the user data directory; "
                        "':memory:' keeps nothing)")
    p.add_argument("--max-num-seqs", type=int, default=16, metavar="N",
                   help="requests decoded together in one step (default: 16)")
    p.add_argument("--no-prefix-cache", action="store_true",
                   help="recompute every prompt: a seed then reproduces its reply bit for bit "
                        "whether or not the prompt was seen before (a cached prefix changes "
                        "the numerics of the prompt's tail; docs/engine.md)")
    p.add_argument("--max-tokens-default", type=int, default=MAX_TOKENS_DEFAULT, metavar="N",
                   help="output limit for requests that set none, capped by the context's room "
                        f"(default: {MAX_TOKENS_DEFAULT}; 0: the context's whole room)")
    p.add_argument("--max-request-bytes", type=int, default=MAX_REQUEST_BYTES, metavar="N",
                   help="larger request bodies are refused with a 413 before they are read "
                        f"(default: {MAX_REQUEST_BYTES}, 8 MiB)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    add_tool_arguments(p)
    p.set_defaults(func=run)


def parse_lora(entries: list[str]) -> dict[str, str]:
    """`--lora NAME=DIR` entries -> {NAME: DIR}; ValueError for a malformed or repeated one."""
    adapters: dict[str, str] = {}
    for entry in entries:
        name, sep, folder = entry.partition("=")
        if not sep or not name.strip() or not folder:
            raise ValueError(f"--lora {entry!r}: expected NAME=DIR (an adapter name, then the "
                             "PEFT adapter folder)")
        if name in adapters:
            raise ValueError(f"--lora: the adapter name {name!r} is given twice")
        adapters[name] = folder
    return adapters


def run(args: argparse.Namespace) -> int:
    from .app import create_app, serve
    from .context import ServerOptions, model_names_for
    from ..engine import AsyncEngine
    from .store import ResponseStore, default_db_path
    from ..demo.shipped import DEMO_NAME

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if args.max_tokens_default < 0 or args.max_request_bytes < 1:
        raise ValueError("--max-tokens-default must be >= 0 and --max-request-bytes >= 1")
    lora = parse_lora(args.lora)
    tools = tool_factories(args)
    problem = check_tools(tools)
    if problem is not None:
        print(f"gptoss serve: {problem}", file=sys.stderr)
        return 2
    model = resolve_model(args)
    served = args.served_model_name or ([DEMO_NAME] if getattr(args, "demo_model", False) else None)
    names = model_names_for(model, served)
    listed = min(len(names), len(served or ())) or 1
    options = ServerOptions(model_names=names, listed=listed,
                            api_key=args.api_key, db_path=args.db or default_db_path(),
                            max_tokens_default=args.max_tokens_default or None,
                            max_request_bytes=args.max_request_bytes, lora=lora,
                            builtin_tools=tools)
    # before the model loads: an unusable database is refused at once (StoreError, one line)
    store = ResponseStore(options.db_path)
    try:
        engine = AsyncEngine.from_model(model, max_num_seqs=args.max_num_seqs,
                                        lora=lora or None,
                                        prefix_caching=not args.no_prefix_cache,
                                        **llm_options(args))
    except BaseException:
        store.close()
        raise
    app = create_app(engine, options, store)
    served = ", ".join(options.model_names[:options.listed] + options.lora_names)
    print(f"gptoss serve: {served} on http://{args.host}:{args.port}/v1 "
          f"(context {engine.context_length} tokens)", flush=True)
    serve(app, args.host, args.port, log_level=args.log_level)
    return 0
