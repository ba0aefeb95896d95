"""Where the trained demo package lives in an install, and what gptoss says when it uses it.
(No heavy imports: the command-line parser reads this to decide whether --model is required.)"""
from __future__ import annotations

from pathlib import Path

PACKAGE_NAME = "gptoss-demo.safetensors"
PACKAGED = Path(__file__).parent / "model" / PACKAGE_NAME  # present once a trained model ships


def packaged_model() -> Path | None:
    """The demo package shipped inside gptoss, or None when this install has none."""
    return PACKAGED if PACKAGED.is_file() else None


DEMO_NAME = "gptoss-demo"
NOTICE = ("gptoss: no --model given, so using the built-in tiny demo model (gptoss-demo: the "
          "gpt-oss architecture at a few million parameters, trained on a small synthetic "
          "corpus; it knows almost nothing). Run a real model with --model openai/gpt-oss-20b "
          "(or openai/gpt-oss-120b).")
