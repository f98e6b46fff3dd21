"""The torch path's top-K selection on the CPU: a small C++ library, built on first use.

torch.topk on the CPU copies every score into a (value, index) pair before a partial sort;
at n=16k keys, L=16 rows that costs about as much as the GEMM that made the scores.
``topk_memory/topk_select_cpu.cpp`` makes one vectorised pass over key-major scores instead
(see docs/kernels.md for the numbers). It is compiled with the system C++ compiler (``$CXX``
or g++) into :data:`kernels.build.DEFAULT_OUT` the first time it is needed. Where that
fails, :func:`topk_select` warns once and returns None, and callers keep torch.topk;
``SEMEDGE_NATIVE_TOPK=0`` asks for that fallback on purpose (benchmarks, comparisons).
"""

from __future__ import annotations

import ctypes
import functools
import os
import warnings
from collections.abc import Callable

from kernels.build import DEFAULT_OUT, KernelBuildError, build_cpu_select

# (dots, batch, n, rows, scale, k, index): dots float32 [batch, n, rows] contiguous,
# index int64 [batch, rows, k] written in rank order.
TopKSelect = Callable[[int, int, int, int, float, int, int], None]


def topk_select() -> TopKSelect | None:
    """The C++ selection, or None where it cannot be built or is switched off."""
    if os.environ.get("SEMEDGE_NATIVE_TOPK", "1") == "0":
        return None
    return _load()


@functools.cache
def _load() -> TopKSelect | None:
    try:
        library = ctypes.CDLL(str(build_cpu_select(DEFAULT_OUT)))
    except (KernelBuildError, OSError) as error:
        warnings.warn(
            f"top-K selection falls back to torch.topk (slower on CPU): {error}",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    select = library.semedge_topk_key_major
    int64 = ctypes.c_int64
    select.argtypes = [ctypes.c_void_p, int64, int64, int64, ctypes.c_float, int64, ctypes.c_void_p]
    select.restype = None
    return select
