"""The native CPU kernels (`native/*.cpp`, built into `libgptoss_cpu`), loaded with ctypes.

`native()` returns the loaded library or None. Where it comes from, in order:
  1. the copy `pip install` built beside these sources (setup.py), if it was built from the
     sources now on disk (their hash is compiled in);
  2. a copy in the gptoss cache (`$GPTOSS_CACHE_DIR` or `~/.cache/gptoss`) built from the same
     sources, compiled there on first use if a C++ compiler is present (a few seconds);
  3. none: the package runs on the PyTorch reference path and says so once, with the reason.

The instruction set is chosen at run time (the best the CPU supports); `GPTOSS_CPU_KERNELS`
overrides it: `amx`, `avx512bf16`, `avx512`, `avx2` or `portable` selects one, `off` disables the
native path. Torch is imported first so that the library binds to the OpenMP runtime torch
already loaded: both use one thread pool, and every call runs on `torch.get_num_threads()`.
"""
from __future__ import annotations

import ctypes
import functools
import os
import sys
import warnings
from pathlib import Path

import torch

from .native import build

NATIVE_DIR = Path(build.__file__).resolve().parent
ENV = "GPTOSS_CPU_KERNELS"


class NativeUnavailable(RuntimeError):
    """The native kernels cannot be used; the message says why."""


class MoeArgs(ctypes.Structure):
    _fields_ = [(name, ctypes.c_void_p) for name in
                ("x", "ids", "weights", "w1_blocks", "w1_scales", "b1", "w2_blocks", "w2_scales",
                 "b2", "out")] + \
               [(name, ctypes.c_int64) for name in ("n", "hidden", "inter", "experts", "top_k")] + \
               [("limit", ctypes.c_float), ("alpha", ctypes.c_float), ("threads", ctypes.c_int32)]


class LinearArgs(ctypes.Structure):
    _fields_ = [(name, ctypes.c_void_p) for name in ("x", "w", "bias", "out")] + \
               [(name, ctypes.c_int64) for name in ("n", "rows", "k", "x_stride")] + \
               [("out_f32", ctypes.c_int32), ("threads", ctypes.c_int32)]


class AttnArgs(ctypes.Structure):
    _fields_ = [(name, ctypes.c_void_p) for name in
                ("q", "k", "v", "slots", "key_pos", "q_pos", "sinks", "out")] + \
               [(name, ctypes.c_int64) for name in ("n", "s", "hq", "hkv", "d", "window")] + \
               [("scale", ctypes.c_float), ("threads", ctypes.c_int32)]


def cache_dir() -> Path:
    root = os.environ.get("GPTOSS_CACHE_DIR") or Path.home() / ".cache" / "gptoss"
    return Path(root) / "native" / build.source_hash()


def _hash_of(lib: ctypes.CDLL) -> str:
    lib.gptoss_source_hash.restype = ctypes.c_char_p
    return lib.gptoss_source_hash().decode()


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    """Declare the signatures (only on a library built from the current sources)."""
    lib.gptoss_usable_isas.restype = ctypes.c_char_p
    lib.gptoss_selected.restype = ctypes.c_char_p
    lib.gptoss_select.argtypes = [ctypes.c_char_p]
    for name, args in (("gptoss_moe", MoeArgs), ("gptoss_linear", LinearArgs),
                       ("gptoss_attention", AttnArgs)):
        getattr(lib, name).argtypes = [ctypes.POINTER(args)]
        getattr(lib, name).restype = None
    i64, p = ctypes.c_int64, ctypes.c_void_p
    lib.gptoss_random_normal.argtypes = [ctypes.c_uint64, i64, i64, p, p, ctypes.c_int32]
    lib.gptoss_random_mxfp4.argtypes = [ctypes.c_uint64, i64, i64, ctypes.c_float, p, p, p,
                                        ctypes.c_int32]
    lib.gptoss_mxfp4_quantize.argtypes = [p, i64, p, p, ctypes.c_int32]
    return lib


def _candidates() -> list[Path]:
    return sorted(NATIVE_DIR.glob("_gptoss_cpu*.so")) + [NATIVE_DIR / build.LIB_NAME]


def _load() -> ctypes.CDLL:
    want = build.source_hash()
    for path in _candidates():
        if path.is_file():
            lib = ctypes.CDLL(str(path))
            if _hash_of(lib) == want:  # else built from other sources: not used
                return _bind(lib)
    cached = cache_dir() / build.LIB_NAME
    if not cached.is_file():
        try:
            build.build(cached)
        except (build.BuildError, OSError) as e:
            raise NativeUnavailable(f"they are not built and building them failed: {e}") from None
    lib = ctypes.CDLL(str(cached))
    if _hash_of(lib) != want:
        raise NativeUnavailable(f"{cached} was not built from these sources")
    return _bind(lib)


