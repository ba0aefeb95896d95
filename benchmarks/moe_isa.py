"""The routed-expert (MoE) kernel per instruction set, on gpt-oss-20b expert shapes.

    python benchmarks/moe_isa.py [--layers 6] [--tokens 1 2 4 8 16 64 128] [--repeat 3]

Random MXFP4 experts (32 experts of 2880 x 5760 and 2880 x 2880, scale bytes 115-125 as in
real checkpoints) for `--layers` layers, called in turn so that each call reads its experts
from DRAM, not cache (the decode situation); N tokens routed top-4 at random. Prints, per
instruction set usable here, milliseconds per layer and the packed expert bytes read per second
(each used expert once per call), and the ratio to avx512bf16, all measured in this run.
`GPTOSS_AMX_MIN_TOKENS` sets where the AMX path starts (default 3 tokens on an expert).
"""
from __future__ import annotations

import argparse
import platform
import time

import torch

from gptoss.kernels.cpu import library as native

H, I, E, K = 2880, 2880, 32, 4


def layer(seed: int):
    g = torch.Generator().manual_seed(seed)
    b1 = torch.randint(0, 256, (E, 2 * I, H // 32, 16), dtype=torch.uint8, generator=g)
    s1 = torch.randint(115, 126, (E, 2 * I, H // 32), dtype=torch.uint8, generator=g)
    b2 = torch.randint(0, 256, (E, H, I // 32, 16), dtype=torch.uint8, generator=g)
    s2 = torch.randint(115, 126, (E, H, I // 32), dtype=torch.uint8, generator=g)
    bias1 = (torch.randn(E, 2 * I, generator=g) * 0.1).bfloat16()
    bias2 = (torch.randn(E, H, generator=g) * 0.1).bfloat16()
    return b1, s1, bias1, b2, s2, bias2


def expert_bytes(ids: torch.Tensor) -> int:
    per = 2 * I * H // 32 * 17 + H * I // 32 * 17
    return len(set(ids.flatten().tolist())) * per


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--tokens", type=int, nargs="+", default=[1, 2, 4, 8, 16, 64, 128])
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    if native.native() is None:
        raise SystemExit("the native kernels are not available here")
    isas = [i for i in native.usable_isas() if i in ("amx", "avx512bf16", "avx512", "avx2")]
    layers = [layer(i) for i in range(a.layers)]
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    print(f"{cpu}, {torch.get_num_threads()} threads; {a.layers} layers of 20b experts rotated")
    head = f"{'tokens':>6} " + " ".join(f"{i + ' ms':>14} {'GB/s':>6}" for i in isas)
    print(head + (f" {'amx/avx512bf16':>15}" if "amx" in isas and "avx512bf16" in isas else ""))
    for n in a.tokens:
        g = torch.Generator().manual_seed(n)
        x = torch.randn(n, H, generator=g).bfloat16()
        ids = torch.stack([torch.randperm(E, generator=g)[:K] for _ in range(n)])
        w = torch.softmax(torch.randn(n, K, generator=g), -1)
        row, ms = f"{n:>6} ", {}
        for isa in isas:
            with native.use_isa(isa):
                for L in layers[:2]:  # warm-up
                    native.moe(x, ids, w, *L, 7.0, 1.702)
                best = float("inf")
                for _ in range(a.repeat):
                    t0 = time.perf_counter()
                    for L in layers:
                        native.moe(x, ids, w, *L, 7.0, 1.702)
                    best = min(best, (time.perf_counter() - t0) / len(layers))
            ms[isa] = best * 1e3
            row += f"{best * 1e3:>14.2f} {expert_bytes(ids) / best / 1e9:>6.1f}"
        if "amx" in ms and "avx512bf16" in ms:
            row += f" {ms['avx512bf16'] / ms['amx']:>15.2f}"
        print(row, flush=True)


if __name__ == "__main__":
    main()
