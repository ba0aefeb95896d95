"""`gptoss tokenize` and `gptoss render`: the tokenizer and the harmony renderer on stdin/stdout."""
from __future__ import annotations

import argparse
import json
import sys

from gptoss.harmony.chat import render_chat
from gptoss.harmony.tokenizer import get_tokenizer

# request fields `gptoss render` passes on; other chat-completions fields (model, stream, …) are
# accepted and ignored
RENDER_FIELDS = ("tools", "tool_choice", "reasoning_effort", "response_format", "model_identity",
                 "current_date", "builtin_tools")


class CommandInputError(ValueError):
    """Unreadable input on stdin (the dispatcher prints it as one line and exits with 2)."""


def _read_stdin() -> str:
    """All of stdin as UTF-8, byte for byte (no newline translation)."""
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is None:  # a text stream (tests, embedding)
        return sys.stdin.read()
    data = buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CommandInputError(f"stdin is not valid UTF-8 (byte {exc.start})") from None


def tokenize(args: argparse.Namespace) -> int:
    text = _read_stdin()
    allowed = "all" if args.allow_special else frozenset()
    print(json.dumps(get_tokenizer().encode(text, allowed_special=allowed)))
    return 0


def render(args: argparse.Namespace) -> int:
    try:
        request = json.loads(_read_stdin())
    except json.JSONDecodeError as exc:
        raise CommandInputError(f"stdin is not JSON: {exc}") from None
    if not isinstance(request, dict) or "messages" not in request:
        raise CommandInputError('expected a JSON object with "messages" '
                                "(a chat-completions request)")
    options = {k: request[k] for k in RENDER_FIELDS if k in request}
    token_ids = render_chat(request["messages"], **options)
    text = get_tokenizer().decode(token_ids)
    print(json.dumps({"token_ids": token_ids, "text": text}))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "tokenize", help="text on stdin → JSON list of o200k_harmony token ids",
        description="Read UTF-8 text from stdin (exactly, trailing newline included) and print its "
                    "token ids as a JSON list.")
    p.add_argument("--allow-special", action="store_true",
                   help="parse special-token text such as <|start|> as special tokens "
                        "(default: encode it as plain text)")
    p.set_defaults(func=tokenize)
    p = subparsers.add_parser(
        "render", help="chat-completions JSON request on stdin → harmony prompt",
        description='Read a chat-completions style request {"messages": [...], "tools": ..., '
                    '"tool_choice": ..., "reasoning_effort": ..., "response_format": ..., '
                    '"model_identity": ..., "current_date": ..., "builtin_tools": ...} from stdin '
                    'and print {"token_ids": [...], "text": "..."}: the prompt rendered for '
                    "completion (ending with <|start|>assistant).")
    p.set_defaults(func=render)
