"""Triton kernels for CUDA devices (see docs/gpu.md). Each has a test against `kernels.reference`
that runs on CPU tensors under Triton's interpreter (`TRITON_INTERPRET=1`).

`triton` is an optional dependency: import the kernel modules only after `available()` says yes.
"""
from __future__ import annotations

import importlib.util
import os


def interpreted() -> bool:
    """Whether Triton runs kernels in its interpreter (on CPU tensors): TRITON_INTERPRET=1."""
    return os.environ.get("TRITON_INTERPRET", "") == "1"


def missing_reason() -> str | None:
    """None when the Triton kernels can run, else why not (one line)."""
    if importlib.util.find_spec("triton") is None:
        return "the triton package is not installed (pip install triton)"
    return None


def available() -> bool:
    return missing_reason() is None
