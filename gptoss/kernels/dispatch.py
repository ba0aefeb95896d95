"""The explicit choice of GPU kernels: `kernels="auto" | "triton" | "reference"`.

- "auto" (the default): the Triton kernels for CUDA tensors when `triton` is installed, else the
  PyTorch reference;
- "triton": the Triton kernels for CUDA tensors (and for CPU tensors in Triton's interpreter,
  TRITON_INTERPRET=1, which is how the tests run them without a GPU);
- "reference": the PyTorch path (`kernels/reference.py`) on CUDA.
CPU tensors outside the interpreter always keep the CPU path (`kernels/cpu`), whatever the choice.
Modules carry the choice in their `kernels` attribute (`Transformer.use_kernels` sets it).
"""
from __future__ import annotations

import torch

from . import triton as triton_kernels

KERNELS = ("auto", "triton", "reference")


class KernelChoiceError(ValueError):
    """An unknown kernel choice, or "triton" where triton is not installed."""


def check_choice(choice: str) -> str:
    if choice not in KERNELS:
        raise KernelChoiceError(f"kernels must be one of {KERNELS}, got {choice!r}")
    if choice == "triton" and triton_kernels.missing_reason():
        raise KernelChoiceError(f"kernels='triton' was chosen, but "
                                f"{triton_kernels.missing_reason()}")
    return choice


def use_triton(choice: str, *tensors: torch.Tensor) -> bool:
    """Whether a module with kernel choice `choice` runs these tensors through Triton: on CUDA
    (or in the interpreter with "triton"), triton installed, the activation (the first tensor)
    in bf16 (the kernels' storage type) and no gradient wanted (they have no backward)."""
    if choice == "reference" or not tensors or tensors[0].dtype != torch.bfloat16:
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    cuda = all(t.is_cuda for t in tensors)
    if choice == "auto":
        return cuda and triton_kernels.available()
    return cuda or (triton_kernels.interpreted() and not any(t.is_cuda for t in tensors))
