"""Load test of the OpenAI-compatible server: N concurrent streaming clients.

For each N (default 1, 8, 32) every client sends `--requests` streamed chat completions of
`--max-tokens` tokens one after another; the table gives requests/s, output tokens/s, time to
first token (p50/p99) and inter-token latency (gaps between streamed chunks, p50/p99).

Beside the server it measures the same load on the engine directly (`AsyncEngine.submit`, no
HTTP, no JSON), which is the HTTP layer's overhead baseline. (vLLM, the usual peer, needs a GPU
and cannot run on this CPU machine.)

    python benchmarks/serve_load.py                      # `gptoss serve` on a tiny random checkpoint
    python benchmarks/serve_load.py --model DIR          # `gptoss serve` on a checkpoint folder
    python benchmarks/serve_load.py --url http://127.0.0.1:8000 --served-model M   # a running server
    python benchmarks/serve_load.py --soak               # 64 concurrent streams, 200 sequential

`--soak` is the robustness run: 64 concurrent streams (chat, stored responses and completions in
turn) twice (the first round also grows the engine's batch buffers to 64 requests), then 200
sequential requests (the same three, not streamed), counting errors and the server process's
resident memory (RSS) before and after each phase: after the first round it should stay flat.
"""
from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."
# A random-weight model writes no harmony header of its own, so its text would only surface when
# the request ends; a string-valued JSON answer (a grammar constraint) makes it write the header
# and stream its text token by token, as a trained model does. Both paths use the same format.
FORMAT = {"type": "json_schema", "json_schema": {"name": "story", "schema": {"type": "string"}}}


@dataclass
class Run:
    wall: float = 0.0
    requests: int = 0
    tokens: int = 0
    ttft: list[float] = field(default_factory=list)
    itl: list[float] = field(default_factory=list)

    def tick(self, start: float, last: float | None) -> float:
        """Record a streamed chunk's arrival: TTFT for the first, an inter-token gap after."""
        now = time.perf_counter()
        if last is None:
            self.ttft.append(now - start)
        else:
            self.itl.append(now - last)
        return now


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def http_client(client, model: str, args, run: Run, i: int) -> None:
    for k in range(args.requests):
        start = time.perf_counter()
        last = None
        stream = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": f"{PROMPT} ({i}.{k})"}],
            max_tokens=args.max_tokens, temperature=1.0, seed=i * 1000 + k, stream=True,
            stream_options={"include_usage": True}, response_format=FORMAT,
            extra_body={"max_reasoning_tokens": 0})
        async for chunk in stream:
            if chunk.usage is not None:
                run.tokens += chunk.usage.completion_tokens
            if not chunk.choices or chunk.choices[0].delta.role == "assistant":
                continue
            last = run.tick(start, last)
        run.requests += 1


async def engine_client(engine, prompt_ids, args, run: Run, i: int) -> None:
    from gptoss.engine import FinishEvent, SamplingParams, StructuredOutput, TokenEvent
    from gptoss.harmony.output import HarmonyOutput, PartDelta

    structured = StructuredOutput(json_schema={"type": "string"}, max_reasoning_tokens=0)
    for k in range(args.requests):
        start, last = time.perf_counter(), None
        params = SamplingParams(max_tokens=args.max_tokens, seed=i * 1000 + k,
                                structured_output=structured)
        output = HarmonyOutput(engine.tokenizer)
        async for event in engine.submit(prompt_ids, params):
            if isinstance(event, TokenEvent):
                if any(isinstance(p, PartDelta) and p.text for p in output.feed(event.token_id)):
                    last = run.tick(start, last)
            elif isinstance(event, FinishEvent):
                run.tokens += event.usage.completion_tokens
        run.requests += 1


async def measure(make_client, n: int) -> Run:
    run = Run()
    start = time.perf_counter()
    await asyncio.gather(*(make_client(run, i) for i in range(n)))
    run.wall = time.perf_counter() - start
    return run


def row(name: str, n: int, run: Run) -> str:
    ms = 1000.0
    return (f"| {name:<14} | {n:>3} | {run.requests / run.wall:8.2f} | {run.tokens / run.wall:9.1f} | "
            f"{pct(run.ttft, .5) * ms:8.0f} | {pct(run.ttft, .99) * ms:8.0f} | "
            f"{pct(run.itl, .5) * ms:7.1f} | {pct(run.itl, .99) * ms:7.1f} |")


async def soak_one(client, model: str, k: int, stream: bool, max_tokens: int) -> None:
    """One request of the soak mix (k % 3: chat, stored responses, completions); raises on an
    error or a reply that did not end properly."""
    content = f"{PROMPT} ({k})"
    kind = k % 3
    if kind == 0:
        r = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": content}], max_tokens=max_tokens,
            seed=k, stream=stream)
        finishes = ([c.choices[0].finish_reason async for c in r if c.choices] if stream
                    else [r.choices[0].finish_reason])
        ok = finishes[-1] in ("stop", "length")
    elif kind == 1:
        r = await client.responses.create(model=model, input=content, max_output_tokens=max_tokens,
                                          stream=stream)
        status = ([e.response.status async for e in r if e.type.startswith("response.")
                   and hasattr(e, "response")][-1] if stream else r.status)
        ok = status in ("completed", "incomplete")
    else:
        r = await client.completions.create(model=model, prompt=content, max_tokens=max_tokens,
                                            seed=k, stream=stream)
        finishes = ([c.choices[0].finish_reason async for c in r if c.choices] if stream
                    else [r.choices[0].finish_reason])
        ok = finishes[-1] in ("stop", "length")
    if not ok:
        raise RuntimeError(f"request {k} did not end properly")