def _select(lib: ctypes.CDLL, choice: str) -> None:
    if choice in ("", "auto"):
        return
    code = lib.gptoss_select(choice.encode())
    if code == -1:
        raise NativeUnavailable(f"{ENV}={choice!r} names no built instruction set "
                                f"(usable here: {lib.gptoss_usable_isas().decode()})")
    if code == -2:
        raise NativeUnavailable(f"{ENV}={choice!r}: this CPU cannot run it "
                                f"(usable here: {lib.gptoss_usable_isas().decode()})")


@functools.lru_cache(maxsize=None)
def native() -> ctypes.CDLL | None:
    """The loaded library, or None (after one warning saying why) when it cannot be used."""
    choice = os.environ.get(ENV, "auto").strip().lower()
    if choice in ("off", "0", "none", "torch", "reference"):
        return None
    try:
        lib = _load()
        _select(lib, choice)
        return lib
    except (NativeUnavailable, OSError, AttributeError) as e:
        warnings.warn(f"gptoss: native CPU kernels unavailable ({e}); running on the PyTorch "
                      f"path, which is much slower on CPU (packed MXFP4 experts most of all)",
                      RuntimeWarning, stacklevel=2)
        return None


def isa() -> str | None:
    """The instruction set in use, or None on the PyTorch path."""
    lib = native()
    return lib.gptoss_selected().decode() if lib is not None else None


def usable_isas() -> list[str]:
    lib = native()
    return lib.gptoss_usable_isas().decode().split(",") if lib is not None else []


class use_isa:
    """Context manager selecting an instruction set for the calls inside (tests, benchmarks)."""

    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        lib = native()
        if lib is None:
            raise NativeUnavailable("the native kernels are not loaded")
        self.previous = lib.gptoss_selected().decode()
        _select(lib, self.name)
        return self

    def __exit__(self, *exc):
        _select(native(), self.previous)


# the native dense product beats torch's bf16 GEMM up to this many rows of x (benchmarks/
# engine_cpu.py); above it torch's blocked GEMM wins
LINEAR_MAX_ROWS = 16
# on a CPU with AMX, torch's GEMM (oneDNN) runs bf16 on the tile unit: from 8 rows it is faster
# than the native product (2 cores of an Intel Xeon, 16 rows: the 201088-row unembedding 52 ms
# against 117, qkv 0.93 ms against 2.33; at 4 rows the native product still wins or ties)
LINEAR_MAX_ROWS_AMX = 4


@functools.lru_cache(maxsize=1)
def linear_max_rows() -> int:
    """Rows of x up to which linear_or_torch takes the native product on this CPU."""
    return LINEAR_MAX_ROWS_AMX if "amx" in usable_isas() else LINEAR_MAX_ROWS


_reference_only = False


class reference_only:
    """Context manager: inside it the model takes the PyTorch reference path (comparisons)."""

    def __enter__(self):
        global _reference_only
        self.previous, _reference_only = _reference_only, True
        return self

    def __exit__(self, *exc):
        global _reference_only
        _reference_only = self.previous


def usable(*tensors: torch.Tensor) -> bool:
    """Whether the native kernels can take these tensors: loaded, CPU, bf16 (packed uint8
    experts are checked by the caller), and no gradient wanted (the kernels have no backward)."""
    if _reference_only or native() is None:
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    return all(t.device.type == "cpu" and t.dtype == torch.bfloat16 for t in tensors)


def linear_or_torch(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
                    ) -> torch.Tensor:
    """x [..., K] @ weight.T + bias: the native product for a few bf16 rows on CPU, else F.linear."""
    rows = x.numel() // x.shape[-1] if x.numel() else 0
    if (0 < rows <= linear_max_rows() and usable(x, weight) and weight.is_contiguous()
            and (bias is None or bias.dtype == torch.bfloat16)):
        return linear(x.reshape(rows, x.shape[-1]), weight, bias).view(*x.shape[:-1], -1)
    return torch.nn.functional.linear(x, weight, bias)


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _threads() -> int:
    return torch.get_num_threads()


