"""Builds the native CPU kernels, `libgptoss_cpu`, with the machine's C++ compiler.

Standard library only: `setup.py` runs it at install time and `gptoss.kernels.cpu.library` at
run time when the installed copy is missing or older than these sources. One translation unit
per instruction set (AMX, AVX-512 with BF16, AVX-512, AVX2, portable) is compiled with its own
`-m` flags, never `-march=native`; `dispatch.cpp` picks one at run time from what the CPU
reports. An instruction set the compiler cannot target is left out, not fatal.

OpenMP: the library is linked with `-fopenmp`, so it needs `libgomp.so.1`; loaded after torch
it binds to the copy torch already loaded (same soname), so both share one thread pool.
"""
from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
LIB_NAME = "libgptoss_cpu.so"

# instruction set -> (translation unit, compiler flags)
_X86_ISAS = {
    "amx": ("isa_amx.cpp", ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq",
                            "-mavx512bf16", "-mavx2", "-mfma", "-mf16c", "-mamx-tile",
                            "-mamx-bf16"]),
    "avx512bf16": ("isa_avx512bf16.cpp", ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq",
                                          "-mavx512bf16", "-mavx2", "-mfma", "-mf16c"]),
    "avx512": ("isa_avx512.cpp", ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq",
                                  "-mavx2", "-mfma", "-mf16c"]),
    "avx2": ("isa_avx2.cpp", ["-mavx2", "-mfma", "-mf16c"]),
}
_COMMON = ["-O3", "-std=c++17", "-fPIC", "-fopenmp", "-fno-math-errno", "-ffp-contract=off", "-Wall", "-Wno-unused-function",
           "-Wno-maybe-uninitialized"]


class BuildError(RuntimeError):
    """The native kernels could not be compiled; the message says why."""


def isas() -> dict[str, tuple[str, list[str]]]:
    """The instruction sets to build on this machine's architecture (portable always)."""
    table = dict(_X86_ISAS) if platform.machine().lower() in ("x86_64", "amd64") else {}
    table["portable"] = ("isa_portable.cpp", [])
    return table


def source_hash() -> str:
    """A hash of every source file and the flags: the identity of a build."""
    h = hashlib.sha1()
    for path in sorted(HERE.iterdir()):
        if path.suffix in (".cpp", ".h", ".inc"):
            h.update(path.name.encode())
            h.update(path.read_bytes())
    h.update(repr((_COMMON, isas())).encode())
    return h.hexdigest()[:16]


def compiler() -> str:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return name
    raise BuildError("no C++ compiler found (set CXX, or install g++)")


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True)


def build(out: Path, *, verbose: bool = False) -> list[str]:
    """Compile and link the library to `out`; return the instruction sets built in.

    Raises BuildError with the compiler's message if even the portable path fails.
    """
    cxx, digest = compiler(), source_hash()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gptoss-build-") as tmp:
        objects, built, errors = [], [], []
        # portable first: where translation units share a template instantiation (std::vector
        # members), the linker keeps the first, which is then free of ISA-specific instructions
        for isa, (source, flags) in sorted(isas().items(), key=lambda kv: kv[0] != "portable"):
            obj = Path(tmp) / f"{isa}.o"
            cmd = [cxx, *_COMMON, *flags, "-c", str(HERE / source), "-o", str(obj)]
            result = _run(cmd)
            if verbose:
                print(" ".join(cmd), file=sys.stderr)
            if result.returncode == 0:
                objects.append(str(obj))
                built.append(isa)
            else:
                errors.append(f"{isa}: {result.stderr.strip()[-2000:]}")
        if "portable" not in built:
            raise BuildError("the portable kernels did not compile:\n" + "\n".join(errors))
        obj = Path(tmp) / "random.o"
        result = _run([cxx, *_COMMON, "-c", str(HERE / "random.cpp"), "-o", str(obj)])
        if result.returncode != 0:
            raise BuildError(f"random.cpp did not compile:\n{result.stderr[-2000:]}")
        objects.append(str(obj))
        defines = [f"-DGPTOSS_HAVE_{isa.upper()}=1" for isa in built]
        obj = Path(tmp) / "dispatch.o"
        result = _run([cxx, *_COMMON, *defines, f'-DGPTOSS_SOURCE_HASH="{digest}"', "-c",
                       str(HERE / "dispatch.cpp"), "-o", str(obj)])
        if result.returncode != 0:
            raise BuildError(f"dispatch.cpp did not compile:\n{result.stderr[-2000:]}")
        partial = out.with_suffix(f".{os.getpid()}.tmp")
        result = _run([cxx, "-shared", "-fopenmp", str(obj), *objects, "-o", str(partial)])
        if result.returncode != 0:
            raise BuildError(f"linking failed:\n{result.stderr[-2000:]}")
        os.replace(partial, out)  # atomic: a concurrent loader never sees half a library
    return built


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / LIB_NAME
    print(f"built {target} with {', '.join(build(target, verbose=True))}")
