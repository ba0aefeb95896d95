"""Load a full 20b-shaped checkpoint on CPU, hold a 4k-token conversation; peak RSS must stay < 16 GB.

    python benchmarks/load_20b.py [--dir checkpoints/gpt-oss-20b-random] [--tokens 4] [--conversation 4096]

Generates the random hf-mxfp4 checkpoint once (about 13 GB), then, in a fresh subprocess, loads
it with `gptoss.load_model` (packed MXFP4 experts, bf16 elsewhere, memory-mapped), runs one
forward pass, touches every weight page so the RSS figure covers the whole model, and finally
runs the engine (`LLM`, native CPU kernels) over one conversation of --conversation tokens
(a prompt of that length less 64, then 64 generated tokens), with its KV cache.
The peer, transformers on CPU, dequantizes every expert to bf16; its memory need is computed,
not run, since it exceeds this machine.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

BUDGET_GB = 16.0


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def _rss() -> int:
    import psutil
    return psutil.Process().memory_info().rss


def child(folder: str, tokens: int, conversation: int) -> None:
    import torch

    from gptoss.weights.loader import load_model
    t0 = time.perf_counter()
    model = load_model(folder, device="cpu", dtype=torch.bfloat16)
    load_s, rss_load = time.perf_counter() - t0, _rss()
    ids = torch.randint(0, 199998, (1, tokens), generator=torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    with torch.inference_mode():
        logits = model(ids)
    forward_s, rss_forward = time.perf_counter() - t0, _rss()
    assert logits.shape == (1, tokens, model.config.vocab_size) and torch.isfinite(logits).all()
    with torch.inference_mode():  # fault in every page of every weight (4 KiB stride)
        for t in model.state_dict().values():
            flat = t.reshape(-1).view(torch.uint8) if t.dtype != torch.uint8 else t.reshape(-1)
            flat[::4096].sum()
    rss_touched = _rss()
    del logits, t, flat
    conv_s = 0.0
    if conversation:  # the same model in the engine, with its KV cache
        from gptoss.engine.llm import LLM
        from gptoss.engine.sampler import SamplingParams
        llm = LLM(model, kv_cache_tokens=max(8192, conversation))
        prompt = torch.randint(0, 199998, (conversation - 64,),
                               generator=torch.Generator().manual_seed(1)).tolist()
        t0 = time.perf_counter()
        out = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=64, ignore_eos=True))
        conv_s = time.perf_counter() - t0
        assert len(out[0].token_ids) == 64
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    print(json.dumps(dict(load_s=load_s, forward_s=forward_s, rss_load=rss_load,
                          rss_forward=rss_forward, rss_touched=rss_touched, peak=peak,
                          conversation_s=conv_s)))


def ensure_checkpoint(folder: Path, seed: int) -> float | None:
    """Write the checkpoint unless a complete one is there; return seconds spent (None if kept)."""
    from gptoss.config import ModelConfig
    from gptoss.weights.writer import write_random_checkpoint
    index = folder / "model.safetensors.index.json"
    if index.is_file() and all((folder / f).is_file() for f in
                               set(json.loads(index.read_text())["weight_map"].values())):
        return None
    t0 = time.perf_counter()
    write_random_checkpoint(ModelConfig.preset("20b"), folder, seed=seed, overwrite=True)
    return time.perf_counter() - t0


def dense_bf16_bytes() -> int:
    from gptoss.config import ModelConfig
    from gptoss.weights.layouts import canonical_specs
    return sum(s.nbytes for s in canonical_specs(ModelConfig.preset("20b"), packed=False))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="checkpoints/gpt-oss-20b-random")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tokens", type=int, default=4)
    ap.add_argument("--conversation", type=int, default=4096,
                    help="tokens of the engine conversation after loading (0: none)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.dir, args.tokens, args.conversation)
        return 0
    folder = Path(args.dir)
    gen_s = ensure_checkpoint(folder, args.seed)
    size = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    run = subprocess.run([sys.executable, __file__, "--child", "--dir", str(folder),
                          "--tokens", str(args.tokens), "--conversation", str(args.conversation)],
                         capture_output=True, text=True)
    if run.returncode:
        print(run.stderr, file=sys.stderr)
        return run.returncode
    r = json.loads(run.stdout.strip().splitlines()[-1])
    peer = f"needs ~{_gb(dense_bf16_bytes())} (bf16 experts): not run"
    rows = [("checkpoint on disk (hf-mxfp4)", _gb(size), "same files"),
            ("generate (once)", "kept" if gen_s is None else f"{gen_s:.0f} s", "-"),
            ("load_model (mmap, packed experts)", f"{r['load_s']:.2f} s", peer),
            (f"forward, {args.tokens} tokens, bf16", f"{r['forward_s']:.2f} s", "-"),
            ("RSS after load", _gb(r["rss_load"]), "-"),
            ("RSS after forward", _gb(r["rss_forward"]), "-"),
            ("RSS with every weight touched", _gb(r["rss_touched"]), "-"),
            (f"engine: {args.conversation}-token conversation", f"{r['conversation_s']:.0f} s", "-"),
            ("peak RSS (getrusage)", _gb(r["peak"]), "-")]
    width = max(len(a) for a, _, _ in rows)
    print(f"{'gpt-oss-20b-shaped, CPU':<{width}} | {'gptoss':>12} | transformers (peer)")
    print("-" * (width + 50))
    for a, b, c in rows:
        print(f"{a:<{width}} | {b:>12} | {c}")
    ok = r["peak"] < BUDGET_GB * 1e9
    print(f"peak RSS {_gb(r['peak'])} {'<' if ok else '>='} {BUDGET_GB:.0f} GB budget: "
          f"{'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
