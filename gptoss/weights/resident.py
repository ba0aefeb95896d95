"""Move memory-mapped weights into private memory backed by transparent huge pages.

Decoding streams every weight once per token. Through a file mapping those reads go in 4 KiB
pages (a TLB miss every 4 KiB, and the hardware prefetchers stop at each page); in private
memory advised `MADV_HUGEPAGE` they go in 2 MiB pages. Each tensor is copied, then its file pages
are dropped from this process (`MADV_DONTNEED`: the mapping stays valid and would re-read the
file if touched), so peak RSS is the model plus one tensor, never the checkpoint twice.
Linux only; elsewhere (or if madvise fails) tensors stay as they are.
"""
from __future__ import annotations

import ctypes
import mmap
import sys

import torch

MADV_DONTNEED, MADV_HUGEPAGE = 4, 14
_HUGE = 2 << 20
_PAGE = mmap.PAGESIZE


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _libc()


def _advise(start: int, end: int, advice: int) -> None:
    if end > start:
        _LIBC.madvise(start, end - start, advice)


def _advise_huge(t: torch.Tensor) -> None:
    a = t.data_ptr()
    _advise(-(-a // _HUGE) * _HUGE, (a + t.nbytes) // _HUGE * _HUGE, MADV_HUGEPAGE)


def huge_zeros(shape: tuple[int, ...], dtype: torch.dtype, device="cpu") -> torch.Tensor:
    """torch.zeros, in huge pages on CPU (advised before the zeros touch the pages): for large
    buffers read all over on every step, such as the KV cache."""
    if _LIBC is None or torch.device(device).type != "cpu":
        return torch.zeros(shape, dtype=dtype, device=device)
    out = torch.empty(shape, dtype=dtype)
    if out.nbytes >= _HUGE:
        _advise_huge(out)
    return out.zero_()


def make_resident(tensor: torch.Tensor) -> torch.Tensor:
    """A private copy of a memory-mapped CPU tensor in huge pages; its file pages dropped."""
    if _LIBC is None or tensor.device.type != "cpu" or tensor.nbytes < _HUGE:
        return tensor
    out = torch.empty_like(tensor, memory_format=torch.contiguous_format)
    _advise_huge(out)
    out.copy_(tensor)
    s = tensor.data_ptr()
    # whole pages inside the tensor only: a neighbour's pages stay as they are
    _advise(-(-s // _PAGE) * _PAGE, (s + tensor.nbytes) // _PAGE * _PAGE, MADV_DONTNEED)
    return out
