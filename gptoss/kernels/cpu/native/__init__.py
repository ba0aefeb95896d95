"""C++ sources of the native CPU kernels and their builder (see build.py)."""
