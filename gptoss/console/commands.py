"""`gptoss generate` and `gptoss chat`. (The engine, torch included, is imported when a command
runs, not when the `gptoss` parser is built.)"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..tools.base import ToolError
from ..tools.options import add_tool_arguments, tool_factories

EFFORTS = ("low", "medium", "high")
DTYPES = ("bfloat16", "float32", "float16")
CONSOLE_ADAPTER = "lora"  # the engine's name for the one --lora adapter of generate / chat


class ToolsFileError(ValueError):
    """An unreadable or malformed --tools file."""


class SchemaFileError(ValueError):
    """An unreadable or malformed --json-schema file."""


class ToolSetupError(ValueError):
    """A built-in tool (--python, --browser) that cannot start here."""


# ---- shared options ---------------------------------------------------------------------------
def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """--model and the options that shape how it is loaded and cached (shared with `serve`).
    --model is optional only where this install ships the demo model (`resolve_model`)."""
    from ..demo.shipped import packaged_model
    demo = packaged_model() is not None
    p.add_argument("--model", required=not demo, default=None, metavar="M",
                   help="checkpoint folder or Hugging Face repo id (e.g. openai/gpt-oss-20b)"
                        + ("; default: the built-in tiny demo model" if demo else ""))
    p.add_argument("--dtype", choices=DTYPES, default=None,
                   help="compute dtype (default: bfloat16; float32 for the demo model, which was "
                        "trained and scored in float32)")
    p.add_argument("--dequantize", action="store_true",
                   help="hold the experts in --dtype instead of packed MXFP4 (needs more memory)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-model-len", type=int, default=None, metavar="N", help="context limit")
    p.add_argument("--kv-cache-tokens", type=int, default=32768, metavar="N",
                   help="KV positions of the full-attention layers, all requests together")


def _lora_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lora", type=Path, default=None, metavar="DIR",
                   help="answer with this PEFT adapter folder on the model (not merged)")


def _sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-tokens", type=int, default=None, metavar="N")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--json-schema", type=Path, default=None, metavar="FILE",
                   help="a JSON Schema file: the answer is enforced to be JSON of this schema "
                        "(constrained decoding; the schema is also shown to the model)")


def _prompt_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reasoning-effort", choices=EFFORTS, default="medium")
    p.add_argument("--system", default=None, metavar="TEXT",
                   help="system prompt (rendered as the developer message's instructions, as the "
                        "model's chat template does)")
    p.add_argument("--developer", default=None, metavar="TEXT", help="developer instructions")
    p.add_argument("--model-identity", default=None, metavar="TEXT",
                   help="the harmony system message's identity line")
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto")


def register(subparsers) -> None:
    g = subparsers.add_parser("generate", help="generate a reply to one prompt, streamed",
                              description="Render PROMPT as a harmony conversation and stream the "
                                          "reply: reasoning dimmed, the answer plainly.")
    g.add_argument("prompt")
    add_model_arguments(g)
    _lora_arg(g)
    _sampling_args(g)
    _prompt_args(g)
    mode = g.add_mutually_exclusive_group()
    mode.add_argument("--raw", action="store_true",
                      help="PROMPT is plain text (no harmony); print the raw output tokens")
    mode.add_argument("--json", action="store_true", help="print the event stream as JSON lines")
    g.set_defaults(func=run_generate)

    c = subparsers.add_parser("chat", help="interactive chat (REPL)",
                              description="Chat on the terminal. Commands: /reset, /effort "
                                          "low|medium|high, /reasoning show|hide, /help, /quit.")
    add_model_arguments(c)
    _lora_arg(c)
    _sampling_args(c)
    _prompt_args(c)
    c.add_argument("--tools", type=Path, default=None, metavar="FILE",
                   help="JSON list of function tools (OpenAI format); you answer each call")
    c.add_argument("--hide-reasoning", action="store_true", help="start with /reasoning hide")
    add_tool_arguments(c)
    c.set_defaults(func=run_chat)


# ---- building blocks --------------------------------------------------------------------------
def llm_options(args: argparse.Namespace) -> dict:
    """`LLM` keyword arguments from the options of `add_model_arguments` (--model excluded)."""
    import torch

    dtype = args.dtype or ("float32" if getattr(args, "demo_model", False) else "bfloat16")
    return dict(dtype=getattr(torch, dtype), device=args.device, dequantize=args.dequantize,
                max_model_len=args.max_model_len, kv_cache_tokens=args.kv_cache_tokens)


def resolve_model(args: argparse.Namespace) -> str:
    """--model, or (when it was left out) the packaged demo model's folder, saying so once."""
    if args.model is None:
        from ..demo.package import demo_checkpoint
        args.model = str(demo_checkpoint(log=lambda text: print(text, file=sys.stderr)))
        args.demo_model = True
    return args.model


