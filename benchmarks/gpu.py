"""gptoss on one GPU beside transformers (and vLLM if importable), same checkpoint, same run.

    python benchmarks/gpu.py [--dir /tmp/gptoss-20b-random] [--skip-transformers] [--skip-vllm]
    python benchmarks/gpu.py --dry-run      # the whole flow on CPU, tiny shape, under a minute

Built to run once on a freshly started GPU machine without network: it installs nothing and first
checks what it needs (CUDA, triton, disk, GPU memory), failing with one line if something is
missing. Then it
  1. writes a 20b-shaped random hf-mxfp4 checkpoint, generating the weights on the GPU;
  2. measures the device's copy bandwidth (read + write of a 4 GiB buffer, CUDA events);
  3. gptoss: load time, prefill tok/s (one 2048-token prompt), decode tok/s at batch 1, 8, 64
     (decode time = time of 1+D tokens less time of 1 token, CUDA graphs on), and batch 1's
     fraction of the roofline: bandwidth / bytes read per token (bf16 non-expert weights, the 4
     routed experts packed, the KV cache);
  4. transformers (bf16, experts dequantized: its MXFP4 kernels come from the network) and vLLM
     on the same checkpoint, each in try/except so the table prints even if a peer fails;
  5. the 120b memory plan with 128k context against 80 GB (no 65 GB of weights written).
The targets (issue 14): batch-1 decode >= 60 % of the roofline and >= 3x transformers,
batch-64 aggregate >= 20x batch 1.
"""
from __future__ import annotations

import argparse
import gc
import math
import shutil
import sys
import time
import traceback
from pathlib import Path

import torch

from gptoss import memory_plan
from gptoss.config import ModelConfig
from gptoss.weights import layouts

BATCHES = (1, 8, 64)


class Missing(RuntimeError):
    """Something the run needs is not on this machine (one line, no traceback)."""


# ---- setup -------------------------------------------------------------------------------------
def preflight(args, config: ModelConfig) -> torch.device:
    if args.dry_run:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise Missing("no CUDA device visible to PyTorch (torch.version.cuda = "
                      f"{torch.version.cuda}); use --dry-run on a CPU machine")
    from gptoss.kernels import triton as triton_kernels
    if triton_kernels.missing_reason():
        raise Missing(triton_kernels.missing_reason())
    need = memory_plan.weight_bytes(config)
    free_disk = shutil.disk_usage(Path(args.dir).parent if not Path(args.dir).exists()
                                  else args.dir).free
    if free_disk < need * 1.1 and not (Path(args.dir) / "config.json").is_file():
        raise Missing(f"{args.dir}: {free_disk / 2**30:.1f} GiB free on disk, the checkpoint "
                      f"needs {need / 2**30:.1f} GiB")
    free_gpu, _ = torch.cuda.mem_get_info()
    if free_gpu < need * 1.3:
        raise Missing(f"the GPU has {free_gpu / 2**30:.1f} GiB free, the run needs about "
                      f"{need * 1.3 / 2**30:.1f} GiB")
    return torch.device("cuda")


def _std(name: str, config: ModelConfig) -> tuple[float, float]:
    """(std, mean) as weights/random_weights.py draws them (a sane, non-trivial model)."""
    from gptoss.weights.random_weights import _std as canonical_std
    if name.endswith("mlp1_weight"):
        return 2.5 / math.sqrt(config.hidden_size), 0.0
    if name.endswith("mlp2_weight"):
        return 1 / math.sqrt(config.intermediate_size), 0.0
    return canonical_std(name, config)


def random_stream(config: ModelConfig, device: torch.device, seed: int = 0):
    """(canonical name, CPU tensor) with dense experts drawn on `device`, quantized there."""
    from gptoss.weights.loader import with_experts
    g = torch.Generator(device=device).manual_seed(seed)

    def dense():
        for spec in layouts.canonical_specs(config, packed=False):
            std, mean = _std(spec.name, config)
            yield spec.name, (torch.randn(spec.shape, generator=g, device=device,
                                          dtype=torch.float32) * std + mean).to(spec.dtype)
    for name, tensor in with_experts(dense(), packed=True):
        yield name, tensor.cpu()


def write_checkpoint(config: ModelConfig, folder: Path, device: torch.device) -> float:
    """Write (or reuse) the random checkpoint; returns the seconds it took."""
    from gptoss.weights import writer
    if (folder / "config.json").is_file():
        return 0.0
    t = time.perf_counter()
    out = writer.prepare_output(folder, overwrite=True)
    canonical = layouts.canonical_specs(config, packed=True)
    specs = writer._write_tensors(out, layouts.HF_MXFP4, config, canonical,
                                  random_stream(config, device), None, progress=False)
    writer._write_configs(out, layouts.HF_MXFP4, config, specs)
    return time.perf_counter() - t


