"""The CUDA kernels on a real GPU, through pycuda (Jetson).

Two levels: ``launch_*`` take device pointers (the trt backend and the delta core use them
on buffers they already own, on their stream); ``topk_memory`` / ``sparse_delta_*`` take
numpy arrays with the signatures of :mod:`kernels.reference`, copying to and from the
device (used by ``tools/validate_on_device.py``); ``upload`` / ``alloc`` / ``copy``
(device to device, for update packages) / ``download`` are the device memory the
TensorRT runner's :class:`~sdk.backends.trt.device_deltas.DeviceDeltaCore` keeps its
weights in. The fatbins come from :func:`kernels.build.build_fatbins`, built on first
use into ``fatbin_dir`` (default: :func:`kernels.build.cache_dir`). pycuda is imported
lazily; without it (or without a GPU) construction raises
:class:`~sdk.errors.MissingDependencyError` / :class:`KernelRuntimeError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kernels.build import TOPK_BLOCK, build_fatbins, cache_dir
from kernels.emulated import suffix
from kernels.launch import topk_memory_launches
from kernels.reference import _check_delta, _check_topk
from sdk.errors import SemedgeError, lazy_import

DELTA_BLOCK = 256


class KernelRuntimeError(SemedgeError):
    """No usable CUDA device, or a kernel could not be loaded."""


def topk_workspace_bytes(rows: int, n: int, topk: int) -> int:
    """Bytes of workspace ``launch_topk_memory`` needs (see topk_memory.cuh)."""
    return 4 * rows * (n + 2 * topk)


class CudaKernels:
    """Loaded kernel modules on device 0 (its primary context)."""

    def __init__(self, fatbin_dir: Path | None = None) -> None:
        fatbin_dir = fatbin_dir or cache_dir()
        cuda = lazy_import("pycuda.driver", "running the CUDA kernels")
        self.cuda = cuda
        try:
            cuda.init()
            if cuda.Device.count() == 0:
                raise KernelRuntimeError(
                    "no CUDA device found; run on a Jetson or use the CPU path"
                )
            self.context = cuda.Device(0).retain_primary_context()
        except cuda.Error as error:
            raise KernelRuntimeError(
                f"CUDA initialisation failed ({error}); check the driver"
            ) from None
        if not all((fatbin_dir / f"{m}.fatbin").is_file() for m in ("topk_memory", "sparse_delta")):
            build_fatbins(fatbin_dir)
        try:
            self._load(fatbin_dir)
        except cuda.Error:  # a fatbin cached by an older semedge lacks today's kernels
            build_fatbins(fatbin_dir)
            self._load(fatbin_dir)

    def _load(self, fatbin_dir: Path) -> None:
        cuda = self.cuda
        self.context.push()
        try:
            topk = cuda.module_from_file(str(fatbin_dir / "topk_memory.fatbin"))
            delta = cuda.module_from_file(str(fatbin_dir / "sparse_delta.fatbin"))
            self.functions: dict[str, Any] = {}
            for s in ("f32", "f16"):
                for name in ("topk_scores", "topk_select"):
                    fn = topk.get_function(f"{name}_{s}")
                    fn.prepare("PPPPPPPiiii")
                    self.functions[f"{name}_{s}"] = fn
                for op, signature in (("apply", "PPPPq"), ("restore", "PPPq")):
                    fn = delta.get_function(f"sparse_delta_{op}_{s}")
                    fn.prepare(signature)
                    self.functions[f"sparse_delta_{op}_{s}"] = fn
        finally:
            self.context.pop()
        self.modules = (topk, delta)  # keep the modules alive

    def _call(self, name: str, grid: int, block: int, stream: Any, *args: Any) -> None:
        self.context.push()
        try:
            self.functions[name].prepared_async_call((grid, 1), (block, 1, 1), stream, *args)
        finally:
            self.context.pop()

    # ------------------------------------------------------------ device-pointer launches

    def launch_topk_memory(
        self,
        dtype: np.dtype,
        q: int,
        k: int,
        v: int,
        out: int,
        workspace: int,
        batch: int,
        L: int,
        n: int,
        d: int,
        topk: int,
        stream: Any = None,
    ) -> None:
        """The launches of :func:`kernels.launch.topk_memory_launches`, in order, on ``stream``;
        ``workspace`` holds ``topk_workspace_bytes`` bytes."""
        rows = batch * L
        index = workspace + 4 * rows * n
        weight = index + 4 * rows * topk
        for kernel, blocks in topk_memory_launches(batch, L, n, TOPK_BLOCK):
            self._call(
                f"{kernel}_{suffix(dtype)}",
                blocks,
                TOPK_BLOCK,
                stream,
                *(q, k, v, out, workspace, index, weight, L, n, d, topk),
            )

    def launch_sparse_delta_apply(
        self,
        dtype: np.dtype,
        w: int,
        idx: int,
        values: int,
        saved: int,
        count: int,
        stream: Any = None,
    ) -> None:
        if count:
            self._call(
                f"sparse_delta_apply_{suffix(dtype)}",
                self._grid(count),
                DELTA_BLOCK,
                stream,
                w,
                idx,
                values,
                saved,
                count,
            )

    def launch_sparse_delta_restore(
        self, dtype: np.dtype, w: int, idx: int, saved: int, count: int, stream: Any = None
    ) -> None:
        if count:
            self._call(
                f"sparse_delta_restore_{suffix(dtype)}",
                self._grid(count),
                DELTA_BLOCK,
                stream,
                w,
                idx,
                saved,
                count,
            )

    @staticmethod
    def _grid(count: int) -> int:
        return min(1024, -(-count // DELTA_BLOCK))  # grid-stride loop covers the rest

    # ------------------------------------------------------------ numpy round trips

    def _to_device(self, *arrays: np.ndarray) -> list[Any]:
        return [self.cuda.to_device(np.ascontiguousarray(a)) for a in arrays]

    def upload(self, array: np.ndarray) -> Any:
        """A device copy of ``array`` (a pycuda allocation; ``int()`` gives its address)."""
        self.context.push()
        try:
            return self._to_device(array)[0]
        finally:
            self.context.pop()

    def alloc(self, nbytes: int) -> Any:
        """``nbytes`` of device memory (freed when the returned allocation is dropped)."""
        self.context.push()
        try:
            return self.cuda.mem_alloc(max(1, nbytes))
        finally:
            self.context.pop()

    def copy(self, dst: int, src: int, nbytes: int, stream: Any = None) -> None:
        """Device-to-device copy of ``nbytes`` on ``stream`` (ordered with the launches)."""
        self.context.push()
        try:
            self.cuda.memcpy_dtod_async(dst, src, nbytes, stream)
        finally:
            self.context.pop()

    def topk_memory(
        self, q: np.ndarray, k: np.ndarray, v: np.ndarray, topk: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(out[B,L,d] in the input dtype, kept indices[B,L,topk] in index order)."""
        _check_topk(q, k, v, topk)
        (b, L, d), n = q.shape, k.shape[1]
        self.context.push()
        try:
            dq, dk, dv = self._to_device(q, k, v.astype(q.dtype))
            out = self.cuda.mem_alloc(q.nbytes)
            ws = self.cuda.mem_alloc(topk_workspace_bytes(b * L, n, topk))
        finally:
            self.context.pop()
        self.launch_topk_memory(
            q.dtype, int(dq), int(dk), int(dv), int(out), int(ws), b, L, n, d, topk
        )
        self.context.push()
        try:
            result = np.empty_like(q)
            self.cuda.memcpy_dtoh(result, out)
            index = np.empty((b, L, topk), np.int32)
            self.cuda.memcpy_dtoh(index, int(ws) + 4 * b * L * n)
        finally:
            self.context.pop()
        return result, index

    def sparse_delta_apply(
        self, w: np.ndarray, idx: np.ndarray, values: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        _check_delta(w, idx, values)
        self.context.push()
        try:
            dw, di, dv, ds = self._to_device(w, idx.astype(np.int64), values, values)
        finally:
            self.context.pop()
        self.launch_sparse_delta_apply(w.dtype, int(dw), int(di), int(dv), int(ds), len(idx))
        return self.download(dw, w), self.download(ds, values)

    def sparse_delta_restore(self, w: np.ndarray, idx: np.ndarray, saved: np.ndarray) -> np.ndarray:
        _check_delta(w, idx, saved)
        self.context.push()
        try:
            dw, di, ds = self._to_device(w, idx.astype(np.int64), saved)
        finally:
            self.context.pop()
        self.launch_sparse_delta_restore(w.dtype, int(dw), int(di), int(ds), len(idx))
        return self.download(dw, w)

    def download(self, device: Any, like: np.ndarray) -> np.ndarray:
        """A host array shaped like ``like`` read from ``device`` (allocation or address)."""
        self.context.push()
        try:
            host = np.empty_like(like)
            self.cuda.memcpy_dtoh(host, device)
            return host
        finally:
            self.context.pop()
