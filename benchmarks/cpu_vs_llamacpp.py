"""gptoss beside llama.cpp on CPU: the same 20b-shaped checkpoint, the same run, one table.

    python benchmarks/cpu_vs_llamacpp.py                      # full 20b, both engines
    python benchmarks/cpu_vs_llamacpp.py --layers 2 --quick   # a 2-layer 20b-shaped smoke run
    python benchmarks/cpu_vs_llamacpp.py --engines llamacpp   # one engine only

Everything it needs is made once and kept under --cache-dir (default /work/bench-cache):
  20b/ (or 20b-L<N>/)   `gptoss random-checkpoint --preset 20b --seed 0` (hf-mxfp4 layout)
  llama-venv/           a scratch venv: CPU torch, llama.cpp's converter requirements, and
                        llama-cpp-python built from its sdist for this machine's CPU
  sdist/                that sdist, unpacked; its vendor/llama.cpp converter and gguf-py are used
  gguf/                 the checkpoint converted with convert_hf_to_gguf.py --outtype bf16
                        (experts stay MXFP4, as the checkpoint stores them)
  logs/                 every build, conversion and engine log
Each engine runs in its own subprocess, one after the other (llama.cpp under the scratch venv's
Python, gptoss under this one), with the same random prompt ids. Reported per engine: prefill tok/s
(one prompt of 128 or 512 tokens, to its first output token), decode tok/s at batch 1 after 128
and 2048 tokens of context (greedy, median of --repeat runs of --decode-tokens tokens), the
aggregate decode tok/s of 16 requests (gptoss only), the model load time and the process's peak
RSS. Also printed: the CPU, the thread count, a measured memory read bandwidth, and the bytes a
decoded token reads (non-expert weights, the active experts' packed bytes, the unembedding) with
the bandwidth roofline that implies.
"""
from __future__ import annotations

# Only the standard library at module level: this file also runs as the llama.cpp child under
# the scratch venv, which has no gptoss.
import argparse
import json
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

DEFAULT_CACHE = Path("/work/bench-cache")
DEFAULT_LLAMA_CPP_VERSION = "0.3.36"
PREFILL_LENGTHS = (128, 512)
SHORT_CONTEXT, LONG_CONTEXT = 128, 2048
AGGREGATE_REQUESTS, AGGREGATE_PROMPT = 16, 128
VOCAB_FOR_PROMPTS = 199_000          # random prompt ids are drawn from [0, 199000): ordinary tokens
RESULT_TAG = "RESULT "
HERE = Path(__file__).resolve()


class BenchError(Exception):
    """A failure worth one clear line (and where to look), not a traceback."""


# ---- shared by both children --------------------------------------------------------------
def prompt_ids(length: int, seed: int) -> list[int]:
    """The same ids in every process and engine (stdlib generator, no torch)."""
    rng = random.Random(seed)
    return [rng.randrange(VOCAB_FOR_PROMPTS) for _ in range(length)]


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def say(msg: str) -> None:
    print(msg, flush=True)


def emit(result: dict) -> None:
    print(RESULT_TAG + json.dumps(result), flush=True)


def plan_from(args: argparse.Namespace) -> dict:
    contexts = [SHORT_CONTEXT] + ([] if args.skip_long_context else [LONG_CONTEXT])
    return dict(prefill=list(PREFILL_LENGTHS), contexts=contexts, decode_tokens=args.decode_tokens,
                repeat=args.repeat, threads=args.threads, aggregate=not args.skip_aggregate)


