"""The command-line options of the built-in tools, shared by `gptoss chat` and `gptoss serve`,
and the tool factories they describe (a factory makes one new tool per conversation)."""
from __future__ import annotations

import argparse
from functools import partial
from typing import Callable

from .base import BuiltinTool, ToolError
from .loop import make_tools
from .sandbox import SandboxConfig

BROWSER_BACKENDS = ("local", "exa", "you")


def add_tool_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("built-in tools")
    g.add_argument("--python", action="store_true",
                   help="let the model run Python in a sandbox (no network, rlimits, private "
                        "folder; see docs/tools.md)")
    g.add_argument("--python-stateless", action="store_true",
                   help="a fresh process per call instead of a kernel kept for the conversation")
    g.add_argument("--python-timeout", type=float, default=30.0, metavar="S",
                   help="wall-clock limit of one call (default 30)")
    g.add_argument("--python-memory-mb", type=int, default=2048, metavar="MB",
                   help="address-space limit of the sandboxed process (default 2048)")
    g.add_argument("--python-backend", choices=("sandbox", "docker"), default="sandbox",
                   help="sandbox: Linux namespaces + rlimits (default); docker: a container per "
                        "call (needs a running docker daemon)")
    g.add_argument("--python-unsafe", action="store_true",
                   help="where namespaces are not allowed, run code with rlimits only (NO network "
                        "or file isolation)")
    g.add_argument("--browser", action="store_true", help="let the model search and read pages")
    g.add_argument("--browser-backend", choices=BROWSER_BACKENDS, default="local",
                   help="local: an index built by `gptoss index DIR`; exa / you: their HTTP APIs "
                        "(key from EXA_API_KEY / YDC_API_KEY)")
    g.add_argument("--browser-index", default=None, metavar="DIR",
                   help="the local backend's index (made by `gptoss index DIR`)")


def python_options(args: argparse.Namespace) -> dict:
    config = SandboxConfig(timeout_s=args.python_timeout, memory_mb=args.python_memory_mb,
                           allow_unsafe=args.python_unsafe)
    return {"config": config, "stateless": args.python_stateless, "backend": args.python_backend}


def browser_options(args: argparse.Namespace) -> dict:
    options = {"backend": args.browser_backend}
    if args.browser_index is not None:
        options["index"] = args.browser_index
    return options


def tool_factories(args: argparse.Namespace) -> dict[str, Callable[[], BuiltinTool]]:
    """namespace -> a factory of a new tool, for the tools the options enable."""
    names = [n for n, on in (("python", args.python),
                                               ("browser", args.browser or args.browser_index)) if on]
    options = {"python": python_options(args), "browser": browser_options(args)}
    return {name: partial(_one, name, options) for name in names}


def _one(name: str, options: dict) -> BuiltinTool:
    return make_tools([name], **options)[0]


def check_tools(factories: dict[str, Callable[[], BuiltinTool]]) -> str | None:
    """Make and close one of each tool: a misconfiguration (ToolError) found before serving,
    as a message; None when every tool starts."""
    for name, factory in factories.items():
        try:
            factory().close()
        except ToolError as exc:
            return f"--{name}: {exc}"
    return None
