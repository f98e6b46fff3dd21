"""Delta targets kept in device memory, switched by the custom sparse-delta CUDA kernel.

:class:`DeviceDeltaCore` is the same :class:`~sdk.delta.DeltaCore` (same validation,
same verbs) whose weight writes happen on the GPU: segment writes (deltas) by the
sparse-delta kernel, which saves the base values on the device; the refitter then
reads the device pointers (:func:`sdk.backends.trt.runner.refit_changed`). No host round trip.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from sdk.delta import DeltaCore
from sdk.runtime.base import RunnerError

if TYPE_CHECKING:
    from sdk.delta import PreparedDelta, WeightChange, _Segment

KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float16))


class DeviceMemory(Protocol):
    """What :class:`DeviceDeltaCore` needs of a GPU (``kernels.cuda.CudaKernels`` is one)."""

    def upload(self, array: np.ndarray) -> Any: ...

    def alloc(self, nbytes: int) -> Any: ...

    def launch_sparse_delta_apply(
        self, dtype: np.dtype, w: int, idx: int, values: int, saved: int, count: int, stream: Any
    ) -> None: ...

    def launch_sparse_delta_restore(
        self, dtype: np.dtype, w: int, idx: int, saved: int, count: int, stream: Any
    ) -> None: ...


class DeviceDeltaCore(DeltaCore):
    """A :class:`DeltaCore` whose weights live in device memory, written by the CUDA kernel.

    ``weights`` (name -> base values) are packed into one device buffer per dtype. The
    core's placement needs host arrays at matching offsets: those are ``np.empty``
    address space that is never read or written, so the OS never commits its pages.
    Per prepared segment the indices and values are uploaded on its first activation
    and a device buffer holds the saved base values.
    """

    def __init__(
        self,
        weights: Mapping[str, np.ndarray],
        fingerprint: str,
        device: DeviceMemory,
        stream: Any = None,
    ) -> None:
        bad = {n: w.dtype for n, w in weights.items() if w.dtype not in KERNEL_DTYPES}
        if bad:
            name, dtype = next(iter(bad.items()))
            raise RunnerError(
                f"refittable weight {name} is {dtype}; device delta switching takes float32 "
                "or float16 weights — rebuild without that tensor in --delta-targets"
            )
        self.device, self.stream = device, stream
        self._device_flat: dict[int, Any] = {}
        self._device_segments: dict[int, tuple[Any, Any, Any]] = {}
        views: dict[str, np.ndarray] = {}
        flats = []
        for dtype in sorted({w.dtype for w in weights.values()}, key=str):
            names = sorted(n for n, w in weights.items() if w.dtype == dtype)
            packed = np.concatenate([weights[n].reshape(-1) for n in names])
            placement = np.empty(packed.size, dtype)  # address space only, see the docstring
            self._device_flat[id(placement)] = device.upload(packed)
            offset = 0
            for name in names:
                size = weights[name].size
                views[name] = placement[offset : offset + size].reshape(weights[name].shape)
                offset += size
            flats.append(placement)
        super().__init__(views, fingerprint, flats)
        self._flats = flats  # keep the placement arrays (and so the id keys) alive

    def prepare(self, change: WeightChange) -> PreparedDelta:
        prepared = super().prepare(change)
        # Whole-tensor changes (SLF update packages, when the core has them) are copied by
        # numpy block writes, which would land in the placement arrays, not on the device.
        if getattr(prepared, "blocks", None):
            raise RunnerError(
                "update packages cannot be switched on a TensorRT plan's device weights yet; "
                "apply the update with: semedge build CKPT (rebuilt plan) or use onnxrt"
            )
        return prepared

    def device_tensor(self, name: str) -> tuple[int, int, np.dtype]:
        """(device address, element count, dtype) of weight ``name``."""
        flat, offset = self._place[name]
        address = int(self._device_flat[id(flat)]) + offset * flat.itemsize
        return address, math.prod(self.shapes[name]), flat.dtype

    def _on_device(self, seg: _Segment) -> tuple[Any, Any, Any]:
        if id(seg) not in self._device_segments:
            self._device_segments[id(seg)] = (
                self.device.upload(seg.index.astype(np.int64)),
                self.device.upload(seg.values),
                self.device.alloc(seg.values.nbytes),
            )
        return self._device_segments[id(seg)]

    def _apply_segment(self, seg: _Segment) -> None:
        index, values, saved = self._on_device(seg)
        self.device.launch_sparse_delta_apply(
            seg.flat.dtype,
            int(self._device_flat[id(seg.flat)]),
            int(index),
            int(values),
            int(saved),
            len(seg.index),
            self.stream,
        )

    def _restore_segment(self, seg: _Segment) -> None:
        index, _, saved = self._on_device(seg)
        self.device.launch_sparse_delta_restore(
            seg.flat.dtype,
            int(self._device_flat[id(seg.flat)]),
            int(index),
            int(saved),
            len(seg.index),
            self.stream,
        )