# ---- the llama.cpp child (runs under the scratch venv) ------------------------------------
def child_llamacpp(gguf: str, plan: dict) -> None:
    import numpy as np
    from llama_cpp import Llama, __version__

    D, threads = plan["decode_tokens"], plan["threads"]
    n_ctx = -(-(max(plan["contexts"] + plan["prefill"]) + D + 64) // 256) * 256
    t0 = time.perf_counter()
    llm = Llama(model_path=gguf, n_ctx=n_ctx, n_batch=512, n_ubatch=512, n_threads=threads,
                n_threads_batch=threads, flash_attn=plan["flash_attn"], use_mmap=True,
                verbose=False)
    load_s = time.perf_counter() - t0
    n_vocab = llm.n_vocab()

    def feed(tokens: list[int]) -> int:
        """Evaluate tokens after what is in the context; return the greedy next token."""
        llm.eval(tokens)
        return int(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,)).argmax())

    def prefill_s(P: int, seed: int) -> float:
        ids = prompt_ids(P, seed)
        llm.reset()  # n_tokens = 0; eval drops the KV cells from there on
        t = time.perf_counter()
        feed(ids)
        return time.perf_counter() - t

    def decode_s(C: int, seed: int) -> float:
        llm.reset()
        tok = feed(prompt_ids(C, seed))
        t = time.perf_counter()
        for _ in range(D):
            tok = feed([tok])
        return time.perf_counter() - t

    feed_warm = prompt_ids(16, 99)
    llm.reset()
    feed(feed_warm)
    feed([1])
    out = dict(engine="llama.cpp", version=__version__, load_s=load_s, n_ctx=n_ctx,
               flash_attn=plan["flash_attn"], prefill={}, decode={})
    for P in plan["prefill"]:
        times = [prefill_s(P, seed=P * 100 + r) for r in range(plan["repeat"])]
        out["prefill"][P] = P / statistics.median(times)
        say(f"  llama.cpp prefill {P}: {out['prefill'][P]:.1f} tok/s")
    for C in plan["contexts"]:
        times = [decode_s(C, seed=C * 100 + 50 + r) for r in range(plan["repeat"])]
        out["decode"][C] = D / statistics.median(times)
        say(f"  llama.cpp decode after {C}: {out['decode'][C]:.2f} tok/s")
    out["peak_rss"] = peak_rss_bytes()
    emit(out)


# ---- the gptoss child (runs under this Python) --------------------------------------------
def child_gptoss(folder: str, plan: dict) -> None:
    import torch

    import gptoss
    from gptoss import LLM, SamplingParams

    torch.set_num_threads(plan["threads"])
    D = plan["decode_tokens"]
    t0 = time.perf_counter()
    llm = LLM(folder, dtype=torch.bfloat16, max_num_batched_tokens=512,
              max_num_seqs=AGGREGATE_REQUESTS)
    load_s = time.perf_counter() - t0
    greedy = dict(temperature=0, ignore_eos=True)

    def prefill_s(P: int, seed: int) -> float:
        t = time.perf_counter()
        llm.generate([prompt_ids(P, seed)], SamplingParams(max_tokens=1, **greedy))
        return time.perf_counter() - t

    def decode_s(prompts: list[list[int]]) -> float:
        """Time the D steps after every request has its first token."""
        params = SamplingParams(max_tokens=D + 1, **greedy)
        reqs = [llm.add_request(p, params) for p in prompts]
        while any(not r.output_token_ids for r in reqs):
            llm.step()
        t = time.perf_counter()
        while llm.has_unfinished():
            llm.step()
        return time.perf_counter() - t

    llm.generate([prompt_ids(16, 99)], SamplingParams(max_tokens=2, **greedy))  # warm-up
    out = dict(engine="gptoss", version=gptoss.__version__, load_s=load_s, prefill={}, decode={})
    for P in plan["prefill"]:
        times = [prefill_s(P, seed=P * 100 + r) for r in range(plan["repeat"])]
        out["prefill"][P] = P / statistics.median(times)
        say(f"  gptoss prefill {P}: {out['prefill'][P]:.1f} tok/s")
    for C in plan["contexts"]:
        times = [decode_s([prompt_ids(C, seed=C * 100 + 50 + r)]) for r in range(plan["repeat"])]
        out["decode"][C] = D / statistics.median(times)
        say(f"  gptoss decode after {C}: {out['decode'][C]:.2f} tok/s")
    if plan["aggregate"]:
        n = AGGREGATE_REQUESTS
        times = [decode_s([prompt_ids(AGGREGATE_PROMPT, seed=10_000 + 100 * r + i) for i in range(n)])
                 for r in range(plan["repeat"])]
        out["aggregate"] = n * D / statistics.median(times)
        say(f"  gptoss aggregate decode, {n} requests: {out['aggregate']:.2f} tok/s")
    out["peak_rss"] = peak_rss_bytes()
    emit(out)


