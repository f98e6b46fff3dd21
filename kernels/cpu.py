"""The torch path's top-K selection on the CPU: a small C++ library, built on first use.

torch.topk on the CPU copies every score into a (value, index) pair before a partial sort;
at n=16k keys, L=16 rows that costs about as much as the GEMM that made the scores.
``topk_memory/topk_select_cpu.cpp`` makes one vectorised pass over key-major scores instead
(see docs/kernels.md for the numbers). It is compiled with the system C++ compiler (``$CXX``
or g++) into :func:`kernels.build.cache_dir` the first time it is needed. Where that fails,
:func:`library` warns once and returns None, and callers keep torch.topk;
``SEMEDGE_NATIVE_TOPK=0`` asks for that fallback on purpose (benchmarks, comparisons).
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
import warnings
from collections.abc import Callable

from kernels.build import KernelBuildError, build_cpu_select, cache_dir

# (dots, batch, n, rows, scale, k, index): dots float32 [batch, n, rows] contiguous,
# index int64 [batch, rows, k] written in rank order; needs 1 <= k <= n < 2**32.
TopKSelect = Callable[[int, int, int, int, float, int, int], None]

_building = threading.Lock()  # one build per process, even with many threads calling


def topk_select() -> TopKSelect | None:
    """The C++ selection, or None where it cannot be built or is switched off."""
    if os.environ.get("SEMEDGE_NATIVE_TOPK", "1") == "0":
        return None
    return library()


def library() -> TopKSelect | None:
    """The C++ selection whatever ``SEMEDGE_NATIVE_TOPK`` says; None (warned once) if no build."""
    with _building:
        return _load()


@functools.cache
def _load() -> TopKSelect | None:
    try:
        try:
            loaded = ctypes.CDLL(str(build_cpu_select(cache_dir())))
        except OSError:  # a cached library that will not load (truncated, foreign): once more
            loaded = ctypes.CDLL(str(build_cpu_select(cache_dir(), replace=True)))
    except (KernelBuildError, OSError, RuntimeError) as error:  # RuntimeError: no home folder
        warnings.warn(
            f"top-K selection falls back to torch.topk (slower on CPU): {error}",
            RuntimeWarning,
            stacklevel=4,
        )
        return None
    select = loaded.semedge_topk_key_major
    int64 = ctypes.c_int64
    select.argtypes = [ctypes.c_void_p, int64, int64, int64, ctypes.c_float, int64, ctypes.c_void_p]
    select.restype = None
    return select
