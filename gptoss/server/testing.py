"""A scripted stand-in for the engine and a live server in a thread, for tests and benchmarks.

`StubEngine` has the engine's public face (engine_client.py) and emits the same events as the
real one (a token event per token, a finish event with usage). What it "generates": with a
structured output (compiled by the engine's own `constraint_for`) or a logits processor, random
logits through that constraint — a random-weight model in miniature; otherwise the tokens of
`reply(prompt_text)`, a harmony reply written as text (`<|channel|>final<|message|>…<|return|>`).
`LiveServer` runs uvicorn on 127.0.0.1 on a free port in a background thread; `free_port` and
`healthy` serve tests that start a server as a process of its own.
"""
from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from typing import Callable

import numpy as np
import torch

from ..config import GENERATION_EOS_TOKEN_IDS
from ..engine import (EngineStats, FinishEvent, SamplingParams, TokenEvent, TokenLogprobs, Usage,
                      output_limit)
from ..engine.constraints import constraint_for
from ..harmony.tokenizer import VOCAB_SIZE, get_tokenizer

BLOCK = 16  # positions per pretend KV block


def echo_reply(prompt_text: str) -> str:
    """Reasoning, then a final answer echoing the last user message."""
    users = re.findall(r"<\|start\|>user<\|message\|>(.*?)<\|end\|>", prompt_text, flags=re.S)
    last = users[-1] if users else ""
    return (f"<|channel|>analysis<|message|>The user said: {last}<|end|>"
            f"<|start|>assistant<|channel|>final<|message|>Echo: {last}<|return|>")


class StubStream:
    def __init__(self, engine: "StubEngine", request_id: str, prompt: list[int],
                 params: SamplingParams, processor) -> None:
        self.engine, self.request_id, self.prompt = engine, request_id, prompt
        self.params, self.processor = params, processor
        self.cancelled = False
        self.task: asyncio.Task | None = None
        self.output: list[int] = []
        self.max_tokens = params.max_tokens or engine.context_length - len(prompt)
        seed = params.seed if params.seed is not None else 0
        self.rng = np.random.default_rng(seed)
        self.script = engine.tokenizer.encode(engine.reply(engine.tokenizer.decode(prompt)),
                                              allowed_special="all")

    def cancel(self) -> None:
        self.cancelled = True

    def _next_token(self) -> int:
        if self.processor is None:
            return self.script[len(self.output)] if len(self.output) < len(self.script) else 200002
        logits = torch.from_numpy(self.rng.standard_normal(VOCAB_SIZE, dtype=np.float32))
        return int(torch.argmax(self.processor(self.output, logits)))

    def _logprobs(self, token: int) -> TokenLogprobs | None:
        if self.params.logprobs is None:
            return None
        top = [(token, -0.25)] + [(t, -2.0 - k) for k, t in enumerate((15, 16, 17, 18))]
        return TokenLogprobs(token, -0.25, top[:self.params.logprobs])

    def _start(self) -> None:
        """Generate in a task of its own, as the real engine does in its thread: a consumer that
        stops reading does not stop the generation; only `cancel()` does. (Started on the first
        read, on the consumer's event loop: `submit` may run in a worker thread.)"""
        self.queue: asyncio.Queue = asyncio.Queue()
        self.engine.active[self.request_id] = self
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        reason = "abort"
        try:
            while not self.cancelled:
                await asyncio.sleep(self.engine.delay)
                if self.cancelled:
                    break
                token = self._next_token()
                self.output.append(token)
                self.queue.put_nowait(TokenEvent(self.request_id, token, self._logprobs(token)))
                stop_ids = self.params.stop_token_ids or GENERATION_EOS_TOKEN_IDS
                if token in stop_ids or len(self.output) >= self.max_tokens:
                    reason = "stop" if token in stop_ids else "length"
                    break
        finally:
            self.engine.active.pop(self.request_id, None)
            self.queue.put_nowait(FinishEvent(self.request_id, reason,
                                              Usage(len(self.prompt), len(self.output))))

    async def __aiter__(self):
        if self.task is None:
            self._start()
        while True:
            event = await self.queue.get()
            yield event
            if isinstance(event, FinishEvent):
                return


class StubEngine:
    """The engine interface, scripted. `delay` seconds pass before each token."""

    def __init__(self, reply: Callable[[str], str] = echo_reply, *, delay: float = 0.0,
                 context_length: int = 4096, kv_blocks: int = 4096) -> None:
        self.tokenizer = get_tokenizer()
        self.reply, self.delay = reply, delay
        self.context_length, self.kv_blocks = context_length, kv_blocks
        self.eos_token_ids = tuple(GENERATION_EOS_TOKEN_IDS)
        self.active: dict[str, StubStream] = {}
        self.submitted: list[tuple[list[int], SamplingParams]] = []
        self._ids = 0

    def submit(self, prompt: list[int], params: SamplingParams, *, logits_processor=None) -> StubStream:
        max_tokens = output_limit(self.context_length, len(prompt), params.max_tokens)
        if params.structured_output is not None:
            logits_processor = constraint_for(self.tokenizer, params.structured_output, max_tokens)
        self._ids += 1
        self.submitted.append((list(prompt), params))
        return StubStream(self, f"stub-{self._ids}", list(prompt), params, logits_processor)

    def stats(self) -> EngineStats:
        used = sum(-(-(len(s.prompt) + len(s.output)) // BLOCK) for s in list(self.active.values()))
        return EngineStats(waiting=0, running=len(self.active), kv_blocks_used=used,
                           kv_blocks_total=self.kv_blocks)

    def close(self) -> None:
        for stream in list(self.active.values()):
            stream.cancel()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for a server started as a process)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(base_url: str, timeout: float = 2.0) -> bool:
    """Whether `GET base_url/health` answers 200."""
    import urllib.request

    try:
        with urllib.request.urlopen(base_url + "/health", timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


class LiveServer:
    """`with LiveServer(app) as server:` serves on `server.base_url` (127.0.0.1, a free port)."""

    def __init__(self, app) -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="gptoss-test-server", daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def main(argv: list[str] | None = None) -> None:
    """`python -m gptoss.server.testing --port N --db PATH [--delay S] [--words N]`: a server on
    the stub engine, as a process of its own (for tests that kill and restart it); each reply is
    a short reasoning and `--words` words of answer."""
    import argparse

    import uvicorn

    from .app import create_app
    from .context import ServerOptions

    p = argparse.ArgumentParser(prog="python -m gptoss.server.testing")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--delay", type=float, default=0.001)
    p.add_argument("--words", type=int, default=20)
    args = p.parse_args(argv)
    words = " ".join(f"w{k}" for k in range(args.words))

    def reply(prompt_text: str) -> str:
        return (f"<|channel|>analysis<|message|>Thinking.<|end|><|start|>assistant"
                f"<|channel|>final<|message|>{words}<|return|>")

    app = create_app(StubEngine(reply, delay=args.delay),
                     ServerOptions(model_names=("tiny",), db_path=args.db))
    print("ready", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