# ---- the tokenizer and GGUF helpers (run under the scratch venv) ---------------------------
def child_tokenizer(vocab_file: str, out_dir: str) -> None:
    """Write tokenizer.json / tokenizer_config.json for o200k_harmony, which the converter needs
    (gptoss checkpoints carry no tokenizer files; gptoss itself reads tiktoken ranks)."""
    from transformers.convert_slow_tokenizer import TikTokenConverter

    from gptoss_harmony_specials import O200K_PATTERN, SPECIALS  # written beside it by the parent
    names = [name for name, _ in sorted(SPECIALS.items(), key=lambda kv: kv[1])]
    conv = TikTokenConverter(vocab_file=vocab_file, pattern=O200K_PATTERN,
                             additional_special_tokens=names)
    tok = conv.converted()
    first = min(SPECIALS.values())
    for name, token_id in SPECIALS.items():  # the converter appends specials after the ranks
        got = tok.token_to_id(name)
        if got != token_id:
            raise SystemExit(f"special token {name} got id {got}, expected {token_id} (first {first})")
    out = Path(out_dir)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|startoftext|>",
        "eos_token": "<|return|>", "pad_token": "<|endoftext|>", "model_max_length": 131072,
        "clean_up_tokenization_spaces": False}, indent=2) + "\n")
    say(f"tokenizer: {tok.get_vocab_size()} ids")


def child_gguf_summary(gguf: str) -> None:
    from gguf import GGUFReader

    reader = GGUFReader(gguf)
    kinds: dict[str, dict] = {}
    for t in reader.tensors:
        kind = t.tensor_type.name
        group = "experts" if "_exps" in t.name else "other"
        entry = kinds.setdefault(f"{group}:{kind}", dict(count=0, bytes=0, example=t.name))
        entry["count"] += 1
        entry["bytes"] += int(t.n_bytes)
    ftype = reader.fields.get("general.file_type")
    emit(dict(kinds=kinds, file_type=int(ftype.parts[ftype.data[0]][0]) if ftype else None))