def build_llm(args: argparse.Namespace):
    from ..engine import LLM
    lora = {CONSOLE_ADAPTER: args.lora} if getattr(args, "lora", None) else None
    return LLM(resolve_model(args), lora=lora, **llm_options(args))


def _read_json(path: Path, what: str, error: type[Exception]):
    """The JSON in `path`, or `error` naming the file and `what` it should hold."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path}: cannot read {what} ({exc})") from None


def load_schema(path: Path | None) -> dict | None:
    if path is None:
        return None
    schema = _read_json(path, "a JSON schema", SchemaFileError)
    if not isinstance(schema, dict):
        raise SchemaFileError(f"{path}: a JSON schema must be an object")
    return schema


def response_format(schema: dict | None) -> dict | None:
    """--json-schema as a chat-completions response_format (rendered into the prompt)."""
    if schema is None:
        return None
    return {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}


def sampling_params(args: argparse.Namespace, schema: dict | None = None):
    from ..engine import SamplingParams, StructuredOutput
    structured = StructuredOutput(json_schema=schema) if schema is not None else None
    return SamplingParams(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                          seed=args.seed, max_tokens=args.max_tokens, structured_output=structured,
                          lora=CONSOLE_ADAPTER if getattr(args, "lora", None) else None)


def use_color(args: argparse.Namespace, out=None) -> bool:
    out = out or sys.stdout
    if args.color != "auto":
        return args.color == "always"
    return out.isatty() and not os.environ.get("NO_COLOR")


def instructions(args: argparse.Namespace) -> list[dict]:
    """--system / --developer as leading chat messages."""
    msgs = []
    if args.system:
        msgs.append({"role": "system", "content": args.system})
    if args.developer:
        msgs.append({"role": "developer", "content": args.developer})
    return msgs


def load_tools(path: Path | None) -> list[dict] | None:
    """A JSON list of tools, each `{"type": "function", "function": {...}}` or the bare function
    object `{"name", "description", "parameters"}`; returned in the OpenAI form."""
    if path is None:
        return None
    data = _read_json(path, "a JSON tools list", ToolsFileError)
    if isinstance(data, dict) and isinstance(data.get("tools"), list):
        data = data["tools"]
    if not isinstance(data, list):
        raise ToolsFileError(f"{path}: expected a JSON list of tools")
    tools = []
    for i, tool in enumerate(data):
        if not isinstance(tool, dict):
            raise ToolsFileError(f"{path}: tools[{i}] is not an object")
        tools.append(tool if "function" in tool else {"type": "function", "function": tool})
    return tools


# ---- gptoss generate --------------------------------------------------------------------------
def run_generate(args: argparse.Namespace) -> int:
    from ..engine import AsyncEngine, FinishEvent
    from ..harmony.chat import render_chat
    from .printer import HarmonyPrinter, JsonPrinter, RawPrinter

    schema = load_schema(args.json_schema)
    llm = build_llm(args)
    if args.raw:
        prompt = args.prompt
    else:
        messages = instructions(args) + [{"role": "user", "content": args.prompt}]
        prompt = render_chat(messages, reasoning_effort=args.reasoning_effort,
                             model_identity=args.model_identity,
                             response_format=response_format(schema))
    if args.raw:
        printer = RawPrinter(sys.stdout, llm.tokenizer, llm.eos_token_ids)
    elif args.json:
        printer = JsonPrinter(sys.stdout, llm.tokenizer, llm.eos_token_ids)
    else:
        printer = HarmonyPrinter(sys.stdout, llm.tokenizer, color=use_color(args))
    with AsyncEngine(llm) as engine:
        stream = engine.submit(prompt, sampling_params(args, schema))
        try:
            for event in stream:
                if isinstance(event, FinishEvent):
                    printer.finish(event)
                else:
                    printer.handle(event)
        except KeyboardInterrupt:
            stream.cancel()
            raise
    return 0


# ---- gptoss chat ------------------------------------------------------------------------------
def run_chat(args: argparse.Namespace) -> int:
    from ..engine import AsyncEngine
    from .repl import ChatSession

    tools = load_tools(args.tools)
    schema = load_schema(args.json_schema)
    builtin = _builtin_tools(args)
    try:
        llm = build_llm(args)
        with AsyncEngine(llm) as engine:
            session = ChatSession(engine, sampling_params(args, schema), tools=tools,
                                  response_format=response_format(schema),
                                  instructions=instructions(args), effort=args.reasoning_effort,
                                  show_reasoning=not args.hide_reasoning,
                                  model_identity=args.model_identity, color=use_color(args),
                                  builtin_tools=builtin)
            return session.run()
    finally:
        for tool in builtin:
            tool.close()


def _builtin_tools(args: argparse.Namespace) -> list:
    """--python / --browser as tool objects (one conversation: the session's)."""
    made = []
    try:
        for factory in tool_factories(args).values():
            made.append(factory())
    except ToolError as exc:
        for tool in made:
            tool.close()
        raise ToolSetupError(str(exc)) from None
    return made