async def soak(client, model: str, args, pid: int | None) -> None:
    import psutil

    def rss() -> str:
        return f"{psutil.Process(pid).memory_info().rss / 2**20:8.1f}" if pid else "     n/a"

    async def counted(k: int, stream: bool) -> int:
        try:
            await soak_one(client, model, k, stream, args.max_tokens)
            return 0
        except Exception as exc:  # counted and shown: the run goes on
            print(f"  request {k}: {type(exc).__name__}: {exc}", flush=True)
            return 1

    for k in range(3):  # warm up each path once
        await counted(k, True)
    print("| phase                   | requests | errors |  wall s | RSS start MiB | RSS end MiB |")
    print("|-------------------------|----------|--------|---------|---------------|-------------|")
    for name, n, concurrent in (("64 concurrent streams", 64, True),
                                ("64 concurrent, again", 64, True),
                                ("200 sequential requests", 200, False)):
        start_rss, start = rss(), time.perf_counter()
        if concurrent:
            errors = sum(await asyncio.gather(*(counted(k, True) for k in range(n))))
        else:
            errors = 0
            for k in range(n):
                errors += await counted(k, False)
        print(f"| {name:<23} | {n:>8} | {errors:>6} | {time.perf_counter() - start:7.1f} | "
              f"{start_rss:>13} | {rss():>11} |", flush=True)


def tiny_checkpoint() -> str:
    from gptoss.config import ModelConfig
    from gptoss.weights.writer import write_random_checkpoint
    return str(write_random_checkpoint(ModelConfig.preset("tiny"), tempfile.mkdtemp() + "/tiny",
                                       seed=0, progress=False))


def spawn_server(model: str, args) -> tuple[str, subprocess.Popen]:
    """`gptoss serve` in a process of its own (the load generator must not share its GIL)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = tempfile.mkdtemp() + "/responses.sqlite3" if args.soak else ":memory:"
    proc = subprocess.Popen([sys.executable, "-m", "gptoss.cli", "serve", "--model", model,
                             "--served-model-name", "bench", "--port", str(port), "--db", db,
                             "--kv-cache-tokens", str(args.kv_cache_tokens),
                             "--max-num-seqs", str(args.max_num_seqs), "--log-level", "warning"])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            urllib.request.urlopen(url + "/health", timeout=2).close()
            return url, proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("gptoss serve did not come up")


async def bench(args) -> None:
    import openai

    proc = engine = None
    if args.url:
        base_url, model = args.url.rstrip("/"), args.served_model
    else:
        from gptoss.engine import AsyncEngine
        checkpoint = args.model or tiny_checkpoint()
        (base_url, proc), model = spawn_server(checkpoint, args), "bench"
        if not args.soak:
            engine = AsyncEngine.from_model(checkpoint, kv_cache_tokens=args.kv_cache_tokens,
                                            max_num_seqs=args.max_num_seqs)
    client = openai.AsyncOpenAI(base_url=base_url + "/v1", api_key=args.api_key, max_retries=0,
                                timeout=600)
    if args.soak:
        try:
            print(f"soak: up to {args.max_tokens} output tokens a request\n")
            await soak(client, model, args, proc.pid if proc is not None else None)
        finally:
            await client.close()
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)
        return
    print(f"{args.requests} requests per client, up to {args.max_tokens} output tokens each\n")
    print("| path           |   N |  req/s   | out tok/s | TTFT p50 | TTFT p99 | ITL p50 | ITL p99 |")
    print("|----------------|-----|----------|-----------|----------|----------|---------|---------|")
    try:
        await measure(lambda r, i: http_client(client, model, args, r, i), 1)  # warm up
        if engine is not None:  # warm up too (the engine builds its grammar compiler once)
            from gptoss.harmony.chat import render_chat
            ids = render_chat([{"role": "user", "content": PROMPT}])
            await measure(lambda r, i: engine_client(engine, ids, args, r, i), 1)
        for n in args.clients:
            run = await measure(lambda r, i: http_client(client, model, args, r, i), n)
            print(row("server (HTTP)", n, run), flush=True)
            if engine is not None:
                run = await measure(lambda r, i: engine_client(engine, ids, args, r, i), n)
                print(row("engine direct", n, run), flush=True)
    finally:
        await client.close()
        if engine is not None:
            engine.close()
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    print("\n(times in ms; TTFT = to the first streamed answer text; ITL = gaps between streamed chunks)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default=None, help="a running server (else `gptoss serve` is started)")
    p.add_argument("--served-model", default="bench", help="model name at --url")
    p.add_argument("--api-key", default="unused")
    p.add_argument("--model", default=None, help="checkpoint to serve (default: a tiny random one)")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--requests", type=int, default=2, help="requests per client")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--kv-cache-tokens", type=int, default=16384)
    p.add_argument("--max-num-seqs", type=int, default=32)
    p.add_argument("--soak", action="store_true",
                   help="the robustness run: 64 concurrent streams, 200 sequential requests, "
                        "errors and server RSS")
    asyncio.run(bench(p.parse_args()))


if __name__ == "__main__":
    main()