# ---- the parent: setup steps ---------------------------------------------------------------
def run_logged(cmd: list[str], log: Path, what: str, env: dict | None = None,
               cwd: Path | None = None, echo: bool = False) -> str:
    """Run cmd with its output to `log`; raise BenchError naming `what` on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    env=env, cwd=cwd, bufsize=1)
        except OSError as exc:
            raise BenchError(f"{what}: cannot start {cmd[0]} ({exc})") from None
        lines = []
        for line in proc.stdout:
            f.write(line)
            lines.append(line)
            if echo:
                print("  " + line, end="", flush=True)
        rc = proc.wait()
    if rc != 0:
        tail = "".join(lines[-15:]).rstrip()
        raise BenchError(f"{what} failed (exit {rc}); full log: {log}\n{tail}")
    return "".join(lines)


def checkpoint_complete(folder: Path) -> bool:
    index = folder / "model.safetensors.index.json"
    if not (folder / "config.json").is_file() or not index.is_file():
        return False
    shards = set(json.loads(index.read_text())["weight_map"].values())
    return all((folder / s).is_file() for s in shards)


def ensure_checkpoint(cache: Path, layers: int | None, seed: int) -> tuple[Path, float | None]:
    folder = cache / ("20b" if layers is None else f"20b-L{layers}")
    if checkpoint_complete(folder):
        return folder, None
    partial = list(folder.glob("*.partial")) if folder.is_dir() else []
    if partial:
        age = time.time() - max(p.stat().st_mtime for p in partial)
        if age < 120:
            raise BenchError(f"{folder}: a checkpoint write seems to be under way ({partial[0].name} "
                             f"changed {age:.0f} s ago); wait for it to finish, or stop it and rerun")
    cmd = [sys.executable, "-c", "import sys; from gptoss.cli import main; sys.exit(main())",
           "random-checkpoint", "--preset", "20b", "--out", str(folder), "--seed", str(seed),
           "--force", "--quiet"] + ([] if layers is None else ["--layers", str(layers)])
    say(f"writing the checkpoint: gptoss random-checkpoint --preset 20b --out {folder} "
        f"--seed {seed}" + ("" if layers is None else f" --layers {layers}")
        + (" (about 12 minutes and 13.8 GB for the full 20b)" if layers is None else ""))
    t0 = time.perf_counter()
    run_logged(cmd, cache / "logs" / f"{folder.name}-write.log", "writing the checkpoint")
    if not checkpoint_complete(folder):
        raise BenchError(f"{folder}: the checkpoint write finished but the folder is incomplete")
    return folder, time.perf_counter() - t0


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def installed_llama_cpp(venv: Path) -> str | None:
    py = venv_python(venv)
    if not py.is_file():
        return None
    r = subprocess.run([str(py), "-c", "import llama_cpp; print(llama_cpp.__version__)"],
                       capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None


def ensure_sdist(cache: Path, venv: Path, version: str) -> Path:
    """Download (once) and unpack the llama-cpp-python sdist; return its vendor/llama.cpp."""
    root = cache / "sdist"
    tree = root / f"llama_cpp_python-{version}"
    llama = tree / "vendor" / "llama.cpp"
    if (llama / "convert_hf_to_gguf.py").is_file():
        return llama
    tarball = root / f"llama_cpp_python-{version}.tar.gz"
    if not tarball.is_file():
        say(f"downloading the llama-cpp-python {version} sdist ...")
        run_logged([str(venv_python(venv)), "-m", "pip", "download", "--no-deps", "--no-binary",
                    ":all:", f"llama-cpp-python=={version}", "-d", str(root)],
                   cache / "logs" / "sdist-download.log", "downloading the llama-cpp-python sdist")
    if not tarball.is_file():
        raise BenchError(f"pip download did not leave {tarball}; see {cache / 'logs'}")
    with tarfile.open(tarball) as tf:
        tf.extractall(root, filter="data")
    if not (llama / "convert_hf_to_gguf.py").is_file():
        raise BenchError(f"{tarball}: no vendor/llama.cpp/convert_hf_to_gguf.py in the sdist")
    return llama


def converter_requirements(llama: Path) -> list[str]:
    """The converter's requirement lines, following -r, minus torch (pinned separately, CPU),
    gguf (the sdist's gguf-py is used instead) and index options."""
    reqs: list[str] = []

    def read(path: Path) -> None:
        for raw in path.read_text().splitlines():
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            if line.startswith("-r"):
                read(path.parent / line[2:].strip())
            elif line.startswith("-"):
                continue
            elif re.match(r"(torch|gguf)\b", line):
                continue
            else:
                reqs.append(line)
    read(llama / "requirements" / "requirements-convert_hf_to_gguf.txt")
    return reqs


def ensure_venv(cache: Path, venv: Path, version: str, torch_version: str) -> tuple[Path, float | None]:
    """The scratch venv with llama-cpp-python and the converter's requirements. Returns the
    sdist's vendor/llama.cpp and the seconds spent (None if it was ready)."""
    ready = venv / ".cpu_vs_llamacpp-ready"
    have = installed_llama_cpp(venv)
    if ready.is_file() and have:
        return ensure_sdist(cache, venv, have), None
    t0 = time.perf_counter()
    logs = cache / "logs"
    if not venv_python(venv).is_file():
        say(f"creating the scratch venv {venv} ...")
        run_logged([sys.executable, "-m", "venv", str(venv)], logs / "venv-create.log",
                   "creating the scratch venv")
    pip = [str(venv_python(venv)), "-m", "pip", "install"]
    if have is None:
        have = version
    llama = ensure_sdist(cache, venv, have)
    say(f"installing torch=={torch_version} (CPU) and the converter's requirements into the venv ...")
    run_logged(pip + [f"torch=={torch_version}"], logs / "venv-torch.log",
               "installing torch into the scratch venv")
    run_logged(pip + converter_requirements(llama) + ["safetensors", "tiktoken"],
               logs / "venv-converter-reqs.log", "installing the converter's requirements")
    if installed_llama_cpp(venv) != have:
        say(f"building llama-cpp-python {have} from its sdist (native CPU build; minutes) ...")
        env = dict(os.environ)
        env["CMAKE_ARGS"] = (env.get("CMAKE_ARGS", "") + " -DGGML_NATIVE=ON").strip()
        env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 1))
        tarball = cache / "sdist" / f"llama_cpp_python-{have}.tar.gz"
        run_logged(pip + ["-v", str(tarball)], logs / "venv-llama-cpp-build.log",
                   "building llama-cpp-python (is a C++ compiler and cmake available?)", env=env)
        if installed_llama_cpp(venv) != have:
            raise BenchError(f"llama-cpp-python {have} is still not importable in {venv}; "
                             f"see {logs / 'venv-llama-cpp-build.log'}")
    ready.write_text(json.dumps({"llama_cpp_python": have}) + "\n")
    return llama, time.perf_counter() - t0


