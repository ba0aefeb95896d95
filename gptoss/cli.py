"""The `gptoss` command. Each area registers its own subcommands (`register(subparsers)`)."""
from __future__ import annotations

import argparse
import importlib
import sys

# modules that define `register(subparsers)`; each subcommand sets `func(args) -> int`
COMMAND_MODULES = (
    "gptoss.weights.commands",
    "gptoss.harmony.commands",
    "gptoss.console.commands",
    "gptoss.server.commands",
    "gptoss.finetune.commands",
    "gptoss.tools.browser.commands",
    "gptoss.demo.commands",
)


class UserError(Exception):
    """An error caused by the user's input: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gptoss", description="Run, serve, convert and fine-tune OpenAI's gpt-oss models.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that area is not built yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (UserError, ValueError, OSError) as exc:
        # ValueError covers ConfigError, CheckpointError and other input errors with context
        print(f"gptoss {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