def copy_bandwidth(device: torch.device, size: int) -> float:
    """Bytes per second of a device copy (each byte read once and written once)."""
    src = torch.empty(size // 2, dtype=torch.bfloat16, device=device).fill_(1)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = math.inf
    for _ in range(5):
        t = _now(device)
        dst.copy_(src)
        best = min(best, _now(device) - t)
    del src, dst
    return 2 * size / best


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def bytes_per_token(config: ModelConfig, context: int) -> int:
    """Bytes a batch-1 decode step reads: non-expert weights (not the embedding table, one row
    of it), the routed experts (packed, with biases) and the KV cache of `context` positions."""
    c, k = config, config.experts_per_token
    total = 0
    for spec in layouts.canonical_specs(c, packed=True):
        if spec.name == "embedding.weight":
            total += c.hidden_size * 2
        elif ".mlp.mlp" in spec.name:
            total += spec.nbytes * k // c.num_experts
        else:
            total += spec.nbytes
    per_position = 2 * c.num_kv_heads * c.head_dim * 2
    for layer in range(c.num_layers):
        total += per_position * (min(context, c.window(layer)) if c.window(layer) else context)
    return total


def prompts(n: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, min(vocab, 199_000), (n, length), generator=g).tolist()


# ---- gptoss ------------------------------------------------------------------------------------
def run_gptoss(folder: Path, config: ModelConfig, device: torch.device, sizes) -> dict:
    from gptoss.engine.llm import LLM
    from gptoss.engine.sampler import SamplingParams
    from gptoss.weights.loader import load_model
    prefill_len, prompt_len, decode = sizes
    out = {}
    t = _now(device)
    model = load_model(folder, device=device)
    out["load s"] = _now(device) - t
    llm = LLM(model, max_num_seqs=max(BATCHES), max_num_batched_tokens=prefill_len,
              kv_cache_tokens=max(BATCHES) * (prompt_len + decode + 16) + prefill_len,
              max_model_len=prefill_len + 64, prefix_caching=False)

    def timed(batch: list[list[int]], tokens: int) -> float:
        params = SamplingParams(temperature=0, max_tokens=tokens, ignore_eos=True)
        t0 = _now(device)
        llm.generate(batch, params)
        return _now(device) - t0
    long_prompt = prompts(1, prefill_len, config.vocab_size, seed=1)
    timed(long_prompt, 1)  # warm-up: kernels compiled for the prefill shapes
    out["prefill tok/s"] = prefill_len / timed(long_prompt, 1)
    for b in BATCHES:
        batch = prompts(b, prompt_len, config.vocab_size, seed=10 + b)
        timed(batch, 2)
        first = timed(batch, 1)
        out[f"decode b={b} tok/s"] = b * decode / max(timed(batch, decode + 1) - first, 1e-9)
    del llm, model
    _free(device)
    return out


# ---- peers -------------------------------------------------------------------------------------
def run_transformers(folder: Path, config: ModelConfig, device: torch.device, sizes) -> dict:
    from transformers import GptOssForCausalLM, Mxfp4Config
    prefill_len, prompt_len, decode = sizes
    decode = min(decode, 16)  # its MoE runs every expert densely: slow, and the figure is stable
    out = {}
    t = _now(device)
    model = GptOssForCausalLM.from_pretrained(
        folder, dtype=torch.bfloat16, device_map=str(device),
        quantization_config=Mxfp4Config(dequantize=True)).eval()
    out["load s"] = _now(device) - t
    with torch.inference_mode():
        ids = torch.tensor(prompts(1, prefill_len, config.vocab_size, seed=1), device=device)
        model(ids[:, :64], logits_to_keep=1)
        t = _now(device)
        model(ids, logits_to_keep=1)
        out["prefill tok/s"] = prefill_len / (_now(device) - t)
        for b in BATCHES:
            ids = torch.tensor(prompts(b, prompt_len, config.vocab_size, seed=10 + b),
                               device=device)
            o = model(ids, use_cache=True, logits_to_keep=1)
            cache, nxt = o.past_key_values, o.logits[:, -1].argmax(-1, keepdim=True)
            t = _now(device)
            for _ in range(decode):
                o = model(nxt, past_key_values=cache, use_cache=True)
                cache, nxt = o.past_key_values, o.logits[:, -1].argmax(-1, keepdim=True)
            out[f"decode b={b} tok/s"] = b * decode / (_now(device) - t)
    del model
    _free(device)
    return out


def run_vllm(folder: Path, config: ModelConfig, device: torch.device, sizes) -> dict:
    if device.type != "cuda":
        raise Missing("vLLM runs on CUDA only")
    import vllm
    prefill_len, prompt_len, decode = sizes
    out = {}
    t = time.perf_counter()
    llm = vllm.LLM(model=str(folder), skip_tokenizer_init=True, gpu_memory_utilization=0.5,
                   max_model_len=prefill_len + 64, enforce_eager=False)
    out["load s"] = time.perf_counter() - t

    def timed(batch, tokens):
        params = vllm.SamplingParams(temperature=0, max_tokens=tokens, ignore_eos=True,
                                     detokenize=False)
        t0 = time.perf_counter()
        llm.generate([{"prompt_token_ids": p} for p in batch], params, use_tqdm=False)
        return time.perf_counter() - t0
    long_prompt = prompts(1, prefill_len, config.vocab_size, seed=1)
    timed(long_prompt, 1)
    out["prefill tok/s"] = prefill_len / timed(long_prompt, 1)
    for b in BATCHES:
        batch = prompts(b, prompt_len, config.vocab_size, seed=10 + b)
        first = timed(batch, 1)
        out[f"decode b={b} tok/s"] = b * decode / max(timed(batch, decode + 1) - first, 1e-9)
    del llm
    _free(device)
    return out


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def attempt(name: str, fn, *args) -> dict:
    """Run one engine's measurements; a failure becomes a note in the table, not an exit."""
    t = time.perf_counter()
    try:
        result = fn(*args)
    except Missing as exc:
        return {"error": f"skipped: {exc}"}
    except ImportError as exc:
        return {"error": f"not importable: {exc}"}
    except Exception as exc:  # noqa: BLE001 - reported in the table, with the traceback on stderr
        traceback.print_exc()
        return {"error": f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"}
    print(f"[{name}: {time.perf_counter() - t:.0f} s]", flush=True)
    return result


# ---- the table ---------------------------------------------------------------------------------
def print_table(results: dict[str, dict], roofline: float) -> None:
    metrics = ["load s", "prefill tok/s"] + [f"decode b={b} tok/s" for b in BATCHES]
    names = list(results)
    print(f"\n{'metric':22}" + "".join(f"{n:>14}" for n in names))
    for m in metrics:
        cells = [results[n].get(m) for n in names]
        print(f"{m:22}" + "".join(f"{c:14.1f}" if c is not None else f"{'-':>14}"
                                   for c in cells))
    ours = results.get("gptoss", {})
    b1 = ours.get("decode b=1 tok/s")
    if b1:
        print(f"{'b=1 / roofline':22}{b1 / roofline:14.1%}   (roofline {roofline:.0f} tok/s)")
        hf = results.get("transformers", {}).get("decode b=1 tok/s")
        if hf:
            print(f"{'b=1 vs transformers':22}{b1 / hf:13.1f}x")
        b64 = ours.get(f"decode b={BATCHES[-1]} tok/s")
        if b64:
            print(f"{'b=64 / b=1':22}{b64 / b1:13.1f}x")
    for n in names:
        if "error" in results[n]:
            print(f"{n}: {results[n]['error']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dir", default="/tmp/gptoss-20b-random", help="checkpoint folder")
    p.add_argument("--dry-run", action="store_true", help="tiny shape on CPU, small sizes")
    p.add_argument("--skip-transformers", action="store_true")
    p.add_argument("--skip-vllm", action="store_true")
    args = p.parse_args(argv)
    if args.dry_run:
        config = ModelConfig.preset("tiny").replace(vocab_size=2048)
        sizes, copy_size = (64, 8, 4), 1 << 26
        args.dir = args.dir + "-dry-run"
    else:
        config = ModelConfig.preset("20b")
        sizes, copy_size = (2048, 128, 64), 4 << 30
    started = time.perf_counter()
    try:
        device = preflight(args, config)
    except Missing as exc:
        print(f"benchmarks/gpu.py: cannot run: {exc}", file=sys.stderr)
        return 2
    print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}; "
          f"torch {torch.__version__}", flush=True)
    wrote = write_checkpoint(config, Path(args.dir), device)
    print(f"checkpoint {args.dir}: written in {wrote:.0f} s", flush=True)
    bandwidth = copy_bandwidth(device, copy_size)
    per_token = bytes_per_token(config, sizes[1] + sizes[2] // 2)
    roofline = bandwidth / per_token
    print(f"copy bandwidth {bandwidth / 1e9:.0f} GB/s; batch-1 decode reads "
          f"{per_token / 1e9:.2f} GB/token -> roofline {roofline:.0f} tok/s", flush=True)
    folder = Path(args.dir)
    results = {"gptoss": attempt("gptoss", run_gptoss, folder, config, device, sizes)}
    if not args.skip_transformers:
        results["transformers"] = attempt("transformers", run_transformers, folder, config,
                                          device, sizes)
    if not args.skip_vllm:
        results["vllm"] = attempt("vllm", run_vllm, folder, config, device, sizes)
    print_table(results, roofline)
    plan = memory_plan.plan(ModelConfig.preset("120b"), context=131072, batch=1)
    print(f"\n120b memory plan, packed experts, 128k context, against 80 GB:\n"
          f"{plan.describe(80 * 10**9)}")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