def venv_env(llama: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(llama / "gguf-py")
    env.pop("PYTHONHOME", None)
    return env


def ensure_gguf(cache: Path, venv: Path, llama: Path, folder: Path,
                version: str) -> tuple[Path, float | None, list[str]]:
    """Convert `folder` with llama.cpp's convert_hf_to_gguf.py (cached). Returns the GGUF, the
    seconds spent (None if cached) and the converter's warnings."""
    out_dir = cache / "gguf"
    gguf = out_dir / f"{folder.name}.llama-cpp-python-{version}.bf16.gguf"
    log = cache / "logs" / f"{gguf.name}.convert.log"
    if gguf.is_file():
        return gguf, None, converter_warnings(log)
    t0 = time.perf_counter()
    # the converter reads the model folder; give it one with the checkpoint's files (linked)
    # plus the o200k_harmony tokenizer files it needs
    stage = out_dir / f"{folder.name}-src"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    for f in folder.iterdir():
        if f.suffix in (".json", ".safetensors"):
            (stage / f.name).symlink_to(f.resolve())
    helpers = stage / "_helpers"
    helpers.mkdir()
    from gptoss.harmony.tokenizer import (O200K_PATTERN, VOCAB_SIZE, ensure_vocab_file,
                                          harmony_special_tokens)
    # the model's rows only: harmony also names id 201088, which has no embedding row and which
    # the converter refuses (every id must be below vocab_size)
    specials = {n: i for n, i in harmony_special_tokens().items() if i < VOCAB_SIZE}
    (helpers / "gptoss_harmony_specials.py").write_text(
        f"O200K_PATTERN = {O200K_PATTERN!r}\nSPECIALS = {specials!r}\n")
    env = venv_env(llama)
    env["PYTHONPATH"] = os.pathsep.join([str(llama / "gguf-py"), str(helpers)])
    say("writing tokenizer.json for the converter ...")
    run_logged([str(venv_python(venv)), str(HERE), "--child", "tokenizer",
                "--child-arg", str(ensure_vocab_file()), "--child-arg", str(stage)],
               cache / "logs" / f"{folder.name}-tokenizer.log", "building tokenizer.json", env=env)
    shutil.rmtree(helpers)
    tmp = out_dir / (gguf.name + ".tmp")
    tmp.unlink(missing_ok=True)
    say(f"converting {folder.name} to GGUF with llama.cpp's convert_hf_to_gguf.py --outtype bf16 ...")
    run_logged([str(venv_python(venv)), str(llama / "convert_hf_to_gguf.py"), str(stage),
                "--outtype", "bf16", "--outfile", str(tmp)], log,
               "converting the checkpoint to GGUF", env=env)
    if not tmp.is_file():
        raise BenchError(f"the converter left no {tmp}; see {log}")
    os.replace(tmp, gguf)
    shutil.rmtree(stage)
    return gguf, time.perf_counter() - t0, converter_warnings(log)


def converter_warnings(log: Path) -> list[str]:
    if not log.is_file():
        return []
    return [ln for ln in log.read_text().splitlines()
            if re.search(r"warn|incorrect|deprecat|error", ln, re.I) and not ln.startswith("$ ")]


# ---- the parent: measurements --------------------------------------------------------------
def run_child(cmd: list[str], log: Path, what: str, env: dict | None = None) -> dict | None:
    """Run one engine child, relaying its progress; return its result (None after a failure,
    which is reported)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    result, lines = None, []
    with open(log, "w") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=env, bufsize=1)
        try:
            for line in proc.stdout:
                f.write(line)
                lines.append(line)
                if line.startswith(RESULT_TAG):
                    result = json.loads(line[len(RESULT_TAG):])
                elif line.startswith("  "):
                    print(line, end="", flush=True)
            rc = proc.wait()
        except KeyboardInterrupt:
            proc.kill()
            proc.wait()
            raise
    if rc != 0 or result is None:
        tail = "".join(lines[-12:]).rstrip()
        how = "killed (out of memory?)" if rc in (-9, 137) else f"exit {rc}"
        print(f"error: {what} failed ({how}); full log: {log}\n{tail}", file=sys.stderr, flush=True)
        return None
    return result


def bandwidth_probe(threads: int, gib: float = 2.0, repeat: int = 5) -> dict[str, float]:
    """Memory read bandwidth (bytes/s): torch summing a `gib` GiB tensor with all threads, best of
    `repeat`, in bf16 and in fp32 (the bf16 sum converts every element, and on some CPUs that,
    not memory, is its limit; the larger figure is the one used). The data is random, so that no
    page sharing (KSM, a hypervisor's) can serve identical pages from one physical page."""
    import torch
    torch.set_num_threads(threads)
    out = {}
    for dtype in (torch.bfloat16, torch.float32):
        x = torch.rand(int(gib * 2**30) // torch.finfo(dtype).bits * 8, dtype=dtype)
        x.sum()
        best = min(_timed(x.sum) for _ in range(repeat))
        out[str(dtype).removeprefix("torch.")] = x.numel() * x.element_size() / best
        del x
    return out


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def safetensors_sizes(folder: Path) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for f in sorted(folder.glob("*.safetensors")):
        with open(f, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
        for name, info in header.items():
            if name != "__metadata__":
                begin, end = info["data_offsets"]
                sizes[name] = end - begin
    return sizes


def bytes_per_token(folder: Path, layers_20b: int) -> dict:
    """Bytes one decoded token reads: every non-expert weight but the embedding (one row of it),
    the active experts' share of each layer's packed expert tensors, and the unembedding."""
    cfg = json.loads((folder / "config.json").read_text())
    active = cfg["num_experts_per_tok"] / cfg["num_local_experts"]
    layer_bytes, outside = 0.0, 0.0
    embed = unembed = 0
    for name, n in safetensors_sizes(folder).items():
        if name == "model.embed_tokens.weight":
            embed = n
        elif name == "lm_head.weight":
            unembed = n
        elif name.startswith("model.layers."):
            layer_bytes += n * (active if ".mlp.experts." in name else 1.0)
        else:
            outside += n
    row = embed // cfg["vocab_size"]
    layers = cfg["num_hidden_layers"]
    here = outside + layer_bytes + unembed + row
    full = outside + layer_bytes / layers * layers_20b + unembed + row
    return dict(layers=layers, bytes=here, active=cfg["num_experts_per_tok"],
                experts=cfg["num_local_experts"], bytes_20b=full, unembed=unembed,
                per_layer=layer_bytes / layers)


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return "unknown (no lscpu)"
    m = re.search(r"^Model name:\s*(.+)$", out, re.M)
    return m.group(1).strip() if m else "unknown"


# ---- the table ----------------------------------------------------------------------------
def fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_table(rows: list[tuple[str, float | None, float | None, str]]) -> None:
    w = max(len(r[0]) for r in rows)
    say(f"{'metric':{w}}  {'gptoss':>10}  {'llama.cpp':>10}  {'ratio':>7}")
    say("-" * (w + 33))
    for name, ours, theirs, spec in rows:
        ratio = ours / theirs if ours is not None and theirs else None
        say(f"{name:{w}}  {fmt(ours, spec):>10}  {fmt(theirs, spec):>10}  {fmt(ratio, '.3f'):>7}")


def table_rows(g: dict | None, l: dict | None, plan: dict) -> list:
    def get(res, *keys):
        for k in keys:
            if res is None or k not in res:
                return None
            res = res[k]
        return res
    rows = []
    for P in plan["prefill"]:
        rows.append((f"prefill tok/s, {P}-token prompt", get(g, "prefill", str(P)),
                     get(l, "prefill", str(P)), ".1f"))
    for C in plan["contexts"]:
        rows.append((f"decode tok/s, batch 1, after {C} tokens", get(g, "decode", str(C)),
                     get(l, "decode", str(C)), ".2f"))
    if plan["aggregate"]:
        rows.append((f"aggregate decode tok/s, {AGGREGATE_REQUESTS} requests", get(g, "aggregate"),
                     None, ".2f"))
    gb = lambda r: None if get(r, "peak_rss") is None else r["peak_rss"] / 1e9  # noqa: E731
    rows.append(("peak RSS, GB", gb(g), gb(l), ".2f"))
    rows.append(("model load, s", get(g, "load_s"), get(l, "load_s"), ".1f"))
    return rows


# ---- main ---------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", default="gptoss,llamacpp",
                    help="comma-separated: gptoss, llamacpp (default both, run one after the other)")
    ap.add_argument("--layers", type=int, default=None,
                    help="a 20b-shaped checkpoint with only N layers (written to <cache>/20b-LN)")
    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--venv", type=Path, default=None, help="scratch venv (default <cache>/llama-venv)")
    ap.add_argument("--llama-cpp-version", default=DEFAULT_LLAMA_CPP_VERSION,
                    help="llama-cpp-python to install when the venv has none (default %(default)s)")
    ap.add_argument("--threads", type=int, default=None, help="both engines (default: all cores)")
    ap.add_argument("--decode-tokens", type=int, default=None, help="tokens per decode run (default 32)")
    ap.add_argument("--repeat", type=int, default=None, help="runs per number; the median (default 3)")
    ap.add_argument("--skip-long-context", action="store_true",
                    help="no decode after 2048 tokens (its prefill is long for a slow engine)")
    ap.add_argument("--skip-aggregate", action="store_true", help="no 16-request decode (gptoss)")
    ap.add_argument("--no-flash-attn", action="store_true",
                    help="llama.cpp without flash attention (default: with, as llama.cpp's own "
                         "default 'auto' chooses on CPU)")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: --repeat 1 --decode-tokens 8 unless given")
    ap.add_argument("--seed", type=int, default=0, help="the checkpoint's seed")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-arg", action="append", default=[], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.repeat = args.repeat or (1 if args.quick else 3)
    args.decode_tokens = args.decode_tokens or (8 if args.quick else 32)
    return args


def child_main(args: argparse.Namespace) -> None:
    a = args.child_arg
    if args.child == "llamacpp":
        child_llamacpp(a[0], json.loads(a[1]))
    elif args.child == "gptoss":
        child_gptoss(a[0], json.loads(a[1]))
    elif args.child == "tokenizer":
        child_tokenizer(a[0], a[1])
    elif args.child == "gguf-summary":
        child_gguf_summary(a[0])
    else:
        raise SystemExit(f"unknown child {args.child}")


def warm_page_cache(files) -> float:
    """Read files once so that neither engine's numbers include disk reads evicted by the other
    (both memory-map their weights); returns the seconds spent."""
    t0 = time.perf_counter()
    for path in files:
        with open(path, "rb", buffering=0) as f:
            while f.read(64 << 20):
                pass
    return time.perf_counter() - t0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        child_main(args)
        return 0
    engines = [e.strip().replace("llama.cpp", "llamacpp") for e in args.engines.split(",") if e.strip()]
    bad = [e for e in engines if e not in ("gptoss", "llamacpp")]
    if bad or not engines:
        raise BenchError(f"--engines: unknown {bad or 'empty'}; choose from gptoss, llamacpp")
    if args.layers is not None and not 1 <= args.layers <= 24:
        raise BenchError("--layers must be between 1 and 24")
    for name in ("repeat", "decode_tokens"):
        if getattr(args, name) < 1:
            raise BenchError(f"--{name.replace('_', '-')} must be positive")
    import torch
    from gptoss.config import ModelConfig
    args.threads = args.threads or os.cpu_count() or torch.get_num_threads()
    cache = args.cache_dir.resolve()
    venv = (args.venv or cache / "llama-venv").resolve()
    cache.mkdir(parents=True, exist_ok=True)
    plan = plan_from(args)
    plan["flash_attn"] = not args.no_flash_attn
    steps = []

    say(f"CPU: {cpu_name()}; {os.cpu_count()} cores; {args.threads} threads for each engine")
    say(f"torch {torch.__version__}")
    folder, spent = ensure_checkpoint(cache, args.layers, args.seed)
    steps.append(("checkpoint " + folder.name, spent))
    say(f"checkpoint: {folder} ({'written in %.0f s' % spent if spent else 'reused'})")
    say("measuring memory read bandwidth (torch sums a 2 GiB tensor, best of 5) ...")
    probe = bandwidth_probe(args.threads)
    bw = max(probe.values())
    bw_note = ", ".join(f"{k} sum {v / 1e9:.1f}" for k, v in probe.items())
    say(f"memory read bandwidth: {bw / 1e9:.1f} GB/s ({bw_note} GB/s)")

    results: dict[str, dict | None] = {"gptoss": None, "llamacpp": None}
    gguf_note = None
    if "llamacpp" in engines:
        llama, spent = ensure_venv(cache, venv, args.llama_cpp_version, torch.__version__.split("+")[0])
        steps.append(("llama-cpp-python venv", spent))
        version = installed_llama_cpp(venv)
        say(f"llama-cpp-python {version} in {venv} ({'built in %.0f s' % spent if spent else 'reused'})")
        gguf, spent, warnings = ensure_gguf(cache, venv, llama, folder, version)
        steps.append(("GGUF conversion", spent))
        say(f"GGUF: {gguf} ({'converted in %.0f s' % spent if spent else 'reused'}; "
            f"{gguf.stat().st_size / 1e9:.2f} GB)")
        for w in warnings[:10]:
            say(f"  converter: {w.strip()}")
        summary = run_child([str(venv_python(venv)), str(HERE), "--child", "gguf-summary",
                             "--child-arg", str(gguf)], cache / "logs" / "gguf-summary.log",
                            "reading the GGUF", env=venv_env(llama))
        if summary:
            parts = [f"{k.replace(':', ' ')} x{v['count']} {v['bytes'] / 1e9:.2f} GB"
                     for k, v in sorted(summary["kinds"].items())]
            gguf_note = "GGUF tensors: " + "; ".join(parts)
            say(gguf_note)
        steps.append(("page cache warm-up (GGUF)", warm_page_cache([gguf])))
        say(f"running llama.cpp ({'flash attention' if plan['flash_attn'] else 'no flash attention'}) ...")
        t0 = time.perf_counter()
        results["llamacpp"] = run_child(
            [str(venv_python(venv)), str(HERE), "--child", "llamacpp", "--child-arg", str(gguf),
             "--child-arg", json.dumps(plan)], cache / "logs" / f"llamacpp-{folder.name}.log",
            "the llama.cpp run", env=venv_env(llama))
        steps.append(("llama.cpp run", time.perf_counter() - t0))
    if "gptoss" in engines:
        steps.append(("page cache warm-up (safetensors)",
                      warm_page_cache(sorted(folder.glob("*.safetensors")))))
        say("running gptoss ...")
        t0 = time.perf_counter()
        results["gptoss"] = run_child(
            [sys.executable, str(HERE), "--child", "gptoss", "--child-arg", str(folder),
             "--child-arg", json.dumps(plan)], cache / "logs" / f"gptoss-{folder.name}.log",
            "the gptoss run")
        steps.append(("gptoss run", time.perf_counter() - t0))

    g, l = results["gptoss"], results["llamacpp"]
    layers_20b = ModelConfig.preset("20b").num_layers
    bpt = bytes_per_token(folder, layers_20b)
    say("")
    say(f"CPU: {cpu_name()}, {args.threads} threads; memory read bandwidth {bw / 1e9:.1f} GB/s "
        f"({bw_note} GB/s)")
    say(f"checkpoint: {folder.name} ({bpt['layers']} layers, 20b-shaped, random, hf-mxfp4); "
        f"decode {args.decode_tokens} tokens, median of {args.repeat}")
    versions = []
    if g:
        versions.append(f"gptoss {g['version']}")
    if l:
        versions.append(f"llama-cpp-python {l['version']} (n_ctx {l['n_ctx']}, flash_attn "
                        f"{l['flash_attn']})")
    if versions:
        say("engines: " + "; ".join(versions))
    if gguf_note:
        say(gguf_note)
    say("")
    print_table(table_rows(g, l, plan))
    say("")
    if bpt["layers"] != layers_20b:
        say(f"bytes read per decoded token, this {bpt['layers']}-layer checkpoint: "
            f"{bpt['bytes'] / 1e9:.3f} GB -> roofline {bw / bpt['bytes']:.1f} tok/s")
    say(f"bytes read per decoded token, gpt-oss-20b: {bpt['bytes_20b'] / 1e9:.3f} GB "
        f"(non-expert weights, {bpt['active']} of {bpt['experts']} experts' packed bytes per layer, {bpt['unembed'] / 1e9:.2f} GB "
        f"unembedding; KV reads not counted) -> roofline {bw / bpt['bytes_20b']:.1f} tok/s "
        f"at {bw / 1e9:.1f} GB/s")
    say("setup: " + "; ".join(f"{name} {'%.0f s' % s if s else 'reused'}" for name, s in steps))
    failed = [e for e in engines if results[e] is None]
    if failed:
        say(f"failed: {', '.join(failed)} (see the errors above)")
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
