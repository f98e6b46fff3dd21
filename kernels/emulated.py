"""The CUDA kernels run on the CPU: ctypes wrappers over the host-emulation library.

Same call signatures as :mod:`kernels.reference` and :mod:`kernels.cuda`, so the tests
compare the three directly. Build the library with :func:`kernels.build.build_emulation`.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from kernels.launch import TOPK_MAX_L, topk_memory_launches
from kernels.reference import KernelInputError, _check_delta, _check_topk

_P = ctypes.c_void_p
_DTYPES = {np.dtype(np.float32): "f32", np.dtype(np.float16): "f16"}


def _ptr(array: np.ndarray) -> int:
    return int(array.ctypes.data)


def suffix(dtype: np.dtype) -> str:
    """Kernel name suffix for a storage dtype (f32 / f16)."""
    if np.dtype(dtype) not in _DTYPES:
        raise KernelInputError(f"kernels take float32 or float16, got {np.dtype(dtype)}")
    return _DTYPES[np.dtype(dtype)]


class EmulatedKernels:
    """Launch the emulated kernels; inputs are copied to contiguous arrays first."""

    def __init__(self, library: Path, delta_block: int = 32) -> None:
        self.lib = ctypes.CDLL(str(library))
        self.block = int(self.lib.emulated_topk_block())
        self.shared_k = int(self.lib.emulated_topk_shared_k())
        if int(self.lib.emulated_topk_max_l()) != TOPK_MAX_L:
            raise KernelInputError("kernels.launch.TOPK_MAX_L disagrees with topk_memory.cuh")
        self.counts_bytes = hasattr(self.lib, "emulated_traffic_reset")
        if self.counts_bytes:
            self.lib.emulated_traffic_loaded.restype = ctypes.c_longlong
            self.lib.emulated_traffic_stored.restype = ctypes.c_longlong
        self.delta_block = delta_block
        i, ll = ctypes.c_int, ctypes.c_longlong
        u = ctypes.c_uint
        for s in _DTYPES.values():
            for kernel in ("topk_scores", "topk_select"):
                getattr(self.lib, f"emulate_{kernel}_{s}").argtypes = [u, u] + [_P] * 7 + [i] * 4
            getattr(self.lib, f"emulate_sparse_delta_apply_{s}").argtypes = [u, u] + [_P] * 4 + [ll]
            getattr(self.lib, f"emulate_sparse_delta_restore_{s}").argtypes = (
                [u, u] + [_P] * 3 + [ll]
            )

    def topk_memory(
        self, q: np.ndarray, k: np.ndarray, v: np.ndarray, topk: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(out[B,L,d] in the input dtype, kept indices[B,L,topk] in kernel order)."""
        _check_topk(q, k, v, topk)
        s = suffix(q.dtype)
        q, k, v = (np.ascontiguousarray(a, dtype=q.dtype) for a in (q, k, v))
        (b, L, d), n = q.shape, k.shape[1]
        out = np.empty_like(q)
        score = np.empty((b * L, n), np.float32)
        index = np.empty((b * L, topk), np.int32)
        weight = np.empty((b * L, topk), np.float32)
        buffers = (q, k, v, out, score, index, weight)
        if self.counts_bytes:
            self.lib.emulated_traffic_reset()
            for array in buffers:
                self.lib.emulated_traffic_watch(_P(_ptr(array)), ctypes.c_size_t(array.nbytes))
        for kernel, blocks in topk_memory_launches(b, L, n, self.block):
            getattr(self.lib, f"emulate_{kernel}_{s}")(
                blocks, self.block, *map(_ptr, buffers), L, n, d, topk
            )
        return out, index.reshape(b, L, topk)

    def traffic(self) -> tuple[int, int]:
        """(bytes loaded, bytes stored) from global memory by the last top-K call.

        Only a library built with ``count_bytes=True`` counts; the kernels' own loads and
        stores to their argument buffers are counted, nothing else.
        """
        if not self.counts_bytes:
            raise KernelInputError(
                "this emulation library does not count bytes; build it "
                "with kernels.build.build_emulation(..., count_bytes=True)"
            )
        return int(self.lib.emulated_traffic_loaded()), int(self.lib.emulated_traffic_stored())

    def sparse_delta_apply(
        self, w: np.ndarray, idx: np.ndarray, values: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(new buffer, saved base values); ``w`` itself is left untouched."""
        _check_delta(w, idx, values)
        out, saved = w.copy(), np.empty_like(values)
        idx64 = np.ascontiguousarray(idx, np.int64)
        values = np.ascontiguousarray(values)
        self.launch_sparse_delta_apply(
            w.dtype, _ptr(out), _ptr(idx64), _ptr(values), _ptr(saved), len(idx)
        )
        return out, saved

    def sparse_delta_restore(self, w: np.ndarray, idx: np.ndarray, saved: np.ndarray) -> np.ndarray:
        _check_delta(w, idx, saved)
        out = w.copy()
        idx64 = np.ascontiguousarray(idx, np.int64)
        saved = np.ascontiguousarray(saved)
        self.launch_sparse_delta_restore(w.dtype, _ptr(out), _ptr(idx64), _ptr(saved), len(idx))
        return out

    # Pointer-level launches with the signatures of kernels.cuda.CudaKernels, so code that
    # owns "device" buffers (host memory here) drives the same kernel source on the CPU.
    def launch_sparse_delta_apply(
        self,
        dtype: np.dtype,
        w: int,
        idx: int,
        values: int,
        saved: int,
        count: int,
        stream: object = None,
    ) -> None:
        getattr(self.lib, f"emulate_sparse_delta_apply_{suffix(dtype)}")(
            self._grid(count), self.delta_block, w, idx, values, saved, count
        )

    def launch_sparse_delta_restore(
        self, dtype: np.dtype, w: int, idx: int, saved: int, count: int, stream: object = None
    ) -> None:
        getattr(self.lib, f"emulate_sparse_delta_restore_{suffix(dtype)}")(
            self._grid(count), self.delta_block, w, idx, saved, count
        )

    def _grid(self, count: int) -> int:
        """A deliberately small grid (≤ 4 blocks) so the grid-stride loop is exercised."""
        return max(1, min(4, -(-count // self.delta_block)))
