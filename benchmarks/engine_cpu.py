"""The engine beside transformers on CPU, same random checkpoint, same run.

For each model shape (the tiny preset; two layers shaped like gpt-oss-20b) and mode (`mxfp4`:
the default, packed experts on the native CPU kernels; `mxfp4-torch`: the same on the PyTorch
reference path, GPTOSS_CPU_KERNELS=off; `bf16`: experts dequantized to bf16 at load) it measures
  prefill tok/s      one prompt of P tokens, to its first output token
  decode tok/s b=1   one request, D greedy tokens after the first
  aggregate decode   n requests decoding together (n = 1, 4, 16), all tokens / time
and prints them beside transformers' `GptOssForCausalLM` (bf16; it dequantizes MXFP4 at load on
CPU, so its number is the same in both rows) with the ratio. Checkpoints are written once under
--cache-dir. Timings are wall-clock medians of --repeat runs; the machine should be otherwise idle.

    python benchmarks/engine_cpu.py [--shapes tiny,20b-2] [--modes mxfp4,mxfp4-torch,bf16] [--quick]
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import time
from pathlib import Path

import torch

from gptoss.config import ModelConfig
from gptoss.engine.llm import LLM
from gptoss.engine.sampler import SamplingParams
from gptoss.kernels.cpu import library as native

SHAPES = {"tiny": lambda: ModelConfig.preset("tiny"),
          "20b-2": lambda: ModelConfig.preset("20b").replace(num_layers=2)}
# (prefill length P, decode steps D) per shape and mode; packed MXFP4 is slow in eager PyTorch
SIZES = {("tiny", "mxfp4"): (512, 32), ("tiny", "mxfp4-torch"): (512, 32), ("tiny", "bf16"): (512, 32),
         ("20b-2", "mxfp4"): (256, 16), ("20b-2", "mxfp4-torch"): (64, 4), ("20b-2", "bf16"): (256, 16)}
CONCURRENCY = (1, 4, 16)
PROMPT_LEN = 16  # of each decoding request


def checkpoint(shape: str, cache_dir: Path) -> Path:
    from gptoss.weights.writer import write_random_checkpoint
    out = cache_dir / shape
    if not (out / "config.json").is_file():
        print(f"writing the {shape} checkpoint to {out} ...", flush=True)
        write_random_checkpoint(SHAPES[shape](), out, seed=0, layout="hf-mxfp4", overwrite=True)
    return out


def prompts(n: int, length: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 199_000, (n, length), generator=g).tolist()


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


# ---- gptoss ----------------------------------------------------------------------------------
def ours_prefill(llm: LLM, P: int, repeat: int) -> float:
    params = SamplingParams(temperature=0, max_tokens=1, ignore_eos=True)
    run = [0]

    def once():  # a different prompt each time: no prefix-cache hits
        run[0] += 1
        llm.generate(prompts(1, P, seed=run[0]), params)
    return P / median_time(once, repeat)


def ours_decode(llm: LLM, n: int, D: int, repeat: int) -> float:
    """Aggregate decode tok/s of n requests: time the D steps after every prompt is in."""
    def once():
        params = SamplingParams(temperature=0, max_tokens=D + 1, ignore_eos=True)
        reqs = [llm.add_request(p, params) for p in prompts(n, PROMPT_LEN, seed=1000 + n)]
        while any(not r.output_token_ids for r in reqs):
            llm.step()
        t = time.perf_counter()
        while llm.has_unfinished():
            llm.step()
        return time.perf_counter() - t
    return n * D / statistics.median(once() for _ in range(repeat))


# ---- transformers ----------------------------------------------------------------------------
def hf_model(folder: Path):
    from transformers import GptOssForCausalLM, Mxfp4Config
    return GptOssForCausalLM.from_pretrained(folder, dtype=torch.bfloat16,
                                             quantization_config=Mxfp4Config(dequantize=True)).eval()


@torch.inference_mode()
def hf_prefill(model, P: int, repeat: int) -> float:
    ids = torch.tensor(prompts(1, P, seed=7))
    return P / median_time(lambda: model(ids, logits_to_keep=1, use_cache=True), repeat)


@torch.inference_mode()
def hf_decode(model, n: int, D: int, repeat: int) -> float:
    """Greedy decode with its KV cache, n equal-length prompts batched (no padding)."""
    ids = torch.tensor(prompts(n, PROMPT_LEN, seed=1000 + n))

    def once():
        out = model(ids, use_cache=True, logits_to_keep=1)
        cache, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
        t = time.perf_counter()
        for _ in range(D):
            out = model(nxt, past_key_values=cache, use_cache=True)
            cache, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
        return time.perf_counter() - t
    return n * D / statistics.median(once() for _ in range(repeat))


# ---- the table -------------------------------------------------------------------------------
def sizes_of(shape: str, mode: str, quick: bool) -> tuple[int, int]:
    P, D = SIZES[shape, mode]
    return (max(16, P // 4), max(2, D // 4)) if quick else (P, D)


def measure(shape: str, mode: str, folder: Path, hf: dict, repeat: int, quick: bool) -> list:
    """mode: mxfp4 | mxfp4-torch | bf16 (see the module docstring)."""
    with contextlib.ExitStack() as stack:
        if mode == "mxfp4-torch":
            stack.enter_context(native.reference_only())
        return _measure(shape, mode, folder, hf, repeat, quick)


def _measure(shape: str, mode: str, folder: Path, hf: dict, repeat: int, quick: bool) -> list:
    P, D = sizes_of(shape, mode, quick)
    llm = LLM(folder, dtype=torch.bfloat16, dequantize=mode == "bf16",
              max_num_batched_tokens=max(512, P))
    llm.generate(prompts(1, 8, seed=99), SamplingParams(max_tokens=2))  # warm-up
    rows = [("prefill tok/s", ours_prefill(llm, P, repeat), hf["prefill", P]),
            ("decode tok/s, batch 1", ours_decode(llm, 1, D, repeat), hf["decode", 1, D])]
    for n in CONCURRENCY:
        rows.append((f"aggregate decode tok/s, {n} concurrent", ours_decode(llm, n, D, repeat),
                     hf["decode", n, D]))
    del llm
    gc.collect()
    return [(shape, mode, name, ours, theirs) for name, ours, theirs in rows]


def hf_numbers(folder: Path, sizes: set, repeat: int) -> dict:
    model = hf_model(folder)
    hf_decode(model, 1, 1, 1)  # warm-up
    out = {}
    for P, D in sizes:
        out["prefill", P] = hf_prefill(model, P, repeat)
        for n in CONCURRENCY:
            out["decode", n, D] = hf_decode(model, n, D, repeat)
    del model
    gc.collect()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="tiny,20b-2")
    ap.add_argument("--modes", default="mxfp4,mxfp4-torch,bf16")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="smaller P and D (a smoke run)")
    ap.add_argument("--cache-dir", type=Path, default=Path("/tmp/gptoss-bench"))
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads for both engines (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, native CPU kernels: "
          f"{native.isa()}")
    table = []
    for shape in args.shapes.split(","):
        folder = checkpoint(shape, args.cache_dir)
        modes = args.modes.split(",")
        sizes = {sizes_of(shape, m, args.quick) for m in modes}
        hf = hf_numbers(folder, sizes, args.repeat)
        for mode in modes:
            table += measure(shape, mode, folder, hf, args.repeat, args.quick)
            print_table(table[-5:])
    print("\nall results")
    print_table(table)


def print_table(rows: list) -> None:
    print(f"{'shape':7} {'experts':12} {'metric':38} {'gptoss':>9} {'transformers':>12} {'ratio':>6}")
    for shape, mode, name, ours, theirs in rows:
        print(f"{shape:7} {mode:12} {name:38} {ours:9.1f} {theirs:12.1f} {ours / theirs:6.2f}")
    print(flush=True)


if __name__ == "__main__":
    main()
