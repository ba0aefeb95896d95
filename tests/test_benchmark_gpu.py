"""benchmarks/gpu.py --dry-run: the GPU benchmark's whole flow on CPU, tiny shape (so the script
that runs once on a GPU machine is known to work end to end before it gets there)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(tmp_path, capsys, *flags):
    assert _load().main(["--dry-run", "--dir", str(tmp_path / "ckpt"), "--skip-vllm", *flags]) == 0
    return capsys.readouterr().out


def test_dry_run_prints_the_table_and_the_120b_plan(tmp_path, capsys):
    out = _run(tmp_path, capsys, "--skip-transformers")
    assert (tmp_path / "ckpt-dry-run" / "config.json").is_file()
    rows = {line.split()[0] + " " + line.split()[1]: line.split()[2:]
            for line in out.splitlines() if line.startswith(("prefill", "decode"))}
    for b in (1, 8, 64):
        assert float(rows[f"decode b={b}"][1]) > 0
    assert float(rows["prefill tok/s"][0]) > 0
    assert "b=1 / roofline" in out
    assert "fits: +8.14 GiB" in out  # the 120b plan against 80 GB


@pytest.mark.slow  # transformers on CPU as well: about 40 s here
def test_dry_run_with_transformers(tmp_path, capsys):
    out = _run(tmp_path, capsys)
    assert "b=1 vs transformers" in out


def test_bytes_per_token_of_20b_match_the_published_figure():
    from gptoss.config import ModelConfig
    gb = _load().bytes_per_token(ModelConfig.preset("20b"), context=0) / 1e9
    assert 3.5 < gb < 3.9  # GPT-OSS-FACTS: about 3.7 GB per decoded token at batch 1
