"""The `python` built-in tool: the model's code runs in the sandbox (sandbox.py), either in a
stateful IPython kernel kept for the conversation (kernel.py) or in a fresh process per call
(`stateless=True`); `backend="docker"` runs each call in a throw-away container instead
(docker_sandbox.py). One PythonTool serves one conversation."""
from __future__ import annotations

import os
import sys

from openai_harmony import Author, Message, Role, TextContent, ToolNamespaceConfig

from .base import ToolError, ToolOutput
from .docker_sandbox import DockerSandbox
from .kernel import KernelSession
from .sandbox import Finished, Sandbox, SandboxConfig

DESCRIPTION = (
    "Use this tool to run Python code in your chain of thought; the user does not see the code. "
    "Use it for your own reasoning (computation, checking), not for code meant for the user.\n\n"
    "Send a message with Python code to python and it runs {where}; python answers with its "
    "output, or reports a timeout after {timeout:g} seconds. The working directory is a private "
    "scratch folder of {disk} MiB that is deleted afterwards. Internet access is disabled.")


class PythonTool:
    name = "python"

    def __init__(self, config: SandboxConfig | None = None, *, stateless: bool = False,
                 backend: str = "sandbox", docker_image: str = "python:3.11-slim") -> None:
        self.sandbox_config = config or SandboxConfig()
        self.stateless = stateless or backend == "docker"
        if backend == "docker":
            self._runner = DockerSandbox(self.sandbox_config, image=docker_image)
            self._kernel = None
        elif backend == "sandbox":
            self._runner = Sandbox(self.sandbox_config)
            self._kernel = None if self.stateless else KernelSession(self._runner)
        else:
            raise ToolError(f"python backend must be 'sandbox' or 'docker', got {backend!r}")
        self._closed = False

    def config(self) -> ToolNamespaceConfig:
        where = ("in a fresh Python process each time (no state is kept between calls; print "
                 "what you need)" if self.stateless else
                 "in a stateful Jupyter notebook (variables persist between calls; the value of "
                 "the last expression is shown)")
        text = DESCRIPTION.format(where=where, timeout=self.sandbox_config.timeout_s,
                                  disk=self.sandbox_config.disk_mb)
        return ToolNamespaceConfig(name="python", description=text, tools=[])

    def run(self, message: Message) -> ToolOutput:
        code = "".join(c.text for c in message.content if isinstance(c, TextContent))
        try:
            result = self._execute(code)
        except (OSError, RuntimeError) as exc:  # the sandbox itself failed, not the model's code
            result = Finished(f"[the python tool failed: {exc}]", None, 0.0, str(exc))
        text = result.output if result.output else "[no output]"
        reply = Message.from_author_and_content(Author.new(Role.TOOL, "python"), text)
        reply = reply.with_recipient("assistant")
        if message.channel:
            reply = reply.with_channel(message.channel)
        item = {"code": code, "outputs": [{"type": "logs", "logs": result.output}]}
        return ToolOutput([reply], item, result.error)

    def _execute(self, code: str) -> Finished:
        if self._closed:
            raise RuntimeError("the python tool was closed")
        if self._kernel is not None:
            return self._kernel.execute(code)
        if isinstance(self._runner, DockerSandbox):
            return self._runner.run(code)
        result = self._runner.run([os.path.realpath(sys.executable), "-"], stdin=code)
        if result.returncode is None:
            result.output += f"\n[{result.error}; the process was killed]"
        elif 0 < result.returncode < 125:  # an uncaught exception: the traceback says it all
            result.error = None
        elif result.error:
            result.output += f"\n[{result.error}]"
        return result

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._kernel is not None:
            self._kernel.close()
        self._runner.close()

    def __enter__(self) -> "PythonTool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
