"""Builds the native CPU kernels at install time (metadata lives in pyproject.toml).

The build is optional: without a working C++ compiler the package installs anyway and runs on
the PyTorch path (gptoss says so, once, when it first needs the kernels).
"""
import importlib.util
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

NATIVE = Path(__file__).resolve().parent / "gptoss" / "kernels" / "cpu" / "native"


def _builder():
    # loaded by path: importing the gptoss package would import torch, absent at build time
    spec = importlib.util.spec_from_file_location("_gptoss_native_build", NATIVE / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildNative(build_ext):
    def build_extension(self, ext):
        builder = _builder()
        out = Path(self.get_ext_fullpath(ext.name))
        try:
            isas = builder.build(out)
            print(f"gptoss: built native CPU kernels ({', '.join(isas)}) -> {out}")
        except builder.BuildError as e:
            self.warn(f"gptoss: native CPU kernels not built, the PyTorch path will be used: {e}")


setup(
    ext_modules=[Extension("gptoss.kernels.cpu.native._gptoss_cpu",
                           sources=sorted(str(p.relative_to(NATIVE.parents[3]))
                                          for p in NATIVE.glob("*.cpp")),
                           optional=True)],
    cmdclass={"build_ext": BuildNative},
)