def moe(x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor,
        w1_blocks: torch.Tensor, w1_scales: torch.Tensor, b1: torch.Tensor,
        w2_blocks: torch.Tensor, w2_scales: torch.Tensor, b2: torch.Tensor,
        limit: float, alpha: float) -> torch.Tensor:
    """Routed experts: x [N, H] bf16, ids [N, k] int64, weights [N, k] (the routing weights)
    -> sum_k w_k * expert_k(x) [N, H] bf16 (see native/kernels.h for the contract)."""
    N, H = x.shape
    E, rows1 = w1_blocks.shape[:2]
    if H % 32 or rows1 % 64 or x.dtype != torch.bfloat16:
        raise ValueError(f"native moe: needs bf16 x and MXFP4 shapes, got {x.dtype}, hidden {H}, "
                         f"2*intermediate {rows1}")
    x, ids = x.contiguous(), ids.to(torch.int64).contiguous()
    weights = weights.to(torch.float32).contiguous()
    w1_blocks, w1_scales, w2_blocks, w2_scales = (t.contiguous() for t in
                                                  (w1_blocks, w1_scales, w2_blocks, w2_scales))
    b1, b2 = b1.to(torch.bfloat16).contiguous(), b2.to(torch.bfloat16).contiguous()
    out = torch.empty(N, H, dtype=torch.bfloat16)
    args = MoeArgs(_ptr(x), _ptr(ids), _ptr(weights), _ptr(w1_blocks), _ptr(w1_scales), _ptr(b1),
                   _ptr(w2_blocks), _ptr(w2_scales), _ptr(b2), _ptr(out), N, H, rows1 // 2, E,
                   ids.shape[1], limit, alpha, _threads())
    native().gptoss_moe(ctypes.byref(args))
    return out


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           out_dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """x [N, K] bf16 (rows may be strided), weight [R, K] bf16 -> x @ weight.T + bias [N, R]."""
    N, K = x.shape
    if x.stride(1) != 1:
        x = x.contiguous()
    weight = weight.contiguous()
    if bias is not None:
        bias = bias.to(torch.bfloat16).contiguous()
    out = torch.empty(N, weight.shape[0], dtype=out_dtype)
    args = LinearArgs(_ptr(x), _ptr(weight), _ptr(bias), _ptr(out), N, weight.shape[0], K,
                      x.stride(0), out_dtype == torch.float32, _threads())
    native().gptoss_linear(ctypes.byref(args))
    return out


def attention_decode(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                     slots: torch.Tensor, key_pos: torch.Tensor, q_pos: torch.Tensor,
                     sinks: torch.Tensor, window: int, scale: float) -> torch.Tensor:
    """One query per row over a paged cache read in place: q [N, Hq, D] bf16, k/v cache
    [slots, Hkv, D] bf16, slots/key_pos [N, S] int64 (-1 = empty), q_pos [N] -> [N, Hq*D]."""
    N, Hq, D = q.shape
    if k_cache.dtype != torch.bfloat16 or v_cache.dtype != torch.bfloat16:
        raise ValueError(f"native attention: the cache must be bf16, not {k_cache.dtype}")
    q, k_cache, v_cache = q.contiguous(), k_cache.contiguous(), v_cache.contiguous()
    slots, key_pos = slots.to(torch.int64).contiguous(), key_pos.to(torch.int64).contiguous()
    q_pos = q_pos.to(torch.int64).contiguous()
    sinks = sinks.to(torch.float32).contiguous()
    out = torch.empty(N, Hq * D, dtype=torch.bfloat16)
    args = AttnArgs(_ptr(q), _ptr(k_cache), _ptr(v_cache), _ptr(slots), _ptr(key_pos),
                    _ptr(q_pos), _ptr(sinks), _ptr(out), N, slots.shape[1], Hq, k_cache.shape[1],
                    D, window, scale, _threads())
    native().gptoss_attention(ctypes.byref(args))
    return out


# ---- random weights and MXFP4 quantization (generated checkpoints) ---------------------------
def random_normal(key: int, offset: int, n: int, table: torch.Tensor) -> torch.Tensor:
    """Values offset .. offset+n-1 of the counter-based normal stream `key` (fp32 [n]); the
    contract is mirrored in torch by `weights.random_weights.normal_stream`."""
    out = torch.empty(n, dtype=torch.float32)
    native().gptoss_random_normal(key, offset, n, _ptr(table), _ptr(out), _threads())
    return out


def random_mxfp4(key: int, offset: int, rows: int, cols: int, std: float, table: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """quantize(std * random_normal(key, offset, rows * cols)) as blocks [rows, cols/32, 16] and
    scales [rows, cols/32], without holding the fp32 values."""
    blocks = torch.empty(rows, cols // 32, 16, dtype=torch.uint8)
    scales = torch.empty(rows, cols // 32, dtype=torch.uint8)
    native().gptoss_random_mxfp4(key, offset, rows * cols // 32, std, _ptr(table), _ptr(blocks),
                                 _ptr(scales), _threads())
    return blocks, scales


def mxfp4_quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 x [n * 32] (finite, contiguous) -> (blocks [n, 16], scales [n]) by the rule of
    `kernels.mxfp4.quantize`."""
    n = x.numel() // 32
    blocks = torch.empty(n, 16, dtype=torch.uint8)
    scales = torch.empty(n, dtype=torch.uint8)
    native().gptoss_mxfp4_quantize(_ptr(x), n, _ptr(blocks), _ptr(scales), _threads())
    return blocks, scales
